/*
 * candy.h: every declaration shared between the files of candy, each with
 * its contract.  The wire protocol (Candy 6.x), byte by byte, is the file
 * PROTOCOL.
 *
 * Files, one per layer:
 *   candy.c  main, options and config, logging, the poll loop, the client
 *            and server sessions, the Candy message codec
 *   tls.c    BearSSL: random numbers, TLS client/server, the byte stream
 *   ws.c     WebSocket (RFC 6455): HTTP upgrade, frames, connection buffers
 *   tun.c    the TUN device and OS routes (all OS-specific code lives here)
 *   stun.c   STUN binding request/response (RFC 5389)
 *   peer.c   peer-to-peer: peer table, state machine, AES-256-GCM datagrams
 *   route.c  IPv4 address arithmetic, SD-WAN rules, address allocation,
 *            the distance-vector relay table
 *   status.c the status report (text, JSON, log), its Unix socket, and
 *            `candy status'
 *
 * Conventions: IPv4 addresses are uint32_t in host order (172.31.0.2 is
 * 0xac1f0002) everywhere in the code and converted with get32/put32 at the
 * wire; times are int64_t milliseconds of the monotonic clock (now_ms()).
 */
#ifndef CANDY_H
#define CANDY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CANDY_VERSION "1.0.0"

/* ---- Bytes on the wire: big-endian, whatever the CPU. ---- */

