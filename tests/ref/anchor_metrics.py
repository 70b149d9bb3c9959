#!/usr/bin/python3
"""anchor_metrics.py: NumPy re-implementations of the libraries' own loss and balance formulas
behind moesim's anchor metrics (docs/metrics.md), and the fixture they write,
tests/fixtures/metrics/anchor_cases.json, which tests/test_metrics_anchor.c matches value for
value (`make test` never needs Python; run `python3 tests/ref/anchor_metrics.py` to rewrite it).

Each function follows the library's public code step by step in NumPy (views, masks, cumulative
sums), with the library's constants:

  megatron_scores_for_aux_loss   Megatron-LM megatron/core/transformer/moe/moe_utils.py
                                 compute_routing_scores_for_aux_loss: softmax, or sigmoid /
                                 sqrt(softplus) divided by their sum + 1e-20; routing map =
                                 torch.topk of those scores
  megatron_seq_aux_loss          moe_utils.py sequence_load_balancing_loss_func (coefficient 1):
                                 probs and routing map viewed (seq_length, batch_size, E),
                                 cost_coeff = routing_map.sum(0) / (seq_length * topk / E),
                                 loss = mean over the batch of sum_e cost_coeff * probs.mean(0)
  t2t_prob_in_top_k, t2t_cv_squared, t2t_load
                                 tensor2tensor tensor2tensor/utils/expert_utils.py _prob_in_top_k,
                                 cv_squared, noisy_top_k_gating (load = sum over the batch of
                                 ProbInTopK with noise and k < E, else _gates_to_load = count of
                                 non-zero gates) -- Shazeer et al. 2017's smooth load estimator
  fairseq_top2gating             fairseq fairseq/modules/moe/top2gate.py top2gating (moe
                                 branch): argmax, second argmax, second_expert_policy 'random'
                                 (2 * gates2_s > u on the raw gate, the default
                                 normalize_gate_prob_before_dropping=False) or 'all',
                                 locations by cumsum (second choices after every first choice),
                                 metadata overflow_expert1 / overflow_expert2
  vmoe_importance_loss, vmoe_load_loss
                                 V-MoE vmoe/nn/routing.py NoisyTopExpertsPerItemRouter
                                 _importance_auxiliary_loss (cv^2 of the summed softmax,
                                 population std) and _load_auxiliary_loss (threshold = the k-th
                                 largest noisy logit, p = 1 - Phi((threshold - logit) / noise_std),
                                 cv^2 of p averaged over items), each per group (jax.vmap), then
                                 the mean over groups
  vllm_balancedness              vLLM vllm/distributed/eplb/eplb_state.py (step logging):
                                 EplbState.step: num_tokens_per_rank (ranks, layers), avg_tokens =
                                 its mean over ranks summed over layers, max_tokens = its max
                                 over ranks summed over layers, balancedness = avg / max; here
                                 one layer and one expert per rank (its kept tokens)

Layout. moesim's tokens are t = b * S + s (sequences of S consecutive tokens); Megatron's
tensors are sequence-major [s, b]. megatron_seq_aux_loss is fed the tokens reordered into
Megatron's layout, which is how a Megatron batch of the same sequences would hold them.

The plans of the cases are fairseq_top2gating's own (its masks and locations as entries), so the
overflow percentages moesim computes from the plan are checked against fairseq's metadata; the
noisy logits are the clean ones plus noise_std * N(0,1) from NumPy and feed only the
noisy-gating losses (moesim's topk draws its own noise; these losses read the noisy logits the
router used). The other metrics (groups touched, drop rate per routing group, balancedness) are
computed here from the same entries."""
import json
import math
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "metrics",
                   "anchor_cases.json")


def softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk_indices(x, k):
    """torch.topk / jax.lax.top_k indices along the last axis (the cases have no ties)."""
    return np.argsort(-x, axis=-1, kind="stable")[..., :k]


def phi(x):
    """Standard normal CDF (torch Normal.cdf, jax.scipy.stats.norm.cdf)."""
    return 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2.0))


# ---- Megatron ----


def megatron_scores_for_aux_loss(logits, topk, score_function):
    if score_function == "softmax":
        scores = softmax(logits)
    elif score_function == "sigmoid":
        scores = 1.0 / (1.0 + np.exp(-logits))
        scores = scores / (scores.sum(axis=-1, keepdims=True) + 1e-20)
    elif score_function == "sqrtsoftplus":
        scores = np.sqrt(np.logaddexp(0.0, logits))
        scores = scores / (scores.sum(axis=-1, keepdims=True) + 1e-20)
    else:
        raise ValueError(score_function)
    routing_map = np.zeros_like(logits, dtype=bool)
    np.put_along_axis(routing_map, topk_indices(scores, topk), True, axis=1)
    return routing_map, scores


