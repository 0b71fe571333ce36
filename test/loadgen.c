/*
 * loadgen.c: many Candy sessions from one process, to measure what a
 * server costs per session (make bench-scale) and to wear it down
 * (make soak).  Plain ws:// or wss:// through tls.c's stream; the
 * WebSocket side is done by hand here (fixed frames, a zero mask) so
 * that the generator costs little per packet next to the server.
 *
 *   loadgen -w URI -p PASSWORD -n N [-P PID] [-s SECS] [-j PARALLEL]
 *       [-L LEN]
 *       scale: open N sessions, PARALLEL handshakes at a time, each
 *       authenticated with VMAC and AUTH for its own address (10.100.0.1
 *       + i); sessions 2i and 2i+1 are a pair.  "live" are the sessions
 *       that received a packet from their pair; then every session sends
 *       LEN-byte packets (default 64, at most 1500) to its pair for SECS
 *       seconds, as fast as the server takes them.
 *   loadgen -w URI -p PASSWORD -c CYCLES [-o OFFSET] [-t AGE] [-r RATE]
 *       [-P PID] [-j PARALLEL]
 *       cycles: CYCLES times connect, authenticate, ping (the pong says
 *       the AUTH was taken), close; PARALLEL at a time.  Cycle k uses
 *       address 10.100.0.1 + (OFFSET + k) % 65530 (a second run needs
 *       another OFFSET: the same address in the same second is a replay).
 *       -t: timestamps AGE seconds old (at most 300): the server keeps each
 *       accepted hash until its timestamp leaves the window, and refuses
 *       new ones when that memory is full, so old timestamps let a soak
 *       run faster than the memory's size per 300 s; -r: at most RATE
 *       cycles started a second.
 *   loadgen -w ws://HOST:PORT -i IDLE -l SLOW -s SECS
 *       junk: IDLE connections that send nothing and SLOW ones that send
 *       an endless request head a byte a second, for SECS seconds; says
 *       how many the server closed, and when.
 *
 * PARALLEL (default 16) is the server's limit of connections from one
 * source that have not authenticated yet: more would be evicted.
 *
 * With -P, the server's resident memory (VmRSS), CPU time and open
 * descriptors are read from /proc/PID (same PID namespace).  Output is
 * "name value" lines for the scripts (test/bench.sh, test/soak.sh);
 * progress and failures go to stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "candy.h"

#define ADDR_BASE	0x0a640001u	/* 10.100.0.1: session i gets + i */
#define ADDR_SPAN	65530u		/* hosts of 10.100.0.0/16 used */
#define PKT_LEN		64		/* IPv4 packet of the bulk phase (-L) */
#define PKT_MAX_LEN	1500
#define BATCH		32		/* frames written at once */
#define FRAME_MAX	(8 + 1 + PKT_MAX_LEN)	/* header, mask, FORWARD */
#define IN_SIZE		8192
#define OUT_SIZE	(1024 + FRAME_MAX)	/* request, VMAC, AUTH, ping */
#define HANDSHAKE_MS	15000		/* connect to authenticated */

enum { L_FREE, L_CONNECTING, L_UPGRADE, L_UP, L_DEAD };

struct lsess {
	struct stream s;
	int state;
	uint32_t addr;
	int64_t started;
	size_t inlen;
	size_t skip;		/* payload bytes still to discard */
	size_t outpos, outlen;
	unsigned char *batch;	/* BATCH bulk frames to the pair */
	size_t boff;		/* bytes of the batch written */
	unsigned long rx, pongs;
	unsigned char in[IN_SIZE];	/* last: sess_start clears the rest */
	unsigned char out[OUT_SIZE];
};

/* ws://HOST:PORT/PATH or wss://...; HOST a name or an IPv4 address. */
struct lg_uri {
	int tls;
	char host[300], port[8], path[256], hostport[300];
};

static struct lsess *sess;
static size_t nsess;
static struct tls_ctx *tlsctx;
static struct sockaddr_storage srv;
static socklen_t srvlen;
static struct lg_uri uri;
static const char *password = "";
static int server_pid;
static unsigned long sent_pkts;
static int64_t ts_age;		/* -t */
static size_t pkt_len = PKT_LEN;	/* -L */
static size_t frame_len;	/* one FORWARD frame of pkt_len */

