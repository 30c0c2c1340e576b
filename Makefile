# ringcount — build, test, run.  `make` builds build/ringcount and build/ringbench.
# Variables: BUILD (output dir), SAN=1 (ASan+UBSan build), WERROR=1 (CI), PREFIX/DESTDIR (install).

BUILD   ?= build
CC      ?= gcc
PREFIX  ?= /usr/local
SAN     ?=
WERROR  ?= $(if $(CI),1,)

WARN    := -Wall -Wextra -Wconversion -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
           -Wno-missing-field-initializers
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -D_GNU_SOURCE -pthread $(WARN) -Isrc -Iuring -I/usr/include/postgresql -MMD -MP
ifeq ($(WERROR),1)
CFLAGS  += -Werror
endif
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
# Hardening (OpenSSF compiler options guide; gcc 12 has no -fstrict-flex-arrays=3): stack
# protector, stack-clash probes, CET instrumentation (endbr64; Debian 12's crt files carry no CET
# note, so the binary is not marked), PIE, full RELRO, non-executable stack, and fortified libc
# calls (_FORTIFY_SOURCE=3 needs -O; left out under ASan, whose interceptors replace them).
# Checked by tests/integ/test_hardening.c.
CFLAGS  += -fstack-protector-strong -fstack-clash-protection -fcf-protection=full -fPIE
ifneq ($(SAN),1)
CFLAGS  += -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3
endif
LDFLAGS += -pie -Wl,-z,relro,-z,now -Wl,-z,noexecstack
LDLIBS  := -luring -lck -lpq -pthread
# Objects depend on the flags they were built with, so changing CFLAGS/LDFLAGS (or SAN) rebuilds.
# `make install-files` alone builds nothing, so it leaves the stamp of $(BUILD) alone (the
# install test runs it on the ASan build without SAN=1).
FLAGS_STAMP := $(BUILD)/.flags
ifneq ($(MAKECMDGOALS),install-files)
$(shell mkdir -p $(BUILD) && echo '$(CC) $(CFLAGS) $(LDFLAGS)' | cmp -s - $(FLAGS_STAMP) || \
        echo '$(CC) $(CFLAGS) $(LDFLAGS)' > $(FLAGS_STAMP))
endif

