#!/bin/sh
# it-route.sh: clients relay for each other (PROTOCOL 6, option -r).
#
# A Candy server and a real STUN server (coturn) on 10.77.0.1; clients on
# the same simulated internet, 10.77.0.0/24.  nft rules inside the client
# namespaces cut the UDP paths between chosen clients, so that their
# packets must take a relay:
#
#   1. a and b cannot reach each other over UDP; both reach c: a's packets
#      to b go a - c - b, and the server forwards none of them.
#   2. c stops: a and b fall back to the server and the ping keeps going.
#   3. the UDP block goes: a and b connect directly.
#   4. a chain a - c - d - b where only neighbours reach each other: a
#      reaches b over two relays, the server forwarding nothing.
. "$(dirname "$0")/lib.sh"

need_netns
command -v turnserver >/dev/null 2>&1 || skip_all "no turnserver (coturn)"
command -v nft >/dev/null 2>&1 || skip_all "no nft"
[ -x "$CANDY" ] || skip_all "no candy binary (make)"

SRV=10.77.0.1
START=$(date +%s)

# phase TEXT: a comment with the seconds since the start, for slow CI runs.
phase() {
	echo "# $(($(date +%s) - START)) s: $1"
}
TUN_A=172.31.0.11 TUN_B=172.31.0.12 TUN_C=172.31.0.13 TUN_D=172.31.0.14

lan_add net
ns_add srv
lan_join net srv $SRV/24
for n in a b c d; do
	ns_add $n
done
lan_join net a 10.77.0.11/24
lan_join net b 10.77.0.12/24
lan_join net c 10.77.0.13/24
lan_join net d 10.77.0.14/24

proc_start stun srv turnserver --listening-ip=$SRV --listening-port=3478 \
    --stun-only --no-cli --no-tls --no-dtls --simple-log \
    --log-file=stdout --pidfile="$T/turnserver.pid" \
    --userdb="$T/turndb"
candy_server srv server -w ws://$SRV:8080 -p pw -d 172.31.0.0/24
wait_listening server || { fail "server listens"; exit 1; }

# client NAME TUNIP: a client with a static address, STUN, relay cost 5.
client() {
	candy_client "$1" "$1" -w ws://$SRV:8080 -p pw -t "$2/24" \
	    -s stun://$SRV -r 5
}

# udp_only NS ADDR...: NS exchanges UDP on 10.77.0.0/24 with the server
# and the listed underlay addresses only.
udp_only() {
	_uo_ns=$1
	shift
	_uo_set=$SRV
	for _uo_a in "$@"; do
		_uo_set="$_uo_set, $_uo_a"
	done
	nsx "$_uo_ns" nft -f - <<EOF
table inet cdyroute {
	chain in {
		type filter hook input priority 0; policy accept;
		meta l4proto udp ip saddr 10.77.0.0/24 ip saddr != { $_uo_set } drop
	}
	chain out {
		type filter hook output priority 0; policy accept;
		meta l4proto udp ip daddr 10.77.0.0/24 ip daddr != { $_uo_set } drop
	}
}
EOF
}

udp_any() {
	nsx "$1" nft delete table inet cdyroute 2>/dev/null
}

# relay_routes NAME: the rows of NAME's relay table, "DST via NEXT rtt N
# ms" each.
relay_routes() {
	status_of "$1" | awk '/^[^ ]/ { on = $0 == "relay routes:"; next }
	    on { sub(/^ +/, ""); print }'
}

# via NAME DST NEXT: NAME's relay table sends DST via NEXT.
via() {
	relay_routes "$1" | grep -q "^$2 via $3 rtt"
}

# no_route NAME DST: NAME's relay table has no entry for DST.
no_route() {
	! relay_routes "$1" | grep -q "^$2 via"
}

# count NAME LABEL: the number after "LABEL: " in the first block of
# NAME's status report (the server's totals, the client's own counters:
# "to server" is its FORWARD frames sent to the server).
count() {
	status_of "$1" | awk -v w="$2: " 'NR > 1 && /^[^ ]/ { exit }
	    { l = $0; sub(/^ +/, "", l) }
	    index(l, w) == 1 { split(substr(l, length(w) + 1), f, " ");
		print f[1]; exit }'
}

# flows NS DST: 15 pings 0.2 s apart; at least 13 answered.
flows() {
	_fl_got=$(nsx "$1" ping -n -q -c 15 -i 0.2 -W 1 "$2" 2>/dev/null |
	    awk '/received/ { print $4 }')
	echo "# $1 -> $2: ${_fl_got:-0} of 15 answered"
	[ "${_fl_got:-0}" -ge 13 ]
}

