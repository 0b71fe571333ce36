#!/bin/sh
# it-options.sh: the command line.  `candy --help` and the man page list the
# same options; bad values are refused with exit status 1 and a message
# that names the option and the value; the man page is lint-clean.
#
# A bad value wrongly accepted would start candy, so every run of candy
# here happens inside a namespace of its own (no TUN device or socket in
# the root namespace) and under a time limit.

. "$(dirname "$0")/lib.sh"
need_netns
[ -x "$CANDY" ] || { fail "candy is built"; exit 1; }
MAN=${CANDY_MAN:-$ROOT/candy.8}
ns_add opt

# run_candy ARGS...: candy in the namespace, 5 s at most; stdout in
# $T/out, stderr in $T/err, status in $RC.
run_candy() {
	nsx opt timeout -k 2 5 "$CANDY" "$@" >"$T/out" 2>"$T/err" </dev/null
	RC=$?
}

# ---- --help and the man page ----

run_candy --help
check "--help exits 0" [ "$RC" = 0 ]
check "--help prints to stdout" [ -s "$T/out" ]

# Long options of --help: every "--name" token.
grep -o -- '--[a-z][a-z0-9-]*' "$T/out" | sort -u >"$T/help.long"
# Long options of the man page: the .It lines of the OPTIONS section
# ("Fl -name" is --name).
awk '/^\.Sh OPTIONS/ { on = 1; next } /^\.Sh / { on = 0 } on && /^\.It /' \
    "$MAN" >"$T/man.items"
grep -o 'Fl -[a-z][a-z0-9-]*' "$T/man.items" | sed 's/^Fl -/--/' |
    sort -u >"$T/man.long"

if [ -s "$T/help.long" ] && [ -s "$T/man.long" ] &&
    cmp -s "$T/help.long" "$T/man.long"; then
	ok "--help and candy.8 list the same $(wc -l <"$T/man.long") long options"
else
	fail "--help and candy.8 list the same long options"
	echo "#   < only in --help, > only in candy.8:"
	diff "$T/help.long" "$T/man.long" | grep '^[<>]' | sed 's/^/#   /'
fi

# Short letters: "-m, --mode" in --help, ".It Fl m , Fl -mode" in candy.8.
sed -n 's/^ *-\([a-zA-Z0-9]\), --\([a-z0-9-]*\).*/\1 \2/p' "$T/out" |
    sort >"$T/help.short"
sed -n 's/^\.It Fl \([a-zA-Z0-9]\) , Fl -\([a-z0-9-]*\).*/\1 \2/p' \
    "$T/man.items" | sort >"$T/man.short"
if [ -s "$T/help.short" ] && cmp -s "$T/help.short" "$T/man.short"; then
	ok "--help and candy.8 give the same short options"
else
	fail "--help and candy.8 give the same short options"
	diff "$T/help.short" "$T/man.short" | grep '^[<>]' | sed 's/^/#   /'
fi

# candy status --help and the man page's STATUS section.
run_candy status --help
check "status --help exits 0" [ "$RC" = 0 ]
grep -o -- '--[a-z][a-z0-9-]*' "$T/out" | sort -u >"$T/shelp.long"
awk '/^\.Sh STATUS/ { on = 1; next } /^\.Sh / { on = 0 } on && /^\.It /' \
    "$MAN" | grep -o 'Fl -[a-z][a-z0-9-]*' | sed 's/^Fl -/--/' |
    sort -u >"$T/sman.long"
if [ -s "$T/shelp.long" ] && cmp -s "$T/shelp.long" "$T/sman.long"; then
	ok "status --help and candy.8's STATUS list the same $(wc -l <"$T/sman.long") options"
else
	fail "status --help and candy.8's STATUS list the same options"
	diff "$T/shelp.long" "$T/sman.long" | grep '^[<>]' | sed 's/^/#   /'
fi
run_candy --version
check "--version exits 0 and prints the version" \
    eval '[ "$RC" = 0 ] && grep -q "^candy [0-9]" "$T/out"'

if command -v mandoc >/dev/null 2>&1; then
	# Warnings and errors only: a missing poll(2) page on the machine
	# is a style note, and mandoc's own database notes are not about
	# candy.8.
	mandoc -Tlint -W warning "$MAN" >"$T/lint" 2>&1
	lrc=$?
	grep -v -e 'mandoc\.db' -e makewhatis "$T/lint" >"$T/lint.real"
	if [ "$lrc" = 0 ] && ! [ -s "$T/lint.real" ]; then
		ok "mandoc -Tlint candy.8 is clean"
	else
		fail "mandoc -Tlint candy.8 is clean (status $lrc)"
		sed 's/^/#   /' "$T/lint.real"
	fi
