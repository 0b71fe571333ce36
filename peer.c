/*
 * peer.c: peer-to-peer over UDP (PROTOCOL 5 and 6).
 *
 * One UDP socket per client carries the STUN exchange and every peer
 * datagram.  The peer table holds one entry per remote tunnel address,
 * each running the state machine of PROTOCOL 5.4 on a 1-second tick;
 * endpoints are traded through the server (UDP4CONN, GENERAL/0) and holes
 * punched with heartbeats.  Datagrams are AES-256-GCM under keys derived
 * from the password and the receiver's address.  With a relay cost
 * (cfg->route) DELAY probes measure each connected peer and ROUTE messages
 * feed the relay table of route.c.
 *
 * Everything runs in candy.c's poll loop: the tick, the socket becoming
 * readable, messages from the server, packets to send.  Memory is taken
 * when a session brings an address (p2p_ready), sized from the tunnel
 * network: the table never holds more peers than the network has hosts
 * (nor more than PEER_MAX), nor any address outside it.
 *
 * Nothing that arrives is trusted further than it proves: a datagram
 * replayed is dropped (replay_check), a heartbeat from a new place moves a
 * connected peer only once the place answers and the old one went quiet
 * (peer_endpoint_move), endpoints that are ours, loopback or otherwise
 * wrong are refused (endpoint_usable), and what we send to endpoints that
 * never answered has a budget (budget_take): a hostile server cannot aim
 * us at a victim.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "candy.h"

#define PEER_TICK_MS		1000
#define PEER_SETUP_MS		10000	/* the most a setup state may last */
#define PEER_LOST_MS		3000	/* CONNECTED without a heartbeat */
#define PEER_RETRY_MIN_S	30	/* WAITING, doubling on each retry */
#define PEER_RETRY_MAX_S	3600
#define PEER_DELAY_TICKS	60	/* between DELAY probes once answered */
#define PEER_MOVE_QUIET_MS	1500	/* real silent this long: may move */
#define PEER_MOVE_MIN_MS	5000	/* between two endpoint changes */
#define PEER_OWN_REFRESH_MS	10000	/* our interface addresses re-read */
#define IVSEEN_PER_PEER		16	/* random ivs remembered, per slot */
#define UDP_BURST		64	/* entries per p2p_udp_input */
/* Bytes read per p2p_udp_input (after the batch that crosses it): with
 * UDP_GRO an entry may be 64 KiB, and 64 of them would keep the loop from
 * the TUN (and a ping waiting there) for milliseconds. */
#define UDP_PASS_BYTES		(128 * 1024)
#define IP_HDR_LEN		20
#define STUN_DEFAULT_PORT	"3478"
#define STUN_RESOLVE_MS		10000	/* between two name resolutions */
#define ADDR_BROADCAST		0xffffffffu

/* ---- Datagram encryption (PROTOCOL 5.1). ---- */

/* see candy.h */
void peer_key_init(struct peer_key *k, const char *password, uint32_t addr)
{
	const br_block_ctr_class *aes = br_aes_x86ni_ctr_get_vtable();
	br_ghash gh = br_ghash_pclmul_get();
	br_sha256_context h;
	unsigned char key[32], rev[4];

	/* The existing client hashes the address as a little-endian
	 * integer: its bytes lowest first, written out on every CPU. */
	rev[0] = (unsigned char)addr;
	rev[1] = (unsigned char)(addr >> 8);
	rev[2] = (unsigned char)(addr >> 16);
	rev[3] = (unsigned char)(addr >> 24);
	br_sha256_init(&h);
	br_sha256_update(&h, password, strlen(password));
	br_sha256_update(&h, rev, sizeof(rev));
	br_sha256_out(&h, key);
	if (aes == NULL)
		aes = &br_aes_ct64_ctr_vtable;	/* constant-time, portable */
	if (gh == 0)
		gh = br_ghash_ctmul64;
	aes->init(&k->aes.vtable, key, sizeof(key));
	br_gcm_init(&k->gcm, &k->aes.vtable, gh);
	wipe(key, sizeof(key));
	wipe(&h, sizeof(h));
}

void peer_key_wipe(struct peer_key *k)
{
	wipe(k, sizeof(*k));
}

/*
 * The key for an address is fixed for the life of the network and shared
 * by everyone who sends to that address, so GCM's nonce must never repeat
 * across all of them.  Random 96-bit nonces are good for about 2^32
 * datagrams per key; a random 48-bit salt per sender and receiver with a
 * 32-bit counter never repeats within a sender and collides across
 * senders only if two salts do (and their counters meet: they start at
 * random).  Receivers take any iv; ours also let the receiver keep a
 * sliding window against replays (replay_check), which the existing
 * Candy's random ivs do not.  Two bytes mark them as ours.
 */
/* see candy.h */
void peer_iv_init(struct peer_iv *iv)
{
	iv->salt[0] = PEER_IV_MARK0;
	iv->salt[1] = PEER_IV_MARK1;
	rand_bytes(iv->salt + 2, sizeof(iv->salt) - 2);
	iv->count = rand_below(0x80000000u);
}

/* see candy.h */
size_t peer_seal(struct peer_key *k, struct peer_iv *iv, unsigned char *d,
    size_t n)
{
	memcpy(d, iv->salt, sizeof(iv->salt));
	put32(d + sizeof(iv->salt), iv->count);
	if (++iv->count == 0)
		peer_iv_init(iv);
	br_gcm_reset(&k->gcm, d, PEER_IV_LEN);
	br_gcm_flip(&k->gcm);	/* no additional data */
	br_gcm_run(&k->gcm, 1, d + PEER_OVERHEAD, n);
	br_gcm_get_tag(&k->gcm, d + PEER_IV_LEN);
	return n + PEER_OVERHEAD;
}

/* see candy.h */
int peer_open(struct peer_key *k, unsigned char *d, size_t len)
{
	if (len < PEER_OVERHEAD)
		return -1;
	br_gcm_reset(&k->gcm, d, PEER_IV_LEN);
	br_gcm_flip(&k->gcm);
	br_gcm_run(&k->gcm, 0, d + PEER_OVERHEAD, len - PEER_OVERHEAD);
	return br_gcm_check_tag(&k->gcm, d + PEER_IV_LEN) ? 0 : -1;
}

/* ---- Endpoints and the UDP socket. ---- */

static char *endpoint_str(const struct endpoint *e, char buf[22])
{
	char ip[16];

	if (e->ip == 0)
		snprintf(buf, 22, "-");
	else
		snprintf(buf, 22, "%s:%u", ip_str(e->ip, ip),
		    (unsigned)e->port);
	return buf;
}

static int endpoint_eq(const struct endpoint *a, const struct endpoint *b)
{
	return a->ip == b->ip && a->port == b->port;
}

/*
 * Whether peer datagrams may go to ip:port at all.  0.0.0.0/8, loopback,
 * multicast, the reserved block and broadcast never reach a peer.  An
 * address inside the tunnel network or an SD-WAN destination is routed
 * into our own TUN device: the "direct" path would ride on the tunnel it
 * is meant to replace.  The existing client gives up LAN endpoints
 * altogether once it has SD-WAN routes; we refuse only the endpoints that
 * would loop.
 */
static int endpoint_routable(const struct client *c, uint32_t ip,
    uint16_t port)
{
	const struct config *cfg = c->cfg;
	int i;

	if (ip == 0 || port == 0 || ip >> 24 == 0 || ip >= 0xe0000000u)
		return 0;
	if (ip >> 24 == 127 && !c->p2p.loopback_ok)
		return 0;
	if ((ip & c->mask) == c->net)
		return 0;
	for (i = 0; i < c->nroutes; i++)
		if ((ip & c->routes[i].mask) == c->routes[i].dst)
			return 0;
	for (i = 0; i < cfg->nsdwan; i++)
		if ((ip & cfg->sdwan[i].mask) == cfg->sdwan[i].dst)
			return 0;
	return 1;
}

/*
 * Whether ip:port may be a peer's endpoint: routable, and not one of our
 * own addresses (interfaces, their broadcast addresses, our public
 * endpoint): a peer that named one would have us talk to ourselves or
 * flood our LAN.  Our own LAN address is routable (we offer it) but
 * never a peer's.
 */
static int endpoint_usable(const struct client *c, uint32_t ip,
    uint16_t port)
{
	const struct p2p *p2p = &c->p2p;
	int i;

	if (!endpoint_routable(c, ip, port))
		return 0;
	if (ip == p2p->public.ip && port == p2p->public.port)
		return 0;
	if (ip >> 24 == 127)	/* loopback_ok: the tests' peers */
		return 1;
	if (ip == c->cfg->localhost)
		return 0;
	for (i = 0; i < p2p->nown; i++)
		if (ip == p2p->own[i])
			return 0;
	return 1;
}

/* Re-read our interface addresses now and then (a DHCP lease changes). */
static void own_refresh(struct client *c, int64_t now)
{
	struct p2p *p2p = &c->p2p;

	if (p2p->own_ms != 0 && now - p2p->own_ms < PEER_OWN_REFRESH_MS)
		return;
	p2p->own_ms = now;
	p2p->nown = if_addresses(p2p->own, PEER_OWN_MAX);
}

