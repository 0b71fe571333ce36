#!/bin/sh
# bench-peers.sh: the "peers" section of make bench (sourced by
# test/bench.sh), or alone: make bench-peers (sh test/bench-peers.sh).
#
# candy beside other VPNs, in one run and one lab: namespaces qh (the
# server or hub), qa and qb on one bridge (10.79.0.0/24), every tunnel up
# at once, each on its own subnet:
#
#   raw veth            qa -> qb on the bridge itself: the lab's limit
#   candy relay ws      ws:// server in qh, clients without STUN (10.90.5/24)
#   candy relay wss     the same over wss:// (EC P-256 certificate; 10.90.6/24)
#   candy P2P           clients with STUN (coturn in qh): AES-256-GCM over
#                       UDP straight between qa and qb (10.90.7/24)
#   wireguard-go P2P    ChaCha20-Poly1305 (10.90.1/24)
#   OpenVPN UDP P2P     TLS mode, AES-256-GCM data channel (10.90.2/24)
#   tinc 1.0 P2P        router mode, aes-256-cbc + HMAC-SHA256 (10.90.4/24)
#   OpenVPN TCP hub     server in qh with client-to-client and tcp-nodelay:
#                       the relay to compare candy's with (10.90.3/24)
#
# OpenVPN 2.6 calls its pre-shared key mode (--secret) deprecated and it
# has no AEAD cipher, so both OpenVPN cases use TLS with a throwaway EC
# PKI made with openssl, data channel AES-256-GCM, and --disable-dco so
# that it runs in user space like every other case.  tinc 1.0 has no GCM:
# aes-256-cbc with HMAC-SHA256 is the nearest it has.
#
# Each round measures every case in turn (rounds interleave, so a busy
# moment of the shared machine falls on all cases alike); per case: 10
# idle pings (0.2 s apart), then iperf3 TCP qa -> qb for BENCH_SECONDS
# (default 10) with pings (0.2 s apart) during it; CPU is the user+system
# time of every process of the tunnel (/proc/PID/stat) over the transfer,
# per GB received.  The table holds the medians of BENCH_ROUNDS (default 3)
# and ratios against the best peer: the non-candy P2P case with the
# highest median throughput.  It is printed and written to PEERS_RESULTS
# (default bench/results.md) with the machine and the commit.
#
# Quick mode for development: BENCH_ROUNDS=1 BENCH_SECONDS=3
# PEERS_RESULTS=/tmp/peers.md make bench-peers.  PEERS_CASES chooses cases.
#
# The peers are Debian's (wireguard-go, wireguard-tools, openvpn, tinc),
# installed by make bench through test/deps.sh.  Keys and configurations
# go to the run's temporary directory; wireguard-go's control socket goes
# to a tmpfs over /run in a mount namespace of its own; nothing else is
# written outside the namespaces, and lib.sh's cleanup ends every process
# in them and deletes them on exit or interruption.

PEERS_ROUNDS=${BENCH_ROUNDS:-3}
PEERS_SECONDS=${BENCH_SECONDS:-10}
PEERS_CASES=${PEERS_CASES:-raw candy_ws candy_wss candy_p2p wg ovpn_udp \
tinc ovpn_tcp}
PEERS_RESULTS=${PEERS_RESULTS:-$ROOT/bench/results.md}

# peers_label CASE: the row's name.
peers_label() {
	case "$1" in
	raw) echo "raw veth (the lab's limit)" ;;
	candy_ws) echo "candy relay ws" ;;
	candy_wss) echo "candy relay wss" ;;
	candy_p2p) echo "candy P2P" ;;
	wg) echo "wireguard-go P2P" ;;
	ovpn_udp) echo "OpenVPN 2.6 UDP P2P" ;;
	tinc) echo "tinc 1.0 P2P" ;;
	ovpn_tcp) echo "OpenVPN 2.6 TCP hub (relay)" ;;
	esac
}

