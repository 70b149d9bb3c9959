"""test_moesim.py: the Python package against the moesim CLI and the committed route fixtures.

Usage (from the repository root): python3 python/tests/test_moesim.py MOESIM_BINARY
with PYTHONPATH=python and MOESIM_LIB=build/libmoesim.so (tests/t_python.sh sets both).

For every case folder of tests/fixtures/route and tests/fixtures/presets (as
tests/test_fixtures.c reads them: `cmd` holds the route flags, file names relative to the
folder, --preset NAME, Gumbel and rts draw files; expected_y.npy marks a layer case):
  - moesim.route on the same arrays and options, and `moesim route` run on the same files:
    the plan CSV text equal byte for byte (Plan.csv() prints %.9g as moesim does), the CLI's
    CSV parsed back equal to the in-memory entries, the metrics dict equal to the CLI's JSON
    (printed with 17 digits, so equal doubles read back equal) key by key, exactly;
  - the in-memory doubles against the fixture's expectations from the NumPy reference
    (tests/ref/moe_ref.py) with test_fixtures.c's tolerances: plan weights 1e-6 + 1e-5 rel,
    metrics 1e-6 + 1e-5 rel (integer-valued keys exactly), layer output 1e-4 + 1e-3 rel;
  - layer cases: moesim.layer on the same weights equal to the CLI's y.npy bit for bit.
Then input conversions (dtypes, order, torch tensors, __array__; float32 logits passed without a
copy and routed bit for bit as their float64 values), the seeded draws against
`moesim route --seed`, the layer's option pad_to_capacity (from the plan or given to layer():
y bit for bit unpadded and the CLI's, rows run E x C), presets (explicit options override;
errors), errors, the registry
listings against `moesim list` (presets too), the example python/examples/compare_presets.py,
and an offline `pip install --target` imported from another folder. Prints
"test_python: N passed, N failed".
"""
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

import numpy as np

import moesim

MOESIM = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/moesim")
FIXTURES = "tests/fixtures/route"
PRESET_FIXTURES = "tests/fixtures/presets"
LAYER_FLAGS = ("x", "w1", "b1", "w2", "b2")
PLAN_ABS, PLAN_REL, MET_ABS, MET_REL, OUT_ABS, OUT_REL = 1e-6, 1e-5, 1e-6, 1e-5, 1e-4, 1e-3
EXACT_KEYS = {"n_tokens", "num_experts", "capacity", "num_entries", "assigned_load",
              "kept_load", "experts_per_token", "groups_touched"}

passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL: " + what)


def parse_cmd(text):
    """cmd words -> (router, files {flag: name}, options {key: text}, activation); a preset is
    options["preset"]."""
    words = shlex.split(text)
    router, files, opts, act = None, {}, {}, "gelu_tanh"
    for flag, val in zip(words[::2], words[1::2]):
        key = flag[2:].replace("-", "_")
        if key == "router":
            router = val
        elif key == "activation":
            act = val
        elif key in ("logits", "tokens", "uniforms", "hash_table", "gumbel_uniforms",
                     "rts_uniforms") + LAYER_FLAGS:
            files[key] = val
        else:
            opts[key] = val
    return router, files, opts, act


def run_cli(args, cwd, out):
    """moesim route ARGS --plan/--metrics in out; returns (csv text, metrics dict)."""
    cmd = [MOESIM, "route"] + args + ["--plan", os.path.join(out, "plan.csv"),
                                      "--metrics", os.path.join(out, "metrics.json")]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), p.stderr.strip()))
    with open(os.path.join(out, "plan.csv")) as f:
        csv = f.read()
    with open(os.path.join(out, "metrics.json")) as f:
        met = json.load(f)
    return csv, met


def parse_csv(text):
    rows = [line.split(",") for line in text.splitlines()[1:] if line]
    cols = list(zip(*rows)) if rows else [(), (), (), (), ()]
    return ([np.array(c, dtype=np.int64) for c in cols[:3]] +
            [np.array(c, dtype=np.float64) for c in cols[3:]])


def close(got, want, abs_tol, rel_tol):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return got.shape == want.shape and bool(np.all(np.abs(got - want) <= abs_tol + np.abs(want) * rel_tol))


