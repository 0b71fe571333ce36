/*
 * t_msg.c: Candy messages against the traffic captured from Candy 6.1
 * (the captured vectors, PROTOCOL 2): build each byte for byte, check
 * each hash.
 */
#include <stdio.h>
#include <string.h>

#include "candy.h"
#include "test.h"

#define PW	"secretpw"
#define TS	0x6b021e65		/* the capture's timestamp */
#define IP1	0xac1f0001		/* 172.31.0.1 */

static const char vmac_hex[] =
    "0430643136613634313437653237313039000000006b021e6505c68001a7d38dd1aa70"
    "05b4d3368902fa113042f687f37998dae671d23e2806";
static const char expttun_req_hex[] =
    "02000000006b021e65302e302e302e302f300000000000000000000000000000000000"
    "00000000000093d30158f95b0074cf0f52a478b7942d61e81de8b72e8d8a9b4bd6a826"
    "7454d5";
static const char expttun_ans_hex[] =
    "02000000006b021e653137322e33312e302e312f323400000000000000000000000000"
    "00000000000093d30158f95b0074cf0f52a478b7942d61e81de8b72e8d8a9b4bd6a826"
    "7454d5";
static const char auth_hex[] =
    "00ac1f0001000000006b021e6593817a88f7a3e4d827037b19ccd4959da5d8fc9b4e45"
    "e2115b7cba3e7f13c8ea";
static const char route_hex[] = "06010000c0a83200ffffff00ac1f0009";
static const char forward_hex[] =
    "0145000054fca340004001e5c3ac1f0001ac1f00020800ec4c07d30001691e026b0000"
    "0000cb820e0000000000101112131415161718191a1b1c1d1e1f202122232425262728"
    "292a2b2c2d2e2f3031323334353637";
static const char udp4conn_hex[] = "03ac1f0001ac1f00020a4d0002c730";

static void test_msg_vmac(void)
{
	unsigned char want[128], got[128];
	size_t wn = unhex(vmac_hex, want, sizeof(want));
	size_t gn = msg_vmac_build(got, PW, "0d16a64147e27109", TS, 0);

	CHECK_BYTES(want, wn, got, gn, "VMAC built byte for byte");
	CHECK(msg_vmac_check(want, PW), "VMAC hash checks");
	CHECK(!msg_vmac_check(want, "secretpX"), "VMAC: wrong password fails");
	want[3] ^= 1;
	CHECK(!msg_vmac_check(want, PW), "VMAC: changed vmac fails");
	gn = msg_vmac_build(got, PW, "0d16a64147e27109", TS, 200);
	CHECK(gn == VMAC_LEN + PAD_MAX, "VMAC padding is capped at 63");
}

static void test_msg_expttun(void)
{
	unsigned char want[128], got[128];
	size_t wn, gn;

	wn = unhex(expttun_req_hex, want, sizeof(want));
	gn = msg_expttun_build(got, PW, "0.0.0.0/0", TS, 0);
	CHECK_BYTES(want, wn, got, gn, "EXPTTUN request built byte for byte");
	CHECK(msg_expttun_check(want, PW), "EXPTTUN request hash checks");
	wn = unhex(expttun_ans_hex, want, sizeof(want));
	gn = msg_expttun_build(got, PW, "172.31.0.1/24", TS, 0);
	CHECK_BYTES(want, wn, got, gn, "EXPTTUN answer built byte for byte");
	CHECK(msg_expttun_check(want, PW), "EXPTTUN answer hash checks");
	CHECK(strcmp((char *)want + 9, "172.31.0.1/24") == 0,
	    "EXPTTUN answer carries the cidr text");
	want[5] ^= 1;
	CHECK(!msg_expttun_check(want, PW), "EXPTTUN: changed timestamp fails");
	gn = msg_expttun_build(got, PW, "0.0.0.0/0", TS, 17);
	CHECK(gn == EXPTTUN_LEN + 17 && msg_expttun_check(got, PW),
	    "EXPTTUN with confusion padding still checks");
}

