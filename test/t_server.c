/*
 * t_server.c: the server's limits (issue 9) and its replay memory (issue
 * 8), through server_limits and server_test_run; the rate limit of the
 * log.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "candy.h"
#include "test.h"

#define PW	"pw"
#define NET16	0x0a640000		/* 10.100.0.0/16 */

static void server_cfg(struct config *cfg, int prefix, int max_clients)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mode = MODE_SERVER;
	strcpy(cfg->password, PW);
	if (prefix > 0) {
		cfg->has_dhcp = 1;
		cfg->dhcp.addr = NET16;
		cfg->dhcp.prefix = prefix;
	}
	cfg->max_clients = max_clients;
}

static void test_server_limits(void)
{
	struct config cfg;
	size_t clients, pending;

	server_cfg(&cfg, 16, 0);
	server_limits(&cfg, 20000, &clients, &pending);
	CHECK(clients > 10000 && clients + pending <= 20000 - 16,
	    "a /16 with 20,000 descriptors: over 10,000 clients, within them");
	CHECK(pending >= 64 && pending <= clients / 4,
	    "  a share of the slots for connections authenticating");
	server_cfg(&cfg, 24, 0);
	server_limits(&cfg, 20000, &clients, &pending);
	CHECK(clients == 254 && pending == 64,
	    "a /24: 254 clients, 64 connections authenticating");
	server_cfg(&cfg, 16, 10);
	server_limits(&cfg, 20000, &clients, &pending);
	CHECK(clients == 10, "--max-clients 10: 10 clients");
	server_cfg(&cfg, 0, 0);
	server_limits(&cfg, 64, &clients, &pending);
	CHECK(clients >= 16 && clients + pending <= 64,
	    "64 descriptors, no range: within the descriptors");
	server_cfg(&cfg, 30, 0);
	server_limits(&cfg, 20000, &clients, &pending);
	CHECK(clients == 2, "a /30: 2 clients");
}

/* Run the messages, each from its connection; returns the closed count. */
static int run(const struct config *cfg, unsigned char **m, size_t *len,
    size_t *from, size_t n)
{
	return server_test_run(cfg, m, len, from, n);
}

/* A message of one byte of type AUTH: too short, it closes its
 * connection (the way to end one in server_test_run). */
static unsigned char short_auth[1] = { MSG_AUTH };

static void test_server_max_clients(void)
{
	unsigned char a[4][AUTH_LEN], *m[4];
	size_t len[4], from[4] = { 0, 1, 2, 3 };
	struct config cfg;
	int64_t ts = wall_s();
	int i;

	server_cfg(&cfg, 24, 2);
	for (i = 0; i < 3; i++) {
		len[i] = msg_auth_build(a[i], PW, NET16 + 10 + (uint32_t)i, ts,
		    0);
		m[i] = a[i];
	}
	/* The fourth takes over the first one's address. */
	len[3] = msg_auth_build(a[3], PW, NET16 + 10, ts - 1, 0);
	m[3] = a[3];
	CHECK(run(&cfg, m, len, from, 4) == 1,
	    "--max-clients 2: the third client is refused, a reconnect is not");
}

/* Thousands of connections log thousands of lines: not on the terminal. */
static int stderr_saved = -1;

static void quiet(void)
{
	FILE *f = fopen("/dev/null", "w");

	fflush(stderr);
	stderr_saved = dup(2);
	if (f != NULL) {
		dup2(fileno(f), 2);
		fclose(f);
	}
}

static void loud(void)
{
	fflush(stderr);
	if (stderr_saved >= 0) {
		dup2(stderr_saved, 2);
		close(stderr_saved);
		stderr_saved = -1;
	}
}

/*
 * Issue 8: the server remembered 4,096 AUTH hashes, so an AUTH replayed
 * after 4,100 newer ones within its window was taken.  Each AUTH here is
 * for a new address on a new connection, which a short message then
 * closes; the last message is the first AUTH again.
 */
static int replay_run(const struct config *cfg, size_t nauth, int extra)
{
	size_t n = 2 * nauth + 1 + (size_t)extra, i, k = 0;
	unsigned char (*a)[AUTH_LEN] = calloc(nauth + 1, AUTH_LEN);
	unsigned char **m = calloc(n, sizeof(*m));
	size_t *len = calloc(n, sizeof(*len)), *from = calloc(n, sizeof(*from));
	int64_t ts = wall_s();
	int closed = -1;

	if (a == NULL || m == NULL || len == NULL || from == NULL)
		goto out;
	for (i = 0; i <= nauth; i++)
		msg_auth_build(a[i], PW, NET16 + 1 + (uint32_t)i, ts, 0);
	for (i = 0; i < nauth; i++) {
		m[k] = a[i];
		len[k] = AUTH_LEN;
		from[k++] = i;
		m[k] = short_auth;
		len[k] = 1;
		from[k++] = i;
	}
	if (extra) {
		m[k] = a[nauth];	/* one more, new */
		len[k] = AUTH_LEN;
		from[k++] = nauth;
	}
	m[k] = a[0];			/* the replay */
	len[k] = AUTH_LEN;
	from[k++] = nauth + 1;
	quiet();
	closed = run(cfg, m, len, from, k);
	loud();
out:
	free(a);
	free(m);
	free(len);
	free(from);
	return closed;
}

