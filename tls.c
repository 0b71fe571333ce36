/*
 * tls.c: everything candy takes from BearSSL: the random generator, and
 * TLS client and server connections behind the stream calls of candy.h.
 *
 * The engine is driven the way BearSSL's tools/sslio.c drives it: read the
 * engine's state bits (SENDREC, RECVREC, SENDAPP, RECVAPP), do one buffer
 * step, look again.  Sockets are non-blocking and nothing here waits: the
 * poll loop in candy.c asks stream_events() what to wait for.
 *
 * Policy: TLS 1.2 only, ECDHE key exchange with AES-GCM or
 * ChaCha20-Poly1305, both directions.  The client verifies the server's
 * chain against the system trust store (or --ca) and the host name; or,
 * with --pin, accepts exactly the server key whose SubjectPublicKeyInfo
 * has that SHA-256 (nothing else is then checked: that is how a
 * self-signed server is used safely); or, with --insecure, anything.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <bearssl.h>

#include "candy.h"

/*
 * One HMAC-DRBG (SHA-256) seeded from the OS serves everything random:
 * padding, vmac, transaction ids, AES-GCM ivs and the TLS engines.
 */
static br_hmac_drbg_context drbg;

void rand_init(void)
{
	br_prng_seeder seeder = br_prng_seeder_system(NULL);

	br_hmac_drbg_init(&drbg, &br_sha256_vtable, NULL, 0);
	if (seeder == NULL || !seeder(&drbg.vtable))
		fatalx("cannot seed the random generator from the OS");
}

void rand_bytes(void *buf, size_t n)
{
	br_hmac_drbg_generate(&drbg, buf, n);
}

uint32_t rand_below(uint32_t n)
{
	uint32_t limit = UINT32_MAX - UINT32_MAX % n, v;
	unsigned char b[4];

	do {
		rand_bytes(b, sizeof(b));
		v = get32(b);
	} while (v >= limit);
	return v % n;
}

/* ---- Limits and error texts ---- */

#define TLS_FILE_MAX	(4 << 20)	/* bytes: largest PEM file we read */
/*
 * A server connection sends full-size records (16 KiB): with 4 KiB ones
 * each record was a send of its own through the whole TCP stack, half of
 * a wss server's CPU under bulk load, and the client read each in two
 * calls.  That costs 12 KiB more a connection (37 KiB in all, candy.8).
 * Incoming records may be full size too, the peer decides.
 */
#define TLS_SERVER_OBUF	BR_SSL_BUFSIZE_OUTPUT
/* A client's read-ahead and gathered records (tls_io): a few records. */
#define TLS_CLIENT_RBUF	(32 * 1024)
#define TLS_CLIENT_WBUF	(32 * 1024)
#define TLS_LEAF_MAX	16384	/* bytes of the server certificate kept */
#define TLS_HOST_MAX	256

/* Our own chain verdict (BearSSL's codes stop at 63; alerts are 256+). */
#define TLS_ERR_PIN	4096

/* System trust stores: the first that exists is used (as Go looks). */
static const char *const tls_ca_paths[] = {
	"/etc/ssl/certs/ca-certificates.crt",	/* Debian, Ubuntu, Alpine */
	"/etc/pki/tls/certs/ca-bundle.crt",	/* Fedora, RHEL */
	"/etc/ssl/ca-bundle.pem",		/* openSUSE */
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", /* CentOS */
	"/etc/ssl/cert.pem",			/* Alpine, OpenBSD, macOS */
	"/usr/local/share/certs/ca-root-nss.crt", /* FreeBSD */
	"/usr/local/etc/ssl/cert.pem",		/* FreeBSD, NetBSD */
};

/*
 * Why a connection failed, from br_ssl_engine_last_error(): certificate
 * verdicts first (the client logs "server certificate refused: ..."),
 * then handshake and record errors, then alerts the peer sent us.
 */
static const struct {
	int code;
	const char *text;
} tls_errors[] = {
	{ BR_ERR_X509_EXPIRED, "expired or not yet valid" },
	{ BR_ERR_X509_NOT_TRUSTED, "unknown issuer" },
	{ BR_ERR_X509_BAD_SERVER_NAME, "name mismatch" },
	{ TLS_ERR_PIN, "key does not match --pin" },
	{ BR_ERR_X509_BAD_SIGNATURE, "bad signature in the chain" },
	{ BR_ERR_X509_NOT_CA, "issuer is not a CA" },
	{ BR_ERR_X509_FORBIDDEN_KEY_USAGE, "key usage forbids TLS" },
	{ BR_ERR_X509_WEAK_PUBLIC_KEY, "public key too weak" },
	{ BR_ERR_X509_CRITICAL_EXTENSION, "unknown critical extension" },
	{ BR_ERR_X509_UNSUPPORTED, "unsupported algorithm" },
	{ BR_ERR_X509_TIME_UNKNOWN, "current time unknown" },
	{ BR_ERR_X509_EMPTY_CHAIN, "no certificate sent" },
	{ BR_ERR_X509_LIMIT_EXCEEDED, "certificate too large" },
	{ BR_ERR_X509_DN_MISMATCH, "broken chain" },
	{ BR_ERR_UNSUPPORTED_VERSION, "not TLS 1.2" },
	{ BR_ERR_BAD_VERSION, "not TLS 1.2" },
	{ BR_ERR_BAD_CIPHER_SUITE, "no common cipher suite" },
	{ BR_ERR_BAD_MAC, "bad record MAC" },
	{ BR_ERR_BAD_SIGNATURE, "bad handshake signature" },
	{ BR_ERR_WRONG_KEY_USAGE, "key not usable for this suite" },
	{ BR_ERR_UNKNOWN_TYPE, "not TLS" },
	{ BR_ERR_BAD_LENGTH, "not TLS" },
	{ BR_ERR_TOO_LARGE, "record too large" },
	{ BR_ERR_UNEXPECTED, "unexpected message" },
	{ BR_ERR_BAD_HANDSHAKE, "malformed handshake" },
	{ BR_ERR_OVERSIZED_ID, "malformed handshake" },
	{ BR_ERR_BAD_FINISHED, "bad Finished message" },
	{ BR_ERR_NO_RANDOM, "no random source" },
	{ BR_ERR_BAD_SNI, "bad server name" },
	{ BR_ERR_RECV_FATAL_ALERT + BR_ALERT_HANDSHAKE_FAILURE,
	    "peer refused the handshake" },
	{ BR_ERR_RECV_FATAL_ALERT + BR_ALERT_BAD_CERTIFICATE,
	    "peer refused our certificate" },
	{ BR_ERR_RECV_FATAL_ALERT + BR_ALERT_UNKNOWN_CA,
	    "peer refused our certificate" },
	{ BR_ERR_RECV_FATAL_ALERT + BR_ALERT_CERTIFICATE_UNKNOWN,
	    "peer refused our certificate" },
	{ BR_ERR_RECV_FATAL_ALERT + BR_ALERT_PROTOCOL_VERSION,
	    "not TLS 1.2" },
	{ BR_ERR_RECV_FATAL_ALERT + BR_ALERT_INSUFFICIENT_SECURITY,
	    "no common cipher suite" },
	{ BR_ERR_RECV_FATAL_ALERT + 112, "peer does not know that name" },
};

static int tls_err_is_cert(int code)
{
	return (code >= BR_ERR_X509_OK && code < 64) || code == TLS_ERR_PIN;
}

