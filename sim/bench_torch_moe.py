#!/usr/bin/python3
"""PyTorch CPU reference of moesim's MoE layer, for `moesim bench`.

Run by the bench with /usr/bin/python3 (Debian's python3-torch and python3-numpy). It reads the
inputs the bench wrote to --dir (x (T,D), wg (D,E), w1 (E,D,F), b1 (E,F), w2 (E,F,D), b2 (E,D),
all float32, and kept (N,2) int64: the (token, expert) pairs moesim's plan kept) and runs the
whole layer, gate to combine, in two styles:

  loop    the per-expert loop of Mixtral (HF MixtralSparseMoeBlock): for each expert, the rows
          routed to it are gathered with index_select, pass through two addmm, and are added
          back with index_add_ times their gate value;
  einsum  the one-hot dispatch of GShard / DeepSpeed (top2gating + MOELayer): combine weights
          (T,E,C), dispatch mask = combine > 0, einsum 'sec,sm->ecm' in, batched expert GEMMs,
          einsum 'sec,ecm->sm' out.

Routing is moesim's (docs/routing.md section 3), computed here in torch inside the timed region:
topk = the k largest logits, gate = softmax over those k; switch = top-1, gate = the full
softmax p; capacity slots choice-major (all first choices in token order, then the second
choices), a claim beyond --capacity is dropped. FFN_e(h) = gelu_tanh(h W1_e + b1_e) W2_e + b2_e.

For each style and each thread count (torch.set_num_threads and OpenBLAS's own thread count, as
torch's matmuls run on Debian's OpenBLAS) it times one warm-up and --repeats forwards under
torch.inference_mode(); OMP_WAIT_POLICY defaults to passive (set before torch loads OpenMP).
It writes y_loop.npy and y_einsum.npy (float32 (T,D)) to --dir for the bench to compare with
its own output, and prints one JSON object on stdout:
  {"torch": version, "omp_wait_policy": ..., "routing_mismatch": kept pairs that differ from
   moesim's plan, "results": [{"style", "threads", "repeats", "median", "q1", "q3", "min",
   "max"} (seconds per forward)]}
Exit status 3 (with {"error": ...}) when torch cannot be imported.

With --serve it then stays, for the bench's rounds (moesim's forwards, then PyTorch's, round
after round, so that both sides of the ratio are timed in the same stretch of time): for each line
"time STYLE THREADS REPEATS" on stdin it runs REPEATS forwards of that style on that many threads
and prints "time STYLE THREADS S1 ... SR" (seconds per forward); it ends at the end of stdin, and
with exit status 2 on a request it cannot read.
"""
import argparse
import ctypes
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402

try:
    import torch  # noqa: E402
    import torch.nn.functional as tF  # noqa: E402
except Exception as exc:  # pragma: no cover - depends on the machine
    print(json.dumps({"error": "cannot import torch: %s" % exc}))
    sys.exit(3)


def openblas_setter():
    """openblas_set_num_threads of the OpenBLAS torch has loaded, or None."""
    for name in ("libopenblas.so.0", "libopenblas.so", "libblas.so.3"):
        try:
            lib = ctypes.CDLL(name)
            return lib.openblas_set_num_threads
        except (OSError, AttributeError):
            continue
    return None


def route(x, wg, k, C, router):
    """moesim's topk / switch routing. Returns expert (K,T), gate (K,T), slot (K,T), keep (K,T),
    row j = the j-th choice of every token (choice-major order)."""
    logits = x @ wg                                        # (T,E)
    E = logits.shape[1]
    if router == "switch":
        p = torch.softmax(logits, dim=-1)
        val, idx = torch.max(logits, dim=-1, keepdim=True)  # top-1 by logit
        gate = torch.gather(p, 1, idx)                     # (T,1) full-softmax p
    else:
        val, idx = torch.topk(logits, k, dim=-1)           # (T,K) descending
        gate = torch.softmax(val, dim=-1)                  # softmax over the k kept logits
    expert = idx.t()                                       # (K,T)
    gate = gate.t()
    onehot = tF.one_hot(expert.reshape(-1), E)             # (K*T,E) choice-major claims
    slot = (torch.cumsum(onehot, dim=0) - 1).gather(1, expert.reshape(-1, 1)).view_as(expert)
    keep = slot < C
    return expert, gate, slot, keep


def layer_loop(x, wg, w1, b1, w2, b2, k, C, router):
    expert, gate, slot, keep = route(x, wg, k, C, router)
    T = x.shape[0]
    tok = torch.arange(T).repeat(expert.shape[0])          # (K*T) token of each claim
    e_all, g_all, keep_all = expert.reshape(-1), gate.reshape(-1), keep.reshape(-1)
    y = torch.zeros_like(x)
    for e in range(w1.shape[0]):
        sel = torch.nonzero((e_all == e) & keep_all).squeeze(1)
        if sel.numel() == 0:
            continue
        t = tok.index_select(0, sel)
        h = x.index_select(0, t)
        a = tF.gelu(torch.addmm(b1[e], h, w1[e]), approximate="tanh")
        o = torch.addmm(b2[e], a, w2[e])
        y.index_add_(0, t, o * g_all.index_select(0, sel).unsqueeze(1))
    return y


