# moesim: build, test, run. `make run` and `make test` are the two commands of the README.
# Flags a user may override without losing the warnings: CFLAGS (optimisation), CPPFLAGS, LDFLAGS.

CC      ?= cc
CFLAGS  ?= -O2 -g -march=native
WARN    := -std=c11 -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes
DEFS    := -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
PKGS    := gsl sqlite3 inih jansson zlib openblas
# GSL is linked against OpenBLAS, never against GSL's reference CBLAS (gslcblas). Debian's
# libgsl.so itself NEEDs libgslcblas.so, so the static libgsl.a is linked where present: its
# cblas_* calls then resolve to OpenBLAS at link time and no gslcblas is loaded at all
# (tests/t_blas_link.sh checks with ldd).
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(filter-out -lgslcblas,$(shell pkg-config --libs $(PKGS) 2>/dev/null))
GSL_STATIC := $(wildcard $(shell pkg-config --variable=libdir gsl 2>/dev/null)/libgsl.a)
ifneq ($(GSL_STATIC),)
PKG_LIBS   := $(patsubst -lgsl,$(GSL_STATIC),$(PKG_LIBS))
endif
ALL_CFLAGS  = $(WARN) $(DEFS) $(CFLAGS) $(PKG_CFLAGS) -Isim -MMD -MP
LDLIBS     := $(PKG_LIBS) -lm -lpthread

