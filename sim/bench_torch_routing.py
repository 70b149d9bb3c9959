#!/usr/bin/env python3
"""bench_torch_routing.py: moesim's routers written as a careful PyTorch user would (vectorised:
torch.topk / argmax / sort, slots from a stable sort by expert and a cumulative count, no one-hot
(n, E, C) tensors), timed for `moesim bench --routing` on the logits moesim routes, and run on
given logits to check that they produce moesim's plans.

Routers: switch, topk, gshard, expert_choice, hash (mod), dsv3_bias (bias 0), sinkhorn
(Megatron's loop, run to moesim's tolerance), topp, relu, dense, soft_moe (one slot per expert),
base (an exact balanced assignment by a vectorised auction: fairseq's BASE layer runs an
approximate auction in a C++ extension); replay needs recorded choices.

The semantics are moesim's defaults with cf = NUM/DEN: capacity C = ceil(k * n * cf / E)
(expert choice: k = 1, capped at n; topp and relu: k * n replaced by the claims), claims in
choice-major order (every token's first choice, in token order, then every second choice, ...),
no renormalisation, entries token-major (expert choice: expert-major, slot = rank), gshard's
second expert kept iff 2 * g2 > u. Each router also computes the metrics a sweep stores for its
plan (loads, kept loads, importance, experts per token, drop rate, z-loss, aux loss), as moesim's
timed route phase does. Everything is float64, as moesim's logits are.

Usage:
  bench_torch_routing.py time --dir DIR --cases NAME:K,... --repeats R [--min-time S]
                        [--max-repeats M] --threads T --cf NUM/DEN
      reads DIR/logits.npy (n,E) float64 (memory-mapped) and DIR/uniforms.npy (n), prints
      "time ROUTER K N E SECONDS PASSES TOTAL" for every case as soon as it is measured: the
      best of at least R passes, and of more until they add up to S seconds (at most M
      passes); TOTAL: the seconds of all its passes
  bench_torch_routing.py serve --dir DIR --threads T --cf NUM/DEN
      the same timing on request, one process for many requests (moesim bench --routing runs
      it beside its own cells, so that a twin is timed right after moesim's router): prints
      "ready N E VERSION" (VERSION: torch's) once the logits are loaded, then reads lines
      "time ROUTER K R S M" on stdin and answers each with the time line above, until stdin
      ends
  bench_torch_routing.py check --dir DIR --cases NAME:K,... --cf NUM/DEN --threads T
      writes, for every case, DIR/torch_<router>_k<K>.npy (entries, 4) float64: token, expert,
      slot, combine weight
Token ids (hash) are moesim's bench ids: (i * 2654435761) mod 50021.
Exit status 3: torch cannot be imported.
"""
import argparse
import sys
import time
import warnings

try:
    import numpy as np
    import torch
except ImportError as exc:  # the caller reports the comparison as skipped
    print("bench_torch_routing.py: cannot import torch or numpy: %s" % exc, file=sys.stderr)
    sys.exit(3)

SINKHORN_TOL = 1e-9  # moesim's sinkhorn_tol default
TOP_P = 0.5  # moesim's top_p default


def capacity(k, n, E, num, den):
    return -((-k * n * num) // (E * den))  # ceil on integers


def slots_choice_major(experts, E):
    """experts (k, n) long (or flat): claim order is row-major. Returns the slot of each claim
    (its position among the claims on its expert, in claim order) and the claims per expert."""
    flat = experts.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=E)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(flat)
    rank[order] = torch.arange(flat.numel()) - starts[flat[order]]
    return rank.reshape(experts.shape), counts


def softmax_lse(L):
    """p = softmax(L) per row, each row's logsumexp and its first largest logit, with one
    exponential per logit: lse = max - log(p at the max), as p there is exp(max - lse)."""
    mx, am = L.max(1, keepdim=True)
    p = torch.softmax(L, 1)
    return p, (mx - torch.log(p.gather(1, am))).squeeze(1), am


