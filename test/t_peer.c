/*
 * t_peer.c: peer-to-peer (peer.c).
 *
 * Datagrams: the three of the captured vectors (an existing Candy 6.1
 * client, PROTOCOL 5.2), opened with keys derived as PROTOCOL 5.1 says,
 * and the same plaintexts sealed by us and opened again.  DISCOVERY and
 * GENERAL/0, which the capture lacks, have known answers of our own
 * (PROTOCOL 2.6).
 *
 * The state machine: real clients with real UDP sockets on 127.0.0.1, a
 * fake clock (fake_now_ms), a fake STUN server, the server's part played
 * by the test (messages to it are captured through p2p.server_send), and
 * fake peers that seal and open datagrams by hand.  Each test walks
 * transitions of PROTOCOL 5.4 and checks the state after each step.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "candy.h"
#include "test.h"

#define PASSWORD	"secretpw"
#define NET		0xac1f0000u	/* 172.31.0.0/24 */
#define MASK		0xffffff00u
#define A_ADDR		0xac1f0001u
#define B_ADDR		0xac1f0002u
#define C_ADDR		0xac1f0003u
#define D_ADDR		0xac1f0004u
#define LOOPBACK	0x7f000001u
#define T0		1000000		/* the fake clock's start, ms */

/* ---- The captured datagrams ---- */

static const struct {
	const char *name;
	uint32_t to;
	const char *plain, *dgram;
} vec_dgrams[] = {
	{ "HEARTBEAT 172.31.0.1 -> 172.31.0.2", B_ADDR,
	    "00ac1f000100000000000000",
	    "d3ae9075c9ad20ab2eb7d046e3ede34383bf01c672a304c6e837fb6a90d7db5c"
	    "f188b1fd7940068b" },
	{ "DELAY 172.31.0.1 -> 172.31.0.2", B_ADDR,
	    "02ac1f0001ac1f000200000000004b3608",
	    "097946d49f2f1a83896300a5f582bf38305a75699db984d4f7837fb9cc40bb0e"
	    "66257c73ccaa9c603113ce1a0f" },
	{ "ROUTE to 172.31.0.1", A_ADDR,
	    "04ac1f0001ac1f000200000005",
	    "9947198c3a37022192fb9ee2d878cbac58a9486be1e8e22d9c7715963a85cf05"
	    "b1b454aa75b529822f" },
};

/* The capture: the ICMP echo request 172.31.0.1 -> 172.31.0.2. */
static const char vec_ping[] =
    "45000054fca340004001e5c3ac1f0001ac1f00020800ec4c07d30001691e026b"
    "00000000cb820e0000000000101112131415161718191a1b1c1d1e1f20212223"
    "2425262728292a2b2c2d2e2f3031323334353637";

static int tamper_refused(struct peer_key *k, const unsigned char *d,
    size_t n)
{
	unsigned char t[256];
	size_t i;

	/* Flip one bit of each byte in turn: iv, tag and ciphertext. */
	for (i = 0; i < n; i++) {
		memcpy(t, d, n);
		t[i] ^= 0x20;
		if (peer_open(k, t, n) == 0)
			return 0;
	}
	memcpy(t, d, n);
	return peer_open(k, t, n - 1) < 0 && peer_open(k, t, 27) < 0 &&
	    peer_open(k, t, 0) < 0;
}

static void test_peer_vectors(void)
{
	static struct peer_key k, other;
	struct peer_iv iv;
	unsigned char d[256], plain[128], again[256];
	char name[128];
	size_t i, n, pn;

	memset(&iv, 0, sizeof(iv));
	rand_bytes(iv.salt, sizeof(iv.salt));
	for (i = 0; i < sizeof(vec_dgrams) / sizeof(vec_dgrams[0]); i++) {
		n = unhex(vec_dgrams[i].dgram, d, sizeof(d));
		pn = unhex(vec_dgrams[i].plain, plain, sizeof(plain));
		peer_key_init(&k, PASSWORD, vec_dgrams[i].to);
		peer_key_init(&other, PASSWORD, vec_dgrams[i].to ^ 3);

		memcpy(again, d, n);
		snprintf(name, sizeof(name), "peer: %s refused with the "
		    "other address's key", vec_dgrams[i].name);
		CHECK(peer_open(&other, again, n) < 0, name);
		snprintf(name, sizeof(name), "peer: %s decrypts",
		    vec_dgrams[i].name);
		if (CHECK(peer_open(&k, d, n) == 0, name)) {
			snprintf(name, sizeof(name), "peer: %s plaintext",
			    vec_dgrams[i].name);
			CHECK_BYTES(plain, pn, d + PEER_OVERHEAD,
			    n - PEER_OVERHEAD, name);
		}
		n = unhex(vec_dgrams[i].dgram, d, sizeof(d));
		snprintf(name, sizeof(name), "peer: %s with any byte changed, "
		    "or truncated, refused", vec_dgrams[i].name);
		CHECK(tamper_refused(&k, d, n), name);

		/* Ours: the same plaintext sealed, then opened. */
		memcpy(d + PEER_OVERHEAD, plain, pn);
		n = peer_seal(&k, &iv, d, pn);
		memcpy(again + PEER_OVERHEAD, plain, pn);
		peer_seal(&k, &iv, again, pn);
		snprintf(name, sizeof(name), "peer: %s sealed by us: a fresh "
		    "iv each time", vec_dgrams[i].name);
		CHECK(n == pn + PEER_OVERHEAD &&
		    memcmp(d, again, PEER_IV_LEN) != 0, name);
		snprintf(name, sizeof(name), "peer: %s sealed by us opens "
		    "with the receiver's key", vec_dgrams[i].name);
		CHECK(peer_open(&k, d, n) == 0 &&
		    memcmp(d + PEER_OVERHEAD, plain, pn) == 0, name);
		peer_seal(&k, &iv, again, pn);
		snprintf(name, sizeof(name), "peer: %s sealed by us, refused "
		    "with another key", vec_dgrams[i].name);
		CHECK(peer_open(&other, again, n) < 0, name);
	}
	/* The counter wraps into a new salt, never into an old iv. */
	peer_iv_init(&iv);
	CHECK(iv.salt[0] == PEER_IV_MARK0 && iv.salt[1] == PEER_IV_MARK1 &&
	    iv.count < 0x80000000u, "peer: our ivs carry the mark, the "
	    "counter starts below 2^31");
	memcpy(again, iv.salt, sizeof(iv.salt));
	iv.count = 0xffffffff;
	peer_seal(&k, &iv, d, 1);
	CHECK(memcmp(again, iv.salt, sizeof(iv.salt)) != 0 &&
	    iv.salt[0] == PEER_IV_MARK0 && iv.salt[1] == PEER_IV_MARK1 &&
	    get32(d + 8) == 0xffffffff, "peer: iv counter wrap takes a new "
	    "salt");
	peer_key_wipe(&k);
	peer_key_wipe(&other);
}

/* ---- Harness: clients, a fake server, a fake STUN server ---- */

struct tc {			/* a client under test */
	struct config cfg;
	struct client c;
	int on;			/* pumped by the fake server */
	int tun[2];		/* socketpair: tun[0] is its "TUN device" */
	int sent[256];		/* messages to the server, by type */
	unsigned char last[256][32];	/* the last of each type */
};

static struct tc ta, tb;
static int stun_fd = -1;
static uint16_t stun_port;
static int stun_requests;

static int udp_open(uint16_t *port)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
		perror("t_peer: udp socket");
		exit(1);
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	*port = ntohs(sa.sin_port);
	return fd;
}

static int pending(int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };

	return fd >= 0 && poll(&p, 1, 0) > 0;
}

static int hook_server_send(struct client *c, const unsigned char *m,
    size_t len)
{
	struct tc *t = c == &ta.c ? &ta : &tb;

	t->sent[m[0]]++;
	memcpy(t->last[m[0]], m, len < 32 ? len : 32);
	/* Played by the server: straight to the other client, if on. */
	if (t == &ta ? tb.on : ta.on)
		p2p_server_msg(t == &ta ? &tb.c : &ta.c, m, len);
	return 0;
}

static void tc_init(struct tc *t, uint32_t addr, uint32_t lan, int route)
{
	memset(t, 0, sizeof(*t));
	t->cfg.mode = MODE_CLIENT;
	snprintf(t->cfg.password, sizeof(t->cfg.password), "%s", PASSWORD);
	snprintf(t->cfg.stun, sizeof(t->cfg.stun), "stun://127.0.0.1:%u",
	    (unsigned)stun_port);
	t->cfg.localhost = lan;
	t->cfg.route = route;
	/* The plain path, datagram by datagram; the batches (UDP_SEGMENT,
	 * UDP_GRO) are tested on their own. */
	t->cfg.no_offload = 1;
	t->cfg.mtu = 1400;
	t->c.cfg = &t->cfg;
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, t->tun) < 0) {
		perror("t_peer: socketpair");
		exit(1);
	}
	fcntl(t->tun[1], F_SETFL, fcntl(t->tun[1], F_GETFL) | O_NONBLOCK);
	t->c.tun_fd = t->tun[0];
	t->c.addr = addr;
	t->c.prefix = 24;
	t->c.mask = MASK;
	t->c.net = addr & MASK;
	if (p2p_start(&t->c) < 0 || t->c.p2p.udp_fd < 0) {
		fprintf(stderr, "t_peer: p2p_start failed\n");
		exit(1);
	}
	t->c.p2p.server_send = hook_server_send;
	t->c.p2p.loopback_ok = 1;	/* every peer here is on 127.0.0.1 */
	t->on = 1;
	p2p_tick(&t->c, fake_now_ms);
}

static void tc_free(struct tc *t)
{
	p2p_stop(&t->c);
	close(t->c.p2p.udp_fd);
	free(t->c.p2p.peers);
	free(t->c.p2p.index);
	free(t->c.p2p.win);
	free(t->c.p2p.seen);
	free(t->c.p2p.relay.r);
	free(t->c.p2p.txb);	/* the outgoing batch */
	free(t->c.p2p.rxb);	/* the receive ring */
	close(t->tun[0]);
	close(t->tun[1]);
	t->on = 0;
}

/* The fake STUN server: answer every request with XOR-MAPPED-ADDRESS of
 * its source (answer 0: swallow requests). */
static int stun_serve(int answer)
{
	unsigned char q[64], r[32];
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	ssize_t n;
	int count = 0;

	while ((n = recvfrom(stun_fd, q, sizeof(q), 0, (struct sockaddr *)&sa,
	    &sl)) > 0) {
		count++;
		stun_requests++;
		if (!answer || n != STUN_REQUEST_LEN)
			continue;
		put16(r, 0x0101);
		put16(r + 2, 12);
		memcpy(r + 4, q + 4, 16);	/* cookie and tid */
		put16(r + 20, 0x0020);
		put16(r + 22, 8);
		put16(r + 24, 1);
		put16(r + 26, (uint16_t)(ntohs(sa.sin_port) ^ 0x2112));
		put32(r + 28, ntohl(sa.sin_addr.s_addr) ^ 0x2112a442u);
		sendto(stun_fd, r, sizeof(r), 0, (struct sockaddr *)&sa, sl);
	}
	return count;
}

