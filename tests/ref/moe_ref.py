"""moe_ref.py: an independent NumPy reference implementation of docs/routing.md.

Written from the document alone (not from the C routers), so that `tests/test_fixtures.c` compares
two implementations of the same contract. It owns:
  - capacity (section 2): exact decimal capacity factor via fractions.Fraction, ceil/floor/round
    (half to even), min_capacity, explicit capacity, dropless;
  - the claim orders choice_major / token_major / bpr / probs and renormalisation (section 2);
  - the routers topk, switch, gshard (draws u given), expert_choice, hash (mod, table, balanced),
    soft_moe (section 3), and beyond the six: base (exact balanced assignment by the Hungarian
    method on the n x (E*ceil(n/E)) slot matrix), sinkhorn (log-domain Sinkhorn to the same
    relative tolerance on the column scalings), dsv3_bias (one batch, bias given or 0; the bias
    update rule as dsv3_bias_update) and dense;
  - the metrics of section 4, FLOPs with (d, f) for GELU experts;
  - the MoE layer output y (float64 math on the float32 inputs), the dense mixture and the
    relative output errors against it and against the router's own dropless form.

Shapes: L (n, m) logits, p (n, E) per-row softmax, x (n, d), w1 (E, d, f), b1 (E, f),
w2 (E, f, d), b2 (E, d).

Decisions the semantics leave open, taken here as docs/routing.md section 5 takes them:
  - explicit capacity overrides the formula and min_capacity;
  - expert_choice: C = max(min_capacity, ROUND(n*cf/E)) or the explicit capacity, then capped at n;
    the reported capacity is the capped value;
  - dropless (and hash without cf/capacity): reported capacity = max load actually claimed;
  - hash with a capacity: assigned_load counts claims before capacity (as token-choice routers),
    importance = sum of claim weights (= assigned_load, weights are 1);
  - kept_load[e] = number of filled slots of e (entries for sparse plans, P for soft_moe);
  - flops_expert_useful = 4*d*f * (filled slots) = 4*d*f*num kept entries for sparse plans and
    4*d*f*m for soft_moe (each of the E*P slots is run once); flops_expert_padded = E*C*4*d*f;
  - experts_per_token counts distinct experts per token among the plan's entries;
  - ratios with a zero denominator (mean load 0, no claims) are 0;
  - base: capacity options are ignored (C = ceil(n/E) by definition); importance = sum
    of the sigmoid gates; n_claims = n;
  - sinkhorn and dsv3_bias: a capacity limit only when capacity_factor or capacity is given (as
    hash); then claims in the given order, with p = softmax(L) for bpr and probs;
  - dense: capacity = n, slot = token index, assigned = n per expert, k = E; capacity options
    are ignored.
"""
from fractions import Fraction
import math

import numpy as np

# ---- capacity ---------------------------------------------------------------------------


def round_fraction(x, rounding):
    """ROUND of an exact Fraction: ceil, floor or round (half to even)."""
    x = Fraction(x)
    if rounding == "ceil":
        return -((-x.numerator) // x.denominator)
    if rounding == "floor":
        return x.numerator // x.denominator
    if rounding == "round":
        return round(x)  # Fraction.__round__ rounds half to even
    raise ValueError("rounding " + rounding)


def capacity(k, n, E, cf=None, cap=None, min_capacity=0, rounding="ceil"):
    """C = max(min_capacity, ROUND(k*n*cf/E)) exactly; cf is a decimal string (default "1.0");
    an explicit capacity overrides."""
    if cap is not None:
        return int(cap)
    cf = Fraction(cf if cf is not None else "1.0")
    return max(int(min_capacity), round_fraction(Fraction(k * n) * cf / E, rounding))


# ---- numerics ---------------------------------------------------------------------------


def softmax(a, axis=-1):
    a = np.asarray(a, dtype=np.float64)
    z = np.exp(a - a.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def logsumexp(a, axis=-1):
    a = np.asarray(a, dtype=np.float64)
    mx = a.max(axis=axis, keepdims=True)
    return (mx + np.log(np.exp(a - mx).sum(axis=axis, keepdims=True))).squeeze(axis)


def order_desc(v):
    """Indices by descending v; equal values keep ascending index order (stable)."""
    v = np.asarray(v, dtype=np.float64)
    return np.argsort(-v, kind="stable")


def gelu_tanh(a):
    return 0.5 * a * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a ** 3)))


