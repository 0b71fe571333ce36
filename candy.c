/*
 * candy.c: the candy program.  Logging and clocks, the Candy message codec
 * (PROTOCOL 2), options and the config file, then the server session,
 * the client session, and main.  Each mode runs one poll() loop.
 */
#ifdef __linux__
#include <sys/epoll.h>
#endif
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <bearssl.h>

#include "candy.h"

/* ---- Logging and clocks. ---- */

int log_debug_on;
static int log_timestamps = 1;
int64_t fake_now_ms;
static const char *log_peer_from;	/* see log_peer */

void log_init(int debug, int timestamps)
{
	log_debug_on = debug;
	log_timestamps = timestamps;
}

const char *log_peer(const char *from)
{
	const char *was = log_peer_from;

	log_peer_from = from;
	return was;
}

/*
 * One line of at most 2 KiB to fd in one write, the rest of it (if the
 * fd takes less) in more.  Not stdio: its FILE machinery is pages of the
 * C library a client would keep resident for its log and state files
 * alone (issue 11).  Returns 0, or -1 when a write failed.
 */
static int fd_print(int fd, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	size_t len, off = 0;
	ssize_t n;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (r < 0)
		return -1;
	len = (size_t)r < sizeof(buf) ? (size_t)r : sizeof(buf) - 1;
	while (off < len) {
		if ((n = write(fd, buf + off, len - off)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		off += (size_t)n;
	}
	return 0;
}

static void log_write(const char *level, const char *text, const char *tail)
{
	char stamp[32] = "";

	if (log_timestamps) {
		time_t t = (time_t)wall_s();
		struct tm tm;

		if (localtime_r(&t, &tm) == NULL ||
		    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S ",
		    &tm) == 0)
			stamp[0] = '\0';
	}
	fd_print(STDERR_FILENO, "%s[%s] %s%s\n", stamp, level, text, tail);
}

/*
 * Lines a peer can cause at will (a refusal, a malformed frame) are limited
 * per format string: LOG_BURST lines in a LOG_WINDOW_S window, the rest
 * counted.  The first line of the next window says how many were
 * suppressed, and log_tick reports a count that no later line carries.
 * The table is small and keyed by the format's address: a format that
 * takes the slot of another first reports the other's count.
 */
#define LOG_BURST	10
#define LOG_WINDOW_S	10
#define LOG_LIMITS	32

static struct log_limit {
	const char *fmt;	/* NULL: slot unused */
	const char *level;
	int64_t start_s;	/* the window began */
	unsigned n;		/* lines written in the window */
	unsigned long suppressed;
	char last[256];		/* the last line suppressed */
} log_limits[LOG_LIMITS];
static unsigned long log_suppressed_total;

static int64_t log_now_s(void)
{
	return now_ms() / 1000;
}

/* Report a slot's suppressed lines, if any, and forget them. */
static void log_limit_report(struct log_limit *l)
{
	char tail[64];

	if (l->suppressed == 0)
		return;
	snprintf(tail, sizeof(tail), " (%lu more like it suppressed)",
	    l->suppressed);
	log_write(l->level, l->last, tail);
	log_suppressed_total -= l->suppressed;
	l->suppressed = 0;
}

void log_tick(void)
{
	int64_t now;
	size_t i;

	if (log_suppressed_total == 0)
		return;
	now = log_now_s();
	for (i = 0; i < LOG_LIMITS; i++)
		if (log_limits[i].suppressed > 0 &&
		    now - log_limits[i].start_s >= LOG_WINDOW_S)
			log_limit_report(&log_limits[i]);
}

/* 1 when a line of fmt may be written now; 0 when it is counted instead
 * (*tail then unused).  Sets tail to the count of the window before. */
static int log_limit_pass(const char *level, const char *fmt,
    const char *line, char *tail, size_t taillen)
{
	struct log_limit *l = &log_limits[((uintptr_t)fmt * 2654435761u >> 7) %
	    LOG_LIMITS];
	int64_t now = log_now_s();

	if (l->fmt != fmt) {
		log_limit_report(l);
		l->fmt = fmt;
		l->level = level;
		l->start_s = now;
		l->n = 0;
	}
	if (now - l->start_s >= LOG_WINDOW_S) {
		if (l->suppressed > 0)
			snprintf(tail, taillen, " (%lu more suppressed)",
			    l->suppressed);
		log_suppressed_total -= l->suppressed;
		l->suppressed = 0;
		l->start_s = now;
		l->n = 0;
	}
	if (l->n >= LOG_BURST) {
		l->suppressed++;
		log_suppressed_total++;
		snprintf(l->last, sizeof(l->last), "%s", line);
		return 0;
	}
	l->n++;
	return 1;
}

static void log_emit(const char *level, int err, int limited, const char *fmt,
    va_list ap)
{
	char line[1024], tail[160] = "";
	int saved = errno;
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	if (err)
		snprintf(line + n, sizeof(line) - n, ": %s", strerror(saved));
	/* A line about a connection names its peer, whoever wrote it. */
	n = strlen(line);
	if (log_peer_from != NULL && strstr(line, log_peer_from) == NULL)
		snprintf(line + n, sizeof(line) - n, " (from %s)",
		    log_peer_from);
	if (!limited || log_limit_pass(level, fmt, line, tail, sizeof(tail)))
		log_write(level, line, tail);
	errno = saved;
}

#define LOG_FN(fn, level, err, limited) \
void fn(const char *fmt, ...) \
{ \
	va_list ap; \
	va_start(ap, fmt); \
	log_emit(level, err, limited, fmt, ap); \
	va_end(ap); \
}

LOG_FN(log_info, "info", 0, 0)
LOG_FN(log_info_limited, "info", 0, 1)
LOG_FN(log_warnx, "warn", 0, 1)
LOG_FN(log_warn, "warn", 1, 1)

void log_debug(const char *fmt, ...)
{
	va_list ap;

	if (!log_debug_on)
		return;
	va_start(ap, fmt);
	log_emit("debug", 0, 0, fmt, ap);
	va_end(ap);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "candy: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

int64_t now_ms(void)
{
	struct timespec ts;

	if (fake_now_ms)
		return fake_now_ms;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_us(void)
{
	struct timespec ts;

	if (fake_now_ms)
		return fake_now_ms * 1000;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* clock_gettime, not time(): the one call the loop makes already, where
 * time() would fault in a page of the C library of its own (issue 11). */
int64_t wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

/* ---- Candy messages (PROTOCOL 2). ---- */

/*
 * AUTH, VMAC and EXPTTUN are signed alike: the hash H(password || fields)
 * covers `covered' bytes after the type byte and sits at offset `hash'.
 * EXPTTUN's covers only the timestamp, not the cidr text after it.
 */
struct signed_layout {
	size_t covered, hash, len;
};

static const struct signed_layout auth_layout = { 12, 13, AUTH_LEN };
static const struct signed_layout vmac_layout = { 24, 25, VMAC_LEN };
static const struct signed_layout expttun_layout = { 8, 41, EXPTTUN_LEN };

static void msg_hash(unsigned char out[32], const unsigned char *m,
    const char *password, const struct signed_layout *l)
{
	br_sha256_context h;

	br_sha256_init(&h);
	br_sha256_update(&h, password, strlen(password));
	br_sha256_update(&h, m + 1, l->covered);
	br_sha256_out(&h, out);
	wipe(&h, sizeof(h));	/* it held the password */
}

/* Hash the fields already in out, add pad random bytes; the length. */
static size_t msg_seal(unsigned char *out, const char *password,
    const struct signed_layout *l, size_t pad)
{
	msg_hash(out + l->hash, out, password, l);
	if (pad > PAD_MAX)
		pad = PAD_MAX;
	rand_bytes(out + l->len, pad);
	return l->len + pad;
}

/* Constant time: a timing leak would let anyone forge hashes byte by byte. */
static int msg_verify(const unsigned char *m, const char *password,
    const struct signed_layout *l)
{
	unsigned char h[32], diff = 0;
	size_t i;

	msg_hash(h, m, password, l);
	for (i = 0; i < 32; i++)
		diff |= h[i] ^ m[l->hash + i];
	return diff == 0;
}

size_t msg_auth_build(unsigned char *out, const char *password, uint32_t ip,
    int64_t ts, size_t pad)
{
	out[0] = MSG_AUTH;
	put32(out + 1, ip);
	put64(out + 5, (uint64_t)ts);
	return msg_seal(out, password, &auth_layout, pad);
}

size_t msg_vmac_build(unsigned char *out, const char *password,
    const char vmac[16], int64_t ts, size_t pad)
{
	out[0] = MSG_VMAC;
	memcpy(out + 1, vmac, 16);
	put64(out + 17, (uint64_t)ts);
	return msg_seal(out, password, &vmac_layout, pad);
}

size_t msg_expttun_build(unsigned char *out, const char *password,
    const char *cidr, int64_t ts, size_t pad)
{
	size_t n = strlen(cidr);

	out[0] = MSG_EXPTTUN;
	put64(out + 1, (uint64_t)ts);
	memset(out + 9, 0, 32);
	memcpy(out + 9, cidr, n < 31 ? n : 31);
	return msg_seal(out, password, &expttun_layout, pad);
}

int msg_auth_check(const unsigned char *m, const char *password)
{
	return msg_verify(m, password, &auth_layout);
}

int msg_vmac_check(const unsigned char *m, const char *password)
{
	return msg_verify(m, password, &vmac_layout);
}

int msg_expttun_check(const unsigned char *m, const char *password)
{
	return msg_verify(m, password, &expttun_layout);
}

/* The timestamp of an AUTH, VMAC or EXPTTUN is within AUTH_WINDOW_S. */
static int msg_fresh(int64_t ts)
{
	int64_t now = wall_s();

	/* Not ts - now: any client can send a ts near INT64_MIN, and the
	 * subtraction would overflow. */
	return ts >= now - AUTH_WINDOW_S && ts <= now + AUTH_WINDOW_S;
}

/* ---- Options and the config file. ---- */

/*
 * One table serves the command line, the config file (same names as keys,
 * as in Candy's candy.cfg) and --help.  A setter checks the value and
 * stores it, or writes an error that names the option and the value.
 */
struct opt;
typedef int opt_setter(struct config *cfg, const struct opt *o,
    const char *v, char *err, size_t errlen);

struct opt {
	const char *name;
	char shortname;
	const char *arg;	/* NULL: a flag without a value */
	opt_setter *set;
	size_t off, size;	/* the field in struct config */
	long min, max;		/* for numbers */
	const char *help;
};

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)

static int bad(char *err, size_t errlen, const struct opt *o, const char *v,
    const char *why)
{
	/* The precision keeps gcc on 32-bit CPUs from warning that a long
	 * v could exceed INT_MAX; err is far smaller anyway. */
	snprintf(err, errlen, "bad --%s `%.200s': %s", o->name, v, why);
	return -1;
}

static int set_string(struct config *cfg, const struct opt *o, const char *v,
    char *err, size_t errlen)
{
	if (strlen(v) >= o->size)
		return bad(err, errlen, o, v, "too long");
	memcpy((char *)cfg + o->off, v, strlen(v) + 1);
	return 0;
}

/* A whole string of decimal digits, an optional sign before them, into
 * *out: 0, or -1 when it is not one or does not fit.  strtol would do, but
 * its code is a page of the C library no other call needs (issue 11). */
static int dec_long(const char *s, long *out)
{
	long v = 0;
	int neg = *s == '-';

	if (*s == '-' || *s == '+')
		s++;
	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9' || v > (LONG_MAX - (*s - '0')) / 10)
			return -1;
		v = v * 10 + (*s - '0');
	}
	*out = neg ? -v : v;
	return 0;
}

/* Numbers: decimal only; route is clamped to its range as Candy does,
 * every other number out of range is refused. */
static int set_number(struct config *cfg, const struct opt *o, const char *v,
    char *err, size_t errlen)
{
	long n;

	if (dec_long(v, &n) < 0)
		return bad(err, errlen, o, v, "not a number");
	if (n < o->min || n > o->max) {
		if (strcmp(o->name, "route") != 0) {
			char why[64];

			snprintf(why, sizeof(why), "must be %ld to %ld",
			    o->min, o->max);
			return bad(err, errlen, o, v, why);
		}
		n = n < o->min ? o->min : o->max;
	}
	*(int *)(void *)((char *)cfg + o->off) = (int)n;
	return 0;
}

/* Flags: no value on the command line; true/false, yes/no, 1/0 in a file. */
static int set_flag(struct config *cfg, const struct opt *o, const char *v,
    char *err, size_t errlen)
{
	int on;

	if (v == NULL || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
	    strcmp(v, "1") == 0 || strcmp(v, "on") == 0)
		on = 1;
	else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 ||
	    strcmp(v, "0") == 0 || strcmp(v, "off") == 0)
		on = 0;
	else
		return bad(err, errlen, o, v, "not true or false");
	*(int *)(void *)((char *)cfg + o->off) = on;
	return 0;
}

static int set_mode(struct config *cfg, const struct opt *o, const char *v,
    char *err, size_t errlen)
{
	if (strcmp(v, "client") == 0)
		cfg->mode = MODE_CLIENT;
	else if (strcmp(v, "server") == 0)
		cfg->mode = MODE_SERVER;
	else
		return bad(err, errlen, o, v, "not client or server");
	return 0;
}

static int set_websocket(struct config *cfg, const struct opt *o,
    const char *v, char *err, size_t errlen)
{
	if (strncmp(v, "ws://", 5) != 0 && strncmp(v, "wss://", 6) != 0)
		return bad(err, errlen, o, v, "not a ws:// or wss:// URI");
	return set_string(cfg, o, v, err, errlen);
}

static int set_stun(struct config *cfg, const struct opt *o, const char *v,
    char *err, size_t errlen)
{
	if (*v != '\0' && (strncmp(v, "stun://", 7) != 0 || v[7] == '\0'))
		return bad(err, errlen, o, v, "not a stun://HOST[:PORT] URI");
	return set_string(cfg, o, v, err, errlen);
}

/* Address ranges must leave room for two hosts: /31 and /32 cannot. */
static int set_cidr(struct config *cfg, const struct opt *o, const char *v,
    char *err, size_t errlen)
{
	struct cidr c;
	const char *why;

	if (cidr_parse(v, &c, &why) < 0)
		return bad(err, errlen, o, v, why);
	if (c.prefix < 1 || c.prefix > 30)
		return bad(err, errlen, o, v, "prefix must be 1 to 30");
	if (strcmp(o->name, "dhcp") == 0) {
		cfg->dhcp = c;
		cfg->has_dhcp = 1;
		return 0;
	}
	if ((c.addr & ~prefix_mask(c.prefix)) == 0 ||
	    (c.addr | prefix_mask(c.prefix)) == UINT32_MAX)
		return bad(err, errlen, o, v, "not a host address");
	cfg->tun = c;
	cfg->has_tun = 1;
	return 0;
}

static int set_sdwan(struct config *cfg, const struct opt *o, const char *v,
    char *err, size_t errlen)
{
	const char *why;
	int n = sdwan_parse(v, cfg->sdwan, SDWAN_MAX, &why);

	if (n < 0)
		return bad(err, errlen, o, v, why);
	cfg->nsdwan = n;
	return 0;
}

static int set_ip(struct config *cfg, const struct opt *o, const char *v,
    char *err, size_t errlen)
{
	uint32_t ip;

	if (ip_parse(v, &ip) < 0)
		return bad(err, errlen, o, v, "not an IPv4 address");
	memcpy((char *)cfg + o->off, &ip, sizeof(ip));
	return 0;
}

/* Device names are candy-NAME, and the OS allows 15 characters. */
static int set_name(struct config *cfg, const struct opt *o, const char *v,
    char *err, size_t errlen)
{
	const char *p;

	if (strlen(v) > 9)
		return bad(err, errlen, o, v, "longer than 9 characters");
	for (p = v; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return bad(err, errlen, o, v,
			    "only letters, digits, - and _");
	return set_string(cfg, o, v, err, errlen);
}

static int set_pin(struct config *cfg, const struct opt *o, const char *v,
    char *err, size_t errlen)
{
	unsigned char pin[32];

	if (tls_pin_parse(v, pin) < 0)
		return bad(err, errlen, o, v,
		    "not a SHA-256 in hex (64 digits) or base64");
	return set_string(cfg, o, v, err, errlen);
}

/* --config, --check, --help and --version: config_load handles them. */
static int set_none(struct config *cfg, const struct opt *o, const char *v,
    char *err, size_t errlen)
{
	return 0;
}

static const struct opt opts[] = {
	{ "mode", 'm', "MODE", set_mode, 0, 0, 0, 0,
	    "client or server (required)" },
	{ "websocket", 'w', "URI", set_websocket, FIELD(websocket), 0, 0,
	    "server: ws:// or wss:// address to listen on; client: to connect to" },
	{ "password", 'p', "TEXT", set_string, FIELD(password), 0, 0,
	    "shared password (default empty)" },
	{ "dhcp", 'd', "CIDR", set_cidr, 0, 0, 0, 0,
	    "server: address range to hand out, e.g. 172.31.0.0/24" },
	{ "sdwan", 0, "RULES", set_sdwan, 0, 0, 0, 0,
	    "server: routes dev,dst,next;... pushed to clients" },
	{ "no-source-check", 0, NULL, set_flag, FIELD(no_source_check), 0, 1,
	    "server: relay packets whatever their source address" },
	{ "max-clients", 0, "N", set_number, FIELD(max_clients), 0, 1000000,
	    "server: most clients at once (default 0: as many as the range "
	    "and file descriptors allow)" },
	{ "cert", 0, "FILE", set_string, FIELD(cert), 0, 0,
	    "server: PEM certificate chain for wss://" },
	{ "key", 0, "FILE", set_string, FIELD(key), 0, 0,
	    "server: PEM private key for wss://" },
	{ "name", 'n', "NAME", set_name, FIELD(name), 0, 0,
	    "client: network name; device candy-NAME (default candy)" },
	{ "tun", 't', "CIDR", set_cidr, 0, 0, 0, 0,
	    "client: static address, e.g. 172.31.0.9/24 (default: ask)" },
	{ "stun", 's', "URI", set_stun, FIELD(stun), 0, 0,
	    "client: stun://HOST[:PORT] server; enables peer-to-peer" },
	{ "port", 0, "PORT", set_number, FIELD(port), 0, 65535,
	    "client: local UDP port for peers (default 0: any)" },
	{ "mtu", 0, "BYTES", set_number, FIELD(mtu), TUN_MTU_MIN, TUN_MTU_MAX,
	    "client: TUN device MTU (default 1400)" },
	{ "no-offload", 0, NULL, set_flag, FIELD(no_offload), 0, 1,
	    "client: one packet per system call (no TUN, UDP GSO/GRO)" },
	{ "route", 'r', "COST", set_number, FIELD(route), 0, 1000,
	    "client: relay for peers at this cost, 0 off (default 0)" },
	{ "discovery", 0, "SECONDS", set_number, FIELD(discovery), 0, 86400,
	    "client: look for peers every SECONDS, 0 off (default 0)" },
	{ "localhost", 0, "IP", set_ip, FIELD(localhost), 0, 0,
	    "client: LAN address to offer peers (default: first interface)" },
	{ "exit-node", 0, "IP", set_ip, FIELD(exit_node), 0, 0,
	    "client: send all IPv4 through this peer (default: none)" },
	{ "ca", 0, "FILE", set_string, FIELD(ca), 0, 0,
	    "client: trusted CA certificates (default: system store)" },
	{ "pin", 0, "SHA256", set_pin, FIELD(pin), 0, 0,
	    "client: accept exactly this server key (SPKI SHA-256)" },
	{ "insecure", 0, NULL, set_flag, FIELD(insecure), 0, 1,
	    "client: do not verify the server's certificate" },
	{ "state-dir", 0, "DIR", set_string, FIELD(state_dir), 0, 0,
	    "address, vmac, status socket (default /var/lib/candy)" },
	{ "config", 'c', "FILE", set_none, 0, 0, 0, 0,
	    "read options from FILE (key = value); the command line wins" },
	{ "check", 0, NULL, set_none, 0, 0, 0, 0,
	    "check the options and the config file, then exit" },
	{ "debug", 0, NULL, set_flag, FIELD(debug), 0, 1,
	    "log packet-level detail" },
	{ "no-timestamp", 0, NULL, set_flag, FIELD(no_timestamp), 0, 1,
	    "log without timestamps" },
	{ "version", 'v', NULL, set_none, 0, 0, 0, 0, "print the version" },
	{ "help", 'h', NULL, set_none, 0, 0, 0, 0, "print this help" },
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static const struct opt *opt_find(const char *name, size_t len, char shortname)
{
	size_t i;

	for (i = 0; i < NOPTS; i++) {
		if (shortname ? opts[i].shortname == shortname :
		    strlen(opts[i].name) == len &&
		    strncmp(opts[i].name, name, len) == 0)
			return &opts[i];
	}
	return NULL;
}

void config_usage(void)
{
	size_t i;

	printf("usage: candy -m client|server -w URI [options]\n"
	    "       candy status [options]: what a running candy is doing "
	    "(candy status -h)\n\n");
	for (i = 0; i < NOPTS; i++) {
		char left[40];

		snprintf(left, sizeof(left), "%c%c%s--%s%s%s",
		    opts[i].shortname ? '-' : ' ',
		    opts[i].shortname ? opts[i].shortname : ' ',
		    opts[i].shortname ? ", " : "  ", opts[i].name,
		    opts[i].arg ? " " : "", opts[i].arg ? opts[i].arg : "");
		printf("  %-28s %s\n", left, opts[i].help);
	}
}

int config_set(struct config *cfg, const char *key, const char *value,
    char *err, size_t errlen)
{
	const struct opt *o = opt_find(key, strlen(key), 0);

	if (o == NULL || o->set == set_none) {
		snprintf(err, errlen, "unknown option `%s'", key);
		return -1;
	}
	return o->set(cfg, o, value, err, errlen);
}

static void config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mode = -1;
	cfg->mtu = 1400;
	snprintf(cfg->state_dir, sizeof(cfg->state_dir), "/var/lib/candy");
}

/* Trim blanks at both ends in place; strip one pair of matching quotes.
 * The blanks are isspace's in the C locale, by strchr: the ctype table
 * would be a page of the C library's constants that nothing else in a
 * client reads (issue 11; set_name alike). */
static char *trim(char *s, int unquote)
{
	char *e;

	while (*s != '\0' && strchr(" \t\n\v\f\r", *s) != NULL)
		s++;
	e = s + strlen(s);
	while (e > s && strchr(" \t\n\v\f\r", e[-1]) != NULL)
		*--e = '\0';
	if (unquote && e - s >= 2 && (*s == '"' || *s == '\'') && e[-1] == *s) {
		e[-1] = '\0';
		s++;
	}
	return s;
}

/*
 * Warnings about the config file wait here until the whole configuration,
 * --no-timestamp included, is known and logging is set up: main calls
 * config_warnings_flush after log_init.
 */
static char config_warnings[1024];

static void config_warn(const char *path, int lineno, const char *key)
{
	size_t n = strlen(config_warnings);

	snprintf(config_warnings + n, sizeof(config_warnings) - n,
	    "%s:%d: unknown key `%s' ignored\n", path, lineno, key);
}

/* see candy.h */
void config_warnings_flush(void)
{
	char *line = config_warnings, *nl;

	while ((nl = strchr(line, '\n')) != NULL) {
		*nl = '\0';
		log_warnx("%s", line);
		line = nl + 1;
	}
	config_warnings[0] = '\0';
}

/* Candy's config file: `key = value` lines, # comments, quoted values. */
static int config_file(struct config *cfg, const char *path, char *err,
    size_t errlen)
{
	char line[1024], msg[512];
	FILE *f = fopen(path, "r");
	int lineno = 0;

	if (f == NULL) {
		snprintf(err, errlen, "bad --config `%s': %s", path,
		    strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *key, *value, *eq, *hash = NULL, *p;
		char quote = 0;

		lineno++;
		for (p = line; *p; p++) {	/* a # outside quotes */
			if (quote ? *p == quote : (*p == '"' || *p == '\''))
				quote = quote ? 0 : *p;
			else if (!quote && *p == '#') {
				hash = p;
				break;
			}
		}
		if (hash != NULL)
			*hash = '\0';
		key = trim(line, 0);
		if (*key == '\0')
			continue;
		if ((eq = strchr(key, '=')) == NULL) {
			snprintf(err, errlen, "%s:%d: not `key = value'",
			    path, lineno);
			fclose(f);
			return -1;
		}
		*eq = '\0';
		key = trim(key, 0);
		value = trim(eq + 1, 1);
		if (opt_find(key, strlen(key), 0) == NULL) {
			/* Candy's files may carry keys we do not know. */
			config_warn(path, lineno, key);
			continue;
		}
		if (config_set(cfg, key, value, msg, sizeof(msg)) < 0) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return 0;
}

/* The whole configuration makes sense together. */
static int config_check(struct config *cfg, char *err, size_t errlen)
{
	if ((int)cfg->mode < 0)
		snprintf(err, errlen, "--mode is required (client or server)");
	else if (cfg->websocket[0] == '\0')
		snprintf(err, errlen, "--websocket is required");
	else if (cfg->mode == MODE_SERVER &&
	    strncmp(cfg->websocket, "wss://", 6) == 0 &&
	    (cfg->cert[0] == '\0' || cfg->key[0] == '\0'))
		snprintf(err, errlen, "a wss:// server needs --cert and --key");
	else
		return 0;
	return -1;
}

static int opt_allowed(const struct opt *o, const char *const *only)
{
	for (; *only != NULL; only++)
		if (strcmp(o->name, *only) == 0)
			return 1;
	return 0;
}

/*
 * Parse argv into opts: --name=value, --name value, -x value, -xvalue.
 * pass 0 only looks for --config; pass 1 applies everything else.  only,
 * when not NULL, lists the options allowed (NULL-terminated).
 */
static int config_args(struct config *cfg, int argc, char **argv, int pass,
    const char *const *only, const char **file, int *exit_now, char *err,
    size_t errlen)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL, *eq;
		const struct opt *o;

		if (a[0] == '-' && a[1] == '-' && a[2] != '\0') {
			eq = strchr(a + 2, '=');
			o = opt_find(a + 2, eq ? (size_t)(eq - a - 2) :
			    strlen(a + 2), 0);
			if (eq != NULL)
				v = eq + 1;
		} else if (a[0] == '-' && a[1] != '\0' && a[1] != '-') {
			o = opt_find(NULL, 0, a[1]);
			if (a[2] != '\0')
				v = a + 2;
		} else {
			snprintf(err, errlen, "unexpected argument `%s'", a);
			return -1;
		}
		if (o == NULL) {
			snprintf(err, errlen, "unknown option `%s' (see --help)",
			    a);
			return -1;
		}
		if (only != NULL && !opt_allowed(o, only)) {
			snprintf(err, errlen, "option `%s' does not apply here "
			    "(see --help)", a);
			return -1;
		}
		if (o->arg != NULL && v == NULL) {
			if (i + 1 >= argc) {
				snprintf(err, errlen, "--%s needs a value",
				    o->name);
				return -1;
			}
			v = argv[++i];
		} else if (o->arg == NULL && v != NULL) {
			snprintf(err, errlen, "--%s takes no value", o->name);
			return -1;
		}
		if (pass == 0) {
			if (strcmp(o->name, "config") == 0)
				*file = v;
			continue;
		}
		if (strcmp(o->name, "help") == 0) {
			config_usage();
			*exit_now |= 1;
		} else if (strcmp(o->name, "version") == 0) {
			printf("candy %s\n", CANDY_VERSION);
			*exit_now |= 1;
		} else if (strcmp(o->name, "check") == 0) {
			*exit_now |= 2;
		} else if (o->set(cfg, o, v, err, errlen) < 0) {
			return -1;
		}
	}
	return 0;
}

int config_load(struct config *cfg, int argc, char **argv, char *err,
    size_t errlen)
{
	const char *file = NULL;
	int exit_now = 0;

	config_defaults(cfg);
	config_warnings[0] = '\0';
	if (config_args(cfg, argc, argv, 0, NULL, &file, &exit_now, err,
	    errlen) < 0)
		return -1;
	if (file != NULL && config_file(cfg, file, err, errlen) < 0)
		return -1;
	if (config_args(cfg, argc, argv, 1, NULL, &file, &exit_now, err,
	    errlen) < 0)
		return -1;
	if (exit_now & 1)
		return 1;
	if (config_check(cfg, err, errlen) < 0)
		return -1;
	/* --check: an operator's test before a restart (candy.8). */
	if (exit_now & 2) {
		printf("candy: configuration ok\n");
		return 1;
	}
	return 0;
}

/* ---- Addresses and sockets. ---- */

/* ws[s]://host[:port][/path], host may be [IPv6]. */
struct uri {
	int tls;
	char host[256];
	char port[8];
	char path[256];
	char hostport[300];	/* the Host header: the URI's authority */
};

static int uri_parse(const char *s, struct uri *u)
{
	const char *p, *end, *colon;
	size_t n;

	memset(u, 0, sizeof(*u));
	if (strncmp(s, "wss://", 6) == 0) {
		u->tls = 1;
		p = s + 6;
	} else if (strncmp(s, "ws://", 5) == 0) {
		p = s + 5;
	} else {
		return -1;
	}
	if ((end = strchr(p, '/')) == NULL)
		end = p + strlen(p);
	if ((size_t)(end - p) >= sizeof(u->hostport) || end == p)
		return -1;
	memcpy(u->hostport, p, (size_t)(end - p));
	snprintf(u->path, sizeof(u->path), "%s", *end ? end : "/");
	if (*p == '[') {
		const char *rb = memchr(p, ']', (size_t)(end - p));

		if (rb == NULL)
			return -1;
		n = (size_t)(rb - p - 1);
		colon = rb[1] == ':' ? rb + 1 : NULL;
		if (rb + 1 != end && colon == NULL)
			return -1;
		p++;
	} else {
		colon = memchr(p, ':', (size_t)(end - p));
		n = (size_t)((colon ? colon : end) - p);
	}
	if (n == 0 || n >= sizeof(u->host))
		return -1;
	memcpy(u->host, p, n);
	if (colon != NULL) {
		n = (size_t)(end - colon - 1);
		if (n == 0 || n >= sizeof(u->port))
			return -1;
		memcpy(u->port, colon + 1, n);
		if (port_parse(u->port) < 0)
			return -1;
	} else {
		snprintf(u->port, sizeof(u->port), "%s", u->tls ? "443" : "80");
	}
	return 0;
}

static int fd_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	fcntl(fd, F_SETFD, FD_CLOEXEC);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Each frame carries a packet someone waits for: no Nagle (PROTOCOL 1). */
static void tcp_nodelay(int fd)
{
	int on = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

/*
 * Both ends of a relay connection: the kernel keeps at most
 * SERVER_NOTSENT_LOWAT bytes not yet sent; the rest waits in our own
 * bounded queue (a client's stops its TUN reads when full, the server's
 * drops), so that a ping waits behind little bulk (issue 11).  16 KiB,
 * not 64: under a relayed bulk transfer the ping's average fell by
 * about 5% on ws:// and 15% on wss:// (README), throughput within 2%.
 * Only the bytes not yet sent are limited, never those in flight: a
 * long path fills as before, the loop refilling the socket each time
 * it drains below 16 KiB.
 */
#define SERVER_NOTSENT_LOWAT	(16 * 1024)
static void tcp_notsent_lowat(int fd)
{
#ifdef TCP_NOTSENT_LOWAT
	int v = SERVER_NOTSENT_LOWAT;

	setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, sizeof(v));
#endif
}

/* IPv4 through ip_str, not inet_ntop: a client that never sees IPv6 then
 * leaves the C library's address code alone (issue 11). */
static void sockaddr_str(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;

		port = ntohs(in->sin_port);
		snprintf(buf, len, "%s:%d", ip_str(ntohl(in->sin_addr.s_addr),
		    host), port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;

		port = ntohs(in6->sin6_port);
		/* An IPv4 client of a [::] listener reads best as IPv4. */
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			snprintf(buf, len, "%s:%d", ip_str(get32(in6->sin6_addr.
			    s6_addr + 12), host), port);
			return;
		}
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%d", host, port);
	} else {
		snprintf(buf, len, "?");
	}
}

/* Signals only set flags and poke the self-pipe that wakes poll(). */
static volatile sig_atomic_t sig_quit, sig_status;
static int sig_pipe[2] = { -1, -1 };

static void sig_handler(int sig)
{
	int saved = errno;

	if (sig == SIGUSR1)
		sig_status = 1;
	else
		sig_quit = 1;
	if (write(sig_pipe[1], "", 1) < 0) {
		/* the pipe is full: poll() wakes anyway */
	}
	errno = saved;
}

void signals_init(void)
{
	struct sigaction sa;

	if (pipe(sig_pipe) < 0)
		fatalx("pipe: %s", strerror(errno));
	fd_nonblock(sig_pipe[0]);
	fd_nonblock(sig_pipe[1]);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sig_handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

static void signals_drain(void)
{
	char buf[64];

	while (read(sig_pipe[0], buf, sizeof(buf)) > 0)
		;
}

static int ip_is_broadcast(uint32_t ip, const struct cidr *net)
{
	if (ip == UINT32_MAX || (ip & 0xf0000000) == 0xe0000000)
		return 1;
	return net != NULL && net->prefix > 0 && net->prefix < 31 &&
	    ip == ((net->addr & prefix_mask(net->prefix)) |
	    ~prefix_mask(net->prefix));
}

/* ---- The server (PROTOCOL 2). ---- */

#define SERVER_MAX_LISTEN	4
/* Poll entries before the slots': signals, listeners, the status socket's
 * slots (status.c), the epoll set. */
#define SERVER_PFD_HDR		(1 + SERVER_MAX_LISTEN + STATUS_SLOTS + 1)
#define SERVER_PFD_STATUS	(1 + SERVER_MAX_LISTEN)
#define SERVER_PFD_EPOLL	(SERVER_PFD_HDR - 1)
#define HANDSHAKE_TIMEOUT_MS	10000	/* TCP accept to WebSocket open */
#define AUTH_TIMEOUT_MS		10000	/* TCP accept to AUTH, pings or not */
#define IDLE_TIMEOUT_MS		60000	/* silent, or stuck with a full queue */
#define READ_BURST		64	/* messages per connection per pass */
#define ACCEPT_BURST		64	/* accepts per listener per pass */
#define FD_RESERVE		32	/* descriptors not for connections */
#define FD_LIMIT_MAX		(1 << 20)	/* when the hard limit is none */
#define FD_PAUSE_MS		1000	/* out of descriptors: stop accepting */
#define FD_CALM_MS		10000	/* and that is over after this long */
/*
 * Connections that have not authenticated yet get slots of their own, a
 * share of the clients' (PENDING_SHARE, at least PENDING_MIN): when those
 * are all taken, a new connection evicts one of them, from the source
 * that holds the most.  One source address (IPv4, or IPv6 /64) may hold
 * PENDING_PER_SOURCE of them.  A real client, alone at its address, so
 * gets in unless an attacker has as many addresses as there are slots.
 */
#define PENDING_SHARE		8	/* 1/8 of the client slots */
#define PENDING_MIN		64
#define PENDING_PER_SOURCE	16
#define EVICT_SCAN		64	/* pending connections looked at */
/*
 * Until it authenticates, a connection sends AUTH, VMAC, EXPTTUN and
 * pings, a few hundred bytes each: it is held to the existing server's
 * own frame size and to its base-size buffers (ws_limit), so that the
 * pending slots cannot pin 64 KiB frames and pongs each.
 */
#define PENDING_MSG_MAX		1500
/*
 * Every AUTH, VMAC and EXPTTUN accepted is remembered until its timestamp
 * leaves the window, so that it cannot be replayed: REPLAY_PER_SLOT per
 * connection slot, at least REPLAY_MIN.  A client sends at most three per
 * connection and a connection may send SIGNED_PER_CONN; when the memory
 * is full of unexpired entries, new ones are refused, never forgotten.
 */
#define REPLAY_MIN		4096
#define REPLAY_PER_SLOT		4
#define SIGNED_PER_CONN		8

struct conn {
	struct ws ws;
	size_t idx;		/* in server.conns */
	uint32_t addr;		/* authenticated address; 0: none yet */
	uint32_t offered;	/* granted by EXPTTUN, until AUTH */
	char vmac[17];
	int64_t since_ms;
	char from[64];		/* the peer's network address, for logs */
	unsigned char src[16];	/* its key in server.srcs */
	int pending;		/* not authenticated: in the pending list */
	struct conn *pend_prev, *pend_next;	/* oldest first */
	int nsigned;		/* AUTH, VMAC, EXPTTUN received */
	unsigned long rx, tx;	/* frames: every one received; relayed to it */
	uint64_t rx_bytes, tx_bytes;
};

/* A hash accepted within the window, and the vmac it came with (EXPTTUN's
 * hash covers only the timestamp, so two clients can send the same one). */
struct replay_entry {
	int64_t expires_s;	/* wall clock: its timestamp leaves the window */
	int64_t added_ms;	/* monotonic: it surely has 2 windows later */
	unsigned char hash[32];
	char vmac[16];
};

/* A ring of entries, oldest first, indexed by a hash table of positions
 * + 1 (0: empty) keyed by the hash mixed with a secret. */
struct replay {
	struct replay_entry *ring;
	size_t cap, head, n;
	uint32_t *index;
	size_t isize;		/* a power of two, >= 2 * cap */
	uint64_t key;
};

struct server {
	const struct config *cfg;
	struct tls_ctx *tls;
	int lfd[SERVER_MAX_LISTEN];
	int nlfd;
	struct conn **conns;	/* maxconns slots, NULL when free */
	size_t maxconns, nconns;
	size_t top;		/* slots at and above this are all free */
	size_t free_hint;	/* no free slot below this */
	size_t maxclients, nclients;	/* authenticated */
	size_t maxpending, npending;	/* not yet */
	struct conn *pend_head, *pend_tail;
	struct src_slot {	/* source -> pending connections from it */
		unsigned char key[16];
		uint32_t n;	/* 0: slot empty */
	} *srcs;
	size_t srcsize;		/* a power of two, >= 2 * maxpending */
	uint32_t srckey;
	struct addr_slot {	/* address -> connection, open addressing */
		uint32_t addr;
		struct conn *conn;
	} *map;
	size_t mapsize;		/* a power of two, >= 2 * maxclients */
	uint32_t last_alloc;
	struct replay replay;
	/*
	 * The poll set: SERVER_PFD_HDR entries (signals, listeners, status),
	 * then one per slot, kept between passes.  A slot's entry is
	 * recomputed only when its connection was touched (read, or sent
	 * to): with 10,000 connections most are idle, and each lives in
	 * memory of its own.
	 */
	struct pollfd *pfd, *cpfd;
	size_t *dirty, ndirty;	/* touched slots, each once */
	unsigned char *slot_dirty;
	size_t *again, nagain;	/* slots with input already buffered */
	size_t *ready, nready;	/* slots poll found ready */
	int epfd;		/* Linux: the connections' epoll set */
#ifdef __linux__
	struct epoll_event *evs;	/* maxconns of them */
#endif
	int64_t timers_ms;	/* when to look at every connection's timers */
	int spare_fd;		/* to take a connection when out of fds */
	int64_t accept_paused_ms;	/* listeners not polled until then */
	int64_t fd_short_ms;	/* last out of descriptors; 0: not lately */
	unsigned long forwarded, dropped, spoofed, refused;
	unsigned long evicted, refused_source, refused_fd, timed_out;
};

static size_t map_home(const struct server *s, uint32_t addr)
{
	return (addr * 2654435761u) & (s->mapsize - 1);
}

static struct conn *map_get(const struct server *s, uint32_t addr)
{
	size_t i = map_home(s, addr);

	while (s->map[i].conn != NULL) {
		if (s->map[i].addr == addr)
			return s->map[i].conn;
		i = (i + 1) & (s->mapsize - 1);
	}
	return NULL;
}

static void map_put(struct server *s, uint32_t addr, struct conn *c)
{
	size_t i = map_home(s, addr);

	while (s->map[i].conn != NULL && s->map[i].addr != addr)
		i = (i + 1) & (s->mapsize - 1);
	s->map[i].addr = addr;
	s->map[i].conn = c;
}

/* Linear probing without tombstones: shift later entries back
 * (probe_may_fill). */
static void map_del(struct server *s, uint32_t addr)
{
	size_t mask = s->mapsize - 1, i = map_home(s, addr), j;

	while (s->map[i].conn != NULL && s->map[i].addr != addr)
		i = (i + 1) & mask;
	if (s->map[i].conn == NULL)
		return;
	s->map[i].conn = NULL;
	for (j = (i + 1) & mask; s->map[j].conn != NULL; j = (j + 1) & mask) {
		size_t home = map_home(s, s->map[j].addr);

		/* Move j to the hole i unless its home lies in (i, j]. */
		if (probe_may_fill(i, j, home)) {
			s->map[i] = s->map[j];
			s->map[j].conn = NULL;
			i = j;
		}
	}
}

/* The source of a connection: IPv4 (mapped or not) as ::ffff:a.b.c.d, an
 * IPv6 address by its /64, which one host usually has whole. */
static void src_key(const struct sockaddr_storage *ss, unsigned char key[16])
{
	memset(key, 0, 16);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;

		key[10] = key[11] = 0xff;
		memcpy(key + 12, &in->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;

		memcpy(key, &in6->sin6_addr, IN6_IS_ADDR_V4MAPPED(
		    &in6->sin6_addr) ? 16 : 8);
	}
}

/* Salted: a peer picks its IPv6 /64 and must not pick our collisions. */
static size_t src_home(const struct server *s, const unsigned char *key)
{
	uint32_t h = s->srckey;
	int i;

	for (i = 0; i < 16; i += 4)
		h = (h ^ get32(key + i)) * 2654435761u;
	return (h ^ h >> 15) & (s->srcsize - 1);
}

/* The slot holding key, or the empty slot where it would go. */
static size_t src_find(const struct server *s, const unsigned char *key)
{
	size_t i = src_home(s, key);

	while (s->srcs[i].n != 0 && memcmp(s->srcs[i].key, key, 16) != 0)
		i = (i + 1) & (s->srcsize - 1);
	return i;
}

static void src_inc(struct server *s, const unsigned char *key)
{
	size_t i = src_find(s, key);

	memcpy(s->srcs[i].key, key, 16);
	s->srcs[i].n++;
}

/* As map_del when the count drops to 0. */
static void src_dec(struct server *s, const unsigned char *key)
{
	size_t mask = s->srcsize - 1, i = src_find(s, key), j;

	if (s->srcs[i].n == 0 || --s->srcs[i].n > 0)
		return;
	for (j = (i + 1) & mask; s->srcs[j].n != 0; j = (j + 1) & mask) {
		size_t home = src_home(s, s->srcs[j].key);

		if (probe_may_fill(i, j, home)) {
			s->srcs[i] = s->srcs[j];
			s->srcs[j].n = 0;
			i = j;
		}
	}
}

/* A connection not authenticated yet: the list, oldest first, and the
 * count of its source. */
static void pending_add(struct server *s, struct conn *c)
{
	c->pending = 1;
	c->pend_prev = s->pend_tail;
	c->pend_next = NULL;
	if (s->pend_tail != NULL)
		s->pend_tail->pend_next = c;
	else
		s->pend_head = c;
	s->pend_tail = c;
	s->npending++;
	src_inc(s, c->src);
	ws_limit(&c->ws, PENDING_MSG_MAX, WS_OUT_BASE);
}

static void pending_del(struct server *s, struct conn *c)
{
	if (!c->pending)
		return;
	c->pending = 0;
	if (c->pend_prev != NULL)
		c->pend_prev->pend_next = c->pend_next;
	else
		s->pend_head = c->pend_next;
	if (c->pend_next != NULL)
		c->pend_next->pend_prev = c->pend_prev;
	else
		s->pend_tail = c->pend_prev;
	s->npending--;
	src_dec(s, c->src);
	ws_limit(&c->ws, WS_MSG_MAX, WS_OUT_SERVER_MAX);
}

/* The connection was read or sent to: flush it and recompute its poll
 * events before the next poll. */
static void server_conn_touch(struct server *s, const struct conn *c)
{
	if (!s->slot_dirty[c->idx]) {
		s->slot_dirty[c->idx] = 1;
		s->dirty[s->ndirty++] = c->idx;
	}
}

/* Put a new connection in slot i. */
static void server_conn_add(struct server *s, struct conn *c, size_t i)
{
	c->idx = i;
	s->conns[i] = c;
	s->nconns++;
	if (i >= s->top)
		s->top = i + 1;
	pending_add(s, c);
	server_conn_touch(s, c);
}

static void server_close(struct server *s, struct conn *c, const char *why)
{
	/* This line names the peer itself, and c->from goes with c. */
	const char *peer = log_peer(NULL);
	char ip[16];

	if (c->addr != 0) {
		log_info("client %s (%s) disconnected: %s",
		    ip_str(c->addr, ip), c->from, why);
		if (map_get(s, c->addr) == c)
			map_del(s, c->addr);
		s->nclients--;
	} else {
		log_debug("connection from %s closed: %s", c->from, why);
	}
	pending_del(s, c);
	ws_close(&c->ws);
	ws_free(&c->ws);
	s->conns[c->idx] = NULL;
	s->cpfd[c->idx].fd = -1;
	s->cpfd[c->idx].revents = 0;
	s->nconns--;
	if (c->idx < s->free_hint)
		s->free_hint = c->idx;
	while (s->top > 0 && s->conns[s->top - 1] == NULL)
		s->top--;
	log_peer(peer == c->from ? NULL : peer);
	free(c);
}

/* Refuse an authentication: log it with the peer's address and close. */
static int server_refuse(struct server *s, struct conn *c, const char *why)
{
	log_info_limited("refused authentication from %s: %s", c->from, why);
	s->refused++;
	return -1;
}

/* ---- The replay memory. ---- */

static int replay_init(struct replay *r, size_t cap)
{
	memset(r, 0, sizeof(*r));
	r->cap = cap;
	for (r->isize = 16; r->isize < 2 * cap; r->isize *= 2)
		;
	r->ring = calloc(cap, sizeof(*r->ring));
	r->index = calloc(r->isize, sizeof(*r->index));
	rand_bytes(&r->key, sizeof(r->key));
	return r->ring != NULL && r->index != NULL ? 0 : -1;
}

static void replay_free(struct replay *r)
{
	free(r->ring);
	free(r->index);
	memset(r, 0, sizeof(*r));
}

static size_t replay_home(const struct replay *r, const unsigned char *hash)
{
	uint64_t h = (get64(hash) ^ r->key) * 0x9e3779b97f4a7c15ull;

	return (size_t)(h >> 32) & (r->isize - 1);
}

static int replay_seen(const struct replay *r, const unsigned char *hash,
    const char *vmac)
{
	size_t i = replay_home(r, hash);

	while (r->index[i] != 0) {
		const struct replay_entry *e = &r->ring[r->index[i] - 1];

		if (memcmp(e->hash, hash, 32) == 0 &&
		    memcmp(e->vmac, vmac, 16) == 0 && msg_fresh(e->expires_s -
		    AUTH_WINDOW_S))
			return 1;
		i = (i + 1) & (r->isize - 1);
	}
	return 0;
}

/* Forget the oldest entry: its index slot goes as in map_del. */
static void replay_drop_oldest(struct replay *r)
{
	size_t mask = r->isize - 1, j;
	size_t i = replay_home(r, r->ring[r->head].hash);

	while (r->index[i] != r->head + 1)
		i = (i + 1) & mask;
	r->index[i] = 0;
	for (j = (i + 1) & mask; r->index[j] != 0; j = (j + 1) & mask) {
		size_t home = replay_home(r, r->ring[r->index[j] - 1].hash);

		if (probe_may_fill(i, j, home)) {
			r->index[i] = r->index[j];
			r->index[j] = 0;
			i = j;
		}
	}
	r->head = (r->head + 1) % r->cap;
	r->n--;
}

/* Remember a hash accepted now: 0, or -1 when the memory is full of
 * entries still in their window. */
static int replay_add(struct replay *r, int64_t ts, const unsigned char *hash,
    const char *vmac)
{
	int64_t now = now_ms(), wall = wall_s();
	struct replay_entry *e;
	size_t i;

	while (r->n > 0 && (r->ring[r->head].expires_s < wall ||
	    now - r->ring[r->head].added_ms > 2000 * AUTH_WINDOW_S + 1000))
		replay_drop_oldest(r);
	if (r->n == r->cap)
		return -1;
	e = &r->ring[(r->head + r->n) % r->cap];
	e->expires_s = ts + AUTH_WINDOW_S;
	e->added_ms = now;
	memcpy(e->hash, hash, 32);
	memcpy(e->vmac, vmac, 16);
	for (i = replay_home(r, hash); r->index[i] != 0;
	    i = (i + 1) & (r->isize - 1))
		;
	r->index[i] = (uint32_t)((r->head + r->n) % r->cap + 1);
	r->n++;
	return 0;
}

/*
 * The checks shared by AUTH, VMAC and EXPTTUN: hash, timestamp window,
 * replay.  ctx is what makes a hash unique besides itself (16 bytes).
 */
static int server_check_auth(struct server *s, struct conn *c, int ok,
    int64_t ts, const unsigned char *hash, const char *ctx, const char *what)
{
	char why[64];

	if (++c->nsigned > SIGNED_PER_CONN) {
		snprintf(why, sizeof(why), "more than %d AUTH, VMAC and "
		    "EXPTTUN", SIGNED_PER_CONN);
		return server_refuse(s, c, why);
	}
	if (!ok) {
		snprintf(why, sizeof(why), "wrong password hash in %s", what);
		return server_refuse(s, c, why);
	}
	if (!msg_fresh(ts)) {
		snprintf(why, sizeof(why), "%s timestamp %.0f s off", what,
		    (double)ts - (double)wall_s());
		return server_refuse(s, c, why);
	}
	if (replay_seen(&s->replay, hash, ctx)) {
		snprintf(why, sizeof(why), "replayed %s", what);
		return server_refuse(s, c, why);
	}
	if (replay_add(&s->replay, ts, hash, ctx) < 0) {
		snprintf(why, sizeof(why), "server busy: %zu authentications "
		    "in %d s", s->replay.cap, 2 * AUTH_WINDOW_S);
		return server_refuse(s, c, why);
	}
	return 0;
}

static const char no_ctx[16];

static int server_vmac(struct server *s, struct conn *c, unsigned char *m,
    size_t len)
{
	if (server_check_auth(s, c, msg_vmac_check(m, s->cfg->password),
	    (int64_t)get64(m + 17), m + 25, no_ctx, "VMAC") < 0)
		return -1;
	memcpy(c->vmac, m + 1, 16);
	c->vmac[16] = '\0';
	return 0;
}

size_t msg_route_build(unsigned char *out, const struct sdwan_route *e,
    size_t n)
{
	size_t i;

	out[0] = MSG_ROUTE;
	out[1] = (unsigned char)n;
	out[2] = out[3] = 0;
	for (i = 0; i < n; i++) {
		put32(out + ROUTE_HDR_LEN + i * ROUTE_ENTRY_LEN, e[i].dst);
		put32(out + ROUTE_HDR_LEN + i * ROUTE_ENTRY_LEN + 4, e[i].mask);
		put32(out + ROUTE_HDR_LEN + i * ROUTE_ENTRY_LEN + 8, e[i].next);
	}
	return ROUTE_HDR_LEN + n * ROUTE_ENTRY_LEN;
}

/* Send the SD-WAN routes that apply to the client, ROUTE_MAX_ENTRIES a
 * frame: a rule applies when addr & mask(dev) == host(dev). */
static void server_send_routes(struct server *s, struct conn *c)
{
	unsigned char m[ROUTE_HDR_LEN + ROUTE_MAX_ENTRIES * ROUTE_ENTRY_LEN];
	struct sdwan_route e[ROUTE_MAX_ENTRIES];
	const struct config *cfg = s->cfg;
	size_t n = 0;
	int i;

	for (i = 0; i < cfg->nsdwan; i++) {
		const struct sdwan_rule *r = &cfg->sdwan[i];
		uint32_t devmask = prefix_mask(r->dev.prefix);

		if ((c->addr & devmask) != (r->dev.addr & devmask))
			continue;
		e[n].dst = r->dst;
		e[n].mask = r->mask;
		e[n].next = r->next;
		if (++n == ROUTE_MAX_ENTRIES) {
			ws_send(&c->ws, WS_BINARY, m, msg_route_build(m, e, n));
			n = 0;
		}
	}
	if (n > 0)
		ws_send(&c->ws, WS_BINARY, m, msg_route_build(m, e, n));
}

static int server_auth(struct server *s, struct conn *c, unsigned char *m,
    size_t len)
{
	uint32_t ip = get32(m + 1);
	struct conn *old;
	char ips[16];

	if (server_check_auth(s, c, msg_auth_check(m, s->cfg->password),
	    (int64_t)get64(m + 5), m + 13, no_ctx, "AUTH") < 0)
		return -1;
	if (ip == 0 || ip_is_broadcast(ip, s->cfg->has_dhcp ? &s->cfg->dhcp :
	    NULL))
		return server_refuse(s, c, "AUTH for a non-host address");
	old = map_get(s, ip);
	if (c->addr == 0 && (old == NULL || old == c) &&
	    s->nclients >= s->maxclients) {
		char why[48];

		snprintf(why, sizeof(why), "server full (%zu clients)",
		    s->maxclients);
		return server_refuse(s, c, why);
	}
	if (old != NULL && old != c) {
		log_info("client %s reconnected from %s", ip_str(ip, ips),
		    c->from);
		server_close(s, old, "replaced by a new connection");
	}
	if (c->addr != 0 && c->addr != ip && map_get(s, c->addr) == c)
		map_del(s, c->addr);
	if (c->addr == 0) {
		s->nclients++;
		pending_del(s, c);
	}
	c->addr = ip;
	map_put(s, ip, c);
	log_info("client %s connected from %s", ip_str(ip, ips), c->from);
	server_send_routes(s, c);
	return 0;
}

struct alloc_ctx {
	const struct server *s;
	const struct conn *c;
};

/* An address is free, or held by a connection of the same host (vmac). */
static int addr_held_by_other(const struct conn *holder,
    const struct conn *c)
{
	return holder != c && (holder->vmac[0] == '\0' ||
	    strcmp(holder->vmac, c->vmac) != 0);
}

/*
 * An address is taken when another host (vmac) holds it, or was just
 * offered it and has not sent its AUTH yet: two clients asking for the
 * same cached address at once must not both get it.  The scan of offers
 * runs per EXPTTUN only, over the connections not yet authenticated.
 */
static int addr_taken(void *ctx, uint32_t ip)
{
	const struct alloc_ctx *a = ctx;
	const struct conn *holder = map_get(a->s, ip);

	if (holder != NULL)
		return addr_held_by_other(holder, a->c);
	for (holder = a->s->pend_head; holder != NULL;
	    holder = holder->pend_next)
		if (holder->offered == ip && addr_held_by_other(holder, a->c))
			return 1;
	return 0;
}

static int server_expttun(struct server *s, struct conn *c, unsigned char *m,
    size_t len)
{
	const struct config *cfg = s->cfg;
	struct alloc_ctx ctx = { s, c };
	unsigned char reply[EXPTTUN_LEN];
	char vmac[16], text[32], ips[16];
	struct cidr want = { 0, 0 };
	const char *why;
	uint32_t ip;

	memcpy(vmac, c->vmac[0] ? c->vmac : no_ctx, 16);
	if (server_check_auth(s, c, msg_expttun_check(m, cfg->password),
	    (int64_t)get64(m + 1), m + 41, vmac, "EXPTTUN") < 0)
		return -1;
	if (!cfg->has_dhcp)
		return server_refuse(s, c, "EXPTTUN but no --dhcp range");
	if (memchr(m + 9, '\0', 32) == NULL ||
	    cidr_parse((const char *)m + 9, &want, &why) < 0)
		want.addr = 0;
	ip = addr_alloc(&cfg->dhcp, want.addr, &s->last_alloc, addr_taken,
	    &ctx);
	if (ip == 0)
		return server_refuse(s, c, "address range exhausted");
	snprintf(text, sizeof(text), "%s/%d", ip_str(ip, ips),
	    cfg->dhcp.prefix);
	log_debug("%s asked for %s, granted %s", c->from,
	    want.addr ? (const char *)m + 9 : "any address", text);
	c->offered = ip;
	msg_expttun_build(reply, cfg->password, text, wall_s(), 0);
	ws_send(&c->ws, WS_BINARY, reply, EXPTTUN_LEN);
	return 0;
}

/*
 * A relayed packet of bulk (aqm_bulk) finds the queue full while the
 * last WS_OUT_RESERVE bytes of it are left (ws_send_bulk): a receiver
 * slower than a transfer to it fills its queue with the transfer, and a
 * ping or an ACK behind it was then dropped too (issue 11).  Anything
 * else may use the whole queue.
 */
static void server_relay(struct server *s, struct conn *to,
    const unsigned char *m, size_t len)
{
	int bulk = len > 1 && m[0] == MSG_FORWARD && aqm_bulk(m + 1, len - 1);

	if ((bulk ? ws_send_bulk : ws_send)(&to->ws, WS_BINARY, m, len) < 0) {
		s->dropped++;
		return;
	}
	server_conn_touch(s, to);
	to->tx++;
	to->tx_bytes += len;
	s->forwarded++;
}

/* Every other authenticated connection gets a copy. */
static void server_broadcast(struct server *s, struct conn *from,
    const unsigned char *m, size_t len)
{
	size_t i;

	for (i = 0; i < s->top; i++) {
		struct conn *to = s->conns[i];

		if (to != NULL && to != from && to->addr != 0)
			server_relay(s, to, m, len);
	}
}

/* A source address inside an SD-WAN destination routed via the sender. */
static int sdwan_behind(const struct config *cfg, uint32_t src, uint32_t gw)
{
	int i;

	for (i = 0; i < cfg->nsdwan; i++)
		if (cfg->sdwan[i].next == gw &&
		    (src & cfg->sdwan[i].mask) == cfg->sdwan[i].dst)
			return 1;
	return 0;
}

/*
 * An IP-in-IP packet from a client carries another source inside: the
 * client's own, its outer source, or one behind it by an SD-WAN rule.
 * Else it forges a source the receiving client would believe (issue 8).
 */
static int server_ipip_ok(const struct config *cfg, uint32_t sender,
    const unsigned char *pkt, size_t len)
{
	size_t ihl = (size_t)(pkt[0] & 15) * 4;
	uint32_t inner;

	if (ihl < 20 || len < ihl + 20)
		return 0;
	inner = get32(pkt + ihl + 12);
	return inner == sender || inner == get32(pkt + 12) ||
	    sdwan_behind(cfg, inner, sender);
}

static int server_forward(struct server *s, struct conn *c, unsigned char *m,
    size_t len)
{
	const struct config *cfg = s->cfg;
	const unsigned char *pkt = m + 1;
	uint32_t src, dst;
	struct conn *to;
	char a[16], b[16];

	if (len < 1 + 20 || pkt[0] >> 4 != 4) {
		s->dropped++;
		return 0;
	}
	src = get32(pkt + 12);
	dst = get32(pkt + 16);
	if (src != c->addr && !cfg->no_source_check &&
	    !sdwan_behind(cfg, src, c->addr)) {
		s->spoofed++;
		/* Per packet: no address text unless it is logged. */
		if (log_debug_on)
			log_debug("dropped packet from %s claiming source %s",
			    ip_str(c->addr, a), ip_str(src, b));
		return 0;
	}
	if (pkt[9] == 4 && !cfg->no_source_check &&
	    !server_ipip_ok(cfg, c->addr, pkt, len - 1)) {
		s->spoofed++;
		if (log_debug_on)
			log_debug("dropped IP-in-IP from %s: inner source not "
			    "its own", ip_str(c->addr, a));
		return 0;
	}
	if ((to = map_get(s, dst)) != NULL) {
		if (to != c)
			server_relay(s, to, m, len);
	} else if (ip_is_broadcast(dst, cfg->has_dhcp ? &cfg->dhcp : NULL)) {
		server_broadcast(s, c, m, len);
	} else {
		s->dropped++;
		if (log_debug_on)
			log_debug("no client for %s", ip_str(dst, a));
	}
	return 0;
}

/* UDP4CONN, DISCOVERY, GENERAL: src must be the sender, dst a client or
 * everyone. */
static int server_peer_msg(struct server *s, struct conn *c, unsigned char *m,
    size_t len)
{
	size_t off = m[0] == MSG_GENERAL ? 4 : 1;
	uint32_t src = get32(m + off), dst = get32(m + off + 4);
	struct conn *to;
	char a[16], b[16];

	if (src != c->addr) {
		log_info_limited("closing %s (%s): message with source %s",
		    c->from, ip_str(c->addr, a), ip_str(src, b));
		return -1;
	}
	if (dst == UINT32_MAX)
		server_broadcast(s, c, m, len);
	else if ((to = map_get(s, dst)) != NULL && to != c)
		server_relay(s, to, m, len);
	return 0;
}

typedef int server_handler(struct server *s, struct conn *c,
    unsigned char *m, size_t len);

static const struct {
	int type;
	size_t minlen;
	int need_auth;
	server_handler *fn;
} server_handlers[] = {
	{ MSG_AUTH, AUTH_LEN, 0, server_auth },
	{ MSG_FORWARD, 1, 1, server_forward },
	{ MSG_EXPTTUN, EXPTTUN_LEN, 0, server_expttun },
	{ MSG_UDP4CONN, UDP4CONN_LEN, 1, server_peer_msg },
	{ MSG_VMAC, VMAC_LEN, 0, server_vmac },
	{ MSG_DISCOVERY, DISCOVERY_LEN, 1, server_peer_msg },
	{ MSG_GENERAL, GENERAL_HDR_LEN, 1, server_peer_msg },
};

/* 0 to go on, -1 to close the connection.  Unknown types are ignored. */
static int server_dispatch(struct server *s, struct conn *c, unsigned char *m,
    size_t len)
{
	size_t i;

	if (len == 0)
		return 0;
	for (i = 0; i < sizeof(server_handlers) / sizeof(server_handlers[0]);
	    i++) {
		if (server_handlers[i].type != m[0])
			continue;
		if (len < server_handlers[i].minlen) {
			log_info_limited("closing %s: short message type %d "
			    "(%zu bytes)", c->from, m[0], len);
			return -1;
		}
		if (server_handlers[i].need_auth && c->addr == 0) {
			log_info_limited("closing %s: message type %d before "
			    "AUTH", c->from, m[0]);
			return -1;
		}
		return server_handlers[i].fn(s, c, m, len);
	}
	return 0;
}

static void server_listen(struct server *s, const struct uri *u)
{
	struct addrinfo hints, *res, *ai;
	int err, on = 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((err = getaddrinfo(u->host, u->port, &hints, &res)) != 0)
		fatalx("bad --websocket `%s': %s", s->cfg->websocket,
		    gai_strerror(err));
	for (ai = res; ai != NULL && s->nlfd < SERVER_MAX_LISTEN;
	    ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype, 0);

		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
		    listen(fd, 128) < 0) {
			/* [::] may already cover the IPv4 address. */
			if (s->nlfd == 0 || errno != EADDRINUSE)
				log_warn("cannot listen on %s port %s",
				    u->host, u->port);
			close(fd);
			continue;
		}
		fd_nonblock(fd);
		s->lfd[s->nlfd++] = fd;
	}
	freeaddrinfo(res);
	if (s->nlfd == 0)
		fatalx("cannot listen on `%s'", s->cfg->websocket);
	log_info("listening on %s", s->cfg->websocket);
}

