"""Correctness and speed of the CUDA backend on a real GPU: ``python -m fastact.bench.gpu_check``.

1. The correctness matrix, on fresh random inputs (seed printed) with NaN, infinities, zeros and
   subnormals mixed in: every activation x parameters x float16/float32/float64, forward and
   backward, into ``out=`` arrays poisoned with a NaN whose payload no kernel produces (every
   element must be written), against fastact.reference in float64 on host copies with the test
   suite's tolerances (4 ulp float32, 1e-14 relative float64, 1 ulp float16); the allocating call
   must give the same bits. Where PyTorch is installed its CUDA op is run on the same input and
   the largest relative difference is reported (for information: torch's own error is larger).
   Softmax rows of three lengths (each path), prelu, maxout, rrelu training.
2. The benchmark: 2^28 float32 elements, every forward against the device-to-device copy
   bandwidth and every backward against a 2-in-1-out add, measured in the same run with CUDA
   events on the stream fastact launches on, next to PyTorch's eager CUDA op where installed; the
   per-call overhead at 2^10 elements next to PyTorch's. The table is printed last.

``--simulate`` runs part 1 under numba-cuda's simulator with tiny sizes (no GPU needed; slow).
Exit status: 0 all passed, 1 a check failed, 2 no usable CUDA backend.
"""
import argparse
import math
import os
import sys
import time

PARAM_CASES = {  # as tests/conftest.py: the defaults plus values that change branch or saved tensor
    "elu": [{}, {"alpha": 0.5}, {"alpha": -0.3}],
    "celu": [{}, {"alpha": 2.0}, {"alpha": -0.5}],
    "gelu": [{"approximate": "none"}, {"approximate": "tanh"}],
    "softplus": [{}, {"beta": 2.0, "threshold": 10.0}],
    "leaky_relu": [{}, {"negative_slope": -0.5}],
    "hardtanh": [{}, {"min_val": -2.0, "max_val": 0.5}],
    "threshold": [{"threshold": 0.5, "value": -2.0}],
}
SENTINEL = {"float16": 0x7E5A, "float32": 0x7FA5A5A5, "float64": 0x7FF5A5A5A5A5A5A5}  # NaN payloads
TOLERANCE = {"float16": ("ulp", 1.0), "float32": ("ulp", 4.0), "float64": ("relative", 1e-14)}


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m fastact.bench.gpu_check", description=__doc__.split(
        "\n")[0])
    p.add_argument("--simulate", action="store_true", help="numba-cuda's simulator, tiny sizes")
    p.add_argument("--size", type=int, default=None, help="elements per correctness case")
    p.add_argument("--bench-log2", type=int, default=28, help="benchmark size: 2**N float32")
    p.add_argument("--no-bench", action="store_true", help="correctness only")
    p.add_argument("--only", default="", help="comma-separated activation names")
    p.add_argument("--library", default="auto", choices=("auto", "cupy", "torch", "numba"))
    p.add_argument("--seed", type=int, default=None)
    return p.parse_args(argv)


# --- array libraries ------------------------------------------------------------------------------