static uint32_t stamp_next(struct p2p *p2p)
{
	if (++p2p->stamp == 0)
		p2p->stamp = 1;
	return p2p->stamp;
}

/* Least recently used first, across the wrap of the stamp clock. */
static int stamp_older(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) < 0;
}

/* A token bucket, refilled to now: per_s tokens a second, at most burst. */
static void bucket_refill(struct peer_budget *b, int64_t now, int burst,
    int per_s)
{
	int64_t dt = now - b->ms;

	if (dt > 0) {
		b->milli += dt * per_s;
		if (b->milli > (int64_t)burst * 1000)
			b->milli = (int64_t)burst * 1000;
	}
	b->ms = now;
}

/*
 * Reflection: whoever names an endpoint (a server's UDP4CONN or GENERAL,
 * a datagram's spoofed source) makes us send there before the endpoint
 * has proved anything.  Those datagrams come out of two budgets, one per
 * destination address (PEER_PROBE_IP_BURST, then PEER_PROBE_IP_PER_S: a
 * NAT with many peers behind it shares one) and one for all
 * (PEER_PROBE_ALL_*): a flood of UDP4CONN naming one victim, from any
 * number of peers, gets it at most that many.  PEER_BUDGET_IPS
 * addresses have buckets (PEER_WAYS-way, the least recently used
 * replaced by a full one): a flood that names more addresses than that
 * to refill the victim's is still held by the global bucket.  1 the
 * datagram may go, 0 it may not (counted in tx_budget).
 */
static int budget_take(struct client *c, uint32_t ip, int64_t now)
{
	struct p2p *p2p = &c->p2p;
	struct peer_budget *b, *slot;
	size_t i, base;

	base = (size_t)((ip * 2654435761u) >> 16) % (PEER_BUDGET_IPS /
	    PEER_WAYS) * PEER_WAYS;
	slot = &p2p->budget[base];
	for (i = 0; i < PEER_WAYS; i++) {
		b = &p2p->budget[base + i];
		if (b->stamp != 0 && b->ip == ip)
			break;
		if (b->stamp == 0 || (slot->stamp != 0 &&
		    stamp_older(b->stamp, slot->stamp)))
			slot = b;
	}
	if (i == PEER_WAYS) {	/* a new one, full */
		b = slot;
		b->ip = ip;
		b->ms = now;
		b->milli = (int64_t)PEER_PROBE_IP_BURST * 1000;
	}
	b->stamp = stamp_next(p2p);
	if (p2p->budget_all.stamp == 0) {
		p2p->budget_all.stamp = 1;
		p2p->budget_all.ms = now;
		p2p->budget_all.milli = (int64_t)PEER_PROBE_ALL_BURST * 1000;
	}
	bucket_refill(b, now, PEER_PROBE_IP_BURST, PEER_PROBE_IP_PER_S);
	bucket_refill(&p2p->budget_all, now, PEER_PROBE_ALL_BURST,
	    PEER_PROBE_ALL_PER_S);
	if (b->milli < 1000 || p2p->budget_all.milli < 1000) {
		p2p->tx_budget++;
		return 0;
	}
	b->milli -= 1000;
	p2p->budget_all.milli -= 1000;
	return 1;
}

/* ---- The peer table: a fixed array and an open-addressing index. ---- */

static const char *const peer_state_names[] = {
	"INIT", "PREPARING", "SYNCHRONIZING", "CONNECTING", "CONNECTED",
	"WAITING", "FAILED"
};

const char *peer_state_name(enum peer_state s)
{
	return (unsigned)s < sizeof(peer_state_names) /
	    sizeof(peer_state_names[0]) ? peer_state_names[s] : "?";
}

static size_t peer_hash(const struct p2p *p2p, uint32_t addr)
{
	return (size_t)((addr * 2654435761u) >> (32 - p2p->index_bits));
}

static size_t index_next(const struct p2p *p2p, size_t i)
{
	return (i + 1) & (((size_t)1 << p2p->index_bits) - 1);
}

/* The index slot holding addr; the peer must be in the table. */
static size_t index_find(const struct p2p *p2p, uint32_t addr)
{
	size_t i;

	for (i = peer_hash(p2p, addr); p2p->peers[p2p->index[i] - 1].addr !=
	    addr; i = index_next(p2p, i))
		;
	return i;
}

/* see candy.h */
struct peer *peer_lookup(struct client *c, uint32_t addr)
{
	struct p2p *p2p = &c->p2p;
	size_t i;

	if (p2p->index == NULL)
		return NULL;
	for (i = peer_hash(p2p, addr); p2p->index[i] != 0;
	    i = index_next(p2p, i)) {
		struct peer *p = &p2p->peers[p2p->index[i] - 1];

		if (p->addr == addr)
			return p;
	}
	return NULL;
}

/*
 * Peers that never answered (no fresh authentic heartbeat yet), oldest
 * first: the first to go when the table is full.  Links are slot + 1.
 */
static void na_link(struct p2p *p2p, size_t slot)
{
	struct peer *p = &p2p->peers[slot];

	p->na_prev = p2p->na_tail;
	p->na_next = 0;
	if (p2p->na_tail != 0)
		p2p->peers[p2p->na_tail - 1].na_next = (uint16_t)(slot + 1);
	else
		p2p->na_head = (uint16_t)(slot + 1);
	p2p->na_tail = (uint16_t)(slot + 1);
}

static void na_unlink(struct p2p *p2p, size_t slot)
{
	struct peer *p = &p2p->peers[slot];

	if (p->na_prev != 0)
		p2p->peers[p->na_prev - 1].na_next = p->na_next;
	else
		p2p->na_head = p->na_next;
	if (p->na_next != 0)
		p2p->peers[p->na_next - 1].na_prev = p->na_prev;
	else
		p2p->na_tail = p->na_prev;
	p->na_prev = p->na_next = 0;
}

/* The peer in slot answered: it is no longer first to be evicted. */
static void peer_answered(struct p2p *p2p, struct peer *p)
{
	if (p->answered)
		return;
	p->answered = 1;
	na_unlink(p2p, (size_t)(p - p2p->peers));
}

/*
 * Take the peer in slot out of the table: its index entry goes (linear
 * probing: later entries of the run shift back), and the last peer
 * moves into the hole so that peers[0 .. npeers) stays dense.  A moved
 * key is derived again: a peer_key cannot be copied.
 */
static void peer_remove(struct client *c, size_t slot)
{
	struct p2p *p2p = &c->p2p;
	struct peer *p = &p2p->peers[slot], *last;
	size_t i, j, k;

	if (!p->answered)
		na_unlink(p2p, slot);
	i = index_find(p2p, p->addr);
	for (j = index_next(p2p, i); p2p->index[j] != 0;
	    j = index_next(p2p, j)) {
		k = peer_hash(p2p, p2p->peers[p2p->index[j] - 1].addr);
		if (!probe_may_fill(i, j, k))
			continue;
		p2p->index[i] = p2p->index[j];
		i = j;
	}
	p2p->index[i] = 0;
	wipe(p, sizeof(*p));
	last = &p2p->peers[--p2p->npeers];
	if (last == p)
		return;
	p2p->index[index_find(p2p, last->addr)] = (uint16_t)(slot + 1);
	memcpy(p, last, sizeof(*p));
	wipe(last, sizeof(*last));
	peer_key_init(&p->key, c->cfg->password, p->addr);
	if (!p->answered) {
		if (p->na_prev != 0)
			p2p->peers[p->na_prev - 1].na_next =
			    (uint16_t)(slot + 1);
		else
			p2p->na_head = (uint16_t)(slot + 1);
		if (p->na_next != 0)
			p2p->peers[p->na_next - 1].na_prev =
			    (uint16_t)(slot + 1);
		else
			p2p->na_tail = (uint16_t)(slot + 1);
	}
}

/*
 * The table is full: which peer goes?  The oldest that never answered
 * (an insider who makes up thousands of addresses fills the table with
 * those, and real peers, which answer, stay); failing that the one not
 * connected that we heard from longest ago.  -1: every peer is connected.
 */
static long peer_victim(struct p2p *p2p)
{
	size_t i;
	long best = -1;

	if (p2p->na_head != 0)
		return (long)p2p->na_head - 1;
	for (i = 0; i < p2p->npeers; i++)
		if (p2p->peers[i].state != PEER_CONNECTED && (best < 0 ||
		    p2p->peers[i].last_rx_ms < p2p->peers[best].last_rx_ms))
			best = (long)i;
	return best;
}

/*
 * The peer for addr, made in INIT if need be.  NULL for an address that
 * cannot be a peer (outside the tunnel network, ours, the network or
 * broadcast address) and when the table is full of connected peers:
 * whatever the server or the peers send, the table cannot outgrow the
 * network.
 */
static struct peer *peer_get(struct client *c, uint32_t addr)
{
	struct p2p *p2p = &c->p2p;
	struct peer *p;
	size_t i;
	long v;
	char a[16], b[16];