/* Let everything in flight arrive: STUN, datagrams between clients. */
static void pump(int stun_answers)
{
	int i, moved = 1;

	for (i = 0; i < 100 && moved; i++) {
		/* What the last round queued leaves, as the loop's
		 * client_flush sends it at the end of a pass. */
		if (ta.on)
			p2p_flush(&ta.c);
		if (tb.on)
			p2p_flush(&tb.c);
		moved = stun_serve(stun_answers);
		if (ta.on && pending(ta.c.p2p.udp_fd)) {
			p2p_udp_input(&ta.c);
			moved++;
		}
		if (tb.on && pending(tb.c.p2p.udp_fd)) {
			p2p_udp_input(&tb.c);
			moved++;
		}
	}
}

/*
 * Whether UDP_SEGMENT and UDP_GRO do what they say here: two segments of
 * 100 bytes sent as one arrive as 200 bytes of 100-byte segments (GRO) or
 * as two datagrams of 100.  Under qemu-user on a big-endian CPU (make
 * cross, s390x) the control messages reach the host kernel unconverted
 * and the segment size is nonsense; that is the emulator, not candy.
 */
static int offload_works(void)
{
	unsigned char b[200], got[256];
	struct udp_dgram m, g;
	struct pollfd pf;
	uint16_t sport, rport;
	int s = udp_open(&sport), r = udp_open(&rport), n = -1;

	memset(b, 0x5a, sizeof(b));
	memset(&m, 0, sizeof(m));
	memset(&g, 0, sizeof(g));
	m.buf = b;
	m.len = sizeof(b);
	m.seg = 100;
	m.ip = LOOPBACK;
	m.port = rport;
	g.buf = got;
	g.room = sizeof(got);
	pf.fd = r;
	pf.events = POLLIN;
	if (udp_offload_on(r) && udp_send_batch(s, &m, 1) == 1 &&
	    poll(&pf, 1, 1000) == 1)
		n = udp_recv_batch(r, &g, 1);
	close(s);
	close(r);
	return n == 1 && g.seg == 100 && (g.len == 200 || g.len == 100);
}

/*
 * Issue 11: with UDP_SEGMENT on A's side and UDP_GRO on B's, packets
 * batched by p2p_send leave at p2p_flush and arrive each whole, each
 * through the replay check (a replayed batch is refused whole).
 */
static void gso_check(struct peer *pa, struct peer *pb)
{
	static unsigned char buf[3][PKT_HEADROOM + 1500], ref[1500];
	static unsigned char got[2048], again[PEER_GSO_MAX];
	unsigned long rx = pb->rx, replay = tb.c.p2p.rx_replay;
	uint64_t txb = pa->tx_bytes;
	size_t len[3] = { 1400, 1400, 900 }, ok = 0, i;
	size_t slot = tb.c.p2p.rxslot, slots = tb.c.p2p.rxslots;
	struct udp_dgram m;
	int fwd;
	ssize_t r;

	if (!offload_works() || !udp_offload_on(tb.c.p2p.udp_fd)) {
		CHECK(1, "peer: UDP GSO/GRO (not on this system)");
		return;
	}
	ta.c.p2p.gso = tb.c.p2p.gro = 1;
	tb.c.p2p.rxslot = PEER_DGRAM_MAX;	/* as p2p_start sizes them */
	tb.c.p2p.rxslots = PEER_RX_BYTES / (PKT_HEADROOM + PEER_DGRAM_MAX);
	for (i = 0; i < 3; i++) {
		memset(buf[i], 0, sizeof(buf[i]));
		unhex(vec_ping, buf[i] + PKT_HEADROOM, 128);
		put16(buf[i] + PKT_HEADROOM + 2, (uint16_t)len[i]);
		buf[i][PKT_HEADROOM + len[i] - 1] = (unsigned char)i;
		if (i == 2) {
			CHECK(ta.c.p2p.ntx == 1 && ta.c.p2p.txq[0].n == 2 &&
			    ta.c.p2p.txlen == 2 * 1429,
			    "peer: GSO: two datagrams in one train, none sent");
			memcpy(again, ta.c.p2p.txb, ta.c.p2p.txlen);
		}
		p2p_send(&ta.c, B_ADDR, buf[i] + PKT_HEADROOM, len[i]);
	}
	CHECK(ta.c.p2p.ntx == 1 && ta.c.p2p.txq[0].n == 3 &&
	    !ta.c.p2p.txq[0].open,
	    "peer: GSO: a shorter third ends the train");
	p2p_flush(&ta.c);
	pump(1);
	for (i = 0; i < 3; i++) {
		r = recv(tb.tun[1], got, sizeof(got), MSG_DONTWAIT);
		memset(ref, 0, sizeof(ref));
		unhex(vec_ping, ref, 128);
		put16(ref + 2, (uint16_t)len[i]);
		ref[len[i] - 1] = (unsigned char)i;
		ok += r == (ssize_t)len[i] && memcmp(got, ref, len[i]) == 0;
	}
	CHECK(ok == 3 && pb->rx == rx + 3 && ta.c.p2p.ntx == 0,
	    "peer: GSO/GRO: one send, three packets whole on B's TUN");
	CHECK(pa->tx_bytes == txb + 1400 + 1400 + 900,
	    "peer: GSO: a batched packet counts its bytes sent (status)");
	memset(&m, 0, sizeof(m));
	m.buf = again;
	m.len = 2 * 1429;
	m.seg = 1429;
	m.ip = LOOPBACK;
	m.port = tb.c.p2p.port;
	udp_send_batch(ta.c.p2p.udp_fd, &m, 1);
	pump(1);
	CHECK(recv(tb.tun[1], got, sizeof(got), MSG_DONTWAIT) < 0 &&
	    tb.c.p2p.rx_replay == replay + 2 && pb->rx == rx + 3,
	    "peer: GRO: two of them again: 2 replays, none delivered");
	/* A train the kernel will not send goes through the server. */
	fwd = ta.sent[MSG_FORWARD];
	pa->real.port = 0;
	for (i = 0; i < 2; i++)
		p2p_send(&ta.c, B_ADDR, buf[i] + PKT_HEADROOM, len[i]);
	p2p_flush(&ta.c);
	pa->real.port = tb.c.p2p.port;
	CHECK(ta.sent[MSG_FORWARD] == fwd + 2 &&
	    pa->tx_bytes == txb + 1400 + 1400 + 900,
	    "peer: GSO: a batch that cannot be sent goes through the server");
	ta.c.p2p.gso = tb.c.p2p.gro = 0;
	tb.c.p2p.rxslot = slot;
	tb.c.p2p.rxslots = slots;
}

/*
 * Issue 11: one pass's datagrams leave in one udp_send_batch and arrive
 * through the receive ring.  A batch that fills is sent at once and the
 * next begins; an entry UDP refuses goes through the server while the
 * ones around it still leave, in order.
 */
#define BATCH_N	(PEER_TX_ENTRIES + 6)

static int batch_tun_read(unsigned char *got, size_t n, int mark)
{
	ssize_t r = recv(tb.tun[1], got, n, MSG_DONTWAIT);

	return r == 100 && got[99] == (unsigned char)mark;
}

static void batch_check(struct peer *pa, struct peer *pb)
{
	static unsigned char buf[BATCH_N][PKT_HEADROOM + 100];
	unsigned char got[256];
	unsigned long txc = ta.c.p2p.tx_calls, rxc = tb.c.p2p.rx_calls;
	unsigned long rx = pb->rx, err = ta.c.p2p.tx_err;
	int i, ok = 0, fwd = ta.sent[MSG_FORWARD];

	for (i = 0; i < BATCH_N; i++) {
		memset(buf[i], 0, sizeof(buf[i]));
		unhex(vec_ping, buf[i] + PKT_HEADROOM, 28);
		put16(buf[i] + PKT_HEADROOM + 2, 100);
		buf[i][PKT_HEADROOM + 99] = (unsigned char)i;
	}
	for (i = 0; i < PEER_TX_ENTRIES; i++)
		p2p_send(&ta.c, B_ADDR, buf[i] + PKT_HEADROOM, 100);
	CHECK(ta.c.p2p.ntx == PEER_TX_ENTRIES && ta.c.p2p.tx_calls == txc,
	    "p2p batch: a pass's datagrams wait for the end of the pass");
	for (; i < BATCH_N; i++)
		p2p_send(&ta.c, B_ADDR, buf[i] + PKT_HEADROOM, 100);
	CHECK(ta.c.p2p.ntx == BATCH_N - PEER_TX_ENTRIES &&
	    ta.c.p2p.tx_calls == txc + 1,
	    "p2p batch: a full batch is sent at once, the next begins");
	p2p_flush(&ta.c);
	CHECK(ta.c.p2p.ntx == 0 && ta.c.p2p.txlen == 0 &&
	    ta.c.p2p.tx_calls == txc + 2, "p2p batch: the rest at p2p_flush");
	p2p_udp_input(&tb.c);
	for (i = 0; i < BATCH_N; i++)
		ok += batch_tun_read(got, sizeof(got), i);
	CHECK(ok == BATCH_N && pb->rx == rx + BATCH_N,
	    "p2p batch: every packet arrives, in order");
	CHECK(tb.c.p2p.rx_calls - rxc <= (BATCH_N + tb.c.p2p.rxslots - 1) /
	    tb.c.p2p.rxslots, "p2p batch: received a ring at a time");
	/* The second of three refused (port 0: EINVAL): the first and the
	 * third still leave by UDP, the second through the server. */
	for (i = 0; i < 3; i++) {
		pa->real.port = i == 1 ? 0 : tb.c.p2p.port;
		p2p_send(&ta.c, B_ADDR, buf[i] + PKT_HEADROOM, 100);
	}
	pa->real.port = tb.c.p2p.port;
	p2p_flush(&ta.c);
	pump(1);
	ok = batch_tun_read(got, sizeof(got), 0) &&
	    batch_tun_read(got, sizeof(got), 2) &&
	    recv(tb.tun[1], got, sizeof(got), MSG_DONTWAIT) < 0;
	CHECK(ok && ta.sent[MSG_FORWARD] == fwd + 1 &&
	    ta.c.p2p.tx_err == err + 1 && ta.c.p2p.ntx == 0,
	    "p2p batch: an entry refused goes through the server, the rest by "
	    "UDP");
}

/* A socket buffer that fills after 2 entries: the rest fail EAGAIN, as
 * udp_send_batch reports it. */
