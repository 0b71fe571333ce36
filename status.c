/*
 * status.c: what a running candy says about itself.  One report (the
 * builder and its three forms are in candy.h) serves `candy status`, its
 * --json, and the log on SIGUSR1; the daemon serves it on a Unix socket
 * whose listening end and connections are non-blocking slots of the poll
 * loop, so that asking never holds up a packet.
 *
 * This is a file of its own because it is a layer of its own: a second
 * kind of socket with its own small protocol and client (`candy status`),
 * and a writer that knows JSON and the text layout.  candy.c describes the
 * server and the client session (it alone knows them); this file decides
 * how that looks and how it travels.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "candy.h"

/* Room kept at the end of a reply for what closes it: the brackets of an
 * open list and object, and report_end's members or note. */
#define REPORT_RESERVE	160
/* A string field shows at most this many bytes of its value. */
#define FIELD_STR_MAX	256
/* `candy status' waits this long for the daemon, in seconds. */
#define QUERY_TIMEOUT_S	10

/* ---- Strings: JSON escapes and printable text. ---- */

/* The length of the valid UTF-8 sequence at p (n bytes there), 0 when
 * there is none: RFC 3629 §4, no overlong forms, no surrogates. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

/* see candy.h; RFC 8259 §7.  Every input byte makes at most 6. */
size_t json_escape(char *out, const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strnlen(s, max), i = 0, o = 0, k;

	while (i < n) {
		unsigned char ch = p[i];

		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
			i++;
		} else if (ch == '\n' || ch == '\t' || ch == '\r') {
			out[o++] = '\\';
			out[o++] = ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r';
			i++;
		} else if (ch < 0x20 || ch == 0x7f) {
			o += (size_t)snprintf(out + o, 7, "\\u%04x", ch);
			i++;
		} else if ((k = utf8_len(p + i, n - i)) == 0) {
			memcpy(out + o, "\\ufffd", 6);
			o += 6;
			i++;
		} else {
			memcpy(out + o, p + i, k);
			o += k;
			i += k;
		}
	}
	out[o] = '\0';
	return o;
}

/* Text for a terminal: a hostile ping payload must not be able to send
 * escape sequences to the operator's screen.  out has room for max + 1. */
static void text_clean(char *out, const char *s, size_t max)
{
	size_t i;

	for (i = 0; i < max && s[i] != '\0'; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	out[i] = '\0';
}

/* "123 B", "1.21 KiB", ... as wg show prints transfer sizes. */
static void size_str(char *buf, size_t len, uint64_t v)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB",
	    "PiB", "EiB" };
	double d = (double)v;
	int i = -1;

	if (v < 1024) {
		snprintf(buf, len, "%llu B", (unsigned long long)v);
		return;
	}
	while (d >= 1024 && i < 5) {
		d /= 1024;
		i++;
	}
	snprintf(buf, len, "%.2f %s", d, units[i]);
}

/* "1 day, 2 hours, 3 minutes, 4 seconds ago", as wg show says it. */
static void ago_str(char *buf, size_t len, int64_t s)
{
	static const struct {
		int64_t secs;
		const char *name;
	} units[] = {
		{ 86400, "day" }, { 3600, "hour" }, { 60, "minute" },
		{ 1, "second" },
	};
	size_t i, n = 0;

	buf[0] = '\0';
	if (s <= 0) {
		snprintf(buf, len, "just now");
		return;
	}
	for (i = 0; i < sizeof(units) / sizeof(units[0]) && n < len; i++) {
		int64_t k = s / units[i].secs;

		if (k == 0)
			continue;
		s -= k * units[i].secs;
		n += (size_t)snprintf(buf + n, len - n, "%s%lld %s%s",
		    n ? ", " : "", (long long)k, units[i].name,
		    k == 1 ? "" : "s");
	}
	if (n < len)
		snprintf(buf + n, len - n, " ago");
}

/* ---- The report. ---- */

