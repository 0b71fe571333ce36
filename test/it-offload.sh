#!/bin/sh
# it-offload.sh: the Linux fast path (issue 11) carries bulk TCP intact.
#
# On one LAN with the server and a STUN server (coturn): clients a and b
# with offloads (TSO super-packets from the TUN cut to the MTU, received
# TCP coalesced into GSO writes, UDP_SEGMENT/UDP_GRO between peers), p
# with --no-offload (the plain path), all three peer-to-peer; x with
# offloads and y without, both without STUN, so that what they send goes
# through the server in FORWARD frames.  16 MiB of random bytes cross in
# every pairing of fast and plain, peer-to-peer and relayed, and to and
# from two peers at once; each end's SHA-256 must agree.

. "$(dirname "$0")/lib.sh"
need_netns
[ -x "$CANDY" ] || { fail "candy is built"; exit 1; }
command -v turnserver >/dev/null 2>&1 || skip_all "no turnserver (coturn)"
command -v python3 >/dev/null 2>&1 || skip_all "no python3"

PW=offloadpw
# Bulk logging of every packet would be measured too: info level.
DEBUG_FLAG=

lan_add net
ns_add srv
lan_join net srv 10.77.0.1/24
bg_run srv "$T/turn.log" turnserver --listening-ip=10.77.0.1 \
    --listening-port=3478 --stun-only --no-cli --no-tls --no-dtls \
    --log-file=stdout
candy_server srv srv -w ws://0.0.0.0:8080 -p "$PW" -d 172.31.0.0/24
wait_listening srv || { fail "server listens"; exit 1; }
i=2
for c in a b p x y; do
	ns_add "$c"
	lan_join net "$c" "10.77.0.$i/24"
	i=$((i + 1))
done
candy_client a a -w ws://10.77.0.1:8080 -p "$PW" -s stun://10.77.0.1 \
    --debug
candy_client b b -w ws://10.77.0.1:8080 -p "$PW" -s stun://10.77.0.1
candy_client p p -w ws://10.77.0.1:8080 -p "$PW" -s stun://10.77.0.1 \
    --no-offload --debug
candy_client x x -w ws://10.77.0.1:8080 -p "$PW"
candy_client y y -w ws://10.77.0.1:8080 -p "$PW" --no-offload
for c in a b p x y; do
	wait_addr "$c" 20 || { fail "client $c has an address"; exit 1; }
done
A=$(addr_of a)
B=$(addr_of b)
PP=$(addr_of p)
X=$(addr_of x)
Y=$(addr_of y)

check "a opened its device with offloads" \
    log_has a 'offloads on \(vnet header'
check "p (--no-offload) did not" eval "! log_has p 'offloads on'"

# Peers: traffic between a, b and p makes them connect over UDP.
ping_ok a "$B" 5
ping_ok a "$PP" 5
ping_ok b "$PP" 5
check "a and b connect peer-to-peer" wait_log a 20 "peer $B connected via"
check "a and p connect peer-to-peer" wait_log a 20 "peer $PP connected via"
check "b and p connect peer-to-peer" wait_log b 20 "peer $PP connected via"

cat >"$T/xfer.py" <<'EOF'
# xfer.py recv ADDR PORT | send ADDR PORT FILE: one TCP transfer; the
# receiver prints the byte count and SHA-256 of what arrived.
import hashlib, socket, sys
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "recv":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    s.settimeout(60)
    c, _ = s.accept()
    c.settimeout(60)
    h, n = hashlib.sha256(), 0
    while True:
        d = c.recv(1 << 16)
        if not d:
            break
        h.update(d)
        n += len(d)
    print(n, h.hexdigest())
else:
    s = socket.create_connection((addr, port), timeout=60)
    with open(sys.argv[4], "rb") as f:
        s.sendall(f.read())
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
EOF
head -c 16777216 /dev/urandom >"$T/data"
WANT="16777216 $(sha256sum "$T/data" | cut -d' ' -f1)"

