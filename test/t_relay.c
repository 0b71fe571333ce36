/*
 * t_relay.c: the distance-vector relay table (PROTOCOL 6), driven by
 * sequences of DELAY results and ROUTE messages.  Every announcement goes
 * through a recording callback and is checked, and so is the whole table
 * after each step.  Addresses are 10.0.0.N, written N; we are 1, cost 10.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "candy.h"
#include "test.h"

#define NET	0x0a000000
#define U	RTT_UNREACHABLE

static char said[4096];		/* announcements: "dst:rtt " or "dst:U " */

static void record(void *ctx, uint32_t dst, int32_t rtt)
{
	size_t n = strlen(said);

	(void)ctx;
	if (rtt == U)
		snprintf(said + n, sizeof(said) - n, "%s%u:U",
		    n ? " " : "", (unsigned)(dst - NET));
	else
		snprintf(said + n, sizeof(said) - n, "%s%u:%ld",
		    n ? " " : "", (unsigned)(dst - NET), (long)rtt);
}

/* The table as "dst>next:rtt ...", in the table's (dst) order. */
static const char *dump(const struct relay *t)
{
	static char buf[1024];
	size_t i, n = 0;

	buf[0] = '\0';
	for (i = 0; i < t->n && n < sizeof(buf); i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%u>%u:%ld",
		    i ? " " : "", (unsigned)(t->r[i].dst - NET),
		    (unsigned)(t->r[i].next - NET), (long)t->r[i].rtt);
	return buf;
}

/*
 * One step: 'D' relay_direct(a, rtt), 'R' relay_update(dst a, next b,
 * rtt), 'L' relay_peer_lost(a), 'A' relay_announce_all, and what must be
 * announced and what the table must hold afterwards.  A step with a name
 * starts a new scenario from an empty table.
 */