static size_t send_batch_full(int fd, struct udp_dgram *m, size_t n)
{
	size_t i, sent = udp_send_batch(fd, m, n < 2 ? n : 2);

	for (i = 2; i < n; i++)
		m[i].err = EAGAIN;
	return sent;
}

/* Issue 11: the socket's buffer full in the middle of a batch (EAGAIN):
 * what did not leave goes through the server, none lost, none twice. */
static void batch_eagain_check(struct peer *pa, struct peer *pb)
{
	static unsigned char buf[5][PKT_HEADROOM + 100];
	unsigned char got[256];
	unsigned long rx = pb->rx, err = ta.c.p2p.tx_err;
	uint64_t txb = pa->tx_bytes;
	int i, ok = 0, fwd = ta.sent[MSG_FORWARD];

	for (i = 0; i < 5; i++) {
		memset(buf[i], 0, sizeof(buf[i]));
		unhex(vec_ping, buf[i] + PKT_HEADROOM, 28);
		put16(buf[i] + PKT_HEADROOM + 2, 100);
		buf[i][PKT_HEADROOM + 99] = (unsigned char)i;
		p2p_send(&ta.c, B_ADDR, buf[i] + PKT_HEADROOM, 100);
	}
	ta.c.p2p.send_batch = send_batch_full;
	p2p_flush(&ta.c);
	ta.c.p2p.send_batch = NULL;
	pump(1);
	for (i = 0; i < 2; i++)
		ok += batch_tun_read(got, sizeof(got), i);
	CHECK(ok == 2 && recv(tb.tun[1], got, sizeof(got), MSG_DONTWAIT) < 0 &&
	    pb->rx == rx + 2 && ta.sent[MSG_FORWARD] == fwd + 3 &&
	    ta.c.p2p.tx_err == err + 3 && pa->tx_bytes == txb + 2 * 100 &&
	    memcmp(ta.last[MSG_FORWARD] + 1, buf[4] + PKT_HEADROOM, 31) == 0,
	    "p2p batch: EAGAIN after 2: those by UDP, the other 3 through the "
	    "server");
}

/*
 * udp_send_batch on its own: entries the kernel refuses (EACCES: a
 * broadcast without SO_BROADCAST; EINVAL: port 0) between ones it takes.
 * sendmmsg stops at each; every other entry still leaves, in order, and
 * udp_recv_batch takes them all in one call.
 */
static void test_udp_batch(void)
{
	unsigned char d[5][64], got[8][128];
	struct udp_dgram m[5], g[8];
	uint16_t sport, rport;
	int s = udp_open(&sport), r = udp_open(&rport), i, n, ok;

	memset(m, 0, sizeof(m));
	for (i = 0; i < 5; i++) {
		memset(d[i], 'a' + i, sizeof(d[i]));
		m[i].buf = d[i];
		m[i].len = (size_t)(10 + i);
		m[i].ip = LOOPBACK;
		m[i].port = rport;
		m[i].err = -1;
	}
	m[1].ip = 0xffffffffu;
	m[2].port = 0;
	CHECK(udp_send_batch(s, m, 5) == 3 && m[0].err == 0 &&
	    m[1].err == EACCES && m[2].err == EINVAL && m[3].err == 0 &&
	    m[4].err == 0,
	    "udp batch: refused entries have their errno, the rest leave");
	memset(g, 0, sizeof(g));
	for (i = 0; i < 8; i++) {
		g[i].buf = got[i];
		g[i].room = sizeof(got[i]);
	}
	n = udp_recv_batch(r, g, 8);
	ok = n == 3;
	for (i = 0; ok && i < 3; i++)
		ok = g[i].len == (size_t)(10 + (i == 0 ? 0 : i + 2)) &&
		    g[i].seg == g[i].len && got[i][0] == d[i == 0 ? 0 : i + 2][0] &&
		    g[i].ip == LOOPBACK && g[i].port == sport;
	CHECK(ok, "udp batch: received in one call, in order, with sender");
	CHECK(udp_recv_batch(r, g, 8) < 0 && (errno == EAGAIN ||
	    errno == EWOULDBLOCK), "udp batch: none waiting: EAGAIN");
	close(s);
	close(r);
}

/* One second passes: each client ticks, then everything arrives. */
static void step(int stun_answers)
{
	fake_now_ms += 1000;
	if (ta.on)
		p2p_tick(&ta.c, fake_now_ms);
	if (tb.on)
		p2p_tick(&tb.c, fake_now_ms);
	pump(stun_answers);
}

static enum peer_state state_of(struct tc *t, uint32_t addr)
{
	struct peer *p = peer_lookup(&t->c, addr);

	return p != NULL ? p->state : (enum peer_state)-1;
}

/* A fake peer: a socket that seals datagrams for A by hand and opens
 * what A sends it. */
struct fake {
	uint32_t addr;
	int fd;
	uint16_t port;
	struct peer_key to_a, own;
	struct peer_iv iv;
	unsigned char msg[64][128];
	size_t len[64];
	int n;
};

static struct fake fb, fd_;

static void fake_init(struct fake *f, uint32_t addr)
{
	memset(f, 0, sizeof(*f));
	f->addr = addr;
	f->fd = udp_open(&f->port);
	peer_key_init(&f->to_a, PASSWORD, A_ADDR);
	peer_key_init(&f->own, PASSWORD, addr);
	peer_iv_init(&f->iv);	/* a peer like us; f->random: Candy's */
}

static void fake_free(struct fake *f)
{
	close(f->fd);
	peer_key_wipe(&f->to_a);
	peer_key_wipe(&f->own);
}

static void fake_send(struct fake *f, const unsigned char *m, size_t len)
{
	unsigned char d[256];
	struct sockaddr_in sa;
	size_t n;

	memcpy(d + PEER_OVERHEAD, m, len);
	n = peer_seal(&f->to_a, &f->iv, d, len);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(LOOPBACK);
	sa.sin_port = htons(ta.c.p2p.port);
	sendto(f->fd, d, n, 0, (struct sockaddr *)&sa, sizeof(sa));
	pump(1);
}

static void fake_heartbeat(struct fake *f, int ack)
{
	unsigned char m[PMSG_HEARTBEAT_LEN] = { PMSG_HEARTBEAT };

	put32(m + 1, f->addr);
	m[11] = (unsigned char)ack;
	fake_send(f, m, sizeof(m));
}

/* Read what A sent the fake peer since the last call; count those of
 * type (-1: any) and keep them in f->msg. */
static int fake_read(struct fake *f, int type)
{
	unsigned char d[256];
	ssize_t n;
	int count = 0;

	p2p_flush(&ta.c);	/* what A's pass queued */
	f->n = 0;
	while ((n = recv(f->fd, d, sizeof(d), 0)) > 0) {
		if (peer_open(&f->own, d, (size_t)n) < 0 || f->n == 64 ||
		    n - PEER_OVERHEAD > 128)
			continue;
		f->len[f->n] = (size_t)n - PEER_OVERHEAD;
		memcpy(f->msg[f->n], d + PEER_OVERHEAD, f->len[f->n]);
		f->n++;
		if (type < 0 || d[PEER_OVERHEAD] == type)
			count++;
	}
	return count;
}

/* The n-th kept message of type, or NULL. */
static const unsigned char *fake_msg(struct fake *f, int type, int nth)
{
	int i;

	for (i = 0; i < f->n; i++)
		if (f->msg[i][0] == type && nth-- == 0)
			return f->msg[i];
	return NULL;
}

/* The server's UDP4CONN (src, A, ip, port) to A. */
static void server_udp4conn(uint32_t src, uint32_t ip, uint16_t port)
{
	unsigned char m[UDP4CONN_LEN] = { MSG_UDP4CONN };

	put32(m + 1, src);
	put32(m + 5, A_ADDR);
	put32(m + 9, ip);
	put16(m + 13, port);
	p2p_server_msg(&ta.c, m, sizeof(m));
}

static void server_lan(uint32_t src, uint32_t ip, uint16_t port)
{
	unsigned char m[LOCALUDP4CONN_LEN] = { MSG_GENERAL, 0 };

	put32(m + 4, src);
	put32(m + 8, A_ADDR);
	put32(m + 12, ip);
	put16(m + 16, port);
	p2p_server_msg(&ta.c, m, sizeof(m));
}

static void server_discovery(uint32_t src, uint32_t dst)
{
	unsigned char m[DISCOVERY_LEN] = { MSG_DISCOVERY };

	put32(m + 1, src);
	put32(m + 5, dst);
	p2p_server_msg(&ta.c, m, sizeof(m));
}

/* n seconds, one tick at a time; the fake peer alive (if any) keeps its
 * heartbeats coming. */
static void steps(int n, struct fake *alive)
{
	while (n-- > 0) {
		if (alive != NULL)
			fake_heartbeat(alive, 1);
		step(1);
	}
}

/* ---- Start-up ---- */

static void test_peer_start(void)
{
	static const struct {
		const char *stun;
		int ok;
	} uris[] = {
		{ "stun://127.0.0.1", 1 },
		{ "stun://127.0.0.1:3478", 1 },
		{ "stun://localhost:19302", 1 },
		{ "stun://", 0 },
		{ "stun://:3478", 0 },
		{ "stun://host:", 0 },
		{ "stun://host:65536", 0 },
		{ "stun://host:12ab", 0 },
		{ "stun://host/path", 0 },
		{ "turn://host", 0 },
	};
	unsigned char buf[PKT_HEADROOM + 64];
	char name[96];
	size_t i;
	int r;

	memset(&ta, 0, sizeof(ta));
	ta.c.cfg = &ta.cfg;
	ta.c.addr = A_ADDR;
	CHECK(p2p_start(&ta.c) == 0 && ta.c.p2p.udp_fd == -1 &&
	    p2p_tick(&ta.c, 5000) == 6000 &&
	    p2p_send(&ta.c, B_ADDR, buf + PKT_HEADROOM, 20) == 0,
	    "peer: no --stun: P2P off, everything goes to the server");
	p2p_saw_forward(&ta.c, B_ADDR);
	p2p_stop(&ta.c);
	for (i = 0; i < sizeof(uris) / sizeof(uris[0]); i++) {
		memset(&ta, 0, sizeof(ta));
		ta.c.cfg = &ta.cfg;
		snprintf(ta.cfg.stun, sizeof(ta.cfg.stun), "%s", uris[i].stun);
		r = p2p_start(&ta.c);
		snprintf(name, sizeof(name), "peer: --stun %s %s", uris[i].stun,
		    uris[i].ok ? "accepted" : "refused");
		CHECK(uris[i].ok ? r == 0 && ta.c.p2p.udp_fd >= 0 : r < 0,
		    name);
		if (r == 0)
			tc_free(&ta);
	}
}

/* ---- Two real clients: the whole handshake ---- */

