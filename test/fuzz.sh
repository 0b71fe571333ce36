#!/bin/sh
# fuzz.sh: run each libFuzzer target of test/fuzz (test/fuzz.c) for a few
# seconds, starting from the seeds it writes into a temporary corpus.  Run
# by `make fuzz`, which builds test/fuzz first.
#
#   sh test/fuzz.sh SECONDS TARGET...
#
# Prints "ok - fuzz TARGET" or "not ok - fuzz TARGET" and the runs made.
# On a crash, a leak, a timeout or running out of memory the input stays in
# test/fuzz-TARGET-crash-... (libFuzzer's name) and is printed in hex, since
# CI keeps no files: `xxd -r -p` turns the hex back into the input, and
# FUZZ_TARGET=TARGET test/fuzz FILE replays it.  Exit status 1 if any
# target failed.

cd "$(dirname "$0")/.." || exit 1
[ $# -ge 2 ] || { echo "usage: sh test/fuzz.sh SECONDS TARGET..." >&2; exit 2; }
secs=$1
shift
[ -x test/fuzz ] || { echo "not ok - fuzz: test/fuzz is not built"; exit 1; }
log=$(mktemp "${TMPDIR:-/tmp}/candy-fuzz.XXXXXX") || exit 1
dir=
trap 'rm -rf "$log" "$dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# show_input FILE: the input's size and its bytes in hex, 32 a line.
show_input() {
	echo "#   input $1 ($(wc -c <"$1") bytes, hex):"
	od -An -v -tx1 "$1" | tr -d ' \n' | fold -w 64 | sed 's/^/#     /'
	echo
}

status=0
for t in "$@"; do
	dir=$(mktemp -d "${TMPDIR:-/tmp}/candy-fuzz-corpus.XXXXXX") || exit 1
	t0=$(date +%s)
	# libFuzzer's progress goes to the log; -close_fd_mask=3 silences the
	# code's own log lines (the sanitizers' reports still get through).
	# timeout: a hang outside what -timeout covers still ends.
	FUZZ_TARGET=$t FUZZ_SEEDS=$dir timeout -k 10 $((secs + 120)) \
	    ./test/fuzz -max_total_time="$secs" -timeout=10 -close_fd_mask=3 \
	    -artifact_prefix="test/fuzz-$t-" "$dir" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
	last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | cut -c 1-100)
	echo "# fuzz $t: $(($(date +%s) - t0)) s, ${runs:-?} runs; $last"
	if [ "$rc" = 0 ]; then
		echo "ok - fuzz $t"
	else
		echo "not ok - fuzz $t: test/fuzz exited $rc"
		status=1
		# The report, up to its summary (the shadow bytes are noise).
		sed -n '/ERROR: \|runtime error\|deadly signal/,/^SUMMARY/p' \
		    "$log" | head -n 60 | sed 's/^/#   /'
		# libFuzzer names the file it saved the input in.
		f=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" |
		    tail -n 1)
		if [ -n "$f" ] && [ -f "$f" ]; then
			show_input "$f"
		else
			tail -n 20 "$log" | sed 's/^/#   /'
		fi
	fi
	rm -rf "$dir"
	dir=
done
exit $status
