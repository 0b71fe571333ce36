/*
 * t_offload.c: TUN offload segmentation and coalescing (tun.c, the
 * offload section).  Packets are built here; every packet that comes
 * out is checked against a second, byte-at-a-time RFC 1071 checksum and
 * the stream it carries against the stream that went in.
 */
#include <stdio.h>
#include <string.h>

#include "candy.h"
#include "test.h"

#define SUPER	(TUN_VNET_LEN + 70000)

static unsigned char super[SUPER], out[2048];
static unsigned char stream[70000], got[70000];
static struct tun_gro gro;

/* RFC 1071, 16 bits at a time, unlike tun.c's. */
static unsigned sum16(const unsigned char *p, size_t n, unsigned long s)
{
	size_t i;

	for (i = 0; i + 1 < n; i += 2)
		s += (unsigned long)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (unsigned long)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (unsigned)s;
}

static int ip_ok(const unsigned char *p)
{
	return sum16(p, (size_t)(p[0] & 15) * 4, 0) == 0xffff;
}

static int l4_ok(const unsigned char *p, size_t len)
{
	size_t ihl = (size_t)(p[0] & 15) * 4;
	unsigned long s = 0;

	s += sum16(p + 12, 8, 0);
	s += p[9];
	s += (unsigned long)(len - ihl);
	return sum16(p + ihl, len - ihl, s) == 0xffff;
}

/* An IPv4 TCP packet at p: ihl 20 + opt bytes of IP options, TCP with
 * topt bytes of options, n payload bytes from stream at seq; returns its
 * length.  Checksums right. */
static size_t tcp_build(unsigned char *p, size_t opt, size_t topt,
    uint32_t seq, size_t n, unsigned flags, uint16_t id)
{
	size_t ihl = 20 + opt, thl = 20 + topt, len = ihl + thl + n;
	unsigned long s;

	memset(p, 0, ihl + thl);
	p[0] = (unsigned char)(0x40 | ihl / 4);
	put16(p + 2, (uint16_t)len);
	put16(p + 4, id);
	put16(p + 6, 0x4000);
	p[8] = 64;
	p[9] = 6;
	put32(p + 12, 0xac1f0002);
	put32(p + 16, 0xac1f0003);
	if (opt)
		memset(p + 20, 1, opt);	/* NOPs */
	put16(p + ihl, 40000);
	put16(p + ihl + 2, 5201);
	put32(p + ihl + 4, seq);
	put32(p + ihl + 8, 0x01020304);
	p[ihl + 12] = (unsigned char)(thl / 4 << 4);
	p[ihl + 13] = (unsigned char)flags;
	put16(p + ihl + 14, 512);
	if (topt)
		memset(p + ihl + 20, 1, topt);
	memcpy(p + ihl + thl, stream + (seq - 1000), n);
	put16(p + 10, (uint16_t)~sum16(p, ihl, 0));
	s = sum16(p + 12, 8, 0) + 6 + (unsigned long)(thl + n);
	put16(p + ihl + 16, (uint16_t)~sum16(p + ihl, thl + n, s));
	return len;
}

static void vnet_tcp(struct tun_vnet *v, unsigned gso_size)
{
	memset(v, 0, sizeof(*v));
	v->flags = TUN_VNET_NEEDS_CSUM;
	v->gso_type = TUN_GSO_TCPV4;
	v->hdr_len = 52;
	v->gso_size = gso_size;
	v->csum_start = 20;
	v->csum_offset = 16;
}

