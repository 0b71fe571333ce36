/*
 * t_ws.c: WebSocket tests.  Known answers from RFC 6455 (§1.3 accept key,
 * §5.7 frame examples) and from the captured vectors (PROTOCOL 1: the
 * existing Candy client's upgrade request and its server's accept key);
 * behaviour tests run a ws against raw bytes, or a client ws against a
 * server ws, over a socketpair of plain streams.  No network.
 */
#include <stdio.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "candy.h"
#include "test.h"

static struct ws wa, wb;

/* A ws on one end of a non-blocking socketpair; *peer is the other end. */
static void pair_open(struct ws *w, int *peer, int client, int open)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		CHECK(0, "socketpair");
		*peer = -1;
		return;
	}
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	if (client)
		ws_init_client(w, sv[0], NULL, "h", "/");
	else
		ws_init_server(w, sv[0], NULL);
	if (open) {
		w->state = WS_OPEN;
		w->outpos = w->outlen = 0;	/* forget the request */
	}
	*peer = sv[1];
}

static void pair_close(struct ws *w, int peer)
{
	ws_free(w);
	close(peer);
}

static void feed(int fd, const void *p, size_t n)
{
	const unsigned char *b = p;
	ssize_t r;

	while (n > 0) {
		r = write(fd, b, n);
		if (r <= 0) {
			CHECK(0, "feed: write to the socketpair");
			return;
		}
		b += r;
		n -= (size_t)r;
	}
}

static void feed_hex(int fd, const char *hex)
{
	unsigned char b[512];

	feed(fd, b, unhex(hex, b, sizeof(b)));
}

/* Flush w and read what reached the peer. */
static size_t drain(struct ws *w, int peer, unsigned char *buf, size_t max)
{
	size_t n = 0;
	ssize_t r;

	ws_flush(w);
	while (n < max && (r = read(peer, buf + n, max - n)) > 0)
		n += (size_t)r;
	return n;
}

/* ws_read until something other than "nothing yet" (bounded). */
static int read_msg(struct ws *w, unsigned char **m, size_t *len)
{
	int i, r = 0;

	for (i = 0; i < 16 && (r = ws_read(w, m, len)) == 0; i++)
		;
	return r;
}

/* RFC 6455 §1.3 and the capture. */
static void test_accept_key(void)
{
	static const struct {
		const char *key, *accept, *source;
	} kat[] = {
		{ "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
		    "accept key: RFC 6455 1.3" },
		{ "T9WDF8aXq2H9/TBiYWs9RQ==", "tWjW7vMzFvYwiLdJVT9Hg00rWX4=",
		    "accept key: captured" },
	};
	char out[29];
	size_t i;

	for (i = 0; i < sizeof(kat) / sizeof(kat[0]); i++) {
		ws_accept_key(kat[i].key, out);
		CHECK_BYTES(kat[i].accept, strlen(kat[i].accept), out,
		    strlen(out), kat[i].source);
	}
}

/* The existing client's request, byte for byte (the capture). */
static const char vec_request[] =
    "GET / HTTP/1.1\r\n"
    "Connection: Upgrade\r\n"
    "Upgrade: websocket\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: T9WDF8aXq2H9/TBiYWs9RQ==\r\n"
    "Host: 10.77.0.1:8080\r\n"
    "\r\n";

static void test_request(void)
{
	char out[512], key[64];
	size_t n, used;
	const char *lax =
	    "get /net1 HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\n"
	    "connection: keep-alive, Upgrade\r\nsec-websocket-key:  abc \r\n"
	    "sec-websocket-version: 13\r\n\r\nrest";
	const char *lf = "GET /x HTTP/1.1\nUpgrade: websocket\n"
	    "Connection: upgrade\nSec-WebSocket-Key: k\n"
	    "Sec-WebSocket-Version: 13\n\n";

	n = ws_request_build(out, sizeof(out), "10.77.0.1:8080", "/",
	    "T9WDF8aXq2H9/TBiYWs9RQ==");
	CHECK_BYTES(vec_request, strlen(vec_request), out, n,
	    "request: the captured bytes");
	CHECK(ws_request_build(out, sizeof(out), "h", "", "k") > 0 &&
	    memcmp(out, "GET / HTTP/1.1\r\n", 16) == 0,
	    "request: empty path is /");
	CHECK(ws_request_build(out, 40, "10.77.0.1:8080", "/", "k") == 0,
	    "request: too long for the buffer");
	CHECK(ws_request_build(out, sizeof(out), "h", "/a b", "k") == 0 &&
	    ws_request_build(out, sizeof(out), "h\r\nX: y", "/", "k") == 0,
	    "request: blanks and CRLF refused");

	CHECK(ws_request_parse((const unsigned char *)vec_request,
	    strlen(vec_request), &used, key, sizeof(key)) == WS_DONE &&
	    used == strlen(vec_request) &&
	    strcmp(key, "T9WDF8aXq2H9/TBiYWs9RQ==") == 0,
	    "request parse: captured");
	for (n = 0; n < strlen(vec_request); n++)
		if (ws_request_parse((const unsigned char *)vec_request, n,
		    &used, key, sizeof(key)) != WS_MORE)
			break;
	CHECK(n == strlen(vec_request), "request parse: WS_MORE at every cut");
	CHECK(ws_request_parse((const unsigned char *)lax, strlen(lax), &used,
	    key, sizeof(key)) == WS_BAD, "request parse: method is exact");
	CHECK(ws_request_parse((const unsigned char *)lax + 3,
	    strlen(lax) - 3, &used, key, sizeof(key)) == WS_BAD,
	    "request parse: no method");
	memcpy(out, "GET", 3);
	memcpy(out + 3, lax + 3, strlen(lax) - 3 + 1);
	CHECK(ws_request_parse((unsigned char *)out, strlen(out), &used, key,
	    sizeof(key)) == WS_DONE && strcmp(key, "abc") == 0 &&
	    used == strlen(out) - 4,
	    "request parse: any case, token lists, any path");
	CHECK(ws_request_parse((const unsigned char *)lf, strlen(lf), &used,
	    key, sizeof(key)) == WS_DONE && strcmp(key, "k") == 0,
	    "request parse: bare LF line ends");
	{
		static const char *bad[] = {
		    "GET / HTTP/1.1\r\nConnection: Upgrade\r\n"
		    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: k\r\n\r\n",
		    "GET / HTTP/1.1\r\nUpgrade: websocket\r\n"
		    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: k\r\n\r\n",
		    "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade"
		    "\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: k\r\n\r\n",
		    "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade"
		    "\r\nSec-WebSocket-Version: 13\r\n\r\n",
		    "POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: "
		    "Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
		    "k\r\n\r\n",
		    "GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: "
		    "Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
		    "k\r\n\r\n",
		};
		int ok = 1;

		for (n = 0; n < sizeof(bad) / sizeof(bad[0]); n++)
			ok &= ws_request_parse((const unsigned char *)bad[n],
			    strlen(bad[n]), &used, key, sizeof(key)) == WS_BAD;
		CHECK(ok, "request parse: no upgrade, connection, version 13, "
		    "key, GET or HTTP/1.1: WS_BAD");
	}
	{
		static unsigned char big[WS_HTTP_MAX + 10];

		memset(big, 'a', sizeof(big));
		memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
		CHECK(ws_request_parse(big, WS_HTTP_MAX - 1, &used, key,
		    sizeof(key)) == WS_MORE &&
		    ws_request_parse(big, sizeof(big), &used, key,
		    sizeof(key)) == WS_BAD, "request parse: head over "
		    "WS_HTTP_MAX is WS_BAD");
	}
}

