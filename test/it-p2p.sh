#!/bin/sh
# it-p2p.sh: peer-to-peer over UDP (issue 4).
#
# A simulated internet, 198.51.100.0/24 (TEST-NET-2: public-looking, so that
# public and private endpoints are told apart as they would be), holds the
# candy server and a STUN server (coturn) in one namespace, and routers
# doing NAT, each with clients behind it:
#   rl  masquerade, clients a and b on one LAN behind it: they connect
#       over their LAN endpoints;
#   rc  1:1 NAT (endpoint-independent), client c; rd masquerade, client d:
#       they punch through, and pings between them then bypass the server
#       (client counters and an nft counter on rc);
#   re, rf  masquerade both, clients e and f: the first datagram to reach a
#       NAT before its own client has sent makes that NAT pick another port,
#       which the other NAT then filters; traffic must keep flowing through
#       the server, and the script says whether P2P formed;
#   rg  masquerade with random ports (symmetric), client g; rh masquerade,
#       client h: P2P fails, traffic flows through the server, and g's peer
#       h ends in WAITING;
#   then c and d's UDP is dropped mid-flow (nft on rc): the flow goes back
#   to the server within 5 s, and back to UDP once unblocked;
#   x, on the internet, replays datagrams d sent c (captured on rd) from
#   its own address: c drops them all and keeps d's endpoint (issue 8).

. "$(dirname "$0")/lib.sh"
need_netns
[ -x "$CANDY" ] || { fail "candy is built"; exit 1; }
command -v turnserver >/dev/null 2>&1 || skip_all "no turnserver (coturn)"
command -v nft >/dev/null 2>&1 || skip_all "no nft"

PW=secretpw
INET=198.51.100
SRV=$INET.1
URI=ws://$SRV:8080
STUN=stun://$SRV:3478

# ---- Helpers ----

# router NAME HOST: a namespace on the internet at $INET.HOST, forwarding.
router() {
	ns_add "$1"
	lan_join inet "$1" "$INET.$2/24"
	sysctl_set "$1" net.ipv4.ip_forward=1
}

# behind ROUTER CLIENT PREFIX: CLIENT at PREFIX.2 on its own link behind
# ROUTER (PREFIX.1), routed through it.
behind() {
	ns_add "$2"
	link "$1" "$2" "$3.1/24" "$3.2/24"
	nsx "$2" ip route add default via "$3.1"
}

# nat_masq ROUTER [random]: Linux masquerade on the uplink.  It keeps the
# source port when it can (port-restricted cone); with "random" each flow
# gets a random port (symmetric).
nat_masq() {
	nsx "$1" nft -f - <<EOF
table ip nat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "v-inet" masquerade $2
	}
}
EOF
}

# nat_cone ROUTER PUBLIC INSIDE: 1:1 NAT, everything to PUBLIC goes to
# INSIDE (endpoint-independent mapping and filtering: full cone).
nat_cone() {
	nsx "$1" nft -f - <<EOF
table ip nat {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "v-inet" ip daddr $2 dnat to $3
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "v-inet" ip saddr $3 snat to $2
	}
}
EOF
}

# server_tx NAME: FORWARD frames client NAME has sent to the server.
server_tx() {
	status_of "$1" | sed -n 's/^  to server: \([0-9]*\) frames.*/\1/p'
}

# peer_status NAME ADDR: NAME's peer ADDR in its status report, "STATE
# ENDPOINT TX RX" (datagrams).  A line at column 0 starts a block.
peer_status() {
	status_of "$1" | awk -v a="$2" '
	    /^[^ ]/ { on = $1 == "peer:" && $2 == a }
	    on && $1 == "state:" { st = $2 }
	    on && $1 == "endpoint:" { ep = $2 }
	    on && $1 == "sent:" { tx = $2 }
	    on && $1 == "received:" { rx = $2 }
	    END { if (st != "") print st, ep, tx, rx }'
}

# connections NAME ADDR: how many times NAME connected to ADDR.
connections() {
	grep -c "peer $2 connected via" "$(log_of "$1")"
}

