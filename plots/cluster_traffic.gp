# cluster_traffic.gp: the dispatch bytes from node to node per measured batch under each
# placement (the cluster model, sim/cluster.c; docs/cluster.md: a token crosses the network once
# per remote node holding one of its experts, then is forwarded inside each node it reaches): a
# heatmap per placement (columns; EPLB with its replica count R) and per topology and router
# (rows), at the capacity factor nearest loadcf; source node on x, destination node on y. The
# diagonal is the intra-node forwarding (NVLink), the rest crosses the network; combine sends the
# same bytes back (dst to src). Each cell is labelled with its value when the nodes are few.
# Values are the stored node_traffic bytes, mean over the configuration's points (distributions,
# seeds); the panel title gives the inter-node total. Colour scale shared by the whole chart.
# Data (cluster_traffic.dat, from the tables cluster_points and node_traffic): "cluster"
# "placement" "router" src_node dst_node bytes points; one block per panel.
load plotdir.'/common.gp'
nkeys = 1; keylen = 30
eval KEYGEOM
t = pagetitle('Dispatch bytes from node to node per batch, by placement')
set multiplot title t font fitw(t, width, 14)
gnr = nrows; gnc = ncols
if (mx(1) >= 4 * 1048576) {
    bsc = 1.0 / 1048576; bu = 'MiB'
} else {
    bsc = 1.0 / 1024; bu = 'KiB'
}
set palette defined (0 '#f7fbff', 0.5 '#6baed6', 1 '#08306b')
set cbrange [0:ytop(bsc * mx(1), 0.001)]
set colorbox vertical user origin screen 0.965, screen M_B size screen 0.012, screen (M_T - M_B)
set cblabel bu . ' per batch' offset -1, 0
unset grid
M_R = 1 - 90.0 / width
do for [r=1:nrows] {
    do for [c=1:ncols] {
        eval PANEL
        f = first(r, c); l = last(r, c)
        set xlabel (r == nrows ? 'source node' : '')
        set ylabel (c == 1 ? sprintf("%s\ndestination node", rt(r)) : '')
        if (f > l) {
            set title ct(c) font fitfont(ct(c))
            unset colorbox
            eval EMPTY
        } else {
            stats [*:*] [*:*] datafile index f using 4 nooutput
            nn = STATS_max + 1
            stats [*:*] [*:*] datafile index f using ($4 != $5 ? bsc * $6 : 0) nooutput
            tt = sprintf('%s: %.4g %s inter-node', ct(c), STATS_sum, bu)
            set title tt font fitfont(tt)
            set xrange [-0.5:nn - 0.5]
            set yrange [-0.5:nn - 0.5]
            set xtics 0, 1 out
            set ytics 0, 1 out
            if (r == 1 && c == ncols) { set colorbox } else { unset colorbox }
            if (nn <= 8) {
                plot datafile index f using 4:5:(0.5):(0.5):(bsc * $6) with boxxyerror \
                         fs solid 1.0 noborder fc palette, \
                     datafile index f using 4:5:(sprintf('%.3g', bsc * $6)) with labels \
                         font ',8' tc rgb '#d55e00'
            } else {
                plot datafile index f using 4:5:(0.5):(0.5):(bsc * $6) with boxxyerror \
                         fs solid 1.0 noborder fc palette
            }
        }
    }
}
unset colorbox
eval LEGEND
plot '+' using (-1):(-1) with points notitle, \
     keyentry with boxes lc rgb '#6baed6' fs solid 1.0 title 'bytes ('.bu.', colour bar at the right)'
unset multiplot