/* Header encoding and parsing: RFC 6455 §5.7 and the three lengths. */
static void test_frame_header(void)
{
	static const struct {
		const char *hex;
		int fin, opcode, masked;
		size_t hdrlen;
		uint64_t paylen;
		const char *source;
	} kat[] = {
		{ "8105", 1, WS_TEXT, 0, 2, 5, "frame: RFC 6455 5.7 Hello" },
		{ "818537fa213d", 1, WS_TEXT, 1, 6, 5,
		    "frame: RFC 6455 5.7 masked Hello" },
		{ "0103", 0, WS_TEXT, 0, 2, 3, "frame: RFC 6455 5.7 Hel" },
		{ "8002", 1, WS_CONT, 0, 2, 2, "frame: RFC 6455 5.7 lo" },
		{ "8905", 1, WS_PING, 0, 2, 5, "frame: RFC 6455 5.7 ping" },
		{ "8a8537fa213d", 1, WS_PONG, 1, 6, 5,
		    "frame: RFC 6455 5.7 masked pong" },
		{ "827e0100", 1, WS_BINARY, 0, 4, 256,
		    "frame: RFC 6455 5.7 256 bytes" },
		{ "827f0000000000010000", 1, WS_BINARY, 0, 10, 65536,
		    "frame: RFC 6455 5.7 64 KiB" },
		{ "827d", 1, WS_BINARY, 0, 2, 125, "frame: 125, 7-bit" },
		{ "82fe ffff 01020304", 1, WS_BINARY, 1, 8, 65535,
		    "frame: 65535, 16-bit, masked" },
		{ "82ff 0000000000010000 01020304", 1, WS_BINARY, 1, 14, 65536,
		    "frame: 65536, 64-bit, masked" },
	};
	unsigned char b[32], h[14];
	struct ws_frame f;
	size_t i, n, cut;
	int ok;

	for (i = 0; i < sizeof(kat) / sizeof(kat[0]); i++) {
		n = unhex(kat[i].hex, b, sizeof(b));
		ok = ws_frame_parse(b, n, &f) == WS_DONE &&
		    f.fin == kat[i].fin && f.opcode == kat[i].opcode &&
		    f.masked == kat[i].masked && f.hdrlen == kat[i].hdrlen &&
		    f.paylen == kat[i].paylen &&
		    (!f.masked || memcmp(f.mask, b + n - 4, 4) == 0);
		for (cut = 0; cut < n; cut++)
			ok &= ws_frame_parse(b, cut, &f) == WS_MORE;
		CHECK(ok, kat[i].source);
		CHECK_BYTES(b, n, h, ws_frame_header(h, kat[i].opcode,
		    kat[i].fin, (size_t)kat[i].paylen,
		    kat[i].masked ? b + n - 4 : NULL), kat[i].source);
	}
	{
		static const struct {
			const char *hex, *why;
		} bad[] = {
			{ "c205", "frame: RSV1 set is WS_BAD" },
			{ "a205", "frame: RSV2 set is WS_BAD" },
			{ "9205", "frame: RSV3 set is WS_BAD" },
			{ "8305", "frame: opcode 3 is WS_BAD" },
			{ "8b05", "frame: opcode 0xb is WS_BAD" },
			{ "0905", "frame: fragmented ping is WS_BAD" },
			{ "827f8000000000000000", "frame: 64-bit length with "
			    "the top bit is WS_BAD" },
		};

		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			n = unhex(bad[i].hex, b, sizeof(b));
			CHECK(ws_frame_parse(b, n, &f) == WS_BAD, bad[i].why);
		}
	}
	{
		/* RFC 6455 §5.7: "Hello" under mask 37 fa 21 3d. */
		static const unsigned char mask[4] = { 0x37, 0xfa, 0x21, 0x3d };
		unsigned char p[5] = "Hello", want[5];

		unhex("7f9f4d5158", want, sizeof(want));
		ws_mask(p, 5, mask, 0);
		CHECK_BYTES(want, 5, p, 5, "mask: RFC 6455 5.7 Hello");
		memcpy(p, "Hello", 5);
		ws_mask(p, 2, mask, 0);
		ws_mask(p + 2, 3, mask, 2);
		CHECK_BYTES(want, 5, p, 5, "mask: resumed at an offset");
	}
}