	if ((p = peer_lookup(c, addr)) != NULL)
		return p;
	if ((addr & c->mask) != c->net || addr == c->addr || addr == c->net ||
	    addr == (c->net | ~c->mask) || p2p->cap == 0)
		return NULL;
	if (p2p->npeers == p2p->cap) {
		if ((v = peer_victim(p2p)) < 0) {
			log_debug("p2p: peer table full, %s ignored",
			    ip_str(addr, a));
			return NULL;
		}
		if (log_debug_on)
			log_debug("p2p: peer table full, %s evicted for %s",
			    ip_str(p2p->peers[v].addr, b), ip_str(addr, a));
		p2p->evicted++;
		peer_remove(c, (size_t)v);
	}
	p = &p2p->peers[p2p->npeers];
	memset(p, 0, sizeof(*p));
	p->addr = addr;
	p->state = PEER_INIT;
	p->since_ms = now_ms();
	p->retry_s = PEER_RETRY_MIN_S;
	p->rtt = -1;
	peer_iv_init(&p->iv);
	peer_key_init(&p->key, c->cfg->password, addr);
	for (i = peer_hash(p2p, addr); p2p->index[i] != 0;
	    i = index_next(p2p, i))
		;
	p2p->index[i] = (uint16_t)++p2p->npeers;
	na_link(p2p, p2p->npeers - 1);
	return p;
}

/* Forget every peer and wipe the keys. */
static void peer_table_clear(struct p2p *p2p)
{
	size_t i;

	for (i = 0; i < p2p->npeers; i++)
		wipe(&p2p->peers[i], sizeof(p2p->peers[i]));
	p2p->npeers = 0;
	p2p->na_head = p2p->na_tail = 0;
	if (p2p->index != NULL)
		memset(p2p->index, 0, ((size_t)1 << p2p->index_bits) *
		    sizeof(p2p->index[0]));
}

static void replay_clear(struct p2p *p2p)
{
	if (p2p->win != NULL)
		memset(p2p->win, 0, p2p->nwin * sizeof(p2p->win[0]));
	if (p2p->seen != NULL)
		memset(p2p->seen, 0, p2p->nseen * sizeof(p2p->seen[0]));
}

/*
 * The table is sized from the tunnel network: one peer per host but the
 * network and broadcast addresses and us, at most PEER_MAX.  Each peer
 * slot brings two salt windows (its current salt and one after a
 * restart) and IVSEEN_PER_PEER random ivs.
 */
static size_t peer_capacity(const struct client *c)
{
	uint64_t n = (uint64_t)(uint32_t)~c->mask + 1;

	n = n > 3 ? n - 3 : 1;
	return n < PEER_MAX ? (size_t)n : PEER_MAX;
}

static void p2p_tables_free(struct p2p *p2p)
{
	peer_table_clear(p2p);
	free(p2p->peers);
	free(p2p->index);
	free(p2p->win);
	free(p2p->seen);
	p2p->peers = NULL;
	p2p->index = NULL;
	p2p->win = NULL;
	p2p->seen = NULL;
	p2p->cap = p2p->nwin = p2p->nseen = 0;
	p2p->replay_self = 0;
}

/* 0 ok, -1 out of memory (then P2P stays idle: cap 0). */
static int p2p_tables_alloc(struct p2p *p2p, size_t cap)
{
	unsigned bits = 2;

	p2p_tables_free(p2p);
	while (((size_t)1 << bits) < 2 * cap)
		bits++;
	p2p->peers = calloc(cap, sizeof(p2p->peers[0]));
	p2p->index = calloc((size_t)1 << bits, sizeof(p2p->index[0]));
	p2p->nwin = (size_t)1 << bits;
	p2p->win = calloc(p2p->nwin, sizeof(p2p->win[0]));
	p2p->nseen = (size_t)IVSEEN_PER_PEER << bits >> 1;
	p2p->seen = calloc(p2p->nseen, sizeof(p2p->seen[0]));
	if (p2p->peers == NULL || p2p->index == NULL || p2p->win == NULL ||
	    p2p->seen == NULL) {
		p2p_tables_free(p2p);
		return -1;
	}
	p2p->index_bits = bits;
	p2p->cap = cap;
	return 0;
}

/*
 * Keys and peers belong to one address of ours.  candy.c calls p2p_stop
 * when the address changes; this also catches the first authentication.
 * The replay tables outlive a session when the address (so our key) stays:
 * datagrams seen before a reconnection stay seen.  0 when there is nothing
 * to do yet (P2P off, not authenticated).
 */
static int p2p_ready(struct client *c)
{
	struct p2p *p2p = &c->p2p;
	size_t cap;

	if (p2p->udp_fd < 0 || c->addr == 0)
		return 0;
	if (p2p->self != c->addr) {
		peer_table_clear(p2p);
		cap = peer_capacity(c);
		if (cap != p2p->cap && p2p_tables_alloc(p2p, cap) < 0)
			log_warnx("out of memory for %zu peers: peer-to-peer "
			    "off", cap);
		if (p2p->replay_self != c->addr) {
			/* Tables fresh from calloc (replay_self 0) are not
			 * written again: their pages (some 140 KiB for a /24)
			 * stay untouched until datagrams use them. */
			if (p2p->replay_self != 0)
				replay_clear(p2p);
			p2p->replay_self = c->addr;
		}
		p2p->self = c->addr;
		peer_key_init(&p2p->rxkey, c->cfg->password, c->addr);
		relay_reset(&p2p->relay, c->addr, c->cfg->route);
		p2p->discovery_ms = 0;
	}
	return 1;
}

/* ---- Messages through the server (PROTOCOL 2.6). ---- */

static int server_send(struct client *c, const unsigned char *m, size_t len)
{
	if (c->p2p.server_send != NULL)
		return c->p2p.server_send(c, m, len);
	return client_server_send(c, m, len);
}

/* Our public endpoint, as STUN saw it. */
static void udp4conn_send(struct client *c, uint32_t dst)
{
	unsigned char m[UDP4CONN_LEN];

	m[0] = MSG_UDP4CONN;
	put32(m + 1, c->addr);
	put32(m + 5, dst);
	put32(m + 9, c->p2p.public.ip);
	put16(m + 13, c->p2p.public.port);
	server_send(c, m, sizeof(m));
}

/* Our LAN endpoint (GENERAL subtype 0, LOCALUDP4CONN). */
static void lan_endpoint_send(struct client *c, uint32_t dst)
{
	uint32_t ip = c->cfg->localhost ? c->cfg->localhost : if_lan_address();
	unsigned char m[LOCALUDP4CONN_LEN];

	/* Routable, not usable: ip is one of our own addresses by nature,
	 * which endpoint_usable refuses once own_refresh has read them. */
	if (!endpoint_routable(c, ip, c->p2p.port))
		return;
	m[0] = MSG_GENERAL;
	m[1] = 0;
	put16(m + 2, 0);
	put32(m + 4, c->addr);
	put32(m + 8, dst);
	put32(m + 12, ip);
	put16(m + 16, c->p2p.port);
	server_send(c, m, sizeof(m));
}

static void discovery_send(struct client *c, uint32_t dst)
{
	unsigned char m[DISCOVERY_LEN];

	m[0] = MSG_DISCOVERY;
	put32(m + 1, c->addr);
	put32(m + 5, dst);
	server_send(c, m, sizeof(m));
}

/* ---- The pass's outgoing batch (issue 11). ---- */

/*
 * Every datagram we send (FORWARDs, heartbeats and the other control
 * messages, STUN requests) is sealed into the batch, and the loop sends
 * the batch at the end of each pass (p2p_flush, through client_flush and
 * p2p_tick): one udp_send_batch for all that one pass produced, to any
 * number of peers.  Nothing waits for a batch to fill: a batch is what
 * one pass made.  With UDP_SEGMENT, FORWARDs of equal size to one peer
 * in a row join one entry (a train the kernel cuts); a shorter one ends
 * the train.  Entries leave in the order they were made, so packets of a
 * flow keep theirs.
 */

/* A FORWARD of the batch that UDP failed, opened again (CTR mode) and
 * sent through the server: PMSG_FORWARD and MSG_FORWARD are the same
 * byte. */
static void batch_to_server(struct client *c, uint32_t addr, unsigned char *d,
    size_t n)
{
	struct peer *p = peer_lookup(c, addr);

	if (p == NULL || n <= PEER_OVERHEAD + 1) {
		c->dropped++;
		return;
	}
	peer_open(&p->key, d, n);
	p->tx--;
	p->tx_bytes -= n - PEER_OVERHEAD - 1;
	if (server_send(c, d + PEER_OVERHEAD, n - PEER_OVERHEAD) < 0) {
		c->dropped++;
		return;
	}
	c->tx_server++;
	c->tx_server_bytes += n - PEER_OVERHEAD - 1;
}

/* One datagram of e that UDP failed with err: counted, and a FORWARD
 * goes through the server as a packet p2p_send could not send would. */
static void batch_failed(struct client *c, const struct peer_txent *e,
    unsigned char *d, size_t n, int err)
{
	char s[22];

	c->p2p.tx_err++;
	if (log_debug_on)
		log_debug("p2p: sending to %s: %s", endpoint_str(&e->to, s),
		    strerror(err));
	if (e->forward)
		batch_to_server(c, e->peer, d, n);
}