/* The lowest free slot: one exists while nclients <= maxclients and
 * npending < maxpending. */
static size_t server_slot_free(struct server *s)
{
	size_t i;

	for (i = s->free_hint; i < s->maxconns && s->conns[i] != NULL; i++)
		;
	s->free_hint = i;
	return i;
}

/*
 * The connection to evict when the pending slots are all taken: among the
 * EVICT_SCAN oldest, the oldest from the source that holds the most.  A
 * client alone at its address is evicted only when no source holds two:
 * an attacker then needs as many addresses as there are pending slots.
 */
static struct conn *pending_victim(const struct server *s)
{
	struct conn *c, *best = NULL;
	uint32_t n, most = 0;
	int k;

	for (c = s->pend_head, k = 0; c != NULL && k < EVICT_SCAN;
	    c = c->pend_next, k++)
		if ((n = s->srcs[src_find(s, c->src)].n) > most) {
			best = c;
			most = n;
		}
	return best;
}

/* A new connection on fd from ss: refused when its source already has
 * PENDING_PER_SOURCE connections authenticating; when the pending slots are
 * all taken, one is evicted. */
static void server_admit(struct server *s, int fd,
    const struct sockaddr_storage *ss)
{
	struct tls *tls = NULL;
	struct conn *c;
	unsigned char key[16];
	char from[64];
	size_t i;

	sockaddr_str((const struct sockaddr *)ss, from, sizeof(from));
	src_key(ss, key);
	if (s->srcs[src_find(s, key)].n >= PENDING_PER_SOURCE) {
		s->refused_source++;
		log_info_limited("refusing a connection from %s: %d from its "
		    "address are not authenticated yet", from,
		    PENDING_PER_SOURCE);
		close(fd);
		return;
	}
	if (s->npending >= s->maxpending && (c = pending_victim(s)) != NULL) {
		s->evicted++;
		log_info_limited("closing %s: not authenticated, and %zu "
		    "connections are authenticating", c->from, s->npending);
		server_close(s, c, "evicted");
	}
	if ((i = server_slot_free(s)) == s->maxconns ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		log_warnx("no memory for a connection from %s", from);
		close(fd);
		return;
	}
	if (s->tls != NULL && (tls = tls_server_new(s->tls)) == NULL) {
		log_warnx("no memory for a TLS connection from %s", from);
		free(c);
		close(fd);
		return;
	}
	fd_nonblock(fd);
	tcp_nodelay(fd);
	tcp_notsent_lowat(fd);
	c->since_ms = now_ms();
	memcpy(c->from, from, sizeof(c->from));
	memcpy(c->src, key, sizeof(c->src));
	ws_init_server(&c->ws, fd, tls);
	c->ws.last_rx_ms = c->since_ms;
	server_conn_add(s, c, i);
	log_debug("connection from %s", c->from);
}