def metrics_equal(name, got, want, skip=()):
    """Every key of want equal in got (exact: both are the same doubles); one check per case."""
    bad = ["%s = %r, CLI %r" % (k, got.get(k, "missing"), w) for k, w in want.items()
           if k not in skip and got.get(k, "missing") != w]
    check(not bad, "%s: metrics differ from moesim route's: %s" % (name, "; ".join(bad)))


def metrics_close(name, got, want, skip=()):
    """Against the NumPy reference's expected_metrics.json, with test_fixtures.c's tolerances
    (integer-valued keys, strings and nulls exactly); one check per case."""
    bad = []
    for key, w in want.items():
        if key in skip:
            continue
        g = got.get(key, "missing")
        if w is None or isinstance(w, str) or key in EXACT_KEYS:
            ok = g == w
        else:
            ok = g is not None and g != "missing" and close(g, w, MET_ABS, MET_REL)
        if not ok:
            bad.append("%s = %r, expected %r" % (key, g, w))
    check(not bad, "%s: metrics vs expected_metrics.json (1e-6 + 1e-5 rel): %s"
          % (name, "; ".join(bad)))


def fixture_case(name, tmp, root=FIXTURES):
    d = os.path.join(root, name)
    with open(os.path.join(d, "cmd")) as f:
        cmd_text = f.read()
    router, files, opts, act = parse_cmd(cmd_text)
    arr = {k: np.load(os.path.join(d, v)) for k, v in files.items()}
    layer_case = "x" in files
    plan = moesim.route(arr["logits"], router, uniforms=arr.get("uniforms"),
                        gumbel_uniforms=arr.get("gumbel_uniforms"),
                        rts_uniforms=arr.get("rts_uniforms"), tokens=arr.get("tokens"),
                        hash_table=arr.get("hash_table"), **opts)
    args = shlex.split(cmd_text)
    if layer_case:
        args += ["--output", os.path.join(tmp, "y.npy")]
    csv, met = run_cli(args, d, tmp)

    # bit for bit against the CLI
    check(plan.csv() == csv, "%s: plan CSV differs from moesim route's" % name)
    tok, exp, slot, dw, cw = parse_csv(csv)
    check(np.array_equal(plan.token, tok) and np.array_equal(plan.expert, exp) and
          np.array_equal(plan.slot, slot), "%s: entries (token, expert, slot) differ" % name)
    check(np.array_equal(np.array(["%.9g" % v for v in plan.dispatch_weight], dtype=np.float64), dw)
          and np.array_equal(np.array(["%.9g" % v for v in plan.combine_weight], dtype=np.float64), cw),
          "%s: weights differ from the CLI's at %%.9g" % name)
    layer_keys = {k for k in met if k.startswith(("flops_", "output_error"))}
    metrics_equal(name, plan.metrics, met, skip=layer_keys if layer_case else ())

    # the same call again, after a call on other values of the same shape: both reuse the
    # router and buffers the library kept from the call before (moesim_result_free)
    rev = {k: (v[::-1].copy() if k != "hash_table" else v) for k, v in arr.items()}
    for a in (rev, arr):
        again = moesim.route(a["logits"], router, uniforms=a.get("uniforms"),
                             gumbel_uniforms=a.get("gumbel_uniforms"),
                             rts_uniforms=a.get("rts_uniforms"), tokens=a.get("tokens"),
                             hash_table=a.get("hash_table"), **opts)
    check(again.csv() == csv, "%s: plan CSV of a repeated call differs from moesim route's" % name)
    metrics_equal(name + " (repeated call)", again.metrics, met,
                  skip=layer_keys if layer_case else ())

    # the in-memory doubles against the NumPy reference's expectations
    with open(os.path.join(d, "expected_plan.csv")) as f:
        etok, eexp, eslot, edw, ecw = parse_csv(f.read())
    order = np.lexsort((plan.slot, plan.expert, plan.token))
    eorder = np.lexsort((eslot, eexp, etok))
    same = (len(order) == len(eorder) and np.array_equal(plan.token[order], etok[eorder]) and
            np.array_equal(plan.expert[order], eexp[eorder]) and
            np.array_equal(plan.slot[order], eslot[eorder]))
    check(same, "%s: plan rows differ from expected_plan.csv" % name)
    if same:
        check(close(plan.dispatch_weight[order], edw[eorder], PLAN_ABS, PLAN_REL) and
              close(plan.combine_weight[order], ecw[eorder], PLAN_ABS, PLAN_REL),
              "%s: plan weights differ from expected_plan.csv beyond 1e-6 + 1e-5 rel" % name)
    with open(os.path.join(d, "expected_metrics.json")) as f:
        emet = json.load(f)
    metrics_close(name, plan.metrics, emet,
                  skip={k for k in emet if k.startswith(("flops_", "output_error"))})

    if layer_case:
        y = moesim.layer(arr["x"], arr["w1"], arr["b1"], arr["w2"], arr["b2"], plan,
                         activation=act)
        ycli = np.load(os.path.join(tmp, "y.npy"))
        check(y.dtype == ycli.dtype and np.array_equal(y, ycli),
              "%s: layer output differs from moesim route's (max |diff| %g)"
              % (name, float(np.max(np.abs(y.astype(np.float64) - ycli))) if y.shape == ycli.shape else -1))
        ey = np.load(os.path.join(d, "expected_y.npy"))
        check(close(y, ey, OUT_ABS, OUT_REL), "%s: layer output vs expected_y.npy" % name)


