/*
 * t_route.c: address parsing and formatting, SD-WAN rules (the rule of
 * the captured vectors, PROTOCOL 2.7), and EXPTTUN address allocation
 * (PROTOCOL 2.4).
 */
#include <stdio.h>
#include <string.h>

#include "candy.h"
#include "test.h"

static const struct {
	const char *s;
	int ok;
	uint32_t ip;
} ip_cases[] = {
	{ "172.31.0.2", 0, 0xac1f0002 },
	{ "0.0.0.0", 0, 0 },
	{ "255.255.255.255", 0, 0xffffffff },
	{ "10.0.0.1", 0, 0x0a000001 },
	{ "1.2.3.256", -1, 0 },
	{ "1.2.3", -1, 0 },
	{ "1.2.3.4.5", -1, 0 },
	{ "1.2.3.4 ", -1, 0 },
	{ " 1.2.3.4", -1, 0 },
	{ "1.2.3.4x", -1, 0 },
	{ "+1.2.3.4", -1, 0 },
	{ "1.-2.3.4", -1, 0 },
	{ "1..3.4", -1, 0 },
	{ "1.2.3.", -1, 0 },
	{ "010.0.0.1", -1, 0 },		/* octal to inet_aton */
	{ "0x0a.0.0.1", -1, 0 },
	{ "10.1", -1, 0 },		/* 10.0.0.1 to inet_aton */
	{ "167772161", -1, 0 },
	{ "1.2.3.0004", -1, 0 },
	{ "", -1, 0 },
};

static const struct {
	const char *s;
	int ok;
	uint32_t addr;
	int prefix;
	const char *why;
} cidr_cases[] = {
	{ "172.31.0.0/24", 0, 0xac1f0000, 24, NULL },
	{ "172.31.0.7/24", 0, 0xac1f0007, 24, NULL },	/* host bits kept */
	{ "0.0.0.0/0", 0, 0, 0, NULL },
	{ "10.0.0.1/32", 0, 0x0a000001, 32, NULL },
	{ "10.0.0.0/33", -1, 0, 0, "prefix too long" },
	{ "10.0.0.0/100", -1, 0, 0, "prefix too long" },
	{ "10.0.0/24", -1, 0, 0, "not an address" },
	{ "10.0.0.256/24", -1, 0, 0, "not an address" },
	{ "1234567890123456789/8", -1, 0, 0, "not an address" },
	{ "10.0.0.0/", -1, 0, 0, "bad prefix" },
	{ "10.0.0.0/-1", -1, 0, 0, "bad prefix" },
	{ "10.0.0.0/+8", -1, 0, 0, "bad prefix" },
	{ "10.0.0.0/8x", -1, 0, 0, "bad prefix" },
	{ "10.0.0.0/08", -1, 0, 0, "bad prefix" },
	{ "10.0.0.0/8/8", -1, 0, 0, "bad prefix" },
	{ "10.0.0.0", -1, 0, 0, "missing /prefix" },
};

/* port_parse: what uri_parse and the STUN URI took with strspn and atoi
 * (digits only, 1..65535), leading zeros too. */
static const struct {
	const char *s;
	int v;
} port_cases[] = {
	{ "1", 1 }, { "80", 80 }, { "080", 80 }, { "65535", 65535 },
	{ "0", -1 }, { "00", -1 }, { "65536", -1 }, { "99999999999", -1 },
	{ "", -1 }, { "12ab", -1 }, { "-1", -1 }, { "+80", -1 }, { " 80", -1 },
	{ "80 ", -1 },
};