static inline uint16_t get16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get64(const unsigned char *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static inline void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static inline void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static inline void put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

/*
 * The open-addressing tables (server connections, sources and replays,
 * peers) probe linearly and delete without tombstones (Knuth 6.4,
 * algorithm R): once an entry leaves a hole, each later entry j of the
 * run, whose home slot is home, moves into the hole unless home lies
 * cyclically in (hole, j], where a lookup would then miss it.
 */
static inline int probe_may_fill(size_t hole, size_t j, size_t home)
{
	return hole <= j ? home <= hole || home > j :
	    home <= hole && home > j;
}

/* ---- Logging and time (candy.c). ---- */

void log_init(int debug, int timestamps);
extern int log_debug_on;	/* test it before building costly debug text */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * Warnings, and info lines a peer can cause at will (log_info_limited), are
 * rate-limited per call site (format string): 10 lines in 10 s, then they
 * are counted, and the next line of that format after the window, or
 * log_tick, says "(N more suppressed)".
 */
void log_info_limited(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* log_warn appends ": strerror(errno)". */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Report suppressed counts whose window has ended; call it once a second
 * or so from the poll loop. */
void log_tick(void);
/* While from is set (not NULL), every line that does not already name it
 * ends with " (from FROM)": set it around the work for one connection, so
 * that ws.c's and tls.c's warnings name the peer too. */
const char *log_peer(const char *from);	/* returns the one before */
/* Print the message to stderr and exit 1: start-up errors only. */
void fatalx(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* Monotonic milliseconds; wall-clock seconds for protocol timestamps. */
int64_t now_ms(void);
int64_t now_us(void);	/* the same clock in microseconds */
int64_t wall_s(void);

/* Test hook: when nonzero, now_ms() returns this instead of the clock. */
extern int64_t fake_now_ms;

/* ---- Random numbers and hashing (tls.c). ---- */

/* Seed the generator from the OS; exits with a message if it cannot. */
void rand_init(void);
/* Fill buf with n cryptographically strong random bytes. */
void rand_bytes(void *buf, size_t n);
/* A uniform random number in [0, n), n > 0. */
uint32_t rand_below(uint32_t n);
/* Zero n bytes at p with stores the compiler may not drop: secrets
 * (keys, hash states that held the password) go this way. */
void wipe(void *p, size_t n);

/* ---- TLS and the byte stream (tls.c). ---- */

struct tls_ctx;	/* per-process: trust anchors and pin, or cert and key */
struct tls;	/* one TLS connection */

/*
 * Load the server's PEM certificate chain (leaf first) and PEM key (RSA or
 * EC; PKCS#1, SEC1 or PKCS#8).  On error returns NULL and writes a message
 * naming the file and the reason into err.
 */
struct tls_ctx *tls_server_ctx_load(const char *certfile, const char *keyfile,
    char *err, size_t errlen);
/*
 * Client settings: cafile NULL means the system trust store; pin NULL or a
 * SHA-256 of the server's SubjectPublicKeyInfo in hex or base64; insecure
 * skips verification.  With a pin, the pin alone decides (the server key
 * must match it; CA, dates and name are not checked); else with insecure
 * nothing is checked (a warning at every connection); else the chain must
 * lead to a trust anchor and name the host (dNSName, or iPAddress for an
 * address).  On error returns NULL with a message in err.
 */
struct tls_ctx *tls_client_ctx_load(const char *cafile, const char *pin,
    int insecure, char *err, size_t errlen);
/* Free a context from tls_*_ctx_load (NULL is fine); its connections must
 * be gone.  candy keeps its one context for life; the tests load many. */
void tls_ctx_free(struct tls_ctx *ctx);
/* Parse a pin (64 hex digits or base64 of 32 bytes). 0 ok, -1 bad. */
int tls_pin_parse(const char *s, unsigned char out[32]);
/* A new connection; NULL when out of memory.  host is the SNI and the name
 * checked against the certificate. */
struct tls *tls_server_new(struct tls_ctx *ctx);
struct tls *tls_client_new(struct tls_ctx *ctx, const char *host);
/* Bytes a server connection holds (for the memory benchmark). */
size_t tls_conn_size(void);

/*
 * A byte stream: plain TCP (tls == NULL) or TLS over it.  ws.c uses only
 * these calls and never knows which it has.
 */
struct stream {
	int fd;
	struct tls *tls;
};

/* Bytes read (> 0), 0 when nothing can be read now, -1 on EOF or error
 * (the reason logged by tls.c for TLS failures). */
ssize_t stream_read(struct stream *s, void *buf, size_t len);
/* Bytes accepted (>= 0; 0 when nothing can be written now), -1 on error. */
ssize_t stream_write(struct stream *s, const void *buf, size_t len);
/* Poll events to wait for; want_write: the caller has data to write. */
short stream_events(const struct stream *s, int want_write);
/* After poll: move records between the socket and the TLS engine.
 * 0 ok, -1 the connection failed.  No-op for plain streams. */
int stream_pump(struct stream *s);
/* 1 when stream_read would return without waiting for the socket: data
 * already decrypted, or the end (TLS only; plain streams return 0). */
int stream_pending(const struct stream *s);
/* 1 once the TLS handshake is complete (always 1 for plain). */
int stream_ready(const struct stream *s);
/* Why a TLS stream failed ("expired or not yet valid", "unknown issuer",
 * "name mismatch", ...), already logged by tls.c; NULL if it has not. */
const char *stream_error(const struct stream *s);
/* Once the TLS handshake is done: the version ("TLS 1.2") and the cipher
 * suite ("ECDHE-RSA-AES128-GCM-SHA256", OpenSSL's names); NULL for a plain
 * stream or before. */
const char *stream_tls_version(const struct stream *s);
const char *stream_tls_suite(const struct stream *s);
/* Send close_notify if possible, close the socket, wipe and free TLS. */
void stream_close(struct stream *s);

/* ---- WebSocket (ws.c): RFC 6455 over a stream. ---- */

enum { WS_MORE = 0, WS_DONE = 1, WS_BAD = -1 };	/* parser results */

enum ws_opcode {
	WS_CONT = 0x0, WS_TEXT = 0x1, WS_BINARY = 0x2,
	WS_CLOSE = 0x8, WS_PING = 0x9, WS_PONG = 0xa
};

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key || GUID)), 28 chars. */
void ws_accept_key(const char *key, char out[29]);

struct ws_frame {
	int fin;
	int opcode;
	int masked;
	unsigned char mask[4];
	size_t hdrlen;		/* bytes before the payload */
	uint64_t paylen;
};

/* RFC 6455 §5.2: parse a frame header from buf[0..len).  WS_DONE with f
 * filled, WS_MORE when more bytes are needed, WS_BAD when malformed. */
int ws_frame_parse(const unsigned char *buf, size_t len, struct ws_frame *f);
/* Write a frame header (FIN set) into hdr (room for 14 bytes); mask NULL
 * for an unmasked frame.  Returns its length. */
size_t ws_frame_header(unsigned char *hdr, int opcode, int fin, size_t paylen,
    const unsigned char *mask);
/* XOR p[0..n) with the mask, starting at mask byte (off % 4). */
void ws_mask(unsigned char *p, size_t n, const unsigned char mask[4],
    size_t off);

#define WS_MSG_MAX	65536		/* largest message we accept */
#define WS_HTTP_MAX	4096		/* largest HTTP upgrade head */

/*
 * Buffers grow only while a connection needs them and shrink back when
 * drained (ws.c, "Buffers").  Per connection, allocated at the first read
 * or frame and freed by ws_free:
 *   input:  WS_IN_BASE (server) or WS_BUF_MAX (client) bytes; a server's
 *           grows to hold one frame larger than that, and a fragmented
 *           message is reassembled in place, so it never exceeds
 *           WS_BUF_MAX;
 *   output: WS_OUT_BASE bytes, doubling as frames queue up to
 *           WS_OUT_SERVER_MAX (server) or WS_OUT_CLIENT_MAX (client);
 *           past that, frames are dropped.
 * A buffer larger than its base goes back to its base once it is empty
 * and no frame has needed more for WS_TRIM_MS.  A server connection thus
 * holds WS_IN_BASE + WS_OUT_BASE bytes idle (and less while it has
 * received or queued nothing), at most WS_BUF_MAX + WS_OUT_SERVER_MAX
 * (a peer sending 64 KiB frames and reading nothing).
 */
#define WS_IN_BASE	4096
#define WS_OUT_BASE	4096
#define WS_BUF_MAX	(WS_MSG_MAX + 4096)	/* a message, a frame header,
						 * and a control frame within
						 * a fragmented message */
#define WS_OUT_SERVER_MAX	WS_BUF_MAX	/* one largest frame fits */
#define WS_OUT_CLIENT_MAX	(128 * 1024)	/* one connection: room for
						 * bursts from the TUN */
#define WS_TRIM_MS	1000
#define WS_OUT_RESERVE	4096	/* of a queue, out of bulk's reach */

enum ws_state { WS_HTTP, WS_OPEN, WS_CLOSING, WS_DEAD };

struct ws {
	struct stream s;
	enum ws_state state;
	int client;		/* 1: we mask frames and expect a 101 */
	char accept[29];	/* client: the Sec-WebSocket-Accept expected */
	unsigned char *in;	/* received, not yet parsed; NULL: none yet */
	size_t insize, inbase;	/* allocated; size when not grown */
	size_t inpos, inlen;
	/* A fragmented message being reassembled in place: in[inpos -
	 * msglen .. inpos), headers and control frames slid out of it. */
	size_t msglen;		/* 0 when none is open */
	int msgop;			/* its opcode; -1 when none is open */
	unsigned char *out;	/* frames not yet written; NULL: none yet */
	size_t outsize, outmax;	/* allocated; the most it may grow to */
	size_t msgmax;		/* the largest message taken (ws_limit) */
	size_t outpos, outlen;
	int lent;		/* ws_read's last message may be in use */
	int64_t big_ms;			/* a buffer last needed more than base */
	int64_t last_rx_ms;		/* last frame (any kind) received */
	int64_t full_since_ms;		/* output queue full since; 0 if not */
	unsigned long dropped;		/* frames dropped: queue full */
	char close_reason[64];		/* the peer's close frame said; or "" */
	/* The last non-empty ping payload received, NUL-terminated (cut at
	 * 127 bytes; a NUL inside cuts it too): a Candy client's
	 * candy::OS::VERSION::HOSTNAME.  Untrusted bytes: escape to show. */
	char ping[128];
};

/* Start a connection on a connected socket.  A client queues the HTTP
 * upgrade request for host_header and path.  w must be zeroed or released
 * by ws_free (buffers are allocated later, as they are needed). */
void ws_init_server(struct ws *w, int fd, struct tls *tls);
void ws_init_client(struct ws *w, int fd, struct tls *tls,
    const char *host_header, const char *path);
/*
 * Read and return the next data message: 1 with *msg and *len set (valid until
 * the next ws_read or ws_flush call on w), 0 when none is complete yet, -1
 * when the connection is finished (closed, malformed, I/O error, or no
 * memory for a buffer).  Handles the HTTP upgrade, ping/pong and close
 * frames by itself.
 */
int ws_read(struct ws *w, unsigned char **msg, size_t *len);
/* Queue one frame.  0 queued, -1 dropped because the queue is full (or the
 * connection is not open; a client may queue behind its upgrade request).
 * A drop counts in dropped and sets full_since_ms if it is 0.  Nothing is
 * written while the queue holds less than half its maximum: the caller
 * flushes once per poll pass. */
int ws_send(struct ws *w, int opcode, const void *p, size_t n);
/* ws_send for a frame of bulk: dropped as the queue is full when it would
 * leave less than WS_OUT_RESERVE bytes of room, which small frames (a
 * ping, an ACK) still have behind a bulk transfer (issue 11). */
int ws_send_bulk(struct ws *w, int opcode, const void *p, size_t n);
/* Write queued bytes.  0 ok (or would block), -1 error.  Clears
 * full_since_ms whenever the peer takes bytes.  Shrinks drained buffers
 * (see WS_TRIM_MS): call it every poll pass. */
int ws_flush(struct ws *w);
/* Bytes queued, and bytes that may still be queued (frames take 2 to 14
 * more than their payload). */
size_t ws_queued(const struct ws *w);
size_t ws_room(const struct ws *w);
/*
 * Change the largest message w takes (at most WS_MSG_MAX, the default; a
 * larger frame or message finishes the connection) and the most its
 * output queue may hold (frames past it are dropped): the server keeps a
 * connection that has not authenticated within its base-size buffers.
 * Neither goes below what w already holds.
 */
void ws_limit(struct ws *w, size_t msgmax, size_t outmax);
/* Shrink the buffers that are empty and have not needed more than their
 * base size for WS_TRIM_MS.  ws_read and ws_flush do it too: call it now
 * and then for a connection that is neither read nor flushed. */
void ws_trim(struct ws *w);
/* Poll events for the connection. */
short ws_events(const struct ws *w);
/* Queue a close frame and flush what can be flushed. */
void ws_close(struct ws *w);
/* Free the stream and the buffers; the struct may be reused by ws_init_*. */
void ws_free(struct ws *w);
/* Server side: parse an HTTP upgrade request head.  WS_DONE with key set and
 * *used the bytes of the head, WS_MORE, or WS_BAD. */
int ws_request_parse(const unsigned char *buf, size_t len, size_t *used,
    char *key, size_t keylen);
/* Client: the upgrade request for key (base64 of 16 bytes), the headers
 * of the existing client in its order; path NULL or "" means "/".  Its
 * length, or 0 when it does not fit in size bytes (with the NUL) or host
 * or path holds a blank or a control character. */
size_t ws_request_build(char *out, size_t size, const char *host_header,
    const char *path, const char *key);
/* 1 when ws_read has something to do without waiting for the socket: a
 * complete frame buffered (ws_read returns at most one message per call,
 * and stops after a burst of control frames), or stream_pending.  Use it
 * instead of stream_pending to set the poll timeout to 0. */
int ws_pending(const struct ws *w);

/* ---- Addresses, SD-WAN, allocation, relay routes (route.c). ---- */

struct cidr {
	uint32_t addr;
	int prefix;		/* 0..32 */
};

uint32_t prefix_mask(int prefix);
/* "a.b.c.d" → *ip; 0 ok, -1 bad. */
int ip_parse(const char *s, uint32_t *ip);
/* A port, decimal digits only, 1..65535: its value, or -1. */
int port_parse(const char *s);
/* "a.b.c.d/n" → *c; 0 ok, -1 bad with *why set to a short reason. */
int cidr_parse(const char *s, struct cidr *c, const char **why);
/* Format into buf (16 bytes for ip, 19 for cidr); returns buf. */
char *ip_str(uint32_t ip, char *buf);
char *cidr_str(const struct cidr *c, char *buf);
/* True for 10/8, 172.16/12, 192.168/16, 169.254/16. */
int ip_is_private(uint32_t ip);

/*
 * What a client accepts from its server (issue 8): a granted address or a
 * pushed route must leave alone the paths the client depends on.  The
 * guard holds them; 0 / prefix 0 means unknown.
 */
#define GUARD_UNDERLAY_MAX	256	/* local routes consulted */
#define GUARD_PREFIX_MIN_MASK	0xff000000u	/* /8: wider is refused */
struct route_guard {
	uint32_t server;	/* the server's IPv4 address we connect to */
	uint32_t stun;		/* the STUN server's */
	uint32_t tun_net, tun_mask;	/* our tunnel network (routes only) */
	struct cidr underlay[GUARD_UNDERLAY_MAX];	/* OS routes not ours */
	int nunderlay;
};
/*
 * NULL when the route dst/mask may be installed, else a reason written
 * into why (and returned).  Refused: a mask that is not a prefix, host
 * bits, the default route (only a full tunnel may take it), anything
 * wider than a /8, a network overlapping the tunnel network, 0/8,
 * loopback, multicast or 240/4, one holding the server's or the STUN
 * server's address, or one overlapping a local route other than a
 * default route (our LAN, our underlay's own routes).
 */
const char *route_guard_check(const struct route_guard *g, uint32_t dst,
    uint32_t mask, char *why, size_t whylen);
/* The same for a granted address/prefix: a host address of a /8../30
 * network that passes the checks above (the tunnel network aside). */
const char *route_guard_address(const struct route_guard *g, uint32_t addr,
    int prefix, char *why, size_t whylen);

#define SDWAN_MAX 256
struct sdwan_rule {
	struct cidr dev;	/* which clients get the route */
	uint32_t dst, mask;	/* the routed network */
	uint32_t next;		/* gateway client's tunnel address */
};
/* "dev,dst,next;dev,dst,next;..." → rules; count, or -1 with *why set. */
int sdwan_parse(const char *s, struct sdwan_rule *rules, int max,
    const char **why);

/*
 * Pick the address for an EXPTTUN request (PROTOCOL 2.4): requested if it
 * is a valid host of range and taken() says it is free for this vmac,
 * else the next free valid host after *last, wrapping.  0 when none is
 * free.  Updates *last.
 */
uint32_t addr_alloc(const struct cidr *range, uint32_t requested,
    uint32_t *last, int (*taken)(void *ctx, uint32_t ip), void *ctx);

/* Relay table: distance-vector routes (PROTOCOL 6). */
#define RTT_UNREACHABLE 2147483647
/*
 * The table maps dst -> (next, rtt ms).  Whenever an entry is added,
 * changed or removed the table calls announce(ctx, dst, rtt) once, with the
 * rtt to advertise: the entry's rtt plus our cost, or RTT_UNREACHABLE for a
 * removal; the caller sends ROUTE(dst, self, rtt) to every connected peer.
 * The table never holds more than max entries (sized from the network):
 * when full, a new relayed destination is ignored, and a new direct entry
 * replaces the dearest relayed one.  rtt outside 0..1000 is unreachable.
 * The callback must not change the table (send, do not route); it may
 * call relay_lookup(dst), which already answers with the new next hop, to
 * send RTT_UNREACHABLE to that neighbour instead (poisoned reverse, RFC 2453
 * 3.4.3): a lost route then cannot bounce between two neighbours.
 */
struct relay_route {
	uint32_t dst, next;
	int32_t rtt;
};

typedef void relay_announce_fn(void *ctx, uint32_t dst, int32_t rtt);

struct relay {
	uint32_t self;
	int cost;			/* added to what we announce */
	struct relay_route *r;
	size_t n, max;
	relay_announce_fn *announce;
	void *ctx;
};

/* Allocate room for max entries (start-up only).  0 ok, -1 no memory. */
int relay_init(struct relay *t, size_t max, relay_announce_fn *announce,
    void *ctx);
/* Forget every entry (no announcements); set our address and cost. */
void relay_reset(struct relay *t, uint32_t self, int cost);
/*
 * A DELAY round trip to the connected peer gave rtt: the direct entry
 * (peer, peer, rtt), replacing any route to peer; entries via peer follow
 * the change of its rtt.  Announces only when something changed.  An rtt
 * outside 0..1000 is relay_peer_lost.
 */
void relay_direct(struct relay *t, uint32_t peer, int32_t rtt);
/*
 * ROUTE (dst, next, rtt) received from the connected neighbour next, rtt as
 * it advertised (its cost included).  Ignored for dst == our address, for
 * dst == next, and unless next has a direct entry; an unreachable rtt
 * removes dst if it goes via next.
 */
void relay_update(struct relay *t, uint32_t dst, uint32_t next, int32_t rtt);
/* The direct peer is lost: remove and announce every entry via it, its
 * direct entry included (a route to it via another neighbour stays). */
void relay_peer_lost(struct relay *t, uint32_t peer);
/* The next hop for dst, or 0 when the table has none.  O(log n). */
uint32_t relay_lookup(const struct relay *t, uint32_t dst);
/* Log the table at info level, `route DST via NEXT rtt N` per entry. */
void relay_log(const struct relay *t);
/*
 * Announce every entry again.  Announcements are sent on change only, so a
 * peer that connects later, or that lost the route it preferred, hears of
 * the others' routes only from this: call it when a peer becomes connected
 * and with the periodic DELAY probe.
 */
void relay_announce_all(const struct relay *t);
/* The same through fn and ctx instead of the table's callback: to send
 * every route to one peer only. */
void relay_announce_each(const struct relay *t, relay_announce_fn *fn,
    void *ctx);

/* ---- The TUN device and OS routes (tun.c). ---- */

/*
 * Create the TUN device called name (NULL: the OS picks; at most
 * IFNAMSIZ - 1 characters, else ENAMETOOLONG).  Returns its fd
 * (non-blocking, close-on-exec) and the actual name in ifname (IFNAMSIZ
 * bytes), or -1 with errno set (Linux: EBUSY when another process has
 * that device open).  macOS (utunN), OpenBSD and NetBSD (tunN) cannot
 * honour the name: they log the one they chose.
 */
int tun_open(const char *name, char *ifname);
/*
 * Address/prefix, MTU (<= 0: leave it) and up state, plus the route to
 * the tunnel network.  0 ok, -1 with errno set.  Calling it again with
 * the same values changes nothing; a new address replaces the old one,
 * and then the routes through the device may be gone: add them again.
 */
int tun_configure(const char *ifname, uint32_t addr, int prefix, int mtu);
/* Add or delete a route dst/mask via the device.  0 ok (adding a route
 * that exists or deleting one that does not is ok too), -1 errno set. */
int tun_route_add(const char *ifname, uint32_t dst, uint32_t mask);
int tun_route_del(const char *ifname, uint32_t dst, uint32_t mask);
/* Read one IPv4 packet into buf (bare IPv4 on every OS; other packets
 * are dropped): length, 0 nothing now, -1 error. */
ssize_t tun_read(int fd, unsigned char *buf, size_t len);
/* Write one IPv4 packet: 0 written, or dropped because the device's
 * queue is full (as the kernel itself drops); -1 error with errno. */
int tun_write(int fd, const unsigned char *pkt, size_t len);
/*
 * Linux: the device with offloads (IFF_VNET_HDR; TUNSETOFFLOAD with
 * checksums, TSO for IPv4 and USO where the kernel has it): its fd as
 * tun_open's, *le the vnet header's byte order (see TUN_VNET_LEN), or -1
 * with errno (EOPNOTSUPP on other systems) and then no device: open it
 * with tun_open.  Every packet on such a device has the vnet header in
 * front: tun_read_vnet reads header and packet as they are (length, 0
 * nothing now, -1 error); tun_write_vnet writes pkt behind the header vh
 * (NULL: a zero one, a packet as it is), as tun_write answers.
 */
int tun_open_offload(const char *name, char *ifname, int *le);
ssize_t tun_read_vnet(int fd, unsigned char *buf, size_t len);
int tun_write_vnet(int fd, const unsigned char *vh, const unsigned char *pkt,
    size_t len);
/*
 * The peer-to-peer UDP socket (issue 11; OS code, so here):
 *   udp_buffers_raise: socket buffers of rcv and snd bytes (as root past
 *     the system's maximum, Linux); best effort.
 *   udp_offload_on: Linux UDP_GRO on fd: 1 on, 0 not (other systems).
 * Datagrams move in batches of struct udp_dgram, one buffer each: to
 * send, len bytes to ip:port, which the kernel cuts into datagrams of seg
 * bytes when seg is not 0 (UDP_SEGMENT, Linux; the last may be shorter);
 * received, len bytes from ip:port (room: the buffer's size) holding
 * datagrams of seg bytes (UDP_GRO; the last may be shorter; seg is len
 * when it is one datagram).
 *   udp_send_batch: m[0..n) in order, in as few system calls as the
 *     system allows (Linux: sendmmsg; elsewhere sendto each).  Each
 *     entry's err says what became of it: 0 sent, else the errno it
 *     failed with.  One entry failing does not stop the ones after it,
 *     but EAGAIN (the socket's buffer is full) fails every one left
 *     without trying.  Returns how many were sent.
 *   udp_recv_batch: up to n entries at once (Linux: recvmmsg; elsewhere
 *     recvfrom until n or none is waiting): how many, or -1 with errno
 *     (EAGAIN: none waiting).  Fewer than n: none was waiting then.
 */
struct udp_dgram {
	unsigned char *buf;
	size_t len, seg, room;
	uint32_t ip;
	uint16_t port;
	int err;
	int64_t waited_us;	/* received: how long it sat in the socket's
				 * buffer (udp_timestamps_on), -1 unknown */
};

void udp_buffers_raise(int fd, int rcv, int snd);
int udp_offload_on(int fd);
/* Linux SO_TIMESTAMPNS on fd, so that udp_recv_batch can say how long
 * each entry waited: 1 on, 0 not (other systems). */
int udp_timestamps_on(int fd);
size_t udp_send_batch(int fd, struct udp_dgram *m, size_t n);
int udp_recv_batch(int fd, struct udp_dgram *m, size_t n);
/* Delete the device and the routes through it (Linux, macOS: closing
 * does it; the BSDs: SIOCIFDESTROY). */
void tun_close(int fd, const char *ifname);
/*
 * The IPv4 routes of the main table that do not leave through ifname
 * (NULL: all), at most max of them into out: the count, or -1 when the
 * table cannot be read (the BSDs and macOS: not written yet).
 */
int tun_routes_read(const char *ifname, struct cidr *out, int max);
/*
 * Full tunnel (an exit node) through ifname: on 1 sends every IPv4
 * destination without a more precise route into the device, except what
 * our own marked sockets send (tun_socket_mark); on 0 undoes it.  With
 * ifname NULL and on 0: remove what a killed earlier run left.  0 ok, -1
 * with errno (EOPNOTSUPP where it is not written).  Linux: policy
 * routing, table 7331, fwmark 0x7331, rule preferences 7330 and 7331.
 */
int tun_full_tunnel(const char *ifname, int on);
/* Mark a socket of ours so that a full tunnel leaves it on the underlay.
 * 0 ok (or nothing to do on this OS), -1 with errno. */
int tun_socket_mark(int fd);
/* The first IPv4 address of an interface that is up, not loopback, not
 * point-to-point and not ours (name not starting "candy"), or 0. */
uint32_t if_lan_address(void);
/* Every IPv4 address of this host's interfaces and their broadcast
 * addresses, up to max into out: how many (0 when they cannot be read). */
int if_addresses(uint32_t *out, int max);

/* >>> offload section (issue 11): segmentation and coalescing, pure */
/*
 * Linux TUN offloads (tun.c).  With IFF_VNET_HDR every packet on the
 * device has a 10-byte struct virtio_net_hdr in front: flags, gso_type,
 * then hdr_len, gso_size, csum_start, csum_offset (16 bits each).  Those
 * four are in the byte order we set with TUNSETVNETLE (little-endian); a
 * kernel that refuses it uses the CPU's own.  The functions below take
 * that order as le (1 little-endian, 0 big-endian), read and write the
 * header byte by byte, and work on any OS (the unit tests run them).
 */
#define TUN_VNET_LEN		10
#define TUN_VNET_NEEDS_CSUM	1	/* flags: complete csum_start.. */
#define TUN_GSO_NONE		0
#define TUN_GSO_TCPV4		1
#define TUN_GSO_UDP_L4		5
#define TUN_GSO_ECN		0x80
#define TUN_SUPER_MAX		65535	/* largest IPv4 super-packet */
#define TUN_MTU_MIN		576	/* --mtu's range */
#define TUN_MTU_MAX		9000
/*
 * The room a client's queue to the server must have before it reads the
 * TUN (session_tun_wanted): one super-packet once cut.  Each segment
 * repeats the IPv4 and TCP headers (TUN_SEG_HDR_MAX with options) and
 * carries at least mtu - TUN_SEG_HDR_MAX bytes of the rest; on the queue
 * it takes TUN_SEG_WRAP more at most: a frame header (14), the message
 * type and an IP-in-IP header (to a gateway).  A client queue smaller
 * than this at the smallest MTU would drop the tail of a super-packet, and
 * below TUN_SUPER_MAX it would never read the TUN again: the compiler
 * refuses such a WS_OUT_CLIENT_MAX.
 */
#define TUN_SEG_HDR_MAX		120
#define TUN_SEG_WRAP		36
#define TUN_SUPER_ROOM(mtu)	(TUN_SUPER_MAX + \
	(TUN_SUPER_MAX / ((size_t)(mtu) - TUN_SEG_HDR_MAX) + 1) * \
	(TUN_SEG_HDR_MAX + TUN_SEG_WRAP))