/* Segment pkt and check every packet; returns the count or -1. */
static int seg_check(const struct tun_vnet *v, const unsigned char *pkt,
    size_t len, size_t mtu, unsigned flags_last)
{
	struct tun_seg s;
	size_t n, ihl = (size_t)(pkt[0] & 15) * 4, hlen, pay, total = 0;
	int count = 0, bad = 0;
	uint32_t seq0 = get32(pkt + ihl + 4);

	if (tun_seg_init(&s, v, pkt, len, mtu) < 0)
		return -1;
	hlen = ihl + (size_t)(pkt[ihl + 12] >> 4) * 4;
	while ((n = tun_seg_next(&s, out, sizeof(out))) > 0) {
		pay = n - hlen;
		if (n > mtu || get16(out + 2) != n || !ip_ok(out) ||
		    !l4_ok(out, n) ||
		    get16(out + 4) != (uint16_t)(get16(pkt + 4) + count) ||
		    get32(out + ihl + 4) != seq0 + total)
			bad++;
		if (memcmp(out + 20, pkt + 20, ihl - 20) != 0 ||
		    memcmp(out + hlen, pkt + hlen + total, pay) != 0)
			bad++;
		total += pay;
		if ((out[ihl + 13] & 0x09) != (total == len - hlen ?
		    flags_last & 0x09 : 0))
			bad++;
		if (++count > 200)
			break;
	}
	if (bad || total != len - hlen)
		printf("# seg_check: %d bad, %zu of %zu bytes, %d packets\n",
		    bad, total, len - hlen, count);
	return bad || total != len - hlen ? -1 : count;
}

static void test_vnet(void)
{
	static const unsigned char le[10] = { 1, 1, 0x34, 0, 0xa8, 0x05,
	    0x14, 0, 0x10, 0 };
	static const unsigned char be[10] = { 1, 1, 0, 0x34, 0x05, 0xa8,
	    0, 0x14, 0, 0x10 };
	struct tun_vnet v;
	unsigned char b[10];

	tun_vnet_get(&v, le, 1);
	CHECK(v.flags == 1 && v.gso_type == 1 && v.hdr_len == 52 &&
	    v.gso_size == 1448 && v.csum_start == 20 && v.csum_offset == 16,
	    "offload: vnet header read little-endian");
	tun_vnet_put(b, &v, 0);
	CHECK_BYTES(be, 10, b, 10, "offload: vnet header written big-endian");
	tun_vnet_get(&v, be, 0);
	tun_vnet_put(b, &v, 1);
	CHECK_BYTES(le, 10, b, 10, "offload: vnet header back little-endian");
}

/* The queue room a cut super-packet takes at most, against the room the
 * client waits for (TUN_SUPER_ROOM): the largest super-packet, with 40
 * bytes of IP and 40 of TCP options, cut to mtu. */
static int seg_room_ok(size_t mtu)
{
	static unsigned char seg[TUN_MTU_MAX];
	struct tun_vnet v;
	struct tun_seg s;
	size_t len, n, room = 0;

	len = tcp_build(super, 40, 40, 1000, TUN_SUPER_MAX - TUN_SEG_HDR_MAX,
	    0x10, 1);
	vnet_tcp(&v, (unsigned)(mtu - TUN_SEG_HDR_MAX));
	v.hdr_len = TUN_SEG_HDR_MAX;
	v.csum_start = 60;
	if (len != TUN_SUPER_MAX || tun_seg_init(&s, &v, super, len, mtu) < 0)
		return 0;
	while ((n = tun_seg_next(&s, seg, sizeof(seg))) > 0)
		room += n + TUN_SEG_WRAP;
	return room > TUN_SUPER_MAX && room <= TUN_SUPER_ROOM(mtu);
}

