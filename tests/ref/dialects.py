#!/usr/bin/python3
"""dialects.py: NumPy re-implementations of the libraries' gating functions with their random
draws given as arrays, and the `moesim route` fixtures they generate (new case folders under
tests/fixtures/route/, written only when absent: the existing fixtures are never rewritten).

Each function follows the library's public code, step by step, in NumPy (masks, cumulative sums,
scatter), and takes the draws the library takes from torch or JAX as arguments:

  deepspeed_top1   DeepSpeed deepspeed/moe/sharded_moe.py top1gating: noisy_gate_policy
                   'RSample' (indices = argmax(logits + gumbel), gates = softmax(logits)
                   without noise), use_rts (mask1 * uniform, per-expert top-C over tokens,
                   locations = cumsum of the kept mask - 1)
  deepspeed_top2   DeepSpeed top2gating: top2_2nd_expert_sampling (second expert = argmax of
                   logits + gumbel with the first masked out), every second choice dispatched,
                   locations2 counted after all first choices (cumsum(mask2) + sum(mask1)),
                   gates normalised by gates1 + gates2 (drops zero a gate before normalising
                   only in the dropped slot; moesim keeps g1, g2 of the clean p, see below)
  lingvo_top2      lingvo gshard_layers.py Top2GatingOnLogits second_expert_policy 'all' and
                   'threshold' (mask_2 *= gate_2 > threshold on the normalised gate_2)

Differences from the libraries, kept out of these fixtures on purpose (docs/presets.md lists
them): DeepSpeed and fairseq compute the capacity in float32 as ceil(k * n / E * cf); moesim
computes ROUND(k * n * cf / E) exactly on integers (moe_ref.capacity is used here). The
libraries' gates after drops: DeepSpeed top2 normalises by the kept gates (renormalize = true
in moesim). G = -log(-log u) is the Gumbel of DeepSpeed's gumbel_rsample and fairseq's
gumbel_rsample, with u given.

Run `python3 tests/ref/dialects.py` to (re)create the missing case folders."""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_ref as R  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "route")


def gumbel(u):
    return -np.log(-np.log(u))


def _plan(name, L, k, C, idx, gate, keep, slot, aux):
    """A moe_ref.Plan from per-choice arrays: idx, gate, keep (n, K) as claims (keep = claim
    made), slot (n, K) (-1 = dropped)."""
    n, E = L.shape
    plan = R.Plan(name, n, E, E, C)
    for t in range(n):
        for j in range(idx.shape[1]):
            if keep[t, j]:
                plan.assigned[idx[t, j]] += 1
                plan.importance[idx[t, j]] += gate[t, j]
                plan.n_claims += 1
                if slot[t, j] >= 0:
                    plan.entries.append((t, int(idx[t, j]), int(slot[t, j]), 1.0,
                                         float(gate[t, j])))
    plan.aux_loss = aux
    return plan


def deepspeed_top1(L, C, u_gumbel=None, u_rts=None):
    """top1gating with the capacity C given; rsample when u_gumbel, use_rts when u_rts."""
    n, E = L.shape
    gates = R.softmax(L)
    # indices1_s = argmax(logits_w_noise if RSample else gates); argmax: first maximum
    sel = L + gumbel(u_gumbel) if u_gumbel is not None else L
    idx1 = np.argmax(sel, axis=1)
    mask1 = np.zeros((n, E))
    mask1[np.arange(n), idx1] = 1
    # l_aux = mean(me * ce) * E * E, me = mean gates, ce = mean mask1 (before capacity)
    aux = float(np.mean(gates.mean(axis=0) * mask1.mean(axis=0)) * E * E)
    if u_rts is not None:
        mask1_rand = mask1 * u_rts
        keep = np.zeros((n, E))
        for e in range(E):  # _top_idx: topk over tokens; ties to the lower token here
            order = sorted(range(n), key=lambda t: (-mask1_rand[t, e], t))
            for t in order[:C]:
                keep[t, e] = 1
        mask1 = mask1 * keep
    locations1 = np.cumsum(mask1, axis=0) - 1
    if u_rts is None:
        mask1 = mask1 * (locations1 < C)
    slot = np.where(mask1[np.arange(n), idx1] > 0, locations1[np.arange(n), idx1], -1)
    gate = gates[np.arange(n), idx1]
    return _plan("switch", L, 1, C, idx1[:, None], gate[:, None], np.ones((n, 1), bool),
                 slot[:, None].astype(int), aux)


