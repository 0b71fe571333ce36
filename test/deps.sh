#!/bin/sh
# deps.sh: install the Debian packages that building and testing candy need,
# only those missing.  Quiet when nothing is missing.  Run by `make deps`
# (and so by `make test`, `make demo`, `make bench`).  systemd is there for
# `systemd-analyze verify' of contrib's units (it-contrib.sh); installing
# it starts nothing, in a container too.  With arguments, those packages
# instead (make bench's peers: sh test/deps.sh wireguard-go ...).

pkgs="build-essential make libbearssl-dev musl-tools clang iproute2
iputils-ping nftables coturn iperf3 openssl mandoc procps psmisc python3
ca-certificates systemd"
[ $# -gt 0 ] && pkgs="$*"

missing=
for p in $pkgs; do
	# "ii" is installed; anything else (absent, removed, half-installed)
	# needs installing.
	s=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)
	case "$s" in
	ii*) ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing" ] && exit 0

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "deps.sh: missing packages:$missing" >&2
	echo "deps.sh: as root, run: apt-get update &&" \
	    "DEBIAN_FRONTEND=noninteractive $cmd" >&2
	exit 1
fi

echo "deps.sh: installing$missing"
# Packages with a daemon (coturn, iperf3) try to start it on install; in a
# container without an init system that can fail the install.  A temporary
# policy-rc.d tells invoke-rc.d not to start services (the tests start their
# own turnserver).  Only ours is removed afterwards.
policy=/usr/sbin/policy-rc.d
ours=
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" &&
	    ours=1
fi
trap 'if [ -n "$ours" ]; then rm -f "$policy"; fi' EXIT
trap 'exit 1' INT TERM

export DEBIAN_FRONTEND=noninteractive
# A failed update (one unreachable mirror or architecture) leaves the
# lists we had: the install may still succeed with them.
apt-get update -q ||
    echo "deps.sh: apt-get update failed; installing from the old lists" >&2
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing || exit 1