static void test_peer_handshake(void)
{
	static const struct {
		enum peer_state a, b;	/* A's view of B, B's view of A */
	} want[] = {
		{ PEER_SYNCHRONIZING, PEER_PREPARING },
		{ PEER_CONNECTING, PEER_CONNECTING },
		{ PEER_CONNECTED, PEER_CONNECTED },
		{ PEER_CONNECTED, PEER_CONNECTED },
	};
	unsigned char buf[PKT_HEADROOM + 128], got[128], ref[128];
	unsigned char *pkt = buf + PKT_HEADROOM;
	struct peer *pa, *pb;
	size_t i, n;
	int fwd;
	ssize_t r;
	char name[96];

	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0x7f000002, 0);	/* LAN 127.0.0.2 */
	tc_init(&tb, B_ADDR, 0x7f000003, 0);	/* LAN 127.0.0.3 */

	p2p_saw_forward(&ta.c, B_ADDR);
	CHECK(state_of(&ta, B_ADDR) == PEER_PREPARING,
	    "peer: FORWARD through the server: INIT -> PREPARING");
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		step(1);
		snprintf(name, sizeof(name), "peer: handshake second %zu: "
		    "A sees %s, B sees %s", i + 1, peer_state_name(want[i].a),
		    peer_state_name(want[i].b));
		CHECK(state_of(&ta, B_ADDR) == want[i].a &&
		    state_of(&tb, A_ADDR) == want[i].b, name);
		if (i == 0)
			CHECK(ta.sent[MSG_UDP4CONN] == 1 &&
			    tb.sent[MSG_GENERAL] == 1 &&
			    ta.sent[MSG_GENERAL] == 1,
			    "peer: STUN answer sends UDP4CONN and GENERAL/0; "
			    "UDP4CONN answered with GENERAL/0");
	}
	pa = peer_lookup(&ta.c, B_ADDR);
	pb = peer_lookup(&tb.c, A_ADDR);
	CHECK(pa->lan.ip == 0x7f000003 && pa->lan.port == tb.c.p2p.port &&
	    pa->real.port == tb.c.p2p.port && pb->real.port == ta.c.p2p.port,
	    "peer: endpoints learnt from GENERAL/0 and heartbeats");
	CHECK(ta.c.p2p.public.ip == LOOPBACK &&
	    ta.c.p2p.public.port == ta.c.p2p.port,
	    "peer: public endpoint from STUN");

	/* Traffic over UDP, into B's "TUN device". */
	n = unhex(vec_ping, pkt, 128);
	CHECK(p2p_send(&ta.c, B_ADDR, pkt, n) == 1 && pa->tx == 1,
	    "peer: packet to a CONNECTED peer goes over UDP");
	pump(1);
	r = recv(tb.tun[1], got, sizeof(got), MSG_DONTWAIT);
	n = unhex(vec_ping, ref, sizeof(ref));
	CHECK_BYTES(ref, n, got, r < 0 ? 0 : (size_t)r,
	    "peer: packet arrives whole on the peer's TUN");
	CHECK(pb->rx == 1, "peer: counted on the receiving side");
	n = unhex(vec_ping, pkt, 128);
	CHECK(p2p_send(&ta.c, C_ADDR, pkt, n) == 0,
	    "peer: packet to an unknown peer is left to the server");
	/* A send that fails sends the packet whole through the server. */
	pa->real.port = 0;
	fwd = ta.sent[MSG_FORWARD];
	CHECK(p2p_send(&ta.c, B_ADDR, pkt, n) == 1 && pa->tx == 2,
	    "peer: a packet to send joins the pass's batch");
	p2p_flush(&ta.c);
	CHECK(ta.sent[MSG_FORWARD] == fwd + 1 && pa->tx == 1 &&
	    memcmp(ta.last[MSG_FORWARD] + 1, ref, 31) == 0,
	    "peer: failed UDP send: the packet intact through the server");
	pa->real.port = tb.c.p2p.port;
	gso_check(pa, pb);
	batch_check(pa, pb);
	batch_eagain_check(pa, pb);

	/* B goes quiet: 3 s without a heartbeat and A falls back. */
	tb.on = 0;
	steps(2, NULL);
	CHECK(state_of(&ta, B_ADDR) == PEER_CONNECTED,
	    "peer: CONNECTED survives 2 s without heartbeats");
	steps(1, NULL);
	CHECK(state_of(&ta, B_ADDR) == PEER_INIT && pa->real.ip == 0 &&
	    pa->retry_s == 30,
	    "peer: 3 s without heartbeats: CONNECTED -> INIT");
	n = unhex(vec_ping, pkt, 128);
	CHECK(p2p_send(&ta.c, B_ADDR, pkt, n) == 0,
	    "peer: packets to a lost peer go through the server");

	tc_free(&ta);
	tc_free(&tb);
}

/* ---- One client against a fake peer: every timer and message ---- */

/* A's peer B from INIT to CONNECTING against the fake peer fb. */
static void to_connecting(void)
{
	server_udp4conn(B_ADDR, LOOPBACK, fb.port);
	step(1);		/* STUN answers: PREPARING -> CONNECTING */
}

static void test_peer_timers(void)
{
	struct peer *p;
	const unsigned char *m;
	int i, before, ok;

	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0x7f000002, 0);
	fake_init(&fb, B_ADDR);

	/* PREPARING without a STUN answer: a request every tick, FAILED
	 * after 10 s. */
	p2p_saw_forward(&ta.c, B_ADDR);
	p = peer_lookup(&ta.c, B_ADDR);
	stun_requests = 0;
	for (i = 0; i < 9; i++)
		step(0);
	CHECK(p->state == PEER_PREPARING && stun_requests == 9,
	    "peer: PREPARING asks STUN every tick");
	step(0);
	CHECK(p->state == PEER_FAILED && ta.c.p2p.stun_stale,
	    "peer: PREPARING 10 s without STUN -> FAILED, STUN re-resolved");
	fake_heartbeat(&fb, 1);
	steps(30, NULL);
	CHECK(p->state == PEER_FAILED && p->ack == 0 &&
	    fake_read(&fb, -1) == 0, "peer: FAILED is passive, ignores "
	    "heartbeats");

	/* FAILED -> PREPARING on the peer's public endpoint; our LAN
	 * endpoint goes back. */
	before = ta.sent[MSG_GENERAL];
	server_udp4conn(B_ADDR, LOOPBACK, fb.port);
	CHECK(p->state == PEER_PREPARING && ta.sent[MSG_GENERAL] ==
	    before + 1 && get32(ta.last[MSG_GENERAL] + 12) == 0x7f000002 &&
	    get16(ta.last[MSG_GENERAL] + 16) == ta.c.p2p.port,
	    "peer: UDP4CONN in FAILED -> PREPARING, sends GENERAL/0");
	before = ta.sent[MSG_UDP4CONN];
	step(1);
	CHECK(p->state == PEER_CONNECTING && ta.sent[MSG_UDP4CONN] ==
	    before + 1 && get32(ta.last[MSG_UDP4CONN] + 9) == LOOPBACK &&
	    get16(ta.last[MSG_UDP4CONN] + 13) == ta.c.p2p.port,
	    "peer: STUN answer with the public endpoint known: "
	    "PREPARING -> CONNECTING, UDP4CONN sent");
	server_udp4conn(B_ADDR, LOOPBACK, fb.port);
	CHECK(p->state == PEER_CONNECTING,
	    "peer: UDP4CONN in CONNECTING: no change");
	fake_read(&fb, -1);
	for (i = 0; i < 9; i++)
		step(1);
	ok = fake_read(&fb, PMSG_HEARTBEAT) == 9 &&
	    (m = fake_msg(&fb, PMSG_HEARTBEAT, 0)) != NULL &&
	    get32(m + 1) == A_ADDR && m[11] == 0;
	CHECK(ok && p->state == PEER_CONNECTING, "peer: CONNECTING sends a "
	    "heartbeat (ack 0) to the public endpoint each tick");
	step(1);
	CHECK(p->state == PEER_WAITING && p->retry_s == 30 && p->pub.ip == 0,
	    "peer: CONNECTING 10 s -> WAITING, endpoints forgotten");
	fake_heartbeat(&fb, 1);
	CHECK(p->state == PEER_WAITING && p->ack == 0,
	    "peer: WAITING ignores heartbeats");
	for (i = 0; i < 29; i++)
		step(1);
	CHECK(p->state == PEER_WAITING, "peer: WAITING 29 s: still waiting");
	step(1);
	CHECK(p->state == PEER_INIT && p->retry_s == 60,
	    "peer: WAITING 30 s -> INIT, the delay doubles to 60 s");

	/* The second wait lasts 60 s. */
	to_connecting();
	for (i = 0; i < 10; i++)
		step(1);
	CHECK(p->state == PEER_WAITING && p->retry_s == 60,
	    "peer: WAITING again, for 60 s");
	for (i = 0; i < 59; i++)
		step(1);
	CHECK(p->state == PEER_WAITING, "peer: WAITING 59 s of 60");
	step(1);
	CHECK(p->state == PEER_INIT && p->retry_s == 120,
	    "peer: WAITING -> INIT, delay 120 s");
	to_connecting();
	for (i = 0; i < 10; i++)
		step(1);
	p->retry_s = 2400;
	fake_now_ms += 2400 * 1000 - 1000;
	step(1);
	CHECK(p->state == PEER_INIT && p->retry_s == 3600,
	    "peer: the delay stops doubling at 3600 s");

	/* WAITING -> PREPARING when the peer tries again. */
	to_connecting();
	for (i = 0; i < 10; i++)
		step(1);
	before = ta.sent[MSG_GENERAL];
	server_udp4conn(B_ADDR, LOOPBACK, fb.port);
	CHECK(p->state == PEER_PREPARING && ta.sent[MSG_GENERAL] == before + 1,
	    "peer: UDP4CONN in WAITING -> PREPARING, sends GENERAL/0");
	server_udp4conn(B_ADDR, LOOPBACK, fb.port);
	CHECK(p->state == PEER_PREPARING && ta.sent[MSG_GENERAL] == before + 2,
	    "peer: UDP4CONN in PREPARING: stays, sends GENERAL/0 again");

	/* CONNECTING -> CONNECTED on heartbeats. */
	step(1);
	fake_read(&fb, -1);
	fake_heartbeat(&fb, 0);
	CHECK(p->state == PEER_CONNECTING && p->ack == 1 &&
	    p->real.port == fb.port,
	    "peer: heartbeat with ack 0: our ack becomes 1, still CONNECTING");
	step(1);
	CHECK(fake_read(&fb, PMSG_HEARTBEAT) >= 1 &&
	    fake_msg(&fb, PMSG_HEARTBEAT, 0)[11] == 1,
	    "peer: our heartbeats now carry ack 1");
	fake_heartbeat(&fb, 1);
	CHECK(p->state == PEER_CONNECTED,
	    "peer: heartbeat with ack 1: CONNECTING -> CONNECTED");
	server_udp4conn(B_ADDR, LOOPBACK, fb.port + 1);
	server_lan(B_ADDR, 0xc0a80105, 4000);
	CHECK(p->state == PEER_CONNECTED && p->real.port == fb.port &&
	    p->lan.ip == 0xc0a80105 && p->lan.port == 4000,
	    "peer: UDP4CONN and GENERAL/0 in CONNECTED: stored, no change");
	steps(10, &fb);
	CHECK(p->state == PEER_CONNECTED && fake_read(&fb, PMSG_HEARTBEAT) >=
	    9 && fake_msg(&fb, PMSG_HEARTBEAT, 0)[11] == 1, "peer: "
	    "CONNECTED 10 s on heartbeats, sending its own each tick");
	CHECK(fake_read(&fb, PMSG_DELAY) == 0,
	    "peer: no DELAY probes without --route");
	steps(3, NULL);
	CHECK(p->state == PEER_INIT && p->retry_s == 30,
	    "peer: CONNECTED -> INIT after 3 s, the delay back at 30 s");

	/* SYNCHRONIZING: STUN answered, peer's endpoint unknown. */
	p2p_saw_forward(&ta.c, B_ADDR);
	step(1);
	CHECK(p->state == PEER_SYNCHRONIZING,
	    "peer: STUN answer, peer's endpoint unknown: PREPARING -> "
	    "SYNCHRONIZING");
	for (i = 0; i < 9; i++)
		step(1);
	CHECK(p->state == PEER_SYNCHRONIZING, "peer: SYNCHRONIZING 9 s");
	step(1);
	CHECK(p->state == PEER_FAILED && p->retry_s == 30,
	    "peer: SYNCHRONIZING 10 s -> FAILED");
	server_udp4conn(B_ADDR, LOOPBACK, fb.port);
	step(0);
	CHECK(p->state == PEER_PREPARING, "peer: back to PREPARING");
	/* A LAN endpoint lets PREPARING and SYNCHRONIZING connect too. */
	p2p_stop(&ta.c);
	p2p_tick(&ta.c, fake_now_ms);
	p2p_saw_forward(&ta.c, B_ADDR);
	p = peer_lookup(&ta.c, B_ADDR);
	server_lan(B_ADDR, LOOPBACK, fb.port);
	fake_read(&fb, -1);
	step(0);
	CHECK(p->state == PEER_PREPARING && fake_read(&fb, PMSG_HEARTBEAT) ==
	    1, "peer: PREPARING sends heartbeats to the LAN endpoint");
	fake_heartbeat(&fb, 1);
	CHECK(p->state == PEER_CONNECTED,
	    "peer: heartbeat with ack 1 in PREPARING -> CONNECTED");
	steps(3, NULL);
	p2p_saw_forward(&ta.c, B_ADDR);
	server_lan(B_ADDR, LOOPBACK, fb.port);
	step(1);
	fake_read(&fb, -1);
	CHECK(p->state == PEER_SYNCHRONIZING, "peer: SYNCHRONIZING");
	step(1);
	CHECK(fake_read(&fb, PMSG_HEARTBEAT) == 1,
	    "peer: SYNCHRONIZING sends heartbeats to the LAN endpoint");
	fake_heartbeat(&fb, 1);
	CHECK(p->state == PEER_CONNECTED,
	    "peer: heartbeat with ack 1 in SYNCHRONIZING -> CONNECTED");
	server_udp4conn(B_ADDR, LOOPBACK, fb.port);
	steps(3, NULL);

	/* SYNCHRONIZING -> CONNECTING on UDP4CONN. */
	p2p_saw_forward(&ta.c, B_ADDR);
	step(1);
	server_udp4conn(B_ADDR, LOOPBACK, fb.port);
	CHECK(p->state == PEER_CONNECTING,
	    "peer: UDP4CONN in SYNCHRONIZING -> CONNECTING");
	steps(10, NULL);

	fake_free(&fb);
	tc_free(&ta);
}

