#!/bin/sh
# bench-rss.sh: the "rss" section of make bench (sourced by test/bench.sh),
# or alone: make bench-rss (sh test/bench-rss.sh).
#
# A client's resident memory (VmRSS) idle and while it carries a bulk
# transfer, for each way a client talks (relay over ws://, relay over
# wss://, peer-to-peer over UDP) and for each build in RSS_BINS (default
# ./candy and, when built, ./candy-static).  Issue 11's target is a client
# under 2 MiB.  In namespace "rs" a server (ws:// on 8081, wss:// on
# 8444, ./candy) and a STUN server (coturn, when installed); clients x and
# y, each in a namespace of its own behind rs, of the build measured.
# For each case:
#   idle      VmRSS of x once x and y reach each other (a few pings);
#   load      the highest VmRSS of x (sender) and y (receiver), read every
#             0.2 s while iperf3 sends x -> y for RSS_SECONDS (default 5);
#   peak      the higher VmHWM of the two after that;
#   private   Private_Clean + Private_Dirty of x's smaps_rollup after the
#             load: pages no other process maps (the rest of VmRSS is
#             shared libraries', or the binary's text, which y maps too).
# Then, per build, the highest VmHWM of all its cases against the target.
# RSS_SMAPS=PREFIX keeps x's /proc/PID/smaps of each case in PREFIX.*.

RSS_SECONDS=${RSS_SECONDS:-5}

# rss_kb PID FIELD: a field of /proc/PID/status in kB.
rss_kb() {
	awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null
}

# rss_private PID: kB of PID's pages no other process maps.
rss_private() {
	awk '/^Private_(Clean|Dirty):/ { n += $2 } END { print n }' \
	    "/proc/$1/smaps_rollup" 2>/dev/null
}

# rss_sample OUT PID...: the highest VmRSS of each PID every 0.2 s until
# $T/rss.stop appears; one line "max max ..." to OUT.
rss_sample() {
	_rs_out=$1
	shift
	while [ ! -e "$T/rss.stop" ]; do
		for _rs_p in "$@"; do
			rss_kb "$_rs_p" VmRSS
		done | tr '\n' ' '
		echo
		sleep 0.2
	done | awk '{ for (i = 1; i <= NF; i++) if ($i > m[i]) m[i] = $i }
	    END { for (i = 1; i <= length(m); i++) printf "%s ", m[i]; print "" }' \
	    >"$_rs_out"
}

# rss_case BIN WHAT URI [client options]: clients x and y of BIN, the
# figures of one case.
rss_case() {
	_rc_bin=$1
	_rc_what=$2
	_rc_uri=$3
	shift 3
	CANDY=$_rc_bin candy_client rsx rsx -w "$_rc_uri" -p rsspw "$@"
	CANDY=$_rc_bin candy_client rsy rsy -w "$_rc_uri" -p rsspw "$@"
	if ! wait_addr rsx 15 || ! wait_addr rsy 15; then
		echo "# rss: $_rc_what: the clients got no address"
		stop rsx; stop rsy
		return
	fi
	_rc_y=$(addr_of rsy)
	wait_until 10 ping_ok rsx "$_rc_y" 1
	case $_rc_what in
	*p2p*)
		ping_ok rsx "$_rc_y" 5
		if ! wait_log rsx 20 "peer $_rc_y connected via"; then
			echo "# rss: $_rc_what: the peers did not connect over UDP"
			stop rsx; stop rsy
			return
		fi ;;
	esac
	nsx rsx ping -n -q -c 5 -i 0.2 "$_rc_y" >/dev/null 2>&1
	sleep 1
	_rc_px=$(pid_of rsx)
	_rc_py=$(pid_of rsy)
	result "rss $_rc_what idle" "$(rss_kb "$_rc_px" VmRSS)" kB
	bg_run rsy "$T/iperf3-rss.log" iperf3 -s -1 -B "$_rc_y" -p 5209
	wait_until 5 eval "nsx rsy ss -ltn | grep -q ':5209'"
	rm -f "$T/rss.stop"
	rss_sample "$T/rss.max" "$_rc_px" "$_rc_py" &
	_rc_sp=$!
	nsx rsx iperf3 -c "$_rc_y" -p 5209 -t "$RSS_SECONDS" -f m \
	    >"$T/iperf3-rss.out" 2>&1
	: >"$T/rss.stop"
	wait "$_rc_sp"
	read -r _rc_mx _rc_my <"$T/rss.max"
	_rc_m=$(awk '/receiver/ { for (i = 1; i < NF; i++)
	    if ($(i + 1) == "Mbits/sec") v = $i } END { print v }' \
	    "$T/iperf3-rss.out")
	echo "#   $_rc_what: iperf3 x -> y ${_rc_m:-?} Mbit/s"
	result "rss $_rc_what load, sender/receiver" "$_rc_mx/$_rc_my" kB
	_rc_hx=$(rss_kb "$_rc_px" VmHWM)
	_rc_hy=$(rss_kb "$_rc_py" VmHWM)
	result "rss $_rc_what peak (VmHWM)" \
	    "$((_rc_hx > _rc_hy ? _rc_hx : _rc_hy))" kB
	result "rss $_rc_what private, sender" "$(rss_private "$_rc_px")" kB
	for _rc_v in "$_rc_hx" "$_rc_hy"; do
		[ "${_rc_v:-0}" -gt "$RSS_TOP" ] && RSS_TOP=$_rc_v
	done
	if [ -n "$RSS_SMAPS" ]; then
		cp "/proc/$_rc_px/smaps" "$RSS_SMAPS.$(basename "$_rc_bin").$(
		    echo "$_rc_what" | tr -c 'a-z0-9\n' _)"
	fi
	stop rsx
	stop rsy
}