void report_init(struct report *r, enum report_form form, char *buf,
    size_t size)
{
	memset(r, 0, sizeof(*r));
	r->form = form;
	r->buf = buf;
	r->size = size;
	r->first = 1;
	r->now_ms = now_ms();
	r->now_wall = wall_s();
	if (size > 0)
		buf[0] = '\0';
}

/* The log takes whole lines: "status: LINE" each, blank ones skipped. */
static void report_log_add(struct report *r, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] != '\n') {
			if (r->len + 1 < r->size)
				r->buf[r->len++] = s[i];
			continue;
		}
		r->buf[r->len] = '\0';
		if (r->len > 0)
			log_info("status: %s", r->buf);
		r->len = 0;
	}
}

/*
 * Append n bytes, all or nothing.  Only what closes something (closing)
 * may use the reserve, and it is written even when the report is full;
 * anything else that does not fit makes it full.
 */
static void report_add(struct report *r, const char *s, size_t n,
    int closing)
{
	size_t limit;

	if (r->form == REPORT_LOG) {
		report_log_add(r, s, n);
		return;
	}
	if (r->full && !closing)
		return;
	limit = closing ? r->size - 1 : r->size - REPORT_RESERVE;
	if (r->size <= REPORT_RESERVE || r->len + n > limit) {
		if (!closing)
			r->full = 1;
		return;
	}
	memcpy(r->buf + r->len, s, n);
	r->len += n;
	r->buf[r->len] = '\0';
}