def megatron_seq_aux_loss(probs, routing_map, batch_size, seq_length, topk):
    num_experts = probs.shape[1]
    probs_for_aux_loss = probs.reshape(seq_length, batch_size, -1)
    routing_map = routing_map.reshape(seq_length, batch_size, -1)
    cost_coeff = routing_map.sum(axis=0, dtype=np.float64) / (seq_length * topk / num_experts)
    return (cost_coeff * probs_for_aux_loss.mean(axis=0)).sum(axis=1).mean()


def seq_aux_loss(logits, k, S, score):
    """moesim's sequences of S consecutive tokens, in Megatron's [s, b] layout."""
    n, E = logits.shape
    B = n // S
    meg = logits.reshape(B, S, E).transpose(1, 0, 2).reshape(S * B, E)
    routing_map, scores = megatron_scores_for_aux_loss(meg, k, score)
    return megatron_seq_aux_loss(scores, routing_map, B, S, k)


# ---- tensor2tensor (Shazeer et al. 2017) ----


def t2t_cv_squared(x):
    epsilon = 1e-10
    float_size = float(x.size) + epsilon
    mean = np.sum(x) / float_size
    variance = np.sum(np.square(x - mean)) / float_size
    return variance / (np.square(mean) + epsilon)


def t2t_prob_in_top_k(clean_values, noisy_values, noise_stddev, noisy_top_values, k):
    batch = clean_values.shape[0]
    m = noisy_top_values.shape[1]
    top_values_flat = noisy_top_values.reshape(-1)
    threshold_positions_if_in = np.arange(batch) * m + k
    threshold_if_in = top_values_flat[threshold_positions_if_in][:, None]
    is_in = noisy_values > threshold_if_in
    threshold_positions_if_out = threshold_positions_if_in - 1
    threshold_if_out = top_values_flat[threshold_positions_if_out][:, None]
    prob_if_in = phi((clean_values - threshold_if_in) / noise_stddev)
    prob_if_out = phi((clean_values - threshold_if_out) / noise_stddev)
    return np.where(is_in, prob_if_in, prob_if_out)


def t2t_load(clean, noisy, noise_stddev, k):
    """noisy_top_k_gating's load: ProbInTopK summed over the batch (noise, k < E)."""
    E = clean.shape[1]
    top_values = -np.sort(-noisy, axis=1)[:, :min(k + 1, E)]
    return t2t_prob_in_top_k(clean, noisy, noise_stddev, top_values, k).sum(axis=0)


def t2t_gates_to_load(gates):
    return (gates > 0).sum(axis=0).astype(np.float64)


# ---- fairseq ----


def fairseq_top2gating(logits, capacity, uniforms=None):
    """top2gating with second_expert_policy 'random' (uniforms given) or 'all' (None)."""
    gates = softmax(logits)
    n, E = gates.shape
    indices1_s = np.argmax(gates, axis=1)
    mask1 = np.eye(E, dtype=np.int64)[indices1_s]
    logits_except1 = np.where(mask1.astype(bool), -np.inf, logits)
    indices2_s = np.argmax(logits_except1, axis=1)
    mask2 = np.eye(E, dtype=np.int64)[indices2_s]
    gates2_s = (gates * mask2).sum(axis=1)
    if uniforms is not None:
        sampled = (2 * gates2_s) > uniforms
        mask2 = mask2 * sampled[:, None]
    locations1 = np.cumsum(mask1, axis=0) - 1
    locations2 = np.cumsum(mask2, axis=0) - 1
    locations2 += np.sum(mask1, axis=0, keepdims=True)
    meta = {
        "overflow_expert1": 100 * np.sum(mask1 * (locations1 >= capacity)) / np.sum(mask1),
        "overflow_expert2": 100 * np.sum(mask2 * (locations2 >= capacity)) / np.sum(mask2),
    }
    claims = [int(mask1.sum()), int(mask2.sum())]
    assigned = (mask1 + mask2).sum(axis=0)
    mask1 = mask1 * (locations1 < capacity)
    mask2 = mask2 * (locations2 < capacity)
    kept = [int(mask1.sum()), int(mask2.sum())]
    entries = []
    for t in range(n):
        for mask, loc in ((mask1, locations1), (mask2, locations2)):
            e = int(np.argmax(mask[t]))
            if mask[t, e]:
                entries.append([t, e, int(loc[t, e])])
    return meta, entries, claims, kept, assigned


# ---- V-MoE ----


def vmoe_importance_loss(gates):
    importance_per_expert = np.sum(gates, axis=tuple(range(gates.ndim - 1)))
    return (np.std(importance_per_expert) / np.mean(importance_per_expert)) ** 2


def vmoe_load_loss(logits, logits_noisy, noise_std, num_selected_experts):
    num_experts = logits_noisy.shape[-1]
    threshold_per_item_index = topk_indices(logits_noisy, num_selected_experts)[..., -1]
    threshold_per_item = np.sum(np.eye(num_experts)[threshold_per_item_index] * logits_noisy,
                                axis=-1)
    noise_required_to_win = threshold_per_item[..., None] - logits
    noise_required_to_win /= noise_std
    p = 1.0 - phi(noise_required_to_win)
    p_mean = np.mean(p, axis=0)
    return (np.std(p_mean) / np.mean(p_mean)) ** 2