/* Frames received by an open ws, as raw bytes from the peer. */
static void test_receive(void)
{
	static unsigned char big[WS_MSG_MAX + 32];
	unsigned char *m, b[2048];
	size_t len, n, i;
	int peer, r, ok;

	/* RFC 6455 §5.7 examples, in the direction each is legal. */
	pair_open(&wa, &peer, 1, 1);
	feed_hex(peer, "810548656c6c6f");
	CHECK(read_msg(&wa, &m, &len) == 1 && len == 5 &&
	    memcmp(m, "Hello", 5) == 0, "client: unmasked Hello delivered");
	CHECK(m >= wa.in && m < wa.in + wa.insize,
	    "client: unfragmented message is zero-copy");
	CHECK(ws_read(&wa, &m, &len) == 0, "client: then nothing");
	feed_hex(peer, "818537fa213d7f9f4d5158");
	CHECK(read_msg(&wa, &m, &len) == -1,
	    "client: masked server frame refused");
	pair_close(&wa, peer);

	pair_open(&wa, &peer, 0, 1);
	feed_hex(peer, "818537fa213d7f9f4d5158");
	CHECK(read_msg(&wa, &m, &len) == 1 && len == 5 &&
	    memcmp(m, "Hello", 5) == 0, "server: masked Hello delivered");
	feed_hex(peer, "810548656c6c6f");
	CHECK(read_msg(&wa, &m, &len) == -1,
	    "server: unmasked client frame refused");
	pair_close(&wa, peer);

	/* §5.7 fragments with a ping between them (§5.4). */
	pair_open(&wa, &peer, 1, 1);
	fake_now_ms = 4242;
	feed_hex(peer, "010348656c 890548656c6c6f 80026c6f");
	r = read_msg(&wa, &m, &len);
	CHECK(r == 1 && len == 5 && memcmp(m, "Hello", 5) == 0 &&
	    m >= wa.in && m + len <= wa.in + wa.inlen,
	    "client: fragments with a ping reassembled in place");
	CHECK(wa.last_rx_ms == 4242, "client: frames set last_rx_ms");
	fake_now_ms = 0;
	n = drain(&wa, peer, b, sizeof(b));
	{
		struct ws_frame f;

		ok = ws_frame_parse(b, n, &f) == WS_DONE && f.masked &&
		    f.opcode == WS_PONG && f.fin && f.paylen == 5 &&
		    n == f.hdrlen + 5;
		if (ok) {
			ws_mask(b + f.hdrlen, 5, f.mask, 0);
			ok = memcmp(b + f.hdrlen, "Hello", 5) == 0;
		}
		CHECK(ok, "client: ping answered with a masked pong, same "
		    "payload");
	}
	/* The existing server's 1500-byte pong. */
	memset(b, 0, sizeof(b));
	n = ws_frame_header(b, WS_PONG, 1, 1500, NULL);
	feed(peer, b, n + 1500);
	feed_hex(peer, "8200");
	CHECK(read_msg(&wa, &m, &len) == 1 && len == 0,
	    "client: 1500-byte pong accepted; empty message delivered");
	pair_close(&wa, peer);

	/* Server: ping → unmasked pong with the same payload. */
	pair_open(&wa, &peer, 0, 1);
	feed_hex(peer, "898537fa213d7f9f4d5158");
	CHECK(ws_read(&wa, &m, &len) == 0, "server: ping is not a message");
	n = drain(&wa, peer, b, sizeof(b));
	CHECK_BYTES("\x8a\x05Hello", 7, b, n, "server: pong 8a 05 Hello");
	/* Close: answered once, echoing the code; ws_close adds nothing. */
	feed_hex(peer, "8882 00000000 03e8");
	CHECK(read_msg(&wa, &m, &len) == -1, "server: close frame ends");
	ws_close(&wa);
	n = drain(&wa, peer, b, sizeof(b));
	CHECK_BYTES("\x88\x02\x03\xe8", 4, b, n,
	    "server: close answered with 1000, once");
	CHECK(ws_read(&wa, &m, &len) == -1, "server: closed stays closed");
	pair_close(&wa, peer);

	/* Our close: status 1000, then no more frames. */
	pair_open(&wa, &peer, 0, 1);
	ws_close(&wa);
	n = drain(&wa, peer, b, sizeof(b));
	CHECK_BYTES("\x88\x02\x03\xe8", 4, b, n, "ws_close sends close 1000");
	CHECK(ws_send(&wa, WS_BINARY, "x", 1) == -1,
	    "no frame after ws_close");
	pair_close(&wa, peer);

	/* Sizes: 65536 bytes in one frame and in fragments; one more
	 * byte is refused, before its payload arrives. */
	pair_open(&wa, &peer, 1, 1);
	for (i = 0; i < WS_MSG_MAX; i++)
		big[i + 10] = (unsigned char)(i * 7);
	{
		static unsigned char frame[WS_MSG_MAX + 14];

		n = ws_frame_header(frame, WS_BINARY, 1, WS_MSG_MAX, NULL);
		memcpy(frame + n, big + 10, WS_MSG_MAX);
		feed(peer, frame, n + WS_MSG_MAX);
		/* In two reads now and then: the frame straddles them. */
		r = read_msg(&wa, &m, &len);
		CHECK(r == 1 && len == WS_MSG_MAX &&
		    memcmp(m, big + 10, WS_MSG_MAX) == 0,
		    "client: 65536-byte frame accepted");
		/* Fragments: 3 x 21845 + 1. */
		ok = 1;
		for (i = 0; i < 4; i++) {
			size_t part = i < 3 ? 21845 : 1;

			n = ws_frame_header(frame, i ? WS_CONT : WS_BINARY,
			    i == 3, part, NULL);
			memcpy(frame + n, big + 10 + i * 21845, part);
			feed(peer, frame, n + part);
			r = read_msg(&wa, &m, &len);
			if (i < 3)
				ok &= r == 0;
		}
		CHECK(ok && r == 1 && len == WS_MSG_MAX && m >= wa.in &&
		    memcmp(m, big + 10, WS_MSG_MAX) == 0,
		    "client: 65536 bytes in 4 fragments reassembled");
		n = ws_frame_header(frame, WS_BINARY, 0, WS_MSG_MAX, NULL);
		feed(peer, frame, n + WS_MSG_MAX);
		n = ws_frame_header(frame, WS_CONT, 1, 1, NULL);
		feed(peer, frame, n + 1);
		CHECK(read_msg(&wa, &m, &len) == -1,
		    "client: fragments over 65536 bytes refused");
	}
	pair_close(&wa, peer);
	pair_open(&wa, &peer, 1, 1);
	n = ws_frame_header(b, WS_BINARY, 1, WS_MSG_MAX + 1, NULL);
	feed(peer, b, n);
	CHECK(ws_read(&wa, &m, &len) == -1,
	    "client: 65537-byte frame refused from its header");
	pair_close(&wa, peer);

	/* A frame cut anywhere: "nothing yet" until its last byte. */
	pair_open(&wa, &peer, 0, 1);
	n = unhex("82fe0100 01020304", b, sizeof(b));
	for (i = 0; i < 256; i++)
		b[n + i] = (unsigned char)i ^ (unsigned char)(1 + (i & 3));
	n += 256;
	ok = 1;
	for (i = 0; i + 1 < n; i++) {
		feed(peer, b + i, 1);
		ok &= ws_read(&wa, &m, &len) == 0;
	}
	feed(peer, b + n - 1, 1);
	r = ws_read(&wa, &m, &len);
	for (i = 0; i < 256 && r == 1 && len == 256; i++)
		ok &= m[i] == (unsigned char)i;
	CHECK(ok && r == 1 && len == 256,
	    "server: truncated frame is 0 at every cut, then delivered");
	pair_close(&wa, peer);

	/* Malformed: each ends the connection at once. */
	{
		static const struct {
			const char *hex, *why;
		} bad[] = {
			{ "c20548656c6c6f", "reserved bit set" },
			{ "830548656c6c6f", "unknown opcode" },
			{ "800548656c6c6f", "continuation without a message" },
			{ "0201 41 8201 42", "data frame inside a fragmented "
			    "message" },
			{ "0901 41", "fragmented ping" },
		};
		char name[96];

		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			pair_open(&wa, &peer, 1, 1);
			feed_hex(peer, bad[i].hex);
			snprintf(name, sizeof(name), "client: %s ends it",
			    bad[i].why);
			CHECK(read_msg(&wa, &m, &len) == -1, name);
			pair_close(&wa, peer);
		}
	}

	/* EOF ends; two buffered frames show in ws_pending. */
	pair_open(&wa, &peer, 1, 1);
	feed_hex(peer, "820141 820142");
	CHECK(ws_read(&wa, &m, &len) == 1 && *m == 'A' &&
	    ws_pending(&wa) == 1, "ws_pending: a second frame is buffered");
	CHECK(ws_read(&wa, &m, &len) == 1 && *m == 'B' &&
	    ws_pending(&wa) == 0, "ws_pending: then none");
	close(peer);
	CHECK(ws_read(&wa, &m, &len) == -1, "EOF ends the connection");
	ws_free(&wa);
}

