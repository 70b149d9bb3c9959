#!/usr/bin/python3
"""megatron_ref.py: NumPy re-implementation of Megatron-LM's top-k router, step by step:

  Megatron-LM megatron/core/transformer/moe/moe_utils.py
    topk_routing_with_score_function, score_function 'softmax', use_pre_softmax False (the
    defaults): scores, top_indices = topk(logits, k); probs = softmax(scores) over the k
    chosen; routing_map = the chosen (token, expert) pairs.
    capacity (moe_expert_capacity_factor set): get_capacity(num_tokens * k, E, cf) =
    ceil(num_tokens * k / E * cf); drop policy 'probs': per expert the C pairs with the largest
    routing probability (the probs above, normalised over the k chosen), 'position': the first
    C in token order. No renormalisation after drops.
  megatron/core/transformer/moe/router.py TopKRouter: moe_expert_capacity_factor None by
  default: no capacity, nothing dropped.
  Slots: the token dispatcher permutes the tokens expert by expert, each expert's tokens in
  token order (routing_map.T masked_select), so slot = rank of the token among the expert's
  tokens.

Returns per-choice arrays as deepspeed_ref.py does (idx, pre, combine, slot, C, first); C for
the dropless router is the largest expert load.

Checked against Megatron-LM's own functions at commit d98e8a64ddf34856e74b24714e3bedb2f5a39553:
topk_routing_with_score_function, get_capacity, apply_router_token_dropping and permute (the
unfused paths), taken from moe_utils.py by its syntax tree with Transformer Engine absent and
run with Debian's python3-torch 1.13 (CPU) on the logits of the megatron_topk fixtures: dropless
and drop policy 'probs' at capacity factors 1 and 0.5 give the same kept choices and slots,
weights within 8e-8 (float32). Drop policy 'position' is torch.topk(routing_map, C, dim=0) over
0/1 values, whose choice among equal values torch leaves unspecified: on that CPU it kept other
claims than the first C in token order (expert 0 at capacity factor 1 with claimants 0, 1, 2,
3, 4, 9, ..., 30 kept tokens 9 to 27), so 'position' here is the policy's name, the first C
claims in token order, not that CPU's choice; not checked on a GPU.
pad_to_capacity (moe_pad_expert_input_to_capacity) keeps the same claims with the same
probabilities; it adds, per expert, tokens that did not claim it (probability 0, chosen by the
same unspecified tie order) up to C rows, and the permuted buffer holds all C rows in token
order, so a kept claim's row index there counts the padding rows before it. Not reproduced
here."""
import math

import numpy as np

from deepspeed_ref import softmax


def topk_routing_with_score_function(L, k):
    idx = np.argsort(-L, axis=1, kind="stable")[:, :k]
    probs = softmax(np.take_along_axis(L, idx, 1))
    return probs, idx


def route(L, k, capacity_factor=None, drop_policy="probs"):
    n, E = L.shape
    probs, idx = topk_routing_with_score_function(L, k)
    keep = np.ones((n, k), bool)
    if capacity_factor is not None:
        C = math.ceil(n * k / E * capacity_factor)
        for e in range(E):
            pairs = [(t, j) for t in range(n) for j in range(k) if idx[t, j] == e]
            if drop_policy == "probs":
                pairs.sort(key=lambda tj: (-probs[tj], tj[0]))
            for t, j in pairs[C:]:
                keep[t, j] = False
    slot = -np.ones((n, k), dtype=np.int64)
    load = np.zeros(E, dtype=np.int64)
    for t in range(n):  # expert by expert in token order: rank = kept tokens before it
        for j in range(k):
            if keep[t, j]:
                slot[t, j] = load[idx[t, j]]
                load[idx[t, j]] += 1
    if capacity_factor is None:
        C = int(np.bincount(idx.ravel(), minlength=E).max())
    return {"idx": idx, "pre": probs, "slot": slot, "combine": np.where(keep, probs, 0.0),
            "C": C, "first": idx[:, 0]}


def hand_checks():
    # k = 2, logits [ln 3, 0, -inf-ish]: probs over the two chosen 3/4, 1/4
    out = route(np.array([[math.log(3.0), 0.0, -30.0]]), 2)
    assert abs(out["combine"][0, 0] - 0.75) < 1e-15 and list(out["idx"][0]) == [0, 1]
    # k = 2, E = 3, capacity ceil(3 * 2 / 3 * 0.5) = 1. Expert 0 is claimed by all three
    # tokens with probabilities (over the two chosen) sigmoid(0.1) = .525, sigmoid(1) = .731,
    # sigmoid(0.5) = .622: 'probs' keeps token 1, 'position' token 0. Expert 1: tokens 0 (.475)
    # and 1 (.269): both policies keep token 0. Expert 2: token 2 alone (hand-worked).
    L = np.array([[1.0, 0.9, 0.0], [2.0, 1.0, 0.0], [3.0, 0.0, 2.5]])
    assert route(L, 2, 0.5)["slot"].tolist() == [[-1, 0], [0, -1], [-1, 0]]
    assert route(L, 2, 0.5, "position")["slot"].tolist() == [[0, 0], [-1, -1], [-1, 0]]

if __name__ == "__main__":
    hand_checks()
    print("megatron_ref.py: hand checks passed")
