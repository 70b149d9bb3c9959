#!/usr/bin/python3
"""gen_presets.py: writes the `moesim route --preset NAME` fixtures under tests/fixtures/presets/
from the NumPy re-implementations of each library's router (one script per library, beside this
one): deepspeed_ref.py, fairseq_ref.py, lingvo_ref.py, flaxformer_ref.py, vmoe_ref.py,
tutel_ref.py, megatron_ref.py, hf_moe_ref.py (Mixtral, Qwen2-MoE), deepseek_ref.py.
`make fixtures` runs it; `make test` needs no Python.

Each case folder holds logits.npy (float32), the draws the library takes from its random
generator (gumbel.npy, rts.npy: uniforms), `cmd` (the route arguments: --preset NAME, sometimes
an explicit option that overrides the preset, and the library function is then called with
the matching argument), expected_plan.csv (token, expert, slot, dispatch 1, combine weight of
every kept choice, as the library computes them) and expected_metrics.json (moesim's metrics,
moe_ref.metrics, of that plan: loads and drops from the library's choices; importance sums each
choice's gate before capacity; aux_loss is moesim's definition for the preset's router).

Most sizes make the libraries' capacity formulas agree with moesim's exact ROUND(k n cf / E);
the cases of LIBRARY_CAPACITY take n not divisible by E and a capacity factor where they
disagree, so that the presets' rounding (deepspeed_f32, fairseq, tutel: the library's own
formula) decides which claims are kept (the generator checks that it does); docs/presets.md
lists the remaining differences. Inputs are seeded; a seed whose outcome would hinge
on a near-tie (two of a row's logits, of an expert's probabilities, of the tokens' top
probabilities, of an expert's rts keys, of DeepSeek's group scores, or, for the cases that rank
claims by their gate, of the gates of an expert's claims closer than 1e-7) is rejected and
advanced, so the fixtures test the rules, not rounding."""
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import deepseek_ref  # noqa: E402
import deepspeed_ref  # noqa: E402
import fairseq_ref  # noqa: E402
import flaxformer_ref  # noqa: E402
import hf_moe_ref  # noqa: E402
import lingvo_ref  # noqa: E402
import megatron_ref  # noqa: E402
import moe_ref as R  # noqa: E402
import tutel_ref  # noqa: E402
import vmoe_ref  # noqa: E402

ROOT = os.path.join(HERE, "..", "fixtures", "presets")
GAP = 1e-7


def _distinct(v):
    s = np.sort(np.asarray(v, dtype=np.float64).ravel())
    return s.size < 2 or np.min(np.diff(s)) > GAP


def robust(L, draws, groups=0):
    p = R.softmax(L)
    if not all(_distinct(row) for row in L) or not all(_distinct(col) for col in p.T):
        return False
    if not _distinct(p.max(axis=1)):
        return False
    if "gumbel" in draws and not all(_distinct(r) for r in L + deepspeed_ref.gumbel(draws["gumbel"])):
        return False
    if "rts" in draws and not all(_distinct(c) for c in draws["rts"].T):
        return False
    if groups:
        s = 1 / (1 + np.exp(-L))
        if not all(_distinct(r) for r in s):
            return False
        gs = np.sort(s.reshape(len(L), groups, -1), axis=-1)[..., -2:].sum(axis=-1)
        if not all(_distinct(r) for r in gs):
            return False
    return True


def gates_distinct(out):
    """The gates (pre) of each expert's claims are apart by more than GAP."""
    idx, pre = out["idx"], out["pre"]
    return all(_distinct(pre[idx == e]) for e in np.unique(idx))


def inputs(seed, n, E, skew, draws, groups=0, call=None):
    """call (optional): the case's library call, whose gates must then be free of near-ties."""
    for s in range(seed * 1000, seed * 1000 + 500):
        rng = np.random.default_rng(s)
        L = (rng.standard_normal((n, E)) - skew * np.arange(E) / max(E - 1, 1))
        L = L.astype(np.float32).astype(np.float64)
        d = {k: rng.uniform(0.01, 0.99, (n, E)) for k in draws}
        if robust(L, d, groups) and (call is None or gates_distinct(call(L, d))):
            return L, d
    raise RuntimeError("no robust inputs for seed %d" % seed)


