#!/usr/bin/python3
"""deepseek_ref.py: NumPy re-implementation of DeepSeek-V3's gate, step by step:

  DeepSeek-V3 inference/model.py Gate.forward with the V3 configuration (score_func 'sigmoid',
  n_routed_experts E, n_activated_experts k = 8, n_expert_groups 8, n_limited_groups 4,
  route_scale 2.5, a bias, zero here: one batch before any update):
    scores = sigmoid(logits); original_scores = scores; scores += bias; group_scores = sum of
    the top-2 scores of each group (the bias branch); the 4 best groups kept, the others'
    scores -inf; indices = topk(scores, k); weights = original_scores at indices, divided by
    their sum (sigmoid), times route_scale.
  inference/model.py MoE.forward: for each expert, torch.where(indices == i) lists its tokens in
  token order: slot = rank among them. No capacity (nothing dropped).

Returns per-choice arrays as deepspeed_ref.py does (idx, pre, combine, slot, C, first)."""
import numpy as np


def gate_forward(L, topk=8, n_groups=8, topk_groups=4, route_scale=2.5, bias=None):
    n, E = L.shape
    scores = 1.0 / (1.0 + np.exp(-L))
    original = scores.copy()
    if bias is None:
        bias = np.zeros(E)
    scores = scores + bias
    g = scores.reshape(n, n_groups, -1)
    group_scores = np.sort(g, axis=-1)[..., ::-1][..., :2].sum(axis=-1)
    best = np.argsort(-group_scores, axis=1, kind="stable")[:, :topk_groups]
    mask = np.ones((n, n_groups), bool)
    mask[np.arange(n)[:, None], best] = False
    scores = np.where(np.repeat(mask, E // n_groups, axis=1), -np.inf, scores)
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :topk]
    w = np.take_along_axis(original, idx, 1)
    w = w / w.sum(axis=1, keepdims=True) * route_scale
    slot = np.zeros((n, topk), dtype=np.int64)
    load = np.zeros(E, dtype=np.int64)
    for t in range(n):
        for j in range(topk):
            slot[t, j] = load[idx[t, j]]
            load[idx[t, j]] += 1
    return {"idx": idx, "pre": w, "slot": slot, "combine": w, "C": int(load.max()),
            "first": idx[:, 0]}


def hand_checks():
    # E = 4, two groups of 2, k = 2, one group kept: logits [0, 0, 1, -3] -> group sums
    # (0.5 + 0.5, 0.731 + 0.047) = (1, 0.778): group 0 kept although expert 2 has the largest
    # score; weights 1/2 each, times route_scale 2 = 1 (hand-worked)
    out = gate_forward(np.array([[0.0, 0.0, 1.0, -3.0]]), 2, 2, 1, 2.0)
    assert out["idx"].tolist() == [[0, 1]] and np.allclose(out["combine"], [[1.0, 1.0]])


if __name__ == "__main__":
    hand_checks()
    print("deepseek_ref.py: hand checks passed")