def metrics(L, n, E, tok, exp_, assigned, importance, lse=None):
    """The per-plan metrics of a sweep: kept loads, experts per token, z-loss (from lse when the
    router has it), imbalances, importance CV^2, token drop rate."""
    kept = torch.bincount(exp_, minlength=E)
    per_tok = torch.bincount(tok, minlength=n)
    epts = torch.bincount(per_tok, minlength=E + 1)
    z = (torch.logsumexp(L, 1) if lse is None else lse).square().mean()
    a = assigned.double()
    imp = importance.double()
    return (kept, epts, z, a.max() / a.mean(), kept.double().max() / kept.double().mean(),
            imp.var(unbiased=False) / imp.mean().square(), epts[0].item() / n)


def token_choice(L, C, gates, experts, claim, E, aux, lse=None):
    """gates, experts (n, K) by rank; claim (n, K) bool or None (every choice claims); C None:
    dropless. Plan entries token-major, by rank within a token."""
    n, K = experts.shape
    ex_t = experts.t()
    if claim is None:
        slot_t, assigned = slots_choice_major(ex_t, E)
        importance = torch.bincount(experts.reshape(-1), gates.reshape(-1), minlength=E)
        keep = None
    else:  # only the claiming choices take slots, still in choice-major order
        cl_t = claim.t().reshape(-1)
        s, assigned = slots_choice_major(ex_t.reshape(-1)[cl_t], E)
        slot_t = torch.full(ex_t.shape, -1, dtype=torch.long)
        slot_t.view(-1)[cl_t] = s
        importance = torch.bincount(experts[claim], gates[claim], minlength=E)
    slot = slot_t.t()
    if C is None:
        C = int(assigned.max())
    keep = (slot < C) & (slot >= 0)
    tok = torch.arange(n).unsqueeze(1).expand(n, K)[keep]
    ex = experts[keep]
    plan = (tok, ex, slot[keep], gates[keep])
    metrics(L, n, E, tok, ex, assigned, importance, lse)
    return plan, aux(assigned)


def route_switch(L, k, num, den, u):
    n, E = L.shape
    p, lse, e = softmax_lse(L)
    g = p.gather(1, e)
    pmean = p.mean(0)
    return token_choice(L, capacity(1, n, E, num, den), g, e, None, E,
                        lambda a: E * ((a.double() / n) * pmean).sum(), lse)


def route_topk(L, k, num, den, u):
    n, E = L.shape
    p, lse, _ = softmax_lse(L)
    pmean = p.mean(0)
    v, e = torch.topk(L, k, 1)
    g = torch.softmax(v, 1)
    return token_choice(L, capacity(k, n, E, num, den), g, e, None, E,
                        lambda a: E / (k * n) * (a.double() * pmean).sum(), lse)


def route_gshard(L, k, num, den, u):
    n, E = L.shape
    p, lse, _ = softmax_lse(L)
    pmean = p.mean(0)
    _, e = torch.topk(L, 2, 1)
    p12 = p.gather(1, e)
    g = p12 / p12.sum(1, keepdim=True)
    claim = torch.ones_like(e, dtype=torch.bool)
    claim[:, 1] = 2.0 * g[:, 1] > u
    first = torch.bincount(e[:, 0], minlength=E)
    return token_choice(L, capacity(2, n, E, num, den), g, e, claim, E,
                        lambda a: E * ((first.double() / n) * pmean).sum(), lse)


def route_expert_choice(L, k, num, den, u):
    n, E = L.shape
    S, lse, _ = softmax_lse(L)
    C = min(capacity(1, n, E, num, den), n)
    v, t = torch.topk(S.t(), C, 1)  # (E, C), sorted descending
    tok = t.reshape(-1)
    ex = torch.arange(E).repeat_interleave(C)
    slot = torch.arange(C).repeat(E)
    assigned = torch.full((E,), C, dtype=torch.long)
    metrics(L, n, E, tok, ex, assigned, v.sum(1), lse)
    return (tok, ex, slot, v.reshape(-1)), 0.0


def bench_ids(n):
    """moesim's bench token ids: a Knuth multiplicative scramble."""
    return (torch.arange(n, dtype=torch.long) * 2654435761) % 50021


