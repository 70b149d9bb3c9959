"""bench_route.py: what moesim.route costs over the C routing it wraps, on T x M logits.

For each router, REPS rounds that run the four calls below in turn (so that load from other
processes falls on all alike), reporting the fastest run of each (the least disturbed) and the
median, in CPU seconds of this process (every thread: the routers run on moe_par threads; CPU
time is what other processes on a shared machine disturb least):
  C      the C call alone: moesim_route (options, router, route, metrics) + moesim_result_free,
         on prepared float64 arguments (one ctypes call; no Python per token);
  C32    the same C call on float32 logits (widened to float64 inside the library);
  py64   moesim.route(logits float64 C-order): zero-copy input, entries copied out, metrics read;
  py32   moesim.route(logits float32): passed without a copy, widened inside the library;
and the ratios py64/C, py32/C32 (what the binding adds) and py32/C (that plus the widening). With
$ROUTE_TIME (tests/bench/route_time.c, built by make bench-python) also
  static the same moesim_route call from a C program (the static build, no -fPIC), on the same
         logits and options, REPS runs after one untimed run,
and py64/static; then the median page faults per call of C, C32, py64 and py32. Every column
routes with the same options, computes the same metrics, on the same threads, into buffers
allocated per call in the same way (the C API's); the Python columns add only the argument
conversion, the entries copied out and the metrics read. On a loaded machine
these totals vary by more than the overhead itself, so the parts moesim.route adds around the C
call are also timed alone, as fractions of the C time:
  copy out  the entries copied into five NumPy arrays and the metrics read (topk's result);
  widen     the C call on float32 logits minus the same call on float64 logits, and NumPy's
            astype(float64) (for comparison).
The load average (1 minute) is printed at the start and the end.
Run: make bench-python (or PYTHONPATH=python python3 this T M REPS).
Timings only: no assertion (the test suite checks results, not speed).
"""
import ctypes
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import moesim
from moesim import _lib

T = int(sys.argv[1]) if len(sys.argv) > 1 else 65536
M = int(sys.argv[2]) if len(sys.argv) > 2 else 64
REPS = int(sys.argv[3]) if len(sys.argv) > 3 else 15
CASES = [("topk", {"k": 2, "capacity_factor": 1.25}),
         ("switch", {"capacity_factor": 1.25}),
         ("expert_choice", {"capacity_factor": 2}),
         ("gshard", {"capacity_factor": 1.25})]


def c_args(L, router, opts):
    """moesim_route's arguments for L (float64 or float32) and opts, and the objects they point
    into."""
    keys = [k.encode() for k in opts]
    vals = [moesim._option_text(k, v).encode() for k, v in opts.items()]
    a = _lib.RouteArgs()
    a.router, a.logits, a.n, a.m = router.encode(), L.ctypes.data, L.shape[0], L.shape[1]
    a.logits_dtype = _lib.F32 if L.dtype == np.float32 else _lib.F64
    a.n_opts = len(keys)
    a.keys = (ctypes.c_char_p * len(keys))(*keys)
    a.values = (ctypes.c_char_p * len(vals))(*vals)
    return a, (keys, vals)


def c_only(L, router, opts):
    a, keep = c_args(L, router, opts)
    res = ctypes.c_void_p()

    def run(keep=keep):  # keep: the option strings a points into stay alive with run
        if moesim._C.moesim_route(ctypes.byref(a), ctypes.byref(res)):
            raise moesim.Error(moesim._C.moesim_errmsg().decode())
        moesim._C.moesim_result_free(res)
    return run


def copy_out(L, router, opts):
    """A function doing what route() does after the C call (entries into five arrays, metrics
    read), on one result of router, and the call that frees that result."""
    a, _ = c_args(L, router, opts)
    res = ctypes.c_void_p()
    if moesim._C.moesim_route(ctypes.byref(a), ctypes.byref(res)):
        raise moesim.Error(moesim._C.moesim_errmsg().decode())
    info = _lib.PlanInfo()
    moesim._C.moesim_result_info(res, ctypes.byref(info))
    N = info.n_entries

    def run():
        out = [np.empty(N, np.int32) for _ in range(3)] + [np.empty(N) for _ in range(2)]
        moesim._C.moesim_result_entries(res, *(x.ctypes.data for x in out))
        moesim._metrics(res, router, info.num_experts)
    return run, lambda: moesim._C.moesim_result_free(res), N


