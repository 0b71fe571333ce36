/*
 * fuzz.c: libFuzzer targets for every parser of bytes from the network.
 * What they show: bad input gets an error and never a crash (ASan, UBSan,
 * and the REQUIREs below on what each parser promises), and nothing a
 * peer sends makes the process grow (no leak, a bounded RSS, every table
 * within its limit).  `make fuzz` builds test/fuzz and runs each target
 * FUZZ_SECONDS; it is not part of `make test`.
 *
 * One binary; FUZZ_TARGET in the environment names the target:
 *   ws_frame    ws_frame_parse
 *   ws_request  ws_request_parse
 *   ws_server   ws_read on a server connection over a socketpair: the
 *               upgrade request, then frames.  Input: a byte, then the
 *               bytes, written in chunks of byte & 127 (0: all at once);
 *               with byte & 128 the peer never reads what we send
 *   ws_client   the same on a client connection: the 101 answer, frames
 *   stun        stun_response_parse
 *   peer        a client with P2P on: records (below) of messages from the
 *               server (type 0), datagrams from a peer sealed by the
 *               harness (1) or raw (2), from the STUN server (3), seconds
 *               passing (4), packets to route (5); the relay is off when
 *               the first record's type has bit 7 set
 *   server      server_test_run: records from connection type & 3, the
 *               bytes as they are, or with type >> 2 of 1, 2, 3 a valid
 *               AUTH, VMAC or EXPTTUN made of them (see signed_build)
 *   session     session_test_run: records from the server, type ignored
 *   config      config_load: a config file, then NUL-separated arguments
 *   addr        ip_parse, cidr_parse, sdwan_parse, tls_pin_parse
 * A record is a type byte, a 16-bit big-endian length and that many bytes
 * (the last takes what is left).
 *
 * FUZZ_SEEDS=DIR: first write the target's seeds into DIR, made of the
 * messages of the captured vectors (PROTOCOL).  A crash replays with, say,
 *   FUZZ_TARGET=peer test/fuzz test/fuzz-peer-crash-...
 *
 * As root the harness runs in a network namespace of its own with only
 * loopback up: whatever endpoints or routes the input names, nothing
 * leaves the machine or touches its routes.  Without one the peer target
 * does not tick, as ticks send to endpoints the input names.
 */
#define _GNU_SOURCE
#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "candy.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n);

/* A broken promise is a crash the fuzzer reports, with this line. */
#define REQUIRE(c) do {							\
	if (!(c)) {							\
		fprintf(stderr, "fuzz: %s:%d: %s\n", __FILE__, __LINE__, #c); \
		abort();						\
	}								\
} while (0)

#define PASSWORD	"secretpw"
#define NET		0xac1f0000u	/* 172.31.0.0/24, as in the capture */
#define A_ADDR		0xac1f0001u
#define B_ADDR		0xac1f0002u
#define LOOPBACK	0x7f000001u
#define T0		1000000		/* the peer target's fake clock, ms */
#define MSGS_MAX	512		/* records per input */

/* ---- The captured vectors (PROTOCOL) ---- */

static const char vec_request[] = "GET / HTTP/1.1\r\n"
    "Connection: Upgrade\r\n"
    "Upgrade: websocket\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: T9WDF8aXq2H9/TBiYWs9RQ==\r\n"
    "Host: 10.77.0.1:8080\r\n"
    "\r\n";
static const char vec_answer[] = "HTTP/1.1 101 Switching Protocols\r\n"
    "Date: Sat, 21 Nov 2026 22:42:45 GMT\r\n"
    "Connection: Upgrade\r\n"
    "Upgrade: websocket\r\n"
    "Sec-WebSocket-Accept: tWjW7vMzFvYwiLdJVT9Hg00rWX4=\r\n"
    "\r\n";
static const char vec_accept[] = "tWjW7vMzFvYwiLdJVT9Hg00rWX4=";
static const char vec_vmac[] =
    "0430643136613634313437653237313039000000006b021e6505c68001a7d38dd1"
    "aa7005b4d3368902fa113042f687f37998dae671d23e2806";
static const char vec_expttun_req[] =
    "02000000006b021e65302e302e302e302f300000000000000000000000000000000"
    "0000000000000000093d30158f95b0074cf0f52a478b7942d61e81de8b72e8d8a9b"
    "4bd6a8267454d5";
static const char vec_expttun_ans[] =
    "02000000006b021e653137322e33312e302e312f3234000000000000000000000000"
    "0000000000000093d30158f95b0074cf0f52a478b7942d61e81de8b72e8d8a9b4bd6"
    "a8267454d5";
static const char vec_auth[] =
    "00ac1f0001000000006b021e6593817a88f7a3e4d827037b19ccd4959da5d8fc9b4e"
    "45e2115b7cba3e7f13c8ea";
static const char vec_route[] = "06010000c0a83200ffffff00ac1f0009";
static const char vec_ping[] = "candy::linux::6.1.8::vm";
static const char vec_forward[] =
    "0145000054fca340004001e5c3ac1f0001ac1f00020800ec4c07d30001691e026b00"
    "000000cb820e0000000000101112131415161718191a1b1c1d1e1f20212223242526"
    "2728292a2b2c2d2e2f3031323334353637";
