#!/usr/bin/python3
"""gen_fixtures.py: writes the committed `moesim route` fixtures under tests/fixtures/route/ from
the NumPy reference tests/ref/moe_ref.py (`make fixtures` runs it; `make test` never needs Python).

Each case folder holds its inputs (.npy), `cmd` (one line of `moesim route` arguments, file names
relative to the folder), expected_plan.csv (rows sorted by token, expert, slot; weights %.17g),
expected_metrics.json and, for layer cases, expected_y.npy (float64).

Every case is seeded and deterministic. A case whose outcome would hinge on a floating-point
near-tie between two implementations (a cross-token comparison of probabilities closer than
1e-9 relative that is not an exact tie of identical rows, or a gshard draw within 1e-9 of its
threshold; for base an optimal assignment that is not unique by a margin of 1e-6; for sinkhorn
two of a row's first k+1 balanced scores closer than 1e-6 relative; for dsv3_bias two of a row's
first k+1 sigmoid scores closer than 1e-9 unless their logits are equal) is rejected and its seed
advanced, so the fixtures test semantics, not rounding.

The reference is first checked against examples worked by hand (asserts below)."""
import itertools
import json
import math
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_ref as R  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "route")

# ---- hand-worked checks of the reference -------------------------------------------------


def _entries(plan):
    return [(t, e, s) for t, e, s, _, _ in plan.sorted_entries()]


