#!/usr/bin/python3
"""eplb_ref.py: a NumPy re-implementation of the expert-parallel load balancer of
deepseek-ai/EPLB (eplb.py: balanced_packing, replicate_experts,
rebalance_experts_hierarchical, rebalance_experts), written from its published semantics,
one layer at a time and in float64. Run it to rewrite tests/fixtures/eplb/cases.txt, which
tests/test_placement.c compares sim/placement.c against.

Ties (which eplb.py leaves to torch's unstable sort and max): equal weights are taken in
index order, the first lightest pack and the first most loaded expert win. Most cases draw
continuous loads, where ties do not occur; the integer cases exercise the tie rule.

Fixture format, one case per block:
  case E R G N D
  load <E values, %.17g>
  phy2log <P ints>
  rank <P ints>
  cnt <E ints>
"""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "eplb",
                   "cases.txt")


def balanced_packing(w, packs):
    n = len(w)
    per = n // packs
    assert n % packs == 0
    if per == 1:
        return np.arange(n), np.zeros(n, dtype=int)
    order = np.argsort(-w, kind="stable")
    pack_w = [0.0] * packs
    pack_n = [0] * packs
    idx = np.full(n, -1)
    rank = np.full(n, -1)
    for item in order:
        pack = min((p for p in range(packs) if pack_n[p] < per), key=pack_w.__getitem__)
        idx[item] = pack
        rank[item] = pack_n[pack]
        pack_w[pack] += w[item]
        pack_n[pack] += 1
    return idx, rank


def replicate_experts(w, nphy):
    nlog = len(w)
    phy2log = np.arange(nphy)
    rank = np.zeros(nphy, dtype=int)
    cnt = np.ones(nlog, dtype=int)
    for i in range(nlog, nphy):
        best = int(np.argmax(w / cnt))
        phy2log[i] = best
        rank[i] = cnt[best]
        cnt[best] += 1
    return phy2log, rank, cnt


def inverse(perm):
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    return inv


def hierarchical(w, nphy, groups, nodes, gpus):
    E = len(w)
    gs = E // groups
    gpn = groups // nodes
    ppg = nphy // gpus
    tpg = w.reshape(groups, gs).sum(-1)
    gpi, gri = balanced_packing(tpg, nodes)
    log2mlog = (((gpi * gpn + gri) * gs)[:, None] + np.arange(gs)).reshape(-1)
    mlog2log = inverse(log2mlog)
    tpm = w[mlog2log].reshape(nodes, E // nodes)
    pn = nphy // nodes
    phy2log = np.empty(nphy, dtype=int)
    rank = np.empty(nphy, dtype=int)
    mcnt_all = np.empty(E, dtype=int)
    for n in range(nodes):
        p2m, prank, mcnt = replicate_experts(tpm[n], pn)
        tpp = (tpm[n] / mcnt)[p2m]
        pi, rip = balanced_packing(tpp, gpus // nodes)
        pp2p = inverse(pi * ppg + rip)
        phy2log[n * pn:(n + 1) * pn] = mlog2log[p2m[pp2p] + n * (E // nodes)]
        rank[n * pn:(n + 1) * pn] = prank[pp2p]
        mcnt_all[n * (E // nodes):(n + 1) * (E // nodes)] = mcnt
    return phy2log, rank, mcnt_all[log2mlog]


def rebalance(w, nphy, groups, nodes, gpus):
    if groups % nodes == 0:
        return hierarchical(w, nphy, groups, nodes, gpus)
    return hierarchical(w, nphy, 1, 1, gpus)


def hand_checks():
    # Packing 4 items (7, 5, 4, 1) into 2 packs of 2: 7 -> pack 0, 5 -> pack 1, 4 -> pack 1
    # (5 < 7), 1 -> pack 0 (the only one with room): pack loads 8 and 9.
    idx, rank = balanced_packing(np.array([7.0, 5.0, 4.0, 1.0]), 2)
    assert list(idx) == [0, 1, 1, 0] and list(rank) == [0, 0, 1, 1]
    # Replicating loads (9, 3) into 4 slots: 9/1 > 3 -> expert 0 (cnt 2), 4.5 > 3 -> expert 0
    # (cnt 3), 3 > 3? no, 9/3 = 3 equals 3: the first (expert 0) wins -> cnt (4, 1).
    p2l, rank, cnt = replicate_experts(np.array([9.0, 3.0]), 4)
    assert list(p2l) == [0, 1, 0, 0] and list(rank) == [0, 0, 1, 2] and list(cnt) == [3, 1]


CASES = [  # (E, R, G, N, D, kind): kind "u" continuous loads, "z" Zipf-like, "i" integers
    (8, 0, 4, 2, 4, "u"), (8, 4, 4, 2, 4, "u"), (16, 8, 8, 2, 8, "z"), (16, 0, 4, 4, 8, "u"),
    (12, 4, 3, 2, 4, "u"),   # 3 groups over 2 nodes: global policy
    (64, 0, 8, 2, 8, "z"), (64, 8, 8, 2, 8, "z"), (64, 16, 8, 2, 16, "z"),
    (64, 16, 8, 4, 16, "u"), (32, 32, 4, 4, 16, "z"), (16, 4, 4, 2, 4, "i"),
    (256, 64, 8, 8, 64, "z"), (64, 8, 1, 1, 8, "z"),
]


def main():
    hand_checks()
    rng = np.random.default_rng(20261205)
    lines = []
    for E, R, G, N, D, kind in CASES:
        if kind == "u":
            w = rng.uniform(1.0, 100.0, E)
        elif kind == "z":
            w = 1000.0 / (1.0 + rng.permutation(E)) ** 1.1 + rng.uniform(0, 1, E)
        else:
            w = rng.integers(0, 6, E).astype(float)
        p2l, rank, cnt = rebalance(w, E + R, G, N, D)
        lines.append(f"case {E} {R} {G} {N} {D}")
        lines.append("load " + " ".join(f"{v:.17g}" for v in w))
        lines.append("phy2log " + " ".join(str(int(v)) for v in p2l))
        lines.append("rank " + " ".join(str(int(v)) for v in rank))
        lines.append("cnt " + " ".join(str(int(v)) for v in cnt))
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
