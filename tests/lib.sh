# tests/lib.sh: the helpers every shell test tests/t_*.sh sources, from the repository root:
#     NAME=t_x; . tests/lib.sh
# It sets MOESIM and BUILD (absolute), REPO (the repository root), the counters, and gives:
#   ok; bad MSG (alias no)            count a passed / failed check (a failure is printed)
#   check DESC CMD...                 CMD succeeds
#   same DESC GOT WANT                the two strings are equal
#   contains DESC FILE TEXT / lacks   FILE holds (does not hold) the fixed string TEXT
#   status DESC WANT OUT CMD...       CMD (stdout+stderr to OUT) exits WANT
#   skip N REASON                     N checks not run, printed as "SKIP NAME: N checks: REASON"
#   make_tmp                          tmp=a fresh folder, removed on exit (with $cleanup_extra)
#   tiny_spec FILE NAME ROUTERS DIST1 DIST2
#                                     the small sweep most tests run: ROUTERS (names from topk,
#                                     switch, gshard, ec, soft) at capacity factors 1.0 and 1.5,
#                                     128 tokens, 2 batches, 1 seed, 32 error tokens; distributions
#                                     DIST1 (gaussian; none when "-") and DIST2 (clustered, zipf_s
#                                     1.5); one shape d 16, f 32, E 8
#   ep_spec FILE NAME ROUTERS BATCHES [EXTRA]
#                                     the expert-parallel sweep of tests/t_mpi.sh and
#                                     tests/t_calib.sh: ROUTERS (as tiny_spec, plus hash) at
#                                     capacity factors 1.0 and 1.5, 64 tokens (4 blocks for 2 and
#                                     4 ranks), BATCHES batches, 1 seed, 16 error tokens;
#                                     distributions gaussian and clustered (zipf_s 1.5); shape d
#                                     16, f 32, E 8; EXTRA: more [experiment] lines (printf %b)
#   e4_spec FILE NAME BATCHES LINES   the 50-token sweep of tests/t_pad_flops.sh and
#                                     tests/t_preset_sweep.sh: [experiment] NAME with LINES
#                                     (printf %b: routers or preset, shapes), 50 tokens, BATCHES
#                                     batches, 1 seed, 16 error tokens; distribution g (gaussian);
#                                     shape s: d 16, f 32, E 4 (more sections: append to FILE)
#   chart_files DIR NAME              DIR/NAME.png is a non-empty PNG, DIR/NAME.svg a whole SVG,
#                                     DIR/NAME.dat non-empty (3 checks)
#   mpi_env                           Open MPI settings for mpirun in tests (after make_tmp)
#   run_alone SPEC ROUTERS CFS DB RE  each (router, capacity factor) of ROUTERS x CFS run alone:
#                                     SPEC FILE ROUTER CF writes its spec, `moesim run --force`
#                                     into DB, one process each; every run succeeds and prints a
#                                     line matching the grep pattern RE (1 check)
#   same_points A B N E               the N points of database A equal those of the same
#                                     configuration in database B (N each, E experts): every
#                                     column of points and batches but timings, ids and dates,
#                                     expert loads, experts-per-token and groups-touched
#                                     histograms (4 checks)
#   finish                            prints "NAME: N passed, N failed[, N skipped]" and exits
# tests/run.sh reads that last line and the SKIP lines.
REPO=$(pwd)
MOESIM=${MOESIM:-./moesim}
case "$MOESIM" in /*) ;; *) MOESIM="$REPO/$MOESIM" ;; esac
BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD="$REPO/$BUILD" ;; esac
M=$MOESIM
pass=0; fail=0; skipped=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $NAME: $*"; }
no() { bad "$@"; }
check() { d=$1; shift; if "$@"; then ok; else bad "$d"; fi; }
same() { if [ "$2" = "$3" ]; then ok; else bad "$1: got '$2', want '$3'"; fi; }
contains() { if grep -qF -- "$3" "$2"; then ok; else bad "$1: '$3' not in: $(head -c 3000 "$2")"; fi; }
lacks() { if grep -qF -- "$3" "$2"; then bad "$1: '$3' in: $(head -c 3000 "$2")"; else ok; fi; }
status() {
    d=$1 want=$2 of=$3; shift 3
    "$@" >"$of" 2>&1
    got=$?
    if [ "$got" = "$want" ]; then ok; else bad "$d: exit $got, expected $want: $(head -c 3000 "$of")"; fi
}
skip() { skipped=$((skipped + $1)); echo "SKIP $NAME: $1 checks: $2"; }
q() { sqlite3 "$@"; }
finish() {
    if [ "$skipped" = 0 ]; then echo "$NAME: $pass passed, $fail failed"
    else echo "$NAME: $pass passed, $fail failed, $skipped skipped"; fi
    [ "$fail" = 0 ]
    exit $?
}

cleanup_extra=:
make_tmp() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/moesim_$NAME.XXXXXX") || exit 1
    trap 'eval "$cleanup_extra"; rm -rf "$tmp"' EXIT
}

# the [router.NAME] sections of the routers named in $1 (tiny_spec, ep_spec)
spec_routers() {
    for r in $1; do
        case $r in
        topk) printf '\n[router.topk]\ntype = topk\nk = 2\n' ;;
        ec) printf '\n[router.ec]\ntype = expert_choice\n' ;;
        soft) printf '\n[router.soft]\ntype = soft_moe\n' ;;
        *) printf '\n[router.%s]\ntype = %s\n' "$r" "$r" ;;
        esac
    done
}

tiny_spec() {
    {
        printf '; %s: a small sweep for tests/%s.sh (tests/lib.sh tiny_spec)\n' "$2" "$NAME"
        printf '[experiment]\nname = %s\nrouters = %s\n' "$2" "$3"
        printf 'capacity_factors = 1.0 1.5\ntokens = 128\nbatches = 2\nseeds = 1\nerror_tokens = 32\n'
        spec_routers "$3"
        [ "$4" = - ] || printf '\n[distribution.%s]\nsource = gaussian\n' "$4"
        printf '\n[distribution.%s]\nsource = clustered\nzipf_s = 1.5\n' "$5"
        printf '\n[shape.s]\nd = 16\nf = 32\nE = 8\n'
    } >"$1"
}

ep_spec() {
    {
        printf '; %s: the expert-parallel sweep of tests/%s.sh (tests/lib.sh ep_spec)\n' "$2" "$NAME"
        printf '[experiment]\nname = %s\nrouters = %s\n' "$2" "$3"
        printf 'capacity_factors = 1.0 1.5\ntokens = 64\nbatches = %s\nseeds = 1\n' "$4"
        printf 'error_tokens = 16\n'
        [ -z "${5:-}" ] || printf '%b\n' "$5"
        spec_routers "$3"
        printf '\n[distribution.gaussian]\nsource = gaussian\n'
        printf '\n[distribution.clustered]\nsource = clustered\nzipf_s = 1.5\n'
        printf '\n[shape.s]\nd = 16\nf = 32\nE = 8\n'
    } >"$1"
}

e4_spec() {
    {
        printf '; %s: the 50-token sweep of tests/%s.sh (tests/lib.sh e4_spec)\n' "$2" "$NAME"
        printf '[experiment]\nname = %s\n%b\n' "$2" "$4"
        printf 'tokens = 50\nbatches = %s\nseeds = 1\nerror_tokens = 16\n' "$3"
        printf '\n[distribution.g]\nsource = gaussian\n'
        printf '\n[shape.s]\nd = 16\nf = 32\nE = 4\n'
    } >"$1"
}

chart_files() {
    png=$1/$2.png svg=$1/$2.svg
    if [ -s "$png" ] && [ "$(od -An -tx1 -N8 "$png" | tr -d ' \n')" = 89504e470d0a1a0a ]; then ok
    else bad "$2.png: missing, empty or not a PNG"; fi
    if [ -s "$svg" ] && grep -q '<svg' "$svg" && grep -q '</svg>' "$svg"; then ok
    else bad "$2.svg: missing, empty or not a whole SVG"; fi
    check "$2.dat written" test -s "$1/$2.dat"
}

# Open MPI for the tests (after make_tmp): runs as root in CI, ranks oversubscribe the 2 cores,
# one BLAS thread per rank, and under AddressSanitizer only Open MPI's own leaks are suppressed.
mpi_env() {
    # root in CI; 2 cores for 4 ranks; one BLAS thread per rank
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
    # containers without ptrace rights (Docker's default) break Open MPI's shared-memory single copy
    export OMPI_MCA_btl_vader_single_copy_mechanism=none
    # Under AddressSanitizer: Open MPI's own allocations that it keeps until exit are not ours. Its
    # plugins stay loaded (no dlclose) and stacks are unwound fully, so that LeakSanitizer can name
    # the library an allocation came from and the suppressions below match only Open MPI's.
    for lib in libmpi.so libopen-pal.so libopen-rte.so libpmix.so libhwloc.so libevent mca_; do
        echo "leak:$lib"
    done >"$tmp/lsan.supp"
    export OMPI_MCA_mca_base_component_disable_dlclose=1
    # use_tls=0: LeakSanitizer's scan of the dynamic TLS of Open MPI's plugins reads a bogus
    # range for some heap layouts ("DTLS 9 at 0x3d40-0x400004e42") and its tracer dies of SIGSEGV
    # at exit; the heap and the threads' stacks are still scanned for roots.
    LSAN_OPTIONS="suppressions=$tmp/lsan.supp:print_suppressions=0:use_tls=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
    export LSAN_OPTIONS
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
}

# same_points A B N E (see above): the columns compared with IS (NULL for NaN)
same_points() {
    sp_cols() {
        q "$1" "PRAGMA table_info($2)" | cut -d'|' -f2 |
            grep -Ev '^(id|point|run|created_at|git_rev|wall_s|tokens_per_s|gflops_per_s|time_.*)$' |
            awk 'NR > 1 { printf " AND " } { printf "a.\"%s\" IS b.\"%s\"", $0, $0 }'
    }
    sp_pairs="ATTACH '$2' AS o;
       SELECT count(*) FROM points a JOIN o.points b ON a.config_key = b.config_key"
    same "$3 points in $2" "$(q "$2" 'SELECT count(*) FROM points')" "$3"
    same "points: every metric column equal" "$(q "$1" "$sp_pairs WHERE $(sp_cols "$1" points)")" "$3"
    same "batches: every metric column equal" \
        "$(q "$1" "$sp_pairs JOIN batches a2 ON a2.point = a.id JOIN o.batches b2
           ON b2.point = b.id AND b2.batch = a2.batch WHERE $(sp_cols "$1" batches |
           sed 's/a\./a2./g; s/b\./b2./g')")" "$3"
    same "expert loads, histograms equal" \
        "$(q "$1" "$sp_pairs WHERE NOT EXISTS (
             SELECT expert, assigned, kept, importance FROM expert_loads WHERE point = a.id EXCEPT
             SELECT expert, assigned, kept, importance FROM o.expert_loads WHERE point = b.id)
           AND NOT EXISTS (SELECT experts, tokens FROM experts_per_token WHERE point = a.id EXCEPT
             SELECT experts, tokens FROM o.experts_per_token WHERE point = b.id)
           AND NOT EXISTS (SELECT groups, tokens FROM groups_touched WHERE point = a.id EXCEPT
             SELECT groups, tokens FROM o.groups_touched WHERE point = b.id)
           AND (SELECT count(*) FROM expert_loads WHERE point = a.id) = $4")" "$3"
}

# run_alone SPEC ROUTERS CFS DB RE (see above); spec files and outputs in $tmp
run_alone() {
    ra_ok=1
    for ra_r in $2; do
        for ra_cf in $3; do
            "$1" "$tmp/one.ini" "$ra_r" "$ra_cf"
            "$M" run "$tmp/one.ini" --db "$4" --no-plots --force >"$tmp/one.out" 2>&1 ||
                { ra_ok=0; bad "lone point $ra_r cf $ra_cf: $(head -c 2000 "$tmp/one.out")"; }
            grep -q "$5" "$tmp/one.out" ||
                { ra_ok=0; bad "lone point $ra_r cf $ra_cf: no '$5' in $(head -c 2000 "$tmp/one.out")"; }
        done
    done
    [ "$ra_ok" = 0 ] || ok
}
