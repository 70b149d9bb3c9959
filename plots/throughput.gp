# throughput.gp: tokens per second (above) and achieved GFLOP/s (below) per router, a panel per
# distribution: bars are means over the router's points (capacity factors, seeds), whiskers their
# range; one y scale per row. Timings are of the machine that ran the sweep (the database's
# provenance view names its BLAS and threads). Data (throughput.dat, written by moesim plot):
# "distribution" "shape" "router" x tokens_per_s tokens_per_s_min tokens_per_s_max gflops_per_s
# gflops_per_s_min gflops_per_s_max points; one block per (distribution, shape, router); x is
# the router's style number.
load plotdir.'/common.gp'

M_B = 95.0 / height
set multiplot title 'Throughput per router (bars: mean over capacity factors and seeds; whiskers: range)  ('.dbname.')' font ',14'
gnr = 2; gnc = ncols
S_Y = 100.0 / height
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
    col = (r == 1) ? 5 : 8
    sc = (r == 1) ? ts : 1.0
    set yrange [0:ytop(sc * mx(r == 1 ? 3 : 6), 0.001)]
    do for [c=1:ncols] {
        eval PANEL
        set title (r == 1 ? ct(c) : '') font ',12'
        set ylabel (c == 1 ? (r == 1 ? tu : 'achieved GFLOP/s') : '')
        f = first(1, c); l = last(1, c)
        lst = ''
        if (f <= l) { do for [i=f:l] { if (has(i, r == 1 ? 1 : 4)) { lst = lst.sprintf(' %d', i) } } }
        if (strlen(lst) == 0) {
            eval EMPTY
        } else {
            plot for [w in lst] datafile index (w + 0) using 4:(sc * column(col)) with boxes lt bs(w + 0), \
                 for [w in lst] datafile index (w + 0) \
                     using 4:(sc * column(col + 1)):(0):(sc * (column(col + 2) - column(col + 1))) \
                     with vectors heads size screen 0.006, 90 lc rgb '#333333' lw 1
        }
    }
}
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     for [k=1:nseries] keyentry with boxes lt ss(k) fs solid 0.85 title st(k)
unset multiplot