typedef char ws_out_client_max_holds_a_super_packet[
    WS_OUT_CLIENT_MAX >= TUN_SUPER_ROOM(TUN_MTU_MIN) ? 1 : -1];

struct tun_vnet {
	unsigned flags, gso_type;
	unsigned hdr_len, gso_size, csum_start, csum_offset;
};
void tun_vnet_get(struct tun_vnet *h, const unsigned char *p, int le);
void tun_vnet_put(unsigned char *p, const struct tun_vnet *h, int le);

/*
 * Segmentation: a packet read with its header h becomes packets of at
 * most mtu bytes.  tun_seg_init checks it (0, or -1 for a packet to
 * drop: not IPv4, lengths that do not add up, a GSO packet that is not
 * TCP or UDP as its gso_type says, a fragment, gso_size 0, csum_start
 * or csum_offset outside the packet, headers longer than mtu allows).
 * tun_seg_next then writes the next packet into out (outlen bytes at
 * least mtu) and returns its length, 0 when there are no more: TCP
 * segments with the id, sequence number, lengths and both checksums
 * right, PSH and FIN on the last only, CWR on the first only; UDP (USO)
 * datagrams likewise; a packet without GSO as it is, its checksum
 * completed when NEEDS_CSUM asks for it.
 */
struct tun_seg {
	const unsigned char *pkt;
	size_t len;		/* the IPv4 packet, trimmed to its length */
	size_t ihl, hlen;	/* IP header; IP + TCP/UDP headers */
	size_t mss;		/* payload bytes per packet */
	size_t off;		/* next payload byte, counted from hlen */
	unsigned idx;		/* packets written */
	int gso;		/* TUN_GSO_TCPV4, TUN_GSO_UDP_L4 or NONE */
	size_t csum_at;		/* NONE with NEEDS_CSUM: start; 0 none */
	size_t csum_field;	/* where the checksum goes */
};
int tun_seg_init(struct tun_seg *s, const struct tun_vnet *h,
    const unsigned char *pkt, size_t len, size_t mtu);
