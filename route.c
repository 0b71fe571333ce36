/*
 * route.c: IPv4 address arithmetic, the server's SD-WAN rules and address
 * allocation (PROTOCOL 2.4), and the client's distance-vector relay table
 * (PROTOCOL 6).  Nothing here does I/O except logging; candy.c and
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

/* see candy.h */
int port_parse(const char *s)
{
	long v = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9' || (v = v * 10 + (*s - '0')) > 65535)
			return -1;
	}
	return v == 0 ? -1 : (int)v;
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

/* The ranges PROTOCOL 5.4 treats as LAN endpoints (RFC 1918, RFC 3927). */
int ip_is_private(uint32_t ip)
{
	return (ip & 0xff000000) == 0x0a000000 ||
	    (ip & 0xfff00000) == 0xac100000 ||
	    (ip & 0xffff0000) == 0xc0a80000 ||
	    (ip & 0xffff0000) == 0xa9fe0000;
}

/* ---- What a server may grant or push (client side). ---- */

/* 1 when a/am and b/bm share an address: the shorter prefix holds the
 * other's network. */
static int net_overlap(uint32_t a, uint32_t am, uint32_t b, uint32_t bm)
{
	uint32_t m = am & bm;	/* the shorter of two contiguous masks */

	return (a & m) == (b & m);
}

/* A contiguous mask: ones, then zeros. */
static int mask_ok(uint32_t mask)
{
	return (~mask & (~mask + 1)) == 0;
}

/*
 * Ranges no tunnel route or address may touch: they are never a remote
 * network (RFC 1122 3.2.1.3 "this network" and loopback, RFC 5771
 * multicast, RFC 1112 class E and the limited broadcast).
 */
static const struct {
	uint32_t net, mask;
	const char *what;
} guard_reserved[] = {
	{ 0x00000000, 0xff000000, "\"this network\" 0.0.0.0/8" },
	{ 0x7f000000, 0xff000000, "loopback 127.0.0.0/8" },
	{ 0xe0000000, 0xf0000000, "multicast 224.0.0.0/4" },
	{ 0xf0000000, 0xf0000000, "reserved 240.0.0.0/4" },
};

/* The checks shared by a route and the tunnel network: dst/mask, with
 * mask contiguous, must leave every path we depend on alone. */
static const char *guard_net(const struct route_guard *g, uint32_t dst,
    uint32_t mask, char *why, size_t whylen)
{
	char a[16];
	size_t i;
	int k;

	for (i = 0; i < sizeof(guard_reserved) / sizeof(guard_reserved[0]);
	    i++)
		if (net_overlap(dst, mask, guard_reserved[i].net,
		    guard_reserved[i].mask)) {
			snprintf(why, whylen, "overlaps %s",
			    guard_reserved[i].what);
			return why;
		}
	if (g->server != 0 && (g->server & mask) == dst) {
		snprintf(why, whylen, "covers the server %s",
		    ip_str(g->server, a));
		return why;
	}
	if (g->stun != 0 && (g->stun & mask) == dst) {
		snprintf(why, whylen, "covers the STUN server %s",
		    ip_str(g->stun, a));
		return why;
	}
	for (k = 0; k < g->nunderlay; k++) {
		const struct cidr *u = &g->underlay[k];

		/* Under a default route every network is: only a network
		 * the underlay reaches more precisely is ours to keep. */
		if (u->prefix == 0 ||
		    !net_overlap(dst, mask, u->addr, prefix_mask(u->prefix)))
			continue;
		snprintf(why, whylen, "overlaps the local route %s/%d",
		    ip_str(u->addr, a), u->prefix);
		return why;
	}
	return NULL;
}

/* see candy.h */
const char *route_guard_check(const struct route_guard *g, uint32_t dst,
    uint32_t mask, char *why, size_t whylen)
{
	char a[16];

	if (!mask_ok(mask)) {
		snprintf(why, whylen, "mask %s is not a prefix",
		    ip_str(mask, a));
		return why;
	}
	if ((dst & mask) != dst) {
		snprintf(why, whylen, "host bits set");
		return why;
	}
	if (mask == 0) {
		snprintf(why, whylen, "a default route is only taken as a "
		    "full tunnel");
		return why;
	}
	if (mask < GUARD_PREFIX_MIN_MASK) {
		snprintf(why, whylen, "wider than a /8");
		return why;
	}
	if (g->tun_mask != 0 && net_overlap(dst, mask, g->tun_net,
	    g->tun_mask)) {
		snprintf(why, whylen, "overlaps the tunnel network");
		return why;
	}
	return guard_net(g, dst, mask, why, whylen);
}

