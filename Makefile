# innserve — build, test, benchmark.  `make help` lists the targets.
#
#   make            build the daemon, the CLI and the engine library (release, -O2)
#   make run        install missing packages, build, serve models/ on 127.0.0.1:8080
#   make check      the fast tier, no root, installs nothing: release build, unit, end-to-end
#                   (determinism included), Python tests and every example of the documents
#                   (skipped with a message without python3-torch/numpy); the web page in headless
#                   Chromium (skipped without chromium, node, tests/ui/node_modules); C suites under ASan+UBSan
#   make test       installs what it needs (scripts/install-deps.sh test), then everything in
#                   check, then the deployment tests (container image, compose, `make run`)
#   make bench      engine vs PyTorch(+FrEIA), ONNX Runtime, sgemm/FMA peaks; vector and image cINN
#   make bench-sbi  sbi's MAF, NSF, maf_rqs, zuko MAF/NSF posteriors: sbi itself vs the engine
#                   (needs the sbi, nflows, zuko, UMNN sources: SBI_SRC=DIR, see bench/sbi_bench.py)
#   make deps       install the Debian packages the build and tests need
#   make install    innserve, innctl, their man pages and the systemd unit under PREFIX
#                   (/usr/local; also DESTDIR, BINDIR, MANDIR, UNITDIR); make uninstall
#   make python-venv  .venv with the Python package (offline, sees Debian's torch/numpy)
#   make man        rewrite the generated part of docs/man/innctl.1 from innctl's option table
#   make fuzz       libFuzzer targets (clang) and their seed corpora in build-fuzz/; make test-fuzz
#                   runs each briefly (part of check; docs/fuzzing.md runs them for hours)
#
# SANITIZE=1 builds into build-san/ with -fsanitize=address,undefined; SANITIZE=thread into
# build-tsan/ with -fsanitize=thread (make test-tsan).
# BUILDDIR=dir builds into dir/ (and dir-san/) instead of build/.
# Tests leave OPENBLAS_* as the environment sets them and must pass under any value (only
# test_determinism varies OPENBLAS_CORETYPE, in its own daemons' environments).

CC      ?= gcc
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD   := $(or $(BUILDDIR),build)-san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT     := -O1 -g
# engine/la.c (dense double linear algebra: the i-ResNets' certificates and inverses) at -O3
# under ASan without UBSan, whose checks in its loops kept them from vectorizing: loading
# the demo image i-ResNet takes 11 s instead of 30 s.
SAN_LA_FLAGS := -O3 -fno-sanitize=undefined
else ifeq ($(SANITIZE),thread)
BUILD   := $(or $(BUILDDIR),build)-tsan
SANFLAGS := -fsanitize=thread -fno-omit-frame-pointer
OPT     := -O1 -g
else
BUILD   := $(or $(BUILDDIR),build)
SANFLAGS :=
OPT     := -O3 -g
endif

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
# -ffp-contract=off: the compiler fuses no multiply-add by itself; the engine's results
# depend only on the operations written (engine/kern.h), on every machine.
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -fno-trapping-math -ffp-contract=off $(WARN) $(SANFLAGS) -pthread -fPIC
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
LDLIBS  := -lcjson $(BLAS_LIBS) -lm -pthread
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt)

