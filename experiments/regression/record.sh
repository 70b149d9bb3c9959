#!/bin/sh
# record.sh MOESIM [OUTDIR [NAME...]]: re-records the regression baselines (`make record`).
# For every experiments/regression/NAME.ini (or the NAMEs given): runs it into a scratch
# database, writes its recorded metrics (moesim compare --record), prints what changed against
# OUTDIR/NAME.tsv (moesim compare: the drift table and a summary per metric) and replaces it.
# OUTDIR defaults to results/regression. Specs marked "; needs: traces" read the recorded traces
# under $MOESIM_TRACES (default ../shared/data/traces) and are skipped, keeping their recorded
# file, when that folder is absent; the others run with MOESIM_TRACES pointing at an empty folder,
# so they use only what the repository holds. Runs on whatever OpenBLAS kernel the environment
# gives (routing metrics do not depend on it; output errors may move in their last bits, within
# compare's tolerance). Run from anywhere; exits non-zero if a run fails.
MOESIM=${1:?usage: record.sh MOESIM [OUTDIR [NAME...]]}
case "$MOESIM" in /*) ;; *) MOESIM="$(pwd)/$MOESIM" ;; esac
OUT=${2:-results/regression}
case "$OUT" in /*) ;; *) OUT="$(pwd)/$OUT" ;; esac
[ $# -ge 2 ] && shift 2 || shift $#
cd "$(dirname "$0")/../.." || exit 1
traces=${MOESIM_TRACES:-../shared/data/traces}
tmp=$(mktemp -d /tmp/moesim_record.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/no-traces" "$OUT" || exit 1

names=$*
[ -n "$names" ] || names=$(for s in experiments/regression/*.ini; do basename "$s" .ini; done)
status=0 changed=0
for name in $names; do
    spec=experiments/regression/$name.ini
    rec=$OUT/$name.tsv
    if [ ! -f "$spec" ]; then
        echo "record: no spec $spec" >&2; status=1; continue
    fi
    if grep -q '^; needs: traces' "$spec"; then
        if [ ! -d "$traces" ]; then
            echo "record: $name skipped: it needs the recorded traces under $traces (absent);" \
                 "$rec kept as it is"
            continue
        fi
        tdir=$traces
    else
        tdir=$tmp/no-traces
    fi
    echo "== $name: $spec"
    if ! MOESIM_TRACES=$tdir "$MOESIM" run "$spec" --db "$tmp/$name.db" --no-plots \
            >"$tmp/$name.log" 2>&1; then
        cat "$tmp/$name.log" >&2
        echo "record: the run of $spec failed; $rec kept as it is" >&2
        status=1
        continue
    fi
    "$MOESIM" compare --record "$tmp/$name.db" "$tmp/$name.tsv" >/dev/null || { status=1; continue; }
    if [ -f "$rec" ]; then
        if "$MOESIM" compare "$rec" "$tmp/$name.tsv" 2>&1; then
            if cmp -s "$rec" "$tmp/$name.tsv"; then
                echo "$rec: unchanged"
                continue
            fi
            # no drift beyond the tolerances, but some value moved in its last bits (e.g. an
            # fp32 output error after a change to the layer's GEMM schedule): rewrite, so the
            # tracked file stays what this build records byte for byte
            echo "$rec: within tolerance, last bits differ: rewritten ($(diff "$rec" "$tmp/$name.tsv" | grep -c '^>') values)"
        else
            echo "$rec: updated"
        fi
    else
        echo "$rec: new ($(grep -c '^point' "$tmp/$name.tsv") points)"
    fi
    mv "$tmp/$name.tsv" "$rec" || { status=1; continue; }
    changed=$((changed + 1))
done
for rec in "$OUT"/*.tsv; do
    [ -f "$rec" ] || continue
    [ -f "experiments/regression/$(basename "$rec" .tsv).ini" ] ||
        echo "record: note: $rec has no spec in experiments/regression/ (remove it?)"
done
echo "record: $changed file(s) written to $OUT"
exit $status