static void test_route_parse(void)
{
	char name[96], buf[19];
	struct cidr c;
	const char *why;
	uint32_t ip;
	size_t i;

	for (i = 0; i < sizeof(ip_cases) / sizeof(ip_cases[0]); i++) {
		int r;

		ip = 12345;
		r = ip_parse(ip_cases[i].s, &ip);
		snprintf(name, sizeof(name), "ip_parse \"%s\" %s",
		    ip_cases[i].s, ip_cases[i].ok ? "refused" : "accepted");
		CHECK(r == ip_cases[i].ok &&
		    (r < 0 || ip == ip_cases[i].ip), name);
	}
	for (i = 0; i < sizeof(port_cases) / sizeof(port_cases[0]); i++) {
		snprintf(name, sizeof(name), "port_parse \"%s\" is %d",
		    port_cases[i].s, port_cases[i].v);
		CHECK(port_parse(port_cases[i].s) == port_cases[i].v, name);
	}
	for (i = 0; i < sizeof(cidr_cases) / sizeof(cidr_cases[0]); i++) {
		int r;

		why = NULL;
		r = cidr_parse(cidr_cases[i].s, &c, &why);
		snprintf(name, sizeof(name), "cidr_parse \"%s\": %s",
		    cidr_cases[i].s, cidr_cases[i].ok ? cidr_cases[i].why :
		    "accepted");
		CHECK(r == cidr_cases[i].ok && (r < 0 ?
		    why != NULL && strcmp(why, cidr_cases[i].why) == 0 :
		    c.addr == cidr_cases[i].addr &&
		    c.prefix == cidr_cases[i].prefix), name);
	}

	CHECK(strcmp(ip_str(0xac1f0002, buf), "172.31.0.2") == 0,
	    "ip_str 172.31.0.2");
	CHECK(strcmp(ip_str(0xffffffff, buf), "255.255.255.255") == 0,
	    "ip_str 255.255.255.255");
	c.addr = 0xffffffff;
	c.prefix = 32;
	CHECK(strcmp(cidr_str(&c, buf), "255.255.255.255/32") == 0,
	    "cidr_str fits the longest cidr in 19 bytes");
	c.addr = 0xac1f0007;
	c.prefix = 24;
	CHECK(strcmp(cidr_str(&c, buf), "172.31.0.7/24") == 0,
	    "cidr_str keeps host bits");

	CHECK(prefix_mask(0) == 0 && prefix_mask(1) == 0x80000000 &&
	    prefix_mask(24) == 0xffffff00 && prefix_mask(31) == 0xfffffffe &&
	    prefix_mask(32) == 0xffffffff, "prefix_mask 0, 1, 24, 31, 32");

	CHECK(ip_is_private(0x0a000001) && ip_is_private(0xac100001) &&
	    ip_is_private(0xac1fffff) && ip_is_private(0xc0a80101) &&
	    ip_is_private(0xa9fe0001), "ip_is_private: 10/8, 172.16/12, "
	    "192.168/16, 169.254/16");
	CHECK(!ip_is_private(0xac200001) && !ip_is_private(0xac0fffff) &&
	    !ip_is_private(0x0b000001) && !ip_is_private(0xc0a90001) &&
	    !ip_is_private(0x08080808), "ip_is_private: public addresses");
}

