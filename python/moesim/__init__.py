"""moesim: the routers and the MoE layer of moesim on NumPy arrays and PyTorch CPU tensors.

    plan = moesim.route(logits, "topk", k=2, capacity_factor=1.25)
    plan = moesim.route(logits, preset="deepspeed_top2", gumbel_uniforms=u)  # a library's router
    plan.token, plan.expert, plan.slot, plan.dispatch_weight, plan.combine_weight  # (N,) arrays
    plan.metrics["token_drop_rate"]
    y = moesim.layer(x, w1, b1, w2, b2, plan, activation="gelu_tanh")
    y = moesim.layer(x, w1, b1, w2, b2, plan, pad_to_capacity=True); moesim.layer_rows_run()
    moesim.routers(), moesim.options("topk")

Routing options are keyword arguments named as the keys of `moesim list options`
(capacity_factor, min_capacity, order, renormalize, ...); their values are passed as text to
moesim's option table, which validates them exactly as `moesim route --capacity-factor 1.25`
does. Results equal `moesim route`'s bit for bit for the same inputs. Errors raise
moesim.Error with moesim's one-line message. The library is libmoesim.so (sim/moesim_api.h),
called through ctypes; inputs are passed without a copy when they are already C-contiguous
arrays of the C dtype (float64 or float32 logits, float32 layer arrays).
"""
import ctypes
import math
import os
import sys

import numpy as np

from . import _lib

__all__ = ["Error", "Plan", "route", "layer", "layer_rows_run", "routers", "options", "presets",
           "release"]

_C = _lib.load()


class Error(Exception):
    """A moesim error: str(e) is the one-line message "<what> (<where>)"; e.hint may help."""

    def __init__(self, message, hint="", code=None):
        super().__init__(message)
        self.hint = hint
        self.code = code


def _raise(code):
    raise Error(_C.moesim_errmsg().decode(), _C.moesim_errhint().decode(), code)


# ---- input conversion -----------------------------------------------------------------------

_F32_MAX = float(np.finfo(np.float32).max)


def _numpy_of(obj, name):
    """obj as a NumPy array, without a copy where possible. Torch tensors are detached; bfloat16
    (which NumPy lacks) is widened to float32 by torch; tensors on another device are refused."""
    if type(obj).__module__.startswith("torch") and hasattr(obj, "detach"):
        t = obj.detach()
        if t.device.type != "cpu":
            raise Error("%s is a torch tensor on %s: move it to the CPU with .cpu() (%s)"
                        % (name, t.device, name))
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    try:
        a = np.asarray(obj)
    except Exception as e:  # an __array__ that fails
        raise Error("%s cannot be read as an array: %s (%s)" % (name, e, name)) from None
    if a.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 (JAX): exactly representable in float32
        a = a.astype(np.float32)
    return a


def _array(obj, name, dtype, ndim, rounds_to_f32=False):
    """A C-contiguous array of dtype with ndim dimensions, converted only where no value changes
    (integers checked against the target's range or float64's 2^53). rounds_to_f32: float64 is
    rounded to float32 as `moesim route` does with .npy inputs of the layer."""
    a = _numpy_of(obj, name)
    dtype = np.dtype(dtype)
    if a.ndim != ndim:
        raise Error("%s must have %d dimensions, has %d (%s)" % (name, ndim, a.ndim, name))
    src = a.dtype
    if src == dtype or np.can_cast(src, dtype, "safe") and not (
            src.kind in "iu" and dtype.kind == "f" and src.itemsize >= 8):
        pass
    elif src.kind in "iu" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise Error("%s has values outside %s: %d..%d (%s)"
                        % (name, dtype, a.min(), a.max(), name))
    elif src.kind in "iu" and dtype.kind == "f":
        if a.size and not np.array_equal(a.astype(dtype).astype(src), a):
            raise Error("%s: %s values that %s cannot hold exactly (%s)"
                        % (name, src, dtype, name))
    elif rounds_to_f32 and src == np.float64 and dtype == np.float32:
        big = np.isfinite(a) & (np.abs(a) > _F32_MAX)
        if big.any():
            i = int(np.flatnonzero(big.ravel())[0])
            raise Error("value %g at index %d is outside the float32 range (%s)"
                        % (a.ravel()[i], i, name))
    else:
        raise Error("%s has dtype %s, which does not convert to %s without loss (%s)"
                    % (name, src, dtype, name))
    return np.ascontiguousarray(a, dtype=dtype)