# peers_ready CASE DST PID...: CASE is measured with iperf3 to DST; the
# PIDs are its tunnel processes.
peers_ready() {
	_pr_case=$1
	echo "$2" >"$T/peers-$_pr_case.dst"
	shift 2
	echo "$*" >"$T/peers-$_pr_case.pids"
	echo "#   $(peers_label "$_pr_case"): ready, iperf3 to $(cat \
	    "$T/peers-$_pr_case.dst")"
}

peers_skip() {
	echo "#   $(peers_label "$1"): skipped: $2"
	echo "$2" >"$T/peers-$1.skip"
}

# ---- The cases' setups ----

peers_setup_raw() {
	peers_ready raw 10.79.0.3
}

# peers_candy CASE NAME URI [client options]: a candy server NAME in qh,
# clients NAMEa in qa and NAMEb in qb.  Servers and clients log at info.
peers_candy() {
	_pc_case=$1
	_pc_n=$2
	_pc_uri=$3
	shift 3
	wait_listening "$_pc_n" ||
	    { peers_skip "$_pc_case" "the server did not start"; return 1; }
	candy_client qa "${_pc_n}a" -w "$_pc_uri" -p benchpw "$@" \
	    --localhost 10.79.0.2
	candy_client qb "${_pc_n}b" -w "$_pc_uri" -p benchpw "$@" \
	    --localhost 10.79.0.3
	if ! wait_addr "${_pc_n}a" 15 || ! wait_addr "${_pc_n}b" 15; then
		peers_skip "$_pc_case" "the clients got no address"
		return 1
	fi
	_pc_b=$(addr_of "${_pc_n}b")
	if ! wait_until 10 ping_ok qa "$_pc_b" 1; then
		peers_skip "$_pc_case" "no ping through the tunnel"
		return 1
	fi
	PEERS_CANDY_DST=$_pc_b
	PEERS_CANDY_PIDS="$(pid_of "$_pc_n") $(pid_of "${_pc_n}a")
$(pid_of "${_pc_n}b")"
}

peers_setup_candy_ws() {
	candy_server qh kws -w ws://0.0.0.0:8081 -p benchpw -d 10.90.5.0/24
	peers_candy candy_ws kws ws://10.79.0.1:8081 || return
	peers_ready candy_ws "$PEERS_CANDY_DST" $PEERS_CANDY_PIDS
}

peers_setup_candy_wss() {
	_pw_k=$T/peers-keys
	if ! openssl ecparam -name prime256v1 -genkey -out "$_pw_k/wss.key" \
	    2>/dev/null || ! openssl req -x509 -new -key "$_pw_k/wss.key" \
	    -subj /CN=candy.test -days 2 -out "$_pw_k/wss.pem"; then
		peers_skip candy_wss "openssl made no certificate"
		return
	fi
	_pw_pin=$(openssl x509 -in "$_pw_k/wss.pem" -pubkey -noout |
	    openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)
	candy_server qh kwss -w wss://0.0.0.0:8444 --cert "$_pw_k/wss.pem" \
	    --key "$_pw_k/wss.key" -p benchpw -d 10.90.6.0/24
	peers_candy candy_wss kwss wss://10.79.0.1:8444 --pin "$_pw_pin" ||
	    return
	peers_ready candy_wss "$PEERS_CANDY_DST" $PEERS_CANDY_PIDS
}

peers_setup_candy_p2p() {
	if ! command -v turnserver >/dev/null 2>&1; then
		peers_skip candy_p2p "coturn is missing (make deps)"
		return
	fi
	proc_start kturn qh turnserver --listening-ip=10.79.0.1 \
	    --listening-port=3478 --stun-only --no-cli --no-tls --no-dtls \
	    --log-file=stdout --pidfile="$T/peers-turn.pid" \
	    --userdb="$T/turndb"
	candy_server qh kp2p -w ws://0.0.0.0:8082 -p benchpw -d 10.90.7.0/24
	peers_candy candy_p2p kp2p ws://10.79.0.1:8082 \
	    -s stun://10.79.0.1 || return
	if ! wait_log kp2pa 20 "peer $PEERS_CANDY_DST connected via"; then
		peers_skip candy_p2p "the peers did not connect over UDP"
		return
	fi
	peers_ready candy_p2p "$PEERS_CANDY_DST" $PEERS_CANDY_PIDS
}

