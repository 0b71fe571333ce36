/* unit.c: runs every area's known-answer tests; no privileges needed. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "candy.h"
#include "test.h"

int test_passed, test_failed;

int test_check(int cond, const char *name, const char *file, int line)
{
	if (cond) {
		test_passed++;
		printf("ok - %s\n", name);
	} else {
		test_failed++;
		printf("not ok - %s (%s:%d)\n", name, file, line);
	}
	return cond;
}

static void hexdump(const char *label, const unsigned char *p, size_t n)
{
	size_t i;

	printf("#   %s (%zu):", label, n);
	for (i = 0; i < n; i++)
		printf("%s%02x", i % 32 ? "" : "\n#     ", p[i]);
	printf("\n");
}

int test_bytes(const void *want, size_t wantlen, const void *got,
    size_t gotlen, const char *name, const char *file, int line)
{
	int eq = wantlen == gotlen && memcmp(want, got, wantlen) == 0;

	if (!test_check(eq, name, file, line)) {
		hexdump("want", want, wantlen);
		hexdump("got", got, gotlen);
	}
	return eq;
}

size_t unhex(const char *hex, unsigned char *out, size_t max)
{
	size_t n = 0;
	int hi = -1;

	for (; *hex; hex++) {
		int v;

		if (isspace((unsigned char)*hex))
			continue;
		if (*hex >= '0' && *hex <= '9')
			v = *hex - '0';
		else if (*hex >= 'a' && *hex <= 'f')
			v = *hex - 'a' + 10;
		else if (*hex >= 'A' && *hex <= 'F')
			v = *hex - 'A' + 10;
		else
			continue;
		if (hi < 0) {
			hi = v;
		} else if (n < max) {
			out[n++] = (unsigned char)(hi << 4 | v);
			hi = -1;
		}
	}
	return n;
}

static const struct {
	const char *name;
	void (*fn)(void);
} areas[] = {
	{ "messages", test_msg },
	{ "websocket", test_ws },
	{ "config", test_config },
	{ "route", test_route },
	{ "tls", test_tls },
	{ "stun", test_stun },
	{ "peer", test_peer },
	{ "relay", test_relay },
	{ "client", test_client },
	{ "server", test_server },
	{ "offload", test_offload },
	{ "status", test_status },
};

int main(void)
{
	size_t i;

	log_init(0, 0);
	rand_init();
	for (i = 0; i < sizeof(areas) / sizeof(areas[0]); i++) {
		printf("# %s\n", areas[i].name);
		areas[i].fn();
	}
	printf("%d passed, %d failed\n", test_passed, test_failed);
	return test_failed != 0;
}
