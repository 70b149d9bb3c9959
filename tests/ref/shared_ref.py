#!/usr/bin/python3
"""shared_ref.py: writes the committed shared-expert fixtures under tests/fixtures/shared/ (run by
hand: /usr/bin/python3 tests/ref/shared_ref.py; `make test` never needs Python).

The routed part comes from the NumPy reference of the routing semantics (tests/ref/moe_ref.py:
route, layer_output with gelu_tanh experts); the shared experts are computed here, in float64,
from their definition (DeepSeek-V3 inference/model.py MoE.forward adds the shared experts'
output to the routed output with weight 1; Qwen2-MoE's Qwen2MoeSparseMoeBlock multiplies its
shared expert by sigmoid(x . wg)):

    y[t] = routed(x)[t] + sum_s g[t,s] * (gelu_tanh(x_t W1_s + b1_s) W2_s + b2_s)
    g[t,s] = 1 (no gate) or sigmoid(x_t . wg_s)

Each case folder holds its inputs (.npy), `cmd` (the `moesim route` arguments, files relative to
the folder), expected_y.npy (float64) and expected_flops.txt: flops_expert_useful and
flops_expert_padded of the metrics, 4*d*f per kept entry (E*C*4*d*f padded) plus, for every
token, S*4*d*Fs (+ 2*d*S with the gate) in both, then output_error_dense and
output_error_dropless with the shared experts on both sides."""
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_ref as R  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "shared")


def shared_output(x, sw, gate):
    x = np.asarray(x, dtype=np.float64)
    y = np.zeros_like(x)
    for s in range(sw["w1"].shape[0]):
        a = x @ sw["w1"][s].astype(np.float64) + sw["b1"][s]
        o = R.gelu_tanh(a) @ sw["w2"][s].astype(np.float64) + sw["b2"][s]
        g = 1.0 / (1.0 + np.exp(-(x @ sw["wg"][s].astype(np.float64)))) if gate else 1.0
        y += (g[:, None] if gate else g) * o
    return y


def hand_check():
    # One token, d = 2, one shared expert of width 1 with weights chosen so gelu_tanh(0) = 0:
    # x = (1, -1), w1 = (1, 1)^T, b1 = 0 -> a = 0 -> o = b2 = (0.5, -0.5); gate wg = (0, 0):
    # g = 0.5 -> y = (0.25, -0.25).
    sw = {"w1": np.array([[[1.0], [1.0]]]), "b1": np.zeros((1, 1)),
          "w2": np.array([[[3.0, 4.0]]]), "b2": np.array([[0.5, -0.5]]),
          "wg": np.zeros((1, 2))}
    y = shared_output(np.array([[1.0, -1.0]]), sw, True)
    assert np.allclose(y, [[0.25, -0.25]], atol=1e-15), y


def write_case(name, router, opts, flags, seed, n=12, E=4, d=8, f=16, S=2, fs=6, gate=True):
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((n, E)).astype(np.float32)
    x = rng.standard_normal((n, d)).astype(np.float32)
    W = {"w1": (rng.standard_normal((E, d, f)) / np.sqrt(d)).astype(np.float32),
         "b1": (0.1 * rng.standard_normal((E, f))).astype(np.float32),
         "w2": (rng.standard_normal((E, f, d)) / np.sqrt(f)).astype(np.float32),
         "b2": (0.1 * rng.standard_normal((E, d))).astype(np.float32)}
    sw = {"w1": (rng.standard_normal((S, d, fs)) / np.sqrt(d)).astype(np.float32),
          "b1": (0.1 * rng.standard_normal((S, fs))).astype(np.float32),
          "w2": (rng.standard_normal((S, fs, d)) / np.sqrt(fs)).astype(np.float32),
          "b2": (0.1 * rng.standard_normal((S, d))).astype(np.float32),
          "wg": (rng.standard_normal((S, d)) / np.sqrt(d)).astype(np.float32)}
    L64 = L.astype(np.float64)
    plan = R.route(router, L64, opts)
    ys = shared_output(x, sw, gate)
    y = R.layer_output(plan, x, W) + ys
    # output errors: both sides carry the shared experts (the default 512 error rows cover
    # all 12 tokens); the dropless twin is the same router with dropless = true
    y_dense = R.dense_mixture(plan, L64, x, W) + ys
    y_dl = R.layer_output(R.route(router, L64, dict(opts, dropless=True)), x, W) + ys
    err_dense, err_dl = R.rel_err(y, y_dense), R.rel_err(y, y_dl)
    per_shared = S * 4 * d * fs + (2 * d * S if gate else 0)
    useful = 4 * d * f * len(plan.entries) + n * per_shared
    padded = E * plan.capacity * 4 * d * f + n * per_shared
    dd = os.path.join(ROOT, name)
    os.makedirs(dd)
    args = ["--router", router, "--logits", "logits.npy"] + flags + ["--x", "x.npy"]
    np.save(os.path.join(dd, "logits.npy"), L)
    np.save(os.path.join(dd, "x.npy"), x)
    for k in ("w1", "b1", "w2", "b2"):
        np.save(os.path.join(dd, k + ".npy"), W[k])
        args += ["--" + k, k + ".npy"]
    for k in ("w1", "b1", "w2", "b2") + (("wg",) if gate else ()):
        np.save(os.path.join(dd, "s" + k + ".npy"), sw[k])
        args += ["--shared-" + ("gate-w" if k == "wg" else k), "s" + k + ".npy"]
    np.save(os.path.join(dd, "expected_y.npy"), y)
    with open(os.path.join(dd, "cmd"), "w") as fh:
        fh.write(" ".join(args) + "\n")
    with open(os.path.join(dd, "expected_flops.txt"), "w") as fh:
        fh.write("%d %d %.17g %.17g\n" % (useful, padded, err_dense, err_dl))


def main():
    hand_check()
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    os.makedirs(ROOT)
    # top-2 without a capacity limit, shared experts behind Qwen2-MoE's sigmoid gate
    write_case("topk_dropless_gate", "topk", {"k": 2, "dropless": True},
               ["--k", "2", "--dropless", "true"], 11)
    # switch at capacity factor 0.5: dropped tokens still get the shared experts' output
    write_case("switch_drops_nogate", "switch", {"capacity_factor": "0.5"},
               ["--capacity-factor", "0.5"], 12, gate=False)
    print("wrote 2 cases under", os.path.normpath(ROOT))


if __name__ == "__main__":
    main()
