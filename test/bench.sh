#!/bin/sh
# bench.sh (make bench): how fast and how small.  A server and two clients
# in network namespaces on a simulated internet (as in the tests); the
# clients' traffic goes through the server.  Not part of make test.
#
# Each section is a function bench_<what> that may use the running setup
# (server "srv", clients "ca" and "cb" with addresses $A and $B) and calls
# `result NAME VALUE UNIT`; the results are printed again together at the
# end.  To add a section (e.g. TLS memory), write a function and add it to
# SECTIONS below.

if [ "$(id -u)" != 0 ]; then
	echo "make bench needs root: it creates network namespaces." >&2
	exit 1
fi
. "$(dirname "$0")/lib.sh"
[ -x "$CANDY" ] || { echo "./candy is not built (run make)." >&2; exit 1; }
command -v iperf3 >/dev/null 2>&1 ||
    { echo "iperf3 is missing (make deps installs it)." >&2; exit 1; }
# Per-packet debug logging would be measured too: log at info level.
DEBUG_FLAG=
SECS=${BENCH_SECONDS:-5}

result() {
	printf '%-40s %12s %s\n' "$1" "$2" "$3" | tee -a "$T/results"
}

# ---- The setup ----

lan_add net
ns_add srv
ns_add ca
ns_add cb
lan_join net srv 10.77.0.1/24
lan_join net ca 10.77.0.2/24
lan_join net cb 10.77.0.3/24
candy_server srv srv -w ws://0.0.0.0:8080 -p benchpw -d 172.31.0.0/24
wait_listening srv || { echo "the server did not start" >&2; exit 1; }
candy_client ca ca -w ws://10.77.0.1:8080 -p benchpw
candy_client cb cb -w ws://10.77.0.1:8080 -p benchpw
if ! wait_addr ca 15 || ! wait_addr cb 15; then
	echo "the clients got no address" >&2
	FAILED=1	# makes cleanup show the logs
	exit 1
fi
A=$(addr_of ca)
B=$(addr_of cb)
wait_until 10 ping_ok ca "$B" 1
echo "# server 10.77.0.1, client ca $A, client cb $B (relayed by the server)"

# ---- Sections ----

# loaded_ping NS DST OUT: ping DST from NS in the background, every 0.1 s
# while a bulk transfer runs; loaded_ping_result NAME reports its
# average (a ping must not wait behind a bulk flow: issue 11).
loaded_ping() {
	bg_run "$1" "$3" ping -n -q -i 0.1 -w "$((SECS - 1))" -W 2 "$2"
	LOADED_PING_PID=$BG_PID
}

