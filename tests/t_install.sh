#!/bin/sh
# t_install.sh: moesim works from any folder. `make install PREFIX=<temp>` installs the binary,
# the gnuplot scripts, the shipped data, the specs and the manual page; the installed binary,
# run from an unrelated folder with no MOESIM_* variable set, runs a tiny sweep on the shipped
# Mixtral popularity counts and draws its charts. The build's own binary finds the scripts of
# the source tree it lives in from any folder; MOESIM_DATA overrides both; a missing trace names
# the folder looked in. Also: `moesim --version`, the split of `make deps` / `make deps-test`,
# and that no internal note ("issue N") is compiled into the binary.
# Run by tests/run.sh with MOESIM=<build>/moesim and BUILD=<build>, from the repository root.
MOESIM=${MOESIM:-./moesim}
case "$MOESIM" in /*) ;; *) MOESIM="$(pwd)/$MOESIM" ;; esac
BUILD=${BUILD:-build}
ROOT=$(pwd)
pass=0
fail=0
skip=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL t_install: $*" >&2; }
check() { d=$1; shift; if "$@"; then ok; else bad "$d"; fi; }
contains() { if grep -qF -- "$3" "$2"; then ok; else bad "$1: '$3' not in: $(cat "$2")"; fi; }
unset MOESIM_DATA MOESIM_PLOTS MOESIM_TRACES

tmp=$(mktemp -d /tmp/moesim_t_install.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
P=$tmp/prefix

# ---- make install into a temporary PREFIX ----
# An ASan build links the sanitizer runtime: the installed binary is linked with the same flags.
san=""
if ldd "$MOESIM" 2>/dev/null | grep -q libasan; then
    san="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
fi
if [ -n "$san" ]; then
    make -s --no-print-directory install B="$BUILD" PREFIX="$P" CFLAGS="$san" LDFLAGS="$san" \
        >"$tmp/out" 2>&1
else
    make -s --no-print-directory install B="$BUILD" PREFIX="$P" >"$tmp/out" 2>&1
fi
check "make install exits 0 ($(tail -5 "$tmp/out"))" test $? = 0
for f in bin/moesim share/moesim/plots/common.gp share/moesim/plots/drop_rate.gp \
    share/moesim/experiments/default.ini \
    share/moesim/experiments/data/mixtral-8x7b-popularity/LICENSE.apache-2.0 \
    share/moesim/experiments/data/mixtral-8x7b-popularity/mixtral_8x7b_instruct/expert_popularity_high_school_us_history.json \
    share/man/man1/moesim.1; do
    check "installed $f" test -s "$P/$f"
done
check "installed binary is executable" test -x "$P/bin/moesim"
check "every gnuplot script installed" \
    test "$(ls "$ROOT"/plots/*.gp | wc -l)" = "$(ls "$P"/share/moesim/plots/*.gp | wc -l)"
check "manual page starts with .TH MOESIM 1" \
    test "$(grep -m1 '^\.TH' "$P/share/man/man1/moesim.1" | cut -d' ' -f1-3)" = ".TH MOESIM 1"
if command -v man >/dev/null 2>&1; then
    MANWIDTH=80 man -l "$P/share/man/man1/moesim.1" >"$tmp/man" 2>"$tmp/manerr"
    check "man renders the page ($(cat "$tmp/manerr"))" test $? = 0
    contains "man page renders its synopsis" "$tmp/man" "moesim report DB [--csv|--json|--html DIR]"
else
    skip=$((skip + 1)); echo "t_install: skipped 2 checks: man not installed"
fi

# ---- the installed binary from an unrelated folder ----
mkdir "$tmp/elsewhere"
cat >"$tmp/elsewhere/tiny.ini" <<'EOF'
; tiny.ini: 2 routers x 1 capacity factor on the shipped Mixtral popularity counts = 2 points
[experiment]
name = tiny
routers = topk switch
capacity_factors = 1.0
distributions = pop
shapes = s
tokens = 64
batches = 1
seeds = 1
error_tokens = 16

[router.topk]
type = topk
k = 2

[router.switch]
type = switch

[distribution.pop]
source = trace_mixtral_popularity
model = instruct
subject = high_school_us_history
layer = 0

[shape.s]
d = 16
f = 32
E = 8
EOF
# MOESIM_TRACES names an empty folder: the popularity source falls back to the shipped copy,
# which only the installed data folder holds (neither the working folder nor the binary's).
mkdir "$tmp/notraces"
(cd "$tmp/elsewhere" && MOESIM_TRACES="$tmp/notraces" "$P/bin/moesim" run tiny.ini \
    >"$tmp/out" 2>"$tmp/err")
check "installed: sweep from another folder exits 0 ($(cat "$tmp/err"))" test $? = 0
check "installed: 2 points stored" test "$(sqlite3 "$tmp/elsewhere/results/tiny.db" \
    'SELECT count(*) FROM points' 2>/dev/null)" = 2
check "installed: run drew its charts" test -s "$tmp/elsewhere/plots/out/tiny/drop_rate.png"
(cd "$tmp/elsewhere" && "$P/bin/moesim" plot results/tiny.db --out charts >"$tmp/out" 2>"$tmp/err")
check "installed: plot from another folder exits 0 ($(cat "$tmp/err"))" test $? = 0
check "installed: plot wrote load_imbalance.svg" test -s "$tmp/elsewhere/charts/load_imbalance.svg"

"$P/bin/moesim" --version >"$tmp/ver" 2>&1
check "--version exits 0" test $? = 0
check "--version: first line 'moesim X.Y.Z'" \
    grep -qE '^moesim [0-9]+\.[0-9]+\.[0-9]+$' "$tmp/ver"
# the revision the Makefile passes: git describe --always --dirty --abbrev=12, or unknown
check "--version: git revision line ($(cat "$tmp/ver"))" \
    grep -qE '^git revision: ([0-9a-f]{12}(-dirty)?|unknown|.*-g[0-9a-f]{12}(-dirty)?)$' "$tmp/ver"
# the Makefile links OpenBLAS (tests/t_link.sh): openblas_get_config() starts with "OpenBLAS"
check "--version: BLAS line" grep -qE '^BLAS: OpenBLAS .*; core [^;]+; [0-9]+ threads?; ' "$tmp/ver"
contains "--version: installed data folder" "$tmp/ver" "installed data folder: $P/share/moesim"
contains "--version: gnuplot scripts found there" "$tmp/ver" "gnuplot scripts: $P/share/moesim/plots"

# ---- the build's binary finds its source tree from any folder ----
(cd "$tmp/elsewhere" && "$MOESIM" plot results/tiny.db --out charts2 >"$tmp/out" 2>"$tmp/err")
check "build binary: plot from another folder exits 0 ($(cat "$tmp/err"))" test $? = 0
check "build binary: plot wrote drop_rate.png" test -s "$tmp/elsewhere/charts2/drop_rate.png"
"$MOESIM" --version >"$tmp/ver" 2>&1
contains "build binary: scripts of its source tree" "$tmp/ver" "gnuplot scripts: $ROOT/plots"

# ---- MOESIM_DATA overrides the search, and a miss names where it looked ----
(cd "$tmp/elsewhere" && MOESIM_DATA="$tmp/nodata" "$P/bin/moesim" plot results/tiny.db \
    --out charts3 >"$tmp/out" 2>"$tmp/err")
check "MOESIM_DATA without plots/: non-zero exit" test $? != 0
contains "MOESIM_DATA miss: names the place" "$tmp/err" \
    "moesim: error: plots not found (looked in $tmp/nodata/plots)"
contains "MOESIM_DATA miss: hint" "$tmp/err" "hint: MOESIM_DATA must name"
mkdir -p "$tmp/data"
cp -R "$P/share/moesim/plots" "$tmp/data/plots"
(cd "$tmp/elsewhere" && MOESIM_DATA="$tmp/data" "$P/bin/moesim" plot results/tiny.db \
    --out charts4 >"$tmp/out" 2>"$tmp/err")
check "MOESIM_DATA with plots/: plot exits 0 ($(cat "$tmp/err"))" test $? = 0

# a copy of the build's binary outside any source tree, not installed: nowhere to look, and says so
mkdir "$tmp/lonely"
cp "$MOESIM" "$tmp/lonely/moesim"
(cd "$tmp/elsewhere" && "$tmp/lonely/moesim" plot results/tiny.db --out charts5 >"$tmp/out" 2>"$tmp/err")
check "binary outside a tree: non-zero exit" test $? != 0
contains "binary outside a tree: says why" "$tmp/err" \
    "moesim: error: plots not found (nowhere to look: the binary is in no moesim source tree"
contains "binary outside a tree: hint" "$tmp/err" "hint: install moesim with \`make install PREFIX=...\`"
(cd "$tmp/elsewhere" && MOESIM_DATA="$ROOT" "$tmp/lonely/moesim" plot results/tiny.db --out charts5 \
    >"$tmp/out" 2>"$tmp/err")
check "binary outside a tree, MOESIM_DATA = the tree: plot exits 0 ($(cat "$tmp/err"))" test $? = 0

# ---- a missing trace names the folder looked in ----
sed -e 's/source = trace_mixtral_popularity/source = trace_deepseek/' -e '/^model\|^subject/d' \
    "$tmp/elsewhere/tiny.ini" >"$tmp/elsewhere/ds.ini"
(cd "$tmp/elsewhere" && MOESIM_TRACES="$tmp/notraces" "$P/bin/moesim" run ds.ini --db ds.db \
    --no-plots >"$tmp/out" 2>"$tmp/err")
check "missing trace: non-zero exit" test $? != 0
contains "missing trace: names the path" "$tmp/err" "$tmp/notraces/deepseek-v2-lite-moebeyond"
contains "missing trace: hint names MOESIM_TRACES" "$tmp/err" \
    "hint: the traces were looked for under MOESIM_TRACES=$tmp/notraces"
(cd "$tmp/elsewhere" && "$MOESIM" --version >"$tmp/ver" 2>&1)
contains "unset MOESIM_TRACES: traces beside the source tree" "$tmp/ver" \
    "traces: $ROOT/../shared/data/traces"

# ---- make uninstall ----
make -s --no-print-directory uninstall B="$BUILD" PREFIX="$P" >"$tmp/out" 2>&1
check "make uninstall removes what was installed" \
    test ! -e "$P/bin/moesim" -a ! -e "$P/share/moesim" -a ! -e "$P/share/man/man1/moesim.1"

# ---- no internal notes in the binary ----
check "no 'issue N' text in the binary" test "$(grep -caE '[Ii]ssue [0-9]+' "$MOESIM")" = 0
check "no team-only file named in the binary" \
    test "$(grep -caE 'ROUTING\.md|DESIGN\.md|STYLE\.md' "$MOESIM")" = 0

# ---- make deps / deps-test: only the run packages are required ----
# A package that cannot exist stands in for a missing one; as root the checks run as user
# nobody (setpriv), who cannot install, when nobody can read the Makefile.
as_user() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; else "$@"; fi; }
if command -v dpkg-query >/dev/null 2>&1 && as_user test -r Makefile; then
    as_user make -s --no-print-directory deps-test MPICC= DEB_PKGS_TEST="moesim-no-such-package" \
        >"$tmp/out" 2>&1
    check "deps-test: a missing optional package is not an error ($(cat "$tmp/out"))" test $? = 0
    contains "deps-test: says the tests are skipped" "$tmp/out" "optional: the tests that need them are skipped"
    as_user make -s --no-print-directory deps MPICC= DEB_PKGS="moesim-no-such-package" >"$tmp/out" 2>&1
    check "deps: a missing run package is an error" test $? != 0
    contains "deps: prints the apt-get line" "$tmp/out" "apt-get install -y moesim-no-such-package"
    for p in valgrind clang libopenmpi-dev openmpi-bin; do
        check "make run does not need $p" test "$(make -s --no-print-directory -p -n MPICC= 2>/dev/null |
            sed -n 's/^DEB_PKGS := //p' | tr ' ' '\n' | grep -cx "$p")" = 0
    done
else
    skip=$((skip + 1)); echo "t_install: skipped 6 checks: no dpkg-query, or user nobody cannot read the tree"
fi

[ "$skip" = 0 ] || echo "t_install: $skip group(s) of checks skipped (reasons above)"
echo "t_install: $pass passed, $fail failed"
[ "$fail" = 0 ]