static const char vec_udp4conn[] = "03ac1f0001ac1f00020a4d0002c730";
static const char vec_stun_req[] =
    "000100082112a44274f341ebbb05b7ab94026de60003000400000000";
static const char vec_stun_resp[] =
    "010100242112a44274f341ebbb05b7ab94026de6002000080001e6222b5fa4408022"
    "0014436f7475726e2d342e362e312027476f72737427";
static const unsigned char vec_tid[12] = {
	0x74, 0xf3, 0x41, 0xeb, 0xbb, 0x05, 0xb7, 0xab, 0x94, 0x02, 0x6d, 0xe6
};
/* Peer datagrams 172.31.0.1 -> 172.31.0.2, sealed and plain. */
static const char vec_dg_heartbeat[] =
    "d3ae9075c9ad20ab2eb7d046e3ede34383bf01c672a304c6e837fb6a90d7db5cf188"
    "b1fd7940068b";
static const char vec_dg_delay[] =
    "097946d49f2f1a83896300a5f582bf38305a75699db984d4f7837fb9cc40bb0e6625"
    "7c73ccaa9c603113ce1a0f";
static const char vec_heartbeat[] = "00ac1f000100000000000000";
static const char vec_delay[] = "02ac1f0001ac1f000200000000004b3608";

static size_t hex_decode(const char *hex, unsigned char *out, size_t max)
{
	size_t n = 0;

	for (; hex[0] && hex[1] && n < max; hex += 2) {
		unsigned v;

		sscanf(hex, "%2x", &v);
		out[n++] = (unsigned char)v;
	}
	return n;
}

/* ---- Records and seeds ---- */

struct rec {
	int type;
	const unsigned char *p;
	size_t len;
};

/* The next record from *d (*n bytes left); 0 at the end. */
static int rec_next(const unsigned char **d, size_t *n, struct rec *r)
{
	size_t hdr = *n < 3 ? *n : 3, want;

	if (*n == 0)
		return 0;
	r->type = (*d)[0];
	want = hdr == 3 ? get16(*d + 1) : 0;
	r->p = *d + hdr;
	r->len = want < *n - hdr ? want : *n - hdr;
	*d += hdr + r->len;
	*n -= hdr + r->len;
	return 1;
}

/* A seed being built. */
static struct seed {
	unsigned char b[256 * 1024];
	size_t n;
} sd;
static const char *seed_dir;
static int seed_count;

static void seed_add(const void *p, size_t n)
{
	REQUIRE(sd.n + n <= sizeof(sd.b));
	memcpy(sd.b + sd.n, p, n);
	sd.n += n;
}

static void seed_hex(const char *hex)
{
	unsigned char b[256];

	seed_add(b, hex_decode(hex, b, sizeof(b)));
}

static void seed_rec(int type, const void *p, size_t n)
{
	unsigned char h[3];

	h[0] = (unsigned char)type;
	put16(h + 1, (uint16_t)n);
	seed_add(h, 3);
	seed_add(p, n);
}

static void seed_rec_hex(int type, const char *hex)
{
	unsigned char b[256];

	seed_rec(type, b, hex_decode(hex, b, sizeof(b)));
}

/* Write the seed built so far into the seed directory; start another. */
static void seed_done(void)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/seed-%03d", seed_dir, seed_count++);
	if ((f = fopen(path, "wb")) == NULL ||
	    fwrite(sd.b, 1, sd.n, f) != sd.n || fclose(f) != 0) {
		perror(path);
		exit(2);
	}
	sd.n = 0;
}

/* A frame: masked as a client sends it, or not as a server does. */
static void seed_frame(int opcode, int fin, const void *p, size_t n,
    int masked)
{
	static const unsigned char mask[4] = { 0x37, 0xfa, 0x21, 0x3d };
	unsigned char h[14];
	size_t hl = ws_frame_header(h, opcode, 1, n, masked ? mask : NULL);

	if (!fin)
		h[0] &= 0x7f;
	seed_add(h, hl);
	seed_add(p, n);
	if (masked)
		ws_mask(sd.b + sd.n - n, n, mask, 0);
}

static void seed_frame_hex(const char *hex, int masked)
{
	unsigned char b[256];

	seed_frame(WS_BINARY, 1, b, hex_decode(hex, b, sizeof(b)), masked);
}

/* ---- Helpers ---- */

static void nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Throw away whatever fd has to read. */
static void drain(int fd)
{
	unsigned char b[4096];

	while (recv(fd, b, sizeof(b), 0) > 0)
		;
}

/* Read every byte, so that ASan checks the whole range. */
static void touch(const unsigned char *p, size_t n)
{
	volatile unsigned char sum = 0;

	while (n-- > 0)
		sum ^= *p++;
	(void)sum;
}

/* A network namespace with loopback up; 0 when we cannot have one. */
static int netns_enter(void)
{
	struct ifreq ifr;
	int s, ok;

	if (unshare(CLONE_NEWNET) < 0)
		return 0;
	if ((s = socket(AF_INET, SOCK_DGRAM, 0)) < 0)
		return 0;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	ok = ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
	ifr.ifr_flags |= IFF_UP;
	ok = ok && ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
	close(s);
	return ok;
}