# ---- plans ------------------------------------------------------------------------------


class Plan:
    """entries: list of (token, expert, slot, dispatch_w, combine_w)."""

    def __init__(self, router, n, E, m, C):
        self.router, self.n, self.E, self.m, self.capacity = router, n, E, m, C
        self.entries = []
        self.assigned = np.zeros(E, dtype=np.int64)
        self.importance = np.zeros(E)
        self.n_claims = 0
        self.aux_loss = 0.0
        self.dense = False

    def sorted_entries(self):
        return sorted(self.entries, key=lambda r: (r[0], r[1], r[2]))


def claim_slots(n, E, choices, p, C, order, renormalize):
    """Token-choice claiming (docs/routing.md section 2).

    choices[t]: list of (expert, gate) in rank order (first choice first); p (n, E) full softmax
    (for bpr and probs); C slots per expert or None (no limit). Returns (entries, assigned,
    importance, n_claims)."""
    assigned = np.zeros(E, dtype=np.int64)
    importance = np.zeros(E)
    n_claims = 0
    for t in range(n):
        for e, g in choices[t]:
            assigned[e] += 1
            importance[e] += g
            n_claims += 1
    kept = {}  # (t, rank) -> slot
    if order in ("choice_major", "token_major", "bpr"):
        if order == "token_major":
            seq = [(t, r) for t in range(n) for r in range(len(choices[t]))]
        else:
            if order == "bpr":
                key = p.max(axis=1)
                toks = sorted(range(n), key=lambda t: (-key[t], t))
            else:
                toks = list(range(n))
            kmax = max(len(c) for c in choices) if n else 0
            seq = [(t, r) for r in range(kmax) for t in toks if r < len(choices[t])]
        fill = [0] * E
        for t, r in seq:
            e = choices[t][r][0]
            if C is None or fill[e] < C:
                kept[(t, r)] = fill[e]
                fill[e] += 1
    elif order == "probs":
        for e in range(E):
            cl = [(t, r) for t in range(n) for r in range(len(choices[t])) if choices[t][r][0] == e]
            cl.sort(key=lambda tr: (-p[tr[0], e], tr[0]))
            keep = cl if C is None else cl[:C]
            keep.sort(key=lambda tr: tr[0])
            for s, tr in enumerate(keep):
                kept[tr] = s
    else:
        raise ValueError("order " + order)
    entries = []
    for t in range(n):
        ks = [r for r in range(len(choices[t])) if (t, r) in kept]
        tot = sum(choices[t][r][1] for r in ks)
        for r in ks:
            e, g = choices[t][r]
            cw = g / tot if renormalize else g
            entries.append((t, e, kept[(t, r)], 1.0, cw))
    return entries, assigned, importance, n_claims


def token_choice_plan(name, L, choices, k, o, E):
    """Capacity + claiming for topk/switch/gshard/hash; o is the options dict."""
    n = L.shape[0]
    p = softmax(L)
    if o.get("dropless"):
        C = None
    else:
        C = capacity(k, n, E, o.get("capacity_factor"), o.get("capacity"),
                     o.get("min_capacity", 0), o.get("rounding", "ceil"))
    entries, assigned, importance, n_claims = claim_slots(
        n, E, choices, p, C, o.get("order", "choice_major"), o.get("renormalize", False))
    if C is None:
        C = int(assigned.max())  # dropless: max load actually claimed
    plan = Plan(name, n, E, L.shape[1], C)
    plan.entries, plan.assigned = entries, assigned
    plan.importance, plan.n_claims = importance, n_claims
    return plan


# ---- score path (routers/score.c) --------------------------------------------------------
# Megatron-LM core megatron/core/transformer/moe/moe_utils.py: topk_routing_with_score_function
# (scores softmax / sigmoid / sqrtsoftplus, top-k, sigmoid and sqrtsoftplus normalised only for
# k > 1, times scaling_factor) and group_limited_topk (group score = sum of the top-(k/M)
# scores of a group; experts outside the M best groups masked); DeepSeek-V3 inference/model.py
# Gate.forward (group score = max of the group).

SCORE_KEYS = ("score", "normalize_topk", "route_scale", "groups", "topk_groups", "group_score")


def uses_score_path(o):
    return any(key in o for key in SCORE_KEYS)