B        ?= build
LIB_SRC  := $(filter-out sim/main.c,$(wildcard sim/*.c)) $(wildcard sim/sources/*.c) \
            $(wildcard routers/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(B)/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(B)/tests/%)
SPEC     ?= experiments/default.ini

# libxsmm (Debian libxsmm-dev, x86-64): the expert GEMMs run its JIT kernels on weights packed
# once (sim/layer_gemm.c); without it (or `make XSMM=`) they run OpenBLAS sgemm.
XSMM       ?= $(shell pkg-config --exists libxsmm 2>/dev/null && echo yes)
ifeq ($(XSMM),yes)
LDLIBS     := $(shell pkg-config --libs libxsmm) $(LDLIBS)
$(B)/sim/layer_gemm.o $(B)/pic/sim/layer_gemm.o: DEFS += -DMOESIM_XSMM
endif

# Debian packages: what `make run` needs (build, sweep, charts), and the optional tools of
# `make test` (the sqlite3 shell, valgrind, clang for fuzzing, Open MPI, universal-ctags and
# cscope for the layout checks of tests/t_layering.sh, Chromium for the HTML report's checks in a
# real browser); tests whose tool is missing are skipped and counted.
DEB_PKGS      := build-essential pkg-config libgsl-dev libopenblas-dev libsqlite3-dev \
                 libinih-dev libjansson-dev zlib1g-dev gnuplot-nox
DEB_PKGS      += $(if $(filter x86_64,$(shell uname -m)),libxsmm-dev)
DEB_PKGS_TEST := sqlite3 valgrind clang libopenmpi-dev openmpi-bin python3-numpy python3-pip \
                 python3-setuptools python3-wheel universal-ctags cscope chromium

# MPI (sim/mpi_*.c): expert parallelism and sweeps over ranks, built only when mpicc is
# found (`make MPICC=` builds without). Only sim/mpi_*.o see MPI's headers (-DMOESIM_MPI); the
# binaries link libmpi where they use it (--as-needed). tests/mpi_ep_check runs under mpirun.
MPICC ?= $(shell command -v mpicc 2>/dev/null)
ifneq ($(strip $(MPICC)),)
MPI_INC  := $(patsubst -I%,-isystem %,$(filter -I%,$(shell $(MPICC) --showme:compile 2>/dev/null)))
LDLIBS   += -Wl,--as-needed $(shell $(MPICC) --showme:link 2>/dev/null) -Wl,--no-as-needed
$(B)/sim/mpi%.o: DEFS += -DMOESIM_MPI $(MPI_INC)
MPI_TEST := tests/mpi_ep_check
ifeq ($(MAKELEVEL),0)
$(info MPI: found ($(MPICC)), expert parallelism enabled)
endif
else
ifeq ($(MAKELEVEL),0)
$(info MPI: not found, building without expert parallelism (apt-get install libopenmpi-dev openmpi-bin))
endif
endif

.PHONY: all deps deps-test run test test-unit test-asan bench bench-cluster plots clean fuzz install uninstall
all: moesim $(B)/libmoesim.so

moesim: $(B)/moesim
	@cp $< $@

$(B)/moesim: $(B)/sim/main.o $(B)/libmoesim.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/libmoesim.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# libmoesim.so, the C API of sim/moesim_api.h (used by the Python package in python/): a second
# object set compiled with -fPIC (build/pic/), of which the link pulls only what api.o needs;
# -fno-semantic-interposition lets GCC inline and call within it as in the static build.
# GSL comes from the static libgsl.a as for the binary (Debian builds it position-independent),
# so no libgslcblas is loaded and cblas_* resolve to OpenBLAS; --exclude-libs keeps every
# archive symbol local, so the library exports only the moesim_* functions of api.o.
PIC_OBJ := $(LIB_SRC:%.c=$(B)/pic/%.o)
$(B)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fPIC -fno-semantic-interposition -c -o $@ $<

$(B)/libmoesim-pic.a: $(PIC_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/libmoesim.so: $(B)/pic/sim/api.o $(B)/libmoesim-pic.a
	$(CC) $(ALL_CFLAGS) -shared -fPIC $(LDFLAGS) -Wl,-z,defs -Wl,--exclude-libs,ALL -o $@ $^ \
	    -Wl,--as-needed $(LDLIBS) -Wl,--no-as-needed

# The Python package (python/README.md): builds libmoesim.so and installs moesim with Debian's
# pip, offline; PIP_FLAGS="--user" installs for the current user only.
PYTHON    ?= /usr/bin/python3
PIP_FLAGS ?= --break-system-packages
.PHONY: python
python: $(B)/libmoesim.so
	MOESIM_LIB=$(abspath $(B)/libmoesim.so) $(PYTHON) -m pip install --no-build-isolation \
	    --no-index --no-deps $(PIP_FLAGS) ./python

# What moesim.route costs over the C call it wraps and over the static build's routing
# (tests/bench/route_time.c), on 65536 x 64 logits (python/tests/bench_route.py).
.PHONY: bench-python
bench-python: $(B)/libmoesim.so $(B)/route_time
	env -u OPENBLAS_CORETYPE PYTHONPATH=python MOESIM_LIB=$(abspath $(B)/libmoesim.so) \
	    ROUTE_TIME=$(abspath $(B)/route_time) $(PYTHON) python/tests/bench_route.py

$(B)/route_time: tests/bench/route_time.c $(B)/libmoesim.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(B)/libmoesim.a $(LDLIBS)
$(B)/metrics_time: tests/bench/metrics_time.c $(B)/libmoesim.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(B)/libmoesim.a $(LDLIBS)
# The gate logits (sim/gate.c) are summed in a fixed order with no fused multiply-add, so routing
# does not depend on the compiler's contraction choices either.
$(B)/sim/gate.o $(B)/pic/sim/gate.o: override CFLAGS += -ffp-contract=off

# The git revision stored with every result (sim/provenance.c); provenance.o is rebuilt when a
# source file, HEAD or the index changes, so "-dirty" stays truthful.
GIT_REV  := $(shell git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
$(B)/sim/provenance.o: DEFS += -DMOESIM_GIT_REV=\"$(GIT_REV)\"
$(B)/sim/provenance.o: $(LIB_SRC) sim/main.c $(wildcard .git/HEAD .git/index .git/logs/HEAD)

$(B)/tests/%: tests/%.c $(B)/libmoesim.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(B)/libmoesim.a $(LDLIBS)

# deps: installs the missing packages `make run` needs (as root), or prints the apt-get line and
# fails. deps-test: the same for the optional test tools, which only warns when not root.
# Without dpkg (not Debian) both only say so, and the build shows what is missing.
DEPS_CHECK = if ! command -v dpkg-query >/dev/null 2>&1; then \
	    echo "$@: no dpkg-query (not Debian): not checking $$pkgs"; exit 0; fi; \
	missing=$$(for p in $$pkgs; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "$@: all Debian packages present"; \
	elif [ "$$(id -u)" = 0 ]; then echo "$@: installing" $$missing; \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "$@: missing packages; run as root:"; echo "  apt-get install -y" $$missing; \
	    if [ -n "$$optional" ]; then echo "$@: optional: the tests that need them are skipped"; \
	    else exit 1; fi; fi
deps:
	@pkgs="$(DEB_PKGS)"; optional=; $(DEPS_CHECK)
deps-test:
	@pkgs="$(DEB_PKGS_TEST)"; optional=1; $(DEPS_CHECK)

# OPENBLAS_CORETYPE (exported as Haswell on some machines) forces OpenBLAS's kernels and can
# halve GEMM speed; run and bench let OpenBLAS detect the CPU, and say so.
run: deps
	@$(MAKE) --no-print-directory -j$(JOBS) moesim
	@[ -z "$$OPENBLAS_CORETYPE" ] || echo "make run: unsetting OPENBLAS_CORETYPE=$$OPENBLAS_CORETYPE so OpenBLAS picks the kernels for this CPU"
	env -u OPENBLAS_CORETYPE ./moesim run $(SPEC)

# Redraws the charts of SPEC's results (results/<spec name>.db) into plots/out/<spec name>/.
plots: moesim
	./moesim plot results/$(basename $(notdir $(SPEC))).db

# The whole suite ("plain:" pass), then again under AddressSanitizer + UndefinedBehaviorSanitizer
# ("asan:" pass); the last line adds up both passes. The builds use every core (JOBS); so do the
# tests (tests/run.sh: TEST_JOBS at once, default every core; TEST_JOBS=1 runs them one after
# another).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
TEST_PREREQ = moesim $(B)/libmoesim.so $(TEST_BIN) $(B)/moesim-perturb $(MPI_TEST:%=$(B)/%)
test:
	@$(MAKE) --no-print-directory -j$(JOBS) $(TEST_PREREQ)
	@rm -f $(B)/test-totals
	@sh tests/run.sh $(B) plain $(B)/test-totals
	@$(MAKE) --no-print-directory test-asan TOTALS=$(CURDIR)/$(B)/test-totals
	@awk '{p += $$1; f += $$2; s += $$3} END {printf "plain+asan: %d passed, %d failed, %d skipped\n%d passed, %d failed%s\n", p, f, s, p, f, s ? sprintf(", %d skipped", s) : ""}' $(B)/test-totals

test-unit:
	@$(MAKE) --no-print-directory -j$(JOBS) $(TEST_PREREQ)
	@sh tests/run.sh $(B) plain

SAN := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
test-asan:
	@$(MAKE) --no-print-directory -j$(JOBS) B=build-asan CFLAGS="$(SAN)" LDFLAGS="$(SAN)" \
	    build-asan/moesim build-asan/moesim-perturb $(TEST_SRC:tests/%.c=build-asan/tests/%) \
	    $(MPI_TEST:%=build-asan/%)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    sh tests/run.sh build-asan asan $(TOTALS)

# The cluster model's predicted dispatch and combine times against the measured ones of real
# expert-parallel MPI runs, with constants from `moesim calibrate` (docs/cluster.md): `make test`
# runs them too, but skips them (counted) at a load average above 4 x the processors; this
# target runs them whatever the load
.PHONY: calib-check
calib-check: moesim $(MPI_TEST:%=$(B)/%)
	MOESIM_CALIB=1 MOESIM=./moesim BUILD=$(B) sh tests/t_calib.sh

# The timing tools of tests/bench (make bench-cluster, bench-gate, bench-layer-time,
# bench-route-floor, bench-slow-route): each one C file against the library
$(B)/bench/%: tests/bench/%.c $(B)/libmoesim.a
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(B)/libmoesim.a $(LDLIBS)

# CPU time of the cluster model at DeepSeek-V3 scale, linear in the tokens (docs/cluster.md)
bench-cluster: $(B)/bench/cluster_scale
	$(B)/bench/cluster_scale

# The fixed-order gate logits (sim/gate.c) on the shapes of `moesim bench`, 1 and 2 threads
.PHONY: bench-gate
bench-gate: $(B)/bench/gate_time
	env -u OPENBLAS_CORETYPE $(B)/bench/gate_time

# The layer of `moesim bench` at n = 1k..64k tokens, interleaved round by round
# (tests/bench/layer_time.c): per-phase time per token, min and median
.PHONY: bench-layer-time
bench-layer-time: $(B)/bench/layer_time
	env -u OPENBLAS_CORETYPE $(B)/bench/layer_time

# What switch, topk and gshard's route phase cannot do without (the softmax, the top-k selection,
# the plan's entries), each alone, in units of the routing bench's bound (tests/bench/route_floor.c)
.PHONY: bench-route-floor
bench-route-floor: $(B)/bench/route_floor
	env -u OPENBLAS_CORETYPE $(B)/bench/route_floor

# The gate and single routers' route phase on one batch of 2^20 tokens, E = 256, with a checksum
# of each plan (tests/bench/slow_route.c); ROUTERS overrides the list.
ROUTERS ?= sinkhorn:2 dsv3_bias:8 topp relu expert_choice hash
.PHONY: bench-slow-route
bench-slow-route: $(B)/bench/slow_route
	env -u OPENBLAS_CORETYPE $(B)/bench/slow_route 1048576 256 2 $(ROUTERS)

# PyTorch (Debian python3-torch) for the comparisons: installed when make bench runs as root,
# otherwise its absence is announced before the run (the bench then says which parts it skipped).
bench: deps moesim
	@[ -z "$$OPENBLAS_CORETYPE" ] || echo "make bench: unsetting OPENBLAS_CORETYPE=$$OPENBLAS_CORETYPE so OpenBLAS picks the kernels for this CPU"
	@if ! /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "make bench: installing Debian's python3-torch for the PyTorch comparison"; \
	        apt-get install -y python3-torch || { apt-get update && apt-get install -y python3-torch; } || \
	            echo "make bench: *** apt-get install python3-torch FAILED: the PyTorch comparison is SKIPPED ***"; \
	    else \
	        echo "make bench: *** PyTorch does not import in /usr/bin/python3: the PyTorch comparison is SKIPPED ***"; \
	        echo "make bench: *** to enable it: sudo apt-get install python3-torch (or run make bench as root) ***"; \
	    fi; \
	fi
	env -u OPENBLAS_CORETYPE ./moesim bench
	env -u OPENBLAS_CORETYPE ./moesim bench --routing

# Installs moesim into PREFIX: the binary (bin/), the gnuplot scripts, the shipped data and the
# specs (share/moesim/), and the manual page (share/man/man1/moesim.1). The installed binary is
# linked with a paths.o that has share/moesim compiled in (sim/paths.h), so it works from any
# folder; it precedes the library on the link line, like the perturbed build below.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share/moesim
MANDIR  ?= $(PREFIX)/share/man
install: $(B)/sim/main.o $(B)/libmoesim.a
	@mkdir -p $(B)/install
	$(CC) $(ALL_CFLAGS) -DMOESIM_DATADIR='"$(DATADIR)"' -c -o $(B)/install/paths.o sim/paths.c
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $(B)/install/moesim $(B)/sim/main.o $(B)/install/paths.o \
	    $(B)/libmoesim.a $(LDLIBS)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/plots $(DESTDIR)$(DATADIR)/experiments \
	    $(DESTDIR)$(MANDIR)/man1
	install -m 755 $(B)/install/moesim $(DESTDIR)$(BINDIR)/moesim
	install -m 644 plots/*.gp $(DESTDIR)$(DATADIR)/plots/
	install -m 644 experiments/*.ini $(DESTDIR)$(DATADIR)/experiments/
	cp -R experiments/data $(DESTDIR)$(DATADIR)/experiments/
	install -m 644 docs/moesim.1 $(DESTDIR)$(MANDIR)/man1/moesim.1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/moesim $(DESTDIR)$(MANDIR)/man1/moesim.1
	rm -rf $(DESTDIR)$(DATADIR)

# Regression baselines (results/regression/README.md): reruns experiments/regression/*.ini,
# prints what changed against the recorded metrics (moesim compare), then replaces them.
.PHONY: record
record: moesim
	@sh experiments/regression/record.sh $(B)/moesim

# The perturbed-router build of tests/t_regression.sh: moesim with routers/topk.c compiled with
# -DMOESIM_PERTURB_TOPK (first gate nudged by 1e-3), which the regression comparison must catch.
# Only topk.o differs; it precedes the library on the link line, so the archive's is not used.
$(B)/perturb/topk.o: routers/topk.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DMOESIM_PERTURB_TOPK -c -o $@ $<

$(B)/moesim-perturb: $(B)/sim/main.o $(B)/perturb/topk.o $(B)/libmoesim.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Regenerates the committed route fixtures from the NumPy reference (tests/ref/moe_ref.py),
# the dialect cases (tests/ref/dialects.py) and the preset fixtures from the re-implementations
# of the libraries' routers (tests/ref/gen_presets.py).
.PHONY: fixtures
fixtures:
	/usr/bin/python3 tests/ref/gen_fixtures.py
	/usr/bin/python3 tests/ref/dialects.py
	/usr/bin/python3 tests/ref/gen_presets.py

# libFuzzer targets tests/fuzz/fuzz_*.c (clang), built into build-fuzz/ and run FUZZ_SECONDS each
# on a scratch copy of their corpus; crashes land in tests/fuzz/crashes/ (see tests/fuzz/run.sh).
FUZZ_SECONDS ?= 30
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) MAKE="$(MAKE)" sh tests/fuzz/run.sh

$(B)/fuzz/%: tests/fuzz/%.c $(B)/libmoesim.a $(wildcard tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer $(LDFLAGS) -o $@ $< $(B)/libmoesim.a $(LDLIBS)

# Soak test (tests/soak/soak.sh; not part of `make test`, 1-5 minutes here): 200 SIGKILLs and
# restarts of a 64-point sweep, then 2-3 concurrent runs on one database; every database must
# equal an uninterrupted run's.
.PHONY: soak
soak: moesim
	@MOESIM=./moesim sh tests/soak/soak.sh

clean:
	rm -rf $(B) $(B)-valgrind build-asan build-fuzz moesim

-include $(LIB_OBJ:.o=.d) $(B)/sim/main.d $(TEST_BIN:=.d)
-include $(PIC_OBJ:.o=.d)
-include $(B)/perturb/topk.d
-include $(MPI_TEST:%=$(B)/%.d)