# counter NS NAME: packets counted by nft counter NAME in table inet cnt.
counter() {
	nsx "$1" nft list counter inet cnt "$2" 2>/dev/null |
	    awk '{ for (i = 1; i < NF; i++)
		if ($i == "packets") print $(i + 1) }'
}

# ---- The network ----

lan_add inet
ns_add srv
lan_join inet srv $SRV/24

lan_add rl
lan_join inet rl $INET.11/24
sysctl_set rl net.ipv4.ip_forward=1
nsx rl ip addr add 192.168.1.1/24 dev br0
for c in a b; do
	ns_add $c
done
lan_join rl a 192.168.1.2/24
lan_join rl b 192.168.1.3/24
nsx a ip route add default via 192.168.1.1
nsx b ip route add default via 192.168.1.1
nat_masq rl

router rc 12
behind rc c 10.0.2
nat_cone rc $INET.12 10.0.2.2
router rd 13
behind rd d 10.0.3
nat_masq rd

router re 14
behind re e 10.0.4
nat_masq re
router rf 15
behind rf f 10.0.5
nat_masq rf

router rg 16
behind rg g 10.0.6
nat_masq rg random
router rh 17
behind rh h 10.0.7
nat_masq rh

# On rc: what c sends the server, and c's UDP with d's router; a chain to
# block that UDP later.
nsx rc nft -f - <<EOF
table inet cnt {
	counter tosrv {}
	counter peerudp {}
	chain counting {
		type filter hook forward priority 0; policy accept;
		ip daddr $SRV tcp dport 8080 counter name tosrv
		ip saddr $INET.13 meta l4proto udp counter name peerudp
		ip daddr $INET.13 meta l4proto udp counter name peerudp
	}
	chain cutting {
		type filter hook forward priority -10; policy accept;
	}
}
EOF

# ---- Servers ----

proc_start stun srv turnserver -n --listening-ip=$SRV --listening-port=3478 \
    --stun-only --no-cli --no-tls --no-dtls --simple-log \
    --log-file="$T/turnserver.log" --pidfile="$T/turnserver.pid" \
    --userdb="$T/turndb"
candy_server srv srv -w "ws://0.0.0.0:8080" -p $PW -d 172.31.0.0/24
if ! wait_listening srv; then
	fail "the server starts and listens"
	exit 1
fi
check "the STUN server (coturn) runs" eval 'sleep 0.5; running stun'
# Its user database in the run's directory, not the machine's
# /var/lib/turn/turndb (nothing outside the run is touched).
check "coturn's user database is the run's own" \
    wait_until 10 grep -q "success: $T/turndb" "$T/turnserver.log"

# ---- Clients ----

for c in a b c d e f g h; do
	candy_client $c $c -w $URI -p $PW -s $STUN
done
for c in a b c d e f g h; do
	check "client $c gets an address" wait_addr $c 15
done
A=$(addr_of a); B=$(addr_of b); C=$(addr_of c); D=$(addr_of d)
E=$(addr_of e); F=$(addr_of f); G=$(addr_of g); H=$(addr_of h)
echo "# a $A, b $B, c $C, d $D, e $E, f $F, g $G, h $H"

# The first packets go through the server and start every pair's
# handshake at once.
kick() {
	nsx "$1" ping -n -q -c 3 -i 0.3 -W 2 "$2" >/dev/null 2>&1 &
	pings="$pings $!"
}
pings=
kick a "$B"
kick c "$D"
kick e "$F"
kick g "$H"
# shellcheck disable=SC2086
wait $pings

# ---- Two clients on one LAN ----

check "a connects to b over the LAN" \
    wait_log a 20 "peer $B connected via 192\.168\.1\.3:"
check "b connects to a over the LAN" \
    wait_log b 5 "peer $A connected via 192\.168\.1\.2:"
check "a's log shows the peer's state changes at debug level" \
    log_has a "\[debug\] peer $B: [A-Z]+ -> CONNECTED"