# wireguard-go keeps its control socket in /var/run/wireguard, so each
# runs in a mount namespace of its own (unshare -m, private) with a tmpfs
# over /run: wg configures it there and nothing lands in the host's /run.
# The shell stays as the namespace's anchor; wireguard-go's pid goes to
# $T/peers-wg-SIDE.pid.
peers_wg_start() {
	_pg_side=$1
	_pg_addr=$2
	_pg_peer=$3
	_pg_k=$T/peers-keys
	cat >"$_pg_k/wg-$_pg_side.sh" <<EOF
mount -t tmpfs -o size=1m,mode=0755 peers-wg /run || exit 1
WG_PROCESS_FOREGROUND=1 wireguard-go -f wgq &
echo \$! >'$T/peers-wg-$_pg_side.pid'
n=50
while [ ! -S /run/wireguard/wgq.sock ] && [ \$n -gt 0 ]; do
	sleep 0.1
	n=\$((n - 1))
done
wg set wgq private-key '$_pg_k/wg-$_pg_side.key' listen-port 51820 \
    peer "\$(cat '$_pg_k/wg-$_pg_peer.pub')" \
    endpoint 10.79.0.$([ "$_pg_side" = a ] && echo 3 || echo 2):51820 \
    allowed-ips 10.90.1.0/24 || exit 1
ip addr add $_pg_addr/24 dev wgq && ip link set wgq up || exit 1
echo up
wait
EOF
	proc_start "wg$_pg_side" "q$_pg_side" unshare -m --propagation private \
	    sh "$_pg_k/wg-$_pg_side.sh"
}

peers_setup_wg() {
	if ! command -v wireguard-go >/dev/null 2>&1 ||
	    ! command -v wg >/dev/null 2>&1; then
		peers_skip wg "wireguard-go or wg is missing"
		return
	fi
	_pg_k=$T/peers-keys
	for _pg_s in a b; do
		(umask 077 && wg genkey >"$_pg_k/wg-$_pg_s.key") &&
		    wg pubkey <"$_pg_k/wg-$_pg_s.key" >"$_pg_k/wg-$_pg_s.pub" ||
		    { peers_skip wg "wg genkey failed"; return; }
	done
	peers_wg_start a 10.90.1.1 b
	peers_wg_start b 10.90.1.2 a
	if ! wait_log wga 10 '^up$' || ! wait_log wgb 10 '^up$'; then
		peers_skip wg "wireguard-go did not come up"
		return
	fi
	if ! wait_until 10 ping_ok qa 10.90.1.2 1; then
		peers_skip wg "no ping through the tunnel"
		return
	fi
	peers_ready wg 10.90.1.2 "$(cat "$T/peers-wg-a.pid")" \
	    "$(cat "$T/peers-wg-b.pid")"
}

# peers_pki: a CA and certificates for the hub (server), a and b.
peers_pki() {
	_pk=$T/peers-keys
	[ -e "$_pk/ca.pem" ] && return 0
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
	    -nodes -keyout "$_pk/ca.key" -out "$_pk/ca.pem" -subj /CN=bench-ca \
	    -days 2 2>/dev/null || return 1
	for _pk_n in server a b; do
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		    -nodes -keyout "$_pk/$_pk_n.key" -out "$_pk/$_pk_n.csr" \
		    -subj "/CN=$_pk_n" 2>/dev/null &&
		    openssl x509 -req -in "$_pk/$_pk_n.csr" -CA "$_pk/ca.pem" \
		    -CAkey "$_pk/ca.key" -CAcreateserial -days 2 \
		    -out "$_pk/$_pk_n.pem" 2>/dev/null || return 1
	done
}