/* A train the kernel would not cut (no UDP_SEGMENT on this kernel or
 * device) turns GSO off; its datagrams go again one entry each. */
static void batch_train_resend(struct client *c, const struct peer_txent *e)
{
	struct p2p *p2p = &c->p2p;
	struct udp_dgram m[PEER_GSO_SEGS];
	size_t i, off;

	if (p2p->gso)
		log_info("p2p: UDP segmentation refused: one datagram a "
		    "time");
	p2p->gso = 0;
	for (i = 0, off = 0; i < e->n && i < PEER_GSO_SEGS; i++) {
		m[i].buf = p2p->txb + e->off + off;
		m[i].len = e->len - off < e->seg ? e->len - off : e->seg;
		m[i].seg = 0;
		m[i].ip = e->to.ip;
		m[i].port = e->to.port;
		off += m[i].len;
	}
	p2p->tx_calls++;
	udp_send_batch(p2p->udp_fd, m, i);
	while (i-- > 0)
		if (m[i].err != 0)
			batch_failed(c, e, m[i].buf, m[i].len, m[i].err);
}

/* What became of entry e, sent as m (udp_send_batch's err). */
static void batch_entry_done(struct client *c, const struct peer_txent *e,
    const struct udp_dgram *m)
{
	size_t off, k;

	if (m->err == 0)
		return;
	if (e->n > 1 && (m->err == EIO || m->err == EINVAL ||
	    m->err == EOPNOTSUPP || m->err == ENOPROTOOPT)) {
		batch_train_resend(c, e);
		return;
	}
	for (off = 0; off < e->len; off += k) {
		k = e->len - off < e->seg ? e->len - off : e->seg;
		batch_failed(c, e, m->buf + off, k, m->err);
	}
}

/* see candy.h */
void p2p_flush(struct client *c)
{
	struct p2p *p2p = &c->p2p;
	struct udp_dgram m[PEER_TX_ENTRIES];
	size_t i, n = p2p->ntx;

	if (n == 0)
		return;
	for (i = 0; i < n; i++) {
		const struct peer_txent *e = &p2p->txq[i];

		m[i].buf = p2p->txb + e->off;
		m[i].len = e->len;
		m[i].seg = e->n > 1 ? e->seg : 0;
		m[i].ip = e->to.ip;
		m[i].port = e->to.port;
	}
	p2p->tx_calls++;
	if ((p2p->send_batch != NULL ? p2p->send_batch :
	    udp_send_batch)(p2p->udp_fd, m, n) < n)
		for (i = 0; i < n; i++)
			batch_entry_done(c, &p2p->txq[i], &m[i]);
	p2p->ntx = 0;
	p2p->txlen = 0;
}

/* May a FORWARD of n bytes for p join the batch's last entry? */
static int batch_joins(const struct p2p *p2p, const struct peer *p,
    const struct endpoint *to, size_t n)
{
	const struct peer_txent *e;

	if (!p2p->gso || p2p->ntx == 0)
		return 0;
	e = &p2p->txq[p2p->ntx - 1];
	return e->forward && e->open &&
	    e->peer == p->addr && endpoint_eq(&e->to, to) && n <= e->seg &&
	    e->len + n <= PEER_GSO_MAX && e->n < PEER_GSO_SEGS;
}

/*
 * Add m to the batch, to to: sealed with p's key, or as it is when p is
 * NULL (STUN); forward: a FORWARD, which may join a train and goes
 * through the server if UDP fails it.  A full batch is sent first.
 * 0 queued, -1 too large for any datagram.
 */
static int batch_add(struct client *c, struct peer *p,
    const struct endpoint *to, const unsigned char *m, size_t len,
    int forward)
{
	struct p2p *p2p = &c->p2p;
	struct peer_txent *e;
	size_t n = p != NULL ? len + PEER_OVERHEAD : len;
	unsigned char *d;
	int join = forward && batch_joins(p2p, p, to, n);

	if (n > PEER_GSO_MAX)
		return -1;
	if (p2p->txlen + n > PEER_TX_BYTES ||
	    (!join && p2p->ntx == PEER_TX_ENTRIES)) {
		p2p_flush(c);
		join = 0;
	}
	if (!join) {
		e = &p2p->txq[p2p->ntx++];
		e->to = *to;
		e->peer = p != NULL ? p->addr : 0;
		e->off = p2p->txlen;
		e->len = 0;
		e->seg = n;
		e->n = 0;
		e->forward = (unsigned char)forward;
		e->open = 1;
	} else
		e = &p2p->txq[p2p->ntx - 1];
	d = p2p->txb + p2p->txlen;
	if (p != NULL) {
		memcpy(d + PEER_OVERHEAD, m, len);
		peer_seal(&p->key, &p->iv, d, len);
	} else
		memcpy(d, m, len);
	e->len += n;
	e->n++;
	if (n < e->seg)
		e->open = 0;
	p2p->txlen += n;
	return 0;
}

/* ---- Peer datagrams we send. ---- */

/*
 * Seal a control message for p into the batch, to ep.  Only the endpoint
 * fresh heartbeats come from (real) has proved anything; the rest come
 * out of the reflection budget.
 */
static int peer_ctl_send(struct client *c, struct peer *p,
    const struct endpoint *ep, const unsigned char *m, size_t len)
{
	if (ep->ip == 0)
		return -1;
	if (!endpoint_eq(ep, &p->real) && !budget_take(c, ep->ip, now_ms()))
		return -1;
	return batch_add(c, p, ep, m, len, 0);
}

/* 0 in the batch, -1 not (no endpoint, over budget); what UDP then
 * fails is counted by p2p_flush. */
static int heartbeat_send(struct client *c, struct peer *p,
    const struct endpoint *ep)
{
	unsigned char m[PMSG_HEARTBEAT_LEN];

	m[0] = PMSG_HEARTBEAT;
	put32(m + 1, c->addr);
	/* ip and port: the existing client sends garbage here and every
	 * receiver ignores them. */
	memset(m + 5, 0, 6);
	m[11] = (unsigned char)p->ack;
	return peer_ctl_send(c, p, ep, m, sizeof(m));
}

/* A round-trip probe; the timestamp is our monotonic clock. */
static void delay_send(struct client *c, struct peer *p, int64_t now)
{
	unsigned char m[PMSG_DELAY_LEN];

	m[0] = PMSG_DELAY;
	put32(m + 1, c->addr);
	put32(m + 5, p->addr);
	put64(m + 9, (uint64_t)now);
	peer_ctl_send(c, p, &p->real, m, sizeof(m));
}

/*
 * The relay table changed (route.c calls this): tell every connected
 * peer ROUTE (dst, us, rtt).  Poisoned reverse (RFC 2453 3.4.3): the
 * neighbour our route goes through hears that we cannot reach dst, so a
 * lost route cannot bounce between the two of us.
 */
static void relay_announce_cb(void *ctx, uint32_t dst, int32_t rtt)
{
	struct client *c = ctx;
	struct p2p *p2p = &c->p2p;
	uint32_t via = relay_lookup(&p2p->relay, dst);
	unsigned char m[PMSG_ROUTE_LEN];
	size_t i;

	m[0] = PMSG_ROUTE;
	put32(m + 1, dst);
	put32(m + 5, c->addr);
	for (i = 0; i < p2p->npeers; i++) {
		struct peer *p = &p2p->peers[i];

		if (p->state != PEER_CONNECTED || p->addr == dst)
			continue;
		put32(m + 9, (uint32_t)(p->addr == via ? RTT_UNREACHABLE :
		    rtt));
		peer_ctl_send(c, p, &p->real, m, sizeof(m));
	}
}

/* The same for one peer only (relay_announce_each): see delay_input. */
struct route_to {
	struct client *c;
	struct peer *p;
};

static void route_to_cb(void *ctx, uint32_t dst, int32_t rtt)
{
	const struct route_to *r = ctx;
	uint32_t via = relay_lookup(&r->c->p2p.relay, dst);
	unsigned char m[PMSG_ROUTE_LEN];

	if (r->p->addr == dst)
		return;
	m[0] = PMSG_ROUTE;
	put32(m + 1, dst);
	put32(m + 5, r->c->addr);
	put32(m + 9, (uint32_t)(r->p->addr == via ? RTT_UNREACHABLE : rtt));
	peer_ctl_send(r->c, r->p, &r->p->real, m, sizeof(m));
}

/* ---- The state machine (PROTOCOL 5.4). ---- */

static void peer_forget_endpoints(struct peer *p)
{
	memset(&p->pub, 0, sizeof(p->pub));
	memset(&p->lan, 0, sizeof(p->lan));
	memset(&p->real, 0, sizeof(p->real));
	memset(&p->cand, 0, sizeof(p->cand));
	p->cand_tx_ms = 0;
	p->ack = 0;
	p->delay_answered = 0;
	p->delay_ticks = 0;
	p->rtt = -1;
}

/*
 * Every state change goes through here.  Like the existing client, setting
 * the current state again restarts its timer.  INIT, WAITING and FAILED
 * start from scratch: endpoints and ack are forgotten.  WAITING's delay
 * doubles on each WAITING -> INIT and starts again at 30 s on any other
 * way into INIT or FAILED.
 */