def test_fixtures(tmp):
    names = sorted(n for n in os.listdir(FIXTURES) if os.path.exists(os.path.join(FIXTURES, n, "cmd")))
    check(len(names) >= 30, "%d fixture cases in %s, expected at least 30" % (len(names), FIXTURES))
    presets = sorted(n for n in os.listdir(PRESET_FIXTURES)
                     if os.path.exists(os.path.join(PRESET_FIXTURES, n, "cmd")))
    check(len(presets) >= 16, "%d preset fixture cases, expected at least 16" % len(presets))
    for root, group in ((FIXTURES, names), (PRESET_FIXTURES, presets)):
        for name in group:
            try:
                fixture_case(name, tmp, root)
            except Exception as e:  # a case that raises fails alone
                check(False, "%s: %s: %s" % (name, type(e).__name__, e))


# ---- conversions ------------------------------------------------------------------------------

def same_plan(a, b):
    return (np.array_equal(a.token, b.token) and np.array_equal(a.expert, b.expert) and
            np.array_equal(a.slot, b.slot) and np.array_equal(a.dispatch_weight, b.dispatch_weight)
            and np.array_equal(a.combine_weight, b.combine_weight) and a.metrics == b.metrics)


class ArrayLike:
    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None):
        return self.a if dtype is None else self.a.astype(dtype)