def hand_checks():
    # Capacity: n=100, E=10, k=1, cf=1.1 -> 1*100*11/10/10 = 11 exactly; a double computes
    # 100*1.1/10 = 11.000000000000002 and ceils to 12.
    assert R.capacity(1, 100, 10, "1.1") == 11
    assert math.ceil(1 * 100 * 1.1 / 10) == 12
    # Rounding: k*n*cf/E = 10/4 = 2.5 -> ceil 3, floor 2, round (half even) 2; 14/4 = 3.5 -> 4.
    assert [R.capacity(1, 10, 4, "1", rounding=r) for r in ("ceil", "floor", "round")] == [3, 2, 2]
    assert R.capacity(1, 14, 4, "1", rounding="round") == 4
    assert R.capacity(2, 13, 4, "1", rounding="round") == 6       # 6.5 -> 6 (even)
    assert R.capacity(1, 8, 4, "0.25", min_capacity=3) == 3          # ceil(0.5) = 1 < 3
    assert R.capacity(2, 5, 3, "0") == 0 and R.capacity(2, 5, 3, "1", cap=7) == 7

    # Tie in one row, k=2: logits [1, 1, 0.5, 1] -> experts 0 and 1 (lower index wins),
    # gate = softmax([1, 1]) = (0.5, 0.5). C = ceil(2*1*1/4) = 1.
    p = R.route("topk", np.array([[1, 1, 0.5, 1]], np.float32), {})
    assert p.capacity == 1
    assert [(t, e, s, dw, cw) for t, e, s, dw, cw in p.sorted_entries()] == \
        [(0, 0, 0, 1.0, 0.5), (0, 1, 0, 1.0, 0.5)]

    # choice_major vs token_major, k=2, E=2, C=1 (explicit):
    # rows t0 [1,0], t1 [0,1], t2 [1,0].
    # choice_major: firsts t0->e0 s0, t1->e1 s0, t2->e0 full; seconds t0->e1 full, t1->e0 full.
    # token_major: t0 takes e0 s0 and e1 s0; t1 and t2 find both full.
    L = np.array([[1, 0], [0, 1], [1, 0]], np.float64)
    assert _entries(R.route("topk", L, {"capacity": 1})) == [(0, 0, 0), (1, 1, 0)]
    assert _entries(R.route("topk", L, {"capacity": 1, "order": "token_major"})) == \
        [(0, 0, 0), (0, 1, 0)]

    # bpr and probs, switch with C=1: t0 [0.5,0] (top p 0.62), t1 [0,0.1], t2 [2,0] (top p 0.88).
    # t0 and t2 both want e0. choice_major: t0 gets it; bpr: t2 visited first gets it;
    # probs: e0 keeps its claim with the higher p, t2's.
    L = np.array([[0.5, 0], [0, 0.1], [2, 0]], np.float64)
    assert _entries(R.route("switch", L, {"capacity": 1})) == [(0, 0, 0), (1, 1, 0)]
    assert _entries(R.route("switch", L, {"capacity": 1, "order": "bpr"})) == [(1, 1, 0), (2, 0, 0)]
    assert _entries(R.route("switch", L, {"capacity": 1, "order": "probs"})) == \
        [(1, 1, 0), (2, 0, 0)]
    # probs numbers slots in token order among kept claims: C=2, all three on e0 with
    # p = .62, .5 (row [0,0]), .88 -> keep t0, t2 -> slots 0, 1 (token order, not p order).
    L = np.array([[0.5, 0], [0, 0], [2, 0]], np.float64)
    assert _entries(R.route("switch", L, {"capacity": 2, "order": "probs"})) == \
        [(0, 0, 0), (2, 0, 1)]

    # gshard threshold: L = [ln 3, 0, 0] -> p = (.6, .2, .2); e1 = 0, e2 = 1 (tie 1 vs 2 -> lower);
    # g = (.75, .25). normalized: 2*g2 = 0.5 > u = 0.45 -> dispatched;
    # raw: 2*p2 = 0.4 < 0.45 -> not dispatched.
    L = np.array([[math.log(3), 0, 0]])
    p = R.route("gshard", L, {}, u=[0.45])
    assert _entries(p) == [(0, 0, 0), (0, 1, 0)]
    assert abs(p.entries[0][4] - 0.75) < 1e-15 and abs(p.entries[1][4] - 0.25) < 1e-15
    p = R.route("gshard", L, {"threshold_on": "raw"}, u=[0.45])
    assert _entries(p) == [(0, 0, 0)] and abs(p.entries[0][4] - 0.75) < 1e-15
    assert list(p.assigned) == [1, 0, 0]  # the failed second choice makes no claim
    p = R.route("gshard", L, {"threshold_on": "raw", "renormalize": True}, u=[0.45])
    assert p.entries[0][4] == 1.0

    # expert choice: n=3, E=2, cf=1 -> C = ceil(3/2) = 2; rows t0 [1,0], t1 [1,0], t2 [0,1]:
    # e0 scores (.73,.73,.27) -> t0 slot 0, t1 slot 1 (tie -> lower token); e1 -> t2, then t0.
    L = np.array([[1, 0], [1, 0], [0, 1]], np.float64)
    p = R.route("expert_choice", L, {})
    assert p.capacity == 2
    assert _entries(p) == [(0, 0, 0), (0, 1, 1), (1, 0, 1), (2, 1, 0)]

    # hash balanced: ids 5,5,5,2,2,7,9,9, E=3. Frequencies 5:3, 2:2, 9:2, 7:1 -> order 5,2,9,7;
    # 5 -> b0 (3,0,0); 2 -> b1 (3,2,0); 9 -> b2 (3,2,2); 7 -> b1 (tie b1/b2 at 2 -> lower).
    ids = [5, 5, 5, 2, 2, 7, 9, 9]
    assert R.hash_map(ids, 3, {"hash": "balanced"}) == {5: 0, 2: 1, 9: 2, 7: 1}
    p = R.route("hash", np.zeros((8, 3)), {"hash": "balanced"}, ids=ids)
    assert p.capacity == 3 and list(p.assigned) == [3, 3, 2]  # no limit: C = max load

    # aux_loss is 1.0 when p is uniform (sum_e assigned_e = k*n, P_e = 1/E).
    assert abs(R.route("topk", np.zeros((5, 4)), {}).aux_loss - 1.0) < 1e-15
    assert abs(R.route("switch", np.zeros((5, 4)), {}).aux_loss - 1.0) < 1e-15

    # soft_moe with one token: dispatch = softmax over one token = 1; combine = row softmax.
    p = R.route("soft_moe", np.array([[0.0, math.log(3)]]), {})
    assert [(e, s, dw) for _, e, s, dw, _ in p.entries] == [(0, 0, 1.0), (1, 0, 1.0)]
    assert abs(p.entries[1][4] - 0.75) < 1e-15

    # base, n=4, E=2, C=2: L = [1,0], [1,0], [5,0], [0,-3]. Expert 0 holds two tokens; total =
    # sum_t L[t,1] + the two largest advantages L[t,0]-L[t,1] = (1, 1, 5, 3): -3 + 5 + 3 = 5
    # with t2, t3 on e0 (next best 5 + 1: -3 + 6 = 3). Slots in token order: e1 gets t0 s0,
    # t1 s1; e0 gets t2 s0, t3 s1. Greedy in token order would give t0, t1 e0 and total -1.
    L = np.array([[1, 0], [1, 0], [5, 0], [0, -3]], np.float64)
    p = R.route("base", L, {})
    assert p.capacity == 2
    assert _entries(p) == [(0, 1, 0), (1, 1, 1), (2, 0, 0), (3, 0, 1)]
    assert p.entries[0][4] == 0.5 and abs(p.entries[3][4] - 1 / (1 + math.exp(-0.0))) < 1e-15
    # base against brute force over every assignment with at most ceil(n/E) per expert.
    rng = np.random.default_rng(7)
    for _ in range(40):
        n, E = int(rng.integers(1, 7)), int(rng.integers(1, 4))
        L = rng.standard_normal((n, E))
        C = -(-n // E)
        best = max(sum(L[t, a[t]] for t in range(n)) for a in itertools.product(range(E), repeat=n)
                   if np.bincount(a, minlength=E).max() <= C)
        asg, _ = R.base_assignment(L)
        assert np.bincount(asg, minlength=E).max() <= C
        assert abs(sum(L[t, asg[t]] for t in range(n)) - best) < 1e-12

    # sinkhorn, n=2, E=2, L = [2,0], [1,0]: both tokens prefer e0, but the balanced matrix
    # B = [[x, 1/2-x], [1/2-x, x]] (rows and columns 1/2) keeps the cross ratio of exp(L):
    # x^2 / (1/2-x)^2 = e^2 * e^0 / (e^0 * e^1) = e, so x = sqrt(e) / (2 (1 + sqrt(e))) = 0.311
    # > 1/4: t0 -> e0, t1 -> e1. k = 1: gates sigmoid(2) and sigmoid(0) = 1/2; dropless, C = 1.
    L = np.array([[2, 0], [1, 0]], np.float64)
    a, b, _ = R.sinkhorn_scalings(L)
    B = np.exp(a[:, None] + L + b[None, :])
    x = math.sqrt(math.e) / (2 * (1 + math.sqrt(math.e)))
    assert np.abs(B - np.array([[x, 0.5 - x], [0.5 - x, x]])).max() < 1e-9
    p = R.route("sinkhorn", L, {})
    assert _entries(p) == [(0, 0, 0), (1, 1, 0)] and p.capacity == 1
    assert abs(p.entries[0][4] - 1 / (1 + math.exp(-2))) < 1e-15 and p.entries[1][4] == 0.5
    # all-zero logits: converged after one iteration (d1 stays 1); ties -> expert 0 for all.
    assert R.sinkhorn_scalings(np.zeros((4, 2)))[2] == 1
    assert _entries(R.route("sinkhorn", np.zeros((4, 2)), {})) == [(t, 0, t) for t in range(4)]

    # dsv3_bias, k=2, L = [0, ln 3, 0]: s = (1/2, 3/4, 1/2); bias 0 -> e1, then e0 (tie with e2
    # -> lower); gates 3/4 / (5/4) = 0.6 and 0.4. Bias (0, 0, 0.3): keys (.5, .75, .8) -> e2, e1
    # with the unbiased gates 0.4 (e2) and 0.6 (e1).
    L = np.array([[0, math.log(3), 0]])
    p = R.route("dsv3_bias", L, {})
    assert [(e, round(cw, 12)) for _, e, _, _, cw in p.entries] == [(1, 0.6), (0, 0.4)]
    p = R.route_dsv3_bias(L, {}, bias=[0, 0, 0.3])
    assert [(e, round(cw, 12)) for _, e, _, _, cw in p.entries] == [(2, 0.4), (1, 0.6)]
    # bias update: loads (3, 1), mean 2 -> b = (-r, +r); equal loads leave b unchanged.
    assert list(R.dsv3_bias_update([0, 0], [3, 1], 0.1)) == [-0.1, 0.1]
    assert list(R.dsv3_bias_update([0.5, 0], [2, 2], 0.1)) == [0.5, 0.0]

    # dense: L = [0, ln 3] -> p = (1/4, 3/4); slot = token index; capacity n.
    p = R.route("dense", np.array([[0.0, math.log(3)], [0.0, 0.0]]), {})
    assert _entries(p) == [(0, 0, 0), (0, 1, 0), (1, 0, 1), (1, 1, 1)] and p.capacity == 2
    assert abs(p.entries[1][4] - 0.75) < 1e-15 and list(p.assigned) == [2, 2]


# ---- case inputs -------------------------------------------------------------------------


def make_logits(rng, n, E, dtype=np.float32, skew=0.0, scale=1.0):
    """Gaussian logits plus a linear preference for low experts (skew)."""
    bias = -skew * np.arange(E) / max(E - 1, 1)
    return (rng.standard_normal((n, E)) * scale + bias).astype(dtype)


def make_tied_logits(rng, n, E, dtype=np.float32):
    """Logits from {0, 0.5, 1, 1.5} (ties inside rows) with duplicated rows (ties across
    tokens); exactly representable in float32."""
    base = rng.integers(0, 4, size=(max(2, n // 2), E)) * 0.5
    rows = np.concatenate([base, base[rng.integers(0, len(base), size=n - len(base))]])
    return rows[rng.permutation(n)].astype(dtype)


def make_weights(rng, E, d=8, f=16):
    return {
        "w1": (rng.standard_normal((E, d, f)) / math.sqrt(d)).astype(np.float32),
        "b1": (0.1 * rng.standard_normal((E, f))).astype(np.float32),
        "w2": (rng.standard_normal((E, f, d)) / math.sqrt(f)).astype(np.float32),
        "b2": (0.1 * rng.standard_normal((E, d))).astype(np.float32),
    }


def zipf_ids(rng, n, vocab, s=1.2, dtype=np.int64):
    w = 1.0 / np.arange(1, vocab + 1) ** s
    return rng.choice(vocab, size=n, p=w / w.sum()).astype(dtype)


# ---- robustness against near-ties -----------------------------------------------------------


def _near_tie_free(vals, L):
    """True if no two tokens' values are within 1e-9 relative unless their logit rows are
    identical (then both implementations compute the very same value)."""
    order = np.argsort(vals, kind="stable")
    v = vals[order]
    for a in range(len(v)):
        for b in range(a + 1, len(v)):
            if v[b] - v[a] > 1e-9 * max(abs(v[a]), abs(v[b]), 1e-300):
                break
            if not np.array_equal(L[order[a]], L[order[b]]):
                return False
    return True


def _gaps_ok(key, L, k, gap):
    """Each row's first k+1 keys in descending order are at least gap apart, unless the two
    logits are identical (then both implementations tie exactly)."""
    for t in range(key.shape[0]):
        idx = R.order_desc(key[t])[:k + 1]
        for a, b in zip(idx[:-1], idx[1:]):
            if key[t, a] - key[t, b] < gap and L[t, a] != L[t, b]:
                return False
    return True


def _base_unique(L, margin=1e-6):
    """The optimal BASE assignment is unique by margin: forbidding any token its expert costs
    more than margin (so a solver that is exact up to rounding finds the same assignment)."""
    n, E = L.shape
    asg, C = R.base_assignment(L)
    best = L[np.arange(n), asg].sum()
    if E == 1:
        return True
    for t in range(n):
        L2 = L.copy()
        L2[t, asg[t]] = -1e6
        a2, _ = R.base_assignment(L2)
        if best - L2[np.arange(n), a2].sum() <= margin:
            return False
    return True


def _score_ok(router, L, o, u):
    """Score path (routers/score.c): the keys of each token, its group scores and gshard's draw
    test are at least 1e-9 apart from the values that decide them."""
    k = 1 if router == "switch" else 2 if router == "gshard" else int(o.get("k", 2))
    cfg = R.score_cfg(o, k, "sigmoid" if router == "dsv3_bias" else "softmax", True)
    s = R.scores(L, cfg["score"])
    key = s.copy()
    G, M = cfg["G"], cfg["M"]
    for t in range(L.shape[0]) if G else ():
        kg = s[t].reshape(G, -1)
        per = min(max(k // M, 1), kg.shape[1])
        gs = kg.max(axis=1) if cfg["gmax"] else np.sort(kg, axis=1)[:, ::-1][:, :per].sum(axis=1)
        srt = np.sort(gs)[::-1]
        if M < G and srt[M - 1] - srt[M] < 1e-9:
            return False
        key[t] = np.where(R.group_keep(s[t], cfg, k), s[t], -np.inf)
    if not _gaps_ok(key, L, k, 1e-9):
        return False
    if router == "gshard":
        raw = o.get("threshold_on", "normalized") == "raw"
        for t in range(L.shape[0]):
            idx = R.order_desc(key[t])[:2]
            s1, s2 = s[t, idx[0]], s[t, idx[1]]
            if abs((2 * s2 if raw else 2 * s2 / (s1 + s2)) - u[t]) < 1e-9:
                return False
    return True


def robust(router, L, o, u):
    L = np.asarray(L, dtype=np.float64)
    if R.uses_score_path(o) and not _score_ok(router, L, o, u):
        return False
    if router == "topp":  # no deciding cumulative sum within 1e-9 of top_p, no near-tied p
        p = R.softmax(L)
        P = float(o.get("top_p", 0.5))
        kmax = int(o.get("max_k", 0)) or L.shape[1]
        for t in range(L.shape[0]):
            cum = np.cumsum(np.sort(p[t])[::-1])[:kmax - 1]  # the last can stop nothing
            if (cum.size and np.min(np.abs(cum - P)) < 1e-9) or not _gaps_ok(p[t:t + 1], L[t:t + 1],
                                                                          L.shape[1] - 1, 1e-9):
                return False
    if router == "relu" and (np.min(np.abs(L)) < 1e-9 or
                             not _gaps_ok(L, L, L.shape[1] - 1, 1e-9)):
        return False
    if router == "soft_moe" or router == "hash" or router == "dense":
        return True
    if router == "base":
        return _base_unique(L)
    if router == "sinkhorn":
        _, b, _ = R.sinkhorn_scalings(L, float(o.get("sinkhorn_tol", 1e-9)))
        if not _gaps_ok(L + b[None, :], L, int(o.get("k", 1)), 1e-6):
            return False
    if router == "dsv3_bias" and not _gaps_ok(R.sigmoid(L), L, int(o.get("k", 2)), 1e-9):
        return False
    p = R.softmax(L)
    order = o.get("order", "choice_major")
    if router == "expert_choice" or (order == "probs"):
        if not all(_near_tie_free(p[:, e], L) for e in range(L.shape[1])):
            return False
    if order == "bpr" and not _near_tie_free(p.max(axis=1), L):
        return False
    if router == "gshard":
        raw = o.get("threshold_on", "normalized") == "raw"
        for t in range(L.shape[0]):
            idx = R.order_desc(L[t])
            p1, p2 = p[t, idx[0]], p[t, idx[1]]
            test = 2 * p2 if raw else 2 * p2 / (p1 + p2)
            if abs(test - u[t]) < 1e-9:
                return False
    return True


# ---- cases -------------------------------------------------------------------------------

FLAG = {"k": "--k", "capacity_factor": "--capacity-factor", "capacity": "--capacity",
        "min_capacity": "--min-capacity", "order": "--order", "renormalize": "--renormalize",
        "threshold_on": "--threshold-on", "hash": "--hash",
        "slots_per_expert": "--slots-per-expert",
        "num_experts": "--num-experts", "rounding": "--rounding", "dropless": "--dropless",
        "sinkhorn_tol": "--sinkhorn-tol", "bias_rate": "--bias-rate", "score": "--score",
        "normalize_topk": "--normalize-topk", "route_scale": "--route-scale",
        "groups": "--groups", "topk_groups": "--topk-groups", "group_score": "--group-score",
        "top_p": "--top-p", "max_k": "--max-k"}

CASES = []


def case(name, router, seed, n, E, opts=None, dtype=np.float32, skew=0.0, scale=1.0, tied=False,
         ids=None, id_dtype=np.int64, vocab=None, table=None, layer=False, m=None):
    CASES.append(dict(name=name, router=router, seed=seed, n=n, E=E, opts=opts or {}, dtype=dtype,
                      skew=skew, scale=scale, tied=tied, ids=ids, id_dtype=id_dtype, vocab=vocab,
                      table=table, layer=layer, m=m))


# topk: default k = 2, cf = 1.0
case("topk_default", "topk", 1, 12, 4, skew=1.5)                                  # C = 6
case("topk_k1_n100_e10_cf1.1", "topk", 2, 100, 10, {"k": 1, "capacity_factor": "1.1"},
     dtype=np.float64, skew=2.0)                                                   # C = 11
case("topk_choice_major", "topk", 3, 10, 4, {"capacity_factor": "0.8", "order": "choice_major"},
     skew=2.0)                                                          # n % E != 0, C = 4
case("topk_token_major", "topk", 3, 10, 4, {"capacity_factor": "0.8", "order": "token_major"},
     skew=2.0)
case("topk_bpr", "topk", 4, 16, 4, {"capacity_factor": "0.75", "order": "bpr"}, skew=2.0)
case("topk_probs", "topk", 4, 16, 4, {"capacity_factor": "0.75", "order": "probs"}, skew=2.0)
case("topk_renorm_true", "topk", 5, 12, 4, {"capacity_factor": "0.5", "renormalize": True},
     skew=2.0)
case("topk_renorm_false", "topk", 5, 12, 4, {"capacity_factor": "0.5", "renormalize": False},
     skew=2.0)
case("topk_k_eq_e", "topk", 6, 7, 4, {"k": 4, "capacity_factor": "0.5"}, skew=1.0)  # C = 4
case("topk_cf0", "topk", 7, 6, 3, {"capacity_factor": "0"})                       # C = 0
case("topk_huge_cf", "topk", 8, 9, 3, {"capacity_factor": "1000"}, dtype=np.float64)  # C = 6000
case("topk_one_token", "topk", 9, 1, 4, {"k": 2})                                  # C = 1
case("topk_ties_f32", "topk", 10, 10, 4, {"capacity_factor": "0.75"}, tied=True)
case("topk_ties_probs", "topk", 11, 10, 4, {"capacity_factor": "0.75", "order": "probs"},
     tied=True)
case("topk_ties_bpr", "topk", 12, 10, 4, {"k": 1, "capacity_factor": "1", "order": "bpr"},
     tied=True)
case("topk_capacity2", "topk", 13, 10, 4, {"capacity": 2}, skew=1.0)
case("topk_min_capacity", "topk", 14, 8, 4, {"k": 1, "capacity_factor": "0.25",
                                              "min_capacity": 3}, skew=2.0)        # C = 3
case("topk_round_down", "topk", 15, 10, 4, {"k": 1, "rounding": "round"}, skew=1.0)  # 2.5 -> 2
case("topk_round_up", "topk", 16, 14, 4, {"k": 1, "rounding": "round"}, skew=1.0)    # 3.5 -> 4
case("topk_ceil", "topk", 15, 10, 4, {"k": 1, "rounding": "ceil"}, skew=1.0)          # 3
case("topk_floor", "topk", 15, 10, 4, {"k": 1, "rounding": "floor"}, skew=1.0)        # 2
case("topk_dropless", "topk", 17, 12, 4, {"dropless": True}, skew=2.0)
case("topk_dropless_false", "topk", 17, 12, 4, {"dropless": False}, skew=2.0)
case("topk_k3_e5_f64", "topk", 18, 11, 5, {"k": 3, "capacity_factor": "1.2"}, dtype=np.float64,
     skew=1.0, scale=3.0)
# switch (k = 1)
case("switch_default", "switch", 20, 12, 4, skew=1.0)                              # C = 3
case("switch_cf1.25_f64", "switch", 21, 10, 4, {"capacity_factor": "1.25"}, dtype=np.float64,
     skew=1.0)                                                                     # C = 4
case("switch_token_major", "switch", 22, 16, 4, {"order": "token_major"}, skew=2.0)
case("switch_bpr", "switch", 22, 16, 4, {"order": "bpr"}, skew=2.0)
case("switch_probs", "switch", 22, 16, 4, {"order": "probs"}, skew=2.0)
case("switch_renorm", "switch", 23, 12, 4, {"renormalize": True, "capacity_factor": "0.75"},
     skew=1.0)
case("switch_floor_c0", "switch", 24, 3, 8, {"capacity_factor": "0.5", "rounding": "floor"})
case("switch_dropless", "switch", 25, 12, 4, {"dropless": True}, skew=2.0)
case("switch_skewed_n100", "switch", 26, 100, 10, {"capacity_factor": "1.1"}, skew=4.0)
# gshard (k = 2, draws given)
case("gshard_default", "gshard", 30, 12, 4, skew=1.0)                              # C = 6
case("gshard_normalized", "gshard", 31, 12, 4, {"threshold_on": "normalized",
                                                "capacity_factor": "0.75"}, skew=2.0)
case("gshard_raw", "gshard", 31, 12, 4, {"threshold_on": "raw", "capacity_factor": "0.75"},
     skew=2.0)
case("gshard_renorm", "gshard", 32, 12, 4, {"capacity_factor": "0.5", "renormalize": True},
     skew=2.0)
case("gshard_token_major", "gshard", 33, 12, 4, {"capacity_factor": "0.5",
                                                 "order": "token_major"}, skew=2.0)
case("gshard_bpr", "gshard", 33, 12, 4, {"capacity_factor": "0.5", "order": "bpr"}, skew=2.0)
case("gshard_probs", "gshard", 33, 12, 4, {"capacity_factor": "0.5", "order": "probs"}, skew=2.0)
case("gshard_dropless", "gshard", 34, 12, 4, {"dropless": True}, skew=2.0)
case("gshard_n13_round", "gshard", 35, 13, 4, {"rounding": "round"}, dtype=np.float64,
     skew=1.0)                                                                     # 6.5 -> 6
case("gshard_ties", "gshard", 36, 10, 4, {"capacity_factor": "0.75"}, tied=True)
# expert choice
case("ec_default", "expert_choice", 40, 12, 4, skew=1.0)                           # C = 3
case("ec_cf1.5_f64", "expert_choice", 41, 10, 4, {"capacity_factor": "1.5"}, dtype=np.float64)
case("ec_huge_cf", "expert_choice", 42, 6, 3, {"capacity_factor": "100"})          # capped: 6
case("ec_ties", "expert_choice", 43, 10, 4, {"capacity_factor": "1"}, tied=True)
case("ec_round", "expert_choice", 44, 10, 4, {"rounding": "round"}, skew=2.0)      # 2.5 -> 2
case("ec_floor_c0", "expert_choice", 45, 3, 4, {"rounding": "floor"})              # C = 0
case("ec_capacity", "expert_choice", 46, 10, 4, {"capacity": 2}, skew=2.0)
case("ec_min_capacity", "expert_choice", 47, 10, 4, {"capacity_factor": "0.1",
                                                     "min_capacity": 3})          # C = 3
case("ec_one_token", "expert_choice", 48, 1, 3)                                    # C = 1
# hash (weights 1; no capacity limit unless cf or capacity given)
case("hash_mod_i64", "hash", 50, 20, 4, ids=True, vocab=30)
case("hash_mod_i32_cf1", "hash", 51, 20, 4, {"hash": "mod", "capacity_factor": "1"}, ids=True,
     id_dtype=np.int32, vocab=30)                                                 # C = 5
case("hash_table", "hash", 52, 20, 4, {"hash": "table"}, ids=True, vocab=25, table=25)
case("hash_table_i32", "hash", 53, 16, 3, {"hash": "table", "capacity": 4}, ids=True,
     id_dtype=np.int32, vocab=12, table=12)
case("hash_balanced", "hash", 54, 24, 4, {"hash": "balanced"}, ids=True, vocab=40)
case("hash_balanced_cf", "hash", 55, 24, 4, {"hash": "balanced", "capacity_factor": "0.75"},
     ids=True, vocab=40, dtype=np.float64)
# soft moe
case("soft_default", "soft_moe", 60, 6, 4, dtype=np.float32)                       # P = 1
case("soft_slots2", "soft_moe", 61, 7, 3, {"slots_per_expert": 2}, m=6, dtype=np.float64)
case("soft_num_experts2", "soft_moe", 62, 5, 2, {"num_experts": 2, "slots_per_expert": 3},
     m=6)                                                                          # P = 3
case("soft_one_token", "soft_moe", 63, 1, 2, {"slots_per_expert": 2}, m=4)
# layer cases (d = 8, f = 16, GELU tanh)
case("layer_topk_ke_dropless", "topk", 70, 10, 4, {"k": 4, "dropless": True}, layer=True)
case("layer_topk_drops", "topk", 71, 12, 4, {"capacity_factor": "0.5"}, skew=2.0, layer=True)
case("layer_switch", "switch", 72, 12, 4, {"capacity_factor": "1.0"}, skew=1.0, layer=True)
case("layer_gshard", "gshard", 73, 12, 4, {"capacity_factor": "0.75"}, skew=1.0, layer=True)
case("layer_expert_choice", "expert_choice", 74, 12, 4, {"capacity_factor": "1"}, layer=True)
case("layer_soft_moe", "soft_moe", 75, 8, 4, {"slots_per_expert": 2}, m=8, layer=True)
case("layer_hash", "hash", 76, 12, 4, {"capacity_factor": "1"}, ids=True, vocab=10,
     layer=True)
# beyond the six
# base: C = ceil(n/E), every token served, total affinity maximal; slots in token order
case("base_default", "base", 80, 12, 4, skew=2.0)                                # C = 3
case("base_n13_f64", "base", 81, 13, 4, dtype=np.float64, skew=3.0)             # C = 4
case("base_skewed_n40_e8", "base", 82, 40, 8, skew=4.0)                         # C = 5
case("base_n10_skew1", "base", 83, 10, 4, skew=1.0)                              # C = 3
case("base_one_token", "base", 84, 1, 3)                                         # C = 1
case("base_n_lt_e", "base", 85, 3, 5, dtype=np.float64, scale=2.0)              # C = 1
# sinkhorn: top-k of the balanced matrix; dropless unless cf or capacity
case("sinkhorn_default", "sinkhorn", 90, 12, 4, skew=2.0)                        # k = 1
case("sinkhorn_k2_f64", "sinkhorn", 91, 16, 4, {"k": 2}, dtype=np.float64, skew=2.0)
case("sinkhorn_cf1", "sinkhorn", 92, 16, 4, {"capacity_factor": "1.0"}, skew=3.0)  # C = 4
case("sinkhorn_k2_token_major", "sinkhorn", 93, 16, 4, {"k": 2, "capacity_factor": "0.75",
                                                        "order": "token_major"}, skew=3.0)
case("sinkhorn_k2_probs", "sinkhorn", 93, 16, 4, {"k": 2, "capacity_factor": "0.75",
                                                  "order": "probs"}, skew=3.0)
case("sinkhorn_k2_renorm", "sinkhorn", 94, 12, 4, {"k": 2, "capacity": 4, "renormalize": True},
     skew=3.0)
case("sinkhorn_tol1e-4", "sinkhorn", 95, 20, 5, {"sinkhorn_tol": "1e-4"}, skew=1.0, scale=2.0)
case("sinkhorn_dropless_cf", "sinkhorn", 96, 12, 4, {"capacity_factor": "0.5",
                                                     "dropless": True}, skew=2.0)
# dsv3_bias: one batch, bias 0: top-k of sigmoid(L), gates normalised over the k selected
case("dsv3_default", "dsv3_bias", 100, 12, 4, skew=2.0)                          # k = 2
case("dsv3_k1", "dsv3_bias", 101, 12, 4, {"k": 1}, skew=2.0)
case("dsv3_k3_f64", "dsv3_bias", 102, 11, 5, {"k": 3}, dtype=np.float64, scale=3.0)
case("dsv3_cf1", "dsv3_bias", 103, 16, 4, {"capacity_factor": "1.0"}, skew=2.0)  # C = 8
case("dsv3_cf_bpr", "dsv3_bias", 104, 16, 4, {"capacity_factor": "0.75", "order": "bpr"},
     skew=3.0)
case("dsv3_ties", "dsv3_bias", 105, 10, 4, {"capacity_factor": "0.75"}, tied=True)
case("dsv3_bias_rate", "dsv3_bias", 106, 8, 4, {"bias_rate": "0.5"}, skew=1.0)  # one batch
# dense: every expert, weights p; slot = token, capacity n
case("dense_default", "dense", 110, 6, 4)
case("dense_f64_k_e", "dense", 111, 5, 3, {"k": 3}, dtype=np.float64, scale=3.0)
case("dense_one_token", "dense", 112, 1, 4)
case("layer_base", "base", 120, 12, 4, skew=2.0, layer=True)
case("layer_sinkhorn_k2_cf", "sinkhorn", 121, 12, 4, {"k": 2, "capacity_factor": "0.75"},
     skew=2.0, layer=True)
case("layer_dsv3_cf", "dsv3_bias", 122, 12, 4, {"capacity_factor": "0.75"}, skew=2.0,
     layer=True)
case("layer_dense", "dense", 123, 10, 4, layer=True)
# score path (routers/score.c): score functions, normalisation, route_scale, group limits
case("score_topk_sigmoid", "topk", 130, 12, 8, {"score": "sigmoid"}, skew=1.5)
case("score_topk_sqrtsoftplus_raw", "topk", 131, 12, 8,
     {"score": "sqrtsoftplus", "normalize_topk": "false", "k": 3}, dtype=np.float64)
case("score_topk_softmax_raw_cf", "topk", 132, 16, 4,
     {"normalize_topk": "false", "capacity_factor": "0.75"}, skew=2.0)
case("score_topk_sigmoid_scale", "topk", 133, 10, 6,
     {"score": "sigmoid", "route_scale": "2.5", "k": 3}, scale=2.0)
case("score_topk_groups_sum", "topk", 134, 16, 8,
     {"score": "sigmoid", "k": 4, "groups": 4, "topk_groups": 2}, scale=2.0)
case("score_topk_groups_max", "topk", 135, 16, 8,
     {"k": 2, "groups": 4, "topk_groups": 1, "group_score": "max"}, scale=2.0)
case("score_switch_sigmoid", "switch", 136, 12, 4, {"score": "sigmoid"}, skew=1.0)
case("score_switch_norm_cf", "switch", 137, 12, 4,
     {"normalize_topk": "true", "capacity_factor": "1.0"}, skew=2.0)
case("score_gshard_sigmoid", "gshard", 138, 12, 6, {"score": "sigmoid"}, skew=1.0)
case("score_gshard_groups_raw", "gshard", 139, 12, 6,
     {"groups": 3, "topk_groups": 1, "normalize_topk": "false"}, scale=2.0)
case("score_dsv3_groups", "dsv3_bias", 140, 16, 8,
     {"k": 4, "groups": 4, "topk_groups": 2, "route_scale": "2.5"}, scale=2.0)
case("score_dsv3_softmax_k1", "dsv3_bias", 141, 12, 4, {"k": 1, "score": "softmax"})
case("layer_score_topk_groups", "topk", 142, 12, 8,
     {"score": "sigmoid", "k": 2, "groups": 4, "topk_groups": 2, "route_scale": "1.5"},
     scale=2.0, layer=True)
# variable k: topp (dynamic top-p) and relu (ReMoE); dropless unless cf or capacity
case("topp_default", "topp", 150, 12, 6, skew=1.0)
case("topp_p09_maxk3", "topp", 151, 16, 8, {"top_p": "0.9", "max_k": 3}, dtype=np.float64)
case("topp_p1", "topp", 152, 8, 4, {"top_p": "1"}, scale=3.0)
case("topp_cf1", "topp", 153, 16, 6, {"top_p": "0.6", "capacity_factor": "1.0"}, skew=2.0)
case("relu_default", "relu", 154, 12, 6)
case("relu_maxk2_f64", "relu", 155, 12, 6, {"max_k": 2}, dtype=np.float64, scale=2.0)
case("relu_cf_token_major", "relu", 156, 16, 4, {"capacity_factor": "0.75",
                                                 "order": "token_major"}, skew=1.0)
case("layer_topp", "topp", 157, 12, 6, {"top_p": "0.7"}, skew=1.0, layer=True)
case("layer_relu_cf", "relu", 158, 12, 6, {"capacity_factor": "1.0"}, skew=1.0, layer=True)


def build_inputs(c, seed):
    rng = np.random.default_rng(seed)
    n, E = c["n"], c["E"]
    m = c["m"] or E
    if c["tied"]:
        L = make_tied_logits(rng, n, m, c["dtype"])
    else:
        L = make_logits(rng, n, m, c["dtype"], c["skew"], c["scale"])
    inp = {"logits": L}
    if c["ids"]:
        inp["ids"] = zipf_ids(rng, n, c["vocab"], dtype=c["id_dtype"])
    if c["table"]:
        inp["table"] = rng.integers(0, E, size=c["table"]).astype(np.int64)
    if c["router"] == "gshard":
        inp["u"] = rng.random(n)
    if c["layer"]:
        inp["x"] = rng.standard_normal((n, 8)).astype(np.float32)
        inp["W"] = make_weights(rng, E)
    return inp


def write_case(c):
    o = dict(c["opts"])
    seed = c["seed"] * 1000
    for _ in range(200):
        inp = build_inputs(c, seed)
        if robust(c["router"], inp["logits"], o, inp.get("u")):
            break
        seed += 1
    else:
        raise RuntimeError("no robust inputs for " + c["name"])
    if "table" in inp:
        o["hash_table_data"] = inp["table"]
    plan, met, y = R.run_case(c["router"], inp["logits"], o, inp.get("ids"), inp.get("u"),
                              inp.get("W"), inp.get("x"))
    d = os.path.join(ROOT, c["name"])
    os.makedirs(d)
    args = ["--router", c["router"], "--logits", "logits.npy"]
    np.save(os.path.join(d, "logits.npy"), inp["logits"])
    if "ids" in inp:
        np.save(os.path.join(d, "ids.npy"), inp["ids"])
        args += ["--tokens", "ids.npy"]
    if "table" in inp:
        np.save(os.path.join(d, "table.npy"), inp["table"])
        args += ["--hash-table", "table.npy"]
    if "u" in inp:
        np.save(os.path.join(d, "u.npy"), inp["u"])
        args += ["--uniforms", "u.npy"]
    for key, val in c["opts"].items():
        if isinstance(val, bool):
            val = "true" if val else "false"
        args += [FLAG[key], str(val)]
    if c["layer"]:
        np.save(os.path.join(d, "x.npy"), inp["x"])
        args += ["--x", "x.npy"]
        for w in ("w1", "b1", "w2", "b2"):
            np.save(os.path.join(d, w + ".npy"), inp["W"][w])
            args += ["--" + w, w + ".npy"]
        np.save(os.path.join(d, "expected_y.npy"), y)
    with open(os.path.join(d, "cmd"), "w") as fh:
        fh.write(" ".join(args) + "\n")
    with open(os.path.join(d, "expected_plan.csv"), "w") as fh:
        fh.write("token,expert,slot,dispatch_weight,combine_weight\n")
        for t, e, s, dw, cw in plan.sorted_entries():
            fh.write("%d,%d,%d,%.17g,%.17g\n" % (t, e, s, dw, cw))
    with open(os.path.join(d, "expected_metrics.json"), "w") as fh:
        fh.write("{\n" + ",\n".join(" %s: %s" % (json.dumps(k), json.dumps(v))
                                     for k, v in met.items()) + "\n}\n")
    return plan, met


def main():
    hand_checks()
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    os.makedirs(ROOT)
    total = 0
    for c in CASES:
        plan, met = write_case(c)
        if c["layer"] and c["name"] == "layer_topk_ke_dropless":
            # k = E, dropless: every token keeps every expert with gate = softmax over all E
            # logits = p, so y is the dense mixture.
            assert met["output_error_dense"] < 1e-12, met["output_error_dense"]
        if c["name"] == "layer_dense":
            # the dense router's layer output is the dense mixture itself
            assert met["output_error_dense"] < 1e-12, met["output_error_dense"]
        if c["router"] == "base":
            assert max(met["assigned_load"]) <= met["capacity"] == -(-c["n"] // c["E"])
            assert met["token_drop_rate"] == 0.0 and met["num_entries"] == c["n"]
        if c["name"] == "topk_k1_n100_e10_cf1.1":
            assert met["capacity"] == 11 and met["assignment_drop_rate"] > 0
    for dp, _, fs in os.walk(ROOT):
        total += sum(os.path.getsize(os.path.join(dp, f)) for f in fs)
    print("gen_fixtures: %d cases, %d bytes in %s" % (len(CASES), total, os.path.normpath(ROOT)))


if __name__ == "__main__":
    main()
