#!/bin/sh
# it-exit.sh: full tunnel through an exit node (issue 10).
#
# Three clients on a LAN (10.77.0.0/24) whose default route is a router
# to the server's network (10.78.0.0/24: the candy server and a STUN
# server), so that the clients reach both only by their default route:
# g (172.31.0.13, the exit node) alone reaches an "internet" host
# 203.0.113.5 and masquerades for the others (ip_forward and an nft rule,
# as candy.8 EXAMPLES says).  The server pushes the existing Candy's rule
# 172.31.0.0/24,0.0.0.0/0,g:
#   a reaches 203.0.113.5 through g, `ip route get` shows the tunnel, and
#   its own connections (server, STUN, peers: marked sockets) stay on the
#   underlay's default route; peers still ping each other, directly when
#   coturn is there; after a server restart everything comes back; a
#   SIGKILL leaves only two inert rules, which the next start removes;
#   SIGTERM leaves nothing.  b does the same with --exit-node instead.

. "$(dirname "$0")/lib.sh"
need_netns
[ -x "$CANDY" ] || { fail "candy is built"; exit 1; }

PW=secretpw
NET=172.31.0
SRV=10.78.0.2
URI=ws://$SRV:8080
STUN=
command -v turnserver >/dev/null 2>&1 && STUN=stun://$SRV:3478
GW=$NET.13
INET=203.0.113.5
SDWAN="$NET.0/24,0.0.0.0/0,$GW"

lan_add net
ns_add rt
lan_join net rt 10.77.0.254/24
ns_add srv
link rt srv 10.78.0.1/24 $SRV/24
nsx srv ip route add default via 10.78.0.1
sysctl_set rt net.ipv4.ip_forward=1
i=11
for c in a b g; do
	ns_add $c
	lan_join net $c 10.77.0.$i/24
	nsx $c ip route add default via 10.77.0.254
	i=$((i + 1))
done
ns_add inet
link g inet 203.0.113.1/24 $INET/24
# The gateway's side, as candy.8 EXAMPLES has it.
sysctl_set g net.ipv4.ip_forward=1
nsx g nft -f - <<-EOF
table ip candy-nat {
	chain post {
		type nat hook postrouting priority 100;
		oifname "v-inet" masquerade
	}
}
EOF

# rules NS: our policy rules in NS's namespace (table 7331, or ours
# suppressing the main table's default route).
rules() {
	nsx "$1" ip rule show | grep -E 'lookup 7331|pref 7330|^7330:' || true
}

candy_server srv srv -w "ws://0.0.0.0:8080" -p $PW -d $NET.0/24 \
    --sdwan "$SDWAN"
wait_listening srv || { fail "the server starts"; exit 1; }
if [ -n "$STUN" ]; then
	proc_start stun srv turnserver -n --listening-ip=$SRV \
	    --listening-port=3478 --stun-only --no-cli --no-tls --no-dtls \
	    --simple-log --log-file="$T/turnserver.log" \
	    --pidfile="$T/turnserver.pid" \
	    --userdb="$T/turndb"
	set -- -s $STUN
else
	echo "# no turnserver (coturn): peers through the server only"
	set --
fi
candy_client g g -w $URI -p $PW -t $GW/24 "$@"
candy_client a a -w $URI -p $PW "$@"
candy_client b b -w $URI -p $PW --exit-node $GW "$@"
for c in a b g; do
	check "client $c gets an address" wait_addr $c 15
done
A=$(addr_of a)
B=$(addr_of b)

check "a takes the pushed 0.0.0.0/0 as a full tunnel through $GW" \
    wait_log a 10 "full tunnel: all IPv4 through $GW \\(pushed"
check "b has its full tunnel from --exit-node" \
    wait_log b 10 "full tunnel: all IPv4 through $GW \\(--exit-node"
check "the exit node itself does not tunnel" \
    eval "! log_has g 'full tunnel:' && [ -z \"\$(rules g)\" ]"
check "ip route get $INET in a: the tunnel" \
    eval "nsx a ip route get $INET | grep -q 'dev candy-a'"
check "a reaches $INET, which only the exit node can reach" \
    ping_ok a $INET 10
check "b reaches $INET too" ping_ok b $INET 10
check "unmarked, the server's address goes into the tunnel" \
    eval "nsx a ip route get $SRV | grep -q 'dev candy-a'"
check "a's own (marked) sockets keep the underlay default route" \
    eval "nsx a ip route get $SRV mark 0x7331 | grep -q 'via 10.77.0.254'"
check "a's connection to the server carries the mark" \
    eval "nsx a ss -tne dst $SRV | grep -q 'fwmark:0x7331'"
check "a pings its peer b ($B)" ping_ok a "$B" 10
if [ -n "$STUN" ]; then
	check "a and b go peer-to-peer under the full tunnel" \
	    wait_log a 30 "peer $B connected via"
	check "a's UDP socket carries the mark" \
	    eval "nsx a ss -uane | grep -q 'fwmark:0x7331'"
fi
check "a pings the exit node ($GW)" ping_ok a $GW 10

# ---- Server restart ----

stop srv KILL
sleep 1
candy_server srv srv -w "ws://0.0.0.0:8080" -p $PW -d $NET.0/24 \
    --sdwan "$SDWAN"
wait_listening srv || fail "the server restarts"
check "after a server restart a reaches $INET again" \
    wait_until 45 ping_ok a $INET 1
check "and b (--exit-node) too" wait_until 20 ping_ok b $INET 1
check "a pings b after the restart" ping_ok a "$B" 10
check "one copy of each rule in a" \
    eval "[ \$(rules a | wc -l) = 2 ]"

# ---- SIGKILL, then a new start ----

stop a KILL
check "after SIGKILL the device and its routes are gone" \
    eval "! nsx a ip link show candy-a >/dev/null 2>&1 &&
    [ -z \"\$(nsx a ip route show table 7331 2>/dev/null)\" ]"
echo "# rules a SIGKILL left: $(rules a | tr '\n' ' ')"
# A start that cannot reach its server: the sweep alone.
candy_client a a -w ws://$SRV:1 -p $PW
check "a new start removes the rules a killed run left" \
    wait_until 10 eval '[ -z "$(rules a)" ]'
stop a
candy_client a a -w $URI -p $PW
check "restarted, a reaches $INET again" wait_until 30 ping_ok a $INET 1
check "with one copy of each rule" eval "[ \$(rules a | wc -l) = 2 ]"

# ---- SIGTERM: nothing left ----

for c in a b; do
	stop $c
	check "$c stopped with SIGTERM leaves no rule and no route" \
	    eval "[ -z \"\$(rules $c)\" ] &&
	    [ -z \"\$(nsx $c ip route show table 7331 2>/dev/null)\" ] &&
	    nsx $c ip route get $INET | grep -q 'via 10.77.0.254' &&
	    nsx $c ip route get $SRV | grep -q 'via 10.77.0.254'"
done