static void test_route_sdwan(void)
{
	struct sdwan_rule r[4];
	const char *why;
	int n;

	/* The server option of the captured vectors. */
	n = sdwan_parse("172.31.0.0/24,192.168.50.0/24,172.31.0.9", r, 4,
	    &why);
	CHECK(n == 1 && r[0].dev.addr == 0xac1f0000 && r[0].dev.prefix == 24 &&
	    r[0].dst == 0xc0a83200 && r[0].mask == 0xffffff00 &&
	    r[0].next == 0xac1f0009, "sdwan: the captured rule");

	n = sdwan_parse(" 172.31.0.1/32 , 192.168.50.77/24,172.31.0.9 ;;"
	    "172.31.0.0/24,10.1.0.0/16,172.31.0.1;", r, 4, &why);
	CHECK(n == 2 && r[0].dev.addr == 0xac1f0001 && r[0].dev.prefix == 32 &&
	    r[0].dst == 0xc0a83200 && r[0].mask == 0xffffff00 &&
	    r[1].dst == 0x0a010000 && r[1].mask == 0xffff0000 &&
	    r[1].next == 0xac1f0001,
	    "sdwan: two rules, blanks and empty parts, dst masked");
	CHECK(sdwan_parse("", r, 4, &why) == 0 &&
	    sdwan_parse(" ; ;", r, 4, &why) == 0, "sdwan: no rules");

	why = NULL;
	CHECK(sdwan_parse("1.2.3.4/32,nonsense,1.2.3.4", r, 4, &why) < 0 &&
	    why != NULL, "sdwan: bad dst refused with a reason");
	CHECK(sdwan_parse("1.2.3.4/32,10.0.0.0/8", r, 4, &why) < 0,
	    "sdwan: two parts refused");
	CHECK(sdwan_parse("1.2.3.4/32,10.0.0.0/8,1.2.3.4,5", r, 4, &why) < 0,
	    "sdwan: four parts refused");
	CHECK(sdwan_parse("1.2.3.4,10.0.0.0/8,1.2.3.4", r, 4, &why) < 0,
	    "sdwan: dev without prefix refused");
	CHECK(sdwan_parse("1.2.3.4/32,10.0.0.0/8,1.2.3.4/32", r, 4, &why) < 0,
	    "sdwan: next with prefix refused");
	CHECK(sdwan_parse("0.0.0.0/0,10.0.0.0/8,1.2.3.4;"
	    "0.0.0.0/0,10.0.0.0/8,1.2.3.4", r, 1, &why) < 0 &&
	    strcmp(why, "too many rules") == 0, "sdwan: more than max refused");
	CHECK(sdwan_parse("0.0.0.0/0,10.0.0.0/8,1.2.3.4;", r, 1, &why) == 1,
	    "sdwan: exactly max accepted");
}

/* A set of taken addresses for the allocation tests. */
struct taken_set {
	uint32_t ip[8];
	int n;
	uint32_t lo, hi;	/* everything in [lo, hi] is taken too */
	unsigned long calls;
};

static int is_taken(void *ctx, uint32_t ip)
{
	struct taken_set *t = ctx;
	int i;

	t->calls++;
	if (ip >= t->lo && ip <= t->hi)
		return 1;
	for (i = 0; i < t->n; i++)
		if (t->ip[i] == ip)
			return 1;
	return 0;
}

