/*
 * ws.c: WebSocket (RFC 6455) over the byte stream of tls.c: the HTTP/1.1
 * upgrade (client request and 101 check, server request parse and answer),
 * frame headers and masking, and the per-connection buffers: an input
 * buffer that frames are parsed (and fragmented messages reassembled) in
 * place, and a bounded output queue.
 *
 * Everything is resumable: ws_read takes whatever bytes the stream has,
 * answers "a message", "nothing yet" or "finished", and never blocks.
 *
 * Buffers are allocated when a connection first needs them and grow only
 * while it needs more (a large frame, a queue the peer is slow to take),
 * up to fixed limits, then shrink back once drained and quiet for
 * WS_TRIM_MS (candy.h gives the sizes).  A server with thousands of mostly
 * idle connections thus pays for what is in flight, not for the worst
 * case of each; steady traffic in small frames allocates nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bearssl.h>

#include "candy.h"

/* RFC 6455 §1.3: appended to the key before hashing. */
#define WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_LEN	24	/* base64 of the 16-byte nonce */
#define WS_HDR_MAX	14	/* 2 + 8 (64-bit length) + 4 (mask) */
/* Compact the input buffer before reading into less tail room than this
 * (or a quarter of the buffer, when that is less), so reads stay large;
 * the memmove copies at most one partial frame. */
#define WS_READ_MIN	4096
/* The output queue grows by doubling from WS_OUT_BASE; once it holds more
 * than 1/WS_OUT_EARLY of its maximum, ws_send flushes at once, so a burst
 * of relayed frames is not dropped for want of the per-pass flush. */
#define WS_OUT_EARLY	2
/* The input buffer grows to the frame it must hold, in steps of this. */
#define WS_IN_STEP	4096
/* Control frames handled in one ws_read call before it gives the caller
 * a turn (a ping flood must not hold the poll loop); ws_pending says so. */
#define WS_CTRL_BURST	64
/* frame_next: the frame is incomplete. */
#define WS_MORE_NEED	2

/* ---- Sec-WebSocket-Accept: base64(SHA-1(key || GUID)), RFC 6455 §4.2.2. */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* RFC 4648 §4 base64 with padding; out needs 4 * ((n + 2) / 3) + 1. */
static void base64_encode(const unsigned char *p, size_t n, char *out)
{
	size_t i;
	uint32_t v;

	for (i = 0; i + 3 <= n; i += 3) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		*out++ = b64[v >> 18];
		*out++ = b64[v >> 12 & 63];
		*out++ = b64[v >> 6 & 63];
		*out++ = b64[v & 63];
	}
	if (n - i == 1) {
		v = (uint32_t)p[i] << 16;
		*out++ = b64[v >> 18];
		*out++ = b64[v >> 12 & 63];
		*out++ = '=';
		*out++ = '=';
	} else if (n - i == 2) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		*out++ = b64[v >> 18];
		*out++ = b64[v >> 12 & 63];
		*out++ = b64[v >> 6 & 63];
		*out++ = '=';
	}
	*out = '\0';
}

/* see candy.h */
void ws_accept_key(const char *key, char out[29])
{
	br_sha1_context sha;
	unsigned char h[br_sha1_SIZE];

	br_sha1_init(&sha);
	br_sha1_update(&sha, key, strlen(key));
	br_sha1_update(&sha, WS_GUID, strlen(WS_GUID));
	br_sha1_out(&sha, h);
	base64_encode(h, sizeof(h), out);
}

/* ---- Frames, RFC 6455 §5.2. ---- */

/* see candy.h */
int ws_frame_parse(const unsigned char *buf, size_t len, struct ws_frame *f)
{
	size_t need = 2;
	uint64_t n;

	if (len < 2)
		return WS_MORE;
	/* RSV1-3 must be 0: we negotiate no extension. */
	if (buf[0] & 0x70)
		return WS_BAD;
	f->fin = buf[0] >> 7;
	f->opcode = buf[0] & 0x0f;
	switch (f->opcode) {
	case WS_CONT: case WS_TEXT: case WS_BINARY:
		break;
	case WS_CLOSE: case WS_PING: case WS_PONG:
		/* §5.5: control frames must not be fragmented. */
		if (!f->fin)
			return WS_BAD;
		break;
	default:
		return WS_BAD;
	}
	f->masked = buf[1] >> 7;
	n = buf[1] & 0x7f;
	if (n == 126)
		need += 2;
	else if (n == 127)
		need += 8;
	if (f->masked)
		need += 4;
	if (len < need)
		return WS_MORE;
	if (n == 126) {
		n = get16(buf + 2);
	} else if (n == 127) {
		n = get64(buf + 2);
		/* The most significant bit must be 0. */
		if (n >> 63)
			return WS_BAD;
	}
	if (f->masked)
		memcpy(f->mask, buf + need - 4, 4);
	else
		memset(f->mask, 0, 4);
	f->hdrlen = need;
	f->paylen = n;
	return WS_DONE;
}

