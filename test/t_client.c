/*
 * t_client.c: the client's packet path without a server: TTL on relayed
 * packets, SD-WAN IP-in-IP wrapping and unwrapping, bad packets dropped.
 * The TUN device is a pipe.
 */
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
	test_client_bad();
	close(tun[0]);
	close(tun[1]);
}