/*
 * accept() failed for want of descriptors.  The connection stays in the
 * backlog and the listener readable: poll would return at once, forever.
 * Take it with the spare descriptor and close it, and stop polling the
 * listeners for FD_PAUSE_MS.  Logged once, and the end once, when it has
 * not happened for FD_CALM_MS (server_fd_calm).
 */
static void server_fd_short(struct server *s, int lfd)
{
	int fd;

	if (s->fd_short_ms == 0)
		log_warn("out of file descriptors: refusing connections for "
		    "now");
	s->fd_short_ms = now_ms();
	s->refused_fd++;
	if (s->spare_fd >= 0) {
		close(s->spare_fd);
		if ((fd = accept(lfd, NULL, NULL)) >= 0)
			close(fd);
		s->spare_fd = open("/dev/null", O_RDONLY);
		if (s->spare_fd >= 0)
			fd_nonblock(s->spare_fd);
	}
	s->accept_paused_ms = now_ms() + FD_PAUSE_MS;
}

static void server_fd_calm(struct server *s, int64_t now)
{
	if (s->fd_short_ms != 0 && now - s->fd_short_ms > FD_CALM_MS) {
		log_info("file descriptors free again (%lu connections "
		    "refused for want of them so far)", s->refused_fd);
		s->fd_short_ms = 0;
	}
}

