/*
 * t_client.c: the client's packet path without a server: TTL on relayed
 * packets, SD-WAN IP-in-IP wrapping and unwrapping, bad packets dropped.
 * The TUN device is a pipe.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "candy.h"
#include "test.h"

#define SELF	0xac1f0001		/* 172.31.0.1 */
#define GW	0xac1f0009		/* 172.31.0.9, gateway of 192.168.50/24 */

static struct client c;
static unsigned char buf[PKT_HEADROOM + 256];
static int tun[2];

/* RFC 791: a header with a right checksum sums to 0xffff. */
static int ip_sum_ok(const unsigned char *h)
{
	uint32_t sum = 0;
	int i;

	for (i = 0; i < 20; i += 2)
		sum += get16(h + i);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

/* A 28-byte UDP-ish IPv4 packet src -> dst with a right checksum. */
static unsigned char *packet(uint32_t src, uint32_t dst, int ttl)
{
	unsigned char *p = buf + PKT_HEADROOM;
	uint32_t sum = 0;
	int i;

	memset(buf, 0, sizeof(buf));
	p[0] = 0x45;
	put16(p + 2, 28);
	p[8] = (unsigned char)ttl;
	p[9] = 17;
	put32(p + 12, src);
	put32(p + 16, dst);
	for (i = 0; i < 20; i += 2)
		sum += get16(p + i);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	put16(p + 10, (uint16_t)~sum);
	return p;
}

static void test_client_ttl(void)
{
	unsigned char *p = packet(0xac1f0005, 0xac1f0007, 1);

	client_route(&c, p, 28, 1);
	CHECK(c.ttl_expired == 1, "a relayed packet with TTL 1 is dropped");
	p = packet(0xac1f0005, 0xac1f0007, 64);
	client_route(&c, p, 28, 1);
	CHECK(p[8] == 63 && ip_sum_ok(p),
	    "a relayed packet: TTL 64 -> 63, checksum still right");
	CHECK(c.ttl_expired == 1 && c.dropped == 1,
	    "with no server it is counted as dropped, not expired");
	p = packet(0xac1f0005, 0xac1f0007, 1);
	client_route(&c, p, 28, 0);
	CHECK(p[8] == 1, "our own packets keep their TTL");
}

static void test_client_sdwan(void)
{
	unsigned char *p = packet(SELF, 0xc0a83202, 64), *h = p - 20;
	unsigned char got[64];
	ssize_t n;

	c.routes[0].dst = 0xc0a83200;
	c.routes[0].mask = 0xffffff00;
	c.routes[0].next = GW;
	c.nroutes = 1;
	client_route(&c, p, 28, 0);
	CHECK(h[0] == 0x45 && h[9] == 4 && get16(h + 2) == 48 &&
	    get32(h + 12) == SELF && get32(h + 16) == GW && ip_sum_ok(h),
	    "a packet for 192.168.50.2 is wrapped IP-in-IP towards 172.31.0.9");

	/* The gateway's side: an IP-in-IP packet for us is unwrapped. */
	p = packet(SELF, 0xc0a83202, 64);
	h = p - 20;
	memcpy(h, p, 20);
	h[9] = 4;
	put16(h + 2, 48);
	put32(h + 16, SELF);
	client_deliver(&c, h, 48);
	n = read(tun[0], got, sizeof(got));
	CHECK_BYTES(p, 28, got, n > 0 ? (size_t)n : 0,
	    "an IP-in-IP packet for us reaches the TUN unwrapped");
	c.nroutes = 0;
}

static void test_client_bad(void)
{
	unsigned char *p = packet(SELF, 0xac1f0002, 64);
	unsigned long before = c.dropped;

	client_deliver(&c, p, 19);
	p[0] = 0x65;
	client_deliver(&c, p, 28);
	p = packet(0xac1f0002, SELF, 64);
	p[9] = 4;
	p[0] = 0x4f;		/* IHL 60 bytes, longer than the packet */
	client_deliver(&c, p, 28);
	CHECK(c.dropped == before + 3, "short, non-IPv4 and bad-IHL packets "
	    "are dropped");
	client_route(&c, p, 10, 0);
	CHECK(c.dropped == before + 4, "a short packet from the TUN is dropped");
}

/* pkt (28 bytes at p) wrapped from outer source gw to us, at p - 20. */
static unsigned char *ipip_from(unsigned char *p, uint32_t gw)
{
	unsigned char *h = p - 20;

	memcpy(h, p, 20);
	h[9] = 4;
	put16(h + 2, 48);
	put32(h + 12, gw);
	put32(h + 16, SELF);
	put16(h + 10, 0);
	return h;
}

/* Issue 8: a client may not forge a source through IP-in-IP. */
static void test_client_ipip_spoof(void)
{
	static const struct {
		const char *what;
		uint32_t gw, src;
		int ok;
	} t[] = {
		{ "from the gateway for a host of its LAN", GW, 0xc0a83202, 1 },
		{ "from a client for its own address", 0xac1f0005, 0xac1f0005,
		    1 },
		{ "from a client (not a gateway) claiming 8.8.8.8",
		    0xac1f0005, 0x08080808, 0 },
		{ "from a client claiming another client's address",
		    0xac1f0005, 0xac1f0006, 0 },
		{ "from a client claiming a host of the gateway's LAN",
		    0xac1f0005, 0xc0a83202, 0 },
		{ "from the gateway claiming a source outside its LAN", GW,
		    0x0a000001, 0 },
	};
	unsigned char got[64], *p;
	unsigned long before;
	char name[128];
	ssize_t n;
	size_t i;

	c.routes[0].dst = 0xc0a83200;
	c.routes[0].mask = 0xffffff00;
	c.routes[0].next = GW;
	c.nroutes = 1;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		before = c.ipip_refused;
		p = packet(t[i].src, SELF, 64);
		client_deliver(&c, ipip_from(p, t[i].gw), 48);
		snprintf(name, sizeof(name), "IP-in-IP %s: %s", t[i].what,
		    t[i].ok ? "delivered" : "dropped and counted");
		if (t[i].ok) {
			n = read(tun[0], got, sizeof(got));
			CHECK(n == 28 && c.ipip_refused == before, name);
		} else {
			CHECK(c.ipip_refused == before + 1, name);
		}
	}
	/* The exit node may send from anywhere. */
	c.full_gw = GW;
	p = packet(0x08080808, SELF, 64);
	client_deliver(&c, ipip_from(p, GW), 48);
	n = read(tun[0], got, sizeof(got));
	CHECK(n == 28, "IP-in-IP from our exit node for 8.8.8.8: delivered");
	c.full_gw = 0;
	c.nroutes = 0;
}