# peers_ovpn NAME NS KEYNAME options...: an OpenVPN process in user space
# with the run's PKI and an AES-256-GCM data channel.
peers_ovpn() {
	_po_name=$1
	_po_ns=$2
	_po_kn=$3
	shift 3
	_pk=$T/peers-keys
	proc_start "$_po_name" "$_po_ns" openvpn --dev-type tun \
	    --ca "$_pk/ca.pem" --cert "$_pk/$_po_kn.pem" \
	    --key "$_pk/$_po_kn.key" --data-ciphers AES-256-GCM \
	    --disable-dco --verb 3 "$@"
}

peers_setup_ovpn_udp() {
	command -v openvpn >/dev/null 2>&1 ||
	    { peers_skip ovpn_udp "openvpn is missing"; return; }
	peers_pki || { peers_skip ovpn_udp "openssl made no PKI"; return; }
	peers_ovpn ovua qa a --dev ovu --proto udp --port 1194 \
	    --remote 10.79.0.3 --ifconfig 10.90.2.1 10.90.2.2 \
	    --tls-server --dh none
	peers_ovpn ovub qb b --dev ovu --proto udp --port 1194 \
	    --remote 10.79.0.2 --ifconfig 10.90.2.2 10.90.2.1 --tls-client
	if ! wait_log ovua 20 'Initialization Sequence Completed' ||
	    ! wait_log ovub 20 'Initialization Sequence Completed'; then
		peers_skip ovpn_udp "the OpenVPN peers did not connect"
		return
	fi
	grep -q "AES-256-GCM" "$(log_of ovub)" ||
	    echo "#   OpenVPN UDP: no AES-256-GCM in the log"
	peers_ready ovpn_udp 10.90.2.2 "$(pid_of ovua)" "$(pid_of ovub)"
}

peers_setup_ovpn_tcp() {
	command -v openvpn >/dev/null 2>&1 ||
	    { peers_skip ovpn_tcp "openvpn is missing"; return; }
	peers_pki || { peers_skip ovpn_tcp "openssl made no PKI"; return; }
	peers_ovpn ovth qh server --dev ovt --proto tcp-server --port 1195 \
	    --server 10.90.3.0 255.255.255.0 --topology subnet \
	    --client-to-client --tcp-nodelay --dh none
	wait_log ovth 20 'Initialization Sequence Completed' ||
	    { peers_skip ovpn_tcp "the OpenVPN hub did not start"; return; }
	peers_ovpn ovta qa a --client --dev ovt --proto tcp-client \
	    --remote 10.79.0.1 1195 --nobind
	peers_ovpn ovtb qb b --client --dev ovt --proto tcp-client \
	    --remote 10.79.0.1 1195 --nobind
	if ! wait_log ovta 20 'Initialization Sequence Completed' ||
	    ! wait_log ovtb 20 'Initialization Sequence Completed'; then
		peers_skip ovpn_tcp "the OpenVPN clients did not connect"
		return
	fi
	_pt_b=$(ip -n "$(ns qb)" -4 -o addr show dev ovt |
	    awk '{ sub("/.*", "", $4); print $4; exit }')
	if [ -z "$_pt_b" ] || ! wait_until 10 ping_ok qa "$_pt_b" 1; then
		peers_skip ovpn_tcp "no ping through the hub"
		return
	fi
	peers_ready ovpn_tcp "$_pt_b" "$(pid_of ovth)" "$(pid_of ovta)" \
	    "$(pid_of ovtb)"
}

# peers_tinc_conf SIDE ADDR: tinc 1.0's directory for node qSIDE, its RSA
# key made by tincd -K itself.
peers_tinc_conf() {
	_tc=$T/peers-keys/tinc-$1
	mkdir -p "$_tc/hosts" || return 1
	{
		echo "Name = q$1"
		echo "Interface = tincq"
		echo "AddressFamily = ipv4"
		[ "$1" = a ] && echo "ConnectTo = qb"
	} >"$_tc/tinc.conf"
	{
		echo "Address = 10.79.0.$([ "$1" = a ] && echo 2 || echo 3)"
		echo "Subnet = $2/32"
		echo "Cipher = aes-256-cbc"
		echo "Digest = sha256"
	} >"$_tc/hosts/q$1"
	printf '#!/bin/sh\nip addr add %s/24 dev "$INTERFACE" &&\n%s\n' \
	    "$2" 'ip link set "$INTERFACE" up' >"$_tc/tinc-up"
	chmod 755 "$_tc/tinc-up"
	tincd -c "$_tc" -K2048 </dev/null >"$_tc/keygen.log" 2>&1
}

