# bench-tls.sh: the "tls" section of make bench, sourced by test/bench.sh
# (it uses bench.sh's setup: namespaces srv, ca, cb on 10.77.0.0/24, and
# its result function).
#
#   1. test/bench_tls in this process: bytes per server connection,
#      the AES/GHASH/ChaCha20 code BearSSL picked, handshakes per second
#      (EC P-256 and RSA-2048 servers), bulk record throughput;
#   2. wss end to end: a second server on port 8443 with an EC key and its
#      own tunnel (172.30.0.0/24), clients ta (in ca) and tb (in cb) with
#      --pin; iperf3 through it, and the server's memory.

bench_tls() {
	_bt_k=$T/tls
	mkdir -p "$_bt_k"
	if ! openssl ecparam -name prime256v1 -genkey -out "$_bt_k/ec.key" \
	    2>/dev/null || ! openssl req -x509 -new -key "$_bt_k/ec.key" \
	    -subj /CN=candy.test -days 2 -out "$_bt_k/ec.pem" ||
	    ! openssl genrsa -out "$_bt_k/rsa.key" 2048 2>/dev/null ||
	    ! openssl req -x509 -new -key "$_bt_k/rsa.key" \
	    -subj /CN=candy.test -days 2 -out "$_bt_k/rsa.pem"; then
		echo "# tls: cannot make certificates with openssl"
		return
	fi
	if [ -x "$ROOT/test/bench_tls" ]; then
		"$ROOT/test/bench_tls" "$_bt_k/ec.pem" "$_bt_k/ec.key" \
		    "$_bt_k/rsa.pem" "$_bt_k/rsa.key" 2>"$T/bench_tls.err" |
		    while IFS='|' read -r _bt_n _bt_v _bt_u; do
			result "$_bt_n" "$_bt_v" "$_bt_u"
		done
	else
		echo "# tls: test/bench_tls is not built (make test/bench_tls)"
	fi

	_bt_pin=$(openssl x509 -in "$_bt_k/ec.pem" -pubkey -noout |
	    openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1)
	candy_server srv tsrv -w wss://0.0.0.0:8443 --cert "$_bt_k/ec.pem" \
	    --key "$_bt_k/ec.key" -p benchpw -d 172.30.0.0/24
	wait_listening tsrv || { echo "# tls: the wss server did not start"; return; }
	candy_client ca ta -w wss://10.77.0.1:8443 -p benchpw --pin "$_bt_pin"
	candy_client cb tb -w wss://10.77.0.1:8443 -p benchpw --pin "$_bt_pin"
	if ! wait_addr ta 15 || ! wait_addr tb 15; then
		echo "# tls: the wss clients got no address"
		return
	fi
	_bt_b=$(addr_of tb)
	wait_until 10 ping_ok ta "$_bt_b" 1
	bg_run cb "$T/iperf3-tls.log" iperf3 -s -B "$_bt_b" -p 5202
	wait_until 5 eval "nsx cb ss -ltn | grep -q ':5202'"
	nsx ca iperf3 -c "$_bt_b" -p 5202 -t "$SECS" -f m >"$T/iperf3-tls.out" 2>&1
	_bt_m=$(awk '/receiver/ { for (i = 1; i < NF; i++)
	    if ($(i + 1) == "Mbits/sec") v = $i } END { print v }' \
	    "$T/iperf3-tls.out")
	result "throughput ta->tb over wss (TCP)" "${_bt_m:-?}" Mbit/s
	[ -n "$_bt_m" ] || sed 's/^/#   /' "$T/iperf3-tls.out"
	result "memory wss server VmRSS (2 clients)" \
	    "$(awk '/^VmRSS:/ { print $2 }' "/proc/$(pid_of tsrv)/status")" kB
	stop ta
	stop tb
}
