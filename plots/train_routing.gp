# train_routing.gp: what the router learns: specialisation (normalised mutual information
# between the teacher's top-1 expert and the student's, on the probe tokens; 0 independent, 1
# the same partition), routing fluctuation (% of probe tokens whose top-1 expert changed since
# the previous eval row) and gate entropy (nats) vs training step; a line per series, a panel
# per distribution, at the capacity factor nearest loadcf. Data (train_routing.dat, written by
# moesim plot): "distribution" "shape" "series" "cf" step specialisation fluctuation
# gate_entropy points; means over seeds. Panels: train_rows.gp.
load plotdir.'/common.gp'
page_title = sprintf('Training: specialisation, routing fluctuation and gate entropy vs step, capacity factor %.2f or the nearest stored  (%s)', loadcf, dbname)
nmet = 3
ylab_1 = 'specialisation (NMI, 0-1)'; yscale_1 = 1.0; ylog_1 = 0
ylab_2 = 'top-1 changed (% of probe tokens)'; yscale_2 = 100.0; ylog_2 = 0
ylab_3 = 'gate entropy (nats)'; yscale_3 = 1.0; ylog_3 = 0
load plotdir.'/train_rows.gp'