/* see candy.h */
const char *route_guard_address(const struct route_guard *g, uint32_t addr,
    int prefix, char *why, size_t whylen)
{
	uint32_t mask = prefix_mask(prefix);

	if (prefix < 8 || prefix > 30) {
		snprintf(why, whylen, "prefix /%d outside /8../30", prefix);
		return why;
	}
	if (guard_net(g, addr & mask, mask, why, whylen) != NULL)
		return why;
	if ((addr & ~mask) == 0 || (addr & ~mask) == ~mask) {
		snprintf(why, whylen, "the network or broadcast address");
		return why;
	}
	return NULL;
}

/* ---- SD-WAN rules: "dev,dst,next;dev,dst,next;..." (PROTOCOL 2.7). ---- */

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

/* ---- Address allocation for EXPTTUN (PROTOCOL 2.4). ---- */

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

/*
 * ---- The relay table: distance-vector routes (PROTOCOL 6). ----
 *
 * Entries are kept sorted by dst so that relay_lookup, which runs for every
 * packet sent, is a binary search.  Insertions and removals move the tail of
 * the array; they happen on route changes only.
 *
 * An entry with dst == next is the direct entry of a connected peer, its rtt
 * measured by DELAY.  Any other entry stores the whole rtt to dst: the direct
 * rtt of next plus what next advertised.  Our cost is added only when we
 * advertise, so it counts once per hop.
 *
 * XXX The existing client has neither split horizon nor poisoned reverse:
 * it advertises a route to the neighbour the route goes through, so a lost
 * destination can bounce between two neighbours, dearer each time, until
 * the sum passes 1000 and it expires.  The announce callback can poison
 * the reverse route (candy.h says how); the table itself stays as simple
 * as the protocol.
 */

#define RELAY_RTT_MAX 1000	/* ms; more is unreachable */

static int rtt_valid(int64_t rtt)
{
	return rtt >= 0 && rtt <= RELAY_RTT_MAX;
}

int relay_init(struct relay *t, size_t max, relay_announce_fn *announce,
    void *ctx)
{
	memset(t, 0, sizeof(*t));
	if (max > 0 && (t->r = calloc(max, sizeof(*t->r))) == NULL)
		return -1;
	t->max = max;
	t->announce = announce;
	t->ctx = ctx;
	return 0;
}

void relay_reset(struct relay *t, uint32_t self, int cost)
{
	t->n = 0;
	t->self = self;
	t->cost = cost;
}

/* The index of dst, or where it would be inserted with *found = 0. */
static size_t relay_find(const struct relay *t, uint32_t dst, int *found)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t->r[mid].dst == dst) {
			*found = 1;
			return mid;
		}
		if (t->r[mid].dst < dst)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = 0;
	return lo;
}

/* What we advertise for an entry: its rtt plus our cost. */
static int32_t relay_advertised(const struct relay *t, int32_t rtt)
{
	int64_t adv = rtt;

	if (rtt != RTT_UNREACHABLE) {
		adv += t->cost;
		if (adv > RTT_UNREACHABLE)
			adv = RTT_UNREACHABLE;
	}
	return (int32_t)adv;
}

/* Tell the neighbours: the entry's rtt plus our cost, or unreachable. */
static void relay_announce(const struct relay *t, uint32_t dst, int32_t rtt)
{
	if (t->announce != NULL)
		t->announce(t->ctx, dst, relay_advertised(t, rtt));
}

static void relay_remove_at(struct relay *t, size_t i)
{
	uint32_t dst = t->r[i].dst;
	char a[16], b[16];

	log_debug("relay: route %s via %s withdrawn", ip_str(dst, a),
	    ip_str(t->r[i].next, b));
	memmove(&t->r[i], &t->r[i + 1], (t->n - i - 1) * sizeof(t->r[0]));
	t->n--;
	relay_announce(t, dst, RTT_UNREACHABLE);
}

/*
 * The table is full and a connected peer needs its direct entry: drop the
 * dearest relayed route to make room, so that a neighbour advertising
 * bogus destinations cannot keep real peers out.  0 done, -1 none to drop.
 */
static int relay_evict(struct relay *t)
{
	size_t i, worst = t->n;

	for (i = 0; i < t->n; i++)
		if (t->r[i].dst != t->r[i].next &&
		    (worst == t->n || t->r[i].rtt > t->r[worst].rtt))
			worst = i;
	if (worst == t->n)
		return -1;
	relay_remove_at(t, worst);
	return 0;
}