/* see candy.h */
size_t ws_frame_header(unsigned char *hdr, int opcode, int fin, size_t paylen,
    const unsigned char *mask)
{
	unsigned char m = mask != NULL ? 0x80 : 0;
	size_t n;

	hdr[0] = (unsigned char)((fin ? 0x80 : 0) | (opcode & 0x0f));
	if (paylen < 126) {
		hdr[1] = (unsigned char)(m | paylen);
		n = 2;
	} else if (paylen <= 0xffff) {
		hdr[1] = m | 126;
		put16(hdr + 2, (uint16_t)paylen);
		n = 4;
	} else {
		hdr[1] = m | 127;
		put64(hdr + 2, (uint64_t)paylen);
		n = 10;
	}
	if (mask != NULL) {
		memcpy(hdr + n, mask, 4);
		n += 4;
	}
	return n;
}

/*
 * dst[i] = src[i] ^ m[i % 4] (dst may be src), 8 bytes at a time: a frame
 * is masked or unmasked at memory speed, not a byte per cycle.  The word
 * is built from the mask's bytes and moved with memcpy, so any alignment
 * and either byte order give the same bytes.
 */
static void mask_copy(unsigned char *dst, const unsigned char *src,
    size_t n, const unsigned char m[4])
{
	unsigned char m8[8];
	uint64_t k, w;
	size_t i;

	memcpy(m8, m, 4);
	memcpy(m8 + 4, m, 4);
	memcpy(&k, m8, sizeof(k));
	for (i = 0; i + 8 <= n; i += 8) {
		memcpy(&w, src + i, sizeof(w));
		w ^= k;
		memcpy(dst + i, &w, sizeof(w));
	}
	for (; i < n; i++)
		dst[i] = src[i] ^ m[i & 3];
}

/* see candy.h */
void ws_mask(unsigned char *p, size_t n, const unsigned char mask[4],
    size_t off)
{
	unsigned char m[4];
	size_t i;

	/* Rotate the mask so that p[i] takes m[i % 4]. */
	for (i = 0; i < 4; i++)
		m[i] = mask[(off + i) & 3];
	mask_copy(p, p, n, m);
}

/* ---- The HTTP/1.1 upgrade head, RFC 6455 §4 and RFC 7230 §3. ---- */

/*
 * The length of the head at buf, up to and including the empty line that
 * ends it, or 0 when it has not all arrived.  Only the first WS_HTTP_MAX
 * bytes are looked at.  Lines end in CRLF; a bare LF is tolerated
 * (RFC 7230 §3.5).
 */
static size_t http_head_len(const unsigned char *buf, size_t len)
{
	size_t i;

	if (len > WS_HTTP_MAX)
		len = WS_HTTP_MAX;
	for (i = 1; i < len; i++) {
		if (buf[i] != '\n')
			continue;
		if (buf[i - 1] == '\n' ||
		    (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n'))
			return i + 1;
	}
	return 0;
}

/* The next line of a complete head from *pos, without its line end.
 * Returns 0 at the empty line that ends the head. */
static int http_line(const char *h, size_t len, size_t *pos,
    const char **line, size_t *n)
{
	const char *nl;

	if (*pos >= len || (nl = memchr(h + *pos, '\n', len - *pos)) == NULL)
		return 0;
	*line = h + *pos;
	*n = (size_t)(nl - *line);
	if (*n > 0 && (*line)[*n - 1] == '\r')
		(*n)--;
	*pos = (size_t)(nl - h) + 1;
	return *n > 0;
}

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 'a' - 'A' : c;
}

/* p[0..n) equals the NUL-terminated s, ignoring ASCII case. */
static int eq_nocase(const char *p, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] == '\0' || lower((unsigned char)p[i]) !=
		    lower((unsigned char)s[i]))
			return 0;
	return s[n] == '\0';
}

static int is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* Split a header line into name and value (surrounding blanks trimmed).
 * 0 when the line has no colon. */
static int http_header(const char *line, size_t n, const char **name,
    size_t *namelen, const char **val, size_t *vallen)
{
	const char *colon = memchr(line, ':', n), *end = line + n;

	if (colon == NULL)
		return 0;
	*name = line;
	*namelen = (size_t)(colon - line);
	while (*namelen > 0 && is_ows(line[*namelen - 1]))
		(*namelen)--;
	*val = colon + 1;
	while (*val < end && is_ows(**val))
		(*val)++;
	while (end > *val && is_ows(end[-1]))
		end--;
	*vallen = (size_t)(end - *val);
	return 1;
}

