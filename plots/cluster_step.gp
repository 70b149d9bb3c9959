# cluster_step.gp: the predicted step time of each placement and router (the cluster model's
# alpha-beta hierarchical all-to-all and expert GEMM time, sim/cluster.c; docs/cluster.md): a
# panel per topology, a stacked bar per (placement, router): dispatch, experts and combine, each
# the slowest device's (t_step_s is their sum), at the capacity factor nearest loadcf. Bars of
# the routers of one placement stand side by side, each router in its own colour (legend), the
# phases in three shades of it. Values are means per measured batch over the configuration's
# points (distributions, seeds).
# Data (cluster_step.dat, from the table cluster_points): "cluster" "placement" "router" x
# t_dispatch_s t_experts_s t_combine_s t_step_s points; x is the placement's rank within the
# topology (placements in the order of their first point); one block per (topology, router).
load plotdir.'/common.gp'
nkeys = nseries + 3; keylen = max(keylen, strlen('combine (lightest)'))
eval KEYGEOM
t = pagetitle('Predicted step time per placement and router (slowest device per phase)')
set multiplot title t font fitw(t, width, 14)
gnr = 1; gnc = ncols
set grid noxtics
set style fill solid 0.85 noborder
bw = 0.8 / nseries
sc = (mx(4) < 1e-3) ? 1e6 : 1e3
su = (sc == 1e6) ? 'us per step' : 'ms per step'
r = 1
do for [c=1:ncols] {
    eval PANEL
    f = first(1, c); l = last(1, c)
    set title ct(c) font fitfont(ct(c))
    set ylabel (c == 1 ? su : '')
    if (f > l) {
        eval EMPTY
    } else {
        stats [*:*] [*:*] datafile index f:l using 4 nooutput
        np = STATS_max
        set xrange [0.4:np + 0.6]
        # the placement names as x tics (every block lists the placements it has)
        xf = fitn(12, pw * width / np, 11)
        set xtics () out rotate by -20 left font xf
        stats [*:*] [*:*] datafile index f:l using 8 nooutput
        set yrange [0:ytop(sc * STATS_max, 0.001)]
        set boxwidth bw absolute
        xo(i) = (bk(i) - 0.5 - 0.5 * nseries) * bw
        plot for [i=f:l] datafile index i using ($4 + xo(i)):(sc * $8) with boxes lt bs(i) \
                 fs solid 0.3 notitle, \
             for [i=f:l] datafile index i using ($4 + xo(i)):(sc * ($5 + $6)) with boxes \
                 lt bs(i) fs solid 0.6 notitle, \
             for [i=f:l] datafile index i using ($4 + xo(i)):(sc * $5) with boxes lt bs(i) \
                 fs solid 1.0 notitle, \
             for [i=f:l] datafile index i using 4:(0):xticlabels(2) with points ps 0 notitle
    }
}
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     for [k=1:nseries] keyentry with boxes lt ss(k) fs solid 0.85 title st(k), \
     keyentry with boxes lc rgb '#555555' fs solid 1.0 title 'dispatch (darkest)', \
     keyentry with boxes lc rgb '#555555' fs solid 0.6 title 'experts', \
     keyentry with boxes lc rgb '#555555' fs solid 0.3 title 'combine (lightest)'
unset multiplot