static const struct step {
	const char *scenario;
	char op;
	unsigned a, b;
	int32_t rtt;
	const char *announced, *table;
} steps[] = {
	{ "adopt cheaper", 'D', 2, 0, 5, "2:15", "2>2:5" },
	{ NULL, 'D', 3, 0, 7, "3:17", "2>2:5 3>3:7" },
	{ NULL, 'R', 4, 2, 20, "4:35", "2>2:5 3>3:7 4>2:25" },
	{ NULL, 'R', 4, 3, 10, "4:27", "2>2:5 3>3:7 4>3:17" },
	{ NULL, 'R', 4, 2, 30, "", "2>2:5 3>3:7 4>3:17" },	/* dearer */
	{ NULL, 'R', 4, 2, 12, "", "2>2:5 3>3:7 4>3:17" },	/* equal */
	{ NULL, 'R', 4, 3, 50, "4:67", "2>2:5 3>3:7 4>3:57" },	/* same next */
	{ NULL, 'R', 4, 3, 50, "", "2>2:5 3>3:7 4>3:57" },	/* no change */
	{ NULL, 'R', 4, 2, U, "", "2>2:5 3>3:7 4>3:57" },	/* not via 2 */
	{ NULL, 'R', 4, 3, U, "4:U", "2>2:5 3>3:7" },
	{ NULL, 'R', 4, 2, 1001, "", "2>2:5 3>3:7" },		/* unreachable */
	{ NULL, 'R', 4, 2, -1, "", "2>2:5 3>3:7" },
	{ NULL, 'R', 4, 2, 1000, "", "2>2:5 3>3:7" },		/* 5+1000 */
	{ NULL, 'R', 4, 2, 995, "4:1010", "2>2:5 3>3:7 4>2:1000" },
	{ NULL, 'R', 4, 2, 996, "4:U", "2>2:5 3>3:7" },	/* via 2, > 1000 */
	{ NULL, 'R', 5, 3, 0, "5:17", "2>2:5 3>3:7 5>3:7" },
	{ NULL, 'R', 5, 3, 2000, "5:U", "2>2:5 3>3:7" },

	{ "ignored updates", 'D', 2, 0, 5, "2:15", "2>2:5" },
	{ NULL, 'R', 1, 2, 3, "", "2>2:5" },		/* our own address */
	{ NULL, 'R', 4, 1, 3, "", "2>2:5" },		/* next is us */
	{ NULL, 'R', 4, 9, 3, "", "2>2:5" },		/* 9 not measured */
	{ NULL, 'R', 2, 2, 0, "", "2>2:5" },		/* 2 about itself */
	{ NULL, 'R', 2, 2, U, "", "2>2:5" },
	{ NULL, 'R', 0, 2, 3, "", "2>2:5" },

	{ "direct refresh", 'D', 2, 0, 5, "2:15", "2>2:5" },
	{ NULL, 'D', 2, 0, 5, "", "2>2:5" },		/* same rtt: quiet */
	{ NULL, 'R', 4, 2, 20, "4:35", "2>2:5 4>2:25" },
	{ NULL, 'R', 6, 2, 994, "6:1009", "2>2:5 4>2:25 6>2:999" },
	{ NULL, 'D', 2, 0, 8, "2:18 4:38 6:U", "2>2:8 4>2:28" },	/* +3 */
	{ NULL, 'D', 2, 0, 1001, "2:U 4:U", "" },	/* too slow: lost */
	{ NULL, 'D', 1, 0, 3, "", "" },			/* ourselves */

	{ "lost neighbour withdraws all", 'D', 2, 0, 5, "2:15", "2>2:5" },
	{ NULL, 'D', 3, 0, 7, "3:17", "2>2:5 3>3:7" },
	{ NULL, 'R', 4, 2, 1, "4:16", "2>2:5 3>3:7 4>2:6" },
	{ NULL, 'R', 5, 2, 1, "5:16", "2>2:5 3>3:7 4>2:6 5>2:6" },
	{ NULL, 'R', 6, 3, 1, "6:18", "2>2:5 3>3:7 4>2:6 5>2:6 6>3:8" },
	{ NULL, 'L', 2, 0, 0, "2:U 4:U 5:U", "3>3:7 6>3:8" },
	{ NULL, 'L', 2, 0, 0, "", "3>3:7 6>3:8" },
	{ NULL, 'R', 4, 2, 1, "", "3>3:7 6>3:8" },	/* 2 is gone */
	{ NULL, 'A', 0, 0, 0, "3:17 6:18", "3>3:7 6>3:8" },

	{ "a relayed route displaces a slow direct one", 'D', 2, 0, 50,
	    "2:60", "2>2:50" },
	{ NULL, 'D', 3, 0, 5, "3:15", "2>2:50 3>3:5" },
	{ NULL, 'R', 2, 3, 10, "2:25", "2>3:15 3>3:5" },
	{ NULL, 'R', 7, 2, 1, "", "2>3:15 3>3:5" },	/* 2 not direct */
	{ NULL, 'L', 2, 0, 0, "", "2>3:15 3>3:5" },	/* keeps 2 via 3 */
	{ NULL, 'D', 2, 0, 50, "2:60", "2>2:50 3>3:5" },	/* direct again */
	{ NULL, 'L', 3, 0, 0, "3:U", "2>2:50" },
};

static void test_relay_steps(void)
{
	struct relay t;
	char name[160];
	const char *scenario = "";
	size_t i;
	int init = relay_init(&t, 16, record, NULL);

	CHECK(init == 0, "relay: init");
	if (init < 0)
		return;
	for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		const struct step *s = &steps[i];
		const char *table;

		if (s->scenario != NULL) {
			scenario = s->scenario;
			relay_reset(&t, NET + 1, 10);
		}
		said[0] = '\0';
		switch (s->op) {
		case 'D':
			relay_direct(&t, NET + s->a, s->rtt);
			break;
		case 'R':
			relay_update(&t, s->a ? NET + s->a : 0, NET + s->b,
			    s->rtt);
			break;
		case 'L':
			relay_peer_lost(&t, NET + s->a);
			break;
		case 'A':
			relay_announce_all(&t);
			break;
		}
		table = dump(&t);
		snprintf(name, sizeof(name), "relay: %s, step %zu (%c %u %u "
		    "%ld): announced \"%s\", table \"%s\"", scenario, i, s->op,
		    s->a, s->b, (long)s->rtt, s->announced, s->table);
		if (!CHECK(strcmp(said, s->announced) == 0 &&
		    strcmp(table, s->table) == 0, name))
			printf("#   got announced \"%s\", table \"%s\"\n", said,
			    table);
	}
	relay_reset(&t, NET + 1, 10);
	said[0] = '\0';
	relay_direct(&t, NET + 2, 5);
	relay_update(&t, NET + 4, NET + 2, 1);
	CHECK(relay_lookup(&t, NET + 4) == NET + 2 &&
	    relay_lookup(&t, NET + 2) == NET + 2 &&
	    relay_lookup(&t, NET + 3) == 0, "relay: lookup");
	said[0] = '\0';
	relay_announce_each(&t, record, NULL);
	CHECK(strcmp(said, "2:15 4:16") == 0,
	    "relay: announce_each gives every route, cost added");
	said[0] = '\0';
	relay_reset(&t, NET + 1, 10);
	CHECK(t.n == 0 && said[0] == '\0' && relay_lookup(&t, NET + 4) == 0,
	    "relay: reset forgets quietly");
	free(t.r);
}