/* A comma-separated header value (RFC 7230 §7) holds token, any case. */
static int http_has_token(const char *v, size_t n, const char *token)
{
	const char *end = v + n, *comma;
	size_t len;

	while (v < end) {
		comma = memchr(v, ',', (size_t)(end - v));
		if (comma == NULL)
			comma = end;
		while (v < comma && is_ows(*v))
			v++;
		len = (size_t)(comma - v);
		while (len > 0 && is_ows(v[len - 1]))
			len--;
		if (eq_nocase(v, len, token))
			return 1;
		v = comma + 1;
	}
	return 0;
}

/*
 * RFC 6455 §4.2.1: a GET with HTTP/1.1, Upgrade: websocket, Connection
 * naming upgrade, a Sec-WebSocket-Key and Sec-WebSocket-Version 13.  The
 * path and Host are not checked: any path is ours.  *why says what was
 * wrong.
 */
static int request_parse(const unsigned char *buf, size_t len, size_t *used,
    char *key, size_t keylen, const char **why)
{
	const char *h = (const char *)buf, *line, *name, *val, *sp;
	size_t headlen, pos = 0, n, namelen, vallen;
	int upgrade = 0, connection = 0, version = 0;

	*why = "incomplete";
	if ((headlen = http_head_len(buf, len)) == 0) {
		if (len < WS_HTTP_MAX)
			return WS_MORE;
		*why = "head too large";
		return WS_BAD;
	}
	/* Request line: GET SP request-target SP HTTP/1.1 */
	*why = "not a GET";
	if (!http_line(h, headlen, &pos, &line, &n) || n < 4 ||
	    memcmp(line, "GET ", 4) != 0)
		return WS_BAD;
	*why = "bad request line";
	sp = memchr(line + 4, ' ', n - 4);
	if (sp == NULL || sp == line + 4 ||
	    !eq_nocase(sp + 1, (size_t)(line + n - sp - 1), "HTTP/1.1"))
		return WS_BAD;
	key[0] = '\0';
	while (http_line(h, headlen, &pos, &line, &n)) {
		if (!http_header(line, n, &name, &namelen, &val, &vallen))
			continue;
		if (eq_nocase(name, namelen, "upgrade"))
			upgrade |= http_has_token(val, vallen, "websocket");
		else if (eq_nocase(name, namelen, "connection"))
			connection |= http_has_token(val, vallen, "upgrade");
		else if (eq_nocase(name, namelen, "sec-websocket-version"))
			version |= vallen == 2 && memcmp(val, "13", 2) == 0;
		else if (eq_nocase(name, namelen, "sec-websocket-key") &&
		    vallen > 0 && vallen < keylen) {
			memcpy(key, val, vallen);
			key[vallen] = '\0';
		}
	}
	if (!upgrade)
		*why = "no Upgrade: websocket";
	else if (!connection)
		*why = "no Connection: upgrade";
	else if (!version)
		*why = "no Sec-WebSocket-Version: 13";
	else if (key[0] == '\0')
		*why = "no Sec-WebSocket-Key";
	else {
		*used = headlen;
		return WS_DONE;
	}
	return WS_BAD;
}

/* see candy.h */
int ws_request_parse(const unsigned char *buf, size_t len, size_t *used,
    char *key, size_t keylen)
{
	const char *why;

	return request_parse(buf, len, used, key, keylen, &why);
}

/* A string safe to put on a request line or in a header value. */
static int http_safe(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			return 0;
	return 1;
}

/* see candy.h */
size_t ws_request_build(char *out, size_t size, const char *host_header,
    const char *path, const char *key)
{
	int n;

	if (path == NULL || *path == '\0')
		path = "/";
	if (!http_safe(host_header) || !http_safe(path) || !http_safe(key))
		return 0;
	/* The headers and their order of the existing client (PROTOCOL 1). */
	n = snprintf(out, size, "GET %s HTTP/1.1\r\n"
	    "Connection: Upgrade\r\n"
	    "Upgrade: websocket\r\n"
	    "Sec-WebSocket-Version: 13\r\n"
	    "Sec-WebSocket-Key: %s\r\n"
	    "Host: %s\r\n"
	    "\r\n", path, key, host_header);
	if (n < 0 || (size_t)n >= size)
		return 0;
	return (size_t)n;
}

/*
 * Client: RFC 6455 §4.1, the server's answer must be 101 with the
 * Sec-WebSocket-Accept of our key.  0 good, -1 refused (logged).
 */