static void test_seg(void)
{
	unsigned char *p = super;
	struct tun_vnet v;
	struct tun_seg s;
	size_t len, n;

	len = tcp_build(p, 0, 12, 1000, 60000, 0x18 | 0x01, 7);
	vnet_tcp(&v, 1388);
	CHECK(seg_check(&v, p, len, 1420, 0x19) == 44,
	    "offload: 60000 bytes of TCP in 44 segments of <= 1420, "
	    "checksums, ids, seq, PSH/FIN on the last");
	CHECK(seg_check(&v, p, len, 576, 0x19) == (60000 + 523) / 524,
	    "offload: gso_size over the MTU: cut to the MTU");
	CHECK(seg_room_ok(TUN_MTU_MIN) && seg_room_ok(1400) &&
	    seg_room_ok(TUN_MTU_MAX),
	    "offload: a 64 KiB super-packet with 120 bytes of headers, cut "
	    "at MTU 576, 1400 and 9000, fits TUN_SUPER_ROOM");
	len = tcp_build(p, 8, 0, 1000, 5000, 0x10, 65535);
	CHECK(seg_check(&v, p, len, 1420, 0x10) == -1,
	    "offload: csum_start inside the IP header refused");
	v.csum_start = 28;
	CHECK(seg_check(&v, p, len, 1420, 0x10) == 4,
	    "offload: IP options copied, the id wraps");
	v.csum_start = 20;
	len = tcp_build(p, 0, 0, 1000, 0, 0x10, 1);
	CHECK(seg_check(&v, p, len, 1420, 0x10) == 1,
	    "offload: zero-length payload: one packet");
	len = tcp_build(p, 0, 0, 1000, 3000, 0x10, 1);
	v.gso_size = 0;
	CHECK(tun_seg_init(&s, &v, p, len, 1420) < 0,
	    "offload: gso_size 0 refused");
	vnet_tcp(&v, 1000);
	CHECK(tun_seg_init(&s, &v, p, len - 1, 1420) < 0,
	    "offload: IP length over the bytes read refused");
	CHECK(tun_seg_init(&s, &v, p, 19, 1420) < 0,
	    "offload: shorter than an IP header refused");
	p[0] = 0x44;
	CHECK(tun_seg_init(&s, &v, p, len, 1420) < 0,
	    "offload: IHL below 5 refused");
	p[0] = 0x4f;
	CHECK(tun_seg_init(&s, &v, p, 50, 1420) < 0,
	    "offload: IHL past the packet refused");
	p[0] = 0x45;
	p[9] = 17;
	CHECK(tun_seg_init(&s, &v, p, len, 1420) < 0,
	    "offload: TCPV4 GSO on a UDP packet refused");
	p[9] = 6;
	put16(p + 6, 0x2000);
	CHECK(tun_seg_init(&s, &v, p, len, 1420) < 0,
	    "offload: GSO on a fragment refused");
	put16(p + 6, 0x4000);
	v.csum_start = 3040;
	CHECK(tun_seg_init(&s, &v, p, len, 1420) < 0,
	    "offload: csum_start past the packet refused");
	v.csum_start = 20;
	v.csum_offset = 0xffff;
	CHECK(tun_seg_init(&s, &v, p, len, 1420) < 0,
	    "offload: csum_offset past the packet refused");
	v.csum_offset = 16;
	v.gso_type = 4;
	CHECK(tun_seg_init(&s, &v, p, len, 1420) < 0,
	    "offload: TCPv6 GSO on IPv4 refused");
	v.gso_type = TUN_GSO_TCPV4;
	p[32] = 0x40;
	CHECK(tun_seg_init(&s, &v, p, len, 1420) < 0,
	    "offload: TCP header length below 20 refused");
	p[32] = 0xf0;
	CHECK(tun_seg_init(&s, &v, p, 70, 1420) < 0,
	    "offload: TCP header past the packet refused");
	p[32] = 0x50;
	CHECK(tun_seg_init(&s, &v, p, len, 40) < 0,
	    "offload: headers filling the MTU refused");
	CHECK(tun_seg_init(&s, &v, p, len, 1420) == 0 &&
	    tun_seg_next(&s, out, 100) == 0,
	    "offload: an output buffer too small gets nothing");
	/* No GSO, NEEDS_CSUM: the kernel left the pseudo-header's sum. */
	len = tcp_build(p, 0, 0, 1000, 999, 0x18, 1);
	memset(&v, 0, sizeof(v));
	v.flags = TUN_VNET_NEEDS_CSUM;
	v.csum_start = 20;
	v.csum_offset = 16;
	put16(p + 36, (uint16_t)sum16(p + 12, 8, 6 + len - 20));
	CHECK(tun_seg_init(&s, &v, p, len, 1420) == 0 &&
	    (n = tun_seg_next(&s, out, sizeof(out))) == len &&
	    l4_ok(out, n) && tun_seg_next(&s, out, sizeof(out)) == 0,
	    "offload: no GSO: the checksum completed, one packet");
	CHECK(tun_seg_init(&s, &v, p, len, 1000) < 0,
	    "offload: no GSO, over the MTU: refused");
	/* USO: UDP cut at gso_size, each datagram's length and sum. */
	memset(p, 0, 28);
	p[0] = 0x45;
	put16(p + 2, 28 + 4000);
	p[8] = 64;
	p[9] = 17;
	put32(p + 12, 0x0a000001);
	put32(p + 16, 0x0a000002);
	memcpy(p + 28, stream, 4000);
	memset(&v, 0, sizeof(v));
	v.gso_type = TUN_GSO_UDP_L4;
	v.gso_size = 1000;
	n = 0;
	if (tun_seg_init(&s, &v, p, 4028, 1420) == 0)
		while ((len = tun_seg_next(&s, out, sizeof(out))) > 0 &&
		    len == 1028 && get16(out + 24) == 1008 && ip_ok(out) &&
		    l4_ok(out, len) &&
		    memcmp(out + 28, stream + n * 1000, 1000) == 0)
			n++;
	CHECK(n == 4, "offload: USO: 4 datagrams, lengths and checksums");
}

