"""Route a PyTorch model's recorded router logits with several libraries' default routers
(moesim presets) and compare how many tokens each drops.

The logits are tests/fixtures/router_logits/router_logits.npy: 1024 tokens x 8 experts recorded
from a small PyTorch model (tests/fixtures/router_logits/make.py); give another (T,E) .npy as
the first argument to use your own model's. Each preset sets moesim's router and options to one
library's default router (`moesim list presets`, docs/presets.md). The random draws a library
takes from torch are given as arrays: the Gumbel uniforms of DeepSpeed's and fairseq's sampled
second expert and the keys of DeepSpeed's random token selection, each drawn here from
numpy.random.default_rng(0) with the logits' shape, so the run is reproducible.

Run: python3 python/examples/compare_presets.py [LOGITS.npy]   (after `make python`, or with
PYTHONPATH=python from the repository root).
"""
import os
import sys

import numpy as np

import moesim

PRESETS = ["deepspeed_top1", "deepspeed_top2", "fairseq_top1", "fairseq_top2", "tutel_top2",
           "vmoe_bpr", "flaxformer_tokens_choose", "megatron_topk", "mixtral"]


def draws_for(preset, shape):
    """The draws a preset's router takes, as route() keywords (fresh generator per preset)."""
    opts = {p["name"]: p["options"] for p in moesim.presets()}[preset]
    u = np.random.default_rng(0).uniform(0.0, 1.0, shape)
    u = np.clip(u, 1e-12, 1 - 1e-12)  # strictly inside (0,1)
    if opts.get("second_policy") == "sampling":
        return {"gumbel_uniforms": u}
    if opts.get("order") == "rts":
        return {"rts_uniforms": u}
    return {}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, os.pardir, os.pardir, "tests", "fixtures", "router_logits", "router_logits.npy")
    logits = np.load(path)  # float32 (T,E): passed to moesim without a copy
    T, E = logits.shape
    print("%d tokens, %d experts from %s" % (T, E, os.path.relpath(path)))
    print("%-26s %-14s %5s %17s %22s" % ("preset", "router", "C", "token drop rate",
                                         "assignment drop rate"))
    rates = {}
    for name in PRESETS:
        plan = moesim.route(logits, preset=name, **draws_for(name, logits.shape))
        m = plan.metrics
        rates[name] = m["token_drop_rate"]
        print("%-26s %-14s %5d %17.4f %22.4f" % (name, plan.router, plan.capacity,
                                                 m["token_drop_rate"], m["assignment_drop_rate"]))
    print("DeepSpeed top-2 drops %.1f%% of the tokens, fairseq top-2 %.1f%%, Tutel top-2 %.1f%%"
          % (100 * rates["deepspeed_top2"], 100 * rates["fairseq_top2"],
             100 * rates["tutel_top2"]))


if __name__ == "__main__":
    main()