static int isolated;	/* in our own network namespace */

/* ---- ws_frame, ws_request ---- */

static void fuzz_ws_frame(const unsigned char *d, size_t n)
{
	struct ws_frame f;
	unsigned char h[14];
	int r = ws_frame_parse(d, n, &f);

	REQUIRE(r == WS_DONE || r == WS_MORE || r == WS_BAD);
	if (r != WS_DONE)
		return;
	REQUIRE(f.hdrlen >= 2 && f.hdrlen <= 14 && f.hdrlen <= n);
	REQUIRE(f.paylen >> 63 == 0);
	REQUIRE(f.opcode <= WS_BINARY ||
	    (f.opcode >= WS_CLOSE && f.opcode <= WS_PONG));
	/* The same header written again, when it took the shortest form. */
	if (f.fin && ws_frame_header(h, f.opcode, 1, (size_t)f.paylen,
	    f.masked ? f.mask : NULL) == f.hdrlen)
		REQUIRE(memcmp(h, d, f.hdrlen) == 0);
}

static void seeds_ws_frame(void)
{
	unsigned char h[14];

	seed_frame_hex(vec_forward, 1);
	seed_done();
	seed_frame_hex(vec_route, 0);
	seed_done();
	seed_frame(WS_PING, 1, vec_ping, strlen(vec_ping), 1);
	seed_done();
	seed_frame(WS_CLOSE, 1, "\x03\xe8", 2, 0);
	seed_done();
	/* Headers alone: 16-bit and 64-bit lengths. */
	seed_add(h, ws_frame_header(h, WS_BINARY, 1, 300,
	    (const unsigned char *)"mask"));
	seed_done();
	seed_add(h, ws_frame_header(h, WS_CONT, 1, 70000, NULL));
	seed_done();
}

static void fuzz_ws_request(const unsigned char *d, size_t n)
{
	char key[64];
	size_t used = 0;
	int r = ws_request_parse(d, n, &used, key, sizeof(key));

	if (r == WS_DONE) {
		REQUIRE(used > 0 && used <= n && used <= WS_HTTP_MAX);
		REQUIRE(memchr(key, '\0', sizeof(key)) != NULL && key[0]);
	} else {
		REQUIRE(r == WS_BAD || (r == WS_MORE && n < WS_HTTP_MAX));
	}
}

static void seeds_ws_request(void)
{
	seed_add(vec_request, strlen(vec_request));
	seed_done();
	seed_add(vec_request, strlen(vec_request) - 10);
	seed_done();
}

/* ---- ws_server, ws_client: ws_read over a socketpair ---- */

static struct ws ws;

static void ws_check(void)
{
	REQUIRE(ws.inpos <= ws.inlen && ws.inlen <= ws.insize);
	REQUIRE(ws.insize <= WS_BUF_MAX && (ws.in != NULL || !ws.insize));
	REQUIRE(ws.outpos <= ws.outlen && ws.outlen <= ws.outsize);
	REQUIRE(ws.outsize <= ws.outmax && (ws.out != NULL || !ws.outsize));
	REQUIRE(ws.msglen <= WS_MSG_MAX && ws.msglen <= ws.inpos);
}

/*
 * Read messages as the poll loop does, until ws_read wants the socket:
 * its last result.  Each message is echoed (the server's relaying) and
 * the queue flushed, and drained by the peer if it reads.
 */
static int ws_pump(int peer, int reads)
{
	unsigned char *m;
	size_t len;
	int r, calls = 0;

	while ((r = ws_read(&ws, &m, &len)) == 1 ||
	    (r == 0 && ws_pending(&ws))) {
		REQUIRE(++calls < 1000000);
		ws_check();
		if (r == 1) {
			REQUIRE(len <= WS_MSG_MAX);
			REQUIRE(m >= ws.in && m + len <= ws.in + ws.inpos);
			touch(m, len);
			ws_send(&ws, WS_BINARY, m, len);
		}
		ws_flush(&ws);
		if (reads)
			drain(peer);
	}
	ws_check();
	ws_flush(&ws);
	if (reads)
		drain(peer);
	return r;
}

static void ws_stream(const unsigned char *d, size_t n, int client)
{
	size_t chunk, off = 0;
	int sv[2], eof = 0, after = 0, reads, small = 4096;

	if (n == 0)
		return;
	chunk = d[0] & 127 ? d[0] & 127 : n;
	reads = !(d[0] & 128);
	d++;
	n--;
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	nonblock(sv[0]);
	nonblock(sv[1]);
	/* A peer that does not read: the socket fills soon, then our queue. */
	if (!reads)
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	if (client) {
		ws_init_client(&ws, sv[0], NULL, "10.77.0.1:8080", "/");
		/* The answer in the input was made for the capture's key. */
		memcpy(ws.accept, vec_accept, sizeof(vec_accept));
	} else {
		ws_init_server(&ws, sv[0], NULL);
	}
	ws_flush(&ws);
	drain(sv[1]);
	for (;;) {
		if (off < n) {
			ssize_t w = write(sv[1], d + off,
			    chunk < n - off ? chunk : n - off);

			REQUIRE(w > 0);
			off += (size_t)w;
		} else if (!eof) {
			shutdown(sv[1], SHUT_WR);
			eof = 1;
		}
		if (ws_pump(sv[1], reads) < 0)
			break;
		/* The end of the stream ends the connection, once poll says
		 * readable (a burst of pings may end a pass first). */
		REQUIRE(!eof || ++after < 3);
	}
	ws_free(&ws);
	close(sv[1]);
}

