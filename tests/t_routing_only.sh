#!/bin/sh
# t_routing_only.sh: a shape with f = 0 is a routing-only sweep. The same tiny sweep (tests/lib.sh
# tiny_spec: topk k=2, switch and expert_choice, capacity factors 1.0 and 1.5, two
# distributions, 128 tokens x 2 batches, d 16, E 8) runs once with f = 32 and once with f = 0.
# Checked: the routing-only run stores every point; its output-error metrics are NULL and its
# expert FLOPs 0, while the full run has them; its gate FLOPs are 2*T*d*M = 2*128*16*8 = 32768
# per batch (hand-worked), the same as the full run's; the routing metrics (entries, load
# imbalance, drop rates, aux loss) equal the full run's exactly (the plan does not depend on the
# experts); no expert time is recorded; experiments/routing_only.ini expands to its 60 points at
# its own size (2^20 tokens, E = 256: the spec check allocates no router at that size).
# The gate cache: each run draws and gates 2 distributions x 2 batches = 4 batches and serves the
# other 12 points x 2 batches - 4 = 20 from the cache (counted by hand from tiny_spec).
NAME=t_routing_only
. tests/lib.sh
make_tmp

if ! command -v sqlite3 >/dev/null 2>&1; then
    skip 13 "the sqlite3 shell is not installed"
    finish
fi
tiny_spec "$tmp/full.ini" ro_full "topk switch ec" g c
sed 's/^f = 32$/f = 0/' "$tmp/full.ini" >"$tmp/ro.ini"
status "full run" 0 "$tmp/full.out" "$M" run "$tmp/full.ini" --db "$tmp/full.db" --no-plots
status "routing-only run" 0 "$tmp/ro.out" "$M" run "$tmp/ro.ini" --db "$tmp/ro.db" --no-plots
contains "gate cache: 4 batches computed, 20 reused" "$tmp/ro.out" \
    "gate cache: 4 batches drawn and gated, 20 reused"
same "routing-only points stored" "$(q "$tmp/ro.db" 'SELECT count(*) FROM points')" 12
same "routing-only: f stored as 0" "$(q "$tmp/ro.db" 'SELECT count(*) FROM points WHERE f = 0')" 12
same "routing-only: output errors NULL" \
    "$(q "$tmp/ro.db" 'SELECT count(*) FROM points WHERE output_error_dense IS NULL
                       AND output_error_dropless IS NULL')" 12
same "full run: output errors present" \
    "$(q "$tmp/full.db" 'SELECT count(*) FROM points WHERE output_error_dense IS NOT NULL')" 12
same "routing-only: no expert FLOPs, gate FLOPs 2*T*d*M" \
    "$(q "$tmp/ro.db" 'SELECT count(*) FROM points WHERE flops_expert_useful = 0
                       AND flops_expert_padded = 0 AND flops_gate = 32768')" 12
same "full run: the same gate FLOPs, expert FLOPs > 0" \
    "$(q "$tmp/full.db" 'SELECT count(*) FROM points WHERE flops_gate = 32768
                         AND flops_expert_useful > 0')" 12
same "routing-only: no expert time" \
    "$(q "$tmp/ro.db" 'SELECT count(*) FROM points WHERE time_experts_s = 0
                       AND time_dispatch_s = 0 AND time_combine_s = 0')" 12
same "routing metrics equal the full run's" \
    "$(q "$tmp/ro.db" "ATTACH '$tmp/full.db' AS f;
       SELECT count(*) FROM points a JOIN f.points b
         ON a.router = b.router AND a.capacity_factor IS b.capacity_factor
        AND a.distribution = b.distribution
       WHERE a.num_entries = b.num_entries AND a.load_imbalance = b.load_imbalance
         AND a.assignment_drop_rate = b.assignment_drop_rate
         AND a.token_drop_rate = b.token_drop_rate AND a.aux_loss IS b.aux_loss")" 12
status "routing_only.ini expands" 0 "$tmp/dry.out" "$M" run experiments/routing_only.ini \
    --db "$tmp/dry.db" --dry-run
contains "routing_only.ini: 60 points" "$tmp/dry.out" "60 points"
finish
