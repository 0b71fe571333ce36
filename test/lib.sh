# lib.sh: helpers for the integration tests (test/it-*.sh), sourced by each.
#
# Everything runs in network namespaces named "$P-<name>" that the script
# creates; nothing touches the root namespace's devices or routes, and no
# namespace has a route out of the test network, so no packet leaves it.
# On exit (normal, error or signal) `cleanup` kills what the script started,
# deletes its namespaces and its temporary directory.
#
# Output: each check prints one line, `ok - what` or `not ok - what`;
# test/run counts them.  Diagnostics are `# ` comment lines.  A script's
# exit status is 1 when a check failed.
#
# Addresses used (they exist only inside the namespaces): 10.77.0.0/24 is
# the simulated internet, 172.31.0.0/24 the tunnel, 192.168.50.0/24 a LAN.
#
# Environment: CANDY (the binary, default ./candy), CANDY_TEST_KEEP=1 keeps
# the temporary directory with the logs.
#
# A candy built with sanitizers (make test SANITIZE=1) writes any report to
# $T/sanitizer.PID (log_path below), whether it ran as a daemon or in the
# foreground with its output discarded; cleanup shows every report and
# fails the script (sanitizer_check).  make check-san also sets
# CANDY_SANITIZE=1, for the few checks a sanitized build cannot pass (RSS).

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CANDY=${CANDY:-$ROOT/candy}
# A short prefix unique to this run: namespace names carry it; interface
# names do not need it (each namespace has its own), so they stay short.
P=cdy$$
T=$(mktemp -d "${TMPDIR:-/tmp}/candy-test.XXXXXX") || exit 1
FAILED=0
PASSED=0
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$T/sanitizer"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}log_path=$T/sanitizer"
# candy's log level for candy_server and candy_client (empty: info).
DEBUG_FLAG=--debug
NSLIST=

# ---- Results ----

ok() {
	PASSED=$((PASSED + 1))
	echo "ok - $1"
}

fail() {
	FAILED=$((FAILED + 1))
	echo "not ok - $1"
}

# check "what" cmd...: ok when cmd succeeds; on failure its output is shown
# as comments.
check() {
	_ck_what=$1
	shift
	if "$@" >"$T/check.out" 2>&1; then
		ok "$_ck_what"
	else
		fail "$_ck_what"
		sed 's/^/#   /' "$T/check.out" | tail -n 20
	fi
}

# Skip the whole script (prints a comment, counts nothing).
skip_all() {
	echo "# skipping $(basename "$0"): $1"
	exit 0
}

# ---- Time ----

# wait_until SECONDS cmd...: run cmd every 0.2 s until it succeeds (0) or
# SECONDS have passed (1).
wait_until() {
	_wu_n=$(($1 * 5))
	shift
	while [ "$_wu_n" -gt 0 ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
		_wu_n=$((_wu_n - 1))
	done
	"$@" >/dev/null 2>&1
}

# ---- Namespaces and links ----

need_netns() {
	[ "$(id -u)" = 0 ] || skip_all "need root"
	ip netns add "$P-probe" 2>/dev/null || skip_all "ip netns does not work"
	ip netns del "$P-probe"
	[ -c /dev/net/tun ] || skip_all "no /dev/net/tun"
}

# The full namespace name of NAME.
ns() {
	echo "$P-$1"
}

# nsx NAME cmd...: run cmd inside namespace NAME.
nsx() {
	_nx_ns=$1
	shift
	ip netns exec "$P-$_nx_ns" "$@"
}

# ns_add NAME: a namespace with lo up, removed by cleanup.
ns_add() {
	ip netns add "$P-$1" || { echo "# cannot add namespace $1"; exit 1; }
	NSLIST="$NSLIST $1"
	ip -n "$P-$1" link set lo up
}

# addr_add NS DEV IP/N (or "-" for none); brings DEV up.
addr_add() {
	[ "$3" = - ] || ip -n "$P-$1" addr add "$3" dev "$2"
	ip -n "$P-$1" link set "$2" up
}

# link NS1 NS2 IP1/N IP2/N: a veth pair; in NS1 it is "v-NS2", in NS2
# "v-NS1".  Created straight inside the namespaces, never in the root one.
link() {
	ip -n "$P-$1" link add "v-$2" type veth peer name "v-$1" \
	    netns "$P-$2" || { echo "# cannot link $1 and $2"; exit 1; }
	addr_add "$1" "v-$2" "$3"
	addr_add "$2" "v-$1" "$4"
}

# lan_add NAME: a switch: namespace NAME holding the bridge "br0".
lan_add() {
	ns_add "$1"
	ip -n "$P-$1" link add br0 type bridge
	ip -n "$P-$1" link set br0 up
}

# lan_join LAN NS IP/N: plug NS into the switch LAN; NS's port is "v-LAN".
lan_join() {
	link "$2" "$1" "$3" -
	ip -n "$P-$1" link set "v-$2" master br0
}

# sysctl_set NS key=value...
sysctl_set() {
	_sy_ns=$1
	shift
	for _kv in "$@"; do
		nsx "$_sy_ns" sysctl -qw "$_kv" >/dev/null ||
		    echo "# cannot set $_kv in $_sy_ns"
	done
}

# ping_ok NS ADDR [TRIES]: one ping at a time, up to TRIES (default 10).
ping_ok() {
	_po_t=${3:-10}
	while [ "$_po_t" -gt 0 ]; do
		nsx "$1" ping -n -q -c 1 -W 2 "$2" >/dev/null 2>&1 && return 0
		_po_t=$((_po_t - 1))
		sleep 0.2
	done
	return 1
}

# ---- Processes ----

# bg_run NS LOG cmd...: start cmd in namespace NS in the background, stdout
# and stderr to LOG; its pid is left in $BG_PID.  cleanup ends it with the
# namespace.
bg_run() {
	_bg_ns=$1
	_bg_log=$2
	shift 2
	# ip netns exec execs the command: $! is the command itself.
	ip netns exec "$P-$_bg_ns" "$@" >>"$_bg_log" 2>&1 </dev/null &
	BG_PID=$!
}

# ours PID: PID is alive in one of this run's namespaces.  Signals go only
# to such processes, so a recycled pid can never hit someone else's.
ours() {
	case "$(ip netns identify "$1" 2>/dev/null)" in
	"$P"-*) return 0 ;;
	*) return 1 ;;
	esac
}

