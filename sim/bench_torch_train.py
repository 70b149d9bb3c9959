#!/usr/bin/python3
"""PyTorch CPU training loop of moesim's training-step benchmark (sim/train_bench.c).

The same model, loss and optimizer as moe_train_bench, differentiated by autograd:
  student  topk router (k = 2, E = 16; gate = softmax over the k largest logits; capacity
           C = k*T/E = 512 slots per expert, claims choice-major, a claim beyond C dropped:
           bench_torch_moe.route), experts FFN_e(h) = act(h W1_e + b1_e) W2_e + b2_e in the
           per-expert loop style of Mixtral (index_select, addmm, index_add_);
  teacher  a fixed MoE of 16 experts, top-2, softmax over the two, no capacity limit, computed
           under torch.no_grad() inside the timed step (moesim computes it every step too);
  loss     mse(y, teacher(x)) + 1e-2 * E/(k T) sum_e assigned_e mean_t p[t,e]
           + 1e-3 * mean_t logsumexp(L_t)^2, p = softmax of the logits, assigned_e the claims
           on e before capacity (a constant);
  update   torch.optim.Adam(lr 1e-3, betas 0.9, 0.999, eps 1e-8) on all student parameters.
T = 4096 tokens, d = 256, f = 1024; two batches x ~ N(0,1), alternating; weights N(0, 1/d)
(gate, W1), N(0, 1/f) (W2), biases 0; fp32. Timed: --steps steps after one warm-up step, with
torch.set_num_threads(--threads) and OpenBLAS's thread count set alike. Prints one JSON object:
  {"torch": version, "threads": n, "act": ..., "steps": n, "sec_per_step": median,
   "min": ..., "max": ..., "loss": last loss}
Exit status 3 (with {"error": ...}) when torch cannot be imported.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import torch  # noqa: E402
    import torch.nn.functional as tF  # noqa: E402
    from bench_torch_moe import openblas_setter, route  # noqa: E402
except Exception as exc:  # pragma: no cover - depends on the machine
    print(json.dumps({"error": "cannot import torch: %s" % exc}))
    sys.exit(3)

T, D, F, E, K = 4096, 256, 1024, 16, 2
AUX_W, Z_W = 1e-2, 1e-3


def activation(name):
    if name == "relu":
        return torch.relu
    if name == "gelu_tanh":
        return lambda v: tF.gelu(v, approximate="tanh")
    raise ValueError("act must be relu or gelu_tanh")


def moe_weights(gen, requires_grad):
    def n(shape, std):
        w = torch.randn(shape, generator=gen) * std
        return w.requires_grad_(requires_grad)
    return [n((D, E), D ** -0.5), n((E, D, F), D ** -0.5),
            torch.zeros(E, F).requires_grad_(requires_grad), n((E, F, D), F ** -0.5),
            torch.zeros(E, D).requires_grad_(requires_grad)]


def moe_forward(x, w, k, C, act):
    """y (T,D), logits (T,E), claims per expert before capacity (E)."""
    wg, w1, b1, w2, b2 = w
    expert, gate, slot, keep = route(x, wg, k, C, "topk")
    tok = torch.arange(x.shape[0]).repeat(expert.shape[0])
    e_all, g_all, keep_all = expert.reshape(-1), gate.reshape(-1), keep.reshape(-1)
    y = torch.zeros_like(x)
    for e in range(E):
        sel = torch.nonzero((e_all == e) & keep_all).squeeze(1)
        if sel.numel() == 0:
            continue
        t = tok.index_select(0, sel)
        h = act(torch.addmm(b1[e], x.index_select(0, t), w1[e]))
        o = torch.addmm(b2[e], h, w2[e])
        y.index_add_(0, t, o * g_all.index_select(0, sel).unsqueeze(1))
    assigned = torch.bincount(e_all, minlength=E).to(x.dtype)
    return y, x @ wg, assigned


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--act", default="relu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    set_blas = openblas_setter()
    if set_blas is not None:
        set_blas(a.threads)
    act = activation(a.act)
    gen = torch.Generator().manual_seed(1)
    teacher = moe_weights(gen, False)
    student = moe_weights(gen, True)
    xs = [torch.randn(T, D, generator=gen) for _ in range(2)]
    opt = torch.optim.Adam(student, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    C = K * T // E

    def step(x):
        with torch.no_grad():
            target, _, _ = moe_forward(x, teacher, K, T * K, act)  # no capacity limit
        y, logits, assigned = moe_forward(x, student, K, C, act)
        p = torch.softmax(logits, dim=-1)
        aux = E / (K * T) * (assigned * p.mean(dim=0)).sum()
        z = torch.logsumexp(logits, dim=-1).pow(2).mean()
        loss = tF.mse_loss(y, target) + AUX_W * aux + Z_W * z
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)

    loss = step(xs[0])  # warm-up
    times = []
    for s in range(a.steps):
        t0 = time.perf_counter()
        loss = step(xs[(s + 1) % 2])
        times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"torch": torch.__version__, "threads": a.threads, "act": a.act,
                      "steps": a.steps, "sec_per_step": times[len(times) // 2],
                      "min": times[0], "max": times[-1], "loss": loss}))


if __name__ == "__main__":
    main()
