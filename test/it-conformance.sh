#!/bin/sh
# it-conformance.sh: interoperability with another Candy 6.x program (issue
# 12).  `make conformance PEER=/path/to/other/candy` runs it (through
# test/run, which closes with "N passed, N failed"); with PEER unset it runs
# against our own binary in "foreign" mode, which is how `make test` proves
# the suite itself works.
#
# Our binary on one side, PEER on the other, in every direction that
# applies:
#   1. relay: our server with PEER clients, PEER's server with ours, mixed
#      clients on both; addresses, pings both ways, broadcast, an address
#      kept across a client restart;
#   2. authentication: a wrong password is refused in both directions;
#   3. SD-WAN: each server's routes reach the other kind's clients, a LAN
#      behind a gateway client of one kind is reached from the other;
#   4. peer-to-peer through NATs (nft) with a real STUN server (coturn):
#      one client of each kind; pings stop crossing the server;
#   5. peer relay: a PEER client relays between two of ours that cannot
#      reach each other over UDP, and one of ours between two PEER clients;
#   6. wss://: a PEER client, trusting the certificate through the system
#      store of its mount namespace, on our server over TLS.
#
# PEER is driven only through the options every Candy 6.x program has (see
# PEER_OPTS; peer_start refuses anything else) and must name its device
# candy-NAME for -n NAME.  Each PEER process runs with /var/lib/candy on a
# tmpfs of its own, in a private mount namespace held for its name (a
# restarted client finds its state again); the machine's /var/lib is never
# written.  Nothing reads PEER's logs or status: every check looks at our
# side, at the kernel (devices, routes, pings) or at nft counters.
#
# Other implementations' timers can be slower than ours (Candy measures
# delays once a minute): every wait is bounded by the clock, generous, and
# says what it waited for when it gives up.  Against our own binary the
# whole run takes about 30 s.
#
# The simulated internet is 198.51.100.0/24 (public-looking, so that NATed
# endpoints look as they would).  On .1 (namespace srv): our server on
# :8080 handing out 172.31.0.0/24, PEER's server on :8081 handing out
# 172.31.1.0/24, our wss:// server on :8443 handing out 172.31.2.0/24,
# coturn on :3478.  Hosts:
#   a b c   plain hosts, a client for each server (relay, broadcast, restart)
#   g       gateway of the LAN 192.168.50.0/24 (our server's SD-WAN) and of
#           192.168.51.0/24 (PEER's server's), host lh on it (.2 in both)
#   z       the clients with a wrong password; PEER's wss:// client pt
#           (ours, ot, is on g)
#   x       behind rx, a 1:1 NAT (.21); y behind ry, masquerade (.22)
#   d e f   d and e cannot exchange UDP with each other; f relays
# Client names: on our server pa pb oc pg | pz | ox py | od oe pf; on
# PEER's server oa ob pc og | oz | px oy | pd pe of (p: PEER, o: ours; the
# second letter is the host).

. "$(dirname "$0")/lib.sh"
need_netns
[ -x "$CANDY" ] || { fail "candy is built"; exit 1; }
command -v turnserver >/dev/null 2>&1 || skip_all "no turnserver (coturn)"
command -v nft >/dev/null 2>&1 || skip_all "no nft"
command -v unshare >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 ||
    skip_all "no unshare/nsenter (util-linux)"

