# train_loss.gp: learning curves of training runs: the task loss (MSE against the teacher) of
# each step's training batch and of the fixed held-out batch, the router's auxiliary
# load-balancing loss and the z-loss (both unweighted) vs training step; a line per series
# (router, plus the training settings that differ), a panel per distribution, at the capacity
# factor nearest loadcf. Data (train_loss.dat, written by moesim plot): "distribution" "shape"
# "series" "cf" step loss heldout_loss aux_loss z_loss points; means over seeds. Panels:
# train_rows.gp.
load plotdir.'/common.gp'
page_title = sprintf('Training: task loss and auxiliary losses vs step, capacity factor %.2f or the nearest stored  (%s)', loadcf, dbname)
nmet = 4
ylab_1 = 'training loss (MSE)'; yscale_1 = 1.0; ylog_1 = 1
ylab_2 = 'held-out loss (MSE)'; yscale_2 = 1.0; ylog_2 = 1
ylab_3 = 'aux loss (unweighted)'; yscale_3 = 1.0; ylog_3 = 0
ylab_4 = 'z-loss (unweighted)'; yscale_4 = 1.0; ylog_4 = 0
load plotdir.'/train_rows.gp'