static void test_msg_auth(void)
{
	unsigned char want[128], got[128];
	size_t wn = unhex(auth_hex, want, sizeof(want));
	size_t gn = msg_auth_build(got, PW, IP1, TS, 0);

	CHECK_BYTES(want, wn, got, gn, "AUTH built byte for byte");
	CHECK(msg_auth_check(want, PW), "AUTH hash checks");
	CHECK(get32(want + 1) == IP1, "AUTH carries 172.31.0.1");
	CHECK((int64_t)get64(want + 5) == TS, "AUTH carries the timestamp");
	want[4] ^= 1;
	CHECK(!msg_auth_check(want, PW), "AUTH: changed address fails");
	CHECK(!msg_auth_check(got, ""), "AUTH: empty password fails");
	gn = msg_auth_build(got, "", IP1, TS, 0);
	CHECK(msg_auth_check(got, ""), "AUTH with an empty password checks");
}

static void test_msg_route(void)
{
	unsigned char want[64], got[64];
	struct sdwan_route e = { 0xc0a83200, 0xffffff00, 0xac1f0009 };
	size_t wn = unhex(route_hex, want, sizeof(want));
	size_t gn = msg_route_build(got, &e, 1);

	CHECK_BYTES(want, wn, got, gn, "ROUTE built byte for byte");
}

static void test_msg_layouts(void)
{
	unsigned char m[256];
	size_t n;

	n = unhex(forward_hex, m, sizeof(m));
	CHECK(n == 85 && m[0] == MSG_FORWARD, "FORWARD is 85 bytes, type 1");
	CHECK(get32(m + 1 + 12) == IP1 && get32(m + 1 + 16) == 0xac1f0002,
	    "FORWARD: IPv4 source and destination");
	n = unhex(udp4conn_hex, m, sizeof(m));
	CHECK(n == UDP4CONN_LEN && get32(m + 1) == IP1 &&
	    get32(m + 5) == 0xac1f0002 && get32(m + 9) == 0x0a4d0002 &&
	    get16(m + 13) == 50992, "UDP4CONN: src, dst, 10.77.0.2:50992");
}

/*
 * The server's timestamp window (PROTOCOL 2.1), through server_test_run:
 * an AUTH with a good hash is taken within AUTH_WINDOW_S of our clock and
 * refused (its connection closed) outside it.  make fuzz found the ends:
 * a timestamp near INT64_MIN made `ts - now' overflow in msg_fresh.
 */
static void test_msg_window(void)
{
	static const struct {
		const char *what;
		int64_t off;		/* from now, unless at an end */
		int at_end;		/* 1: INT64_MIN + off, 2: INT64_MAX - off */
		int closed;
	} t[] = {
		{ "now", 0, 0, 0 },
		{ "295 s ago", -AUTH_WINDOW_S + 5, 0, 0 },
		{ "in 295 s", AUTH_WINDOW_S - 5, 0, 0 },
		{ "305 s ago", -AUTH_WINDOW_S - 5, 0, 1 },
		{ "in 305 s", AUTH_WINDOW_S + 5, 0, 1 },
		{ "INT64_MIN", 0, 1, 1 },
		{ "INT64_MIN + 7012345 (make fuzz)", 7012345, 1, 1 },
		{ "INT64_MAX", 0, 2, 1 },
	};
	struct config cfg;
	unsigned char m[AUTH_LEN], *mp = m;
	size_t len, from = 0, i;
	int64_t ts;
	char name[96];

	memset(&cfg, 0, sizeof(cfg));
	cfg.mode = MODE_SERVER;
	strcpy(cfg.password, PW);
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		ts = t[i].at_end == 1 ? INT64_MIN + t[i].off :
		    t[i].at_end == 2 ? INT64_MAX - t[i].off : wall_s() + t[i].off;
		len = msg_auth_build(m, PW, IP1, ts, 0);
		snprintf(name, sizeof(name), "server: AUTH timestamped %s %s",
		    t[i].what, t[i].closed ? "refused" : "taken");
		CHECK(server_test_run(&cfg, &mp, &len, &from, 1) == t[i].closed,
		    name);
	}
}

static void test_bytes_helpers(void)
{
	unsigned char b[8];

	put64(b, 0x0102030405060708ULL);
	CHECK(b[0] == 1 && b[7] == 8 && get64(b) == 0x0102030405060708ULL,
	    "put64/get64 are big-endian on any CPU");
	put16(b, 0xbeef);
	CHECK(b[0] == 0xbe && get16(b) == 0xbeef, "put16/get16");
}

void test_msg(void)
{
	test_bytes_helpers();
	test_msg_vmac();
	test_msg_expttun();
	test_msg_auth();
	test_msg_route();
	test_msg_layouts();
	test_msg_window();
}