def test_conversions():
    rng = np.random.default_rng(5)
    L32 = rng.standard_normal((40, 8)).astype(np.float32)
    ref = moesim.route(L32.astype(np.float64), "topk", k=2, capacity_factor=0.75)
    check(same_plan(moesim.route(L32, "topk", k=2, capacity_factor=0.75), ref),
          "float32 logits route as their float64 values")
    check(same_plan(moesim.route(np.asfortranarray(L32), "topk", k=2, capacity_factor=0.75), ref),
          "Fortran-order logits")
    check(same_plan(moesim.route(L32.astype(np.float64)[:, ::1][::-1][::-1], "topk", k=2,
                                 capacity_factor=0.75), ref), "strided view logits")
    check(same_plan(moesim.route(ArrayLike(L32), "topk", k=2, capacity_factor="0.75"), ref),
          "an object with __array__; capacity_factor as text")
    check(same_plan(moesim.route(L32.astype(np.float64).tolist(), "topk", k=np.int64(2),
                                 capacity_factor=0.75), ref), "nested lists; k as a NumPy int")
    L16 = L32.astype(np.float16)
    check(same_plan(moesim.route(L16, "switch"), moesim.route(L16.astype(np.float64), "switch")),
          "float16 logits route as their float64 values")
    Li = rng.integers(-5, 5, size=(30, 4)).astype(np.int32)
    check(same_plan(moesim.route(Li, "switch"), moesim.route(Li.astype(np.float64), "switch")),
          "int32 logits convert exactly")
    L64 = np.ascontiguousarray(L32, dtype=np.float64)
    check(moesim._array(L64, "logits", np.float64, 2) is L64,
          "float64 C-contiguous logits are passed without a copy")
    got, dt = moesim._logits(L32)
    check(got is L32 and dt == 1, "float32 C-contiguous logits are passed without a copy")
    big = rng.standard_normal((3000, 16)).astype(np.float32)  # several parts on the threads
    for r, o in (("topk", {"k": 2}), ("expert_choice", {}), ("gshard", {"seed": 4})):
        check(same_plan(moesim.route(big, r, **o), moesim.route(big.astype(np.float64), r, **o)),
              "%s: float32 logits widened in the library equal their float64 values" % r)
    for bad, what in ((L32.astype(np.complex128), "complex"),
                      (np.array([[2 ** 60 + 1, 1]], dtype=np.int64), "int64 beyond 2^53"),
                      (np.array([["a", "b"]]), "strings")):
        try:
            moesim.route(bad, "switch")
            check(False, "%s logits must be refused" % what)
        except moesim.Error as e:
            check("(logits)" in str(e), "%s logits: message names logits: %s" % (what, e))
    try:
        import torch
    except ImportError:
        print("test_python: torch absent, torch checks skipped")
        return
    T32 = torch.from_numpy(L32.copy()).requires_grad_(True)
    check(same_plan(moesim.route(T32, "topk", k=2, capacity_factor=0.75), ref),
          "a torch float32 tensor that requires grad")
    Tb = torch.from_numpy(L32.copy()).to(torch.bfloat16)
    want = moesim.route(Tb.float().numpy().astype(np.float64), "gshard", seed=3)
    check(same_plan(moesim.route(Tb, "gshard", seed=3), want), "a torch bfloat16 tensor")
    Th = torch.from_numpy(L32.copy()).half()
    check(same_plan(moesim.route(Th, "switch"), moesim.route(Th.numpy().astype(np.float64), "switch")),
          "a torch float16 tensor")
    ids = torch.arange(40)
    check(same_plan(moesim.route(T32, "hash", tokens=ids), moesim.route(L32, "hash", tokens=np.arange(40))),
          "torch int64 token ids")


# ---- draws, options, errors, listings --------------------------------------------------------

def test_entry_memory():
    """The entry arrays of a plan share one block of memory that route() reuses for a later plan
    only once no array of the earlier plan is alive: a live plan, or one array kept from it,
    never changes. Expected values: the same plan's arrays copied before the later calls."""
    rng = np.random.default_rng(9)
    for T in (50, 40000):  # 60000 entries kept: a block of over 1 MiB, on a 2 MiB boundary
        La, Lb = rng.standard_normal((T, 8)), rng.standard_normal((T, 8))
        p = moesim.route(La, "topk", k=2, capacity_factor=0.75)
        want = [x.copy() for x in (p.token, p.expert, p.slot, p.dispatch_weight,
                                   p.combine_weight)]
        q = moesim.route(Lb, "topk", k=2, capacity_factor=0.75)
        got = [p.token, p.expert, p.slot, p.dispatch_weight, p.combine_weight]
        check(all(np.array_equal(g, w) for g, w in zip(got, want)),
              "T=%d: a live plan's entries are unchanged by a later route()" % T)
        kept = p.dispatch_weight
        del p, got
        moesim.route(Lb, "topk", k=2, capacity_factor=0.75)
        check(np.array_equal(kept, want[3]), "T=%d: an array kept from a dead plan is unchanged"
              % T)
        del q
        addr = moesim.route(La, "topk", k=2, capacity_factor=0.75).token.ctypes.data
        r = moesim.route(La, "topk", k=2, capacity_factor=0.75)
        check(r.token.ctypes.data == addr, "T=%d: a dead plan's memory is reused" % T)
        check(all(np.array_equal(g, w) for g, w in zip(
            (r.token, r.expert, r.slot, r.dispatch_weight, r.combine_weight), want)),
            "T=%d: the plan in reused memory equals the first" % T)
        if T == 40000:
            check(addr % (2 << 20) == 0, "a block of over 1 MiB starts on a 2 MiB boundary")
        del r, kept


