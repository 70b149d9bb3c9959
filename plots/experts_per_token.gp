# experts_per_token.gp: how many experts each token reached (kept entries), as a share of the
# tokens, for expert_choice and gshard routers: a panel per router (rows) and distribution
# (columns), a bar per capacity factor in an ordered palette (light: small, dark: large
# capacity factor), one y scale. Routers are named in the y label of the first column,
# distributions above the top row only. Data (experts_per_token.dat, written by
# moesim plot): "distribution" "shape" "router" "cf" experts fraction tokens; one block per
# (distribution, shape, router, cf), tokens summed over points and batches; counts up to the
# largest the router reached.
load plotdir.'/common.gp'
keylen = keylen + strlen('capacity factor ')
eval KEYGEOM
M_L = 100.0 / width # two-line y labels (the row's name above the unit)

# ept_title: set by a script that loads this one for other routers (experts_per_token_dynamic.gp)
if (!exists('ept_title')) { ept_title = 'Experts per token (expert_choice, gshard)' }
t = pagetitle(ept_title)
set multiplot title t font fitw(t, width, 14)
gnr = nrows; gnc = ncols
set style fill solid 0.9 noborder
bw = 0.8 / nseries
set boxwidth bw absolute
set yrange [0:ytop(100 * mx(1), 1)]
set grid noxtics
set xtics 1 out
do for [r=1:nrows] {
    do for [c=1:ncols] {
        f = first(r, c); l = last(r, c)
        if (f <= l) {
            eval PANEL
            set title (r == 1 ? ct(c) : '') font fitfont(ct(c))
            set ylabel (c == 1 ? rt(r)."\ntokens (%)" : '')
            set xlabel (r == nrows ? 'experts per token' : '')
            stats [*:*] [*:*] datafile index l using 5 nooutput
            set xrange [-0.6:STATS_max + 0.6]
            plot for [i=f:l] datafile index i \
                using ($5 + (bk(i) - (nseries + 1) / 2.0) * bw):(100 * $6) with boxes \
                lc palette frac palfrac(bk(i), nseries)
        }
    }
}
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     for [k=1:nseries] keyentry with boxes lc palette frac palfrac(k, nseries) fs solid 0.9 \
         title 'capacity factor '.st(k)
unset multiplot
