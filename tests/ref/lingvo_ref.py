#!/usr/bin/python3
"""lingvo_ref.py: NumPy re-implementation of lingvo's top-2 gating, step by step:

  lingvo lingvo/core/gshard_layers.py Top2GatingOnLogits with second_expert_policy 'all' and
  legacy_mtf_behavior True (its defaults), one group:
    expert_capacity_dim raised to int(S * capacity_factor / E) when that is larger, rounded up
    to a multiple of 4; index_1 = argmax(softmax); index_2 = argmax of the softmax with index_1
    zeroed; gate_1, gate_2 divided by gate_1 + gate_2 + 1e-9 before capacity (legacy);
    position_in_expert_1 = exclusive cumsum(mask_1); mask_1 cut at capacity;
    position_in_expert_2 = exclusive cumsum(mask_2) + count of the kept mask_1; mask_2 cut at
    capacity; combine = gate * kept mask (no renormalisation after drops, legacy).

Returns per-choice arrays as deepspeed_ref.py does (idx, pre, combine, slot, C, first)."""
import numpy as np

from deepspeed_ref import _slot_of, softmax


def capacity(S, E, capacity_factor, expert_capacity_dim=0):
    auto = int((S * capacity_factor) / E)
    if expert_capacity_dim < auto:
        expert_capacity_dim = auto
        while expert_capacity_dim % 4:
            expert_capacity_dim += 1
    return expert_capacity_dim


def top2_gating_on_logits(L, capacity_factor, expert_capacity_dim=0):
    n, E = L.shape
    r = np.arange(n)
    raw_gates = softmax(L)
    C = capacity(n, E, capacity_factor, expert_capacity_dim)
    idx1 = np.argmax(raw_gates, axis=1)
    mask1 = np.zeros((n, E))
    mask1[r, idx1] = 1
    gate1 = raw_gates[r, idx1]
    without1 = raw_gates * (1 - mask1)
    idx2 = np.argmax(without1, axis=1)
    mask2 = np.zeros((n, E))
    mask2[r, idx2] = 1
    gate2 = without1[r, idx2]
    denom = gate1 + gate2 + 1e-9
    gate1, gate2 = gate1 / denom, gate2 / denom
    pos1 = np.cumsum(mask1, axis=0) - mask1  # exclusive cumsum
    mask1 = mask1 * (pos1 < C)
    pos2 = np.cumsum(mask2, axis=0) - mask2 + mask1.sum(axis=0, keepdims=True)
    mask2 = mask2 * (pos2 < C)
    s1, s2 = _slot_of(mask1, pos1, idx1), _slot_of(mask2, pos2, idx2)
    return {"idx": np.stack([idx1, idx2], 1), "pre": np.stack([gate1, gate2], 1),
            "slot": np.stack([s1, s2], 1),
            "combine": np.stack([np.where(s1 >= 0, gate1, 0.0), np.where(s2 >= 0, gate2, 0.0)], 1),
            "C": C, "first": idx1}


def hand_checks():
    # S = 24, E = 4, cf 2: int(12) = 12 -> 12; cf 1.1: int(6.6) = 6 -> 8 (multiple of 4)
    assert capacity(24, 4, 2.0) == 12 and capacity(24, 4, 1.1) == 8
    # a larger expert_capacity_dim is kept as given (not rounded)
    assert capacity(24, 4, 1.1, 7) == 7


if __name__ == "__main__":
    hand_checks()
    print("lingvo_ref.py: hand checks passed")
