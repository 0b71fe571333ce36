#!/bin/sh
# it-contrib.sh: the service files and the sample configuration of contrib/.
# candy.cfg names every option of `candy --help' that a file can set, and
# nothing else; it loads with `candy --check', and so does each of its
# commented-out examples; `make install INSTALL_SERVICE=1' puts the files
# in place with this installation's paths and `make uninstall' takes them
# away; `systemd-analyze verify' accepts the units (where it exists); the
# OpenRC script is valid sh.
#
# A --check that wrongly started candy would try to reach the sample's
# server: every run of candy here happens in a namespace of its own, with
# no route out, under a time limit.

. "$(dirname "$0")/lib.sh"
need_netns
[ -x "$CANDY" ] || { fail "candy is built"; exit 1; }
CFG=$ROOT/contrib/candy.cfg
ns_add cfg

# run_candy ARGS...: candy in the namespace, 5 s at most; output in
# $T/out, status in $RC.
run_candy() {
	nsx cfg timeout -k 2 5 "$CANDY" "$@" >"$T/out" 2>&1 </dev/null
	RC=$?
}

# ---- Every option in candy.cfg, every key an option ----

# Options a file can set: those of --help but --config, --check, --help and
# --version, which config_set refuses in a file.
"$CANDY" --help >"$T/help" 2>&1
grep -o -- '--[a-z][a-z0-9-]*' "$T/help" | sed 's/^--//' |
    grep -v -x -e config -e check -e help -e version | sort -u >"$T/opts"
# Keys of the file: `key = value' and `#key = value' (a default left
# commented); prose comments start with `# '.
sed -n 's/^#\{0,1\}\([a-z][a-z0-9-]*\) *=.*/\1/p' "$CFG" >"$T/keys.all"
sort -u "$T/keys.all" >"$T/keys"

if [ -s "$T/opts" ] && cmp -s "$T/opts" "$T/keys"; then
	ok "candy.cfg has a key for each of the $(wc -l <"$T/opts") options"
else
	fail "candy.cfg has a key for each option and no other key"
	echo "#   < only in --help, > only in candy.cfg:"
	diff "$T/opts" "$T/keys" | grep '^[<>]' | sed 's/^/#   /'
fi
check "candy.cfg names each key once" \
    eval '[ "$(wc -l <"$T/keys.all")" = "$(wc -l <"$T/keys")" ]'

# Each key has a sentence and its default in the comment above it.
awk '
	/^# / { text = text $0 "\n"; next }
	/^#?[a-z][a-z0-9-]* *=/ {
		k = $0; sub(/^#/, "", k); sub(/ *=.*/, "", k)
		if (text !~ /Default/ && text !~ /Required/) print k
		text = ""; next
	}
	{ text = "" }
' "$CFG" >"$T/undocumented"
check "every key of candy.cfg states its default (or Required)" \
    eval '! [ -s "$T/undocumented" ] || { cat "$T/undocumented"; false; }'

# ---- The file loads ----

run_candy --check -c "$CFG"
check "candy --check -c contrib/candy.cfg: configuration ok" \
    eval '[ "$RC" = 0 ] && grep -q "configuration ok" "$T/out" &&
    ! grep -q "unknown key" "$T/out"'

# Each commented example, set on its own, is a value candy takes.
bad=
for k in $(sed -n 's/^#\([a-z][a-z0-9-]*\) *=.*/\1/p' "$CFG"); do
	sed "s/^#$k *=/$k =/" "$CFG" >"$T/one.cfg"
	run_candy --check -c "$T/one.cfg"
	if [ "$RC" != 0 ] || grep -q "unknown key" "$T/out"; then
		bad="$bad $k"
		sed 's/^/#   /' "$T/out"
	fi
done
check "each commented example of candy.cfg loads when set:${bad:- all}" \
    [ -z "$bad" ]

# --check refuses what candy would refuse, and starts nothing.
printf 'mode = client\nwebsocket = ws://127.0.0.1:1\nmtu = 10\n' >"$T/bad.cfg"
run_candy --check -c "$T/bad.cfg"
check "candy --check: a bad value exits 1 naming the line" \
    eval '[ "$RC" = 1 ] && grep -q "bad.cfg:3" "$T/out"'

# ---- make install / uninstall ----

inst="make -s -C $ROOT INSTALL_SERVICE=1 DESTDIR=$T/root PREFIX=/opt/cdy \
    SYSCONFDIR=/opt/etc"
$inst install >"$T/make.out" 2>&1
S=$T/root/opt/cdy/lib/systemd/system
check "make install INSTALL_SERVICE=1: units, OpenRC script, sample" eval '[ -f "$S/candy.service" ] &&
    [ -f "$S/candy@.service" ] && [ -x "$T/root/opt/etc/init.d/candy" ] &&
    [ -f "$T/root/opt/etc/candy.d/candy.conf.sample" ]'
check "installed units and script name the installed binary and config" \
    eval 'grep -qx "ExecStart=/opt/cdy/sbin/candy --no-timestamp -c /opt/etc/candy.conf" "$S/candy.service" &&
    grep -qx "ExecStart=/opt/cdy/sbin/candy --no-timestamp -c /opt/etc/candy.d/%i.conf" "$S/candy@.service" &&
    grep -qx "command=/opt/cdy/sbin/candy" "$T/root/opt/etc/init.d/candy"'
$inst uninstall >>"$T/make.out" 2>&1
left=$(find "$T/root" -type f | sed "s|^$T/root||")
check "make uninstall INSTALL_SERVICE=1 removes every file it installed" \
    eval '[ -z "$left" ] || { echo "$left"; false; }'
make -s -C "$ROOT" DESTDIR="$T/plain" install >>"$T/make.out" 2>&1
check "make install without INSTALL_SERVICE installs no service file" \
    eval '[ -x "$T/plain/usr/local/sbin/candy" ] &&
    ! [ -d "$T/plain/etc" ] && ! [ -d "$T/plain/usr/local/lib" ]'

# ---- The service files ----

check "contrib/candy.openrc is valid sh" sh -n "$ROOT/contrib/candy.openrc"

if command -v systemd-analyze >/dev/null 2>&1; then
	# Installed where ExecStart's binary exists (verify checks it); the
	# man page is not installed system-wide, so --man=no.
	make -s -C "$ROOT" INSTALL_SERVICE=1 PREFIX="$T/sd" \
	    SYSCONFDIR="$T/sd/etc" install >>"$T/make.out" 2>&1
	for u in candy.service candy@home.service; do
		systemd-analyze verify --man=no "$T/sd/lib/systemd/system/$u" \
		    >"$T/verify" 2>&1
		vrc=$?
		# It also warns (exit 0) about unknown or misplaced keys.
		check "systemd-analyze verify $u: no error, no warning" \
		    eval '[ "$vrc" = 0 ] && ! [ -s "$T/verify" ] ||
		    { cat "$T/verify"; false; }'
	done
else
	echo "# skipping systemd-analyze verify: not installed"
fi