ENGINE_SRC := $(wildcard engine/*.c engine/blocks/*.c)
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
PROTO_SRC  := $(wildcard proto/*.c)
PROTO_OBJ  := $(PROTO_SRC:%.c=$(BUILD)/%.o)
SERVER_SRC := $(wildcard server/*.c)
# The web page (ui/, docs/ui.md): its files compiled into the daemon by ui/embed.c.
UI_FILES   := ui/index.html ui/app.js ui/style.css
UI_OBJ     := $(BUILD)/gen/ui_assets.o
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o) $(UI_OBJ)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/%)
TU_OBJ     := $(BUILD)/tests/unit/testutil.o

# server/ unit tests (tests/server/test_*.c): the daemon's modules without HTTP (main.c and
# http.c left out), one Check runner each, run by test-unit like tests/unit/.
SRVT_SRC   := $(wildcard tests/server/test_*.c)
SRVT_BIN   := $(SRVT_SRC:tests/server/test_%.c=$(BUILD)/server_test_%)
SRV_LIB_OBJ := $(filter-out $(BUILD)/server/main.o $(BUILD)/server/http.o,$(SERVER_OBJ))

E2E_SRC    := $(wildcard tests/e2e/test_*.c)
E2E_BIN    := $(E2E_SRC:tests/e2e/test_%.c=$(BUILD)/e2e_%)
E2E_UTIL   := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/e2e/e2eutil.c))
CTL_SRC    := $(wildcard clients/c/*.c)
CTL_OBJ    := $(CTL_SRC:%.c=$(BUILD)/%.o)
MHD_LIBS   := $(shell pkg-config --libs libmicrohttpd 2>/dev/null || echo -lmicrohttpd)
CURL_LIBS  := $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)
BINS       := $(BUILD)/innserve $(if $(CTL_SRC),$(BUILD)/innctl)

.PHONY: all check test test-unit test-e2e test-python test-docs test-ui test-san bench run deps clean help fixtures lint bench-iresnet bench-server bench-sbi test-tsan fuzz test-fuzz
all: $(BUILD)/libinnengine.a $(BINS) $(UNIT_BIN) $(SRVT_BIN) $(E2E_BIN)

Q := @
# keep object files of the test binaries (they are intermediates of pattern rules)
.SECONDARY:
$(BUILD)/%.o: %.c $(wildcard engine/*.h engine/blocks/*.h proto/*.h server/*.h tests/unit/*.h tests/e2e/*.h clients/c/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	$(Q)$(CC) $(CFLAGS) $(BLAS_CFLAGS) -c $< -o $@

# The vector kernel paths are compiled for their instruction sets; engine/kern.c runs
# them only on CPUs that have them (cpuid).  Elsewhere they compile to nothing.
ifneq ($(findstring x86_64,$(shell $(CC) -dumpmachine)),)
$(BUILD)/engine/kern_avx2.o: CFLAGS += -mavx2 -mfma
$(BUILD)/engine/kern_avx512.o: CFLAGS += -mavx512f -mavx2 -mfma
endif
$(BUILD)/engine/la.o: CFLAGS += $(SAN_LA_FLAGS)

# ui/embed.c writes the page's bytes, URL paths, types and ETags as a C table (server/ui.h);
# only the C compiler is needed.
$(BUILD)/ui_embed: ui/embed.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) -std=c11 -O1 $(WARN) $< -o $@

$(BUILD)/gen/ui_assets.c: $(BUILD)/ui_embed $(UI_FILES)
	@mkdir -p $(dir $@)
	@echo "  EMBED $(UI_FILES)"
	$(Q)$(BUILD)/ui_embed $@ '/=ui/index.html=text/html; charset=utf-8' \
	  '/ui/app.js=ui/app.js=text/javascript; charset=utf-8' \
	  '/ui/style.css=ui/style.css=text/css; charset=utf-8'

$(UI_OBJ): $(BUILD)/gen/ui_assets.c server/ui.h
	@echo "  CC $<"
	$(Q)$(CC) $(CFLAGS) -I. -c $< -o $@

$(BUILD)/libinnengine.a: $(ENGINE_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/libinnproto.a: $(PROTO_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/innserve: $(SERVER_OBJ) $(BUILD)/libinnproto.a $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(MHD_LIBS) $(LDLIBS)

$(BUILD)/innctl: $(CTL_OBJ) $(BUILD)/libinnproto.a $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(CURL_LIBS) $(LDLIBS)

# Engine unit tests link the engine only; test_proto* also link proto/.
$(BUILD)/test_proto: $(BUILD)/tests/unit/test_proto.o $(TU_OBJ) $(BUILD)/libinnproto.a $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/test_proto_image: $(BUILD)/tests/unit/test_proto_image.o $(TU_OBJ) $(BUILD)/libinnproto.a $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(CHECK_LIBS) $(LDLIBS)

# test_allocfail and server_test_call_allocfail route every allocation of engine/, proto/
# (and server/) through counting, failing wrappers (tests/unit/allocwrap.c).
ALLOC_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=strdup,--wrap=aligned_alloc
AW_OBJ     := $(BUILD)/tests/unit/allocwrap.o $(BUILD)/tests/unit/opbodies.o
$(BUILD)/test_allocfail: $(BUILD)/tests/unit/test_allocfail.o $(AW_OBJ) $(TU_OBJ) $(BUILD)/libinnproto.a $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(ALLOC_WRAP) $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/server_test_call_allocfail: $(BUILD)/tests/server/test_call_allocfail.o $(AW_OBJ) $(TU_OBJ) $(SRV_LIB_OBJ) $(BUILD)/libinnproto.a $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(ALLOC_WRAP) $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/test_%: $(BUILD)/tests/unit/test_%.o $(TU_OBJ) $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/server_test_%: $(BUILD)/tests/server/test_%.o $(TU_OBJ) $(SRV_LIB_OBJ) $(BUILD)/libinnproto.a $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/e2e_%: $(BUILD)/tests/e2e/test_%.o $(E2E_UTIL) $(TU_OBJ) $(BUILD)/libinnproto.a $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(CHECK_LIBS) $(CURL_LIBS) $(LDLIBS)

# MISSING=skip (make check): a test tier whose packages are missing is skipped with a
# message; MISSING=fail (make test, the default): it fails.  $(call need,test,package) ends
# the recipe line's shell; the tier's command follows it on the same line.
MISSING ?= fail
need = if ! $(1) >/dev/null 2>&1; then \
	  echo "$(if $(filter skip,$(MISSING)),SKIP,FAIL) $@: $(2) is not installed (scripts/install-deps.sh test installs it)"; \
	  exit $(if $(filter skip,$(MISSING)),0,1); fi

# Unit tests: every tests/unit/test_*.c and tests/server/test_*.c is its own Check runner
# (all run; failures listed).
test-unit: $(UNIT_BIN) $(SRVT_BIN)
	@fail=; for t in $(UNIT_BIN) $(SRVT_BIN); do echo "== $$t"; $$t || fail="$$fail $$t"; done; \
	[ -z "$$fail" ] || { echo "FAILED:$$fail"; exit 1; }

# End-to-end: the real daemon on a loopback port, driven by libcurl (tests/e2e/), among them
# test_determinism (the same bytes under every kernel path, OpenBLAS core type, worker count,
# batch size and y broadcast).
test-e2e: $(BINS) $(E2E_BIN)
	@fail=; for t in $(E2E_BIN); do echo "== $$t"; \
	  INNSERVE_BIN=$(BUILD)/innserve INNCTL_BIN=$(BUILD)/innctl $$t || fail="$$fail $$t"; done; \
	[ -z "$$fail" ] || { echo "FAILED:$$fail"; exit 1; }

# Every example of the repository's Markdown files (README.md, docs/, deploy/, clients/python/,
# tests/fixtures/: curl, innctl, Python), run against the built daemon serving models/ (what `make run` serves),
# outputs compared exactly (tests/docs/run_docs.py, docs/architecture.md "The documents are
# tests"; tests/docs/test_run_docs.py first checks that the runner fails on wrong documents;
# under a minute; DOCS_ARGS="--only docs/clients.md" runs one document, "--update"
# writes the real outputs into the documents).  The examples use curl, jq, python3-torch and
# python3-numpy.
test-docs: $(BINS)
	@$(call need,command -v curl,curl); \
	$(call need,command -v jq,jq); \
	$(call need,/usr/bin/python3 -c 'import torch; import numpy',python3-torch or python3-numpy); \
	/usr/bin/python3 tests/docs/test_run_docs.py --bin $(BUILD)/innserve && \
	/usr/bin/python3 tests/docs/run_docs.py --bin $(BUILD)/innserve $(DOCS_ARGS)

# The web page end to end in headless Chromium against the real daemon (tests/ui/test_ui.mjs,
# docs/ui.md): Debian's chromium and nodejs, and playwright-core as tests/ui/package-lock.json
# pins it (scripts/install-deps.sh test runs npm ci there).  Screenshots go to $(BUILD)/ui/;
# UI_ARGS=--update-docs also copies them to docs/img/.
test-ui: $(BUILD)/innserve
	@$(call need,command -v chromium,chromium); \
	$(call need,command -v node,nodejs); \
	$(call need,test -f tests/ui/node_modules/playwright-core/package.json,playwright-core (npm ci in tests/ui)); \
	node tests/ui/test_ui.mjs --bin $(BUILD)/innserve --out $(BUILD)/ui $(UI_ARGS)

# Python client and exporter tests (need Debian's python3-torch, python3-numpy).
test-python: $(BINS)
	@$(call need,/usr/bin/python3 -c 'import torch; import numpy',python3-torch or python3-numpy); \
	cd clients/python && INNSERVE_BIN=$(CURDIR)/$(BUILD)/innserve INNCTL_BIN=$(CURDIR)/$(BUILD)/innctl /usr/bin/python3 -m unittest discover -s tests -v

# The C suites again under ASan+UBSan (built in parallel, run one after the other), with
# Check's timeouts and the e2e daemons' start-up limit ten times longer (CK_TIMEOUT_MULTIPLIER):
# sanitized, the demo i-ResNet image flow takes ~11 s to load.
test-san:
	$(MAKE) SANITIZE=1 all
	CK_TIMEOUT_MULTIPLIER=10 $(MAKE) -j1 -k SANITIZE=1 test-unit test-e2e

# The fast tier: no root, installs nothing.  Every step runs (its wall time printed after it);
# the failed ones are listed.
# CHECK_MISSING=fail (make test) fails a step whose packages are missing instead of skipping it.
CHECK_STEPS := test-unit test-e2e test-python test-docs test-ui test-install test-python-venv test-san test-fuzz
CHECK_MISSING ?= skip
check: all
	@fail=; for s in $(CHECK_STEPS); do echo "==== make $$s"; t0=$$(date +%s); \
	  $(MAKE) --no-print-directory MISSING=$(CHECK_MISSING) $$s || fail="$$fail $$s"; \
	  echo "==== make $$s: $$(( $$(date +%s) - t0 )) s"; done; \
	if [ -n "$$fail" ]; then echo "make check: FAILED:$$fail"; exit 1; fi; echo "make check: all passed"

# The whole suite, as CI runs it (.ci/run): install what is missing, everything in check
# (nothing skipped), then the deployment: manifests, the container image (podman, root),
# compose, and the README's `make run` from a fresh clone.
test:
	bash scripts/install-deps.sh test
	$(MAKE) check CHECK_MISSING=fail
	$(MAKE) test-deploy

fixtures:
	/usr/bin/python3 tests/fixtures/gen_fixtures.py

deps:
	bash scripts/install-deps.sh test

# Install what is missing, build, and serve the demo models on 127.0.0.1:8080 (Ctrl-C stops).
run:
	bash scripts/install-deps.sh run
	$(MAKE) $(BUILD)/innserve
	exec $(BUILD)/innserve --models models --host $${INNSERVE_HOST:-127.0.0.1} --port $${INNSERVE_PORT:-8080}

lint:
	@! grep -nE '\b(strcpy|strcat|sprintf|atoi|strtok|gets)\s*\(' $(ENGINE_SRC) $(PROTO_SRC) $(SERVER_SRC) || (echo "banned function used"; false)

clean:
	rm -rf build build-san build-tsan build-fuzz

help:
	@sed -n '1,24p' Makefile

# ---- installing ----
# make && sudo make install: the two binaries, their man pages and the systemd unit (with
# the installed path of innserve in ExecStart).  DESTDIR stages the files under a root
# (packaging); make uninstall removes exactly what install put there.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL ?= install
MAN_PAGES := docs/man/innserve.1 docs/man/innctl.1
.PHONY: install uninstall test-install man

# docs/man/innctl.1 between its BEGIN and END lines is `innctl help --roff` (innctl's option
# table); test-install fails while it is stale.
man: $(BUILD)/innctl
	/usr/bin/python3 tests/install/check_man.py --update-innctl $(BUILD)/innctl docs/man/innctl.1

install: $(BUILD)/innserve $(BUILD)/innctl
	$(INSTALL) -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(MANDIR)/man1" "$(DESTDIR)$(UNITDIR)"
	$(INSTALL) -m 755 $(BUILD)/innserve $(BUILD)/innctl "$(DESTDIR)$(BINDIR)/"
	$(INSTALL) -m 644 $(MAN_PAGES) "$(DESTDIR)$(MANDIR)/man1/"
	sed 's|/usr/local/bin/innserve|$(BINDIR)/innserve|g' deploy/innserve.service \
	  > "$(DESTDIR)$(UNITDIR)/innserve.service.tmp"
	chmod 644 "$(DESTDIR)$(UNITDIR)/innserve.service.tmp"
	mv "$(DESTDIR)$(UNITDIR)/innserve.service.tmp" "$(DESTDIR)$(UNITDIR)/innserve.service"

uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/innserve" "$(DESTDIR)$(BINDIR)/innctl" \
	  "$(DESTDIR)$(MANDIR)/man1/innserve.1" "$(DESTDIR)$(MANDIR)/man1/innctl.1" \
	  "$(DESTDIR)$(UNITDIR)/innserve.service"

# install into a temporary DESTDIR (default paths, then custom ones), check every file, run
# the installed binaries, compare the man pages with --help, uninstall, check nothing is left.
test-install: $(BUILD)/innserve $(BUILD)/innctl
	@$(call need,command -v groff,groff-base); \
	bash tests/install/test_install.sh "$(MAKE)" "$(BUILD)"

# ---- the Python package in a virtual environment ----
# Debian 12's python3 refuses `pip install` outside a venv (PEP 668), and a plain venv sees
# neither Debian's python3-torch nor, offline, setuptools.  This venv sees the system's
# packages and installs clients/python (editable) with the system's setuptools, no network:
#   make python-venv && . .venv/bin/activate
VENV ?= .venv
.PHONY: python-venv python-venv-only test-python-venv
python-venv:
	bash scripts/install-deps.sh python
	$(MAKE) --no-print-directory python-venv-only VENV=$(VENV)

# the venv alone (no apt-get): what python-venv does after installing the packages
python-venv-only:
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(VENV)/bin/python -m pip install --quiet --no-index --no-build-isolation -e clients/python
	@echo "$(VENV) is ready: . $(VENV)/bin/activate, then python3 -c 'import innserve'"

# python-venv-only into a temporary directory, then innserve and innserve.export imported
# from it (outside the source tree), and a plain (non-editable) install built offline.
test-python-venv:
	@$(call need,/usr/bin/python3 -c 'import ensurepip; import setuptools; import wheel',python3-venv or python3-setuptools or python3-wheel); \
	bash tests/install/test_python_venv.sh "$(MAKE)"

# ---- benchmarks (docs/performance.md) ----
$(BUILD)/bench_engine: $(BUILD)/bench/bench_engine.o $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/bench_iresnet: $(BUILD)/bench/bench_iresnet.o $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# i-ResNet inversion: g-evaluations and time to tol 1e-6 per solver method vs fixed point.
bench-iresnet: $(BUILD)/bench_iresnet
	$(BUILD)/bench_iresnet

# The machine's single-core peaks: sgemm of OpenBLAS and of the engine's own kernels, and
# the register-only FMA ceiling (its own -m flags per object).
$(BUILD)/bench/bench_sgemm.o: bench/fma_peak.h
ifneq ($(findstring x86_64,$(shell $(CC) -dumpmachine)),)
BENCH_FMA := $(BUILD)/bench/fma_avx512.o $(BUILD)/bench/fma_avx2.o
$(BUILD)/bench/fma_avx512.o: CFLAGS += -mavx512f
$(BUILD)/bench/fma_avx2.o: CFLAGS += -mavx2 -mfma
$(BENCH_FMA): bench/fma_peak.h
endif
$(BUILD)/bench_sgemm: $(BUILD)/bench/bench_sgemm.o $(BENCH_FMA) $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# Engine vs PyTorch (FrEIA when on PYTHONPATH) vs ONNX Runtime (onnxruntime-node, installed
# by npm under $(BUILD)/onnxruntime) vs the sgemm and FMA peaks, side by side in one run, on
# the reference cINN and (FrEIA needed) the digits image cINN (bench/torch_img.py).
# BENCH_ARGS=--write updates docs/performance.md; BENCH_ARGS=--models=image runs one of them.
bench: $(BUILD)/bench_engine $(BUILD)/bench_sgemm
	/usr/bin/python3 bench/run_bench.py --bin $(BUILD)/bench_engine $(BENCH_ARGS)


# sbi posteriors (bench/sbi_bench.py): sbi's own sampling and log_prob vs the engine on the
# same estimators, written as checkpoints by the script; SBI_SRC names the sources' folder.
$(BUILD)/bench_sbi_engine: $(BUILD)/bench/sbi_engine.o $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

bench-sbi: $(BUILD)/bench_sbi_engine
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 /usr/bin/python3 bench/sbi_bench.py --bin $(BUILD)/bench_sbi_engine $(BENCH_SBI_ARGS)

# Server: innserve under wrk vs the engine alone vs a bare libmicrohttpd answer (bench/server_bench.py).
$(BUILD)/bench_server_engine: $(BUILD)/bench/server_engine.o $(BUILD)/libinnengine.a
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/bench_server_bare: $(BUILD)/bench/server_bare.o
	@echo "  LD $@"
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(MHD_LIBS) -pthread

bench-server: $(BUILD)/innserve $(BUILD)/bench_server_engine $(BUILD)/bench_server_bare
	/usr/bin/python3 bench/server_bench.py --build $(BUILD) $(BENCH_SERVER_ARGS)

# ---- demo models and deployment (docs/models.md, deploy/) ----
DEMO_MODELS := ik_cinn ik_inn ik_mlp iresnet_toy
.PHONY: models models-images evaluate-models test-deploy test-manifests test-image test-compose test-make-run

# Retrain and re-export every demo model (minutes of CPU each; deterministic per --seed).
models:
	@set -e; for m in $(DEMO_MODELS); do /usr/bin/python3 models/train/train_$$m.py; done

# The image demo models (8 x 8 digits) need the real FrEIA: FREIA=DIR, a vislearn/FrEIA checkout.
IMAGE_MODELS := digits_cinn digits_iresnet
models-images:
	@test -n "$(FREIA)" || { echo "usage: make models-images FREIA=DIR (a vislearn/FrEIA checkout)"; exit 2; }
	@set -e; for m in $(IMAGE_MODELS); do /usr/bin/python3 models/train/train_$$m.py --freia-path $(FREIA); done

# The quality tables of docs/models.md, measured through the served API.
evaluate-models: $(BUILD)/innserve
	/usr/bin/python3 models/evaluate.py --bin $(BUILD)/innserve --update-docs

# Deployment files checked against the image, routes, ports, flags (quick; no root).
test-manifests: $(BUILD)/innserve
	/usr/bin/python3 deploy/check_manifests.py --bin $(BUILD)/innserve

# The container image built and run with podman (root; debootstrap base image, cached).
test-image:
	bash deploy/test-image.sh

# deploy/compose.yaml for real: innserve beside the example simulator (podman-compose).
test-compose:
	bash deploy/test-compose.sh

# The README's `make run` and curl calls from a fresh clone.
test-make-run:
	bash deploy/test-make-run.sh

test-deploy: test-manifests test-image test-compose test-make-run

# ---- fuzzing (docs/fuzzing.md) ----
# libFuzzer targets built with clang under ASan+UBSan into build-fuzz/: the request parsers
# (JSON and V2) against the shipped models, the checkpoint loader (bytes -> model -> every
# operation) and the HTTP helpers (routes, negotiation, escaping, number printers, CSV/NPY).
# `make test-fuzz` runs each for FUZZ_SECONDS on its seed corpus (tests/fuzz/corpus/<target>
# and the fixtures, gathered by tests/fuzz/seeds.py); any crash, leak or UB fails it.
FUZZ_CC      ?= clang
FUZZ_BUILD   := build-fuzz
FUZZ_TARGETS := request loader http image
FUZZ_SECONDS ?= 25
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -O1 -g -fno-trapping-math -ffp-contract=off $(WARN) \
                $(FUZZ_SAN) -pthread -DFUZZ_MODELS_DIR='"$(CURDIR)/models"'
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(ENGINE_SRC) $(PROTO_SRC))
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
# clang and its libFuzzer runtime (Debian: clang, libclang-rt-14-dev) link a trivial target
FUZZ_PROBE   := echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' \
                | $(FUZZ_CC) -fsanitize=fuzzer,address,undefined -x c - -o /dev/null

$(FUZZ_BUILD)/obj/%.o: %.c $(wildcard engine/*.h engine/blocks/*.h proto/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC(fuzz) $<"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(BLAS_CFLAGS) -c $< -o $@
ifneq ($(findstring x86_64,$(shell $(CC) -dumpmachine)),)
$(FUZZ_BUILD)/obj/engine/kern_avx2.o: FUZZ_CFLAGS += -mavx2 -mfma
$(FUZZ_BUILD)/obj/engine/kern_avx512.o: FUZZ_CFLAGS += -mavx512f -mavx2 -mfma
endif

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB_OBJ)
	@echo "  LD $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_LIB_OBJ) -o $@ $(LDLIBS)

fuzz:
	@$(call need,$(FUZZ_PROBE),clang with libFuzzer (clang libclang-rt-14-dev)); \
	$(MAKE) --no-print-directory $(FUZZ_BINS) && python3 tests/fuzz/seeds.py $(FUZZ_BUILD)/corpus

# Each target for FUZZ_SECONDS (4 targets: ~2 min in all with the seed passes) on its seeds;
# new inputs go to build-fuzz/corpus-run/<target>, emptied first so every run has the same
# bounded length; crashes to build-fuzz/crash-*.
test-fuzz:
	@$(call need,$(FUZZ_PROBE),clang with libFuzzer (clang libclang-rt-14-dev)); \
	$(MAKE) --no-print-directory fuzz || exit 1; \
	fail=; for t in $(FUZZ_TARGETS); do echo "== fuzz_$$t ($(FUZZ_SECONDS) s)"; \
	  rm -rf $(FUZZ_BUILD)/corpus-run/$$t; mkdir -p $(FUZZ_BUILD)/corpus-run/$$t; \
	  $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -max_len=$$(cat $(FUZZ_BUILD)/corpus/$$t.max_len) \
	    $$( [ -f tests/fuzz/$$t.dict ] && echo -dict=tests/fuzz/$$t.dict ) \
	    -artifact_prefix=$(FUZZ_BUILD)/crash-$$t- -print_final_stats=1 \
	    $(FUZZ_BUILD)/corpus-run/$$t $(FUZZ_BUILD)/corpus/$$t 2>$(FUZZ_BUILD)/fuzz_$$t.log \
	    || { tail -40 $(FUZZ_BUILD)/fuzz_$$t.log; fail="$$fail fuzz_$$t"; }; \
	  grep -E '^stat::number_of_executed_units|^Done' $(FUZZ_BUILD)/fuzz_$$t.log; done; \
	[ -z "$$fail" ] || { echo "FAILED:$$fail (inputs in $(FUZZ_BUILD)/crash-*)"; exit 1; }

# ThreadSanitizer: the daemon built with -fsanitize=thread, driven by the server e2e suites
# (a race makes the daemon exit 66, which the suites check).
TSAN_E2E := $(addprefix $(BUILD)/e2e_,api batching concurrency lifecycle numeric jobs)
# (SANITIZE=thread builds into build-tsan/ with the same per-file flags as the release build.)
TSAN_BIN := $(or $(BUILDDIR),build)-tsan/innserve
test-tsan: $(TSAN_E2E)
	$(MAKE) SANITIZE=thread $(TSAN_BIN)
	@set -e; for t in $(TSAN_E2E); do echo "== $$t (tsan)"; INNSERVE_BIN=$(TSAN_BIN) $$t; done
