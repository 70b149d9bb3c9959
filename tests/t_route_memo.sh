#!/bin/sh
# t_route_memo.sh: the routers' capacity-free work kept across the points of a sweep that differ
# only in the capacity factor (sim/route_memo.h). A routing-only sweep (f = 0, so every batch
# comes from the gate cache) of relu, relu with renormalize (its key is relu's: renormalize is
# read only by the capacity part), topp with order token_major, sinkhorn k = 2, sinkhorn with
# order probs and relu with order gate, at capacity factors 0.5 1.0 2.0 on two distributions of
# 384 tokens, d 16, E 16, runs once; then every one of its 36 points runs alone (one point per
# process: nothing to reuse) with --force into a second database. Checked: the sweep reuses the
# work as counted by hand (points expand distribution, router, capacity factor: per
# distribution relu records and its other two points reuse, relu_rn reuses relu's for its three,
# each of the four other routers records once and reuses twice: 5 records and 13 reuses, twice); every metric column of every point (points and
# batches tables: all but the timings, ids and dates), its expert loads, its experts-per-token
# and groups-touched histograms equal the lone run's exactly.
NAME=t_route_memo
. tests/lib.sh
make_tmp

if ! command -v sqlite3 >/dev/null 2>&1; then
    skip 7 "the sqlite3 shell is not installed"
    finish
fi
ROUTERS="relu relu_rn topp_tm sinkhorn sinkhorn_probs relu_gate"
spec() { # FILE ROUTERS CFS
    {
        printf '[experiment]\nname = memo\nrouters = %s\ncapacity_factors = %s\n' "$2" "$3"
        printf 'tokens = 384\nbatches = 1\nseeds = 1\n'
        printf '\n[router.relu]\ntype = relu\n'
        printf '\n[router.relu_rn]\ntype = relu\nrenormalize = true\n'
        printf '\n[router.topp_tm]\ntype = topp\norder = token_major\n'
        printf '\n[router.sinkhorn]\ntype = sinkhorn\nk = 2\n'
        printf '\n[router.sinkhorn_probs]\ntype = sinkhorn\nk = 2\norder = probs\n'
        printf '\n[router.relu_gate]\ntype = relu\norder = gate\n'
        printf '\n[distribution.g]\nsource = gaussian\n'
        printf '\n[distribution.c]\nsource = clustered\nzipf_s = 1.5\n'
        printf '\n[shape.s]\nd = 16\nf = 0\nE = 16\n'
    } >"$1"
}
spec "$tmp/sweep.ini" "$ROUTERS" "0.5 1.0 2.0"
status "sweep" 0 "$tmp/sweep.out" "$M" run "$tmp/sweep.ini" --db "$tmp/sweep.db" --no-plots
contains "the sweep reuses the capacity-free work" "$tmp/sweep.out" \
    "capacity-free routing work kept for 10 routes, reused by 26"
run_alone spec "$ROUTERS" "0.5 1.0 2.0" "$tmp/alone.db" "reused by 0"
same_points "$tmp/sweep.db" "$tmp/alone.db" 36 16
finish