/* A neighbour advertising thousands of bogus destinations. */
static void test_relay_bound(void)
{
	struct relay t;
	unsigned long i, announced = 0;

	if (relay_init(&t, 8, record, NULL) < 0)
		return;
	relay_reset(&t, NET + 1, 10);
	relay_direct(&t, NET + 2, 5);
	for (i = 0; i < 5000; i++) {
		said[0] = '\0';
		relay_update(&t, 0xc0000000 + (uint32_t)i * 7919, NET + 2,
		    (int32_t)(i % 900));
		announced += said[0] != '\0';
		if (t.n > t.max)
			break;
	}
	CHECK(t.n == 8 && announced == 7,
	    "relay: 5000 bogus destinations, 8 entries at most");
	CHECK(relay_lookup(&t, 0xc0000000 + 4999 * 7919) == 0,
	    "relay: a destination past the bound is not routed");
	said[0] = '\0';
	relay_direct(&t, NET + 3, 4);
	CHECK(t.n == 8 && relay_lookup(&t, NET + 3) == NET + 3 &&
	    strstr(said, ":U 3:14") != NULL,
	    "relay: a full table still takes a direct peer, dropping the "
	    "dearest relayed route");
	said[0] = '\0';
	relay_update(&t, NET + 9, NET + 3, 1);
	CHECK(t.n == 8 && relay_lookup(&t, NET + 9) == 0 && said[0] == '\0',
	    "relay: a full table ignores a new relayed destination");
	free(t.r);
}

/*
 * A chain of four clients, 1 - 3 - 4 - 2, each with its own table; what a
 * table announces is queued as ROUTE to its neighbours and delivered in
 * order, as UDP would.  Each link has rtt 10 and each client cost 5, so 1
 * reaches 2 at 10 + 10 + 10 plus the costs of 4 and 3: 40.
 */
#define CHAIN 4
static const unsigned chain_addr[CHAIN] = { 1, 3, 4, 2 };
static struct relay chain[CHAIN];
static int chain_up[CHAIN][CHAIN];	/* link i-j connected */
static struct chain_msg {
	int to;
	uint32_t dst, next;
	int32_t rtt;
} chain_q[4096];
static size_t chain_qhead, chain_qtail;

static int chain_poison;		/* poisoned reverse, as candy.h suggests */

static void chain_announce(void *ctx, uint32_t dst, int32_t rtt)
{
	int from = (int)(intptr_t)ctx, j;
	uint32_t via = relay_lookup(&chain[from], dst);

	for (j = 0; j < CHAIN; j++) {
		if (!chain_up[from][j] || chain_qtail == 4096)
			continue;
		chain_q[chain_qtail].to = j;
		chain_q[chain_qtail].dst = dst;
		chain_q[chain_qtail].next = chain[from].self;
		chain_q[chain_qtail].rtt = chain_poison &&
		    via == chain[j].self ? U : rtt;
		chain_qtail++;
	}
}

/* Deliver until quiet; the number of messages delivered. */
static size_t chain_run(void)
{
	size_t n = 0;

	while (chain_qhead < chain_qtail) {
		struct chain_msg *m = &chain_q[chain_qhead++];

		relay_update(&chain[m->to], m->dst, m->next, m->rtt);
		n++;
	}
	chain_qhead = chain_qtail = 0;
	return n;
}

