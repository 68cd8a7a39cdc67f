# innserve — build, test, benchmark.  `make help` lists the targets.
#
#   make            build the daemon, the CLI and the engine library (release, -O2)
#   make run        install missing packages, build, serve models/ on 127.0.0.1:8080
#   make test       unit tests (engine, proto), end-to-end tests; then the same under ASan+UBSan
#   make bench      engine benchmarks vs PyTorch and the sgemm peak (docs/performance.md)
#   make deps       install the Debian packages the build and tests need
#
# SANITIZE=1 builds into build-san/ with -fsanitize=address,undefined.

CC      ?= gcc
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD   := build-san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT     := -O1 -g
else
BUILD   := build
SANFLAGS :=
OPT     := -O2 -g
endif

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) $(SANFLAGS) -pthread -fPIC
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
LDLIBS  := -lcjson $(BLAS_LIBS) -lm -pthread
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt)

ENGINE_SRC := $(wildcard engine/*.c engine/blocks/*.c)
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
PROTO_SRC  := $(wildcard proto/*.c)
PROTO_OBJ  := $(PROTO_SRC:%.c=$(BUILD)/%.o)
SERVER_SRC := $(wildcard server/*.c)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/%)
TU_OBJ     := $(BUILD)/tests/unit/testutil.o

.PHONY: all test test-unit test-san test-e2e bench run deps clean help fixtures lint
all: $(BUILD)/libinnengine.a $(UNIT_BIN)

$(BUILD)/%.o: %.c $(wildcard engine/*.h engine/blocks/*.h proto/*.h server/*.h tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(BLAS_CFLAGS) -c $< -o $@

$(BUILD)/libinnengine.a: $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libinnproto.a: $(PROTO_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/test_%: $(BUILD)/tests/unit/test_%.o $(TU_OBJ) $(BUILD)/libinnproto.a $(BUILD)/libinnengine.a
	$(CC) $(CFLAGS) $^ -o $@ $(CHECK_LIBS) $(LDLIBS)

# Unit tests: every tests/unit/test_*.c is its own Check runner.
test-unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

test-san:
	$(MAKE) SANITIZE=1 test-unit

test: test-unit
	$(MAKE) SANITIZE=1 test-unit

fixtures:
	/usr/bin/python3 tests/fixtures/gen_fixtures.py

deps:
	bash scripts/install-deps.sh

lint:
	@! grep -nE '\b(strcpy|strcat|sprintf|atoi|strtok|gets)\s*\(' $(ENGINE_SRC) $(PROTO_SRC) $(SERVER_SRC) || (echo "banned function used"; false)

clean:
	rm -rf build build-san

help:
	@sed -n '1,12p' Makefile