/* Sending: masking, the caller's buffer, queue-full drops. */
static void test_send(void)
{
	unsigned char b[2048], p[1400];
	size_t n;
	struct ws_frame f;
	int peer, i, r;

	memset(p, 0x5a, sizeof(p));
	pair_open(&wa, &peer, 1, 1);
	CHECK(ws_send(&wa, WS_BINARY, p, sizeof(p)) == 0, "client send");
	n = drain(&wa, peer, b, sizeof(b));
	r = ws_frame_parse(b, n, &f) == WS_DONE && f.masked && f.fin &&
	    f.opcode == WS_BINARY && f.paylen == 1400 && n == f.hdrlen + 1400;
	for (i = 0; i < 1400 && r; i++)
		r = p[i] == 0x5a && (b[f.hdrlen + i] ^ f.mask[i & 3]) == 0x5a;
	CHECK(r, "client frame masked in the queue, caller's buffer intact");
	CHECK((ws_events(&wa) & (POLLIN | POLLOUT)) == POLLIN,
	    "ws_events: POLLIN, no POLLOUT with the queue empty");
	ws_send(&wa, WS_BINARY, p, 10);
	CHECK((ws_events(&wa) & (POLLIN | POLLOUT)) == (POLLIN | POLLOUT),
	    "ws_events: POLLOUT with bytes queued");

	/* Fill the queue: the peer reads nothing.  A small socket buffer
	 * makes the flush below a partial one. */
	wa.outpos = wa.outlen = 0;
	i = 4096;
	setsockopt(wa.s.fd, SOL_SOCKET, SO_SNDBUF, &i, sizeof(i));
	fake_now_ms = 777;
	for (i = 0; i < 1000; i++)
		if (ws_send(&wa, WS_BINARY, p, sizeof(p)) < 0)
			break;
	CHECK(i < 1000 && wa.dropped == 1 && wa.full_since_ms == 777 &&
	    wa.outsize == WS_OUT_CLIENT_MAX &&
	    ws_room(&wa) < sizeof(p) + 8, "queue full: at the client's "
	    "maximum, dropped counted, full_since_ms set");
	ws_send(&wa, WS_BINARY, p, sizeof(p));
	CHECK(wa.dropped == 2 && wa.full_since_ms == 777,
	    "queue full: full_since_ms kept");
	fake_now_ms = 0;
	/* The peer reads some, the socket takes more; the queue compacts
	 * to take more. */
	while (read(peer, b, sizeof(b)) > 0)
		;
	ws_flush(&wa);
	CHECK(wa.full_since_ms == 0 && wa.outpos > 0 &&
	    wa.outpos < wa.outlen, "partial flush clears full_since_ms");
	CHECK(ws_send(&wa, WS_BINARY, p, sizeof(p)) == 0,
	    "queue compacts to make room");
	pair_close(&wa, peer);

	/* Server frames are unmasked; a server not yet open sends none. */
	pair_open(&wa, &peer, 0, 0);
	CHECK(ws_send(&wa, WS_BINARY, "x", 1) == -1 && wa.dropped == 0,
	    "server: no frame before the upgrade");
	wa.state = WS_OPEN;
	ws_send(&wa, WS_BINARY, "xyz", 3);
	n = drain(&wa, peer, b, sizeof(b));
	CHECK_BYTES("\x82\x03xyz", 5, b, n, "server frame unmasked");
	pair_close(&wa, peer);
}

