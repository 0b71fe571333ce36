/* t_status.c: the status report (text, JSON, truncation, escapes) and its
 * socket (status.c). */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "candy.h"
#include "test.h"

#define CHECK_STR(want, got, name) \
	CHECK_BYTES((want), strlen(want), (got), strlen(got), (name))

/* RFC 8259 §7 escapes; invalid UTF-8 (RFC 3629 §3, §10) as U+FFFD. */
static void test_json_escape(void)
{
	static const struct {
		const char *in, *out, *name;
	} t[] = {
		{ "candy::linux::1.0.0::vm", "candy::linux::1.0.0::vm",
		    "json: plain ASCII unchanged" },
		{ "a\"b\\c", "a\\\"b\\\\c", "json: quote and backslash" },
		{ "a\nb\tc\rd", "a\\nb\\tc\\rd", "json: \\n \\t \\r" },
		{ "\x01\x1b[31m\x7f", "\\u0001\\u001b[31m\\u007f",
		    "json: control bytes as \\u00XX" },
		{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8d\xac",
		    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8d\xac",
		    "json: valid UTF-8 kept (2, 3 and 4 bytes)" },
		{ "\xff\xfe", "\\ufffd\\ufffd", "json: bytes never in UTF-8" },
		{ "\xc0\xaf", "\\ufffd\\ufffd", "json: overlong / refused" },
		{ "\xe0\x80\xaf", "\\ufffd\\ufffd\\ufffd",
		    "json: overlong 3-byte form refused" },
		{ "\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd",
		    "json: UTF-16 surrogate refused" },
		{ "\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd",
		    "json: past U+10FFFF refused" },
		{ "ab\xc3", "ab\\ufffd", "json: cut sequence at the end" },
	};
	char out[256];
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		json_escape(out, t[i].in, 64);
		CHECK_STR(t[i].out, out, t[i].name);
	}
	json_escape(out, "abcdef", 3);
	CHECK_STR("abc", out, "json: at most max bytes read");
}

/* A small client-like report, the same calls for every form. */
static void build(struct report *r)
{
	r->now_ms = 1000000;		/* fixed clocks: fixed output */
	r->now_wall = 1796000000;
	report_begin(r, "client", "interface", "candy-t");
	report_str(r, "address", "address", "172.31.0.2/24");
	report_str(r, "cipher", "cipher", NULL);
	report_num(r, "rtt_ms", "rtt", 3, "ms");
	report_num(r, "other_ms", "other", -1, "ms");
	report_traffic(r, "server_tx", "to server", "frames", 12, 2048);
	report_when(r, "last_heard", "last heard", 1000000 - 65000, 0);
	report_when(r, "never", "never", 0, 0);
	report_list(r, "peers", "peer", 0);
	report_item(r, "address", "172.31.0.3");
	report_str(r, "state", "state", "CONNECTED");
	report_item_end(r);
	report_list_end(r);
	report_list(r, "routes", "relay routes", 1);
	report_item(r, "dst", "172.31.0.9");
	report_str(r, "next", "via", "172.31.0.3");
	report_num(r, "rtt_ms", "rtt", 5, "ms");
	report_item_end(r);
	report_list_end(r);
	report_end(r);
}

static void test_report_forms(void)
{
	static char buf[4096];
	struct report r;

	report_init(&r, REPORT_JSON, buf, sizeof(buf));
	build(&r);
	CHECK_STR("{\"mode\":\"client\",\"interface\":\"candy-t\","
	    "\"address\":\"172.31.0.2/24\",\"cipher\":null,\"rtt_ms\":3,"
	    "\"other_ms\":null,\"server_tx_frames\":12,"
	    "\"server_tx_bytes\":2048,\"last_heard\":1795999935,"
	    "\"never\":null,"
	    "\"peers\":[{\"address\":\"172.31.0.3\",\"state\":\"CONNECTED\"}],"
	    "\"routes\":[{\"dst\":\"172.31.0.9\",\"next\":\"172.31.0.3\","
	    "\"rtt_ms\":5}],\"truncated\":false}\n", buf,
	    "report: JSON, one object");
	CHECK(r.len == strlen(buf), "report: JSON length");

	report_init(&r, REPORT_TEXT, buf, sizeof(buf));
	build(&r);
	CHECK_STR("client: candy-t\n"
	    "  address: 172.31.0.2/24\n"
	    "  cipher: none\n"
	    "  rtt: 3 ms\n"
	    "  other: unknown\n"
	    "  to server: 12 frames, 2.00 KiB\n"
	    "  last heard: 1 minute, 5 seconds ago\n"
	    "  never: never\n"
	    "\n"
	    "peer: 172.31.0.3\n"
	    "  state: CONNECTED\n"
	    "\n"
	    "relay routes:\n"
	    "  172.31.0.9 via 172.31.0.3 rtt 5 ms\n", buf,
	    "report: text, wg show's layout, rows under a header");
}