static void test_server_replay(void)
{
	struct config cfg;

	server_cfg(&cfg, 16, 0);
	CHECK(replay_run(&cfg, 4100, 0) == 4100 + 1,
	    "an AUTH replayed after 4,100 newer ones is refused");
	/* --max-clients 16: 80 slots, the smallest memory, 4,096. */
	server_cfg(&cfg, 16, 16);
	CHECK(replay_run(&cfg, 4096, 1) == 4096 + 2,
	    "replay memory full: a new AUTH is refused, the old not forgotten");
}

/* A connection may send SIGNED_PER_CONN (8) AUTH, VMAC and EXPTTUN. */
static void test_server_signed_limit(void)
{
	unsigned char v[9][VMAC_LEN], *m[9];
	size_t len[9], from[9];
	struct config cfg;
	int i;

	server_cfg(&cfg, 24, 0);
	for (i = 0; i < 9; i++) {
		len[i] = msg_vmac_build(v[i], PW, "0123456789abcdef",
		    wall_s() - i, 0);
		m[i] = v[i];
		from[i] = 0;
	}
	CHECK(run(&cfg, m, len, from, 8) == 0 &&
	    run(&cfg, m, len, from, 9) == 1,
	    "8 VMACs on one connection are taken, the 9th closes it");
}

/* Count the lines of f that contain what. */
static int lines_with(FILE *f, const char *what)
{
	char line[1024];
	int n = 0;

	rewind(f);
	while (fgets(line, sizeof(line), f) != NULL)
		if (strstr(line, what) != NULL)
			n++;
	return n;
}

static void test_log_limit(void)
{
	FILE *f = tmpfile();
	int saved = dup(2), i;

	if (f == NULL || saved < 0) {
		CHECK(0, "log: a temporary file for stderr");
		return;
	}
	fflush(stderr);
	dup2(fileno(f), 2);
	fake_now_ms = 1000000;
	for (i = 0; i < 30; i++)
		log_warnx("flood line %d", i);
	log_info("plain info");
	log_info("plain info");
	log_peer("192.0.2.7:4242");
	log_warnx("a warning about a connection");
	log_warnx("about 192.0.2.7:4242 already");
	log_peer(NULL);
	fake_now_ms += 11000;
	log_tick();
	log_warnx("flood line %d", 99);
	fake_now_ms = 0;
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	CHECK(lines_with(f, "flood line") == 10 + 1 + 1,
	    "log: 10 lines of one format in 10 s, then counted");
	CHECK(lines_with(f, "(20 more like it suppressed)") == 1,
	    "log: the count reported when the window ends");
	CHECK(lines_with(f, "plain info") == 2,
	    "log: info lines are not limited");
	CHECK(lines_with(f, "a warning about a connection (from "
	    "192.0.2.7:4242)") == 1 && lines_with(f, "(from") == 1,
	    "log: a line about a connection names its peer, once");
	fclose(f);
}

/* Deletion in the linear-probing tables, a run of 8 slots: which later
 * entries may fill the hole, across the end of the table too. */
static void test_probe_may_fill(void)
{
	static const struct {
		size_t hole, j, home;
		int fill;
	} t[] = {
		{ 2, 5, 2, 1 },	/* home at the hole */
		{ 2, 5, 1, 1 },	/* home before it */
		{ 2, 5, 3, 0 },	/* home in (hole, j] */
		{ 2, 5, 5, 0 },
		{ 2, 5, 6, 1 },	/* home past j: it wrapped round */
		{ 6, 1, 6, 1 },	/* the run wraps: hole 6, j 1 */
		{ 6, 1, 5, 1 },
		{ 6, 1, 7, 0 },
		{ 6, 1, 0, 0 },
		{ 6, 1, 1, 0 },
		{ 6, 1, 2, 1 },
	};
	size_t i;
	int ok = 1;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (probe_may_fill(t[i].hole, t[i].j, t[i].home) != t[i].fill) {
			printf("# hole %zu j %zu home %zu: want %d\n", t[i].hole,
			    t[i].j, t[i].home, t[i].fill);
			ok = 0;
		}
	CHECK(ok, "probe_may_fill: which entries move into a hole, wrapped too");
}

void test_server(void)
{
	test_probe_may_fill();
	test_server_limits();
	test_server_max_clients();
	test_server_replay();
	test_server_signed_limit();
	test_log_limit();
}
