# candy: a Candy VPN server and client.  See README and candy.8.
PREFIX ?= /usr/local
MANDIR ?= $(PREFIX)/share/man
DESTDIR ?=
# make install INSTALL_SERVICE=1 also installs contrib/: the systemd units
# in SYSTEMDDIR, the OpenRC script as OPENRCDIR/candy, the sample
# configuration as SYSCONFDIR/candy.d/candy.conf.sample (never a live
# configuration: the units read SYSCONFDIR/candy.conf and
# SYSCONFDIR/candy.d/NAME.conf, written by the operator).  The paths in
# the files follow PREFIX and SYSCONFDIR.
INSTALL_SERVICE ?=
SYSCONFDIR ?= /etc
SYSTEMDDIR ?= $(PREFIX)/lib/systemd/system
OPENRCDIR ?= $(SYSCONFDIR)/init.d
CC ?= cc
CFLAGS ?= -O2 -g
WARN = -std=c99 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wno-unused-parameter
# 64-bit time_t and off_t on 32-bit glibc too (timestamps past 2038).
CPPFLAGS += -D_DEFAULT_SOURCE -D_TIME_BITS=64 -D_FILE_OFFSET_BITS=64
# BearSSL is linked statically when the compiler finds libbearssl.a (as
# Debian's libbearssl-dev has it): only the objects candy uses come in, and
# the shared library's mappings and relocations, some 300 KiB of a
# client's resident memory, are gone.  Else, or with BEARSSL=-lbearssl,
# the shared library.
BEARSSL = $$(a=$$($(CC) -print-file-name=libbearssl.a); \
	[ -f "$$a" ] && echo "$$a" || echo -lbearssl)
LDLIBS = $(BEARSSL)

# make static: one musl binary.  Debian's libbearssl.a was built with
# _FORTIFY_SOURCE, so the headers come through -idirafter (not -I, which
# would drag in glibc's) and tls.c supplies the __*_chk functions.  The
# kernel's headers (linux/, asm/) come the same way for tun.c.
MUSLCC ?= musl-gcc
BEARSSL_A ?= /usr/lib/$$(gcc -dumpmachine)/libbearssl.a

SRCS = candy.c tls.c ws.c tun.c stun.c route.c peer.c status.c
OBJS = $(SRCS:.c=.o)
TSRCS = test/unit.c test/t_msg.c test/t_ws.c test/t_config.c \
	test/t_route.c test/t_tls.c test/t_stun.c test/t_peer.c \
	test/t_relay.c test/t_client.c test/t_server.c test/t_offload.c \
	test/t_status.c

all: candy

candy: $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS)

# libbearssl.a's checked copies (__memcpy_chk...) come from tls.c, not
# from a page of glibc kept resident for them alone (tls.c; issue 11).
SHIM = -DCANDY_FORTIFY_SHIM
# No unwind tables (.eh_frame) in our objects: C without exceptions never
# reads them, and they were 19 KiB of the read-only segment every client
# maps (issue 11).  Debuggers and perf read -g's .debug_frame instead.
UNWIND = -fno-asynchronous-unwind-tables

.c.o:
	$(CC) $(CPPFLAGS) $(SHIM) $(CFLAGS) $(UNWIND) $(WARN) -c -o $@ $<

$(OBJS): candy.h

static: candy-static
candy-static: $(SRCS) candy.h
	$(MUSLCC) -static -Os -std=c99 -D_DEFAULT_SOURCE -DCANDY_FORTIFY_SHIM \
	    -idirafter /usr/include -idirafter /usr/include/$$(gcc -dumpmachine) \
	    -o $@ $(SRCS) $(BEARSSL_A)
	strip $@

# Unit tests link everything but main().
test/candy-nomain.o: candy.c candy.h
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -DCANDY_NO_MAIN -c -o $@ candy.c

test/unit: $(TSRCS) test/test.h test/candy-nomain.o $(OBJS)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -I. -o $@ $(TSRCS) \
	    test/candy-nomain.o $(filter-out candy.o,$(OBJS)) $(LDLIBS)

# make bench's TLS numbers (test/bench-tls.sh).
test/bench_tls: test/bench_tls.c test/candy-nomain.o $(OBJS)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -I. -o $@ test/bench_tls.c \
	    test/candy-nomain.o $(filter-out candy.o,$(OBJS)) $(LDLIBS)