def route_hash(L, k, num, den, u):
    n, E = L.shape
    e = (bench_ids(n) % E).unsqueeze(1)
    g = torch.ones(n, 1, dtype=L.dtype)
    return token_choice(L, capacity(1, n, E, num, den), g, e, None, E, lambda a: 0.0)


def route_dsv3_bias(L, k, num, den, u):
    n, E = L.shape
    s = torch.sigmoid(L)
    bias = torch.zeros(E, dtype=L.dtype)  # the state of a freshly allocated router
    _, e = torch.topk(s + bias, k, 1)
    sv = s.gather(1, e)
    g = sv / sv.sum(1, keepdim=True) if k > 1 else torch.ones_like(sv)
    return token_choice(L, capacity(k, n, E, num, den), g, e, None, E, lambda a: 0.0)


def sinkhorn_scalings(K, tol):
    """Megatron's sinkhorn loop in float64, stopped when the column scalings change by less
    than tol (relative), as moesim's sinkhorn_tol: d1 (E)."""
    n, E = K.shape
    d1 = torch.ones(E, dtype=K.dtype)
    for _ in range(10000):
        d0 = 1.0 / (n * (K @ d1))
        nd = 1.0 / (E * (d0 @ K))
        delta = ((nd - d1).abs() / nd).max()
        d1 = nd
        if delta < tol:
            return d1
    raise RuntimeError("sinkhorn did not converge")


def route_sinkhorn(L, k, num, den, u):
    n, E = L.shape
    K = torch.exp(L - L.max(1, keepdim=True).values)
    d1 = sinkhorn_scalings(K, SINKHORN_TOL)
    _, e = torch.topk(K * d1, k, 1)
    g = torch.sigmoid(L.gather(1, e)) if k == 1 else softmax_lse(L)[0].gather(1, e)
    return token_choice(L, capacity(k, n, E, num, den), g, e, None, E, lambda a: 0.0)


def route_topp(L, k, num, den, u):
    n, E = L.shape
    p, lse, _ = softmax_lse(L)
    pmean = p.mean(0)
    v, e = torch.sort(p, dim=1, descending=True, stable=True)
    del p  # (n, E) float64 each: p, v, e and the cumulative sums live at once otherwise
    before = torch.cumsum(v, 1)
    before -= v  # the cumulative p before each rank (in place: one (n, E) tensor fewer)
    claim = before < TOP_P
    claim[:, 0] = True
    K = int(claim.sum(1).max())  # the claims are a prefix of each row
    claim, v, e = claim[:, :K], v[:, :K], e[:, :K]
    claims = int(claim.sum())
    return token_choice(L, capacity(1, claims, E, num, den), v, e, claim, E,
                        lambda a: E / claims * (a.double() * pmean).sum(), lse)


def route_relu(L, k, num, den, u):
    n, E = L.shape
    K = max(int((L > 0).sum(1).max()), 1)
    v, e = torch.topk(L, K, 1)
    claim = v > 0
    claims = int(claim.sum())
    aux = torch.relu(L).sum(1).mean()
    return token_choice(L, capacity(1, claims, E, num, den), v, e, claim, E, lambda a: aux)


def route_dense(L, k, num, den, u):
    n, E = L.shape
    p, lse, _ = softmax_lse(L)
    tok = torch.arange(n).repeat_interleave(E)
    ex = torch.arange(E).repeat(n)
    assigned = torch.full((E,), n, dtype=torch.long)
    metrics(L, n, E, tok, ex, assigned, p.sum(0), lse)
    return (tok, ex, tok, p.reshape(-1)), 0.0


def route_soft_moe(L, k, num, den, u):
    n, E = L.shape  # one slot per expert: column j is expert j
    D = torch.softmax(L, 0)  # dispatch, over the tokens
    W, lse, _ = softmax_lse(L)  # combine, over the columns
    tok = torch.arange(n).repeat_interleave(E)
    ex = torch.arange(E).repeat(n)
    assigned = torch.ones(E, dtype=torch.long)
    metrics(L, n, E, tok, ex, assigned, W.sum(0), lse)
    D.sum()
    return (tok, ex, torch.zeros_like(tok), W.reshape(-1)), 0.0