static void fuzz_ws_server(const unsigned char *d, size_t n)
{
	ws_stream(d, n, 0);
}

static void fuzz_ws_client(const unsigned char *d, size_t n)
{
	ws_stream(d, n, 1);
}

/* After the head, a frame header that claims WS_MSG_MAX + 1 bytes. */
static void seed_oversized(int server)
{
	unsigned char h[14];

	seed_add("", 1);
	if (server)
		seed_add(vec_request, strlen(vec_request));
	else
		seed_add(vec_answer, strlen(vec_answer));
	seed_add(h, ws_frame_header(h, WS_BINARY, 1, WS_MSG_MAX + 1,
	    server ? (const unsigned char *)"mask" : NULL));
	seed_done();
}

static void seeds_ws_server(void)
{
	static unsigned char big[40000];
	int chunk, i;

	for (chunk = 0; chunk < 2; chunk++) {
		seed_add(chunk ? "\x07" : "", 1);
		seed_add(vec_request, strlen(vec_request));
		seed_frame_hex(vec_vmac, 1);
		seed_frame_hex(vec_expttun_req, 1);
		seed_frame_hex(vec_auth, 1);
		seed_frame_hex(vec_forward, 1);
		seed_frame_hex(vec_udp4conn, 1);
		seed_frame(WS_PING, 1, vec_ping, strlen(vec_ping), 1);
		seed_frame(WS_CLOSE, 1, "\x03\xe8", 2, 1);
		seed_done();
	}
	/* A message in two fragments with a ping between: the buffers near
	 * their limits. */
	seed_add("", 1);
	seed_add(vec_request, strlen(vec_request));
	seed_frame(WS_BINARY, 0, big, sizeof(big), 1);
	seed_frame(WS_PING, 1, vec_ping, strlen(vec_ping), 1);
	seed_frame(WS_CONT, 1, big, WS_MSG_MAX - sizeof(big), 1);
	seed_frame(WS_BINARY, 1, big, sizeof(big), 1);
	seed_done();
	seed_oversized(1);
	/* A ping flood from a peer that reads nothing: more pongs than the
	 * queue holds. */
	seed_add("\x80", 1);
	seed_add(vec_request, strlen(vec_request));
	for (i = 0; i < 1100; i++)
		seed_frame(WS_PING, 1, big, 125, 1);
	seed_done();
}

static void seeds_ws_client(void)
{
	static unsigned char pad[1500];
	int chunk;

	for (chunk = 0; chunk < 2; chunk++) {
		seed_add(chunk ? "\x05" : "", 1);
		seed_add(vec_answer, strlen(vec_answer));
		seed_frame_hex(vec_expttun_ans, 0);
		seed_frame_hex(vec_route, 0);
		seed_frame_hex(vec_forward, 0);
		seed_frame_hex(vec_udp4conn, 0);
		seed_frame(WS_PONG, 1, pad, sizeof(pad), 0);
		seed_frame(WS_CLOSE, 1, "\x03\xe8", 2, 0);
		seed_done();
	}
	seed_oversized(0);
}

/* ---- stun ---- */

static void fuzz_stun(const unsigned char *d, size_t n)
{
	uint32_t ip = 0;
	uint16_t port = 0;

	if (stun_response_parse(d, n, NULL, &ip, &port) == WS_DONE)
		REQUIRE(ip != 0 && port != 0);
	if (stun_response_parse(d, n, vec_tid, &ip, &port) == WS_DONE)
		REQUIRE(n >= 20 && memcmp(d + 8, vec_tid, 12) == 0);
}

static void seeds_stun(void)
{
	seed_hex(vec_stun_resp);
	seed_done();
	seed_hex(vec_stun_req);
	seed_done();
}

/* ---- peer: a client with P2P, 172.31.0.2 as in the capture ---- */

static struct {
	struct config cfg;
	struct client c;
	int tun[2];		/* tun[0] is its TUN device */
	int peer_fd, stun_fd;	/* a peer's socket and the STUN server's */
	uint16_t stun_port;
	struct peer_key to_us;
	struct peer_iv iv;
	unsigned char dg[PEER_OVERHEAD + 65536];
	unsigned char pkt[PKT_HEADROOM + PKT_MAX];
} pc;

static int udp_open(uint16_t *port)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(LOOPBACK);
	REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
	nonblock(fd);
	*port = ntohs(sa.sin_port);
	return fd;
}