size_t tun_seg_next(struct tun_seg *s, unsigned char *out, size_t outlen);

/*
 * Coalescing (GRO): TCP segments of one flow in a row become one GSO
 * super-packet.  tun_gro_add answers for pkt:
 *   TUN_GRO_HELD   taken (appended to the flow held, or starting one);
 *   TUN_GRO_FLUSH  write what is held (tun_gro_take), then ask again;
 *   TUN_GRO_PASS   nothing is held: write pkt as it came.
 * Only exactly safe merges: IPv4 without options or fragments, header
 * and TCP checksums right, same addresses, ports, TOS, TTL, DF, ack,
 * window and TCP options, flags ACK alone (PSH allowed on the last),
 * each sequence number where the last ended, every segment the size of
 * the first but the last, the whole within TUN_SUPER_MAX.
 * tun_gro_take returns the held packet with its vnet header in front
 * (*out, length; 0 if nothing is held) and empties the holder.
 */
enum { TUN_GRO_HELD, TUN_GRO_FLUSH, TUN_GRO_PASS };
#define TUN_GRO_SEGS	64	/* segments per super-packet at most */
struct tun_gro {
	size_t len;		/* IPv4 bytes held; 0 none */
	size_t hlen, mss;
	unsigned nseg;
	int closed;		/* a short or PSH segment ended it */
	uint32_t next_seq;
	uint16_t id;		/* IP id of the next segment */
	unsigned char buf[TUN_VNET_LEN + TUN_SUPER_MAX];
};
int tun_gro_add(struct tun_gro *g, const unsigned char *pkt, size_t len);
size_t tun_gro_take(struct tun_gro *g, int le, const unsigned char **out);
/* <<< offload section */