def base_auction(Lp, C, eps, eps_final, theta):
    """Forward auction of the N = E * C rows of Lp (N,E) for E experts of C identical slots
    each ("similar objects"), Jacobi style: every unassigned row bids at once for its best
    expert under Lp - price, price + best - second best + eps (two max reductions: topk(2)
    of rows this short is several times slower). An expert keeps the C highest
    bids it has received, in a row of (E, C); while full, its price is the lowest of
    them. Epsilon scaling from eps down to eps_final by theta; each phase
    starts from the prices of the one before with every row unassigned. Returns the expert of
    every row (N)."""
    N, E = Lp.shape
    price = Lp.new_zeros(E)
    ninf = float("-inf")
    Vbuf = torch.empty_like(Lp)  # the bidders' values: fresh (N,E) tensors every round would
    while True:                  # fault their pages in again each time
        held_bid = torch.full((E, C), ninf, dtype=Lp.dtype)
        held_tok = torch.full((E, C), -1, dtype=torch.long)
        U = torch.arange(N)
        while U.numel():
            V = torch.index_select(Lp, 0, U, out=Vbuf[:U.numel()]).sub_(price)
            v1, j = V.max(1)  # the best expert, then the second best value
            V.scatter_(1, j.unsqueeze(1), float("-inf"))
            b = price[j] + (v1 - V.max(1).values) + eps
            # the experts bid for: their held bids and the new ones, sorted by bid
            order = torch.sort(j, stable=True).indices
            j, b, U = j[order], b[order], U[order]
            ex, cnt = torch.unique_consecutive(j, return_counts=True)
            K = int(cnt.max())
            col = torch.arange(j.numel()) - torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt,
                                                                    cnt)
            row = torch.repeat_interleave(torch.arange(ex.numel()), cnt)
            nb = torch.full((ex.numel(), K), ninf, dtype=Lp.dtype)
            nt = torch.full((ex.numel(), K), -1, dtype=torch.long)
            nb[row, col] = b
            nt[row, col] = U
            allb = torch.cat([held_bid[ex], nb], 1)
            allt = torch.cat([held_tok[ex], nt], 1)
            # every such expert drops its K lowest bids (padding first) and keeps C
            low, o = torch.topk(allb, K + 1, 1, largest=False)
            drop = torch.zeros_like(allb, dtype=torch.bool).scatter_(1, o[:, :K], True)
            out = allt.gather(1, o[:, :K]).reshape(-1)
            U = out[out >= 0]
            held_bid[ex] = allb[~drop].view(-1, C)
            held_tok[ex] = allt[~drop].view(-1, C)
            price[ex] = torch.where(low[:, K] > ninf, low[:, K], price[ex])
        if eps <= eps_final:
            asg = torch.empty(N, dtype=torch.long)
            asg[held_tok.reshape(-1)] = torch.arange(E).repeat_interleave(C)
            return asg
        eps = max(eps / theta, eps_final)