/* Add or change the entry for dst; announce only when something changed. */
static void relay_set(struct relay *t, uint32_t dst, uint32_t next,
    int32_t rtt)
{
	char a[16], b[16];
	int found;
	size_t i = relay_find(t, dst, &found);

	if (found) {
		if (t->r[i].next == next && t->r[i].rtt == rtt)
			return;
	} else {
		if (t->n == t->max && (dst != next || relay_evict(t) < 0)) {
			log_debug("relay: table full (%zu), route to %s ignored",
			    t->max, ip_str(dst, a));
			return;
		}
		i = relay_find(t, dst, &found);
		memmove(&t->r[i + 1], &t->r[i], (t->n - i) * sizeof(t->r[0]));
		t->n++;
	}
	t->r[i].dst = dst;
	t->r[i].next = next;
	t->r[i].rtt = rtt;
	log_debug("relay: route %s via %s rtt %ld", ip_str(dst, a),
	    ip_str(next, b), (long)rtt);
	relay_announce(t, dst, rtt);
}

/* Remove the entry for dst if it goes via next. */
static void relay_remove_via(struct relay *t, uint32_t dst, uint32_t next)
{
	int found;
	size_t i = relay_find(t, dst, &found);

	if (found && t->r[i].next == next)
		relay_remove_at(t, i);
}

/*
 * The direct rtt to peer changed from old to rtt: the entries through it
 * change by as much, so that what we store and advertise stays the sum of
 * the two legs without waiting for the neighbour to advertise again.
 */
static void relay_shift_via(struct relay *t, uint32_t peer, int32_t old,
    int32_t rtt)
{
	size_t i = 0;

	while (i < t->n) {
		struct relay_route *e = &t->r[i];
		int64_t v = (int64_t)e->rtt - old + rtt;

		if (e->next != peer || e->dst == peer) {
			i++;
		} else if (!rtt_valid(v)) {
			relay_remove_at(t, i);
		} else {
			if (e->rtt != (int32_t)v) {
				e->rtt = (int32_t)v;
				relay_announce(t, e->dst, e->rtt);
			}
			i++;
		}
	}
}

void relay_direct(struct relay *t, uint32_t peer, int32_t rtt)
{
	int found;
	size_t i;

	if (peer == 0 || peer == t->self)
		return;
	if (!rtt_valid(rtt)) {
		relay_peer_lost(t, peer);
		return;
	}
	i = relay_find(t, peer, &found);
	if (found && t->r[i].next == peer) {
		int32_t old = t->r[i].rtt;

		if (old == rtt)
			return;
		relay_set(t, peer, peer, rtt);
		relay_shift_via(t, peer, old, rtt);
		return;
	}
	relay_set(t, peer, peer, rtt);
}

void relay_update(struct relay *t, uint32_t dst, uint32_t next, int32_t rtt)
{
	const struct relay_route *direct, *cur;
	int found;
	size_t i;
	int64_t cand;

	/* Our own address, and a neighbour's word about itself (its direct
	 * entry is ours to measure), are not routes. */
	if (dst == 0 || dst == t->self || next == t->self || dst == next)
		return;
	if (!rtt_valid(rtt)) {
		relay_remove_via(t, dst, next);
		return;
	}
	i = relay_find(t, next, &found);
	if (!found || t->r[i].next != next)
		return;		/* not a neighbour we have measured */
	direct = &t->r[i];
	cand = (int64_t)direct->rtt + rtt;
	if (!rtt_valid(cand)) {
		relay_remove_via(t, dst, next);
		return;
	}
	i = relay_find(t, dst, &found);
	cur = found ? &t->r[i] : NULL;
	if (cur == NULL || cur->next == next || cand < cur->rtt)
		relay_set(t, dst, next, (int32_t)cand);
}

void relay_peer_lost(struct relay *t, uint32_t peer)
{
	size_t i = 0;

	while (i < t->n) {
		if (t->r[i].next == peer)
			relay_remove_at(t, i);
		else
			i++;
	}
}

uint32_t relay_lookup(const struct relay *t, uint32_t dst)
{
	int found;
	size_t i = relay_find(t, dst, &found);

	return found ? t->r[i].next : 0;
}

void relay_log(const struct relay *t)
{
	char a[16], b[16];
	size_t i;

	for (i = 0; i < t->n; i++)
		log_info("route %s via %s rtt %ld", ip_str(t->r[i].dst, a),
		    ip_str(t->r[i].next, b), (long)t->r[i].rtt);
}

void relay_announce_all(const struct relay *t)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		relay_announce(t, t->r[i].dst, t->r[i].rtt);
}

void relay_announce_each(const struct relay *t, relay_announce_fn *fn,
    void *ctx)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		fn(ctx, t->r[i].dst, relay_advertised(t, t->r[i].rtt));
}
