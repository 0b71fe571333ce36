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
 * readable, messages from the server, packets to send.  Memory is taken in
 * p2p_start only; the table never holds more than PEER_MAX peers, nor any
 * address outside the tunnel network.
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
#define PEER_INDEX_BITS		13
#define PEER_INDEX_SIZE		(1u << PEER_INDEX_BITS)	/* 2 * PEER_MAX */
#define UDP_BURST		64	/* datagrams read per p2p_udp_input */
#define IP_HDR_LEN		20
#define STUN_DEFAULT_PORT	"3478"
#define STUN_RESOLVE_MS		10000	/* between two name resolutions */
#define ADDR_BROADCAST		0xffffffffu

/* ---- Datagram encryption (PROTOCOL 5.1). ---- */

static void wipe(void *p, size_t n)
{
	volatile unsigned char *v = p;

	while (n--)
		*v++ = 0;
}

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
 * datagrams per key; a random 64-bit salt per sender with a 32-bit counter
 * never repeats within a sender and collides across senders only if two
 * salts do.  Receivers take any iv, so this is our choice alone.
 */
/* see candy.h */
size_t peer_seal(struct peer_key *k, struct peer_iv *iv, unsigned char *d,
    size_t n)
{
	memcpy(d, iv->salt, sizeof(iv->salt));
	put32(d + sizeof(iv->salt), iv->count);
	if (++iv->count == 0)
		rand_bytes(iv->salt, sizeof(iv->salt));
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
 * Whether peer datagrams may go to ip:port.  An address inside the tunnel
 * network or an SD-WAN destination is routed into our own TUN device: the
 * "direct" path would ride on the tunnel it is meant to replace.  The
 * existing client gives up LAN endpoints altogether once it has SD-WAN
 * routes; we refuse only the endpoints that would loop.
 */
static int endpoint_usable(const struct client *c, uint32_t ip, uint16_t port)
{
	const struct config *cfg = c->cfg;
	int i;

	if (ip == 0 || port == 0 || ip >> 24 == 0 || ip >= 0xe0000000u)
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

static int udp_send(struct client *c, const struct endpoint *ep,
    const unsigned char *d, size_t n)
{
	struct sockaddr_in sa;
	char e[22];

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(ep->ip);
	sa.sin_port = htons(ep->port);
	if (sendto(c->p2p.udp_fd, d, n, 0, (struct sockaddr *)&sa,
	    sizeof(sa)) == (ssize_t)n)
		return 0;
	c->p2p.tx_err++;
	if (log_debug_on)
		log_debug("p2p: sending to %s: %s", endpoint_str(ep, e),
		    strerror(errno));
	return -1;
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

static size_t peer_hash(uint32_t addr)
{
	return (size_t)((addr * 2654435761u) >> (32 - PEER_INDEX_BITS));
}

/* see candy.h */
struct peer *peer_lookup(struct client *c, uint32_t addr)
{
	struct p2p *p2p = &c->p2p;
	size_t i;

	if (p2p->index == NULL)
		return NULL;
	for (i = peer_hash(addr); p2p->index[i] != 0;
	    i = (i + 1) & (PEER_INDEX_SIZE - 1)) {
		struct peer *p = &p2p->peers[p2p->index[i] - 1];

		if (p->addr == addr)
			return p;
	}
	return NULL;
}

/*
 * The peer for addr, made in INIT if need be.  NULL for an address that
 * cannot be a peer (outside the tunnel network, ours, the network or
 * broadcast address) and when the table is full: whatever the server or
 * the peers send, the table cannot outgrow the network.
 */
static struct peer *peer_get(struct client *c, uint32_t addr)
{
	struct p2p *p2p = &c->p2p;
	struct peer *p;
	size_t i;
	char a[16];

	if ((p = peer_lookup(c, addr)) != NULL)
		return p;
	if ((addr & c->mask) != c->net || addr == c->addr || addr == c->net ||
	    addr == (c->net | ~c->mask))
		return NULL;
	if (p2p->npeers == PEER_MAX) {
		log_debug("p2p: peer table full, %s ignored", ip_str(addr, a));
		return NULL;
	}
	p = &p2p->peers[p2p->npeers];
	memset(p, 0, sizeof(*p));
	p->addr = addr;
	p->state = PEER_INIT;
	p->since_ms = now_ms();
	p->retry_s = PEER_RETRY_MIN_S;
	p->rtt = -1;
	peer_key_init(&p->key, c->cfg->password, addr);
	for (i = peer_hash(addr); p2p->index[i] != 0;
	    i = (i + 1) & (PEER_INDEX_SIZE - 1))
		;
	p2p->index[i] = (uint16_t)++p2p->npeers;
	return p;
}

/* Forget every peer and wipe the keys. */
static void peer_table_clear(struct p2p *p2p)
{
	size_t i;

	for (i = 0; i < p2p->npeers; i++)
		wipe(&p2p->peers[i], sizeof(p2p->peers[i]));
	p2p->npeers = 0;
	if (p2p->index != NULL)
		memset(p2p->index, 0, PEER_INDEX_SIZE * sizeof(p2p->index[0]));
}

/*
 * Keys and peers belong to one address of ours.  candy.c calls p2p_stop
 * when the address changes; this also catches the first authentication.
 * 0 when there is nothing to do yet (P2P off, not authenticated).
 */
static int p2p_ready(struct client *c)
{
	struct p2p *p2p = &c->p2p;

	if (p2p->udp_fd < 0 || c->addr == 0)
		return 0;
	if (p2p->self != c->addr) {
		peer_table_clear(p2p);
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

	if (!endpoint_usable(c, ip, c->p2p.port))
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

/* ---- Peer datagrams we send. ---- */

/* Seal a control message for p and send it to ep. */
static void peer_ctl_send(struct client *c, struct peer *p,
    const struct endpoint *ep, const unsigned char *m, size_t len)
{
	struct p2p *p2p = &c->p2p;
	size_t n;

	if (ep->ip == 0)
		return;
	memcpy(p2p->ctl + PEER_OVERHEAD, m, len);
	n = peer_seal(&p->key, &p2p->iv, p2p->ctl, len);
	udp_send(c, ep, p2p->ctl, n);
}

static void heartbeat_send(struct client *c, struct peer *p,
    const struct endpoint *ep)
{
	unsigned char m[PMSG_HEARTBEAT_LEN];

	m[0] = PMSG_HEARTBEAT;
	put32(m + 1, c->addr);
	/* ip and port: the existing client sends garbage here and every
	 * receiver ignores them. */
	memset(m + 5, 0, 6);
	m[11] = (unsigned char)p->ack;
	peer_ctl_send(c, p, ep, m, sizeof(m));
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
		p->last_rx_ms = now;
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
	if (*colon == '\0' || strlen(colon) >= portlen ||
	    strspn(colon, "0123456789") != strlen(colon) || atoi(colon) < 1 ||
	    atoi(colon) > 65535)
		return -1;
	snprintf(port, portlen, "%s", colon);
	return 0;
}

/*
 * Resolve the STUN server's name.  A failure keeps the address we had, if
 * any, and is retried later.  XXX getaddrinfo blocks the poll loop while
 * the resolver waits; it runs only at start and, at most every 10 s, while
 * a peer waits for STUN that does not answer.
 */
static void stun_resolve(struct client *c, int64_t now)
{
	struct p2p *p2p = &c->p2p;
	struct addrinfo hints, *ai;
	struct endpoint ep;
	char e[22];
	int r;

	p2p->stun_resolved_ms = now;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_DGRAM;
	if ((r = getaddrinfo(p2p->stun_host, p2p->stun_port, &hints,
	    &ai)) != 0) {
		log_warnx("cannot resolve STUN server %s: %s", p2p->stun_host,
		    gai_strerror(r));
		return;
	}
	ep.ip = ntohl(((struct sockaddr_in *)(void *)ai->ai_addr)->
	    sin_addr.s_addr);
	ep.port = ntohs(((struct sockaddr_in *)(void *)ai->ai_addr)->sin_port);
	freeaddrinfo(ai);
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
	udp_send(c, &p2p->stun, req, sizeof(req));
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
		udp4conn_send(c, p->addr);
		peer_state_set(c, p, p->pub.ip != 0 ? PEER_CONNECTING :
		    PEER_SYNCHRONIZING, now);
	}
}

/* ---- Peer datagrams we receive. ---- */

/*
 * A heartbeat came from ep: that is where the peer can be reached, which
 * may not be what it told us (a NAT that picked another port).  A private
 * source is the LAN endpoint and is preferred as the one we use.
 */
static void peer_endpoint_learn(struct peer *p, const struct endpoint *ep)
{
	int private = ip_is_private(ep->ip);
	char a[16], e[22];

	if (private)
		p->lan = *ep;
	else
		p->pub = *ep;
	if (p->real.ip != 0 && !private && ip_is_private(p->real.ip))
		return;
	if (p->state == PEER_CONNECTED && !endpoint_eq(&p->real, ep))
		log_debug("peer %s: now via %s", ip_str(p->addr, a),
		    endpoint_str(ep, e));
	p->real = *ep;
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
		log_debug("peer %s: heartbeat from %s ignored (through the "
		    "tunnel)", ip_str(p->addr, a), endpoint_str(from, e));
		return;
	}
	peer_endpoint_learn(p, from);
	p->ack = 1;
	p->last_rx_ms = now;
	if (m[11] != 0 && p->state != PEER_CONNECTED)
		peer_state_set(c, p, PEER_CONNECTED, now);
}

/* A packet from a peer: ours, or to be relayed (PROTOCOL 6). */
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
	if ((p = peer_lookup(c, get32(pkt + 12))) != NULL)
		p->rx++;
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
	p2p->peers = calloc(PEER_MAX, sizeof(p2p->peers[0]));
	p2p->index = calloc(PEER_INDEX_SIZE, sizeof(p2p->index[0]));
	if (p2p->peers == NULL || p2p->index == NULL ||
	    relay_init(&p2p->relay, cfg->route > 0 ? PEER_MAX : 0,
	    relay_announce_cb, c) < 0) {
		log_warnx("out of memory for the peer table");
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
	rand_bytes(p2p->iv.salt, sizeof(p2p->iv.salt));
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
	return now + PEER_TICK_MS;
}

void p2p_udp_input(struct client *c)
{
	struct p2p *p2p = &c->p2p;
	unsigned char *d = p2p->rx + PKT_HEADROOM;
	int i;

	if (p2p->udp_fd < 0)
		return;
	for (i = 0; i < UDP_BURST; i++) {
		struct sockaddr_in sa;
		socklen_t salen = sizeof(sa);
		struct endpoint from;
		ssize_t n;

		n = recvfrom(p2p->udp_fd, d, PEER_DGRAM_MAX, 0,
		    (struct sockaddr *)&sa, &salen);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR)
				log_debug("p2p: receiving: %s",
				    strerror(errno));
			return;
		}
		/* Read even when not ready, so that poll does not spin. */
		if (!p2p_ready(c) || sa.sin_family != AF_INET)
			continue;
		from.ip = ntohl(sa.sin_addr.s_addr);
		from.port = ntohs(sa.sin_port);
		if (endpoint_eq(&from, &p2p->stun))
			stun_input(c, d, (size_t)n, now_ms());
		else
			datagram_input(c, &from, d, (size_t)n, now_ms());
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
	unsigned char *d = pkt - 1 - PEER_OVERHEAD;
	uint32_t next;
	size_t n;

	if (!p2p_ready(c))
		return 0;
	if (c->cfg->route > 0 && (next = relay_lookup(&p2p->relay, dst)) != 0 &&
	    (p = peer_lookup(c, next)) != NULL && p->state != PEER_CONNECTED)
		p = NULL;
	if (p == NULL && ((p = peer_lookup(c, dst)) == NULL ||
	    p->state != PEER_CONNECTED))
		return 0;
	pkt[-1] = PMSG_FORWARD;
	n = peer_seal(&p->key, &p2p->iv, d, len + 1);
	if (udp_send(c, &p->real, d, n) < 0) {
		/* CTR mode: running it again gives the packet back, for the
		 * caller to send through the server. */
		peer_open(&p->key, d, n);
		return 0;
	}
	p->tx++;
	return 1;
}

void p2p_status(struct client *c)
{
	struct p2p *p2p = &c->p2p;
	char a[16], e[22];
	size_t i;

	if (p2p->udp_fd < 0)
		return;
	log_info("p2p: udp port %u public %s peers %zu bad-datagrams %lu "
	    "send-errors %lu", (unsigned)p2p->port,
	    endpoint_str(&p2p->public, e), p2p->npeers, p2p->rx_bad,
	    p2p->tx_err);
	for (i = 0; i < p2p->npeers; i++) {
		const struct peer *p = &p2p->peers[i];

		log_info("peer %s %s via %s tx %lu rx %lu rtt %ld",
		    ip_str(p->addr, a), peer_state_name(p->state),
		    endpoint_str(&p->real, e), p->tx, p->rx, (long)p->rtt);
	}
	if (c->cfg->route > 0)
		relay_log(&p2p->relay);
}