static void server_accept(struct server *s, int lfd)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, k;

	for (k = 0; k < ACCEPT_BURST; k++) {
		sl = sizeof(ss);
		if ((fd = accept(lfd, (struct sockaddr *)&ss, &sl)) < 0) {
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM)
				server_fd_short(s, lfd);
			return;
		}
		server_admit(s, fd, &ss);
	}
}

/* Read what the connection has: at most READ_BURST messages a pass, so
 * one busy client cannot starve the others. */
static void server_conn_read(struct server *s, struct conn *c)
{
	unsigned char *m;
	size_t len;
	int i, r;

	server_conn_touch(s, c);
	if (stream_pump(&c->ws.s) < 0) {
		server_close(s, c, "connection failed");
		return;
	}
	for (i = 0; i < READ_BURST; i++) {
		if ((r = ws_read(&c->ws, &m, &len)) < 0) {
			server_close(s, c, "connection closed");
			return;
		}
		if (r == 0)
			break;
		c->rx++;
		c->rx_bytes += len;
		if (server_dispatch(s, c, m, len) < 0) {
			server_close(s, c, "protocol error");
			return;
		}
	}
}

/* A connection that has not authenticated within AUTH_TIMEOUT_MS goes,
 * whatever it sent: pings must not keep a stranger's slot. */
static void server_conn_timers(struct server *s, struct conn *c, int64_t now)
{
	const char *why = NULL;

	if (c->ws.state != WS_OPEN && now - c->since_ms > HANDSHAKE_TIMEOUT_MS)
		why = "no WebSocket handshake within 10 s";
	else if (c->addr == 0 && now - c->since_ms > AUTH_TIMEOUT_MS)
		why = "no AUTH within 10 s";
	if (why != NULL) {
		s->timed_out++;
		log_info_limited("closing %s: %s", c->from, why);
		server_close(s, c, why);
	} else if (now - c->ws.last_rx_ms > IDLE_TIMEOUT_MS) {
		server_close(s, c, "silent for 60 s");
	} else if (c->ws.full_since_ms != 0 &&
	    now - c->ws.full_since_ms > IDLE_TIMEOUT_MS) {
		server_close(s, c, "not reading for 60 s");
	} else {
		/* A burst's buffers go back to their base size even when
		 * the connection falls quiet (and is not flushed again). */
		ws_trim(&c->ws);
	}
}

