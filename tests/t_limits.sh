#!/bin/sh
# t_limits.sh: numbers beyond what moesim can hold are errors, never clamped: a seed beyond
# 2^63-1 on the command line, a k beyond the int range (2^31 - 1 = 2147483647), in `moesim route`
# and in a spec; a capacity whose layer workspaces exceed the machine's physical memory is a
# spec error naming the key, what the point needs and what the machine has, before anything
# runs (no database); 10^4 listed seeds with one repeated at the end name the repeated pair;
# compare matches 10^5 metrics listed in reverse order by name (one changed value is the only
# drift) and counts a point whose metrics are all missing and extra once.
NAME=t_limits
. tests/lib.sh
make_tmp
t=$tmp
G=tests/fixtures/errors/good.npy   # logits (6,4)

status "--seed 2^63-1 is accepted" 0 "$t/s0.out" "$M" route --router topk --logits "$G" \
    --plan "$t/p0.csv" --seed 9223372036854775807
status "--seed 2^63 is refused" 1 "$t/s1.out" "$M" route --router topk --logits "$G" \
    --plan "$t/p1.csv" --seed 9223372036854775808
contains "--seed 2^63: the line" "$t/s1.out" \
    "moesim: error: bad value '9223372036854775808': want a seed in 0..2^63-1 (--seed)"
status "--seed beyond 2^64 is refused (strtoull would clamp it)" 1 "$t/s2.out" "$M" route \
    --router topk --logits "$G" --plan "$t/p1.csv" --seed 99999999999999999999999
contains "--seed 10^23: the line" "$t/s2.out" "want a seed in 0..2^63-1 (--seed)"
status "--seed +1 is refused" 1 "$t/s3.out" "$M" route --router topk --logits "$G" \
    --plan "$t/p1.csv" --seed +1
check "no plan written for a refused seed" test ! -e "$t/p1.csv"
status "--k 2147483648 is refused, not clamped to 2147483647" 1 "$t/k1.out" "$M" route \
    --router topk --logits "$G" --plan "$t/p1.csv" --k 2147483648
contains "--k 2^31: the line" "$t/k1.out" \
    "moesim: error: bad value '2147483648' for option k: want an integer in 1..2147483647 (--k)"

# a spec: k beyond int, then a capacity of 10^12 slots (8 experts x 10^12 x (2*16 + 32) floats:
# 2 PB, beyond any machine)
tiny_spec "$t/k.ini" lim topk - cl
sed -i 's/^k = 2$/k = 2147483648/' "$t/k.ini"
status "spec k = 2^31 is refused" 1 "$t/k2.out" "$M" run "$t/k.ini" --db "$t/k.db" --no-plots
contains "spec k = 2^31: names the value and the key" "$t/k2.out" \
    "bad value '2147483648' for option k: want an integer in 1..2147483647"
contains "spec k = 2^31: names the line" "$t/k2.out" "key router.topk.k"
check "spec k = 2^31: no database" test ! -e "$t/k.db"
tiny_spec "$t/cap.ini" lim topk - cl
sed -i 's/^k = 2$/k = 2\ncapacity = 1000000000000/' "$t/cap.ini"
status "capacity 10^12 is a spec error" 1 "$t/cap.out" "$M" run "$t/cap.ini" --db "$t/c.db" \
    --no-plots
contains "capacity: what the point needs" "$t/cap.out" "moesim: error: point 1 needs about 2.05e+06 GB"
contains "capacity: why" "$t/cap.out" "for 8 experts x 1000000000000 slots)"
contains "capacity: what the machine has" "$t/cap.out" "GB of physical memory"
contains "capacity: names the key" "$t/cap.out" "key router.topk.capacity)"
check "capacity: no database" test ! -e "$t/c.db"
status "capacity 10^12: --dry-run finds it too" 1 "$t/cap2.out" "$M" run "$t/cap.ini" --dry-run
# the same through the sweep's capacity factors (10^9 x k = 2 x 128 tokens / 8 experts slots)
tiny_spec "$t/cf.ini" lim topk - cl
sed -i 's/^capacity_factors = 1.0 1.5$/capacity_factors = 1.0 1000000000/' "$t/cf.ini"
status "capacity factor 10^9 is a spec error" 1 "$t/cf.out" "$M" run "$t/cf.ini" --dry-run
contains "cf: names the experiment key" "$t/cf.out" "key experiment.capacity_factors)"
contains "cf: the second point" "$t/cf.out" "point 2 needs about"

# 10^4 seeds, the last one repeating the 5000th ("5000" and "05000" are one value)
tiny_spec "$t/seeds.ini" lim topk - cl
{ printf 'seeds = 1\n'; seq 2 9999 | xargs -n 20 echo | sed 's/^/  /'; printf '  05000\n'; } \
    >"$t/seeds.txt"
sed -i "/^seeds = 1$/{r $t/seeds.txt
d}" "$t/seeds.ini"
status "a repeated seed among 10^4 is refused" 1 "$t/seeds.out" "$M" run "$t/seeds.ini" --dry-run
contains "seeds: names the pair" "$t/seeds.out" "seed 5000 is listed twice ('5000' and '05000')"

# compare: one point of 10^5 metrics m0..m99999 (value = index), the candidate in reverse
# order with m777 = 778
{ printf 'moesim-metrics\t1\npoint\tk1\n'; seq 0 99999 | awk '{printf "\tm%d\t%d\n",$1,$1}'; } \
    >"$t/a.tsv"
{ printf 'moesim-metrics\t1\npoint\tk1\n'
  seq 0 99999 | sort -rn | awk '{v = $1; if ($1 == 777) v = 778; printf "\tm%d\t%d\n",$1,v}'; } \
    >"$t/b.tsv"
status "compare: 10^5 metrics in reverse order, one changed" 1 "$t/cmp.out" "$M" compare \
    "$t/a.tsv" "$t/b.tsv"
contains "compare: only m777 drifted" "$t/cmp.out" \
    "metrics drifted: 1 values in 1 points, 0 points missing, 0 extra"
contains "compare: its row" "$t/cmp.out" "m777    777       778"
{ printf 'moesim-metrics\t1\npoint\tk1\n'; seq 0 99999 | sort -rn | awk '{printf "\tm%d\t%d\n",$1,$1}'; } \
    >"$t/r.tsv"
status "compare: the same values in reverse order do not drift" 0 "$t/same.out" "$M" compare \
    "$t/a.tsv" "$t/r.tsv"
contains "compare: every value compared" "$t/same.out" "no drift: 100000 values in 1 points"
{ printf 'moesim-metrics\t1\npoint\tk1\n'; seq 0 999 | awk '{printf "\tx%d\t%d\n",$1,$1}'; } \
    >"$t/x.tsv"
status "compare: all metrics missing and extra" 1 "$t/x.out" "$M" compare "$t/a.tsv" "$t/x.tsv"
contains "compare: one drifted point, counted once" "$t/x.out" "drifted points by router: ? 1"
finish