static void peer_state_set(struct client *c, struct peer *p,
    enum peer_state to, int64_t now)
{
	enum peer_state from = p->state;
	char a[16], e[22];

	p->since_ms = now;
	if (from == to)
		return;
	log_debug("peer %s: %s -> %s", ip_str(p->addr, a),
	    peer_state_name(from), peer_state_name(to));
	if (to == PEER_INIT && from == PEER_WAITING)
		p->retry_s = p->retry_s * 2 > PEER_RETRY_MAX_S ?
		    PEER_RETRY_MAX_S : p->retry_s * 2;
	else if (to == PEER_INIT || to == PEER_FAILED)
		p->retry_s = PEER_RETRY_MIN_S;
	p->state = to;
	if (from == PEER_CONNECTED) {
		log_info("peer %s lost, traffic goes through the server",
		    ip_str(p->addr, a));
		if (c->cfg->route > 0)
			relay_peer_lost(&c->p2p.relay, p->addr);
	}
	if (to == PEER_INIT || to == PEER_WAITING || to == PEER_FAILED)
		peer_forget_endpoints(p);
	if (to == PEER_CONNECTED) {
		p->last_rx_ms = p->real_rx_ms = now;
		log_info("peer %s connected via %s", ip_str(p->addr, a),
		    endpoint_str(&p->real, e));
		if (c->cfg->route > 0) {
			delay_send(c, p, now);
			relay_announce_all(&c->p2p.relay);
		}
	}
}

/* One tick of one peer: its timers, heartbeats and probes. */
static void peer_tick(struct client *c, struct peer *p, int64_t now,
    int *want_stun)
{
	int64_t age = now - p->since_ms;

	switch (p->state) {
	case PEER_INIT:
	case PEER_FAILED:
		break;
	case PEER_PREPARING:
		if (age >= PEER_SETUP_MS) {
			c->p2p.stun_stale = 1;	/* no answer: resolve again */
			peer_state_set(c, p, PEER_FAILED, now);
			break;
		}
		*want_stun = 1;
		heartbeat_send(c, p, &p->lan);
		break;
	case PEER_SYNCHRONIZING:
		if (age >= PEER_SETUP_MS) {
			peer_state_set(c, p, PEER_FAILED, now);
			break;
		}
		heartbeat_send(c, p, &p->lan);
		break;
	case PEER_CONNECTING:
		if (age >= PEER_SETUP_MS) {
			peer_state_set(c, p, PEER_WAITING, now);
			break;
		}
		heartbeat_send(c, p, &p->pub);
		if (!endpoint_eq(&p->lan, &p->pub))
			heartbeat_send(c, p, &p->lan);
		break;
	case PEER_CONNECTED:
		if (now - p->last_rx_ms >= PEER_LOST_MS) {
			peer_state_set(c, p, PEER_INIT, now);
			break;
		}
		heartbeat_send(c, p, &p->real);
		/* PROTOCOL 6: probe every tick until the first answer
		 * (the peer may turn CONNECTED a tick after us), then every
		 * 60 ticks. */
		if (c->cfg->route > 0 && (!p->delay_answered ||
		    ++p->delay_ticks >= PEER_DELAY_TICKS)) {
			p->delay_ticks = 0;
			delay_send(c, p, now);
		}
		break;
	case PEER_WAITING:
		if (age >= (int64_t)p->retry_s * 1000)
			peer_state_set(c, p, PEER_INIT, now);
		break;
	}
}

/* ---- STUN (PROTOCOL 5.3; the messages are in stun.c). ---- */

/* "stun://host[:port]" into its parts.  0 ok, -1 bad. */
static int stun_uri_parse(const char *uri, char *host, size_t hostlen,
    char *port, size_t portlen)
{
	const char *h, *colon;
	size_t n;

	if (strncmp(uri, "stun://", 7) != 0)
		return -1;
	h = uri + 7;
	colon = strchr(h, ':');
	n = colon != NULL ? (size_t)(colon - h) : strlen(h);
	if (n == 0 || n >= hostlen || memchr(h, '/', n) != NULL)
		return -1;
	memcpy(host, h, n);
	host[n] = '\0';
	if (colon == NULL) {
		snprintf(port, portlen, "%s", STUN_DEFAULT_PORT);
		return 0;
	}
	colon++;
	if (strlen(colon) >= portlen || port_parse(colon) < 0)
		return -1;
	snprintf(port, portlen, "%s", colon);
	return 0;
}

/*
 * The STUN server's address into *ep: 0, or -1 with a warning.  An IPv4
 * literal is read without getaddrinfo, whose code (NSS, the resolver)
 * would stay resident in the client for nothing (issue 11); a name is
 * resolved.  XXX getaddrinfo blocks the poll loop while the resolver
 * waits; it runs only at start and, at most every 10 s, while a peer waits
 * for STUN that does not answer.
 */
