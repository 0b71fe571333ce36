#!/bin/sh
# it-relay.sh: the server relays between clients (issue 2).
#
# A server and three clients on a simulated internet (10.77.0.0/24, a
# switch namespace), two with addresses from the server, one static
# (172.31.0.50, also the SD-WAN gateway of the LAN 192.168.50.0/24):
#   every pair pings; broadcast reaches every other client; a LAN behind a
#   gateway answers; a spoofed source is not delivered; a replayed AUTH and
#   a wrong password are refused; plain HTTP gets a 4xx; a restarted client
#   gets its address back; after a server restart every client comes back
#   by itself with its address.
# The raw protocol checks use a small WebSocket client in Python (stdlib).

. "$(dirname "$0")/lib.sh"
need_netns
[ -x "$CANDY" ] || { fail "candy is built"; exit 1; }

PW=secretpw
NET=172.31.0
SRV=10.77.0.1
URI=ws://$SRV:8080
GW=$NET.50
HAVE_PY=
command -v python3 >/dev/null 2>&1 && HAVE_PY=1

# ---- The raw client ----

cat >"$T/wsc.py" <<'EOF'
# wsc.py: a minimal Candy client over RFC 6455 for negative tests.
#   http HOST PORT                        print the HTTP status line
#   replay HOST PORT PW IP                send one AUTH on two connections
#   spoof HOST PORT PW MYIP SRCIP DSTIP   authenticate as MYIP, then send
#       UDP to DSTIP port 9998 from MYIP and port 9999 from SRCIP
import base64, hashlib, os, socket, struct, sys, time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def h(*parts):
    return hashlib.sha256(b"".join(parts)).digest()


def ip4(s):
    return socket.inet_aton(s)


class Conn:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, int(port)), timeout=5)
        key = base64.b64encode(os.urandom(16))
        self.s.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() +
                       b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                       b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
                       key + b"\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.s.recv(4096)
            if not d:
                raise EOFError("closed during the upgrade")
            buf += d
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise EOFError("no 101: %r" % head[:80])
        want = base64.b64encode(hashlib.sha1(key + GUID).digest())
        if want not in head:
            raise EOFError("bad Sec-WebSocket-Accept")

    def send(self, payload, opcode=2):
        mask = os.urandom(4)
        n = len(payload)
        hdr = bytes([0x80 | opcode])
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.s.sendall(hdr + mask + body)

    def need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.time()
            if left <= 0:
                raise socket.timeout()
            self.s.settimeout(left)
            d = self.s.recv(65536)
            if not d:
                raise EOFError("closed")
            self.buf += d

    def frame(self, deadline):
        self.need(2, deadline)
        op, n = self.buf[0] & 15, self.buf[1] & 127
        off = 2
        if n == 126:
            self.need(4, deadline)
            n, off = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self.need(10, deadline)
            n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
        self.need(off + n, deadline)
        p, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return op, p

    def closed_within(self, secs):
        """True when the server closes within secs (EOF or close frame)."""
        deadline = time.time() + secs
        try:
            while True:
                op, _ = self.frame(deadline)
                if op == 8:
                    return True
        except socket.timeout:
            return False
        except (EOFError, OSError):
            return True


def vmac_msg(pw, vmac, ts):
    t = struct.pack(">q", ts)
    return b"\x04" + vmac + t + h(pw, vmac, t)


def auth_msg(pw, ip, ts):
    t = struct.pack(">q", ts)
    return b"\x00" + ip4(ip) + t + h(pw, ip4(ip), t)


