#!/bin/sh
# it-slow.sh: a client that stops reading cannot stall the others.  Its
# bounded queue on the server fills, packets for it are dropped and
# counted, everyone else keeps talking, and after 60 s of not reading it is
# closed.  The slow client is test/wsc.py: it authenticates, sends a ping
# every 2 s (so it is not silent) and never reads.

. "$(dirname "$0")/lib.sh"
need_netns
command -v python3 >/dev/null 2>&1 || skip_all "no python3"

lan_add net
for h in srv a b slow; do
	ns_add $h
done
lan_join net srv 10.77.0.1/24
lan_join net a 10.77.0.2/24
lan_join net b 10.77.0.3/24
lan_join net slow 10.77.0.4/24

candy_server srv srv -w ws://0.0.0.0:8080 -p pw -d 172.31.0.0/24
wait_listening srv || { fail "the server listens"; exit 1; }
candy_client a a -w ws://10.77.0.1:8080 -p pw -t 172.31.0.2/24
candy_client b b -w ws://10.77.0.1:8080 -p pw -t 172.31.0.3/24
bg_run slow "$T/wsc.log" python3 "$ROOT/test/wsc.py" slow 10.77.0.1 8080 \
    pw 172.31.0.77 100
check "two clients and the slow one are connected" \
    eval 'wait_addr a 10 && wait_addr b 10 &&
    wait_log srv 10 "client 172.31.0.77 connected"'

# 4000 packets of 1400 bytes in 4 s for the slow client: 5.6 MB, far more
# than its queue and the sockets hold.  a's route to it goes through the
# tunnel.
nsx a ping -n -q -i 0.001 -s 1400 -c 4000 -W 1 172.31.0.77 >/dev/null 2>&1 &
FLOOD=$!
check "b pings a while a floods the slow client" ping_ok b 172.31.0.2 5
wait "$FLOOD"
# The server's report counts drops in the slow client's session.
slow_dropped() {
	status_of srv | awk '/^[^ ]/ { on = $0 == "session: 172.31.0.77" }
	    on && /^  dropped: [1-9]/ { n++ } END { exit !n }'
}
check "the server drops packets for the slow client and counts them" \
    slow_dropped
check "a and b still ping each other" \
    eval 'ping_ok a 172.31.0.3 3 && ping_ok b 172.31.0.2 3'
check "the slow client is closed after 60 s of not reading" \
    wait_log srv 75 "172.31.0.77.*disconnected: not reading for 60 s"
check "the slow client sees the connection end" \
    wait_until 10 grep -q "closed after" "$T/wsc.log"
check "a and b are still connected" \
    eval 'ping_ok a 172.31.0.3 3 && ! log_has a disconnected &&
    ! log_has b disconnected'
[ "$FAILED" = 0 ]
