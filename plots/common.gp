# common.gp: what every chart script in plots/ shares: the terminal (PNG through pngcairo or
# SVG, sans 11, white background), the series styles (Okabe-Ito colours, colour-blind safe, one
# point type each), axes and grid, the page layout (title, legend, panel grid), and accessors
# for the variables moesim passes with gnuplot -e (sim/plot.c writes them, with the data file;
# nothing is edited by hand):
#   datafile outfile term       the data file (NAME.dat), the output, 'pngcairo', 'svg' or
#                               'pdfcairo'
#   plotdir dbname              this folder; the database's file name (for titles)
#   subtitle                    the configuration (E, k, d, f, tokens, batches, seeds)
#   differing                   keys that differ within a router, split into series ('' none)
#   cftics                      the swept capacity factors, 'a,b,c' (the x tics)
#   page npages                 this image is page `page` of `npages` of the chart
#   width height                image size in layout units (see sizes below)
#   pxscale ptscale             PNG pixels and PDF points per layout unit
#   cflo cfhi loadcf            swept capacity factor range; the cf of the expert load chart
#   mn_J mx_J                   range of metric column J (1-based, after the key columns),
#                               its error bars included
#   nerr maxn                   error columns after the count (one per metric: half-width of
#                               the 95% confidence interval over seeds; 0: none); the largest
#                               count of points behind one drawn value
#   ncols nrows ct_C rt_R       the panel grid: titles of column C and row R (1-based)
#   nseries st_K ss_K sf_K      legend entry K: title, style (linetype), 1 if flat (cf none)
#   nblocks bs_I bf_I bk_I bm_I data block I (gnuplot index I, 0-based): style, flat, legend
#                               entry K, bit J-1 set when metric column J has a value, bit
#                               15+J when it also has a positive error half-width
#   first_R_C last_R_C          the blocks of panel (R, C); first > last: the panel is empty

# sizes: width and height are layout units (pixels of the default PNG; 1/100 inch with
# moesim plot --size), pxscale PNG pixels and ptscale PDF points per unit; fonts, lines and
# points scale with them, so the three formats show the same figure
if (term eq 'svg') {
    set terminal svg size width, height font 'sans,11' linewidth 1.2 background '#ffffff'
} else {
    if (term eq 'pdfcairo') {
        set terminal pdfcairo size (width * ptscale / 72.0)in, (height * ptscale / 72.0)in \
            font 'sans,11' fontscale ptscale linewidth 1.2 * ptscale pointscale ptscale \
            background '#ffffff'
    } else {
        set terminal pngcairo size width * pxscale, height * pxscale font 'sans,11' \
            fontscale pxscale linewidth 1.2 * pxscale pointscale pxscale background '#ffffff'
    }
}
set termoption noenhanced
set output outfile
set encoding utf8
set datafile missing NaN

# series styles: series k of the database (routers in the order of their first point) is
# linetype k: 1-8 Okabe-Ito, 9-16 Paul Tol's muted scheme, each with its own open point type,
# so that coincident points of several series stay visible as nested outlines
set linetype 1 lc rgb '#0072B2' lw 2 pt 6 ps 1.1
set linetype 2 lc rgb '#D55E00' lw 2 pt 4 ps 1.0
set linetype 3 lc rgb '#009E73' lw 2 pt 8 ps 1.3
set linetype 4 lc rgb '#CC79A7' lw 2 pt 10 ps 1.3
set linetype 5 lc rgb '#E69F00' lw 2 pt 12 ps 1.3
set linetype 6 lc rgb '#56B4E9' lw 2 pt 14 ps 1.2
set linetype 7 lc rgb '#000000' lw 2 pt 2 ps 1.1
set linetype 8 lc rgb '#999999' lw 2 pt 1 ps 1.3
set linetype 9 lc rgb '#882255' lw 2 pt 3 ps 1.1
set linetype 10 lc rgb '#44AA99' lw 2 pt 7 ps 1.0
set linetype 11 lc rgb '#332288' lw 2 pt 5 ps 1.1
set linetype 12 lc rgb '#999933' lw 2 pt 9 ps 1.3
set linetype 13 lc rgb '#AA4499' lw 2 pt 11 ps 1.3
set linetype 14 lc rgb '#117733' lw 2 pt 13 ps 1.2
set linetype 15 lc rgb '#88CCEE' lw 2 pt 15 ps 1.1
set linetype 16 lc rgb '#DDCC77' lw 2 pt 6 ps 1.3
set linetype cycle 16
# legend entry k (drawing order: 1 first, at the bottom): a dash pattern of its own (gnuplot's 5,
# cycled), a line width and a point size that shrink with k, so that a series drawn over
# another with the same values leaves the earlier one visible around it
sdt(k) = 1 + (int(k) - 1) % 5
slw(k) = (nseries > 1) ? 1.2 + 2.4 * (nseries - k) / (nseries - 1.0) : 2.0
sps(k) = (nseries > 1) ? 0.8 + 0.9 * (nseries - k) / (nseries - 1.0) : 1.2
# an ordered palette for ordered series (capacity factors): light to dark blue (ColorBrewer
# Blues, monotone in lightness), entry k of n at palfrac(k, n)
set palette defined (0 '#9ecae1', 0.5 '#3182bd', 1 '#08306b')
palfrac(k, n) = (n > 1) ? (k - 1.0) / (n - 1.0) : 1.0
unset colorbox