/* ---- Discovery, bad input, bounds ---- */

/* Known answers for PROTOCOL: the messages no capture holds. */
static const char vec_discovery_bcast[] = "05ac1f0001ffffffff";
static const char vec_discovery_answer[] = "05ac1f0001ac1f0002";
static const char vec_localudp4conn[] =
    "ff000000ac1f0004ac1f0001c0a80105c730";

static void test_peer_discovery(void)
{
	unsigned char junk[64], want[32];
	int before;
	size_t n;

	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0, 0);
	ta.cfg.discovery = 5;
	before = ta.sent[MSG_DISCOVERY];
	step(1);
	CHECK(ta.sent[MSG_DISCOVERY] == before + 1 &&
	    get32(ta.last[MSG_DISCOVERY] + 1) == A_ADDR &&
	    get32(ta.last[MSG_DISCOVERY] + 5) == 0xffffffffu,
	    "peer: DISCOVERY broadcast on the first tick");
	n = unhex(vec_discovery_bcast, want, sizeof(want));
	CHECK_BYTES(want, n, ta.last[MSG_DISCOVERY], DISCOVERY_LEN,
	    "peer: DISCOVERY broadcast, byte for byte (PROTOCOL)");
	step(1);
	step(1);
	step(1);
	step(1);
	CHECK(ta.sent[MSG_DISCOVERY] == before + 1,
	    "peer: no DISCOVERY within --discovery seconds");
	step(1);
	CHECK(ta.sent[MSG_DISCOVERY] == before + 2,
	    "peer: DISCOVERY again after --discovery seconds");
	ta.cfg.discovery = 0;

	before = ta.sent[MSG_DISCOVERY];
	server_discovery(B_ADDR, 0xffffffffu);
	CHECK(ta.sent[MSG_DISCOVERY] == before + 1 &&
	    get32(ta.last[MSG_DISCOVERY] + 5) == B_ADDR &&
	    state_of(&ta, B_ADDR) == PEER_PREPARING,
	    "peer: broadcast DISCOVERY answered, INIT -> PREPARING");
	n = unhex(vec_discovery_answer, want, sizeof(want));
	CHECK_BYTES(want, n, ta.last[MSG_DISCOVERY], DISCOVERY_LEN,
	    "peer: DISCOVERY answer, byte for byte (PROTOCOL)");
	server_discovery(C_ADDR, A_ADDR);
	CHECK(ta.sent[MSG_DISCOVERY] == before + 1 &&
	    state_of(&ta, C_ADDR) == PEER_PREPARING,
	    "peer: unicast DISCOVERY not answered, INIT -> PREPARING");
	server_discovery(D_ADDR, 0xac1f0009);
	CHECK(state_of(&ta, D_ADDR) == (enum peer_state)-1,
	    "peer: DISCOVERY for someone else ignored");

	/* GENERAL/0 from D: its LAN endpoint is stored, nothing else. */
	n = unhex(vec_localudp4conn, want, sizeof(want));
	p2p_server_msg(&ta.c, want, n);
	CHECK(n == LOCALUDP4CONN_LEN && state_of(&ta, D_ADDR) == PEER_INIT &&
	    peer_lookup(&ta.c, D_ADDR)->lan.ip == 0xc0a80105 &&
	    peer_lookup(&ta.c, D_ADDR)->lan.port == 50992,
	    "peer: GENERAL/0 (PROTOCOL's bytes): LAN endpoint "
	    "192.168.1.5:50992 stored");

	/* Datagrams that fail authentication are counted, not logged. */
	fake_init(&fb, B_ADDR);
	before = (int)ta.c.p2p.rx_bad;
	rand_bytes(junk, sizeof(junk));
	junk[0] = 0x77;		/* no such message: ignored */
	fake_send(&fb, junk, sizeof(junk));	/* sealed, but for B's key */
	peer_key_init(&fb.to_a, PASSWORD, B_ADDR);
	fake_send(&fb, junk, 1);
	CHECK(ta.c.p2p.rx_bad == (unsigned long)before + 1,
	    "peer: datagram under the wrong key dropped and counted");
	fake_free(&fb);
	tc_free(&ta);
}

static void test_peer_bounds(void)
{
	struct peer *p;
	uint32_t a;
	size_t i;
	int zero, before;

	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0, 0);
	p2p_saw_forward(&ta.c, 0x0a000001);
	p2p_saw_forward(&ta.c, A_ADDR);
	p2p_saw_forward(&ta.c, NET);
	p2p_saw_forward(&ta.c, NET | 0xff);
	server_udp4conn(0xac1f0100, LOOPBACK, 1000);
	CHECK(ta.c.p2p.npeers == 0, "peer: no peer outside the network, "
	    "for ourselves, the network or broadcast address");
	/* A hostile server names every address: one peer per host. */
	for (a = NET; a <= (NET | 0xff); a++)
		server_udp4conn(a, LOOPBACK, 1000);
	CHECK(ta.c.p2p.npeers == 253, "peer: the table stops at the "
	    "network's host addresses");
	CHECK(peer_lookup(&ta.c, 0xac1f00fe) != NULL &&
	    peer_lookup(&ta.c, 0xac1f00fe)->addr == 0xac1f00fe &&
	    peer_lookup(&ta.c, A_ADDR) == NULL, "peer: lookup in a full /24");

	/* A /16 holds more addresses than the table. */
	p2p_stop(&ta.c);
	ta.c.mask = 0xffff0000u;
	ta.c.net = A_ADDR & 0xffff0000u;
	ta.c.prefix = 16;
	for (a = 0; a < PEER_MAX + 1000; a++)
		p2p_saw_forward(&ta.c, ta.c.net + 2 + a);
	CHECK(ta.c.p2p.npeers == PEER_MAX && ta.c.p2p.cap == PEER_MAX,
	    "peer: the table never outgrows PEER_MAX");
	CHECK(peer_lookup(&ta.c, ta.c.net + 2 + PEER_MAX + 999) != NULL &&
	    peer_lookup(&ta.c, ta.c.net + 2 + 999) == NULL &&
	    peer_lookup(&ta.c, ta.c.net + 2 + 1000) != NULL &&
	    ta.c.p2p.evicted == 1000, "peer: full of peers that never "
	    "answered: the oldest evicted for the new");
	zero = 1;
	for (i = 0; i < ta.c.p2p.npeers; i++)
		zero &= peer_lookup(&ta.c, ta.c.p2p.peers[i].addr) ==
		    &ta.c.p2p.peers[i];
	CHECK(zero, "peer: every peer found after evictions");

	/* p2p_stop forgets and wipes. */
	p = &ta.c.p2p.peers[0];
	p2p_stop(&ta.c);
	zero = 1;
	for (i = 0; i < sizeof(*p); i++)
		zero &= ((unsigned char *)p)[i] == 0;
	for (i = 0; i < sizeof(ta.c.p2p.rxkey); i++)
		zero &= ((unsigned char *)&ta.c.p2p.rxkey)[i] == 0;
	CHECK(zero && ta.c.p2p.npeers == 0 &&
	    peer_lookup(&ta.c, ta.c.net + 2) == NULL,
	    "peer: p2p_stop forgets every peer and wipes the keys");

	/* Endpoints that would loop through our own TUN are refused. */
	ta.c.mask = MASK;
	ta.c.net = NET;
	ta.c.prefix = 24;
	ta.c.nroutes = 1;
	ta.c.routes[0].dst = 0xc0a83200;	/* 192.168.50.0/24 */
	ta.c.routes[0].mask = 0xffffff00;
	ta.c.routes[0].next = 0xac1f0009;
	p2p_tick(&ta.c, fake_now_ms);
	server_lan(B_ADDR, 0xc0a83205, 4000);
	p = peer_lookup(&ta.c, B_ADDR);
	CHECK(p != NULL && p->lan.ip == 0,
	    "peer: LAN endpoint inside an SD-WAN destination refused");
	server_lan(B_ADDR, 0xac1f0007, 4000);
	CHECK(p->lan.ip == 0,
	    "peer: LAN endpoint inside the tunnel network refused");
	server_lan(B_ADDR, 0xc0a80105, 4000);
	CHECK(p->lan.ip == 0xc0a80105,
	    "peer: LAN endpoint on another network kept");
	ta.cfg.localhost = 0xc0a83201;
	before = ta.sent[MSG_GENERAL];
	server_udp4conn(B_ADDR, 0xc0a832fe, 4000);
	CHECK(p->pub.ip == 0 && p->state == PEER_PREPARING,
	    "peer: public endpoint inside an SD-WAN destination refused");
	CHECK(ta.sent[MSG_GENERAL] == before,
	    "peer: our LAN endpoint not sent when it is SD-WAN routed");
	ta.c.nroutes = 0;
	tc_free(&ta);
}

