# ringcount — build, test, run.  `make` builds build/ringcount and build/ringbench.
# Variables: BUILD (output dir), SAN=1 (ASan+UBSan build), WERROR=1 (CI), PREFIX/DESTDIR (install).

BUILD   ?= build
CC      ?= gcc
PREFIX  ?= /usr/local
SAN     ?=
WERROR  ?= $(if $(CI),1,)

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
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
LDLIBS  := -luring -lck -lpq -pthread

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

.PHONY: all deps run test check unit integ clean install bench tests-bin
all: $(BUILD)/ringcount $(BUILD)/ringbench

$(BUILD)/obj/%.o: %.c
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
	@tools/run-tests.sh build build/asan

# Quick loop for development: the normal build only.
check: tests-bin
	@tools/run-tests.sh build

run: deps all
	@tools/run-local.sh

bench: all
	@tools/bench.sh

install: all
	install -D -m 0755 $(BUILD)/ringcount $(DESTDIR)$(PREFIX)/bin/ringcount
	install -D -m 0755 $(BUILD)/ringbench $(DESTDIR)$(PREFIX)/bin/ringbench
	install -D -m 0755 tools/tune $(DESTDIR)$(PREFIX)/bin/ringcount-tune
	install -D -m 0644 deploy/ringcount.service $(DESTDIR)/etc/systemd/system/ringcount.service
	install -D -m 0644 deploy/ringcount.env $(DESTDIR)/etc/default/ringcount
	install -D -m 0644 sysctl.conf $(DESTDIR)/etc/sysctl.d/90-ringcount.conf

clean:
	rm -rf build bench-results

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