/* Every item that does not fit is taken out whole and counted; what is
 * left is still one valid object. */
static void test_report_truncated(void)
{
	static char buf[4096];
	char ip[16];
	struct report r;
	int i;

	report_init(&r, REPORT_JSON, buf, 400);
	report_begin(&r, "server", "websocket", "ws://0.0.0.0:80");
	report_list(&r, "sessions", "session", 0);
	for (i = 1; i <= 20; i++) {
		report_item(&r, "address", ip_str(0xac1f0000 + (uint32_t)i,
		    ip));
		report_str(&r, "remote", "remote", "198.51.100.2:40000");
		report_item_end(&r);
	}
	report_list_end(&r);
	report_num(&r, "after", "after", 1, NULL);
	report_end(&r);
	CHECK(r.len < 400, "truncated: within the buffer");
	CHECK(r.omitted > 0 && r.omitted < 20, "truncated: some items left out");
	CHECK(strstr(buf, "}],\"truncated\":true,\"omitted\":") != NULL &&
	    buf[r.len - 2] == '}' && buf[r.len - 1] == '\n',
	    "truncated: the list and the object closed, marked truncated");
	CHECK(strstr(buf, "\"after\"") == NULL,
	    "truncated: nothing written after an item left out");
	{
		char want[32];
		int kept = 20 - (int)r.omitted, n = 0;
		const char *p = buf;

		while ((p = strstr(p, "{\"address\"")) != NULL) {
			n++;
			p++;
		}
		snprintf(want, sizeof(want), "\"omitted\":%lu}", r.omitted);
		CHECK(n == kept && strstr(buf, want) != NULL,
		    "truncated: whole items kept, the rest counted");
	}

	report_init(&r, REPORT_TEXT, buf, 300);
	report_begin(&r, "server", "websocket", "ws://0.0.0.0:80");
	report_list(&r, "sessions", "session", 0);
	for (i = 1; i <= 20; i++) {
		report_item(&r, "address", ip_str(0xac1f0000 + (uint32_t)i,
		    ip));
		report_str(&r, "remote", "remote", "198.51.100.2:40000");
		report_item_end(&r);
	}
	report_list_end(&r);
	report_end(&r);
	CHECK(r.len < 300 && strstr(buf, " more not shown: a status reply "
	    "holds 256 KiB at most)\n") != NULL,
	    "truncated: text says how many are not shown");
}

/* A hostile ping payload must not reach the operator's terminal raw. */
static void test_report_clean(void)
{
	static char buf[1024];
	struct report r;

	report_init(&r, REPORT_TEXT, buf, sizeof(buf));
	report_str(&r, "description", "description",
	    "candy::\x1b[2J\x9b::x\ny");
	CHECK_STR("  description: candy::?[2J?::x?y\n", buf,
	    "text: control and non-ASCII bytes shown as ?");
	report_init(&r, REPORT_JSON, buf, sizeof(buf));
	report_str(&r, "description", "description", "a\"\x1b");
	CHECK_STR("\"description\":\"a\\\"\\u001b\"", buf,
	    "json: a field's value escaped");
}

/* A list of strings: an array / joined. */
static void test_report_strs(void)
{
	static const char *const v[] = { "0.0.0.0:8080", "[::]:8080" };
	static char buf[512];
	struct report r;

	report_init(&r, REPORT_JSON, buf, sizeof(buf));
	report_strs(&r, "listen", "listening on", v, 2);
	report_strs(&r, "none", "none", v, 0);
	CHECK_STR("\"listen\":[\"0.0.0.0:8080\",\"[::]:8080\"],"
	    "\"none\":[]", buf, "json: a list of strings");
	report_init(&r, REPORT_TEXT, buf, sizeof(buf));
	report_strs(&r, "listen", "listening on", v, 2);
	CHECK_STR("  listening on: 0.0.0.0:8080, [::]:8080\n", buf,
	    "text: a list of strings");
}

static void report_fixed(void *ctx, struct report *r)
{
	report_begin(r, "server", "websocket", (const char *)ctx);
	report_end(r);
}

/* One pass of a poll loop over the status slots. */
static void status_pass(int64_t now)
{
	struct pollfd pfd[STATUS_SLOTS];

	status_events(pfd);
	poll(pfd, STATUS_SLOTS, 100);
	status_handle(pfd, now, report_fixed, "ws://t");
}

