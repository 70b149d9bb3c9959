# cluster_loads.gp: the load of every simulated device under each placement (the cluster model,
# sim/cluster.c; docs/cluster.md): a panel per placement (columns; EPLB with its replica count
# R) and per topology and router (rows), at the capacity factor nearest loadcf. Dark bars: the
# expert rows the device computes (one per claim); light bars: the tokens it receives (one copy
# per token however many of its experts the token claims). The panel title gives the
# balancedness, mean/max expert rows over devices (vLLM's definition; 1 = balanced), the mean
# over the configuration's points of the stored per-point value. Values are means per measured
# batch over the points of the configuration (distributions, seeds); every panel of a row
# shares its y scale so placements compare by eye.
# Data (cluster_loads.dat, written by moesim plot from the tables cluster_points and devices):
# "cluster" "placement" "router" device node tokens_in rows balancedness points; one block per
# panel.
load plotdir.'/common.gp'
nkeys = 2; keylen = strlen('tokens received')
eval KEYGEOM
t = pagetitle('Expert rows and tokens per device, by placement')
set multiplot title t font fitw(t, width, 14)
gnr = nrows; gnc = ncols
set grid noxtics
bw = 0.4
do for [r=1:nrows] {
    rmax = 0
    do for [c=1:ncols] {
        do for [i=first(r, c):last(r, c)] {
            stats [*:*] [*:*] datafile index i using 7 nooutput; rmax = max(rmax, STATS_max)
            stats [*:*] [*:*] datafile index i using 6 nooutput; rmax = max(rmax, STATS_max)
        }
    }
    do for [c=1:ncols] {
        eval PANEL
        f = first(r, c); l = last(r, c)
        set xlabel (r == nrows ? 'device' : '')
        set ylabel (c == 1 ? sprintf("%s\nper batch", rt(r)) : '')
        if (f > l) {
            set title ct(c) font fitfont(ct(c))
            eval EMPTY
        } else {
            stats [*:*] [*:*] datafile index f using 4 nooutput
            set xrange [-0.6:STATS_max + 0.6]
            set xtics 0, (STATS_max >= 16 ? 4 : 1) out
            stats [*:*] [*:*] datafile index f using 8 nooutput
            tt = sprintf('%s: balancedness %.3f', ct(c), STATS_mean)
            set title tt font fitfont(tt)
            set yrange [0:ytop(rmax, 1)]
            set boxwidth bw absolute
            set style fill solid 0.85 noborder
            plot datafile index f using ($4 - 0.5 * bw):7 with boxes lt bs(f) fs solid 0.85, \
                 datafile index f using ($4 + 0.5 * bw):6 with boxes lt bs(f) fs solid 0.35
        }
    }
}
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     keyentry with boxes lc rgb '#555555' fs solid 0.85 title 'expert rows', \
     keyentry with boxes lc rgb '#555555' fs solid 0.35 title 'tokens received'
unset multiplot
