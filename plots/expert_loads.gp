# expert_loads.gp: per-expert loads sorted from the most to the least loaded expert, at the
# capacity factor nearest loadcf (routers that ignore it: their one point), a panel per router
# (rows, named in the y label of the first column, one y scale per row) and distribution
# (columns, named above the top row only, so no title sits under the panel above): the assigned
# load (claims before
# capacity, light) behind the kept load (solid), and the capacity C (dashed). Loads are means per
# batch (tokens; Soft MoE: slots). Data (expert_loads.dat, written by moesim plot):
# "distribution" "shape" "router" "cf" rank assigned kept capacity points; one block per
# (distribution, shape, router), loads sorted per point then averaged by rank.
load plotdir.'/common.gp'
nkeys = 3; keylen = strlen('assigned (claims before capacity)')
eval KEYGEOM
M_L = 100.0 / width # two-line y labels (the row's name above the unit)

t = pagetitle(sprintf('Expert loads, most loaded first, at capacity factor %.2f or the nearest stored', loadcf))
set multiplot title t font fitw(t, width, 14)
gnr = nrows; gnc = ncols
set style fill solid 1.0 noborder
set boxwidth 0.8 relative
set grid noxtics
do for [r=1:nrows] {
    # one y scale per router row
    rtop = 0
    do for [c=1:ncols] {
        f = first(r, c)
        if (f >= 0) {
            stats [*:*] [*:*] datafile index f using 6 nooutput
            rtop = max(rtop, STATS_max)
            stats [*:*] [*:*] datafile index f using 8 nooutput
            rtop = max(rtop, STATS_max)
        }
    }
    set yrange [0:ytop(rtop, 1)]
    do for [c=1:ncols] {
        f = first(r, c); l = last(r, c)
        if (f <= l) {
            eval PANEL
            set title (r == 1 ? ct(c) : '') font fitfont(ct(c))
            set ylabel (c == 1 ? rt(r)."\nload per expert" : '')
            set xlabel (r == nrows ? 'experts, most loaded first' : '')
            stats [*:*] [*:*] datafile index f using 5 nooutput
            set xrange [0.4:STATS_max + 0.6]
            set xtics 1, (STATS_max > 16 ? 4 : (STATS_max > 8 ? 2 : 1)) out
            plot datafile index f using 5:6 with boxes lt bs(f) fs transparent solid 0.35, \
                 datafile index f using 5:7 with boxes lt bs(f), \
                 datafile index f using 5:8 with steps lc rgb '#333333' dt 2 lw 1.5
        }
    }
}
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     keyentry with boxes lc rgb '#999999' fs transparent solid 0.35 title 'assigned (claims before capacity)', \
     keyentry with boxes lc rgb '#555555' fs solid 1.0 title 'kept', \
     keyentry with lines lc rgb '#333333' dt 2 lw 1.5 title 'capacity C'
unset multiplot