/* ---- STUN (stun.c): RFC 5389 binding. ---- */

#define STUN_REQUEST_LEN 28
/* Build the binding request of PROTOCOL 5.3 with transaction id tid. */
void stun_request_build(unsigned char out[STUN_REQUEST_LEN],
    const unsigned char tid[12]);
/*
 * Parse a binding response to the request with transaction id tid (NULL:
 * any): WS_DONE with *ip and *port (host order) set from XOR-MAPPED-ADDRESS
 * or else MAPPED-ADDRESS, WS_BAD when it is not a valid success response
 * carrying an IPv4 endpoint.
 */
int stun_response_parse(const unsigned char *p, size_t len,
    const unsigned char tid[12], uint32_t *ip, uint16_t *port);

/* ---- Candy messages (candy.c), PROTOCOL 2. ---- */

enum msg_type {
	MSG_AUTH = 0, MSG_FORWARD = 1, MSG_EXPTTUN = 2, MSG_UDP4CONN = 3,
	MSG_VMAC = 4, MSG_DISCOVERY = 5, MSG_ROUTE = 6, MSG_GENERAL = 255
};

#define AUTH_LEN	45
#define EXPTTUN_LEN	73
#define VMAC_LEN	57
#define UDP4CONN_LEN	15
#define DISCOVERY_LEN	9
#define ROUTE_HDR_LEN	4
#define ROUTE_ENTRY_LEN	12
#define ROUTE_MAX_ENTRIES 100	/* per frame */
#define GENERAL_HDR_LEN	12
#define LOCALUDP4CONN_LEN 18
#define PAD_MAX		63	/* confusion padding on AUTH/EXPTTUN/VMAC */
#define AUTH_WINDOW_S	300	/* timestamps further off are refused */

/* Build a message into out (room for the fixed length + PAD_MAX) and return
 * its length; pad adds that many random bytes (0 for the exact layout). */
size_t msg_auth_build(unsigned char *out, const char *password, uint32_t ip,
    int64_t ts, size_t pad);
size_t msg_vmac_build(unsigned char *out, const char *password,
    const char vmac[16], int64_t ts, size_t pad);
size_t msg_expttun_build(unsigned char *out, const char *password,
    const char *cidr, int64_t ts, size_t pad);
/* ROUTE with n entries (dst, mask, next); returns its length. */
struct sdwan_route;
size_t msg_route_build(unsigned char *out, const struct sdwan_route *e,
    size_t n);
/* Check the hash of a received message of at least its fixed length.
 * 1 good, 0 bad. */
int msg_auth_check(const unsigned char *m, const char *password);
int msg_vmac_check(const unsigned char *m, const char *password);
int msg_expttun_check(const unsigned char *m, const char *password);

/* ---- Peer-to-peer (peer.c) and the client session it talks to. ---- */

/*
 * Packets carry headroom: a function that takes an IPv4 packet pkt may
 * write up to PKT_HEADROOM bytes before it (a FORWARD type byte, an
 * IP-in-IP header, an AES-GCM iv and tag).
 */
#define PKT_HEADROOM	64
#define PKT_MAX		(WS_MSG_MAX)

/* >>> peer.c section (issue 4) */
#include <bearssl.h>

struct client;

/* Peer states, PROTOCOL 5.4. */
enum peer_state {
	PEER_INIT, PEER_PREPARING, PEER_SYNCHRONIZING, PEER_CONNECTING,
	PEER_CONNECTED, PEER_WAITING, PEER_FAILED
};

/* Plaintext peer messages: the first byte of a decrypted datagram. */
enum peer_msg_type {
	PMSG_HEARTBEAT = 0, PMSG_FORWARD = 1, PMSG_DELAY = 2, PMSG_ROUTE = 4
};

#define PMSG_HEARTBEAT_LEN	12
#define PMSG_DELAY_LEN		17
#define PMSG_ROUTE_LEN		13

/* The peer table holds one peer per host of the tunnel network but us,
 * at most PEER_MAX (a sane cap for a /20 or larger). */
#define PEER_MAX	4096
#define PEER_IV_LEN	12
#define PEER_TAG_LEN	16
#define PEER_OVERHEAD	(PEER_IV_LEN + PEER_TAG_LEN)	/* iv || tag */
#define PEER_DGRAM_MAX	65536	/* receive buffer: any UDP datagram */
#define PEER_GSO_MAX	65000	/* bytes in one UDP_SEGMENT send */
#define PEER_GSO_SEGS	64	/* datagrams in one (the kernel's limit) */
/* A pass's outgoing datagrams: at most PEER_TX_ENTRIES entries (each
 * one datagram, or a UDP_SEGMENT train) in PEER_TX_BYTES; received ones
 * into a ring of PEER_RX_BYTES: 4 GRO trains, or as many datagrams of
 * PEER_DGRAM_ONE as fit (the largest a peer sends: a 9000-byte packet,
 * IP-in-IP, type byte, iv and tag). */
#define PEER_TX_ENTRIES	64
#define PEER_TX_BYTES	(4 * 65536)
#define PEER_DGRAM_ONE	9088
#define PEER_RX_BYTES	(4 * (PKT_HEADROOM + PEER_DGRAM_MAX))
#define PEER_RX_SLOTS	64
#define PEER_RCVBUF	(1 << 20)	/* socket buffers, bytes */
#define PEER_SNDBUF	(1 << 20)

/*
 * Our ivs begin with these two bytes (the "mark"), then a random 48-bit
 * salt, then a 32-bit counter: the receiver keeps a sliding window per
 * salt.  Any other iv is random (the existing Candy): the receiver keeps
 * the recently seen ones.  See replay_check in peer.c.
 */
#define PEER_IV_MARK0	0xca
#define PEER_IV_MARK1	0x7e
#define PEER_WINDOW_BITS 1024	/* per salt: counters behind the newest */
#define PEER_WAYS	4	/* replay tables: entries per hash bucket */

/* AES-256-GCM under one password-derived key, the key schedule done. */
struct peer_key {
	br_aes_gen_ctr_keys aes;
	br_gcm_context gcm;	/* points into aes: never copy a peer_key */
};

/* The key for traffic to addr: H(password || reversed(addr)). */
void peer_key_init(struct peer_key *k, const char *password, uint32_t addr);
/*
 * Seal d[PEER_OVERHEAD .. PEER_OVERHEAD + n) in place into the datagram
 * iv || tag || ciphertext at d, with iv from ivsrc (8 bytes of salt, then a
 * counter it increments; a wrapped counter takes a new salt by
 * peer_iv_init).  Returns the datagram length.
 */
struct peer_iv {
	unsigned char salt[8];	/* the mark, then 6 random bytes */
	uint32_t count;
};
/* A new iv source: the mark, a random salt, a random counter below 2^31
 * (two senders whose salts collide then rarely share counters too). */
