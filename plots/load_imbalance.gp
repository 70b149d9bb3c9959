# load_imbalance.gp: load imbalance (max/mean expert load) vs capacity factor, of the assigned
# load (claims before capacity) above and of the kept load (entries after capacity) below; a line
# per router, a panel per distribution. Data (load_imbalance.dat, written by moesim plot):
# "distribution" "shape" "router" "cf" x load_imbalance kept_load_imbalance points; one block per
# (distribution, shape, router), means over seeds and token counts. Panels: cf_rows.gp.
load plotdir.'/common.gp'
page_title = 'Load imbalance (max/mean expert load) vs capacity factor'
nmet = 2
ylab_1 = 'assigned load, max/mean'
ylab_2 = 'kept load, max/mean'
yscale = 1.0; ybot = 1.0; yfloor = 1.1
load plotdir.'/cf_rows.gp'
