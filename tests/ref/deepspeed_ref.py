#!/usr/bin/python3
"""deepspeed_ref.py: NumPy re-implementation of DeepSpeed's gating functions, step by step, with
the random draws given as arrays (DeepSpeed draws them from torch):

  DeepSpeed deepspeed/moe/sharded_moe.py
    _capacity     torch.ceil((num_tokens / num_experts) * capacity_factor): the Python float
                  num_tokens / num_experts times the float32 tensor torch.tensor(capacity_factor
                  [* 2 in top2gating, * k in topkgating]), so both are rounded to float32 and
                  the product is a float32; then max(capacity, min_capacity)
    top1gating    use_rts: mask1 * uniform, per expert the top-C tokens by that key
                  (_top_idx, torch.topk over tokens), locations = cumsum(kept mask) - 1;
                  combine = gates1_s (softmax probability of the chosen expert)
    top2gating    top2_2nd_expert_sampling: second expert = argmax(logits + gumbel) with the
                  first masked out; locations2 = cumsum(mask2) - 1 + sum(mask1); both masks cut
                  at capacity; gates1_s, gates2_s of the kept masks divided by their sum
    topkgating    top_gate, top_idx = topk(gates, k) with gates = softmax(logits);
                  drop_policy 'probs' (default): per expert the top-C tokens of
                  topk_masked_gates, which holds the claimed probabilities (top_gate) and 0 for
                  the tokens that did not claim the expert, so an expert keeps its C claims
                  with the largest softmax probability (torch.topk over tokens; the zeros it
                  may pick when fewer than C claim are masked out again); 'position': the
                  first C claims in token order (cumsum(mask) - 1 < C); locations =
                  cumsum(kept mask) - 1; kept softmax gates divided by their sum per token

topkgating was checked against DeepSpeed's own function: deepspeed/moe/sharded_moe.py at commit
edaa7221267243c7be7fb49c5d5f5c4fb97b4641 (after v0.19.5), imported with its DeepSpeed imports
stubbed and run with Debian's python3-torch 1.13 on the logits of the deepspeed_topk fixtures at
capacity factors 2, 1 and 0.5: the same kept choices and slots, weights within 6e-8 (float32).
DeepSpeed before v0.19.0 (commit 853c93894, "fix: topkgating major bug") took
top_gate, top_idx = topk(LOGITS, k) and so ranked an expert's claims by their raw logit against
0 for the tokens that did not claim it: a claim with a negative logit was dropped even when its
expert had room (on the deepspeed_topk fixture at capacity factor 1: 40 of 128 choices kept,
where v0.19 keeps 90). rank_by_logits=True reproduces that (checked the same way against
sharded_moe.py at 5999fb069b0c1ef52c0cfe4450f5c00472f5cad1, the parent of that fix).

Every function takes logits L (n, E) and returns a dict of per-choice arrays (n, K): idx
(expert), pre (the gate of the choice before capacity, which moesim's importance metric sums),
combine (the combine weight, 0 when dropped), slot (-1 when dropped), plus C and first (the
first choices, for the aux loss). Ties: argmax and the sorts here take the lower index (torch
leaves topk ties unspecified; the fixtures avoid near-ties)."""
import numpy as np