set border 3 lw 1
set tics nomirror out scale 0.6
set grid xtics ytics lw 0.8 lc rgb '#e2e2e2' dt 1

ct(c) = value(sprintf('ct_%d', c))
rt(r) = value(sprintf('rt_%d', r))
st(k) = value(sprintf('st_%d', k))
ss(k) = value(sprintf('ss_%d', k))
sf(k) = value(sprintf('sf_%d', k))
bs(i) = value(sprintf('bs_%d', i))
bf(i) = value(sprintf('bf_%d', i))
bk(i) = value(sprintf('bk_%d', i))
bm(i) = value(sprintf('bm_%d', i))
has(i, j) = (int(bm(i)) >> (j - 1)) & 1
# block I has an error bar (a positive confidence half-width) for metric column J
haserr(i, j) = (int(bm(i)) >> (15 + j)) & 1
mn(j) = value(sprintf('mn_%d', j))
mx(j) = value(sprintf('mx_%d', j))
first(r, c) = value(sprintf('first_%d_%d', r, c))
last(r, c) = value(sprintf('last_%d_%d', r, c))
max(a, b) = (a > b) ? a : b
# upper end of a y range: a margin above the largest value, at least floor
ytop(v, floor) = (v == v) ? max(1.06 * v, floor) : floor

# x range of the capacity-factor charts: the swept range and a margin
cfpad = (cfhi > cflo) ? 0.05 * (cfhi - cflo) : 0.1
cfxlo = cflo - cfpad
cfxhi = cfhi + cfpad