def per_group(fn, gs, *arrays):
    """jax.vmap over routing groups of gs tokens (the arrays' first axis), then the mean."""
    n = arrays[0].shape[0]
    gs = gs if 0 < gs < n else n
    return float(np.mean([fn(*(a[i:i + gs] for a in arrays)) for i in range(0, n, gs)]))


# ---- vLLM ----


def vllm_balancedness(tokens_per_rank_and_layer):
    """EplbState.step (log_stats): num_tokens_per_rank (num_ranks, num_moe_layers)."""
    num_tokens_per_rank = np.asarray(tokens_per_rank_and_layer, dtype=np.float64)
    avg_tokens = num_tokens_per_rank.mean(axis=0).sum(axis=0)
    max_tokens = num_tokens_per_rank.max(axis=0).sum(axis=0)
    return avg_tokens / max_tokens if max_tokens > 0 else 0.0


# ---- moesim's plan statistics ----


def plan_stats(entries, n, E, G, gs):
    kept = np.zeros((n, E), dtype=bool)
    for t, e, _ in entries:
        kept[t, e] = True
    touched = kept.reshape(n, G, E // G).any(axis=2).sum(axis=1)
    hist = np.bincount(touched, minlength=G + 1)
    gs = gs if 0 < gs < n else n
    dropped = ~kept.any(axis=1)
    rates = [dropped[i:i + gs].mean() for i in range(0, n, gs)]
    return {"groups_touched_mean": float(touched.mean()), "groups_touched": hist.tolist(),
            "token_drop_rate_group_min": float(min(rates)),
            "token_drop_rate_group_mean": float(np.mean(rates)),
            "token_drop_rate_group_max": float(max(rates)),
            "kept_load": kept.sum(axis=0)}


def case(name, seed, n, E, capacity, groups, group_size, seq_len, score, noise_std, policy):
    rng = np.random.default_rng(seed)
    k = 2
    L = rng.normal(size=(n, E)) * 1.5
    u = rng.uniform(size=n) if policy == "random" else None
    noisy = L + noise_std * rng.normal(size=(n, E)) if noise_std > 0 else None
    meta, entries, claims, kept, assigned = fairseq_top2gating(L, capacity, u)
    st = plan_stats(entries, n, E, groups, group_size)
    exp = {k_: v for k_, v in st.items() if k_ != "kept_load"}
    exp["seq_aux_loss"] = float(seq_aux_loss(L, k, seq_len if seq_len else n, score))
    if noisy is not None:
        exp["load_loss_shazeer"] = float(t2t_cv_squared(t2t_load(L, noisy, noise_std, k)))
        exp["load_loss_vmoe"] = per_group(
            lambda a, b: vmoe_load_loss(a, b, noise_std, k), group_size, L, noisy)
    else:  # t2t without noise: the count of non-zero gates (here the claims of the plan)
        exp["load_loss_shazeer"] = float(t2t_cv_squared(assigned.astype(np.float64)))
        exp["load_loss_vmoe"] = None
    exp["overflow_expert1"] = float(meta["overflow_expert1"])
    exp["overflow_expert2"] = float(meta["overflow_expert2"]) if claims[1] else None
    exp["importance_loss_vmoe"] = per_group(lambda a: vmoe_importance_loss(softmax(a)),
                                            group_size, L)
    exp["balancedness"] = float(vllm_balancedness(st["kept_load"][:, None]))  # rank = expert
    return {"name": name, "T": n, "E": E, "k": k, "capacity": capacity, "groups": groups,
            "group_size": group_size, "sequence_length": seq_len, "score": score,
            "second_policy": policy, "logits": L.tolist(),
            "uniforms": None if u is None else u.tolist(),
            "noisy_logits": None if noisy is None else noisy.tolist(), "noise_std": noise_std,
            "entries": entries, "assigned_load": assigned.tolist(), "rank_claims": claims,
            "rank_kept": kept, "expected": exp}


def main():
    cases = [
        case("softmax_noisy_groups", 11, 16, 8, 3, 4, 8, 4, "softmax", 0.5, "random"),
        case("sigmoid_clean_seq8", 12, 16, 8, 4, 2, 0, 8, "sigmoid", 0.0, "random"),
        case("sqrtsoftplus_tight", 13, 24, 8, 2, 8, 6, 12, "sqrtsoftplus", 1.0, "all"),
        case("softmax_all_wide", 14, 32, 16, 5, 4, 16, 8, "softmax", 0.25, "all"),
    ]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"generator": "tests/ref/anchor_metrics.py", "cases": cases}, f, indent=1)
        f.write("\n")
    print("wrote", os.path.relpath(OUT), len(cases), "cases")


if __name__ == "__main__":
    main()
