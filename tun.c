/*
 * tun.c: the TUN device and the OS routing table.  Every OS-specific line
 * of candy lives in this file, one #if block per OS:
 *
 *   Linux      /dev/net/tun (TUNSETIFF); address, netmask, MTU, flags
 *              and routes by ioctl on an AF_INET socket.
 *   macOS      utun through a PF_SYSTEM control socket.
 *   FreeBSD    /dev/tun (cloning), renamed to the name asked for.
 *   OpenBSD, NetBSD
 *              the first free /dev/tunN.
 *   All the BSDs and macOS then share SIOCAIFADDR for the address and a
 *   PF_ROUTE socket for routes.
 *
 * Whatever the OS, tun_read and tun_write carry bare IPv4 packets.  Where
 * the kernel puts a 4-byte address family in front of each packet
 * (OpenBSD, macOS), readv/writev strip and add it here; the caller's
 * buffer and headroom are never touched.
 *
 * Only the Linux code runs in our tests.  The rest is written from the
 * manuals and the systems' own tools; each untested block says so (XXX).
 */
#if defined(__linux__)
#define _GNU_SOURCE	/* struct mmsghdr, sendmmsg, recvmmsg */
#endif
#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <net/if.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__)
#include <net/route.h>
#include <netinet/udp.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
/* From <linux/if_tun.h>, which needs kernel headers musl builds lack. */
#ifndef TUNSETIFF
#define TUNSETIFF	_IOW('T', 202, int)
#endif
#ifndef IFF_TUN
#define IFF_TUN		0x0001
#endif
#ifndef IFF_NO_PI
#define IFF_NO_PI	0x1000
#endif
#ifndef IFF_VNET_HDR
#define IFF_VNET_HDR	0x4000
#endif
#ifndef TUNSETOFFLOAD
#define TUNSETOFFLOAD	_IOW('T', 208, unsigned int)
#endif
#ifndef TUNSETVNETLE
#define TUNSETVNETLE	_IOW('T', 220, int)
#endif
#define TUN_F_CSUM	0x01
#define TUN_F_TSO4	0x02
#define TUN_F_TSO_ECN	0x08
#define TUN_F_USO4	0x20	/* Linux 6.2 */
#elif defined(__APPLE__)
#include <sys/kern_control.h>
#include <sys/sockio.h>
#include <sys/sys_domain.h>
#include <net/route.h>
#define TUN_AF_HEADER	1	/* utun: 4-byte address family first */
#define HAVE_SA_LEN	1
#elif defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
#include <sys/sockio.h>
#include <sys/stat.h>
#include <net/if_tun.h>
#include <net/route.h>
#if defined(__OpenBSD__)
#define TUN_AF_HEADER	1	/* OpenBSD's tun always has the header */
#endif
#define HAVE_SA_LEN	1
#else
#error "tun.c: no TUN support for this OS"
#endif

#include "candy.h"

#define IPV4_MIN_LEN	20
#define TUN_SKIP_MAX	16	/* non-IPv4 packets one tun_read may drop */

/* ---- Helpers every OS uses. ---- */

static uint32_t mask_of(int prefix)
{
	return prefix <= 0 ? 0 : 0xffffffffu << (32 - prefix);
}

static void sin_set(struct sockaddr_in *sin, uint32_t ip)
{
	memset(sin, 0, sizeof(*sin));
#ifdef HAVE_SA_LEN
	sin->sin_len = sizeof(*sin);
#endif
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(ip);
}

/* An ifreq naming ifname; ENAMETOOLONG when it does not fit. */
static int ifr_init(struct ifreq *ifr, const char *ifname)
{
	size_t n = strlen(ifname);

	memset(ifr, 0, sizeof(*ifr));
	if (n >= sizeof(ifr->ifr_name)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(ifr->ifr_name, ifname, n);
	return 0;
}

/* Close fd without losing the errno that made us give up. */
static void close_keep_errno(int fd)
{
	int e = errno;

	close(fd);
	errno = e;
}

static int if_mtu_set(int s, const char *ifname, int mtu)
{
	struct ifreq ifr;

	if (mtu <= 0)
		return 0;	/* keep the system's default */
	if (ifr_init(&ifr, ifname) < 0)
		return -1;
	ifr.ifr_mtu = mtu;
	return ioctl(s, SIOCSIFMTU, &ifr);
}

static int if_up(int s, const char *ifname)
{
	struct ifreq ifr;

	if (ifr_init(&ifr, ifname) < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return -1;
	if (ifr.ifr_flags & IFF_UP)
		return 0;
	ifr.ifr_flags |= IFF_UP;
	return ioctl(s, SIOCSIFFLAGS, &ifr);
}

/*
 * The portable way to move a batch of datagrams (see udp_send_batch and
 * udp_recv_batch in candy.h): one sendto or recvfrom a datagram.  An
 * entry of several datagrams (seg) goes as that many sendtos, and fails
 * with the first that fails.
 */
static size_t udp_send_each(int fd, struct udp_dgram *m, size_t n)
{
	struct sockaddr_in sa;
	size_t i, off, k, seg, sent = 0;

	for (i = 0; i < n; i++) {
		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = htonl(m[i].ip);
		sa.sin_port = htons(m[i].port);
		seg = m[i].seg == 0 || m[i].seg > m[i].len ? m[i].len :
		    m[i].seg;
		m[i].err = 0;
		for (off = 0; off < m[i].len || off == 0; off += k) {
			k = m[i].len - off < seg ? m[i].len - off : seg;
			if (sendto(fd, m[i].buf + off, k, 0,
			    (struct sockaddr *)&sa, sizeof(sa)) != (ssize_t)k) {
				m[i].err = errno == EWOULDBLOCK ? EAGAIN :
				    errno;
				break;
			}
			if (k == 0)
				break;
		}
		if (m[i].err == 0)
			sent++;
		else if (m[i].err == EAGAIN)
			while (++i < n)
				m[i].err = EAGAIN;
	}
	return sent;
}

static int udp_recv_each(int fd, struct udp_dgram *m, size_t n)
{
	struct sockaddr_in sa;
	socklen_t salen;
	ssize_t r;
	size_t i;

	for (i = 0; i < n; i++) {
		memset(&sa, 0, sizeof(sa));
		salen = sizeof(sa);
		if ((r = recvfrom(fd, m[i].buf, m[i].room, 0,
		    (struct sockaddr *)&sa, &salen)) < 0)
			return i > 0 ? (int)i : -1;
		m[i].len = m[i].seg = (size_t)r;
		m[i].ip = sa.sin_family == AF_INET ?
		    ntohl(sa.sin_addr.s_addr) : 0;
		m[i].port = ntohs(sa.sin_port);
		m[i].err = 0;
		m[i].waited_us = -1;
	}
	return (int)n;
}

#if defined(__linux__)
/* ---- Linux. ---- */

#define UDP_MMSG_MAX	64	/* entries per sendmmsg or recvmmsg */

static int udp_mmsg_missing;	/* ENOSYS once: the portable way since */

/*
 * The tunnel carries IPv4 only: without IPv6 on the device the kernel
 * sends it no router solicitations or MLD reports to drop.  Best effort
 * (no /proc, or IPv6 compiled out, changes nothing that matters).
 */
static void linux_ipv6_off(const char *ifname)
{
	char path[80];
	int fd;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6",
	    ifname);
	if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
		return;
	if (write(fd, "1", 1) < 0)
		log_debug("tun: cannot turn IPv6 off on %s", ifname);
	close(fd);
}

/* The device, plain or with the vnet header (flags). */
static int linux_tun_open(const char *name, char *ifname, int flags)
{
	struct ifreq ifr;
	int fd;

	memset(&ifr, 0, sizeof(ifr));
	if (name != NULL && ifr_init(&ifr, name) < 0)
		return -1;
	ifr.ifr_flags = (short)(IFF_TUN | IFF_NO_PI | flags);
	if ((fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)) < 0)
		return -1;
	/* EBUSY here: another process has a device of that name open. */
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		close_keep_errno(fd);
		return -1;
	}
	memcpy(ifname, ifr.ifr_name, IFNAMSIZ);
	ifname[IFNAMSIZ - 1] = '\0';
	linux_ipv6_off(ifname);
	return fd;
}

/* see candy.h */
int tun_open(const char *name, char *ifname)
{
	return linux_tun_open(name, ifname, 0);
}

/* >>> offload block (issue 11): the device with TSO and checksum offload */
/*
 * see candy.h.  The vnet header's 16-bit fields are in the CPU's order
 * unless TUNSETVNETLE makes them little-endian (Linux 4.0): we ask for
 * little-endian, and a kernel that refuses leaves the CPU's, which we
 * then find out.  USO (UDP segmentation, Linux 6.2) is asked for first;
 * an older kernel refuses the whole set, and gets it without.
 */