else
	echo "# skipping the man page lint: mandoc is not installed"
fi

# ---- Bad values ----

# refused "WORDS" ARGS...: candy ARGS exits 1 and its stderr contains every
# word of WORDS (the option and the value).
refused() {
	_words=$1
	shift
	run_candy "$@"
	_miss=
	for _w in $_words; do
		grep -qF -- "$_w" "$T/err" || _miss="$_miss $_w"
	done
	if [ "$RC" = 1 ] && [ -z "$_miss" ]; then
		ok "refused: $*"
	else
		fail "refused: $* (status $RC, want 1; message lacks:$_miss)"
		sed 's/^/#   stderr: /' "$T/err" | head -n 5
	fi
}

SRV="-m server -w ws://127.0.0.1:8080"
CLI="-m client -w ws://127.0.0.1:8080"
# shellcheck disable=SC2086
{
refused "dhcp 10.0.0.0/33" $SRV --dhcp 10.0.0.0/33
refused "dhcp 10.0.0.300/24" $SRV -d 10.0.0.300/24
refused "dhcp 10.0.0.0/32" $SRV --dhcp 10.0.0.0/32
refused "sdwan nonsense" $SRV --sdwan nonsense
refused "mtu abc" $CLI --mtu abc
refused "mtu 100" $CLI --mtu 100
refused "mtu 99999" $CLI --mtu 99999
refused "mode x" --mode x -w ws://127.0.0.1:8080
refused "port 70000" $CLI --port 70000
refused "port -1" $CLI --port -1
refused "discovery soon" $CLI --discovery soon
refused "websocket http://127.0.0.1:8080" -m client -w http://127.0.0.1:8080
refused "tun 172.31.0.0/24" $CLI -t 172.31.0.0/24
refused "tun 172.31.0.255/24" $CLI --tun 172.31.0.255/24
refused "tun 172.31.0.5" $CLI --tun 172.31.0.5/40
refused "name much-too-long" $CLI -n much-too-long
refused "name a/b" $CLI --name a/b
refused "stun http://x" $CLI --stun http://x
refused "localhost 10.1.2" $CLI --localhost 10.1.2
refused "pin xyz" $CLI --pin xyz
refused "--no-such-option" $CLI --no-such-option
refused "-q" $CLI -q
refused "mtu" $CLI --mtu
refused "config /nonexistent/candy.cfg" $CLI -c /nonexistent/candy.cfg
refused "status -w" status -w ws://127.0.0.1:8080
refused "status name much-too-long" status -n much-too-long
}

# A missing --mode or --websocket is an error too (exit 1, a message).
run_candy -w ws://127.0.0.1:8080
check "no --mode: exit 1 with a message naming --mode" \
    eval '[ "$RC" = 1 ] && grep -q -- "mode" "$T/err"'
run_candy -m client
check "no --websocket: exit 1 with a message naming --websocket" \
    eval '[ "$RC" = 1 ] && grep -q -- "websocket" "$T/err"'

# A config file with a bad value names the file, the line and the value.
printf 'mode = client\nwebsocket = "ws://127.0.0.1:8080"\nmtu = lots\n' \
    >"$T/bad.cfg"
cd "$T" || exit 1
refused "bad.cfg:3 mtu lots" -c bad.cfg
cd / || exit 1

# A config file's warnings follow --no-timestamp, given on the command line
# or in the file after the line warned about (they were printed before the
# logging options were known).
printf 'mode = client\nwebsocket = "ws://127.0.0.1:8080"\ncolour = blue\n' \
    >"$T/unknown.cfg"
run_candy --check -c "$T/unknown.cfg" --no-timestamp
check "unknown key warned, no timestamp with --no-timestamp" \
    eval '[ "$RC" = 0 ] && grep -q "^\[[a-z]*\] .*unknown key .colour." "$T/err"'
printf 'colour = blue\nno-timestamp = true\n' >>"$T/unknown.cfg"
run_candy --check -c "$T/unknown.cfg"
check "unknown key warned, no timestamp with no-timestamp in the file" \
    eval '[ "$RC" = 0 ] && grep -q "^\[[a-z]*\] .*unknown key .colour." "$T/err"'