static void chain_link(int i, int j, int up)
{
	chain_up[i][j] = chain_up[j][i] = up;
	if (up) {
		/* What peer.c does on CONNECTED: measure, then tell the
		 * new neighbour (and the others) every route we hold. */
		relay_direct(&chain[i], chain[j].self, 10);
		relay_direct(&chain[j], chain[i].self, 10);
		relay_announce_all(&chain[i]);
		relay_announce_all(&chain[j]);
	} else {
		relay_peer_lost(&chain[i], chain[j].self);
		relay_peer_lost(&chain[j], chain[i].self);
	}
}

#define NAME(s) (snprintf(name, sizeof(name), "%s (%s)", (s), how), name)

static void test_relay_chain(int poison)
{
	static int ready;
	const char *how = poison ? "poisoned reverse" : "plain";
	char name[128];
	size_t n;
	int i, j;

	for (i = 0; i < CHAIN; i++) {
		if (!ready && relay_init(&chain[i], 16, chain_announce,
		    (void *)(intptr_t)i) < 0)
			return;
		relay_reset(&chain[i], NET + chain_addr[i], 5);
		for (j = 0; j < CHAIN; j++)
			chain_up[i][j] = 0;
	}
	ready = 1;
	chain_poison = poison;
	chain_link(0, 1, 1);
	chain_link(1, 2, 1);
	chain_link(2, 3, 1);
	chain_run();
	CHECK(relay_lookup(&chain[0], NET + 2) == NET + 3 &&
	    relay_lookup(&chain[3], NET + 1) == NET + 4,
	    NAME("relay chain: 1 reaches 2 via 3, and 2 reaches 1 via 4"));
	CHECK(strcmp(dump(&chain[0]), "2>3:40 3>3:10 4>3:25") == 0,
	    NAME("relay chain: the cost is added once per hop"));
	if (strcmp(dump(&chain[0]), "2>3:40 3>3:10 4>3:25") != 0)
		printf("#   got \"%s\"\n", dump(&chain[0]));

	/* A shortcut 1 - 2 with rtt 10 wins; losing it falls back. */
	chain_link(0, 3, 1);
	chain_run();
	CHECK(relay_lookup(&chain[0], NET + 2) == NET + 2 &&
	    relay_lookup(&chain[0], NET + 4) == NET + 3,
	    NAME("relay chain: a direct link takes over"));
	chain_link(0, 3, 0);
	chain_run();
	relay_announce_all(&chain[1]);	/* the periodic refresh */
	chain_run();
	CHECK(relay_lookup(&chain[0], NET + 2) == NET + 3,
	    NAME("relay chain: without the link, 2 is reached via 3 again"));

	/* The chain breaks between 4 and 2: everyone forgets 2, in a
	 * bounded number of messages. */
	chain_link(2, 3, 0);
	CHECK(chain_run() < 100 && relay_lookup(&chain[0], NET + 2) == 0 &&
	    relay_lookup(&chain[1], NET + 2) == 0 &&
	    relay_lookup(&chain[2], NET + 2) == 0,
	    NAME("relay chain: a broken link withdraws the routes beyond it"));
	CHECK(relay_lookup(&chain[0], NET + 4) == NET + 3,
	    NAME("relay chain: the routes before the break stay"));

	/* 1's periodic refresh crosses 3's loss of 4: plain, 3 believes
	 * 1's stale word and the route to 4 bounces between them, dearer
	 * each time, until it passes 1000; poisoned, 1 never offers 3 a
	 * route through 3. */
	relay_announce_all(&chain[0]);
	chain_link(1, 2, 0);
	n = chain_run();
	CHECK(relay_lookup(&chain[0], NET + 4) == 0 &&
	    relay_lookup(&chain[1], NET + 4) == 0 &&
	    (poison ? n <= 4 : n < 200),
	    NAME("relay chain: a lost route expires, in a bounded number of "
	    "messages"));
	printf("# %s: %zu messages to forget 4\n", how, n);
}

void test_relay(void)
{
	test_relay_steps();
	test_relay_bound();
	test_relay_chain(0);
	test_relay_chain(1);
}