def test_float32_buffer():
    """float32 logits are widened into a buffer the library keeps for the next call: plans of
    larger, smaller and equal batches through it, and after moesim.release(), equal the plans of
    the same values given as float64 (the widening is exact)."""
    rng = np.random.default_rng(11)
    big = rng.standard_normal((3000, 16)).astype(np.float32)  # 384 KiB as float64
    small = rng.standard_normal((40, 16)).astype(np.float32)
    for i, L in enumerate((big, small, big[::-1].copy())):
        check(same_plan(moesim.route(L, "topk", k=2, capacity_factor=1.25),
                        moesim.route(L.astype(np.float64), "topk", k=2, capacity_factor=1.25)),
              "float32 batch %d through the kept buffer equals float64" % i)
    moesim.release()
    check(same_plan(moesim.route(small, "switch"),
                    moesim.route(small.astype(np.float64), "switch")),
          "float32 after moesim.release() equals float64")


def test_kept_pipeline():
    """A call with the router, options and shape of the call before reuses its pipeline with the
    draws seeded again: the same seed draws the same plan as a fresh pipeline (after
    moesim.release()), another seed differs. Expected values: the first call's plan."""
    L = np.random.default_rng(12).standard_normal((500, 8))
    for router, opts in (("gshard", {}), ("topk", {"noise_std": 0.5}),
                         ("switch", {"order": "rts"})):
        moesim.release()
        first = moesim.route(L, router, seed=3, **opts)
        other = moesim.route(L, router, seed=4, **opts)
        again = moesim.route(L, router, seed=3, **opts)
        moesim.release()
        fresh = moesim.route(L, router, seed=3, **opts)
        check(same_plan(first, again) and same_plan(first, fresh),
              "%s: seed 3 after seed 4 on the kept pipeline draws as a fresh one" % router)
        check(not same_plan(first, other), "%s: seeds 3 and 4 draw differently" % router)


def test_seeded_draws(tmp):
    """gshard without uniforms and topk with noise draw from PCG streams of the seed: equal to
    `moesim route --seed` on the same logits."""
    d = os.path.join(FIXTURES, "gshard_default")
    L = np.load(os.path.join(d, "logits.npy"))
    for router, opts, extra in (("gshard", {"capacity_factor": 0.75}, ["--capacity-factor", "0.75"]),
                                ("topk", {"noise_std": 0.5}, ["--noise-std", "0.5"])):
        for seed in (0, 12345):
            csv, met = run_cli(["--router", router, "--logits", "logits.npy", "--seed", str(seed)]
                               + extra, d, tmp)
            p = moesim.route(L, router, seed=seed, **opts)
            check(p.csv() == csv and p.metrics == met,
                  "%s seed %d: plan and metrics equal moesim route --seed" % (router, seed))
    p0, p1 = moesim.route(L, "gshard", seed=0), moesim.route(L, "gshard", seed=1)
    check(not same_plan(p0, p1), "gshard: different seeds draw differently")


def test_hash_table_path():
    d = os.path.join(FIXTURES, "hash_table")
    L, ids = np.load(os.path.join(d, "logits.npy")), np.load(os.path.join(d, "ids.npy"))
    table = os.path.join(d, "table.npy")
    a = moesim.route(L, "hash", tokens=ids, hash="table", hash_table=table)
    b = moesim.route(L, "hash", tokens=ids, hash="table", hash_table=np.load(table))
    check(same_plan(a, b), "hash_table as a .npy path and as an array give the same plan")


def expect_error(want, fn, *args, **kw):
    try:
        fn(*args, **kw)
        check(False, "no error, expected: %s" % want)
    except moesim.Error as e:
        check(str(e) == want, "error message %r, expected %r" % (str(e), want))