static int server_hook(struct client *c, const unsigned char *m, size_t len)
{
	REQUIRE(len > 0 && len <= LOCALUDP4CONN_LEN);
	touch(m, len);
	return 0;
}

static void peer_setup(void)
{
	struct config *cfg = &pc.cfg;
	struct client *c = &pc.c;
	uint16_t port;
	const char *why;

	pc.stun_fd = udp_open(&pc.stun_port);
	pc.peer_fd = udp_open(&port);
	cfg->mode = MODE_CLIENT;
	snprintf(cfg->password, sizeof(cfg->password), PASSWORD);
	snprintf(cfg->stun, sizeof(cfg->stun), "stun://127.0.0.1:%u",
	    (unsigned)pc.stun_port);
	cfg->route = 5;
	cfg->discovery = 30;
	cfg->localhost = 0x0a000002;
	cfg->nsdwan = sdwan_parse("172.31.0.0/24,192.168.50.0/24,172.31.0.9",
	    cfg->sdwan, SDWAN_MAX, &why);
	REQUIRE(socketpair(AF_UNIX, SOCK_DGRAM, 0, pc.tun) == 0);
	nonblock(pc.tun[0]);
	nonblock(pc.tun[1]);
	c->cfg = cfg;
	c->tun_fd = pc.tun[0];
	c->addr = B_ADDR;
	c->prefix = 24;
	c->mask = prefix_mask(24);
	c->net = NET;
	c->routes[0].dst = 0xc0a83200;	/* the captured ROUTE */
	c->routes[0].mask = 0xffffff00;
	c->routes[0].next = 0xac1f0009;
	c->nroutes = 1;
	REQUIRE(p2p_start(c) == 0 && c->p2p.udp_fd >= 0);
	c->p2p.server_send = server_hook;
	c->p2p.loopback_ok = 1;	/* its peer is on 127.0.0.1 */
	peer_key_init(&pc.to_us, PASSWORD, B_ADDR);
}

static void udp_to_client(int fd, const unsigned char *d, size_t n)
{
	struct sockaddr_in sa;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(LOOPBACK);
	sa.sin_port = htons(pc.c.p2p.port);
	if (n > 65507)		/* the most a UDP datagram carries */
		n = 65507;
	sendto(fd, d, n, 0, (struct sockaddr *)&sa, sizeof(sa));
	p2p_udp_input(&pc.c);
}

static void peer_check(void)
{
	const struct client *c = &pc.c;
	size_t i;

	REQUIRE(c->p2p.npeers <= PEER_MAX);
	REQUIRE(c->p2p.relay.n <= c->p2p.relay.max);
	for (i = 0; i < c->p2p.npeers; i++) {
		const struct peer *p = &c->p2p.peers[i];

		REQUIRE((p->addr & c->mask) == c->net && p->addr != c->addr);
		REQUIRE(p->state <= PEER_FAILED);
		REQUIRE(peer_lookup(&pc.c, p->addr) == p);
	}
}

static void fuzz_peer(const unsigned char *d, size_t n)
{
	struct client *c = &pc.c;
	struct rec r;
	size_t len;

	if (c->cfg == NULL)
		peer_setup();
	p2p_stop(c);
	pc.cfg.route = n > 0 && (d[0] & 0x80) ? 0 : 5;
	fake_now_ms = T0;
	memcpy(c->p2p.stun_tid, vec_tid, sizeof(vec_tid));
	memset(&c->p2p.public, 0, sizeof(c->p2p.public));
	c->p2p.ticks = 0;
	while (rec_next(&d, &n, &r)) {
		switch (r.type % 6) {
		case 0:
			p2p_server_msg(c, r.p, r.len);
			break;
		case 1:
			len = r.len < 65536 ? r.len : 65536;
			memcpy(pc.dg + PEER_OVERHEAD, r.p, len);
			udp_to_client(pc.peer_fd, pc.dg,
			    peer_seal(&pc.to_us, &pc.iv, pc.dg, len));
			break;
		case 2:
			udp_to_client(pc.peer_fd, r.p, r.len);
			break;
		case 3:
			udp_to_client(pc.stun_fd, r.p, r.len);
			break;
		case 4:
			fake_now_ms += 1000 * (1 + (r.len > 0 ? r.p[0] : 0));
			if (isolated)
				p2p_tick(c, fake_now_ms);
			break;
		case 5:
			/* As session_tun_input reads them, or relayed. */
			len = r.len < PKT_MAX - 21 ? r.len : PKT_MAX - 21;
			memcpy(pc.pkt + PKT_HEADROOM, r.p, len);
			client_route(c, pc.pkt + PKT_HEADROOM, len, r.type & 1);
			break;
		}
		drain(pc.peer_fd);
		drain(pc.stun_fd);
		drain(pc.tun[1]);
		peer_check();
	}
	/* The status report of whatever the input left in the tables, in
	 * both forms (status.c). */
	{
		static char buf[REPORT_MAX];
		struct report rep;

		report_init(&rep, REPORT_JSON, buf, sizeof(buf));
		p2p_report(&rep, c);
		report_init(&rep, REPORT_TEXT, buf, sizeof(buf));
		p2p_report(&rep, c);
	}
}

