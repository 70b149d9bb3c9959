#!/bin/sh
# t_mpi.sh: moesim over MPI (sim/mpi_*.c), run by tests/run.sh with MOESIM=<build>/moesim
# and BUILD=<build>. Skipped (0 passed, 0 failed) when mpirun is absent or moesim was built
# without MPI (no BUILD/tests/mpi_ep_check). With 2 and 4 ranks (--oversubscribe: CI has 2 cores):
#   - tests/mpi_ep_check: the expert-parallel layer against the single-process layer;
#   - `moesim run --expert-parallel`: the points equal a single-process run's (moesim compare
#     --rtol 0: routing metrics and counts bit-identical, output errors within 1e-6), expert
#     loads, histograms and per-batch routing metrics identical, and ep_ranks holds one row per
#     point, capacity mode and rank whose counts add up (tokens over ranks = the point's entries,
#     rows sent = rows received, bytes_sent = bytes_recv, E/P experts and T/P tokens per rank,
#     per_rank claims = k * tokens held);
#   - `moesim run` without it (points dealt over ranks): the database equals the single-process
#     one in every column except timings, wall_s, throughput and created_at; a rerun resumes;
#   - charts: `moesim run --expert-parallel` (rank 0) draws ep_ranks beside the usual charts, its
#     data file holds one row per router, capacity mode and rank; a database without ep_ranks
#     gets exactly the usual charts and no note;
#   - errors end the job with a clear message and no rank left waiting: E < P under
#     --expert-parallel, a database rank 0 cannot open (both modes).
# Prints "t_mpi: N passed, N failed" last.
NAME=t_mpi
. tests/lib.sh
export MOESIM_PLOTS="${MOESIM_PLOTS:-$REPO/plots}" # the tracked gnuplot scripts

if ! command -v mpirun >/dev/null 2>&1 || [ ! -x "$BUILD/tests/mpi_ep_check" ]; then
    skip 1 "no MPI: mpirun or an MPI build of moesim (tests/mpi_ep_check) is missing"
    finish
fi

make_tmp
mpi_env
# mpirun with a time limit: a hang is a failure, not a stuck suite
mpi() { n=$1; shift; timeout 300 mpirun --oversubscribe -np "$n" "$@"; }
q() { sqlite3 "$@"; }