def test_errors():
    L = np.zeros((4, 3))
    # messages from options.c, router.c and layer.c, with the where that api.c appends
    expect_error("bad value 'x' for option k: want an integer >= 1 (option k)",
                 moesim.route, L, "topk", k="x")
    expect_error("unknown routing option 'capacity_fctor' (option capacity_fctor)",
                 moesim.route, L, "topk", capacity_fctor=1)
    expect_error("bad value 'sideways' for option order: want one of "
                 "choice_major|token_major|bpr|probs|rts|gate (option order)",
                 moesim.route, L, "topk", order="sideways")
    # the routers column of sim/options.c: threshold_on is gshard's alone
    expect_error("option threshold_on does not apply to router topk (option threshold_on)",
                 moesim.route, L, "topk", threshold_on="raw")
    expect_error("unknown router 'top_k' (router)", moesim.route, L, "top_k")
    expect_error("k = 4 is outside 1..E = 1..3 (router topk)", moesim.route, L, "topk", k=4)
    Ln = L.copy()
    Ln[2, 1] = np.nan
    expect_error("non-finite logit nan at token 2, column 1", moesim.route, Ln, "switch")
    expect_error("router hash needs token ids", moesim.route, L, "hash")
    expect_error("uniform draw 1.5 at token 0 is outside [0, 1)", moesim.route, L, "gshard",
                 uniforms=[1.5, 0, 0, 0])
    expect_error("uniforms have length 3, logits have 4 rows (uniforms)", moesim.route, L,
                 "gshard", uniforms=[0.5, 0, 0])
    expect_error("logits must have 2 dimensions, has 1 (logits)", moesim.route, [1.0, 2.0])
    p = moesim.route(np.eye(3), "switch")
    x = np.ones((3, 2), np.float32)
    w1, b1 = np.ones((3, 2, 4), np.float32), np.ones((3, 4), np.float32)
    w2, b2 = np.ones((3, 4, 2), np.float32), np.ones((3, 2), np.float32)
    expect_error("unknown activation 'gelu' (act)", moesim.layer, x, w1, b1, w2, b2, p,
                 activation="gelu")
    expect_error("w2 has shape (3, 4, 3), expected (3, 4, 2): x (T,D) w1 (E,D,F) b1 (E,F) "
                 "w2 (E,F,D) b2 (E,D) (w2)", moesim.layer, x, w1, b1, np.ones((3, 4, 3)), b2, p)
    expect_error("value 1e+300 at index 0 is outside the float32 range (x)", moesim.layer,
                 np.full((3, 2), 1e300), w1, b1, w2, b2, p)
    # a plan whose slot exceeds the capacity is refused by the layer's own check
    class Bad:
        token, expert, slot = [0], [0], [5]
        dispatch_weight = combine_weight = [1.0]
        n_tokens, num_experts, capacity, dense = 3, 3, 1, False
    try:
        moesim.layer(x, w1, b1, w2, b2, Bad())
        check(False, "a slot beyond the capacity must be refused")
    except moesim.Error as e:
        check("moe_layer_forward" in str(e), "bad plan: message from the layer: %s" % e)
    # a relu layer on a hand-worked plan: token 0 to expert 1 with weights 1:
    # h = x W1 + b1 = [1,1]·ones(2,4) + 1 = 3 per unit; relu 3; y = 3*4*1 + 1 = 13 per output
    class One:
        token, expert, slot = [0], [1], [0]
        dispatch_weight = combine_weight = [1.0]
        n_tokens, num_experts, capacity, dense = 3, 3, 1, False
    y = moesim.layer(x, w1, b1, w2, b2, One(), activation="relu")
    check(np.array_equal(y, np.array([[13, 13], [0, 0], [0, 0]], np.float32)),
          "hand-worked relu layer: %s" % y.tolist())