static void report_addf(struct report *r, int closing, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report_addf(struct report *r, int closing, const char *fmt, ...)
{
	char line[REPORT_LINE];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	report_add(r, line, (size_t)n < sizeof(line) ? (size_t)n :
	    sizeof(line) - 1, closing);
}

/* The separator before a JSON member or element. */
static const char *report_sep(struct report *r)
{
	const char *sep = r->first ? "" : ",";

	r->first = 0;
	return sep;
}

/* A JSON string, quoted, or null. */
static void json_str(char *out, const char *s)
{
	size_t n;

	if (s == NULL) {
		memcpy(out, "null", 5);
		return;
	}
	out[0] = '"';
	n = json_escape(out + 1, s, FIELD_STR_MAX);
	memcpy(out + 1 + n, "\"", 2);
}

void report_begin(struct report *r, const char *mode, const char *key,
    const char *title)
{
	char t[6 * FIELD_STR_MAX + 3];

	if (r->form == REPORT_JSON) {
		json_str(t, title);
		report_addf(r, 0, "{\"mode\":\"%s\",\"%s\":%s", mode, key, t);
		r->first = 0;
	} else {
		text_clean(t, title ? title : "-", FIELD_STR_MAX);
		report_addf(r, 0, "%s: %s\n", mode, t);
	}
}

void report_list(struct report *r, const char *key, const char *label,
    int rows)
{
	r->rows = rows;
	r->label = label;
	r->listed = 0;
	r->list_open = 0;
	if (r->form != REPORT_JSON || r->full)
		return;
	report_addf(r, 0, "%s\"%s\":[", report_sep(r), key);
	if (!r->full) {
		r->list_open = 1;
		r->first = 1;
	}
}

void report_list_end(struct report *r)
{
	if (r->form == REPORT_JSON && r->list_open) {
		report_add(r, "]", 1, 1);
		r->first = 0;
	}
	r->rows = 0;
	r->label = NULL;
	r->list_open = 0;
}

void report_item(struct report *r, const char *key, const char *title)
{
	char t[6 * FIELD_STR_MAX + 3];

	if (r->full || (r->form == REPORT_JSON && !r->list_open)) {
		r->in_item = 2;		/* skipped: nothing to take out */
		r->omitted++;
		return;
	}
	r->in_item = 1;
	r->mark = r->len;
	r->mark_first = r->first;
	r->mark_listed = r->listed;
	if (r->form == REPORT_JSON) {
		json_str(t, title);
		report_addf(r, 0, "%s{\"%s\":%s", report_sep(r), key, t);
	} else {
		text_clean(t, title ? title : "-", FIELD_STR_MAX);
		if (r->rows)
			report_addf(r, 0, "%s%s%s  %s", r->listed ? "" : "\n",
			    r->listed ? "" : r->label, r->listed ? "" : ":\n",
			    t);
		else
			report_addf(r, 0, "\n%s: %s\n", r->label, t);
	}
	r->listed = 1;
}

void report_item_end(struct report *r)
{
	int skipped = r->in_item == 2;

	if (r->in_item == 0)
		return;
	r->in_item = 0;
	if (skipped)
		return;
	if (r->form == REPORT_JSON)
		report_add(r, "}", 1, 0);
	else if (r->rows)
		report_add(r, "\n", 1, 0);
	if (r->full && r->form != REPORT_LOG) {
		/* Take the item out: a reader gets whole items or none. */
		r->len = r->mark;
		r->buf[r->len] = '\0';
		r->first = r->mark_first;
		r->listed = r->mark_listed;
		r->omitted++;
	}
}

/* One field: "key":json in JSON; "  label: text" in text, or " label
 * text" inside a row. */
static void report_field(struct report *r, const char *key,
    const char *label, const char *json, const char *text)
{
	if (r->form == REPORT_JSON)
		report_addf(r, 0, "%s\"%s\":%s", report_sep(r), key, json);
	else if (r->rows && r->in_item)
		report_addf(r, 0, " %s%s%s", label, *label ? " " : "", text);
	else
		report_addf(r, 0, "  %s: %s\n", label, text);
}

void report_str(struct report *r, const char *key, const char *label,
    const char *v)
{
	char j[6 * FIELD_STR_MAX + 3], t[FIELD_STR_MAX + 1];

	json_str(j, v);
	text_clean(t, v ? v : "none", FIELD_STR_MAX);
	report_field(r, key, label, j, t);
}

void report_strs(struct report *r, const char *key, const char *label,
    const char *const *v, size_t n)
{
	char j[REPORT_LINE / 2], t[REPORT_LINE / 4], e[6 * FIELD_STR_MAX + 3];
	size_t i, jn = 1, tn = 0;

	memcpy(j, "[", 2);
	t[0] = '\0';
	for (i = 0; i < n; i++) {
		char *q = e + 1;

		json_str(e, v[i]);
		if (jn + strlen(e) + 3 > sizeof(j) ||
		    tn + strlen(v[i]) + 3 > sizeof(t))
			break;	/* XXX: quietly cut; callers give a few */
		jn += (size_t)snprintf(j + jn, sizeof(j) - jn, "%s%s",
		    i ? "," : "", e);
		text_clean(q, v[i], 64);
		tn += (size_t)snprintf(t + tn, sizeof(t) - tn, "%s%s",
		    i ? ", " : "", q);
	}
	snprintf(j + jn, sizeof(j) - jn, "]");
	report_field(r, key, label, j, n ? t : "none");
}

void report_num(struct report *r, const char *key, const char *label,
    int64_t v, const char *unit)
{
	char j[24], t[48];

	if (v < 0) {
		report_field(r, key, label, "null", "unknown");
		return;
	}
	snprintf(j, sizeof(j), "%lld", (long long)v);
	snprintf(t, sizeof(t), "%lld%s%s", (long long)v, unit ? " " : "",
	    unit ? unit : "");
	report_field(r, key, label, j, t);
}

void report_bytes(struct report *r, const char *key, const char *label,
    uint64_t v)
{
	char j[24], t[32];

	snprintf(j, sizeof(j), "%llu", (unsigned long long)v);
	size_str(t, sizeof(t), v);
	report_field(r, key, label, j, t);
}

void report_traffic(struct report *r, const char *key, const char *label,
    const char *unit, uint64_t n, uint64_t bytes)
{
	char size[32];

	if (r->form == REPORT_JSON) {
		report_addf(r, 0, "%s\"%s_%s\":%llu,\"%s_bytes\":%llu",
		    report_sep(r), key, unit, (unsigned long long)n, key,
		    (unsigned long long)bytes);
		return;
	}
	size_str(size, sizeof(size), bytes);
	report_addf(r, 0, "  %s: %llu %s, %s\n", label,
	    (unsigned long long)n, unit, size);
}

void report_when(struct report *r, const char *key, const char *label,
    int64_t at_ms, int dated)
{
	char j[24], t[128], date[32] = "", ago[80];
	int64_t secs = (r->now_ms - at_ms) / 1000;
	time_t wall;
	struct tm tm;

	if (at_ms == 0) {
		report_field(r, key, label, "null", "never");
		return;
	}
	if (secs < 0)
		secs = 0;
	wall = (time_t)(r->now_wall - secs);
	snprintf(j, sizeof(j), "%lld", (long long)wall);
	ago_str(ago, sizeof(ago), secs);
	if (dated && localtime_r(&wall, &tm) != NULL)
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	if (date[0] != '\0')
		snprintf(t, sizeof(t), "%s (%s)", date, ago);
	else
		snprintf(t, sizeof(t), "%s", ago);
	report_field(r, key, label, j, t);
}

void report_end(struct report *r)
{
	switch (r->form) {
	case REPORT_JSON:
		if (r->omitted)
			report_addf(r, 1, ",\"truncated\":true,\"omitted\":%lu}\n",
			    r->omitted);
		else
			report_add(r, ",\"truncated\":false}\n", 20, 1);
		break;
	case REPORT_TEXT:
		if (r->omitted)
			report_addf(r, 1, "\n(%lu more not shown: a status "
			    "reply holds %d KiB at most)\n", r->omitted,
			    REPORT_MAX / 1024);
		break;
	case REPORT_LOG:
		report_log_add(r, "\n", 1);
		break;
	}
}

/* ---- The peer-to-peer part of a client's report. ---- */

static const char *endpoint_text(const struct endpoint *e, char *buf,
    size_t len)
{
	char ip[16];

	if (e->ip == 0)
		return NULL;
	snprintf(buf, len, "%s:%u", ip_str(e->ip, ip), (unsigned)e->port);
	return buf;
}

/* see candy.h */
void p2p_report(struct report *r, const struct client *c)
{
	const struct p2p *p2p = &c->p2p;
	char a[16], b[16], e[24];
	size_t i;

	report_str(r, "p2p", "peer-to-peer", p2p->udp_fd >= 0 ? "on" : "off");
	if (p2p->udp_fd >= 0) {
		report_num(r, "udp_port", "udp port", p2p->port, NULL);
		report_str(r, "public_endpoint", "public endpoint",
		    endpoint_text(&p2p->public, e, sizeof(e)));
		report_num(r, "bad_datagrams", "bad datagrams",
		    (int64_t)p2p->rx_bad, NULL);
		report_num(r, "send_errors", "send errors",
		    (int64_t)p2p->tx_err, NULL);
		report_num(r, "send_batches", "send batches",
		    (int64_t)p2p->tx_calls, NULL);
		report_num(r, "receive_batches", "receive batches",
		    (int64_t)p2p->rx_calls, NULL);
		report_num(r, "replays", "replays", (int64_t)p2p->rx_replay,
		    NULL);
		report_num(r, "over_budget", "over budget",
		    (int64_t)p2p->tx_budget, NULL);
		report_num(r, "evicted", "evicted", (int64_t)p2p->evicted,
		    NULL);
		report_num(r, "moved", "moved", (int64_t)p2p->moved, NULL);
		report_num(r, "queue_dropped", "queue drops",
		    (int64_t)p2p->aqm.dropped, NULL);
		report_num(r, "queue_marked", "queue ce marks",
		    (int64_t)p2p->aqm.marked, NULL);
		report_num(r, "peer_table", "peer table", (int64_t)p2p->cap,
		    NULL);
	}
	report_list(r, "peers", "peer", 0);
	for (i = 0; i < p2p->npeers; i++) {
		const struct peer *p = &p2p->peers[i];

		report_item(r, "address", ip_str(p->addr, a));
		report_str(r, "state", "state", peer_state_name(p->state));
		report_str(r, "endpoint", "endpoint",
		    endpoint_text(&p->real, e, sizeof(e)));
		report_num(r, "rtt_ms", "rtt", p->rtt, "ms");
		report_traffic(r, "tx", "sent", "datagrams", p->tx,
		    p->tx_bytes);
		report_traffic(r, "rx", "received", "datagrams", p->rx,
		    p->rx_bytes);
		report_when(r, "last_heard", "last heard", p->last_rx_ms, 0);
		report_item_end(r);
	}
	report_list_end(r);
	report_list(r, "relay_routes", "relay routes", 1);
	for (i = 0; i < p2p->relay.n; i++) {
		const struct relay_route *rt = &p2p->relay.r[i];

		report_item(r, "dst", ip_str(rt->dst, a));
		report_str(r, "next", "via", ip_str(rt->next, b));
		report_num(r, "rtt_ms", "rtt", rt->rtt, "ms");
		report_item_end(r);
	}
	report_list_end(r);
}

/* ---- The daemon's socket. ---- */

struct status_conn {
	int fd;			/* -1: the slot is free */
	int64_t deadline_ms;	/* closed then, whatever it did */
	char req[16];		/* the request line, NUL-terminated */
	size_t reqlen;
	char *reply;		/* REPORT_MAX bytes once asked; else NULL */
	size_t pos, len;
};

static struct {
	int ready;		/* the slots are initialized */
	int fd;			/* listening; -1 none */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t dev;		/* the socket file we made, to remove it */
	ino_t ino;		/* only if it is still ours */
	int64_t paused_until;	/* out of descriptors: listener not polled */
	struct status_conn c[STATUS_CONN_MAX];
} st;

static void status_slots_init(void)
{
	size_t i;

	if (st.ready)
		return;
	st.ready = 1;
	st.fd = -1;
	for (i = 0; i < STATUS_CONN_MAX; i++)
		st.c[i].fd = -1;
}

static int fd_setup(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	fcntl(fd, F_SETFD, FD_CLOEXEC);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* see candy.h */
int status_path(const struct config *cfg, char *buf, size_t len)
{
	int n;

	if (cfg->mode == MODE_SERVER)
		n = snprintf(buf, len, "%s/server.sock", cfg->state_dir);
	else
		n = snprintf(buf, len, "%s/candy%s%s.sock", cfg->state_dir,
		    cfg->name[0] ? "-" : "", cfg->name);
	if (n < 0 || (size_t)n >= len || (size_t)n >= sizeof(st.path))
		return -1;
	return 0;
}

static int sockaddr_un_set(struct sockaddr_un *sa, const char *path)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -1;
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

/* Someone listens at sa: a connect that does not fail at once (a full
 * backlog makes a non-blocking one answer EAGAIN: alive too). */
static int status_alive(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), r;

	if (fd < 0)
		return 0;
	fd_setup(fd);
	r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	r = r == 0 || errno == EAGAIN || errno == EINPROGRESS;
	close(fd);
	return r;
}

/* The state directory, one level as state_write makes it. */
static void status_mkdir(const char *path)
{
	char dir[sizeof(st.path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		mkdir(dir, 0755);
	}
}

/* see candy.h */
int status_open(const char *path)
{
	struct sockaddr_un sa;
	struct stat sb;
	mode_t old;
	int fd, r;

	status_slots_init();
	if (sockaddr_un_set(&sa, path) < 0) {
		log_warnx("status: socket path too long: %s", path);
		return -1;
	}
	if (lstat(path, &sb) == 0) {
		if (!S_ISSOCK(sb.st_mode)) {
			log_warnx("status: %s is not a socket: left alone, "
			    "no status socket", path);
			return -1;
		}
		if (status_alive(&sa)) {
			log_warnx("status: another candy answers on %s: "
			    "no status socket for this one", path);
			return -1;
		}
		unlink(path);	/* left by a candy that was killed */
	}
	status_mkdir(path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0) {
		log_warn("status: socket");
		return -1;
	}
	fd_setup(fd);
	/* 0600 from the start: no moment when others may connect. */
	old = umask(077);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || chmod(path, 0600) < 0 || listen(fd, 8) < 0 ||
	    stat(path, &sb) < 0) {
		log_warn("status: cannot listen on %s", path);
		close(fd);
		return -1;
	}
	st.fd = fd;
	st.dev = sb.st_dev;
	st.ino = sb.st_ino;
	snprintf(st.path, sizeof(st.path), "%s", path);
	log_info("status on %s", path);
	return 0;
}

/* see candy.h */
void status_events(struct pollfd *pfd)
{
	size_t i;

	status_slots_init();
	/* A pending connection we cannot accept keeps the listener readable:
	 * polling it then would spin the loop. */
	pfd[0].fd = st.paused_until != 0 && now_ms() < st.paused_until ?
	    -1 : st.fd;
	pfd[0].events = POLLIN;
	pfd[0].revents = 0;
	for (i = 0; i < STATUS_CONN_MAX; i++) {
		pfd[1 + i].fd = st.c[i].fd;
		pfd[1 + i].events = st.c[i].reply != NULL ? POLLOUT : POLLIN;
		pfd[1 + i].revents = 0;
	}
}

static void status_conn_close(struct status_conn *c, const char *why)
{
	if (why != NULL)
		log_debug("status: request closed: %s", why);
	close(c->fd);
	c->fd = -1;
	free(c->reply);
	c->reply = NULL;
}

static void status_conn_write(struct status_conn *c)
{
	while (c->pos < c->len) {
		ssize_t n = write(c->fd, c->reply + c->pos, c->len - c->pos);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR))
			return;		/* the rest when it drains */
		if (n <= 0) {
			status_conn_close(c, strerror(errno));
			return;
		}
		c->pos += (size_t)n;
	}
	status_conn_close(c, NULL);	/* done: the end of the stream */
}