/*
 * ws_send_bulk: bulk stops WS_OUT_RESERVE short of the queue's maximum,
 * where small frames still go; a queue with no more than that takes no
 * bulk at all.  The peer reads nothing until the end.
 */
static void test_send_bulk(void)
{
	unsigned char b[4096], p[1400];
	struct ws_frame f;
	size_t n, small = 0, at;
	int peer, i, got = 0;

	memset(p, 0x42, sizeof(p));
	pair_open(&wa, &peer, 0, 1);
	i = 4096;
	setsockopt(wa.s.fd, SOL_SOCKET, SO_SNDBUF, &i, sizeof(i));
	for (i = 0; i < 1000; i++)
		if (ws_send_bulk(&wa, WS_BINARY, p, sizeof(p)) < 0)
			break;
	CHECK(i < 1000 && wa.dropped == 1 && ws_room(&wa) >= WS_OUT_RESERVE &&
	    ws_room(&wa) < WS_OUT_RESERVE + sizeof(p) + 4,
	    "bulk: full WS_OUT_RESERVE short of the maximum, drop counted");
	while (ws_send(&wa, WS_BINARY, p, 84) == 0)
		small++;
	CHECK(small >= WS_OUT_RESERVE / 86 && wa.dropped == 2,
	    "small frames fill the reserve, then are dropped too");
	CHECK(ws_send_bulk(&wa, WS_BINARY, p, sizeof(p)) < 0 &&
	    wa.dropped == 3, "bulk: still full");
	/* Everything queued arrives, in order, once the peer reads. */
	for (i = 0; i < 64; i++) {
		ws_flush(&wa);
		while (read(peer, b, sizeof(b)) > 0)
			;
	}
	CHECK(ws_queued(&wa) == 0, "the queue drains");
	CHECK(ws_send_bulk(&wa, WS_BINARY, p, sizeof(p)) == 0,
	    "bulk: queued again once drained");
	n = drain(&wa, peer, b, sizeof(b));
	at = 0;
	while (ws_frame_parse(b + at, n - at, &f) == WS_DONE &&
	    at + f.hdrlen + f.paylen <= n) {
		got += f.paylen == sizeof(p) && b[at + f.hdrlen] == 0x42;
		at += f.hdrlen + (size_t)f.paylen;
	}
	CHECK(got == 1 && at == n, "bulk frame intact");
	pair_close(&wa, peer);

	/* A queue held to its base size (ws_limit) takes no bulk. */
	pair_open(&wa, &peer, 0, 1);
	ws_limit(&wa, 1500, WS_OUT_RESERVE);
	CHECK(ws_send_bulk(&wa, WS_BINARY, p, 600) < 0 &&
	    ws_send(&wa, WS_BINARY, p, 600) == 0,
	    "a queue of WS_OUT_RESERVE bytes: no bulk, small frames yes");
	pair_close(&wa, peer);
}

/* Move bytes both ways until neither side has more (bounded). */
static void pump(struct ws *c, struct ws *s)
{
	int i;

	for (i = 0; i < 8; i++) {
		ws_flush(c);
		ws_flush(s);
	}
}

