/*
 * t_stun.c: STUN binding request and response (stun.c).
 * Sources: the captured vectors (PROTOCOL 5.3: an existing Candy 6.1
 * client and coturn 4.6.1), RFC 5769 §2.2 (sample IPv4 response), and
 * hand-made hostile messages.
 */
#include <stdio.h>
#include <string.h>

#include "candy.h"
#include "test.h"

/* The captured STUN exchange. */
static const char vec_request[] =
    "000100082112a44274f341ebbb05b7ab94026de60003000400000000";
static const char vec_response[] =
    "010100242112a44274f341ebbb05b7ab94026de6002000080001e6222b5fa440"
    "80220014436f7475726e2d342e362e312027476f72737427";
static const char vec_tid[] = "74f341ebbb05b7ab94026de6";

/* RFC 5769 §2.2: SOFTWARE, XOR-MAPPED-ADDRESS 192.0.2.1:32853,
 * MESSAGE-INTEGRITY, FINGERPRINT. */
static const char rfc5769_response[] =
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96";
static const char rfc5769_tid[] = "b7e7a701bc34d686fa87dfae";

/* Hand-made: a header for tid 0102...0c; attributes follow. */
#define HDR(len) "0101" len "2112a442" "0102030405060708090a0b0c"

static const struct {
	const char *name;
	const char *hex;
	int want;		/* WS_DONE or WS_BAD */
	uint32_t ip;
	uint16_t port;
} responses[] = {
	{ "MAPPED-ADDRESS alone", HDR("000c") "000100080001c7300a4d0002",
	    WS_DONE, 0x0a4d0002, 50992 },
	{ "XOR-MAPPED-ADDRESS wins over an earlier MAPPED-ADDRESS",
	    HDR("0018") "0001000800011111c0000201"
	    "002000080001e6222b5fa440", WS_DONE, 0x0a4d0002, 50992 },
	{ "MAPPED-ADDRESS after unknown attributes, odd length padded",
	    HDR("0018") "80230003616263008024000000010008000104d2c6336401",
	    WS_DONE, 0xc6336401, 1234 },
	{ "an IPv6 XOR-MAPPED-ADDRESS is skipped for the IPv4 MAPPED one",
	    HDR("0024") "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
	    "000100080001c7300a4d0002", WS_DONE, 0x0a4d0002, 50992 },
	{ "no address attribute", HDR("0008") "8022000474657374", WS_BAD,
	    0, 0 },
	{ "empty success response", HDR("0000"), WS_BAD, 0, 0 },
	{ "error response (0x0111)", "0111000c2112a442"
	    "0102030405060708090a0b0c000100080001c7300a4d0002", WS_BAD, 0, 0 },
	{ "binding request, not a response", "0001000c2112a442"
	    "0102030405060708090a0b0c000100080001c7300a4d0002", WS_BAD, 0, 0 },
	{ "wrong magic cookie", "0101000c2112a443"
	    "0102030405060708090a0b0c000100080001c7300a4d0002", WS_BAD, 0, 0 },
	{ "message length not a multiple of 4",
	    HDR("000d") "000100080001c7300a4d000200", WS_BAD, 0, 0 },
	{ "message length past the datagram",
	    HDR("0010") "000100080001c7300a4d0002", WS_BAD, 0, 0 },
	{ "message length 0xfffc", HDR("fffc") "000100080001c7300a4d0002",
	    WS_BAD, 0, 0 },
	{ "attribute length past the message",
	    HDR("000c") "0001000c0001c7300a4d0002", WS_BAD, 0, 0 },
	{ "attribute length 0xffff", HDR("000c") "0001ffff0001c7300a4d0002",
	    WS_BAD, 0, 0 },
	{ "unknown attribute's length runs past the message",
	    HDR("0010") "80220100000100080001c7300a4d0002", WS_BAD, 0, 0 },
	{ "MAPPED-ADDRESS too short", HDR("0008") "000100040001c730",
	    WS_BAD, 0, 0 },
	{ "MAPPED-ADDRESS with address 0", HDR("000c")
	    "000100080001c73000000000", WS_BAD, 0, 0 },
	{ "MAPPED-ADDRESS with port 0", HDR("000c")
	    "0001000800010000c0000201", WS_BAD, 0, 0 },
	{ "a header's worth of attribute, no room for its value",
	    HDR("0004") "00200008", WS_BAD, 0, 0 },
};

static void test_stun_request(void)
{
	unsigned char want[64], tid[12], got[STUN_REQUEST_LEN];
	size_t n = unhex(vec_request, want, sizeof(want));

	unhex(vec_tid, tid, sizeof(tid));
	stun_request_build(got, tid);
	CHECK_BYTES(want, n, got, sizeof(got),
	    "stun: binding request, captured");
}

static void test_stun_vectors(void)
{
	unsigned char m[128], tid[12], other[12];
	size_t n, cut;
	uint32_t ip = 0;
	uint16_t port = 0;
	int bad = 0;

	n = unhex(vec_response, m, sizeof(m));
	unhex(vec_tid, tid, sizeof(tid));
	CHECK(stun_response_parse(m, n, tid, &ip, &port) == WS_DONE &&
	    ip == 0x0a4d0002 && port == 50992,
	    "stun: coturn response, captured: 10.77.0.2:50992");
	ip = port = 0;
	CHECK(stun_response_parse(m, n, NULL, &ip, &port) == WS_DONE &&
	    ip == 0x0a4d0002 && port == 50992,
	    "stun: coturn response without a tid check");
	memcpy(other, tid, sizeof(other));
	other[11] ^= 1;
	CHECK(stun_response_parse(m, n, other, &ip, &port) == WS_BAD,
	    "stun: response to another transaction refused");
	/* Every truncation of the datagram is refused. */
	for (cut = 0; cut < n; cut++)
		if (stun_response_parse(m, cut, tid, &ip, &port) != WS_BAD)
			bad++;
	CHECK(bad == 0, "stun: every truncated coturn response refused");

	n = unhex(rfc5769_response, m, sizeof(m));
	unhex(rfc5769_tid, tid, sizeof(tid));
	ip = port = 0;
	CHECK(stun_response_parse(m, n, tid, &ip, &port) == WS_DONE &&
	    ip == 0xc0000201 && port == 32853,
	    "stun: RFC 5769 2.2 response: 192.0.2.1:32853");
	for (bad = 0, cut = 0; cut < n; cut++)
		if (stun_response_parse(m, cut, tid, &ip, &port) != WS_BAD)
			bad++;
	CHECK(bad == 0, "stun: every truncated RFC 5769 response refused");
}

static void test_stun_table(void)
{
	unsigned char m[128], tid[12];
	size_t i, n;
	char name[160];

	unhex("0102030405060708090a0b0c", tid, sizeof(tid));
	for (i = 0; i < sizeof(responses) / sizeof(responses[0]); i++) {
		uint32_t ip = 0;
		uint16_t port = 0;
		int r;

		n = unhex(responses[i].hex, m, sizeof(m));
		r = stun_response_parse(m, n, tid, &ip, &port);
		snprintf(name, sizeof(name), "stun: %s", responses[i].name);
		CHECK(r == responses[i].want && (r != WS_DONE ||
		    (ip == responses[i].ip && port == responses[i].port)),
		    name);
	}
}

void test_stun(void)
{
	test_stun_request();
	test_stun_vectors();
	test_stun_table();
}
