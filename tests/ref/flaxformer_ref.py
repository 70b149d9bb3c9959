#!/usr/bin/python3
"""flaxformer_ref.py: NumPy re-implementation of flaxformer's masked routers, step by step:

  flaxformer flaxformer/architectures/moe/moe_layers.py MoeLayer: expert_capacity =
    max(int(round(capacity_factor * tokens_per_group / num_experts)), min_expert_capacity = 4)
    (Python's round: half to even); one group here.
  flaxformer flaxformer/architectures/moe/routing.py TokensChooseMaskedRouter
    expert_gate, expert_index = top_k(router_probs, k); with batch_prioritized_routing the
    tokens are sorted by -expert_gate[..., 0] (stable); the k axis made leading so top-1
    choices have priority; token_priority = cumsum(one_hot) * one_hot - 1; a choice is kept
    when its priority < expert_capacity; combine = router_probs (no renormalisation).
  flaxformer flaxformer/architectures/moe/routing.py ExpertsChooseMaskedRouter
    expert_gate, expert_index = top_k(router_probs transposed, k = expert_capacity): each expert
    takes its expert_capacity most probable tokens, slot = rank; combine = expert_gate.

jax.lax.top_k and a stable argsort break ties by the lower index, as here. Returns per-choice
arrays as deepspeed_ref.py does (idx, pre, combine, slot, C, first); experts_choose returns
(rows of (token, expert, slot, weight), C)."""
import numpy as np

from deepspeed_ref import softmax


def expert_capacity(tokens_per_group, num_experts, capacity_factor, min_expert_capacity=4):
    return max(int(round(capacity_factor * tokens_per_group / num_experts)), min_expert_capacity)


def top_k(a, k):
    idx = np.argsort(-a, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(a, idx, -1), idx


def tokens_choose_masked(L, k, capacity_factor, batch_prioritized_routing=False):
    n, E = L.shape
    probs = softmax(L)
    C = expert_capacity(n, E, capacity_factor)
    gate, index = top_k(probs, k)
    perm = np.argsort(-gate[:, 0], kind="stable") if batch_prioritized_routing else np.arange(n)
    idx_sorted = index[perm]
    order = idx_sorted.T.reshape(-1)  # (k * n): all top-1 choices first
    one_hot = np.eye(E, dtype=np.int64)[order]
    priority = (np.cumsum(one_hot, axis=0) * one_hot - 1).max(axis=1).reshape(k, n).T
    inv = np.argsort(perm)
    priority = priority[inv]
    slot = np.where(priority < C, priority, -1)
    return {"idx": index, "pre": gate, "slot": slot, "combine": np.where(slot >= 0, gate, 0.0),
            "C": C, "first": index[:, 0]}


def experts_choose_masked(L, capacity_factor):
    n, E = L.shape
    probs = softmax(L)
    C = expert_capacity(n, E, capacity_factor)
    gate, index = top_k(probs.T, C)  # (E, C)
    rows = [(int(index[e, c]), e, c, float(gate[e, c])) for e in range(E) for c in range(C)]
    return rows, C


def hand_checks():
    # round half to even: 2.5 -> 2, 3.5 -> 4; the minimum 4 applies below
    assert expert_capacity(40, 4, 1.0) == 10 and expert_capacity(10, 4, 1.0) == 4
    assert expert_capacity(100, 8, 0.2, 0) == 2 and expert_capacity(140, 8, 0.2, 0) == 4
    # tokens choose, k = 1, C = 4 (minimum): five tokens on expert 0, the fifth dropped;
    # with batch priority the least confident token (token 0) is dropped instead
    L = np.array([[0.5, 0], [3, 0], [3.1, 0], [3.2, 0], [3.3, 0]])
    assert list(tokens_choose_masked(L, 1, 1.0)["slot"][:, 0]) == [0, 1, 2, 3, -1]
    assert list(tokens_choose_masked(L, 1, 1.0, True)["slot"][:, 0]) == [-1, 3, 2, 1, 0]


if __name__ == "__main__":
    hand_checks()
    print("flaxformer_ref.py: hand checks passed")
