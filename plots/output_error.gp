# output_error.gp: relative L2 error of the layer output vs capacity factor, against the dense
# mixture sum_e p[t,e] FFN_e(x_t) above, and against the router's own dropless output below
# (routers without a dropless form have none); a line per router, a panel per distribution.
# Data (output_error.dat, written by moesim plot): "distribution" "shape" "router" "cf" x
# output_error_dense output_error_dropless points; one block per (distribution, shape, router),
# means over seeds and token counts. Panels: cf_rows.gp.
load plotdir.'/common.gp'
page_title = 'Output error vs capacity factor  ('.dbname.')'
nmet = 2
ylab_1 = 'rel. L2 error vs dense mixture'
ylab_2 = 'rel. L2 error vs own dropless'
yscale = 1.0; ybot = 0.0; yfloor = 0.01
load plotdir.'/cf_rows.gp'