if [ -n "$PEER" ]; then
	_pp=$(command -v "$PEER" 2>/dev/null)
	[ -n "$_pp" ] && [ -x "$_pp" ] ||
	    { fail "PEER ($PEER) is an executable"; exit 1; }
	case $_pp in
	/*) PEER=$_pp ;;
	*) PEER=$(pwd)/$_pp ;;
	esac
	echo "# PEER: $PEER; ours: $CANDY"
else
	PEER=$CANDY
	echo "# PEER unset: our own binary in foreign mode ($PEER)"
fi

PW=secretpw
INET=198.51.100
SRV=$INET.1
OURS=ws://$SRV:8080
THEIRS=ws://$SRV:8081
STUN=stun://$SRV:3478
NO=172.31.0		# our server's network
NP=172.31.1		# PEER's server's network
NT=172.31.2		# our wss:// server's network
# Bounds of the waits, in seconds (the environment may raise them).
W_ADDR=${W_ADDR:-30}	# an address, from a (re)started client
W_PING=${W_PING:-30}	# a ping through a server, or to a LAN
W_P2P=${W_P2P:-120}	# a peer-to-peer link (retries 30 s apart)
W_ROUTE=${W_ROUTE:-180}	# a relay route (delays measured once a minute)

PEER_CA=		# peer_start: a trust store for the next PEER started

# ---- Checks that wait ----

# expect WHAT SECONDS cmd...: ok when cmd succeeds within SECONDS by the
# clock (cmd may take seconds itself), tried every 0.5 s; otherwise not ok,
# saying what it waited for, with the last try's output.  Comment lines of
# the successful try are shown.
expect() {
	_ex_what=$1
	_ex_secs=$2
	_ex_end=$(($(date +%s) + $2))
	shift 2
	while :; do
		if "$@" >"$T/expect.out" 2>&1; then
			grep '^# ' "$T/expect.out"
			ok "$_ex_what"
			return 0
		fi
		[ "$(date +%s)" -lt "$_ex_end" ] || break
		sleep 0.5
	done
	fail "$_ex_what"
	echo "# gave up after $_ex_secs s waiting for: $_ex_what"
	sed 's/^/#   /' "$T/expect.out" | tail -n 20
	return 1
}

# expect_if "NAME..." WHAT SECONDS cmd...: expect, if every client NAME got
# an address.
expect_if() {
	_ei_names=$1
	shift
	# shellcheck disable=SC2086
	need "$1" $_ei_names && expect "$@"
}

# addr NAME: client NAME's address as noted once it came up, in the
# variable of NAME in capitals (PA for pa).
addr() {
	eval "echo \"\${$(echo "$1" | tr '[:lower:]' '[:upper:]')}\""
}

# need WHAT NAME...: every client NAME got an address; otherwise WHAT
# fails at once (nothing to wait for).
need() {
	_ne_what=$1
	shift
	for _ne_n in "$@"; do
		if [ -z "$(addr "$_ne_n")" ]; then
			fail "$_ne_what (client $_ne_n has no address)"
			return 1
		fi
	done
}

# ---- PEER: only Candy 6.x options, state on a private tmpfs ----

# peer_args_ok ARGS...: every option is one all Candy 6.x programs have.
peer_args_ok() {
	while [ $# -gt 0 ]; do
		case $1 in
		-m | -w | -p | -d | --sdwan | -n | -t | -s | --port | --mtu | \
		    -r | --discovery | --localhost | -c)
			[ $# -ge 2 ] || return 1
			shift 2
			;;
		--no-timestamp | --debug)
			shift
			;;
		*)
			return 1
			;;
		esac
	done
}

# peer_mnt NAME NS [CA]: a process in NS holding a private mount namespace
# in which /var/lib/candy is a tmpfs of its own, for NAME's runs.  Where the
# machine has no /var/lib/candy to mount on, /var/lib is overlaid (in that
# namespace only) with a tmpfs upper layer that holds the mount point.
# With CA, that PEM file stands for the system's trust store there (bound
# over the usual bundle files that exist).
peer_mnt() {
	running "mnt-$1" && return 0
	mkdir -p "$T/mnt-$1"
	# shellcheck disable=SC2016
	proc_start "mnt-$1" "$2" unshare -m --propagation private sh -c '
	    set -e
	    if ! [ -d /var/lib/candy ]; then
		mount -t tmpfs tmpfs "$1"
		mkdir "$1/up" "$1/work"
		mount -t overlay overlay \
		    -o "lowerdir=/var/lib,upperdir=$1/up,workdir=$1/work" \
		    /var/lib || mount -t tmpfs tmpfs /var/lib
		mkdir -p /var/lib/candy
	    fi
	    mount -t tmpfs -o mode=0755 tmpfs /var/lib/candy
	    if [ -n "$2" ]; then
		for f in /etc/ssl/certs/ca-certificates.crt \
		    /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/ca-bundle.pem \
		    /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem \
		    /etc/ssl/cert.pem; do
			[ -f "$f" ] && mount --bind "$2" "$f" &&
			    echo "trust store: $f"
		done
	    fi
	    echo "ready: $(grep " /var/lib/candy " /proc/self/mountinfo)"
	    exec sleep 100000' sh "$T/mnt-$1" "$3"
	wait_log "mnt-$1" 10 '^ready: .* tmpfs '
}

# peer_start NAME NS ARGS...: PEER with ARGS in NS, in NAME's mount
# namespace; log $T/NAME.log.
peer_start() {
	_pe_name=$1
	_pe_ns=$2
	shift 2
	if ! peer_args_ok "$@"; then
		fail "this script gives PEER only Candy 6.x options ($*)"
		return 1
	fi
	if ! peer_mnt "$_pe_name" "$_pe_ns" "$PEER_CA"; then
		fail "a private /var/lib/candy (tmpfs) for PEER $_pe_name"
		return 1
	fi
	proc_start "$_pe_name" "$_pe_ns" nsenter -t "$(pid_of "mnt-$_pe_name")" \
	    -m -- "$PEER" "$@"
}

# peer_client NS NAME ARGS...: a PEER client with network name NAME.
peer_client() {
	_pc_ns=$1
	_pc_name=$2
	shift 2
	peer_start "$_pc_name" "$_pc_ns" -m client -n "$_pc_name" \
	    --no-timestamp --debug "$@"
}

# Both kinds take the same arguments: client KIND NS NAME ARGS...
client() {
	_cl_kind=$1
	shift
	if [ "$_cl_kind" = peer ]; then
		_cl_ns=$1
		_cl_name=$2
		shift 2
		peer_client "$_cl_ns" "$_cl_name" "$@"
	else
		candy_client "$@"
	fi
}

# ---- Counters (nft, table inet cnf) ----

# cnt_init NS: the table with input, output and prerouting chains.
cnt_init() {
	nsx "$1" nft -f - <<-EOF
	table inet cnf {
		chain in { type filter hook input priority 0; }
		chain out { type filter hook output priority 0; }
		chain pre { type filter hook prerouting priority -300; }
	}
	EOF
}

# cnt_add NS NAME CHAIN MATCH...: count packets matching MATCH in CHAIN
# (a counter may be fed by several rules).
cnt_add() {
	_ca_ns=$1
	_ca_name=$2
	_ca_chain=$3
	shift 3
	nsx "$_ca_ns" nft list counter inet cnf "$_ca_name" >/dev/null 2>&1 ||
	    nsx "$_ca_ns" nft add counter inet cnf "$_ca_name"
	nsx "$_ca_ns" nft add rule inet cnf "$_ca_chain" "$@" \
	    counter name "$_ca_name"
}

# cnt NS NAME: its packet count.
cnt() {
	nsx "$1" nft list counter inet cnf "$2" 2>/dev/null |
	    awk '{ for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'
}

# srv_cnt NAME PORT HOST...: on the servers' host, count the WebSocket
# packets between the server on PORT and the HOSTs that carry more than
# 400 bytes: relayed pings of 500 bytes, not keepalives or control
# messages.
srv_cnt() {
	_sc_name=$1
	_sc_port=$2
	shift 2
	for _sc_h in "$@"; do
		cnt_add srv "$_sc_name" in ip saddr "$_sc_h" \
		    tcp dport "$_sc_port" ip length gt 400
		cnt_add srv "$_sc_name" out ip daddr "$_sc_h" \
		    tcp sport "$_sc_port" ip length gt 400
	done
}

# bcast_cnt NS DEV NET: broadcast echo requests to NET.255 arriving on DEV.
bcast_cnt() {
	cnt_add "$1" "bc_$2" pre iifname "candy-$2" ip daddr "$3.255" \
	    icmp type echo-request
}

# ---- Pings ----

# pings NS DST COUNT SIZE: how many of COUNT pings of SIZE bytes, 0.2 s
# apart, were answered.
pings() {
	nsx "$1" ping -n -q -c "$3" -i 0.2 -W 1 -s "$4" "$2" 2>/dev/null |
	    awk '/received/ { print $4 }'
}

# quiet NS DST SRVCNT [RELAYNS RELAYCNT]: 10 pings of 500 bytes from NS to
# DST; at least 9 answered while the server counter SRVCNT grows by at most
# 2 (keepalives are smaller; a relay through the server would add 40), and
# with RELAYNS, its counter RELAYCNT grows by at least 20 (the relay's UDP).
quiet() {
	_qu_s0=$(cnt srv "$3")
	_qu_r0=0
	[ -n "$4" ] && _qu_r0=$(cnt "$4" "$5")
	_qu_got=$(pings "$1" "$2" 10 500)
	_qu_s1=$(cnt srv "$3")
	_qu_r1=0
	[ -n "$4" ] && _qu_r1=$(cnt "$4" "$5")
	echo "# $1 -> $2: ${_qu_got:-0} of 10 answered; through the" \
	    "server $_qu_s0 -> $_qu_s1 packets${4:+; relay $_qu_r0 -> $_qu_r1}"
	[ "${_qu_got:-0}" -ge 9 ] && [ $((_qu_s1 - _qu_s0)) -le 2 ] &&
	    { [ -z "$4" ] || [ $((_qu_r1 - _qu_r0)) -ge 20 ]; }
}

# crossing NS DST SRVCNT: 10 pings of 500 bytes from NS to DST through the
# server; at least 9 answered and the server counter SRVCNT sees them (at
# least 20 packets): the counters that show traffic *not* crossing the
# server do see it when it does.
crossing() {
	_cr_s0=$(cnt srv "$3")
	_cr_got=$(pings "$1" "$2" 10 500)
	_cr_s1=$(cnt srv "$3")
	echo "# $1 -> $2: ${_cr_got:-0} of 10 answered; through the" \
	    "server $_cr_s0 -> $_cr_s1 packets"
	[ "${_cr_got:-0}" -ge 9 ] && [ $((_cr_s1 - _cr_s0)) -ge 20 ]
}

# kick NS DST: three pings in the background: through the server they make
# the two clients start a peer-to-peer link.
kick() {
	nsx "$1" ping -n -q -c 3 -i 0.5 -W 2 "$2" >/dev/null 2>&1 &
}

# in_net NAME NET: client NAME has an address in NET.0/24.
in_net() {
	case "$(addr_of "$1")" in
	"$2".*) return 0 ;;
	*) return 1 ;;
	esac
}

# ---- The network ----

lan_add inet
ns_add srv
lan_join inet srv $SRV/24
_i=11
for h in a b c d e f g z; do
	ns_add $h
	lan_join inet $h $INET.$_i/24
	_i=$((_i + 1))
done
# a .11, b .12, c .13, d .14, e .15, f .16, g .17, z .18
D=$INET.14 E=$INET.15

# The LANs behind g.
ns_add lh
link g lh 192.168.50.1/24 192.168.50.2/24
nsx g ip addr add 192.168.51.1/24 dev v-lh
nsx lh ip addr add 192.168.51.2/24 dev v-g
nsx lh ip route add $NO.0/24 via 192.168.50.1
nsx lh ip route add $NP.0/24 via 192.168.51.1
sysctl_set g net.ipv4.ip_forward=1

# The NATs: rx 1:1 (endpoint-independent), ry masquerade.
for r in rx:21:x:10.0.2 ry:22:y:10.0.3; do
	IFS=: read -r rn rh cn cp <<-EOF
	$r
	EOF
	ns_add "$rn"
	lan_join inet "$rn" "$INET.$rh/24"
	sysctl_set "$rn" net.ipv4.ip_forward=1
	ns_add "$cn"
	link "$rn" "$cn" "$cp.1/24" "$cp.2/24"
	nsx "$cn" ip route add default via "$cp.1"
done
nsx rx nft -f - <<EOF
table ip nat {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "v-inet" ip daddr $INET.21 dnat to 10.0.2.2
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "v-inet" ip saddr 10.0.2.2 snat to $INET.21
	}
}
EOF
nsx ry nft -f - <<EOF
table ip nat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "v-inet" masquerade
	}
}
EOF

# d and e exchange no UDP with each other.
for p in d:$E e:$D; do
	nsx "${p%%:*}" nft -f - <<-EOF
	table inet cut {
		chain in {
			type filter hook input priority 0; policy accept;
			ip saddr ${p#*:} meta l4proto udp drop
		}
		chain out {
			type filter hook output priority 0; policy accept;
			ip daddr ${p#*:} meta l4proto udp drop
		}
	}
	EOF
done

# Counters: relayed pings through each server, per scenario.
cnt_init srv
srv_cnt p2p_o 8080 $INET.21 $INET.22
srv_cnt p2p_p 8081 $INET.21 $INET.22
srv_cnt rel_o 8080 $D $E
srv_cnt rel_p 8081 $D $E
srv_cnt mix_o 8080 $INET.11 $INET.13
srv_cnt mix_p 8081 $INET.11 $INET.13
# The relays' UDP on f: ours on port 5001, PEER's on 5002.
cnt_init f
for port in 5001 5002; do
	cnt_add f "udp$port" in udp dport $port
	cnt_add f "udp$port" out udp sport $port
done

# ---- Servers ----

proc_start stun srv turnserver -n --listening-ip=$SRV --listening-port=3478 \
    --stun-only --no-cli --no-tls --no-dtls --simple-log \
    --log-file="$T/turnserver.log" --pidfile="$T/turnserver.pid" \
    --userdb="$T/turndb"
candy_server srv srv -w ws://0.0.0.0:8080 -p $PW -d $NO.0/24 \
    --sdwan "$NO.0/24,192.168.50.0/24,$NO.50"
peer_start psrv srv -m server -w ws://0.0.0.0:8081 -p $PW -d $NP.0/24 \
    --sdwan "$NP.0/24,192.168.51.0/24,$NP.50" --no-timestamp --debug
check "our server listens" wait_listening srv
# wss://: a self-signed certificate for the server's address.
TLS=
if command -v openssl >/dev/null 2>&1 &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -days 30 -subj "/CN=$SRV" -addext "subjectAltName=IP:$SRV" \
    -keyout "$T/tls.key" -out "$T/tls.pem" >"$T/openssl.log" 2>&1; then
	TLS=1
	candy_server srv srvt -w wss://0.0.0.0:8443 -p $PW -d $NT.0/24 \
	    --cert "$T/tls.pem" --key "$T/tls.key"
	check "our wss:// server listens" wait_listening srvt
else
	echo "# no certificate (openssl): the wss:// scenario is skipped"
fi
expect "PEER's server listens on :8081" 20 \
    eval 'nsx srv ss -Hltn "sport = :8081" | grep -q .'

# ---- Clients: every scenario's at once, so slow timers run together ----

# Relay, broadcast, restart, SD-WAN.
client peer a pa -w $OURS -p $PW
client peer b pb -w $OURS -p $PW
client ours c oc -w $OURS -p $PW
client peer g pg -w $OURS -p $PW -t $NO.50/24
client ours a oa -w $THEIRS -p $PW
client ours b ob -w $THEIRS -p $PW
client peer c pc -w $THEIRS -p $PW
client ours g og -w $THEIRS -p $PW -t $NP.50/24
# Wrong passwords.
client peer z pz -w $OURS -p wrong-$PW
client ours z oz -w $THEIRS -p wrong-$PW
# Peer-to-peer through the NATs.
client ours x ox -w $OURS -p $PW -s $STUN
client peer y py -w $OURS -p $PW -s $STUN
client peer x px -w $THEIRS -p $PW -s $STUN
client ours y oy -w $THEIRS -p $PW -s $STUN
# Peer relay.
client ours d od -w $OURS -p $PW -s $STUN -r 5
client ours e oe -w $OURS -p $PW -s $STUN -r 5
client peer f pf -w $OURS -p $PW -s $STUN -r 5 --port 5002
client peer d pd -w $THEIRS -p $PW -s $STUN -r 5
client peer e pe -w $THEIRS -p $PW -s $STUN -r 5
client ours f of -w $THEIRS -p $PW -s $STUN -r 5 --port 5001
# wss://, the PEER client trusting the certificate through its system
# store (in its mount namespace).
if [ -n "$TLS" ]; then
	PEER_CA=$T/tls.pem
	client peer z pt -w wss://$SRV:8443 -p $PW
	PEER_CA=
	client ours g ot -w wss://$SRV:8443 -p $PW --ca "$T/tls.pem"
fi

# ---- 1. Relay through the server ----

S1o="relay [our server, PEER clients]"
S1p="relay [PEER's server, our clients]"
for n in pa pb; do
	expect "$S1o: PEER client $n gets an address in $NO.0/24" $W_ADDR \
	    in_net $n $NO
done
expect "$S1o: our client oc gets an address in $NO.0/24" $W_ADDR \
    in_net oc $NO
for n in oa ob; do
	expect "$S1p: our client $n gets an address in $NP.0/24" $W_ADDR \
	    in_net $n $NP
done
expect "$S1p: PEER client pc gets an address in $NP.0/24" $W_ADDR \
    in_net pc $NP
# The other scenarios' clients: one wait for all (their own checks fail
# at once on a client without an address).
all_addr() {
	for _aa in "$@"; do
		[ -n "$(addr_of "$_aa")" ] || return 1
	done
}
_rest="pg og ox py px oy od oe pf pd pe of"
_end=$(($(date +%s) + W_ADDR))
# shellcheck disable=SC2086
until all_addr $_rest || [ "$(date +%s)" -ge $_end ]; do
	sleep 0.5
done
for n in $_rest; do
	[ -n "$(addr_of $n)" ] || echo "# no address for $n after $W_ADDR s"
done
PA=$(addr_of pa) PB=$(addr_of pb) OC=$(addr_of oc) PG=$(addr_of pg)
OA=$(addr_of oa) OB=$(addr_of ob) PC=$(addr_of pc) OG=$(addr_of og)
OX=$(addr_of ox) PY=$(addr_of py) PX=$(addr_of px) OY=$(addr_of oy)
OD=$(addr_of od) OE=$(addr_of oe) PF=$(addr_of pf)
PD=$(addr_of pd) PE=$(addr_of pe) OF=$(addr_of of)
echo "# our server: pa $PA pb $PB oc $OC pg $PG ox $OX py $PY od $OD oe $OE pf $PF"
echo "# PEER's server: oa $OA ob $OB pc $PC og $OG px $PX oy $OY pd $PD pe $PE of $OF"
check "$S1o: distinct addresses" \
    eval '[ -n "$PA" ] && [ "$PA" != "$PB" ] && [ "$PA" != "$OC" ] &&
    [ "$PB" != "$OC" ]'
check "$S1p: distinct addresses" \
    eval '[ -n "$OA" ] && [ "$OA" != "$OB" ] && [ "$OA" != "$PC" ] &&
    [ "$OB" != "$PC" ]'

# Start the peer-to-peer links and relays now: their timers run while the
# relay checks go on.
kick x "$PY"		# ox - py
kick y "$PX"		# oy - px
kick d "$PF"		# od - pf
kick e "$PF"		# oe - pf
kick d "$OE"		# od - oe
kick f "$PD"		# of - pd
kick f "$PE"		# of - pe
kick d "$PE"		# pd - pe

# pair SCENARIO A B: client A pings client B's address (see addr).
pair() {
	_pr_b=$(addr "$3")
	_pr_what="$1: $(kind "$2") $2 pings $(kind "$3") $3"
	need "$_pr_what" "$2" "$3" &&
	    expect "$_pr_what" $W_PING ping_ok "$(ns_of "$2")" "$_pr_b" 1
}

# kind NAME: "PEER" or "our" client, from the first letter of its name.
kind() {
	case $1 in
	p*) echo PEER ;;
	*) echo our ;;
	esac
}

pair "$S1o" pa pb
pair "$S1o" pb pa
pair "relay [our server, mixed pair]" pa oc
pair "relay [our server, mixed pair]" oc pa
pair "$S1p" oa ob
pair "$S1p" ob oa
pair "relay [PEER's server, mixed pair]" oa pc
pair "relay [PEER's server, mixed pair]" pc oa
# The counters of scenarios 4 and 5 count what crosses the servers: they
# see relayed pings.
_w="relay [our server, mixed pair]: the server-side counter sees 500-byte pings from pa to oc"
need "$_w" pa oc && expect "$_w" $W_PING crossing a "$OC" mix_o
_w="relay [PEER's server, mixed pair]: the server-side counter sees 500-byte pings from pc to oa"
need "$_w" pc oa && expect "$_w" $W_PING crossing c "$OA" mix_p

# Broadcast: echo requests to NET.255 counted where they arrive.
for h in a b c; do
	cnt_init $h
done
bcast_cnt a pa $NO
bcast_cnt b pb $NO
bcast_cnt c oc $NO
bcast_cnt a oa $NP
bcast_cnt b ob $NP
bcast_cnt c pc $NP

# bcast_seen FROM NET TO: one broadcast ping from FROM to NET.255; TO has
# seen one.
bcast_seen() {
	nsx "$(ns_of "$1")" ping -n -b -q -c 1 -W 1 "$2.255" >/dev/null 2>&1
	[ "$(cnt "$(ns_of "$3")" "bc_$3")" -ge 1 ]
}

# bcast SCENARIO FROM NET TO...: FROM broadcasts to NET.255; each TO sees it.
bcast() {
	_bc_s=$1
	_bc_from=$2
	_bc_net=$3
	shift 3
	for _bc_to in "$@"; do
		_bc_what="$_bc_s: a broadcast from $(kind "$_bc_from") $_bc_from to $_bc_net.255 reaches $(kind "$_bc_to") $_bc_to"
		need "$_bc_what" "$_bc_from" "$_bc_to" &&
		    expect "$_bc_what" 10 bcast_seen "$_bc_from" "$_bc_net" "$_bc_to"
	done
	for _bc_to in "$@"; do
		nsx "$(ns_of "$_bc_to")" nft reset counter inet cnf \
		    "bc_$_bc_to" >/dev/null 2>&1
	done
}
bcast "relay [our server]" pa $NO pb oc
bcast "relay [our server]" oc $NO pa pb
bcast "relay [PEER's server]" oa $NP ob pc
bcast "relay [PEER's server]" pc $NP oa ob

# restart SCENARIO NAME ARGS...: NAME stops and starts again with ARGS; it
# gets the same address back and pings PEER.
restart() {
	_rs_s=$1
	_rs_name=$2
	_rs_kind=$(kind "$2")
	_rs_ns=$(ns_of "$2")
	_rs_was=$(addr_of "$2")
	shift 2
	need "$_rs_s: $_rs_kind client $_rs_name restarts" "$_rs_name" ||
	    return 1
	stop "$_rs_name"
	if [ "$_rs_kind" = PEER ]; then
		client peer "$_rs_ns" "$_rs_name" "$@"
	else
		client ours "$_rs_ns" "$_rs_name" "$@"
	fi
	expect "$_rs_s: $_rs_kind client $_rs_name keeps its address $_rs_was across a restart" \
	    $W_ADDR eval "[ \"\$(addr_of $_rs_name)\" = '$_rs_was' ]"
}
# pa comes back configured by a file (-c, Candy's key = value format).
cat >"$T/pa.cfg" <<EOF
# Candy configuration file
websocket = "$OURS"
password = "$PW"
EOF
restart "relay [our server, pa configured by -c FILE]" pa -c "$T/pa.cfg"
pair "relay [our server, after pa's restart]" pa oc
restart "relay [our server]" oc -w $OURS -p $PW
pair "relay [our server, after oc's restart]" oc pa
restart "relay [PEER's server]" oa -w $THEIRS -p $PW
pair "relay [PEER's server, after oa's restart]" oa pc
restart "relay [PEER's server]" pc -w $THEIRS -p $PW
pair "relay [PEER's server, after pc's restart]" pc oa

# ---- 2. Authentication ----

S2o="auth [our server, PEER client]"
S2p="auth [PEER's server, our client]"
# "No address" counts only once the refusal was seen.
expect "$S2o: a wrong password is refused (our server's log)" 20 \
    log_has srv 'refused authentication.*wrong password' &&
    check "$S2o: the refused PEER client gets no address" \
    eval '[ -z "$(addr_of pz)" ]'
# Our client logs that the server closed the connection, before granting
# an address (a server that does not listen gives "refused" instead).
expect "$S2p: a wrong password is refused (our client's log)" 20 \
    log_has oz 'closed the connection' &&
    check "$S2p: the refused client gets no address" \
    eval '[ -z "$(addr_of oz)" ]'
stop pz
stop oz

# ---- 3. SD-WAN ----

S3o="sdwan [our server]"
S3p="sdwan [PEER's server]"
check "$S3o: PEER gateway pg has its static address $NO.50" [ "$PG" = $NO.50 ]
check "$S3p: our gateway og has its static address $NP.50" [ "$OG" = $NP.50 ]
# has_route NAME DST: NAME's host routes DST through NAME's device.
has_route() {
	nsx "$(ns_of "$1")" ip route show "$2" | grep -q "dev candy-$1"
}
for n in pa pb oc; do
	expect_if $n "$S3o: $(kind $n) client $n gets the route to 192.168.50.0/24" \
	    $W_ADDR has_route $n 192.168.50.0/24
done
for n in oa ob pc; do
	expect_if $n "$S3p: $(kind $n) client $n gets the route to 192.168.51.0/24" \
	    $W_ADDR has_route $n 192.168.51.0/24
done
expect_if "oc pg" "$S3o: our client oc reaches 192.168.50.2 behind PEER gateway pg" \
    $W_PING ping_ok c 192.168.50.2 1
expect_if "pb pg" "$S3o: PEER client pb reaches 192.168.50.2 behind PEER gateway pg" \
    $W_PING ping_ok b 192.168.50.2 1
expect_if "pc og" "$S3p: PEER client pc reaches 192.168.51.2 behind our gateway og" \
    $W_PING ping_ok c 192.168.51.2 1
expect_if "ob og" "$S3p: our client ob reaches 192.168.51.2 behind our gateway og" \
    $W_PING ping_ok b 192.168.51.2 1

# ---- 4. Peer-to-peer through NATs, with STUN ----

# Our client's log says when the link is up; every try that finds it not
# up yet sends a ping through the server, which (re)starts the attempt.
# linked NAME PEERADDR ENDPOINT NS: NAME logged a link to PEERADDR via
# ENDPOINT (a regex); if not, one ping from NS to PEERADDR.
linked() {
	log_has "$1" "peer $2 connected via $3" && return 0
	ping_ok "$4" "$2" 1
	return 1
}

S4o="p2p [our server, ours ox behind a 1:1 NAT, PEER py behind masquerade]"
S4p="p2p [PEER's server, PEER px behind a 1:1 NAT, ours oy behind masquerade]"
expect_if "ox py" "$S4o: our client ox connects to PEER py (ox's log)" \
    $W_P2P linked ox "$PY" "$INET\.22:" x
expect_if "ox py" "$S4o: ours -> PEER, pings stop crossing the server" \
    $W_P2P quiet x "$PY" p2p_o
expect_if "ox py" "$S4o: PEER -> ours, pings stop crossing the server" \
    $W_P2P quiet y "$OX" p2p_o
expect_if "oy px" "$S4p: our client oy connects to PEER px (oy's log)" \
    $W_P2P linked oy "$PX" "$INET\.21:" y
expect_if "oy px" "$S4p: ours -> PEER, pings stop crossing the server" \
    $W_P2P quiet y "$PX" p2p_p
expect_if "oy px" "$S4p: PEER -> ours, pings stop crossing the server" \
    $W_P2P quiet x "$OY" p2p_p

# ---- 5. Peer relay ----

S5o="peer relay [our server, PEER pf relays between ours od and oe]"
S5p="peer relay [PEER's server, ours of relays between PEER pd and pe]"
expect_if "od pf" "$S5o: od connects to PEER pf (od's log)" \
    $W_P2P linked od "$PF" "$INET\.16:5002" d
expect_if "oe pf" "$S5o: oe connects to PEER pf (oe's log)" \
    $W_P2P linked oe "$PF" "$INET\.16:5002" e
expect_if "od oe pf" "$S5o: od pings oe through pf, nothing through the server" \
    $W_ROUTE quiet d "$OE" rel_o f udp5002
expect_if "od oe pf" "$S5o: oe pings od through pf, nothing through the server" \
    $W_ROUTE quiet e "$OD" rel_o f udp5002
expect_if "of pd" "$S5p: of connects to PEER pd (of's log)" \
    $W_P2P linked of "$PD" "$D:" f
expect_if "of pe" "$S5p: of connects to PEER pe (of's log)" \
    $W_P2P linked of "$PE" "$E:" f
expect_if "pd pe of" "$S5p: pd pings pe through of, nothing through the server" \
    $W_ROUTE quiet d "$PE" rel_p f udp5001
expect_if "pd pe of" "$S5p: pe pings pd through of, nothing through the server" \
    $W_ROUTE quiet e "$PD" rel_p f udp5001

# ---- 6. wss:// ----

# PEER's server has no TLS option among the Candy 6.x ones: ours only.
if [ -n "$TLS" ]; then
	S6="wss [our server, PEER client trusting the certificate]"
	expect "$S6: PEER client pt gets an address in $NT.0/24" $W_ADDR \
	    in_net pt $NT
	expect "$S6: our client ot gets an address in $NT.0/24" $W_ADDR \
	    in_net ot $NT
	# shellcheck disable=SC2034	# read by addr
	PT=$(addr_of pt) OT=$(addr_of ot)
	pair "$S6" pt ot
	pair "$S6" ot pt
fi

exit 0
