# drop_rate.gp: dropped assignments (claims beyond capacity) and dropped tokens (tokens with no
# kept expert), in %, vs capacity factor; a line per router, a panel per distribution, the
# assignments above, the tokens below. Data (drop_rate.dat, written by moesim plot):
# "distribution" "shape" "router" "cf" x assignment_drop_rate token_drop_rate points; one block
# per (distribution, shape, router), means over seeds and token counts. Panels: cf_rows.gp.
load plotdir.'/common.gp'
page_title = 'Drops vs capacity factor'
nmet = 2
ylab_1 = 'dropped assignments (%)'
ylab_2 = 'dropped tokens (%)'
yscale = 100.0; ybot = 0.0; yfloor = 1.0
load plotdir.'/cf_rows.gp'