void peer_iv_init(struct peer_iv *iv);
size_t peer_seal(struct peer_key *k, struct peer_iv *iv, unsigned char *d,
    size_t n);
/* Open a datagram in place: the plaintext is d + PEER_OVERHEAD, len -
 * PEER_OVERHEAD bytes.  0 ok, -1 too short or not authentic. */
int peer_open(struct peer_key *k, unsigned char *d, size_t len);
/* Wipe a key (secrets go when a peer or session does). */
void peer_key_wipe(struct peer_key *k);

/* A UDP endpoint, host order; ip 0 when unknown. */
struct endpoint {
	uint32_t ip;
	uint16_t port;
};

/* One entry of the pass's outgoing batch: n datagrams (seg bytes each,
 * the last may be shorter) at txb + off, len bytes in all, to to.  A
 * train of FORWARDs may grow while open; forward: FORWARDs sealed with
 * peer's key, sent through the server if UDP fails them. */
struct peer_txent {
	struct endpoint to;
	uint32_t peer;
	size_t off, len, seg;
	unsigned n;
	unsigned char forward, open;
};

struct peer {
	uint32_t addr;		/* its tunnel address */
	enum peer_state state;
	int64_t since_ms;	/* when the state was entered */
	int64_t last_rx_ms;	/* last heartbeat received */
	int retry_s;		/* WAITING's delay: 30 s doubling to 3600 s */
	struct endpoint pub;	/* public endpoint: UDP4CONN, heartbeats */
	struct endpoint lan;	/* LAN endpoint: GENERAL/0, heartbeats */
	struct endpoint real;	/* where its heartbeats come from: used */
	/* Endpoint changes once CONNECTED (peer_endpoint_move). */
	struct endpoint cand;	/* a new source of fresh heartbeats */
	int64_t cand_tx_ms;	/* when we last sent it a heartbeat; 0 not */
	int64_t real_rx_ms;	/* last fresh heartbeat from real */
	int64_t moved_ms;	/* last change of real; 0 never */
	int ack;		/* we have received a heartbeat from it */
	int answered;		/* ever sent us a fresh authentic heartbeat */
	uint16_t na_prev, na_next;	/* never-answered list: slot + 1 */
	int delay_answered;	/* a DELAY probe came back since CONNECTED */
	int delay_ticks;	/* ticks since the last DELAY probe */
	int32_t rtt;		/* ms, from DELAY; -1 unknown */
	unsigned long tx, rx;	/* FORWARD datagrams */
	struct peer_iv iv;	/* ours, for datagrams to it */
	uint64_t tx_bytes, rx_bytes;	/* their IPv4 packets' bytes */
	struct peer_key key;	/* for traffic to addr */
};

/* Replay tables (peer.c): a window per salt of our ivs, and random ivs
 * recently seen; both PEER_WAYS-way, the least recently used replaced. */
struct peer_window {
	unsigned char salt[8];
	uint32_t top;		/* the highest counter accepted */
	uint32_t stamp;		/* last use; 0: free */
	uint64_t bits[PEER_WINDOW_BITS / 64];	/* RFC 6479 ring */
};

struct peer_ivseen {
	unsigned char iv[PEER_IV_LEN];
	uint32_t stamp;		/* 0: free */
};

/* A budget of datagrams to endpoints that never answered (reflection). */
struct peer_budget {
	uint32_t ip;
	uint32_t stamp;		/* last use; 0: free */
	int64_t ms;		/* tokens counted at */
	int64_t milli;		/* tokens * 1000 */
};

/* Datagrams to endpoints that never answered (peer.c, budget_take): per
 * address a burst, then so many a second; the same for all together. */
#define PEER_PROBE_IP_BURST	32
#define PEER_PROBE_IP_PER_S	2
#define PEER_PROBE_ALL_BURST	512
#define PEER_PROBE_ALL_PER_S	128

#define PEER_OWN_MAX	32	/* our own interface addresses, remembered */
#define PEER_BUDGET_IPS	64	/* destinations with a budget of their own */

/*
 * CoDel (RFC 8289) on the time packets wait in the kernel queues in front
 * of a client (issue 11): the UDP socket's receive buffer (the kernel's
 * receive timestamps, SO_TIMESTAMPNS) and the TUN device's queue (no
 * timestamps there: the time since a read last found it empty).  When the
 * slower end is ours those queues fill until they overflow, and every
 * packet of every flow waits behind them (a megabyte is 2 ms at 4
 * Gbit/s).  Once the wait has stayed above AQM_TARGET_US for
 * AQM_INTERVAL_US, one bulk packet is dropped (or marked CE when its flow
 * does ECN), then more often, as the RFC's control law says, until the
 * wait falls below the target: the bulk flow slows to what we can take,
 * and the queue a ping shares with it stays short.  The target trades a
 * little throughput for latency: at 0.5 ms, make bench-peers measured
 * ping under load on P2P from 3.3 ms down to 1.7 ms.
 *   codel_drop: 1 when the packet dequeued at now_us, having waited
 *     sojourn_us, is to be dropped (or marked), else 0.  Times in
 *     microseconds of any clock that does not go back.
 *   aqm_bulk: 1 when pkt (an IPv4 packet of len bytes) may be dropped or
 *     marked: at least AQM_BULK_MIN bytes, not ICMP.  A ping, an ACK, a
 *     DNS answer are never dropped for the queue's sake.
 *   aqm_mark: set CE on pkt if it is ECN-capable (ECT(0) or ECT(1)),
 *     adjusting the header checksum (RFC 1624): 1 marked, 0 not capable.
 *   aqm_drop: the three together for one packet that waited waited_us
 *     (-1: unknown, kept): a bulk packet codel_drop picks is marked if
 *     it can be, else dropped; counted in q.  1 drop it, 0 keep it.
 */
#define AQM_TARGET_US	500
#define AQM_INTERVAL_US	5000
#define AQM_BULK_MIN	512
struct codel {
	int64_t first_above_us;	/* when the wait may count as standing */
	int64_t drop_next_us;	/* the next drop, while dropping */
	uint32_t count, lastcount;	/* drops in this dropping state */
	int dropping;
	unsigned long dropped, marked;	/* packets, for the status report */
};
int codel_drop(struct codel *q, int64_t now_us, int64_t sojourn_us);
int aqm_bulk(const unsigned char *pkt, size_t len);
int aqm_mark(unsigned char *pkt, size_t len);
int aqm_drop(struct codel *q, int64_t now_us, int64_t waited_us,
    unsigned char *pkt, size_t len);

