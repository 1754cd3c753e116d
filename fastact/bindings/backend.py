"""The "c" backend: the C kernels of template.c through cffi (API mode, the GIL released). Same
interface as the Numba backend (see fastact/_backends.py).

Threads: each C entry point computes a [start, stop) range; large calls are split over fastact's
own pool (fastact/_threads.py), shared with the Numba backend, so the two never oversubscribe the
cores. No OpenMP runtime: PyTorch ships its own libgomp, and a C backend linked to OpenMP shared
torch's team once torch was imported (measured 7 ms per 2^20 call, against ~0.5 ms).
"""
import numpy as np

from .. import _threads, registry
from .._backends import Unavailable
from ..kernels.math import STREAM_BYTES
from . import _build

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
# the row kernels the fast path calls (fastact/_fastcall.c, Rows: their signatures there)
_FAST_ROWS = frozenset({"softmax_rows", "log_softmax_rows", "softmax_backward_rows",
                        "log_softmax_backward_rows", "prelu_forward_rows"})


class Backend:
    name = "c"

    def __init__(self):
        try:
            module = _build.load()
        except _build.BuildError as e:
            raise Unavailable(f"C extension not built: {e}") from None
        except OSError as e:
            raise Unavailable(f"C extension not built: {type(e).__name__}: {e}") from None
        if not module.lib.fa_cpu_supported():
            raise Unavailable("C extension was built for another CPU; rebuild it "
                              "(FASTACT_C_REBUILD=1)")
        self.ffi, self.lib = module.ffi, module.lib
        self._maps = {}
        self._null = self.ffi.NULL
        _threads.set_spinner(self._spin_function)

    def _spin_function(self):
        """fa_spin_until and fa_run_tasks: the pool's spin-wait (it returns 1 or 0) and its
        workers' native loop (fastact/_threads.py)."""
        return self.lib.fa_spin_until, self.lib.fa_run_tasks

    def _map_function(self, scalar_fn, arrays, dtype):
        key = (scalar_fn.__name__, arrays, dtype)
        fn = self._maps.get(key)
        if fn is None:
            fn = getattr(self.lib, self._map_name(scalar_fn, arrays, dtype), None)
            if fn is None:
                raise RuntimeError(f"the C extension has no kernel "
                                   f"{self._map_name(scalar_fn, arrays, dtype)} (rebuild it: "
                                   "FASTACT_C_REBUILD=1)")
            self._maps[key] = fn
        return fn

    @staticmethod
    def _map_name(scalar_fn, arrays, dtype):
        return f"fa_map_{scalar_fn.__name__}_{arrays}_{_SUFFIX[dtype]}"

    def fast_table(self, scalar_fn, n_arrays, dtype):
        """The address of this map's kernel as a task table (fastact/_fastcall.py calls it
        directly; one kernel serves calls in place too)."""
        self._map_function(scalar_fn, n_arrays, dtype)  # (raises if the module lacks it)
        pointer = self.ffi.addressof(self.lib, self._map_name(scalar_fn, n_arrays, dtype))
        return np.full(n_arrays + 1, int(self.ffi.cast("intptr_t", pointer)), np.int64)

    def fast_row_task(self, name, dtype):
        """The address of the row kernel the fast path calls (fastact/_fastcall.c, Rows), or
        None for one it does not."""
        if name not in _FAST_ROWS:
            return None
        pointer = self.ffi.addressof(self.lib, f"fa_{name}_{_SUFFIX[np.dtype(dtype)]}")
        return int(self.ffi.cast("intptr_t", pointer))

    def map(self, scalar_fn, inputs, out, params):
        fn = self._map_function(scalar_fn, len(inputs), out.dtype)
        buf = self.ffi.from_buffer
        pointers = [buf(a) for a in inputs] + [self._null] * (3 - len(inputs))
        values = [float(p) for p in params] + [0.0] * (2 - len(params))
        stream = int(out.nbytes >= STREAM_BYTES)  # non-temporal stores (kernels/loops.py)
        _threads.run(fn, (*pointers, buf(out, require_writable=True), *values, stream), out.size,
                     registry.split_cost(scalar_fn.__name__), align=True)

    def rows(self, name, args, n_rows, row_cost):
        if n_rows <= 0:
            return
        dtype = args[0].dtype
        if not all(a.flags.c_contiguous for a in args if isinstance(a, np.ndarray)):
            raise ValueError(f"{name}: the C backend takes C-contiguous arrays")
        fn = getattr(self.lib, f"fa_{name}_{_SUFFIX[dtype]}")
        buf = self.ffi.from_buffer
        if name == "prelu_forward_rows":
            x, w, out = args
            call = (buf(x), buf(w), w.size, buf(out, require_writable=True), x.shape[1])
        elif name == "prelu_backward_rows":
            dy, x, w, dx, grad_weight_rows = args
            call = (buf(dy), buf(x), buf(w), w.size, buf(dx, require_writable=True),
                    self.ffi.from_buffer("double[]", grad_weight_rows, require_writable=True),
                    x.shape[1])
        elif name == "prelu_forward_cols":
            x, w, out = args
            call = (buf(x), buf(w), buf(out, require_writable=True), x.shape[1])
        elif name == "prelu_backward_cols":
            dy, x, w, dx, partial, block = args
            call = (buf(dy), buf(x), buf(w), buf(dx, require_writable=True),
                    self.ffi.from_buffer("double[]", partial, require_writable=True), x.shape[1],
                    block, x.shape[0])
        elif name in ("softmax_rows", "log_softmax_rows"):
            x, out = args
            call = (buf(x), buf(out, require_writable=True), x.shape[1])
        elif name in ("softmax_backward_rows", "log_softmax_backward_rows"):
            dy, y, dx = args
            call = (buf(dy), buf(y), buf(dx, require_writable=True), y.shape[1])
        elif name == "maxout_forward_rows":
            x, out = args
            call = (buf(x), buf(out, require_writable=True), *x.shape[1:])
        elif name == "maxout_backward_rows":
            dy, x, dx = args
            call = (buf(dy), buf(x), buf(dx, require_writable=True), *x.shape[1:])
        else:
            raise RuntimeError(f"the C extension has no row kernel {name}")
        _threads.run(fn, call, n_rows, max(1, row_cost))
