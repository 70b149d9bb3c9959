# cf_rows.gp: the page shared by drop_rate, load_imbalance and output_error (loaded by them,
# after common.gp): a row of panels per metric column, a panel per distribution (columns), in
# each a line per router vs capacity factor; routers that ignore the capacity factor (cf none)
# are dashed and flat across the swept range; one y scale per row. Data columns: "distribution"
# "shape" "router" "cf" x metric_1 ... metric_nmet points. The caller sets:
#   page_title nmet               the title; the number of metric rows
#   ylab_J                        y label of row J
#   yscale ybot yfloor            factor applied to the values; bottom of the y range; the
#                                 smallest top of the y range

set multiplot title page_title font ',14'
gnr = nmet; gnc = ncols
set xrange [cfxlo:cfxhi]
do for [r=1:nmet] {
    col = 5 + r
    set yrange [ybot:ytop(yscale * mx(r), yfloor)]
    do for [c=1:ncols] {
        eval PANEL
        set title (r == 1 ? ct(c) : '') font ',12'
        set ylabel (c == 1 ? value(sprintf('ylab_%d', r)) : '')
        set xlabel (r == nmet ? 'capacity factor' : '')
        f = first(1, c); l = last(1, c)
        lst = ''
        if (f <= l) { do for [i=f:l] { if (has(i, r)) { lst = lst.sprintf(' %d', i) } } }
        if (strlen(lst) == 0) {
            eval EMPTY
        } else {
            plot for [w in lst] datafile index (w + 0) using 5:(yscale * column(col)) \
                with linespoints lt bs(w + 0) dt 1 + bf(w + 0)
        }
    }
}
eval LEGEND
eval FLATNOTE
plot '+' using (-1):(-1) with points notitle, \
     for [k=1:nseries] keyentry with linespoints lt ss(k) dt 1 + sf(k) title st(k)
unset multiplot