static int unix_connect(const char *path)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void test_status_socket(void)
{
	char dir[] = "/tmp/candy-status-XXXXXX", path[128], buf[512];
	struct stat sb;
	struct rlimit rl;
	int fd, idle, i, fill[STATUS_SLOTS], nfill;
	ssize_t n;
	size_t got = 0;

	if (mkdtemp(dir) == NULL) {
		CHECK(0, "socket: a temporary directory");
		return;
	}
	snprintf(path, sizeof(path), "%s/sub/t.sock", dir);
	CHECK(status_open(path) == 0, "socket: listens (directory made)");
	CHECK(stat(path, &sb) == 0 && S_ISSOCK(sb.st_mode) &&
	    (sb.st_mode & 0777) == 0600, "socket: mode 0600");

	fd = unix_connect(path);
	idle = unix_connect(path);
	CHECK(fd >= 0 && idle >= 0, "socket: accepts connections");
	if (write(fd, "json\n", 5) != 5)
		CHECK(0, "socket: request written");
	for (i = 0; i < 20 && got < sizeof(buf) - 1; i++) {
		status_pass(now_ms());
		while ((n = recv(fd, buf + got, sizeof(buf) - 1 - got,
		    MSG_DONTWAIT)) > 0)
			got += (size_t)n;
		if (n == 0)
			break;
	}
	buf[got] = '\0';
	CHECK_STR("{\"mode\":\"server\",\"websocket\":\"ws://t\","
	    "\"truncated\":false}\n", buf, "socket: the JSON reply, then EOF");
	CHECK(n == 0, "socket: closed after the reply");
	close(fd);

	/* The idle one never asks: closed at its deadline. */
	status_pass(now_ms());
	n = recv(idle, buf, sizeof(buf), MSG_DONTWAIT);
	CHECK(n < 0, "socket: a silent client is kept before its deadline");
	status_pass(now_ms() + STATUS_TIMEOUT_MS + 1);
	n = recv(idle, buf, sizeof(buf), MSG_DONTWAIT);
	CHECK(n == 0, "socket: a silent client is closed at its deadline");
	close(idle);

	fd = unix_connect(path);
	if (write(fd, "what\n", 5) != 5)
		CHECK(0, "socket: request written");
	status_pass(now_ms());
	status_pass(now_ms());
	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	CHECK(n == 0, "socket: an unknown request is closed");
	close(fd);

	/* Out of descriptors: the connection waiting cannot be accepted,
	 * and the listener, still readable, is left out of the poll set
	 * for a moment instead of spinning the loop.  poll() itself wants
	 * the limit above its count of entries: descriptors fill the low
	 * numbers first. */
	for (nfill = 0; nfill < STATUS_SLOTS; nfill++)
		fill[nfill] = dup(2);
	fd = unix_connect(path);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		struct rlimit low = rl;
		struct pollfd pfd[STATUS_SLOTS];

		low.rlim_cur = (rlim_t)fd + 1;	/* no room for another */
		setrlimit(RLIMIT_NOFILE, &low);
		status_pass(now_ms());
		status_events(pfd);
		setrlimit(RLIMIT_NOFILE, &rl);
		CHECK(pfd[0].fd == -1,
		    "socket: out of descriptors: the listener is paused");
		/* The pause over (the clock moved on), the listener is
		 * polled again and the waiting request gets its reply. */
		fake_now_ms = now_ms() + STATUS_PAUSE_MS + 1;
		if (write(fd, "json\n", 5) != 5)
			CHECK(0, "socket: request written");
		got = 0;
		for (i = 0; i < 20 && got < sizeof(buf) - 1; i++) {
			status_pass(fake_now_ms);
			while ((n = recv(fd, buf + got, sizeof(buf) - 1 - got,
			    MSG_DONTWAIT)) > 0)
				got += (size_t)n;
			if (n == 0)
				break;
		}
		fake_now_ms = 0;
		CHECK(got > 0 && n == 0,
		    "socket: ... and answers again when the pause is over");
	}
	close(fd);
	for (i = 0; i < nfill; i++)
		close(fill[i]);
	status_pass(now_ms() + STATUS_TIMEOUT_MS + 1);

	/* A second daemon on the same path leaves the first alone. */
	CHECK(status_open(path) < 0, "socket: in use by a live daemon: left");
	CHECK(stat(path, &sb) == 0, "socket: ... and still there");
	status_close();
	CHECK(stat(path, &sb) < 0, "socket: removed when closed");
	snprintf(buf, sizeof(buf), "%s/sub", dir);
	rmdir(buf);
	rmdir(dir);
}

void test_status(void)
{
	test_json_escape();
	test_report_forms();
	test_report_truncated();
	test_report_clean();
	test_report_strs();
	test_status_socket();
}