check "a pings b" ping_ok a "$B" 5

# ---- 1:1 NAT and masquerade ----

check "c (1:1 NAT) connects to d (masquerade)" \
    wait_log c 20 "peer $D connected via $INET\.13:"
check "d connects to c" wait_log d 5 "peer $C connected via $INET\.12:"
sleep 1
tx0=$(server_tx c)
ptx0=$(peer_status c "$D" | awk '{ print $3 }')
srv0=$(counter rc tosrv)
udp0=$(counter rc peerudp)
nsx c ping -n -q -c 10 -i 0.2 -W 2 "$D" >"$T/cd.out" 2>&1
check "c pings d 10 times" grep -q ' 0% packet loss' "$T/cd.out"
tx1=$(server_tx c)
ptx1=$(peer_status c "$D" | awk '{ print $3 }')
srv1=$(counter rc tosrv)
udp1=$(counter rc peerudp)
echo "# c: server tx $tx0 -> $tx1, peer d tx $ptx0 -> $ptx1;" \
    "rc: to the server $srv0 -> $srv1 packets, UDP with rd $udp0 -> $udp1"
check "the pings go over UDP: c's peer counter grows by 10" \
    [ $((ptx1 - ptx0)) -ge 10 ]
check "the pings do not go through the server: c's server counter stays" \
    [ "$tx1" = "$tx0" ]
check "rc sees no FORWARD traffic to the server (nft counter)" \
    [ $((srv1 - srv0)) -lt 5 ]
check "rc sees the pings as UDP between the routers (nft counter)" \
    [ $((udp1 - udp0)) -ge 20 ]

# ---- Masquerade on both sides ----

sleep 2
if log_has e "peer $F connected via" && log_has f "peer $E connected via"
then
	echo "# masquerade on both sides: P2P formed"
else
	echo "# masquerade on both sides: P2P did not form (the NATs clash)"
fi
check "e and f keep reaching each other" eval "ping_ok e $F 5 && ping_ok f $E 5"

# ---- Symmetric NAT ----

check "g (symmetric NAT) gives up on h: CONNECTING -> WAITING" \
    wait_log g 20 "peer $H: CONNECTING -> WAITING"
check "h gives up on g too" wait_log h 10 "peer $G: [A-Z]+ -> WAITING"
check "g never connects to h" eval "! log_has g 'peer $H connected'"
st=$(peer_status g "$H")
echo "# g's peer h: $st"
check "g's status shows h WAITING" \
    eval 'case "$st" in WAITING*) ;; *) false;; esac'
tx0=$(server_tx g)
check "g pings h through the server" ping_ok g "$H" 5
tx1=$(server_tx g)
check "g's server counter grows" [ "$tx1" -gt "$tx0" ]

# ---- UDP blocked mid-flow ----

bg_run c "$T/flow.log" ping -n -D -i 0.2 -c 120 -W 1 "$D"
FLOW=$BG_PID
sleep 2
nsx rc nft add rule inet cnt cutting ip saddr $INET.13 meta l4proto udp drop
nsx rc nft add rule inet cnt cutting ip daddr $INET.13 meta l4proto udp drop
t0=$(date +%s)
check "blocked: c loses d within 5 s" wait_log c 5 "peer $D lost"
check "blocked: d loses c within 5 s" wait_log d 5 "peer $C lost"
sleep 2
nsx rc nft flush chain inet cnt cutting
t1=$(date +%s)
check "unblocked: c and d connect again" \
    wait_until 25 eval '[ "$(connections c "$D")" -ge 2 ]'
echo "# blocked for $((t1 - t0)) s; reconnected after $(($(date +%s) - t1)) s"
wait "$FLOW" 2>/dev/null
# The longest gap between two answers of the flow: the time without a
# path, from the block until the server took over.
gap=$(awk -F'[][]' '/bytes from/ { t = $2 + 0;
    if (last && t - last > max) max = t - last; last = t }
    END { printf "%.1f", max }' "$T/flow.log")