/* The server's report: candy status and SIGUSR1 (status.c). */
static void server_report(void *ctx, struct report *r)
{
	const struct server *s = ctx;
	char addrs[SERVER_MAX_LISTEN][64], ip[16];
	const char *lst[SERVER_MAX_LISTEN];
	size_t i;

	for (i = 0; i < (size_t)s->nlfd; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		if (getsockname(s->lfd[i], (struct sockaddr *)&ss, &sl) < 0)
			snprintf(addrs[i], sizeof(addrs[i]), "?");
		else
			sockaddr_str((struct sockaddr *)&ss, addrs[i],
			    sizeof(addrs[i]));
		lst[i] = addrs[i];
	}
	report_begin(r, "server", "websocket", s->cfg->websocket);
	report_strs(r, "listen", "listening on", lst, (size_t)s->nlfd);
	report_str(r, "tls", "tls", s->tls != NULL ? "TLS 1.2" : "plain");
	report_num(r, "connections", "connections", (int64_t)s->nconns, NULL);
	report_num(r, "clients", "clients", (int64_t)s->nclients, NULL);
	report_num(r, "max_clients", "max clients", (int64_t)s->maxclients,
	    NULL);
	report_num(r, "authenticating", "authenticating",
	    (int64_t)s->npending, NULL);
	report_num(r, "max_authenticating", "max authenticating",
	    (int64_t)s->maxpending, NULL);
	report_num(r, "forwarded", "forwarded", (int64_t)s->forwarded, NULL);
	report_num(r, "dropped", "dropped", (int64_t)s->dropped, NULL);
	report_num(r, "spoofed", "spoofed", (int64_t)s->spoofed, NULL);
	report_num(r, "refused", "refused", (int64_t)s->refused, NULL);
	report_num(r, "evicted", "evicted", (int64_t)s->evicted, NULL);
	report_num(r, "refused_source", "refused per source",
	    (int64_t)s->refused_source, NULL);
	report_num(r, "refused_fd", "refused for descriptors",
	    (int64_t)s->refused_fd, NULL);
	report_num(r, "timed_out", "timed out", (int64_t)s->timed_out, NULL);
	report_num(r, "replay_entries", "replay entries",
	    (int64_t)s->replay.n, NULL);
	report_num(r, "replay_capacity", "replay capacity",
	    (int64_t)s->replay.cap, NULL);
	report_list(r, "sessions", "session", 0);
	for (i = 0; i < s->top; i++) {
		const struct conn *c = s->conns[i];

		if (c == NULL)
			continue;
		report_item(r, "address", c->addr ? ip_str(c->addr, ip) : NULL);
		report_str(r, "remote", "remote", c->from);
		report_str(r, "vmac", "vmac", c->vmac[0] ? c->vmac : NULL);
		report_str(r, "description", "description",
		    c->ws.ping[0] ? c->ws.ping : NULL);
		report_when(r, "connected_since", "connected since",
		    c->since_ms, 1);
		report_traffic(r, "rx", "received", "frames", c->rx,
		    c->rx_bytes);
		report_traffic(r, "tx", "sent", "frames", c->tx, c->tx_bytes);
		report_bytes(r, "queued_bytes", "queued",
		    c->ws.outlen - c->ws.outpos);
		report_num(r, "dropped", "dropped", (int64_t)c->ws.dropped,
		    NULL);
		report_item_end(r);
	}
	report_list_end(r);
	report_end(r);
}

/* The status socket of cfg; candy runs on without one. */
static void status_start(const struct config *cfg)
{
	char path[300];

	if (status_path(cfg, path, sizeof(path)) < 0)
		log_warnx("status: --state-dir `%s' is too long for a socket "
		    "path: no status socket", cfg->state_dir);
	else
		status_open(path);
}

/*
 * Raise the soft limit on descriptors to the hard one: each connection
 * takes one.  Returns the limit now in force.
 */
static long server_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1024;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ||
		    rl.rlim_max > FD_LIMIT_MAX ? FD_LIMIT_MAX : rl.rlim_max;
		if (rl.rlim_cur > was && setrlimit(RLIMIT_NOFILE, &rl) < 0)
			rl.rlim_cur = was;
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > FD_LIMIT_MAX)
		return FD_LIMIT_MAX;
	return (long)rl.rlim_cur;
}

/* see candy.h */
void server_limits(const struct config *cfg, long fds, size_t *clients,
    size_t *pending)
{
	size_t slots = fds > FD_RESERVE + 2 ? (size_t)(fds - FD_RESERVE) : 2;
	size_t want = slots, p;

	if (cfg->has_dhcp) {
		/* Hosts of the range: not the network, not the broadcast. */
		uint64_t hosts = (uint64_t)1 << (32 - cfg->dhcp.prefix);

		if (hosts > 2)
			hosts -= 2;
		if (hosts < want)
			want = (size_t)hosts;
	}
	if (cfg->max_clients > 0 && (size_t)cfg->max_clients < want)
		want = (size_t)cfg->max_clients;
	p = want / PENDING_SHARE;
	if (p < PENDING_MIN)
		p = PENDING_MIN;
	if (want + p > slots) {
		/* Descriptors decide: share them out. */
		p = slots / (PENDING_SHARE + 1);
		if (p < 1)
			p = 1;
		if (want > slots - p)
			want = slots - p;
	}
	*clients = want;
	*pending = p;
}

/* Connection slots, the address map, the pending sources and the replay
 * memory, sized for fds descriptors. */
static void server_tables(struct server *s, long fds)
{
	const struct config *cfg = s->cfg;
	size_t nreplay, i;

	server_limits(cfg, fds, &s->maxclients, &s->maxpending);
	s->maxconns = s->maxclients + s->maxpending;
	for (s->mapsize = 16; s->mapsize < 2 * s->maxclients; s->mapsize *= 2)
		;
	for (s->srcsize = 16; s->srcsize < 2 * s->maxpending; s->srcsize *= 2)
		;
	nreplay = REPLAY_PER_SLOT * s->maxconns;
	if (nreplay < REPLAY_MIN)
		nreplay = REPLAY_MIN;
	s->conns = calloc(s->maxconns, sizeof(*s->conns));
	s->map = calloc(s->mapsize, sizeof(*s->map));
	s->srcs = calloc(s->srcsize, sizeof(*s->srcs));
	s->pfd = calloc(SERVER_PFD_HDR + s->maxconns, sizeof(*s->pfd));
	s->dirty = calloc(s->maxconns, sizeof(*s->dirty));
	s->again = calloc(s->maxconns, sizeof(*s->again));
	s->ready = calloc(s->maxconns, sizeof(*s->ready));
	s->slot_dirty = calloc(s->maxconns, 1);
	if (s->conns == NULL || s->map == NULL || s->srcs == NULL ||
	    s->pfd == NULL || s->dirty == NULL || s->again == NULL ||
	    s->ready == NULL ||
	    s->slot_dirty == NULL || replay_init(&s->replay, nreplay) < 0)
		fatalx("out of memory");
	s->cpfd = s->pfd + SERVER_PFD_HDR;
	for (i = 0; i < SERVER_PFD_HDR + s->maxconns; i++)
		s->pfd[i].fd = -1;
	s->epfd = -1;
	rand_bytes(&s->srckey, sizeof(s->srckey));
	if (cfg->has_dhcp)
		s->last_alloc = cfg->dhcp.addr & prefix_mask(cfg->dhcp.prefix);
}

static void server_tables_free(struct server *s)
{
	free(s->conns);
	free(s->map);
	free(s->srcs);
	free(s->pfd);
	free(s->dirty);
	free(s->again);
	free(s->ready);
	free(s->slot_dirty);
#ifdef __linux__
	free(s->evs);
	if (s->epfd >= 0)
		close(s->epfd);
#endif
	replay_free(&s->replay);
}

static void server_init(struct server *s, const struct config *cfg)
{
	struct uri u;
	char err[256];
	long fds;

	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	if (uri_parse(cfg->websocket, &u) < 0)
		fatalx("bad --websocket `%s'", cfg->websocket);
	if (u.tls && (s->tls = tls_server_ctx_load(cfg->cert, cfg->key, err,
	    sizeof(err))) == NULL)
		fatalx("%s", err);
	fds = server_fd_limit();
	server_tables(s, fds);
	if ((s->spare_fd = open("/dev/null", O_RDONLY)) >= 0)
		fd_nonblock(s->spare_fd);
	server_listen(s, &u);
	log_info("capacity: %zu clients, and %zu more connections while they "
	    "authenticate (%ld file descriptors%s%s)", s->maxclients,
	    s->maxpending, fds, cfg->max_clients > 0 ? ", --max-clients" : "",
	    cfg->has_dhcp ? ", the --dhcp range" : "");
}

/*
 * The connections' poll set.  poll() costs the kernel O(descriptors) per
 * call: with 10,000 connections, 90% of the server's CPU went there and
 * forwarding fell to a fifth.  On Linux the connections are in an epoll
 * set instead, whose descriptor poll() watches along with the signals and
 * listeners; elsewhere poll() takes them all.  XXX kqueue for the BSDs and
 * macOS.  Either way s->cpfd[i] holds slot i's descriptor and events as
 * last set, and after server_wait its revents, the ready slots listed.
 */