/* Longest route wins; a full tunnel takes the rest but never the tunnel
 * network, multicast or broadcast. */
static void test_client_gateway(void)
{
	unsigned char *p;

	c.routes[0].dst = 0xc0a80000;		/* 192.168.0.0/16 via .9 */
	c.routes[0].mask = 0xffff0000;
	c.routes[0].next = GW;
	c.routes[1].dst = 0xc0a83200;		/* 192.168.50.0/24 via .8 */
	c.routes[1].mask = 0xffffff00;
	c.routes[1].next = 0xac1f0008;
	c.nroutes = 2;
	p = packet(SELF, 0xc0a83202, 64);
	client_route(&c, p, 28, 0);
	CHECK(p[-20 + 9] == 4 && get32(p - 20 + 16) == 0xac1f0008,
	    "the longer route 192.168.50.0/24 wins over 192.168.0.0/16");
	c.nroutes = 0;
	c.full_gw = GW;
	p = packet(SELF, 0x08080808, 64);
	client_route(&c, p, 28, 0);
	CHECK(p[-20 + 9] == 4 && get32(p - 20 + 16) == GW,
	    "full tunnel: 8.8.8.8 goes IP-in-IP to the exit node");
	p = packet(SELF, 0xac1f0007, 64);
	memset(p - 20, 0, 20);
	client_route(&c, p, 28, 0);
	CHECK(p[-20] == 0, "full tunnel: a peer 172.31.0.7 is not wrapped");
	p = packet(SELF, 0xffffffff, 64);
	memset(p - 20, 0, 20);
	client_route(&c, p, 28, 0);
	CHECK(p[-20] == 0, "full tunnel: 255.255.255.255 is not wrapped");
	c.full_gw = 0;
}