# make bench-scale and make soak: many sessions from one process.
test/loadgen: test/loadgen.c test/candy-nomain.o $(OBJS)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -I. -o $@ test/loadgen.c \
	    test/candy-nomain.o $(filter-out candy.o,$(OBJS)) $(LDLIBS)

# make fuzz: libFuzzer with ASan and UBSan on every parser of network input
# (test/fuzz.c), FUZZ_SECONDS per target, seeds from the captured vectors in a
# temporary corpus (test/fuzz.sh).  A crash's input is kept in
# test/fuzz-TARGET-* and printed in hex.  CI runs it for 20 s a target.
FUZZ_SECONDS = 30
FUZZ_TARGETS = ws_frame ws_request ws_server ws_client stun peer server \
	session config addr
FUZZ_CC = clang -g -O1 -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=all

test/fuzz: test/fuzz.c $(SRCS) candy.h
	$(FUZZ_CC) $(CPPFLAGS) $(WARN) -DCANDY_NO_MAIN -I. -o $@ \
	    test/fuzz.c $(SRCS) $(LDLIBS)

fuzz: test/fuzz
	sh test/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

deps:
	sh test/deps.sh

# make test: install what is missing, build, run every test (test/run).
# SANITIZE=1: candy and the unit tests built by clang with AddressSanitizer
# and UndefinedBehaviorSanitizer (candy-san, test/unit-san), the whole
# suite run on them; any finding fails the run.  CI=true (as CI sets it):
# test/run also runs make cross, make fuzz, the sanitizer suite and the
# static binary's integration run, each counted (README; test/run).
SANITIZE ?=
CI ?=
# --no-print-directory: test/run's count stays the last line.
test: deps
	if [ -n "$(SANITIZE)" ] && [ "$(SANITIZE)" != 0 ]; then \
	    $(MAKE) --no-print-directory check-san; \
	else $(MAKE) --no-print-directory check; fi

# The same without make deps.  candy-static is built here, once, so that
# the runs in parallel under CI=true never build it at the same time.
check: all test/unit test/loadgen
	if command -v $(MUSLCC) >/dev/null; then \
	    $(MAKE) --no-print-directory static; fi
	CANDY_CI=$(CI) sh test/run

SAN_CC = clang
SAN_FLAGS = -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=all
# Any finding ends the program with status 1 and its report on stderr;
# test/lib.sh sends the daemons' reports to files it checks.
SAN_ENV = ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:exitcode=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=1

candy-san: $(SRCS) candy.h
	$(SAN_CC) $(SAN_FLAGS) $(CPPFLAGS) $(WARN) -o $@ $(SRCS) $(LDLIBS)

test/unit-san: $(TSRCS) test/test.h $(SRCS) candy.h
	$(SAN_CC) $(SAN_FLAGS) $(CPPFLAGS) $(WARN) -DCANDY_NO_MAIN -I. -o $@ \
	    $(TSRCS) $(SRCS) $(LDLIBS)

.PHONY: check check-san
check-san: candy-san test/unit-san test/loadgen
	$(SAN_ENV) CANDY_CI= CANDY_SANITIZE=1 CANDY=$(CURDIR)/candy-san \
	    CANDY_UNIT=./test/unit-san sh test/run

# make conformance PEER=/path/to/other/candy: the interoperability
# scenarios (test/it-conformance.sh) with our binary on one side and PEER,
# another Candy 6.x program, on the other.  Without PEER, against our own
# binary in "foreign" mode, as make test does.  Slow peers get time: the
# run's limit is an hour, each wait is bounded on its own.
PEER ?=
conformance: deps
	$(MAKE) all
	PEER="$(PEER)" TEST_TIMEOUT=3600 sh test/run it-conformance

demo: deps
	$(MAKE) all
	sh test/demo.sh

# make bench's peers (test/bench-peers.sh), from Debian.
PEER_PKGS = wireguard-go wireguard-tools openvpn tinc iperf3
bench-deps:
	sh test/deps.sh $(PEER_PKGS)

bench: deps bench-deps
	$(MAKE) all test/bench_tls test/loadgen
	if command -v $(MUSLCC) >/dev/null; then $(MAKE) static; fi
	sh test/bench.sh