/* A client ws and a server ws over one socketpair. */
static void test_end_to_end(void)
{
	unsigned char *m, b[4096];
	const char *hello = "\x04vmac-before-upgrade";
	size_t len, n;
	int sv[2], got = 0, i, r;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		CHECK(0, "socketpair");
		return;
	}
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	ws_init_client(&wa, sv[0], NULL, "10.77.0.1:8080", "/net");
	ws_init_server(&wb, sv[1], NULL);
	{
		const char *head = "GET /net HTTP/1.1\r\nConnection: Upgrade\r\n"
		    "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
		    "Sec-WebSocket-Key: ", *tail =
		    "\r\nHost: 10.77.0.1:8080\r\n\r\n";
		char accept[29];

		n = strlen(head);
		memcpy(b, wa.out + n, 24);
		b[24] = '\0';
		ws_accept_key((char *)b, accept);
		CHECK(memcmp(wa.out, head, n) == 0 &&
		    memcmp(wa.out + n + 24, tail, strlen(tail)) == 0 &&
		    wa.outlen == n + 24 + strlen(tail) &&
		    strcmp(accept, wa.accept) == 0,
		    "client queues the request; expects the accept of its key");
	}
	/* The client's first message goes right behind the request. */
	CHECK(ws_send(&wa, WS_BINARY, hello, strlen(hello)) == 0,
	    "client queues a frame before the upgrade");
	pump(&wa, &wb);
	r = read_msg(&wb, &m, &len);
	CHECK(wb.state == WS_OPEN && r == 1 && len == strlen(hello) &&
	    memcmp(m, hello, len) == 0,
	    "server: upgrade, then the frame behind the request");
	ws_send(&wb, WS_BINARY, "from server", 11);
	pump(&wa, &wb);
	r = read_msg(&wa, &m, &len);
	CHECK(wa.state == WS_OPEN && r == 1 && len == 11 &&
	    memcmp(m, "from server", 11) == 0,
	    "client: 101 checked, then the first frame");
	/* Many messages both ways, pings included. */
	for (i = 0; i < 200; i++) {
		memset(b, i, 1000);
		ws_send(&wa, i % 50 ? WS_BINARY : WS_PING, b, 1000);
		ws_send(&wb, WS_BINARY, b, 100 + i);
		pump(&wa, &wb);
		while ((r = ws_read(&wb, &m, &len)) == 1)
			got += len == 1000 && m[999] == (unsigned char)i;
		while ((r = ws_read(&wa, &m, &len)) == 1)
			got += len == 100 + (size_t)i &&
			    m[len - 1] == (unsigned char)i;
	}
	CHECK(got == 196 + 200 && wa.dropped == 0 && wb.dropped == 0,
	    "messages both ways, pings answered");
	ws_close(&wa);
	CHECK(read_msg(&wb, &m, &len) == -1, "server: client's close ends");
	ws_close(&wb);
	ws_free(&wb);
	n = 0;
	for (i = 0; i < 2 && (r = (int)read(sv[0], b, sizeof(b))) > 0; i++)
		n += (size_t)r;
	CHECK_BYTES("\x88\x02\x03\xe8", 4, b, n,
	    "server answered the close with 1000");
	CHECK(ws_read(&wa, &m, &len) == -1, "client: closing, reads end");
	ws_free(&wa);

	/* Refusals the client logs. */
	{
		static const struct {
			const char *answer, *why;
		} bad[] = {
			{ "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
			    "client: HTTP 404 refused" },
			{ "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "
			    "websocket\r\nConnection: Upgrade\r\n\r\n",
			    "client: 101 without accept refused" },
			{ "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "
			    "websocket\r\nConnection: Upgrade\r\n"
			    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
			    "\r\n\r\n", "client: 101 with a wrong accept "
			    "refused" },
			{ "garbage\r\n\r\n", "client: no status line" },
		};
		int peer;

		for (i = 0; i < (int)(sizeof(bad) / sizeof(bad[0])); i++) {
			pair_open(&wa, &peer, 1, 0);
			feed(peer, bad[i].answer, strlen(bad[i].answer));
			CHECK(read_msg(&wa, &m, &len) == -1, bad[i].why);
			pair_close(&wa, peer);
		}
		/* Header names in any case; the answer in pieces. */
		pair_open(&wa, &peer, 1, 0);
		n = (size_t)snprintf((char *)b, sizeof(b), "HTTP/1.1 101 OK\r\n"
		    "sec-websocket-ACCEPT:%s\r\n\r\n", wa.accept);
		memcpy(b + n, "\x82\x02hi", 4);
		for (i = 0; i < (int)n + 3; i++) {
			feed(peer, b + i, 1);
			if (ws_read(&wa, &m, &len) != 0)
				break;
		}
		feed(peer, b + n + 3, 1);
		r = ws_read(&wa, &m, &len);
		CHECK(i == (int)n + 3 && r == 1 && len == 2 &&
		    memcmp(m, "hi", 2) == 0 && wa.state == WS_OPEN,
		    "client: answer byte by byte, any case, frame after it");
		pair_close(&wa, peer);
	}
}

/* The server answers what is not a WebSocket request with a 400. */
static void test_bad_request(void)
{
	static const char bad400[] = "HTTP/1.1 400 Bad Request\r\n"
	    "Content-Length: 0\r\nConnection: close\r\n\r\n";
	static unsigned char big[WS_HTTP_MAX + 100];
	unsigned char *m, b[512];
	size_t len, n;
	int peer;
	const char *req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

	pair_open(&wa, &peer, 0, 0);
	feed(peer, req, strlen(req));
	CHECK(read_msg(&wa, &m, &len) == -1, "server: plain GET ends");
	n = drain(&wa, peer, b, sizeof(b));
	CHECK_BYTES(bad400, strlen(bad400), b, n, "server: plain GET gets 400");
	pair_close(&wa, peer);

	pair_open(&wa, &peer, 0, 0);
	memset(big, 'a', sizeof(big));
	feed(peer, big, sizeof(big));
	CHECK(read_msg(&wa, &m, &len) == -1, "server: endless head ends");
	n = drain(&wa, peer, b, sizeof(b));
	CHECK_BYTES(bad400, strlen(bad400), b, n,
	    "server: endless head gets 400");
	pair_close(&wa, peer);

	/* The captured request gets the captured accept. */
	pair_open(&wa, &peer, 0, 0);
	feed(peer, vec_request, strlen(vec_request));
	CHECK(ws_read(&wa, &m, &len) == 0 && wa.state == WS_OPEN,
	    "server: the captured request upgrades");
	n = drain(&wa, peer, b, sizeof(b));
	{
		const char *want = "HTTP/1.1 101 Switching Protocols\r\n"
		    "Connection: Upgrade\r\nUpgrade: websocket\r\n"
		    "Sec-WebSocket-Accept: tWjW7vMzFvYwiLdJVT9Hg00rWX4=\r\n\r\n";

		CHECK_BYTES(want, strlen(want), b, n,
		    "server: 101 with the captured accept");
	}
	pair_close(&wa, peer);
}

/* A masked frame from a client, as the server reads it. */
static size_t client_frame(unsigned char *b, int opcode, int fin,
    const unsigned char *p, size_t n)
{
	static const unsigned char mask[4] = { 1, 2, 3, 4 };
	size_t hl = ws_frame_header(b, opcode, fin, n, mask);

	memcpy(b + hl, p, n);
	ws_mask(b + hl, n, mask, 0);
	return hl + n;
}