/* The text for code; unknown ones are formatted into buf. */
static const char *tls_err_text(int code, char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < sizeof(tls_errors) / sizeof(tls_errors[0]); i++)
		if (tls_errors[i].code == code)
			return tls_errors[i].text;
	if (code >= BR_ERR_RECV_FATAL_ALERT && code < BR_ERR_SEND_FATAL_ALERT)
		snprintf(buf, len, "peer sent alert %d",
		    code - BR_ERR_RECV_FATAL_ALERT);
	else if (tls_err_is_cert(code))
		snprintf(buf, len, "malformed certificate (%d)", code);
	else
		snprintf(buf, len, "TLS error %d", code);
	return buf;
}

/* see candy.h */
void wipe(void *p, size_t n)
{
	volatile unsigned char *v = p;

	while (n-- > 0)
		*v++ = 0;
}

/* ---- Files and PEM (start-up only: these allocate) ---- */

/* A growing byte buffer; oom set when an append failed. */
struct blob {
	unsigned char *p;
	size_t len, cap;
	int oom;
};

static void blob_append(void *ctx, const void *data, size_t len)
{
	struct blob *b = ctx;
	unsigned char *np;
	size_t ncap;

	if (b->oom)
		return;
	if (len > b->cap - b->len) {
		for (ncap = b->cap ? b->cap : 1024; ncap - b->len < len;
		    ncap *= 2)
			;
		if ((np = realloc(b->p, ncap)) == NULL) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, data, len);
	b->len += len;
}