APP_SRC    := $(filter-out src/main.c,$(wildcard src/*.c))
URING_SRC  := $(filter-out uring/bench%.c,$(wildcard uring/*.c))
BENCH_SRC  := $(wildcard tools/*.c) $(wildcard uring/bench*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
INTEG_SRC  := $(wildcard tests/integ/test_*.c)
INTEG_LIB  := $(filter-out tests/integ/test_%.c,$(wildcard tests/integ/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
APP_LIB    := $(BUILD)/libapp.a
UNIT_BIN   := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRC))
INTEG_BIN  := $(patsubst tests/integ/%.c,$(BUILD)/tests/integ/%,$(INTEG_SRC))

.PHONY: all deps run test check unit integ clean install install-files bench tests-bin
all: $(BUILD)/ringcount $(BUILD)/ringbench

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(APP_LIB): $(call obj,$(APP_SRC) $(URING_SRC))
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/ringcount: $(call obj,src/main.c) $(APP_LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/ringbench: $(call obj,$(BENCH_SRC)) $(APP_LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS) -lm

$(BUILD)/tests/unit/%: $(call obj,tests/unit/%.c) $(APP_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS) -lcriterion -lm

$(BUILD)/tests/integ/%: $(call obj,tests/integ/%.c) $(call obj,$(INTEG_LIB)) $(APP_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS) -lcriterion -lm

tests-bin: all $(UNIT_BIN) $(INTEG_BIN)

deps:
	@tools/deps.sh

# Every test, in the normal build and again under ASan+UBSan; prints "N passed, N failed".
test: deps
	@$(MAKE) --no-print-directory tests-bin
	@$(MAKE) --no-print-directory tests-bin BUILD=build/asan SAN=1
	@$(MAKE) --no-print-directory fuzz-bin
	@FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SMOKE_SECONDS=$(FUZZ_SMOKE_SECONDS) tools/run-tests.sh build build/asan

# Quick loop for development: the normal build only.
check: tests-bin
	@tools/run-tests.sh build

run: deps all
	@tools/run-local.sh

bench: all
	@tools/bench.sh

# `make install [PREFIX=/usr/local] [DESTDIR=]`: binaries in PREFIX/bin; the unit, with PREFIX
# substituted into ExecStart, in /etc/systemd/system; the environment file (0600: it may hold
# the database password) as /etc/default/ringcount and the live settings (0644) as
# /etc/ringcount/ringcount.conf — both kept if they exist (like nginx.conf), fresh copies in
# PREFIX/share/ringcount; sysctl.conf in /etc/sysctl.d; the Prometheus config, alert rules,
# Grafana dashboard and bootstrap SQL in PREFIX/share/ringcount.
# `make install-files` installs what $(BUILD) holds without building (packaging, tests).
SHARE := $(DESTDIR)$(PREFIX)/share/ringcount
install: all
	@$(MAKE) --no-print-directory install-files
install-files:
	install -D -m 0755 $(BUILD)/ringcount $(DESTDIR)$(PREFIX)/bin/ringcount
	install -D -m 0755 $(BUILD)/ringbench $(DESTDIR)$(PREFIX)/bin/ringbench
	install -D -m 0755 tools/tune $(DESTDIR)$(PREFIX)/bin/ringcount-tune
	install -d -m 0755 $(DESTDIR)/etc/systemd/system $(SHARE)
	sed 's|/usr/local|$(PREFIX)|g' deploy/ringcount.service \
	  > $(DESTDIR)/etc/systemd/system/ringcount.service.tmp
	chmod 0644 $(DESTDIR)/etc/systemd/system/ringcount.service.tmp
	mv -f $(DESTDIR)/etc/systemd/system/ringcount.service.tmp $(DESTDIR)/etc/systemd/system/ringcount.service
	install -m 0600 deploy/ringcount.env $(SHARE)/ringcount.env
	install -m 0644 deploy/ringcount.conf $(SHARE)/ringcount.conf
	@if [ -e $(DESTDIR)/etc/default/ringcount ]; then \
	  chmod 0600 $(DESTDIR)/etc/default/ringcount; \
	  echo "kept $(DESTDIR)/etc/default/ringcount (mode 0600; the new one is $(SHARE)/ringcount.env)"; \
	else install -D -m 0600 deploy/ringcount.env $(DESTDIR)/etc/default/ringcount; fi
	@if [ -e $(DESTDIR)/etc/ringcount/ringcount.conf ]; then \
	  echo "kept $(DESTDIR)/etc/ringcount/ringcount.conf (the new one is $(SHARE)/ringcount.conf)"; \
	else install -D -m 0644 deploy/ringcount.conf $(DESTDIR)/etc/ringcount/ringcount.conf; fi
	install -D -m 0644 sysctl.conf $(DESTDIR)/etc/sysctl.d/90-ringcount.conf
	install -m 0644 deploy/prometheus.yml deploy/ringcount-alerts.yml deploy/grafana-dashboard.json \
	  deploy/postgres-bootstrap.sql $(SHARE)/

# ---- Fuzzing (SPEC §3 limits, parsers): libFuzzer targets fuzz/fuzz_*.c, built by clang with ASan+UBSan into
# build/fuzz. `make fuzz FUZZ_SECONDS=N` runs each target N s (default 60) and fails on any crash;
# `make test` runs each FUZZ_SMOKE_SECONDS (2 s) from its seeds. `make fuzz-seeds` re-harvests
# fuzz/corpus/ from the unit-test case tables (fuzz/seeds.c).
FUZZ_CC            ?= clang-14
FUZZ_BUILD         ?= build/fuzz
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 2
FUZZ_CFLAGS := -std=gnu11 -D_GNU_SOURCE -pthread -O1 -g -fno-omit-frame-pointer \
               -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all $(WARN) \
               -Wno-gnu-variable-sized-type-not-at-end -Isrc -I/usr/include/postgresql -MMD -MP
FUZZ_TARGETS := $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_BIN     := $(addprefix $(FUZZ_BUILD)/fuzz_,$(FUZZ_TARGETS))
FUZZ_LIB     := $(FUZZ_BUILD)/libapp.a
.PHONY: fuzz fuzz-bin fuzz-seeds
.SECONDARY: $(patsubst %,$(FUZZ_BUILD)/obj/fuzz/fuzz_%.o,$(FUZZ_TARGETS))

$(FUZZ_BUILD)/obj/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/obj/fuzz/%.o: fuzz/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(if $(filter 1,$(WERROR)),-Werror) -c $< -o $@

$(FUZZ_LIB): $(patsubst src/%.c,$(FUZZ_BUILD)/obj/src/%.o,$(APP_SRC))
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/fuzz/fuzz_%.o $(FUZZ_LIB)
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined $^ -o $@ -lck -lpq -lm -pthread

fuzz-bin: $(FUZZ_BIN)

fuzz: deps fuzz-bin
	@fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-seeds: $(APP_LIB)
	@mkdir -p $(FUZZ_BUILD)
	@for t in $(FUZZ_TARGETS); do \
	  T=$$(echo $$t | tr a-z A-Z); mkdir -p fuzz/corpus/$$t; \
	  $(CC) -w -std=gnu11 -D_GNU_SOURCE -Ifuzz/seedgen -Isrc -DSEED_$$T fuzz/seeds.c $(APP_LIB) \
	    -o $(FUZZ_BUILD)/seeds_$$t $(LDLIBS) -lm && $(FUZZ_BUILD)/seeds_$$t fuzz/corpus/$$t || exit 1; \
	done

clean:
	rm -rf build bench-results

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