/* ---- The server, from /proc. ---- */

static long proc_rss_kb(void)
{
	char path[64], line[128];
	long kb = -1;
	FILE *f;

	if (server_pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/status", server_pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* User + system CPU seconds. */
static double proc_cpu_s(void)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	FILE *f;
	size_t n;

	if (server_pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/stat", server_pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* Fields 14 and 15, counted after the ")" that ends the name. */
	if ((p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
	    &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_fds(void)
{
	char path[64];
	struct dirent *d;
	long n = 0;
	DIR *dir;

	if (server_pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/fd", server_pid);
	if ((dir = opendir(path)) == NULL)
		return -1;
	while ((d = readdir(dir)) != NULL)
		n += d->d_name[0] != '.';
	closedir(dir);
	return n;
}

/* ---- Frames: client to server, masked with a zero mask. ---- */

static size_t frame_put(unsigned char *b, int opcode, const void *p,
    size_t n)
{
	static const unsigned char zero[4];
	size_t hl = ws_frame_header(b, opcode, 1, n, zero);

	memcpy(b + hl, p, n);
	return hl + n;
}

static void out_put(struct lsess *l, int opcode, const void *p, size_t n)
{
	if (l->outlen + n + 14 <= OUT_SIZE)
		l->outlen += frame_put(l->out + l->outlen, opcode, p, n);
}

/* The FORWARD frames of the bulk phase: l's address to its pair's. */
static int batch_build(struct lsess *l, uint32_t to)
{
	unsigned char m[1 + PKT_MAX_LEN], *ip = m + 1;
	uint32_t sum = 0;
	size_t i;

	if ((l->batch = malloc(BATCH * frame_len)) == NULL)
		return -1;
	memset(m, 0, sizeof(m));
	m[0] = MSG_FORWARD;
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)pkt_len);
	ip[8] = 64;
	ip[9] = 17;
	put32(ip + 12, l->addr);
	put32(ip + 16, to);
	for (i = 0; i < 20; i += 2)
		sum += get16(ip + i);
	sum = (sum >> 16) + (sum & 0xffff);
	put16(ip + 10, (uint16_t)~(sum + (sum >> 16)));
	for (i = 0; i < BATCH; i++)
		frame_put(l->batch + i * frame_len, WS_BINARY, m, 1 + pkt_len);
	return 0;
}

/* ---- Sessions. ---- */

static void sess_kill(struct lsess *l)
{
	stream_close(&l->s);
	l->s.fd = -1;
	l->s.tls = NULL;
	l->state = L_DEAD;
}

/* Start a connection: the request, VMAC and AUTH queued behind it. */
static int sess_start(struct lsess *l, uint32_t addr, unsigned long salt)
{
	unsigned char m[AUTH_LEN + VMAC_LEN + PAD_MAX];
	char req[512], vmac[17];
	size_t n;
	int fd;

	free(l->batch);
	memset(l, 0, offsetof(struct lsess, in));
	l->s.fd = -1;
	l->addr = addr;
	l->started = now_ms();
	if ((fd = socket(srv.ss_family, SOCK_STREAM, 0)) < 0) {
		fprintf(stderr, "socket: %s\n", strerror(errno));
		l->state = L_DEAD;
		return -1;
	}
	fcntl(fd, F_SETFL, O_NONBLOCK);
	n = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &n, sizeof(int));
	if (connect(fd, (struct sockaddr *)&srv, srvlen) < 0 &&
	    errno != EINPROGRESS) {
		fprintf(stderr, "connect: %s\n", strerror(errno));
		close(fd);
		l->state = L_DEAD;
		return -1;
	}
	l->s.fd = fd;
	if (tlsctx != NULL &&
	    (l->s.tls = tls_client_new(tlsctx, uri.host)) == NULL) {
		sess_kill(l);
		return -1;
	}
	n = ws_request_build(req, sizeof(req), uri.hostport, uri.path,
	    "dGhlIHNhbXBsZSBub25jZQ==");
	memcpy(l->out, req, n);
	l->outlen = n;
	snprintf(vmac, sizeof(vmac), "%08lx%08x", salt, addr);
	out_put(l, WS_BINARY, m, msg_vmac_build(m, password, vmac,
	    wall_s() - ts_age, 0));
	out_put(l, WS_BINARY, m, msg_auth_build(m, password, addr,
	    wall_s() - ts_age, 0));
	l->state = L_CONNECTING;
	return 0;
}

/* Frames from the server: count FORWARDs and pongs, skip the rest. */
static int sess_parse(struct lsess *l)
{
	unsigned char *p = l->in, *end = l->in + l->inlen;
	struct ws_frame f;

	for (;;) {
		size_t avail = (size_t)(end - p);

		if (l->skip > 0) {
			size_t k = l->skip < avail ? l->skip : avail;

			p += k;
			l->skip -= k;
			if (l->skip > 0)
				break;
			continue;
		}
		if (ws_frame_parse(p, avail, &f) != WS_DONE)
			break;
		if (f.paylen > 0 && avail < f.hdrlen + 1)
			break;
		if (f.opcode == WS_BINARY && f.paylen > 0 &&
		    p[f.hdrlen] == MSG_FORWARD)
			l->rx++;
		else if (f.opcode == WS_PONG)
			l->pongs++;
		else if (f.opcode == WS_CLOSE)
			return -1;
		p += f.hdrlen;
		l->skip = (size_t)f.paylen;
	}
	l->inlen = (size_t)(end - p);
	memmove(l->in, p, l->inlen);
	return 0;
}

/* The 101 answer, then frames. */
static int sess_upgrade(struct lsess *l)
{
	unsigned char *e;
	size_t n;

	for (e = l->in; e + 4 <= l->in + l->inlen; e++)
		if (memcmp(e, "\r\n\r\n", 4) == 0)
			break;
	if (e + 4 > l->in + l->inlen)
		return l->inlen == IN_SIZE ? -1 : 0;
	if (l->inlen < 12 || memcmp(l->in + 8, " 101", 4) != 0) {
		fprintf(stderr, "no 101: %.40s\n", l->in);
		return -1;
	}
	n = (size_t)(e + 4 - l->in);
	l->inlen -= n;
	memmove(l->in, l->in + n, l->inlen);
	l->state = L_UP;
	return 1;
}

/* After poll: connect done, write what is queued, read.  -1 dead. */
static int sess_io(struct lsess *l, short rev)
{
	ssize_t n;
	int e = 0;
	socklen_t el = sizeof(e);

	if (l->state == L_CONNECTING) {
		if (!(rev & (POLLOUT | POLLERR | POLLHUP)))
			return 0;
		if (getsockopt(l->s.fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0 ||
		    e != 0) {
			fprintf(stderr, "connect: %s\n", strerror(e));
			return -1;
		}
		l->state = L_UPGRADE;
	}
	if (stream_pump(&l->s) < 0)
		return -1;
	while (l->outpos < l->outlen) {
		n = stream_write(&l->s, l->out + l->outpos,
		    l->outlen - l->outpos);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		l->outpos += (size_t)n;
	}
	if (l->outpos == l->outlen)
		l->outpos = l->outlen = 0;
	while (l->batch != NULL && l->outlen == 0) {
		n = stream_write(&l->s, l->batch + l->boff,
		    BATCH * frame_len - l->boff);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		l->boff += (size_t)n;
		if (l->boff < BATCH * frame_len)
			break;
		l->boff = 0;
		sent_pkts += BATCH;
		break;	/* one batch a pass: every session gets its turn */
	}
	for (;;) {
		n = stream_read(&l->s, l->in + l->inlen, IN_SIZE - l->inlen);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		l->inlen += (size_t)n;
		if (l->state == L_UPGRADE && sess_upgrade(l) < 0)
			return -1;
		if (l->state == L_UP && sess_parse(l) < 0)
			return -1;
	}
	return 0;
}

static short sess_events(const struct lsess *l)
{
	if (l->state == L_CONNECTING)
		return POLLOUT;
	return stream_events(&l->s, l->outlen > l->outpos ||
	    l->batch != NULL);
}

/* One poll pass over every session that is not free or dead. */
static void pass(struct pollfd *pfd, int timeout)
{
	size_t i, n = 0;

	for (i = 0; i < nsess; i++) {
		struct lsess *l = &sess[i];

		pfd[i].fd = l->state == L_FREE || l->state == L_DEAD ? -1 :
		    l->s.fd;
		pfd[i].events = pfd[i].fd < 0 ? 0 : sess_events(l);
		pfd[i].revents = 0;
		if (pfd[i].fd >= 0 && stream_pending(&l->s))
			timeout = 0;
	}
	if (poll(pfd, nsess, timeout) < 0 && errno != EINTR)
		fatalx("poll: %s", strerror(errno));
	for (i = 0; i < nsess; i++) {
		struct lsess *l = &sess[i];

		if (pfd[i].fd < 0)
			continue;
		/* TLS asks for POLLOUT only for records: bytes still to
		 * hand to the engine need a turn anyway. */
		if ((pfd[i].revents || stream_pending(&l->s) ||
		    l->batch != NULL || (l->outlen > l->outpos &&
		    l->state != L_CONNECTING)) &&
		    sess_io(l, pfd[i].revents) < 0) {
			sess_kill(l);
			n++;
		}
	}
	(void)n;
}

static size_t count_state(int state)
{
	size_t i, n = 0;

	for (i = 0; i < nsess; i++)
		n += sess[i].state == state;
	return n;
}

/* ---- scale ---- */

static void ping_all(void)
{
	size_t i;

	for (i = 0; i < nsess; i++)
		if (sess[i].state == L_UP)
			out_put(&sess[i], WS_PING, "lg", 2);
}

/* One FORWARD to the pair, from every session that has not heard its
 * pair yet. */
static void probe_all(void)
{
	size_t i;

	for (i = 0; i < nsess; i++) {
		struct lsess *l = &sess[i];

		if (l->state == L_UP && (i ^ 1) < nsess &&
		    sess[i ^ 1].rx == 0 && batch_build(l, sess[i ^ 1].addr)
		    == 0) {
			if (l->outlen + frame_len <= OUT_SIZE) {
				memcpy(l->out + l->outlen, l->batch,
				    frame_len);
				l->outlen += frame_len;
			}
			free(l->batch);
			l->batch = NULL;
		}
	}
}

static int run_scale(size_t n, int parallel, int secs)
{
	struct pollfd *pfd = calloc(n, sizeof(*pfd));
	size_t i, next = 0, live = 0;
	long rss0, rss_idle, rss_peak, rss;
	double cpu0, cpu1, cpu_bulk0, cpu_bulk1;
	int64_t t0, t, deadline;
	unsigned long rx0, rx1;

	if (pfd == NULL)
		fatalx("out of memory");
	nsess = n;
	rss0 = proc_rss_kb();
	cpu0 = proc_cpu_s();
	t0 = now_ms();
	/* Connect everyone, at most parallel handshakes at a time. */
	deadline = t0 + 120000;
	while (now_ms() < deadline) {
		size_t busy = count_state(L_CONNECTING) +
		    count_state(L_UPGRADE);

		while (next < n && busy < (size_t)parallel) {
			sess_start(&sess[next], ADDR_BASE + (uint32_t)next,
			    (unsigned long)next);
			next++;
			busy++;
		}
		pass(pfd, 50);
		for (i = 0; i < next; i++)
			if ((sess[i].state == L_CONNECTING ||
			    sess[i].state == L_UPGRADE) &&
			    now_ms() - sess[i].started > HANDSHAKE_MS)
				sess_kill(&sess[i]);
		if (next == n && busy == 0)
			break;
	}
	/* Every session's queue is written by now; a ping each, and its
	 * pong says the server took the AUTH before it. */
	ping_all();
	for (t = now_ms(); now_ms() - t < 20000;) {
		size_t up = 0;

		pass(pfd, 50);
		for (i = 0; i < n; i++)
			up += sess[i].state == L_UP && sess[i].pongs > 0;
		if (up == count_state(L_UP))
			break;
	}
	t = now_ms();
	cpu1 = proc_cpu_s();
	printf("connect_seconds %.2f\n", (double)(t - t0) / 1000);
	printf("connect_server_cpu_seconds %.2f\n", cpu1 - cpu0);
	/* Live: a packet from the pair arrived. */
	for (t = now_ms(); now_ms() - t < 10000;) {
		probe_all();
		for (i = 0; i < 10; i++)
			pass(pfd, 50);
		for (live = 0, i = 0; i < n; i++)
			live += sess[i].state == L_UP && sess[i].rx > 0;
		if (live == count_state(L_UP) - (count_state(L_UP) & 1))
			break;
	}
	printf("sessions_asked %zu\n", n);
	printf("sessions_up %zu\n", count_state(L_UP));
	printf("sessions_live %zu\n", live);
	fflush(stdout);
	/* Idle: let the server settle, then read its memory. */
	for (t = now_ms(); now_ms() - t < 2000;)
		pass(pfd, 100);
	rss_idle = proc_rss_kb();
	printf("server_rss_start_kb %ld\n", rss0);
	printf("server_rss_idle_kb %ld\n", rss_idle);
	if (live > 0 && rss0 > 0)
		printf("server_idle_kb_per_session %.1f\n",
		    (double)(rss_idle - rss0) / (double)live);
	fflush(stdout);
	/* Bulk: every live session sends to its pair. */
	for (i = 0; i < n; i++)
		if (sess[i].state == L_UP && (i ^ 1) < n &&
		    sess[i ^ 1].state == L_UP)
			batch_build(&sess[i], sess[i ^ 1].addr);
	for (rx0 = 0, i = 0; i < n; i++)
		rx0 += sess[i].rx;
	cpu_bulk0 = proc_cpu_s();
	rss_peak = rss_idle;
	sent_pkts = 0;
	t0 = now_ms();
	for (t = t0; now_ms() - t0 < (int64_t)secs * 1000;) {
		pass(pfd, 10);
		if (now_ms() - t >= 250) {
			t = now_ms();
			if ((rss = proc_rss_kb()) > rss_peak)
				rss_peak = rss;
		}
	}
	t = now_ms();
	cpu_bulk1 = proc_cpu_s();
	for (rx1 = 0, i = 0; i < n; i++)
		rx1 += sess[i].rx;
	printf("bulk_seconds %.2f\n", (double)(t - t0) / 1000);
	printf("bulk_sent_pkts %lu\n", sent_pkts);
	printf("bulk_forwarded_pkts %lu\n", rx1 - rx0);
	printf("forwarded_pkts_per_s %.0f\n",
	    (double)(rx1 - rx0) * 1000 / (double)(t - t0));
	printf("bulk_server_cpu_seconds %.2f\n", cpu_bulk1 - cpu_bulk0);
	printf("server_rss_bulk_peak_kb %ld\n", rss_peak);
	if (live > 0 && rss0 > 0)
		printf("server_bulk_kb_per_session %.1f\n",
		    (double)(rss_peak - rss0) / (double)live);
	printf("sessions_up_after %zu\n", count_state(L_UP));
	fflush(stdout);
	for (i = 0; i < n; i++)
		if (sess[i].state != L_FREE && sess[i].state != L_DEAD)
			sess_kill(&sess[i]);
	free(pfd);
	return 0;
}

/* ---- junk ---- */

static int run_junk(size_t idle, size_t slow, int secs)
{
	static const char head[] = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ";
	size_t n = idle + slow, i, open = 0, sent = 0;
	struct pollfd *pfd = calloc(n, sizeof(*pfd));
	int64_t *closed = calloc(n, sizeof(*closed)), t0 = now_ms(), tick = t0;
	int64_t first = -1, last = -1;
	unsigned char b[512];

	if (pfd == NULL || closed == NULL)
		fatalx("out of memory");
	for (i = 0; i < n; i++) {
		int fd = socket(srv.ss_family, SOCK_STREAM, 0);

		pfd[i].fd = -1;
		closed[i] = -1;
		if (fd < 0)
			fatalx("socket: %s", strerror(errno));
		fcntl(fd, F_SETFL, O_NONBLOCK);
		if (connect(fd, (struct sockaddr *)&srv, srvlen) < 0 &&
		    errno != EINPROGRESS) {
			close(fd);
			closed[i] = 0;
			continue;
		}
		pfd[i].fd = fd;
		pfd[i].events = POLLIN;
	}
	printf("junk_idle %zu\njunk_slow %zu\n", idle, slow);
	fflush(stdout);
	while (now_ms() - t0 < (int64_t)secs * 1000) {
		if (poll(pfd, n, 200) < 0 && errno != EINTR)
			fatalx("poll: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			ssize_t r;

			if (pfd[i].fd < 0 || pfd[i].revents == 0)
				continue;
			/* A 400, a close: read to the end. */
			while ((r = recv(pfd[i].fd, b, sizeof(b), 0)) > 0)
				;
			if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
				closed[i] = now_ms() - t0;
			}
		}
		if (now_ms() - tick < 1000)
			continue;
		tick = now_ms();
		/* The next byte of every slow head. */
		for (i = idle; i < n; i++)
			if (pfd[i].fd >= 0)
				(void)send(pfd[i].fd, sent < sizeof(head) - 1 ?
				    head + sent : "a", 1, MSG_NOSIGNAL);
		sent++;
	}
	for (i = 0; i < n; i++) {
		if (pfd[i].fd >= 0) {
			open++;
			close(pfd[i].fd);
		} else {
			if (first < 0 || closed[i] < first)
				first = closed[i];
			if (closed[i] > last)
				last = closed[i];
		}
	}
	printf("junk_open_at_end %zu\n", open);
	printf("junk_first_closed_s %.1f\n", (double)first / 1000);
	printf("junk_last_closed_s %.1f\n", (double)last / 1000);
	free(pfd);
	free(closed);
	return 0;
}

/* ---- cycles ---- */

static int run_cycles(unsigned long cycles, unsigned long offset,
    unsigned long rate, int parallel)
{
	struct pollfd *pfd = calloc((size_t)parallel, sizeof(*pfd));
	unsigned long started = 0, done = 0, failed = 0;
	long rss0, fds0;
	int64_t t0 = now_ms(), last = t0;
	size_t i;

	if (pfd == NULL)
		fatalx("out of memory");
	nsess = (size_t)parallel;
	rss0 = proc_rss_kb();
	fds0 = proc_fds();
	while (done + failed < cycles) {
		for (i = 0; i < nsess; i++) {
			struct lsess *l = &sess[i];

			if (l->state == L_UP && l->pongs > 0) {
				/* Authenticated: say goodbye. */
				done++;
				sess_kill(l);
				l->state = L_FREE;
			} else if (l->state == L_DEAD) {
				failed++;
				l->state = L_FREE;
			} else if (l->state != L_FREE &&
			    now_ms() - l->started > HANDSHAKE_MS) {
				failed++;
				sess_kill(l);
				l->state = L_FREE;
			}
			if (l->state == L_FREE && started < cycles &&
			    (rate == 0 || started < rate *
			    (unsigned long)(now_ms() - t0) / 1000 + 1)) {
				uint32_t a = ADDR_BASE + (uint32_t)((offset +
				    started) % ADDR_SPAN);

				if (sess_start(l, a, offset + started) == 0) {
					out_put(l, WS_PING, "lg", 2);
					started++;
				}
			}
		}
		pass(pfd, 50);
		if (now_ms() - last >= 5000) {
			last = now_ms();
			fprintf(stderr, "cycles: %lu done, %lu failed\n", done,
			    failed);
		}
	}
	printf("cycles %lu\n", cycles);
	printf("cycles_ok %lu\n", done);
	printf("cycles_failed %lu\n", failed);
	printf("cycles_seconds %.1f\n", (double)(now_ms() - t0) / 1000);
	printf("server_rss_start_kb %ld\n", rss0);
	printf("server_fds_start %ld\n", fds0);
	for (i = 0; i < nsess; i++)
		if (sess[i].state != L_FREE && sess[i].state != L_DEAD)
			sess_kill(&sess[i]);
	/* Let the server see the last closes. */
	sleep(2);
	printf("server_rss_end_kb %ld\n", proc_rss_kb());
	printf("server_fds_end %ld\n", proc_fds());
	free(pfd);
	return failed > 0;
}

static int uri_split(const char *s, struct lg_uri *u)
{
	const char *p, *colon, *slash;

	memset(u, 0, sizeof(*u));
	if (strncmp(s, "wss://", 6) == 0)
		u->tls = 1, p = s + 6;
	else if (strncmp(s, "ws://", 5) == 0)
		p = s + 5;
	else
		return -1;
	slash = strchr(p, '/');
	snprintf(u->path, sizeof(u->path), "%s", slash ? slash : "/");
	if (slash == NULL)
		slash = p + strlen(p);
	snprintf(u->hostport, sizeof(u->hostport), "%.*s", (int)(slash - p),
	    p);
	colon = memchr(p, ':', (size_t)(slash - p));
	if (colon == NULL) {
		snprintf(u->host, sizeof(u->host), "%s", u->hostport);
		snprintf(u->port, sizeof(u->port), "%s", u->tls ? "443" : "80");
	} else {
		snprintf(u->host, sizeof(u->host), "%.*s", (int)(colon - p), p);
		snprintf(u->port, sizeof(u->port), "%.*s",
		    (int)(slash - colon - 1), colon + 1);
	}
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: loadgen -w URI -p PASSWORD (-n N | -c CYCLES "
	    "| -i IDLE -l SLOW) [-o OFFSET] [-t AGE] [-r RATE] [-P PID] "
	    "[-s SECS] [-L LEN] "
	    "[-j PARALLEL]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct addrinfo hints, *ai;
	struct rlimit rl;
	unsigned long cycles = 0, offset = 0, rate = 0;
	size_t n = 0, idle = 0, slow = 0;
	int c, secs = 10, parallel = 16;
	const char *ws = NULL;
	char err[256];

	while ((c = getopt(argc, argv, "w:p:n:c:o:i:l:t:r:P:s:j:L:")) != -1) {
		switch (c) {
		case 'w': ws = optarg; break;
		case 'p': password = optarg; break;
		case 'n': n = strtoul(optarg, NULL, 10); break;
		case 'c': cycles = strtoul(optarg, NULL, 10); break;
		case 'o': offset = strtoul(optarg, NULL, 10); break;
		case 't': ts_age = atoi(optarg); break;
		case 'r': rate = strtoul(optarg, NULL, 10); break;
		case 'i': idle = strtoul(optarg, NULL, 10); break;
		case 'l': slow = strtoul(optarg, NULL, 10); break;
		case 'P': server_pid = atoi(optarg); break;
		case 's': secs = atoi(optarg); break;
		case 'j': parallel = atoi(optarg); break;
		case 'L': pkt_len = strtoul(optarg, NULL, 10); break;
		default: usage();
		}
	}
	if (ws == NULL || (n > 0) + (cycles > 0) + (idle + slow > 0) != 1 ||
	    parallel <= 0 || pkt_len < 28 || pkt_len > PKT_MAX_LEN ||
	    uri_split(ws, &uri) < 0)
		usage();
	frame_len = (1 + pkt_len <= 125 ? 6 : 8) + 1 + pkt_len;
	log_init(0, 0);
	rand_init();
	/* One descriptor a session. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (uri.tls && (tlsctx = tls_client_ctx_load(NULL, NULL, 1, err,
	    sizeof(err))) == NULL)
		fatalx("%s", err);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(uri.host, uri.port, &hints, &ai) != 0)
		fatalx("cannot resolve %s", uri.host);
	memcpy(&srv, ai->ai_addr, ai->ai_addrlen);
	srvlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	if (n > ADDR_SPAN)
		fatalx("at most %u sessions", ADDR_SPAN);
	if ((sess = calloc(n ? n : (size_t)parallel, sizeof(*sess))) == NULL)
		fatalx("out of memory");
	if (idle + slow > 0)
		return run_junk(idle, slow, secs);
	return n ? run_scale(n, parallel, secs) :
	    run_cycles(cycles, offset, rate, parallel);
}