def token_choice_plan(router, L, out):
    """moe_ref.Plan of a library's per-choice arrays (every choice is a claim)."""
    n, E = L.shape
    idx, pre, slot, comb = out["idx"], out["pre"], out["slot"], out["combine"]
    K = idx.shape[1]
    plan = R.Plan(router, n, E, E, out["C"])
    for t in range(n):
        for j in range(K):
            e = int(idx[t, j])
            plan.assigned[e] += 1
            plan.importance[e] += pre[t, j]
            plan.n_claims += 1
            if slot[t, j] >= 0:
                plan.entries.append((t, e, int(slot[t, j]), 1.0, float(comb[t, j])))
    P = R.softmax(L).mean(axis=0)
    if router == "topk":  # moesim's aux loss of each router (docs/metrics.md)
        plan.aux_loss = float(E / (K * n) * np.sum(plan.assigned * P))
    elif router in ("switch", "gshard"):
        first = np.bincount(out["first"], minlength=E)
        plan.aux_loss = float(E * np.sum(first / n * P))
    return plan


def expert_choice_plan(L, rows, C):
    n, E = L.shape
    plan = R.Plan("expert_choice", n, E, E, C)
    for t, e, c, w in rows:
        plan.entries.append((t, e, c, 1.0, w))
        plan.importance[e] += w
    plan.assigned[:] = C
    plan.n_claims = len(rows)
    return plan