def deepspeed_top2(L, C, u_gumbel):
    """top2gating with top2_2nd_expert_sampling, capacity C given, gates as moesim's gshard:
    p1 / (p1 + p2) and p2 / (p1 + p2) of the clean softmax (DeepSpeed's denom_s)."""
    n, E = L.shape
    gates = R.softmax(L)
    idx1 = np.argmax(gates, axis=1)
    mask1 = np.zeros((n, E))
    mask1[np.arange(n), idx1] = 1
    logits_except1 = np.where(mask1 > 0, -np.inf, L + gumbel(u_gumbel))
    idx2 = np.argmax(logits_except1, axis=1)
    mask2 = np.zeros((n, E))
    mask2[np.arange(n), idx2] = 1
    locations1 = np.cumsum(mask1, axis=0) - 1
    locations2 = np.cumsum(mask2, axis=0) - 1 + mask1.sum(axis=0, keepdims=True)
    aux = float(np.mean(gates.mean(axis=0) * mask1.mean(axis=0)) * E * E)
    mask1 = mask1 * (locations1 < C)
    mask2 = mask2 * (locations2 < C)
    r = np.arange(n)
    p1, p2 = gates[r, idx1], gates[r, idx2]
    g1, g2 = p1 / (p1 + p2), p2 / (p1 + p2)
    s1 = np.where(mask1[r, idx1] > 0, locations1[r, idx1], -1).astype(int)
    s2 = np.where(mask2[r, idx2] > 0, locations2[r, idx2], -1).astype(int)
    return _plan("gshard", L, 2, C, np.stack([idx1, idx2], 1), np.stack([g1, g2], 1),
                 np.ones((n, 2), bool), np.stack([s1, s2], 1), aux)


def lingvo_top2(L, C, policy, threshold=0.2):
    """Top2GatingOnLogits, second_expert_policy 'all' or 'threshold' (no draws)."""
    n, E = L.shape
    gates = R.softmax(L)
    r = np.arange(n)
    idx1 = np.argmax(gates, axis=1)
    masked = gates.copy()
    masked[r, idx1] = -np.inf
    idx2 = np.argmax(masked, axis=1)
    p1, p2 = gates[r, idx1], gates[r, idx2]
    g1, g2 = p1 / (p1 + p2), p2 / (p1 + p2)
    mask1 = np.zeros((n, E))
    mask1[r, idx1] = 1
    aux = float(np.mean(gates.mean(axis=0) * mask1.mean(axis=0)) * E * E)
    claim2 = np.ones(n, bool) if policy == "all" else g2 > threshold
    mask2 = np.zeros((n, E))
    mask2[r[claim2], idx2[claim2]] = 1
    locations1 = np.cumsum(mask1, axis=0) - 1
    locations2 = np.cumsum(mask2, axis=0) - 1 + mask1.sum(axis=0, keepdims=True)
    s1 = np.where(locations1[r, idx1] < C, locations1[r, idx1], -1).astype(int)
    s2 = np.where(claim2 & (locations2[r, idx2] < C), locations2[r, idx2], -1).astype(int)
    keep = np.stack([np.ones(n, bool), claim2], 1)
    return _plan("gshard", L, 2, C, np.stack([idx1, idx2], 1), np.stack([g1, g2], 1), keep,
                 np.stack([s1, s2], 1), aux)


# ---- the fixture cases ----------------------------------------------------------------------


def _inputs(seed, n, E):
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((n, E)).astype(np.float32).astype(np.float64)
    # uniforms away from 0 and 1: the Gumbel is finite and well-conditioned
    ug = rng.uniform(0.01, 0.99, (n, E))
    ur = rng.uniform(0.01, 0.99, (n, E))
    return L, ug, ur