def csum(b):
    s = sum(struct.unpack(">%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


def udp_packet(src, dst, dport, data):
    udp = struct.pack(">HHHH", 40000, dport, 8 + len(data), 0) + data
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64,
                      17, 0, ip4(src), ip4(dst))
    hdr = hdr[:10] + struct.pack(">H", csum(hdr)) + hdr[12:]
    return hdr + udp


def login(host, port, pw, ip):
    c = Conn(host, port)
    ts = int(time.time())
    c.send(vmac_msg(pw, os.urandom(8).hex().encode(), ts))
    a = auth_msg(pw, ip, ts)
    c.send(a)
    return c, a


def cmd_http(host, port):
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
    buf = b""
    try:
        while b"\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                break
            buf += d
    except socket.timeout:
        pass
    print(buf.split(b"\r\n")[0].decode("latin-1"))


def cmd_replay(host, port, pw, ip):
    c1, a = login(host, port, pw, ip)
    if c1.closed_within(1.5):
        print("first: closed")
        return 2
    print("first: accepted")
    c2 = Conn(host, port)
    c2.send(vmac_msg(pw, os.urandom(8).hex().encode(), int(time.time())))
    c2.send(a)
    second = c2.closed_within(3)
    print("second: " + ("closed" if second else "open"))
    first = c1.closed_within(0.5)
    print("first after: " + ("closed" if first else "open"))
    return 0 if second and not first else 1


def cmd_spoof(host, port, pw, me, src, dst):
    c, _ = login(host, port, pw, me)
    if c.closed_within(1.5):
        print("login: closed")
        return 2
    print("login: accepted")
    for _ in range(3):
        c.send(b"\x01" + udp_packet(me, dst, 9998, b"legit"))
        c.send(b"\x01" + udp_packet(src, dst, 9999, b"spoofed"))
    closed = c.closed_within(1)
    print("after: " + ("closed" if closed else "open"))
    return 0


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "http":
        cmd_http(*args)
        return 0
    pw = args[2].encode()
    if cmd == "replay":
        return cmd_replay(args[0], args[1], pw, args[3])
    if cmd == "spoof":
        return cmd_spoof(args[0], args[1], pw, *args[3:6])
    return 64


sys.exit(main(sys.argv))
EOF

wsc() {
	_ns=$1
	shift
	nsx "$_ns" timeout 20 python3 "$T/wsc.py" "$@"
}

# ---- Counters: nft in a client's namespace, before routing ----

# counters_init NS: table inet cdy with a prerouting chain.
counters_init() {
	nsx "$1" nft -f - <<-EOF
	table inet cdy {
		chain pre { type filter hook prerouting priority -300; }
	}
	EOF
}

# counter_add NS NAME MATCH...: count packets matching MATCH.
counter_add() {
	_ns=$1
	_cn=$2
	shift 2
	nsx "$_ns" nft add counter inet cdy "$_cn" &&
	    nsx "$_ns" nft add rule inet cdy pre "$@" counter name "$_cn"
}

# counter_get NS NAME: its packet count.
counter_get() {
	nsx "$1" nft list counter inet cdy "$2" 2>/dev/null |
	    awk '{ for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'
}

# ---- The network ----

lan_add net
ns_add srv
lan_join net srv $SRV/24
i=11
for c in c1 c2 c3 c4 raw; do
	ns_add $c
	lan_join net $c 10.77.0.$i/24
	i=$((i + 1))
done
# The LAN behind the gateway c3: one host, 192.168.50.2.
ns_add lanh
link c3 lanh 192.168.50.1/24 192.168.50.2/24
nsx lanh ip route add $NET.0/24 via 192.168.50.1
sysctl_set c3 net.ipv4.ip_forward=1

candy_server srv srv -w "ws://0.0.0.0:8080" -p $PW -d $NET.0/24 \
    --sdwan "$NET.0/24,192.168.50.0/24,$GW"
if ! wait_listening srv; then
	fail "the server starts and listens"
	exit 1
fi

# ---- Plain HTTP ----

if [ -n "$HAVE_PY" ]; then
	line=$(wsc raw http $SRV 8080)
	check "a plain HTTP GET gets a 4xx ($line)" \
	    eval 'echo "$line" | grep -Eq "^HTTP/1\.[01] 4[0-9][0-9]"'
fi

# ---- Clients: two dynamic, one static ----

candy_client c1 c1 -w $URI -p $PW
candy_client c2 c2 -w $URI -p $PW
candy_client c3 c3 -w $URI -p $PW -t $GW/24
for c in c1 c2 c3; do
	check "client $c gets an address" wait_addr $c 15
done
A1=$(addr_of c1)
A2=$(addr_of c2)
A3=$(addr_of c3)
echo "# addresses: c1 $A1, c2 $A2, c3 $A3"
check "the static client has its address" [ "$A3" = $GW ]
check "the dynamic clients have distinct addresses in $NET.0/24" \
    eval 'case "$A1 $A2" in "$NET".*" $NET".*) [ "$A1" != "$A2" ];;
    *) false;; esac'

# all_pairs_ping TRIES: every client pings every other one.
all_pairs_ping() {
	for a in c1 c2 c3; do
		for b in c1 c2 c3; do
			[ $a = $b ] && continue
			_ip=$(addr_of $b)
			check "$a pings $b ($_ip)$2" ping_ok $a "$_ip" "$1"
		done
	done
}
all_pairs_ping 10

# ---- Broadcast ----