static int stun_lookup(const struct p2p *p2p, struct endpoint *ep)
{
	struct addrinfo hints, *ai;
	int r;

	if (ip_parse(p2p->stun_host, &ep->ip) == 0 &&
	    (r = port_parse(p2p->stun_port)) > 0) {
		ep->port = (uint16_t)r;
		return 0;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_DGRAM;
	if ((r = getaddrinfo(p2p->stun_host, p2p->stun_port, &hints,
	    &ai)) != 0) {
		log_warnx("cannot resolve STUN server %s: %s", p2p->stun_host,
		    gai_strerror(r));
		return -1;
	}
	ep->ip = ntohl(((struct sockaddr_in *)(void *)ai->ai_addr)->
	    sin_addr.s_addr);
	ep->port = ntohs(((struct sockaddr_in *)(void *)ai->ai_addr)->
	    sin_port);
	freeaddrinfo(ai);
	return 0;
}

/* Look the STUN server up again.  A failure keeps the address we had, if
 * any, and is retried later. */
static void stun_resolve(struct client *c, int64_t now)
{
	struct p2p *p2p = &c->p2p;
	struct endpoint ep;
	char e[22];

	p2p->stun_resolved_ms = now;
	if (stun_lookup(p2p, &ep) < 0)
		return;
	if (!endpoint_eq(&ep, &p2p->stun))
		log_debug("p2p: STUN server %s is %s", p2p->stun_host,
		    endpoint_str(&ep, e));
	p2p->stun = ep;
	p2p->stun_stale = 0;
}

static void stun_request_send(struct client *c, int64_t now)
{
	struct p2p *p2p = &c->p2p;
	unsigned char req[STUN_REQUEST_LEN];

	if ((p2p->stun.ip == 0 || p2p->stun_stale) &&
	    now - p2p->stun_resolved_ms >= STUN_RESOLVE_MS)
		stun_resolve(c, now);
	if (p2p->stun.ip == 0)
		return;
	/* Retransmissions keep the transaction id (RFC 5389 §7.2.1). */
	stun_request_build(req, p2p->stun_tid);
	batch_add(c, NULL, &p2p->stun, req, sizeof(req), 0);
}

/* Our public endpoint: send it to every PREPARING peer and move on. */
static void stun_input(struct client *c, const unsigned char *d, size_t n,
    int64_t now)
{
	struct p2p *p2p = &c->p2p;
	struct endpoint ep;
	char e[22];
	size_t i;

	if (stun_response_parse(d, n, p2p->stun_tid, &ep.ip, &ep.port) !=
	    WS_DONE) {
		log_debug("p2p: not a STUN answer to our request, ignored");
		return;
	}
	rand_bytes(p2p->stun_tid, sizeof(p2p->stun_tid));
	if (!endpoint_eq(&ep, &p2p->public))
		log_debug("p2p: public endpoint %s", endpoint_str(&ep, e));
	p2p->public = ep;
	for (i = 0; i < p2p->npeers; i++) {
		struct peer *p = &p2p->peers[i];

		if (p->state != PEER_PREPARING)
			continue;
		/* Our LAN endpoint too: when both sides start at once, each
		 * is past PREPARING when the other's UDP4CONN comes, which
		 * then asks for nothing, and two clients behind one NAT
		 * (no hairpin) would never learn where to meet. */
		udp4conn_send(c, p->addr);
		lan_endpoint_send(c, p->addr);
		peer_state_set(c, p, p->pub.ip != 0 ? PEER_CONNECTING :
		    PEER_SYNCHRONIZING, now);
	}
}

/* ---- Replays (RFC 6479; WireGuard's counter window). ---- */

/*
 * Every authentic datagram passes here before it is acted on; one whose
 * iv was seen before is dropped and counted (rx_replay).
 *
 * Which table an iv goes to depends on its first two bytes alone: the
 * mark (PEER_IV_MARK0/1) says "salt and counter", anything else says
 * "random".  Nothing else counts (not the sender a datagram claims, not
 * where it came from, not our state), and the iv is authenticated: a
 * replay cannot change it without failing authentication, so it always
 * meets the same table, and the same entry, as the original.  Our ivs
 * always carry the mark, so they never reach the weaker random cache.  A
 * random iv that happens to begin with the mark (1 in 65536) is taken
 * for a salt: it costs a window slot, and the datagram is accepted.
 *
 * Ours: one window per salt, keyed by the salt itself, not by the peer
 * the datagram claims to come from.  A salt belongs to one sender
 * sending to one receiver (peer_iv_init per peer), so that is a window
 * per peer and per restart of it, and a relayed datagram needs no
 * sender to be named.  A restarted peer's new salt gets a new window; the
 * old salt keeps its own, untouched: an old salt replayed meets its old
 * window and is refused, it never resets anything.  PEER_WINDOW_BITS
 * (1024, less the 64 of the block being reused as RFC 6479 does) is how
 * far behind the newest counter a datagram may arrive: senders count per
 * receiver, so this is reordering by 960 datagrams, about 10 ms at
 * 100,000 datagrams per second, in 144 bytes a salt.  The table holds two
 * salts per peer slot (the current one and one more), the least recently
 * used replaced: a dead salt goes first.  XXX a salt whose window was
 * replaced (after many restarts of many peers), and every salt after a
 * restart of ours, can be replayed once more: nothing in an iv says when
 * it was made.  The tables outlive a reconnection with the same address.
 *
 * Random (the existing Candy): IVSEEN_PER_PEER ivs per peer slot are
 * remembered, PEER_WAYS to a bucket, the oldest replaced: a replay
 * is caught while the iv is among roughly the last nseen random ivs
 * received.  A datagram replayed 100 times in a row is delivered once.
 */
static size_t replay_bucket(const struct p2p *p2p, const unsigned char *b,
    size_t n, size_t slots)
{
	uint32_t h = p2p->replay_seed;
	size_t i;

	for (i = 0; i + 4 <= n; i += 4) {
		h ^= get32(b + i);
		h *= 0x9e3779b1u;
		h ^= h >> 15;
	}
	return ((size_t)h & (slots / PEER_WAYS - 1)) * PEER_WAYS;
}

/* RFC 6479: bit (c % PEER_WINDOW_BITS) stands for counter c; moving top
 * forward clears the 64-bit blocks it passes.  0 new, -1 seen or too old. */
static int window_check(struct peer_window *w, uint32_t c)
{
	const uint32_t nblocks = PEER_WINDOW_BITS / 64;
	uint32_t blk = c / 64, top = w->top / 64, i, d;
	uint64_t bit = (uint64_t)1 << (c % 64);

	if (c > w->top) {
		d = blk - top < nblocks ? blk - top : nblocks;
		for (i = 1; i <= d; i++)
			w->bits[(top + i) % nblocks] = 0;
		w->top = c;
	} else if (w->top - c >= PEER_WINDOW_BITS - 64)
		return -1;
	if (w->bits[blk % nblocks] & bit)
		return -1;
	w->bits[blk % nblocks] |= bit;
	return 0;
}

static int replay_salt(struct p2p *p2p, const unsigned char *iv)
{
	size_t base = replay_bucket(p2p, iv, 8, p2p->nwin), i;
	struct peer_window *w, *old = NULL;

	for (i = 0; i < PEER_WAYS; i++) {
		w = &p2p->win[base + i];
		if (w->stamp != 0 && memcmp(w->salt, iv, 8) == 0) {
			w->stamp = stamp_next(p2p);
			return window_check(w, get32(iv + 8));
		}
		if (old == NULL || w->stamp == 0 || (old->stamp != 0 &&
		    stamp_older(w->stamp, old->stamp)))
			old = w;
	}
	memset(old, 0, sizeof(*old));
	memcpy(old->salt, iv, 8);
	old->top = get32(iv + 8);
	old->stamp = stamp_next(p2p);
	return window_check(old, old->top);
}

static int replay_random(struct p2p *p2p, const unsigned char *iv)
{
	size_t base = replay_bucket(p2p, iv, PEER_IV_LEN, p2p->nseen), i;
	struct peer_ivseen *e, *old = NULL;

	for (i = 0; i < PEER_WAYS; i++) {
		e = &p2p->seen[base + i];
		if (e->stamp != 0 && memcmp(e->iv, iv, PEER_IV_LEN) == 0)
			return -1;
		if (old == NULL || e->stamp == 0 || (old->stamp != 0 &&
		    stamp_older(e->stamp, old->stamp)))
			old = e;
	}
	memcpy(old->iv, iv, PEER_IV_LEN);
	old->stamp = stamp_next(p2p);
	return 0;
}

/* 0: first time (now remembered); -1: a replay, or no tables. */
static int replay_check(struct p2p *p2p, const unsigned char *iv)
{
	if (p2p->win == NULL || p2p->seen == NULL)
		return -1;
	if (iv[0] == PEER_IV_MARK0 && iv[1] == PEER_IV_MARK1)
		return replay_salt(p2p, iv);
	return replay_random(p2p, iv);
}

/* ---- Peer datagrams we receive. ---- */

/*
 * A heartbeat came from ep: that is where the peer can be reached, which
 * may not be what it told us (a NAT that picked another port).  A private
 * source is the LAN endpoint and is preferred as the one we use.  This is
 * the setup (PROTOCOL 5): the heartbeat is fresh (replay_check) and the
 * peer carries no traffic yet; once CONNECTED, peer_endpoint_move
 * decides.
 */
static void peer_endpoint_learn(struct peer *p, const struct endpoint *ep)
{
	int private = ip_is_private(ep->ip);

	if (private)
		p->lan = *ep;
	else
		p->pub = *ep;
	if (p->real.ip != 0 && !private && ip_is_private(p->real.ip))
		return;
	p->real = *ep;
}

/*
 * A fresh authentic heartbeat from a connected peer, from somewhere else
 * than real: its NAT may have moved it, or someone replays a heartbeat
 * captured earlier from an address of their own (the random ivs of the
 * existing Candy are remembered for a while only).  The new place becomes
 * real only when all of these hold:
 *   - we have sent it a heartbeat (at most one a tick, out of the
 *     reflection budget) and a fresh heartbeat came from it after that:
 *     it answers;
 *   - real has been silent PEER_MOVE_QUIET_MS: a peer that still talks
 *     from its old place has not moved, whatever else arrives (this needs
 *     nothing from the existing Candy, which only sends heartbeats);
 *   - the last move was PEER_MOVE_MIN_MS ago or more.
 * Until then heartbeats from the candidate do not count as the peer's
 * (last_rx_ms): if real stays silent the peer is lost as before.
 */
static void peer_endpoint_move(struct client *c, struct peer *p,
    const struct endpoint *from, int64_t now)
{
	char a[16], e[22], f[22];

	if (!endpoint_eq(from, &p->cand)) {
		p->cand = *from;
		p->cand_tx_ms = 0;
	}
	if (p->cand_tx_ms != 0 && p->cand_tx_ms < now &&
	    now - p->real_rx_ms >= PEER_MOVE_QUIET_MS &&
	    (p->moved_ms == 0 || now - p->moved_ms >= PEER_MOVE_MIN_MS)) {
		log_info("peer %s moved from %s to %s", ip_str(p->addr, a),
		    endpoint_str(&p->real, e), endpoint_str(from, f));
		if (ip_is_private(from->ip))
			p->lan = *from;
		else
			p->pub = *from;
		p->real = *from;
		memset(&p->cand, 0, sizeof(p->cand));
		p->cand_tx_ms = 0;
		p->moved_ms = p->real_rx_ms = p->last_rx_ms = now;
		c->p2p.moved++;
		return;
	}
	if ((p->cand_tx_ms == 0 || now - p->cand_tx_ms >= PEER_TICK_MS) &&
	    heartbeat_send(c, p, &p->cand) == 0)
		p->cand_tx_ms = now;
}

static void heartbeat_input(struct client *c, const struct endpoint *from,
    unsigned char *m, size_t len, int64_t now)
{
	struct peer *p = peer_lookup(c, get32(m + 1));
	char a[16], e[22];

	if (p == NULL || p->state == PEER_INIT || p->state == PEER_WAITING ||
	    p->state == PEER_FAILED)
		return;
	if (!endpoint_usable(c, from->ip, from->port)) {
		log_debug("peer %s: heartbeat from %s ignored (not a peer's "
		    "endpoint)", ip_str(p->addr, a), endpoint_str(from, e));
		return;
	}
	peer_answered(&c->p2p, p);
	if (p->state == PEER_CONNECTED && p->real.ip != 0 &&
	    !endpoint_eq(from, &p->real)) {
		peer_endpoint_move(c, p, from, now);
		return;
	}
	peer_endpoint_learn(p, from);
	if (endpoint_eq(from, &p->real))
		p->real_rx_ms = now;
	p->ack = 1;
	p->last_rx_ms = now;
	if (m[11] != 0 && p->state != PEER_CONNECTED)
		peer_state_set(c, p, PEER_CONNECTED, now);
}

/* A packet from a peer: ours, or to be relayed (PROTOCOL 6). */
/* ---- The receive queue's AQM (issue 11). ---- */

/* floor(sqrt(n)), by bits. */
static uint32_t isqrt(uint32_t n)
{
	uint32_t r = 0, b = 1u << 30;

	while (b > n)
		b >>= 2;
	while (b != 0) {
		if (n >= r + b) {
			n -= r + b;
			r = (r >> 1) + b;
		} else
			r >>= 1;
		b >>= 2;
	}
	return r;
}

/* RFC 8289 §5.5: the next drop comes interval / sqrt(count) after t
 * (sqrt in 1/1024ths; past 4095 drops the spacing stays as it is). */
static int64_t codel_control_law(int64_t t, uint32_t count)
{
	uint32_t q = isqrt((count < 4096 ? count : 4095) << 20);

	return t + (int64_t)AQM_INTERVAL_US * 1024 / (q ? q : 1);
}

/* see candy.h.  RFC 8289 §5.4, one packet per call: a standing wait is
 * one that has stayed above the target for a whole interval. */
int codel_drop(struct codel *q, int64_t now_us, int64_t sojourn_us)
{
	int standing = 0;
	uint32_t delta;

	if (sojourn_us < AQM_TARGET_US)
		q->first_above_us = 0;
	else if (q->first_above_us == 0)
		q->first_above_us = now_us + AQM_INTERVAL_US;
	else if (now_us >= q->first_above_us)
		standing = 1;
	if (q->dropping) {
		if (!standing) {
			q->dropping = 0;
			return 0;
		}
		if (now_us < q->drop_next_us)
			return 0;
		q->count++;
		q->drop_next_us = codel_control_law(q->drop_next_us, q->count);
		return 1;
	}
	if (!standing)
		return 0;
	/* Dropping again soon after the last time: start near the rate
	 * that worked then (§5.6). */
	q->dropping = 1;
	delta = q->count - q->lastcount;
	q->count = delta > 1 && now_us - q->drop_next_us <
	    16 * (int64_t)AQM_INTERVAL_US ? delta : 1;
	q->drop_next_us = codel_control_law(now_us, q->count);
	q->lastcount = q->count;
	return 1;
}

/* see candy.h */
int aqm_bulk(const unsigned char *pkt, size_t len)
{
	return len >= AQM_BULK_MIN && len >= IP_HDR_LEN && pkt[9] != 1;
}

/* see candy.h */
int aqm_mark(unsigned char *pkt, size_t len)
{
	uint32_t sum;
	uint16_t old, new;

	if (len < IP_HDR_LEN || (pkt[1] & 3) == 0)
		return 0;
	if ((pkt[1] & 3) == 3)
		return 1;	/* marked already */
	/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), on the word holding
	 * the TOS byte. */
	old = get16(pkt);
	pkt[1] |= 3;
	new = get16(pkt);
	sum = (uint32_t)(uint16_t)~get16(pkt + 10) + (uint16_t)~old + new;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	put16(pkt + 10, (uint16_t)~sum);
	return 1;
}

