#!/usr/bin/python3
"""hf_moe_ref.py: NumPy re-implementation of the routers of two Hugging Face transformers
models, step by step:

  transformers src/transformers/models/mixtral/modeling_mixtral.py MixtralSparseMoeBlock.forward
    routing_weights = softmax(router_logits) (float); top-k (num_experts_per_tok = 2);
    routing_weights /= their sum over the k chosen; no capacity (nothing dropped).
  transformers src/transformers/models/qwen2_moe/modeling_qwen2_moe.py
  Qwen2MoeSparseMoeBlock.forward
    the same with num_experts_per_tok = 4 and norm_topk_prob False (the chosen softmax
    probabilities unnormalised); the shared expert is outside the router.
  Slots: both loop over the experts with expert_mask = one_hot(selected_experts) permuted to
  (E, k, T) and torch.where(expert_mask[e]), which lists the expert's first-choice tokens (in
  token order), then its second-choice tokens, ...: slot = position in that list.

Returns per-choice arrays as deepspeed_ref.py does (idx, pre, combine, slot, C, first); C is
the largest expert load."""
import numpy as np

from deepspeed_ref import softmax


def sparse_moe_block_routing(L, top_k, norm_topk_prob):
    n, E = L.shape
    routing_weights = softmax(L)
    idx = np.argsort(-routing_weights, axis=1, kind="stable")[:, :top_k]
    w = np.take_along_axis(routing_weights, idx, 1)
    if norm_topk_prob:
        w = w / w.sum(axis=1, keepdims=True)
    slot = np.zeros((n, top_k), dtype=np.int64)
    for e in range(E):
        pos = 0
        for j in range(top_k):  # torch.where over (k, T): choice rank, then token
            for t in range(n):
                if idx[t, j] == e:
                    slot[t, j] = pos
                    pos += 1
    C = int(np.bincount(idx.ravel(), minlength=E).max())
    return {"idx": idx, "pre": w, "slot": slot, "combine": w, "C": C, "first": idx[:, 0]}


def mixtral(L):
    return sparse_moe_block_routing(L, 2, True)


def qwen2_moe(L):
    return sparse_moe_block_routing(L, 4, False)


def hand_checks():
    # two tokens on expert 0: token 1 first choice, token 0 second choice; the expert lists its
    # first-choice tokens first, so token 1 has slot 0 and token 0 slot 1
    L = np.array([[0.0, 1.0, -5.0], [1.0, -5.0, 0.0]])
    out = mixtral(L)
    assert out["idx"].tolist() == [[1, 0], [0, 2]]
    assert out["slot"].tolist() == [[0, 1], [0, 0]]
    assert abs(out["combine"][0].sum() - 1.0) < 1e-15


if __name__ == "__main__":
    hand_checks()
    print("hf_moe_ref.py: hand checks passed")