for c in c2 c3; do
	sysctl_set $c net.ipv4.icmp_echo_ignore_broadcasts=0
	counters_init $c
	counter_add $c bcast iifname "candy-$c" ip daddr $NET.255 \
	    icmp type echo-request
done
nsx c1 ping -n -b -c 3 -i 0.3 -W 1 $NET.255 >"$T/bcast.out" 2>&1
sed 's/^/#   /' "$T/bcast.out" | grep 'bytes from'
for c in c2 c3; do
	check "a broadcast from c1 to $NET.255 reaches $c" \
	    eval '[ "$(counter_get '$c' bcast)" -ge 1 ]'
done
check "c1 gets broadcast ping replies from c2 and c3" \
    eval 'grep -q "from $A2:" "$T/bcast.out" && grep -q "from $A3:" "$T/bcast.out"'

# ---- SD-WAN ----

check "c1 has the SD-WAN route to 192.168.50.0/24" \
    eval 'nsx c1 ip route show 192.168.50.0/24 | grep -q candy-c1'
check "c1 reaches 192.168.50.2 behind the gateway c3" \
    ping_ok c1 192.168.50.2 10
check "c2 reaches 192.168.50.2 behind the gateway c3" \
    ping_ok c2 192.168.50.2 10

# ---- Spoofed source ----

if [ -n "$HAVE_PY" ]; then
	counters_init c1
	counter_add c1 legit iifname candy-c1 udp dport 9998
	counter_add c1 spoof iifname candy-c1 udp dport 9999
	wsc raw spoof $SRV 8080 $PW $NET.60 "$A2" "$A1" >"$T/spoof.out" 2>&1
	sed 's/^/#   /' "$T/spoof.out"
	check "a raw client authenticates and its own packets reach c1" \
	    eval '[ "$(counter_get c1 legit)" -ge 1 ]'
	check "a FORWARD with a spoofed source ($A2) is not delivered" \
	    eval '[ "$(counter_get c1 spoof)" = 0 ]'
	check "the server counts the spoofed packets" \
	    eval 'status_of srv | grep -Eq "spoofed [1-9]"'
fi

# ---- Replayed AUTH ----

if [ -n "$HAVE_PY" ]; then
	wsc raw replay $SRV 8080 $PW $NET.61 >"$T/replay.out" 2>&1
	rrc=$?
	sed 's/^/#   /' "$T/replay.out"
	check "a replayed AUTH is refused (connection closed)" [ $rrc = 0 ]
	check "the server logs the replay" log_has srv 'refused.*replay'
else
	fail "python3 for the raw WebSocket tests (make deps installs it)"
fi

# ---- Wrong password ----

candy_client c4 c4 -w $URI -p wrong-password
check "a client with a wrong password is refused by the server" \
    wait_log srv 10 'refused authentication.*wrong password'
sleep 1
check "a client with a wrong password gets no address" \
    eval '[ -z "$(addr_of c4)" ]'
check "a client with a wrong password logs why" \
    eval 'log_has c4 "refused|password"'
stop c4

# ---- A restarted client gets its address back ----

stop c1
check "a client stopped with SIGTERM exits 0 and removes its device" \
    eval '[ "$STOP_RC" = 0 ] && ! nsx c1 ip link show candy-c1 >/dev/null 2>&1'
candy_client c1 c1 -w $URI -p $PW
wait_addr c1 15
check "a restarted client gets its address back ($A1)" \
    eval '[ "$(addr_of c1)" = "$A1" ]'
check "the restarted client pings c2" ping_ok c1 "$A2" 10

# ---- Server restart: every client comes back by itself ----

stop srv KILL
sleep 2
candy_server srv srv -w "ws://0.0.0.0:8080" -p $PW -d $NET.0/24 \
    --sdwan "$NET.0/24,192.168.50.0/24,$GW"
check "the server restarts" wait_listening srv
check "after a server restart every client reconnects within 40 s" \
    wait_until 40 eval 'ping_ok c1 "$A2" 1 && ping_ok c2 "$A3" 1 &&
    ping_ok c3 "$A1" 1'
for c in c1 c2 c3; do
	eval "want=\$A${c#c}"
	check "$c keeps its address $want" eval '[ "$(addr_of '$c')" = "$want" ]'
done
all_pairs_ping 5 " after the server restart"
check "the server reports 3 clients" \
    eval 'status_of srv | grep -q "clients 3"'
check "c1 reports its status" \
    eval 'status_of c1 | grep -q "status: address $A1"'