/* Issue 8: a grant the client cannot use ends the session, not the
 * process (before, the kernel refused it and fatalx ran). */
static void test_client_bad_grant(void)
{
	static const char *bad[] = {
		"0.0.0.0/8", "224.0.0.5/24", "127.0.0.9/8", "0.0.0.7/30",
		"172.31.0.255/24",
	};
	static struct config cfg;
	unsigned char m[EXPTTUN_LEN], *mp = m;
	size_t len, i;
	char name[96];

	cfg.mode = MODE_CLIENT;
	strcpy(cfg.password, "pw");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		len = msg_expttun_build(m, "pw", bad[i], wall_s(), 0);
		snprintf(name, sizeof(name), "a grant of %s ends the session "
		    "(the client lives on)", bad[i]);
		CHECK(session_test_run(&cfg, &mp, &len, 1) == 0, name);
	}
}

/*
 * A server pushing 0.0.0.0/0 again and again, where the full tunnel
 * cannot be set up (here: no device): one try a session, not one round
 * of netlink requests per route (the log, rate-limited, hid it).
 */
static void test_client_full_retry(void)
{
	static struct config cfg;
	static unsigned char m[2][ROUTE_HDR_LEN + 20 * ROUTE_ENTRY_LEN];
	struct sdwan_route e[20];
	unsigned char *mp[2] = { m[0], m[1] };
	size_t len[2], i;
	FILE *f = tmpfile();
	char line[256];
	int saved = dup(2), n = 0;

	if (f == NULL || saved < 0) {
		CHECK(0, "full tunnel retry: a temporary file for stderr");
		return;
	}
	cfg.mode = MODE_CLIENT;
	strcpy(cfg.password, "pw");
	cfg.has_tun = 1;
	cfg.tun.addr = SELF;
	cfg.tun.prefix = 24;
	for (i = 0; i < 20; i++) {
		e[i].dst = e[i].mask = 0;
		e[i].next = (SELF & 0xffffff00) | 2;
	}
	len[0] = len[1] = msg_route_build(m[0], e, 20);
	memcpy(m[1], m[0], len[0]);
	fflush(stderr);
	dup2(fileno(f), 2);
	fake_now_ms = 3000000;	/* a log window of its own */
	session_test_run(&cfg, mp, len, 2);
	fake_now_ms = 0;
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(f);
	while (fgets(line, sizeof(line), f) != NULL)
		n += strstr(line, "cannot route everything") != NULL;
	fclose(f);
	CHECK(n == 1, "full tunnel refused by the system: tried once a "
	    "session, not per pushed default route");
}

void test_client(void)
{
	static struct config cfg;

	if (pipe(tun) < 0) {
		CHECK(0, "pipe");
		return;
	}
	cfg.mtu = 1400;
	c.cfg = &cfg;
	c.addr = SELF;
	c.prefix = 24;
	c.mask = 0xffffff00;
	c.net = SELF & c.mask;
	c.tun_fd = tun[1];
	c.p2p.udp_fd = -1;
	test_client_ttl();
	test_client_sdwan();
	test_client_full_retry();
	test_client_bad();
	test_client_ipip_spoof();
	test_client_gateway();
	test_client_bad_grant();
	close(tun[0]);
	close(tun[1]);
}