peers_setup_tinc() {
	command -v tincd >/dev/null 2>&1 ||
	    { peers_skip tinc "tincd is missing"; return; }
	if ! peers_tinc_conf a 10.90.4.1 || ! peers_tinc_conf b 10.90.4.2; then
		peers_skip tinc "tincd -K failed"
		return
	fi
	_pt_k=$T/peers-keys
	cp "$_pt_k/tinc-a/hosts/qa" "$_pt_k/tinc-b/hosts/qa" &&
	    cp "$_pt_k/tinc-b/hosts/qb" "$_pt_k/tinc-a/hosts/qb" || return
	for _pt_s in a b; do
		proc_start "tinc$_pt_s" "q$_pt_s" tincd -c "$_pt_k/tinc-$_pt_s" \
		    -D -d1 --pidfile="$_pt_k/tinc-$_pt_s.pid"
	done
	if ! wait_until 20 ping_ok qa 10.90.4.2 1; then
		peers_skip tinc "no ping through the tunnel"
		return
	fi
	peers_ready tinc 10.90.4.2 "$(pid_of tinca)" "$(pid_of tincb)"
}

# ---- Measuring ----

# peers_cpu PID...: user+system clock ticks of the PIDs (all threads).
peers_cpu() {
	for _pc_p in "$@"; do
		sed 's/.*) //' "/proc/$_pc_p/stat" 2>/dev/null
	done | awk '{ t += $12 + $13 } END { print t + 0 }'
}

# peers_ping_avg FILE: ping's average round trip, ms ("?" without one).
peers_ping_avg() {
	_pa=$(awk -F/ '/^rtt|^round-trip/ { print $5 }' "$1")
	echo "${_pa:-?}"
}