static int response_check(const struct ws *w, const char *h, size_t len)
{
	const char *line, *name, *val;
	size_t pos = 0, n, namelen, vallen, i;
	int status = 0, accepted = -1;

	/* Status line: HTTP/1.x SP 3DIGIT SP reason */
	if (!http_line(h, len, &pos, &line, &n) || n < 12 ||
	    memcmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ') {
		log_warnx("server answered with no HTTP status line");
		return -1;
	}
	for (i = 9; i < 12; i++) {
		if (line[i] < '0' || line[i] > '9') {
			log_warnx("server answered with a bad HTTP status");
			return -1;
		}
		status = status * 10 + line[i] - '0';
	}
	if (status != 101) {
		/* Quote the reason phrase when it is plain text. */
		for (i = 13; i < n && i < 60; i++)
			if (line[i] < ' ' || line[i] > '~')
				break;
		log_warnx("server answered HTTP %d%s%.*s", status,
		    n > 13 ? " " : "", n > 13 ? (int)(i - 13) : 0, line + 13);
		return -1;
	}
	while (http_line(h, len, &pos, &line, &n))
		if (http_header(line, n, &name, &namelen, &val, &vallen) &&
		    eq_nocase(name, namelen, "sec-websocket-accept"))
			accepted = vallen == strlen(w->accept) &&
			    memcmp(val, w->accept, vallen) == 0;
	if (accepted < 0)
		log_warnx("server's 101 answer has no Sec-WebSocket-Accept");
	else if (!accepted)
		log_warnx("server's Sec-WebSocket-Accept does not match "
		    "our key");
	return accepted == 1 ? 0 : -1;
}

/* ---- Buffers. ---- */

/* Resize a buffer, keeping its bytes (as many as fit).  0 ok, -1 no
 * memory: the old buffer is left as it was. */
static int buf_resize(unsigned char **buf, size_t *size, size_t newsize)
{
	unsigned char *p = realloc(*buf, newsize);

	if (p == NULL) {
		log_warnx("out of memory for a %zu-byte WebSocket buffer",
		    newsize);
		return -1;
	}
	*buf = p;
	*size = newsize;
	return 0;
}

/*
 * see candy.h.  The input buffer is left alone while a message that
 * ws_read returned may still be in use (until the next ws_read).
 */
void ws_trim(struct ws *w)
{
	if (w->insize <= w->inbase && w->outsize <= WS_OUT_BASE)
		return;
	if (now_ms() - w->big_ms < WS_TRIM_MS)
		return;
	if (w->insize > w->inbase && !w->lent && w->inpos == w->inlen &&
	    w->msglen == 0) {
		w->inpos = w->inlen = 0;
		(void)buf_resize(&w->in, &w->insize, w->inbase);
	}
	if (w->outsize > WS_OUT_BASE && w->outpos == w->outlen) {
		w->outpos = w->outlen = 0;
		(void)buf_resize(&w->out, &w->outsize, WS_OUT_BASE);
	}
}

/* see candy.h */
void ws_limit(struct ws *w, size_t msgmax, size_t outmax)
{
	if (msgmax > WS_MSG_MAX)
		msgmax = WS_MSG_MAX;
	/* Never below what is already held: the room left is unsigned. */
	w->msgmax = msgmax > w->msglen ? msgmax : w->msglen;
	w->outmax = outmax > ws_queued(w) ? outmax : ws_queued(w);
}

/* see candy.h */
size_t ws_queued(const struct ws *w)
{
	return w->outlen - w->outpos;
}

/* see candy.h */
size_t ws_room(const struct ws *w)
{
	return w->outmax - ws_queued(w);
}

/* Room for n more bytes at the end of the queue, compacting or growing
 * it if that helps; NULL when the queue would exceed max (at most
 * w->outmax), or no memory. */
static unsigned char *out_room(struct ws *w, size_t n, size_t max)
{
	size_t queued = w->outlen - w->outpos, size;

	if (queued > max || n > max - queued)
		return NULL;
	if (queued + n > WS_OUT_BASE)
		w->big_ms = now_ms();
	if (w->out != NULL && w->outsize - w->outlen >= n)
		return w->out + w->outlen;
	if (w->outpos > 0) {
		memmove(w->out, w->out + w->outpos, queued);
		w->outlen = queued;
		w->outpos = 0;
	}
	if (w->out == NULL || w->outsize - w->outlen < n) {
		for (size = w->outsize ? w->outsize : WS_OUT_BASE;
		    size < queued + n; size *= 2)
			;
		if (size > w->outmax)
			size = w->outmax;
		if (buf_resize(&w->out, &w->outsize, size) < 0)
			return NULL;
	}
	return w->out + w->outlen;
}

/* Queue bytes as they are (an HTTP head).  0 ok, -1 no room. */
static int out_raw(struct ws *w, const void *p, size_t n)
{
	unsigned char *q = out_room(w, n, w->outmax);

	if (q == NULL)
		return -1;
	memcpy(q, p, n);
	w->outlen += n;
	return 0;
}