def _ptr(a):
    return None if a is None else a.ctypes.data


def _option_text(key, v):
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        # shortest text that reads back as v, without an exponent: capacity_factor is parsed
        # as an exact decimal, so 1.1 stays 11/10 as on the command line
        return np.format_float_positional(float(v), trim="-")
    if isinstance(v, (str, os.PathLike)):
        return os.fspath(v)
    raise Error("bad value %r for option %s: want a number, bool or text (%s)" % (v, key, key))


# ---- routing --------------------------------------------------------------------------------

class Plan:
    """A routing plan: one entry per (token, expert, slot) kept, in the router's order.

    token, expert, slot: int32 arrays (N,); dispatch_weight, combine_weight: float64 (N,);
    metrics: dict with the keys and values of `moesim route --metrics` JSON (non-finite values
    as None, arrays as lists); n_tokens (T), num_experts (E), capacity (C), k, dense; preset
    (its name or None) and options (the keyword options given to route, as text): layer()
    takes the layer's option pad_to_capacity from them."""

    def __init__(self, router, token, expert, slot, dispatch_weight, combine_weight, metrics,
                 n_tokens, num_experts, capacity, k=0, dense=False, preset=None, options=None):
        self.router = router
        self.token, self.expert, self.slot = token, expert, slot
        self.dispatch_weight, self.combine_weight = dispatch_weight, combine_weight
        self.metrics = metrics
        self.n_tokens, self.num_experts, self.capacity = n_tokens, num_experts, capacity
        self.k, self.dense = k, dense
        self.preset, self.options = preset, dict(options or {})

    def __len__(self):
        return len(self.token)

    def __repr__(self):
        return ("<moesim.Plan %s: %d entries, T=%d E=%d C=%d k=%d, token_drop_rate=%s>"
                % (self.router, len(self), self.n_tokens, self.num_experts, self.capacity,
                   self.k, self.metrics.get("token_drop_rate") if self.metrics else None))

    def csv(self):
        """The plan as the CSV text `moesim route --plan` writes (weights %.9g)."""
        rows = ["token,expert,slot,dispatch_weight,combine_weight\n"]
        for t, e, s, dw, cw in zip(self.token.tolist(), self.expert.tolist(),
                                   self.slot.tolist(), self.dispatch_weight.tolist(),
                                   self.combine_weight.tolist()):
            rows.append("%d,%d,%d,%.9g,%.9g\n" % (t, e, s, dw, cw))
        return "".join(rows)


def _metrics(res, router, E):
    out = {"router": router}
    buf = np.empty(E + 1, dtype=np.float64)
    is_int = ctypes.c_int()
    i = 0
    while True:
        name = _C.moesim_metric_name(i)
        if name is None:
            break
        count = _C.moesim_result_metric(res, i, buf.ctypes.data, buf.size, ctypes.byref(is_int))
        vals = [int(v) if is_int.value else (float(v) if math.isfinite(v) else None)
                for v in buf[:count].tolist()]
        arr = name.decode() in ("assigned_load", "kept_load", "importance", "experts_per_token",
                                "groups_touched")
        out[name.decode()] = vals if arr else vals[0]
        i += 1
    return out


def _logits(obj):
    """Logits as C-contiguous float32 (passed as they are: the library widens them) or float64
    (every other dtype NumPy converts without loss; float16 goes through float32)."""
    a = _numpy_of(obj, "logits")
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    if a.dtype == np.float32 and a.ndim == 2:
        return np.ascontiguousarray(a), _lib.F32
    return _array(a, "logits", np.float64, 2), _lib.F64


_HUGE = 2 << 20  # bytes of a transparent huge page (x86-64)
_blocks = []      # the memory block of the last plan's entry arrays, for reuse


