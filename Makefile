# dstack services in C: module, daemon, CLI and their tests.
#
#   ./configure && make          build everything into build/
#   make test                    unit tests, fuzz smoke, prove t/*.t
#   make test SANITIZE=1         the same with ASan+UBSan (build/san/)
#   make check                   make test, then make test SANITIZE=1
#   make bench                   benchmarks against plain nginx
#   make bench-http2, bench-conns  HTTP/2; 12,000 held connections
#   make bench-shared            shared mode (PostgreSQL, 2 gateways)
#   make demo                    the README's demo
#   make console                 the web console only (build/console)

SHELL := /bin/bash

-include build/config.mk
ifeq ($(CONFIGURED),)
$(error run ./configure first)
endif

SANITIZE ?= 0
ifeq ($(SANITIZE),1)
B := build/san
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
             -fno-sanitize-recover=undefined
else
B := build
SAN_FLAGS :=
endif

CC ?= cc
# libpq, for controld only (a build/config.mk from before it lacks them)
PQ_CFLAGS ?= $(shell pkg-config --cflags libpq)
PQ_LIBS ?= $(shell pkg-config --libs libpq)
CFLAGS ?= -O2 -g
DS_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -Icommon $(SAN_FLAGS) $(CFLAGS)
DS_LDFLAGS := $(SAN_FLAGS) $(LDFLAGS)

