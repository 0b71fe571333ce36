/* t_config.c: options and the config file, good values and bad ones. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "candy.h"
#include "test.h"

static struct config cfg;
static char err[512];

/* Load from a NULL-terminated argument list. */
static int load(const char *first, ...)
{
	char *argv[32];
	int argc = 0;
	const char *a;
	va_list ap;

	argv[argc++] = "candy";
	va_start(ap, first);
	for (a = first; a != NULL && argc < 31; a = va_arg(ap, const char *))
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	err[0] = '\0';
	return config_load(&cfg, argc, argv, err, sizeof(err));
}

/* --help and --version print to stdout: keep that out of the test log. */
static int load_quiet(const char *opt)
{
	int saved = dup(STDOUT_FILENO), null = open("/dev/null", O_WRONLY), r;

	fflush(stdout);
	dup2(null, STDOUT_FILENO);
	r = load(opt, NULL);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(null);
	close(saved);
	return r;
}

/* Run load() with stdout (what --check prints) sent to /dev/null. */
#define LOAD_QUIET(r, ...) do {						\
	int saved_ = dup(STDOUT_FILENO);				\
	int null_ = open("/dev/null", O_WRONLY);			\
	fflush(stdout);							\
	dup2(null_, STDOUT_FILENO);					\
	(r) = load(__VA_ARGS__);					\
	fflush(stdout);							\
	dup2(saved_, STDOUT_FILENO);					\
	close(null_);							\
	close(saved_);							\
} while (0)

/* --check: 1 (exit 0, nothing run) for a good configuration, -1 for a bad
 * one, and never 0, which would start the daemon. */
static void test_config_check(void)
{
	int r;

	LOAD_QUIET(r, "--check", "-m", "client", "-w", "ws://h", NULL);
	CHECK(r == 1, "--check: a good configuration, exit 0, nothing run");
	LOAD_QUIET(r, "-m", "client", "-w", "ws://h", "--mtu", "1", "--check",
	    NULL);
	CHECK(r < 0 && strstr(err, "mtu") != NULL,
	    "--check: a bad value is refused");
	LOAD_QUIET(r, "--check", "-m", "server", NULL);
	CHECK(r < 0 && strstr(err, "--websocket") != NULL,
	    "--check: an incomplete configuration is refused");
}

static void test_config_good(void)
{
	CHECK(load("-m", "server", "-w", "ws://0.0.0.0:8080", "-p", "pw",
	    "-d", "172.31.0.0/24", "--sdwan",
	    "172.31.0.0/24,192.168.50.0/24,172.31.0.9", NULL) == 0,
	    "server options load");
	CHECK(cfg.mode == MODE_SERVER && cfg.has_dhcp &&
	    cfg.dhcp.addr == 0xac1f0000 && cfg.dhcp.prefix == 24 &&
	    cfg.nsdwan == 1 && strcmp(cfg.password, "pw") == 0,
	    "server options stored");
	CHECK(load("--mode=client", "--websocket=wss://vpn.example:443/net",
	    "-t172.31.0.9/24", "-n", "home", "--route", "5000", "--port",
	    "0", "--debug", NULL) == 0, "client options load");
	CHECK(cfg.mode == MODE_CLIENT && cfg.has_tun &&
	    cfg.tun.addr == 0xac1f0009 && strcmp(cfg.name, "home") == 0 &&
	    cfg.debug == 1, "client options stored");
	CHECK(cfg.route == 1000, "--route is clamped to 1000 as Candy does");
	CHECK(cfg.mtu == 1400 && strcmp(cfg.state_dir, "/var/lib/candy") == 0,
	    "defaults: mtu 1400, state in /var/lib/candy");
}