# quiet_flow NS DST NAME: a 3-second ping from NS to DST is answered
# while neither the server's forwarded count nor client NAME's count of
# packets sent through the server grows: the packets took UDP paths.
quiet_flow() {
	_qf_f0=$(count server forwarded)
	_qf_t0=$(count "$3" "to server")
	flows "$1" "$2" || return 1
	_qf_f1=$(count server forwarded)
	_qf_t1=$(count "$3" "to server")
	echo "# server forwarded $_qf_f0 -> $_qf_f1, $3 tx $_qf_t0 -> $_qf_t1"
	[ -n "$_qf_f0" ] && [ "$_qf_f0" = "$_qf_f1" ] && [ "$_qf_t0" = "$_qf_t1" ]
}

# ---- 1. a and b cannot talk over UDP: c relays. ----

phase "a and b cannot talk over UDP: c relays"

udp_only a 10.77.0.13
udp_only b 10.77.0.13
client a $TUN_A
client b $TUN_B
client c $TUN_C
for n in a b c; do
	wait_addr $n 15 || { fail "client $n has its address"; exit 1; }
done
# Traffic through the server makes peers start P2P (PROTOCOL 5.4).
ping_ok a $TUN_C 5 >/dev/null
ping_ok b $TUN_C 5 >/dev/null
check "a and c connect and measure each other" \
    wait_until 30 via a $TUN_C $TUN_C
check "b and c connect and measure each other" \
    wait_until 30 via b $TUN_C $TUN_C
ping_ok a $TUN_B 5 >/dev/null
# The route comes from c's announcements, at the latest with its refresh
# every 60 ticks.
check "a's route to b goes via c" wait_until 70 via a $TUN_B $TUN_C
check "b's route to a goes via c" wait_until 70 via b $TUN_A $TUN_C
check "a pings b through c, nothing through the server" \
    quiet_flow a $TUN_B a

# ---- 2. c goes away: back to the server. ----

phase "c goes away: back to the server"

nsx a ping -n -q -c 50 -i 0.2 -W 1 $TUN_B >"$T/ping-stop.out" 2>&1 &
PING=$!
sleep 2
stop c
wait $PING
# a notices that c is gone after 3 s without a heartbeat (PROTOCOL 5.4).
_got=$(awk '/received/ { print $4 }' "$T/ping-stop.out")
echo "# a -> b while c stopped: $(grep received "$T/ping-stop.out")"
check "the ping across c's stop loses at most 5 s of packets" \
    [ "${_got:-0}" -ge 25 ]
check "a forgets the routes via c" wait_until 15 no_route a $TUN_B
check "a reaches b through the server after c stopped" flows a $TUN_B
_t0=$(count a "to server")
flows a $TUN_B >/dev/null
_t1=$(count a "to server")
check "a's packets to b now go through the server ($_t0 -> $_t1)" \
    [ "${_t1:-0}" -gt "${_t0:-0}" ]

# ---- 3. The UDP block goes: a and b connect directly. ----

phase "the UDP block goes: a and b connect directly"

udp_any a
udp_any b
# a - b gave up and waits (30 s) before trying again; traffic through
# the server starts the new attempt.
# Both sides: b may turn CONNECTED a tick after a, and its first answers
# then still go through the server.
check "a and b connect directly once UDP passes" \
    wait_until 60 eval "ping_ok a $TUN_B 1 && via a $TUN_B $TUN_B &&
    via b $TUN_A $TUN_A"
check "a pings b directly, nothing through the server" \
    quiet_flow a $TUN_B a

# ---- 4. A chain a - c - d - b: two relays. ----

phase "a chain a - c - d - b: two relays"

stop a
stop b
udp_only a 10.77.0.13
udp_only c 10.77.0.11 10.77.0.14
udp_only d 10.77.0.13 10.77.0.12
udp_only b 10.77.0.14
client a $TUN_A
client b $TUN_B
client c $TUN_C
client d $TUN_D
for n in a b c d; do
	wait_addr $n 15 || { fail "chain: client $n has its address"; exit 1; }
done
ping_ok a $TUN_C 5 >/dev/null
ping_ok c $TUN_D 5 >/dev/null
ping_ok d $TUN_B 5 >/dev/null
check "chain: neighbours connect" wait_until 30 eval \
    "via a $TUN_C $TUN_C && via c $TUN_D $TUN_D && via d $TUN_B $TUN_B"
ping_ok a $TUN_B 5 >/dev/null
check "chain: a's route to b goes via c" wait_until 70 via a $TUN_B $TUN_C
check "chain: c's route to b goes via d" wait_until 10 via c $TUN_B $TUN_D
check "chain: b's route to a goes via d" wait_until 70 via b $TUN_A $TUN_D
check "chain: a pings b over two relays, nothing through the server" \
    quiet_flow a $TUN_B a
phase "done"