/* ---- DELAY and ROUTE: the relay (PROTOCOL 6) ---- */

static void fake_connect(struct fake *f)
{
	server_udp4conn(f->addr, LOOPBACK, f->port);
	step(1);
	fake_heartbeat(f, 1);
}

static void test_peer_relay(void)
{
	unsigned char m[160], buf[PKT_HEADROOM + 128];
	unsigned char *pkt = buf + PKT_HEADROOM;
	const unsigned char *r;
	unsigned long calls;
	size_t n;
	int i, ok;

	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0, 10);
	fake_init(&fb, B_ADDR);
	fake_init(&fd_, D_ADDR);
	fake_connect(&fb);
	fake_connect(&fd_);
	CHECK(state_of(&ta, B_ADDR) == PEER_CONNECTED &&
	    state_of(&ta, D_ADDR) == PEER_CONNECTED,
	    "relay: two fake peers CONNECTED");
	ok = fake_read(&fb, PMSG_DELAY) >= 1 &&
	    (r = fake_msg(&fb, PMSG_DELAY, 0)) != NULL &&
	    get32(r + 1) == A_ADDR && get32(r + 5) == B_ADDR;
	CHECK(ok, "relay: DELAY probe on CONNECTED");
	fake_heartbeat(&fb, 1);
	fake_heartbeat(&fd_, 1);
	calls = ta.c.p2p.tx_calls;
	step(1);
	CHECK(fake_read(&fb, PMSG_DELAY) == 1,
	    "relay: unanswered DELAY probe repeated the next tick");
	CHECK(ta.c.p2p.tx_calls == calls + 1 &&
	    fake_read(&fd_, PMSG_HEARTBEAT) == 1,
	    "p2p: a tick's datagrams to two peers leave in one batch");
	memcpy(m, fake_msg(&fb, PMSG_DELAY, 0), PMSG_DELAY_LEN);
	fake_read(&fd_, -1);
	fake_now_ms += 7;
	fake_send(&fb, m, PMSG_DELAY_LEN);	/* the echo */
	CHECK(peer_lookup(&ta.c, B_ADDR)->rtt == 7 &&
	    relay_lookup(&ta.c.p2p.relay, B_ADDR) == B_ADDR,
	    "relay: DELAY echo gives the direct route, rtt 7");
	/* Echoes with timestamps that cannot be ours: from the future, or
	 * INT64_MIN + 1000000 (make fuzz: now - ts overflowed). */
	put64(m + 9, (uint64_t)fake_now_ms + 1);
	fake_send(&fb, m, PMSG_DELAY_LEN);
	put64(m + 9, (uint64_t)INT64_MIN + 1000000);
	fake_send(&fb, m, PMSG_DELAY_LEN);
	CHECK(peer_lookup(&ta.c, B_ADDR)->rtt == 7,
	    "relay: DELAY echo from the future or near INT64_MIN ignored");
	ok = fake_read(&fd_, PMSG_ROUTE) >= 1 &&
	    (r = fake_msg(&fd_, PMSG_ROUTE, 0)) != NULL &&
	    get32(r + 1) == B_ADDR && get32(r + 5) == A_ADDR &&
	    get32(r + 9) == 17;
	CHECK(ok, "relay: ROUTE (B, A, 7 + cost 10) announced to D");
	CHECK(fake_read(&fb, PMSG_ROUTE) == 0,
	    "relay: B is not told about itself");
	for (i = 0; i < 59; i++) {
		fake_heartbeat(&fb, 1);
		fake_heartbeat(&fd_, 1);
		step(1);
		if (fake_read(&fb, PMSG_DELAY) != 0)
			break;
	}
	CHECK(i == 59, "relay: answered: no DELAY for 59 ticks");
	fake_heartbeat(&fb, 1);
	fake_heartbeat(&fd_, 1);
	step(1);
	CHECK(fake_read(&fb, PMSG_DELAY) == 1,
	    "relay: then a DELAY probe every 60 ticks");

	/* B's probe comes back to it unchanged, sealed for B. */
	m[0] = PMSG_DELAY;
	put32(m + 1, B_ADDR);
	put32(m + 5, A_ADDR);
	put64(m + 9, 0x1122334455667788ull);
	fake_send(&fb, m, PMSG_DELAY_LEN);
	fake_read(&fb, PMSG_DELAY);
	r = fake_msg(&fb, PMSG_DELAY, 0);
	CHECK_BYTES(m, PMSG_DELAY_LEN, r, r ? PMSG_DELAY_LEN : 0,
	    "relay: a peer's DELAY echoed back unchanged");

	/* B offers C; D hears of it, B hears it poisoned. */
	fake_read(&fd_, -1);
	m[0] = PMSG_ROUTE;
	put32(m + 1, C_ADDR);
	put32(m + 5, B_ADDR);
	put32(m + 9, 5);
	fake_send(&fb, m, PMSG_ROUTE_LEN);
	CHECK(relay_lookup(&ta.c.p2p.relay, C_ADDR) == B_ADDR,
	    "relay: ROUTE from a CONNECTED peer: C via B");
	ok = fake_read(&fd_, PMSG_ROUTE) == 1 &&
	    get32(fake_msg(&fd_, PMSG_ROUTE, 0) + 1) == C_ADDR &&
	    get32(fake_msg(&fd_, PMSG_ROUTE, 0) + 9) == 7 + 5 + 10;
	CHECK(ok, "relay: ROUTE (C, A, 22) to D");
	ok = fake_read(&fb, PMSG_ROUTE) == 1 &&
	    get32(fake_msg(&fb, PMSG_ROUTE, 0) + 9) == RTT_UNREACHABLE;
	CHECK(ok, "relay: B hears C unreachable (poisoned reverse)");
	put32(m + 1, 0xac1f0005);
	put32(m + 5, 0xac1f0006);
	fake_send(&fb, m, PMSG_ROUTE_LEN);
	CHECK(relay_lookup(&ta.c.p2p.relay, 0xac1f0005) == 0,
	    "relay: ROUTE naming a peer that is not CONNECTED ignored");

	/* Packets to C go to B. */
	n = unhex(vec_ping, pkt, 128);
	put32(pkt + 16, C_ADDR);
	CHECK(p2p_send(&ta.c, C_ADDR, pkt, n) == 1 &&
	    fake_read(&fb, PMSG_FORWARD) == 1 &&
	    get32(fake_msg(&fb, PMSG_FORWARD, 0) + 1 + 16) == C_ADDR,
	    "relay: packet to C sent to its next hop B");

	/* B relays through us to D: TTL one less. */
	n = unhex(vec_ping, m + 1, sizeof(m) - 1);
	m[0] = PMSG_FORWARD;
	put32(m + 1 + 16, D_ADDR);
	fake_read(&fd_, -1);
	fake_send(&fb, m, 1 + n);
	ok = fake_read(&fd_, PMSG_FORWARD) == 1 &&
	    (r = fake_msg(&fd_, PMSG_FORWARD, 0)) != NULL &&
	    get32(r + 1 + 16) == D_ADDR && r[1 + 8] == m[1 + 8] - 1;
	CHECK(ok, "relay: FORWARD for D relayed with TTL - 1");

	/* B lost: its routes go, D hears both withdrawn. */
	fake_read(&fd_, -1);
	for (i = 0; i < 3; i++) {
		fake_heartbeat(&fd_, 1);
		step(1);
	}
	CHECK(state_of(&ta, B_ADDR) == PEER_INIT &&
	    relay_lookup(&ta.c.p2p.relay, B_ADDR) == 0 &&
	    relay_lookup(&ta.c.p2p.relay, C_ADDR) == 0,
	    "relay: peer lost: its routes removed");
	fake_read(&fd_, PMSG_ROUTE);
	ok = 0;
	for (i = 0; i < fd_.n; i++)
		if (fd_.msg[i][0] == PMSG_ROUTE &&
		    get32(fd_.msg[i] + 9) == RTT_UNREACHABLE)
			ok++;
	CHECK(ok == 2, "relay: D told B and C are unreachable");
	n = unhex(vec_ping, pkt, 128);
	CHECK(p2p_send(&ta.c, C_ADDR, pkt, n) == 0,
	    "relay: no route, no peer: through the server");

	fake_free(&fb);
	fake_free(&fd_);
	tc_free(&ta);
}


/* ---- Hostile input: replays, hijacks, reflection, the full table ---- */

/* A datagram for A sealed by f: our kind of iv, or (random) the existing
 * Candy's. */
static size_t fake_seal(struct fake *f, const unsigned char *m, size_t len,
    unsigned char *d, int random)
{
	struct peer_iv iv;

	memcpy(d + PEER_OVERHEAD, m, len);
	if (!random)
		return peer_seal(&f->to_a, &f->iv, d, len);
	rand_bytes(&iv, sizeof(iv));
	iv.salt[0] = 0;		/* never the mark */
	return peer_seal(&f->to_a, &iv, d, len);
}

/* Send the datagram d to A from socket fd, and let it arrive. */
static void raw_send(int fd, const unsigned char *d, size_t n)
{
	struct sockaddr_in sa;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(LOOPBACK);
	sa.sin_port = htons(ta.c.p2p.port);
	sendto(fd, d, n, 0, (struct sockaddr *)&sa, sizeof(sa));
	pump(1);
}

