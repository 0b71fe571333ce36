#!/bin/sh
# it-docs.sh: the documents hold together.  Every hex example of PROTOCOL
# is a known answer of the unit tests (so the document cannot drift from
# what the tests check), PROTOCOL is where candy.h, README and candy.8
# send the reader, and nothing in the repository points outside it (to
# the developers' shared directory, which users never have).  No
# namespace, no network.

. "$(dirname "$0")/lib.sh"
DOC=$ROOT/PROTOCOL
[ -f "$DOC" ] || { fail "PROTOCOL exists"; exit 1; }

# The examples: a line indented 4 spaces made of hex groups of whole
# bytes, separated by single spaces, up to two spaces (a comment may
# follow); lines indented deeper made of hex groups continue it.
awk '
	function hexpart(s) {
		sub(/^ +/, "", s)
		sub(/  .*/, "", s)
		return s ~ /^([0-9a-f][0-9a-f])+( ([0-9a-f][0-9a-f])+)*$/ ? s : ""
	}
	function flush() { if (ex != "") print ex; ex = "" }
	/^    [^ ]/ { flush(); h = hexpart($0); gsub(/ /, "", h); ex = h; next }
	/^     +[^ ]/ && ex != "" {
		h = hexpart($0)
		if (h == "") { flush(); next }
		gsub(/ /, "", h); ex = ex h; next
	}
	{ flush() }
	END { flush() }
' "$DOC" >"$T/examples"

# The unit tests' strings, joined: hex split over several C literals
# joins up again.
cat "$ROOT"/test/t_*.c | grep -o '"[^"]*"' | tr -d '" \n' |
    tr 'A-F' 'a-f' >"$T/blob"
blob=$(cat "$T/blob")

n=0
missing=
while read -r ex; do
	n=$((n + 1))
	case "$blob" in
	*"$ex"*) ;;
	*) missing="$missing $ex" ;;
	esac
done <"$T/examples"
check "PROTOCOL has hex examples ($n)" [ "$n" -ge 20 ]
check "every hex example of PROTOCOL is a unit test's known answer" \
    eval '[ -z "$missing" ] || { for m in $missing; do echo "$m"; done;
    false; }'

# The messages of sections 2 and 5 each have an example: the type bytes
# of the captured and made examples.
missing_type=
for t in 00 01 02 03 04 05 06 ff; do
	grep -q "^$t" "$T/examples" || missing_type="$missing_type $t"
done
check "an example for every message type of section 2" \
    [ -z "$missing_type" ]

check "candy.h points to PROTOCOL" grep -q 'PROTOCOL' "$ROOT/candy.h"
check "README points to PROTOCOL" grep -q 'PROTOCOL' "$ROOT/README"
check "candy.8 points to PROTOCOL" grep -q 'Pa PROTOCOL' "$ROOT/candy.8"

# Nothing points outside the repository (make cross's and make fuzz's
# outputs, test/cross-*/ and test/fuzz-*, are not part of it).
(cd "$ROOT" && grep -rIl --exclude-dir=.git --exclude-dir='cross-*' \
    --exclude='fuzz-*' -e '\.\./shared' \
    -e 'PROTOCOL\.md' -e 'vectors\.md' . ) >"$T/outside"
check "no file points outside the repository (shared notes, vectors)" \
    eval '! [ -s "$T/outside" ] || { cat "$T/outside"; false; }'
