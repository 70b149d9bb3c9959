#!/usr/bin/python3
"""fairseq_ref.py: NumPy re-implementation of fairseq's gating functions (moe branch), step by
step, with the Gumbel draws given as uniforms u (G = -log(-log u), fairseq's gumbel_rsample):

  fairseq fairseq/modules/moe/top1gate.py top1gating (training mode)
    capacity = int(capacity_factor * ceil(num_tokens / num_experts)); indices1 = argmax(gates);
    locations1 = cumsum(mask1) - 1; mask1 cut at capacity; combine = gates1_s (the chosen
    softmax probability)
  fairseq fairseq/modules/moe/top2gate.py top2gating (training mode, second_expert_policy
  'sampling', normalize_gate_prob_before_dropping False, batch_prioritized_routing False)
    capacity = 2 * ceil(num_tokens / num_experts); indices2 = argmax(logits + gumbel) with the
    first masked out; locations2 = cumsum(mask2) - 1 + sum(mask1); masks cut at capacity;
    gates1_s, gates2_s of the kept masks divided by their sum (clamped at eps)

Returns per-choice arrays as deepspeed_ref.py does (idx, pre, combine, slot, C, first)."""
import math

import numpy as np

from deepspeed_ref import _slot_of, softmax, top2_sampled


def top1gating(L, capacity_factor=1.0):
    n, E = L.shape
    gates = softmax(L)
    C = int(capacity_factor * math.ceil(n / E))
    idx1 = np.argmax(gates, axis=1)
    mask1 = np.zeros((n, E))
    mask1[np.arange(n), idx1] = 1
    g = gates[np.arange(n), idx1]
    locations1 = np.cumsum(mask1, axis=0) - 1
    mask1 = mask1 * (locations1 < C)
    slot = _slot_of(mask1, locations1, idx1)
    return {"idx": idx1[:, None], "pre": g[:, None], "slot": slot[:, None],
            "combine": np.where(slot >= 0, g, 0.0)[:, None], "C": C, "first": idx1}


def top2gating(L, u_gumbel):
    """After the capacity, the steps are those of DeepSpeed's top2gating (both come from
    fairscale's top2gating): deepspeed_ref.top2_sampled."""
    n, E = L.shape
    return top2_sampled(L, u_gumbel, 2 * math.ceil(n / E))


def hand_checks():
    # capacity: 26 tokens, 4 experts: top1 int(1.0 * ceil(6.5)) = 7, top2 2 * 7 = 14, where
    # moesim's ROUND(k n cf / E) gives 7 and ceil(13) = 13
    L = np.zeros((26, 4))
    assert top1gating(L)["C"] == 7
    assert top2gating(L, np.full((26, 4), 0.5))["C"] == 14
    # two tokens on expert 0, capacity 1 (n = 2, E = 2): token 1's first choice is dropped, its
    # second (expert 1) is kept and gets the whole weight 1 (hand-worked)
    L = np.array([[2.0, 0.0], [1.0, 0.0]])
    out = top2gating(L, np.full((2, 2), 0.5))
    assert out["C"] == 2
    out1 = top1gating(np.array([[2.0, 0.0], [1.0, 0.0], [3.0, 0.0]]))
    assert out1["C"] == 2 and list(out1["slot"][:, 0]) == [0, 1, -1]


if __name__ == "__main__":
    hand_checks()
    print("fairseq_ref.py: hand checks passed")