def test_pad_to_capacity(tmp):
    """The layer's option pad_to_capacity on the fixture layer_topk_drops (topk, cf 0.5: E = 4,
    C = 3, drops): taken from the plan's route() keywords or given to layer(); y bit for bit the
    unpadded y and `moesim route --pad-to-capacity true`'s; the rows run E x C = 12 padded, and
    unpadded each expert's slots up to its last filled one, recounted here from the plan (fewer
    than 12 here, so the padding is seen); an option that is not the layer's is refused."""
    d = os.path.join(FIXTURES, "layer_topk_drops")
    a = {k: np.load(os.path.join(d, k + ".npy")) for k in ("logits",) + LAYER_FLAGS}
    w = [a[k] for k in LAYER_FLAGS]
    plan = moesim.route(a["logits"], "topk", capacity_factor=0.5, pad_to_capacity=True)
    check(plan.options == {"capacity_factor": "0.5", "pad_to_capacity": "true"} and
          plan.preset is None, "plan options: %s %s" % (plan.options, plan.preset))
    E, C = plan.num_experts, plan.capacity
    used = sum(int(plan.slot[plan.expert == e].max()) + 1 if (plan.expert == e).any() else 0
               for e in range(E))
    y_pad = moesim.layer(*w, plan)
    rows_pad = moesim.layer_rows_run()
    y_off = moesim.layer(*w, plan, pad_to_capacity=False)
    rows_off = moesim.layer_rows_run()
    y_plain = moesim.layer(*w, moesim.route(a["logits"], "topk", capacity_factor=0.5))
    rows_plain = moesim.layer_rows_run()
    check((E, C) == (4, 3) and used < E * C, "fixture shape E=%d C=%d used=%d" % (E, C, used))
    check(rows_pad == E * C and rows_off == used and rows_plain == used,
          "rows run padded %d (want %d), pad_to_capacity=False %d, unpadded plan %d (want %d)"
          % (rows_pad, E * C, rows_off, rows_plain, used))
    check(y_pad.tobytes() == y_off.tobytes() == y_plain.tobytes(),
          "padded layer output differs from unpadded")
    out = os.path.join(tmp, "ypad.npy")
    cmd = [MOESIM, "route", "--router", "topk", "--logits", "logits.npy", "--capacity-factor",
           "0.5", "--pad-to-capacity", "true", "--plan", os.path.join(tmp, "pad.csv"),
           "--output", out] + [x for k in LAYER_FLAGS for x in ("--" + k, k + ".npy")]
    p = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
    check(p.returncode == 0 and np.load(out).tobytes() == y_pad.tobytes(),
          "moesim route --pad-to-capacity true: exit %d, y equal %s" % (
              p.returncode, p.returncode == 0 and np.load(out).tobytes() == y_pad.tobytes()))

    class Plain:  # a plan without options: the keyword alone pads it
        token, expert, slot = plan.token, plan.expert, plan.slot
        dispatch_weight, combine_weight = plan.dispatch_weight, plan.combine_weight
        n_tokens, num_experts, capacity, dense = plan.n_tokens, E, C, False
    y = moesim.layer(*w, Plain(), pad_to_capacity=True)
    check(moesim.layer_rows_run() == E * C and y.tobytes() == y_pad.tobytes(),
          "a plain plan object with pad_to_capacity=True")
    expect_error("option capacity_factor is not an option of the layer, which takes "
                 "pad_to_capacity (moesim_layer)", moesim.layer, *w, plan, capacity_factor=1)
    expect_error("bad value 'maybe' for option pad_to_capacity (option pad_to_capacity)",
                 moesim.layer, *w, plan, pad_to_capacity="maybe")


def test_presets():
    L = np.load(os.path.join(PRESET_FIXTURES, "fairseq_top1", "logits.npy"))
    check(same_plan(moesim.route(L, preset="fairseq_top1", capacity_factor=2),
                    moesim.route(L, "switch", capacity_factor=2)),
          "an option given with a preset overrides the preset's")
    check(same_plan(moesim.route(L, preset="mixtral"),
                    moesim.route(L, "topk", k=2, dropless=True)), "mixtral = topk k 2 dropless")
    check(moesim.route(L, preset="mixtral").router == "topk", "a preset's plan names its router")
    expect_error("unknown preset 'bogus' (preset)", moesim.route, L, preset="bogus")
    expect_error("router switch conflicts with preset mixtral (router topk) (router)",
                 moesim.route, L, "switch", preset="mixtral")
    G = np.full(L.shape, 0.5)
    G[3, 2] = 1.0
    expect_error("gumbel_uniforms value 1 at token 3, column 2 is outside (0,1) "
                 "(gumbel_uniforms)", moesim.route, L, preset="fairseq_top2", gumbel_uniforms=G)
    expect_error("rts_uniforms have shape (32, 7), logits (32, 8) (rts_uniforms)", moesim.route,
                 L, preset="deepspeed_top1", rts_uniforms=np.full((32, 7), 0.5))