def scores(L, name):
    L = np.asarray(L, dtype=np.float64)
    if name == "sigmoid":
        return sigmoid(L)
    if name == "sqrtsoftplus":
        return np.sqrt(np.logaddexp(0.0, L))
    return softmax(L)


def score_cfg(o, k, def_score, def_norm):
    sc = o.get("score", "auto")
    sc = def_score if sc == "auto" else sc
    nz = o.get("normalize_topk", "auto")
    norm = def_norm if nz == "auto" else nz in (True, "true")
    if k == 1 and sc != "softmax":
        norm = False
    G = int(o.get("groups", 0))
    M = int(o.get("topk_groups", G))
    return dict(score=sc, norm=norm, scale=float(o.get("route_scale", 1.0)), G=G, M=M,
                gmax=o.get("group_score", "topk_sum") == "max")


def group_keep(key, cfg, k):
    """Boolean (E) mask of the experts of the M best groups (ties: lower group)."""
    E, G, M = len(key), cfg["G"], cfg["M"]
    kg = key.reshape(G, E // G)
    if cfg["gmax"]:
        gs = kg.max(axis=1)
    else:
        per = min(max(k // M, 1), E // G)
        gs = np.array([np.sort(row)[::-1][:per].sum() for row in kg])
    keep = np.zeros(G, dtype=bool)
    keep[order_desc(gs)[:M]] = True
    return np.repeat(keep, E // G)


def score_weights(chosen, cfg):
    chosen = np.asarray(chosen, dtype=np.float64)
    w = chosen / chosen.sum() if cfg["norm"] and chosen.sum() > 0 else chosen
    return w * cfg["scale"]


def score_choices(L, o, k, def_score, def_norm, bias=None):
    """Each token's k choices [(expert, weight)] through the score path; also s (T,E)."""
    cfg = score_cfg(o, k, def_score, def_norm)
    s = scores(L, cfg["score"])
    out = []
    for t in range(L.shape[0]):
        key = s[t] + (0.0 if bias is None else bias)
        if cfg["G"]:
            key = np.where(group_keep(key, cfg, k), key, -np.inf)
        idx = order_desc(key)[:k]
        w = score_weights(s[t, idx], cfg)
        out.append([(int(e), float(wi)) for e, wi in zip(idx, w)])
    return out, s, cfg


# ---- routers ----------------------------------------------------------------------------


def route_topk(L, o):
    n, E = L.shape
    k = int(o.get("k", 2))
    assert 1 <= k <= E
    choices = []
    if uses_score_path(o):
        choices = score_choices(L, o, k, "softmax", True)[0]
    for t in range(n if not choices else 0):
        idx = order_desc(L[t])[:k]
        g = softmax(L[t, idx])
        choices.append([(int(e), float(gi)) for e, gi in zip(idx, g)])
    plan = token_choice_plan("topk", L, choices, k, o, E)
    P = softmax(L).mean(axis=0)
    plan.aux_loss = float(E / (k * n) * np.sum(plan.assigned * P))
    return plan


def route_switch(L, o):
    n, E = L.shape
    p = softmax(L)
    choices = []
    first = np.zeros(E)
    sp = score_choices(L, o, 1, "softmax", False)[0] if uses_score_path(o) else None
    for t in range(n):
        e = int(order_desc(L[t])[0])
        choices.append([(e, float(p[t, e]))])
        if sp:
            choices[-1] = sp[t]
            e = sp[t][0][0]
        first[e] += 1
    plan = token_choice_plan("switch", L, choices, 1, o, E)
    plan.aux_loss = float(E * np.sum(first / n * p.mean(axis=0)))
    return plan


def route_gshard(L, o, u):
    n, E = L.shape
    assert E >= 2
    p = softmax(L)
    raw = o.get("threshold_on", "normalized") == "raw"
    choices = []
    first = np.zeros(E)
    sp = score_choices(L, o, 2, "softmax", True) if uses_score_path(o) else None
    for t in range(n):
        idx = order_desc(L[t])
        e1, e2 = int(idx[0]), int(idx[1])
        p1, p2 = p[t, e1], p[t, e2]
        g1, g2 = p1 / (p1 + p2), p2 / (p1 + p2)
        test = 2.0 * p2 if raw else 2.0 * g2
        if sp:  # score path: weights from score_weights, the test on the scores s1, s2
            (e1, g1), (e2, g2) = sp[0][t]
            s1, s2 = sp[1][t, e1], sp[1][t, e2]
            test = 2.0 * s2 if raw else 2.0 * s2 / (s1 + s2)
        first[e1] += 1
        c = [(e1, float(g1))]
        if test > u[t]:
            c.append((e2, float(g2)))
        choices.append(c)
    plan = token_choice_plan("gshard", L, choices, 2, o, E)
    plan.aux_loss = float(E * np.sum(first / n * p.mean(axis=0)))
    return plan


def route_expert_choice(L, o):
    n, E = L.shape
    S = softmax(L)
    C = capacity(1, n, E, o.get("capacity_factor"), o.get("capacity"),
                 o.get("min_capacity", 0), o.get("rounding", "ceil"))
    C = min(C, n)
    plan = Plan("expert_choice", n, E, E, C)
    for e in range(E):
        for s, t in enumerate(order_desc(S[:, e])[:C]):
            plan.entries.append((int(t), e, s, 1.0, float(S[t, e])))
            plan.importance[e] += S[t, e]
    plan.assigned[:] = C
    plan.n_claims = len(plan.entries)
    plan.aux_loss = 0.0
    return plan


def hash_map(ids, E, o):
    kind = o.get("hash", "mod")
    if kind == "mod":
        return {int(i): int(i) % E for i in ids}
    if kind == "table":
        tab = o["hash_table_data"]
        return {int(i): int(tab[int(i)]) for i in ids}
    if kind == "balanced":
        freq = {}
        for i in ids:
            freq[int(i)] = freq.get(int(i), 0) + 1
        order = sorted(freq, key=lambda i: (-freq[i], i))
        load = [0] * E
        m = {}
        for i in order:
            b = min(range(E), key=lambda j: (load[j], j))
            m[i] = b
            load[b] += freq[i]
        return m
    raise ValueError("hash " + kind)


def route_hash(L, o, ids):
    n, E = L.shape
    h = hash_map(ids, E, o)
    choices = [[(h[int(ids[t])], 1.0)] for t in range(n)]
    limited = (o.get("capacity_factor") is not None or o.get("capacity") is not None) \
        and not o.get("dropless")
    oo = dict(o, order="choice_major", dropless=not limited)  # k = 1: token order
    plan = token_choice_plan("hash", L, choices, 1, oo, E)
    plan.aux_loss = 0.0
    return plan


def soft_shape(m, o):
    P = o.get("slots_per_expert")
    E = o.get("num_experts")
    if E is not None and P is not None:
        assert E * P == m
    elif E is not None:
        assert m % E == 0
        P = m // E
    else:
        P = P or 1
        assert m % P == 0
        E = m // P
    return int(E), int(P)


def route_soft_moe(L, o):
    n, m = L.shape
    E, P = soft_shape(m, o)
    D = softmax(L, axis=0)   # per column, over tokens
    Cw = softmax(L, axis=1)  # per token, over all columns
    plan = Plan("soft_moe", n, E, m, P)
    plan.dense = True
    for t in range(n):
        for j in range(m):
            plan.entries.append((t, j // P, j % P, float(D[t, j]), float(Cw[t, j])))
    plan.assigned[:] = P
    for e in range(E):
        plan.importance[e] = Cw[:, e * P:(e + 1) * P].sum()
    plan.n_claims = len(plan.entries)
    plan.mix = Cw.reshape(n, E, P).sum(axis=2)  # p[t,e] of the dense mixture
    return plan


# ---- beyond the six (docs/routing.md section 3, last bullet) ------------------------------------


def sigmoid(a):
    a = np.asarray(a, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-a))


def hungarian_min(cost):
    """Minimum-cost assignment of every row of cost (r, c), r <= c, to a distinct column
    (Kuhn-Munkres with row potentials u and column potentials v, O(r^2 c), vectorised over
    columns). Returns col (r,): the column of each row."""
    cost = np.asarray(cost, dtype=np.float64)
    r, c = cost.shape
    assert r <= c
    INF = float("inf")
    u = np.zeros(r + 1)
    v = np.zeros(c + 1)
    owner = np.zeros(c + 1, dtype=np.int64)  # owner[j] = row (1-based) holding column j; 0 free
    way = np.zeros(c + 1, dtype=np.int64)
    for i in range(1, r + 1):
        owner[0] = i
        j0 = 0
        minv = np.full(c + 1, INF)
        used = np.zeros(c + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], INF)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while True:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
            if j0 == 0:
                break
    col = np.zeros(r, dtype=np.int64)
    for j in range(1, c + 1):
        if owner[j]:
            col[owner[j] - 1] = j - 1
    return col


def base_assignment(L):
    """BASE: the expert of each token maximising sum_t L[t, e(t)] with at most C = ceil(n/E)
    tokens per expert, as a Hungarian assignment of tokens to the E*C expert slots (column
    e*C + q is slot q of expert e). Returns (experts (n,), C)."""
    L = np.asarray(L, dtype=np.float64)
    n, E = L.shape
    C = -(-n // E)
    cost = -np.repeat(L, C, axis=1)  # (n, E*C): column j -> expert j // C
    return hungarian_min(cost) // C, C


def route_base(L, o):
    n, E = L.shape
    asg, C = base_assignment(L)
    plan = Plan("base", n, E, E, C)
    fill = [0] * E
    for t in range(n):  # slots in token order
        e = int(asg[t])
        g = float(sigmoid(L[t, e]))
        plan.entries.append((t, e, fill[e], 1.0, g))
        fill[e] += 1
        plan.assigned[e] += 1
        plan.importance[e] += g
    plan.n_claims = n
    plan.aux_loss = 0.0
    return plan


SINKHORN_MAX_ITER = 10000


def sinkhorn_scalings(L, tol=1e-9, max_iter=SINKHORN_MAX_ITER):
    """Sinkhorn balancing of exp(L) to column sums 1/E and row sums 1/n, in the log domain:
    a = log d0 (n,), b = log d1 (E,) with B = exp(a[:,None] + L + b[None,:]);
    b starts at 0; a = -log n - logsumexp(L + b, axis 1); b' = -log E - logsumexp(L + a, axis 0);
    stop when max_e |d1' - d1| / d1' = max |1 - exp(b - b')| < tol. Returns (a, b, iterations)."""
    L = np.asarray(L, dtype=np.float64)
    n, E = L.shape
    b = np.zeros(E)
    for it in range(1, max_iter + 1):
        a = -math.log(n) - logsumexp(L + b[None, :], axis=1)
        b_new = -math.log(E) - logsumexp(L + a[:, None], axis=0)
        delta = float(np.max(np.abs(1.0 - np.exp(b - b_new))))
        b = b_new
        if delta < tol:
            return a, b, it
    raise RuntimeError("sinkhorn did not converge")


def limited_capacity(o):
    """sinkhorn, dsv3_bias, hash: a capacity limit only with a capacity factor or capacity."""
    return (o.get("capacity_factor") is not None or o.get("capacity") is not None) \
        and not o.get("dropless")


def route_sinkhorn(L, o):
    n, E = L.shape
    k = int(o.get("k", 1))
    a, b, _ = sinkhorn_scalings(L, float(o.get("sinkhorn_tol", 1e-9)))
    key = L + b[None, :]  # log of the balanced matrix up to each row's constant
    p = softmax(L)
    choices = []
    for t in range(n):
        idx = order_desc(key[t])[:k]
        g = [float(sigmoid(L[t, e])) if k == 1 else float(p[t, e]) for e in idx]
        choices.append([(int(e), gi) for e, gi in zip(idx, g)])
    oo = dict(o, dropless=not limited_capacity(o))
    plan = token_choice_plan("sinkhorn", L, choices, k, oo, E)
    plan.aux_loss = 0.0
    return plan


def route_dsv3_bias(L, o, bias=None):
    """DeepSeek-V3: top-k of sigmoid(L) + bias (bias 0 for one `moesim route` batch), gates the
    selected sigmoid scores divided by their sum."""
    n, E = L.shape
    k = int(o.get("k", 2))
    s = sigmoid(L)
    bvec = np.zeros(E) if bias is None else np.asarray(bias, dtype=np.float64)
    choices = []
    if uses_score_path(o):
        choices = score_choices(L, o, k, "sigmoid", True, bvec)[0]
    for t in range(n if not choices else 0):
        idx = order_desc(s[t] + bvec)[:k]
        tot = s[t, idx].sum()
        choices.append([(int(e), float(s[t, e] / tot)) for e in idx])
    oo = dict(o, dropless=not limited_capacity(o))
    plan = token_choice_plan("dsv3_bias", L, choices, k, oo, E)
    plan.aux_loss = 0.0
    return plan


def dsv3_bias_update(bias, assigned, rate):
    """b_e += rate * sign(mean load - load_e), load = assigned load of the batch."""
    assigned = np.asarray(assigned, dtype=np.float64)
    return np.asarray(bias, dtype=np.float64) + rate * np.sign(assigned.mean() - assigned)


def route_dense(L, o):
    n, E = L.shape
    p = softmax(L)
    plan = Plan("dense", n, E, E, n)
    for t in range(n):
        for e in range(E):
            plan.entries.append((t, e, t, 1.0, float(p[t, e])))
    plan.assigned[:] = n
    plan.importance = p.sum(axis=0)
    plan.n_claims = n * E
    plan.aux_loss = 0.0
    return plan


def variable_plan(name, L, choices, o):
    """Claims of the variable-k routers: dropless unless cf or capacity; then
    C = ROUND(claims * cf / E) (capacity with k = 1 and n = the number of claims)."""
    n, E = L.shape
    claims = sum(len(c) for c in choices)
    C = capacity(1, claims, E, o.get("capacity_factor"), o.get("capacity"),
                 o.get("min_capacity", 0), o.get("rounding", "ceil")) \
        if limited_capacity(o) else None
    entries, assigned, importance, n_claims = claim_slots(
        n, E, choices, softmax(L), C, o.get("order", "choice_major"), o.get("renormalize", False))
    plan = Plan(name, n, E, E, int(assigned.max()) if C is None else C)
    plan.entries, plan.assigned = entries, assigned
    plan.importance, plan.n_claims = importance, n_claims
    return plan


def route_topp(L, o):
    """Dynamic top-p routing (Huang et al. 2024): experts by descending p until the cumulative
    p reaches top_p (at least 1, at most max_k), weights the raw p."""
    n, E = L.shape
    P, kmax = float(o.get("top_p", 0.5)), int(o.get("max_k", 0)) or E
    p = softmax(L)
    choices = []
    for t in range(n):
        c, cum = [], 0.0
        for e in order_desc(p[t])[:kmax]:
            if c and cum >= P:
                break
            c.append((int(e), float(p[t, e])))
            cum += p[t, e]
        choices.append(c)
    plan = variable_plan("topp", L, choices, o)
    plan.aux_loss = float(E / plan.n_claims * np.sum(plan.assigned * p.mean(axis=0)))
    return plan


def route_relu(L, o):
    """ReMoE: every expert with L > 0, weight L, by descending L, at most max_k; aux_loss the
    mean over tokens of sum ReLU(L)."""
    n, E = L.shape
    kmax = int(o.get("max_k", 0)) or E
    choices = [[(int(e), float(L[t, e])) for e in order_desc(L[t])[:kmax] if L[t, e] > 0]
               for t in range(n)]
    plan = variable_plan("relu", L, choices, o)
    plan.aux_loss = float(np.maximum(L, 0.0).sum(axis=1).mean())
    return plan


def route(router, L, o, ids=None, u=None):
    L = np.asarray(L, dtype=np.float64)
    assert L.ndim == 2 and L.shape[0] >= 1 and np.all(np.isfinite(L))
    if router == "topk":
        return route_topk(L, o)
    if router == "switch":
        return route_switch(L, o)
    if router == "gshard":
        return route_gshard(L, o, np.asarray(u, dtype=np.float64))
    if router == "expert_choice":
        return route_expert_choice(L, o)
    if router == "hash":
        return route_hash(L, o, np.asarray(ids))
    if router == "soft_moe":
        return route_soft_moe(L, o)
    if router == "base":
        return route_base(L, o)
    if router == "sinkhorn":
        return route_sinkhorn(L, o)
    if router == "dsv3_bias":
        return route_dsv3_bias(L, o)
    if router == "dense":
        return route_dense(L, o)
    if router == "topp":
        return route_topp(L, o)
    if router == "relu":
        return route_relu(L, o)
    raise ValueError("router " + router)


HAS_DROPLESS = ("topk", "switch", "gshard", "hash", "sinkhorn", "dsv3_bias", "topp", "relu")

# ---- the MoE layer ----------------------------------------------------------------------


def ffn(W, e, h):
    """FFN_e on rows h (r, d), float64: gelu_tanh(h w1[e] + b1[e]) w2[e] + b2[e]."""
    a = h @ W["w1"][e] + W["b1"][e]
    return gelu_tanh(a) @ W["w2"][e] + W["b2"][e]


def layer_output(plan, x, W):
    """y (n, d): h[e,s] = sum dispatch_w x[t]; y[t] = sum combine_w FFN_e(h[e,s])."""
    x = np.asarray(x, dtype=np.float64)
    h = {}
    for t, e, s, dw, cw in plan.entries:
        h[(e, s)] = h.get((e, s), 0.0) + dw * x[t]
    out = {es: ffn(W, es[0], v[None, :])[0] for es, v in h.items()}
    y = np.zeros_like(x)
    for t, e, s, dw, cw in plan.entries:
        y[t] += cw * out[(e, s)]
    return y


def dense_mixture(plan, L, x, W):
    """sum_e p[t,e] FFN_e(x_t); p = softmax(L) per row, or soft_moe's summed combine weights."""
    x = np.asarray(x, dtype=np.float64)
    p = plan.mix if plan.dense else softmax(L)
    y = np.zeros_like(x)
    for e in range(plan.E):
        y += p[:, e:e + 1] * ffn(W, e, x)
    return y


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---- metrics ----------------------------------------------------------------------------


def _ratio(a, b):
    return float(a / b) if b != 0 else 0.0


def metrics(plan, L, W=None, y=None, y_dense=None, y_dropless=None):
    """The JSON metrics of `moesim route` (docs/metrics.md)."""
    L = np.asarray(L, dtype=np.float64)
    n, E = plan.n, plan.E
    assigned = np.asarray(plan.assigned, dtype=np.int64)
    slots = {(e, s) for _, e, s, _, _ in plan.entries}
    kept = np.zeros(E, dtype=np.int64)
    for e, _ in slots:
        kept[e] += 1
    per_tok = [set() for _ in range(n)]
    for t, e, _, _, _ in plan.entries:
        per_tok[t].add(e)
    hist = np.zeros(E + 1, dtype=np.int64)
    for s in per_tok:
        hist[len(s)] += 1
    am = assigned.mean()
    km = kept.mean()
    imp = np.asarray(plan.importance, dtype=np.float64)
    im = imp.mean()
    num_entries = len(plan.entries)
    if W is not None:
        d, f = W["w1"].shape[1], W["w1"].shape[2]
        useful = 4 * d * f * int(kept.sum())
        padded = E * int(plan.capacity) * 4 * d * f
        soft = 2 * n * plan.m * d if plan.dense else 0
    else:
        useful = padded = soft = 0
    return {
        "router": plan.router,
        "n_tokens": n,
        "num_experts": E,
        "capacity": int(plan.capacity),
        "num_entries": num_entries,
        "assigned_load": [int(v) for v in assigned],
        "kept_load": [int(v) for v in kept],
        "importance": [float(v) for v in imp],
        "load_imbalance": _ratio(assigned.max(), am),
        "kept_load_imbalance": _ratio(kept.max(), km),
        "load_cv": _ratio(assigned.std(), am),
        "assignment_drop_rate": _ratio(plan.n_claims - num_entries, plan.n_claims),
        "token_drop_rate": 0.0 if plan.dense else float(hist[0]) / n,
        "importance_cv2": _ratio(imp.var(), im * im),
        "aux_loss": float(plan.aux_loss),
        "z_loss": float(np.mean(logsumexp(L, axis=1) ** 2)),
        "experts_per_token": [int(v) for v in hist],
        "flops_gate": 0,
        "flops_expert_useful": useful,
        "flops_expert_padded": padded,
        "flops_soft_dispatch": soft,
        "flops_soft_combine": soft,
        "output_error_dense": None if y is None else rel_err(y, y_dense),
        "output_error_dropless": None if (y is None or y_dropless is None)
        else rel_err(y, y_dropless),
    }


def run_case(router, L, o, ids=None, u=None, W=None, x=None):
    """Route, and with weights run the layer. Returns (plan, metrics dict, y or None)."""
    plan = route(router, L, o, ids, u)
    y = y_dense = y_dl = None
    if W is not None:
        y = layer_output(plan, x, W)
        y_dense = dense_mixture(plan, L, x, W)
        if router in HAS_DROPLESS:
            if router == "hash":
                odl = dict(o)
                odl.pop("capacity_factor", None)
                odl.pop("capacity", None)
            else:
                odl = dict(o, dropless=True)
            y_dl = layer_output(route(router, L, odl, ids, u), x, W)
    return plan, metrics(plan, L, W, y, y_dense, y_dl), y