/* see candy.h */
int aqm_drop(struct codel *q, int64_t now_us, int64_t waited_us,
    unsigned char *pkt, size_t len)
{
	if (waited_us < 0 || !aqm_bulk(pkt, len) ||
	    !codel_drop(q, now_us, waited_us))
		return 0;
	if (aqm_mark(pkt, len)) {
		q->marked++;
		return 0;
	}
	q->dropped++;
	return 1;
}

static void forward_input(struct client *c, const struct endpoint *from,
    unsigned char *m, size_t len, int64_t now)
{
	unsigned char *pkt = m + 1;
	size_t n = len - 1;
	struct peer *p;

	if (n < IP_HDR_LEN || pkt[0] >> 4 != 4) {
		c->dropped++;
		return;
	}
	if ((p = peer_lookup(c, get32(pkt + 12))) != NULL) {
		p->rx++;
		p->rx_bytes += n;
	}
	/* A bulk packet that waited a standing while in our receive
	 * buffer is dropped or marked (struct codel). */
	if (aqm_drop(&c->p2p.aqm, c->p2p.rx_now_us, c->p2p.rx_waited_us,
	    pkt, n))
		return;
	if (get32(pkt + 16) == c->addr)
		client_deliver(c, pkt, n);
	else if (c->cfg->route > 0 && n <= PKT_MAX - IP_HDR_LEN - 1)
		client_route(c, pkt, n, 1);
	else
		c->dropped++;	/* we do not relay: nobody should ask us */
}

/*
 * DELAY (src, dst, timestamp): for us, send it back to where it came
 * from, unchanged (the sender may be CONNECTED a tick before we are);
 * our own coming back gives the round trip to dst.
 */
static void delay_input(struct client *c, const struct endpoint *from,
    unsigned char *m, size_t len, int64_t now)
{
	uint32_t src = get32(m + 1), dst = get32(m + 5);
	struct peer *p;
	int64_t ts, rtt;
	int first;

	if (dst == c->addr && src != c->addr) {
		if ((p = peer_lookup(c, src)) != NULL &&
		    endpoint_usable(c, from->ip, from->port)) {
			peer_ctl_send(c, p, from, m, PMSG_DELAY_LEN);
			/* This answer lets the prober measure us, and it
			 * ignores our ROUTEs until then: what we announced
			 * when we measured it first was lost on it. */
			if (c->cfg->route > 0 && p->state == PEER_CONNECTED) {
				struct route_to r;

				r.c = c;
				r.p = p;
				relay_announce_each(&c->p2p.relay, route_to_cb,
				    &r);
			}
		}
		return;
	}
	if (src != c->addr || c->cfg->route <= 0 ||
	    (p = peer_lookup(c, dst)) == NULL || p->state != PEER_CONNECTED)
		return;
	/* Not a timestamp of ours: from the future, or older than an rtt
	 * can be.  Checked before subtracting: a peer can send one near
	 * INT64_MIN, and now - ts would overflow. */
	ts = (int64_t)get64(m + 9);
	if (ts > now || ts < now - INT32_MAX)
		return;
	rtt = now - ts;
	first = !p->delay_answered;
	p->delay_answered = 1;
	p->delay_ticks = 0;
	p->rtt = (int32_t)rtt;
	relay_direct(&c->p2p.relay, p->addr, p->rtt);
	if (first)	/* it can use our routes now that it is measured */
		relay_announce_all(&c->p2p.relay);
}

/* ROUTE (dst, next, rtt) from the connected neighbour next. */
static void route_input(struct client *c, const struct endpoint *from,
    unsigned char *m, size_t len, int64_t now)
{
	uint32_t dst = get32(m + 1), next = get32(m + 5);
	struct peer *p;

	if (c->cfg->route <= 0 || (dst & c->mask) != c->net ||
	    (p = peer_lookup(c, next)) == NULL || p->state != PEER_CONNECTED)
		return;
	relay_update(&c->p2p.relay, dst, next, (int32_t)get32(m + 9));
}

typedef void pmsg_handler(struct client *c, const struct endpoint *from,
    unsigned char *m, size_t len, int64_t now);

static const struct {
	int type;
	size_t minlen;
	pmsg_handler *fn;
} pmsg_handlers[] = {
	{ PMSG_HEARTBEAT, PMSG_HEARTBEAT_LEN, heartbeat_input },
	{ PMSG_FORWARD, 1, forward_input },
	{ PMSG_DELAY, PMSG_DELAY_LEN, delay_input },
	{ PMSG_ROUTE, PMSG_ROUTE_LEN, route_input },
};

static void datagram_input(struct client *c, const struct endpoint *from,
    unsigned char *d, size_t n, int64_t now)
{
	unsigned char *m = d + PEER_OVERHEAD;
	size_t i, len = n - PEER_OVERHEAD;
	char e[22];

	if (n <= PEER_OVERHEAD || peer_open(&c->p2p.rxkey, d, n) < 0) {
		c->p2p.rx_bad++;
		if (log_debug_on)
			log_debug("p2p: datagram from %s fails "
			    "authentication", endpoint_str(from, e));
		return;
	}
	if (replay_check(&c->p2p, d) < 0) {
		c->p2p.rx_replay++;
		if (log_debug_on)
			log_debug("p2p: datagram from %s seen before, "
			    "dropped", endpoint_str(from, e));
		return;
	}
	for (i = 0; i < sizeof(pmsg_handlers) / sizeof(pmsg_handlers[0]); i++)
		if (pmsg_handlers[i].type == m[0]) {
			if (len >= pmsg_handlers[i].minlen)
				pmsg_handlers[i].fn(c, from, m, len, now);
			return;
		}
}

/* ---- Messages from the server. ---- */

/* UDP4CONN (src, dst, ip, port): the peer's public endpoint. */
static void udp4conn_input(struct client *c, const unsigned char *m,
    int64_t now)
{
	uint32_t src = get32(m + 1);
	struct endpoint ep;
	struct peer *p;

	if (get32(m + 5) != c->addr || (p = peer_get(c, src)) == NULL)
		return;
	ep.ip = get32(m + 9);
	ep.port = get16(m + 13);
	if (endpoint_usable(c, ep.ip, ep.port))
		p->pub = ep;
	switch (p->state) {
	case PEER_CONNECTED:
	case PEER_CONNECTING:
		break;
	case PEER_SYNCHRONIZING:
		peer_state_set(c, p, PEER_CONNECTING, now);
		break;
	default:
		peer_state_set(c, p, PEER_PREPARING, now);
		lan_endpoint_send(c, src);
		break;
	}
}

