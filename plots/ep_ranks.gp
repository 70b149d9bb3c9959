# ep_ranks.gp: expert parallelism per rank (moesim run --expert-parallel under mpirun; sim/mpi.c),
# a row of panels per router, at the capacity factor nearest loadcf (routers that ignore it: their
# one point): (1) plan entries on each rank's experts, the rank's expert-side load, with the
# device-level imbalance max/mean in the title, (2) bytes each rank sends in the two all-to-alls,
# both for the point's global capacity (dark) and for DeepSpeed's capacity per rank (light), and
# (3) seconds per batch in the all-to-alls (waiting for the slowest rank included) against the
# rank's own expert FFNs, global capacity. Values are means per batch over the router's points;
# each row of panels has its own y scales. The columns are named above the top row only and each
# router in the y label of its first panel (with the imbalance), so no text sits between rows and
# every title fits its panel (fitfont) whatever the number of routers or the figure size.
# Data (ep_ranks.dat, written by moesim plot from the table ep_ranks): "router" "cf" "capacity"
# rank tokens bytes_sent a2a_s expert_s points; one block per (router, capacity mode): the global
# block first (style 1), then the per-rank block (style 2).
load plotdir.'/common.gp'
nkeys = 4; keylen = strlen('capacity per rank (DeepSpeed)')
eval KEYGEOM
M_L = 100.0 / width # two-line y labels (the row's name above the unit)

t = pagetitle(sprintf('Expert parallelism per rank at capacity factor %.2f or the ' . \
    'nearest stored', loadcf))
set multiplot title t font fitw(t, width, 14)
gnr = nrows; gnc = 3
set style fill solid 0.85 noborder
set grid noxtics
bw = 0.38
# bytes in KiB or MiB
if (mx(2) >= 4 * 1048576) {
    bsc = 1.0 / 1048576; bu = 'MiB sent per batch'
} else {
    bsc = 1.0 / 1024; bu = 'KiB sent per batch'
}
# rmax: the largest value of column col over the blocks f..l (one row of panels)
ROWMAX = 'rmax = 0; do for [i=f:l] { ' . \
         'stats [*:*] [*:*] datafile index i using col nooutput; rmax = max(rmax, STATS_max) }'
do for [r=1:nrows] {
    f = first(r, 1); l = last(r, 1)
    if (f > l) {
        do for [c=1:3] { eval PANEL; eval EMPTY }
    } else {
        stats [*:*] [*:*] datafile index f using 4 nooutput
        set xrange [-0.6:STATS_max + 0.6]
        set xtics 0, 1 out
        set xlabel (r == nrows ? 'rank' : '')
        # (1) expert-side load per rank
        c = 1
        eval PANEL
        stats [*:*] [*:*] datafile index f using 5 nooutput
        imb = (STATS_mean > 0) ? STATS_max / STATS_mean : 0
        tt = 'entries on its experts'
        set title (r == 1 ? tt : '') font fitfont(tt)
        set ylabel sprintf("%s (max/mean %.2f)\nentries per batch", rt(r), imb)
        col = 5; eval ROWMAX
        set yrange [0:ytop(rmax, 1)]
        set boxwidth bw absolute
        plot for [i=f:l] datafile index i using ($4 + (bs(i) == 1 ? -0.5 : 0.5) * bw):5 \
             with boxes lt bs(i) fs solid (bs(i) == 1 ? 0.85 : 0.4)
        # (2) bytes sent per rank, both all-to-alls, other ranks only
        c = 2
        eval PANEL
        tt = 'bytes sent (dispatch + combine)'
        set title (r == 1 ? tt : '') font fitfont(tt)
        set ylabel bu
        col = 6; eval ROWMAX
        set yrange [0:ytop(bsc * rmax, 0.001)]
        plot for [i=f:l] datafile index i using ($4 + (bs(i) == 1 ? -0.5 : 0.5) * bw):(bsc * $6) \
             with boxes lt bs(i) fs solid (bs(i) == 1 ? 0.85 : 0.4)
        # (3) all-to-all vs expert time, global capacity
        c = 3
        eval PANEL
        tt = 'all-to-all vs expert time'
        set title (r == 1 ? tt : '') font fitfont(tt)
        set ylabel 'ms per batch'
        col = 7; eval ROWMAX
        tmax = rmax
        col = 8; eval ROWMAX
        set yrange [0:ytop(1e3 * max(tmax, rmax), 0.001)]
        plot datafile index f using ($4 - 0.5 * bw):(1e3 * $7) with boxes lc rgb '#333333' \
                 fs solid 0.75, \
             datafile index f using ($4 + 0.5 * bw):(1e3 * $8) with boxes lc rgb '#009E73' \
                 fs solid 0.75
    }
}
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     keyentry with boxes lt 1 fs solid 0.85 title 'global capacity', \
     keyentry with boxes lt 2 fs solid 0.4 title 'capacity per rank (DeepSpeed)', \
     keyentry with boxes lc rgb '#333333' fs solid 0.75 title 'all-to-all time', \
     keyentry with boxes lc rgb '#009E73' fs solid 0.75 title 'expert time'
unset multiplot
