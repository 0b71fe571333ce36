#!/bin/sh
# cross.sh: build candy and the unit tests for other CPUs and run the tests
# under qemu: s390x is big-endian, i386 has 32-bit pointers, long and
# size_t, arm64 is the other 64-bit little-endian ABI, armhf is 32-bit ARM
# (char unsigned, as on s390x and arm64, and a CPU that wants aligned
# words).  Run by `make cross`, which passes SRCS, TSRCS and the flags.
#
#   sh test/cross.sh [ARCH...]    Debian architecture names (default:
#                                 s390x i386 arm64 armhf)
#
# ARCH's files go in test/cross-ARCH/.  The compiler is Debian's
# TRIPLET-gcc with its cross libc; BearSSL is the target's own Debian
# package (multiarch, libbearssl-dev:ARCH).  As root, installs what is
# missing.  Prints "ok - cross ARCH: N passed, N failed" (or "not ok - ...")
# per target, and the time each step took; exit status 1 if anything
# failed to build or pass.  qemu-user does not fault on a misaligned word
# as some ARM CPUs do: -Wcast-align=strict here refuses the casts that
# could make one, and make test SANITIZE=1 (UBSan) checks every access.

cd "$(dirname "$0")/.." || exit 1
[ $# -gt 0 ] || set -- s390x i386 arm64 armhf
: "${SRCS:?run through make cross}" "${TSRCS:?run through make cross}"
command -v dpkg-architecture >/dev/null ||
    { echo "cross.sh: needs dpkg-dev (dpkg-architecture)" >&2; exit 1; }

# gnu ARCH VAR: dpkg-architecture's VAR (DEB_HOST_GNU_TYPE, ...) for ARCH.
gnu() {
	dpkg-architecture -a"$1" -q"$2" 2>/dev/null
}

# qemu ARCH: the qemu-user binary that runs ARCH's programs.
qemu() {
	c=$(gnu "$1" DEB_HOST_GNU_CPU)
	case $c in
	i?86) c=i386 ;;
	powerpc64le) c=ppc64le ;;
	esac
	echo "qemu-$c-static"
}

# deps ARCH...: install the cross compilers and libcs, the targets'
# BearSSL and qemu, only those missing.
deps() {
	missing=
	add=
	for a in "$@"; do
		t=$(gnu "$a" DEB_HOST_GNU_TYPE) ||
		    { echo "cross.sh: unknown architecture $a" >&2; return 1; }
		dpkg --print-foreign-architectures | grep -qx "$a" ||
		    add="$add $a"
		for p in "gcc-$t" "libc6-dev-$a-cross" "libbearssl-dev:$a"; do
			s=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" \
			    2>/dev/null)
			case "$s" in
			ii*) ;;
			*) missing="$missing $p" ;;
			esac
		done
		command -v "$(qemu "$a")" >/dev/null ||
		    missing="$missing qemu-user-static"
	done
	[ -z "$missing$add" ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "cross.sh: as root, run: dpkg --add-architecture ARCH" \
		    "for each of$add, apt-get update, apt-get install$missing" >&2
		return 1
	fi
	echo "cross.sh: installing$missing"
	for a in $add; do
		dpkg --add-architecture "$a" || return 1
	done
	export DEBIAN_FRONTEND=noninteractive
	# A mirror can serve one stale index (seen: bookworm-security's
	# i386); the install below says whether what we need was found.
	apt-get update -q || echo "cross.sh: apt-get update failed; trying on"
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
}

# build ARCH: test/cross-ARCH/candy and test/cross-ARCH/unit, with the
# same warnings as make (and so -Werror).  The lists split on purpose.
# shellcheck disable=SC2086
build() {
	d=test/cross-$1
	mkdir -p "$d" || return 1
	cc="$(gnu "$1" DEB_HOST_GNU_TYPE)-gcc $CPPFLAGS $CFLAGS $WARN"
	cc="$cc -Wcast-align=strict"
	objs=
	for s in $SRCS; do
		o=$d/$(basename "$s" .c).o
		$cc -c -o "$o" "$s" || return 1
		[ "$s" = candy.c ] || objs="$objs $o"
	done
	$cc -DCANDY_NO_MAIN -c -o "$d/candy-nomain.o" candy.c || return 1
	$cc -o "$d/candy" "$d/candy.o" $objs -lbearssl || return 1
	$cc -I. -o "$d/unit" $TSRCS "$d/candy-nomain.o" $objs -lbearssl
}

t0=$(date +%s)
if ! deps "$@"; then
	echo "not ok - cross: installing the cross compilers and qemu failed"
	exit 1
fi
echo "# cross: installs $(($(date +%s) - t0)) s"
status=0
for a in "$@"; do
	echo "# $a"
	t0=$(date +%s)
	if ! build "$a"; then
		echo "not ok - cross $a: build failed"
		status=1
		continue
	fi
	t1=$(date +%s)
	# Only the failures and the count here; the results stay in unit.log,
	# the code's own log lines in unit.err (apart, so that neither ends
	# up inside the other's lines).
	timeout -k 10 600 "$(qemu "$a")" "test/cross-$a/unit" \
	    >"test/cross-$a/unit.log" 2>"test/cross-$a/unit.err"
	rc=$?
	echo "# cross $a: build $((t1 - t0)) s, tests $(($(date +%s) - t1)) s"
	# One result per target: its failures as comments.
	grep '^not ok - ' "test/cross-$a/unit.log" | sed 's/^/#   /'
	last=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "test/cross-$a/unit.log")
	if [ "$rc" = 0 ] && [ -n "$last" ]; then
		echo "ok - cross $a: $last"
	else
		echo "not ok - cross $a: ${last:-test/unit exited $rc with no count}"
		tail -n 20 "test/cross-$a/unit.err" | sed 's/^/#   /'
		status=1
	fi
done
exit $status
