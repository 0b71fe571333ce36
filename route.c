/*
 * route.c: IPv4 address arithmetic, the server's SD-WAN rules and address
 * allocation (PROTOCOL.md 2), and the client's distance-vector relay table
 * (PROTOCOL.md 6).  Nothing here does I/O except logging; candy.c and
 * peer.c drive it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "candy.h"

/* ---- Addresses. ---- */

uint32_t prefix_mask(int prefix)
{
	if (prefix <= 0)
		return 0;
	if (prefix >= 32)
		return UINT32_MAX;
	return UINT32_MAX << (32 - prefix);
}

/*
 * Parse 1 to 3 decimal digits worth at most max from *sp, moving *sp past
 * them.  A leading zero is refused in a multi-digit number: inet_aton reads
 * "010" as octal 8 and inet_pton refuses it, so we refuse it too rather
 * than guess.  Returns the value or -1.
 */
static long dec_parse(const char **sp, long max)
{
	const char *s = *sp;
	long v = 0;
	int n;

	for (n = 0; s[n] >= '0' && s[n] <= '9'; n++) {
		if (n == 3)
			return -1;
		v = v * 10 + (s[n] - '0');
	}
	if (n == 0 || (n > 1 && s[0] == '0') || v > max)
		return -1;
	*sp = s + n;
	return v;
}

/*
 * Strict dotted quad: exactly four decimal parts 0..255 separated by dots,
 * nothing before or after.  Not inet_aton, which also takes "10.1",
 * "0x0a.0.0.1", "10.0.0.1 junk" and octal parts.
 */
int ip_parse(const char *s, uint32_t *ip)
{
	uint32_t v = 0;
	int i;

	for (i = 0; i < 4; i++) {
		long part;

		if (i > 0 && *s++ != '.')
			return -1;
		if ((part = dec_parse(&s, 255)) < 0)
			return -1;
		v = v << 8 | (uint32_t)part;
	}
	if (*s != '\0')
		return -1;
	*ip = v;
	return 0;
}

/*
 * "a.b.c.d/n" with n 0..32.  Host bits are kept ("172.31.0.7/24" is the
 * address .7 in a /24): EXPTTUN and --tun carry a host address this way.
 */
int cidr_parse(const char *s, struct cidr *c, const char **why)
{
	const char *slash = strchr(s, '/');
	char addr[16];
	const char *p;
	long prefix;
	uint32_t ip;

	if (slash == NULL) {
		*why = "missing /prefix";
		return -1;
	}
	if ((size_t)(slash - s) >= sizeof(addr)) {
		*why = "not an address";
		return -1;
	}
	memcpy(addr, s, (size_t)(slash - s));
	addr[slash - s] = '\0';
	if (ip_parse(addr, &ip) < 0) {
		*why = "not an address";
		return -1;
	}
	p = slash + 1;
	if ((prefix = dec_parse(&p, 999)) < 0 || *p != '\0') {
		*why = "bad prefix";
		return -1;
	}
	if (prefix > 32) {
		*why = "prefix too long";
		return -1;
	}
	c->addr = ip;
	c->prefix = (int)prefix;
	return 0;
}

char *ip_str(uint32_t ip, char *buf)
{
	snprintf(buf, 16, "%u.%u.%u.%u", (unsigned)(ip >> 24),
	    (unsigned)(ip >> 16 & 0xff), (unsigned)(ip >> 8 & 0xff),
	    (unsigned)(ip & 0xff));
	return buf;
}

char *cidr_str(const struct cidr *c, char *buf)
{
	char ip[16];

	snprintf(buf, 19, "%s/%d", ip_str(c->addr, ip), c->prefix);
	return buf;
}

/* The ranges PROTOCOL.md 5 treats as LAN endpoints (RFC 1918, RFC 3927). */
int ip_is_private(uint32_t ip)
{
	return (ip & 0xff000000) == 0x0a000000 ||
	    (ip & 0xfff00000) == 0xac100000 ||
	    (ip & 0xffff0000) == 0xc0a80000 ||
	    (ip & 0xffff0000) == 0xa9fe0000;
}

/* ---- SD-WAN rules: "dev,dst,next;dev,dst,next;..." (PROTOCOL.md 2). ---- */

