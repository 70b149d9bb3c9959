# train_loads.gp: expert loads during training as a heatmap: x = training step, y = expert
# (by index, so an expert that grabs the load stays one horizontal band), colour = the expert's
# share (%) of the kept load over the steps since the previous eval row (step 0: its batch).
# Balanced routing is an even colour at 100/E %; the rich-get-richer collapse shows as a few
# dark bands over pale ones. A panel per series (rows: router and the training settings that
# differ) and distribution (columns), at the capacity factor nearest loadcf; one colour scale
# for the page. Data (train_loads.dat, written by moesim plot): "distribution" "shape"
# "series" "cf" step xlo xhi expert share load points; a cell spans the steps (xlo, xhi] its
# load was summed over; share and load are means over seeds.
load plotdir.'/common.gp'
nkeys = 1; keylen = 40
eval KEYGEOM
M_R = 1 - 120.0 / width

set multiplot title sprintf('Training: share of the kept load per expert over steps, capacity factor %.2f or the nearest stored  (%s)', loadcf, dbname) font ',14'
gnr = nrows; gnc = ncols
set palette defined (0 '#fcfdbf', 0.2 '#fec287', 0.4 '#fb8761', 0.6 '#c63d73', 0.8 '#6e1e80', 1 '#000004')
set cbrange [0:ytop(100.0 * mx(1), 1.0)]
set cbtics out scale 0.5 font ',9'
set style fill solid 1.0 noborder
set grid noxtics noytics
do for [r=1:nrows] {
    do for [c=1:ncols] {
        f = first(r, c); l = last(r, c)
        eval PANEL
        set title sprintf('%s, %s', rt(r), ct(c)) font ',12'
        set ylabel (c == 1 ? 'expert' : '')
        set xlabel (r == nrows ? 'training step' : '')
        if (f <= l) {
            stats [*:*] [*:*] datafile index f using 8 nooutput
            set yrange [STATS_min - 0.5:STATS_max + 0.5]
            set ytics 0, (STATS_max > 31 ? 8 : (STATS_max > 15 ? 4 : (STATS_max > 7 ? 2 : 1))) out
            stats [*:*] [*:*] datafile index f using 6:7 nooutput
            set xrange [STATS_min_x:STATS_max_y]
            if (c == ncols) {
                set colorbox user origin screen M_L + c * (pw + S_X) - S_X + 18.0 / width, \
                    screen M_T - r * (ph + S_Y) + S_Y size screen 16.0 / width, screen ph
                set cblabel 'share of kept load (%)' font ',10'
            } else {
                unset colorbox
            }
            plot datafile index f using (0.5 * ($6 + $7)):8:(0.5 * ($7 - $6)):(0.5):(100.0 * $9) \
                with boxxyerror fc palette notitle
        } else {
            unset colorbox
            eval EMPTY
        }
    }
}
unset colorbox
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     keyentry with boxes fc rgb '#fb8761' title sprintf('colour: %% of the kept load (even: 100/E %%)')
unset multiplot