COMMON_SRCS := $(wildcard common/*.c)
COMMON_HDRS := $(wildcard common/*.h)
COMMON_OBJS := $(COMMON_SRCS:common/%.c=$(B)/common/%.o)
MODULE_SRCS := $(wildcard ngx_dstack_module/*.c ngx_dstack_module/*.h)

MODULE := $(B)/ngx_http_dstack_module.so
SEED := $(B)/dstack-seed
CONTROLD := $(B)/dstack-controld
CLI := $(B)/dstackctl
CONTROLD_SRCS := $(wildcard controld/*.c)
CLI_SRCS := $(wildcard cli/*.c)
COMMON_LIBS := -lyaml -lcjson -llmdb
UNIT_TESTS := $(patsubst t/unit/%.c,$(B)/t/%,$(wildcard t/unit/test_*.c))
FUZZ_TARGETS := $(patsubst t/fuzz/%.c,$(B)/fuzz/%,$(wildcard t/fuzz/*.c))
ifneq ($(HAVE_CLANG_FUZZER),1)
FUZZ_TARGETS :=
endif

PROGRAMS := $(MODULE) $(SEED)
ifneq ($(CONTROLD_SRCS),)
PROGRAMS += $(CONTROLD)
endif
ifneq ($(CLI_SRCS),)
PROGRAMS += $(CLI)
endif

.PHONY: all test unit fuzz-smoke prove check bench demo clean distclean console

all: $(PROGRAMS) $(CONSOLE) $(UNIT_TESTS) $(FUZZ_TARGETS)

# ---- common ----------------------------------------------------------------

$(B)/common/%.o: common/%.c $(COMMON_HDRS)
	@mkdir -p $(@D)
	$(CC) $(DS_CFLAGS) -fPIC -c $< -o $@

$(B)/libdscommon.a: $(COMMON_OBJS)
	ar rcs $@ $^

# ---- the nginx module --------------------------------------------------------
#
# nginx's configure runs once per build dir, and again only when the
# module's config or our configure output changes; after that nginx's own
# Makefile tracks the sources.

NGX_CC_OPT := -O2 -g -fPIC -I$(CURDIR)/common $(SAN_FLAGS)

ifeq ($(NGINX_KIND),devtree)
$(B)/nginx/Makefile: ngx_dstack_module/config build/config.mk
	@mkdir -p $(B)/nginx
	cd $(NGINX_SRC) && . ./conf_flags && \
	./configure --with-cc-opt="$(NGX_CC_OPT)" \
	    --with-ld-opt="$(SAN_FLAGS)" "$${NGX_CONF_FLAGS[@]}" \
	    --add-dynamic-module=$(CURDIR)/ngx_dstack_module \
	    --builddir=$(CURDIR)/$(B)/nginx > $(CURDIR)/$(B)/nginx/configure.log
NGX_TARGET := modules
else
$(B)/nginx/Makefile: ngx_dstack_module/config build/config.mk
	@mkdir -p $(B)/nginx
	cd $(NGINX_SRC) && ./configure --with-compat --with-threads \
	    --with-http_ssl_module --with-http_v2_module \
	    --with-http_stub_status_module --with-http_auth_request_module \
	    --with-cc-opt="$(NGX_CC_OPT)" --with-ld-opt="$(SAN_FLAGS)" \
	    --add-dynamic-module=$(CURDIR)/ngx_dstack_module \
	    --builddir=$(CURDIR)/$(B)/nginx > $(CURDIR)/$(B)/nginx/configure.log
NGX_TARGET := build
endif

$(MODULE): $(B)/nginx/Makefile $(MODULE_SRCS) $(COMMON_SRCS) $(COMMON_HDRS)
	$(MAKE) -s -f $(CURDIR)/$(B)/nginx/Makefile -C $(NGINX_SRC) $(NGX_TARGET)
	@# a new inode: a running nginx keeps the mapping it loaded
	cp $(B)/nginx/ngx_http_dstack_module.so $@.tmp && mv -f $@.tmp $@

# ---- daemon and CLI ----------------------------------------------------------

$(CONTROLD): $(CONTROLD_SRCS) $(wildcard controld/*.h) $(B)/libdscommon.a \
            $(B)/agent_sh.c
	$(CC) $(DS_CFLAGS) -Icontrold $(PQ_CFLAGS) $(CONTROLD_SRCS) \
	    $(B)/agent_sh.c $(B)/libdscommon.a -o $@ \
	    $(DS_LDFLAGS) -lmicrohttpd -lcurl $(PQ_LIBS) $(COMMON_LIBS) \
	    -lcrypto -lpthread

# the agent controld uploads to the hosts of fleets, as a C string
$(B)/agent_sh.c: controld/agent.sh
	@mkdir -p $(@D)
	sh -n $<
	{ echo '#include <stddef.h>'; \
	  echo 'const char agent_sh[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$$/\\n"/' $<; \
	  echo ';'; \
	  echo 'const size_t agent_sh_len = sizeof(agent_sh) - 1;'; } > $@.tmp
	mv $@.tmp $@

$(CLI): $(CLI_SRCS) $(wildcard cli/*.h) $(B)/libdscommon.a
	$(CC) $(DS_CFLAGS) -Icli $(CLI_SRCS) $(B)/libdscommon.a -o $@ \
	    $(DS_LDFLAGS) -lcurl $(COMMON_LIBS)

# ---- the web console ---------------------------------------------------------
#
# Static files for nginx (conf/nginx/dstack-console.conf), bundled from
# console/src by esbuild with the npm packages of console/package-lock.json
# (npm ci into build/console-npm); one build whatever SANITIZE says.

CONSOLE := build/console/index.html
CONSOLE_NPM := build/console-npm/node_modules/.package-lock.json
CONSOLE_SRCS := $(wildcard console/src/*) console/index.html console/build.mjs

$(CONSOLE_NPM): console/package.json console/package-lock.json
	mkdir -p build/console-npm
	cp console/package.json console/package-lock.json build/console-npm/
	cd build/console-npm && npm ci --no-audit --no-fund --silent

$(CONSOLE): $(CONSOLE_NPM) $(CONSOLE_SRCS)
	node console/build.mjs build/console-npm build/console

console: $(CONSOLE)

# ---- tools and tests ---------------------------------------------------------

$(SEED): t/lib/dstack_seed.c $(B)/libdscommon.a
	@mkdir -p $(@D)
	$(CC) $(DS_CFLAGS) $< $(B)/libdscommon.a -o $@ $(DS_LDFLAGS) $(COMMON_LIBS)

$(B)/t/test_%: t/unit/test_%.c $(B)/libdscommon.a
	@mkdir -p $(@D)
	$(CC) $(DS_CFLAGS) $< $(B)/libdscommon.a -o $@ $(DS_LDFLAGS) -lcmocka $(COMMON_LIBS)

# controld's state machine and run documents, with the files they need
# (not the daemon)
CONTROLD_UNIT_SRCS := controld/lifecycle.c controld/runs.c controld/log.c \
                      controld/util.c controld/config.c controld/rundoc.c \
                      controld/store.c controld/spec.c
$(B)/t/test_lifecycle $(B)/t/test_rundoc: $(B)/t/test_%: t/unit/test_%.c \
        $(CONTROLD_UNIT_SRCS) $(wildcard controld/*.h) $(B)/libdscommon.a
	@mkdir -p $(@D)
	$(CC) $(DS_CFLAGS) -Icontrold $< $(CONTROLD_UNIT_SRCS) \
	    $(B)/libdscommon.a -o $@ $(DS_LDFLAGS) -lcmocka $(COMMON_LIBS)

# series.c: the per-second series from stats answers the test makes up
SERIES_UNIT_SRCS := controld/series.c controld/stats.c $(CONTROLD_UNIT_SRCS)
$(B)/t/test_series: t/unit/test_series.c $(SERIES_UNIT_SRCS) \
        $(wildcard controld/*.h) $(B)/libdscommon.a
	@mkdir -p $(@D)
	$(CC) $(DS_CFLAGS) -Icontrold $< $(SERIES_UNIT_SRCS) \
	    $(B)/libdscommon.a -o $@ $(DS_LDFLAGS) -lcmocka $(COMMON_LIBS)

# offers.c is the daemon's pure matching: its test links it alone
$(B)/t/test_offers: t/unit/test_offers.c controld/offers.c controld/offers.h \
    $(B)/libdscommon.a
	@mkdir -p $(@D)
	$(CC) $(DS_CFLAGS) -Icontrold $< controld/offers.c $(B)/libdscommon.a \
	    -o $@ $(DS_LDFLAGS) -lcmocka $(COMMON_LIBS)

# stats.c: the gateways' stats client and its sums, against sockets of
# the test's own
STATS_UNIT_SRCS := controld/stats.c controld/log.c controld/util.c \
                   controld/config.c
$(B)/t/test_stats: t/unit/test_stats.c $(STATS_UNIT_SRCS) \
    $(wildcard controld/*.h) $(B)/libdscommon.a
	@mkdir -p $(@D)
	$(CC) $(DS_CFLAGS) -Icontrold $< $(STATS_UNIT_SRCS) $(B)/libdscommon.a \
	    -o $@ $(DS_LDFLAGS) -lcmocka $(COMMON_LIBS)

FUZZ_FLAGS := -std=gnu11 -g -O1 -Icommon -fsanitize=fuzzer,address,undefined
$(B)/fuzz/%: t/fuzz/%.c t/fuzz/fuzz_document.h $(COMMON_SRCS) $(COMMON_HDRS)
	@mkdir -p $(@D)
	clang $(FUZZ_FLAGS) $< $(COMMON_SRCS) -o $@ $(COMMON_LIBS)

# the API's decoders are controld's, pure (controld/api_args.c)
$(B)/fuzz/fuzz_api_body: t/fuzz/fuzz_api_body.c controld/api_args.c \
    controld/api_args.h $(COMMON_SRCS) $(COMMON_HDRS)
	@mkdir -p $(@D)
	clang $(FUZZ_FLAGS) -Icontrold $< controld/api_args.c $(COMMON_SRCS) \
	    -o $@ $(COMMON_LIBS)

FUZZ_SECONDS ?= 10

unit: $(UNIT_TESTS)
	@for t in $(UNIT_TESTS); do echo "== $$t"; $$t || exit 1; done

fuzz-smoke: $(FUZZ_TARGETS)
	@for f in $(FUZZ_TARGETS); do \
	    echo "== $$f ($(FUZZ_SECONDS) s)"; \
	    mkdir -p $(B)/fuzz/corpus-$$(basename $$f); \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 \
	        $(B)/fuzz/corpus-$$(basename $$f) \
	        $$( [ -d t/fuzz/seeds/$$(basename $$f) ] && \
	            echo t/fuzz/seeds/$$(basename $$f) ) \
	        2>$(B)/fuzz/$$(basename $$f).log \
	    || { tail -50 $(B)/fuzz/$$(basename $$f).log; exit 1; }; \
	done

PROVE ?= prove
PROVE_FLAGS ?= --timer
TESTS ?= t/*.t

# the official OpenAI SDK for t/10-openai-sdk.t (npm registry)
OPENAI_SDK := build/openai-sdk/node_modules/openai/package.json
$(OPENAI_SDK): t/openai/package.json
	mkdir -p build/openai-sdk && cp t/openai/package.json build/openai-sdk/
	npm install --prefix build/openai-sdk --no-audit --no-fund --silent

# playwright-core, which drives Debian's chromium in t/99-console.t
CONSOLE_TEST := build/console-test/node_modules/playwright-core/package.json
$(CONSOLE_TEST): t/console/package.json
	mkdir -p build/console-test && cp t/console/package.json build/console-test/
	npm install --prefix build/console-test --no-audit --no-fund --silent

prove: $(PROGRAMS) $(CONSOLE) $(OPENAI_SDK) $(CONSOLE_TEST)
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) \
	DSTACK_SANITIZE=$(SANITIZE) $(PROVE) $(PROVE_FLAGS) $(TESTS)

test: all unit fuzz-smoke prove

check:
	$(MAKE) test
	$(MAKE) test SANITIZE=1

bench: $(PROGRAMS)
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) bench/run
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) bench/openai
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) bench/affinity
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) bench/budgets
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) bench/autoscale
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) bench/tls
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) bench/container
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) bench/fleet

# HTTP/2 (~30 s) and 12,000 held connections (~2 min), apart from bench
.PHONY: bench-http2 bench-conns
bench-http2: $(PROGRAMS)
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) bench/http2
bench-conns: $(PROGRAMS)
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) bench/conns

# shared mode on a private PostgreSQL (~1 min, root), apart from bench
.PHONY: bench-shared
bench-shared: $(PROGRAMS)
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) bench/shared

demo: $(PROGRAMS) $(CONSOLE)
	DSTACK_BUILD=$(CURDIR)/$(B) DSTACK_NGINX=$(NGINX_BIN) examples/demo

clean:
	rm -rf build/common build/san build/t build/fuzz build/nginx \
	    build/*.so build/*.a build/dstack-*

distclean:
	rm -rf build

# ---- install -----------------------------------------------------------------
#
# Where Debian's nginx and systemd look, whatever PREFIX is: the module in
# nginx's module directory with a modules-available snippet and its
# modules-enabled link (as Debian's libnginx-mod-* packages have them),
# the configuration in $(sysconfdir)/dstack, the state in
# $(localstatedir)/lib/dstack.  As root and without DESTDIR it then runs
# dstack-setup (the group dstack, owners and modes of the state).

PREFIX ?= /usr/local
DESTDIR ?=
sysconfdir ?= /etc
localstatedir ?= /var
bindir ?= $(PREFIX)/bin
sbindir ?= $(PREFIX)/sbin
libdir ?= $(PREFIX)/lib
mandir ?= $(PREFIX)/share/man
NGINX_MODULES_DIR ?= /usr/lib/nginx/modules
NGINX_MODCONF_DIR ?= /usr/share/nginx/modules-available
SYSTEMD_UNIT_DIR ?= /lib/systemd/system
TMPFILES_DIR ?= /usr/lib/tmpfiles.d

MANPAGES := $(B)/man/dstackctl.1 $(B)/man/dstack-controld.8 \
            $(B)/man/controld.yml.5 $(B)/man/ngx_http_dstack_module.8

.PHONY: man install

man: $(MANPAGES)

$(B)/man/dstackctl.1: man/dstackctl.1.in man/gen-man $(CLI)
	@mkdir -p $(@D)
	man/gen-man help $< $(CLI) + > $@.tmp && mv $@.tmp $@

$(B)/man/dstack-controld.8: man/dstack-controld.8.in man/gen-man $(CONTROLD)
	@mkdir -p $(@D)
	man/gen-man help $< $(CONTROLD) > $@.tmp && mv $@.tmp $@

$(B)/man/controld.yml.5: man/controld.yml.5.in man/gen-man conf/controld.yml
	@mkdir -p $(@D)
	man/gen-man yml $< conf/controld.yml > $@.tmp && mv $@.tmp $@

$(B)/man/ngx_http_dstack_module.8: man/ngx_http_dstack_module.8.in \
        man/gen-man README.md
	@mkdir -p $(@D)
	man/gen-man table $< README.md '### Directives' > $@.tmp && \
	    mv $@.tmp $@

datadir ?= $(PREFIX)/share
consoledir ?= $(datadir)/dstack/console

install: $(MODULE) $(CONTROLD) $(CLI) $(MANPAGES) $(CONSOLE)
	install -d -m 0755 $(DESTDIR)$(NGINX_MODULES_DIR) \
	    $(DESTDIR)$(NGINX_MODCONF_DIR) \
	    $(DESTDIR)$(sysconfdir)/nginx/modules-enabled \
	    $(DESTDIR)$(sysconfdir)/nginx/sites-available \
	    $(DESTDIR)$(sbindir) $(DESTDIR)$(bindir) \
	    $(DESTDIR)$(libdir)/dstack $(DESTDIR)$(SYSTEMD_UNIT_DIR) \
	    $(DESTDIR)$(TMPFILES_DIR) \
	    $(DESTDIR)$(sysconfdir)/dstack/nginx \
	    $(DESTDIR)$(mandir)/man1 $(DESTDIR)$(mandir)/man5 \
	    $(DESTDIR)$(mandir)/man8 \
	    $(DESTDIR)$(localstatedir)/lib/dstack/replicas
	install -d -m 0750 $(DESTDIR)$(localstatedir)/lib/dstack/state
	install -m 0644 $(MODULE) $(DESTDIR)$(NGINX_MODULES_DIR)/
	echo 'load_module $(NGINX_MODULES_DIR)/ngx_http_dstack_module.so;' \
	    > $(DESTDIR)$(NGINX_MODCONF_DIR)/mod-http-dstack.conf
	chmod 0644 $(DESTDIR)$(NGINX_MODCONF_DIR)/mod-http-dstack.conf
	ln -sfn $(NGINX_MODCONF_DIR)/mod-http-dstack.conf \
	    $(DESTDIR)$(sysconfdir)/nginx/modules-enabled/50-mod-http-dstack.conf
	install -m 0755 $(CONTROLD) $(DESTDIR)$(sbindir)/
	install -m 0755 $(CLI) $(DESTDIR)$(bindir)/
	install -m 0755 conf/dstack-setup $(DESTDIR)$(libdir)/dstack/
	sed 's|/usr/sbin/dstack-controld|$(sbindir)/dstack-controld|' \
	    conf/systemd/dstack-controld.service \
	    > $(DESTDIR)$(SYSTEMD_UNIT_DIR)/dstack-controld.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/dstack-controld.service
	install -m 0644 conf/tmpfiles.d/dstack.conf $(DESTDIR)$(TMPFILES_DIR)/
	@# an edited configuration stays; the new example goes next to it
	if [ -e $(DESTDIR)$(sysconfdir)/dstack/controld.yml ]; then \
	    install -m 0640 conf/controld.yml \
	        $(DESTDIR)$(sysconfdir)/dstack/controld.yml.new; \
	else \
	    install -m 0640 conf/controld.yml $(DESTDIR)$(sysconfdir)/dstack/; \
	fi
	install -m 0644 conf/nginx/dstack-http.conf conf/nginx/dstack-api.conf \
	    conf/nginx/dstack-gateway.conf conf/nginx/dstack-proxy.conf \
	    conf/nginx/dstack-tls.conf $(DESTDIR)$(sysconfdir)/dstack/nginx/
	install -m 0644 conf/nginx/dstack-api-shared.conf \
	    $(DESTDIR)$(sysconfdir)/dstack/nginx/
	sed 's|/usr/share/dstack/console|$(consoledir)|' \
	    conf/nginx/dstack-console.conf \
	    > $(DESTDIR)$(sysconfdir)/dstack/nginx/dstack-console.conf
	chmod 0644 $(DESTDIR)$(sysconfdir)/dstack/nginx/dstack-console.conf
	rm -rf $(DESTDIR)$(consoledir)
	install -d -m 0755 $(DESTDIR)$(consoledir)/assets
	install -m 0644 build/console/index.html $(DESTDIR)$(consoledir)/
	install -m 0644 build/console/assets/* $(DESTDIR)$(consoledir)/assets/
	install -m 0644 conf/nginx/dstack-site.conf \
	    $(DESTDIR)$(sysconfdir)/nginx/sites-available/dstack
	install -m 0644 $(B)/man/dstackctl.1 $(DESTDIR)$(mandir)/man1/
	install -m 0644 $(B)/man/controld.yml.5 $(DESTDIR)$(mandir)/man5/
	install -m 0644 $(B)/man/dstack-controld.8 \
	    $(B)/man/ngx_http_dstack_module.8 $(DESTDIR)$(mandir)/man8/
	if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
	    $(DESTDIR)$(libdir)/dstack/dstack-setup -s $(localstatedir); \
	else \
	    echo "install: as root, run $(libdir)/dstack/dstack-setup" \
	         "(the group dstack, owners of $(localstatedir)/lib/dstack)"; \
	fi