/*
 * The request line is complete: build the whole reply now, in one piece
 * (bounded: REPORT_MAX), and send it as the socket drains.  The buffer
 * lives only while a reply is under way: a status request is rare, and an
 * idle daemon should not hold it.
 */
static int status_conn_reply(struct status_conn *c, status_build_fn *build,
    void *ctx)
{
	struct report r;
	enum report_form form;

	if (strcmp(c->req, "json\n") == 0)
		form = REPORT_JSON;
	else if (strcmp(c->req, "text\n") == 0)
		form = REPORT_TEXT;
	else
		return -1;
	if ((c->reply = malloc(REPORT_MAX)) == NULL)
		return -1;
	report_init(&r, form, c->reply, REPORT_MAX);
	build(ctx, &r);
	c->len = r.len;
	c->pos = 0;
	return 0;
}

static void status_conn_io(struct status_conn *c, status_build_fn *build,
    void *ctx)
{
	if (c->reply == NULL) {
		ssize_t n = read(c->fd, c->req + c->reqlen,
		    sizeof(c->req) - 1 - c->reqlen);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR))
			return;
		if (n <= 0) {
			status_conn_close(c, n < 0 ? strerror(errno) :
			    "closed before asking");
			return;
		}
		c->reqlen += (size_t)n;
		c->req[c->reqlen] = '\0';
		if (strchr(c->req, '\n') == NULL) {
			if (c->reqlen == sizeof(c->req) - 1)
				status_conn_close(c, "request too long");
			return;
		}
		if (status_conn_reply(c, build, ctx) < 0) {
			status_conn_close(c, "bad request or no memory");
			return;
		}
	}
	status_conn_write(c);
}

