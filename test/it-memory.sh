#!/bin/sh
# it-memory.sh: a client's memory stays within stated budgets (issue 11:
# a client under 2 MiB).  Not a timing test: sizes and page counts only.
#
#   1. size(1): the static storage (.data + .bss) of candy and, when
#      built, candy-static is at most STATIC_KIB.  Most of it is the
#      client's packet buffers (two of 64 KiB for the TUN, one of 64 KiB
#      for UDP); a new large array shows here first.
#   2. an idle client (relay, P2P on, so its peer and replay tables exist)
#      of each build: its anonymous memory (smaps_rollup: what it wrote,
#      its own heap, static storage and stack, and the libraries' data) is
#      at most IDLE_ANON_KIB.  Buffers zeroed or filled when they need not
#      be (a memset of the whole session was 200 KiB of it) show here.
#   3. the static build's idle client: VmRSS, all of it, under 2 MiB.
#   4. the glibc build's idle client, given addresses (no names): the C
#      library functions it called, as ld.so binds them on first call
#      (LD_DEBUG=bindings), leave out those whose code a client need not
#      keep resident (UNNEEDED: the resolver, getifaddrs, inet_pton and
#      inet_ntop, stdio's files, strtol, time...).  Each is a page or more
#      of libc, and each 64 KiB around a page it touches becomes resident
#      (fault-around): 0.3 MB of VmRSS in all (README).  Checked where
#      binding is lazy (not with -z now) and ld.so is glibc's.
#      Its VmRSS is shown, not checked: it counts libc's shared pages,
#      whose layout (and ASLR's alignment of it) is the system's.
# The figures under load are make bench's (test/bench-rss.sh).  A build
# with sanitizers (make check-san) skips 1 for candy, and 2 and 3: its
# shadow memory and the sanitizers' tables are not the client's.

. "$(dirname "$0")/lib.sh"
need_netns
[ -x "$CANDY" ] || { fail "candy is built"; exit 1; }

STATIC_KIB=288
IDLE_ANON_KIB=256
UNNEEDED="getaddrinfo getifaddrs inet_pton inet_ntop inet_aton fopen fopen64
    fprintf fwrite fread strtol strtoul atoi strspn strcspn time
    __memcpy_chk __memset_chk __ctype_b_loc"
STATIC=$ROOT/candy-static

# static_kib BIN: .data + .bss of BIN in KiB (size(1), Berkeley format).
static_kib() {
	size "$1" | awk 'NR == 2 { print int(($2 + $3 + 1023) / 1024) }'
}

# budget WHAT VALUE MAX: ok when VALUE <= MAX (both KiB).
budget() {
	if [ -n "$2" ] && [ "$2" -le "$3" ]; then
		ok "$1: $2 KiB, budget $3 KiB"
	else
		fail "$1: ${2:-?} KiB, budget $3 KiB"
	fi
}

if command -v size >/dev/null 2>&1; then
	# A sanitized candy's .bss holds the sanitizers' own tables (10 MB).
	[ -n "$CANDY_SANITIZE" ] || budget "candy's .data + .bss" \
	    "$(static_kib "$CANDY")" "$STATIC_KIB"
	[ -x "$STATIC" ] && budget "candy-static's .data + .bss" \
	    "$(static_kib "$STATIC")" "$STATIC_KIB"
else
	echo "# no size(1): static storage not checked"
fi
[ -n "$CANDY_SANITIZE" ] && exit 0

lan_add net
ns_add srv
ns_add a
ns_add b
lan_join net srv 10.77.0.1/24
lan_join net a 10.77.0.2/24
lan_join net b 10.77.0.3/24
candy_server srv srv -w ws://0.0.0.0:8080 -p pw -d 172.31.0.0/24
wait_listening srv || { fail "the server listens"; exit 1; }

# idle_client BIN WHAT: client a of BIN, P2P on (no STUN server answers:
# the tables are made all the same), pinged by b; prints a's anonymous
# memory and then its VmRSS in kB, once it is idle.
idle_client() {
	CANDY=$1 candy_client a a -w ws://10.77.0.1:8080 -p pw \
	    -s stun://10.77.0.1 -t 172.31.0.10/24
	if ! wait_addr a 10 || ! ping_ok b 172.31.0.10; then
		fail "$2: client a is up and answers"
		stop a
		return 1
	fi
	nsx b ping -n -q -c 5 -i 0.2 172.31.0.10 >/dev/null 2>&1
	sleep 1.5	# the second tick of peer.c: the tables are made
	_ic_pid=$(pid_of a)
	awk '/^Anonymous:/ { print $2 }' "/proc/$_ic_pid/smaps_rollup"
	awk '/^VmRSS:/ { print $2 }' "/proc/$_ic_pid/status"
	stop a
}

# lazy_glibc BIN: BIN binds lazily through glibc's ld.so (LD_DEBUG works).
lazy_glibc() {
	! readelf -d "$1" 2>/dev/null | grep -Eq 'BIND_NOW|FLAGS.* NOW' &&
	    LD_DEBUG=bindings "$1" --version 2>&1 | grep -q 'binding file'
}

candy_client b b -w ws://10.77.0.1:8080 -p pw -t 172.31.0.11/24
wait_addr b 10 || { fail "client b gets its address"; exit 1; }
# Client a through a wrapper that asks ld.so for its bindings (exec: the
# pid stays candy's).
_bind=
_abin=$CANDY
if command -v readelf >/dev/null 2>&1 && lazy_glibc "$CANDY"; then
	_bind=$T/bind
	_abin=$T/candy-bind
	printf '#!/bin/sh\nLD_DEBUG=bindings LD_DEBUG_OUTPUT=%s exec %s "$@"\n' \
	    "$_bind" "$CANDY" >"$T/candy-bind"
	chmod +x "$T/candy-bind"
fi
if idle_client "$_abin" candy >"$T/idle.out"; then
	budget "candy, idle client: anonymous memory" \
	    "$(sed -n 1p "$T/idle.out")" "$IDLE_ANON_KIB"
	echo "# candy, idle client: VmRSS $(sed -n 2p "$T/idle.out") kB"
	if [ -n "$_bind" ]; then
		# "binding file CANDY [0] to LIBC [0]: normal symbol `NAME'"
		cat "$_bind".* 2>/dev/null | awk -v b="$CANDY" '
		    $3 == "file" && $4 == b && $7 ~ /libc\.so/ {
			sub(/.*symbol `/, ""); sub(/'"'"'.*/, ""); print }' |
		    sort -u >"$T/bound"
		_n=$(wc -l <"$T/bound")
		_bad=
		for _f in $UNNEEDED; do
			grep -qx "$_f" "$T/bound" && _bad="$_bad $_f"
		done
		_m="candy, idle client: $_n libc functions called"
		if [ "$_n" -gt 20 ] && [ -z "$_bad" ]; then
			ok "$_m, none of the unneeded"
		else
			fail "$_m, unneeded:${_bad:- none (too few seen)}"
		fi
	fi
else
	echo "# candy, idle client: not checked"
fi
if [ -x "$STATIC" ] && idle_client "$STATIC" candy-static >"$T/idle.out"
then
	budget "candy-static, idle client: anonymous memory" \
	    "$(sed -n 1p "$T/idle.out")" "$IDLE_ANON_KIB"
	budget "candy-static, idle client: VmRSS" \
	    "$(sed -n 2p "$T/idle.out")" 2048
fi
[ "$FAILED" = 0 ]