def route_base(L, k, num, den, u):
    """BASE's exact balanced assignment by base_auction, then moesim's plan: slots in token
    order per expert, combine sigmoid(L[t,e]). Final epsilon 1e-3 / (n E), from this bound:
    the auction ends with every row within eps of its best expert at the final prices; the
    optimum and the result differ by exchanges along cycles of experts, each through at most E
    experts, so each such cycle loses at most E eps and the result is the optimum when E eps
    is below the gap (the cheapest exchange away from the optimum). On N(0,1) logits the gap
    is of order 1/n: a swap of two tokens, one from each of two experts, costs at least their
    two margins, and about n^2/2 such pairs give P(gap < x) ~ (n x)^2 / 2; E eps = 1e-3 / n
    puts that near 5e-7. The first epsilon is (max - min) / 50 as fairseq's auction takes it,
    divided by 8 per phase (about 12 phases at 2^20 x 256); prices stay of the order of the
    logits, where 1e-3 / (n E) is still over a thousand float64 ulps."""
    n, E = L.shape
    C = -(-n // E)
    D = C * E - n  # dummy rows of zeros take the free slots: every expert ends with C
    Lp = torch.cat([L, L.new_zeros(D, E)]) if D else L
    eps0 = max(float(L.max() - L.min()) / 50.0, 1e-300)
    e = base_auction(Lp, C, eps0, 1e-3 / (n * E), 8.0)[:n] if E > 1 else \
        torch.zeros(n, dtype=torch.long)
    g = torch.sigmoid(L.gather(1, e.unsqueeze(1))).squeeze(1)
    slot, assigned = slots_choice_major(e, E)
    tok = torch.arange(n)
    metrics(L, n, E, tok, e, assigned, torch.bincount(e, g, minlength=E))
    return (tok, e, slot, g), 0.0


ROUTERS = {"switch": route_switch, "topk": route_topk, "gshard": route_gshard,
           "expert_choice": route_expert_choice, "hash": route_hash,
           "dsv3_bias": route_dsv3_bias, "sinkhorn": route_sinkhorn, "topp": route_topp,
           "relu": route_relu, "dense": route_dense, "soft_moe": route_soft_moe,
           "base": route_base}


def parse_cases(text):
    if not text:
        raise SystemExit("bench_torch_routing.py: --cases is required here")
    out = []
    for item in text.split(","):
        name, k = item.split(":")
        if name not in ROUTERS:
            raise SystemExit("bench_torch_routing.py: no PyTorch router %s" % name)
        out.append((name, int(k)))
    return out


def load(d):
    with warnings.catch_warnings():  # a read-only memory map: the routers never write to it
        warnings.simplefilter("ignore")
        L = torch.from_numpy(np.load(d + "/logits.npy", mmap_mode="r"))
        u = torch.from_numpy(np.load(d + "/uniforms.npy"))
    return L, u


def time_case(L, u, name, k, num, den, repeats, min_time, max_repeats):
    """The best of at least `repeats` routes, and of more until they add up to min_time seconds
    (at most max_repeats): (best, passes, their total seconds)."""
    best, spent, done = float("inf"), 0.0, 0
    while done < max_repeats and (done < repeats or spent < min_time):
        t0 = time.perf_counter()
        ROUTERS[name](L, k, num, den, u)
        dt = time.perf_counter() - t0
        best, spent, done = min(best, dt), spent + dt, done + 1
    return best, done, spent


def serve(L, u, num, den):
    """Answers "time ROUTER K REPEATS MIN_TIME MAX_REPEATS" lines on stdin, one time line each,
    after a "ready N E VERSION" line (VERSION: torch's); ends at the end of stdin."""
    n, E = L.shape
    print("ready %d %d %s" % (n, E, torch.__version__), flush=True)
    for line in iter(sys.stdin.readline, ""):
        w = line.split()
        if len(w) != 6 or w[0] != "time" or w[1] not in ROUTERS:
            raise SystemExit("bench_torch_routing.py: bad request %r" % line)
        best, done, spent = time_case(L, u, w[1], int(w[2]), num, den, int(w[3]), float(w[4]),
                                      int(w[5]))
        print("time %s %s %d %d %.9g %d %.9g" % (w[1], w[2], n, E, best, done, spent),
              flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["time", "check", "serve"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cases", default="")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.0)
    ap.add_argument("--max-repeats", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cf", default="5/4")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    num, den = (int(x) for x in a.cf.split("/"))
    L, u = load(a.dir)
    n, E = L.shape
    if a.mode == "serve":
        float(L.sum())  # fault the mapped pages in before the first timed repeat
        serve(L, u, num, den)
        return
    if a.mode == "check":
        for name, k in parse_cases(a.cases):
            (tok, ex, slot, w), _ = ROUTERS[name](L, k, num, den, u)
            out = torch.stack([tok.double(), ex.double(), slot.double(), w.double()], 1)
            np.save("%s/torch_%s_k%d.npy" % (a.dir, name, k), out.numpy())
        return
    float(L.sum())  # fault the mapped pages in before the first timed repeat
    for name, k in parse_cases(a.cases):
        best, done, spent = time_case(L, u, name, k, num, den, a.repeats, a.min_time,
                                      a.max_repeats)
        print("time %s %d %d %d %.9g %d %.9g" % (name, k, n, E, best, done, spent), flush=True)


if __name__ == "__main__":
    main()