static void test_route_alloc(void)
{
	struct cidr r24 = { 0xac1f0000, 24 }, r30 = { 0x0a000004, 30 };
	struct cidr r8 = { 0x0a000000, 8 };
	struct taken_set t = { { 0xac1f0005, 0xac1f0001 }, 2, 1, 0, 0 };
	uint32_t last = 0xac1f0000;

	CHECK(addr_alloc(&r24, 0xac1f0007, &last, is_taken, &t) ==
	    0xac1f0007 && last == 0xac1f0007, "alloc: requested and free");
	last = 0xac1f0000;
	CHECK(addr_alloc(&r24, 0xac1f0005, &last, is_taken, &t) ==
	    0xac1f0002 && last == 0xac1f0002,
	    "alloc: requested taken, next after last (skipping taken .1)");
	CHECK(addr_alloc(&r24, 0xac1f0105, &last, is_taken, &t) ==
	    0xac1f0003, "alloc: requested outside the range, next");
	CHECK(addr_alloc(&r24, 0, &last, is_taken, &t) == 0xac1f0004,
	    "alloc: nothing requested, next");
	CHECK(addr_alloc(&r24, 0, &last, is_taken, &t) == 0xac1f0006,
	    "alloc: next skips a taken address");
	CHECK(addr_alloc(&r24, 0xac1f0000, &last, is_taken, &t) ==
	    0xac1f0007, "alloc: network address requested, next");
	CHECK(addr_alloc(&r24, 0xac1f00ff, &last, is_taken, &t) ==
	    0xac1f0008, "alloc: broadcast requested, next");
	last = 0xac1f00fe;
	CHECK(addr_alloc(&r24, 0, &last, is_taken, &t) == 0xac1f0002,
	    "alloc: wraps after the last host, skipping taken .1");
	last = 0x01020304;
	CHECK(addr_alloc(&r24, 0, &last, is_taken, &t) == 0xac1f0002,
	    "alloc: last outside the range starts at the first host");

	t.lo = 0xac1f0000;
	t.hi = 0xac1f00ff;
	t.calls = 0;
	last = 0xac1f0010;
	CHECK(addr_alloc(&r24, 0xac1f0009, &last, is_taken, &t) == 0 &&
	    last == 0xac1f0010, "alloc: exhausted range gives 0");
	CHECK(t.calls == 255, "alloc: exhausted /24 asks for each host once");
	t.lo = 0xac1f0000;
	t.hi = 0xac1f00fd;
	CHECK(addr_alloc(&r24, 0, &last, is_taken, &t) == 0xac1f00fe,
	    "alloc: the last free host is found");

	/* A /30 has two hosts, .5 and .6 of 10.0.0.4/30. */
	t.n = 0;
	t.lo = 1;
	t.hi = 0;
	last = 0x0a000004;
	CHECK(addr_alloc(&r30, 0, &last, is_taken, &t) == 0x0a000005 &&
	    addr_alloc(&r30, 0, &last, is_taken, &t) == 0x0a000006 &&
	    addr_alloc(&r30, 0, &last, is_taken, &t) == 0x0a000005,
	    "alloc: /30 hands out .5, .6, then wraps to .5");
	CHECK(addr_alloc(&r30, 0x0a000007, &last, is_taken, &t) == 0x0a000006,
	    "alloc: /30 broadcast requested, next");
	t.ip[0] = 0x0a000005;
	t.ip[1] = 0x0a000006;
	t.n = 2;
	CHECK(addr_alloc(&r30, 0x0a000005, &last, is_taken, &t) == 0,
	    "alloc: /30 with both hosts taken gives 0");

	/* A /8: the search wraps over 2^24 - 2 hosts in one bounded pass. */
	t.n = 0;
	t.lo = 0x0a000001;
	t.hi = 0x0afffffd;
	t.calls = 0;
	last = 0x0a000000;
	CHECK(addr_alloc(&r8, 0, &last, is_taken, &t) == 0x0afffffe,
	    "alloc: /8 finds the only free host");
	t.hi = 0x0afffffe;
	CHECK(addr_alloc(&r8, 0, &last, is_taken, &t) == 0 &&
	    t.calls == 0xfffffe + 0xfffffe, "alloc: full /8 ends, gives 0");

	{
		struct cidr r31 = { 0x0a000000, 31 }, r32 = { 0x0a000000, 32 };

		last = 0;
		CHECK(addr_alloc(&r31, 0x0a000001, &last, is_taken, &t) == 0 &&
		    addr_alloc(&r32, 0x0a000000, &last, is_taken, &t) == 0,
		    "alloc: /31 and /32 have no host to give");
	}
}

/*
 * What a client takes from its server (issue 8): a client on the LAN
 * 10.77.0.0/24 with a default route, the server at 10.77.0.1 (also
 * 203.0.113.7 for the cases where the LAN does not hold it), STUN at
 * 198.51.100.3, the tunnel 172.31.0.0/24.
 */
