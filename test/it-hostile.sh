#!/bin/sh
# it-hostile.sh: a client facing a hostile server (issue 8).
#
# A fake server (test/wsc.py server) on the simulated internet
# (10.77.0.0/24; the client also has a default route there):
#   1. grants a good address with routes that would cut the client off
#      (its LAN, the server, 0/1 + 128/1, loopback, multicast, a network
#      around the tunnel) and more than SDWAN_MAX of them: only the
#      harmless ones are installed, the log says "more than" once; then
#      drops the session and grants 0.0.0.0/8, then 224.0.0.5/24: the
#      client refuses each, lives on and retries; the next session
#      pushes nothing: the routes of the first are gone.
#   2. stops reading: the client leaves it after 30 s and reconnects.
#   3. closes with a reason, or without one before granting: the client
#      says what the server said, or lists the causes.
# And with a real server that relays anything (--no-source-check), a
# client forging a source through IP-in-IP reaches nobody.

. "$(dirname "$0")/lib.sh"
need_netns
[ -x "$CANDY" ] || { fail "candy is built"; exit 1; }
command -v python3 >/dev/null 2>&1 ||
    skip_all "python3 for the fake server (make deps installs it)"

PW=secretpw
SRV=10.77.0.1
URI=ws://$SRV:8080

# fake NAME GRANTS ROUTES MODE: the fake server, log $T/NAME.log.
fake() {
	proc_start "$1" srv timeout 300 python3 -u "$ROOT/test/wsc.py" \
	    server 8080 $PW "$2" "$3" "$4"
	wait_log "$1" 10 '^listening' || echo "# $1 does not listen"
}

lan_add net
ns_add srv
lan_join net srv $SRV/24
for c in c1 raw; do
	ns_add $c
done
lan_join net c1 10.77.0.11/24
lan_join net raw 10.77.0.12/24
# An underlay default route (to nowhere: nothing leaves the namespaces).
nsx c1 ip route add default via 10.77.0.254

# ---- 1. Bad grants, bad routes, routes that end with their session ----

bad="10.77.0.0/24>172.31.0.9,10.0.0.0/8>172.31.0.9,$SRV/32>172.31.0.9"
bad="$bad,0.0.0.0/1>172.31.0.9,128.0.0.0/1>172.31.0.9,127.0.0.0/8>172.31.0.9"
bad="$bad,224.0.0.0/4>172.31.0.9,172.31.0.0/16>172.31.0.9"
many=$(i=0; while [ $i -lt 300 ]; do
	printf ',100.%d.%d.0/24>172.31.0.9' $((64 + i / 256)) $((i % 256))
	i=$((i + 1))
done)
fake f1 "172.31.0.2/24,0.0.0.0/8,224.0.0.5/24,172.31.0.2/24" \
    "$bad,192.168.50.0/24>172.31.0.9$many" drop:15
candy_client c1 c1 -w $URI -p $PW
check "the client takes a good grant" wait_addr c1 15
check "the pushed route 192.168.50.0/24 is installed" wait_until 5 eval \
    'nsx c1 ip route show 192.168.50.0/24 | grep -q candy-c1'
nsx c1 ip route show dev candy-c1 >"$T/routes1" 2>&1
for r in 10.77.0.0/24 10.0.0.0/8 "$SRV " 0.0.0.0/1 128.0.0.0/1 127.0.0.0/8 \
    224.0.0.0/4 172.31.0.0/16; do
	check "the pushed route $r is refused" \
	    eval "! grep -q '^$r' '$T/routes1'"
done
check "the server is still reached over the LAN" \
    eval "nsx c1 ip route get $SRV | grep -q 'dev v-net'"
check "the default route is still the underlay's" \
    eval "nsx c1 ip route get 198.51.100.1 | grep -q 'dev v-net'"
check "more than 256 routes: said once" \
    eval "[ \$(grep -c 'more than 256 routes' '$(log_of c1)') = 1 ]"
# The server drops the session after 15 s, then grants bad addresses.
check "a grant of 0.0.0.0/8 is refused and said" \
    wait_log c1 30 'refused the address 0\.0\.0\.0/8'
check "a grant of 224.0.0.5/24 is refused and said" \
    wait_log c1 10 'refused the address 224\.0\.0\.5/24'
check "the client lives on and takes the next, good grant" \
    wait_until 20 eval '[ "$(grep -c "^auth" "$(log_of f1)")" -ge 2 ]'
check "the client is still running" running c1
check "the session's routes went with it; the next one pushed none" \
    eval '! nsx c1 ip route show dev candy-c1 | grep -Eq "192\.168\.50|100\.64"'
check "the client is up again" wait_addr c1 10
stop c1
stop f1

# ---- 2. A server that stops reading ----

# A small send buffer, so the queue fills in seconds.
sysctl_set c1 "net.ipv4.tcp_wmem=4096 16384 65536"
fake f2 172.31.0.2/24 - noread
candy_client c1 c1 -w $URI -p $PW
check "the client connects to the server that will not read" \
    wait_log f2 15 '^auth'
bg_run c1 "$T/flood.log" timeout 60 ping -q -f -s 1300 172.31.0.3
check "the client leaves a server that takes no bytes, and says why" \
    wait_log c1 70 'took no bytes for 30 s'
check "and reconnects" wait_log f2 15 '^conn 2'
stop c1
stop f2

# ---- 3. What the server said ----

fake f3 - - "close:address range exhausted"
candy_client c1 c1 -w $URI -p $PW
check "a refusal with a reason: the client logs it" \
    wait_log c1 10 'closed the connection: address range exhausted'
stop c1
stop f3
fake f4 - - serve
candy_client c1 c1 -w $URI -p $PW
check "a refusal without a reason: the client lists the causes" \
    wait_log c1 10 'before granting an address: wrong password.*no free address.*full'
check "and no longer just guesses \"wrong password?\"" \
    eval "! log_has c1 'wrong password\\?'"
stop c1
stop f4

# ---- IP-in-IP with a forged inner source ----

candy_server srv srv -w "ws://0.0.0.0:8080" -p $PW -d 172.31.0.0/24 \
    --no-source-check
wait_listening srv || fail "the real server starts"
candy_client c1 c1 -w $URI -p $PW
wait_addr c1 15
A1=$(addr_of c1)
nsx c1 nft -f - <<-EOF
table inet cdy {
	counter legit {}
	counter spoof {}
	chain pre {
		type filter hook prerouting priority -300;
		iifname "candy-c1" udp dport 9998 counter name legit
		iifname "candy-c1" udp dport 9999 counter name spoof
	}
}
EOF
nsx raw timeout 20 python3 "$ROOT/test/wsc.py" ipip $SRV 8080 $PW \
    172.31.0.60 172.31.0.77 "$A1" >"$T/ipip.out" 2>&1
sed 's/^/#   /' "$T/ipip.out"
count() {
	nsx c1 nft list counter inet cdy "$1" 2>/dev/null |
	    awk '{ for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'
}
check "IP-in-IP from a client for its own address is delivered" \
    eval '[ "$(count legit)" -ge 1 ]'
check "IP-in-IP from a client claiming 172.31.0.77 is not delivered" \
    eval '[ "$(count spoof)" = 0 ]'
check "the client counts it" \
    eval 'status_of c1 | grep -Eq "^  ipip refused: [1-9]"'