class Library:
    """to_device / to_host / full_bits / sync / events for one GPU array library."""

    def __init__(self, name):
        self.name = name
        if name == "cupy":
            import cupy
            self.m = cupy
        elif name == "torch":
            import torch
            self.m = torch
        else:
            from numba import cuda
            self.m = cuda

    def to_device(self, a):
        import numpy as np
        if self.name == "cupy":
            return self.m.asarray(a)
        if self.name == "torch":
            return self.m.from_numpy(np.ascontiguousarray(a)).cuda()
        return self.m.to_device(np.ascontiguousarray(a))

    def to_host(self, d):
        if self.name == "cupy":
            return self.m.asnumpy(d)
        if self.name == "torch":
            return d.cpu().numpy()
        return d.copy_to_host()

    def full_bits(self, shape, dtype, bits):
        import numpy as np
        itype = {2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
        return self.to_device(np.full(shape, bits, itype).view(dtype))

    def empty(self, shape, dtype):
        import numpy as np
        if self.name == "cupy":
            return self.m.empty(shape, dtype)
        if self.name == "torch":
            return self.m.empty(shape, dtype=getattr(self.m, np.dtype(dtype).name), device="cuda")
        return self.m.device_array(shape, dtype)

    def sync(self):
        if self.name == "cupy":
            self.m.cuda.Device().synchronize()
        elif self.name == "torch":
            self.m.cuda.synchronize()
        else:
            self.m.synchronize()

    def time(self, fn, reps):
        """Seconds per call, CUDA events on the library's current stream around reps calls."""
        for _ in range(3):
            fn()
        if self.name == "torch":
            start, end = (self.m.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / reps
        if self.name == "cupy":
            start, end = self.m.cuda.Event(), self.m.cuda.Event()
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            end.synchronize()
            return self.m.cuda.get_elapsed_time(start, end) / 1e3 / reps
        start, end = self.m.event(), self.m.event()
        start.record(self.m.legacy_default_stream())
        for _ in range(reps):
            fn()
        end.record(self.m.legacy_default_stream())
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / reps


def pick_library(choice, simulate):
    if simulate:
        return Library("numba")
    for name in ((choice,) if choice != "auto" else ("cupy", "torch", "numba")):
        try:
            return Library(name)
        except ImportError:
            if choice != "auto":
                raise
    raise RuntimeError("unreachable")


# --- accuracy -------------------------------------------------------------------------------------

def error_units(got, ref, dtype, scale=None):
    """The largest |got - ref| in units of the tolerance (<= 1 passes) and a message for NaN/inf
    mismatches (the rule of tests/conftest.py ulp_error)."""
    import numpy as np
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    dtype = np.dtype(dtype)
    nan = np.isnan(got) != np.isnan(ref)
    if nan.any():
        i = np.flatnonzero(nan)[0]
        return math.inf, f"NaN mismatch at {i}: got {got.flat[i]!r}, expected {ref.flat[i]!r}"
    fi = np.finfo(dtype)
    big = np.abs(ref) > float(fi.max)
    wrong = big & ~np.isnan(ref) & ((np.abs(got) < float(fi.max)) | (np.sign(got) != np.sign(ref)))
    if wrong.any():
        return math.inf, f"expected overflow to inf, got {got[wrong][:3]}"
    ok = ~np.isnan(ref) & ~big
    scale = np.abs(ref) if scale is None else np.maximum(np.abs(np.asarray(scale, np.float64)),
                                                         np.abs(ref))
    kind, bound = TOLERANCE[dtype.name]
    with np.errstate(over="ignore", invalid="ignore"):
        unit = (np.spacing(np.minimum(scale, float(fi.max)).astype(dtype)).astype(np.float64)
                if kind == "ulp" else scale)
        unit = np.maximum(unit * bound, float(fi.smallest_subnormal) * (16 if dtype == np.float64
                                                                        else 4))
        err = np.where(ok, np.abs(got - ref) / unit, 0.0)
    if not err.size:
        return 0.0, ""
    i = int(np.argmax(err))
    return float(err.flat[i]), f"worst at {i}: got {got.flat[i]!r}, expected {ref.flat[i]!r}"


def random_inputs(rng, n, dtype):
    import numpy as np
    fi = np.finfo(dtype)
    x = rng.standard_normal(n) * 4
    k = max(1, n // 16)
    x[rng.integers(0, n, k)] = rng.uniform(-1, 1, k) * float(fi.max) ** rng.uniform(0, 1, k)
    x[rng.integers(0, n, k)] = rng.uniform(-30, 30, k)
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, float(fi.smallest_subnormal), float(fi.tiny)]
    x[rng.integers(0, n, len(specials))] = specials
    with np.errstate(over="ignore"):
        return x.astype(dtype)


class Checker:
    def __init__(self, lib, verbose=True):
        self.lib, self.rows, self.failures = lib, [], 0
        try:
            import torch
            self.torch = torch if torch.cuda.is_available() else None
        except ImportError:
            self.torch = None

    def record(self, what, dtype, err, message, written=True, torch_diff=None):
        ok = err <= 1.0 and written
        if not ok:
            self.failures += 1
            print(f"FAIL {what} {dtype}: {'unwritten elements; ' if not written else ''}"
                  f"error {err:.3g} x tolerance; {message}", flush=True)
        self.rows.append((what, dtype, err, ok, torch_diff))

    def poisoned(self, shape, dtype):
        import numpy as np
        return self.lib.full_bits(shape, dtype, SENTINEL[np.dtype(dtype).name])

    def all_written(self, out, dtype):
        import numpy as np
        host = self.lib.to_host(out)
        itype = {2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
        return not np.any(host.view(itype) == SENTINEL[np.dtype(dtype).name]), host

    def torch_diff(self, name, params, x_host, got):
        """max relative difference to torch.nn.functional's CUDA op (information only)."""
        if self.torch is None:
            return None
        import numpy as np
        try:
            F = self.torch.nn.functional
            t = self.torch.from_numpy(x_host).cuda()
            fn = {"relu6": F.relu6, "logsigmoid": F.logsigmoid}.get(name) or getattr(F, name)
            ref = fn(t, **params).cpu().numpy().astype(np.float64)
        except Exception:
            return None
        g = got.astype(np.float64)
        both = np.isfinite(ref) & np.isfinite(g)
        with np.errstate(all="ignore"):
            rel = np.abs(g - ref)[both] / np.maximum(np.abs(ref[both]), np.finfo(x_host.dtype).tiny)
        return float(rel.max()) if rel.size else 0.0


def check_elementwise(ck, rng, n, names):
    import numpy as np
    import fastact as fa
    from fastact import reference, registry
    lib = ck.lib
    for spec in registry.SPECS.values():
        if spec.kind != "elementwise" or (names and spec.name not in names):
            continue
        act = getattr(fa, spec.name)
        for params in PARAM_CASES.get(spec.name, [{}]):
            for dtype in (np.float16, np.float32, np.float64):
                dname = np.dtype(dtype).name
                what = spec.name + "".join(f" {k}={v}" for k, v in params.items())
                x = random_inputs(rng, n, dtype)
                dy = rng.uniform(-2, 2, n).astype(dtype)
                gx, gdy = lib.to_device(x), lib.to_device(dy)
                out = ck.poisoned(n, dtype)
                act(gx, out=out, **params)
                written, y = ck.all_written(out, dtype)
                x64 = x.astype(np.float64)
                with np.errstate(all="ignore"):
                    ref = reference.forward(spec.name, x64, **params)
                err, msg = error_units(y, ref, dtype)
                same = np.array_equal(lib.to_host(act(gx, **params)), y, equal_nan=True)
                ck.record(what + " fwd", dname, err if same else math.inf,
                          msg if same else "the allocating call differs from out=", written,
                          ck.torch_diff(spec.name, params, x, y))
                saved_host = y if act.saves_for(**params) == "output" else x
                out = ck.poisoned(n, dtype)
                act.backward(gdy, lib.to_device(saved_host), out=out, **params)
                written, dx = ck.all_written(out, dtype)
                dy64 = dy.astype(np.float64)
                with np.errstate(all="ignore"):
                    ref = reference.backward(spec.name, dy64, saved_host.astype(np.float64),
                                             **params)
                    scale = np.abs(dy64) * reference.condition_scale(spec.name, "backward", x64,
                                                                     **params)
                err, msg = error_units(dx, ref, dtype, scale)
                ck.record(what + " bwd", dname, err, msg, written)


def check_rowwise(ck, rng, lengths, names):
    import numpy as np
    import fastact as fa
    from fastact import reference
    lib = ck.lib
    for name in ("softmax", "log_softmax"):
        if names and name not in names:
            continue
        act = getattr(fa, name)
        for n in lengths:
            for dtype in (np.float32, np.float64):
                dname = np.dtype(dtype).name
                x = (rng.standard_normal((5, n)) * 8).astype(dtype)
                out = ck.poisoned(x.shape, dtype)
                act(lib.to_device(x), out=out)
                written, y = ck.all_written(out, dtype)
                err, msg = error_units(y, reference.forward(name, x.astype(np.float64)), dtype)
                ck.record(f"{name} rows of {n} fwd", dname, err, msg, written)
                dy = rng.uniform(-2, 2, x.shape).astype(dtype)
                out = ck.poisoned(x.shape, dtype)
                act.backward(lib.to_device(dy), lib.to_device(y), out=out)
                written, dx = ck.all_written(out, dtype)
                ref = reference.backward(name, dy.astype(np.float64), y.astype(np.float64))
                scale = reference.condition_scale(name, "backward", x.astype(np.float64),
                                                  dy.astype(np.float64))
                err, msg = error_units(dx, ref, dtype, scale)
                ck.record(f"{name} rows of {n} bwd", dname, err, msg, written)
            x = (rng.standard_normal((n, 3)) * 8).astype(np.float32)  # along a strided axis
            err, msg = error_units(lib.to_host(act(lib.to_device(x), axis=0)),
                                   reference.forward(name, x.astype(np.float64), axis=0),
                                   np.float32)
            ck.record(f"{name} axis 0 of {n}", "float32", err, msg)
    for dtype in (np.float32, np.float64):
        dname = np.dtype(dtype).name
        if not names or "prelu" in names:
            x = random_inputs(rng, 6 * 7 * 11, dtype).reshape(6, 7, 11)
            x = np.where(np.isfinite(x), x, 1.0).astype(dtype)
            w = rng.uniform(-0.5, 0.5, 7).astype(dtype)
            err, msg = error_units(lib.to_host(fa.prelu(lib.to_device(x), lib.to_device(w))),
                                   reference.prelu_forward(x, w), dtype)
            ck.record("prelu fwd", dname, err, msg)
            dy = rng.uniform(-2, 2, x.shape).astype(dtype)
            dx, dw = fa.prelu.backward(lib.to_device(dy), lib.to_device(x), lib.to_device(w))
            rdx, rdw = reference.prelu_backward_from_input(dy, x, w)
            _, scale = reference.condition_scale("prelu", "backward", x, dy, weight=w)
            err, msg = error_units(lib.to_host(dx), rdx, dtype)
            ck.record("prelu bwd dx", dname, err, msg)
            err, msg = error_units(lib.to_host(dw), rdw, dtype, scale)
            ck.record("prelu bwd dweight", dname, err, msg)
        if not names or "maxout" in names:
            x = np.round(rng.standard_normal((4, 12, 9)) * 3).astype(dtype)
            y = lib.to_host(fa.maxout(lib.to_device(x), 3))
            err, msg = error_units(y, reference.maxout_forward(x, 3), dtype)
            ck.record("maxout fwd", dname, err, msg)
            dy = rng.uniform(-2, 2, y.shape).astype(dtype)
            dx = lib.to_host(fa.maxout.backward(lib.to_device(dy), lib.to_device(x), 3))
            err, msg = error_units(dx, reference.maxout_backward_from_input(dy, x, 3), dtype)
            ck.record("maxout bwd", dname, err, msg)
        if not names or "rrelu" in names:
            x = random_inputs(rng, 1000, dtype)
            y, noise = fa.rrelu(lib.to_device(x), training=True, generator=int(rng.integers(1 << 30)),
                                return_noise=True)
            y, noise = lib.to_host(y), lib.to_host(noise)
            below = x <= 0
            in_range = np.all((noise[below] >= dtype(1 / 8)) & (noise[below] <= dtype(1 / 3))) and \
                np.all(noise[~below] == 1)
            err, msg = error_units(y, reference.rrelu_forward(x, training=True, noise=noise), dtype)
            ck.record("rrelu training fwd", dname, err if in_range else math.inf,
                      msg if in_range else "slopes outside [lower, upper]")


# --- benchmark ------------------------------------------------------------------------------------

def torch_peers(torch):
    """{name: (forward(x), backward(dy, x, y)) on torch CUDA tensors} for PyTorch's eager ops."""
    F, aten = torch.nn.functional, torch.ops.aten
    from fastact.registry import SELU_ALPHA, SELU_SCALE
    return {
        "sigmoid": (torch.sigmoid, lambda dy, x, y: aten.sigmoid_backward(dy, y)),
        "tanh": (torch.tanh, lambda dy, x, y: aten.tanh_backward(dy, y)),
        "elu": (F.elu, lambda dy, x, y: aten.elu_backward(dy, 1.0, 1, 1, True, y)),
        "selu": (F.selu, lambda dy, x, y: aten.elu_backward(dy, SELU_ALPHA, SELU_SCALE, 1, True, y)),
        "celu": (F.celu, lambda dy, x, y: aten.elu_backward(dy, 1.0, 1, 1.0, True, y)),
        "gelu": (F.gelu, lambda dy, x, y: aten.gelu_backward(dy, x)),
        "silu": (F.silu, lambda dy, x, y: aten.silu_backward(dy, x)),
        "mish": (F.mish, lambda dy, x, y: aten.mish_backward(dy, x)),
        "softplus": (F.softplus, lambda dy, x, y: aten.softplus_backward(dy, x, 1.0, 20.0)),
        "logsigmoid": (F.logsigmoid, lambda dy, x, y: aten.log_sigmoid_backward(
            dy, x, aten.log_sigmoid_forward(x)[1])),
        "relu": (torch.relu, lambda dy, x, y: aten.threshold_backward(dy, y, 0)),
        "leaky_relu": (F.leaky_relu, lambda dy, x, y: aten.leaky_relu_backward(dy, y, 0.01, True)),
        "hardtanh": (F.hardtanh, lambda dy, x, y: aten.hardtanh_backward(dy, x, -1.0, 1.0)),
        "relu6": (F.relu6, lambda dy, x, y: aten.hardtanh_backward(dy, x, 0.0, 6.0)),
        "hardsigmoid": (F.hardsigmoid, lambda dy, x, y: aten.hardsigmoid_backward(dy, x)),
        "hardswish": (F.hardswish, lambda dy, x, y: aten.hardswish_backward(dy, x)),
        "threshold": (lambda x: F.threshold(x, 0.5, -2.0),
                      lambda dy, x, y: aten.threshold_backward(dy, x, 0.5)),
        "softsign": (F.softsign, None),
        "softmax": (lambda x: torch.softmax(x, -1), lambda dy, x, y: aten._softmax_backward_data(
            dy, y, -1, torch.float32)),
        "log_softmax": (lambda x: torch.log_softmax(x, -1),
                        lambda dy, x, y: aten._log_softmax_backward_data(dy, y, -1, torch.float32)),
    }


def _torch_views(lib):
    """(torch module, view) where view(array) is a torch CUDA tensor on the same memory, or
    (None, None) without PyTorch: the peer runs on the very arrays fastact is timed on."""
    if lib.name == "torch":
        return lib.m, lambda t: t
    try:
        import torch
        if not torch.cuda.is_available():
            return None, None
    except ImportError:
        return None, None
    return torch, lambda t: torch.as_tensor(t, device="cuda")


def _best(lib, fn, reps, rounds):
    return min(lib.time(fn, reps) for _ in range(rounds))


def benchmark(lib, log2, names):
    """Per op: fastact forward and backward (out= given) and PyTorch's eager op on the same
    arrays, interleaved (fastact, torch, fastact, torch, ...; the best of the rounds), and the host
    time per call at 2^10 elements."""
    import numpy as np
    import fastact as fa
    from fastact import registry
    n = 1 << log2
    rng = np.random.default_rng(0)
    host = rng.standard_normal(1 << 20).astype(np.float32)
    host_dy = rng.standard_normal(1 << 20).astype(np.float32)
    x, y, dy, dx = (lib.empty(n, np.float32) for _ in range(4))
    for i in range(0, n, host.size):  # fill without a 2**28 host array
        fa.tanh(lib.to_device(host), out=x[i:i + host.size])  # any kernel writes the values
        fa.tanh(lib.to_device(host_dy), out=dy[i:i + host.size])
    reps, rounds = 20, 3
    copy_s = _best(lib, lambda: _copy(lib, y, x), reps, rounds)
    add_s = _best(lib, lambda: _add(lib, x, dy, dx), reps, rounds)
    copy_bw, add_bw = 2 * n * 4 / copy_s, 3 * n * 4 / add_s
    torch, view = _torch_views(lib)
    peers = torch_peers(torch) if torch is not None else {}
    table = []
    row_n = 4096
    small, small_out = lib.to_device(host[:1024]), lib.to_device(host[:1024])
    for spec in registry.SPECS.values():
        name = spec.name
        if (names and name not in names) or spec.kind in ("prelu", "rrelu", "maxout"):
            continue
        act = getattr(fa, name)
        params = PARAM_CASES.get(name, [{}])[0]
        shaped = (lambda t: t.reshape(n // row_n, row_n)) if spec.kind != "elementwise" else (
            lambda t: t)
        xs, ys, dys, dxs = shaped(x), shaped(y), shaped(dy), shaped(dx)
        saved = ys if act.saves_for(**params) == "output" else xs

        def fwd():
            act(xs, out=ys, **params)

        def bwd():
            act.backward(dys, saved, out=dxs, **params)
        fwd()
        peer = forward, backward = peers.get(name, (None, None))
        t_fwd, t_bwd, p_fwd, p_bwd = [], [], [], []
        if forward is not None:
            xt, dyt, yt = view(xs), view(dys), forward(view(xs))
        for _ in range(rounds):
            t_fwd.append(lib.time(fwd, reps))
            t_bwd.append(lib.time(bwd, reps))
            try:
                if forward is not None:
                    p_fwd.append(lib.time(lambda: forward(xt), reps))
                if backward is not None:
                    p_bwd.append(lib.time(lambda: backward(dyt, xt, yt), reps))
            except Exception as e:
                print(f"torch peer for {name} failed: {type(e).__name__}: {e}")
                forward = backward = None
        overhead = _overhead(lib, lambda: act(small, out=small_out, **params))
        torch_overhead = None
        if peer[0] is not None:
            small_t = view(small)
            torch_overhead = _overhead(lib, lambda: peer[0](small_t))
        table.append((name, 2 * n * 4 / min(t_fwd), 2 * n * 4 / min(p_fwd) if p_fwd else None,
                      3 * n * 4 / min(t_bwd), 3 * n * 4 / min(p_bwd) if p_bwd else None,
                      overhead, torch_overhead))
    return copy_bw, add_bw, table


def _copy(lib, dst, src):
    if lib.name == "torch":
        dst.copy_(src)
    elif lib.name == "cupy":
        lib.m.copyto(dst, src)
    else:
        dst.copy_to_device(src)


_add_kernel = None


def _add(lib, a, b, c):
    global _add_kernel
    if lib.name == "torch":
        lib.m.add(a, b, out=c)
    elif lib.name == "cupy":
        lib.m.add(a, b, out=c)
    else:
        if _add_kernel is None:
            cuda = lib.m

            @cuda.jit
            def add(a, b, c):
                i = cuda.grid(1)
                while i < c.size:
                    c[i] = a[i] + b[i]
                    i += cuda.gridsize(1)
            _add_kernel = add
        _add_kernel[4096, 256](a, b, c)


def _overhead(lib, fn, calls=1000, rounds=3):
    """Host microseconds per call, small arrays (launch and argument handling), synchronized; the
    best of a few rounds (one round of 2000 calls read 23-80 us for kernels of one kind)."""
    for _ in range(10):
        fn()
    best = float("inf")
    for _ in range(rounds):
        lib.sync()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        lib.sync()
        best = min(best, (time.perf_counter() - t) / calls * 1e6)
    return best


def print_table(device, lib, log2, copy_bw, add_bw, table):
    print(f"\nfastact CUDA benchmark on {device}, 2^{log2} float32, {lib.name} arrays, out= given;"
          f" ceilings in the same run: copy {copy_bw / 1e9:.0f} GB/s "
          f"(1 in, 1 out), add {add_bw / 1e9:.0f} GB/s (2 in, 1 out)")
    print(f"{'op':<12} {'fwd GB/s':>9} {'% copy':>7} {'torch':>7} | {'bwd GB/s':>9} {'% add':>6} "
          f"{'torch':>7} | {'us/call':>8} {'torch':>7}")

    def fmt(v, spec):
        return format(v, spec) if v is not None else "n/a".rjust(len(format(0, spec)))
    for name, fwd, tf, bwd, tb, oh, toh in table:
        print(f"{name:<12} {fwd / 1e9:9.0f} {100 * fwd / copy_bw:6.0f}% "
              f"{fmt(tf and tf / 1e9, '7.0f')} | {bwd / 1e9:9.0f} {100 * bwd / add_bw:5.0f}% "
              f"{fmt(tb and tb / 1e9, '7.0f')} | {oh:8.1f} {fmt(toh, '7.1f')}")


def main(argv=None):
    args = parse(argv)
    if args.simulate:
        if "numba.cuda" in sys.modules and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            print("gpu_check: --simulate must be given before numba.cuda is imported")
            return 2
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    import numpy as np
    import fastact as fa
    available, reason = fa.backends()["cuda"]
    if not available:
        print(f"gpu_check: the CUDA backend is not available: {reason}")
        return 2
    from fastact.kernels import cuda as fcuda
    fcuda.enable_simulator_arrays()
    lib = pick_library(args.library, args.simulate)
    seed = args.seed if args.seed is not None else int(time.time())
    names = set(filter(None, args.only.split(",")))
    if args.simulate:
        device = "numba-cuda simulator"
        n, lengths = args.size or 200, (3, 40, 150)
    else:
        from numba import cuda
        device = cuda.get_current_device().name
        device = device.decode() if isinstance(device, bytes) else device
        n, lengths = args.size or (1 << 20) + 3, (100, 5000, 100_000)
    print(f"gpu_check on {device}: correctness, seed {seed}, {n} elements per case, "
          f"{lib.name} arrays", flush=True)
    ck = Checker(lib)
    rng = np.random.default_rng(seed)
    with fa.backend("cuda"):
        t = time.perf_counter()
        check_elementwise(ck, rng, n, names)
        check_rowwise(ck, rng, lengths, names)
        print(f"{len(ck.rows)} checks, {ck.failures} failed, {time.perf_counter() - t:.1f} s")
        worst = sorted(ck.rows, key=lambda r: -r[2])[:5]
        print("largest errors (x tolerance): " + ", ".join(
            f"{w[0]} {w[1]} {w[2]:.2f}" for w in worst))
        diffs = [r for r in ck.rows if r[4] is not None]
        if diffs:
            print("largest relative difference to torch: " + ", ".join(
                f"{r[0]} {r[1]} {r[4]:.2g}" for r in sorted(diffs, key=lambda r: -r[4])[:5]))
        if not args.simulate and not args.no_bench:
            copy_bw, add_bw, table = benchmark(lib, args.bench_log2, names)
            print_table(device, lib, args.bench_log2, copy_bw, add_bw, table)
    return 1 if ck.failures else 0


if __name__ == "__main__":
    sys.exit(main())
