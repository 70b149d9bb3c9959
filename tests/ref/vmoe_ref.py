#!/usr/bin/python3
"""vmoe_ref.py: NumPy re-implementation of V-MoE's router, step by step:

  V-MoE vmoe/nn/routing.py NoisyTopExpertsPerItemRouter, deterministic (no noise: evaluation,
  or noise_std 0): gates = softmax(logits); the dispatcher of
  vmoe/moe.py get_top_experts_per_item_dispatcher with capacity_factor given:
    compute_capacity(num_tokens = group_size * k, num_experts, capacity_factor, 'ceil',
    multiple_of = 4) = ceil(n k cf / E) rounded up to a multiple of 4;
    _get_top_experts_per_item_common: top_k(gates, k); batch_priority sorts the items by
    -(top-1 gate) (jnp.argsort); the k axis made leading; buffer_index = cumsum(one_hot) *
    one_hot - 1; a choice with buffer index >= capacity is ignored by the dispatcher;
    combine = gates (no renormalisation).

Returns per-choice arrays as deepspeed_ref.py does (idx, pre, combine, slot, C, first)."""
import math

import numpy as np

from deepspeed_ref import softmax


def compute_capacity(num_tokens, num_experts, capacity_factor, multiple_of=4):
    capacity = int(math.ceil(num_tokens * capacity_factor / num_experts))
    if multiple_of and multiple_of > 0:
        capacity += (-capacity) % multiple_of
    return capacity


def top_experts_per_item(L, k, capacity_factor, batch_priority):
    n, E = L.shape
    gates = softmax(L)
    C = compute_capacity(n * k, E, capacity_factor)
    idx = np.argsort(-gates, axis=1, kind="stable")[:, :k]
    comb = np.take_along_axis(gates, idx, 1)
    perm = np.argsort(-comb[:, 0], kind="stable") if batch_priority else np.arange(n)
    flat = idx[perm].T.reshape(-1)
    one_hot = np.eye(E, dtype=np.int64)[flat]
    buf = (np.cumsum(one_hot, axis=0) * one_hot - 1).max(axis=1).reshape(k, n).T
    buf = buf[np.argsort(perm)]
    slot = np.where(buf < C, buf, -1)
    return {"idx": idx, "pre": comb, "slot": slot, "combine": np.where(slot >= 0, comb, 0.0),
            "C": C, "first": idx[:, 0]}


def hand_checks():
    # 32 tokens, k = 2, 8 experts, cf 1.05: ceil(8.4) = 9 -> 12
    assert compute_capacity(64, 8, 1.05) == 12
    assert compute_capacity(16, 4, 1.0) == 4


if __name__ == "__main__":
    hand_checks()
    print("vmoe_ref.py: hand checks passed")