/*
 * A fresh client mask (RFC 6455 §5.3).  Masks come from the DRBG, but one
 * HMAC-DRBG call costs several SHA-256 compressions whatever its length:
 * at a call per frame that was a third of a wss client's CPU under bulk
 * load.  So they are drawn WS_MASK_POOL bytes at a time (one process-wide
 * pool: the client has one connection).
 */
#define WS_MASK_POOL	1024

static void mask_new(unsigned char mask[4])
{
	static unsigned char pool[WS_MASK_POOL];
	static size_t used = sizeof(pool);

	if (used + 4 > sizeof(pool)) {
		rand_bytes(pool, sizeof(pool));
		used = 0;
	}
	memcpy(mask, pool + used, 4);
	used += 4;
}

/*
 * Queue one frame, masked with a fresh random mask from a client (RFC 6455
 * §5.3), whatever the state, if the queue then holds at most max bytes.
 * The payload is copied and masked in the queue: the caller's buffer is
 * never modified.  0 ok, -1 no room.
 */
static int out_frame_within(struct ws *w, int opcode, const void *p,
    size_t n, size_t max)
{
	unsigned char mask[4], *q;
	size_t hl;

	if ((q = out_room(w, WS_HDR_MAX + n, max)) == NULL)
		return -1;
	if (w->client)
		mask_new(mask);
	hl = ws_frame_header(q, opcode, 1, n, w->client ? mask : NULL);
	if (w->client)
		mask_copy(q + hl, p, n, mask);
	else if (n > 0)
		memcpy(q + hl, p, n);
	w->outlen += hl + n;
	return 0;
}

/* out_frame_within the whole queue. */
static int out_frame(struct ws *w, int opcode, const void *p, size_t n)
{
	return out_frame_within(w, opcode, p, n, w->outmax);
}

/* ---- Connections. ---- */

/* The client is one connection per process: its input buffer is full
 * size from the start (large reads), its queue may grow larger. */
static void ws_init(struct ws *w, int fd, struct tls *tls, int client)
{
	w->s.fd = fd;
	w->s.tls = tls;
	w->state = WS_HTTP;
	w->client = client;
	w->accept[0] = '\0';
	w->in = NULL;
	w->insize = 0;
	w->inbase = client ? WS_BUF_MAX : WS_IN_BASE;
	w->inpos = w->inlen = 0;
	w->msglen = 0;
	w->msgop = -1;
	w->out = NULL;
	w->outsize = 0;
	w->outmax = client ? WS_OUT_CLIENT_MAX : WS_OUT_SERVER_MAX;
	w->msgmax = WS_MSG_MAX;
	w->outpos = w->outlen = 0;
	w->lent = 0;
	w->big_ms = 0;
	w->last_rx_ms = now_ms();
	w->full_since_ms = 0;
	w->dropped = 0;
	w->close_reason[0] = '\0';
	w->ping[0] = '\0';
}

/* see candy.h */
void ws_init_server(struct ws *w, int fd, struct tls *tls)
{
	ws_init(w, fd, tls, 0);
}

/* see candy.h */
void ws_init_client(struct ws *w, int fd, struct tls *tls,
    const char *host_header, const char *path)
{
	unsigned char nonce[16];
	char key[WS_KEY_LEN + 1], req[WS_HTTP_MAX];
	size_t n;

	ws_init(w, fd, tls, 1);
	rand_bytes(nonce, sizeof(nonce));
	base64_encode(nonce, sizeof(nonce), key);
	ws_accept_key(key, w->accept);
	/* XXX: a host or path unfit for a request line (the URI parser lets
	 * none through) leaves the queue empty and the caller's open timeout
	 * ends the session. */
	n = ws_request_build(req, sizeof(req), host_header, path, key);
	if (n == 0)
		log_warnx("cannot build a WebSocket request for %s%s",
		    host_header, path != NULL ? path : "");
	else
		(void)out_raw(w, req, n);
}

/*
 * Read more bytes into w->in, making room for need bytes from inpos (the
 * frame or head being read) behind the open fragmented message, if any:
 * the buffer grows for a frame larger than it.  1 read some, 0 nothing
 * now, -1 EOF, error, or no memory (no room cannot happen: heads and
 * frames are checked against WS_BUF_MAX first).
 */