/*
 * Buffers: nothing before the first byte, the base sizes for small
 * frames (and no reallocation however many pass), growth for a large
 * frame or a full queue up to the limits, back to the base once drained
 * and quiet for WS_TRIM_MS, nothing after ws_free.
 */
static void test_buffers(void)
{
	static unsigned char big[WS_MSG_MAX + 32], frame[WS_BUF_MAX];
	unsigned char *m, *in, *out, p[1400];
	size_t len, n, i, sent;
	int peer, ok;

	pair_open(&wa, &peer, 0, 0);
	CHECK(wa.in == NULL && wa.out == NULL && wa.insize == 0 &&
	    wa.outsize == 0, "server: no buffer before the first byte");
	feed(peer, vec_request, strlen(vec_request));
	CHECK(ws_read(&wa, &m, &len) == 0 && wa.state == WS_OPEN &&
	    wa.insize == WS_IN_BASE && wa.outsize == WS_OUT_BASE,
	    "server: upgraded with base-size buffers");
	drain(&wa, peer, frame, sizeof(frame));
	in = wa.in;
	out = wa.out;
	ok = 1;
	memset(p, 0x33, sizeof(p));
	for (i = 0; i < 2000 && ok; i++) {
		n = client_frame(frame, WS_BINARY, 1, p, 64 + i % 1000);
		feed(peer, frame, n);
		ok = read_msg(&wa, &m, &len) == 1 && len == 64 + i % 1000 &&
		    ws_send(&wa, WS_BINARY, m, len) == 0;
		drain(&wa, peer, frame, sizeof(frame));
	}
	CHECK(ok && wa.in == in && wa.out == out && wa.insize == WS_IN_BASE &&
	    wa.outsize == WS_OUT_BASE, "server: 2000 small frames each way, "
	    "no reallocation");

	/* A 30000-byte frame grows the input buffer to hold it. */
	fake_now_ms = 5000;
	for (i = 0; i < WS_MSG_MAX; i++)
		big[i] = (unsigned char)(i * 13);
	n = client_frame(frame, WS_BINARY, 1, big, 30000);
	feed(peer, frame, n);
	CHECK(read_msg(&wa, &m, &len) == 1 && len == 30000 &&
	    memcmp(m, big, 30000) == 0 && wa.insize >= 30008 &&
	    wa.insize < 30008 + 4096, "server: input grows for a large frame");
	CHECK(ws_read(&wa, &m, &len) == 0 && wa.insize > WS_IN_BASE,
	    "server: kept while a large frame was recent");
	fake_now_ms = 5000 + WS_TRIM_MS - 1;
	ws_trim(&wa);
	CHECK(wa.insize > WS_IN_BASE, "server: kept until WS_TRIM_MS");
	fake_now_ms = 5000 + WS_TRIM_MS;
	ws_trim(&wa);
	CHECK(wa.insize == WS_IN_BASE,
	    "server: ws_trim: back to the base once quiet for WS_TRIM_MS");

	/* In place: 65536 bytes in fragments with pings between them. */
	ok = 1;
	for (i = 0, sent = 0; i < 4; i++) {
		size_t part = i < 3 ? 20000 : WS_MSG_MAX - 60000;

		n = client_frame(frame, i ? WS_CONT : WS_BINARY, i == 3,
		    big + sent, part);
		n += client_frame(frame + n, WS_PING, 1, (const unsigned char *)
		    "ping", 4);
		feed(peer, frame, n);
		sent += part;
	}
	for (i = 0; i < 8 && (ok = ws_read(&wa, &m, &len)) == 0; i++)
		;
	CHECK(ok == 1 && len == WS_MSG_MAX && memcmp(m, big, len) == 0 &&
	    wa.insize <= WS_BUF_MAX, "server: 64 KiB in fragments and pings, "
	    "reassembled within WS_BUF_MAX");
	drain(&wa, peer, frame, sizeof(frame));
	/* The fragmented message leaves too little room for a big ping. */
	n = client_frame(frame, WS_BINARY, 0, big, WS_MSG_MAX);
	feed(peer, frame, n);
	CHECK(read_msg(&wa, &m, &len) == 0 && wa.msglen == WS_MSG_MAX,
	    "server: a 64 KiB fragment is held");
	n = client_frame(frame, WS_PING, 1, big, WS_BUF_MAX - WS_MSG_MAX);
	feed(peer, frame, n);
	CHECK(read_msg(&wa, &m, &len) == -1,
	    "server: a ping with no room behind the message ends it");
	fake_now_ms = 0;
	pair_close(&wa, peer);
	CHECK(wa.in == NULL && wa.out == NULL, "ws_free frees the buffers");

	/* A hostile peer that never reads: the queue grows to its maximum
	 * and no further, frames are dropped, and it all goes back to the
	 * base once the peer reads again. */
	pair_open(&wa, &peer, 0, 1);
	i = 4096;
	setsockopt(wa.s.fd, SOL_SOCKET, SO_SNDBUF, &i, sizeof(i));
	fake_now_ms = 9000;
	ok = 1;
	for (i = 0, sent = 0; i < 100000; i++) {
		sent += ws_send(&wa, WS_BINARY, p, sizeof(p)) == 0;
		ok &= wa.outsize <= WS_OUT_SERVER_MAX && ws_flush(&wa) == 0;
	}
	CHECK(ok && wa.outsize == WS_OUT_SERVER_MAX && sent < 1000 &&
	    wa.dropped == 100000 - sent && wa.full_since_ms == 9000,
	    "server: a peer that never reads: the queue stops at "
	    "WS_OUT_SERVER_MAX, the rest dropped");
	for (i = 0; i < 1000 && ws_queued(&wa) > 0; i++) {
		while (read(peer, frame, sizeof(frame)) > 0)
			;
		ws_flush(&wa);
	}
	CHECK(ws_queued(&wa) == 0 && wa.outsize == WS_OUT_SERVER_MAX,
	    "server: drained, kept while recent");
	fake_now_ms = 9000 + WS_TRIM_MS;
	ws_flush(&wa);
	CHECK(wa.outsize == WS_OUT_BASE, "server: queue back to its base");
	fake_now_ms = 0;
	pair_close(&wa, peer);

	/* ws_limit (a server's connection before AUTH): messages up to the
	 * limit, in fragments too, within the base-size buffers; one byte
	 * more finishes the connection; pongs past the queue's limit are
	 * dropped. */
	pair_open(&wa, &peer, 0, 1);
	ws_limit(&wa, 1500, WS_OUT_BASE);
	n = client_frame(frame, WS_BINARY, 0, big, 1000);
	n += client_frame(frame + n, WS_CONT, 1, big + 1000, 500);
	feed(peer, frame, n);
	CHECK(read_msg(&wa, &m, &len) == 1 && len == 1500 &&
	    memcmp(m, big, len) == 0 && wa.insize == WS_IN_BASE,
	    "ws_limit: a 1500-byte message in two fragments, base buffer");
	for (i = 0, n = 0; i < 4; i++)
		n += client_frame(frame + n, WS_PING, 1, big, 1500);
	feed(peer, frame, n);
	CHECK(read_msg(&wa, &m, &len) == 0 && wa.outsize == WS_OUT_BASE &&
	    ws_queued(&wa) <= WS_OUT_BASE && wa.dropped >= 1,
	    "ws_limit: pongs stop at the queue's limit");
	n = client_frame(frame, WS_BINARY, 0, big, 1000);
	n += client_frame(frame + n, WS_CONT, 1, big + 1000, 501);
	feed(peer, frame, n);
	CHECK(read_msg(&wa, &m, &len) == -1 && wa.insize == WS_IN_BASE,
	    "ws_limit: a 1501-byte message finishes the connection");
	pair_close(&wa, peer);
	pair_open(&wa, &peer, 0, 1);
	ws_limit(&wa, 1500, WS_OUT_BASE);
	feed(peer, frame, client_frame(frame, WS_PING, 1, big, 1501));
	CHECK(read_msg(&wa, &m, &len) == -1 && wa.insize <= WS_IN_BASE,
	    "ws_limit: a 1501-byte ping finishes the connection");
	pair_close(&wa, peer);
	pair_open(&wa, &peer, 0, 1);
	ws_limit(&wa, 1500, WS_OUT_BASE);
	ws_limit(&wa, WS_MSG_MAX + 1, WS_OUT_SERVER_MAX);
	feed(peer, frame, client_frame(frame, WS_BINARY, 1, big, WS_MSG_MAX));
	CHECK(read_msg(&wa, &m, &len) == 1 && len == WS_MSG_MAX &&
	    wa.msgmax == WS_MSG_MAX && wa.outmax == WS_OUT_SERVER_MAX,
	    "ws_limit: raised again (never past WS_MSG_MAX)");
	pair_close(&wa, peer);

	/* A client reads with a full-size buffer from the start. */
	pair_open(&wa, &peer, 1, 1);
	feed_hex(peer, "820141");
	CHECK(read_msg(&wa, &m, &len) == 1 && wa.insize == WS_BUF_MAX &&
	    wa.outmax == WS_OUT_CLIENT_MAX, "client: full-size input buffer");
	pair_close(&wa, peer);
}