# peers_measure CASE: one round of CASE, a line "CASE mbit cpu_s_per_gb
# ping_idle ping_load loss_load" to $T/peers.data.
peers_measure() {
	_pm_case=$1
	_pm_dst=$(cat "$T/peers-$_pm_case.dst")
	_pm_pids=$(cat "$T/peers-$_pm_case.pids")
	nsx qa ping -n -q -c 10 -i 0.2 -W 2 "$_pm_dst" >"$T/peers-ping.out" 2>&1
	_pm_idle=$(peers_ping_avg "$T/peers-ping.out")
	# The loaded pings start 1 s into the transfer and end before it.
	_pm_n=$(((PEERS_SECONDS - 2) * 5))
	[ "$_pm_n" -ge 3 ] || _pm_n=3
	(sleep 1; nsx qa ping -n -q -c "$_pm_n" -i 0.2 -W 2 "$_pm_dst") \
	    >"$T/peers-pingl.out" 2>&1 &
	_pm_ping=$!
	_pm_c0=$(peers_cpu $_pm_pids)
	nsx qa iperf3 -c "$_pm_dst" -t "$PEERS_SECONDS" -f m \
	    >"$T/peers-iperf3.out" 2>&1
	_pm_c1=$(peers_cpu $_pm_pids)
	wait "$_pm_ping"
	_pm_load=$(peers_ping_avg "$T/peers-pingl.out")
	_pm_loss=$(sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p' \
	    "$T/peers-pingl.out")
	_pm_mbit=$(awk '/receiver/ { for (i = 1; i < NF; i++)
	    if ($(i + 1) == "Mbits/sec") v = $i } END { print v }' \
	    "$T/peers-iperf3.out")
	if [ -z "$_pm_mbit" ]; then
		echo "#   $(peers_label "$_pm_case"): iperf3 failed:"
		tail -n 3 "$T/peers-iperf3.out" | sed 's/^/#     /'
		_pm_mbit="?"
	fi
	# s/GB: ticks / CLK_TCK over GB carried (Mbit/s * s / 8000).
	_pm_cpu=$(awk -v c=$((_pm_c1 - _pm_c0)) -v hz="$PEERS_HZ" \
	    -v m="$_pm_mbit" -v s="$PEERS_SECONDS" -v p="$_pm_pids" 'BEGIN {
		if (p == "") { print "-"; exit }
		if (m == "?" || m <= 0) { print "?"; exit }
		printf "%.1f\n", c / hz / (m * s / 8000) }')
	echo "$_pm_case $_pm_mbit $_pm_cpu $_pm_idle $_pm_load ${_pm_loss:-?}" |
	    tee -a "$T/peers.data" | sed 's/^/#   round: /'
}

# peers_median CASE FIELD: the median of FIELD (2..6) over the rounds,
# "?" or "-" when a round had none.
peers_median() {
	awk -v c="$1" -v f="$2" '$1 == c { print $f }' "$T/peers.data" |
	    sort -g | awk '
		/^[?-]$/ { bad = $1; next }
		{ v[n++] = $1 }
		END {
			if (n == 0) { print (bad == "" ? "?" : bad); exit }
			if (n % 2) m = v[(n - 1) / 2]
			else m = (v[n / 2 - 1] + v[n / 2]) / 2
			print m
		}'
}

# peers_table: the Markdown table of the medians, to $T/peers.md.
peers_table() {
	_pt_best=
	_pt_bm=0
	for _pt_c in wg ovpn_udp tinc; do
		[ -s "$T/peers-$_pt_c.pids" ] || continue
		_pt_m=$(peers_median "$_pt_c" 2)
		if awk -v a="$_pt_m" -v b="$_pt_bm" \
		    'BEGIN { exit !(a != "?" && a + 0 > b + 0) }'; then
			_pt_best=$_pt_c
			_pt_bm=$_pt_m
		fi
	done
	_pt_bc=$( [ -n "$_pt_best" ] && peers_median "$_pt_best" 3)
	{
		echo "| case | Mbit/s | × best peer | CPU s/GB | × best peer |" \
		    "ping idle / load, ms | load ping loss |"
		echo "|---|---:|---:|---:|---:|---:|---:|"
		for _pt_c in $PEERS_CASES; do
			_pt_l=$(peers_label "$_pt_c")
			if [ -e "$T/peers-$_pt_c.skip" ]; then
				echo "| $_pt_l | skipped: $(cat \
				    "$T/peers-$_pt_c.skip") | | | | | |"
				continue
			fi
			[ "$_pt_c" = "$_pt_best" ] && _pt_l="$_pt_l (best peer)"
			peers_row "$_pt_c" "$_pt_l" "$_pt_bm" "$_pt_bc"
		done
	} >"$T/peers.md"
}

# peers_row CASE LABEL BEST_MBIT BEST_CPU: one line of the table.
peers_row() {
	awk -v l="$2" -v m="$(peers_median "$1" 2)" \
	    -v c="$(peers_median "$1" 3)" -v pi="$(peers_median "$1" 4)" \
	    -v pl="$(peers_median "$1" 5)" -v ls="$(peers_median "$1" 6)" \
	    -v bm="$3" -v bc="$4" '
	function num(x) { return x ~ /^[0-9.]+$/ }
	function ratio(a, b) {
		return (num(a) && num(b) && b > 0) ? sprintf("%.2f", a / b) : "—"
	}
	function fix(x, d) { return num(x) ? sprintf("%." d "f", x) : "—" }
	BEGIN {
		printf "| %s | %s | %s | %s | %s | %s / %s | %s%% |\n", l,
		    fix(m, 0), ratio(m, bm), fix(c, 1), ratio(c, bc),
		    fix(pi, 2), fix(pl, 2), fix(ls, 0)
	}'
}

# peers_machine: the lines that say where and what was measured.
peers_machine() {
	_pm_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)
	git -C "$ROOT" diff --quiet HEAD 2>/dev/null ||
	    _pm_commit="$_pm_commit (with uncommitted changes)"
	echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on" \
	    "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
	    "$(nproc) cores, Linux $(uname -r) ($(uname -m));" \
	    "candy ${_pm_commit:-?} ($("$CANDY" --version | awk '{ print $2 }'));" \
	    "wireguard-go $(wireguard-go --version 2>/dev/null |
	    awk '{ print $2; exit }')," \
	    "OpenVPN $(openvpn --version 2>/dev/null | awk '{ print $2; exit }')," \
	    "tinc $(tincd --version 2>/dev/null | awk '{ print $3; exit }')."
	echo "iperf3 TCP qa -> qb, $PEERS_SECONDS s, median of $PEERS_ROUNDS" \
	    "interleaved rounds (each column's own); CPU = user+system seconds of all the" \
	    "tunnel's processes per GB carried; pings 0.2 s apart, idle and" \
	    "during the transfer (ping's average).  Ratios against the best" \
	    "peer: the non-candy P2P case with the highest throughput."
	echo
	echo "Data channels: candy P2P AES-256-GCM over UDP, candy relay" \
	    "ws:// (plain) and wss:// (TLS, EC P-256 certificate) through the" \
	    "server; wireguard-go ChaCha20-Poly1305; OpenVPN TLS mode with" \
	    "an EC PKI, AES-256-GCM, --disable-dco (user space; --secret is" \
	    "deprecated in 2.6 and has no AEAD cipher), the hub with" \
	    "client-to-client and tcp-nodelay; tinc 1.0 aes-256-cbc +" \
	    "HMAC-SHA256 (it has no GCM).  Every process at its defaults" \
	    "otherwise."
}