/* Feed the segments of a 20000-byte transfer into the coalescer. */
static size_t gro_feed(unsigned char *pkt, size_t mss, uint32_t seq,
    size_t bytes, unsigned psh_at)
{
	size_t off, n, len;
	unsigned i = 0;
	const unsigned char *sp;
	size_t taken = 0;

	for (off = 0; off < bytes; off += n, i++) {
		n = bytes - off < mss ? bytes - off : mss;
		len = tcp_build(pkt, 0, 12, seq + (uint32_t)off, n,
		    i == psh_at ? 0x18 : 0x10, (uint16_t)(100 + i));
		if (tun_gro_add(&gro, pkt, len) != TUN_GRO_HELD)
			break;
	}
	if (off >= bytes)
		taken = tun_gro_take(&gro, 1, &sp);
	return taken;
}

static void test_gro(void)
{
	static unsigned char pkt[2048], copy[2048];
	const unsigned char *sp;
	struct tun_vnet v;
	struct tun_seg s;
	size_t len, n, total = 0;
	int r, ok = 1;

	memset(&gro, 0, sizeof(gro));
	len = gro_feed(pkt, 1368, 1000, 20000, 99);
	tun_gro_take(&gro, 1, &sp);
	sp = gro.buf;
	tun_vnet_get(&v, sp, 1);
	CHECK(len == TUN_VNET_LEN + 52 + 20000 && v.gso_type == TUN_GSO_TCPV4 &&
	    v.gso_size == 1368 && v.csum_start == 20 && v.csum_offset == 16 &&
	    v.flags == TUN_VNET_NEEDS_CSUM && ip_ok(sp + TUN_VNET_LEN) &&
	    get16(sp + TUN_VNET_LEN + 2) == 52 + 20000,
	    "offload: 15 segments coalesced into one GSO packet");
	/* Segmented again, it gives back the same stream. */
	if (tun_seg_init(&s, &v, sp + TUN_VNET_LEN, len - TUN_VNET_LEN,
	    1420) == 0)
		while ((n = tun_seg_next(&s, out, sizeof(out))) > 0) {
			ok &= l4_ok(out, n) && get32(out + 24) == 1000 + total;
			memcpy(got + total, out + 52, n - 52);
			total += n - 52;
		}
	CHECK(ok && total == 20000 && memcmp(got, stream, 20000) == 0,
	    "offload: coalesced then segmented: the same bytes, checksums");

	/* One segment alone: as it came, a zero header. */
	len = tcp_build(pkt, 0, 0, 1000, 100, 0x10, 1);
	r = tun_gro_add(&gro, pkt, len);
	n = tun_gro_take(&gro, 1, &sp);
	CHECK(r == TUN_GRO_HELD && n == TUN_VNET_LEN + len &&
	    memcmp(sp, "\0\0\0\0\0\0\0\0\0\0", 10) == 0 &&
	    memcmp(sp + 10, pkt, len) == 0,
	    "offload: a lone segment goes out as it came");

	/* What must not be merged. */
	len = tcp_build(pkt, 0, 0, 1000, 1000, 0x10, 1);
	tun_gro_add(&gro, pkt, len);
	memcpy(copy, pkt, len);
	len = tcp_build(pkt, 0, 0, 3000, 1000, 0x10, 2);
	CHECK(tun_gro_add(&gro, pkt, len) == TUN_GRO_FLUSH,
	    "offload: a sequence gap is not merged");
	len = tcp_build(pkt, 0, 0, 2000, 1001, 0x10, 2);
	CHECK(tun_gro_add(&gro, pkt, len) == TUN_GRO_FLUSH,
	    "offload: a segment larger than the first is not merged");
	len = tcp_build(pkt, 0, 0, 2000, 1000, 0x10, 2);
	pkt[8] = 63;
	put16(pkt + 10, 0);
	put16(pkt + 10, (uint16_t)~sum16(pkt, 20, 0));
	CHECK(tun_gro_add(&gro, pkt, len) == TUN_GRO_FLUSH,
	    "offload: another TTL is not merged");
	len = tcp_build(pkt, 0, 0, 2000, 1000, 0x10, 2);
	put16(pkt + 22, 5202);
	put16(pkt + 36, (uint16_t)(get16(pkt + 36) - 1));
	CHECK(tun_gro_add(&gro, pkt, len) == TUN_GRO_FLUSH,
	    "offload: another flow is not merged");
	len = tcp_build(pkt, 0, 4, 2000, 1000, 0x10, 2);
	CHECK(tun_gro_add(&gro, pkt, len) == TUN_GRO_FLUSH,
	    "offload: other TCP options are not merged");
	len = tcp_build(pkt, 0, 0, 2000, 1000, 0x10, 2);
	pkt[40] ^= 1;
	CHECK(tun_gro_add(&gro, pkt, len) == TUN_GRO_FLUSH,
	    "offload: a bad TCP checksum is not merged");
	len = tcp_build(pkt, 4, 0, 2000, 1000, 0x10, 2);
	CHECK(tun_gro_add(&gro, pkt, len) == TUN_GRO_FLUSH,
	    "offload: IP options are not merged");
	len = tcp_build(pkt, 0, 0, 2000, 1000, 0x11, 2);
	CHECK(tun_gro_add(&gro, pkt, len) == TUN_GRO_FLUSH,
	    "offload: FIN is not merged");
	len = tcp_build(pkt, 0, 0, 2000, 1000, 0x10, 2);
	put16(pkt + 6, 0x2000);
	CHECK(tun_gro_add(&gro, pkt, len) == TUN_GRO_FLUSH,
	    "offload: a fragment is not merged");
	len = tcp_build(pkt, 0, 0, 2000, 1000, 0x10, 2);
	pkt[9] = 17;
	CHECK(tun_gro_add(&gro, pkt, len) == TUN_GRO_FLUSH,
	    "offload: UDP is not merged");
	len = tcp_build(pkt, 0, 0, 2000, 1000, 0x10, 2);
	CHECK(tun_gro_add(&gro, pkt, len - 1) == TUN_GRO_FLUSH,
	    "offload: a wrong IP length is not merged");
	n = tun_gro_take(&gro, 1, &sp);
	CHECK(n == TUN_VNET_LEN + 1040 && memcmp(sp + 10, copy, 1040) == 0 &&
	    tun_gro_take(&gro, 1, &sp) == 0,
	    "offload: after all that, the first segment alone, untouched");
	CHECK(tun_gro_add(&gro, pkt, len - 1) == TUN_GRO_PASS,
	    "offload: nothing held: a bad packet passes as it came");
	CHECK(tun_gro_add(&gro, pkt, 10) == TUN_GRO_PASS,
	    "offload: a 10-byte packet passes as it came");
	/* PSH on the 3rd closes the flow; a short one too. */
	len = gro_feed(pkt, 1000, 1000, 5000, 2);
	CHECK(len == 0, "offload: PSH ends a super-packet");
	tun_gro_take(&gro, 1, &sp);
	CHECK(gro_feed(pkt, 1000, 1000, 2500, 99) != 0 &&
	    gro_feed(pkt, 1000, 1000, 64 * 1000, 99) != 0 &&
	    gro_feed(pkt, 1000, 1000, 65 * 1000, 99) == 0,
	    "offload: a short last segment; at most 64 segments");
	tun_gro_take(&gro, 1, &sp);
	CHECK(gro_feed(pkt, 1400, 1000, 47 * 1400, 99) == 0,
	    "offload: never past 65535 bytes");
	tun_gro_take(&gro, 1, &sp);
}

void test_offload(void)
{
	size_t i;

	for (i = 0; i < sizeof(stream); i++)
		stream[i] = (unsigned char)(i * 7 + i / 251);
	test_vnet();
	test_seg();
	test_gro();
}
