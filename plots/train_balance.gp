# train_balance.gp: load balance during training: load imbalance (max/mean assigned load of the
# step's batch), dropped assignments and dropped tokens (%), and dead experts (experts with no
# kept token since the previous eval row) vs training step; a line per series, a panel per
# distribution, at the capacity factor nearest loadcf. Data (train_balance.dat, written by
# moesim plot): "distribution" "shape" "series" "cf" step load_imbalance assignment_drop_rate
# token_drop_rate dead_experts points; means over seeds. Panels: train_rows.gp.
load plotdir.'/common.gp'
page_title = sprintf('Training: load balance and drops vs step, capacity factor %.2f or the nearest stored  (%s)', loadcf, dbname)
nmet = 4
ylab_1 = 'load imbalance, max/mean'; yscale_1 = 1.0; ylog_1 = 0
ylab_2 = 'dropped assignments (%)'; yscale_2 = 100.0; ylog_2 = 0
ylab_3 = 'dropped tokens (%)'; yscale_3 = 100.0; ylog_3 = 0
ylab_4 = 'dead experts'; yscale_4 = 1.0; ylog_4 = 0
load plotdir.'/train_rows.gp'
