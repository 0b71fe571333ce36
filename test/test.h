/*
 * test.h: the unit tests' small harness.  Each test prints "ok - name" or
 * "not ok - name" with the expected and actual values; unit.c prints the
 * closing "N passed, N failed" line.
 */
#ifndef TEST_H
#define TEST_H

#include <stddef.h>

extern int test_passed, test_failed;

/* Record one check; returns cond. */
int test_check(int cond, const char *name, const char *file, int line);
/* Compare bytes; on mismatch print both in hex.  Returns 1 when equal. */
int test_bytes(const void *want, size_t wantlen, const void *got,
    size_t gotlen, const char *name, const char *file, int line);
/* Decode hex text (whitespace ignored) into out; returns the length. */
size_t unhex(const char *hex, unsigned char *out, size_t max);

#define CHECK(cond, name) test_check((cond) != 0, (name), __FILE__, __LINE__)
#define CHECK_BYTES(w, wl, g, gl, name) \
	test_bytes((w), (wl), (g), (gl), (name), __FILE__, __LINE__)

/* One function per area, each in its own t_*.c file. */
void test_msg(void);
void test_ws(void);
void test_config(void);
void test_route(void);
void test_tls(void);
void test_stun(void);
void test_peer(void);
void test_relay(void);
void test_client(void);
void test_server(void);
void test_offload(void);
void test_status(void);

#endif
