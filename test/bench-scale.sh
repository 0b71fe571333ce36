#!/bin/sh
# bench-scale.sh: the "scale" section of make bench (sourced by
# test/bench.sh), or alone: make bench-scale (sh test/bench-scale.sh).
#
# A server in namespace "ss" (ws://10.88.0.1:8090, -d 10.100.0.0/16) and
# test/loadgen in namespace "lg", each a process with its own descriptors
# (one a session).  For each N of SCALE_N (default "1000 10000") over ws://
# and for SCALE_TLS_N (default 1000) over wss://, the generator opens N
# authenticated sessions, checks each reaches its pair, reads the
# server's memory idle, then has every session send 64-byte packets to its
# pair (1400-byte ones for SCALE_BIG_N) for SCALE_SECONDS (default 10) and reads the memory again.  Figures
# per session are (VmRSS - VmRSS before the first session) / live sessions;
# "pkt/s" counts the packets that came back out of the server.

SCALE_N=${SCALE_N:-1000 10000}
SCALE_TLS_N=${SCALE_TLS_N:-1000}
SCALE_SECONDS=${SCALE_SECONDS:-10}
# Bulk traffic in full-size packets too: the N of SCALE_BIG_N send
# 1400-byte packets (the tunnel's MTU), which is what fills the queues.
SCALE_BIG_N=${SCALE_BIG_N:-1000 10000}
# Every session needs a descriptor in the server and one in the
# generator; the server raises its own soft limit to the hard one.
SCALE_NOFILE=${SCALE_NOFILE:-20000}

# scale_run NAME URI N [server options]: one measured run; SCALE_LEN
# (default 64) is the bulk phase's packet length.
scale_run() {
	_sr_name=$1
	_sr_uri=$2
	_sr_n=$3
	shift 3
	proc_start "$_sr_name" ss prlimit --nofile="$SCALE_NOFILE" "$CANDY" \
	    -m server --no-timestamp -w "$_sr_uri" -p scalepw \
	    -d 10.100.0.0/16 "$@"
	if ! wait_listening "$_sr_name"; then
		echo "# scale: the server did not start"
		return 1
	fi
	_sr_uri=$(echo "$_sr_uri" | sed 's|0\.0\.0\.0|10.88.0.1|')
	nsx lg prlimit --nofile="$SCALE_NOFILE" "$ROOT/test/loadgen" \
	    -w "$_sr_uri" -p scalepw -n "$_sr_n" -P "$(pid_of "$_sr_name")" \
	    -s "$SCALE_SECONDS" -L "${SCALE_LEN:-64}" >"$T/$_sr_name.out" \
	    2>"$T/$_sr_name.err"
	sed 's/^/#   /' "$T/$_sr_name.out"
	stop "$_sr_name"
}

# scale_get NAME KEY: a figure of the run's output.
scale_get() {
	awk -v k="$2" '$1 == k { print $2 }' "$T/$1.out"
}

scale_report() {
	_sp_what=$2
	result "scale $_sp_what sessions live" \
	    "$(scale_get "$1" sessions_live)/$(scale_get "$1" sessions_asked)" ""
	result "scale $_sp_what KiB/session idle" \
	    "$(scale_get "$1" server_idle_kb_per_session)" KiB
	result "scale $_sp_what KiB/session bulk" \
	    "$(scale_get "$1" server_bulk_kb_per_session)" KiB
	result "scale $_sp_what forwarded" \
	    "$(scale_get "$1" forwarded_pkts_per_s)" pkt/s
	result "scale $_sp_what connect, server CPU" \
	    "$(scale_get "$1" connect_server_cpu_seconds)" s
}

bench_scale() {
	if [ ! -x "$ROOT/test/loadgen" ]; then
		echo "# scale: test/loadgen is not built (make test/loadgen)"
		return
	fi
	ns_add ss
	ns_add lg
	link ss lg 10.88.0.1/24 10.88.0.2/24
	sysctl_set lg net.ipv4.ip_local_port_range="1024 65000"
	sysctl_set ss net.core.somaxconn=4096
	for _bs_n in $SCALE_N; do
		scale_run "scale$_bs_n" ws://0.0.0.0:8090 "$_bs_n" &&
		    scale_report "scale$_bs_n" "ws N=$_bs_n"
	done
	for _bs_n in $SCALE_BIG_N; do
		SCALE_LEN=1400 scale_run "scaleb$_bs_n" ws://0.0.0.0:8090 \
		    "$_bs_n" && scale_report "scaleb$_bs_n" "ws N=$_bs_n 1400 B"
	done
	[ -n "$SCALE_TLS_N" ] || return 0
	_bs_k=$T/scale-tls
	mkdir -p "$_bs_k"
	if ! openssl ecparam -name prime256v1 -genkey -out "$_bs_k/ec.key" \
	    2>/dev/null || ! openssl req -x509 -new -key "$_bs_k/ec.key" \
	    -subj /CN=candy.test -days 2 -out "$_bs_k/ec.pem"; then
		echo "# scale: cannot make a certificate with openssl"
		return
	fi
	for _bs_n in $SCALE_TLS_N; do
		scale_run "scalet$_bs_n" wss://0.0.0.0:8453 "$_bs_n" \
		    --cert "$_bs_k/ec.pem" --key "$_bs_k/ec.key" &&
		    scale_report "scalet$_bs_n" "wss N=$_bs_n"
	done
}

# Alone: a setup of our own, the results and the machine.
if [ -z "$BENCH_SOURCED" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "make bench-scale needs root: it creates network" \
		    "namespaces." >&2
		exit 1
	fi
	. "$(dirname "$0")/lib.sh"
	[ -x "$CANDY" ] || { echo "./candy is not built (run make)." >&2; exit 1; }
	DEBUG_FLAG=
	result() {
		printf '%-40s %12s %s\n' "$1" "$2" "$3" | tee -a "$T/results"
	}
	echo "# scale"
	bench_scale
	echo
	echo "Results ($(uname -m), $(nproc) CPUs," \
	    "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
	    "candy $("$CANDY" --version | awk '{ print $2 }')):"
	cat "$T/results"
fi