# page (layout units converted to screen fractions): the title at the top, the configuration
# under it (SUBTITLE), the legend in a strip under that, then a grid of gnr x gnc panels, and
# optional notes at the bottom (ADDNOTE with a string `note`, before `eval KEYGEOM`).
# Each script sets gnr and gnc, then for panel (r, c) runs `eval PANEL` before its plot, and ends
# with `eval LEGEND` and a plot of keyentry items (behind an invisible point: gnuplot cannot plot
# keyentry alone), so the legend spans the page; LEGEND also draws the subtitle and the notes
# once. The legend takes as many rows as its entries need (KEYGEOM: nkeys entries of at most
# keylen characters; a script with other entries sets them and runs `eval KEYGEOM` again).
# pagetitle(t): t, with "(page i of n)" when the chart is split into pages.
pagetitle(t) = t . ((npages > 1) ? sprintf('  (page %d of %d)', page, npages) : '')
# a panel title font that fits text into the panel width (pw, a screen fraction): at most 12,
# at least 7 (sans: about 0.6 em per character)
fitfont(t) = fitw(t, pw * width, 12)
# a font of at most size f (and at least 5) that fits text t into w layout units
fitn(n, w, f) = sprintf(',%d', int(max(5, min(f, w / (0.7 * max(1, n))))))
fitw(t, w, f) = fitn(strlen(t), w, f)
min(a, b) = (a < b) ? a : b
nnotes = 0; notes = ''; notelen = 1
ADDNOTE = 'notes = notes . ((nnotes > 0) ? "\n" : "") . note; nnotes = nnotes + 1; notelen = max(notelen, strlen(note))'
# the subtitle: the database and its configuration
SUBTEXT = dbname . ':  ' . subtitle . ((strlen(differing) > 0) ? '  (series split by '.differing.')' : '')
# narrow figures: the subtitle on two lines, broken before tokens=
sbrk = strstrt(SUBTEXT, '  tokens=')
if (width < 600 && sbrk > 0) { SUBTEXT = SUBTEXT[1:sbrk - 1] . "\n" . SUBTEXT[sbrk + 2:] }
sublines = (width < 600 && sbrk > 0) ? 2 : 1
M_L = 85.0 / width; M_R = 1 - 25.0 / width; S_X = 75.0 / width
S_Y = 78.0 / height
keylen = 1
do for [k=1:nseries] { keylen = max(keylen, strlen(st(k))) }
nkeys = nseries
KEYGEOM = 'kcols = int((width - 60) / (11.0 * (keylen + 8))); ' . \
          'kcols = (kcols < 1) ? 1 : ((kcols > nkeys) ? nkeys : kcols); ' . \
          'krows = int((nkeys + kcols - 1) / kcols); ' . \
          'LEGEND_Y = 1 - (50.0 + 14.0 * sublines + 9.0 * krows) / height; ' . \
          'LEGEND_H = (18.0 * krows + 8) / height; ' . \
          'M_T = 1 - (110.0 + 14.0 * sublines + 18.0 * krows) / height; ' . \
          'M_B = (72.0 + 15.0 * nnotes) / height'
eval KEYGEOM
gnr = 1; gnc = 1
PANEL = 'pw = (M_R - M_L - (gnc - 1) * S_X) / gnc; ph = (M_T - M_B - (gnr - 1) * S_Y) / gnr; ' . \
        'set lmargin at screen M_L + (c - 1) * (pw + S_X); ' . \
        'set rmargin at screen M_L + (c - 1) * (pw + S_X) + pw; ' . \
        'set tmargin at screen M_T - (r - 1) * (ph + S_Y); ' . \
        'set bmargin at screen M_T - (r - 1) * (ph + S_Y) - ph'
LEGEND = 'set lmargin at screen 0.01; set rmargin at screen 0.99; ' . \
         'set tmargin at screen LEGEND_Y + 0.5 * LEGEND_H; set bmargin at screen LEGEND_Y - 0.5 * LEGEND_H; ' . \
         'unset border; unset tics; unset title; unset xlabel; unset ylabel; unset grid; ' . \
         'unset label 1; unset arrow; set xrange [0:1]; set yrange [0:1]; ' . \
         'set label 3 SUBTEXT at screen 0.5, 1 - 40.0 / height center font fitn(strlen(SUBTEXT) / sublines, width - 20, 10) tc rgb "#333333"; ' . \
         'if (nnotes > 0) { set label 4 notes at screen 0.01, (8.0 + 15.0 * (nnotes - 1)) / height left font fitn(notelen, width - 20, 10) tc rgb "#555555" }; ' . \
         'set key at screen 0.5, LEGEND_Y center center horizontal reverse Left maxcols kcols ' . \
         'spacing 1.2 width 2 samplen 4 font ",11"'
# a note when some series is flat (a router that ignores the capacity factor); scripts of
# capacity-factor charts run `eval FLATNOTE` before `eval KEYGEOM`
anyflat = 0
do for [k=1:nseries] { if (sf(k)) { anyflat = 1 } }
FLATNOTE = 'if (anyflat) { note = "a line with markers at its ends only: a router without a capacity factor, its one point drawn across the range"; eval ADDNOTE }'
# x tics at the swept capacity factors
CFTICS = 'eval "set xtics (".cftics.") out"'
# an empty panel: a frame saying so (the point is outside the ranges: nothing is drawn)
EMPTY = 'set label 1 "no data" at graph 0.5, 0.5 center tc rgb "#777777"; ' . \
        'plot [0:1] [0:1] "+" using (-1):(-1) with points notitle; unset label 1'
set key off
