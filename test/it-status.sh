#!/bin/sh
# it-status.sh: `candy status` (issue 10).
#
# A server and a STUN server (coturn) on a simulated internet,
# 198.51.100.0/24, with three clients on it: a and b with peer-to-peer
# (they connect directly), c without (its traffic goes through the server).
# The server pushes an SD-WAN route to every client.  Checked: the text
# report and the JSON report of a client and of the server carry the
# right values (addresses, a CONNECTED peer, the client's description,
# byte counts that grow after a ping); SIGUSR1 logs the same report; the
# sockets are mode 0600; status connections that never ask or never read
# do not stall pings and are closed; a name with no daemon is a clear
# error; a socket left by a killed candy is replaced.

. "$(dirname "$0")/lib.sh"
need_netns
[ -x "$CANDY" ] || { fail "candy is built"; exit 1; }
command -v turnserver >/dev/null 2>&1 || skip_all "no turnserver (coturn)"
command -v python3 >/dev/null 2>&1 || skip_all "no python3"

PW=statuspw
INET=198.51.100
SRV=$INET.1
URI=ws://$SRV:8080
STUN=stun://$SRV:3478
GW=172.31.0.200

lan_add inet
for n in srv a b c; do
	ns_add $n
done
lan_join inet srv $SRV/24
lan_join inet a $INET.2/24
lan_join inet b $INET.3/24
lan_join inet c $INET.4/24

proc_start stun srv turnserver -n --listening-ip=$SRV --listening-port=3478 \
    --stun-only --no-cli --no-tls --no-dtls --simple-log \
    --log-file="$T/turnserver.log" --pidfile="$T/turnserver.pid" \
    --userdb="$T/turndb"
candy_server srv srv -w "ws://0.0.0.0:8080" -p $PW -d 172.31.0.0/24 \
    --sdwan "172.31.0.0/24,10.99.0.0/16,$GW"
if ! wait_listening srv; then
	fail "the server starts and listens"
	exit 1
fi
candy_client a a -w $URI -p $PW -s $STUN
candy_client b b -w $URI -p $PW -s $STUN
candy_client c c -w $URI -p $PW
for n in a b c; do
	check "client $n gets an address" wait_addr $n 15
done
A=$(addr_of a); B=$(addr_of b); C=$(addr_of c)
echo "# a $A, b $B, c $C"
nsx a ping -n -q -c 3 -i 0.3 -W 2 "$B" >/dev/null 2>&1
check "a connects to b peer-to-peer" wait_log a 20 "peer $B connected via"
check "b connects to a" wait_log b 10 "peer $A connected via"
check "c pings a through the server" ping_ok c "$A" 5