static void test_route_guard(void)
{
	static const struct {
		const char *what;
		uint32_t dst, mask;
		int ok;
	} r[] = {
		{ "a LAN behind a gateway, 192.168.50.0/24", 0xc0a83200,
		    0xffffff00, 1 },
		{ "10.0.0.0/8 around our LAN", 0x0a000000, 0xff000000, 0 },
		{ "our LAN 10.77.0.0/24 itself", 0x0a4d0000, 0xffffff00, 0 },
		{ "half our LAN, 10.77.0.128/25", 0x0a4d0080, 0xffffff80, 0 },
		{ "the server's host route 203.0.113.7/32", 0xcb007107,
		    0xffffffff, 0 },
		{ "203.0.113.0/24 holding the server", 0xcb007100,
		    0xffffff00, 0 },
		{ "203.0.112.0/24 next to it", 0xcb007000, 0xffffff00, 1 },
		{ "the STUN server's network", 0xc6336400, 0xffffff00, 0 },
		{ "0.0.0.0/0 (a full tunnel only)", 0, 0, 0 },
		{ "0.0.0.0/1", 0, 0x80000000, 0 },
		{ "128.0.0.0/1", 0x80000000, 0x80000000, 0 },
		{ "44.0.0.0/7, wider than a /8", 0x2c000000, 0xfe000000, 0 },
		{ "44.0.0.0/8", 0x2c000000, 0xff000000, 1 },
		{ "0.0.0.0/8", 0, 0xff000000, 0 },
		{ "loopback 127.0.0.0/8", 0x7f000000, 0xff000000, 0 },
		{ "127.0.0.1/32", 0x7f000001, 0xffffffff, 0 },
		{ "multicast 224.0.0.0/24", 0xe0000000, 0xffffff00, 0 },
		{ "255.255.255.255/32", 0xffffffff, 0xffffffff, 0 },
		{ "the tunnel network 172.31.0.0/24", 0xac1f0000,
		    0xffffff00, 0 },
		{ "172.16.0.0/12 around the tunnel", 0xac100000, 0xfff00000, 0 },
		{ "a non-contiguous mask", 0xc0a80000, 0xffff00ff, 0 },
	};
	struct route_guard g;
	char why[96], name[160];
	const char *got;
	size_t i;

	memset(&g, 0, sizeof(g));
	g.server = 0xcb007107;
	g.stun = 0xc6336403;
	g.tun_net = 0xac1f0000;
	g.tun_mask = 0xffffff00;
	g.underlay[0].addr = 0;			/* default via the LAN */
	g.underlay[0].prefix = 0;
	g.underlay[1].addr = 0x0a4d0000;	/* 10.77.0.0/24 */
	g.underlay[1].prefix = 24;
	g.nunderlay = 2;
	for (i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
		got = route_guard_check(&g, r[i].dst, r[i].mask, why,
		    sizeof(why));
		snprintf(name, sizeof(name), "guard: route %s %s%s%s",
		    r[i].what, r[i].ok ? "taken" : "refused", got ? ": " : "",
		    got ? got : "");
		CHECK((got == NULL) == r[i].ok, name);
	}

	/* Granted addresses: the tunnel network is ours to choose. */
	g.tun_net = g.tun_mask = 0;
	CHECK(route_guard_address(&g, 0xac1f0002, 24, why, sizeof(why)) ==
	    NULL, "guard: grant 172.31.0.2/24 taken");
	CHECK(route_guard_address(&g, 0x00000005, 8, why, sizeof(why)) !=
	    NULL, "guard: grant 0.0.0.5/8 refused (0/8)");
	CHECK(route_guard_address(&g, 0xe0000005, 24, why, sizeof(why)) !=
	    NULL, "guard: grant 224.0.0.5/24 refused (multicast)");
	CHECK(route_guard_address(&g, 0x0a4d0063, 24, why, sizeof(why)) !=
	    NULL, "guard: grant 10.77.0.99/24 refused (our LAN)");
	CHECK(route_guard_address(&g, 0xcb007163, 24, why, sizeof(why)) !=
	    NULL, "guard: grant 203.0.113.99/24 refused (holds the server)");
	CHECK(route_guard_address(&g, 0x0b000001, 4, why, sizeof(why)) !=
	    NULL, "guard: grant 11.0.0.1/4 refused (wider than /8)");
	CHECK(route_guard_address(&g, 0xac1f00ff, 24, why, sizeof(why)) !=
	    NULL, "guard: grant of a broadcast address refused");
	CHECK(route_guard_address(&g, 0x7f000002, 24, why, sizeof(why)) !=
	    NULL, "guard: grant 127.0.0.2/24 refused (loopback)");
}

void test_route(void)
{
	test_route_parse();
	test_route_sdwan();
	test_route_alloc();
	test_route_guard();
}
