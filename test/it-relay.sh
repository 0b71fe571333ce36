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
# The raw protocol checks use test/wsc.py, a small WebSocket client in
# Python (stdlib).

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

# ---- The raw client (test/wsc.py) ----

wsc() {
	_ns=$1
	shift
	nsx "$_ns" timeout 20 python3 "$ROOT/test/wsc.py" "$@"
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
	    eval 'status_of srv | grep -Eq "^  spoofed: [1-9]"'
	# The same forgery inside IP-in-IP (issue 8): the server looks in.
	legit0=$(counter_get c1 legit)
	sp0=$(status_of srv | sed -n 's/^  spoofed: \([0-9]*\)$/\1/p')
	wsc raw ipip $SRV 8080 $PW $NET.62 "$A2" "$A1" >"$T/ipip.out" 2>&1
	sed 's/^/#   /' "$T/ipip.out"
	sp1=$(status_of srv | sed -n 's/^  spoofed: \([0-9]*\)$/\1/p')
	check "IP-in-IP with the sender's own inner source reaches c1" \
	    eval '[ "$(counter_get c1 legit)" -gt "$legit0" ]'
	check "IP-in-IP with a forged inner source ($A2) is not delivered" \
	    eval '[ "$(counter_get c1 spoof)" = 0 ]'
	check "the server counts them as spoofed ($sp0 -> $sp1)" \
	    eval '[ "${sp1:-0}" -ge $((${sp0:-0} + 3)) ]'
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

# ---- Frames before AUTH: small ----

# A stranger's 2000-byte ping (larger than any message before AUTH, and
# than the existing server's frames) ends its connection: the pending
# slots keep to their base-size buffers.  After AUTH it is answered.
if [ -n "$HAVE_PY" ]; then
	wsc raw bigping $SRV 8080 $PW $NET.63 >"$T/bigping.out" 2>&1
	sed 's/^/#   /' "$T/bigping.out"
	check "a 2000-byte frame before AUTH closes the connection" \
	    grep -qx "stranger: closed" "$T/bigping.out"
	check "a 2000-byte ping after AUTH is answered" \
	    grep -qx "client: pong" "$T/bigping.out"
fi

# ---- Two hosts ask for the same free address at the same moment ----

if [ -n "$HAVE_PY" ]; then
	wsc raw race $SRV 8080 $PW $NET.200/24 >"$T/race.out" 2>&1
	sed 's/^/#   /' "$T/race.out"
	check "two hosts asking for one address at once get different ones" \
	    eval '[ "$(sort -u "$T/race.out" | grep -c "^$NET\.")" = 2 ] &&
	    grep -qx "$NET.200/24" "$T/race.out"'
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
    eval 'status_of srv | grep -q "^  clients: 3$"'
check "c1 reports its status" \
    eval 'status_of c1 | grep -q "^  address: $A1/"'