# json NAME PYTHON: NAME's `candy status --json` parsed as d; the value of
# the expression PYTHON printed (a list or tuple: its items, space-separated).
json() {
	candy_status "$1" --json >"$T/$1.json" 2>&1 &&
	    python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print(" ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)' \
	    "$T/$1.json" "$2"
}

# peer_of NAME ADDR KEY: the value of KEY for NAME's peer ADDR (JSON).
peer_of() {
	json "$1" "[p[\"$3\"] for p in d[\"peers\"] if p[\"address\"] == \"$2\"]"
}

# session_of ADDR KEY: the value of KEY for the server's session ADDR.
session_of() {
	json srv "[s[\"$2\"] for s in d[\"sessions\"] if s[\"address\"] == \"$1\"]"
}

# block NAME TITLE: the lines of the block "TITLE" in NAME's text report.
block() {
	candy_status "$1" | awk -v t="$2" '/^[^ ]/ { on = $0 == t } on'
}

# ---- The client's report ----

candy_status a >"$T/a.txt" 2>&1
rc=$?
sed 's/^/#   /' "$T/a.txt"
check "candy status -n a exits 0" [ "$rc" = 0 ]
check "a's report: interface, state, address, server" eval '
    grep -q "^client: candy-a$" "$T/a.txt" &&
    grep -q "^  state: up$" "$T/a.txt" &&
    grep -q "^  address: $A/24$" "$T/a.txt" &&
    grep -q "^  server: $URI$" "$T/a.txt" &&
    grep -q "^  server address: $SRV:8080$" "$T/a.txt" &&
    grep -q "^  tls: plain$" "$T/a.txt" &&
    grep -q "^  connected since: .* ago)$" "$T/a.txt" &&
    grep -q "^  reconnects: 0$" "$T/a.txt" &&
    grep -q "^  to server: [0-9]* frames, " "$T/a.txt"'
check "a's report: peer b CONNECTED, its endpoint, rtt, last heard" \
    eval 'block a "peer: $B" >"$T/ab.txt" &&
    grep -q "^  state: CONNECTED$" "$T/ab.txt" &&
    grep -q "^  endpoint: $INET\.3:[0-9]*$" "$T/ab.txt" &&
    grep -Eq "^  rtt: ([0-9]+ ms|unknown)$" "$T/ab.txt" &&
    grep -q "^  sent: [0-9]* datagrams, " "$T/ab.txt" &&
    grep -q "^  last heard: .*ago$\|^  last heard: just now$" "$T/ab.txt"'
check "a's report: the SD-WAN route" \
    eval 'block a "sdwan routes:" | grep -q "^  10.99.0.0/16 via $GW$"'
check "a's report: the public endpoint from STUN" \
    grep -q "^  public endpoint: $INET\.2:[0-9]*$" "$T/a.txt"

check "candy status --json parses (python3 -m json.tool)" \
    eval 'candy_status a --json | python3 -m json.tool >/dev/null'
check "the JSON holds the same values" eval '
    [ "$(json a "d[\"address\"]")" = "$A/24" ] &&
    [ "$(json a "d[\"mode\"], d[\"interface\"], d[\"state\"]")" = \
	"client candy-a up" ] &&
    [ "$(peer_of a "$B" state)" = CONNECTED ] &&
    [ "$(json a "d[\"sdwan_routes\"][0][\"next\"]")" = "$GW" ] &&
    [ "$(json a "d[\"truncated\"]")" = False ]'

# Bytes grow after a ping: a and b peer-to-peer, c through the server.
counts() {
	echo "$(peer_of a "$B" tx_bytes) $(peer_of a "$B" rx_bytes)" \
	    "$(json c 'd["server_tx_bytes"], d["server_rx_bytes"]')" \
	    "$(session_of "$C" rx_bytes) $(session_of "$A" tx_bytes)"
}
n0=$(counts)
nsx a ping -n -q -c 3 -i 0.2 -W 2 "$B" >/dev/null 2>&1
nsx c ping -n -q -c 3 -i 0.2 -W 2 "$A" >/dev/null 2>&1
n1=$(counts)
echo "# bytes: a to b, a from b, c to the server, c from the server," \
    "the server from c, the server to a: $n0 -> $n1"
# grew FIRST COUNT MIN: counts FIRST .. FIRST + COUNT - 1 grew by MIN or
# more from $n0 to $n1.
grew() {
	python3 -c 'import sys
a, b = sys.argv[1].split(), sys.argv[2].split()
i, n, m = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sys.exit(not all(int(b[k]) - int(a[k]) >= m for k in range(i, i + n)))' \
	    "$n0" "$n1" "$@"
}
check "a's bytes to and from peer b grow by 3 pings (84 bytes each)" \
    grew 0 2 252
check "c's bytes to and from the server grow by 3 pings" grew 2 2 252
check "the server's bytes from c and to a grow by 3 pings" grew 4 2 252

# ---- The server's report ----

candy_status srv >"$T/srv.txt" 2>&1
rc=$?
sed 's/^/#   /' "$T/srv.txt" | head -n 30
check "candy status -m server exits 0" [ "$rc" = 0 ]
check "the server's report: listener, totals" eval '
    grep -q "^server: ws://0.0.0.0:8080$" "$T/srv.txt" &&
    grep -q "^  listening on: 0.0.0.0:8080$" "$T/srv.txt" &&
    grep -q "^  clients: 3$" "$T/srv.txt" &&
    grep -Eq "^  forwarded: [1-9][0-9]*$" "$T/srv.txt" &&
    grep -q "^  spoofed: 0$" "$T/srv.txt" &&
    grep -q "^  refused: 0$" "$T/srv.txt"'
VMAC=$(cat "$T/state-a/vmac/__noname__")
check "the server's report: a's session (remote, vmac, description)" \
    eval 'block srv "session: $A" >"$T/sa.txt" &&
    grep -q "^  remote: $INET\.2:[0-9]*$" "$T/sa.txt" &&
    grep -q "^  vmac: $VMAC$" "$T/sa.txt" &&
    grep -q "^  description: candy::linux::[0-9.]*::" "$T/sa.txt" &&
    grep -q "^  received: [0-9]* frames, " "$T/sa.txt" &&
    grep -q "^  queued: 0 B$" "$T/sa.txt"'
check "the server's JSON parses and holds the same values" eval '
    candy_status srv --json | python3 -m json.tool >/dev/null &&
    [ "$(json srv "sorted(s[\"address\"] for s in d[\"sessions\"])")" = \
	"$(printf "%s\n" "$A" "$B" "$C" | sort | tr "\n" " " | sed "s/ $//")" ] &&
    [ "$(json srv "d[\"listen\"]")" = 0.0.0.0:8080 ] &&
    [ "$(session_of "$A" vmac)" = "$VMAC" ] &&
    case "$(session_of "$A" description)" in
    candy::linux::*) ;; *) false ;; esac'

# ---- SIGUSR1: the same report in the log ----

status_of a >"$T/a.log.txt"
check "SIGUSR1 logs the same report, line for line (\"status: \")" eval '
    grep -q "^client: candy-a$" "$T/a.log.txt" &&
    grep -q "^peer: $B$" "$T/a.log.txt" &&
    grep -q "^  address: $A/24$" "$T/a.log.txt"'

# ---- The socket ----

check "the client's socket is mode 0600" \
    eval '[ "$(stat -c %a "$T/state-a/candy-a.sock")" = 600 ]'
check "the server's socket is mode 0600" \
    eval '[ "$(stat -c %a "$T/state-srv/server.sock")" = 600 ]'

"$CANDY" status -n nobody --state-dir "$T/state-a" >"$T/none.out" 2>&1
rc=$?
sed 's/^/#   /' "$T/none.out"
check "candy status for a name with no daemon: exit 1, a clear message" \
    eval '[ "$rc" = 1 ] &&
    grep -q "no candy client for network .nobody. is running" "$T/none.out"'
"$CANDY" status --help >"$T/help.out" 2>&1
rc=$?
check "candy status --help exits 0 and names --json" \
    eval '[ "$rc" = 0 ] && grep -q -- "--json" "$T/help.out"'
"$CANDY" status -w ws://x >/dev/null 2>&1
check "candy status refuses an option that does not apply" [ $? = 1 ]

# Clients of the status socket that never ask and never read: more than
# the slots.  Pings keep flowing, and the server closes them all.
cat >"$T/hog.py" <<'EOF'
import socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
socks = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    try:
        if i % 2:
            s.sendall(b"json\n")	# asks, and never reads
    except OSError:
        pass			# closed already: over the slots
    socks.append(s)
time.sleep(8)
closed = 0
for s in socks:
    s.settimeout(5)
    try:
        while s.recv(65536):
            pass
        closed += 1			# the daemon closed it
    except ConnectionResetError:
        closed += 1			# closed with our request unread
    except OSError:
        pass
print("closed", closed, "of", n)
EOF
python3 "$T/hog.py" "$T/state-srv/server.sock" 10 >"$T/hog.out" 2>&1 &
HOG=$!
sleep 1
nsx c ping -n -q -c 10 -i 0.3 -W 2 "$A" >"$T/hogping.out" 2>&1
check "status clients that never ask or never read do not stall pings" \
    grep -q ' 0% packet loss' "$T/hogping.out"
wait "$HOG"
cat "$T/hog.out" | sed 's/^/#   /'
check "the server closed every one of them" grep -q "closed 10 of 10" \
    "$T/hog.out"
check "candy status works again afterwards" \
    eval 'candy_status srv | grep -q "^  clients: 3$"'
check "the server keeps its clients" eval '! log_has srv disconnected'

# ---- A socket left by a killed candy ----

stop srv KILL
check "a killed server leaves its socket behind" \
    [ -S "$T/state-srv/server.sock" ]
candy_server srv srv -w "ws://0.0.0.0:8080" -p $PW -d 172.31.0.0/24 \
    --sdwan "172.31.0.0/24,10.99.0.0/16,$GW"
check "the new server listens" wait_listening srv
check "it replaces the stale socket and answers" \
    wait_until 10 eval 'candy_status srv | grep -q "^server: "'
check "a reconnects, and its report counts it" wait_until 30 eval \
    'candy_status a | grep -q "^  reconnects: 1$" &&
    candy_status a | grep -q "^  state: up$"'
exit 0