# ---- the expert-parallel layer ----
for n in 1 2 4; do
    out=$(mpi "$n" "$BUILD/tests/mpi_ep_check" 2>&1)
    rc=$?
    line=$(printf '%s\n' "$out" | grep -E '^mpi_ep_check: [0-9]+ passed, [0-9]+ failed' | tail -1)
    p=$(printf '%s' "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p')
    f=$(printf '%s' "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p')
    if [ -z "$p" ] || [ "$rc" != 0 ] || [ "$f" != 0 ]; then
        bad "mpi_ep_check -np $n (exit $rc): $(printf '%s\n' "$out" | tail -20)"
    else
        pass=$((pass + p))
    fi
done

# ---- a small sweep: 6 routers (sparse, expert choice, dense soft_moe, hash), 2 cf ----
# T = 64 tokens and E = 8 experts: 4 tokens-and-experts blocks divide evenly for 2 and 4 ranks.
ep_spec "$tmp/ep.ini" t_mpi "topk switch gshard ec soft hash" 2
cd "$tmp" || exit 1
check "single-process run" "$MOESIM" run ep.ini --db single.db --no-plots >single.out 2>&1
npoints=$(q single.db "SELECT count(*) FROM points")
same "points in the single-process run" "$npoints" 22

# Every column of `points` but timings, throughput, wall time and created_at; batches likewise.
pcols=$(q single.db "SELECT group_concat(name, ', ') FROM pragma_table_info('points') WHERE name
    NOT LIKE 'time_%' AND name NOT IN ('created_at', 'wall_s', 'tokens_per_s', 'gflops_per_s')")
bcols=$(q single.db "SELECT group_concat(name, ', ') FROM pragma_table_info('batches') WHERE name
    NOT LIKE 'time_%'")
# rows of table/columns in one database and not the other (both ways), "0" when equal
differ() { # differ DB1 DB2 TABLE COLUMNS
    a=$(q "$1" "ATTACH '$2' AS o; SELECT count(*) FROM (SELECT $4 FROM main.$3 EXCEPT
        SELECT $4 FROM o.$3)")
    b=$(q "$2" "ATTACH '$1' AS o; SELECT count(*) FROM (SELECT $4 FROM main.$3 EXCEPT
        SELECT $4 FROM o.$3)")
    echo $((a + b))
}

# ---- --expert-parallel over 2 and 4 ranks ----
for n in 2 4; do
    db=ep$n.db
    plots=--no-plots # charts drawn by the 2-rank run only (when gnuplot is there)
    [ $n = 2 ] && command -v gnuplot >/dev/null 2>&1 && plots=
    if mpi "$n" "$MOESIM" run ep.ini --db "$db" $plots --expert-parallel >ep$n.out 2>&1; then
        ok
    else
        bad "mpirun -np $n --expert-parallel: $(tail -15 ep$n.out)"
        continue
    fi
    check "-np $n --expert-parallel: moesim compare --rtol 0 against one process" \
        "$MOESIM" compare single.db "$db" --rtol 0 >cmp$n.out 2>&1
    ncols="spec, router, config_key, capacity, num_entries, n_tokens, load_imbalance,
        kept_load_imbalance, assignment_drop_rate, token_drop_rate, importance_cv2, aux_loss,
        z_loss, flops_expert_useful, flops_expert_padded"
    same "-np $n --expert-parallel: routing columns bit-identical" \
        "$(differ single.db "$db" points "$ncols")" 0
    same "-np $n --expert-parallel: expert loads identical" \
        "$(differ single.db "$db" expert_loads "point, expert, assigned, kept, importance")" 0
    same "-np $n --expert-parallel: experts-per-token identical" \
        "$(differ single.db "$db" experts_per_token "point, experts, tokens")" 0
    same "-np $n --expert-parallel: groups-touched identical" \
        "$(differ single.db "$db" groups_touched "point, groups, tokens")" 0
    # output errors: sparse routers bit-identical (same FFN calls, same combine order), dense
    # soft_moe within 1e-6 (partial slot sums added per rank)
    same "-np $n --expert-parallel: sparse output errors bit-identical" "$(q "$db" "ATTACH
        'single.db' AS s; SELECT count(*) FROM points p JOIN s.points r USING (config_key) WHERE
        p.router_type != 'soft_moe' AND (p.output_error_dense IS NOT r.output_error_dense OR
        p.output_error_dropless IS NOT r.output_error_dropless)")" 0
    same "-np $n --expert-parallel: soft_moe output error within 1e-6" "$(q "$db" "ATTACH
        'single.db' AS s; SELECT count(*) FROM points p JOIN s.points r USING (config_key) WHERE
        p.router_type = 'soft_moe' AND NOT abs(p.output_error_dense - r.output_error_dense) <=
        1e-6")" 0
    same "-np $n: ep_ranks rows (points x 2 capacity modes x ranks)" \
        "$(q "$db" "SELECT count(*) FROM ep_ranks")" $((npoints * 2 * n))
    same "-np $n: rank placement E/P experts, T/P tokens" "$(q "$db" "SELECT count(*) FROM
        ep_ranks WHERE ranks = $n AND experts = 8 / $n AND first_expert = rank * (8 / $n) AND
        tokens_held = 64 / $n AND first_token = rank * (64 / $n)")" $((npoints * 2 * n))
    same "-np $n: tokens over ranks = the point's entries (global plan)" "$(q "$db" "SELECT
        count(*) FROM (SELECT e.point, sum(e.tokens) AS t, p.num_entries AS ne FROM ep_ranks e
        JOIN points p ON p.id = e.point WHERE e.capacity = 'global' GROUP BY e.point) WHERE
        abs(t - ne) > 1e-9")" 0
    same "-np $n: rows sent = rows received over ranks" "$(q "$db" "SELECT count(*) FROM
        (SELECT point, capacity, sum(rows_out) AS o, sum(rows_in) AS i FROM ep_ranks GROUP BY
        point, capacity) WHERE abs(o - i) > 1e-9")" 0
    same "-np $n: bytes_sent = bytes_recv = (rows_out + rows_in) * D * 4" "$(q "$db" "SELECT
        count(*) FROM ep_ranks WHERE bytes_sent != bytes_recv OR abs(bytes_sent - (rows_out +
        rows_in) * 16 * 4) > 1e-6")" 0
    same "-np $n: per_rank claims = k * tokens held (topk k=2, switch k=1)" "$(q "$db" "SELECT
        count(*) FROM ep_ranks e JOIN points p ON p.id = e.point WHERE e.capacity = 'per_rank'
        AND p.router IN ('topk', 'switch') AND e.claims != p.k * e.tokens_held")" 0
    same "-np $n: global rows have no per-rank claims, timings present" "$(q "$db" "SELECT
        count(*) FROM ep_ranks WHERE (capacity = 'global' AND claims IS NOT NULL) OR a2a_s IS
        NULL OR expert_s IS NULL OR a2a_s < 0 OR expert_s < 0")" 0
    same "-np $n: ep_summary has both capacity modes for every point" \
        "$(q "$db" "SELECT count(*) FROM ep_summary WHERE device_imbalance >= 1")" \
        $((npoints * 2))
done

# ---- the chart ----
if command -v gnuplot >/dev/null 2>&1; then
    check "--expert-parallel run drew ep_ranks.png and .svg (rank 0)" \
        test -s plots/out/ep2/ep_ranks.png -a -s plots/out/ep2/ep_ranks.svg
    same "ep_ranks.dat: a row per router, capacity mode and rank" \
        "$(grep -vc '^#' plots/out/ep2/ep_ranks.dat | tr -d ' ')" \
        "$(q ep2.db "SELECT count(DISTINCT router) * 2 * 2 + (count(DISTINCT router) * 2 - 1) * 2
            FROM points")" # data rows plus two blank lines between blocks
    "$MOESIM" plot single.db --out charts1 >plot1.out 2>plot1.err
    same "a database without ep_ranks: the usual 7 charts" "$(ls charts1/*.png | wc -l)" 7
    check "a database without ep_ranks: no ep_ranks chart, no note" \
        test ! -e charts1/ep_ranks.png -a ! -s plot1.err
fi

# ---- points dealt over ranks (no --expert-parallel) ----
for n in 2 4; do
    db=sw$n.db
    if mpi "$n" "$MOESIM" run ep.ini --db "$db" --no-plots >sw$n.out 2>&1; then
        ok
    else
        bad "mpirun -np $n (points over ranks): $(tail -15 sw$n.out)"
        continue
    fi
    check "-np $n points over ranks: moesim compare --rtol 0 --atol 0" \
        "$MOESIM" compare single.db "$db" --rtol 0 --atol 0 >cmpsw$n.out 2>&1
    same "-np $n points over ranks: points equal (all but timings, created_at)" \
        "$(differ single.db "$db" points "id, $pcols")" 0
    same "-np $n points over ranks: batches equal (all but timings)" \
        "$(differ single.db "$db" batches "$bcols")" 0
    same "-np $n points over ranks: expert_loads equal" \
        "$(differ single.db "$db" expert_loads "*")" 0
    same "-np $n points over ranks: experts_per_token equal" \
        "$(differ single.db "$db" experts_per_token "*")" 0
    same "-np $n points over ranks: groups_touched equal" \
        "$(differ single.db "$db" groups_touched "*")" 0
    same "-np $n points over ranks: groups_touched counts every token of every batch" \
        "$(q "$db" "SELECT (SELECT sum(tokens) FROM groups_touched) =
            (SELECT sum(tokens) FROM experts_per_token) AND count(*) > 0 FROM groups_touched")" 1
    same "-np $n points over ranks: no ep_ranks rows" \
        "$(q "$db" "SELECT count(*) FROM ep_ranks")" 0
done
mpi 2 "$MOESIM" run ep.ini --db sw2.db --no-plots >resume.out 2>&1
same "rerun over 2 ranks resumes: nothing to run, nothing added" \
    "$(grep -c "22 stored, 0 to run" resume.out) $(q sw2.db "SELECT count(*) FROM points")" "1 22"

# ---- --dry-run over ranks: rank 0 lists the points once, the workers stop ----
for f in "" --expert-parallel; do
    mpi 2 "$MOESIM" run ep.ini --dry-run $f >dry.out 2>&1
    rc=$?
    same "--dry-run $f over 2 ranks: exit 0" "$rc" 0
    same "--dry-run $f over 2 ranks: the points listed once" \
        "$(grep -c "^22 points; spec ep.ini checked" dry.out) $(grep -c "^router=topk " dry.out)" \
        "1 4"
done

# ---- --expert-parallel without mpirun: one rank ----
check "--expert-parallel without mpirun (one rank)" \
    "$MOESIM" run ep.ini --db ep1.db --no-plots --expert-parallel --set experiment.routers=topk \
    >ep1.out 2>&1
same "one rank: ep_ranks rows, all rows local" "$(q ep1.db "SELECT count(*), sum(rows_out + rows_in)
    FROM ep_ranks")" "8|0.0"
# `moesim list metrics` names every per-rank metric of ep_ranks (all columns but the keys and
# the rank's placement) as ep_ranks.<column>
"$MOESIM" list metrics | awk '{print $1}' >listed.txt
q ep1.db "SELECT 'ep_ranks.' || name FROM pragma_table_info('ep_ranks') WHERE name NOT IN
    ('point', 'capacity', 'rank', 'ranks', 'first_expert', 'experts', 'first_token',
    'tokens_held')" >stored.txt
unlisted=$(grep -vxF -f listed.txt stored.txt | tr '\n' ' ')
same "list metrics names the ep_ranks metrics ($(wc -l <stored.txt) columns)" "$unlisted" ""

# the OPENBLAS_CORETYPE warning (when it applies) comes from rank 0 only, not once per rank
same "points over 4 ranks: at most one OPENBLAS_CORETYPE warning" \
    "$(grep -c 'warning: OPENBLAS_CORETYPE' sw4.out | awk '{print ($1 <= 1)}')" 1
same "--expert-parallel over 4 ranks: at most one OPENBLAS_CORETYPE warning" \
    "$(grep -c 'warning: OPENBLAS_CORETYPE' ep4.out | awk '{print ($1 <= 1)}')" 1

# ---- errors: a clear message, a non-zero exit, no rank left waiting ----
mpi 4 "$MOESIM" run ep.ini --db err.db --no-plots --expert-parallel --set shape.s.E=2 \
    >err1.out 2>&1
rc=$?
if [ $rc != 0 ] && [ $rc != 124 ] && grep -q "needs E >= 4" err1.out; then ok; else
    bad "E < P under --expert-parallel (exit $rc): $(tail -5 err1.out)"; fi
same "E < P: nothing stored" "$(q err.db "SELECT count(*) FROM points")" 0
mkdir adir # a folder where the database file should be: rank 0 cannot open it (even as root)
mpi 2 "$MOESIM" run ep.ini --db adir --no-plots >err2.out 2>&1
rc=$?
if [ $rc != 0 ] && [ $rc != 124 ] && grep -q "moesim: error" err2.out; then ok; else
    bad "unopenable database under mpirun (exit $rc): $(tail -5 err2.out)"; fi
mpi 2 "$MOESIM" run ep.ini --db adir --no-plots --expert-parallel >err3.out 2>&1
rc=$?
if [ $rc != 0 ] && [ $rc != 124 ] && grep -q "moesim: error" err3.out; then ok; else
    bad "unopenable database under --expert-parallel (exit $rc): $(tail -5 err3.out)"; fi


# ---- pad_to_capacity under --expert-parallel ----
# topk (k = 2), switch and hash padded to capacity, cf 1.0 and 1.5, T = 64, E = 8. Expected
# values: the single-process runs of the same spec (padded, and unpadded with --set), and for
# the per-rank-capacity plan the rows DeepSpeed's MOELayer sends (deepspeed/moe/sharded_moe.py:
# dispatched_input = einsum("sec,sm->ecm") of shape (E, C_q, d), then _AllToAll splits it over
# the ranks): with equal token blocks every rank has C_q = plan_capacity / P and sends
# (E - E/P) C_q rows, keeps E/P C_q and receives E/P C_q (P - 1), zero rows included.
sed -e 's/^name = t_mpi$/name = t_mpi_pad/' -e 's/^routers = .*/routers = topk switch hash/' \
    -e '/^type = \(topk\|switch\|hash\)$/a pad_to_capacity = true' ep.ini >pad.ini
unpad="--set router.topk.pad_to_capacity=false --set router.switch.pad_to_capacity=false
    --set router.hash.pad_to_capacity=false"
check "padded single-process run" "$MOESIM" run pad.ini --db padsingle.db --no-plots >pads.out 2>&1
check "unpadded single-process run" "$MOESIM" run pad.ini --db unpadsingle.db --no-plots \
    $unpad >unpads.out 2>&1
same "padded spec: 12 points, all padded" "$(q padsingle.db "SELECT count(*), sum(router_options
    LIKE '%pad_to_capacity=true%') FROM points")" "12|12"
for n in 2 4; do
    db=pad$n.db
    if mpi "$n" "$MOESIM" run pad.ini --db "$db" --no-plots --expert-parallel >pad$n.out 2>&1
    then
        ok
    else
        bad "mpirun -np $n --expert-parallel padded: $(tail -15 pad$n.out)"
        continue
    fi
    check "-np $n padded: moesim compare --rtol 0 against one process" \
        "$MOESIM" compare padsingle.db "$db" --rtol 0 >cmppad$n.out 2>&1
    same "-np $n padded: output errors bit-identical to the unpadded single-process run" \
        "$(q "$db" "ATTACH 'unpadsingle.db' AS s; SELECT count(*), sum(p.output_error_dense IS
        r.output_error_dense AND p.output_error_dropless IS r.output_error_dropless) FROM points
        p JOIN s.points r USING (router, capacity_factor, distribution)")" "12|12"
    same "-np $n padded: flops_expert_executed = flops_expert_padded (the single run's)" \
        "$(q "$db" "ATTACH 'padsingle.db' AS s; SELECT count(*) FROM points p JOIN s.points r
        USING (config_key) WHERE p.flops_expert_executed = p.flops_expert_padded AND
        p.flops_expert_executed = r.flops_expert_executed")" 12
    same "-np $n padded per-rank plan: DeepSpeed's (E, C_q) buffer per rank" "$(q "$db" "SELECT
        count(*) FROM ep_ranks WHERE capacity = 'per_rank' AND rows_out = (8 - experts) *
        plan_capacity / $n AND rows_local = experts * plan_capacity / $n AND rows_in = experts
        * plan_capacity * ($n - 1) / $n AND bytes_sent = (rows_out + rows_in) * 16 * 4")" \
        $((12 * n))
    # the unpadded reference: the same points (topk, switch, hash) of ep.ini's run on n ranks
    same "-np $n padded global plan: the rows of the unpadded run (empty slots on the expert)" \
        "$(q "$db" "ATTACH 'ep$n.db' AS u; SELECT count(*) FROM ep_ranks e JOIN points p ON
        p.id = e.point JOIN u.points pu USING (router, capacity_factor, distribution) JOIN
        u.ep_ranks eu ON eu.point = pu.id AND eu.rank = e.rank AND eu.capacity = e.capacity WHERE
        e.capacity = 'global' AND e.rows_out = eu.rows_out AND e.rows_in = eu.rows_in AND
        e.rows_local = eu.rows_local")" $((12 * n))
done

finish
