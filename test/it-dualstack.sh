#!/bin/sh
# it-dualstack.sh: a server on ws://[::]:8080 takes IPv6 and IPv4 clients;
# a client whose server name resolves to a dead IPv6 address first and the
# live IPv4 one second still gets through (every address is tried in turn).
#
# The name comes from a test hosts file bind-mounted over /etc/hosts in a
# private mount namespace (unshare -m): the machine's own file is never
# touched.  2001:db8:77::99 is on the LAN's prefix but owned by no one, so
# neighbour discovery fails and the connect with it.

. "$(dirname "$0")/lib.sh"
need_netns
command -v unshare >/dev/null 2>&1 || skip_all "no unshare"

lan_add net
for h in srv a b; do
	ns_add $h
done
lan_join net srv 10.77.0.1/24
lan_join net a 10.77.0.2/24
lan_join net b 10.77.0.3/24
i=1
for h in srv a b; do
	ip -n "$(ns "$h")" -6 addr add 2001:db8:77::$i/64 dev v-net nodad
	i=$((i + 1))
done

candy_server srv srv -w "ws://[::]:8080" -p pw -d 172.31.0.0/24
wait_listening srv || { fail "the server listens on [::]:8080"; exit 1; }

candy_client a a -w "ws://[2001:db8:77::1]:8080" -p pw
check "a client of ws://[2001:db8:77::1]:8080 (IPv6) gets an address" \
    wait_addr a 10

printf '127.0.0.1 localhost\n2001:db8:77::99 candy.test\n10.77.0.1 candy.test\n' \
    >"$T/hosts"
cat >"$T/candy-hosts" <<EOS
#!/bin/sh
exec unshare -m sh -c 'mount --bind "\$0" /etc/hosts && exec "\$@"' \\
    "$T/hosts" "$CANDY" "\$@"
EOS
chmod 755 "$T/candy-hosts"
CANDY_REAL=$CANDY
CANDY=$T/candy-hosts
candy_client b b -w "ws://candy.test:8080" -p pw
CANDY=$CANDY_REAL
check "a client of a name whose IPv6 address is dead gets an address" \
    wait_addr b 20
check "it tried the IPv6 address first" \
    log_has b 'connect to \[2001:db8:77::99\]:8080'
check "and reached the server over IPv4" \
    log_has srv 'connected from 10\.77\.0\.3:'
check "the IPv6 client pings the IPv4 one" ping_ok a "$(addr_of b)"
[ "$FAILED" = 0 ]