def softmax(L):
    z = np.exp(L - L.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def gumbel(u):
    return -np.log(-np.log(u))


def capacity(n, E, capacity_factor, min_capacity):
    """_capacity: torch.ceil((num_tokens / num_experts) * capacity_factor) on float32 tensors:
    the Python float n / E rounded to float32, times float32(capacity_factor), in float32."""
    c = int(np.ceil(np.float32(n / E) * np.float32(capacity_factor)))
    return max(c, int(min_capacity))


def _top_tokens(key, C):
    """_top_idx: for each expert the C tokens with the largest key (ties: lower token)."""
    n, E = key.shape
    keep = np.zeros((n, E))
    for e in range(E):
        order = sorted(range(n), key=lambda t: (-key[t, e], t))
        keep[order[:C], e] = 1
    return keep


def _slot_of(mask, locations, idx):
    r = np.arange(len(idx))
    return np.where(mask[r, idx] > 0, locations[r, idx], -1).astype(int)


def top1gating(L, capacity_factor=1.0, min_capacity=4, u_rts=None):
    n, E = L.shape
    gates = softmax(L)
    C = capacity(n, E, capacity_factor, min_capacity)
    idx1 = np.argmax(gates, axis=1)
    mask1 = np.zeros((n, E))
    mask1[np.arange(n), idx1] = 1
    # use_rts: mask1_rand = mask1 * uniform; without rts the key is mask1 itself (top_idx of
    # equal ones: the lower tokens here)
    key = mask1 * u_rts if u_rts is not None else mask1
    mask1 = mask1 * _top_tokens(key, C)
    locations1 = np.cumsum(mask1, axis=0) - 1
    g = gates[np.arange(n), idx1]
    slot = _slot_of(mask1, locations1, idx1)
    return {"idx": idx1[:, None], "pre": g[:, None], "slot": slot[:, None],
            "combine": np.where(slot >= 0, g, 0.0)[:, None], "C": C, "first": idx1}


def top2_sampled(L, u_gumbel, C):
    """The steps of top2gating after the capacity C (fairseq's top2gating, from the same
    fairscale code, takes the same steps; fairseq_ref.py calls this)."""
    n, E = L.shape
    r = np.arange(n)
    gates = softmax(L)
    idx1 = np.argmax(gates, axis=1)
    mask1 = np.zeros((n, E))
    mask1[r, idx1] = 1
    logits_except1 = np.where(mask1 > 0, -np.inf, L + gumbel(u_gumbel))
    idx2 = np.argmax(logits_except1, axis=1)
    mask2 = np.zeros((n, E))
    mask2[r, idx2] = 1
    locations1 = np.cumsum(mask1, axis=0) - 1
    locations2 = np.cumsum(mask2, axis=0) - 1 + mask1.sum(axis=0, keepdims=True)
    mask1 = mask1 * (locations1 < C)
    mask2 = mask2 * (locations2 < C)
    g1 = (gates * mask1).sum(axis=1)
    g2 = (gates * mask2).sum(axis=1)
    denom = np.maximum(g1 + g2, np.finfo(np.float64).eps)
    p1, p2 = gates[r, idx1], gates[r, idx2]
    return {"idx": np.stack([idx1, idx2], 1),
            "pre": np.stack([p1 / (p1 + p2), p2 / (p1 + p2)], 1),
            "slot": np.stack([_slot_of(mask1, locations1, idx1),
                              _slot_of(mask2, locations2, idx2)], 1),
            "combine": np.stack([g1 / denom, g2 / denom], 1), "C": C, "first": idx1}


def top2gating(L, u_gumbel, capacity_factor=1.0, min_capacity=4):
    n, E = L.shape
    return top2_sampled(L, u_gumbel, capacity(n, E, 2 * capacity_factor, min_capacity))


def topkgating(L, k, capacity_factor=1.0, min_capacity=4, drop_policy="probs",
               rank_by_logits=False):
    n, E = L.shape
    gates = softmax(L)
    C = capacity(n, E, k * capacity_factor, min_capacity)
    score = L if rank_by_logits else gates  # the tensor torch.topk(., k, dim=1) runs on
    topk_idx = np.stack([np.argsort(-score[t], kind="stable")[:k] for t in range(n)])
    mask = np.zeros((n, E))
    for j in range(k):
        mask[np.arange(n), topk_idx[:, j]] = 1
    if drop_policy == "probs":
        topk_masked_gates = np.where(mask > 0, score, 0.0)  # claimed values, 0 elsewhere
        mask = mask * _top_tokens(topk_masked_gates, C)
    else:  # 'position'
        mask = mask * (np.cumsum(mask, axis=0) - 1 < C)
    locations = np.cumsum(mask, axis=0) - 1
    gates_masked = gates * mask
    denom = np.maximum(gates_masked.sum(axis=1, keepdims=True), np.finfo(np.float64).eps)
    gates_masked = gates_masked / denom
    pre = np.take_along_axis(gates, topk_idx, 1)
    pre = pre / pre.sum(axis=1, keepdims=True)
    slot = np.stack([_slot_of(mask, locations, topk_idx[:, j]) for j in range(k)], 1)
    comb = np.take_along_axis(gates_masked, topk_idx, 1)
    return {"idx": topk_idx, "pre": pre, "slot": slot, "combine": comb, "C": C,
            "first": topk_idx[:, 0]}


def hand_checks():
    # float32 capacity: 50 tokens, 4 experts, cf 1.2: 12.5 * float32(1.2) = 15.0000003 in
    # float32 -> 16, where the exact 50 * 1.2 / 4 = 15 (moesim's capacity)
    assert capacity(50, 4, 1.2, 0) == 16
    assert capacity(8, 4, 1.0, 4) == 4
    # top1 with rts, C = 1 (min_capacity 0): tokens 0 and 1 both pick expert 0; the larger key
    # (token 1, 0.7) keeps slot 0 (hand-worked)
    L = np.array([[1.0, 0.0], [2.0, 0.0]])
    out = top1gating(L, 0.5, 0, u_rts=np.array([[0.2, 0.5], [0.7, 0.5]]))
    assert out["C"] == 1 and list(out["slot"][:, 0]) == [-1, 0]
    # topkgating, k = 1, C = ceil(float32 1.5 * 1/3) = 1: expert 0 is claimed by tokens 0 and
    # 1 with p = sigmoid(2) = .88 and sigmoid(1) = .73: token 0 keeps slot 0; token 2 alone on
    # expert 1 (hand-worked)
    L = np.array([[-1.0, -3.0], [-2.0, -3.0], [-5.0, 1.0]])
    out = topkgating(L, 1, 1 / 3, 0)
    assert out["C"] == 1 and list(out["slot"][:, 0]) == [0, -1, 0]
    # 'position': the first claim in token order, here token 0 too
    assert list(topkgating(L, 1, 1 / 3, 0, "position")["slot"][:, 0]) == [0, -1, 0]
    # before v0.19.0 (logits ranked against 0 for non-claimants): token 2 has key 0 for expert
    # 0, above the claims' logits -1 and -2: both claims on expert 0 are dropped although it is
    # empty (hand-worked)
    out = topkgating(L, 1, 1 / 3, 0, rank_by_logits=True)
    assert list(out["slot"][:, 0]) == [-1, -1, 0]


if __name__ == "__main__":
    hand_checks()
    print("deepspeed_ref.py: hand checks passed")