def layer_einsum(x, wg, w1, b1, w2, b2, k, C, router):
    expert, gate, slot, keep = route(x, wg, k, C, router)
    T, E = x.shape[0], w1.shape[0]
    combine = x.new_zeros((T, E, C))                       # (T,E,C): GShard's combine_weights
    for j in range(expert.shape[0]):
        g = gate[j] * keep[j]
        se = tF.one_hot(expert[j], E).to(x.dtype) * g.unsqueeze(1)           # (T,E)
        sc = tF.one_hot(torch.where(keep[j], slot[j], 0), C).to(x.dtype)     # (T,C)
        combine += torch.einsum("se,sc->sec", se, sc)
    dispatch = (combine > 0).to(x.dtype)
    h = torch.einsum("sec,sm->ecm", dispatch, x)           # (E,C,D)
    a = tF.gelu(torch.baddbmm(b1.unsqueeze(1), h, w1), approximate="tanh")   # (E,C,F)
    o = torch.baddbmm(b2.unsqueeze(1), a, w2)             # (E,C,D)
    return torch.einsum("sec,ecm->sm", combine, o)


def kept_pairs(x, wg, k, C, router):
    expert, _, _, keep = route(x, wg, k, C, router)
    T = x.shape[0]
    tok = torch.arange(T).repeat(expert.shape[0])
    m = keep.reshape(-1)
    return (tok[m] * wg.shape[1] + expert.reshape(-1)[m]).numpy()


def stats(v):
    v = np.sort(np.asarray(v))
    return {"median": float(np.median(v)), "q1": float(np.quantile(v, 0.25)),
            "q3": float(np.quantile(v, 0.75)), "min": float(v[0]), "max": float(v[-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--router", choices=("topk", "switch"), required=True)
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--capacity", type=int, required=True)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--einsum-repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--serve", action="store_true",
                    help="then time forwards on request (lines on stdin) until its end")
    a = ap.parse_args()

    def load(name):
        return torch.from_numpy(np.load(os.path.join(a.dir, name + ".npy")))
    x, wg, w1, b1, w2, b2 = (load(n) for n in ("x", "wg", "w1", "b1", "w2", "b2"))
    kept = np.load(os.path.join(a.dir, "kept.npy"))
    args = (x, wg, w1, b1, w2, b2, a.k, a.capacity, a.router)
    set_blas = openblas_setter()
    threads = [int(t) for t in a.threads.split(",") if t]

    out = {"torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "blas_threads_set": set_blas is not None, "results": []}
    with torch.inference_mode():
        mine = kept_pairs(x, wg, a.k, a.capacity, a.router)
        theirs = kept[:, 0] * wg.shape[1] + kept[:, 1]
        out["routing_mismatch"] = int(np.setxor1d(mine, theirs).size)
        for style, fn, reps in (("loop", layer_loop, a.repeats),
                                ("einsum", layer_einsum, a.einsum_repeats)):
            for th in threads:
                torch.set_num_threads(th)
                if set_blas is not None:
                    set_blas(th)
                y = fn(*args)  # warm-up
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    y = fn(*args)
                    times.append(time.perf_counter() - t0)
                r = {"style": style, "threads": th, "repeats": reps}
                r.update(stats(times))
                out["results"].append(r)
            np.save(os.path.join(a.dir, "y_%s.npy" % style), y.numpy().astype(np.float32))
            del y
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if a.serve:
        serve(args, set_blas)


def serve(args, set_blas):
    """The requests of the bench's rounds (see the module's text), until the end of stdin."""
    styles = {"loop": layer_loop, "einsum": layer_einsum}
    now = None  # the thread count set last (setting it again would rebuild the thread pools)
    with torch.inference_mode():
        for line in sys.stdin:
            f = line.split()
            if (len(f) != 4 or f[0] != "time" or f[1] not in styles or not f[2].isdigit() or
                    not f[3].isdigit() or int(f[2]) < 1 or int(f[3]) < 1):
                sys.stderr.write("bench_torch_moe.py: bad request '%s'\n" % line.strip())
                sys.exit(2)
            th = int(f[2])
            if th != now:
                torch.set_num_threads(th)
                if set_blas is not None:
                    set_blas(th)
                now = th
            times = []
            for _ in range(int(f[3])):
                t0 = time.perf_counter()
                styles[f[1]](*args)
                times.append(time.perf_counter() - t0)
            sys.stdout.write("time %s %d %s\n" % (f[1], th, " ".join("%.9g" % t for t in times)))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