struct p2p {
	int udp_fd;		/* -1 when P2P is off */
	uint16_t port;		/* our UDP port */
	uint32_t self;		/* the address keys and peers are for; 0 none */
	struct peer *peers;	/* cap slots, npeers in use */
	size_t npeers, cap;	/* cap: hosts of the network but us, capped */
	uint16_t *index;	/* open addressing: address -> slot + 1 */
	unsigned index_bits;	/* 2^index_bits slots: at least 2 * cap */
	uint16_t na_head, na_tail;	/* never-answered peers, oldest first */
	/* Replay tables, kept across sessions with the same address (the
	 * same key): windows per salt and random ivs recently seen. */
	struct peer_window *win;
	size_t nwin;
	struct peer_ivseen *seen;
	size_t nseen;
	uint32_t replay_self;	/* the address they are for */
	uint32_t replay_seed;	/* hash seed */
	uint32_t stamp;		/* LRU clock of the tables */
	struct peer_budget budget[PEER_BUDGET_IPS];
	struct peer_budget budget_all;	/* every destination together */
	uint32_t own[PEER_OWN_MAX];	/* our interface addresses */
	int nown;
	int64_t own_ms;		/* when own was read */
	struct peer_key rxkey;	/* our own: every datagram we receive */
	char stun_host[256], stun_port[8];
	struct endpoint stun;	/* the STUN server, resolved */
	int stun_stale;		/* it did not answer: resolve the name again */
	int64_t stun_resolved_ms;	/* last resolution attempt */
	unsigned char stun_tid[12];
	struct endpoint public;	/* ours, from the last STUN response */
	int64_t discovery_ms;	/* when to send the next DISCOVERY */
	unsigned long ticks;
	unsigned long rx_bad;	/* datagrams that failed authentication */
	unsigned long rx_replay;	/* authentic datagrams seen before */
	unsigned long tx_err;	/* datagrams UDP failed */
	unsigned long tx_budget;	/* not sent: over the reflection budget */
	unsigned long evicted;	/* peers evicted from a full table */
	unsigned long moved;	/* endpoint changes of connected peers */
	struct relay relay;	/* PROTOCOL 6, with cfg->route > 0 */
	/* The receive queue's AQM (issue 11): how long the datagram being
	 * handled waited in the socket (-1 unknown), when it was read. */
	struct codel aqm;
	int64_t rx_waited_us, rx_now_us;
	/* Test hooks: when set, messages for the server go here instead of
	 * client_server_send; loopback_ok accepts endpoints on 127/8 (the
	 * unit tests' peers all live there). */
	int (*server_send)(struct client *c, const unsigned char *m,
	    size_t len);
	int loopback_ok;
	/* Test hook: when set, batches go here instead of udp_send_batch
	 * (a kernel that answers EAGAIN, say). */
	size_t (*send_batch)(int fd, struct udp_dgram *m, size_t n);
	/* Offloads (issue 11): UDP_GRO on the socket, UDP_SEGMENT trains. */
	int gro, gso;
	/* The pass's outgoing datagrams (issue 11), sealed one after the
	 * other into txb and described by txq[0..ntx), go out in one
	 * udp_send_batch at p2p_flush (or sooner when full). */
	unsigned char *txb;	/* PEER_TX_BYTES */
	size_t txlen;
	struct peer_txent txq[PEER_TX_ENTRIES];
	size_t ntx;
	/* The receive ring: rxslots buffers of rxslot bytes in rxb, each
	 * behind PKT_HEADROOM bytes so that a FORWARD can be routed on in
	 * place; rxslot holds a GRO train with UDP_GRO, else a datagram. */
	unsigned char *rxb;	/* PEER_RX_BYTES */
	size_t rxslots, rxslot;
	unsigned long tx_calls, rx_calls;	/* batches sent, received */
};

/* The state's name, "CONNECTED" and so on. */
const char *peer_state_name(enum peer_state s);
/* The peer for addr, or NULL. */
struct peer *peer_lookup(struct client *c, uint32_t addr);
/* <<< peer.c section */

/* ---- Status (status.c): the report and its Unix socket. ---- */

/*
 * One report, three forms: REPORT_TEXT for `candy status` (wg show's
 * layout), REPORT_JSON for `candy status --json` (one object) and
 * REPORT_LOG for SIGUSR1 (the text, each line logged as "status: LINE").
 * A builder describes what it has; the report decides how it looks:
 *   report_begin  the object: {"mode":MODE,"KEY":TITLE / "MODE: TITLE"
 *   report_list   a list of items KEY: blocks titled "LABEL: TITLE", or
 *                 with rows set, one line each under a "LABEL:" header
 *   report_item   one item, {"KEY":TITLE / its title; report_item_end
 *   report_str etc.  one field, "KEY":value / "  LABEL: value"
 *   report_end    the closing members and brace, or the truncation note
 * TEXT and JSON fill buf and never go past size: when an item does not
 * fit, it is taken out again and every later item is skipped and counted;
 * report_end then says so ("truncated":true,"omitted":N).  Strings are
 * escaped for JSON (invalid UTF-8 becomes U+FFFD) and shown as printable
 * ASCII in text ('?' for any other byte).  LOG needs only a line buffer.
 */
enum report_form { REPORT_TEXT, REPORT_JSON, REPORT_LOG };

#define REPORT_MAX	(256 * 1024)	/* a status reply, at most */
#define REPORT_LINE	2048		/* one field, at most */

struct report {
	enum report_form form;
	char *buf;
	size_t size, len;
	int64_t now_ms, now_wall;	/* to show now_ms() times as dates */
	int first;		/* JSON: the next member needs no comma */
	int rows;		/* the open list is of one-line rows */
	const char *label;	/* the open list's label */
	int list_open;		/* its opening was written */
	int listed;		/* it has an item */
	int in_item;		/* 1 open, 2 skipped */
	size_t mark;		/* the open item's start, to take it out */
	int mark_first, mark_listed;
	int full;		/* out of room: skip until report_end */
	unsigned long omitted;	/* items left out */
};

void report_init(struct report *r, enum report_form form, char *buf,
    size_t size);
void report_begin(struct report *r, const char *mode, const char *key,
    const char *title);
void report_list(struct report *r, const char *key, const char *label,
    int rows);
void report_list_end(struct report *r);
/* title NULL: null / "-". */
void report_item(struct report *r, const char *key, const char *title);
void report_item_end(struct report *r);
/* v NULL: null / "none". */
void report_str(struct report *r, const char *key, const char *label,
    const char *v);
/* n strings: an array / joined with ", ". */
void report_strs(struct report *r, const char *key, const char *label,
    const char *const *v, size_t n);
/* v < 0: null / "unknown"; unit (NULL for none) follows in text. */
void report_num(struct report *r, const char *key, const char *label,
    int64_t v, const char *unit);
/* A byte count: a number / "1.21 KiB". */
void report_bytes(struct report *r, const char *key, const char *label,
    uint64_t v);
/* Packets and their bytes: "KEY_UNIT":n,"KEY_bytes":b / "LABEL: n UNIT,
 * 1.21 KiB". */
void report_traffic(struct report *r, const char *key, const char *label,
    const char *unit, uint64_t n, uint64_t bytes);
/* A now_ms() time (0: never): Unix seconds / "2026-11-30 05:40:01 (1
 * minute, 5 seconds ago)", or without the date when dated is 0. */
void report_when(struct report *r, const char *key, const char *label,
    int64_t at_ms, int dated);
void report_end(struct report *r);
/* JSON string body for s (at most max bytes read), NUL-terminated in out
 * (room for 6 * max + 1); returns its length.  For the tests. */
size_t json_escape(char *out, const char *s, size_t max);

/* The part of a client's report that peer.c's tables hold: the UDP side,
 * each peer, the relay routes. */
void p2p_report(struct report *r, const struct client *c);

/*
 * The daemon's status socket: one listening Unix socket and
 * STATUS_CONN_MAX connections, each a non-blocking slot of the poll loop.
 * A connection sends one line, "text" or "json", and gets the report and
 * the end of the stream; it is closed when done, on any error, and
 * STATUS_TIMEOUT_MS after it was accepted, whatever it did.  With every
 * slot taken a new connection is closed at once.
 *   status_path: the socket of cfg (STATE_DIR/server.sock, or
 *     STATE_DIR/candy-NAME.sock, candy.sock without a name); 0, or -1
 *     when it does not fit a socket address.
 *   status_open: listen at path, mode 0600; a socket there that nobody
 *     answers is replaced, one that answers is left alone.  0 ok, -1
 *     logged (candy runs on without it).
 *   status_events: fill pfd[0 .. STATUS_SLOTS) (fd -1 for unused slots).
 *   status_handle: after poll: accept, read requests, build replies with
 *     build(ctx, r), write, close what is done or late.
 *   status_log: the text report into the log (SIGUSR1).
 *   status_close: close everything, remove the socket if it is ours.
 *   status_query: `candy status`: ask the daemon at path, print the reply;
 *     the exit status (1 with a message naming what when none answers).
 */
#define STATUS_CONN_MAX		4
#define STATUS_SLOTS		(1 + STATUS_CONN_MAX)
#define STATUS_TIMEOUT_MS	5000
#define STATUS_PAUSE_MS		1000	/* listener not polled: no descriptors */

struct pollfd;
struct config;
typedef void status_build_fn(void *ctx, struct report *r);

int status_path(const struct config *cfg, char *buf, size_t len);
int status_open(const char *path);
void status_events(struct pollfd *pfd);
void status_handle(const struct pollfd *pfd, int64_t now,
    status_build_fn *build, void *ctx);
