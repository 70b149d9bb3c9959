#!/bin/sh
# t_anchor_memo.sh: the anchor metrics' sums over a batch's rows kept across the points of a
# sweep (sim/anchor_memo.h). A routing-only sweep (f = 0, so every batch comes from the gate
# cache) of topp, topp with sequence_length 128 (another key: its sequences), hash and
# expert_choice at capacity factors 0.5 1.0 2.0 on two distributions of 384 tokens, d 16, E 16,
# runs once; then every (router, capacity factor) runs alone with both distributions (one
# process each, two batches: nothing to reuse) with --force into a second database. Checked:
# the sweep reuses the sums as counted by hand (topp's plans carry no fixed k, so its metrics
# take the anchor pass, which reads every row; points expand distribution, router, capacity factor:
# per distribution each topp router's first point keeps its sums and its other two reuse
# them: 4 kept, 8 reuses; topp's plans keep the router's logsumexps, so the z-loss needs no sum
# of its own; hash's and expert_choice's rows passes give the metrics every softmax row and
# logsumexp as they read the logits, so they keep nothing: no z-loss sums either); the lone
# runs reuse none, and hash's and expert_choice's print no kept sums; every metric column of
# every point (points and batches tables: all but the timings, ids and dates), its expert
# loads and histograms equal the lone run's exactly (same_points); the anchor losses are
# defined.
NAME=t_anchor_memo
. tests/lib.sh
make_tmp

if ! command -v sqlite3 >/dev/null 2>&1; then
    skip 12 "the sqlite3 shell is not installed"
    finish
fi
ROUTERS="hash ec tp tp_seq"
spec() { # FILE ROUTERS CFS
    {
        printf '[experiment]\nname = anchor\nrouters = %s\ncapacity_factors = %s\n' "$2" "$3"
        printf 'tokens = 384\nbatches = 1\nseeds = 1\n'
        printf '\n[router.hash]\ntype = hash\n'
        printf '\n[router.ec]\ntype = expert_choice\n'
        printf '\n[router.tp]\ntype = topp\n'
        printf '\n[router.tp_seq]\ntype = topp\nsequence_length = 128\n'
        printf '\n[distribution.g]\nsource = gaussian\n'
        printf '\n[distribution.z]\nsource = zipf_ids\n'
        printf '\n[shape.s]\nd = 16\nf = 0\nE = 16\n'
    } >"$1"
}
spec "$tmp/sweep.ini" "$ROUTERS" "0.5 1.0 2.0"
status "sweep" 0 "$tmp/sweep.out" "$M" run "$tmp/sweep.ini" --db "$tmp/sweep.db" --no-plots
contains "the sweep reuses the anchor sums" "$tmp/sweep.out" \
    "anchor metrics' sums over the rows kept for 4 points, reused by 8; z-loss's kept for 0, reused by 0"
run_alone spec "tp tp_seq" "0.5 1.0 2.0" "$tmp/alone.db" \
    "kept for 2 points, reused by 0; z-loss's kept for 0, reused by 0"
run_alone spec hash "0.5 1.0 2.0" "$tmp/alone.db" "gate cache: 2 batches drawn and gated, 0 reused"
lacks "a lone hash point keeps no sums (its rows pass serves the metrics)" "$tmp/one.out" \
    "anchor metrics' sums"
run_alone spec ec "0.5 1.0 2.0" "$tmp/alone.db" "gate cache: 2 batches drawn and gated, 0 reused"
lacks "a lone expert_choice point keeps no sums (its rows pass serves the metrics)" \
    "$tmp/one.out" "anchor metrics' sums"
same_points "$tmp/sweep.db" "$tmp/alone.db" 24 16
same "the anchor losses are defined (not NULL) at every point" \
    "$(q "$tmp/sweep.db" "SELECT count(*) FROM points WHERE importance_loss_vmoe IS NOT NULL")" 24
finish