static void seeds_peer(void)
{
	unsigned char m[64], ping[128];
	size_t n;

	/* A's endpoint from the server, its heartbeats, then each message. */
	seed_rec_hex(0, vec_udp4conn);
	seed_rec_hex(3, vec_stun_resp);
	seed_rec_hex(1, vec_heartbeat);
	n = hex_decode(vec_heartbeat, m, sizeof(m));
	m[11] = 1;			/* ack */
	seed_rec(1, m, n);
	seed_rec(4, "", 0);
	seed_rec_hex(1, vec_delay);
	seed_rec_hex(2, vec_dg_heartbeat);
	seed_rec_hex(2, vec_dg_delay);
	/* Our own DELAY coming back, a ROUTE to .3 via A. */
	n = hex_decode("02ac1f0002ac1f000100000000000f4240", m, sizeof(m));
	seed_rec(1, m, n);
	seed_rec_hex(1, "04ac1f0003ac1f000100000005");
	/* FORWARD for us, and one to relay to .3. */
	n = hex_decode(vec_forward, ping, sizeof(ping));
	seed_rec(1, ping, n);
	put32(ping + 1 + 16, 0xac1f0003);
	seed_rec(1, ping, n);
	/* A packet to A, and one to the SD-WAN network. */
	put32(ping + 1 + 12, B_ADDR);
	put32(ping + 1 + 16, A_ADDR);
	seed_rec(5, ping + 1, n - 1);
	put32(ping + 1 + 16, 0xc0a83205);
	seed_rec(5, ping + 1, n - 1);
	seed_rec(4, "\x0a", 1);
	seed_done();
	/* DISCOVERY to everyone, A's LAN endpoint, time passing. */
	seed_rec_hex(0, "05ac1f0001ffffffff");
	seed_rec_hex(0, "ff000000ac1f0001ac1f00020a0000090d05");
	seed_rec_hex(0, vec_udp4conn);
	seed_rec(4, "\x05", 1);
	seed_rec(4, "\x1e", 1);
	seed_rec(4, "\xff", 1);
	seed_done();
	/* The relay off (type 0x84 is a server message): A asks us to
	 * relay anyway. */
	seed_rec_hex(0x84, vec_udp4conn);
	hex_decode(vec_heartbeat, m, sizeof(m));
	m[11] = 1;
	seed_rec(1, m, PMSG_HEARTBEAT_LEN);
	n = hex_decode(vec_forward, ping, sizeof(ping));
	put32(ping + 1 + 16, 0xac1f0003);
	seed_rec(1, ping, n);
	seed_done();
}

/* ---- server ---- */

static struct config server_cfg;

/*
 * A valid AUTH (kind 1), VMAC (2) or EXPTTUN (3) from the record's bytes:
 * p[0] & 63 bytes of padding; the timestamp is now, plus the next 8 bytes
 * (modulo 2^64) with p[0] & 0x80; then the fields: AUTH's address (4
 * bytes, or 1 byte for 172.31.0.x), VMAC's 16 bytes, EXPTTUN's cidr text.
 * Its length.
 */
static size_t signed_build(unsigned char *out, int kind,
    const unsigned char *p, size_t n)
{
	int64_t ts = wall_s();
	size_t pad = n > 0 ? p[0] & 63 : 0;
	char text[32] = "";
	uint32_t ip;

	if (n > 0 && (p[0] & 0x80) && n >= 9) {
		ts = (int64_t)((uint64_t)ts + get64(p + 1));
		p += 9;
		n -= 9;
	} else if (n > 0) {
		p++;
		n--;
	}
	memcpy(text, p, n < sizeof(text) - 1 ? n : sizeof(text) - 1);
	switch (kind) {
	case 1:
		ip = n >= 4 ? get32(p) : NET | (n > 0 ? p[0] : 1);
		return msg_auth_build(out, PASSWORD, ip, ts, pad);
	case 2:
		return msg_vmac_build(out, PASSWORD, text, ts, pad);
	default:
		return msg_expttun_build(out, PASSWORD, text, ts, pad);
	}
}

static void fuzz_server(const unsigned char *d, size_t n)
{
	static unsigned char buf[1 << 20], *m[MSGS_MAX];
	static size_t len[MSGS_MAX], from[MSGS_MAX];
	struct rec r;
	size_t k = 0, used = 0;
	const char *why;

	if (server_cfg.password[0] == '\0') {
		server_cfg.mode = MODE_SERVER;
		snprintf(server_cfg.password, sizeof(server_cfg.password),
		    PASSWORD);
		server_cfg.has_dhcp = cidr_parse("172.31.0.0/24",
		    &server_cfg.dhcp, &why) == 0;
		server_cfg.nsdwan = sdwan_parse("172.31.0.0/24,"
		    "192.168.50.0/24,172.31.0.9", server_cfg.sdwan, SDWAN_MAX,
		    &why);
	}
	/* Messages are copied: the dispatcher may change them in place. */
	while (k < MSGS_MAX && rec_next(&d, &n, &r) &&
	    used + r.len + EXPTTUN_LEN + PAD_MAX <= sizeof(buf)) {
		m[k] = buf + used;
		from[k] = (size_t)r.type & 3;
		if (r.type >> 2 & 3) {
			len[k] = signed_build(m[k], r.type >> 2 & 3, r.p, r.len);
		} else {
			memcpy(m[k], r.p, r.len);
			len[k] = r.len;
		}
		used += len[k++];
	}
	REQUIRE(server_test_run(&server_cfg, m, len, from, k) >= 0);
}

