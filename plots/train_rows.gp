# train_rows.gp: the page shared by train_loss, train_balance and train_routing (loaded by them,
# after common.gp): a row of panels per metric column, a panel per distribution (columns), in
# each a line per series (router and the training settings that differ) vs training step; one y
# scale per row. A mean over several seeds has a band: the 95% confidence interval of the mean
# over its seeds (Student t), said in a note under the panels. Data columns: "distribution"
# "shape" "series" "cf" step metric_1 ... metric_nmet points ci95_1 ... ci95_nmet (one block per
# distribution and series). The caller sets:
#   page_title nmet               the title; the number of metric rows
#   ylab_J                        y label of row J
#   yscale_J ylog_J               factor applied to the values of row J; 1: log y scale (when
#                                 every value of the row is positive and they span more than a
#                                 factor of 10)

if (nerr > 0 && maxn > 1) {
    note = sprintf('Bands: 95%% confidence interval of the mean over the seeds of each step (up to %d; Student t).', maxn)
    eval ADDNOTE
}
if (nerr > 0 && maxn <= 1) {
    note = 'One seed per series: no spread over seeds to show (sweep seeds = ... for bands).'
    eval ADDNOTE
}
eval KEYGEOM
set multiplot title page_title font ',14'
gnr = nmet; gnc = ncols
set xrange [0:*]
do for [r=1:nmet] {
    col = 5 + r
    ecol = 5 + nmet + 1 + r
    sc = value(sprintf('yscale_%d', r))
    lg = value(sprintf('ylog_%d', r)) && mn(r) > 0 && mx(r) > 10 * mn(r)
    if (lg) {
        set logscale y
        set yrange [0.8 * mn(r) * sc:1.25 * mx(r) * sc]
        set format y '%g'
    } else {
        unset logscale y
        ytp = ytop(sc * mx(r), 1e-3)
        set yrange [(mn(r) < 0 ? 1.06 * mn(r) * sc : -0.03 * ytp):ytp]  # a line at 0 stays visible
        set format y '%g'
    }
    do for [c=1:ncols] {
        eval PANEL
        set title (r == 1 ? ct(c) : '') font ',12'
        set ylabel (c == 1 ? value(sprintf('ylab_%d', r)) : '')
        set xlabel (r == nmet ? 'training step' : '')
        f = first(1, c); l = last(1, c)
        lst = ''; elst = ''
        if (f <= l) { do for [i=f:l] { if (has(i, r)) { lst = lst.sprintf(' %d', i) } } }
        if (f <= l) { do for [i=f:l] { if (haserr(i, r)) { elst = elst.sprintf(' %d', i) } } }
        # (gnuplot 5.4 refuses `for [w in '']`: a panel without bands has its own plot; a band
        # under a log scale is clipped at the range's bottom)
        if (strlen(lst) == 0) {
            eval EMPTY
        } else {
            if (strlen(elst) == 0) {
                plot for [w in lst] datafile index (w + 0) using 5:(sc * column(col)) \
                    with linespoints lt bs(w + 0) pi -1
            } else {
                plot for [w in elst] datafile index (w + 0) \
                    using 5:(sc * (column(col) - column(ecol))):(sc * (column(col) + column(ecol))) \
                    with filledcurves lt bs(w + 0) fs transparent solid 0.18 noborder notitle, \
                    for [w in lst] datafile index (w + 0) using 5:(sc * column(col)) \
                    with linespoints lt bs(w + 0) pi -1
            }
        }
    }
}
unset logscale y
set format y '%g'
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     for [k=1:nseries] keyentry with linespoints lt ss(k) title st(k)
unset multiplot