def cases():
    """(name, preset's router, extra route args, seed, n, E, skew, draws, groups, library call
    [, GATES])"""
    ds, fs = deepspeed_ref, fairseq_ref
    return [
        ("deepspeed_top1", "switch", [], 1, 32, 8, 2.0, ["rts"], 0,
         lambda L, d: ds.top1gating(L, 1.0, 4, u_rts=d["rts"])),
        ("deepspeed_top2", "gshard", [], 2, 32, 8, 2.0, ["gumbel"], 0,
         lambda L, d: ds.top2gating(L, d["gumbel"], 1.0, 4)),
        # capacity factor 2: C = 32 = n, nothing dropped (top-4 selection, slots, gates)
        ("deepspeed_topk_cf2", "topk", ["--capacity-factor", "2"], 3, 32, 8, 3.0, [], 0,
         lambda L, d: ds.topkgating(L, 4, 2.0, 4)),
        # the default drop_policy 'probs' where claims are dropped: C = 16 (cf 1), 8 (cf 0.5)
        ("deepspeed_topk", "topk", [], 3, 32, 8, 3.0, [], 0,
         lambda L, d: ds.topkgating(L, 4, 1.0, 4)),
        ("deepspeed_topk_cf05", "topk", ["--capacity-factor", "0.5"], 3, 32, 8, 3.0, [], 0,
         lambda L, d: ds.topkgating(L, 4, 0.5, 4)),
        # drop_policy 'position': the first C claims in token order
        ("deepspeed_topk_position", "topk", ["--order", "token_major"], 3, 32, 8, 3.0, [], 0,
         lambda L, d: ds.topkgating(L, 4, 1.0, 4, "position")),
        ("fairseq_top1", "switch", [], 4, 32, 8, 2.0, [], 0,
         lambda L, d: fs.top1gating(L, 1.0)),
        # an explicit option overrides the preset: fairseq's capacity_factor argument 2
        ("fairseq_top1_cf2", "switch", ["--capacity-factor", "2"], 4, 32, 8, 3.0, [], 0,
         lambda L, d: fs.top1gating(L, 2.0)),
        ("fairseq_top2", "gshard", [], 5, 32, 8, 2.0, ["gumbel"], 0,
         lambda L, d: fs.top2gating(L, d["gumbel"])),
        # lingvo capacity_factor 2.0 (moesim's 1.0 times k): int(72 / 8) = 9 -> 12
        ("lingvo_top2", "gshard", [], 6, 36, 8, 2.0, [], 0,
         lambda L, d: lingvo_ref.top2_gating_on_logits(L, 2.0)),
        # flaxformer capacity_factor 1.0: round(52 / 8 = 6.5) = 6 (half to even)
        ("flaxformer_tokens_choose", "topk", [], 7, 52, 8, 2.0, [], 0,
         lambda L, d: flaxformer_ref.tokens_choose_masked(L, 2, 1.0)),
        ("flaxformer_experts_choose", "expert_choice", [], 8, 52, 8, 1.0, [], 0,
         lambda L, d: flaxformer_ref.experts_choose_masked(L, 1.0)),
        ("vmoe_bpr", "topk", [], 9, 32, 8, 4.0, [], 0,
         lambda L, d: vmoe_ref.top_experts_per_item(L, 2, 1.05, True)),
        # --k 1 overrides the preset's k: ceil(32 * 1.05 / 8) = 5 -> 8
        ("vmoe_bpr_k1", "topk", ["--k", "1"], 10, 32, 8, 4.0, [], 0,
         lambda L, d: vmoe_ref.top_experts_per_item(L, 1, 1.05, True)),
        ("tutel_top2", "topk", [], 11, 32, 8, 3.0, [], 0,
         lambda L, d: tutel_ref.extract_critical(L, 2, 1.0)),
        # the library capacity formulas (LIBRARY_CAPACITY): n not divisible by E
        ("deepspeed_top1_n50", "switch", ["--capacity-factor", "1.2"], 16, 50, 4, 2.0, ["rts"],
         0, lambda L, d: ds.top1gating(L, 1.2, 4, u_rts=d["rts"])),
        ("deepspeed_top2_n50", "gshard", ["--capacity-factor", "0.6"], 17, 50, 4, 2.0,
         ["gumbel"], 0, lambda L, d: ds.top2gating(L, d["gumbel"], 0.6, 4)),
        ("fairseq_top1_n26", "switch", ["--capacity-factor", "2"], 18, 26, 4, 4.0, [], 0,
         lambda L, d: fs.top1gating(L, 2.0)),
        ("fairseq_top2_n26", "gshard", [], 19, 26, 4, 2.0, ["gumbel"], 0,
         lambda L, d: fs.top2gating(L, d["gumbel"])),
        ("tutel_top2_n26", "topk", [], 20, 26, 4, 2.0, [], 0,
         lambda L, d: tutel_ref.extract_critical(L, 2, 1.0)),
        ("megatron_topk", "topk", [], 12, 32, 8, 2.0, [], 0,
         lambda L, d: megatron_ref.route(L, 2)),
        # moe_expert_capacity_factor 1 and 0.5: C = ceil(32 * 2 / 8 * cf) = 8, 4; drop policy
        # 'probs' (the gates rank the claims: their near-ties are rejected) and 'position'
        ("megatron_topk_capacity", "topk", [], 12, 32, 8, 2.0, [], 0,
         lambda L, d: megatron_ref.route(L, 2, 1.0), GATES),
        ("megatron_topk_capacity_cf05", "topk", ["--capacity-factor", "0.5"], 12, 32, 8, 2.0,
         [], 0, lambda L, d: megatron_ref.route(L, 2, 0.5), GATES),
        ("megatron_topk_capacity_position", "topk", ["--order", "token_major"], 12, 32, 8, 2.0,
         [], 0, lambda L, d: megatron_ref.route(L, 2, 1.0, "position")),
        ("megatron_topk_capacity_position_cf05", "topk",
         ["--order", "token_major", "--capacity-factor", "0.5"], 12, 32, 8, 2.0, [], 0,
         lambda L, d: megatron_ref.route(L, 2, 0.5, "position")),
        ("mixtral", "topk", [], 13, 32, 8, 1.0, [], 0, lambda L, d: hf_moe_ref.mixtral(L)),
        ("qwen2_moe", "topk", [], 14, 32, 12, 1.0, [], 0, lambda L, d: hf_moe_ref.qwen2_moe(L)),
        ("deepseek_v3", "dsv3_bias", [], 15, 16, 32, 1.0, [], 8,
         lambda L, d: deepseek_ref.gate_forward(L, 8, 8, 4, 2.5)),
    ]