# The client memory section alone (test/bench-rss.sh): VmRSS of ./candy
# and ./candy-static idle and under load, relay ws and wss, P2P.
bench-rss: deps
	$(MAKE) all
	if command -v $(MUSLCC) >/dev/null; then $(MAKE) static; fi
	sh test/bench-rss.sh

# The peers section alone: candy, wireguard-go, OpenVPN and tinc side by
# side; BENCH_ROUNDS (3), BENCH_SECONDS (10); table in bench/results.md.
bench-peers: deps bench-deps
	$(MAKE) all
	sh test/bench-peers.sh

# The scale section alone: SCALE_N (ws), SCALE_TLS_N (wss), SCALE_SECONDS.
bench-scale: deps
	$(MAKE) all test/loadgen
	sh test/bench-scale.sh

# Long soak and fault runs (test/it-soak.sh at full size; make test runs
# it short).  Figures in README.
soak: deps
	$(MAKE) all test/loadgen
	SOAK=long sh test/it-soak.sh

# make cross: candy and test/unit built for each Debian architecture in
# CROSS (big-endian s390x, 32-bit i386, arm64, 32-bit armhf), the tests
# run under qemu-user (test/cross.sh).
CROSS = s390x i386 arm64 armhf
cross:
	SRCS="$(SRCS)" TSRCS="$(TSRCS)" CPPFLAGS="$(CPPFLAGS)" \
	    CFLAGS="$(CFLAGS)" WARN="$(WARN)" sh test/cross.sh $(CROSS)
.PHONY: cross

install: candy
	mkdir -p $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(MANDIR)/man8
	cp candy $(DESTDIR)$(PREFIX)/sbin/candy
	chmod 755 $(DESTDIR)$(PREFIX)/sbin/candy
	cp candy.8 $(DESTDIR)$(MANDIR)/man8/candy.8
	chmod 644 $(DESTDIR)$(MANDIR)/man8/candy.8
	if [ "$(INSTALL_SERVICE)" = 1 ]; then $(MAKE) install-service; fi

# The files name the binary and the configuration by their default paths;
# sed puts in this installation's.
CONTRIB_SED = sed -e 's|/usr/local/sbin/candy|$(PREFIX)/sbin/candy|g' \
	-e 's|/etc/candy|$(SYSCONFDIR)/candy|g'
install-service:
	mkdir -p $(DESTDIR)$(SYSTEMDDIR) $(DESTDIR)$(OPENRCDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/candy.d
	for u in candy.service candy@.service; do \
	    $(CONTRIB_SED) contrib/$$u >$(DESTDIR)$(SYSTEMDDIR)/$$u && \
	    chmod 644 $(DESTDIR)$(SYSTEMDDIR)/$$u || exit 1; \
	done
	$(CONTRIB_SED) contrib/candy.openrc >$(DESTDIR)$(OPENRCDIR)/candy
	chmod 755 $(DESTDIR)$(OPENRCDIR)/candy
	$(CONTRIB_SED) contrib/candy.cfg \
	    >$(DESTDIR)$(SYSCONFDIR)/candy.d/candy.conf.sample
	chmod 644 $(DESTDIR)$(SYSCONFDIR)/candy.d/candy.conf.sample

# Service files only with INSTALL_SERVICE=1, as they were installed: a
# distribution's /etc/init.d/candy of the existing Candy is not ours.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/candy $(DESTDIR)$(MANDIR)/man8/candy.8
	if [ "$(INSTALL_SERVICE)" = 1 ]; then \
	    rm -f $(DESTDIR)$(SYSTEMDDIR)/candy.service \
	    $(DESTDIR)$(SYSTEMDDIR)/candy@.service \
	    $(DESTDIR)$(OPENRCDIR)/candy \
	    $(DESTDIR)$(SYSCONFDIR)/candy.d/candy.conf.sample; \
	    rmdir $(DESTDIR)$(SYSCONFDIR)/candy.d 2>/dev/null || true; \
	fi

clean:
	rm -f candy candy-static $(OBJS) test/unit test/candy-nomain.o \
	    test/bench_tls test/loadgen test/fuzz candy-san test/unit-san
	rm -rf test/cross-*

.PHONY: all static test conformance demo bench bench-deps bench-peers \
	bench-rss bench-scale soak fuzz deps \
	install install-service uninstall clean