/* Masks drawn from a pool (ws.c mask_new): across several refills every
 * frame still unmasks right and the masks do not repeat. */
static void test_masks(void)
{
	static uint32_t masks[600];
	unsigned char b[64], p[16];
	struct ws_frame f;
	size_t n, i, j, same = 0;
	int peer, ok = 1;

	pair_open(&wa, &peer, 1, 1);
	for (i = 0; i < 600 && ok; i++) {
		memset(p, (int)i, sizeof(p));
		ok = ws_send(&wa, WS_BINARY, p, sizeof(p)) == 0 &&
		    (n = drain(&wa, peer, b, sizeof(b))) > 0 &&
		    ws_frame_parse(b, n, &f) == WS_DONE && f.masked &&
		    f.paylen == sizeof(p) && n == f.hdrlen + sizeof(p);
		for (j = 0; j < sizeof(p) && ok; j++)
			ok = (b[f.hdrlen + j] ^ f.mask[j & 3]) ==
			    (unsigned char)i;
		masks[i] = get32(f.mask);
	}
	for (i = 0; i < 600 && ok; i++)
		for (j = i + 1; j < 600; j++)
			same += masks[i] == masks[j];
	CHECK(ok && same <= 1, "600 client frames: each unmasks right, "
	    "masks from the pool do not repeat");
	pair_close(&wa, peer);
	/* The word-at-a-time mask against the byte rule, unaligned, every
	 * length up to 40 and every offset. */
	for (n = 0, ok = 1; n <= 40; n++) {
		static const unsigned char mk[4] = { 0x12, 0x34, 0xab, 0xcd };
		unsigned char q[48];
		size_t off;

		for (off = 0; off < 4; off++) {
			for (i = 0; i < n; i++)
				b[i + 1] = q[i + 1] = (unsigned char)(i * 7 + n);
			ws_mask(b + 1, n, mk, off);
			for (i = 0; i < n; i++)
				ok &= b[i + 1] == (q[i + 1] ^ mk[(off + i) & 3]);
		}
	}
	CHECK(ok, "ws_mask: 8 bytes at a time, same bytes as one at a time");
}

void test_ws(void)
{
	test_accept_key();
	test_request();
	test_frame_header();
	test_receive();
	test_send();
	test_send_bulk();
	test_masks();
	test_end_to_end();
	test_bad_request();
	test_buffers();
}