static const struct {
	const char *opt, *value, *why;
} bad_values[] = {
	{ "--mode", "relay", "not client or server" },
	{ "--dhcp", "10.0.0.0/33", "prefix" },
	{ "--dhcp", "10.0.0/24", "" },
	{ "--dhcp", "10.0.0.0/31", "prefix must be 1 to 30" },
	{ "--tun", "10.0.0.0/24", "not a host address" },
	{ "--mtu", "abc", "not a number" },
	{ "--mtu", "100", "must be 576 to 9000" },
	{ "--port", "70000", "must be 0 to 65535" },
	{ "--port", "-1", "must be 0 to 65535" },
	{ "--discovery", "1x", "not a number" },
	{ "--websocket", "http://x", "not a ws:// or wss:// URI" },
	{ "--stun", "turn://x", "not a stun://" },
	{ "--localhost", "1.2.3.256", "not an IPv4 address" },
	{ "--name", "a/b", "only letters" },
	{ "--name", "waytoolongname", "longer than 9" },
	{ "--pin", "zz", "SHA-256" },
	{ "--sdwan", "1.2.3.4/32,nonsense,1.2.3.4", "" },
};

static void test_config_bad(void)
{
	size_t i;

	for (i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
		char name[700], quoted[128];
		int r = load("-m", "client", "-w", "ws://h",
		    bad_values[i].opt, bad_values[i].value, NULL);

		snprintf(quoted, sizeof(quoted), "`%s'", bad_values[i].value);
		snprintf(name, sizeof(name), "%s %s refused: %s",
		    bad_values[i].opt, bad_values[i].value, err);
		CHECK(r < 0 && strstr(err, bad_values[i].opt) != NULL &&
		    strstr(err, quoted) != NULL &&
		    strstr(err, bad_values[i].why) != NULL, name);
	}
	CHECK(load("-m", "client", "-w", "ws://h", "--bogus", NULL) < 0 &&
	    strstr(err, "--bogus") != NULL, "unknown option refused");
	CHECK(load("-m", "client", "-w", NULL) < 0 &&
	    strstr(err, "needs a value") != NULL, "missing value refused");
	CHECK(load("-w", "ws://h", NULL) < 0 && strstr(err, "--mode") != NULL,
	    "--mode is required");
	CHECK(load("-m", "server", "-w", "wss://0.0.0.0:443", NULL) < 0 &&
	    strstr(err, "--cert") != NULL, "wss server needs --cert/--key");
	CHECK(load("-m", "client", "-w", "ws://h", "--debug=yes", NULL) < 0,
	    "a flag takes no value on the command line");
	CHECK(load_quiet("--help") == 1, "--help prints and exits 0");
	CHECK(load_quiet("-v") == 1, "--version prints and exits 0");
	test_config_check();
}

static void test_config_file(void)
{
	char path[] = "/tmp/candy-cfg-XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");

	fprintf(f, "# a Candy config file\n"
	    "mode = \"client\"\n"
	    "websocket = 'ws://10.0.0.1:80/net#1'   # comment after\n"
	    "password = \"p#w\"\n"
	    "\n  stun=stun://10.0.0.2\n"
	    "debug = true\n"
	    "mtu = 1300\n"
	    "restart = 1\n");
	fclose(f);
	CHECK(load("-c", path, "--mtu", "1280", NULL) == 0,
	    "config file loads (unknown Candy keys are ignored)");
	CHECK(strcmp(cfg.websocket, "ws://10.0.0.1:80/net#1") == 0 &&
	    strcmp(cfg.password, "p#w") == 0,
	    "quoted values keep #; comments after values are dropped");
	CHECK(strcmp(cfg.stun, "stun://10.0.0.2") == 0 && cfg.debug == 1,
	    "unquoted values and flags from the file");
	CHECK(cfg.mtu == 1280, "the command line wins over the file");
	f = fopen(path, "w");
	fprintf(f, "mode = client\nwebsocket = ws://h\nmtu = 12\n");
	fclose(f);
	CHECK(load("-c", path, NULL) < 0 && strstr(err, ":3:") != NULL &&
	    strstr(err, "--mtu `12'") != NULL,
	    "a bad value in the file names the line and the option");
	unlink(path);
	CHECK(load("-c", path, NULL) < 0 && strstr(err, "--config") != NULL,
	    "an unreadable config file is refused");
}

void test_config(void)
{
	test_config_good();
	test_config_bad();
	test_config_file();
}