void status_log(status_build_fn *build, void *ctx);
void status_close(void);
int status_query(const char *path, int json, const char *what);

/* The settings of one run: options and the config file (candy.c). */
enum mode { MODE_CLIENT, MODE_SERVER };

struct config {
	enum mode mode;
	char websocket[256];	/* ws://host:port/path or wss:// */
	char password[256];
	struct cidr dhcp;	/* server: the range handed out; prefix 0: none */
	int has_dhcp;
	struct sdwan_rule sdwan[SDWAN_MAX];
	int nsdwan;
	char name[16];		/* device candy-NAME */
	struct cidr tun;	/* client: static address; has_tun */
	int has_tun;
	char stun[256];		/* stun://host[:port]; empty: P2P off */
	int port;		/* local UDP port, 0 any */
	int mtu;
	int no_offload;		/* client: the plain per-packet path only */
	int route;		/* relay cost, 0 off */
	int discovery;		/* seconds, 0 off */
	uint32_t localhost;	/* LAN endpoint override, 0: find one */
	char state_dir[256];
	int debug;
	int no_timestamp;
	int no_source_check;
	int max_clients;	/* server: 0 means the range and fds decide */
	char cert[256], key[256];	/* server TLS */
	char ca[256], pin[128];		/* client TLS */
	int insecure;
	uint32_t exit_node;	/* client: full tunnel through it; 0 none */
};

/*
 * Options and the config file.  config_load fills cfg from defaults, the
 * file named by -c (if any) and then argv (the command line wins).  Returns
 * 0 to run, 1 when --help or --version was printed or --check found the
 * configuration good (nothing to run), -1 with a message that names the
 * option and the value in err.
 */
int config_load(struct config *cfg, int argc, char **argv, char *err,
    size_t errlen);
/* Set one option by its long name, as from the file or the command line. */
int config_set(struct config *cfg, const char *key, const char *value,
    char *err, size_t errlen);
/*
 * Log the warnings config_load kept about the config file (unknown keys),
 * once log_init knows the logging options, and forget them.
 */
void config_warnings_flush(void);
/* Print --help to stdout. */
void config_usage(void);

/*
 * The server's capacity with fds file descriptors: *clients authenticated
 * (every host of the --dhcp range, at most --max-clients, within the
 * descriptors) and *pending more connections that have not authenticated
 * yet (1/8 of clients, at least 64, when the descriptors allow).
 */
void server_limits(const struct config *cfg, long fds, size_t *clients,
    size_t *pending);

/* The two modes: each runs its poll loop until SIGINT or SIGTERM. */
void server_run(const struct config *cfg);
void client_run(const struct config *cfg);
/* SIGINT/SIGTERM/SIGUSR1 set flags and wake the loop; SIGPIPE ignored. */
void signals_init(void);

/*
 * For tests and fuzzing (built with -DCANDY_NO_MAIN only): messages m[i]
 * of len[i] bytes through the dispatchers, as the poll loop hands them
 * over, with no sockets and no devices.
 *   server_test_run: a fresh server for cfg; message i comes from
 *     connection from[i], opened (WebSocket upgrade done) at its first
 *     message; a protocol error closes it and its next message opens
 *     another.  Returns the connections closed for protocol errors.
 *   session_test_run: a client session that is up with the address
 *     cfg->tun (without cfg->has_tun: waiting for the server's EXPTTUN
 *     answer, and a grant it takes ends the test process, as there is
 *     no device to create), P2P off.  Returns how many messages were
 *     taken before one ended the session (n: none did).
 */
int server_test_run(const struct config *cfg, unsigned char *const *m,
    const size_t *len, const size_t *from, size_t n);
int session_test_run(const struct config *cfg, unsigned char *const *m,
    const size_t *len, size_t n);

struct client {
	const struct config *cfg;
	struct ws *ws;		/* the server connection; NULL between sessions */
	int tun_fd;
	char ifname[32];
	uint32_t addr;		/* our tunnel address; 0 until authenticated */
	int prefix;
	uint32_t net, mask;	/* the tunnel network */
	/* SD-WAN routes the server pushed (ROUTE messages), installed on the
	 * TUN device; packets to dst/mask go IP-in-IP to next. */
	struct sdwan_route {
		uint32_t dst, mask, next;
	} routes[SDWAN_MAX];
	int nroutes;
	struct p2p p2p;
	unsigned long tx_server, rx_server;	/* FORWARD frames */
	uint64_t tx_server_bytes, rx_server_bytes;	/* their packets' bytes */
	unsigned long dropped;		/* no way to send, or bad packet */
	unsigned long ttl_expired;	/* relayed packets whose TTL ran out */
	/* Full tunnel (an exit node): every destination without a more
	 * precise route goes IP-in-IP to full_gw; 0 none.  full_local: it
	 * is --exit-node and outlives sessions; else the server pushed
	 * 0.0.0.0/0 and it ends with the session. */
	uint32_t full_gw;
	int full_local;
	int full_on;			/* tun_full_tunnel is in place */
	int full_failed;	/* it failed: not tried again this session */
	/* IP-in-IP whose inner source is neither the outer source nor
	 * behind it by a route we hold: dropped (issue 8). */
	unsigned long ipip_refused;
	/* TUN offloads (issue 11): the device has the vnet header (in the
	 * byte order vnet_le) and received TCP is coalesced in *gro. */
	int offload;
	int vnet_le;
	struct tun_gro *gro;	/* allocated with the device; NULL: plain */
	unsigned long seg_bad;	/* super-packets from the TUN refused */
	unsigned long seg_cut;	/* super-packets cut into several */
	unsigned long gro_out;	/* coalesced writes of several segments */
	/* The TUN's AQM (issue 11): the device's queue has no timestamps,
	 * so a packet's wait is taken as the time since the queue was last
	 * found empty, i.e. since the first read that followed (a standing
	 * queue never empties); see struct codel.  0: it was empty. */
	struct codel tun_aqm;
	int64_t tun_busy_us;
};

/*
 * What candy.c calls in peer.c.  All are no-ops when P2P is off.
 *   p2p_start: open the UDP socket when --stun is set; 0 ok, -1 error.
 *   p2p_stop: forget every peer (session over or address changed), wipe
 *     keys; the socket stays, and so do the replay tables until a session
 *     brings another address (old datagrams stay refused across a
 *     reconnection).
 *   p2p_tick: the 1-second tick, called when the deadline it returned
 *     last time has come (first call at start); returns the next deadline
 *     (a now_ms() time, normally now + 1000).
 *   p2p_udp_input: the UDP socket is readable.
 *   p2p_server_msg: a UDP4CONN, DISCOVERY or GENERAL from the server.
 *   p2p_saw_forward: a FORWARD from src arrived through the server.
 *   p2p_send: send pkt (with headroom) to dst over UDP if a path exists:
 *     1 sent, 0 the caller sends it through the server.
 */
int p2p_start(struct client *c);
void p2p_stop(struct client *c);
int64_t p2p_tick(struct client *c, int64_t now);
void p2p_udp_input(struct client *c);
void p2p_server_msg(struct client *c, const unsigned char *m, size_t len);
void p2p_saw_forward(struct client *c, uint32_t src);
/* Send the datagrams p2p_send batched (UDP_SEGMENT); the loop calls it
 * at the end of every pass through client_flush. */
void p2p_flush(struct client *c);
int p2p_send(struct client *c, uint32_t dst, unsigned char *pkt, size_t len);

/* Send a Candy message to the server.  0 queued, -1 dropped. */
int client_server_send(struct client *c, const unsigned char *msg,
    size_t len);
/* Hand an IPv4 packet addressed to us to the TUN device (IP-in-IP is
 * unwrapped first).  With offloads it may be held to be coalesced with
 * the next: client_flush writes what is held (the loop calls it after
 * every pass that read packets). */
void client_deliver(struct client *c, unsigned char *pkt, size_t len);
void client_flush(struct client *c);
/* Send an IPv4 packet on its way (SD-WAN, a peer, or the server); relay is
 * 1 for a packet received from a peer for someone else (TTL then drops). */
void client_route(struct client *c, unsigned char *pkt, size_t len,
    int relay);

#endif