def cases():
    """(name, cmd args beyond --router/--logits, plan factory)."""
    out = []
    n, E = 24, 4
    C1 = R.capacity(1, n, E, 1.0)  # 6
    L, ug, ur = _inputs(1701, n, E)
    out.append(("dialect_switch_rsample", L, {"gumbel": ug},
                ["--router", "switch", "--select", "rsample"],
                deepspeed_top1(L, C1, u_gumbel=ug)))
    out.append(("dialect_switch_rts", L, {"rts": ur},
                ["--router", "switch", "--order", "rts"],
                deepspeed_top1(L, C1, u_rts=ur)))
    out.append(("dialect_switch_rsample_rts", L, {"gumbel": ug, "rts": ur},
                ["--router", "switch", "--select", "rsample", "--order", "rts"],
                deepspeed_top1(L, C1, u_gumbel=ug, u_rts=ur)))
    C2 = R.capacity(2, n, E, 1.0)  # 12
    L2, ug2, _ = _inputs(1702, n, E)
    out.append(("dialect_gshard_sampling", L2, {"gumbel": ug2},
                ["--router", "gshard", "--second-policy", "sampling"],
                deepspeed_top2(L2, C2, ug2)))
    out.append(("dialect_gshard_all", L2, {},
                ["--router", "gshard", "--second-policy", "all"],
                lingvo_top2(L2, C2, "all")))
    out.append(("dialect_gshard_threshold", L2, {},
                ["--router", "gshard", "--second-policy", "threshold", "--second-threshold",
                 "0.3"], lingvo_top2(L2, C2, "threshold", 0.3)))
    # lingvo rounds the capacity up to a multiple of 4: ROUND(2*24*0.6/4) = 8 -> 8; cf 0.55
    # gives ceil(6.6) = 7 -> 8
    C3 = R.capacity(2, n, E, 0.55)
    assert C3 == 7
    out.append(("dialect_gshard_all_multiple4", L2, {},
                ["--router", "gshard", "--second-policy", "all", "--capacity-factor", "0.55",
                 "--capacity-multiple", "4"], lingvo_top2(L2, 8, "all")))
    return out


def hand_checks():
    # Gumbel of u = exp(-1): -log(-log(e^-1)) = -log(1) = 0
    assert abs(gumbel(np.exp(-1.0))) < 1e-15
    # 2 tokens, 2 experts, C = 1, rts keys: token 1 has the larger key on expert 0, so it keeps
    # slot 0 and token 0 is dropped (hand-worked)
    L = np.array([[1.0, 0.0], [2.0, 0.0]])
    p = deepspeed_top1(L, 1, u_rts=np.array([[0.2, 0.5], [0.7, 0.5]]))
    assert p.entries == [(1, 0, 0, 1.0, float(R.softmax(L)[1, 0]))], p.entries


def main():
    hand_checks()
    wrote = 0
    for name, L, draws, args, plan in cases():
        d = os.path.join(ROOT, name)
        if os.path.isdir(d):
            continue
        os.makedirs(d)
        np.save(os.path.join(d, "logits.npy"), L)
        args = args[:2] + ["--logits", "logits.npy"] + args[2:]
        if "gumbel" in draws:
            np.save(os.path.join(d, "gumbel.npy"), draws["gumbel"])
            args += ["--gumbel-uniforms", "gumbel.npy"]
        if "rts" in draws:
            np.save(os.path.join(d, "rts.npy"), draws["rts"])
            args += ["--rts-uniforms", "rts.npy"]
        met = R.metrics(plan, L)
        with open(os.path.join(d, "cmd"), "w") as fh:
            fh.write(" ".join(args) + "\n")
        with open(os.path.join(d, "expected_plan.csv"), "w") as fh:
            fh.write("token,expert,slot,dispatch_weight,combine_weight\n")
            for t, e, s, dw, cw in plan.sorted_entries():
                fh.write("%d,%d,%d,%.17g,%.17g\n" % (t, e, s, dw, cw))
        with open(os.path.join(d, "expected_metrics.json"), "w") as fh:
            fh.write("{\n" + ",\n".join(" %s: %s" % (json.dumps(k), json.dumps(v))
                                         for k, v in met.items()) + "\n}\n")
        wrote += 1
    print("dialects.py: %d case folders written" % wrote)


if __name__ == "__main__":
    main()
