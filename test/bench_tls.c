/*
 * bench_tls.c: tls.c's numbers for make bench (test/bench-tls.sh runs
 * it): the memory a server connection holds, handshakes per second, and
 * bulk throughput, a client and a server in this process over a
 * socketpair (so both ends' work is on one core).  Prints one result a
 * line, "name|value|unit".
 *
 *   test/bench_tls EC-CERT EC-KEY RSA-CERT RSA-KEY
 * (self-signed certificates; the client pins nothing and checks nothing:
 * --insecure, so the handshake costs are the key exchange and signature.)
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bearssl.h>

#include "candy.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct pair {
	struct stream c, s;
};

static int pair_open(struct pair *p, struct tls_ctx *sctx,
    struct tls_ctx *cctx)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return -1;
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	p->s.fd = sv[0];
	p->c.fd = sv[1];
	p->s.tls = tls_server_new(sctx);
	p->c.tls = tls_client_new(cctx, "candy.test");
	return p->s.tls && p->c.tls ? 0 : -1;
}

/* Pump both ends until both are ready: 0 ok, -1 failed. */
static int pair_handshake(struct pair *p)
{
	int i;

	for (i = 0; i < 100; i++) {
		if (stream_ready(&p->c) && stream_ready(&p->s))
			return 0;
		if (stream_pump(&p->c) < 0 || stream_pump(&p->s) < 0)
			return -1;
	}
	return -1;
}

static void pair_close(struct pair *p)
{
	stream_close(&p->c);
	stream_close(&p->s);
}

/* Full handshakes in about a second: per second, or -1 on failure. */
static double bench_handshakes(struct tls_ctx *sctx, struct tls_ctx *cctx)
{
	double t0 = now_s(), t;
	struct pair p;
	int n = 0;

	do {
		if (pair_open(&p, sctx, cctx) < 0 || pair_handshake(&p) < 0) {
			pair_close(&p);
			return -1;
		}
		pair_close(&p);
		n++;
	} while ((t = now_s() - t0) < 1.0);
	return n / t;
}

/* Client to server, total bytes: MiB/s, or -1 on failure. */
static double bench_bulk(struct tls_ctx *sctx, struct tls_ctx *cctx,
    size_t total)
{
	static unsigned char buf[65536];
	size_t sent = 0, got = 0;
	struct pair p;
	double t0;
	ssize_t n;

	memset(buf, 0x5a, sizeof(buf));
	if (pair_open(&p, sctx, cctx) < 0 || pair_handshake(&p) < 0) {
		pair_close(&p);
		return -1;
	}
	t0 = now_s();
	while (got < total) {
		if (sent < total) {
			if ((n = stream_write(&p.c, buf, sizeof(buf))) < 0)
				break;
			sent += (size_t)n;
		}
		if (stream_pump(&p.c) < 0 || stream_pump(&p.s) < 0)
			break;
		while ((n = stream_read(&p.s, buf, sizeof(buf))) > 0)
			got += (size_t)n;
		if (n < 0)
			break;
	}
	pair_close(&p);
	return got < total ? -1 : (double)total / (1 << 20) /
	    (now_s() - t0);
}

static struct tls_ctx *server_load(const char *cert, const char *key)
{
	struct tls_ctx *ctx;
	char err[512];

	if ((ctx = tls_server_ctx_load(cert, key, err, sizeof(err))) == NULL)
		fatalx("%s", err);
	return ctx;
}

/* What BearSSL's set_default_* pick on this CPU (tls.c uses those). */
static void print_impls(void)
{
	printf("tls AES-GCM implementation|%s|\n",
	    br_aes_x86ni_ctr_get_vtable() ? "aes-ni" :
	    br_aes_pwr8_ctr_get_vtable() ? "power8" : "constant-time");
	printf("tls GHASH implementation|%s|\n",
	    br_ghash_pclmul_get() ? "pclmul" :
	    br_ghash_pwr8_get() ? "power8" : "constant-time");
	printf("tls ChaCha20 implementation|%s|\n",
	    br_chacha20_sse2_get() ? "sse2" : "constant-time");
	printf("tls suite preferred|%s|\n",
	    br_aes_x86ni_ctr_get_vtable() || br_aes_pwr8_ctr_get_vtable() ?
	    "AES-128-GCM" : "ChaCha20-Poly1305");
}

int main(int argc, char **argv)
{
	struct tls_ctx *ec, *rsa, *cctx;
	char err[512];

	if (argc != 5) {
		fprintf(stderr, "usage: bench_tls EC-CERT EC-KEY RSA-CERT "
		    "RSA-KEY\n");
		return 1;
	}
	log_init(0, 0);
	rand_init();
	ec = server_load(argv[1], argv[2]);
	rsa = server_load(argv[3], argv[4]);
	if ((cctx = tls_client_ctx_load(NULL, NULL, 1, err,
	    sizeof(err))) == NULL)
		fatalx("%s", err);
	printf("tls bytes per server connection|%zu|bytes (<= 40960)\n",
	    tls_conn_size());
	printf("tls of which the record input buffer|%d|bytes\n",
	    BR_SSL_BUFSIZE_INPUT);
	printf("tls of which the engine|%zu|bytes\n",
	    sizeof(br_ssl_server_context));
	print_impls();
	printf("tls handshakes, EC P-256 server|%.0f|per s (both ends)\n",
	    bench_handshakes(ec, cctx));
	printf("tls handshakes, RSA-2048 server|%.0f|per s (both ends)\n",
	    bench_handshakes(rsa, cctx));
	printf("tls bulk, encrypt+decrypt|%.0f|MiB/s (one core)\n",
	    bench_bulk(ec, cctx, (size_t)256 << 20));
	return 0;
}