# proc_start NAME NS cmd...: a named process with log $T/NAME.log (an
# earlier log of the same name is kept as NAME.log.1, .2, ...).
proc_start() {
	_ps_name=$1
	_ps_ns=$2
	shift 2
	if [ -e "$T/$_ps_name.log" ]; then
		_ps_i=1
		while [ -e "$T/$_ps_name.log.$_ps_i" ]; do
			_ps_i=$((_ps_i + 1))
		done
		mv "$T/$_ps_name.log" "$T/$_ps_name.log.$_ps_i"
	fi
	: >"$T/$_ps_name.log"
	echo "$_ps_ns" >"$T/$_ps_name.ns"
	bg_run "$_ps_ns" "$T/$_ps_name.log" "$@"
	echo "$BG_PID" >"$T/$_ps_name.pid"
}

pid_of() {
	cat "$T/$1.pid" 2>/dev/null
}

ns_of() {
	cat "$T/$1.ns" 2>/dev/null
}

log_of() {
	echo "$T/$1.log"
}

running() {
	_ru_pid=$(pid_of "$1")
	[ -n "$_ru_pid" ] && ours "$_ru_pid"
}

# stop NAME [SIGNAL]: signal a named process (default TERM) and wait up to
# 5 s for it to go; then KILL.  0 when it exited by itself; its exit status
# is left in STOP_RC.
stop() {
	_st_pid=$(pid_of "$1")
	STOP_RC=
	[ -n "$_st_pid" ] || return 0
	ours "$_st_pid" && kill "-${2:-TERM}" "$_st_pid" 2>/dev/null
	if wait_until 5 eval "! ours $_st_pid"; then
		wait "$_st_pid" 2>/dev/null
		STOP_RC=$?
		return 0
	fi
	ours "$_st_pid" && kill -KILL "$_st_pid" 2>/dev/null
	wait "$_st_pid" 2>/dev/null
	STOP_RC=$?
	return 1
}

# candy_server NS NAME args...: a server, state (its status socket) in
# $T/state-NAME, log $T/NAME.log.
candy_server() {
	_cs_ns=$1
	_cs_name=$2
	shift 2
	mkdir -p "$T/state-$_cs_name"
	proc_start "$_cs_name" "$_cs_ns" "$CANDY" -m server --no-timestamp \
	    $DEBUG_FLAG --state-dir "$T/state-$_cs_name" "$@"
}

# candy_client NS NAME args...: a client with network name NAME (device
# candy-NAME, NAME <= 9 characters), state in $T/state-NAME, log
# $T/NAME.log.
candy_client() {
	_cc_ns=$1
	_cc_name=$2
	shift 2
	mkdir -p "$T/state-$_cc_name"
	proc_start "$_cc_name" "$_cc_ns" "$CANDY" -m client -n "$_cc_name" \
	    --no-timestamp $DEBUG_FLAG --state-dir "$T/state-$_cc_name" "$@"
}

# log_has NAME REGEX: the current log of NAME matches (grep -E).
log_has() {
	grep -Eq -- "$2" "$T/$1.log"
}

# wait_log NAME SECONDS REGEX
wait_log() {
	wait_until "$2" grep -Eq -- "$3" "$T/$1.log"
}