/* GENERAL subtype 0 (src, dst, ip, port): the peer's LAN endpoint. */
static void general_input(struct client *c, const unsigned char *m,
    size_t len)
{
	struct endpoint ep;
	struct peer *p;

	if (m[1] != 0 || len < LOCALUDP4CONN_LEN || get32(m + 8) != c->addr ||
	    (p = peer_get(c, get32(m + 4))) == NULL)
		return;
	ep.ip = get32(m + 12);
	ep.port = get16(m + 16);
	if (endpoint_usable(c, ep.ip, ep.port))
		p->lan = ep;
}

/* DISCOVERY (src, dst): answer a broadcast; either way, try the peer. */
static void discovery_input(struct client *c, const unsigned char *m,
    int64_t now)
{
	uint32_t src = get32(m + 1), dst = get32(m + 5);
	struct peer *p;

	if ((dst != c->addr && dst != ADDR_BROADCAST) ||
	    (p = peer_get(c, src)) == NULL)
		return;
	if (dst == ADDR_BROADCAST)
		discovery_send(c, src);
	if (p->state == PEER_INIT)
		peer_state_set(c, p, PEER_PREPARING, now);
}

/* ---- What candy.c calls (contracts in candy.h). ---- */

int p2p_start(struct client *c)
{
	struct p2p *p2p = &c->p2p;
	const struct config *cfg = c->cfg;
	struct sockaddr_in sa;
	socklen_t salen = sizeof(sa);
	int fd;

	p2p->udp_fd = -1;
	if (cfg->stun[0] == '\0')
		return 0;
	if (stun_uri_parse(cfg->stun, p2p->stun_host, sizeof(p2p->stun_host),
	    p2p->stun_port, sizeof(p2p->stun_port)) < 0) {
		log_warnx("bad --stun `%s'", cfg->stun);
		return -1;
	}
	if (relay_init(&p2p->relay, cfg->route > 0 ? PEER_MAX : 0,
	    relay_announce_cb, c) < 0) {
		log_warnx("out of memory for the relay table");
		return -1;
	}
	if ((fd = socket(AF_INET, SOCK_DGRAM, 0)) < 0) {
		log_warn("UDP socket");
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	sa.sin_port = htons((uint16_t)cfg->port);
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &salen) < 0) {
		log_warn("cannot use UDP port %d", cfg->port);
		close(fd);
		return -1;
	}
	p2p->udp_fd = fd;
	p2p->port = ntohs(sa.sin_port);
	/* The measured loss at speed was this socket's receive queue. */
	udp_buffers_raise(fd, PEER_RCVBUF, PEER_SNDBUF);
	if (p2p->txb == NULL && ((p2p->txb = malloc(PEER_TX_BYTES)) == NULL ||
	    (p2p->rxb = malloc(PEER_RX_BYTES)) == NULL)) {
		log_warnx("out of memory for the UDP batches");
		close(fd);
		return -1;
	}
	if (!cfg->no_offload)
		p2p->gro = p2p->gso = udp_offload_on(fd);
	p2p->rx_waited_us = -1;
	if (!udp_timestamps_on(fd))
		log_debug("p2p: no receive timestamps: no AQM");
	p2p->rxslot = p2p->gro ? PEER_DGRAM_MAX : PEER_DGRAM_ONE;
	p2p->rxslots = PEER_RX_BYTES / (PKT_HEADROOM + p2p->rxslot);
	if (p2p->rxslots > PEER_RX_SLOTS)
		p2p->rxslots = PEER_RX_SLOTS;
	rand_bytes(&p2p->replay_seed, sizeof(p2p->replay_seed));
	rand_bytes(p2p->stun_tid, sizeof(p2p->stun_tid));
	stun_resolve(c, now_ms());
	log_debug("p2p: UDP port %u, STUN server %s port %s",
	    (unsigned)p2p->port, p2p->stun_host, p2p->stun_port);
	return 0;
}

void p2p_stop(struct client *c)
{
	struct p2p *p2p = &c->p2p;

	if (p2p->udp_fd < 0)
		return;
	p2p_flush(c);
	peer_table_clear(p2p);
	peer_key_wipe(&p2p->rxkey);
	p2p->self = 0;
	relay_reset(&p2p->relay, 0, c->cfg->route);
}

int64_t p2p_tick(struct client *c, int64_t now)
{
	struct p2p *p2p = &c->p2p;
	int want_stun = 0;
	size_t i;

	if (!p2p_ready(c))
		return now + PEER_TICK_MS;
	p2p->ticks++;
	own_refresh(c, now);
	for (i = 0; i < p2p->npeers; i++)
		peer_tick(c, &p2p->peers[i], now, &want_stun);
	if (want_stun)
		stun_request_send(c, now);
	if (c->cfg->discovery > 0 && now >= p2p->discovery_ms) {
		discovery_send(c, ADDR_BROADCAST);
		p2p->discovery_ms = now + (int64_t)c->cfg->discovery * 1000;
	}
	/* Announcements go out on change only: repeat them now and then
	 * for peers that missed one. */
	if (c->cfg->route > 0 && p2p->ticks % PEER_DELAY_TICKS == 0)
		relay_announce_all(&p2p->relay);
	p2p_flush(c);	/* the tick's heartbeats, probes and STUN at once */
	return now + PEER_TICK_MS;
}

/* One received entry: a datagram, or with UDP_GRO several of seg bytes
 * from one sender, each checked on its own (replays too). */
static void p2p_entry_input(struct client *c, const struct udp_dgram *m)
{
	struct endpoint from;
	size_t seg = m->seg, off, k;

	from.ip = m->ip;
	from.port = m->port;
	c->p2p.rx_waited_us = m->waited_us;
	/* Read even when not ready, so that poll does not spin. */
	if (!p2p_ready(c) || from.ip == 0)
		return;
	if (endpoint_eq(&from, &c->p2p.stun)) {
		stun_input(c, m->buf, m->len, now_ms());
		return;
	}
	if (seg == 0)
		seg = m->len;
	for (off = 0; off < m->len || off == 0; off += k) {
		k = m->len - off < seg ? m->len - off : seg;
		datagram_input(c, &from, m->buf + off, k, now_ms());
		if (k == 0)
			break;
	}
}

/*
 * The socket is readable: the ring filled at once (recvmmsg), until a
 * read finds the queue drained or UDP_BURST entries came in.
 */
void p2p_udp_input(struct client *c)
{
	struct p2p *p2p = &c->p2p;
	struct udp_dgram m[PEER_RX_SLOTS];
	size_t i, total = 0, bytes = 0;
	int n;

	if (p2p->udp_fd < 0)
		return;
	while (total < UDP_BURST && bytes < UDP_PASS_BYTES) {
		for (i = 0; i < p2p->rxslots; i++) {
			m[i].buf = p2p->rxb + i * (PKT_HEADROOM +
			    p2p->rxslot) + PKT_HEADROOM;
			m[i].room = p2p->rxslot;
		}
		if ((n = udp_recv_batch(p2p->udp_fd, m, p2p->rxslots)) <= 0) {
			if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR)
				log_debug("p2p: receiving: %s",
				    strerror(errno));
			return;
		}
		p2p->rx_calls++;
		p2p->rx_now_us = now_us();
		for (i = 0; i < (size_t)n; i++) {
			bytes += m[i].len;
			p2p_entry_input(c, &m[i]);
		}
		if ((size_t)n < p2p->rxslots)
			return;		/* drained */
		total += (size_t)n;
	}
}

void p2p_server_msg(struct client *c, const unsigned char *m, size_t len)
{
	if (!p2p_ready(c) || len == 0)
		return;
	switch (m[0]) {
	case MSG_UDP4CONN:
		if (len >= UDP4CONN_LEN)
			udp4conn_input(c, m, now_ms());
		break;
	case MSG_DISCOVERY:
		if (len >= DISCOVERY_LEN)
			discovery_input(c, m, now_ms());
		break;
	case MSG_GENERAL:
		if (len >= GENERAL_HDR_LEN)
			general_input(c, m, len);
		break;
	}
}

void p2p_saw_forward(struct client *c, uint32_t src)
{
	struct peer *p;

	if (!p2p_ready(c) || (p = peer_get(c, src)) == NULL)
		return;
	if (p->state == PEER_INIT)
		peer_state_set(c, p, PEER_PREPARING, now_ms());
}

/*
 * PROTOCOL 6: through the relay's next hop if it is connected, else
 * straight to dst if it is.  The packet is sealed in place: FORWARD's type
 * byte, then iv and tag, go into the caller's headroom.
 */
int p2p_send(struct client *c, uint32_t dst, unsigned char *pkt, size_t len)
{
	struct p2p *p2p = &c->p2p;
	struct peer *p = NULL;
	uint32_t next;

	if (!p2p_ready(c))
		return 0;
	if (c->cfg->route > 0 && (next = relay_lookup(&p2p->relay, dst)) != 0 &&
	    (p = peer_lookup(c, next)) != NULL && p->state != PEER_CONNECTED)
		p = NULL;
	if (p == NULL && ((p = peer_lookup(c, dst)) == NULL ||
	    p->state != PEER_CONNECTED))
		return 0;
	pkt[-1] = PMSG_FORWARD;
	if (batch_add(c, p, &p->real, pkt - 1, len + 1, 1) < 0)
		return 0;
	p->tx++;
	p->tx_bytes += len;
	return 1;
}
