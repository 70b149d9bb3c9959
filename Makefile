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
# (tests/t_link.sh checks with ldd).
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(filter-out -lgslcblas,$(shell pkg-config --libs $(PKGS) 2>/dev/null))
GSL_STATIC := $(wildcard $(shell pkg-config --variable=libdir gsl 2>/dev/null)/libgsl.a)
ifneq ($(GSL_STATIC),)
PKG_LIBS   := $(patsubst -lgsl,$(GSL_STATIC),$(PKG_LIBS))
endif
ALL_CFLAGS  = $(WARN) $(DEFS) $(CFLAGS) $(PKG_CFLAGS) -Isim -MMD -MP
LDLIBS     := $(PKG_LIBS) -lm -lpthread

B        ?= build
LIB_SRC  := $(filter-out sim/main.c,$(wildcard sim/*.c)) $(wildcard routers/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(B)/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(B)/tests/%)
SPEC     ?= experiments/default.ini

DEB_PKGS := build-essential pkg-config libgsl-dev libopenblas-dev libsqlite3-dev sqlite3 \
            libinih-dev libjansson-dev zlib1g-dev gnuplot-nox valgrind clang \
            libopenmpi-dev openmpi-bin

# MPI (issue 9, sim/mpi.c): expert parallelism and sweeps over ranks, built only when mpicc is
# found (`make MPICC=` builds without). Only sim/mpi.o sees MPI's headers (-DMOESIM_MPI); the
# binaries link libmpi where they use it (--as-needed). tests/mpi_ep_check runs under mpirun.
MPICC ?= $(shell command -v mpicc 2>/dev/null)
ifneq ($(strip $(MPICC)),)
MPI_INC  := $(patsubst -I%,-isystem %,$(filter -I%,$(shell $(MPICC) --showme:compile 2>/dev/null)))
LDLIBS   += -Wl,--as-needed $(shell $(MPICC) --showme:link 2>/dev/null) -Wl,--no-as-needed
$(B)/sim/mpi.o: DEFS += -DMOESIM_MPI $(MPI_INC)
MPI_TEST := tests/mpi_ep_check
ifeq ($(MAKELEVEL),0)
$(info MPI: found ($(MPICC)), expert parallelism enabled)
endif
else
ifeq ($(MAKELEVEL),0)
$(info MPI: not found, building without expert parallelism (apt-get install libopenmpi-dev openmpi-bin))
endif
endif

.PHONY: all deps run test test-unit test-asan bench plots clean fuzz
all: moesim

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

# The git revision stored with every result (sim/provenance.c); provenance.o is rebuilt when a
# source file, HEAD or the index changes, so "-dirty" stays truthful.
GIT_REV  := $(shell git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
$(B)/sim/provenance.o: DEFS += -DMOESIM_GIT_REV=\"$(GIT_REV)\"
$(B)/sim/provenance.o: $(LIB_SRC) sim/main.c $(wildcard .git/HEAD .git/index .git/logs/HEAD)

$(B)/tests/%: tests/%.c $(B)/libmoesim.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(B)/libmoesim.a $(LDLIBS)

# Installs the Debian packages that are missing (as root), or prints the apt-get line.
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; \
	elif [ "$$(id -u)" = 0 ]; then echo "deps: installing $$missing"; \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "deps: missing packages; run as root:"; echo "  apt-get install -y $$missing"; exit 1; fi

# OPENBLAS_CORETYPE (exported as Haswell on some machines) forces OpenBLAS's kernels and can
# halve GEMM speed; run and bench let OpenBLAS detect the CPU, and say so.
run: deps moesim
	@[ -z "$$OPENBLAS_CORETYPE" ] || echo "make run: unsetting OPENBLAS_CORETYPE=$$OPENBLAS_CORETYPE so OpenBLAS picks the kernels for this CPU"
	env -u OPENBLAS_CORETYPE ./moesim run $(SPEC)

# Redraws the charts of SPEC's results (results/<spec name>.db) into plots/out/<spec name>/.
plots: moesim
	./moesim plot results/$(basename $(notdir $(SPEC))).db

# The whole suite, then again under AddressSanitizer + UndefinedBehaviorSanitizer.
test: moesim $(TEST_BIN) $(B)/moesim-perturb $(MPI_TEST:%=$(B)/%)
	@sh tests/run.sh $(B)
	@$(MAKE) --no-print-directory test-asan

test-unit: moesim $(TEST_BIN) $(B)/moesim-perturb $(MPI_TEST:%=$(B)/%)
	@sh tests/run.sh $(B)

SAN := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
test-asan:
	@$(MAKE) --no-print-directory B=build-asan CFLAGS="$(SAN)" LDFLAGS="$(SAN)" \
	    build-asan/moesim build-asan/moesim-perturb $(TEST_SRC:tests/%.c=build-asan/tests/%) \
	    $(MPI_TEST:%=build-asan/%)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	    sh tests/run.sh build-asan

bench: deps moesim
	@[ -z "$$OPENBLAS_CORETYPE" ] || echo "make bench: unsetting OPENBLAS_CORETYPE=$$OPENBLAS_CORETYPE so OpenBLAS picks the kernels for this CPU"
	env -u OPENBLAS_CORETYPE ./moesim bench
	env -u OPENBLAS_CORETYPE ./moesim bench --routing

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

# Regenerates the committed route fixtures from the NumPy reference (tests/ref/moe_ref.py).
.PHONY: fixtures
fixtures:
	/usr/bin/python3 tests/ref/gen_fixtures.py

# libFuzzer targets tests/fuzz/fuzz_*.c (clang), built into build-fuzz/ and run FUZZ_SECONDS each
# on a scratch copy of their corpus; crashes land in tests/fuzz/crashes/ (see tests/fuzz/run.sh).
FUZZ_SECONDS ?= 30
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) MAKE="$(MAKE)" sh tests/fuzz/run.sh

$(B)/fuzz/%: tests/fuzz/%.c $(B)/libmoesim.a $(wildcard tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer $(LDFLAGS) -o $@ $< $(B)/libmoesim.a $(LDLIBS)

clean:
	rm -rf $(B) $(B)-valgrind build-asan build-fuzz moesim

-include $(LIB_OBJ:.o=.d) $(B)/sim/main.d $(TEST_BIN:=.d)
-include $(B)/perturb/topk.d
-include $(MPI_TEST:%=$(B)/%.d)