static int in_fill(struct ws *w, size_t need)
{
	size_t keep, want = w->msglen + need, size = w->insize, min;
	ssize_t n;

	if (w->inpos == w->inlen && w->msglen == 0)
		w->inpos = w->inlen = 0;
	keep = w->inpos - w->msglen;	/* the first byte still needed */
	if (want > w->inbase)
		w->big_ms = now_ms();
	if (w->in == NULL || want > size) {
		size = (want + WS_IN_STEP - 1) / WS_IN_STEP * WS_IN_STEP;
		if (size < w->inbase)
			size = w->inbase;
		if (size > WS_BUF_MAX)
			size = WS_BUF_MAX;
	}
	/* Compact only when needed: before growing, when the frame would
	 * not fit where it starts, or when the tail is too short for a
	 * useful read. */
	min = w->insize / 4 < WS_READ_MIN ? w->insize / 4 : WS_READ_MIN;
	if (keep > 0 && (size > w->insize || w->insize - keep < want ||
	    w->insize - w->inlen < min)) {
		memmove(w->in, w->in + keep, w->inlen - keep);
		w->inlen -= keep;
		w->inpos -= keep;
	}
	if (size > w->insize && buf_resize(&w->in, &w->insize, size) < 0)
		return -1;
	if (w->inlen == w->insize) {
		log_warnx("WebSocket input buffer full");
		return -1;
	}
	n = stream_read(&w->s, w->in + w->inlen, w->insize - w->inlen);
	if (n < 0)
		return -1;
	w->inlen += (size_t)n;
	return n > 0;
}

/* Server: the request, answered with 101 or 400.  WS_DONE, WS_MORE, or
 * WS_BAD after queueing and flushing the 400. */
static int server_upgrade(struct ws *w)
{
	static const char bad[] = "HTTP/1.1 400 Bad Request\r\n"
	    "Content-Length: 0\r\nConnection: close\r\n\r\n";
	char key[64], accept[29], head[160];
	const char *why;
	size_t used;
	int r, n;

	r = request_parse(w->in + w->inpos, w->inlen - w->inpos, &used, key,
	    sizeof(key), &why);
	if (r == WS_MORE)
		return WS_MORE;
	if (r == WS_BAD) {
		log_debug("not a WebSocket request: %s", why);
		out_raw(w, bad, sizeof(bad) - 1);
		ws_flush(w);
		w->state = WS_CLOSING;
		return WS_BAD;
	}
	w->inpos += used;
	ws_accept_key(key, accept);
	n = snprintf(head, sizeof(head), "HTTP/1.1 101 Switching Protocols\r\n"
	    "Connection: Upgrade\r\n"
	    "Upgrade: websocket\r\n"
	    "Sec-WebSocket-Accept: %s\r\n"
	    "\r\n", accept);
	if (out_raw(w, head, (size_t)n) < 0)
		return WS_BAD;	/* cannot happen: nothing is queued yet */
	w->state = WS_OPEN;
	return WS_DONE;
}

/* Client: the server's answer.  WS_DONE, WS_MORE or WS_BAD (logged). */
static int client_upgrade(struct ws *w)
{
	size_t avail = w->inlen - w->inpos;
	size_t n = http_head_len(w->in + w->inpos, avail);

	if (n == 0) {
		if (avail < WS_HTTP_MAX)
			return WS_MORE;
		log_warnx("server's HTTP answer exceeds %d bytes", WS_HTTP_MAX);
		return WS_BAD;
	}
	if (response_check(w, (const char *)w->in + w->inpos, n) < 0)
		return WS_BAD;
	/* Bytes after the head are the first frames. */
	w->inpos += n;
	w->state = WS_OPEN;
	return WS_DONE;
}

/* A close frame arrived: answer it unless we sent ours, echoing the
 * status code as RFC 6455 §5.5.1 suggests. */
static void close_received(struct ws *w, const unsigned char *p, size_t n)
{
	size_t i, k = 0;

	if (n >= 2)
		log_debug("WebSocket close %u", get16(p));
	/* §5.5.1: the reason is UTF-8 for people; we keep printable ASCII
	 * only, so that it can go into our log as it is. */
	for (i = 2; i < n && k + 1 < sizeof(w->close_reason); i++)
		w->close_reason[k++] = p[i] >= 0x20 && p[i] < 0x7f ?
		    (char)p[i] : '?';
	w->close_reason[k] = '\0';
	if (w->state == WS_OPEN) {
		out_frame(w, WS_CLOSE, p, n >= 2 ? 2 : 0);
		w->state = WS_CLOSING;
		ws_flush(w);
	}
}

/*
 * A frame was taken out of the middle of an open fragmented message (a
 * control frame, or the header of a continuation): slide the message
 * forward so that it ends at end, right before the bytes still to parse
 * (or the payload it continues with).  At most WS_MSG_MAX bytes, and only
 * for fragmented messages, which the existing client never sends.
 */
static void msg_slide(struct ws *w, size_t from, size_t end)
{
	if (w->msglen > 0 && end != from)
		memmove(w->in + end - w->msglen, w->in + from - w->msglen,
		    w->msglen);
}

/*
 * Handle one frame that is complete in w->in at inpos.  Returns 1 with a
 * data message, 0 after a control frame or a fragment, -1 to finish.  A
 * fragmented message is reassembled in place: its bytes are always
 * in[inpos - msglen .. inpos).
 */
