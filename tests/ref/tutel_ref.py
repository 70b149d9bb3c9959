#!/usr/bin/python3
"""tutel_ref.py: NumPy re-implementation of Tutel's top-k gating, step by step:

  Tutel tutel/impls/moe_layer.py MOELayer.forward routing(): scores = softmax(logits) (no gate
  noise outside training), then tutel/impls/fast_dispatch.py extract_critical:
    topk_indices = topk(scores, k); gates_s[j] = score of the j-th choice; locations of the
    j-th choices = cumsum(mask_j) - 1 + the claims of choices 0..j-1 on that expert
    (batch_prioritized_routing False); normalize_gate: gates divided by their sum over the k
    choices (before capacity); samples_per_expert = ceil(n / E); capacity = k *
    int(capacity_factor * samples_per_expert) (capacity_factor > 0), alignment 1; fast_encode
    drops the locations >= capacity.

Returns per-choice arrays as deepspeed_ref.py does (idx, pre, combine, slot, C, first)."""
import numpy as np

from deepspeed_ref import softmax


def capacity(n, E, k, capacity_factor):
    samples_per_expert = (n + E - 1) // E
    return k * int(capacity_factor * samples_per_expert)


def extract_critical(L, k, capacity_factor=1.0):
    n, E = L.shape
    scores = softmax(L)
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    gates = np.take_along_axis(scores, idx, 1)
    gates = gates / np.maximum(gates.sum(axis=1, keepdims=True), np.finfo(np.float64).eps)
    C = capacity(n, E, k, capacity_factor)
    loc = np.zeros((n, k), dtype=np.int64)
    acc = np.zeros(E, dtype=np.int64)
    for j in range(k):
        mask = np.eye(E, dtype=np.int64)[idx[:, j]]
        loc[:, j] = ((np.cumsum(mask, axis=0) - 1 + acc) * mask).sum(axis=1)
        acc += mask.sum(axis=0)
    slot = np.where(loc < C, loc, -1)
    return {"idx": idx, "pre": gates, "slot": slot, "combine": np.where(slot >= 0, gates, 0.0),
            "C": C, "first": idx[:, 0]}


def hand_checks():
    # 26 tokens, 4 experts, k = 2, cf 1: 2 * int(ceil(6.5)) = 14 (moesim's ceil(2*26/4) = 13)
    assert capacity(26, 4, 2, 1.0) == 14 and capacity(32, 8, 2, 1.0) == 8
    # one token, k = 2, logits [ln 3, 0]: gates 3/4, 1/4 normalised over the two
    out = extract_critical(np.array([[np.log(3.0), 0.0]]), 2)
    assert abs(out["combine"][0, 0] - 0.75) < 1e-15 and list(out["slot"][0]) == [0, 0]


if __name__ == "__main__":
    hand_checks()
    print("tutel_ref.py: hand checks passed")