static int is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/*
 * Copy the token s[0..len) without surrounding whitespace into buf
 * (size n).  -1 when it does not fit (no address or cidr is that long).
 */
static int token_copy(const char *s, size_t len, char *buf, size_t n)
{
	while (len > 0 && is_space(*s)) {
		s++;
		len--;
	}
	while (len > 0 && is_space(s[len - 1]))
		len--;
	if (len >= n)
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return 0;
}

/* One rule "dev,dst,next" from s[0..len); 0 ok, -1 with *why set. */
static int sdwan_rule_parse(const char *s, size_t len, struct sdwan_rule *r,
    const char **why)
{
	const char *end = s + len, *c1, *c2;
	char tok[3][24];
	struct cidr dst;
	const char *cwhy;

	c1 = memchr(s, ',', len);
	c2 = c1 ? memchr(c1 + 1, ',', (size_t)(end - c1 - 1)) : NULL;
	if (c1 == NULL || c2 == NULL ||
	    memchr(c2 + 1, ',', (size_t)(end - c2 - 1)) != NULL) {
		*why = "a rule is dev,dst,next";
		return -1;
	}
	if (token_copy(s, (size_t)(c1 - s), tok[0], sizeof(tok[0])) < 0 ||
	    cidr_parse(tok[0], &r->dev, &cwhy) < 0) {
		*why = "dev is not an address/prefix";
		return -1;
	}
	if (token_copy(c1 + 1, (size_t)(c2 - c1 - 1), tok[1],
	    sizeof(tok[1])) < 0 || cidr_parse(tok[1], &dst, &cwhy) < 0) {
		*why = "dst is not an address/prefix";
		return -1;
	}
	if (token_copy(c2 + 1, (size_t)(end - c2 - 1), tok[2],
	    sizeof(tok[2])) < 0 || ip_parse(tok[2], &r->next) < 0) {
		*why = "next is not an address";
		return -1;
	}
	r->mask = prefix_mask(dst.prefix);
	r->dst = dst.addr & r->mask;
	return 0;
}

int sdwan_parse(const char *s, struct sdwan_rule *rules, int max,
    const char **why)
{
	int n = 0;

	while (*s != '\0') {
		const char *semi = strchr(s, ';');
		size_t len = semi ? (size_t)(semi - s) : strlen(s);
		size_t i;

		/* Empty or blank parts ("a;;b", a trailing ';') are skipped. */
		for (i = 0; i < len && is_space(s[i]); i++)
			;
		if (i < len) {
			if (n == max) {
				*why = "too many rules";
				return -1;
			}
			if (sdwan_rule_parse(s, len, &rules[n], why) < 0)
				return -1;
			n++;
		}
		s += len;
		if (*s == ';')
			s++;
	}
	return n;
}

/* ---- Address allocation for EXPTTUN (PROTOCOL.md 2). ---- */

/*
 * The valid hosts of a range are net+1 .. broadcast-1.  A /31 or /32 has
 * none in this sense (RFC 3021 aside) and gets 0 here; the configuration
 * refuses such ranges, so this only keeps the arithmetic safe.  The search
 * visits each host at most once, so an exhausted /8 costs 2^24 calls of
 * taken() and then ends.
 */
uint32_t addr_alloc(const struct cidr *range, uint32_t requested,
    uint32_t *last, int (*taken)(void *ctx, uint32_t ip), void *ctx)
{
	uint32_t mask = prefix_mask(range->prefix);
	uint32_t net = range->addr & mask, bcast = net | ~mask;
	uint32_t hosts, start, i;

	if (range->prefix > 30)
		return 0;
	hosts = ~mask - 1;	/* at least 2 */
	if ((requested & mask) == net && requested != net &&
	    requested != bcast && !taken(ctx, requested)) {
		*last = requested;
		return requested;
	}
	/* Host k (net + k) has index k - 1; start at the one after *last,
	 * or at the first host when *last is not a host of the range. */
	if ((*last & mask) == net && *last != bcast)
		start = (*last - net) % hosts;
	else
		start = 0;
	for (i = 0; i < hosts; i++) {
		uint32_t idx = (uint32_t)(((uint64_t)start + i) % hosts);
		uint32_t ip = net + 1 + idx;

		if (!taken(ctx, ip)) {
			*last = ip;
			return ip;
		}
	}
	return 0;
}