/* Take what waits on the listening socket; with every slot busy a new
 * connection is closed at once (its client says so). */
static void status_accept(int64_t now)
{
	int i, n;

	for (n = 0; n <= STATUS_CONN_MAX; n++) {
		int fd = accept(st.fd, NULL, NULL);
		struct status_conn *c = NULL;

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				if (st.paused_until == 0)
					log_warn("status: cannot accept");
				st.paused_until = now + STATUS_PAUSE_MS;
			}
			return;
		}
		st.paused_until = 0;
		fd_setup(fd);
		for (i = 0; i < STATUS_CONN_MAX && c == NULL; i++)
			if (st.c[i].fd < 0)
				c = &st.c[i];
		if (c == NULL) {
			log_debug("status: %d requests open, one refused",
			    STATUS_CONN_MAX);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->deadline_ms = now + STATUS_TIMEOUT_MS;
		c->reqlen = 0;
		c->req[0] = '\0';
		c->reply = NULL;
		c->pos = c->len = 0;
	}
}

/* see candy.h */
void status_handle(const struct pollfd *pfd, int64_t now,
    status_build_fn *build, void *ctx)
{
	size_t i;

	if (!st.ready)
		return;
	for (i = 0; i < STATUS_CONN_MAX; i++) {
		struct status_conn *c = &st.c[i];

		if (c->fd >= 0 && pfd[1 + i].fd == c->fd &&
		    pfd[1 + i].revents)
			status_conn_io(c, build, ctx);
		if (c->fd >= 0 && now >= c->deadline_ms)
			status_conn_close(c, "too slow");
	}
	if (st.fd >= 0 && (pfd[0].revents & POLLIN))
		status_accept(now);
}