static int frame_take(struct ws *w, const struct ws_frame *f,
    unsigned char **msg, size_t *len)
{
	size_t start = w->inpos, n = (size_t)f->paylen;
	unsigned char *p = w->in + start + f->hdrlen;

	w->inpos += f->hdrlen + n;
	w->last_rx_ms = now_ms();
	if (f->masked)
		ws_mask(p, n, f->mask, 0);
	switch (f->opcode) {
	case WS_PING:
		/* A Candy client describes itself in its pings; kept (cut
		 * to fit) for status, which escapes it. */
		if (n > 0) {
			size_t k = n < sizeof(w->ping) ? n : sizeof(w->ping) - 1;

			memcpy(w->ping, p, k);
			w->ping[k] = '\0';
		}
		/* Dropped like any frame when the queue is full: the peer
		 * pings again. */
		if (out_frame(w, WS_PONG, p, n) < 0)
			w->dropped++;
		msg_slide(w, start, w->inpos);
		return 0;
	case WS_PONG:
		msg_slide(w, start, w->inpos);
		return 0;
	case WS_CLOSE:
		close_received(w, p, n);
		return -1;
	case WS_CONT:
		/* §5.4: continues the open fragmented message. */
		if (w->msgop < 0) {
			log_warnx("WebSocket continuation without a message");
			return -1;
		}
		if (n > w->msgmax - w->msglen) {
			log_warnx("fragmented WebSocket message exceeds %zu "
			    "bytes", w->msgmax);
			return -1;
		}
		msg_slide(w, start, start + f->hdrlen);
		w->msglen += n;
		if (!f->fin)
			return 0;
		*msg = w->in + w->inpos - w->msglen;
		*len = w->msglen;
		w->msgop = -1;
		w->msglen = 0;
		return 1;
	default:	/* WS_TEXT, WS_BINARY: text is delivered like binary */
		if (w->msgop >= 0) {
			log_warnx("WebSocket data frame inside a fragmented "
			    "message");
			return -1;
		}
		if (!f->fin) {
			/* The payload stays where it is: the message. */
			w->msglen = n;
			w->msgop = f->opcode;
			return 0;
		}
		/* Zero-copy: the message stays in w->in until the next
		 * ws_read. */
		*msg = p;
		*len = n;
		return 1;
	}
}

/*
 * The next frame from w->in.  1 with a message, 0 handled a control frame
 * or fragment, WS_MORE_NEED (with *need, the bytes the frame needs from
 * inpos) when incomplete, -1 to finish.
 */
static int frame_next(struct ws *w, unsigned char **msg, size_t *len,
    size_t *need)
{
	struct ws_frame f;
	size_t avail = w->inlen - w->inpos;
	int r = ws_frame_parse(w->in + w->inpos, avail, &f);

	if (r == WS_MORE) {
		*need = WS_HDR_MAX;
		return WS_MORE_NEED;
	}
	if (r == WS_BAD) {
		log_warnx("malformed WebSocket frame");
		return -1;
	}
	/* §5.1: clients mask every frame, servers none. */
	if (f.masked == w->client) {
		log_warnx("WebSocket frame %s", w->client ?
		    "from the server is masked" :
		    "from the client is not masked");
		return -1;
	}
	/* XXX: lenient on control frames: §5.5 limits them to 125 bytes,
	 * but the existing server pads its pong to 1500 bytes.  Every frame
	 * is held to msgmax, and must fit in the input buffer behind the
	 * fragmented message it interrupts or continues. */
	if (f.paylen > w->msgmax ||
	    f.hdrlen + f.paylen > WS_BUF_MAX - w->msglen) {
		if (f.paylen > w->msgmax)
			log_warnx("WebSocket frame of %llu bytes exceeds %zu",
			    (unsigned long long)f.paylen, w->msgmax);
		else
			log_warnx("WebSocket frame of %llu bytes exceeds the "
			    "%d left behind a fragmented message",
			    (unsigned long long)f.paylen,
			    (int)(WS_BUF_MAX - w->msglen - f.hdrlen));
		return -1;
	}
	if (avail < f.hdrlen + f.paylen) {
		*need = f.hdrlen + (size_t)f.paylen;
		return WS_MORE_NEED;
	}
	return frame_take(w, &f, msg, len);
}

