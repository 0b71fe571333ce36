#!/bin/sh
# it-static.sh: `make static` gives one static musl binary that works as a
# client of the regular build's server (and the regular client of it).

. "$(dirname "$0")/lib.sh"
need_netns
command -v musl-gcc >/dev/null 2>&1 || skip_all "musl-gcc not installed"

check "make static builds candy-static" make -s -C "$ROOT" static
STATIC=$ROOT/candy-static
check "candy-static has no dynamic dependencies" \
    eval "! LC_ALL=C readelf -l '$STATIC' | grep -q INTERP"
check "candy-static runs (--version)" "$STATIC" --version

lan_add net
ns_add srv
ns_add a
ns_add b
lan_join net srv 10.77.0.1/24
lan_join net a 10.77.0.2/24
lan_join net b 10.77.0.3/24
REGULAR=$CANDY
CANDY=$STATIC
candy_server srv srv -w ws://0.0.0.0:8080 -p pw -d 172.31.0.0/24
wait_listening srv || { fail "the static server listens"; exit 1; }
candy_client b b -w ws://10.77.0.1:8080 -p pw -t 172.31.0.11/24
CANDY=$REGULAR
candy_client a a -w ws://10.77.0.1:8080 -p pw -t 172.31.0.10/24
check "both clients get their addresses" \
    eval 'wait_addr a 10 && wait_addr b 10'
check "the regular client pings the static one through the static server" \
    ping_ok a 172.31.0.11
check "the static client pings the regular one" ping_ok b 172.31.0.10
[ "$FAILED" = 0 ]
