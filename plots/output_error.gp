# output_error.gp: relative L2 error of the layer output vs capacity factor. Above: against the
# router's own dropless output (the same routing with unlimited capacity), ||y - y_dropless|| /
# ||y_dropless||: the error the capacity drops alone cause (routers without a dropless form have
# none). Below: against the dense mixture sum_e p[t,e] FFN_e(x_t) over all experts, which also
# counts the top-k truncation and so mostly reflects how peaked the gate is (with random experts
# and gate, a property of the gate scale, not of the capacity). A line per router, a panel per
# distribution. Data (output_error.dat, written by moesim plot): "distribution" "shape" "router"
# "cf" x output_error_dropless output_error_dense points; one block per (distribution, shape,
# router), means over seeds. Panels: cf_rows.gp.
load plotdir.'/common.gp'
page_title = 'Output error vs capacity factor: relative L2 distance of the layer output'
nmet = 2
ylab_1 = 'vs own dropless output'
ylab_2 = 'vs dense mixture'
note = 'top: ||y - y_dropless|| / ||y_dropless||, y_dropless = the same router with unlimited capacity: the error capacity drops cause'
eval ADDNOTE
note = 'bottom: distance from the dense mixture sum_e p_e FFN_e(x) over all experts: adds the top-k truncation (mostly the gate scale)'
eval ADDNOTE
yscale = 1.0; ybot = 0.0; yfloor = 0.01
load plotdir.'/cf_rows.gp'
