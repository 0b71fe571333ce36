/*
 * tls.c: everything candy takes from BearSSL: the random generator, and
 * TLS client and server connections behind the stream calls of candy.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
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

/*
 * make static: Debian's libbearssl.a was built with _FORTIFY_SOURCE and
 * calls glibc's checked copies, which musl lacks.  Check, then copy.
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