def _entry_arrays(n):
    """Five arrays of n entries (token, expert, slot int32; dispatch_weight, combine_weight
    float64), views into one block of memory. Fresh memory costs a page fault per 4 KiB page when
    first written (for topk on 65536 x 64 logits, 900 faults: 10-15% of the routing itself on a
    virtual machine), so the block of the last call is reused once no array of its plan is alive
    any more (its only references: _blocks and this function). A new block of 1 MiB or more
    starts on a 2 MiB boundary and is allocated at 4 MiB or more, the size from which NumPy
    advises the kernel to back an array with huge pages: one fault per 2 MiB."""
    need = 28 * n + 32  # 28 bytes per entry, each array 8-byte aligned
    align = _HUGE if need >= _HUGE // 2 else 8
    raw = _blocks.pop() if _blocks else None  # atomic: no other thread sees the block now
    if raw is not None and (sys.getrefcount(raw) > 2 or not need <= raw.size - (
            -raw.ctypes.data % align) <= 4 * need + 2 * _HUGE):
        raw = None  # in use by a live plan, or of another size
    if raw is None:
        raw = np.empty(max(need + _HUGE, 2 * _HUGE + 1) if align == _HUGE else
                       (need + align + 4095) // 4096 * 4096, np.uint8)  # room to grow
    off = -raw.ctypes.data % align
    out = []
    for size, dt in ((4, np.int32), (4, np.int32), (4, np.int32), (8, np.float64),
                     (8, np.float64)):
        out.append(raw[off:off + size * n].view(dt))
        off += (size * n + 7) // 8 * 8
    if not _blocks:
        _blocks.append(raw)
    return out


def _draws(obj, name, shape):
    if obj is None:
        return None
    a = _array(obj, name, np.float64, 2)
    if a.shape != shape:
        raise Error("%s have shape %s, logits %s (%s)" % (name, a.shape, shape, name))
    return a


def route(logits, router=None, *, preset=None, uniforms=None, gumbel_uniforms=None,
          rts_uniforms=None, tokens=None, hash_table=None, choices=None, choice_weights=None,
          seed=0, **options):
    """Route logits (T,M) with a router of moesim.routers() (default topk) or a preset of
    moesim.presets() (one library's default router: its router and options; options given here
    override the preset's), and routing options (keywords named as in moesim.options(): k=2,
    capacity_factor=1.25, order="bpr", renormalize=True, ...).

    uniforms (T): gshard's draws in [0,1) (else drawn from seed, as `moesim route --seed`);
    gumbel_uniforms (T,M): the uniforms u of the Gumbel draws G = -log(-log u) of gshard's
    second_policy "sampling" and switch's select "rsample"; rts_uniforms (T,M): the keys of
    order "rts" (both strictly between 0 and 1, as `--gumbel-uniforms`, `--rts-uniforms`);
    tokens (T): token ids for the hash router; hash_table (L): expert of each id for
    hash="table" (an array, or the path of a .npy); choices, choice_weights (T,Krec): recorded
    choices for the replay router; seed: PCG seed of gshard's draws and topk's noise. float32
    logits are passed as they are (the library widens them exactly); results equal those of
    the same values in float64. Returns a Plan."""
    if router is None and preset is None:
        router = "topk"
    L, ldtype = _logits(logits)
    U = None if uniforms is None else _array(uniforms, "uniforms", np.float64, 1)
    G = _draws(gumbel_uniforms, "gumbel_uniforms", L.shape)
    RT = _draws(rts_uniforms, "rts_uniforms", L.shape)
    ids = None if tokens is None else _array(tokens, "tokens", np.int64, 1)
    for a, what in ((U, "uniforms"), (ids, "tokens")):
        if a is not None and a.shape[0] != L.shape[0]:
            raise Error("%s have length %d, logits have %d rows (%s)"
                        % (what, a.shape[0], L.shape[0], what))
    table = None
    if isinstance(hash_table, (str, os.PathLike)):
        options["hash_table"] = hash_table
    elif hash_table is not None:
        table = _array(hash_table, "hash_table", np.int64, 1)
    ch = cw = None
    if choices is not None:
        ch = _array(choices, "choices", np.int32, 2)
        if choice_weights is not None:
            cw = _array(choice_weights, "choice_weights", np.float64, 2)
            if cw.shape != ch.shape:
                raise Error("choice_weights have shape %s, choices %s (choice_weights)"
                            % (cw.shape, ch.shape))
    keys = [k.encode() for k in options]
    vals = [_option_text(k, v).encode() for k, v in options.items()]
    a = _lib.RouteArgs()
    a.router = None if router is None else str(router).encode()
    a.preset = None if preset is None else str(preset).encode()
    a.logits, a.n, a.m, a.logits_dtype = _ptr(L), L.shape[0], L.shape[1], ldtype
    a.gumbel_uniforms, a.rts_uniforms = _ptr(G), _ptr(RT)
    a.n_opts = len(keys)
    a.keys = (ctypes.c_char_p * max(1, len(keys)))(*keys)
    a.values = (ctypes.c_char_p * max(1, len(vals)))(*vals)
    a.uniforms, a.token_ids = _ptr(U), _ptr(ids)
    a.hash_table, a.hash_table_len = _ptr(table), 0 if table is None else table.shape[0]
    a.choices, a.choice_weights = _ptr(ch), _ptr(cw)
    a.k_rec = 0 if ch is None else ch.shape[1]
    if not 0 <= int(seed) < 2 ** 64:
        raise Error("bad value %r for seed: want an integer in 0..2^64-1 (seed)" % (seed,))
    a.seed = int(seed)
    res = ctypes.c_void_p()
    rc = _C.moesim_route(ctypes.byref(a), ctypes.byref(res))
    if rc:
        _raise(rc)
    try:
        info = _lib.PlanInfo()
        _C.moesim_result_info(res, ctypes.byref(info))
        tok, exp, slot, dw, cwt = _entry_arrays(info.n_entries)
        _C.moesim_result_entries(res, *(x.ctypes.data for x in (tok, exp, slot, dw, cwt)))
        name = str(router) if router is not None else _preset_router(preset)
        met = _metrics(res, name, info.num_experts)
    finally:
        _C.moesim_result_free(res)
    return Plan(name, tok, exp, slot, dw, cwt, met, info.n_tokens, info.num_experts,
                info.capacity, info.k, bool(info.dense), None if preset is None else str(preset),
                {k: _option_text(k, v) for k, v in options.items()})


def release():
    """Free the memory route() keeps for the next call: the block of the last plan's entry arrays
    (once that plan is gone), the router and buffers of the last call (reused by a call with the
    same router, options and shape) and the library's float64 copy of float32 logits."""
    _blocks.clear()
    _C.moesim_release()


def _preset_router(name):
    return {p["name"]: p["router"] for p in presets()}[str(name)]


def presets():
    """The presets of `moesim list presets`: a list of dicts (name, router, options as a dict of
    key to value text, source: the library file the defaults were read from)."""
    out, i, p = [], 0, _lib.PresetInfo()
    while _C.moesim_preset_get(i, ctypes.byref(p)) == 0:
        opts = {}
        for j in range(p.n_set):
            key, _, val = p.set[j].decode().partition("=")
            opts[key.strip()] = val.strip()
        out.append({"name": p.name.decode(), "router": p.router.decode(), "options": opts,
                    "source": p.source.decode()})
        i += 1
    return out


# ---- the layer ------------------------------------------------------------------------------

_LAYER_OPTIONS = ("pad_to_capacity",)  # the routing options the layer itself uses


def _layer_options(plan, options):
    """The layer's options: those of plan's preset, then of its route() keywords, then the
    keywords given to layer() (any key: the library refuses those that are not the layer's)."""
    out = {}
    preset = getattr(plan, "preset", None)
    if preset is not None:
        for p in presets():
            if p["name"] == preset:
                out.update(p["options"])
    out.update(getattr(plan, "options", None) or {})
    out = {k: v for k, v in out.items() if k in _LAYER_OPTIONS}
    out.update({k: _option_text(k, v) for k, v in options.items()})
    return out


def layer(x, w1, b1, w2, b2, plan, activation="gelu_tanh", **options):
    """y (T,D) float32: the MoE layer on x (T,D) for plan, with expert weights w1 (E,D,F),
    b1 (E,F), w2 (E,F,D), b2 (E,D) (SwiGLU: w1 (E,D,2F), b1 (E,2F)). Computes in float32 as
    moesim does; float64 inputs are rounded to float32 as `moesim route --x ...` does. plan is a
    moesim.Plan or any object with its attributes (token, expert, slot, dispatch_weight,
    combine_weight, n_tokens, num_experts, capacity, dense).

    options: the layer's routing option pad_to_capacity=True runs every expert of a sparse plan
    at exactly C rows (zero rows beyond its filled slots), as a padded implementation does; y is
    the same bit for bit, layer_rows_run() tells the rows run. Without it, the plan's own
    pad_to_capacity (given to route() or set by its preset) applies."""
    X = _array(x, "x", np.float32, 2, True)
    W1 = _array(w1, "w1", np.float32, 3, True)
    T, D = X.shape
    E, FW = int(plan.num_experts), W1.shape[2]
    if str(activation) == "swiglu" and FW % 2:
        raise Error("w1 last dimension %d is odd: SwiGLU w1 is (E,D,2F), gate then up (w1)" % FW)
    F = FW // 2 if str(activation) == "swiglu" else FW
    want = {"w1": (E, D, FW), "b1": (E, FW), "w2": (E, F, D), "b2": (E, D)}
    arrs = {"w1": W1}
    for name, obj in (("b1", b1), ("w2", w2), ("b2", b2)):
        arrs[name] = _array(obj, name, np.float32, len(want[name]), True)
    if T != int(plan.n_tokens):
        raise Error("x has %d rows, the plan %d tokens (x)" % (T, plan.n_tokens))
    for name, shape in want.items():
        if arrs[name].shape != shape:
            raise Error("%s has shape %s, expected %s: x (T,D) w1 (E,D,F) b1 (E,F) w2 (E,F,D) "
                        "b2 (E,D) (%s)" % (name, arrs[name].shape, shape, name))
    ent = [_array(plan.token, "plan.token", np.int32, 1),
           _array(plan.expert, "plan.expert", np.int32, 1),
           _array(plan.slot, "plan.slot", np.int32, 1),
           _array(plan.dispatch_weight, "plan.dispatch_weight", np.float64, 1),
           _array(plan.combine_weight, "plan.combine_weight", np.float64, 1)]
    if any(e.shape != ent[0].shape for e in ent):
        raise Error("plan entry arrays differ in length: %s (plan)" % [e.shape[0] for e in ent])
    lopts = _layer_options(plan, options)
    keys = [k.encode() for k in lopts]
    vals = [v.encode() for v in lopts.values()]
    pv = _lib.PlanView(T, E, int(plan.capacity), int(bool(plan.dense)), ent[0].shape[0],
                       *(e.ctypes.data for e in ent), len(keys),
                       (ctypes.c_char_p * max(1, len(keys)))(*keys),
                       (ctypes.c_char_p * max(1, len(vals)))(*vals))
    y = np.empty((T, D), dtype=np.float32)
    rc = _C.moesim_layer(ctypes.byref(pv), X.ctypes.data, D, F, arrs["w1"].ctypes.data,
                         arrs["b1"].ctypes.data, arrs["w2"].ctypes.data, arrs["b2"].ctypes.data,
                         str(activation).encode(), y.ctypes.data)
    if rc:
        _raise(rc)
    return y


def layer_rows_run():
    """Rows the experts ran in this thread's last successful layer() call: each expert's slots
    up to its last filled one, E x C padded to capacity (and for dense plans); -1 before one."""
    return int(_C.moesim_layer_rows_run())


# ---- what the library holds -----------------------------------------------------------------

def routers():
    """The routers of moesim's registry: a list of dicts (name, summary, default_k and what
    each needs: needs_token_ids, uses_rng, dense, needs_choices, no_capacity, all_experts)."""
    out, i, r = [], 0, _lib.RouterInfo()
    while _C.moesim_router_get(i, ctypes.byref(r)) == 0:
        d = {f: getattr(r, f) for f, _ in _lib.RouterInfo._fields_}
        for f in ("name", "summary"):
            d[f] = d[f].decode()
        for f in ("needs_token_ids", "uses_rng", "dense", "needs_choices", "no_capacity",
                  "all_experts"):
            d[f] = bool(d[f])
        out.append(d)
        i += 1
    return out


def options(router="topk"):
    """The routing options route() takes for router: a list of dicts (key, type, default,
    choices, help) from moesim's option table, which every router shares (options a router
    does not use are accepted and have no effect, as with `moesim route`); k's default is the
    router's own."""
    info = [r for r in routers() if r["name"] == str(router)]
    if not info:
        raise Error("unknown router '%s' (router)" % (router,), "moesim.routers() lists them", 1)
    out, i, o = [], 0, _lib.OptionInfo()
    while _C.moesim_option_get(i, ctypes.byref(o)) == 0:
        d = {f: (getattr(o, f).decode() if getattr(o, f) is not None else None)
             for f, _ in _lib.OptionInfo._fields_}
        if d["key"] == "k":
            d["default"] = str(info[0]["default_k"])
        out.append(d)
        i += 1
    return out