# wait_listening NAME: the server NAME logged that it listens (10 s).
wait_listening() {
	wait_log "$1" 10 'listening on'
}

# addr_of NAME: the IPv4 address (no prefix) on client NAME's device.
addr_of() {
	ip -n "$P-$(ns_of "$1")" -4 -o addr show dev "candy-$1" 2>/dev/null |
	    awk '{ sub("/.*", "", $4); print $4; exit }'
}

# wait_addr NAME SECONDS: client NAME's device has an address.
wait_addr() {
	wait_until "$2" eval "[ -n \"\$(addr_of $1)\" ]"
}

# status_of NAME: make NAME log its status (SIGUSR1) and print the report
# as `candy status` shows it: the "[info] status: " lines logged since,
# without that prefix.
status_of() {
	_so_log=$T/$1.log
	_so_n=$(wc -l <"$_so_log")
	_so_pid=$(pid_of "$1")
	ours "$_so_pid" && kill -USR1 "$_so_pid" 2>/dev/null || return 1
	wait_until 2 eval "tail -n +$((_so_n + 1)) '$_so_log' |
	    grep -q '^\[info\] status: '"
	sleep 0.2
	tail -n +$((_so_n + 1)) "$_so_log" | sed -n 's/^\[info\] status: //p'
}

# candy_status NAME args...: `candy status` for the candy started as NAME
# (a server when its state directory holds server.sock), args such as
# --json added.  Unix sockets are files: no namespace needed.
candy_status() {
	_cq_name=$1
	shift
	if [ -S "$T/state-$_cq_name/server.sock" ]; then
		"$CANDY" status -m server --state-dir "$T/state-$_cq_name" "$@"
	else
		"$CANDY" status -n "$_cq_name" --state-dir "$T/state-$_cq_name" \
		    "$@"
	fi
}

# ---- Diagnostics and cleanup ----

# dump_logs_on_fail [STATUS]: after a failed check (or with a non-zero exit
# STATUS: an error, a time limit), the tail of every log, so that CI
# output shows why.
dump_logs_on_fail() {
	[ "$FAILED" -gt 0 ] || [ "${1:-0}" != 0 ] || return 0
	for _f in "$T"/*.log*; do
		[ -e "$_f" ] || continue
		echo "# ---- $(basename "$_f") (last 40 lines)"
		tail -n 40 "$_f" | sed 's/^/#   /'
	done
}

# The pids of every process in this run's namespaces.
ns_pids() {
	for _np_ns in $NSLIST; do
		ip netns pids "$P-$_np_ns" 2>/dev/null
	done
}

# sanitizer_check: every sanitizer report of this run (the files log_path
# names, or a report that went to a log anyway) is shown and fails the
# script.  Called once the processes are gone: the leak check runs at exit.
sanitizer_check() {
	_sc_n=0
	for _f in "$T"/sanitizer.*; do
		[ -e "$_f" ] || continue
		_sc_n=$((_sc_n + 1))
		echo "# ---- sanitizer report $(basename "$_f")"
		sed 's/^/#   /' "$_f" | head -n 80
	done
	for _f in "$T"/*.log*; do
		[ -e "$_f" ] || continue
		grep -Eq "$SANITIZER_RE" "$_f" || continue
		_sc_n=$((_sc_n + 1))
		echo "# ---- sanitizer report in $(basename "$_f")"
		grep -E -A 30 "$SANITIZER_RE" "$_f" | sed 's/^/#   /' |
		    head -n 80
	done
	[ "$_sc_n" = 0 ] ||
	    fail "sanitizers: $_sc_n report(s) from $(basename "$0") (above)"
}
SANITIZER_RE='ERROR: (Address|Leak)Sanitizer|runtime error:'

cleanup() {
	_rc=$?
	trap - EXIT INT TERM HUP
	dump_logs_on_fail "$_rc"
	# Every process in our namespaces is one we started: TERM them (candy
	# then removes its device and routes), KILL what is left after 5 s
	# (a sanitized candy checks for leaks on its way out).
	_pids=$(ns_pids)
	if [ -n "$_pids" ]; then
		kill -TERM $_pids 2>/dev/null
		if ! wait_until 5 eval '[ -z "$(ns_pids)" ]'; then
			_pids=$(ns_pids)
			[ -n "$_pids" ] && kill -KILL $_pids 2>/dev/null
			wait_until 2 eval '[ -z "$(ns_pids)" ]'
		fi
	fi
	sanitizer_check
	for _ns in $NSLIST; do
		ip netns del "$P-$_ns" 2>/dev/null
	done
	if [ -n "$CANDY_TEST_KEEP" ]; then
		echo "# logs kept in $T"
	else
		rm -rf "$T"
	fi
	[ "$_rc" = 0 ] && [ "$FAILED" -gt 0 ] && _rc=1
	exit "$_rc"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
