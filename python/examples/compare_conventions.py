"""Route one PyTorch gate's logits under three libraries' conventions and compare what they drop.

A tiny torch.nn.Linear gate (D -> E) scores random tokens drawn around a few cluster centres, so
that some experts are more popular than others, as in a trained model. The same logits are then
routed with moesim under:
  - DeepSpeed-style top-2: k=2, capacity factor 1.0, at least 4 slots, claims take slots in
    choice-major order (all first choices, then all second ones), kept gates renormalised;
  - Switch Transformer top-1: capacity factor 1.25;
  - expert choice (Zhou et al. 2022): each expert takes its top C = 2n/E tokens.
and the drop rates, load imbalance and the experts-per-token histogram are printed. Finally the
MoE layer runs on the top-2 plan with the torch tensors as weights.

Run: python3 python/examples/compare_conventions.py   (after `make python`, or with
PYTHONPATH=python from the repository root). Needs python3-torch; numpy alone with --numpy.
"""
import sys

import numpy as np

import moesim

T, D, E, F, CLUSTERS = 4096, 64, 16, 128, 6

CONVENTIONS = [
    ("DeepSpeed top-2", "topk",
     dict(k=2, capacity_factor=1.0, min_capacity=4, order="choice_major", renormalize=True)),
    ("Switch top-1", "switch", dict(capacity_factor=1.25)),
    ("expert choice", "expert_choice", dict(capacity_factor=2)),
]


def torch_logits():
    import torch
    torch.manual_seed(0)
    gate = torch.nn.Linear(D, E, bias=False)
    centres = torch.randn(CLUSTERS, D) * 2.0
    x = centres[torch.randint(CLUSTERS, (T,))] + torch.randn(T, D)
    with torch.no_grad():
        logits = gate(x)  # (T,E) float32 tensor: moesim reads it without a copy
    experts = dict(w1=torch.randn(E, D, F) / D ** 0.5, b1=torch.zeros(E, F),
                   w2=torch.randn(E, F, D) / F ** 0.5, b2=torch.zeros(E, D))
    return x, logits, experts


def numpy_logits():
    rng = np.random.default_rng(0)
    wg = rng.standard_normal((D, E)) / D ** 0.5
    centres = rng.standard_normal((CLUSTERS, D)) * 2.0
    x = (centres[rng.integers(CLUSTERS, size=T)] + rng.standard_normal((T, D))).astype(np.float32)
    experts = dict(w1=rng.standard_normal((E, D, F)) / D ** 0.5, b1=np.zeros((E, F)),
                   w2=rng.standard_normal((E, F, D)) / F ** 0.5, b2=np.zeros((E, D)))
    return x, x @ wg, experts


def main():
    x, logits, experts = numpy_logits() if "--numpy" in sys.argv else torch_logits()
    print("%d tokens, %d experts; gate logits %s" % (T, E, type(logits).__name__))
    print("%-16s %4s %10s %14s %12s  %s" % ("convention", "C", "token drop", "assignment drop",
                                          "kept imbal.", "tokens with 0,1,2,... experts"))
    plans = {}
    for label, router, opts in CONVENTIONS:
        p = moesim.route(logits, router, **opts)
        m = p.metrics
        plans[label] = p
        print("%-16s %4d %10.4f %14.4f %12.3f  %s" % (
            label, p.capacity, m["token_drop_rate"], m["assignment_drop_rate"],
            m["kept_load_imbalance"], m["experts_per_token"][:4]))
    y = moesim.layer(x, experts["w1"], experts["b1"], experts["w2"], experts["b2"],
                     plans["DeepSpeed top-2"], activation="gelu_tanh")
    dropped = np.all(y == 0, axis=1).sum()
    print("layer on the top-2 plan: y %s %s, %d tokens with output 0 (all their claims dropped)"
          % (y.shape, y.dtype, dropped))


if __name__ == "__main__":
    main()