static void blob_free(struct blob *b)
{
	if (b->p != NULL)
		wipe(b->p, b->cap);
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* Read a whole file, NUL-terminated.  0 ok, -1 with err set. */
static int file_read(const char *opt, const char *path, struct blob *b,
    char *err, size_t errlen)
{
	unsigned char chunk[4096];
	ssize_t n;
	int fd;

	memset(b, 0, sizeof(*b));
	if ((fd = open(path, O_RDONLY)) < 0) {
		snprintf(err, errlen, "%s `%s': %s", opt, path,
		    strerror(errno));
		return -1;
	}
	while ((n = read(fd, chunk, sizeof(chunk))) > 0 &&
	    b->len + (size_t)n <= TLS_FILE_MAX)
		blob_append(b, chunk, (size_t)n);
	wipe(chunk, sizeof(chunk));
	if (n < 0)
		snprintf(err, errlen, "%s `%s': %s", opt, path,
		    strerror(errno));
	else if (n > 0)
		snprintf(err, errlen, "%s `%s': larger than %d bytes", opt,
		    path, TLS_FILE_MAX);
	close(fd);
	blob_append(b, "\n", 2);	/* ends a last line; NUL for strstr */
	if (n == 0 && b->oom)
		snprintf(err, errlen, "%s `%s': out of memory", opt, path);
	if (n != 0 || b->oom) {
		blob_free(b);
		return -1;
	}
	return 0;
}

struct pem_obj {
	char name[128];		/* the label: "CERTIFICATE", "PRIVATE KEY" */
	struct blob der;
};

static void pem_free(struct pem_obj *objs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		blob_free(&objs[i].der);
	free(objs);
}

/*
 * RFC 7468: decode every PEM object of text[0..len) into *objs (an array
 * of *n).  Text outside BEGIN/END lines is ignored.  0 ok, -1 malformed
 * or out of memory.
 */
static int pem_decode(const unsigned char *text, size_t len,
    struct pem_obj **objs, size_t *n)
{
	br_pem_decoder_context pc;
	struct pem_obj *cur = NULL, *np;
	int inobj = 0;

	*objs = NULL;
	*n = 0;
	br_pem_decoder_init(&pc);
	while (len > 0) {
		size_t used = br_pem_decoder_push(&pc, text, len);

		text += used;
		len -= used;
		switch (br_pem_decoder_event(&pc)) {
		case BR_PEM_BEGIN_OBJ:
			if ((np = realloc(*objs, (*n + 1) *
			    sizeof(**objs))) == NULL)
				goto bad;
			*objs = np;
			cur = &np[(*n)++];
			memset(cur, 0, sizeof(*cur));
			snprintf(cur->name, sizeof(cur->name), "%s",
			    br_pem_decoder_name(&pc));
			br_pem_decoder_setdest(&pc, blob_append, &cur->der);
			inobj = 1;
			break;
		case BR_PEM_END_OBJ:
			if (cur == NULL || cur->der.oom)
				goto bad;
			inobj = 0;
			break;
		case BR_PEM_ERROR:
			goto bad;
		}
	}
	if (!inobj)
		return 0;
bad:
	pem_free(*objs, *n);
	*objs = NULL;
	*n = 0;
	return -1;
}

/* Read a PEM file.  0 ok (maybe no object), -1 with err set. */
static int pem_file(const char *opt, const char *path, struct pem_obj **objs,
    size_t *n, char *err, size_t errlen)
{
	struct blob b;
	size_t i, j;
	int r;

	if (file_read(opt, path, &b, err, errlen) < 0)
		return -1;
	/* BearSSL's decoder wants "\n" line ends: drop every "\r". */
	for (i = j = 0; i < b.len; i++)
		if (b.p[i] != '\r')
			b.p[j++] = b.p[i];
	b.len = j;
	if ((r = pem_decode(b.p, b.len, objs, n)) < 0)
		snprintf(err, errlen, "%s `%s': malformed PEM", opt, path);
	if (r == 0 && strstr((char *)b.p, "Proc-Type: 4,ENCRYPTED") != NULL) {
		snprintf(err, errlen, "%s `%s': encrypted keys are not "
		    "supported (decrypt it with openssl pkey)", opt, path);
		pem_free(*objs, *n);
		r = -1;
	}
	blob_free(&b);
	return r;
}

/* ---- DER: what BearSSL's decoders do not give us ---- */

struct der {
	const unsigned char *p;	/* the whole element */
	size_t len;		/* its length, header included */
	unsigned tag;
	const unsigned char *c;	/* its contents */
	size_t clen;
};

/*
 * X.690 §8.1: the element at the front of p[0..len), in the forms
 * certificates use (one-byte tags, definite lengths).  0 ok, -1 bad.
 */
static int der_next(const unsigned char *p, size_t len, struct der *e)
{
	size_t i = 2, clen, nb;

	if (len < 2 || (p[0] & 0x1f) == 0x1f)
		return -1;
	clen = p[1];
	if (clen & 0x80) {
		nb = clen & 0x7f;
		if (nb == 0 || nb > 4 || len < 2 + nb)
			return -1;
		for (clen = 0; i < 2 + nb; i++)
			clen = clen << 8 | p[i];
	}
	if (clen > len - i)
		return -1;
	e->p = p;
	e->tag = p[0];
	e->c = p + i;
	e->clen = clen;
	e->len = i + clen;
	return 0;
}

/*
 * RFC 5280 §4.1: the fields of tbsCertificate after the optional version:
 * serial, signature, issuer, validity, subject, subjectPublicKeyInfo, then
 * the optional [1], [2] and [3] (extensions).  Fills f[0..n) and returns
 * n, or -1 when the certificate is malformed.
 */
static int cert_fields(const unsigned char *cert, size_t len, struct der *f,
    int max)
{
	struct der c, tbs, e;
	const unsigned char *p;
	size_t left;
	int n = 0;

	if (der_next(cert, len, &c) < 0 || c.tag != 0x30 ||
	    der_next(c.c, c.clen, &tbs) < 0 || tbs.tag != 0x30)
		return -1;
	for (p = tbs.c, left = tbs.clen; left > 0 && n < max;
	    p += e.len, left -= e.len) {
		if (der_next(p, left, &e) < 0)
			return -1;
		if (e.tag != 0xa0 || p != tbs.c)	/* skip the version */
			f[n++] = e;
	}
	return n >= 6 ? n : -1;
}

/* The certificate's SubjectPublicKeyInfo, the whole element (the pin is
 * its SHA-256).  0 ok, -1 malformed. */
static int cert_spki(const unsigned char *cert, size_t len, struct der *spki)
{
	struct der f[10];

	if (cert_fields(cert, len, f, 10) < 0 || f[5].tag != 0x30)
		return -1;
	*spki = f[5];
	return 0;
}

/*
 * 1 when the certificate's subjectAltName (RFC 5280 §4.2.1.6) lists the
 * address ip[0..iplen) as an iPAddress.  BearSSL matches dNSName only.
 */
static int cert_has_ip(const unsigned char *cert, size_t len,
    const unsigned char *ip, size_t iplen)
{
	static const unsigned char san_oid[] = { 0x55, 0x1d, 0x11 };
	struct der f[10], exts, ext, id, v, names, name;
	const unsigned char *p, *q;
	size_t left, qleft;
	int i, n = cert_fields(cert, len, f, 10);

	for (i = 6; i < n && f[i].tag != 0xa3; i++)
		;
	if (i >= n || der_next(f[i].c, f[i].clen, &exts) < 0)
		return 0;
	for (p = exts.c, left = exts.clen; left > 0;
	    p += ext.len, left -= ext.len) {
		if (der_next(p, left, &ext) < 0 ||
		    der_next(ext.c, ext.clen, &id) < 0)
			return 0;
		if (id.tag != 0x06 || id.clen != sizeof(san_oid) ||
		    memcmp(id.c, san_oid, sizeof(san_oid)) != 0)
			continue;
		/* extnID, critical BOOLEAN DEFAULT FALSE, extnValue */
		q = id.p + id.len;
		qleft = ext.clen - id.len;
		if (der_next(q, qleft, &v) < 0)
			return 0;
		if (v.tag == 0x01 && der_next(q + v.len, qleft - v.len,
		    &v) < 0)
			return 0;
		if (v.tag != 0x04 || der_next(v.c, v.clen, &names) < 0)
			return 0;
		for (q = names.c, qleft = names.clen; qleft > 0;
		    q += name.len, qleft -= name.len) {
			if (der_next(q, qleft, &name) < 0)
				return 0;
			if (name.tag == 0x87 && name.clen == iplen &&
			    memcmp(name.c, ip, iplen) == 0)
				return 1;
		}
	}
	return 0;
}

/* ---- The per-process context ---- */

struct tls_ctx {
	int client;
	/* server: chain (leaf first) and key; the key lives in skey */
	br_x509_certificate *chain;
	size_t chain_len;
	br_skey_decoder_context skey;
	int key_type;			/* BR_KEYTYPE_RSA or _EC */
	unsigned issuer_key_type;	/* of the leaf's signer */
	/* client */
	br_x509_trust_anchor *tas;
	size_t ntas;
	int pinned;
	unsigned char pin[32];
	int insecure;
};

/* see candy.h */
void tls_ctx_free(struct tls_ctx *ctx)
{
	size_t i;

	if (ctx == NULL)
		return;
	for (i = 0; i < ctx->chain_len; i++)
		free(ctx->chain[i].data);
	free(ctx->chain);
	for (i = 0; i < ctx->ntas; i++) {
		br_x509_trust_anchor *ta = &ctx->tas[i];

		free(ta->dn.data);
		if (ta->pkey.key_type == BR_KEYTYPE_RSA) {
			free(ta->pkey.key.rsa.n);
			free(ta->pkey.key.rsa.e);
		} else {
			free(ta->pkey.key.ec.q);
		}
	}
	free(ctx->tas);
	wipe(ctx, sizeof(*ctx));
	free(ctx);
}

/*
 * Suites, best first.  Without AES hardware, ChaCha20 is faster than
 * BearSSL's constant-time AES, so it goes first.
 */
static size_t tls_suites(uint16_t *out)
{
	static const uint16_t aes[] = {
		BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	}, chapol[] = {
		BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	};
	int hw = br_aes_x86ni_ctr_get_vtable() != NULL ||
	    br_aes_pwr8_ctr_get_vtable() != NULL;

	memcpy(out + (hw ? 0 : 2), aes, sizeof(aes));
	memcpy(out + (hw ? 4 : 0), chapol, sizeof(chapol));
	return 6;
}

/*
 * What every engine gets: TLS 1.2 only, our suites, SHA-2 for the PRF
 * and for signatures, ECDHE, and BearSSL's fastest AES-GCM and
 * ChaCha20-Poly1305 for this CPU (the set_default_* functions pick
 * AES-NI/PCLMUL, POWER8 or SSE2 when the CPU has them, constant-time
 * portable code otherwise).
 */
static void tls_engine_setup(br_ssl_engine_context *eng)
{
	static const br_hash_class *const hashes[] = {
		&br_sha224_vtable, &br_sha256_vtable, &br_sha384_vtable,
		&br_sha512_vtable,
	};
	static const int ids[] = {
		br_sha224_ID, br_sha256_ID, br_sha384_ID, br_sha512_ID
	};
	uint16_t suites[6];
	size_t i, n = tls_suites(suites);

	br_ssl_engine_set_versions(eng, BR_TLS12, BR_TLS12);
	br_ssl_engine_set_suites(eng, suites, n);
	for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		br_ssl_engine_set_hash(eng, ids[i], hashes[i]);
	br_ssl_engine_set_prf_sha256(eng, &br_tls12_sha256_prf);
	br_ssl_engine_set_prf_sha384(eng, &br_tls12_sha384_prf);
	br_ssl_engine_set_default_aes_gcm(eng);
	br_ssl_engine_set_default_chapol(eng);
	br_ssl_engine_set_default_ec(eng);
	br_ssl_engine_add_flags(eng, BR_OPT_NO_RENEGOTIATION);
}

/* Seed a new engine from our generator (the one source). */
static void tls_engine_seed(br_ssl_engine_context *eng)
{
	unsigned char seed[32];

	rand_bytes(seed, sizeof(seed));
	br_ssl_engine_inject_entropy(eng, seed, sizeof(seed));
	wipe(seed, sizeof(seed));
}

/* ---- Server context ---- */

static int chain_load(struct tls_ctx *ctx, const char *path, char *err,
    size_t errlen)
{
	struct pem_obj *objs;
	size_t i, n;

	if (pem_file("--cert", path, &objs, &n, err, errlen) < 0)
		return -1;
	if ((ctx->chain = calloc(n + 1, sizeof(*ctx->chain))) == NULL) {
		pem_free(objs, n);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (strcmp(objs[i].name, "CERTIFICATE") != 0 &&
		    strcmp(objs[i].name, "X509 CERTIFICATE") != 0)
			continue;
		ctx->chain[ctx->chain_len].data = objs[i].der.p;
		ctx->chain[ctx->chain_len++].data_len = objs[i].der.len;
		objs[i].der.p = NULL;	/* now the chain's */
	}
	pem_free(objs, n);
	if (ctx->chain_len == 0) {
		snprintf(err, errlen, "--cert `%s': no PEM certificate",
		    path);
		return -1;
	}
	return 0;
}

/* The curves of TLS certificates (RFC 8422 §5.1.1), as BearSSL signs. */
static int key_curve_ok(const struct tls_ctx *ctx)
{
	int curve;

	if (ctx->key_type != BR_KEYTYPE_EC)
		return 0;
	curve = br_skey_decoder_get_ec(&ctx->skey)->curve;
	return curve == BR_EC_secp256r1 || curve == BR_EC_secp384r1 ||
	    curve == BR_EC_secp521r1;
}

static int key_load(struct tls_ctx *ctx, const char *path, char *err,
    size_t errlen)
{
	struct pem_obj *objs;
	size_t i, n, nkeys = 0;
	int bad = 0;

	if (pem_file("--key", path, &objs, &n, err, errlen) < 0)
		return -1;
	for (i = 0; i < n && !bad; i++) {
		const char *name = objs[i].name;
		size_t l = strlen(name);

		if (strcmp(name, "ENCRYPTED PRIVATE KEY") == 0) {
			snprintf(err, errlen, "--key `%s': encrypted keys are "
			    "not supported (decrypt it with openssl pkey)",
			    path);
			bad = 1;
		} else if (l >= 11 && strcmp(name + l - 11,
		    "PRIVATE KEY") == 0) {
			/* PKCS#8, PKCS#1 (RSA) or SEC1 (EC): the decoder
			 * tells them apart by their DER. */
			br_skey_decoder_init(&ctx->skey);
			br_skey_decoder_push(&ctx->skey, objs[i].der.p,
			    objs[i].der.len);
			nkeys++;
		}
	}
	pem_free(objs, n);
	if (bad)
		return -1;
	if (nkeys != 1) {
		snprintf(err, errlen, nkeys ? "--key `%s': more than one "
		    "private key" : "--key `%s': no PEM private key", path);
		return -1;
	}
	ctx->key_type = br_skey_decoder_key_type(&ctx->skey);
	if (br_skey_decoder_last_error(&ctx->skey) != 0 ||
	    (ctx->key_type != BR_KEYTYPE_RSA && !key_curve_ok(ctx))) {
		snprintf(err, errlen, "--key `%s': unsupported key type "
		    "(RSA up to 4096 bits, or EC P-256, P-384 or P-521)", path);
		return -1;
	}
	return 0;
}

/* Big-endian integers equal once leading zeros are dropped. */
static int int_equal(const unsigned char *a, size_t alen,
    const unsigned char *b, size_t blen)
{
	for (; alen > 0 && *a == 0; a++, alen--)
		;
	for (; blen > 0 && *b == 0; b++, blen--)
		;
	return alen == blen && memcmp(a, b, alen) == 0;
}

/* 1 when the private key is the one of the public key pk. */
static int key_matches(const struct tls_ctx *ctx, const br_x509_pkey *pk)
{
	unsigned char buf[BR_EC_KBUF_PUB_MAX_SIZE];
	br_ec_public_key ecpub;
	int ok = 0;

	if (pk->key_type != ctx->key_type)
		return 0;
	if (ctx->key_type == BR_KEYTYPE_RSA) {
		/*
		 * Same modulus, and a signature the certificate's key
		 * verifies (that checks the exponent: BearSSL 0.6's
		 * br_rsa_compute_pubexp returns 0 for good keys).
		 */
		const br_rsa_private_key *sk =
		    br_skey_decoder_get_rsa(&ctx->skey);
		br_rsa_compute_modulus modulus =
		    br_rsa_compute_modulus_get_default();
		size_t nlen = modulus(NULL, sk);
		unsigned char *n = malloc(nlen ? 2 * nlen : 1);
		unsigned char h[32] = { 'c', 'a', 'n', 'd', 'y' }, h2[32];

		ok = n != NULL && nlen != 0 && modulus(n, sk) == nlen &&
		    int_equal(n, nlen, pk->key.rsa.n, pk->key.rsa.nlen) &&
		    br_rsa_pkcs1_sign_get_default()(BR_HASH_OID_SHA256, h,
		    sizeof(h), sk, n + nlen) &&
		    br_rsa_pkcs1_vrfy_get_default()(n + nlen, nlen,
		    BR_HASH_OID_SHA256, sizeof(h2), &pk->key.rsa, h2) &&
		    memcmp(h, h2, sizeof(h)) == 0;
		free(n);
	} else {
		const br_ec_private_key *sk =
		    br_skey_decoder_get_ec(&ctx->skey);
		size_t qlen = br_ec_compute_pub(br_ec_get_default(), &ecpub,
		    buf, sk);

		ok = qlen != 0 && (int)sk->curve == pk->key.ec.curve &&
		    qlen == pk->key.ec.qlen &&
		    memcmp(buf, pk->key.ec.q, qlen) == 0;
	}
	return ok;
}

/* The leaf must carry the key's public half: a chain in the wrong order
 * or the wrong key file is caught here, not at the first client. */
static int key_check(struct tls_ctx *ctx, const char *certfile,
    const char *keyfile, char *err, size_t errlen)
{
	br_x509_decoder_context *dc;
	const br_x509_pkey *pk;
	int ok;

	if ((dc = malloc(sizeof(*dc))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	br_x509_decoder_init(dc, NULL, NULL);
	br_x509_decoder_push(dc, ctx->chain[0].data, ctx->chain[0].data_len);
	if ((pk = br_x509_decoder_get_pkey(dc)) == NULL) {
		snprintf(err, errlen, "--cert `%s': cannot decode the first "
		    "certificate (BearSSL error %d)", certfile,
		    br_x509_decoder_last_error(dc));
		free(dc);
		return -1;
	}
	ctx->issuer_key_type = br_x509_decoder_get_signer_key_type(dc);
	if (ctx->issuer_key_type == 0)
		ctx->issuer_key_type = BR_KEYTYPE_EC;
	ok = key_matches(ctx, pk);
	free(dc);
	if (!ok) {
		snprintf(err, errlen, "--key `%s' does not match the first "
		    "certificate of `%s'", keyfile, certfile);
		return -1;
	}
	return 0;
}

/* see candy.h */
struct tls_ctx *tls_server_ctx_load(const char *certfile, const char *keyfile,
    char *err, size_t errlen)
{
	struct tls_ctx *ctx = calloc(1, sizeof(*ctx));

	if (ctx == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (chain_load(ctx, certfile, err, errlen) < 0 ||
	    key_load(ctx, keyfile, err, errlen) < 0 ||
	    key_check(ctx, certfile, keyfile, err, errlen) < 0) {
		tls_ctx_free(ctx);
		return NULL;
	}
	return ctx;
}

/* ---- Client context ---- */

/* A certificate as a trust anchor (BearSSL's tools/certs.c does the
 * same): its subject DN and key, CA if basicConstraints says so. */
static int ta_from_cert(br_x509_trust_anchor *ta, const unsigned char *der,
    size_t len)
{
	br_x509_decoder_context dc;
	const br_x509_pkey *pk;
	struct blob dn = { NULL, 0, 0, 0 };
	int ok = 0;

	memset(ta, 0, sizeof(*ta));
	br_x509_decoder_init(&dc, blob_append, &dn);
	br_x509_decoder_push(&dc, der, len);
	if ((pk = br_x509_decoder_get_pkey(&dc)) == NULL || dn.oom) {
		blob_free(&dn);
		return -1;
	}
	ta->dn.data = dn.p;
	ta->dn.len = dn.len;
	ta->flags = br_x509_decoder_isCA(&dc) ? BR_X509_TA_CA : 0;
	ta->pkey.key_type = pk->key_type;
	if (pk->key_type == BR_KEYTYPE_RSA) {
		const br_rsa_public_key *k = &pk->key.rsa;

		ta->pkey.key.rsa.n = malloc(k->nlen);
		ta->pkey.key.rsa.e = malloc(k->elen);
		ta->pkey.key.rsa.nlen = k->nlen;
		ta->pkey.key.rsa.elen = k->elen;
		if ((ok = ta->pkey.key.rsa.n && ta->pkey.key.rsa.e)) {
			memcpy(ta->pkey.key.rsa.n, k->n, k->nlen);
			memcpy(ta->pkey.key.rsa.e, k->e, k->elen);
		}
	} else {
		const br_ec_public_key *k = &pk->key.ec;

		ta->pkey.key.ec.curve = k->curve;
		ta->pkey.key.ec.qlen = k->qlen;
		if ((ok = (ta->pkey.key.ec.q = malloc(k->qlen)) != NULL))
			memcpy(ta->pkey.key.ec.q, k->q, k->qlen);
	}
	if (!ok) {
		free(ta->dn.data);
		if (pk->key_type == BR_KEYTYPE_RSA) {
			free(ta->pkey.key.rsa.n);
			free(ta->pkey.key.rsa.e);
		}
		return -1;
	}
	return 0;
}

/* Every certificate of a PEM file as a trust anchor; the ones BearSSL
 * cannot decode (exotic keys in a system bundle) are skipped. */
static int anchors_load(struct tls_ctx *ctx, const char *opt,
    const char *path, char *err, size_t errlen)
{
	struct pem_obj *objs;
	size_t i, n, skipped = 0;

	if (pem_file(opt, path, &objs, &n, err, errlen) < 0)
		return -1;
	if ((ctx->tas = calloc(n + 1, sizeof(*ctx->tas))) == NULL) {
		pem_free(objs, n);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (strcmp(objs[i].name, "CERTIFICATE") != 0 &&
		    strcmp(objs[i].name, "TRUSTED CERTIFICATE") != 0)
			continue;
		if (ta_from_cert(&ctx->tas[ctx->ntas], objs[i].der.p,
		    objs[i].der.len) == 0)
			ctx->ntas++;
		else
			skipped++;
	}
	pem_free(objs, n);
	if (ctx->ntas == 0) {
		snprintf(err, errlen, "%s `%s': no usable certificate", opt,
		    path);
		return -1;
	}
	log_debug("tls: %zu trust anchors from %s (%zu skipped)", ctx->ntas,
	    path, skipped);
	return 0;
}

/* see candy.h */
struct tls_ctx *tls_client_ctx_load(const char *cafile, const char *pin,
    int insecure, char *err, size_t errlen)
{
	struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
	size_t i;
	int r = 0;

	if (ctx == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ctx->client = 1;
	ctx->insecure = insecure;
	if (pin != NULL && tls_pin_parse(pin, ctx->pin) < 0) {
		snprintf(err, errlen, "bad --pin `%s': not the SHA-256 of a "
		    "key in hex or base64", pin);
		r = -1;
	}
	ctx->pinned = pin != NULL;
	if (r == 0 && cafile != NULL) {
		r = anchors_load(ctx, "--ca", cafile, err, errlen);
	} else if (r == 0 && !ctx->pinned && !insecure) {
		/* The system store is needed only when it decides. */
		for (i = 0; i < sizeof(tls_ca_paths) / sizeof(tls_ca_paths[0]);
		    i++)
			if (access(tls_ca_paths[i], R_OK) == 0)
				break;
		if (i < sizeof(tls_ca_paths) / sizeof(tls_ca_paths[0]))
			r = anchors_load(ctx, "trust store", tls_ca_paths[i],
			    err, errlen);
		else {
			snprintf(err, errlen, "no system trust store (such as "
			    "%s): use --ca, --pin or --insecure",
			    tls_ca_paths[0]);
			r = -1;
		}
	}
	if (r < 0) {
		tls_ctx_free(ctx);
		return NULL;
	}
	return ctx;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int b64val(int c)
{
	static const char alphabet[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = c ? strchr(alphabet, c) : NULL;

	return p ? (int)(p - alphabet) : -1;
}

/*
 * see candy.h.  Accepted: 64 hex digits, the same as 32 colon-separated
 * pairs (openssl's fingerprint style), or RFC 4648 base64 of the 32 bytes
 * (43 characters and an optional "="); any of them after curl's
 * "sha256//" prefix.
 */
int tls_pin_parse(const char *s, unsigned char out[32])
{
	size_t len, i;
	uint32_t acc = 0;
	int bits = 0, n = 0, v;

	if (strncmp(s, "sha256//", 8) == 0)
		s += 8;
	len = strlen(s);
	if (len == 64 || len == 95) {
		size_t step = len == 64 ? 2 : 3;

		for (i = 0; i < len; i += step) {
			int hi = hexval(s[i]), lo = hexval(s[i + 1]);

			if (hi < 0 || lo < 0 || (step == 3 && i + 2 < len &&
			    s[i + 2] != ':'))
				return -1;
			out[i / step] = (unsigned char)(hi << 4 | lo);
		}
		return 0;
	}
	if (len == 44 && s[43] == '=')
		len = 43;
	if (len != 43)
		return -1;
	for (i = 0; i < len; i++) {
		if ((v = b64val(s[i])) < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		if ((bits += 6) >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
		}
	}
	/* 43 digits carry 258 bits: the last 2 must be zero (canonical). */
	return n == 32 && (acc & ((1u << bits) - 1)) == 0 ? 0 : -1;
}

/* ---- The client's certificate check ---- */

/*
 * An X.509 engine wrapped around BearSSL's minimal one.  With a CA the
 * minimal engine decides, and we add the iPAddress check it lacks; with
 * --pin the SHA-256 of the leaf's SubjectPublicKeyInfo alone decides; with
 * --insecure anything goes.  The leaf is kept for the pin and the
 * address, and decoded on the side for its key (which the engine needs
 * to check the ServerKeyExchange signature).
 */
struct tls_x509 {
	const br_x509_class *vtable;
	br_x509_minimal_context xm;
	br_x509_decoder_context dec;
	const struct tls_ctx *ctx;
	const char *host;
	unsigned char ip[16];		/* host as an address */
	size_t iplen;			/* 0: host is a name */
	unsigned ncerts;		/* certificates ended so far */
	unsigned char leaf[TLS_LEAF_MAX];
	size_t leaflen;
	int leafbig;			/* did not fit in leaf */
};

static int x509_by_ca(const struct tls_x509 *x)
{
	return !x->ctx->pinned && !x->ctx->insecure;
}

static void x509_start_chain(const br_x509_class **xc, const char *name)
{
	struct tls_x509 *x = (struct tls_x509 *)(void *)xc;

	(void)name;	/* the engine's SNI: NULL for an address */
	x->ncerts = 0;
	x->leaflen = 0;
	x->leafbig = 0;
	br_x509_decoder_init(&x->dec, NULL, NULL);
	if (x509_by_ca(x))
		x->xm.vtable->start_chain(&x->xm.vtable,
		    x->iplen ? NULL : x->host);
}

static void x509_start_cert(const br_x509_class **xc, uint32_t len)
{
	struct tls_x509 *x = (struct tls_x509 *)(void *)xc;

	if (x->ncerts == 0 && len > sizeof(x->leaf))
		x->leafbig = 1;
	if (x509_by_ca(x))
		x->xm.vtable->start_cert(&x->xm.vtable, len);
}

static void x509_append(const br_x509_class **xc, const unsigned char *buf,
    size_t len)
{
	struct tls_x509 *x = (struct tls_x509 *)(void *)xc;

	if (x->ncerts == 0) {
		if (!x509_by_ca(x))
			br_x509_decoder_push(&x->dec, buf, len);
		if (!x->leafbig && len <= sizeof(x->leaf) - x->leaflen) {
			memcpy(x->leaf + x->leaflen, buf, len);
			x->leaflen += len;
		} else {
			x->leafbig = 1;
		}
	}
	if (x509_by_ca(x))
		x->xm.vtable->append(&x->xm.vtable, buf, len);
}

static void x509_end_cert(const br_x509_class **xc)
{
	struct tls_x509 *x = (struct tls_x509 *)(void *)xc;

	if (x509_by_ca(x))
		x->xm.vtable->end_cert(&x->xm.vtable);
	x->ncerts++;
}

/* SHA-256 of the leaf's SubjectPublicKeyInfo against the pin. */
static unsigned x509_pin_check(const struct tls_x509 *x)
{
	unsigned char h[32];
	br_sha256_context sc;
	struct der spki;
	unsigned diff = 0;
	size_t i;

	if (x->leafbig)
		return BR_ERR_X509_LIMIT_EXCEEDED;
	if (cert_spki(x->leaf, x->leaflen, &spki) < 0)
		return BR_ERR_X509_INVALID_VALUE;
	br_sha256_init(&sc);
	br_sha256_update(&sc, spki.p, spki.len);
	br_sha256_out(&sc, h);
	for (i = 0; i < sizeof(h); i++)
		diff |= h[i] ^ x->ctx->pin[i];
	return diff ? TLS_ERR_PIN : 0;
}

static unsigned x509_end_chain(const br_x509_class **xc)
{
	struct tls_x509 *x = (struct tls_x509 *)(void *)xc;
	unsigned r;

	if (x509_by_ca(x)) {
		if ((r = x->xm.vtable->end_chain(&x->xm.vtable)) != 0)
			return r;
		if (x->iplen == 0)
			return 0;
		if (x->leafbig)
			return BR_ERR_X509_LIMIT_EXCEEDED;
		return cert_has_ip(x->leaf, x->leaflen, x->ip, x->iplen) ?
		    0 : BR_ERR_X509_BAD_SERVER_NAME;
	}
	if (x->ncerts == 0)
		return BR_ERR_X509_EMPTY_CHAIN;
	if (br_x509_decoder_get_pkey(&x->dec) == NULL)
		return br_x509_decoder_last_error(&x->dec) ?
		    (unsigned)br_x509_decoder_last_error(&x->dec) :
		    BR_ERR_X509_TRUNCATED;
	return x->ctx->pinned ? x509_pin_check(x) : 0;
}

static const br_x509_pkey *x509_get_pkey(const br_x509_class *const *xc,
    unsigned *usages)
{
	struct tls_x509 *x = (struct tls_x509 *)(void *)xc;

	if (x509_by_ca(x))
		return x->xm.vtable->get_pkey(&x->xm.vtable, usages);
	if (usages != NULL)
		*usages = BR_KEYTYPE_KEYX | BR_KEYTYPE_SIGN;
	return br_x509_decoder_get_pkey(&x->dec);
}

static const br_x509_class tls_x509_vtable = {
	sizeof(struct tls_x509),
	x509_start_chain,
	x509_start_cert,
	x509_append,
	x509_end_cert,
	x509_end_chain,
	x509_get_pkey
};

/* ---- Connections ---- */

struct tls {
	br_ssl_engine_context *eng;
	size_t size;		/* bytes allocated, for the wipe */
	int client;
	int ready;		/* the handshake completed */
	const char *host;	/* client: the server's name, for the log */
	int eof;		/* the peer closed TCP */
	int ioerr;		/* errno of a failed send or recv */
	int reported;		/* the failure was logged */
	const char *why;	/* the failure, NULL while none */
	char whybuf[48];
	const char *version, *suite;	/* once ready, for status */
	/* Client only, NULL on the server (tls_io says why): bytes read
	 * past the engine's record, and records gathered to send. */
	unsigned char *rbuf, *wbuf;
	size_t rpos, rlen, wpos, wlen;
};

struct tls_server {
	struct tls t;		/* first: a struct tls * is one of these */
	br_ssl_server_context sc;
	unsigned char ibuf[BR_SSL_BUFSIZE_INPUT];
	unsigned char obuf[TLS_SERVER_OBUF];
};

/* The client is one connection per process: full-size buffers, so it
 * never asks the server for smaller records. */
struct tls_client {
	struct tls t;
	br_ssl_client_context cc;
	struct tls_x509 x509;
	char host[TLS_HOST_MAX];
	unsigned char ibuf[BR_SSL_BUFSIZE_INPUT];
	unsigned char obuf[BR_SSL_BUFSIZE_OUTPUT];
	unsigned char rbuf[TLS_CLIENT_RBUF];
	unsigned char wbuf[TLS_CLIENT_WBUF];
};

/* see candy.h: a server connection (the kind there are many of). */
size_t tls_conn_size(void)
{
	return sizeof(struct tls_server);
}

/* see candy.h */
struct tls *tls_server_new(struct tls_ctx *ctx)
{
	struct tls_server *ts = calloc(1, sizeof(*ts));
	br_ssl_engine_context *eng;

	if (ts == NULL)
		return NULL;
	ts->t.size = sizeof(*ts);
	ts->t.eng = eng = &ts->sc.eng;
	br_ssl_server_zero(&ts->sc);
	tls_engine_setup(eng);
	br_ssl_engine_add_flags(eng, BR_OPT_ENFORCE_SERVER_PREFERENCES);
	if (ctx->key_type == BR_KEYTYPE_RSA)
		br_ssl_server_set_single_rsa(&ts->sc, ctx->chain,
		    ctx->chain_len, br_skey_decoder_get_rsa(&ctx->skey),
		    BR_KEYTYPE_SIGN, br_rsa_private_get_default(),
		    br_rsa_pkcs1_sign_get_default());
	else
		br_ssl_server_set_single_ec(&ts->sc, ctx->chain,
		    ctx->chain_len, br_skey_decoder_get_ec(&ctx->skey),
		    BR_KEYTYPE_SIGN, ctx->issuer_key_type,
		    br_ec_get_default(), br_ecdsa_sign_asn1_get_default());
	br_ssl_engine_set_buffers_bidi(eng, ts->ibuf, sizeof(ts->ibuf),
	    ts->obuf, sizeof(ts->obuf));
	tls_engine_seed(eng);
	if (!br_ssl_server_reset(&ts->sc)) {
		log_warnx("tls: cannot start a server engine (error %d)",
		    br_ssl_engine_last_error(eng));
		wipe(ts, sizeof(*ts));
		free(ts);
		return NULL;
	}
	return &ts->t;
}

static void tls_x509_init(struct tls_x509 *x, const struct tls_ctx *ctx,
    br_ssl_engine_context *eng, const char *host)
{
	static const br_hash_class *const hashes[] = {
		&br_sha224_vtable, &br_sha256_vtable, &br_sha384_vtable,
		&br_sha512_vtable,
	};
	static const int ids[] = {
		br_sha224_ID, br_sha256_ID, br_sha384_ID, br_sha512_ID
	};
	char a[TLS_HOST_MAX];
	size_t i, n = strlen(host);
	uint32_t ip4;

	x->vtable = &tls_x509_vtable;
	x->ctx = ctx;
	x->host = host;
	/* An address, bare or bracketed (IPv6 in a URI). */
	if (n > 2 && host[0] == '[' && host[n - 1] == ']' && n < sizeof(a)) {
		memcpy(a, host + 1, n - 2);
		a[n - 2] = '\0';
	} else {
		snprintf(a, sizeof(a), "%s", host);
	}
	/* IPv4 by ip_parse: inet_pton's page of the C library would stay
	 * resident for this one call (issue 11). */
	if (ip_parse(a, &ip4) == 0) {
		put32(x->ip, ip4);
		x->iplen = 4;
	} else if (strchr(a, ':') != NULL && inet_pton(AF_INET6, a, x->ip) == 1) {
		x->iplen = 16;
	}
	/* SHA-1 and MD5 signatures on certificates are not accepted. */
	br_x509_minimal_init(&x->xm, &br_sha256_vtable, ctx->tas, ctx->ntas);
	for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		br_x509_minimal_set_hash(&x->xm, ids[i], hashes[i]);
	br_x509_minimal_set_rsa(&x->xm, br_ssl_engine_get_rsavrfy(eng));
	br_x509_minimal_set_ecdsa(&x->xm, br_ssl_engine_get_ec(eng),
	    br_ssl_engine_get_ecdsa(eng));
}

/* see candy.h */
struct tls *tls_client_new(struct tls_ctx *ctx, const char *host)
{
	struct tls_client *tc = calloc(1, sizeof(*tc));
	br_ssl_engine_context *eng;

	if (tc == NULL)
		return NULL;
	tc->t.size = sizeof(*tc);
	tc->t.client = 1;
	tc->t.eng = eng = &tc->cc.eng;
	snprintf(tc->host, sizeof(tc->host), "%s", host);
	tc->t.host = tc->host;
	tc->t.rbuf = tc->rbuf;
	tc->t.wbuf = tc->wbuf;
	br_ssl_client_zero(&tc->cc);
	tls_engine_setup(eng);
	br_ssl_engine_set_default_rsavrfy(eng);
	br_ssl_engine_set_default_ecdsa(eng);
	tls_x509_init(&tc->x509, ctx, eng, tc->host);
	br_ssl_engine_set_x509(eng, &tc->x509.vtable);
	br_ssl_engine_set_buffers_bidi(eng, tc->ibuf, sizeof(tc->ibuf),
	    tc->obuf, sizeof(tc->obuf));
	tls_engine_seed(eng);
	/* RFC 6066 §3: no SNI for an address. */
	if (!br_ssl_client_reset(&tc->cc, tc->x509.iplen ? NULL : tc->host,
	    0)) {
		log_warnx("tls: cannot start a client engine for `%s' "
		    "(error %d)", host, br_ssl_engine_last_error(eng));
		wipe(tc, sizeof(*tc));
		free(tc);
		return NULL;
	}
	if (ctx->insecure && !ctx->pinned)
		log_warnx("tls: --insecure: the certificate of %s is not "
		    "checked", tc->host);
	return &tc->t;
}

/*
 * The connection has failed or ended: note why, once, and say so: the
 * client at warning level, the server only with --debug (anyone on the
 * Internet can make a server connection fail).  A clean end after the
 * handshake is candy.c's to log.
 */
static void tls_report(struct tls *t)
{
	int err = br_ssl_engine_last_error(t->eng);
	unsigned st = br_ssl_engine_current_state(t->eng);
	int clean = 0;

	if (t->why != NULL)
		return;
	if (err != BR_ERR_OK)
		t->why = tls_err_text(err, t->whybuf, sizeof(t->whybuf));
	else if (t->ioerr)
		t->why = strerror(t->ioerr);
	else if (!(st & BR_SSL_CLOSED) && !t->eof)
		return;			/* nothing has gone wrong */
	else {
		t->why = "connection closed";
		clean = t->ready;
	}
	if (t->reported || clean)
		return;
	t->reported = 1;
	if (!t->client)
		log_debug("tls: client connection failed%s: %s",
		    t->ready ? "" : " in the handshake", t->why);
	else if (tls_err_is_cert(err))
		log_warnx("tls: server certificate refused: %s (%s)", t->why,
		    t->host);
	else
		log_warnx("tls: connection to %s failed%s: %s", t->host,
		    t->ready ? "" : " in the handshake", t->why);
}

/* The handshake is over: note the version and suite it chose, for
 * status and --debug. */
static void tls_ready(struct tls *t)
{
	static const struct {
		uint16_t suite;
		const char *name;
	} names[] = {
		{ BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		    "ECDHE-ECDSA-AES128-GCM-SHA256" },
		{ BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		    "ECDHE-RSA-AES128-GCM-SHA256" },
		{ BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		    "ECDHE-ECDSA-AES256-GCM-SHA384" },
		{ BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		    "ECDHE-RSA-AES256-GCM-SHA384" },
		{ BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		    "ECDHE-ECDSA-CHACHA20-POLY1305" },
		{ BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		    "ECDHE-RSA-CHACHA20-POLY1305" },
	};
	br_ssl_session_parameters sp;
	size_t i;

	t->ready = 1;
	br_ssl_engine_get_session_parameters(t->eng, &sp);
	for (i = 0; i < sizeof(names) / sizeof(names[0]) &&
	    names[i].suite != sp.cipher_suite; i++)
		;
	t->suite = i < sizeof(names) / sizeof(names[0]) ? names[i].name : "?";
	/* We offer TLS 1.2 only (tls_engine_setup). */
	t->version = sp.version == BR_TLS12 ? "TLS 1.2" : "TLS ?";
	wipe(&sp, sizeof(sp));
	log_debug("tls: %s%s: %s, %s", t->client ? "connected to " :
	    "client connected", t->client ? t->host : "", t->version,
	    t->suite);
}

static int io_again(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

#ifdef MSG_NOSIGNAL
#define SEND_FLAGS MSG_NOSIGNAL
#else
#define SEND_FLAGS 0
#endif
/*
 * A client's records leave gathered: stream_write passes more while the
 * same write has more to encrypt, and tls_io then moves each finished
 * record into wbuf instead of sending it; the last one sends them all.
 * One send per 16 KiB record was a third of a wss client's CPU (each
 * push goes through the whole TCP stack, and the server's stack too).
 * On the receiving side one readv takes the rest of the engine's record
 * and whatever follows into rbuf, fed to the engine from there: BearSSL
 * asks for a record's 5-byte header and then its body, two recv calls a
 * record otherwise.  The server's connections are many and keep neither
 * (their memory is the engine's buffers only).
 */
static int tls_send_gathered(struct tls *t, int fd)
{
	ssize_t n = send(fd, t->wbuf + t->wpos, t->wlen - t->wpos, SEND_FLAGS);

	if (n > 0) {
		t->wpos += (size_t)n;
		if (t->wpos == t->wlen)
			t->wpos = t->wlen = 0;
		return 1;
	}
	if (n < 0 && !io_again()) {
		t->ioerr = errno;
		tls_report(t);
		return -1;
	}
	return 0;
}

/* Move up to len bytes of the engine's outgoing record into wbuf; the
 * bytes moved (0: wbuf is full). */
static size_t tls_gather(struct tls *t, const unsigned char *buf,
    size_t len)
{
	if (t->wpos > 0 && TLS_CLIENT_WBUF - t->wlen < len) {
		memmove(t->wbuf, t->wbuf + t->wpos, t->wlen - t->wpos);
		t->wlen -= t->wpos;
		t->wpos = 0;
	}
	if (len > TLS_CLIENT_WBUF - t->wlen)
		len = TLS_CLIENT_WBUF - t->wlen;
	memcpy(t->wbuf + t->wlen, buf, len);
	t->wlen += len;
	return len;
}

/* Receive into the engine's record buffer (and rbuf, if any, behind it);
 * recv's result, the bytes the engine took acknowledged. */
static ssize_t tls_recv(struct tls *t, int fd, unsigned char *buf,
    size_t len)
{
	struct iovec iov[2];
	ssize_t n;

	if (t->rbuf == NULL) {
		if ((n = recv(fd, buf, len, 0)) > 0)
			br_ssl_engine_recvrec_ack(t->eng, (size_t)n);
		return n;
	}
	iov[0].iov_base = buf;
	iov[0].iov_len = len;
	iov[1].iov_base = t->rbuf;
	iov[1].iov_len = TLS_CLIENT_RBUF;
	if ((n = readv(fd, iov, 2)) > 0) {
		t->rpos = 0;
		t->rlen = (size_t)n > len ? (size_t)n - len : 0;
		br_ssl_engine_recvrec_ack(t->eng, (size_t)n - t->rlen);
	}
	return n;
}

/*
 * Move records between the socket and the engine, sending before
 * receiving, until neither moves.  Bounded: the engine takes at most one
 * record in before the application reads it.  more: the caller has more
 * to write at once (records may wait in wbuf for it).  0 ok (including a
 * clean end), -1 the connection failed.
 */
static int tls_io(struct tls *t, int fd, int more)
{
	for (;;) {
		unsigned st = br_ssl_engine_current_state(t->eng);
		unsigned char *buf;
		size_t len;
		ssize_t n;

		if (!t->ready && (st & (BR_SSL_SENDAPP | BR_SSL_RECVAPP)))
			tls_ready(t);
		if (st & BR_SSL_CLOSED) {
			/* The close_notify, if it waits in wbuf. */
			if (t->wlen > t->wpos)
				(void)tls_send_gathered(t, fd);
			tls_report(t);
			return br_ssl_engine_last_error(t->eng) ? -1 : 0;
		}
		if (st & BR_SSL_SENDREC) {
			buf = br_ssl_engine_sendrec_buf(t->eng, &len);
			if (t->wbuf != NULL) {
				if ((len = tls_gather(t, buf, len)) > 0) {
					br_ssl_engine_sendrec_ack(t->eng, len);
					continue;
				}
			} else if ((n = send(fd, buf, len, SEND_FLAGS)) > 0) {
				br_ssl_engine_sendrec_ack(t->eng, (size_t)n);
				continue;
			} else if (n < 0 && !io_again()) {
				t->ioerr = errno;
				tls_report(t);
				return -1;
			}
		}
		/* Gathered records leave when the write is done, or when
		 * wbuf is full (a record still waits in the engine). */
		if (t->wlen > t->wpos && (!more || (st & BR_SSL_SENDREC))) {
			int r = tls_send_gathered(t, fd);

			if (r < 0)
				return -1;
			if (r > 0)
				continue;
		}
		if ((st & BR_SSL_RECVREC) && !t->eof) {
			buf = br_ssl_engine_recvrec_buf(t->eng, &len);
			if (t->rpos < t->rlen) {
				if (len > t->rlen - t->rpos)
					len = t->rlen - t->rpos;
				memcpy(buf, t->rbuf + t->rpos, len);
				t->rpos += len;
				br_ssl_engine_recvrec_ack(t->eng, len);
				continue;
			}
			if ((n = tls_recv(t, fd, buf, len)) > 0)
				continue;
			if (n == 0) {
				t->eof = 1;
			} else if (!io_again()) {
				t->ioerr = errno;
				tls_report(t);
				return -1;
			}
		}
		return 0;
	}
}

/* see candy.h */
int stream_pump(struct stream *s)
{
	if (s->tls == NULL)
		return 0;
	return tls_io(s->tls, s->fd, 0);
}

/* see candy.h */
ssize_t stream_read(struct stream *s, void *buf, size_t len)
{
	struct tls *t = s->tls;
	unsigned char *p;
	size_t avail;
	ssize_t n;

	if (t == NULL) {
		if ((n = recv(s->fd, buf, len, 0)) > 0)
			return n;
		return n < 0 && io_again() ? 0 : -1;
	}
	if (tls_io(t, s->fd, 0) < 0)
		return -1;
	if (br_ssl_engine_current_state(t->eng) & BR_SSL_RECVAPP) {
		p = br_ssl_engine_recvapp_buf(t->eng, &avail);
		if (avail > len)
			avail = len;
		memcpy(buf, p, avail);
		br_ssl_engine_recvapp_ack(t->eng, avail);
		return (ssize_t)avail;
	}
	if (t->eof || (br_ssl_engine_current_state(t->eng) & BR_SSL_CLOSED)) {
		tls_report(t);
		return -1;
	}
	return 0;
}

/* see candy.h */
ssize_t stream_write(struct stream *s, const void *buf, size_t len)
{
	const unsigned char *src = buf;
	struct tls *t = s->tls;
	size_t done = 0, avail;
	unsigned char *p;
	ssize_t n;

	if (t == NULL) {
		if ((n = send(s->fd, buf, len, SEND_FLAGS)) >= 0)
			return n;
		return io_again() ? 0 : -1;
	}
	if (tls_io(t, s->fd, len > 0) < 0)
		return -1;
	while (done < len) {
		unsigned st = br_ssl_engine_current_state(t->eng);

		if (st & BR_SSL_CLOSED)
			return done ? (ssize_t)done : -1;
		if (!(st & BR_SSL_SENDAPP))
			break;
		p = br_ssl_engine_sendapp_buf(t->eng, &avail);
		if (avail > len - done)
			avail = len - done;
		memcpy(p, src + done, avail);
		br_ssl_engine_sendapp_ack(t->eng, avail);
		done += avail;
		br_ssl_engine_flush(t->eng, 0);
		if (tls_io(t, s->fd, done < len) < 0)
			return -1;
	}
	return (ssize_t)done;
}

/* see candy.h */
short stream_events(const struct stream *s, int want_write)
{
	unsigned st;
	short ev = 0;

	if (s->tls == NULL)
		return (short)(POLLIN | (want_write ? POLLOUT : 0));
	st = br_ssl_engine_current_state(s->tls->eng);
	if (st & BR_SSL_CLOSED)
		return POLLIN;
	if ((st & BR_SSL_SENDREC) || s->tls->wlen > s->tls->wpos)
		ev |= POLLOUT;
	if ((st & BR_SSL_RECVREC) && !s->tls->eof)
		ev |= POLLIN;
	return ev;
}

/* see candy.h */
int stream_pending(const struct stream *s)
{
	const struct tls *t = s->tls;
	unsigned st;

	if (t == NULL)
		return 0;
	st = br_ssl_engine_current_state(t->eng);
	return t->eof || t->ioerr || (st & (BR_SSL_RECVAPP | BR_SSL_CLOSED)) ||
	    (t->rpos < t->rlen && (st & BR_SSL_RECVREC));
}

/* see candy.h */
int stream_ready(const struct stream *s)
{
	if (s->tls == NULL)
		return 1;
	return s->tls->ready || (br_ssl_engine_current_state(s->tls->eng) &
	    (BR_SSL_SENDAPP | BR_SSL_RECVAPP)) != 0;
}

/* see candy.h */
const char *stream_error(const struct stream *s)
{
	return s->tls != NULL ? s->tls->why : NULL;
}

/* see candy.h */
const char *stream_tls_version(const struct stream *s)
{
	return s->tls != NULL && s->tls->ready ? s->tls->version : NULL;
}

/* see candy.h */
const char *stream_tls_suite(const struct stream *s)
{
	return s->tls != NULL && s->tls->ready ? s->tls->suite : NULL;
}

/* see candy.h */
void stream_close(struct stream *s)
{
	struct tls *t = s->tls;

	if (t != NULL) {
		/* close_notify, if the socket takes it now. */
		t->reported = 1;
		if (!(br_ssl_engine_current_state(t->eng) & BR_SSL_CLOSED)) {
			br_ssl_engine_close(t->eng);
			(void)tls_io(t, s->fd, 0);
		}
		wipe(t, t->size);
		free(t);
		s->tls = NULL;
	}
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

/*
 * Debian's libbearssl.a was built with _FORTIFY_SOURCE and calls glibc's
 * checked copies: musl lacks them (make static), and glibc's sit on a
 * page of their own, which a client would keep resident for these calls
 * alone (issue 11).  Both builds define them here: check, then copy.
 */
#ifdef CANDY_FORTIFY_SHIM
void *__memcpy_chk(void *d, const void *s, size_t n, size_t dlen);
void *__memmove_chk(void *d, const void *s, size_t n, size_t dlen);
void *__memset_chk(void *d, int c, size_t n, size_t dlen);

void *__memcpy_chk(void *d, const void *s, size_t n, size_t dlen)
{
	if (n > dlen)
		abort();
	return memcpy(d, s, n);
}

void *__memmove_chk(void *d, const void *s, size_t n, size_t dlen)
{
	if (n > dlen)
		abort();
	return memmove(d, s, n);
}

void *__memset_chk(void *d, int c, size_t n, size_t dlen)
{
	if (n > dlen)
		abort();
	return memset(d, c, n);
}
#endif