/* Packets A wrote to its TUN since the last call. */
static int tun_count(struct tc *t)
{
	unsigned char b[2048];
	int n = 0;

	while (recv(t->tun[1], b, sizeof(b), MSG_DONTWAIT) > 0)
		n++;
	return n;
}

/* A FORWARD from B to A: the captured ping (vec_ping), turned around. */
static size_t forward_build(unsigned char *m)
{
	size_t n;

	m[0] = PMSG_FORWARD;
	n = unhex(vec_ping, m + 1, 127);
	put32(m + 1 + 12, B_ADDR);
	put32(m + 1 + 16, A_ADDR);
	return n + 1;
}

static void test_peer_replay(void)
{
	unsigned char m[160], d[256], x1[256], x2[256];
	size_t n, n1, n2;
	unsigned long before;
	uint32_t top;
	int i, random, got;
	char name[128];

	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0, 0);
	fake_init(&fb, B_ADDR);
	fake_connect(&fb);
	CHECK(state_of(&ta, B_ADDR) == PEER_CONNECTED,
	    "replay: fake peer B CONNECTED");
	n = forward_build(m);
	for (random = 0; random <= 1; random++) {
		tun_count(&ta);
		before = ta.c.p2p.rx_replay;
		n1 = fake_seal(&fb, m, n, d, random);
		for (i = 0; i < 100; i++)
			raw_send(fb.fd, d, n1);
		got = tun_count(&ta);
		snprintf(name, sizeof(name), "replay: a FORWARD (%s iv) sent "
		    "100 times reaches the TUN once, 99 counted", random ?
		    "random" : "salt and counter");
		CHECK(got == 1 && ta.c.p2p.rx_replay == before + 99, name);
	}

	/* Counters out of order within the window pass once each; behind
	 * the window they are refused. */
	top = fb.iv.count + 5000;
	fb.iv.count = top;
	n1 = fake_seal(&fb, m, n, d, 0);
	raw_send(fb.fd, d, n1);
	fb.iv.count = top - 10;
	n1 = fake_seal(&fb, m, n, d, 0);
	raw_send(fb.fd, d, n1);
	raw_send(fb.fd, d, n1);
	fb.iv.count = top - PEER_WINDOW_BITS + 64 + 1;
	n1 = fake_seal(&fb, m, n, d, 0);
	raw_send(fb.fd, d, n1);
	fb.iv.count = top - PEER_WINDOW_BITS + 64;
	n1 = fake_seal(&fb, m, n, d, 0);
	raw_send(fb.fd, d, n1);
	CHECK(tun_count(&ta) == 3, "replay: late datagrams inside the "
	    "window accepted once, older ones refused");

	/* B restarts: a new salt is accepted; the old salt replayed does
	 * not reset anything, its datagrams stay refused. */
	fb.iv.count = top + 2000;
	n1 = fake_seal(&fb, m, n, x1, 0);
	raw_send(fb.fd, x1, n1);
	peer_iv_init(&fb.iv);
	n2 = fake_seal(&fb, m, n, x2, 0);
	raw_send(fb.fd, x2, n2);
	CHECK(tun_count(&ta) == 2, "replay: a restarted peer's new salt "
	    "accepted");
	before = ta.c.p2p.rx_replay;
	raw_send(fb.fd, x1, n1);
	raw_send(fb.fd, x2, n2);
	raw_send(fb.fd, x1, n1);
	n1 = fake_seal(&fb, m, n, d, 0);
	raw_send(fb.fd, d, n1);
	CHECK(tun_count(&ta) == 1 && ta.c.p2p.rx_replay == before + 3,
	    "replay: old salt replayed after the new one: refused, the new "
	    "salt's window untouched");

	/* A reconnection with the same address keeps what was seen. */
	p2p_stop(&ta.c);
	p2p_tick(&ta.c, fake_now_ms);
	fake_connect(&fb);
	tun_count(&ta);
	raw_send(fb.fd, x2, n2);
	CHECK(tun_count(&ta) == 0, "replay: a datagram seen before a "
	    "reconnection is still refused after it");
	fake_free(&fb);
	tc_free(&ta);
}

/* A heartbeat from B sealed into d: ours or a random iv. */
static size_t heartbeat_seal(struct fake *f, unsigned char *d, int random)
{
	unsigned char m[PMSG_HEARTBEAT_LEN] = { PMSG_HEARTBEAT };

	put32(m + 1, f->addr);
	m[11] = 1;
	return fake_seal(f, m, sizeof(m), d, random);
}

static void test_peer_hijack(void)
{
	unsigned char d[256];
	struct fake evil, nb;
	struct peer *p;
	size_t n;
	int random, i, ok;
	char name[128];

	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0, 0);
	fake_init(&fb, B_ADDR);
	fake_init(&evil, B_ADDR);	/* another port: the attacker */
	fake_connect(&fb);
	p = peer_lookup(&ta.c, B_ADDR);
	CHECK(p != NULL && p->state == PEER_CONNECTED && p->real.port ==
	    fb.port, "hijack: B CONNECTED via its own endpoint");

	/* A heartbeat captured and replayed from the attacker's address,
	 * once B went quiet (the most the attacker could hope for). */
	for (random = 0; random <= 1; random++) {
		n = heartbeat_seal(&fb, d, random);
		raw_send(fb.fd, d, n);
		fake_now_ms += 2000;
		for (i = 0; i < 5; i++) {
			raw_send(evil.fd, d, n);
			fake_now_ms += 300;
		}
		snprintf(name, sizeof(name), "hijack: heartbeat (%s iv) "
		    "replayed from elsewhere does not move the endpoint",
		    random ? "random" : "salt and counter");
		CHECK(p->real.port == fb.port, name);
		fake_heartbeat(&fb, 1);
		fake_read(&evil, -1);
	}

	/* Fresh heartbeats from a new place while B still talks from the
	 * old one: no move. */
	for (i = 0; i < 4; i++) {
		fake_heartbeat(&fb, 1);
		fake_heartbeat(&evil, 1);
		step(1);
	}
	CHECK(p->real.port == fb.port && p->state == PEER_CONNECTED,
	    "hijack: a new place does not win while the old one talks");

	/* B's NAT moves it to a new port (nb): A sends there, B answers,
	 * the old place is silent: B moves. */
	fake_init(&nb, B_ADDR);
	fake_heartbeat(&fb, 1);
	fake_now_ms += 500;
	fake_heartbeat(&nb, 1);
	ok = fake_read(&nb, PMSG_HEARTBEAT) == 1 && p->real.port == fb.port;
	fake_now_ms += 1100;
	fake_heartbeat(&nb, 1);
	CHECK(ok && p->real.port == nb.port && p->state == PEER_CONNECTED &&
	    ta.c.p2p.moved == 1, "hijack: the new place answers, the old "
	    "is silent: the peer moves");

	/* Straight back within PEER_MOVE_MIN_MS: not yet; later, yes. */
	fake_now_ms += 1600;
	fake_heartbeat(&fb, 1);
	fake_now_ms += 1100;
	fake_heartbeat(&fb, 1);
	CHECK(p->real.port == nb.port, "hijack: endpoint changes are "
	    "rate-limited");
	fake_now_ms += 2500;
	fake_heartbeat(&fb, 1);
	CHECK(p->real.port == fb.port && ta.c.p2p.moved == 2,
	    "hijack: ... to one per PEER_MOVE_MIN_MS");
	fake_free(&nb);
	fake_free(&evil);
	fake_free(&fb);
	tc_free(&ta);
}

static void test_peer_endpoints(void)
{
	static const struct {
		uint32_t ip;
		const char *what;
	} bad[] = {
		{ LOOPBACK, "loopback 127.0.0.1" },
		{ 0x7f0000fe, "loopback 127.0.0.254" },
		{ 0x00000001, "0.0.0.1" },
		{ 0xe0000005, "multicast 224.0.0.5" },
		{ 0xffffffff, "broadcast" },
		{ 0xac1f0007, "the tunnel network" },
		{ 0xc0a80a0a, "our interface's address" },
		{ 0xc0a80aff, "our interface's broadcast address" },
	};
	unsigned char d[256];
	struct fake v;
	struct peer *p;
	char name[128];
	uint32_t a;
	size_t i, n;
	int got, secs;

	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0, 0);
	ta.c.p2p.loopback_ok = 0;
	ta.c.p2p.own[0] = 0xc0a80a0a;
	ta.c.p2p.own[1] = 0xc0a80aff;
	ta.c.p2p.nown = 2;
	ta.c.p2p.own_ms = fake_now_ms + 3600 * 1000;	/* not re-read */
	p2p_saw_forward(&ta.c, B_ADDR);
	p = peer_lookup(&ta.c, B_ADDR);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		server_udp4conn(B_ADDR, bad[i].ip, 4000);
		server_lan(B_ADDR, bad[i].ip, 4000);
		snprintf(name, sizeof(name), "endpoints: %s refused from "
		    "UDP4CONN and GENERAL/0", bad[i].what);
		CHECK(p->pub.ip == 0 && p->lan.ip == 0, name);
	}
	ta.c.p2p.public.ip = 0xcb007101;
	ta.c.p2p.public.port = 5000;
	server_udp4conn(B_ADDR, 0xcb007101, 5000);
	CHECK(p->pub.ip == 0, "endpoints: our own public endpoint refused");
	server_udp4conn(B_ADDR, 0xcb007101, 5001);
	CHECK(p->pub.ip == 0xcb007101, "endpoints: another port at our "
	    "public address (the same NAT) kept");

	/* Heartbeats from loopback are not a peer's. */
	fake_init(&fb, B_ADDR);
	server_lan(B_ADDR, 0xc0a80105, 4000);
	step(1);
	n = heartbeat_seal(&fb, d, 0);
	raw_send(fb.fd, d, n);
	CHECK(p->ack == 0 && p->real.ip == 0 && p->state != PEER_CONNECTED,
	    "endpoints: heartbeat from 127.0.0.1 ignored");
	fake_free(&fb);
	tc_free(&ta);

	/* Reflection: UDP4CONN from 200 peers, all naming one victim. */
	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0, 0);
	fake_init(&v, D_ADDR);
	for (a = NET + 10; a < NET + 210; a++)
		server_udp4conn(a, LOOPBACK, v.port);
	got = 0;
	for (secs = 0; secs < 30; secs++) {
		step(1);
		while (recv(v.fd, d, sizeof(d), 0) > 0)
			got++;
		if (secs % 10 == 9)	/* the server insists */
			for (a = NET + 10; a < NET + 210; a++)
				server_udp4conn(a, LOOPBACK, v.port);
	}
	snprintf(name, sizeof(name), "endpoints: a UDP4CONN flood naming one "
	    "victim: %d datagrams in 30 s (at most %d)", got,
	    PEER_PROBE_IP_BURST + 31 * PEER_PROBE_IP_PER_S);
	CHECK(got > 0 && got <= PEER_PROBE_IP_BURST + 31 *
	    PEER_PROBE_IP_PER_S && ta.c.p2p.tx_budget > 0, name);
	fake_free(&v);
	tc_free(&ta);
}

