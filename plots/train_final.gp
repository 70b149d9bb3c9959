# train_final.gp: the result of training vs capacity factor: the held-out loss (MSE) of the last
# eval row above, and below the useful expert FLOPs per token of the last eval window (kept
# entries per token x 4 d f, 6 d f for SwiGLU), which shows whether the routers compared spent
# equal useful FLOPs; a line per series (router, plus the training settings that differ), a
# panel per distribution; routers without a capacity factor dashed and flat across the range.
# Data (train_final.dat, written by moesim plot): "distribution" "shape" "series" "cf" x
# heldout_loss useful_flops_per_token points; means over seeds. Panels: cf_rows.gp.
load plotdir.'/common.gp'
page_title = 'Training: final held-out loss and useful expert FLOPs per token vs capacity factor  ('.dbname.')'
nmet = 2
ylab_1 = 'final held-out loss (MSE)'
ylab_2 = 'useful expert FLOP per token'
yscale = 1.0; ybot = 0.0; yfloor = 1e-3
load plotdir.'/cf_rows.gp'