echo "# longest gap in the flow: $gap s"
check "the block cuts the UDP path (a gap of 1 s or more)" \
    awk -v g="$gap" 'BEGIN { exit !(g >= 1) }'
check "the flow falls back to the server within 5 s" \
    awk -v g="$gap" 'BEGIN { exit !(g <= 5) }'
tx0=$(server_tx c)
nsx c ping -n -q -c 5 -i 0.2 -W 2 "$D" >/dev/null 2>&1
tx1=$(server_tx c)
st=$(peer_status c "$D")
echo "# c's peer d: $st; server tx $tx0 -> $tx1"
check "the flow is back on UDP" \
    eval 'case "$st" in CONNECTED*) [ "$tx1" = "$tx0" ];; *) false;; esac'

# ---- Replays from elsewhere ----

# An observer on d's uplink (rd) captures what d sends c while c pings d:
# heartbeats and FORWARDs.  An attacker on the internet (x) replays each
# 20 times from its own address.  c must drop every one (its replays
# counter; a busy machine may lose some on the way), deliver none (its
# peer counter for d stays), and keep using d's endpoint.
cat >"$T/sniff.py" <<'PY'
import socket, sys, time
dev, src, dst, out, secs = sys.argv[1:6]
# ETH_P_ALL: packets a router sends out reach only those sockets.
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
s.bind((dev, 0))
s.settimeout(0.2)
src, dst = socket.inet_aton(src), socket.inet_aton(dst)
end = time.time() + float(secs)
n = 0
with open(out, "w") as f:
    while time.time() < end and n < 40:
        try:
            p = s.recv(65535)
        except socket.timeout:
            continue
        if (len(p) < 28 or p[0] >> 4 != 4 or p[9] != 17 or
                p[12:16] != src or p[16:20] != dst):
            continue
        h = (p[0] & 15) * 4
        f.write("%d %s\n" % (int.from_bytes(p[h + 2:h + 4], "big"),
            p[h + 8:].hex()))
        n += 1
PY
cat >"$T/replay.py" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for line in open(sys.argv[1]):
    port, data = line.split()
    for i in range(int(sys.argv[3])):
        s.sendto(bytes.fromhex(data), (sys.argv[2], int(port)))
    time.sleep(0.05)
PY
ns_add x
lan_join inet x $INET.20/24
replays_of() {
	status_of "$1" | sed -n 's/^  replays: \([0-9]*\)$/\1/p'
}
bg_run rd "$T/sniff.log" python3 "$T/sniff.py" v-inet $INET.13 $INET.12 \
    "$T/captured" 4
SNIFF=$BG_PID
sleep 0.5
nsx c ping -n -q -c 10 -i 0.2 -W 2 "$D" >/dev/null 2>&1
wait "$SNIFF" 2>/dev/null
ncap=$(wc -l <"$T/captured" 2>/dev/null || echo 0)
st0=$(peer_status c "$D")
rp0=$(replays_of c)
nsx x python3 "$T/replay.py" "$T/captured" $INET.12 20
sleep 2
st1=$(peer_status c "$D")
rp1=$(replays_of c)
echo "# captured $ncap datagrams d -> c; c's peer d: $st0 -> $st1;" \
    "replays $rp0 -> $rp1"
check "rd captures d's datagrams to c" [ "$ncap" -ge 5 ]
check "replayed from elsewhere: every one dropped and counted" \
    [ $((rp1 - rp0)) -ge $((ncap * 20 / 2)) ]
check "replayed from elsewhere: nothing delivered (c's rx from d stays)" \
    [ "$(echo "$st0" | awk '{ print $4 }')" = \
    "$(echo "$st1" | awk '{ print $4 }')" ]
check "replayed heartbeats do not move d's endpoint on c, even briefly" \
    eval 'case "$st1" in "CONNECTED $INET.13:"*) ;; *) false;; esac &&
    ! log_has c "peer $D.* $INET\.20:"'
check "c still pings d over UDP" ping_ok c "$D" 5

exit 0
