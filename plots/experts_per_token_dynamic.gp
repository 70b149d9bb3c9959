# experts_per_token_dynamic.gp: how many experts each token kept under the routers whose number
# of experts varies per token, dynamic top-p (topp: experts until their cumulative softmax p
# reaches top_p) and ReLU routing (relu: every expert with a positive logit), at most max_k: the
# chart of experts_per_token.gp (same layout and data columns) for these routers. Data
# (experts_per_token_dynamic.dat, written by moesim plot): "distribution" "shape" "router" "cf"
# experts fraction tokens; one block per (distribution, shape, router, cf).
ept_title = 'Experts per token of the variable-k routers (topp, relu)'
load plotdir.'/experts_per_token.gp'