# xfer FROM TO TO_ADDR WHAT: 16 MiB from FROM to TO, SHA-256 compared.
PORT=5300
xfer() {
	PORT=$((PORT + 1))
	rm -f "$T/got"
	bg_run "$2" "$T/got" timeout 90 python3 "$T/xfer.py" recv "$3" "$PORT"
	_xf_pid=$BG_PID
	wait_until 5 eval "nsx $2 ss -ltn | grep -q ':$PORT '"
	nsx "$1" timeout 90 python3 "$T/xfer.py" send "$3" "$PORT" \
	    "$T/data" >/dev/null 2>&1
	wait "$_xf_pid" 2>/dev/null
	got=$(cat "$T/got" 2>/dev/null)
	if [ "$got" = "$WANT" ]; then
		ok "$4: 16 MiB intact"
	else
		fail "$4: 16 MiB intact"
		echo "#   want $WANT"
		echo "#   got  $got"
	fi
}

xfer a b "$B" "peer-to-peer, offloads both ends (a -> b)"
xfer b a "$A" "peer-to-peer, offloads both ends (b -> a)"
xfer a p "$PP" "peer-to-peer, offloads to --no-offload (a -> p)"
xfer p a "$A" "peer-to-peer, --no-offload to offloads (p -> a)"
xfer x y "$Y" "through the server, offloads to --no-offload (x -> y)"
xfer y x "$X" "through the server, --no-offload to offloads (y -> x)"
xfer x a "$A" "through the server, offloads both ends (x -> a)"

# Several peers at once (issue 11: one pass's datagrams to different
# peers leave in one batch, and the receive ring takes several senders'):
# a sends to b (offloads) and p (plain) together, then b and p send to a
# together.
xfer2() {
	PORT=$((PORT + 2))
	rm -f "$T/got1" "$T/got2"
	bg_run "$2" "$T/got1" timeout 90 python3 "$T/xfer.py" recv "$3" "$PORT"
	_x1=$BG_PID
	bg_run "$5" "$T/got2" timeout 90 python3 "$T/xfer.py" recv "$6" \
	    "$((PORT + 1))"
	_x2=$BG_PID
	wait_until 5 eval "nsx $2 ss -ltn | grep -q ':$PORT '"
	wait_until 5 eval "nsx $5 ss -ltn | grep -q ':$((PORT + 1)) '"
	nsx "$1" timeout 90 python3 "$T/xfer.py" send "$3" "$PORT" \
	    "$T/data" >/dev/null 2>&1 &
	_x3=$!
	nsx "$4" timeout 90 python3 "$T/xfer.py" send "$6" "$((PORT + 1))" \
	    "$T/data" >/dev/null 2>&1
	wait "$_x3" "$_x1" "$_x2" 2>/dev/null
	if [ "$(cat "$T/got1" 2>/dev/null)" = "$WANT" ] &&
	    [ "$(cat "$T/got2" 2>/dev/null)" = "$WANT" ]; then
		ok "$7: 2 x 16 MiB intact"
	else
		fail "$7: 2 x 16 MiB intact"
		echo "#   want $WANT"
		echo "#   got  $(cat "$T/got1" "$T/got2" 2>/dev/null | tr '\n' ' ')"
	fi
}

xfer2 a b "$B" a p "$PP" "peer-to-peer, a to b and p at once"
xfer2 b a "$A" p a "$A" "peer-to-peer, b and p to a at once"

# The datagrams between the peers were authentic and fresh, none lost to
# the checks: the super-packets were cut and joined right.
status_of a >"$T/status-a"
check "a: no datagram failed authentication, none was a replay" \
    eval "grep -Eq '^ *bad datagrams: 0\$' '$T/status-a' &&
    grep -Eq '^ *replays: 0\$' '$T/status-a'"
check "a: offloads on, no super-packet from the TUN refused" \
    eval "grep -Eq '^ *offload: on\$' '$T/status-a' &&
    grep -Eq '^ *super-packets refused: 0\$' '$T/status-a'"
check "a: super-packets were cut and received segments coalesced" \
    eval "grep -Eq '^ *super-packets cut: [1-9]' '$T/status-a' &&
    grep -Eq '^ *coalesced writes: [1-9]' '$T/status-a'"
status_of p >"$T/status-p"
check "p (--no-offload): datagrams sent and received in batches" \
    eval "grep -Eq '^ *send batches: [1-9]' '$T/status-p' &&
    grep -Eq '^ *receive batches: [1-9]' '$T/status-p'"
exit 0
