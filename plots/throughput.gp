# throughput.gp: tokens per second (above) and achieved GFLOP/s (useful FLOPs, below) per router,
# a panel per distribution, at the capacity factor nearest loadcf (routers without one: their
# one point). Each timed batch of those points (all seeds) is one sample: bars are the median,
# whiskers the interquartile range (nearest-rank quartiles). When every router has a single
# sample (one batch, one seed), the chart says so and draws no whiskers. Timings are of the
# machine that ran the sweep (the database's provenance view names its BLAS and threads).
# Data (throughput.dat, written by moesim plot): "distribution" "shape" "router" "cf" x
# tokens_per_s tokens_per_s_q1 tokens_per_s_q3 gflops_per_s gflops_per_s_q1 gflops_per_s_q3
# batches; one block per (distribution, shape, router); x is the router's style number.
load plotdir.'/common.gp'

stats datafile using 12 nooutput
nmin = STATS_min; nmax = STATS_max
if (nmax < 2) {
    what = 'a single timed batch per router: no repeats, no spread'
} else {
    if (nmin == nmax) {
        what = sprintf('bars: median of %d timed batches; whiskers: interquartile range', nmin)
    } else {
        what = sprintf('bars: median of %d to %d timed batches; whiskers: interquartile range', nmin, nmax)
    }
}
note = sprintf('each batch of the points at capacity factor %.2f or the nearest stored (all seeds) is one sample; %s', loadcf, what)
eval ADDNOTE
eval KEYGEOM
t = pagetitle(sprintf('Throughput per router (%s)', (nmax < 2 ? 'single sample' : 'median and IQR over batches')))
set multiplot title t font fitw(t, width, 14)
gnr = 2; gnc = ncols
S_Y = 100.0 / height
M_B = M_B + 23.0 / height
set style fill solid 0.85 noborder
set boxwidth 0.7 absolute
set grid noxtics
set xrange [ss(1) - 0.7:ss(nseries) + 0.7]
set xtics () rotate by 30 right out
do for [k=1:nseries] { set xtics add (st(k) ss(k)) }
# tokens/s in thousands or millions when large
tmax = mx(3)
if (tmax >= 1e6) { ts = 1e-6; tu = 'tokens/s (millions)' } else { if (tmax >= 1e4) { ts = 1e-3; tu = 'tokens/s (thousands)' } else { ts = 1.0; tu = 'tokens/s' } }
do for [r=1:2] {
    col = (r == 1) ? 6 : 9
    sc = (r == 1) ? ts : 1.0
    set yrange [0:ytop(sc * mx(r == 1 ? 3 : 6), 0.001)]
    do for [c=1:ncols] {
        eval PANEL
        set title (r == 1 ? ct(c) : '') font fitfont(ct(c))
        set ylabel (c == 1 ? (r == 1 ? tu : 'achieved GFLOP/s') : '')
        f = first(1, c); l = last(1, c)
        lst = ''
        if (f <= l) { do for [i=f:l] { if (has(i, r == 1 ? 1 : 4)) { lst = lst.sprintf(' %d', i) } } }
        if (strlen(lst) == 0) {
            eval EMPTY
        } else {
            if (nmax < 2) {
                plot for [w in lst] datafile index (w + 0) using 5:(sc * column(col)) with boxes lt bs(w + 0)
            } else {
                plot for [w in lst] datafile index (w + 0) using 5:(sc * column(col)) with boxes lt bs(w + 0), \
                     for [w in lst] datafile index (w + 0) \
                         using 5:(sc * column(col + 1)):(0):(sc * (column(col + 2) - column(col + 1))) \
                         with vectors heads size screen 0.006, 90 lc rgb '#333333' lw 1
            }
        }
    }
}
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     for [k=1:nseries] keyentry with boxes lt ss(k) fs solid 0.85 title st(k)
unset multiplot