static void seeds_server(void)
{
	unsigned char m[9], pkt[128];
	size_t n;

	/* AUTH for .1 from connection 0, for .2 from 1, then messages. */
	seed_rec(1 << 2 | 0, "\x00\x01", 2);
	seed_rec(1 << 2 | 1, "\x05\x02", 2);
	seed_rec_hex(0, vec_forward);
	seed_rec_hex(0, vec_udp4conn);
	seed_rec_hex(1, "05ac1f0002ffffffff");
	seed_rec_hex(0, "ff000000ac1f0001ac1f00020a0000090d05");
	/* A new host: VMAC, EXPTTUN, AUTH for what it got. */
	seed_rec(2 << 2 | 2, "\x00" "0d16a64147e27109", 17);
	seed_rec(3 << 2 | 2, "\x00" "0.0.0.0/0", 10);
	seed_rec(1 << 2 | 2, "\x00\x03", 2);
	/* the capture's own, stale: refused. */
	seed_rec_hex(3, vec_vmac);
	seed_rec_hex(3, vec_expttun_req);
	seed_rec_hex(3, vec_auth);
	seed_done();
	/* .2 again a second later: the old connection replaced.  The
	 * SD-WAN gateway .9 sends from its LAN.  An address asked for. */
	m[0] = 0x80;
	put64(m + 1, 1);
	seed_rec(1 << 2 | 0, "\x00\x02", 2);
	seed_rec(1 << 2 | 1, m, 9);
	seed_rec(1 << 2 | 1, "\x00\x02", 2);
	seed_rec(1 << 2 | 2, "\x00\x09", 2);
	n = hex_decode(vec_forward, pkt, sizeof(pkt));
	put32(pkt + 1 + 12, 0xc0a83205);
	seed_rec(2, pkt, n);
	seed_rec(3 << 2 | 3, "\x00" "172.31.0.7/24", 14);
	seed_done();
}

/* ---- session: a client that is up as 172.31.0.2/24 ---- */

static void fuzz_session(const unsigned char *d, size_t n)
{
	static struct config cfg;
	static unsigned char buf[1 << 20], *m[MSGS_MAX];
	static size_t len[MSGS_MAX];
	struct rec r;
	size_t k = 0, used = 0;
	const char *why;
	int taken;

	if (cfg.password[0] == '\0') {
		cfg.mode = MODE_CLIENT;
		snprintf(cfg.password, sizeof(cfg.password), PASSWORD);
		cfg.has_tun = cidr_parse("172.31.0.2/24", &cfg.tun, &why) == 0;
	}
	while (k < MSGS_MAX && rec_next(&d, &n, &r) &&
	    used + r.len <= sizeof(buf)) {
		m[k] = buf + used;
		memcpy(m[k], r.p, r.len);
		len[k] = r.len;
		used += len[k++];
	}
	taken = session_test_run(&cfg, m, len, k);
	REQUIRE(taken >= 0 && (size_t)taken <= k);
}

static void seeds_session(void)
{
	seed_rec_hex(0, vec_expttun_ans);
	seed_rec_hex(0, vec_route);
	seed_rec_hex(0, "0602000000000000ffffff00ac1f0003"
	    "0a000000ff000000ac1f0002");
	seed_rec_hex(0, vec_forward);
	seed_rec_hex(0, vec_udp4conn);
	seed_rec_hex(0, "05ac1f0001ffffffff");
	seed_rec_hex(0, "ff000000ac1f0001ac1f00020a0000090d05");
	seed_rec(0, "", 0);
	seed_done();
}

/* ---- config ---- */

static void fuzz_config(const unsigned char *d, size_t n)
{
	static struct config cfg;
	static char text[1 << 16];
	char path[4096], err[512], *argv[32], *p, *end;
	const char *tmp = getenv("TMPDIR");
	int argc = 0, r;
	FILE *f;

	if (n > sizeof(text) - 1)
		n = sizeof(text) - 1;
	memcpy(text, d, n);
	text[n] = '\0';
	snprintf(path, sizeof(path), "%s/candy-fuzz-%ld.conf",
	    tmp ? tmp : "/tmp", (long)getpid());
	REQUIRE((f = fopen(path, "w")) != NULL);
	fwrite(text, 1, strlen(text), f);
	fclose(f);
	argv[argc++] = "candy";
	argv[argc++] = "-c";
	argv[argc++] = path;
	/* After the file's NUL: arguments, but no other config file (it
	 * could be a FIFO or endless). */
	end = text + n;
	for (p = text + strlen(text) + 1; p < end && argc < 31;
	    p += strlen(p) + 1)
		if (strncmp(p, "-c", 2) != 0 && strncmp(p, "--c", 3) != 0)
			argv[argc++] = p;
	argv[argc] = NULL;
	err[0] = '\0';
	r = config_load(&cfg, argc, argv, err, sizeof(err));
	unlink(path);
	REQUIRE(r >= -1 && r <= 1);
	REQUIRE(memchr(err, '\0', sizeof(err)) != NULL);
	if (r < 0)
		REQUIRE(err[0] != '\0');
	REQUIRE(cfg.nsdwan >= 0 && cfg.nsdwan <= SDWAN_MAX);
	REQUIRE(memchr(cfg.websocket, '\0', sizeof(cfg.websocket)) != NULL);
	REQUIRE(memchr(cfg.name, '\0', sizeof(cfg.name)) != NULL);
	REQUIRE(!cfg.has_tun || (cfg.tun.prefix >= 1 && cfg.tun.prefix <= 30));
}