static void server_evset_init(struct server *s)
{
#ifdef __linux__
	if ((s->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		fatalx("epoll_create1: %s", strerror(errno));
	if ((s->evs = calloc(s->maxconns, sizeof(*s->evs))) == NULL)
		fatalx("out of memory");
#else
	s->epfd = -1;
#endif
}

/* Slot i's connection now has fd and wants events. */
static void server_evset_set(struct server *s, size_t i, int fd, short events)
{
#ifdef __linux__
	struct epoll_event ev;

	if (s->cpfd[i].fd == fd && s->cpfd[i].events == events)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.events = (uint32_t)events;	/* EPOLLIN == POLLIN and so on */
	ev.data.u64 = i;
	/* A slot's old descriptor left the set when it was closed. */
	if (epoll_ctl(s->epfd, s->cpfd[i].fd == fd ? EPOLL_CTL_MOD :
	    EPOLL_CTL_ADD, fd, &ev) < 0)
		log_warn("epoll_ctl");
#endif
	s->cpfd[i].fd = fd;
	s->cpfd[i].events = events;
}

/* poll() on the signals, listeners and connections; list the ready
 * slots.  Returns poll's result. */
static int server_wait(struct server *s, int timeout)
{
	size_t i, nhdr = SERVER_PFD_HDR;
	int n;

	s->nready = 0;
	s->pfd[SERVER_PFD_EPOLL].fd = s->epfd;
	s->pfd[SERVER_PFD_EPOLL].events = POLLIN;
#ifdef __linux__
	if ((n = poll(s->pfd, nhdr, timeout)) <= 0 ||
	    s->pfd[SERVER_PFD_EPOLL].revents == 0)
		return n;
	if ((n = epoll_wait(s->epfd, s->evs, (int)s->maxconns, 0)) < 0)
		return n;
	for (i = 0; i < (size_t)n; i++) {
		size_t k = (size_t)s->evs[i].data.u64;

		s->cpfd[k].revents = (short)s->evs[i].events;
		s->ready[s->nready++] = k;
	}
	return 1;
#else
	if ((n = poll(s->pfd, nhdr + s->top, timeout)) <= 0)
		return n;
	for (i = 0; i < s->top; i++)
		if (s->cpfd[i].revents != 0)
			s->ready[s->nready++] = i;
	return n;
#endif
}

/*
 * Before poll: flush the touched connections and recompute their poll
 * entries; one with input already buffered is read again after poll
 * whatever poll says (and then poll must not wait).  Returns the poll
 * timeout, at most timeout.
 */
static int server_dirty_flush(struct server *s, int timeout)
{
	size_t k, i;

	s->nagain = 0;
	for (k = 0; k < s->ndirty; k++) {
		struct conn *c = s->conns[i = s->dirty[k]];

		s->slot_dirty[i] = 0;
		if (c == NULL)
			continue;
		if (ws_flush(&c->ws) < 0) {
			server_close(s, c, "write failed");
			continue;
		}
		server_evset_set(s, i, c->ws.s.fd, ws_events(&c->ws));
		s->cpfd[i].revents = 0;
		if (ws_pending(&c->ws)) {
			s->again[s->nagain++] = i;
			timeout = 0;
		}
	}
	s->ndirty = 0;
	return timeout;
}

/* After poll: read every connection poll named, and those with input
 * buffered.  A slot read twice in a pass reads nothing the second time. */
static void server_poll_read(struct server *s)
{
	size_t k, i;

	for (k = 0; k < s->nready; k++) {
		struct conn *c = s->conns[i = s->ready[k]];

		if (c != NULL && s->cpfd[i].revents != 0) {
			log_peer(c->from);
			server_conn_read(s, c);
			log_peer(NULL);
		}
	}
	for (k = 0; k < s->nagain; k++) {
		struct conn *c = s->conns[i = s->again[k]];

		if (c != NULL && s->cpfd[i].revents == 0 &&
		    ws_pending(&c->ws)) {
			log_peer(c->from);
			server_conn_read(s, c);
			log_peer(NULL);
		}
	}
	for (k = 0; k < s->nready; k++)
		s->cpfd[s->ready[k]].revents = 0;
}

/* Every connection's timers, once a second: deadlines are in seconds. */
static void server_timers(struct server *s, int64_t now)
{
	size_t i;

	if (now < s->timers_ms)
		return;
	s->timers_ms = now + 1000;
	for (i = 0; i < s->top; i++)
		if (s->conns[i] != NULL)
			server_conn_timers(s, s->conns[i], now);
}

void server_run(const struct config *cfg)
{
	static struct server s;
	struct pollfd *pfd;
	size_t i;
	int64_t tick = 0;

	server_init(&s, cfg);
	server_evset_init(&s);
	pfd = s.pfd;
	status_start(cfg);
	while (!sig_quit) {
		int64_t now = now_ms();
		int timeout = 1000, paused = now < s.accept_paused_ms;

		pfd[0].fd = sig_pipe[0];
		pfd[0].events = POLLIN;
		for (i = 0; i < (size_t)s.nlfd; i++) {
			pfd[1 + i].fd = paused ? -1 : s.lfd[i];
			pfd[1 + i].events = POLLIN;
			pfd[1 + i].revents = 0;
		}
		if (paused && s.accept_paused_ms - now < timeout)
			timeout = (int)(s.accept_paused_ms - now);
		status_events(pfd + SERVER_PFD_STATUS);
		timeout = server_dirty_flush(&s, timeout);
		if (server_wait(&s, timeout) < 0 && errno != EINTR)
			fatalx("poll: %s", strerror(errno));
		signals_drain();
		server_poll_read(&s);
		now = now_ms();
		server_timers(&s, now);
		for (i = 0; i < (size_t)s.nlfd; i++)
			if (pfd[1 + i].revents & POLLIN)
				server_accept(&s, s.lfd[i]);
		if (now - tick >= 1000) {
			tick = now;
			log_tick();
			server_fd_calm(&s, now);
		}
		status_handle(pfd + SERVER_PFD_STATUS, now, server_report, &s);
		if (sig_status) {
			sig_status = 0;
			status_log(server_report, &s);
		}
	}
	log_info("shutting down");
	status_close();
	for (i = 0; i < s.top; i++)
		if (s.conns[i] != NULL)
			server_close(&s, s.conns[i], "server shutting down");
	server_tables_free(&s);
}

/* ---- The client (PROTOCOL 3 and 4). ---- */

#define CONNECT_TIMEOUT_MS	5000	/* per server address tried */
#define OPEN_TIMEOUT_MS		10000	/* TCP connected to WebSocket open */
#define KEEPALIVE_PING_MS	15000	/* ping after this long without a frame */
#define KEEPALIVE_DEAD_MS	30000	/* and give up after this long */
#define BACKOFF_MAX_S		30
#define SESSION_STABLE_MS	60000	/* a session this old resets the backoff */
#define TUN_BURST		64	/* packets read from the TUN a pass */
/* Bytes read from the TUN a pass: with offloads one read may be 64 KiB,
 * and 64 of them would keep the loop from the UDP socket (and a ping's
 * answer waiting there) for milliseconds. */
#define TUN_PASS_BYTES		(128 * 1024)
#define IPV4_HDR_LEN		20
#define STALL_MS		30000	/* server took no bytes: reconnect */
#define REFUSED_LOG_MAX		8	/* refused routes logged a session */
#define GUARD_REFRESH_MS	5000	/* OS routes read at most this often */

enum session_state {
	S_IDLE,		/* waiting to (re)connect */
	S_CONNECTING,	/* TCP connect under way */
	S_OPENING,	/* TLS and WebSocket upgrade */
	S_ASKING,	/* EXPTTUN sent, waiting for the address */
	S_UP		/* AUTH sent: forwarding */
};

/* The client process: one server connection at a time, one TUN device. */
struct session {
	struct client c;
	const struct config *cfg;
	enum session_state state;
	struct uri uri;
	struct tls_ctx *tls;
	struct addrinfo *ai_list, *ai_next;	/* server addresses to try */
	struct addrinfo lit_ai;		/* an IPv4 literal's one address */
	struct sockaddr_in lit_sin;
	int fd;					/* while S_CONNECTING */
	char trying[64];			/* the address being tried */
	int64_t deadline;	/* connect timeout, or when to reconnect */
	int64_t started_ms;	/* when the session opened */
	int backoff_s;
	int64_t last_tx_ms, ping_ms;
	int64_t stall_ms;	/* bytes queued, none taken since; 0 if not */
	uint32_t server_ip;	/* the server's IPv4 address; 0 IPv6 */
	int routes_refused;	/* this session: for the log */
	int routes_full_logged;	/* "more than SDWAN_MAX" said once */
	const char *why;	/* a handler's reason to end the session */
	struct route_guard guard;	/* session_guard's last answer */
	int64_t guard_ms;		/* and when; 0 none */
	uint32_t guard_addr;		/* and for which address of ours */
	unsigned long sessions;	/* how many came up: reconnects + 1 */
	char vmac[17];
	struct cidr want;	/* the address to ask for: cached or static */
	char ping[128];		/* candy::OS::VERSION::HOSTNAME */
	struct ws ws;
	unsigned char buf[PKT_HEADROOM + PKT_MAX];	/* TUN reads */
	unsigned char seg[PKT_HEADROOM + PKT_MAX];	/* cut from buf */
};

#if defined(__linux__)
#define CANDY_OS "linux"
#elif defined(__APPLE__)
#define CANDY_OS "macos"
#elif defined(__FreeBSD__)
#define CANDY_OS "freebsd"
#elif defined(__OpenBSD__)
#define CANDY_OS "openbsd"
#elif defined(__NetBSD__)
#define CANDY_OS "netbsd"
#else
#define CANDY_OS "unix"
#endif

static struct session *session_of(struct client *c)
{
	return (struct session *)(void *)c;	/* c is the first member */
}

/* State kept between runs, in Candy's layout under --state-dir. */
static void state_path(const struct config *cfg, char *buf, size_t len,
    const char *kind, const char *name)
{
	snprintf(buf, len, "%s/%s/%s", cfg->state_dir, kind,
	    name && *name ? name : "__noname__");
}

static int state_read(const struct config *cfg, const char *kind,
    const char *name, char *out, size_t outlen)
{
	char path[600], *value;
	size_t n = 0;
	ssize_t r = 0;
	int fd;

	/* open and read, not stdio: see fd_print. */
	state_path(cfg, path, sizeof(path), kind, name);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	while (n < outlen - 1 && ((r = read(fd, out + n, outlen - 1 - n)) > 0 ||
	    (r < 0 && errno == EINTR)))
		n += r > 0 ? (size_t)r : 0;
	close(fd);
	out[n] = '\0';
	value = trim(out, 0);
	memmove(out, value, strlen(value) + 1);
	return 0;
}

/* Write through a temporary file, so a crash leaves the old value. */
static void state_write(const struct config *cfg, const char *kind,
    const char *name, const char *value)
{
	char path[600], tmp[620];
	int fd, r;

	snprintf(path, sizeof(path), "%s", cfg->state_dir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s", cfg->state_dir, kind);
	mkdir(path, 0755);
	state_path(cfg, path, sizeof(path), kind, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	/* The mode fopen would give. */
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0666)) < 0) {
		log_warn("cannot save %s", path);
		return;
	}
	r = fd_print(fd, "%s", value);
	if (close(fd) != 0 || r < 0 || rename(tmp, path) < 0)
		log_warn("cannot save %s", path);
}

/* s is lower-case hex digits only. */
static int hex_only(const char *s)
{
	for (; *s != '\0'; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	return 1;
}

/* The vmac identifies this host to the server: 16 random hex digits, made
 * once and kept. */
static void session_load_vmac(struct session *s)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char r[16];
	size_t i;

	if (state_read(s->cfg, "vmac", NULL, s->vmac, sizeof(s->vmac)) == 0 &&
	    strlen(s->vmac) == 16 && hex_only(s->vmac))
		return;
	rand_bytes(r, sizeof(r));
	for (i = 0; i < 16; i++)
		s->vmac[i] = hex[r[i] & 15];
	s->vmac[16] = '\0';
	state_write(s->cfg, "vmac", NULL, s->vmac);
}

static void session_load_address(struct session *s)
{
	char text[64];
	const char *why;

	if (s->cfg->has_tun) {
		s->want = s->cfg->tun;
	} else if (state_read(s->cfg, "address", s->cfg->name, text,
	    sizeof(text)) < 0 || cidr_parse(text, &s->want, &why) < 0) {
		s->want.addr = 0;
		s->want.prefix = 0;
	}
}

static int session_send(struct session *s, int op, const void *p, size_t n)
{
	if (s->state < S_OPENING || ws_send(&s->ws, op, p, n) < 0)
		return -1;
	s->last_tx_ms = now_ms();
	return 0;
}

int client_server_send(struct client *c, const unsigned char *msg, size_t len)
{
	/* No session at all (c->ws NULL) also covers a bare client in tests. */
	if (c->ws == NULL || session_of(c)->state != S_UP)
		return -1;
	return session_send(session_of(c), WS_BINARY, msg, len);
}

/* RFC 791 header checksum. */
static uint16_t ip_checksum(const unsigned char *p, size_t len)
{
	uint32_t sum = 0;
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += get16(p + i);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* Relaying: TTL minus one, checksum patched as RFC 1141 does. */
static int ip_ttl_decrement(unsigned char *pkt)
{
	uint32_t sum;

	if (pkt[8] <= 1)
		return -1;
	pkt[8]--;
	sum = get16(pkt + 10) + 0x0100;
	put16(pkt + 10, (uint16_t)((sum & 0xffff) + (sum >> 16)));
	return 0;
}

/* SD-WAN: wrap the packet in an IP-in-IP header towards the gateway. */
static unsigned char *ipip_wrap(struct client *c, unsigned char *pkt,
    size_t *len, uint32_t gw)
{
	unsigned char *h = pkt - IPV4_HDR_LEN;

	h[0] = 0x45;
	h[1] = 0;
	put16(h + 2, (uint16_t)(*len + IPV4_HDR_LEN));
	put32(h + 4, 0);	/* id 0, no fragmentation flags */
	h[8] = 64;
	h[9] = 4;		/* IP-in-IP */
	put16(h + 10, 0);
	put32(h + 12, c->addr);
	put32(h + 16, gw);
	put16(h + 10, ip_checksum(h, IPV4_HDR_LEN));
	*len += IPV4_HDR_LEN;
	return h;
}

/*
 * The SD-WAN gateway for dst, or 0: the longest route we hold, else the
 * full tunnel's gateway.  The tunnel network, multicast and broadcast are
 * never behind a gateway, so peers stay peers under a full tunnel.
 */
static uint32_t client_gateway(const struct client *c, uint32_t dst)
{
	const struct sdwan_route *best = NULL;
	int i;

	if ((dst & c->mask) == c->net || dst >= 0xe0000000u)
		return 0;
	for (i = 0; i < c->nroutes; i++)
		if ((dst & c->routes[i].mask) == c->routes[i].dst &&
		    c->routes[i].next != c->addr &&
		    (best == NULL || c->routes[i].mask > best->mask))
			best = &c->routes[i];
	if (best != NULL)
		return best->next;
	return c->full_gw != c->addr ? c->full_gw : 0;
}

void client_route(struct client *c, unsigned char *pkt, size_t len, int relay)
{
	uint32_t dst, gw;

	if (len < IPV4_HDR_LEN || pkt[0] >> 4 != 4 || c->addr == 0) {
		c->dropped++;
		return;
	}
	if (relay && ip_ttl_decrement(pkt) < 0) {
		c->ttl_expired++;
		return;
	}
	dst = get32(pkt + 16);
	if ((gw = client_gateway(c, dst)) != 0) {
		pkt = ipip_wrap(c, pkt, &len, gw);
		dst = gw;
	}
	if (dst == c->addr) {
		client_deliver(c, pkt, len);
		return;
	}
	if (p2p_send(c, dst, pkt, len))
		return;
	pkt[-1] = MSG_FORWARD;
	if (client_server_send(c, pkt - 1, len + 1) < 0) {
		c->dropped++;
		return;
	}
	c->tx_server++;
	c->tx_server_bytes += len;
}

/*
 * May gw send us, wrapped, a packet from src?  When src is gw itself, or
 * gw is the gateway of a network holding src by a route the server gave
 * us (or our full tunnel's gateway).  Anything else is a client forging
 * a source through IP-in-IP, which the server's source check cannot see.
 */
static int client_ipip_ok(const struct client *c, uint32_t gw, uint32_t src)
{
	int i;

	if (src == gw || (c->full_gw != 0 && c->full_gw == gw))
		return 1;
	for (i = 0; i < c->nroutes; i++)
		if (c->routes[i].next == gw &&
		    (src & c->routes[i].mask) == c->routes[i].dst)
			return 1;
	return 0;
}

/* >>> offload block (issue 11): received TCP coalesced for the TUN */
/* see candy.h */
void client_flush(struct client *c)
{
	const unsigned char *p;
	size_t n;

	p2p_flush(c);
	if (c->gro == NULL || (n = tun_gro_take(c->gro, c->vnet_le, &p)) == 0)
		return;
	if (p[1] != TUN_GSO_NONE)
		c->gro_out++;
	if (tun_write_vnet(c->tun_fd, p, p + TUN_VNET_LEN, n - TUN_VNET_LEN) < 0)
		c->dropped++;
}

/* What cannot join the held flow goes out behind it, as it came. */
static void client_coalesce(struct client *c, unsigned char *pkt, size_t len)
{
	int i;

	for (i = 0; i < 2; i++)
		switch (tun_gro_add(c->gro, pkt, len)) {
		case TUN_GRO_HELD:
			return;
		case TUN_GRO_FLUSH:
			client_flush(c);
			break;
		default:
			if (tun_write_vnet(c->tun_fd, NULL, pkt, len) < 0)
				c->dropped++;
			return;
		}
}
/* <<< offload block */

void client_deliver(struct client *c, unsigned char *pkt, size_t len)
{
	size_t ihl;
	uint32_t gw;
	char a[16], b[16];

	if (len < IPV4_HDR_LEN || pkt[0] >> 4 != 4) {
		c->dropped++;
		return;
	}
	/* An IP-in-IP packet for us: a peer reached our SD-WAN LAN. */
	if (pkt[9] == 4 && get32(pkt + 16) == c->addr) {
		ihl = (size_t)(pkt[0] & 15) * 4;
		if (ihl < IPV4_HDR_LEN || len < ihl + IPV4_HDR_LEN) {
			c->dropped++;
			return;
		}
		gw = get32(pkt + 12);
		pkt += ihl;
		len -= ihl;
		if (pkt[0] >> 4 != 4) {
			c->dropped++;
			return;
		}
		if (!client_ipip_ok(c, gw, get32(pkt + 12))) {
			c->ipip_refused++;
			if (log_debug_on)
				log_debug("dropped IP-in-IP from %s: inner "
				    "source %s is not behind it", ip_str(gw, a),
				    ip_str(get32(pkt + 12), b));
			return;
		}
	}
	if (c->tun_fd < 0)
		c->dropped++;
	else if (c->gro != NULL)
		client_coalesce(c, pkt, len);
	else if (tun_write(c->tun_fd, pkt, len) < 0)
		c->dropped++;
}

/* ---- The client's connection to the server. ---- */

/* The full tunnel through gw (issue 10): see tun_full_tunnel. */
static void client_full_on(struct client *c, uint32_t gw, int local)
{
	char a[16];

	c->full_gw = gw;
	c->full_local = local;
	/* Once a session: every 0.0.0.0/0 of every ROUTE would otherwise
	 * try again, each try a round of netlink requests. */
	if (c->full_on || c->full_failed)
		return;
	if (tun_full_tunnel(c->ifname, 1) < 0) {
		log_warn("cannot route everything through %s", c->ifname);
		c->full_failed = 1;
		return;
	}
	c->full_on = 1;
	log_info("full tunnel: all IPv4 through %s (%s)", ip_str(gw, a),
	    local ? "--exit-node" : "pushed by the server");
}

static void client_full_off(struct client *c)
{
	c->full_gw = 0;
	c->full_local = 0;
	if (!c->full_on)
		return;
	c->full_on = 0;
	if (tun_full_tunnel(c->ifname, 0) < 0)
		log_warn("cannot remove the full tunnel from %s", c->ifname);
	else
		log_info("full tunnel removed");
}

/*
 * Routes the server pushed belong to its session: they go with it, and a
 * reconnect adds only what the server pushes again.  --exit-node stays.
 */
static void client_routes_clear(struct client *c)
{
	int i;

	for (i = 0; i < c->nroutes; i++)
		tun_route_del(c->ifname, c->routes[i].dst, c->routes[i].mask);
	c->nroutes = 0;
	if (c->full_gw != 0 && !c->full_local)
		client_full_off(c);
	c->full_failed = 0;
}

/*
 * What a grant or a pushed route must leave alone, as of now.  The OS
 * table is read at most once per GUARD_REFRESH_MS: a server sending
 * ROUTE after ROUTE must not make us dump a large table for each.
 */
static void session_guard(struct session *s, struct route_guard *g)
{
	const struct client *c = &s->c;
	int64_t now = now_ms();
	int n;

	if (s->guard_ms != 0 && now - s->guard_ms < GUARD_REFRESH_MS &&
	    s->guard_addr == c->addr) {
		*g = s->guard;
		return;
	}
	memset(g, 0, sizeof(*g));
	g->server = s->server_ip;
	g->stun = c->p2p.udp_fd >= 0 ? c->p2p.stun.ip : 0;
	if (c->addr != 0) {
		g->tun_net = c->net;
		g->tun_mask = c->mask;
	}
	n = tun_routes_read(c->tun_fd >= 0 ? c->ifname : NULL, g->underlay,
	    GUARD_UNDERLAY_MAX);
	if (n < 0 && log_debug_on)
		log_debug("local routes unknown: %s", strerror(errno));
	g->nunderlay = n < 0 ? 0 : n;
	s->guard = *g;
	s->guard_ms = now;
	s->guard_addr = c->addr;
}

/* After a failure: wait 1 s doubling to 30 s, plus up to a quarter more
 * of jitter; a session that lived a minute starts the doubling again. */
static void session_retry(struct session *s, int64_t now)
{
	int64_t wait;

	if (s->started_ms != 0 && now - s->started_ms >= SESSION_STABLE_MS)
		s->backoff_s = 1;
	wait = (int64_t)s->backoff_s * 1000;
	wait += rand_below((uint32_t)wait / 4 + 1);
	s->deadline = now + wait;
	s->backoff_s = s->backoff_s * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S :
	    s->backoff_s * 2;
	s->started_ms = 0;
	s->state = S_IDLE;
	log_debug("reconnecting in %lld ms", (long long)wait);
}

static void session_end(struct session *s, const char *why)
{
	if (s->state == S_UP)
		log_warnx("disconnected from %s: %s", s->cfg->websocket, why);
	else
		log_warnx("cannot connect to %s: %s", s->cfg->websocket, why);
	if (s->state >= S_OPENING)
		ws_free(&s->ws);
	else if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->c.ws = NULL;
	s->why = NULL;
	s->guard_ms = 0;
	client_routes_clear(&s->c);
	if (s->ai_list != NULL) {
		freeaddrinfo(s->ai_list);
		s->ai_list = s->ai_next = NULL;
	}
	session_retry(s, now_ms());
}

/* Try the next address of the server's name; every one is tried in turn,
 * so a dual-stack server with a broken IPv6 path is still reached. */
static void session_connect_next(struct session *s)
{
	while (s->ai_next != NULL) {
		struct addrinfo *ai = s->ai_next;
		int fd;

		s->ai_next = ai->ai_next;
		sockaddr_str(ai->ai_addr, s->trying, sizeof(s->trying));
		if ((fd = socket(ai->ai_family, SOCK_STREAM, 0)) < 0)
			continue;
		fd_nonblock(fd);
		/* Off the full tunnel, always: a server may push one. */
		if (tun_socket_mark(fd) < 0 && log_debug_on)
			log_debug("cannot mark the socket: %s",
			    strerror(errno));
		log_debug("connecting to %s", s->trying);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 &&
		    errno != EINPROGRESS) {
			log_info("connect to %s: %s", s->trying,
			    strerror(errno));
			close(fd);
			continue;
		}
		s->fd = fd;
		s->state = S_CONNECTING;
		s->deadline = now_ms() + CONNECT_TIMEOUT_MS;
		return;
	}
	session_end(s, "no address of the server answered");
}

/*
 * An IPv4 literal needs no resolver: getaddrinfo would give the same one
 * address, but through code of the C library (its NSS and resolver
 * machinery) that would stay resident for the client's life (issue 11).
 * Names and IPv6 literals go to getaddrinfo.
 */
static int session_literal(struct session *s)
{
	uint32_t ip;
	int port;

	if (ip_parse(s->uri.host, &ip) < 0 ||
	    (port = port_parse(s->uri.port)) < 0)
		return -1;
	memset(&s->lit_sin, 0, sizeof(s->lit_sin));
	s->lit_sin.sin_family = AF_INET;
	s->lit_sin.sin_port = htons((uint16_t)port);
	s->lit_sin.sin_addr.s_addr = htonl(ip);
	memset(&s->lit_ai, 0, sizeof(s->lit_ai));
	s->lit_ai.ai_family = AF_INET;
	s->lit_ai.ai_socktype = SOCK_STREAM;
	s->lit_ai.ai_addr = (struct sockaddr *)&s->lit_sin;
	s->lit_ai.ai_addrlen = sizeof(s->lit_sin);
	s->ai_list = NULL;
	s->ai_next = &s->lit_ai;
	return 0;
}

static void session_connect(struct session *s)
{
	struct addrinfo hints;
	int err;

	if (session_literal(s) == 0) {
		session_connect_next(s);
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((err = getaddrinfo(s->uri.host, s->uri.port, &hints,
	    &s->ai_list)) != 0) {
		s->ai_list = NULL;
		session_end(s, gai_strerror(err));
		return;
	}
	s->ai_next = s->ai_list;
	session_connect_next(s);
}

/* The IPv4 address a socket is connected to (IPv4-mapped too), or 0. */
static uint32_t socket_peer_ip4(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	const unsigned char *p;

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohl(((struct sockaddr_in *)(void *)&ss)->sin_addr.
		    s_addr);
	if (ss.ss_family == AF_INET6) {
		p = ((struct sockaddr_in6 *)(void *)&ss)->sin6_addr.s6_addr;
		if (memcmp(p, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0)
			return get32(p + 12);
	}
	return 0;
}

/* The TCP connect finished, one way or the other. */
static void session_connected(struct session *s)
{
	struct tls *tls = NULL;
	socklen_t sl = sizeof(int);
	int err = 0;

	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0 || err) {
		log_info("connect to %s: %s", s->trying, strerror(err));
		close(s->fd);
		s->fd = -1;
		session_connect_next(s);
		return;
	}
	if (s->ai_list != NULL)
		freeaddrinfo(s->ai_list);
	s->ai_list = s->ai_next = NULL;
	tcp_nodelay(s->fd);
	tcp_notsent_lowat(s->fd);
	s->server_ip = socket_peer_ip4(s->fd);
	if (s->tls != NULL &&
	    (tls = tls_client_new(s->tls, s->uri.host)) == NULL) {
		session_end(s, "out of memory for TLS");
		return;
	}
	ws_init_client(&s->ws, s->fd, tls, s->uri.hostport, s->uri.path);
	s->fd = -1;
	s->c.ws = &s->ws;
	s->state = S_OPENING;
	s->started_ms = s->ws.last_rx_ms = s->last_tx_ms = now_ms();
	s->ping_ms = 0;
	s->stall_ms = 0;
	s->routes_refused = 0;
	s->routes_full_logged = 0;
}

/* The WebSocket is open: VMAC, then AUTH or EXPTTUN (PROTOCOL 3). */
static void session_hello(struct session *s)
{
	unsigned char m[EXPTTUN_LEN + PAD_MAX];
	const char *pw = s->cfg->password;
	char text[20];
	size_t n;

	n = msg_vmac_build(m, pw, s->vmac, wall_s(), rand_below(PAD_MAX + 1));
	session_send(s, WS_BINARY, m, n);
	if (s->cfg->has_tun) {
		s->state = S_ASKING;	/* session_up moves it on */
		return;
	}
	if (s->want.addr != 0)
		cidr_str(&s->want, text);
	else
		snprintf(text, sizeof(text), "0.0.0.0/0");
	n = msg_expttun_build(m, pw, text, wall_s(), rand_below(PAD_MAX + 1));
	session_send(s, WS_BINARY, m, n);
	s->state = S_ASKING;
}

/* Bring the TUN device to addr/prefix; it survives reconnects as long as
 * the address stays the same.  -1 when the OS refuses the address: a
 * session error, not the end of the process. */
/*
 * The device, with offloads unless --no-offload or the kernel refuses
 * them (then the plain path, and the log says why).  The coalescing
 * buffer is allocated here, once.
 */
static void client_tun_open(struct client *c, const struct config *cfg,
    const char *name)
{
	if (!cfg->no_offload && (c->gro != NULL ||
	    (c->gro = calloc(1, sizeof(*c->gro))) != NULL)) {
		if ((c->tun_fd = tun_open_offload(name, c->ifname,
		    &c->vnet_le)) >= 0) {
			c->offload = 1;
			log_debug("%s: offloads on (vnet header %s-endian)",
			    c->ifname, c->vnet_le ? "little" : "big");
			return;
		}
		log_info("TUN offloads refused (%s): one packet at a time",
		    strerror(errno));
		free(c->gro);
		c->gro = NULL;
	}
	c->offload = 0;
	if ((c->tun_fd = tun_open(name, c->ifname)) < 0)
		fatalx("cannot create TUN device %s: %s", name,
		    strerror(errno));
}

static int client_tun_up(struct client *c, const struct config *cfg,
    uint32_t addr, int prefix)
{
	char name[32], ip[16];

	if (c->tun_fd < 0) {
		snprintf(name, sizeof(name), "candy%s%s", cfg->name[0] ? "-" : "",
		    cfg->name);
		client_tun_open(c, cfg, name);
	} else if (c->addr == addr && c->prefix == prefix) {
		return 0;
	}
	if (c->addr != 0 && c->addr != addr)
		p2p_stop(c);	/* peers know us by the old address */
	if (tun_configure(c->ifname, addr, prefix, cfg->mtu) < 0) {
		log_warn("cannot configure %s as %s/%d", c->ifname,
		    ip_str(addr, ip), prefix);
		return -1;
	}
	c->addr = addr;
	c->prefix = prefix;
	c->mask = prefix_mask(prefix);
	c->net = addr & c->mask;
	if (cfg->exit_node == addr || (cfg->exit_node & c->mask) != c->net) {
		if (cfg->exit_node != 0)
			log_warnx("--exit-node %s is %s: no full tunnel",
			    ip_str(cfg->exit_node, ip), cfg->exit_node == addr ?
			    "our own address" : "outside the tunnel network");
		if (c->full_local)
			client_full_off(c);
	} else {
		client_full_on(c, cfg->exit_node, 1);
	}
	return 0;
}

static int session_up(struct session *s, uint32_t addr, int prefix)
{
	unsigned char m[AUTH_LEN + PAD_MAX];
	struct cidr got = { addr, prefix };
	char text[20];
	size_t n;

	if (client_tun_up(&s->c, s->cfg, addr, prefix) < 0) {
		s->why = "the system refused the address";
		return -1;
	}
	n = msg_auth_build(m, s->cfg->password, addr, wall_s(),
	    rand_below(PAD_MAX + 1));
	session_send(s, WS_BINARY, m, n);
	s->state = S_UP;
	s->sessions++;
	session_send(s, WS_PING, s->ping, strlen(s->ping));
	s->ping_ms = now_ms();
	cidr_str(&got, text);
	if (!s->cfg->has_tun) {
		s->want = got;
		state_write(s->cfg, "address", s->cfg->name, text);
	}
	log_info("connected to %s as %s on %s", s->cfg->websocket, text,
	    s->c.ifname);
	return 0;
}

static int session_expttun(struct session *s, unsigned char *m, size_t len)
{
	struct route_guard g;
	struct cidr got;
	const char *why;
	char reason[96], text[20];

	if (s->state != S_ASKING)
		return 0;
	if (!msg_expttun_check(m, s->cfg->password)) {
		log_warnx("server's address answer has a bad hash: "
		    "is the password right?");
		return -1;
	}
	if (memchr(m + 9, '\0', 32) == NULL ||
	    cidr_parse((const char *)m + 9, &got, &why) < 0) {
		log_warnx("server granted a bad address");
		return -1;
	}
	session_guard(s, &g);
	if (route_guard_address(&g, got.addr, got.prefix, reason,
	    sizeof(reason)) != NULL) {
		log_warnx("refused the address %s the server granted: %s",
		    cidr_str(&got, text), reason);
		s->why = "the granted address was refused";
		return -1;
	}
	return session_up(s, got.addr, got.prefix);
}

static int session_forward(struct session *s, unsigned char *m, size_t len)
{
	struct client *c = &s->c;

	if (s->state != S_UP || len < 1 + IPV4_HDR_LEN)
		return 0;
	c->rx_server++;
	c->rx_server_bytes += len - 1;
	p2p_saw_forward(c, get32(m + 1 + 12));
	client_deliver(c, m + 1, len - 1);
	return 0;
}

/* A pushed route refused: said for the first few of a session only, as
 * a hostile server may push thousands. */
static void session_route_refuse(struct session *s, uint32_t dst,
    uint32_t mask, const char *why)
{
	char a[16], b[16];

	if (s->routes_refused++ < REFUSED_LOG_MAX)
		log_warnx("refused the route %s/%s the server pushed: %s%s",
		    ip_str(dst, a), ip_str(mask, b), why,
		    s->routes_refused == REFUSED_LOG_MAX ?
		    " (further refusals not logged)" : "");
}

/* One pushed route: checked, then installed (or updated). */
static void session_route_one(struct session *s, const struct route_guard *g,
    uint32_t dst, uint32_t mask, uint32_t next)
{
	struct client *c = &s->c;
	char a[16], b[16], nh[16], why[96];
	int j;

	if (next == c->addr)
		return;		/* we are the gateway */
	if (mask == 0 && dst == 0) {
		/* The existing Candy's exit node: a full tunnel, which
		 * keeps our own paths on the underlay (tun_full_tunnel). */
		if ((next & c->mask) != c->net)
			session_route_refuse(s, dst, mask, "the gateway is "
			    "not in the tunnel network");
		else if (c->full_local && c->full_gw != next)
			log_info("ignored the server's exit node %s: "
			    "--exit-node is %s", ip_str(next, a),
			    ip_str(c->full_gw, b));
		else
			client_full_on(c, next, c->full_local);
		return;
	}
	if (route_guard_check(g, dst, mask, why, sizeof(why)) != NULL) {
		session_route_refuse(s, dst, mask, why);
		return;
	}
	for (j = 0; j < c->nroutes; j++)
		if (c->routes[j].dst == dst && c->routes[j].mask == mask)
			break;
	if (j == SDWAN_MAX) {
		if (!s->routes_full_logged++)
			log_warnx("the server pushed more than %d routes: "
			    "the rest are ignored", SDWAN_MAX);
		return;
	}
	c->routes[j].next = next;
	if (j < c->nroutes)
		return;
	c->routes[j].dst = dst;
	c->routes[j].mask = mask;
	c->nroutes++;
	if (tun_route_add(c->ifname, dst, mask) < 0)
		log_warn("cannot add route %s/%s", ip_str(dst, a),
		    ip_str(mask, b));
	else
		log_info("route %s/%s via %s", ip_str(dst, a),
		    ip_str(mask, b), ip_str(next, nh));
}

/* SD-WAN routes from the server (issue 8: each one checked first). */
static int session_route(struct session *s, unsigned char *m, size_t len)
{
	struct route_guard g;
	size_t i, count = m[1];

	if (len < ROUTE_HDR_LEN + count * ROUTE_ENTRY_LEN)
		return -1;
	if (s->state != S_UP || count == 0)
		return 0;
	session_guard(s, &g);
	for (i = 0; i < count; i++) {
		const unsigned char *e = m + ROUTE_HDR_LEN + i * ROUTE_ENTRY_LEN;
		uint32_t mask = get32(e + 4);

		/* Host bits are the server's slip, as Candy tolerates. */
		session_route_one(s, &g, get32(e) & mask, mask, get32(e + 8));
	}
	return 0;
}

static int session_peer_msg(struct session *s, unsigned char *m, size_t len)
{
	if (s->state == S_UP)
		p2p_server_msg(&s->c, m, len);
	return 0;
}

typedef int session_handler(struct session *s, unsigned char *m, size_t len);

static const struct {
	int type;
	size_t minlen;
	session_handler *fn;
} session_handlers[] = {
	{ MSG_FORWARD, 1, session_forward },
	{ MSG_EXPTTUN, EXPTTUN_LEN, session_expttun },
	{ MSG_ROUTE, ROUTE_HDR_LEN, session_route },
	{ MSG_UDP4CONN, UDP4CONN_LEN, session_peer_msg },
	{ MSG_DISCOVERY, DISCOVERY_LEN, session_peer_msg },
	{ MSG_GENERAL, GENERAL_HDR_LEN, session_peer_msg },
};

static int session_dispatch(struct session *s, unsigned char *m, size_t len)
{
	size_t i;

	if (len == 0) {		/* as Candy's client: an empty frame ends it */
		log_warnx("empty frame from the server");
		return -1;
	}
	for (i = 0; i < sizeof(session_handlers) / sizeof(session_handlers[0]);
	    i++) {
		if (session_handlers[i].type != m[0])
			continue;
		if (len < session_handlers[i].minlen) {
			log_warnx("short message type %d from the server", m[0]);
			return -1;
		}
		return session_handlers[i].fn(s, m, len);
	}
	return 0;
}

/*
 * The server closed the connection: say why as precisely as we can.  Our
 * server and the existing one close without a word on a refusal, so
 * before an address is granted we list what it may have refused.
 */
static void session_closed(struct session *s)
{
	const char *why = stream_error(&s->ws.s);
	char text[160];

	if (why == NULL && s->ws.close_reason[0] != '\0') {
		snprintf(text, sizeof(text), "the server closed the "
		    "connection: %s", s->ws.close_reason);
		why = text;
	} else if (why == NULL && s->state == S_ASKING) {
		why = "the server closed the connection before granting an "
		    "address: wrong password, clock more than 300 s off, "
		    "no free address, the server full, or the address taken";
	} else if (why == NULL) {
		why = "the server closed the connection";
	}
	session_end(s, why);
}

/* Write what the server will take.  A server that takes nothing for
 * STALL_MS while we have bytes for it is stuck (or hostile): reconnect
 * rather than stay "up" with a full queue (as the server does with a
 * client that stops reading). */
static void session_flush(struct session *s, int64_t now)
{
	size_t before, after;
	const char *why;

	if (s->state < S_OPENING)
		return;
	before = s->ws.outlen - s->ws.outpos;
	if (ws_flush(&s->ws) < 0) {
		why = stream_error(&s->ws.s);
		session_end(s, why ? why : "cannot write to the server");
		return;
	}
	after = s->ws.outlen - s->ws.outpos;
	if (after == 0)
		s->stall_ms = 0;
	else if (after < before || s->stall_ms == 0)
		s->stall_ms = now;
	else if (now - s->stall_ms > STALL_MS)
		session_end(s, "the server took no bytes for 30 s "
		    "(not reading?)");
}

static void session_read(struct session *s)
{
	unsigned char *m;
	size_t len;
	int i, r;

	if (stream_pump(&s->ws.s) < 0) {
		const char *why = stream_error(&s->ws.s);

		session_end(s, why ? why : "connection failed");
		return;
	}
	for (i = 0; i < READ_BURST; i++) {
		if ((r = ws_read(&s->ws, &m, &len)) < 0) {
			session_closed(s);
			return;
		}
		if (s->state == S_OPENING && s->ws.state == WS_OPEN) {
			session_hello(s);
			if (s->cfg->has_tun && session_up(s, s->cfg->tun.addr,
			    s->cfg->tun.prefix) < 0) {
				session_end(s, s->why);
				return;
			}
		}
		if (r == 0)
			break;
		if (session_dispatch(s, m, len) < 0) {
			session_end(s, s->why ? s->why : "protocol error");
			return;
		}
	}
}

/* Timers: connect and open timeouts, keepalive, reconnect. */
static void session_timers(struct session *s, int64_t now)
{
	switch (s->state) {
	case S_IDLE:
		if (now >= s->deadline)
			session_connect(s);
		break;
	case S_CONNECTING:
		if (now >= s->deadline) {
			close(s->fd);
			s->fd = -1;
			log_info("connect to %s: no answer within %d s",
			    s->trying, CONNECT_TIMEOUT_MS / 1000);
			session_connect_next(s);
		}
		break;
	case S_OPENING:
	case S_ASKING:
		if (now - s->started_ms > OPEN_TIMEOUT_MS)
			session_end(s, "no answer within 10 s");
		break;
	case S_UP:
		if (now - s->ws.last_rx_ms > KEEPALIVE_DEAD_MS) {
			session_end(s, "no frame for 30 s");
			break;
		}
		/* Ping every 15 s while the server is quiet, and when we
		 * are: our server closes a client silent for 60 s. */
		if ((now - s->ws.last_rx_ms >= KEEPALIVE_PING_MS &&
		    now - s->ping_ms >= KEEPALIVE_PING_MS) ||
		    now - s->last_tx_ms >= KEEPALIVE_PING_MS) {
			session_send(s, WS_PING, s->ping, strlen(s->ping));
			s->ping_ms = now;
		}
		break;
	}
}

/* Read the TUN only while the server queue has room for what we read:
 * a full queue stops the input that feeds it (back-pressure, not drops). */
static int session_tun_wanted(const struct session *s)
{
	if (s->c.tun_fd < 0)
		return 0;
	if (s->state != S_UP)
		return 1;
	/* A super-packet (offloads) may become 144 frames at MTU 576. */
	return ws_room(&s->ws) >= (s->c.offload ?
	    TUN_SUPER_ROOM(s->cfg->mtu) : 4 * (size_t)(s->cfg->mtu + 64));
}

/* A bulk packet read while the device's queue has not been empty for a
 * standing while is dropped or marked: 1 dropped (see struct client). */
static int session_tun_aqm_drops(struct session *s, unsigned char *pkt,
    size_t n)
{
	struct client *c = &s->c;
	int64_t now = now_us();

	if (c->tun_busy_us == 0)
		c->tun_busy_us = now;
	return aqm_drop(&c->tun_aqm, now, now - c->tun_busy_us, pkt, n);
}

/* >>> offload block (issue 11): super-packets from the TUN */
/*
 * One read gives up to 64 KiB of one TCP flow (or one packet) behind its
 * vnet header; each packet cut from it, at most the MTU, goes on its way
 * from s->seg's headroom as a packet read alone would.
 */
static void session_tun_input_offload(struct session *s)
{
	unsigned char *pkt = s->seg + PKT_HEADROOM;
	struct tun_vnet h;
	struct tun_seg g;
	size_t n, bytes = 0;
	ssize_t r;
	int i, first;

	for (i = 0; i < TUN_BURST && bytes < TUN_PASS_BYTES &&
	    session_tun_wanted(s); i++) {
		if ((r = tun_read_vnet(s->c.tun_fd, s->buf, sizeof(s->buf))) <= 0) {
			if (r < 0)
				log_warn("reading %s", s->c.ifname);
			else
				s->c.tun_busy_us = 0;
			return;
		}
		bytes += (size_t)r;
		if (r < TUN_VNET_LEN)
			continue;
		tun_vnet_get(&h, s->buf, s->c.vnet_le);
		if (tun_seg_init(&g, &h, s->buf + TUN_VNET_LEN,
		    (size_t)r - TUN_VNET_LEN, (size_t)s->cfg->mtu) < 0) {
			s->c.seg_bad++;
			if (log_debug_on)
				log_debug("tun: dropped a %zd-byte packet: "
				    "gso_type %u gso_size %u", r, h.gso_type,
				    h.gso_size);
			continue;
		}
		if (h.gso_type != TUN_GSO_NONE)
			s->c.seg_cut++;
		/* One segment of a super-packet answers for its wait. */
		for (first = 1; (n = tun_seg_next(&g, pkt,
		    PKT_MAX - IPV4_HDR_LEN - 1)) > 0; first = 0)
			if (!first || !session_tun_aqm_drops(s, pkt, n))
				client_route(&s->c, pkt, n, 0);
	}
}
/* <<< offload block */

/* Packets from the TUN device: to a peer, a gateway, or the server. */
static void session_tun_input(struct session *s)
{
	unsigned char *pkt = s->buf + PKT_HEADROOM;
	int i;

	if (s->c.offload) {
		session_tun_input_offload(s);
		return;
	}
	for (i = 0; i < TUN_BURST; i++) {
		/* Leave room for an IP-in-IP header within PKT_MAX. */
		ssize_t n = tun_read(s->c.tun_fd, pkt,
		    PKT_MAX - IPV4_HDR_LEN - 1);

		if (n <= 0) {
			if (n < 0)
				log_warn("reading %s", s->c.ifname);
			else
				s->c.tun_busy_us = 0;
			return;
		}
		if (!session_tun_aqm_drops(s, pkt, (size_t)n))
			client_route(&s->c, pkt, (size_t)n, 0);
	}
}

static int mask_prefix(uint32_t mask)
{
	int n = 0;

	while (mask & 0x80000000u) {
		mask <<= 1;
		n++;
	}
	return n;
}

/* The client's report: candy status and SIGUSR1 (status.c). */
static void session_report(void *ctx, struct report *r)
{
	static const char *const state_names[] = {
		"waiting", "connecting", "opening", "authenticating", "up"
	};
	const struct session *s = ctx;
	const struct client *c = &s->c;
	const struct stream *tls = s->uri.tls && s->state >= S_OPENING ?
	    &s->ws.s : NULL;
	struct cidr me = { c->addr, c->prefix };
	char name[32], text[20], ip[16], gw[16];
	int i;

	if (c->ifname[0] != '\0')
		snprintf(name, sizeof(name), "%s", c->ifname);
	else
		snprintf(name, sizeof(name), "candy%s%s",
		    s->cfg->name[0] ? "-" : "", s->cfg->name);
	report_begin(r, "client", "interface", name);
	report_str(r, "state", "state", state_names[s->state]);
	report_str(r, "address", "address", c->addr ? cidr_str(&me, text) :
	    NULL);
	report_str(r, "server", "server", s->cfg->websocket);
	report_str(r, "server_address", "server address",
	    s->state >= S_CONNECTING ? s->trying : NULL);
	report_str(r, "tls", "tls", !s->uri.tls ? "plain" :
	    tls ? stream_tls_version(tls) : NULL);
	report_str(r, "cipher", "cipher", tls ? stream_tls_suite(tls) : NULL);
	report_when(r, "connected_since", "connected since",
	    s->state == S_UP ? s->started_ms : 0, 1);
	report_num(r, "reconnects", "reconnects",
	    s->sessions > 1 ? (int64_t)s->sessions - 1 : 0, NULL);
	report_traffic(r, "server_tx", "to server", "frames", c->tx_server,
	    c->tx_server_bytes);
	report_traffic(r, "server_rx", "from server", "frames", c->rx_server,
	    c->rx_server_bytes);
	report_num(r, "dropped", "dropped", (int64_t)c->dropped, NULL);
	report_num(r, "ttl_expired", "ttl expired", (int64_t)c->ttl_expired,
	    NULL);
	report_num(r, "ipip_refused", "ipip refused",
	    (int64_t)c->ipip_refused, NULL);
	report_str(r, "full_tunnel", "full tunnel via",
	    c->full_gw != 0 ? ip_str(c->full_gw, gw) : NULL);
	report_str(r, "offload", "offload", c->offload ? "on" : "off");
	report_num(r, "offload_refused", "super-packets refused",
	    (int64_t)c->seg_bad, NULL);
	report_num(r, "offload_cut", "super-packets cut", (int64_t)c->seg_cut,
	    NULL);
	report_num(r, "offload_coalesced", "coalesced writes",
	    (int64_t)c->gro_out, NULL);
	report_num(r, "tun_queue_dropped", "tun queue drops",
	    (int64_t)c->tun_aqm.dropped, NULL);
	report_num(r, "tun_queue_marked", "tun queue ce marks",
	    (int64_t)c->tun_aqm.marked, NULL);
	p2p_report(r, c);
	report_list(r, "sdwan_routes", "sdwan routes", 1);
	for (i = 0; i < c->nroutes; i++) {
		struct cidr dst = { c->routes[i].dst,
		    mask_prefix(c->routes[i].mask) };

		report_item(r, "dst", cidr_str(&dst, text));
		report_str(r, "next", "via", ip_str(c->routes[i].next, ip));
		report_item_end(r);
	}
	report_list_end(r);
	report_end(r);
}

/* SIGINT/SIGTERM: say goodbye to the server, remove routes and device. */
static void session_shutdown(struct session *s)
{
	struct client *c = &s->c;

	log_info("shutting down");
	status_close();
	if (s->state >= S_OPENING) {
		ws_close(&s->ws);
		ws_free(&s->ws);
	}
	p2p_stop(c);
	client_routes_clear(c);
	client_full_off(c);
	if (c->tun_fd >= 0)
		tun_close(c->tun_fd, c->ifname);
}

/* s is zero (static storage, or calloc in the tests): not written over
 * again, so that its packet buffers (some 200 KiB) take memory only as far
 * as packets fill them. */
static void session_init(struct session *s, const struct config *cfg)
{
	char host[64] = "unknown", err[256];

	s->cfg = s->c.cfg = cfg;
	s->c.tun_fd = -1;
	s->fd = -1;
	s->backoff_s = 1;
	s->state = S_IDLE;
	s->deadline = 0;
	if (uri_parse(cfg->websocket, &s->uri) < 0)
		fatalx("bad --websocket `%s'", cfg->websocket);
	if (s->uri.tls && (s->tls = tls_client_ctx_load(cfg->ca[0] ? cfg->ca :
	    NULL, cfg->pin[0] ? cfg->pin : NULL, cfg->insecure, err,
	    sizeof(err))) == NULL)
		fatalx("%s", err);
	gethostname(host, sizeof(host) - 1);
	snprintf(s->ping, sizeof(s->ping), "candy::%s::%s::%s", CANDY_OS,
	    CANDY_VERSION, host);
	session_load_vmac(s);
	session_load_address(s);
	if (p2p_start(&s->c) < 0)
		fatalx("cannot start peer-to-peer");
	if (s->c.p2p.udp_fd >= 0 && tun_socket_mark(s->c.p2p.udp_fd) < 0)
		log_debug("cannot mark the UDP socket: %s", strerror(errno));
	/* A full tunnel a killed run left behind (its rules). */
	tun_full_tunnel(NULL, 0);
}

/*
 * A client's big buffers (the TLS engine's, the WebSocket queues, the
 * offload buffers, the replay tables: 32 KiB to 128 KiB each) come from
 * mmap rather than the heap: calloc then need not zero them (fresh pages
 * are zero), the pages a buffer never reaches are never resident, and a
 * queue ws_trim shrinks goes back to the system.  glibc takes such sizes
 * from the heap below 128 KiB (musl's allocator maps them on its own).
 * Not the server: its thousands of connections would each hold mappings
 * of their own.
 */
#define CLIENT_MMAP_MIN	(32 * 1024)

static void client_malloc_init(void)
{
#ifdef __GLIBC__
	/* No padding on the heap's growth either (128 KiB by default): glibc
	 * serves a request from the heap's free top before it maps, so the
	 * TLS buffers (121 KiB, calloc) landed in that padding and were
	 * zeroed there, all resident. */
	if (mallopt(M_MMAP_THRESHOLD, CLIENT_MMAP_MIN) != 1 ||
	    mallopt(M_TOP_PAD, 0) != 1)
		log_debug("mallopt refused");
#endif
}

void client_run(const struct config *cfg)
{
	static struct session s;
	enum { P_SIG, P_WS, P_TUN, P_UDP, P_STATUS,
	    P_N = P_STATUS + STATUS_SLOTS };
	struct pollfd pfd[P_N];
	int64_t tick = 0;	/* the next 1-second tick of peer.c */

	client_malloc_init();
	session_init(&s, cfg);
	status_start(cfg);
	while (!sig_quit) {
		int64_t now = now_ms(), next = tick;
		int timeout;

		if ((s.state == S_CONNECTING || s.state == S_IDLE) &&
		    s.deadline < next)
			next = s.deadline;
		timeout = next <= now ? 0 : next - now > 1000 ? 1000 :
		    (int)(next - now);
		memset(pfd, 0, sizeof(pfd));
		pfd[P_SIG].fd = sig_pipe[0];
		pfd[P_SIG].events = POLLIN;
		pfd[P_WS].fd = s.state == S_CONNECTING ? s.fd :
		    s.state >= S_OPENING ? s.ws.s.fd : -1;
		pfd[P_WS].events = s.state == S_CONNECTING ? POLLOUT :
		    s.state >= S_OPENING ? ws_events(&s.ws) : 0;
		if (s.state >= S_OPENING && ws_pending(&s.ws))
			timeout = 0;
		pfd[P_TUN].fd = session_tun_wanted(&s) ? s.c.tun_fd : -1;
		pfd[P_TUN].events = POLLIN;
		pfd[P_UDP].fd = s.c.p2p.udp_fd;
		pfd[P_UDP].events = POLLIN;
		status_events(pfd + P_STATUS);
		if (poll(pfd, P_N, timeout) < 0 && errno != EINTR)
			fatalx("poll: %s", strerror(errno));
		signals_drain();
		if (s.state == S_CONNECTING && pfd[P_WS].revents)
			session_connected(&s);
		else if (s.state >= S_OPENING &&
		    (pfd[P_WS].revents || ws_pending(&s.ws)))
			session_read(&s);
		if (pfd[P_UDP].revents)
			p2p_udp_input(&s.c);
		if (pfd[P_TUN].revents)
			session_tun_input(&s);
		client_flush(&s.c);	/* what this pass coalesced */
		now = now_ms();
		if (now >= tick)
			tick = p2p_tick(&s.c, now);
		session_timers(&s, now);
		session_flush(&s, now);
		status_handle(pfd + P_STATUS, now, session_report, &s);
		if (sig_status) {
			sig_status = 0;
			status_log(session_report, &s);
		}
	}
	session_shutdown(&s);
}

#ifdef CANDY_NO_MAIN
/* ---- For tests and fuzzing: the dispatchers without sockets. ---- */

#define TEST_FD_LIMIT	2048	/* descriptors server_test_run assumes */

/* see candy.h */
int server_test_run(const struct config *cfg, unsigned char *const *m,
    const size_t *len, const size_t *from, size_t n)
{
	struct server *s = calloc(1, sizeof(*s));
	size_t i;
	int closed = 0;

	if (s == NULL)
		return -1;
	s->cfg = cfg;
	server_tables(s, TEST_FD_LIMIT);
	for (i = 0; i < n; i++) {
		size_t k = from[i] % s->maxconns;
		struct conn *c = s->conns[k];

		/* As server_admit, on no socket, the upgrade done. */
		if (c == NULL && (c = calloc(1, sizeof(*c))) != NULL) {
			c->since_ms = now_ms();
			snprintf(c->from, sizeof(c->from), "test %zu", k);
			ws_init_server(&c->ws, -1, NULL);
			c->ws.state = WS_OPEN;
			server_conn_add(s, c, k);
		}
		if (c == NULL)
			break;
		c->rx++;
		if (server_dispatch(s, c, m[i], len[i]) < 0) {
			server_close(s, c, "protocol error");
			closed++;
		}
	}
	for (i = 0; i < s->top; i++)
		if (s->conns[i] != NULL)
			server_close(s, s->conns[i], "test over");
	server_tables_free(s);
	free(s);
	return closed;
}

/* see candy.h */
int session_test_run(const struct config *cfg, unsigned char *const *m,
    const size_t *len, size_t n)
{
	struct session *s = calloc(1, sizeof(*s));
	struct client *c;
	size_t i;

	if (s == NULL)
		return -1;
	c = &s->c;
	s->cfg = c->cfg = cfg;
	s->fd = -1;
	c->tun_fd = -1;
	c->p2p.udp_fd = -1;
	/* As session_up, on no socket and no device. */
	ws_init_client(&s->ws, -1, NULL, "test", "/");
	s->ws.state = WS_OPEN;
	c->ws = &s->ws;
	s->state = cfg->has_tun ? S_UP : S_ASKING;
	if (cfg->has_tun) {
		c->addr = cfg->tun.addr;
		c->prefix = cfg->tun.prefix;
		c->mask = prefix_mask(c->prefix);
		c->net = c->addr & c->mask;
	}
	for (i = 0; i < n && session_dispatch(s, m[i], len[i]) == 0; i++)
		;
	ws_free(&s->ws);
	free(s);
	return (int)i;
}
#endif

#ifndef CANDY_NO_MAIN
/* ---- candy status. ---- */

/* The options that find a daemon's socket; the others mean nothing here
 * (a config file may hold them all: its other keys are ignored). */
static const char *const status_opts[] = {
	"mode", "name", "state-dir", "config", NULL
};

static void status_usage(void)
{
	printf("usage: candy status [-m client|server] [-n NAME] "
	    "[--state-dir DIR] [-c FILE] [--json]\n\n"
	    "Ask a running candy what it is doing, through its socket in "
	    "the state directory.\n\n");
	printf("  %-28s %s\n", "-m, --mode MODE",
	    "client (default) or server: which one to ask");
	printf("  %-28s %s\n", "-n, --name NAME",
	    "client: its network name (default none)");
	printf("  %-28s %s\n", "    --state-dir DIR",
	    "where its socket is (default /var/lib/candy)");
	printf("  %-28s %s\n", "-c, --config FILE",
	    "take mode, name and state-dir from its config file");
	printf("  %-28s %s\n", "    --json",
	    "print one JSON object instead of text");
	printf("  %-28s %s\n", "-h, --help", "print this help");
}

/* candy status [options]: argv[0] is "status".  The exit status. */
static int status_command(int argc, char **argv)
{
	static struct config cfg;
	char *args[64], err[512], path[300], what[64];
	const char *file = NULL;
	int i, n = 1, json = 0, exit_now = 0;

	args[0] = argv[0];
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = 1;
		} else if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0) {
			status_usage();
			return 0;
		} else if (n < (int)(sizeof(args) / sizeof(args[0]))) {
			args[n++] = argv[i];
		} else {
			fprintf(stderr, "candy: status: too many arguments\n");
			return 1;
		}
	}
	config_defaults(&cfg);
	if (config_args(&cfg, n, args, 0, status_opts, &file, &exit_now, err,
	    sizeof(err)) < 0 || (file != NULL &&
	    config_file(&cfg, file, err, sizeof(err)) < 0) ||
	    config_args(&cfg, n, args, 1, status_opts, &file, &exit_now, err,
	    sizeof(err)) < 0) {
		fprintf(stderr, "candy: status: %s\n", err);
		return 1;
	}
	config_warnings_flush();
	if ((int)cfg.mode < 0)
		cfg.mode = MODE_CLIENT;
	if (status_path(&cfg, path, sizeof(path)) < 0) {
		fprintf(stderr, "candy: status: --state-dir `%s' is too long "
		    "for a socket path\n", cfg.state_dir);
		return 1;
	}
	if (cfg.mode == MODE_SERVER)
		snprintf(what, sizeof(what), "candy server");
	else if (cfg.name[0] != '\0')
		snprintf(what, sizeof(what), "candy client for network `%s'",
		    cfg.name);
	else
		snprintf(what, sizeof(what), "candy client without --name");
	return status_query(path, json, what);
}

int main(int argc, char **argv)
{
	static struct config cfg;
	char err[512];
	int r;

	if (argc > 1 && strcmp(argv[1], "status") == 0)
		return status_command(argc - 1, argv + 1);
	r = config_load(&cfg, argc, argv, err, sizeof(err));
	log_init(cfg.debug, !cfg.no_timestamp);
	config_warnings_flush();
	if (r < 0) {
		fprintf(stderr, "candy: %s\n", err);
		return 1;
	}
	if (r > 0)
		return 0;
	rand_init();
	signals_init();
	if (cfg.mode == MODE_SERVER)
		server_run(&cfg);
	else
		client_run(&cfg);
	return 0;
}
#endif