def interleaved(fns):
    """[(min, median)] seconds of each fn over REPS rounds that run every fn once, and the median
    page faults (minor) of each: a fresh buffer faults once per 4 KiB page on first write, at a
    cost that on a virtual machine is a large part of a routing call."""
    for fn in fns:
        fn()  # warm-up: page faults of the first allocations
    ts = [[] for _ in fns]
    fs = [[] for _ in fns]
    for _ in range(REPS):
        for fn, t, f in zip(fns, ts, fs):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.process_time()
            fn()
            t.append(time.process_time() - t0)
            f.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return [(min(t), statistics.median(t)) for t in ts], [statistics.median(f) for f in fs]


def static_time(L, router, opts):
    """(fastest, median) CPU seconds of the static build's routing, or None without ROUTE_TIME."""
    exe = os.environ.get("ROUTE_TIME")
    if not exe:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "logits.npy")
        np.save(path, L)
        kv = ["%s=%s" % (k, moesim._option_text(k, v)) for k, v in opts.items()]
        out = subprocess.run([exe, path, str(REPS), router] + kv, capture_output=True,
                             text=True, check=True).stdout.split()
    return float(out[1]), float(out[2])


def main():
    rng = np.random.default_rng(0)
    L32 = (rng.standard_normal((T, M)) * 2).astype(np.float32)
    L64 = L32.astype(np.float64)
    print("moesim.route on %d x %d logits, %d interleaved rounds: fastest (median) CPU ms; "
          "load average %.2f" % (T, M, REPS, os.getloadavg()[0]))
    print("%-14s %15s %15s %15s %15s %15s %13s %13s %13s %13s" % (
        "router", "static", "C", "C32", "py64", "py32", "py64/static", "py64/C", "py32/C32",
        "py32/C"), "faults C/C32/py64/py32")
    for router, opts in CASES:
        ((c, cm), (c32, c32m), (p64, p64m), (p32, p32m)), faults = interleaved([
            c_only(L64, router, opts), c_only(L32, router, opts),
            lambda: moesim.route(L64, router, **opts),
            lambda: moesim.route(L32, router, **opts)])
        st = static_time(L64, router, opts) or (float("nan"), float("nan"))
        ms = ["%6.1f (%6.1f)" % (a * 1e3, b * 1e3)
              for a, b in (st, (c, cm), (c32, c32m), (p64, p64m), (p32, p32m))]
        ratios = ["%5.3f (%5.3f)" % (a / b, am / bm) for a, am, b, bm in (
            (p64, p64m, st[0], st[1]), (p64, p64m, c, cm), (p32, p32m, c32, c32m),
            (p32, p32m, c, cm))]
        print("%-14s %s %s %s" % (router, " ".join(ms), " ".join(ratios),
                                  "/".join("%d" % f for f in faults)))
    run, free, N = copy_out(L64, "topk", CASES[0][1])
    ((copy, _), (np_widen, _), (c64, _), (c32, _)), _ = interleaved([
        run, lambda: L32.astype(np.float64), c_only(L64, "topk", CASES[0][1]),
        c_only(L32, "topk", CASES[0][1])])
    free()
    print("copy out (%d entries) %.2f ms = %.4f of topk's C time" % (N, copy * 1e3, copy / c64))
    print("widen float32 in the library (C call on float32 - on float64, topk) %.2f ms = %.4f; "
          "NumPy astype(float64) %.2f ms = %.4f" % ((c32 - c64) * 1e3, (c32 - c64) / c64,
                                                    np_widen * 1e3, np_widen / c64))
    print("load average at the end %.2f" % os.getloadavg()[0])


if __name__ == "__main__":
    main()