int tun_open_offload(const char *name, char *ifname, int *le)
{
	static const uint16_t one = 1;
	int fd, on = 1;

	if ((fd = linux_tun_open(name, ifname, IFF_VNET_HDR)) < 0)
		return -1;
	if (ioctl(fd, TUNSETVNETLE, &on) == 0)
		*le = 1;
	else
		*le = *(const unsigned char *)&one == 1;
	if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 |
	    TUN_F_TSO_ECN | TUN_F_USO4)) < 0 &&
	    ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 |
	    TUN_F_TSO_ECN)) < 0) {
		close_keep_errno(fd);
		return -1;
	}
	return fd;
}

/* see candy.h */
void udp_buffers_raise(int fd, int rcv, int snd)
{
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &snd, sizeof(snd)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));
}

/* see candy.h */
int udp_offload_on(int fd)
{
	int on = 1;

	return setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof(on)) == 0;
}

/* >>> batch block (issue 11): sendmmsg and recvmmsg */
/*
 * One batch entry as sendmmsg and recvmmsg take it: its buffer, its
 * peer's address, and room for one control message (UDP_SEGMENT's
 * uint16_t to send, UDP_GRO's int received).
 */
union udp_ctl {
	struct cmsghdr c;
	char b[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct timespec))];
};

static void udp_mmsg_init(struct mmsghdr *mm, struct sockaddr_in *sa,
    struct iovec *iov, union udp_ctl *u, void *buf, size_t len)
{
	iov->iov_base = buf;
	iov->iov_len = len;
	memset(mm, 0, sizeof(*mm));
	memset(u, 0, sizeof(*u));
	mm->msg_hdr.msg_name = sa;
	mm->msg_hdr.msg_namelen = sizeof(*sa);
	mm->msg_hdr.msg_iov = iov;
	mm->msg_hdr.msg_iovlen = 1;
	mm->msg_hdr.msg_control = u->b;
	mm->msg_hdr.msg_controllen = sizeof(u->b);
}

/* The entry to send: the address, and UDP_SEGMENT for a train. */
static void udp_mmsg_out(struct mmsghdr *mm, struct sockaddr_in *sa,
    struct iovec *iov, union udp_ctl *u, const struct udp_dgram *d)
{
	struct cmsghdr *cm;
	uint16_t s = (uint16_t)d->seg;

	udp_mmsg_init(mm, sa, iov, u, d->buf, d->len);
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_addr.s_addr = htonl(d->ip);
	sa->sin_port = htons(d->port);
	if (d->seg == 0 || d->seg >= d->len) {
		mm->msg_hdr.msg_control = NULL;
		mm->msg_hdr.msg_controllen = 0;
		return;
	}
	mm->msg_hdr.msg_controllen = CMSG_SPACE(sizeof(s));
	cm = CMSG_FIRSTHDR(&mm->msg_hdr);
	cm->cmsg_level = SOL_UDP;
	cm->cmsg_type = UDP_SEGMENT;
	cm->cmsg_len = CMSG_LEN(sizeof(s));
	memcpy(CMSG_DATA(cm), &s, sizeof(s));
}

/*
 * sendmmsg sends entries until one fails, and returns how many it sent:
 * the error of the one after them is reported by calling again from it,
 * which fails it alone.  Then the rest are sent, unless the socket's
 * buffer is full (EAGAIN), which fails them all at once.
 */
static size_t udp_mmsg_send(int fd, struct mmsghdr *mm, struct udp_dgram *m,
    size_t n)
{
	size_t i = 0, sent = 0;
	int r, e;

	while (i < n) {
		if (udp_mmsg_missing)
			return sent + udp_send_each(fd, m + i, n - i);
		r = sendmmsg(fd, mm + i, (unsigned)(n - i), MSG_DONTWAIT);
		if (r > 0) {
			for (e = 0; e < r; e++)
				m[i + (size_t)e].err = 0;
			i += (size_t)r;
			sent += (size_t)r;
			continue;
		}
		e = r < 0 ? errno : EAGAIN;
		if (e == EINTR)
			continue;
		if (e == ENOSYS) {	/* a kernel older than 3.0 */
			udp_mmsg_missing = 1;
			continue;
		}
		if (e == EWOULDBLOCK)
			e = EAGAIN;
		m[i++].err = e;
		while (e == EAGAIN && i < n)
			m[i++].err = e;
	}
	return sent;
}

/* see candy.h */
size_t udp_send_batch(int fd, struct udp_dgram *m, size_t n)
{
	struct mmsghdr mm[UDP_MMSG_MAX];
	struct sockaddr_in sa[UDP_MMSG_MAX];
	struct iovec iov[UDP_MMSG_MAX];
	union udp_ctl u[UDP_MMSG_MAX];
	size_t i, k, done, sent = 0;

	for (done = 0; done < n; done += k) {
		k = n - done < UDP_MMSG_MAX ? n - done : UDP_MMSG_MAX;
		for (i = 0; i < k; i++)
			udp_mmsg_out(&mm[i], &sa[i], &iov[i], &u[i],
			    &m[done + i]);
		sent += udp_mmsg_send(fd, mm, m + done, k);
	}
	return sent;
}

/* see candy.h */
int udp_timestamps_on(int fd)
{
	int on = 1;

	return setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) == 0;
}

/* The first control message of LEVEL and TYPE in MH that holds at least
 * LEN bytes of data, or NULL. */
static struct cmsghdr *udp_cmsg_find(struct msghdr *mh, int level, int type,
    size_t len)
{
	struct cmsghdr *cm;

	for (cm = CMSG_FIRSTHDR(mh); cm != NULL; cm = CMSG_NXTHDR(mh, cm))
		if (cm->cmsg_level == level && cm->cmsg_type == type &&
		    cm->cmsg_len >= CMSG_LEN(len))
			return cm;
	return NULL;
}

/* How long before now (the real-time clock, read once a batch) the
 * kernel stamped an entry's arrival (SCM_TIMESTAMPNS): microseconds, -1
 * when there is no stamp or it is not plausible (a clock step; qemu-user
 * passing it unconverted). */
static int64_t udp_mmsg_waited(struct msghdr *mh, const struct timespec *now)
{
	struct cmsghdr *cm;
	struct timespec ts;
	int64_t us;

	cm = udp_cmsg_find(mh, SOL_SOCKET, SCM_TIMESTAMPNS, sizeof(ts));
	if (cm == NULL || now->tv_sec == 0)
		return -1;
	memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
	us = ((int64_t)now->tv_sec - (int64_t)ts.tv_sec) * 1000000 +
	    ((int64_t)now->tv_nsec - (int64_t)ts.tv_nsec) / 1000;
	return us >= 0 && us < 1000000 ? us : -1;
}

/* The size of the datagrams in a received entry (UDP_GRO's control
 * message; without one the entry is one datagram). */
static size_t udp_mmsg_seg(struct msghdr *mh, size_t len)
{
	struct cmsghdr *cm;
	size_t seg = len;
	int g;

	cm = udp_cmsg_find(mh, SOL_UDP, UDP_GRO, sizeof(g));
	if (cm != NULL) {
		memcpy(&g, CMSG_DATA(cm), sizeof(g));
		if (g > 0 && (size_t)g < seg)
			seg = (size_t)g;
	}
	return seg;
}

/* see candy.h */
int udp_recv_batch(int fd, struct udp_dgram *m, size_t n)
{
	struct mmsghdr mm[UDP_MMSG_MAX];
	struct sockaddr_in sa[UDP_MMSG_MAX];
	struct iovec iov[UDP_MMSG_MAX];
	union udp_ctl u[UDP_MMSG_MAX];
	struct timespec now;
	size_t i;
	int r;

	if (n > UDP_MMSG_MAX)
		n = UDP_MMSG_MAX;
	if (udp_mmsg_missing)
		return udp_recv_each(fd, m, n);
	for (i = 0; i < n; i++) {
		udp_mmsg_init(&mm[i], &sa[i], &iov[i], &u[i], m[i].buf,
		    m[i].room);
		memset(&sa[i], 0, sizeof(sa[i]));
	}
	if ((r = recvmmsg(fd, mm, (unsigned)n, MSG_DONTWAIT, NULL)) < 0) {
		if (errno != ENOSYS)
			return -1;
		udp_mmsg_missing = 1;
		return udp_recv_each(fd, m, n);
	}
	if (clock_gettime(CLOCK_REALTIME, &now) < 0)
		now.tv_sec = 0;		/* no waits known */
	for (i = 0; i < (size_t)r; i++) {
		m[i].len = mm[i].msg_len;
		m[i].ip = sa[i].sin_family == AF_INET ?
		    ntohl(sa[i].sin_addr.s_addr) : 0;
		m[i].port = ntohs(sa[i].sin_port);
		m[i].seg = udp_mmsg_seg(&mm[i].msg_hdr, m[i].len);
		m[i].waited_us = udp_mmsg_waited(&mm[i].msg_hdr, &now);
		m[i].err = 0;
	}
	return r;
}
/* <<< batch block */
/* <<< offload block */

