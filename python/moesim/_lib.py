"""ctypes declarations of libmoesim.so's C API (sim/moesim_api.h) and where the library is found.

Search order: $MOESIM_LIB (a path to libmoesim.so), the copy installed inside this package, then
build/libmoesim.so of the source tree this package sits in (python/moesim/../../build).
"""
import ctypes
import os

API_VERSION = 4  # MOESIM_API_VERSION this module was written for
F64, F32 = 0, 1  # MOESIM_F64, MOESIM_F32: dtypes of RouteArgs.logits

c_int, c_long, c_size_t, c_double = ctypes.c_int, ctypes.c_long, ctypes.c_size_t, ctypes.c_double
c_char_p, c_void_p, c_uint64 = ctypes.c_char_p, ctypes.c_void_p, ctypes.c_uint64
P = ctypes.POINTER


class RouteArgs(ctypes.Structure):
    _fields_ = [("router", c_char_p), ("logits", c_void_p), ("n", c_int), ("m", c_int),
                ("n_opts", c_int), ("keys", P(c_char_p)), ("values", P(c_char_p)),
                ("uniforms", c_void_p), ("token_ids", c_void_p), ("hash_table", c_void_p),
                ("hash_table_len", c_size_t), ("choices", c_void_p),
                ("choice_weights", c_void_p), ("k_rec", c_int), ("seed", c_uint64),
                ("gumbel_uniforms", c_void_p), ("rts_uniforms", c_void_p), ("preset", c_char_p),
                ("logits_dtype", c_int)]


class PlanInfo(ctypes.Structure):
    _fields_ = [("n_entries", c_size_t), ("n_tokens", c_int), ("num_experts", c_int),
                ("m", c_int), ("k", c_int), ("capacity", c_long), ("dense", c_int)]


class PlanView(ctypes.Structure):
    _fields_ = [("n_tokens", c_int), ("num_experts", c_int), ("capacity", c_long),
                ("dense", c_int), ("n_entries", c_size_t), ("token", c_void_p),
                ("expert", c_void_p), ("slot", c_void_p), ("dispatch_weight", c_void_p),
                ("combine_weight", c_void_p), ("n_opts", c_int), ("keys", P(c_char_p)),
                ("values", P(c_char_p))]


class RouterInfo(ctypes.Structure):
    _fields_ = [("name", c_char_p), ("summary", c_char_p), ("default_k", c_int),
                ("needs_token_ids", c_int), ("uses_rng", c_int), ("dense", c_int),
                ("needs_choices", c_int), ("no_capacity", c_int), ("all_experts", c_int)]


class OptionInfo(ctypes.Structure):
    _fields_ = [("key", c_char_p), ("type", c_char_p), ("default", c_char_p),
                ("choices", c_char_p), ("help", c_char_p)]


class PresetInfo(ctypes.Structure):
    _fields_ = [("name", c_char_p), ("router", c_char_p), ("n_set", c_int),
                ("set", P(c_char_p)), ("source", c_char_p)]


def _candidates():
    env = os.environ.get("MOESIM_LIB")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(here, "libmoesim.so"),
            os.path.join(here, os.pardir, os.pardir, "build", "libmoesim.so")]


def load():
    tried = []
    for path in _candidates():
        if os.path.exists(path):
            lib = ctypes.CDLL(os.path.abspath(path))
            break
        tried.append(path)
    else:
        raise ImportError("moesim: libmoesim.so not found (tried %s): run `make python` in the "
                          "moesim repository, or set MOESIM_LIB" % ", ".join(tried))
    sig = {
        "moesim_api_version": (c_int, []),
        "moesim_errmsg": (c_char_p, []),
        "moesim_errhint": (c_char_p, []),
        "moesim_route": (c_int, [P(RouteArgs), P(c_void_p)]),
        "moesim_result_free": (None, [c_void_p]),
        "moesim_release": (None, []),
        "moesim_result_info": (None, [c_void_p, P(PlanInfo)]),
        "moesim_result_entries": (None, [c_void_p] + [c_void_p] * 5),
        "moesim_metric_name": (c_char_p, [c_int]),
        "moesim_result_metric": (c_long, [c_void_p, c_int, c_void_p, c_size_t, P(c_int)]),
        "moesim_layer": (c_int, [P(PlanView), c_void_p, c_int, c_int] + [c_void_p] * 4
                         + [c_char_p, c_void_p]),
        "moesim_layer_rows_run": (c_long, []),
        "moesim_router_get": (c_int, [c_int, P(RouterInfo)]),
        "moesim_option_get": (c_int, [c_int, P(OptionInfo)]),
        "moesim_preset_get": (c_int, [c_int, P(PresetInfo)]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    if lib.moesim_api_version() != API_VERSION:
        raise ImportError("moesim: %s has C API version %d, this package wants %d: rebuild both"
                          % (lib._name, lib.moesim_api_version(), API_VERSION))
    return lib
