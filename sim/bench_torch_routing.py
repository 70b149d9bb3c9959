#!/usr/bin/env python3
"""torch_routing.py: the routers switch, topk, gshard and expert_choice written as a careful
PyTorch user would (vectorised: torch.topk / argmax, slots from a stable sort by expert and a
cumulative count, no one-hot (n, E, C) tensors), timed for `moesim bench --routing`, and run on
given logits to check that they produce moesim's plans.

The semantics are moesim's defaults: capacity C = ceil(k * n * cf / E) (expert choice: k = 1,
capped at n), claims in choice-major order (every token's first choice, in token order, then
every second choice, ...), no renormalisation, entries token-major (expert choice:
expert-major, slot = rank), gshard's second expert kept iff 2 * g2 > u. Each router also
computes the metrics a sweep stores for its plan (loads, kept loads, drop rates, z-loss, aux
loss), as moesim's timed route phase does. Everything is float64, as moesim's logits are.

Usage:
  torch_routing.py time  --sizes N,... --experts E,... --repeats R --threads T --cf NUM/DEN
      prints "time ROUTER K N E SECONDS" (best of R) for every case, on torch.randn logits
  torch_routing.py check --dir DIR --cf NUM/DEN --threads T
      reads DIR/logits.npy (n,E) float64 and DIR/uniforms.npy (n) and writes, for every case,
      DIR/torch_<router>_k<K>.npy (entries, 4) float64: token, expert, slot, combine weight
Exit status 3: torch cannot be imported.
"""
import argparse
import sys
import time

try:
    import numpy as np
    import torch
except ImportError as exc:  # the caller reports the comparison as skipped
    print("torch_routing.py: cannot import torch or numpy: %s" % exc, file=sys.stderr)
    sys.exit(3)


def capacity(k, n, E, num, den):
    return -((-k * n * num) // (E * den))  # ceil on integers


def slots_choice_major(experts, E):
    """experts (k, n) long: claim order is row-major. Returns slot (k, n): position of each
    claim among the claims on its expert, in claim order."""
    flat = experts.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=E)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(flat)
    rank[order] = torch.arange(flat.numel()) - starts[flat[order]]
    return rank.reshape(experts.shape), counts


def metrics(L, n, E, tok, exp_, assigned):
    kept = torch.bincount(exp_, minlength=E)
    per_tok = torch.bincount(tok, minlength=n)
    epts = torch.bincount(per_tok, minlength=E + 1)
    z = torch.logsumexp(L, 1).square().mean()
    a = assigned.double()
    return (kept, epts, z, a.max() / a.mean(), kept.double().max() / kept.double().mean(),
            epts[0].item() / n)


def token_choice(L, k, C, gates, experts, claim, E, aux):
    """gates, experts (n, k) by rank; claim (n, k) bool. Plan entries token-major."""
    n = L.shape[0]
    ex_t = experts.t()
    cl_t = claim.t()
    if bool(claim.all()):
        slot_t, assigned = slots_choice_major(ex_t, E)
    else:  # only the claiming choices take slots, still in choice-major order
        flat = ex_t.reshape(-1)[cl_t.reshape(-1)]
        s, assigned = slots_choice_major(flat, E)
        slot_t = torch.full(ex_t.shape, -1, dtype=torch.long)
        slot_t.view(-1)[cl_t.reshape(-1)] = s
    slot = slot_t.t()
    keep = claim & (slot < C) & (slot >= 0)
    tok = torch.arange(n).unsqueeze(1).expand(n, k)[keep]
    ex = experts[keep]
    plan = (tok, ex, slot[keep], gates[keep])
    metrics(L, n, E, tok, ex, assigned)
    return plan, aux(assigned)


def route_switch(L, k, num, den, u):
    n, E = L.shape
    p = torch.softmax(L, 1)
    e = torch.argmax(L, 1, keepdim=True)
    g = p.gather(1, e)
    pmean = p.mean(0)
    C = capacity(1, n, E, num, den)
    return token_choice(L, 1, C, g, e, torch.ones_like(e, dtype=torch.bool), E,
                        lambda a: E * ((a.double() / n) * pmean).sum())


def route_topk(L, k, num, den, u):
    n, E = L.shape
    pmean = torch.softmax(L, 1).mean(0)
    v, e = torch.topk(L, k, 1)
    g = torch.softmax(v, 1)
    C = capacity(k, n, E, num, den)
    return token_choice(L, k, C, g, e, torch.ones_like(e, dtype=torch.bool), E,
                        lambda a: E / (k * n) * (a.double() * pmean).sum())


def route_gshard(L, k, num, den, u):
    n, E = L.shape
    p = torch.softmax(L, 1)
    pmean = p.mean(0)
    _, e = torch.topk(L, 2, 1)
    p12 = p.gather(1, e)
    g = p12 / p12.sum(1, keepdim=True)
    claim = torch.ones_like(e, dtype=torch.bool)
    claim[:, 1] = 2.0 * g[:, 1] > u
    first = torch.bincount(e[:, 0], minlength=E)
    C = capacity(2, n, E, num, den)
    return token_choice(L, 2, C, g, e, claim, E,
                        lambda a: E * ((first.double() / n) * pmean).sum())


def route_expert_choice(L, k, num, den, u):
    n, E = L.shape
    S = torch.softmax(L, 1)
    C = min(capacity(1, n, E, num, den), n)
    v, t = torch.topk(S.t(), C, 1)  # (E, C), sorted descending
    tok = t.reshape(-1)
    ex = torch.arange(E).repeat_interleave(C)
    slot = torch.arange(C).repeat(E)
    assigned = torch.full((E,), C, dtype=torch.long)
    metrics(L, n, E, tok, ex, assigned)
    v.sum(1)  # importance
    return (tok, ex, slot, v.reshape(-1)), 0.0


ROUTERS = [("switch", route_switch, [1]), ("topk", route_topk, [1, 2, 8]),
           ("gshard", route_gshard, [2]), ("expert_choice", route_expert_choice, [1])]


def cases(E):
    for name, fn, ks in ROUTERS:
        for k in ks:
            if k <= E:
                yield name, fn, k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["time", "check"])
    ap.add_argument("--sizes", default="65536")
    ap.add_argument("--experts", default="8,64,256")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cf", default="5/4")
    ap.add_argument("--dir")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    num, den = (int(x) for x in a.cf.split("/"))
    if a.mode == "check":
        L = torch.from_numpy(np.load(a.dir + "/logits.npy"))
        u = torch.from_numpy(np.load(a.dir + "/uniforms.npy"))
        for name, fn, k in cases(L.shape[1]):
            (tok, ex, slot, w), _ = fn(L, k, num, den, u)
            out = torch.stack([tok.double(), ex.double(), slot.double(), w.double()], 1)
            np.save("%s/torch_%s_k%d.npy" % (a.dir, name, k), out.numpy())
        return
    gen = torch.Generator().manual_seed(1)
    for n in (int(x) for x in a.sizes.split(",")):
        for E in (int(x) for x in a.experts.split(",")):
            L = torch.randn(n, E, dtype=torch.float64, generator=gen)
            u = torch.rand(n, dtype=torch.float64, generator=gen)
            for name, fn, k in cases(E):
                best = float("inf")
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    fn(L, k, num, den, u)
                    best = min(best, time.perf_counter() - t0)
                print("time %s %d %d %d %.9g" % (name, k, n, E, best), flush=True)
            del L


if __name__ == "__main__":
    main()