loaded_ping_result() {
	wait "$LOADED_PING_PID" 2>/dev/null
	result "$1" "$(awk -F/ '/^rtt|^round-trip/ { print $5 }' "$2")" ms
	loss=$(sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p' "$2")
	[ "${loss:-0}" = 0 ] || result "$1 loss" "$loss" %
}

# Throughput: iperf3 TCP, ca -> cb, then cb -> ca (reverse).
bench_throughput() {
	bg_run cb "$T/iperf3-server.log" iperf3 -s -B "$B"
	wait_until 5 eval "nsx cb ss -ltn | grep -q ':5201'"
	for dir in "" -R; do
		[ -n "$dir" ] || loaded_ping ca "$B" "$T/ping-load.out"
		nsx ca iperf3 -c "$B" -t "$SECS" -f m $dir >"$T/iperf3.out" 2>&1
		[ -n "$dir" ] || loaded_ping_result \
		    "latency ca->cb ping under load" "$T/ping-load.out"
		mbit=$(awk '/receiver/ { for (i = 1; i < NF; i++)
		    if ($(i + 1) == "Mbits/sec") v = $i } END { print v }' \
		    "$T/iperf3.out")
		if [ -z "$dir" ]; then
			result "throughput ca->cb (TCP)" "${mbit:-?}" Mbit/s
		else
			result "throughput cb->ca (TCP)" "${mbit:-?}" Mbit/s
		fi
		[ -n "$mbit" ] || sed 's/^/#   /' "$T/iperf3.out"
	done
}

# Latency: 20 pings through the server, idle link.
bench_latency() {
	nsx ca ping -n -q -c 20 -i 0.2 -W 2 "$B" >"$T/ping.out" 2>&1
	avg=$(awk -F/ '/^rtt|^round-trip/ { print $5 }' "$T/ping.out")
	loss=$(sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p' "$T/ping.out")
	result "latency ca->cb ping avg" "${avg:-?}" ms
	result "latency ca->cb ping loss" "${loss:-?}" %
}

# vmrss PID: resident memory in kB.
vmrss() {
	awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# Memory after the traffic above (the clients' own, idle and under load,
# in the rss section).
bench_memory() {
	result "memory server VmRSS (2 clients)" "$(vmrss "$(pid_of srv)")" kB
	result "memory client VmRSS" "$(vmrss "$(pid_of ca)")" kB
	result "memory client VmHWM (peak)" \
	    "$(awk '/^VmHWM:/ { print $2 }' "/proc/$(pid_of ca)/status")" kB
}

# Peer-to-peer: two more clients with a STUN server (coturn) beside the
# candy server; once they are CONNECTED their traffic is AES-256-GCM over
# UDP, straight between them.
bench_p2p() {
	if ! command -v turnserver >/dev/null 2>&1; then
		echo "#   coturn is missing (make deps installs it)"
		return
	fi
	ns_add pa
	ns_add pb
	lan_join net pa 10.77.0.4/24
	lan_join net pb 10.77.0.5/24
	bg_run srv "$T/turn.log" turnserver --listening-ip=10.77.0.1 \
	    --listening-port=3478 --stun-only --no-cli --no-tls --no-dtls \
	    --log-file=stdout \
	    --userdb="$T/turndb"
	candy_client pa pa -w ws://10.77.0.1:8080 -p benchpw \
	    -s stun://10.77.0.1
	candy_client pb pb -w ws://10.77.0.1:8080 -p benchpw \
	    -s stun://10.77.0.1
	wait_addr pa 15 && wait_addr pb 15 || return
	PB=$(addr_of pb)
	ping_ok pa "$PB" 5
	if ! wait_log pa 20 "peer $PB connected via"; then
		echo "#   the peers did not connect over UDP"
		return
	fi
	bg_run pb "$T/iperf3-p2p.log" iperf3 -s -B "$PB"
	wait_until 5 eval "nsx pb ss -ltn | grep -q ':5201'"
	loaded_ping pa "$PB" "$T/ping-load-p2p.out"
	nsx pa iperf3 -c "$PB" -t "$SECS" -f m >"$T/iperf3.out" 2>&1
	loaded_ping_result "latency pa->pb ping under load" \
	    "$T/ping-load-p2p.out"
	mbit=$(awk '/receiver/ { for (i = 1; i < NF; i++)
	    if ($(i + 1) == "Mbits/sec") v = $i } END { print v }' \
	    "$T/iperf3.out")
	result "throughput pa->pb over UDP (TCP)" "${mbit:-?}" Mbit/s
	nsx pa ping -n -q -c 20 -i 0.2 -W 2 "$PB" >"$T/ping.out" 2>&1
	result "latency pa->pb over UDP ping avg" \
	    "$(awk -F/ '/^rtt|^round-trip/ { print $5 }' "$T/ping.out")" ms
}

# The TLS, client memory and scale sections live in their own files.
. "$(dirname "$0")/bench-tls.sh"
BENCH_SOURCED=1
. "$(dirname "$0")/bench-rss.sh"
. "$(dirname "$0")/bench-scale.sh"
# candy against wireguard-go, OpenVPN and tinc, in a lab of its own.
. "$(dirname "$0")/bench-peers.sh"

SECTIONS=${BENCH_SECTIONS:-throughput latency memory p2p tls rss scale peers}

for s in $SECTIONS; do
	echo "# $s"
	"bench_$s"
done

echo
echo "Results ($(uname -m), $(nproc) CPUs," \
    "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
    "candy $("$CANDY" --version | awk '{ print $2 }')):"
cat "$T/results"
if [ -s "$T/peers-results.md" ]; then
	echo
	cat "$T/peers-results.md"
fi