def test_listings():
    out = subprocess.run([MOESIM, "list", "presets"], capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines() if not line.startswith(" ")]
    check([(p["name"], p["router"]) for p in moesim.presets()] ==
          [(r[0], r[3].rstrip(",")) for r in rows], "moesim.presets() equal `moesim list presets`")
    check(moesim.presets()[1]["options"]["second_policy"] == "sampling",
          "deepspeed_top2's options as a dict")
    out = subprocess.run([MOESIM, "list", "routers"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    check([r["name"] for r in moesim.routers()] == names,
          "moesim.routers() names equal `moesim list routers`")
    out = subprocess.run([MOESIM, "list", "options"], capture_output=True, text=True).stdout
    keys = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    check([o["key"] for o in moesim.options("switch")] == keys,
          "moesim.options() keys equal `moesim list options`")
    check(moesim.options("switch")[0]["default"] == "1" and
          moesim.options("topk")[0]["default"] == "2", "k's default is the router's")
    expect_error("unknown router 'nope' (router)", moesim.options, "nope")


def test_install(tmp):
    """pip installs the package offline into a folder; imported from another folder it finds
    the libmoesim.so shipped inside it."""
    target = os.path.join(tmp, "site")
    env = dict(os.environ)
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        print("test_python: pip absent (apt-get install python3-pip): install check skipped")
        return
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation",
                        "--no-index", "--no-deps", "--target", target, "./python"],
                       capture_output=True, text=True, env=env)
    check(p.returncode == 0, "pip install --target: %s" % p.stderr.strip()[-500:])
    env.pop("MOESIM_LIB", None)
    env["PYTHONPATH"] = target
    code = ("import moesim, os; p = moesim.route([[0.0, 1.0], [2.0, 0.0]], 'switch'); "
            "print(os.path.dirname(moesim.__file__), list(p.expert))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd="/")
    check(p.returncode == 0 and p.stdout.split()[0] == os.path.join(target, "moesim") and
          p.stdout.strip().endswith("[1, 0]") and
          os.path.exists(os.path.join(target, "moesim", "libmoesim.so")),
          "installed package imports from / with its own library: %r %r"
          % (p.stdout.strip(), p.stderr.strip()[-300:]))


def test_example():
    """python/examples/compare_presets.py runs and prints each preset's token drop rate, equal
    to moesim.route's on the same recorded logits with the draws it documents (uniforms of
    numpy.random.default_rng(0), clipped into (0,1))."""
    ex = os.path.join("python", "examples", "compare_presets.py")
    p = subprocess.run([sys.executable, ex], capture_output=True, text=True)
    check(p.returncode == 0, "compare_presets.py exit %d: %s" % (p.returncode, p.stderr[-500:]))
    L = np.load(os.path.join("tests", "fixtures", "router_logits", "router_logits.npy"))
    u = np.clip(np.random.default_rng(0).uniform(0.0, 1.0, L.shape), 1e-12, 1 - 1e-12)
    for name, draws in (("deepspeed_top2", {"gumbel_uniforms": u}), ("tutel_top2", {}),
                        ("vmoe_bpr", {})):
        want = moesim.route(L, preset=name, **draws).metrics["token_drop_rate"]
        check(re.search(r"^%s .* %.4f +[0-9.]+$" % (name, want), p.stdout, re.M) is not None,
              "compare_presets.py: %s token drop rate %.4f in: %s" % (name, want, p.stdout))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        test_fixtures(tmp)
        test_conversions()
        test_entry_memory()
        test_float32_buffer()
        test_kept_pipeline()
        test_seeded_draws(tmp)
        test_hash_table_path()
        test_errors()
        test_pad_to_capacity(tmp)
        test_presets()
        test_listings()
        test_example()
        if "--no-install" not in sys.argv:
            test_install(tmp)
    print("test_python: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