static void seeds_config(void)
{
	static const char file[] = "# candy.cfg\n"
	    "mode = server\n"
	    "websocket = \"ws://0.0.0.0:8080\"\n"
	    "password = 'secretpw' # the shared one\n"
	    "dhcp = 172.31.0.0/24\n"
	    "sdwan = 172.31.0.0/24,192.168.50.0/24,172.31.0.9\n"
	    "no-source-check = false\n"
	    "restart = 5\n";
	static const char args[] = "-m\0" "client\0" "--tun=172.31.0.9/24\0"
	    "-n\0" "home\0" "--stun\0" "stun://10.77.0.1\0" "--port=0\0"
	    "-r\0" "5\0" "--pin\0"
	    "0000000000000000000000000000000000000000000000000000000000000000"
	    "\0" "--debug";

	seed_add(file, sizeof(file) - 1);
	seed_done();
	seed_add(file, sizeof(file));
	seed_add(args, sizeof(args) - 1);
	seed_done();
}

/* ---- addr ---- */

static void fuzz_addr(const unsigned char *d, size_t n)
{
	static char s[1 << 16];
	static struct sdwan_rule rules[SDWAN_MAX];
	unsigned char pin[32];
	const char *why;
	char buf[20];
	struct cidr c;
	uint32_t ip;
	int k;

	if (n > sizeof(s) - 1)
		n = sizeof(s) - 1;
	memcpy(s, d, n);
	s[n] = '\0';
	/* Strict forms: what parses is what ip_str and cidr_str write. */
	if (ip_parse(s, &ip) == 0)
		REQUIRE(strcmp(ip_str(ip, buf), s) == 0);
	why = NULL;
	if (cidr_parse(s, &c, &why) == 0)
		REQUIRE(c.prefix <= 32 && strcmp(cidr_str(&c, buf), s) == 0);
	else
		REQUIRE(why != NULL);
	why = NULL;
	k = sdwan_parse(s, rules, SDWAN_MAX, &why);
	REQUIRE((k >= 0 && k <= SDWAN_MAX) || (k == -1 && why != NULL));
	tls_pin_parse(s, pin);
}

static void seeds_addr(void)
{
	static const char *const s[] = {
		"172.31.0.1", "172.31.0.0/24",
		"172.31.0.0/24,192.168.50.0/24,172.31.0.9",
		("172.31.0.0/24,192.168.50.0/24,172.31.0.9;"
		"10.0.0.0/8, 10.1.0.0/16 ,10.0.0.1"),
		"0000000000000000000000000000000000000000000000000000000000000000",
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	};
	size_t i;

	for (i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
		seed_add(s[i], strlen(s[i]));
		seed_done();
	}
}

/* ---- The targets ---- */

static const struct target {
	const char *name;
	void (*run)(const unsigned char *d, size_t n);
	void (*seeds)(void);
} targets[] = {
	{ "ws_frame", fuzz_ws_frame, seeds_ws_frame },
	{ "ws_request", fuzz_ws_request, seeds_ws_request },
	{ "ws_server", fuzz_ws_server, seeds_ws_server },
	{ "ws_client", fuzz_ws_client, seeds_ws_client },
	{ "stun", fuzz_stun, seeds_stun },
	{ "peer", fuzz_peer, seeds_peer },
	{ "server", fuzz_server, seeds_server },
	{ "session", fuzz_session, seeds_session },
	{ "config", fuzz_config, seeds_config },
	{ "addr", fuzz_addr, seeds_addr },
};

static const struct target *target;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *name = getenv("FUZZ_TARGET");
	size_t i;

	for (i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
		if (name != NULL && strcmp(name, targets[i].name) == 0)
			target = &targets[i];
	if (target == NULL) {
		fprintf(stderr, "fuzz: set FUZZ_TARGET to one of:");
		for (i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
			fprintf(stderr, " %s", targets[i].name);
		fprintf(stderr, "\n");
		exit(2);
	}
	log_init(1, 0);		/* debug: its messages are formatted too */
	rand_init();
	isolated = netns_enter();
	if ((seed_dir = getenv("FUZZ_SEEDS")) != NULL)
		target->seeds();
	return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n)
{
	target->run(d, n);
	return 0;
}
