#!/bin/sh
# it-limits.sh: the server's limits (issue 9).
#   - capacity: with a soft descriptor limit of 1024 (raised to the hard
#     one at start), a /16 server takes more than 1,024 clients, and two
#     real clients among them talk; --max-clients refuses the one past it;
#   - strangers: a host with 8 addresses keeps 150 connections open that
#     upgrade and ping but never authenticate, reopening those closed; a
#     real client still gets in, every stranger is closed about 10 s after
#     it opened, and the log stays short;
#   - out of descriptors: with its limit lowered under it (prlimit), the
#     server neither spins nor floods the log, and recovers.
# The strangers and the crowd of clients are test/wsc.py (flood, many).

. "$(dirname "$0")/lib.sh"
need_netns
command -v python3 >/dev/null 2>&1 || skip_all "no python3"
command -v prlimit >/dev/null 2>&1 || skip_all "no prlimit"
# Info level: debug lines are not rate-limited, and this counts lines.
DEBUG_FLAG=

lan_add net
for h in srv a atk; do
	ns_add $h
done
lan_join net srv 10.77.0.1/24
lan_join net a 10.77.0.2/24
lan_join net atk 10.77.0.10/24
SRCS=
for i in 11 12 13 14 15 16 17; do
	ip -n "$(ns atk)" addr add 10.77.0.$i/24 dev v-net
	SRCS=$SRCS${SRCS:+,}10.77.0.$i
done
WSC="$ROOT/test/wsc.py"

# server NAME args...: a server whose soft descriptor limit starts at 1024,
# its state (the status socket) in $T/state-NAME.
server() {
	_sv_name=$1
	shift
	mkdir -p "$T/state-$_sv_name"
	proc_start "$_sv_name" srv sh -c 'ulimit -Sn 1024 && exec "$@"' sh \
	    "$CANDY" -m server --no-timestamp -w ws://0.0.0.0:8080 -p pw \
	    --state-dir "$T/state-$_sv_name" "$@"
	wait_listening "$_sv_name"
}

# cpu_ticks PID: user + system time of PID in clock ticks.
cpu_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# ---- Capacity ----
server srv1 -d 10.100.0.0/16 || fail "the /16 server listens"
check "the capacity is logged once, over 1,024 clients for a /16" \
    eval '[ "$(grep -c "capacity:" "$(log_of srv1)")" = 1 ] &&
    [ "$(sed -n "s/.*capacity: \([0-9]*\) clients.*/\1/p" \
    "$(log_of srv1)")" -gt 1024 ]'
bg_run a "$T/many.out" timeout 150 python3 "$WSC" many 10.77.0.1 8080 pw \
    1200 10.100.0.0/16 30
MANY=$BG_PID
wait_until 120 grep -q accepted "$T/many.out"
echo "# $(cat "$T/many.out")"
check "1,200 clients are all taken" grep -q "accepted 1200 " "$T/many.out"
check "the server counts them" \
    eval 'status_of srv1 | grep -q "^  clients: 1200$"'
# Among them, two real clients: the poll set of 1,200 relays as before.
candy_client a c1 -w ws://10.77.0.1:8080 -p pw -t 10.100.0.2/16
candy_client atk c2 -w ws://10.77.0.1:8080 -p pw -t 10.100.0.3/16
check "two clients among 1,200 sessions ping each other" \
    eval 'wait_addr c1 15 && wait_addr c2 15 && ping_ok a 10.100.0.3'
stop c1
stop c2
kill "$MANY" 2>/dev/null
wait "$MANY" 2>/dev/null
stop srv1

server srv2 -d 172.31.0.0/24 --max-clients 2 || fail "server 2 listens"
nsx a timeout 30 python3 "$WSC" many 10.77.0.1 8080 pw 3 \
    172.31.0.0/16 >"$T/max.out" 2>&1
check "--max-clients 2: two clients in, the third refused" \
    eval 'grep -q "accepted 2 " "$T/max.out" &&
    log_has srv2 "refused authentication from .*: server full \(2 clients\)"'
stop srv2

# ---- Strangers: 150 connections from 7 addresses and 40 from an eighth,
# never authenticating, against 62 clients + 64 slots for connections
# authenticating.
server srv3 -d 172.31.0.0/26 || fail "server 3 listens"
bg_run atk "$T/flood1.out" timeout 90 python3 "$WSC" flood 10.77.0.1 8080 \
    40 22 10.77.0.10
FLOOD1=$BG_PID
sleep 2
bg_run atk "$T/flood.out" timeout 90 python3 "$WSC" flood 10.77.0.1 8080 \
    150 20 "$SRCS"
FLOOD=$BG_PID
sleep 3
candy_client a a -w ws://10.77.0.1:8080 -p pw
check "a real client gets its address while strangers flood the server" \
    wait_addr a 17
wait "$FLOOD" "$FLOOD1"
sed 's/^/# /' "$T/flood.out" "$T/flood1.out"
check "strangers are closed about 10 s after they open, pings or not" \
    eval 'for f in flood flood1; do
    grep -q "left 0" "$T/$f.out" &&
    [ "$(sed -n "s/oldest lived \([0-9]*\) s.*/\1/p" "$T/$f.out")" \
    -le 14 ] || exit 1; done'
check "one address gets 16 connections authenticating, no more" \
    eval 'grep -Eq "refused [1-9].* open ([0-9]|1[0-6])$" "$T/flood1.out"'
check "the server said why: no AUTH, evicted, too many from one address" \
    eval 'log_has srv3 "closing .*: no AUTH within 10 s" &&
    log_has srv3 "closing .*: not authenticated, and" &&
    log_has srv3 "refusing a connection from 10.77.0.10:"'
check "refusals are rate-limited (N more suppressed)" \
    log_has srv3 "more (like it )?suppressed"
LINES=$(wc -l <"$(log_of srv3)")
echo "# server log: $LINES lines"
check "the log stays short (< 400 lines)" [ "$LINES" -lt 400 ]
check "the client is still connected" \
    eval 'log_has srv3 "client 172.31.0.[0-9]* connected" &&
    ! log_has a "disconnected"'
stop a
stop srv3

# ---- Out of descriptors ----
server srv4 -d 172.31.0.0/24 || fail "server 4 listens"
PID=$(pid_of srv4)
prlimit --pid "$PID" --nofile=12:12
# 40 TCP connections held for 8 s: the server can take a few only.
bg_run atk "$T/hold.out" timeout 30 python3 -c '
import socket, time
s = []
for i in range(40):
    c = socket.socket()
    c.settimeout(2)
    try:
        c.connect(("10.77.0.1", 8080))
        s.append(c)
    except OSError:
        pass
print("held %d" % len(s), flush=True)
time.sleep(8)
'
HOLD=$BG_PID
sleep 1
C0=$(cpu_ticks "$PID")
wait "$HOLD"
C1=$(cpu_ticks "$PID")
echo "# $(cat "$T/hold.out"); server CPU over the hold: $((C1 - C0)) ticks"
check "out of descriptors: the server does not spin (< 2 s CPU in ~8 s)" \
    [ $((C1 - C0)) -lt 200 ]
check "out of descriptors: logged once" \
    eval '[ "$(grep -c "out of file descriptors" "$(log_of srv4)")" = 1 ]'
candy_client a a -w ws://10.77.0.1:8080 -p pw
check "descriptors free again: a client gets in" wait_addr a 30
check "the recovery is logged, once" \
    eval 'wait_log srv4 20 "file descriptors free again" &&
    [ "$(grep -c "out of file descriptors" "$(log_of srv4)")" = 1 ]'

[ "$FAILED" = 0 ]