/* see candy.h */
int ws_read(struct ws *w, unsigned char **msg, size_t *len)
{
	size_t need;
	int r, ctrl = 0;

	/* The message returned last time is no longer in use. */
	w->lent = 0;
	ws_trim(w);
	for (;;) {
		if (w->state != WS_HTTP && w->state != WS_OPEN)
			return -1;
		if (w->in == NULL) {
			need = 1;	/* nothing received yet */
		} else if (w->state == WS_HTTP) {
			r = w->client ? client_upgrade(w) : server_upgrade(w);
			if (r == WS_BAD)
				return -1;
			if (r == WS_DONE)
				continue;
			need = WS_HTTP_MAX;
		} else {
			r = frame_next(w, msg, len, &need);
			if (r == 1)
				w->lent = 1;
			if (r == 1 || r < 0)
				return r;
			if (r == 0) {
				if (++ctrl == WS_CTRL_BURST)
					return 0;
				continue;
			}
		}
		/* Need more bytes. */
		if ((r = in_fill(w, need)) <= 0)
			return r;
	}
}

/* see candy.h */
int ws_pending(const struct ws *w)
{
	struct ws_frame f;
	size_t avail = w->inlen - w->inpos;
	int r;

	if (w->state == WS_DEAD)
		return 0;
	if (w->state == WS_OPEN && w->in != NULL) {
		/* A bad frame counts: ws_read will report it. */
		r = ws_frame_parse(w->in + w->inpos, avail, &f);
		if (r == WS_BAD || (r == WS_DONE && (f.paylen > w->msgmax ||
		    f.hdrlen + f.paylen > WS_BUF_MAX - w->msglen ||
		    avail >= f.hdrlen + f.paylen)))
			return 1;
	}
	return stream_pending(&w->s);
}

/*
 * see candy.h.  The caller flushes once per poll pass, before it sleeps,
 * so a frame waits no longer, and the frames of one pass leave in one
 * write (one TLS record) instead of one each; only a queue past half its
 * maximum is written at once.
 */
static int ws_send_within(struct ws *w, int opcode, const void *p,
    size_t n, size_t max)
{
	/* A client may queue frames behind its upgrade request: the
	 * server reads them after the head.  A server must answer first. */
	if (w->state != WS_OPEN && !(w->state == WS_HTTP && w->client))
		return -1;
	if (n > WS_MSG_MAX) {
		log_debug("not sending a %zu-byte WebSocket frame", n);
		w->dropped++;
		return -1;
	}
	if (out_frame_within(w, opcode, p, n, max) < 0) {
		w->dropped++;
		if (w->full_since_ms == 0)
			w->full_since_ms = now_ms();
		return -1;
	}
	/* A burst (a relay pass, READ_BURST frames from one sender) may
	 * outgrow the queue before the pass ends: write early.  An error
	 * shows again at the caller's flush. */
	if (ws_queued(w) > w->outmax / WS_OUT_EARLY)
		(void)ws_flush(w);
	return 0;
}

/* see candy.h */
int ws_send(struct ws *w, int opcode, const void *p, size_t n)
{
	return ws_send_within(w, opcode, p, n, w->outmax);
}

/* see candy.h */
int ws_send_bulk(struct ws *w, int opcode, const void *p, size_t n)
{
	return ws_send_within(w, opcode, p, n, w->outmax > WS_OUT_RESERVE ?
	    w->outmax - WS_OUT_RESERVE : 0);
}

/*
 * see candy.h.  full_since_ms is cleared whenever the peer takes bytes:
 * it measures how long the peer has not been reading, which is what the
 * caller's "not reading" timeout wants; a slow reader is not a dead one.
 */
int ws_flush(struct ws *w)
{
	ssize_t n;

	if (w->state == WS_DEAD)
		return -1;
	while (w->outpos < w->outlen) {
		n = stream_write(&w->s, w->out + w->outpos,
		    w->outlen - w->outpos);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		w->outpos += (size_t)n;
		w->full_since_ms = 0;
	}
	if (w->outpos == w->outlen)
		w->outpos = w->outlen = 0;
	ws_trim(w);
	return 0;
}

/* see candy.h.  POLLIN always (the caller masks it for back-pressure),
 * POLLOUT while the queue holds bytes, as the stream sees them. */
short ws_events(const struct ws *w)
{
	if (w->state == WS_DEAD)
		return 0;
	return stream_events(&w->s, w->outpos < w->outlen);
}

/* see candy.h */
void ws_close(struct ws *w)
{
	unsigned char status[2];

	if (w->state == WS_DEAD)
		return;
	if (w->state == WS_OPEN) {
		put16(status, 1000);	/* §7.4.1: normal closure */
		out_frame(w, WS_CLOSE, status, sizeof(status));
		w->state = WS_CLOSING;
	}
	ws_flush(w);
}

/* see candy.h */
void ws_free(struct ws *w)
{
	free(w->in);
	free(w->out);
	w->in = w->out = NULL;
	w->insize = w->outsize = 0;
	w->inpos = w->inlen = w->outpos = w->outlen = 0;
	w->msglen = 0;
	w->msgop = -1;
	if (w->state == WS_DEAD)
		return;
	stream_close(&w->s);
	w->s.fd = -1;
	w->s.tls = NULL;
	w->state = WS_DEAD;
}
