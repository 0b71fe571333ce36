/*
 * stun.c: the STUN binding request and response (RFC 5389) that tell a
 * client its public UDP endpoint, exactly as PROTOCOL 5.3 lays them out.
 * Only building and parsing live here; peer.c sends, receives and retries.
 */
#include <string.h>

#include "candy.h"

#define STUN_HDR_LEN		20
#define STUN_COOKIE		0x2112a442u
#define STUN_BINDING_REQUEST	0x0001
#define STUN_BINDING_SUCCESS	0x0101
#define STUN_ATTR_MAPPED	0x0001
#define STUN_ATTR_CHANGE_REQUEST 0x0003
#define STUN_ATTR_XOR_MAPPED	0x0020
#define STUN_FAMILY_IPV4	0x01

/* see candy.h */
void stun_request_build(unsigned char out[STUN_REQUEST_LEN],
    const unsigned char tid[12])
{
	put16(out, STUN_BINDING_REQUEST);
	put16(out + 2, 8);		/* the one attribute below */
	put32(out + 4, STUN_COOKIE);
	memcpy(out + 8, tid, 12);
	/* CHANGE-REQUEST with no flags (RFC 5780 §7.2), as the existing
	 * client sends it: answer from the address we asked. */
	put16(out + 20, STUN_ATTR_CHANGE_REQUEST);
	put16(out + 22, 4);
	put32(out + 24, 0);
}

/*
 * An IPv4 (XOR-)MAPPED-ADDRESS value (RFC 5389 §15.1, §15.2): reserved
 * byte, family, port, address.  0 ok, -1 not a usable IPv4 endpoint.
 */
static int stun_address_parse(const unsigned char *v, size_t len, int xor,
    uint32_t *ip, uint16_t *port)
{
	if (len < 8 || v[1] != STUN_FAMILY_IPV4)
		return -1;
	*port = get16(v + 2);
	*ip = get32(v + 4);
	if (xor) {
		/* The port is XORed with the cookie's top 16 bits. */
		*port ^= (uint16_t)(STUN_COOKIE >> 16);
		*ip ^= STUN_COOKIE;
	}
	return *ip != 0 && *port != 0 ? 0 : -1;
}

/*
 * RFC 5389 §6: a 20-byte header whose length counts the attributes that
 * follow, a multiple of 4; §15: attributes are type, length, value padded
 * to 4 bytes.  Every length is checked against what arrived before it is
 * used.  XOR-MAPPED-ADDRESS wins over MAPPED-ADDRESS (§15.2: NATs that
 * rewrite addresses in payloads cannot spoil it); other attributes are
 * skipped.
 */
/* see candy.h */
int stun_response_parse(const unsigned char *p, size_t len,
    const unsigned char tid[12], uint32_t *ip, uint16_t *port)
{
	size_t pos, end, alen;
	int found = 0;

	if (len < STUN_HDR_LEN || get16(p) != STUN_BINDING_SUCCESS ||
	    get32(p + 4) != STUN_COOKIE)
		return WS_BAD;
	if (tid != NULL && memcmp(p + 8, tid, 12) != 0)
		return WS_BAD;
	end = STUN_HDR_LEN + (size_t)get16(p + 2);
	if (end > len || (end & 3) != 0)
		return WS_BAD;
	for (pos = STUN_HDR_LEN; pos + 4 <= end; pos += 4 + alen) {
		uint16_t type = get16(p + pos);
		const unsigned char *v = p + pos + 4;
		uint32_t aip;
		uint16_t aport;

		alen = get16(p + pos + 2);
		if (alen > end - pos - 4)
			return WS_BAD;
		if (type == STUN_ATTR_XOR_MAPPED &&
		    stun_address_parse(v, alen, 1, &aip, &aport) == 0) {
			*ip = aip;
			*port = aport;
			return WS_DONE;
		}
		if (type == STUN_ATTR_MAPPED && !found &&
		    stun_address_parse(v, alen, 0, &aip, &aport) == 0) {
			*ip = aip;
			*port = aport;
			found = 1;
		}
		alen = (alen + 3) & ~(size_t)3;	/* padding */
	}
	return found ? WS_DONE : WS_BAD;
}