bench_rss() {
	_br_k=$T/rss-tls
	mkdir -p "$_br_k"
	ns_add rs
	ns_add rsx
	ns_add rsy
	link rs rsx 10.66.0.1/24 10.66.0.2/24
	link rs rsy 10.66.1.1/24 10.66.1.2/24
	nsx rsx ip route add default via 10.66.0.1
	nsx rsy ip route add default via 10.66.1.1
	sysctl_set rs net.ipv4.ip_forward=1
	candy_server rs rss -w ws://0.0.0.0:8081 -p rsspw -d 172.29.0.0/24
	_br_pin=
	if openssl ecparam -name prime256v1 -genkey -out "$_br_k/ec.key" \
	    2>/dev/null && openssl req -x509 -new -key "$_br_k/ec.key" \
	    -subj /CN=candy.test -days 2 -out "$_br_k/ec.pem" 2>/dev/null; then
		_br_pin=$(openssl x509 -in "$_br_k/ec.pem" -pubkey -noout |
		    openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)
		candy_server rs rsst -w wss://0.0.0.0:8444 --cert \
		    "$_br_k/ec.pem" --key "$_br_k/ec.key" -p rsspw \
		    -d 172.28.0.0/24
	fi
	_br_stun=
	if command -v turnserver >/dev/null 2>&1; then
		bg_run rs "$T/turn-rss.log" turnserver --listening-ip=10.66.0.1 \
		    --listening-port=3479 --stun-only --no-cli --no-tls \
		    --no-dtls --log-file=stdout --userdb="$T/turndb-rss"
		_br_stun=stun://10.66.0.1:3479
	fi
	wait_listening rss || { echo "# rss: the server did not start"; return; }
	for _br_bin in ${RSS_BINS:-$CANDY $ROOT/candy-static}; do
		[ -x "$_br_bin" ] || continue
		_br_b=$(basename "$_br_bin")
		RSS_TOP=0
		rss_case "$_br_bin" "$_br_b relay ws" ws://10.66.0.1:8081
		[ -n "$_br_pin" ] && rss_case "$_br_bin" "$_br_b relay wss" \
		    wss://10.66.0.1:8444 --pin "$_br_pin"
		[ -n "$_br_stun" ] && rss_case "$_br_bin" "$_br_b p2p" \
		    ws://10.66.0.1:8081 -s "$_br_stun"
		if [ "$RSS_TOP" -le 2048 ]; then
			_br_t="within the 2 MiB target"
		else
			_br_t="$((RSS_TOP - 2048)) kB over the 2 MiB target"
		fi
		result "rss $_br_b highest ($_br_t)" "$RSS_TOP" kB
	done
}

# Alone: a setup of our own, the results and the machine.
if [ -z "$BENCH_SOURCED" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "make bench-rss needs root: it creates network" \
		    "namespaces." >&2
		exit 1
	fi
	. "$(dirname "$0")/lib.sh"
	[ -x "$CANDY" ] || { echo "./candy is not built (run make)." >&2; exit 1; }
	DEBUG_FLAG=
	result() {
		printf '%-48s %12s %s\n' "$1" "$2" "$3" | tee -a "$T/results"
	}
	echo "# rss"
	bench_rss
	echo
	echo "Results ($(uname -m), $(nproc) CPUs," \
	    "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
	    "candy $("$CANDY" --version | awk '{ print $2 }')):"
	cat "$T/results"
fi
