#!/bin/sh
# it-tls.sh: wss:// end to end (issue 3).
#
# Certificates are made here with the openssl CLI: a CA, CA-signed server
# certificates for candy.test (RSA and EC keys), a self-signed one, an
# expired one and one for another name.  One server per certificate, all
# on 10.77.0.1.  The clients resolve candy.test through their own
# /etc/hosts: a bind mount in a private mount namespace (unshare -m), so
# the real file is never touched.
#
#   1. ping through wss with the RSA and with the EC server (--ca);
#   2. the self-signed, expired and wrong-name servers are refused: no
#      address, the log says why, the client retries;
#   3. the self-signed server is accepted with --pin and with --insecure,
#      and refused with another key's pin;
#   4. clients that send garbage or stall in the handshake do not stop a
#      real client, and are dropped.
. "$(dirname "$0")/lib.sh"

need_netns
[ -x "$CANDY" ] || skip_all "no candy binary (make)"
command -v openssl >/dev/null 2>&1 || skip_all "no openssl"
command -v unshare >/dev/null 2>&1 || skip_all "no unshare"
command -v python3 >/dev/null 2>&1 || skip_all "no python3"

SRV=10.77.0.1

# ---- Certificates ----

K=$T/pki
mkdir -p "$K"
cat >"$K/ca.cnf" <<EOF
[ca]
default_ca = c
[c]
dir = $K
database = $K/index.txt
new_certs_dir = $K
serial = $K/serial
default_md = sha256
policy = p
copy_extensions = copy
unique_subject = no
[p]
commonName = supplied
[leaf]
basicConstraints = CA:FALSE
EOF
: >"$K/index.txt"
echo 1000 >"$K/serial"

# leaf KEY NAME OUT [START END]: a certificate for NAME signed by the CA,
# valid from now for two days, or from START to END.
leaf() {
	openssl req -new -key "$1" -subj "/CN=$2" \
	    -addext "subjectAltName=DNS:$2" -out "$K/req.csr" &&
	if [ -n "$4" ]; then
		openssl ca -batch -config "$K/ca.cnf" -cert "$K/ca.pem" \
		    -keyfile "$K/ca.key" -extensions leaf -notext \
		    -startdate "$4" -enddate "$5" -in "$K/req.csr" -out "$3"
	else
		openssl ca -batch -config "$K/ca.cnf" -cert "$K/ca.pem" \
		    -keyfile "$K/ca.key" -extensions leaf -notext -days 2 \
		    -in "$K/req.csr" -out "$3"
	fi
}

# pin_of CERT: SHA-256 of the certificate's SubjectPublicKeyInfo.
pin_of() {
	openssl x509 -in "$1" -pubkey -noout |
	    openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1
}

pki() {
	openssl ecparam -name prime256v1 -genkey -noout -out "$K/ca.key" &&
	openssl req -x509 -new -key "$K/ca.key" -subj "/CN=candy test CA" \
	    -days 2 -addext "basicConstraints=critical,CA:TRUE" \
	    -addext "keyUsage=critical,keyCertSign,cRLSign" \
	    -out "$K/ca.pem" &&
	openssl genrsa -traditional -out "$K/rsa.key" 2048 &&
	leaf "$K/rsa.key" candy.test "$K/rsa.pem" &&
	cat "$K/rsa.pem" "$K/ca.pem" >"$K/rsa-chain.pem" &&
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
	    -out "$K/ec.key" &&
	leaf "$K/ec.key" candy.test "$K/ec.pem" &&
	leaf "$K/ec.key" candy.test "$K/expired.pem" 20000101000000Z \
	    20010101000000Z &&
	leaf "$K/ec.key" other.test "$K/other.pem" &&
	openssl ecparam -name secp384r1 -genkey -out "$K/self.key" &&
	openssl req -x509 -new -key "$K/self.key" -subj "/CN=candy.test" \
	    -days 2 -addext "subjectAltName=DNS:candy.test" \
	    -out "$K/self.pem"
}
check "test certificates made with openssl" pki
[ "$FAILED" = 0 ] || exit 1
PIN_SELF=$(pin_of "$K/self.pem")
PIN_EC=$(pin_of "$K/ec.pem")

# ---- Network and servers ----

lan_add net
ns_add srv
lan_join net srv $SRV/24
i=2
for n in a b refs refe refn pin pinb ins c d; do
	ns_add $n
	lan_join net $n 10.77.0.$i/24
	i=$((i + 1))
done

# server NAME PORT CERT KEY
server() {
	candy_server srv "$1" -w "wss://$SRV:$2" --cert "$3" --key "$4" \
	    -p pw -d 172.31.0.0/24
}
server s-rsa 8443 "$K/rsa-chain.pem" "$K/rsa.key"
server s-ec 8444 "$K/ec.pem" "$K/ec.key"
server s-self 8445 "$K/self.pem" "$K/self.key"
server s-exp 8446 "$K/expired.pem" "$K/ec.key"
server s-name 8447 "$K/other.pem" "$K/ec.key"
for s in s-rsa s-ec s-self s-exp s-name; do
	wait_listening $s || { fail "server $s listens"; exit 1; }
done
ok "five wss servers start (RSA chain, EC, self-signed, expired, other name)"

