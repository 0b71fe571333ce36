#!/bin/sh
# demo.sh (make demo): a candy server and two clients, each in its own
# network namespace on a small simulated internet, ping each other through
# the VPN.  Everything is removed at the end; the machine's own network is
# not touched.

if [ "$(id -u)" != 0 ]; then
	echo "make demo needs root: it creates network namespaces." >&2
	echo "Run it again as root (e.g. sudo make demo)." >&2
	exit 1
fi
. "$(dirname "$0")/lib.sh"
if ! ip netns add "$P-probe" 2>/dev/null; then
	echo "make demo needs network namespaces (ip netns), which do not" \
	    "work here." >&2
	exit 1
fi
ip netns del "$P-probe"
[ -x "$CANDY" ] || { echo "./candy is not built (run make)." >&2; exit 1; }

say() {
	echo
	echo "== $*"
}

# die MESSAGE NAME...: say what went wrong, show the logs, stop.
die() {
	_msg=$1
	shift
	echo "Something went wrong: $_msg" >&2
	for _n in "$@"; do
		echo "--- the log of $_n:" >&2
		tail -n 20 "$(log_of "$_n")" >&2
	done
	exit 1
}

say "Building a small internet: a switch and three machines," \
    "each in its own network namespace."
lan_add net
ns_add server
ns_add alice
ns_add bob
lan_join net server 10.77.0.1/24
lan_join net alice 10.77.0.2/24
lan_join net bob 10.77.0.3/24
echo "   server 10.77.0.1, alice 10.77.0.2, bob 10.77.0.3"

say "Starting the candy server on server, port 8080; it hands out" \
    "addresses from 172.31.0.0/24 to clients that know the password."
echo "   candy -m server -w ws://0.0.0.0:8080 -p demo-secret -d 172.31.0.0/24"
candy_server server server -w ws://0.0.0.0:8080 -p demo-secret \
    -d 172.31.0.0/24
wait_listening server || die "the server did not start" server

say "Starting a candy client on alice and one on bob; they connect to the" \
    "server over WebSocket and ask for an address."
echo "   candy -m client -w ws://10.77.0.1:8080 -p demo-secret -n alice"
candy_client alice alice -w ws://10.77.0.1:8080 -p demo-secret
candy_client bob bob -w ws://10.77.0.1:8080 -p demo-secret
wait_addr alice 15 || die "alice got no address" alice server
wait_addr bob 15 || die "bob got no address" bob server
A=$(addr_of alice)
B=$(addr_of bob)
echo "   alice got $A on its device candy-alice"
echo "   bob got $B on its device candy-bob"
echo
nsx alice ip -4 addr show dev candy-alice | sed 's/^/   alice: /'

rc=0
say "alice pings bob's VPN address $B (through the server):"
wait_until 10 ping_ok alice "$B" 1
nsx alice ping -n -c 3 -i 0.5 -W 2 "$B" >"$T/ping1" 2>&1 || rc=1
sed 's/^/   /' "$T/ping1"

say "bob pings alice's VPN address $A:"
nsx bob ping -n -c 3 -i 0.5 -W 2 "$A" >"$T/ping2" 2>&1 || rc=1
sed 's/^/   /' "$T/ping2"

say "The server's status report (kill -USR1):"
status_of server | sed 's/^/   /'

if [ "$rc" = 0 ]; then
	say "It works.  Stopping everything and removing the namespaces."
else
	say "Some pings were lost.  The server's log:"
	tail -n 20 "$(log_of server)" | sed 's/^/   /'
fi
exit "$rc"
