# flops_per_token.gp: FLOPs per token of the layer (gate + experts + Soft MoE dispatch and
# combine) vs capacity factor, above: what the kept entries need (useful, solid) and what a
# capacity-padded implementation executes on all E x C slots (padded, dashed); below: their
# ratio, the compute a padded implementation spends per useful FLOP. A colour per router, a
# panel per distribution, one y scale per row, x tics at the swept capacity factors. The padded
# lines are drawn first, wide, dashed, with large open squares (wider and larger for routers
# earlier in the legend), and the useful lines over them, thin, with small filled circles: where
# the two are equal (no padding) or two routers coincide, all stay visible. Data (flops_per_token.dat, written by moesim
# plot): "distribution" "shape" "router" "cf" x useful_flops_per_token padded_flops_per_token
# points; one block per (distribution, shape, router), means over seeds and token counts.
load plotdir.'/common.gp'
nkeys = nseries + 2; keylen = max(keylen, 6)
eval FLATNOTE
eval KEYGEOM

top = max(mx(1), mx(2))
if (top >= 1e9) { fs = 1e-9; fu = 'GFLOP' } else { if (top >= 1e6) { fs = 1e-6; fu = 'MFLOP' } else { fs = 1e-3; fu = 'kFLOP' } }

t = pagetitle('FLOPs per token vs capacity factor: useful and capacity-padded')
set multiplot title t font fitw(t, width, 14)
gnr = 2; gnc = ncols
set xrange [cfxlo:cfxhi]
eval CFTICS
do for [r=1:2] {
    if (r == 1) { set yrange [0:ytop(fs * top, 0.001)] } else { set yrange [0.95:*] }
    do for [c=1:ncols] {
        eval PANEL
        set title (r == 1 ? ct(c) : '') font fitfont(ct(c))
        set ylabel (c == 1 ? (r == 1 ? fu.' per token' : 'padded / useful FLOPs') : '')
        set xlabel (r == 2 ? 'capacity factor' : '')
        f = first(1, c); l = last(1, c)
        lst = ''
        if (f <= l) { do for [i=f:l] { if (has(i, 1) && has(i, 2)) { lst = lst.sprintf(' %d', i) } } }
        if (strlen(lst) == 0) {
            eval EMPTY
        } else {
            if (r == 1) {
                plot for [w in lst] datafile index (w + 0) using 5:(fs * $7) \
                         with linespoints lt bs(w + 0) dt 2 lw slw(bk(w + 0)) + 1.5 pt 4 \
                         ps sps(bk(w + 0)) + 0.5, \
                     for [w in lst] datafile index (w + 0) using 5:(fs * $6) \
                         with linespoints lt bs(w + 0) dt 1 lw 1.2 pt 7 ps 0.6
            } else {
                plot for [w in lst] datafile index (w + 0) using 5:($6 > 0 ? $7 / $6 : NaN) \
                         with linespoints lt bs(w + 0) dt sdt(bk(w + 0)) lw slw(bk(w + 0)) \
                         ps sps(bk(w + 0))
            }
        }
    }
}
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     for [k=1:nseries] keyentry with linespoints lt ss(k) dt sdt(k) lw slw(k) ps sps(k) \
         title st(k), \
     keyentry with linespoints lc rgb '#444444' dt 1 lw 1.2 pt 7 ps 0.6 title 'useful', \
     keyentry with linespoints lc rgb '#444444' dt 2 lw 3.5 pt 4 ps 1.6 title 'padded'
unset multiplot