# Clients run through a wrapper that gives them our /etc/hosts.
printf '127.0.0.1 localhost\n%s candy.test\n' $SRV >"$T/hosts"
cat >"$T/candy-hosts" <<EOF
#!/bin/sh
exec unshare -m sh -c 'mount --bind "\$0" /etc/hosts && exec "\$@"' \\
    "$T/hosts" "$CANDY" "\$@"
EOF
chmod 755 "$T/candy-hosts"

# client NS NAME PORT args...: a client of wss://candy.test:PORT.
client() {
	_cl_ns=$1
	_cl_name=$2
	_cl_port=$3
	shift 3
	mkdir -p "$T/state-$_cl_name"
	proc_start "$_cl_name" "$_cl_ns" "$T/candy-hosts" -m client \
	    -n "$_cl_name" --no-timestamp $DEBUG_FLAG \
	    --state-dir "$T/state-$_cl_name" \
	    -w "wss://candy.test:$_cl_port" -p pw "$@"
}

# ---- 1. A CA, RSA and EC ----

# pair PORT WHAT: clients a and b through the server on PORT; a pings b.
pair() {
	client a a "$1" --ca "$K/ca.pem"
	client b b "$1" --ca "$K/ca.pem"
	if wait_addr a 10 && wait_addr b 10; then
		check "ping through wss ($2)" ping_ok a "$(addr_of b)"
		check "candy status shows TLS 1.2 and the suite ($2)" eval \
		    'candy_status a >"$T/tls-status" &&
		    grep -q "^  tls: TLS 1.2$" "$T/tls-status" &&
		    grep -Eq "^  cipher: ECDHE-(RSA|ECDSA)-[A-Z0-9-]+$" \
		    "$T/tls-status"'
	else
		fail "ping through wss ($2): no address"
	fi
	stop a
	stop b
}
pair 8443 "RSA key, chain with the CA"
pair 8444 "EC key"

# ---- 2. Refusals ----

# refused NAME PORT REASON: no address, the reason logged, and retries.
refused() {
	if ! wait_log "$1" 10 "server certificate refused: $3"; then
		fail "$1: refused with \"$3\" in the log"
		return
	fi
	ok "$1: refused with \"$3\" in the log"
	check "$1: retries after the refusal" wait_until 10 eval \
	    "[ \$(grep -c 'certificate refused' '$(log_of "$1")') -ge 2 ]"
	check "$1: no address" eval "[ -z \"\$(addr_of $1)\" ]"
	check "$1: every failed attempt names \"$3\" (never \"write failed\")" \
	    eval "! grep 'cannot connect' '$(log_of "$1")' | grep -vqF -- '$3'"
}
client refs refs 8445 --ca "$K/ca.pem"
client refe refe 8446 --ca "$K/ca.pem"
client refn refn 8447 --ca "$K/ca.pem"
client pinb pinb 8445 --pin "$PIN_EC"
refused refs 8445 "unknown issuer"
refused refe 8446 "expired"
refused refn 8447 "name mismatch"
refused pinb 8445 "key does not match --pin"
for n in refs refe refn pinb; do
	stop $n
done
check "no password hash reached a refusing server" eval \
    "! grep -Eq 'connected from|refused authentication' \
    '$(log_of s-self)' '$(log_of s-exp)' '$(log_of s-name)'"

# ---- 3. --pin and --insecure ----

client pin pin 8445 --pin "$PIN_SELF"
client ins ins 8445 --insecure
check "self-signed accepted with --pin" wait_addr pin 10
check "self-signed accepted with --insecure" wait_addr ins 10
check "--insecure warns at connect" log_has ins "tls: --insecure"
check "ping between the --pin and --insecure clients" \
    ping_ok pin "$(addr_of ins)"
stop pin
stop ins

# ---- 4. Garbage and stalls ----

# 12 connections to the RSA server: a third send random bytes, a third
# send the first 3 bytes of a record and stop, a third send nothing.
cat >"$T/bad.py" <<'EOF'
import os, socket, sys, time
socks = []
for i in range(12):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    try:
        if i % 3 == 0:
            s.sendall(os.urandom(3000))
        elif i % 3 == 1:
            s.sendall(b"\x16\x03\x01")
    except OSError:
        pass
    socks.append(s)
print("open", flush=True)
time.sleep(float(sys.argv[3]))
EOF
proc_start bad c python3 "$T/bad.py" $SRV 8443 25
wait_log bad 5 '^open' || echo "# the bad clients did not connect"
client d d 8443 --ca "$K/ca.pem"
client a a 8443 --ca "$K/ca.pem"
if wait_addr d 10 && wait_addr a 10; then
	check "a real client connects past garbage and stalled TLS clients" \
	    ping_ok a "$(addr_of d)"
else
	fail "a real client connects past garbage and stalled TLS clients"
fi
check "garbage is dropped at once" \
    log_has s-rsa "tls: client connection failed in the handshake"
check "stalled clients are dropped after 10 s" wait_until 15 eval \
    "[ \$(grep -c 'no WebSocket handshake within 10 s' \
    '$(log_of s-rsa)') -ge 8 ]"
check "the RSA server is still running" running s-rsa
stop a
stop d
stop bad
exit 0