def main():
    for mod in (deepspeed_ref, fairseq_ref, lingvo_ref, flaxformer_ref, vmoe_ref, tutel_ref,
                megatron_ref, hf_moe_ref, deepseek_ref):
        mod.hand_checks()
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    os.makedirs(ROOT)
    for case in cases():
        name, router, extra, seed, n, E, skew, draws, groups, call = case[:10]
        L, d = inputs(seed, n, E, skew, draws, groups, call if case[10:] == (GATES,) else None)
        out = call(L, d)
        if router == "expert_choice":
            plan = expert_choice_plan(L, *out)
        else:
            plan = token_choice_plan(router, L, out)
        if name in LIBRARY_CAPACITY:
            check_library_capacity(name, plan, n, E)
        met = R.metrics(plan, L)
        preset = max((p for p in PRESETS if name == p or name.startswith(p + "_")), key=len)
        folder = os.path.join(ROOT, name)
        os.makedirs(folder)
        np.save(os.path.join(folder, "logits.npy"), L.astype(np.float32))
        args = ["--preset", preset, "--logits", "logits.npy"] + extra
        for k, flag in (("gumbel", "--gumbel-uniforms"), ("rts", "--rts-uniforms")):
            if k in d:
                np.save(os.path.join(folder, k + ".npy"), d[k])
                args += [flag, k + ".npy"]
        with open(os.path.join(folder, "cmd"), "w") as fh:
            fh.write(" ".join(args) + "\n")
        with open(os.path.join(folder, "expected_plan.csv"), "w") as fh:
            fh.write("token,expert,slot,dispatch_weight,combine_weight\n")
            for t, e, s, dw, cw in plan.sorted_entries():
                fh.write("%d,%d,%d,%.17g,%.17g\n" % (t, e, s, dw, cw))
        with open(os.path.join(folder, "expected_metrics.json"), "w") as fh:
            fh.write("{\n" + ",\n".join(" %s: %s" % (json.dumps(k), json.dumps(v))
                                         for k, v in met.items()) + "\n}\n")
        print("%-26s C=%-3d kept %d of %d choices" % (name, plan.capacity, len(plan.entries),
                                                     plan.n_claims))


# case: (k, capacity factor, min_capacity) of moesim's exact ceil(k n cf / E), which the
# library's capacity must differ from
LIBRARY_CAPACITY = {
    "deepspeed_top1_n50": (1, "1.2", 4),   # float32 12.5 * 1.2 = 15.00000095 -> 16; exact 15
    "deepspeed_top2_n50": (2, "0.6", 4),   # float32(0.6 * 2) = float32(1.2): 16; exact 15
    "fairseq_top1_n26": (1, "2", 0),       # int(2 * ceil(6.5)) = 14; exact 13
    "fairseq_top2_n26": (2, "1", 0),       # 2 * ceil(6.5) = 14; exact 13
    "tutel_top2_n26": (2, "1", 0),         # 2 * int(1.0 * ceil(6.5)) = 14; exact 13
}


def check_library_capacity(name, plan, n, E):
    """The library's C differs from moesim's exact formula and some expert has more claims than
    the smaller of the two, so the fixture fails if moesim used its exact formula."""
    k, cf, mc = LIBRARY_CAPACITY[name]
    exact = R.capacity(k, n, E, cf, min_capacity=mc)
    if plan.capacity == exact or max(plan.assigned) <= min(plan.capacity, exact):
        raise RuntimeError("%s: library C %d, exact C %d, largest load %d: the formulas do not "
                           "decide the plan" % (name, plan.capacity, exact, max(plan.assigned)))


PRESETS = {"deepspeed_top1", "deepspeed_top2", "deepspeed_topk", "fairseq_top1", "fairseq_top2",
           "lingvo_top2", "flaxformer_tokens_choose", "flaxformer_experts_choose", "vmoe_bpr",
           "tutel_top2", "megatron_topk", "megatron_topk_capacity", "mixtral", "qwen2_moe",
           "deepseek_v3"}
GATES = "gates"  # a case's 11th field: reject inputs whose gates of one expert near-tie

if __name__ == "__main__":
    main()