static int if_addr_set(int s, const char *ifname, unsigned long req,
    uint32_t ip)
{
	struct ifreq ifr;
	struct sockaddr_in sin;

	if (ifr_init(&ifr, ifname) < 0)
		return -1;
	sin_set(&sin, ip);
	memcpy(&ifr.ifr_addr, &sin, sizeof(sin));
	return ioctl(s, req, &ifr);
}

/*
 * SIOCSIFADDR leaves an unchanged address alone and replaces a different
 * one (giving it a /32 on a point-to-point device); SIOCSIFNETMASK then
 * sets the prefix, and the kernel adds the route to the tunnel network.
 * Both are no-ops when nothing changes, so calling this again after a
 * reconnect disturbs nothing.
 */
/* see candy.h */
int tun_configure(const char *ifname, uint32_t addr, int prefix, int mtu)
{
	int s, r = -1;

	if (prefix < 1 || prefix > 32) {
		errno = EINVAL;
		return -1;
	}
	if ((s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (if_mtu_set(s, ifname, mtu) == 0 &&
	    if_addr_set(s, ifname, SIOCSIFADDR, addr) == 0 &&
	    if_addr_set(s, ifname, SIOCSIFNETMASK, mask_of(prefix)) == 0 &&
	    if_up(s, ifname) == 0)
		r = 0;
	close_keep_errno(s);
	return r;
}

/*
 * SIOCADDRT or SIOCDELRT for dst/mask on the device, in the main table,
 * as `ip route add DST/N dev IF` does.  (rtnetlink would need the kernel
 * headers, which the static musl build does not have; the ioctl gives
 * the same route and reports errors through errno.)  The kernel refuses
 * a mask that is not contiguous (EINVAL).  A route to the same network
 * through another device does not stop ours; EEXIST means this very
 * route exists.
 */
static int linux_route(unsigned long req, const char *ifname, uint32_t dst,
    uint32_t mask)
{
	struct rtentry rt;
	struct sockaddr_in sin;
	char dev[IFNAMSIZ];
	int s, r;

	if (strlen(ifname) >= sizeof(dev)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(dev, ifname, strlen(ifname) + 1);
	memset(&rt, 0, sizeof(rt));
	sin_set(&sin, dst & mask);
	memcpy(&rt.rt_dst, &sin, sizeof(sin));
	sin_set(&sin, mask);
	memcpy(&rt.rt_genmask, &sin, sizeof(sin));
	rt.rt_flags = RTF_UP;
	rt.rt_dev = dev;
	if ((s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	r = ioctl(s, req, &rt);
	close_keep_errno(s);
	return r;
}

/* see candy.h */
int tun_route_add(const char *ifname, uint32_t dst, uint32_t mask)
{
	if (linux_route(SIOCADDRT, ifname, dst, mask) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* see candy.h */
int tun_route_del(const char *ifname, uint32_t dst, uint32_t mask)
{
	if (linux_route(SIOCDELRT, ifname, dst, mask) < 0 && errno != ESRCH)
		return -1;
	return 0;
}

/* see candy.h: the device is not persistent, so closing removes it and
 * every route through it. */
void tun_close(int fd, const char *ifname)
{
	(void)ifname;
	close(fd);
}

/*
 * rtnetlink (rtnetlink(7)), for what the ioctls cannot do: read the
 * routing table, and routes and rules outside the main table.
 */
#define NL_BUF_SIZE	16384
#define NL_DEL_MAX	16	/* copies of one rule a sweep removes */

struct nl_req {
	struct nlmsghdr h;
	union {
		struct rtmsg rt;
		struct fib_rule_hdr fr;
	} u;
	unsigned char attrs[64];
};

static void nl_attr_put(struct nl_req *r, unsigned short type,
    const void *data, size_t len)
{
	struct rtattr *a = (struct rtattr *)(void *)
	    ((unsigned char *)r + NLMSG_ALIGN(r->h.nlmsg_len));

	a->rta_type = type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	memcpy(RTA_DATA(a), data, len);
	r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

static void nl_attr_put32(struct nl_req *r, unsigned short type, uint32_t v)
{
	nl_attr_put(r, type, &v, sizeof(v));
}

/* NLMSG_OK and NLMSG_NEXT without their mix of signed and unsigned. */
static int nl_ok(const struct nlmsghdr *h, size_t left)
{
	return left >= sizeof(*h) && h->nlmsg_len >= sizeof(*h) &&
	    h->nlmsg_len <= left;
}

static struct nlmsghdr *nl_next(struct nlmsghdr *h, size_t *left)
{
	size_t step = NLMSG_ALIGN(h->nlmsg_len);

	*left = step < *left ? *left - step : 0;
	return (struct nlmsghdr *)(void *)((unsigned char *)h + step);
}

static int nl_open(void)
{
	struct sockaddr_nl sa;
	int s;

	if ((s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC,
	    NETLINK_ROUTE)) < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.nl_family = AF_NETLINK;
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close_keep_errno(s);
		return -1;
	}
	return s;
}

/*
 * Send one request with an acknowledgement asked for and read the answer:
 * 0 when the kernel said yes, -1 with errno its error.  Blocking, but the
 * kernel answers at once.
 */
static int nl_talk(struct nl_req *r)
{
	static unsigned char buf[NL_BUF_SIZE];
	struct nlmsghdr *h;
	ssize_t n;
	int s, err = EPROTO;

	r->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	r->h.nlmsg_seq = 1;
	if ((s = nl_open()) < 0)
		return -1;
	if (send(s, r, r->h.nlmsg_len, 0) < 0 ||
	    (n = recv(s, buf, sizeof(buf), 0)) < 0) {
		close_keep_errno(s);
		return -1;
	}
	close(s);
	h = (struct nlmsghdr *)(void *)buf;
	if (nl_ok(h, (size_t)n) && h->nlmsg_type == NLMSG_ERROR &&
	    h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
		err = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
		if (err == 0)
			return 0;
	}
	errno = err;
	return -1;
}

/*
 * Send a dump request and hand each message of the answer to take, up to
 * NLMSG_DONE (or an error message): 0, or -1 with errno.  Bounded by the
 * table's size, which the kernel sends once.
 */
static int nl_dump(struct nlmsghdr *req,
    void (*take)(struct nlmsghdr *h, void *arg), void *arg)
{
	static unsigned char buf[NL_BUF_SIZE];
	struct nlmsghdr *h;
	ssize_t n;
	size_t left;
	int s, done = 0, i;

	req->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req->nlmsg_seq = 1;
	if ((s = nl_open()) < 0)
		return -1;
	if (send(s, req, req->nlmsg_len, 0) < 0) {
		close_keep_errno(s);
		return -1;
	}
	for (i = 0; !done && i < 100000; i++) {
		if ((n = recv(s, buf, sizeof(buf), 0)) <= 0) {
			if (n == 0)
				errno = EPROTO;	/* the dump ended unfinished */
			close_keep_errno(s);
			return -1;
		}
		left = (size_t)n;
		for (h = (struct nlmsghdr *)(void *)buf; nl_ok(h, left);
		    h = nl_next(h, &left)) {
			if (h->nlmsg_type == NLMSG_DONE ||
			    h->nlmsg_type == NLMSG_ERROR) {
				done = 1;
				break;
			}
			take(h, arg);
		}
	}
	close(s);
	return 0;
}

/* A main-table IPv4 route message: its destination network and whether
 * it leaves through the interface with index skip (then 0 is returned). */
static int nl_route_parse(struct nlmsghdr *h, int skip, struct cidr *out)
{
	struct rtmsg *rt = NLMSG_DATA(h);
	struct rtattr *a;
	int len = (int)RTM_PAYLOAD(h), oif = 0;
	uint32_t dst = 0, table;

	if (h->nlmsg_type != RTM_NEWROUTE ||
	    h->nlmsg_len < NLMSG_LENGTH(sizeof(*rt)) ||
	    rt->rtm_family != AF_INET ||
	    rt->rtm_type != RTN_UNICAST)
		return 0;
	table = rt->rtm_table;
	for (a = RTM_RTA(rt); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type == RTA_OIF && RTA_PAYLOAD(a) >= 4)
			memcpy(&oif, RTA_DATA(a), 4);
		else if (a->rta_type == RTA_DST && RTA_PAYLOAD(a) >= 4)
			memcpy(&dst, RTA_DATA(a), 4);
		else if (a->rta_type == RTA_TABLE && RTA_PAYLOAD(a) >= 4)
			memcpy(&table, RTA_DATA(a), 4);
	}
	if (table != RT_TABLE_MAIN || (skip != 0 && oif == skip))
		return 0;
	out->addr = ntohl(dst);
	out->prefix = rt->rtm_dst_len;
	return 1;
}

/* tun_routes_read's state while the dump is read. */
struct nl_routes {
	struct cidr *out;
	int skip, max, count;
};

/* Routes past max are read and dropped. */
static void nl_route_take(struct nlmsghdr *h, void *arg)
{
	struct nl_routes *rs = arg;

	if (rs->count < rs->max && nl_route_parse(h, rs->skip,
	    &rs->out[rs->count]))
		rs->count++;
}

/* see candy.h */
int tun_routes_read(const char *ifname, struct cidr *out, int max)
{
	struct nl_req r;
	struct nl_routes rs;

	rs.out = out;
	rs.max = max;
	rs.count = 0;
	rs.skip = ifname != NULL ? (int)if_nametoindex(ifname) : 0;
	memset(&r, 0, sizeof(r));
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
	r.h.nlmsg_type = RTM_GETROUTE;
	r.u.rt.rtm_family = AF_INET;
	if (nl_dump(&r.h, nl_route_take, &rs) < 0)
		return -1;
	return rs.count;
}

/*
 * The full tunnel (an exit node), by policy routing as wg-quick does:
 *
 *   ip route add default dev IF table TUN_FULL_TABLE
 *   ip rule add pref TUN_FULL_PREF     table main suppress_prefixlength 0
 *   ip rule add pref TUN_FULL_PREF + 1 not fwmark TUN_FULL_MARK
 *       table TUN_FULL_TABLE
 *
 * and our own sockets (server, STUN, peers) carry the mark.  Chosen over
 * 0.0.0.0/1 + 128.0.0.0/1 with host routes via the underlay because the
 * mark follows every socket we open, whatever address it talks to: the
 * peers' endpoints come and go, move with NAT, and each would need its
 * own host route (added before the first datagram, removed later, found
 * again after a crash); with the mark there is nothing per address.  The
 * main table keeps every route more precise than a default (the LAN).
 * What it leaves behind a SIGKILL: the route goes with the device; the
 * two rules stay, harmless (they point to an empty table) and tagged
 * with protocol TUN_FULL_PROTO, and the next start removes them.
 */
#define TUN_FULL_TABLE	7331
#define TUN_FULL_MARK	0x7331
#define TUN_FULL_PREF	7330
#define TUN_FULL_PROTO	73	/* rt_protos: unassigned */

static void nl_rule_init(struct nl_req *r, int type, int pref, int flags)
{
	unsigned char proto = TUN_FULL_PROTO;

	memset(r, 0, sizeof(*r));
	r->h.nlmsg_len = NLMSG_LENGTH(sizeof(struct fib_rule_hdr));
	r->h.nlmsg_type = (unsigned short)type;
	r->h.nlmsg_flags = type == RTM_NEWRULE ? NLM_F_CREATE | NLM_F_EXCL : 0;
	r->u.fr.family = AF_INET;
	r->u.fr.action = FR_ACT_TO_TBL;
	r->u.fr.flags = (unsigned)flags;
	r->u.fr.table = RT_TABLE_UNSPEC;
	nl_attr_put32(r, FRA_PRIORITY, (uint32_t)pref);
	nl_attr_put(r, FRA_PROTOCOL, &proto, 1);
}

/* The two rules, added (type RTM_NEWRULE) or deleted. */
static int tun_full_rules(int type)
{
	struct nl_req r;
	int ok = 0;

	nl_rule_init(&r, type, TUN_FULL_PREF, 0);
	nl_attr_put32(&r, FRA_TABLE, RT_TABLE_MAIN);
	nl_attr_put32(&r, FRA_SUPPRESS_PREFIXLEN, 0);
	if (nl_talk(&r) < 0 && !(type == RTM_NEWRULE && errno == EEXIST))
		ok = -1;
	nl_rule_init(&r, type, TUN_FULL_PREF + 1, FIB_RULE_INVERT);
	nl_attr_put32(&r, FRA_TABLE, TUN_FULL_TABLE);
	nl_attr_put32(&r, FRA_FWMARK, TUN_FULL_MARK);
	nl_attr_put32(&r, FRA_FWMASK, 0xffffffffu);
	if (nl_talk(&r) < 0 && !(type == RTM_NEWRULE && errno == EEXIST))
		ok = -1;
	return ok;
}

/* The default route of our table through the device. */
static int tun_full_route(int type, const char *ifname)
{
	struct nl_req r;
	unsigned oif = if_nametoindex(ifname);

	if (oif == 0)
		return -1;
	memset(&r, 0, sizeof(r));
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
	r.h.nlmsg_type = (unsigned short)type;
	r.h.nlmsg_flags = type == RTM_NEWROUTE ? NLM_F_CREATE | NLM_F_REPLACE :
	    0;
	r.u.rt.rtm_family = AF_INET;
	r.u.rt.rtm_table = RT_TABLE_UNSPEC;
	r.u.rt.rtm_protocol = TUN_FULL_PROTO;
	r.u.rt.rtm_scope = RT_SCOPE_LINK;
	r.u.rt.rtm_type = RTN_UNICAST;
	nl_attr_put32(&r, RTA_TABLE, TUN_FULL_TABLE);
	nl_attr_put32(&r, RTA_OIF, oif);
	return nl_talk(&r);
}

/* see candy.h */
int tun_full_tunnel(const char *ifname, int on)
{
	int i;

	if (on) {
		if (tun_full_route(RTM_NEWROUTE, ifname) < 0)
			return -1;
		if (tun_full_rules(RTM_NEWRULE) < 0) {
			tun_full_tunnel(ifname, 0);
			return -1;
		}
		return 0;
	}
	/* Off, or the sweep at start (ifname NULL): every copy goes. */
	for (i = 0; i < NL_DEL_MAX && tun_full_rules(RTM_DELRULE) == 0; i++)
		;
	if (ifname != NULL && tun_full_route(RTM_DELROUTE, ifname) < 0 &&
	    errno != ESRCH && errno != ENODEV)
		return -1;
	return 0;
}

/* see candy.h */
int tun_socket_mark(int fd)
{
	int mark = TUN_FULL_MARK;

	return setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
}

/*
 * Our IPv4 addresses, from one RTM_GETADDR dump, not getifaddrs: that
 * gives the same, through code of the C library (its own netlink reader)
 * that a client would keep resident for this alone (issue 11).  Each
 * address with its interface's flags (SIOCGIFFLAGS on the address's label,
 * as getifaddrs names it) and its broadcast address, 0 if none.  At most
 * max; the count, or -1.
 */
struct if_addr {
	uint32_t ip, bcast;
	unsigned flags;
	int index;
	char name[IFNAMSIZ];
};

static void if_addr_parse(struct nlmsghdr *h, struct if_addr *a)
{
	struct ifaddrmsg *ifa = NLMSG_DATA(h);
	struct rtattr *at;
	int len = (int)IFA_PAYLOAD(h), have_local = 0;
	size_t n;

	memset(a, 0, sizeof(*a));
	for (at = IFA_RTA(ifa); RTA_OK(at, len); at = RTA_NEXT(at, len)) {
		if (at->rta_type == IFA_LOCAL && RTA_PAYLOAD(at) >= 4) {
			a->ip = get32(RTA_DATA(at));
			have_local = 1;
		} else if (at->rta_type == IFA_ADDRESS && RTA_PAYLOAD(at) >= 4 &&
		    !have_local) {
			a->ip = get32(RTA_DATA(at));
		} else if (at->rta_type == IFA_BROADCAST &&
		    RTA_PAYLOAD(at) >= 4) {
			a->bcast = get32(RTA_DATA(at));
		} else if (at->rta_type == IFA_LABEL) {
			n = strnlen(RTA_DATA(at), RTA_PAYLOAD(at));
			if (n < sizeof(a->name))
				memcpy(a->name, RTA_DATA(at), n);
		}
	}
	a->index = (int)ifa->ifa_index;
}

/* if_addrs_read's state while the dump is read. */
struct nl_addrs {
	struct if_addr *out;
	int max, count;
};

static void nl_addr_take(struct nlmsghdr *h, void *arg)
{
	struct nl_addrs *as = arg;

	if (h->nlmsg_type == RTM_NEWADDR && as->count < as->max &&
	    h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct ifaddrmsg)) &&
	    ((struct ifaddrmsg *)NLMSG_DATA(h))->ifa_family == AF_INET)
		if_addr_parse(h, &as->out[as->count++]);
}

static int if_addrs_read(struct if_addr *out, int max)
{
	struct {
		struct nlmsghdr h;
		struct ifaddrmsg ifa;
	} r;
	struct nl_addrs as;
	struct ifreq ifr;
	int s, count, i;

	as.out = out;
	as.max = max;
	as.count = 0;
	memset(&r, 0, sizeof(r));
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
	r.h.nlmsg_type = RTM_GETADDR;
	r.ifa.ifa_family = AF_INET;
	if (nl_dump(&r.h, nl_addr_take, &as) < 0)
		return -1;
	count = as.count;
	if ((s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	for (i = 0; i < count; i++) {
		memset(&ifr, 0, sizeof(ifr));
		ifr.ifr_ifindex = out[i].index;
		if (out[i].name[0] == '\0' && ioctl(s, SIOCGIFNAME, &ifr) == 0)
			memcpy(out[i].name, ifr.ifr_name, sizeof(out[i].name) - 1);
		if (ifr_init(&ifr, out[i].name) == 0 &&
		    ioctl(s, SIOCGIFFLAGS, &ifr) == 0)
			out[i].flags = (unsigned short)ifr.ifr_flags;
	}
	close(s);
	return count;
}

/* The most addresses if_lan_address and if_addresses look at. */
#define IF_ADDRS_MAX	64

/* see candy.h */
uint32_t if_lan_address(void)
{
	struct if_addr a[IF_ADDRS_MAX];
	int n = if_addrs_read(a, IF_ADDRS_MAX), i;

	for (i = 0; i < n; i++)
		if ((a[i].flags & IFF_UP) &&
		    !(a[i].flags & (IFF_LOOPBACK | IFF_POINTOPOINT)) &&
		    strncmp(a[i].name, "candy", 5) != 0)
			return a[i].ip;
	return 0;
}

/* see candy.h */
int if_addresses(uint32_t *out, int max)
{
	struct if_addr a[IF_ADDRS_MAX];
	int n = if_addrs_read(a, IF_ADDRS_MAX), i, k = 0;

	for (i = 0; i < n && k < max; i++) {
		out[k++] = a[i].ip;
		if ((a[i].flags & IFF_BROADCAST) && a[i].bcast != 0 && k < max)
			out[k++] = a[i].bcast;
	}
	return k;
}

#else
/* ---- macOS and the BSDs. ---- */

#if defined(__APPLE__)
/*
 * macOS: a utun interface is a PF_SYSTEM socket connected to the utun
 * kernel control; unit 0 lets the kernel pick the first free utunN.  The
 * interface goes away with the socket.  The names are from
 * <net/if_utun.h>, which not every SDK ships.
 * XXX untested: written from xnu's kern_control and if_utun sources.
 */
#ifndef UTUN_CONTROL_NAME
#define UTUN_CONTROL_NAME	"com.apple.net.utun_control"
#endif
#ifndef UTUN_OPT_IFNAME
#define UTUN_OPT_IFNAME		2
#endif

/* see candy.h */
int tun_open(const char *name, char *ifname)
{
	struct ctl_info ci;
	struct sockaddr_ctl sc;
	socklen_t len = IFNAMSIZ;
	int fd;

	if ((fd = socket(PF_SYSTEM, SOCK_DGRAM, SYSPROTO_CONTROL)) < 0)
		return -1;
	memset(&ci, 0, sizeof(ci));
	snprintf(ci.ctl_name, sizeof(ci.ctl_name), "%s", UTUN_CONTROL_NAME);
	memset(&sc, 0, sizeof(sc));
	sc.sc_len = sizeof(sc);
	sc.sc_family = AF_SYSTEM;
	sc.ss_sysaddr = AF_SYS_CONTROL;
	sc.sc_unit = 0;
	if (ioctl(fd, CTLIOCGINFO, &ci) < 0)
		goto fail;
	sc.sc_id = ci.ctl_id;
	if (connect(fd, (struct sockaddr *)&sc, sizeof(sc)) < 0 ||
	    getsockopt(fd, SYSPROTO_CONTROL, UTUN_OPT_IFNAME, ifname,
	    &len) < 0 ||
	    fcntl(fd, F_SETFL, O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		goto fail;
	ifname[IFNAMSIZ - 1] = '\0';
	if (name != NULL && strcmp(name, ifname) != 0)
		log_info("macOS names its tunnels utunN: %s is %s", name,
		    ifname);
	return fd;
fail:
	close_keep_errno(fd);
	return -1;
}

#elif defined(__FreeBSD__)
/*
 * FreeBSD: opening /dev/tun clones a new tunN, so we never pick up a
 * leftover one; SIOCSIFNAME then gives it the name asked for.  A tun
 * interface outlives its descriptor, hence SIOCIFDESTROY in tun_close.
 * XXX untested: written from tun(4), ifconfig(8) and if_tuntap.c.
 */
static void tun_destroy(const char *ifname);

/* Rename the interface ifname to name. */
static int if_rename(const char *ifname, const char *name)
{
	struct ifreq ifr;
	char newname[IFNAMSIZ];
	int s, r;

	if (ifr_init(&ifr, ifname) < 0 ||
	    (s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	snprintf(newname, sizeof(newname), "%s", name);
	ifr.ifr_data = newname;
	if ((r = ioctl(s, SIOCSIFNAME, &ifr)) < 0 && errno == EEXIST)
		log_warnx("%s exists: left over from an earlier run? "
		    "(ifconfig %s destroy)", name, name);
	close_keep_errno(s);
	return r;
}

/* see candy.h */
int tun_open(const char *name, char *ifname)
{
	struct stat st;
	const char *dev;
	int fd, off = 0;	/* TUNSIFHEAD off: bare IP packets */

	if (name != NULL && strlen(name) >= IFNAMSIZ) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = open("/dev/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)) < 0)
		return -1;
	if (fstat(fd, &st) < 0 ||
	    (dev = devname(st.st_rdev, S_IFCHR)) == NULL ||
	    ioctl(fd, TUNSIFHEAD, &off) < 0) {
		close_keep_errno(fd);
		return -1;
	}
	snprintf(ifname, IFNAMSIZ, "%s", dev);
	if (name == NULL || strcmp(name, ifname) == 0)
		return fd;
	if (if_rename(ifname, name) < 0) {
		close_keep_errno(fd);
		tun_destroy(ifname);
		return -1;
	}
	snprintf(ifname, IFNAMSIZ, "%s", name);
	return fd;
}

#else
/*
 * OpenBSD, NetBSD: the first /dev/tunN nobody has open (EBUSY
 * means taken; a missing node ends the search).  These systems cannot
 * rename an interface, so the name asked for is not honoured.
 * XXX untested: written from tun(4) of each system.
 */
#define TUN_UNITS_MAX	256

/* see candy.h */
int tun_open(const char *name, char *ifname)
{
	char path[32];
	int fd = -1, unit;

	for (unit = 0; unit < TUN_UNITS_MAX; unit++) {
		snprintf(path, sizeof(path), "/dev/tun%d", unit);
		fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
		if (fd >= 0 || errno != EBUSY)
			break;
	}
	if (fd < 0)
		return -1;
#if defined(TUNSIFHEAD) && !defined(TUN_AF_HEADER)
	{
		int off = 0;	/* bare IP packets, no family header */

		if (ioctl(fd, TUNSIFHEAD, &off) < 0) {
			close_keep_errno(fd);
			return -1;
		}
	}
#endif
	snprintf(ifname, IFNAMSIZ, "tun%d", unit);
	if (name != NULL && strcmp(name, ifname) != 0)
		log_info("this system cannot rename interfaces: %s is %s",
		    name, ifname);
	return fd;
}
#endif

/* An IPv4 address out of a sockaddr that may be cut short (sa_len), as
 * getifaddrs gives netmasks on the BSDs. */
static uint32_t sa_ip(const struct sockaddr *sa)
{
	struct sockaddr_in sin;
	size_t n = (size_t)sa->sa_len < sizeof(sin) ? sa->sa_len : sizeof(sin);

	memset(&sin, 0, sizeof(sin));
	memcpy(&sin, sa, n);
	return ntohl(sin.sin_addr.s_addr);
}

/*
 * Make addr/mask the only IPv4 address of the interface: delete the others
 * (an address from an earlier session), keep it if it is already there.
 * A point-to-point interface wants a far end; we give our own address, as
 * wg-quick does on FreeBSD and macOS, and route the tunnel network
 * ourselves (tun_configure).  XXX untested; OpenBSD might prefer no far
 * end at all.
 */
static int bsd_addr_set(int s, const char *ifname, uint32_t addr,
    uint32_t mask)
{
	struct ifaddrs *all, *i;
	struct ifaliasreq ifra;
	struct ifreq ifr;
	struct sockaddr_in sin;
	int have = 0;

	if (ifr_init(&ifr, ifname) < 0 || getifaddrs(&all) < 0)
		return -1;
	for (i = all; i != NULL; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET ||
		    strcmp(i->ifa_name, ifname) != 0)
			continue;
		if (sa_ip(i->ifa_addr) == addr && i->ifa_netmask != NULL &&
		    sa_ip(i->ifa_netmask) == mask) {
			have = 1;
			continue;
		}
		sin_set(&sin, sa_ip(i->ifa_addr));
		memcpy(&ifr.ifr_addr, &sin, sizeof(sin));
		if (ioctl(s, SIOCDIFADDR, &ifr) < 0)
			log_warn("%s: cannot remove an old address", ifname);
	}
	freeifaddrs(all);
	if (have)
		return 0;
	memset(&ifra, 0, sizeof(ifra));
	memcpy(ifra.ifra_name, ifr.ifr_name, sizeof(ifra.ifra_name));
	sin_set(&sin, addr);
	memcpy(&ifra.ifra_addr, &sin, sizeof(sin));
	memcpy(&ifra.ifra_broadaddr, &sin, sizeof(sin));
	sin_set(&sin, mask);
	memcpy(&ifra.ifra_mask, &sin, sizeof(sin));
	return ioctl(s, SIOCAIFADDR, &ifra);
}

/* The interface's (first) IPv4 address. */
static int if_addr_get(const char *ifname, uint32_t *ip)
{
	struct ifreq ifr;
	int s, r = -1;

	if (ifr_init(&ifr, ifname) < 0 ||
	    (s = socket(AF_INET, SOCK_DGRAM, 0)) < 0)
		return -1;
	if (ioctl(s, SIOCGIFADDR, &ifr) == 0) {
		*ip = sa_ip(&ifr.ifr_addr);
		r = 0;
	}
	close_keep_errno(s);
	return r;
}

/*
 * RTM_ADD or RTM_DELETE of dst/mask through the interface, on a PF_ROUTE
 * socket (route(4)).  An interface route has no RTF_GATEWAY and the
 * interface's own address as gateway, as `route add -net N -iface A`
 * sends; the kernel finds the interface from that address.  The socket
 * answers errors through write(); EEXIST (add) and ESRCH (delete) mean
 * the table already is as asked.  The sockaddrs follow the header in
 * RTA_ bit order; a sockaddr_in (16 bytes) needs no padding on any of
 * these systems (they round to 4 or 8).
 * XXX untested.
 */
static int bsd_route(int type, const char *ifname, uint32_t dst,
    uint32_t mask)
{
	struct {
		struct rt_msghdr h;
		unsigned char sa[3 * sizeof(struct sockaddr_in)];
	} m;
	struct sockaddr_in sin;
	uint32_t gw;
	size_t n = 0;
	ssize_t w;
	int s;

	memset(&m, 0, sizeof(m));
	m.h.rtm_version = RTM_VERSION;
	m.h.rtm_type = (unsigned char)type;
	m.h.rtm_flags = RTF_UP | RTF_STATIC;
	m.h.rtm_seq = 1;
#if defined(__OpenBSD__)
	m.h.rtm_hdrlen = sizeof(m.h);
#endif
	sin_set(&sin, dst & mask);
	memcpy(m.sa + n, &sin, sizeof(sin));
	n += sizeof(sin);
	m.h.rtm_addrs = RTA_DST;
	if (type == RTM_ADD) {
		if (if_addr_get(ifname, &gw) < 0)
			return -1;
		sin_set(&sin, gw);
		memcpy(m.sa + n, &sin, sizeof(sin));
		n += sizeof(sin);
		m.h.rtm_addrs |= RTA_GATEWAY;
	}
	if (mask == 0xffffffffu) {
		m.h.rtm_flags |= RTF_HOST;
	} else {
		sin_set(&sin, mask);
		memcpy(m.sa + n, &sin, sizeof(sin));
		n += sizeof(sin);
		m.h.rtm_addrs |= RTA_NETMASK;
	}
	m.h.rtm_msglen = (unsigned short)(sizeof(m.h) + n);

	if ((s = socket(PF_ROUTE, SOCK_RAW, 0)) < 0)
		return -1;
	w = write(s, &m, m.h.rtm_msglen);
	close_keep_errno(s);
	if (w >= 0 || (type == RTM_ADD && errno == EEXIST) ||
	    (type == RTM_DELETE && errno == ESRCH))
		return 0;
	return -1;
}

/* see candy.h */
int tun_route_add(const char *ifname, uint32_t dst, uint32_t mask)
{
	return bsd_route(RTM_ADD, ifname, dst, mask);
}

/* see candy.h */
int tun_route_del(const char *ifname, uint32_t dst, uint32_t mask)
{
	return bsd_route(RTM_DELETE, ifname, dst, mask);
}

/* see candy.h.  XXX untested. */
int tun_configure(const char *ifname, uint32_t addr, int prefix, int mtu)
{
	uint32_t mask = mask_of(prefix);
	int s, r = -1;

	if (prefix < 1 || prefix > 32) {
		errno = EINVAL;
		return -1;
	}
	if ((s = socket(AF_INET, SOCK_DGRAM, 0)) < 0)
		return -1;
	if (if_mtu_set(s, ifname, mtu) == 0 &&
	    bsd_addr_set(s, ifname, addr, mask) == 0 &&
	    if_up(s, ifname) == 0)
		r = 0;
	close_keep_errno(s);
	/* A point-to-point address brings no route to its network. */
	if (r == 0 && prefix < 32)
		r = tun_route_add(ifname, addr & mask, mask);
	return r;
}

#if !defined(__APPLE__)
/* A BSD tun interface outlives its descriptor: destroy it (best effort,
 * errno kept). */
static void tun_destroy(const char *ifname)
{
	struct ifreq ifr;
	int s, e = errno;

	if (ifr_init(&ifr, ifname) == 0 &&
	    (s = socket(AF_INET, SOCK_DGRAM, 0)) >= 0) {
		(void)ioctl(s, SIOCIFDESTROY, &ifr);
		close(s);
	}
	errno = e;
}
#endif

/* see candy.h.  XXX not written for the BSDs and macOS yet (a PF_ROUTE
 * RTM_GET dump, sysctl NET_RT_DUMP): the table is unknown. */
int tun_routes_read(const char *ifname, struct cidr *out, int max)
{
	(void)ifname;
	(void)out;
	(void)max;
	return -1;
}

/* see candy.h.  XXX no full tunnel on the BSDs and macOS yet: it would be
 * 0/1 + 128/1 through the device plus host routes via the underlay, or
 * setfib/rtable for our sockets. */
int tun_full_tunnel(const char *ifname, int on)
{
	(void)ifname;
	if (!on)
		return 0;
	errno = EOPNOTSUPP;
	return -1;
}

/* see candy.h: no marks here (see tun_full_tunnel). */
int tun_socket_mark(int fd)
{
	(void)fd;
	return 0;
}

/* see candy.h: routes through the device go with it. */
void tun_close(int fd, const char *ifname)
{
	close(fd);
#if defined(__APPLE__)
	(void)ifname;	/* utun goes with its socket */
#else
	tun_destroy(ifname);
#endif
}
/* see candy.h: offloads are Linux's. */
int tun_open_offload(const char *name, char *ifname, int *le)
{
	errno = EOPNOTSUPP;
	return -1;
}

void udp_buffers_raise(int fd, int rcv, int snd)
{
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));
}

int udp_offload_on(int fd)
{
	return 0;
}

/* see candy.h: one system call a datagram here.  XXX FreeBSD and NetBSD
 * have sendmmsg and recvmmsg too; not used yet. */
size_t udp_send_batch(int fd, struct udp_dgram *m, size_t n)
{
	return udp_send_each(fd, m, n);
}

int udp_recv_batch(int fd, struct udp_dgram *m, size_t n)
{
	return udp_recv_each(fd, m, n);
}

int udp_timestamps_on(int fd)
{
	return 0;
}
#endif	/* macOS and the BSDs */

/* ---- Packets, every OS. ---- */

/* One packet from the device, the family header (if any) stripped:
 * its length, 0 for a packet that is not IPv4, -1 with errno. */
static ssize_t tun_read_raw(int fd, unsigned char *buf, size_t len)
{
#ifdef TUN_AF_HEADER
	unsigned char af[4];
	struct iovec iov[2];
	ssize_t n;

	iov[0].iov_base = af;
	iov[0].iov_len = sizeof(af);
	iov[1].iov_base = buf;
	iov[1].iov_len = len;
	if ((n = readv(fd, iov, 2)) < 0)
		return -1;
	if (n < (ssize_t)sizeof(af) || get32(af) != AF_INET)
		return 0;
	return n - (ssize_t)sizeof(af);
#else
	return read(fd, buf, len);
#endif
}

/*
 * see candy.h.  Packets that are not whole IPv4 packets are dropped here:
 * Linux, for one, sends IPv6 router solicitations on a new device.
 */
ssize_t tun_read(int fd, unsigned char *buf, size_t len)
{
	ssize_t n;
	int i;

	for (i = 0; i < TUN_SKIP_MAX; i++) {
		if ((n = tun_read_raw(fd, buf, len)) < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR ? 0 : -1;
		if (n >= IPV4_MIN_LEN && buf[0] >> 4 == 4 &&
		    get16(buf + 2) <= n)
			return n;
		if (log_debug_on)
			log_debug("tun: dropped a %zd-byte packet: not IPv4 "
			    "or cut short", n);
	}
	return 0;
}

/* see candy.h */
int tun_write(int fd, const unsigned char *pkt, size_t len)
{
	ssize_t n;
#ifdef TUN_AF_HEADER
	unsigned char af[4];
	struct iovec iov[2];

	put32(af, AF_INET);
	iov[0].iov_base = af;
	iov[0].iov_len = sizeof(af);
	iov[1].iov_base = (void *)pkt;
	iov[1].iov_len = len;
	n = writev(fd, iov, 2);
#else
	n = write(fd, pkt, len);
#endif
	if (n >= 0 || errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == ENOBUFS || errno == EINTR)
		return 0;	/* sent, or dropped for want of room */
	return -1;
}

/* see candy.h */
ssize_t tun_read_vnet(int fd, unsigned char *buf, size_t len)
{
	ssize_t n;

	if ((n = read(fd, buf, len)) >= 0)
		return n;
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ?
	    0 : -1;
}

/* see candy.h */
int tun_write_vnet(int fd, const unsigned char *vh, const unsigned char *pkt,
    size_t len)
{
	static const unsigned char zero[TUN_VNET_LEN];
	struct iovec iov[2];

	iov[0].iov_base = (void *)(vh != NULL ? vh : zero);
	iov[0].iov_len = TUN_VNET_LEN;
	iov[1].iov_base = (void *)pkt;
	iov[1].iov_len = len;
	if (writev(fd, iov, 2) >= 0 || errno == EAGAIN ||
	    errno == EWOULDBLOCK || errno == ENOBUFS || errno == EINTR)
		return 0;
	return -1;
}

/* ---- The LAN address, macOS and the BSDs (Linux's is above). ---- */

#if !defined(__linux__)
/* see candy.h */
uint32_t if_lan_address(void)
{
	struct ifaddrs *all, *i;
	struct sockaddr_in sin;
	uint32_t ip = 0;

	if (getifaddrs(&all) < 0)
		return 0;
	for (i = all; i != NULL && ip == 0; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET ||
		    !(i->ifa_flags & IFF_UP) ||
		    (i->ifa_flags & (IFF_LOOPBACK | IFF_POINTOPOINT)) ||
		    strncmp(i->ifa_name, "candy", 5) == 0)
			continue;
		memcpy(&sin, i->ifa_addr, sizeof(sin));
		ip = ntohl(sin.sin_addr.s_addr);
	}
	freeifaddrs(all);
	return ip;
}

/* see candy.h */
int if_addresses(uint32_t *out, int max)
{
	struct ifaddrs *all, *i;
	struct sockaddr_in sin;
	int n = 0;

	if (getifaddrs(&all) < 0)
		return 0;
	for (i = all; i != NULL && n < max; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET)
			continue;
		memcpy(&sin, i->ifa_addr, sizeof(sin));
		out[n++] = ntohl(sin.sin_addr.s_addr);
		if ((i->ifa_flags & IFF_BROADCAST) && i->ifa_broadaddr != NULL &&
		    i->ifa_broadaddr->sa_family == AF_INET && n < max) {
			memcpy(&sin, i->ifa_broadaddr, sizeof(sin));
			out[n++] = ntohl(sin.sin_addr.s_addr);
		}
	}
	freeifaddrs(all);
	return n;
}
#endif

/* >>> offload section (issue 11): segmentation and coalescing, pure */
/*
 * Linux hands us TCP super-packets (TSO) and takes them back (GRO in
 * user space) when the device has IFF_VNET_HDR; the Linux block above
 * switches that on.  What follows touches no device and no OS call: the
 * unit tests run it on any machine.  Every field is read with get16 and
 * friends, every length checked before the bytes behind it are read.
 */

#define TCP_FIN		0x01
#define TCP_PSH		0x08
#define TCP_ACK		0x10
#define TCP_CWR		0x80
#define IP_DF		0x4000
#define IP_FRAG_MASK	0xbfff	/* reserved bit, MF, fragment offset */
#define TCP_HDR_MIN	20
#define UDP_HDR_LEN	8

static unsigned vnet_get16(const unsigned char *p, int le)
{
	return le ? (unsigned)(p[0] | p[1] << 8) : get16(p);
}

static void vnet_put16(unsigned char *p, unsigned v, int le)
{
	if (le) {
		p[0] = (unsigned char)v;
		p[1] = (unsigned char)(v >> 8);
	} else
		put16(p, (uint16_t)v);
}

/* see candy.h */
void tun_vnet_get(struct tun_vnet *h, const unsigned char *p, int le)
{
	h->flags = p[0];
	h->gso_type = p[1];
	h->hdr_len = vnet_get16(p + 2, le);
	h->gso_size = vnet_get16(p + 4, le);
	h->csum_start = vnet_get16(p + 6, le);
	h->csum_offset = vnet_get16(p + 8, le);
}

/* see candy.h */
void tun_vnet_put(unsigned char *p, const struct tun_vnet *h, int le)
{
	p[0] = (unsigned char)h->flags;
	p[1] = (unsigned char)h->gso_type;
	vnet_put16(p + 2, h->hdr_len, le);
	vnet_put16(p + 4, h->gso_size, le);
	vnet_put16(p + 6, h->csum_start, le);
	vnet_put16(p + 8, h->csum_offset, le);
}

static uint16_t csum_fold(uint64_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/*
 * RFC 1071: the ones' complement sum of p[0..n) added to sum (big-endian
 * 16-bit words), unfolded.  The bulk is summed in 32-bit words in the
 * CPU's own byte order, loaded by memcpy (any alignment): §2(B) says the
 * sum is then the same with its two bytes swapped on a little-endian CPU,
 * and 2^16 = 1 modulo 0xffff lets 32-bit words stand for pairs of 16.
 * This is the hot loop of segmentation and coalescing.
 */
static uint64_t csum_add(uint64_t sum, const unsigned char *p, size_t n)
{
	static const uint16_t one = 1;
	uint64_t acc = 0;
	uint32_t w;
	uint16_t s;

	for (; n >= 4; p += 4, n -= 4) {
		memcpy(&w, p, 4);
		acc += w;
	}
	s = csum_fold(acc);
	if (*(const unsigned char *)&one == 1)
		s = (uint16_t)(s >> 8 | s << 8);
	sum += s;
	if (n >= 2) {
		sum += get16(p);
		p += 2;
		n -= 2;
	}
	if (n == 1)
		sum += (uint64_t)p[0] << 8;
	return sum;
}

/* RFC 793 §3.1, RFC 768: the pseudo-header of an IPv4 packet's
 * transport part of l4len bytes. */
static uint64_t csum_pseudo(const unsigned char *ip, unsigned proto,
    size_t l4len)
{
	return csum_add(0, ip + 12, 8) + proto + l4len;
}

static void ip_csum_set(unsigned char *ip, size_t ihl)
{
	ip[10] = ip[11] = 0;
	put16(ip + 10, (uint16_t)~csum_fold(csum_add(0, ip, ihl)));
}

/* see candy.h */
int tun_seg_init(struct tun_seg *s, const struct tun_vnet *h,
    const unsigned char *pkt, size_t len, size_t mtu)
{
	size_t tot;

	memset(s, 0, sizeof(*s));
	if (len < IPV4_MIN_LEN || pkt[0] >> 4 != 4)
		return -1;
	s->ihl = (size_t)(pkt[0] & 15) * 4;
	tot = get16(pkt + 2);
	if (s->ihl < IPV4_MIN_LEN || tot < s->ihl || tot > len)
		return -1;
	s->pkt = pkt;
	s->len = tot;
	s->gso = (int)(h->gso_type & ~(unsigned)TUN_GSO_ECN);
	if ((h->flags & TUN_VNET_NEEDS_CSUM) &&
	    (h->csum_start < s->ihl || h->csum_start >= tot ||
	    h->csum_offset + 2 > tot - h->csum_start))
		return -1;
	if (s->gso == TUN_GSO_NONE) {
		if (tot > mtu)
			return -1;
		if (h->flags & TUN_VNET_NEEDS_CSUM) {
			s->csum_at = h->csum_start;
			s->csum_field = h->csum_start + h->csum_offset;
		}
		return 0;
	}
	if ((get16(pkt + 6) & IP_FRAG_MASK) != 0 || h->gso_size == 0)
		return -1;
	if (s->gso == TUN_GSO_TCPV4 && pkt[9] == IPPROTO_TCP) {
		if (tot < s->ihl + TCP_HDR_MIN)
			return -1;
		s->hlen = s->ihl + (size_t)(pkt[s->ihl + 12] >> 4) * 4;
		if (s->hlen < s->ihl + TCP_HDR_MIN)
			return -1;
	} else if (s->gso == TUN_GSO_UDP_L4 && pkt[9] == IPPROTO_UDP)
		s->hlen = s->ihl + UDP_HDR_LEN;
	else
		return -1;
	if (s->hlen > tot || s->hlen >= mtu)
		return -1;
	/* A gso_size larger than our MTU allows: smaller segments are
	 * as good to TCP and UDP alike. */
	s->mss = h->gso_size < mtu - s->hlen ? h->gso_size : mtu - s->hlen;
	return 0;
}

/* Packet s->idx of a GSO packet: payload [off, off + n) into out. */
static size_t seg_write(struct tun_seg *s, unsigned char *out, size_t n)
{
	const unsigned char *p = s->pkt;
	unsigned char *l4 = out + s->ihl;
	size_t l4len = s->hlen - s->ihl + n;
	int last = s->off + n >= s->len - s->hlen;
	uint16_t sum;

	memcpy(out, p, s->hlen);
	memcpy(out + s->hlen, p + s->hlen + s->off, n);
	put16(out + 2, (uint16_t)(s->hlen + n));
	put16(out + 4, (uint16_t)(get16(p + 4) + s->idx));
	ip_csum_set(out, s->ihl);
	if (s->gso == TUN_GSO_TCPV4) {
		put32(l4 + 4, get32(p + s->ihl + 4) + (uint32_t)s->off);
		if (!last)
			l4[13] &= (unsigned char)~(TCP_FIN | TCP_PSH);
		if (s->idx > 0)
			l4[13] &= (unsigned char)~TCP_CWR;
		l4[16] = l4[17] = 0;
		sum = (uint16_t)~csum_fold(csum_pseudo(out, IPPROTO_TCP,
		    l4len) + csum_add(0, l4, l4len));
		put16(l4 + 16, sum);
	} else {
		put16(l4 + 4, (uint16_t)l4len);
		l4[6] = l4[7] = 0;
		sum = (uint16_t)~csum_fold(csum_pseudo(out, IPPROTO_UDP,
		    l4len) + csum_add(0, l4, l4len));
		put16(l4 + 6, sum == 0 ? 0xffff : sum);	/* RFC 768 */
	}
	s->off += n;
	s->idx++;
	return s->hlen + n;
}

/* see candy.h */
size_t tun_seg_next(struct tun_seg *s, unsigned char *out, size_t outlen)
{
	size_t n, left;
	uint16_t sum;

	if (s->pkt == NULL)
		return 0;
	if (s->gso == TUN_GSO_NONE) {
		if (s->idx > 0 || s->len > outlen)
			return 0;
		s->idx++;
		memcpy(out, s->pkt, s->len);
		if (s->csum_at != 0) {
			/* The field holds the pseudo-header's sum: the sum
			 * from csum_start over it completes it. */
			sum = (uint16_t)~csum_fold(csum_add(0, out + s->csum_at,
			    s->len - s->csum_at));
			put16(out + s->csum_field, sum == 0 ? 0xffff : sum);
		}
		return s->len;
	}
	left = s->len - s->hlen - s->off;
	/* A GSO packet without payload still goes out once. */
	if ((left == 0 && s->idx > 0) || outlen < s->hlen)
		return 0;
	n = left < s->mss ? left : s->mss;
	if (n > outlen - s->hlen)
		return 0;
	return seg_write(s, out, n);
}

/*
 * A segment we may merge: IPv4 without options, not a fragment, TCP with
 * payload, flags ACK (PSH allowed), no urgent data, both checksums right
 * (the merged packet's checksum is the kernel's to finish: a segment
 * damaged before must not come out of it whole).  Its TCP header length
 * in *hlen.
 */
static int gro_candidate(const unsigned char *p, size_t len, size_t *hlen)
{
	size_t doff;

	if (len < IPV4_MIN_LEN + TCP_HDR_MIN || len > TUN_SUPER_MAX ||
	    p[0] != 0x45 || get16(p + 2) != len || p[9] != IPPROTO_TCP ||
	    (get16(p + 6) & IP_FRAG_MASK) != 0)
		return 0;
	doff = (size_t)(p[32] >> 4) * 4;
	if (doff < TCP_HDR_MIN || IPV4_MIN_LEN + doff >= len ||
	    (p[33] & ~TCP_PSH) != TCP_ACK || get16(p + 38) != 0)
		return 0;
	if (csum_fold(csum_add(0, p, IPV4_MIN_LEN)) != 0xffff ||
	    csum_fold(csum_pseudo(p, IPPROTO_TCP, len - IPV4_MIN_LEN) +
	    csum_add(0, p + IPV4_MIN_LEN, len - IPV4_MIN_LEN)) != 0xffff)
		return 0;
	*hlen = IPV4_MIN_LEN + doff;
	return 1;
}

/* May p (a candidate with header length hlen) follow what g holds? */
static int gro_fits(const struct tun_gro *g, const unsigned char *p,
    size_t len, size_t hlen)
{
	const unsigned char *h = g->buf + TUN_VNET_LEN;
	size_t n = len - hlen;

	if (g->closed || g->nseg >= TUN_GRO_SEGS || hlen != g->hlen ||
	    n > g->mss || g->len + n > TUN_SUPER_MAX)
		return 0;
	if (p[1] != h[1] || p[8] != h[8] ||
	    (get16(p + 6) & IP_DF) != (get16(h + 6) & IP_DF) ||
	    (!(get16(p + 6) & IP_DF) && get16(p + 4) != g->id) ||
	    memcmp(p + 12, h + 12, 8) != 0)
		return 0;
	/* Ports; sequence; ack; flags (the holder's have no PSH, or it
	 * would be closed); window; options. */
	return memcmp(p + 20, h + 20, 4) == 0 && get32(p + 24) == g->next_seq &&
	    memcmp(p + 28, h + 28, 4) == 0 && (p[33] & ~TCP_PSH) == h[33] &&
	    memcmp(p + 34, h + 34, 2) == 0 &&
	    memcmp(p + 40, h + 40, hlen - 40) == 0;
}

/* see candy.h */
int tun_gro_add(struct tun_gro *g, const unsigned char *pkt, size_t len)
{
	unsigned char *h = g->buf + TUN_VNET_LEN;
	size_t hlen, n;

	if (!gro_candidate(pkt, len, &hlen))
		return g->len != 0 ? TUN_GRO_FLUSH : TUN_GRO_PASS;
	n = len - hlen;
	if (g->len == 0) {
		memcpy(h, pkt, len);
		g->len = len;
		g->hlen = hlen;
		g->mss = n;
		g->nseg = 1;
		g->closed = (pkt[33] & TCP_PSH) != 0;
		g->next_seq = get32(pkt + 24) + (uint32_t)n;
		g->id = (uint16_t)(get16(pkt + 4) + 1);
		return TUN_GRO_HELD;
	}
	if (!gro_fits(g, pkt, len, hlen))
		return TUN_GRO_FLUSH;
	memcpy(h + g->len, pkt + hlen, n);
	g->len += n;
	g->nseg++;
	g->next_seq += (uint32_t)n;
	g->id++;
	if (n < g->mss || (pkt[33] & TCP_PSH)) {
		h[33] |= pkt[33] & TCP_PSH;
		g->closed = 1;
	}
	return TUN_GRO_HELD;
}

/* see candy.h */
size_t tun_gro_take(struct tun_gro *g, int le, const unsigned char **out)
{
	unsigned char *h = g->buf + TUN_VNET_LEN;
	struct tun_vnet v;
	size_t len = g->len;

	if (len == 0)
		return 0;
	memset(&v, 0, sizeof(v));
	if (g->nseg > 1) {
		/* CHECKSUM_PARTIAL: the TCP field holds the pseudo-header's
		 * sum, the kernel (or the segments it cuts) completes it. */
		put16(h + 2, (uint16_t)len);
		ip_csum_set(h, IPV4_MIN_LEN);
		put16(h + 36, csum_fold(csum_pseudo(h, IPPROTO_TCP,
		    len - IPV4_MIN_LEN)));
		v.flags = TUN_VNET_NEEDS_CSUM;
		v.gso_type = TUN_GSO_TCPV4;
		v.hdr_len = (unsigned)g->hlen;
		v.gso_size = (unsigned)g->mss;
		v.csum_start = IPV4_MIN_LEN;
		v.csum_offset = 16;
	}
	tun_vnet_put(g->buf, &v, le);
	*out = g->buf;
	g->len = 0;
	return TUN_VNET_LEN + len;
}
/* <<< offload section */