/* see candy.h */
void status_log(status_build_fn *build, void *ctx)
{
	char line[REPORT_LINE];
	struct report r;

	report_init(&r, REPORT_LOG, line, sizeof(line));
	build(ctx, &r);
}

/* see candy.h */
void status_close(void)
{
	struct stat sb;
	size_t i;

	if (!st.ready)
		return;
	for (i = 0; i < STATUS_CONN_MAX; i++)
		if (st.c[i].fd >= 0)
			status_conn_close(&st.c[i], NULL);
	if (st.fd < 0)
		return;
	close(st.fd);
	st.fd = -1;
	/* Another candy may have replaced a socket it took for stale. */
	if (stat(st.path, &sb) == 0 && sb.st_dev == st.dev &&
	    sb.st_ino == st.ino)
		unlink(st.path);
}

/* ---- `candy status'. ---- */

/* see candy.h */
int status_query(const char *path, int json, const char *what)
{
	struct timeval tv = { QUERY_TIMEOUT_S, 0 };
	struct sockaddr_un sa;
	const char *req = json ? "json\n" : "text\n";
	char buf[4096];
	size_t total = 0;
	ssize_t n;
	int fd;

	if (sockaddr_un_set(&sa, path) < 0) {
		fprintf(stderr, "candy: status socket path too long: %s\n",
		    path);
		return 1;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0) {
		fprintf(stderr, "candy: socket: %s\n", strerror(errno));
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		if (e == ENOENT || e == ECONNREFUSED)
			fprintf(stderr, "candy: no %s is running (no answer "
			    "on %s: %s)\n", what, path, strerror(e));
		else
			fprintf(stderr, "candy: cannot reach the %s on %s: "
			    "%s\n", what, path, strerror(e));
		close(fd);
		return 1;
	}
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		fprintf(stderr, "candy: %s: %s\n", path, strerror(errno));
		close(fd);
		return 1;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		fwrite(buf, 1, (size_t)n, stdout);
		total += (size_t)n;
	}
	close(fd);
	if (n < 0) {
		fprintf(stderr, "candy: reading the status of the %s: %s\n",
		    what, errno == EAGAIN || errno == EWOULDBLOCK ?
		    "no answer in time" : strerror(errno));
		return 1;
	}
	if (total == 0) {
		fprintf(stderr, "candy: the %s sent no status (busy? try "
		    "again)\n", what);
		return 1;
	}
	return fflush(stdout) == 0 ? 0 : 1;
}