/*
 * Both sides start at once (each sends the other a packet through the
 * server): each is SYNCHRONIZING when the other's UDP4CONN comes, which
 * asks for nothing back.  Each must still learn the other's LAN endpoint,
 * the only way to meet behind one NAT that does not hairpin.
 */
static void test_peer_simultaneous(void)
{
	struct peer *pa, *pb;

	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0x7f000002, 0);
	tc_init(&tb, B_ADDR, 0x7f000003, 0);
	p2p_saw_forward(&ta.c, B_ADDR);
	p2p_saw_forward(&tb.c, A_ADDR);
	step(1);
	pa = peer_lookup(&ta.c, B_ADDR);
	pb = peer_lookup(&tb.c, A_ADDR);
	CHECK(pa != NULL && pb != NULL && pa->lan.ip == 0x7f000003 &&
	    pb->lan.ip == 0x7f000002, "peer: both start at once: each "
	    "learns the other's LAN endpoint");
	tc_free(&ta);
	tc_free(&tb);
}

/*
 * Our LAN endpoint is one of our own addresses, and it still goes out once
 * our interface addresses are known (they were, then every GENERAL/0 was
 * withheld: two clients behind one NAT never met, unless the server's
 * UDP4CONN happened to come before the first tick).
 */
static void test_peer_lan_offer(void)
{
	int before;

	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0xc0a80a0a, 0);
	ta.c.p2p.own[0] = 0xc0a80a0a;
	ta.c.p2p.nown = 1;
	ta.c.p2p.own_ms = fake_now_ms + 3600 * 1000;	/* not re-read */
	fake_init(&fb, B_ADDR);
	before = ta.sent[MSG_GENERAL];
	server_udp4conn(B_ADDR, LOOPBACK, fb.port);
	CHECK(ta.sent[MSG_GENERAL] == before + 1 &&
	    get32(ta.last[MSG_GENERAL] + 12) == 0xc0a80a0a &&
	    get16(ta.last[MSG_GENERAL] + 16) == ta.c.p2p.port,
	    "peer: our LAN endpoint 192.168.10.10 is offered (GENERAL/0) "
	    "though it is our own address");
	fake_free(&fb);
	tc_free(&ta);
}

static void test_peer_table(void)
{
	static const struct {
		uint32_t mask;
		size_t cap;
	} sizes[] = {
		{ 0xffffff00u, 253 }, { 0xfffffff0u, 13 }, { 0xfffffffcu, 1 },
		{ 0xfffff000u, 4093 }, { 0xffff0000u, PEER_MAX },
		{ 0xff000000u, PEER_MAX },
	};
	struct peer *p;
	char name[96];
	uint32_t a;
	size_t i;

	fake_now_ms = T0;
	tc_init(&ta, A_ADDR, 0, 0);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		p2p_stop(&ta.c);
		ta.c.mask = sizes[i].mask;
		ta.c.net = A_ADDR & sizes[i].mask;
		p2p_tick(&ta.c, fake_now_ms);
		snprintf(name, sizeof(name), "table: sized %zu for a mask of "
		    "%08x", sizes[i].cap, (unsigned)sizes[i].mask);
		CHECK(ta.c.p2p.cap == sizes[i].cap, name);
	}

	/* An insider floods DISCOVERY from every address of a /16; B,
	 * connected, stays; a real peer arriving later gets in. */
	p2p_stop(&ta.c);
	ta.c.mask = 0xffff0000u;
	ta.c.net = NET & 0xffff0000u;
	p2p_tick(&ta.c, fake_now_ms);
	fake_init(&fb, B_ADDR);
	fake_connect(&fb);
	for (a = 0; a < PEER_MAX + 500; a++)
		server_discovery(0xac1f0100 + a, A_ADDR);
	p = peer_lookup(&ta.c, B_ADDR);
	CHECK(p != NULL && p->state == PEER_CONNECTED &&
	    ta.c.p2p.npeers == PEER_MAX, "table: a DISCOVERY flood does "
	    "not evict a peer that answered");
	server_discovery(C_ADDR, A_ADDR);
	CHECK(peer_lookup(&ta.c, C_ADDR) != NULL &&
	    peer_lookup(&ta.c, 0xac1f0100) == NULL &&
	    peer_lookup(&ta.c, 0xac1f0100 + PEER_MAX + 499) != NULL,
	    "table: a new peer gets in, the oldest that never answered "
	    "goes");
	fake_free(&fb);
	tc_free(&ta);
}

/*
 * Issue 11's AQM, without a clock: codel_drop against RFC 8289's rules
 * step by step, then which packets may be dropped and how CE is set.
 */
static void test_peer_codel(void)
{
	struct codel q;
	int64_t t = 5000000, next;
	int i, drops;

	memset(&q, 0, sizeof(q));
	/* Below the target: never, however long. */
	for (i = 0; i < 100; i++)
		if (codel_drop(&q, t + i * 1000, AQM_TARGET_US - 1))
			break;
	CHECK(i == 100, "codel: a wait below the target drops nothing");
	/* Above it: nothing for one interval, then one drop. */
	CHECK(!codel_drop(&q, t, AQM_TARGET_US), "codel: not at once");
	CHECK(!codel_drop(&q, t + AQM_INTERVAL_US - 1, AQM_TARGET_US * 4),
	    "codel: not within the interval");
	CHECK(codel_drop(&q, t + AQM_INTERVAL_US, AQM_TARGET_US),
	    "codel: a standing wait for an interval drops one");
	CHECK(q.dropping && q.count == 1, "codel: dropping, count 1");
	/* The next drop an interval later, then interval / sqrt(2). */
	CHECK(!codel_drop(&q, t + 2 * AQM_INTERVAL_US - 1, AQM_TARGET_US),
	    "codel: the next not before an interval");
	CHECK(codel_drop(&q, t + 2 * AQM_INTERVAL_US, AQM_TARGET_US),
	    "codel: the next after an interval");
	next = q.drop_next_us - (t + 2 * AQM_INTERVAL_US);
	CHECK(next > AQM_INTERVAL_US * 70 / 100 &&
	    next < AQM_INTERVAL_US * 71 / 100,
	    "codel: then interval / sqrt(2)");
	/* Drops come faster and faster while the wait stands. */
	drops = 0;
	for (i = 1; i <= 10 * AQM_INTERVAL_US / 100; i++)
		drops += codel_drop(&q, t + 2 * AQM_INTERVAL_US + i * 100,
		    AQM_TARGET_US * 2);
	/* interval / sqrt(n) apart: about 42 in 10 intervals. */
	CHECK(drops > 30 && drops < 60, "codel: the control law's pace");
	/* A short wait ends it; a standing one soon after resumes near
	 * the last count (RFC 8289 §5.6). */
	CHECK(!codel_drop(&q, t + 20 * AQM_INTERVAL_US, 0) && !q.dropping,
	    "codel: a short wait ends the dropping state");
	t += 20 * AQM_INTERVAL_US + 1;
	CHECK(!codel_drop(&q, t, AQM_TARGET_US), "codel: again, not at once");
	CHECK(codel_drop(&q, t + AQM_INTERVAL_US, AQM_TARGET_US) &&
	    q.count > 2, "codel: again, at the count that worked");
}

/* RFC 1071: the header's checksum sums to 0xffff. */
static int ip_sum_ok(const unsigned char *h)
{
	uint32_t sum = 0;
	int i;

	for (i = 0; i < 20; i += 2)
		sum += (uint32_t)h[i] << 8 | h[i + 1];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

static void ip_header(unsigned char *h, int tos, int proto, size_t len)
{
	uint32_t sum = 0;
	int i;

	memset(h, 0, 20);
	h[0] = 0x45;
	h[1] = (unsigned char)tos;
	h[2] = (unsigned char)(len >> 8);
	h[3] = (unsigned char)len;
	h[8] = 64;
	h[9] = (unsigned char)proto;
	memcpy(h + 12, "\xac\x1f\x00\x01\xac\x1f\x00\x02", 8);
	for (i = 0; i < 20; i += 2)
		sum += (uint32_t)h[i] << 8 | h[i + 1];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	h[10] = (unsigned char)(~sum >> 8);
	h[11] = (unsigned char)~sum;
}

static void test_peer_aqm_packets(void)
{
	static const int tos[] = { 0x00, 0xb8, 0x01, 0x02, 0xff, 0xfe, 0x03 };
	unsigned char p[1400], was[20];
	size_t i;
	int ok = 1;

	ip_header(p, 0, 1, sizeof(p));
	CHECK(!aqm_bulk(p, sizeof(p)), "aqm: a large ping is not bulk");
	ip_header(p, 0, 6, 52);
	CHECK(!aqm_bulk(p, 52), "aqm: a TCP ACK is not bulk");
	ip_header(p, 0, 6, AQM_BULK_MIN);
	CHECK(aqm_bulk(p, AQM_BULK_MIN), "aqm: a full TCP segment is bulk");
	ip_header(p, 0, 17, sizeof(p));
	CHECK(aqm_bulk(p, sizeof(p)), "aqm: a large UDP packet is bulk");
	CHECK(!aqm_bulk(p, 19), "aqm: a short buffer is not");
	/* Not-ECT: left alone; ECT(0), ECT(1): CE with a right checksum;
	 * CE: left alone, counted as marked.  Whatever the DSCP. */
	for (i = 0; i < sizeof(tos) / sizeof(tos[0]); i++) {
		int r;

		ip_header(p, tos[i], 6, sizeof(p));
		memcpy(was, p, sizeof(was));
		r = aqm_mark(p, sizeof(p));
		if ((tos[i] & 3) == 0)
			ok &= r == 0 && memcmp(was, p, sizeof(was)) == 0;
		else
			ok &= r == 1 && p[1] == (tos[i] | 3) &&
			    ip_sum_ok(p) && memcmp(was + 2, p + 2, 8) == 0 &&
			    memcmp(was + 12, p + 12, 8) == 0;
	}
	CHECK(ok, "aqm: CE set on ECN-capable packets, the checksum right");
	CHECK(!aqm_mark(p, 19), "aqm: a short buffer is not marked");
}

void test_peer(void)
{
	test_peer_vectors();
	test_peer_start();
	stun_fd = udp_open(&stun_port);
	test_peer_handshake();
	test_peer_timers();
	test_peer_discovery();
	test_peer_bounds();
	test_peer_relay();
	test_peer_replay();
	test_peer_hijack();
	test_peer_endpoints();
	test_peer_lan_offer();
	test_peer_simultaneous();
	test_peer_table();
	test_udp_batch();
	test_peer_codel();
	test_peer_aqm_packets();
	close(stun_fd);
	fake_now_ms = 0;
}