bench_peers() {
	PEERS_HZ=$(getconf CLK_TCK)
	mkdir -p "$T/peers-keys" && chmod 700 "$T/peers-keys"
	: >"$T/peers.data"
	rm -f "$T"/peers-*.skip "$T"/peers-*.pids
	lan_add qnet
	ns_add qh
	ns_add qa
	ns_add qb
	lan_join qnet qh 10.79.0.1/24
	lan_join qnet qa 10.79.0.2/24
	lan_join qnet qb 10.79.0.3/24
	proc_start qiperf qb iperf3 -s
	wait_until 5 eval "nsx qb ss -ltn | grep -q ':5201'"
	for _bp_c in $PEERS_CASES; do
		"peers_setup_$_bp_c"
	done
	_bp_r=1
	while [ "$_bp_r" -le "$PEERS_ROUNDS" ]; do
		echo "#   round $_bp_r of $PEERS_ROUNDS"
		for _bp_c in $PEERS_CASES; do
			[ -s "$T/peers-$_bp_c.pids" ] ||
			    [ "$_bp_c" = raw ] || continue
			peers_measure "$_bp_c"
		done
		_bp_r=$((_bp_r + 1))
	done
	peers_table
	{
		echo "# make bench: candy against other VPNs"
		echo
		peers_machine
		echo
		cat "$T/peers.md"
		echo
		echo "Each round (case, Mbit/s, CPU s/GB, ping idle and" \
		    "under load in ms, load ping loss %):"
		echo
		sed 's/^/    /' "$T/peers.data"
	} >"$T/peers-results.md"
	mkdir -p "$(dirname "$PEERS_RESULTS")" &&
	    cp "$T/peers-results.md" "$PEERS_RESULTS" &&
	    echo "#   written to $PEERS_RESULTS"
	echo
	cat "$T/peers-results.md"
}

# Alone: make bench-peers.
if [ -z "$BENCH_SOURCED" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "make bench-peers needs root: it creates network" \
		    "namespaces." >&2
		exit 1
	fi
	. "$(dirname "$0")/lib.sh"
	[ -x "$CANDY" ] || { echo "./candy is not built (run make)." >&2; exit 1; }
	DEBUG_FLAG=
	echo "# peers"
	bench_peers
fi
