# cf_rows.gp: the page shared by drop_rate, load_imbalance and output_error (loaded by them,
# after common.gp): a row of panels per metric column, a panel per distribution (columns), in
# each a line per router vs capacity factor, x tics at the swept capacity factors; routers that
# ignore the capacity factor (cf none) are flat across the swept range, with markers at the ends
# only; one y scale per row. Series are drawn in legend order, each with its own dash pattern,
# open marker, and a line width and marker size that shrink along the order, so a series with the
# same values as a later one stays visible around it. A value that is the mean of several seeds
# has an error bar: the 95% confidence interval of the mean over its seeds (Student t), said in
# a note under the panels. Data columns: "distribution" "shape" "router" "cf" x metric_1 ...
# metric_nmet points ci95_1 ... ci95_nmet. The caller sets:
#   page_title nmet               the title; the number of metric rows
#   ylab_J                        y label of row J
#   yscale ybot yfloor            factor applied to the values; bottom of the y range; the
#                                 smallest top of the y range
#   note_N nnotes                 optional notes under the panels (before loading this file)

if (nerr > 0 && maxn > 1) {
    note = sprintf('Error bars: 95%% confidence interval of the mean over the seeds of each point (up to %d; Student t).', maxn)
    eval ADDNOTE
}
if (nerr > 0 && maxn <= 1) {
    note = 'One seed per point: no spread over seeds to show (sweep seeds = ... for error bars).'
    eval ADDNOTE
}
eval FLATNOTE
eval KEYGEOM
t = pagetitle(page_title)
set multiplot title t font fitw(t, width, 14)
gnr = nmet; gnc = ncols
set xrange [cfxlo:cfxhi]
eval CFTICS
do for [r=1:nmet] {
    col = 5 + r
    ecol = 5 + nmet + 1 + r
    # a margin under ybot: series at the bottom value stay clear of the axis
    yt = ytop(yscale * mx(r), yfloor)
    set yrange [ybot - 0.03 * (yt - ybot):yt]
    do for [c=1:ncols] {
        eval PANEL
        set title (r == 1 ? ct(c) : '') font fitfont(ct(c))
        set ylabel (c == 1 ? value(sprintf('ylab_%d', r)) : '')
        set xlabel (r == nmet ? 'capacity factor' : '')
        f = first(1, c); l = last(1, c)
        lst = ''; elst = ''
        if (f <= l) { do for [i=f:l] { if (has(i, r)) { lst = lst.sprintf(' %d', i) } } }
        if (f <= l) { do for [i=f:l] { if (haserr(i, r)) { elst = elst.sprintf(' %d', i) } } }
        # (gnuplot 5.4 refuses `for [w in '']`: a panel without error bars has its own plot)
        if (strlen(lst) == 0) {
            eval EMPTY
        } else {
            if (strlen(elst) == 0) {
                plot for [w in lst] datafile index (w + 0) using 5:(yscale * column(col)) \
                    with linespoints lt bs(w + 0) dt sdt(bk(w + 0)) lw slw(bk(w + 0)) \
                    ps sps(bk(w + 0))
            } else {
                plot for [w in lst] datafile index (w + 0) using 5:(yscale * column(col)) \
                    with linespoints lt bs(w + 0) dt sdt(bk(w + 0)) lw slw(bk(w + 0)) \
                    ps sps(bk(w + 0)), \
                    for [w in elst] datafile index (w + 0) \
                    using 5:(yscale * column(col)):(yscale * column(ecol)) \
                    with yerrorbars lt bs(w + 0) lw slw(bk(w + 0)) ps 0 notitle
            }
        }
    }
}
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     for [k=1:nseries] keyentry with linespoints lt ss(k) dt sdt(k) lw slw(k) ps sps(k) \
         title st(k)
unset multiplot
