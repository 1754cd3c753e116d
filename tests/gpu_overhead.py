"""Where fastact's per-call time goes on a GPU (small arrays, so the kernel itself is ~2 us):
python tests/gpu_overhead.py   (cProfile of 3000 calls each, then timings against PyTorch)."""
import cProfile
import os
import pstats
import sys
import time

os.environ.setdefault("FASTACT_CACHE_DIR", "/tmp/fastact_overhead")
import cupy as cp  # noqa: E402
import numpy as np  # noqa: E402
import fastact as fa  # noqa: E402

x = cp.asarray(np.random.default_rng(0).standard_normal(4096).astype(np.float32))
dy = cp.ones_like(x)
out = cp.empty_like(x)
rows = x.reshape(16, 256)
calls = {
    "sigmoid(x)": lambda: fa.sigmoid(x),
    "sigmoid(x, out=)": lambda: fa.sigmoid(x, out=out),
    "gelu.backward": lambda: fa.gelu.backward(dy, x),
    "softmax rows": lambda: fa.softmax(rows),
    "sigmoid strided": lambda: fa.sigmoid(x[::2]),
}
w = cp.asarray(np.float32([0.1, 0.2, 0.3]))
checks = {  # first call (numba-cuda's dispatcher) against later ones (fastact's own launch)
    **calls,
    "strided 2-D": lambda: fa.gelu(rows[::2, ::3]),
    "log_softmax rows": lambda: fa.log_softmax(rows),
    "softmax long rows": lambda: fa.softmax(x.reshape(1, -1)),
    "softmax axis 0": lambda: fa.softmax(rows, axis=0),
    "prelu": lambda: fa.prelu(x[:4080].reshape(8, 3, -1)[:, :, :150], w),
    "maxout": lambda: fa.maxout(rows, 4),
    "elu alpha": lambda: fa.elu(x, alpha=0.7),
    "float16": lambda: fa.tanh(x.astype(cp.float16)),
}
differ = []
with fa.backend("cuda"):
    for label, f in checks.items():
        first = cp.asnumpy(f())
        again = [cp.asnumpy(f()) for _ in range(3)]
        same = all(np.array_equal(first, a, equal_nan=True) for a in again)
        print(f"{label:20s} later calls {'equal' if same else 'DIFFER'} to the first", flush=True)
        if not same:
            differ.append(label)
    cp.cuda.Device().synchronize()
    for label, f in calls.items():
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(2000):
                f()
            cp.cuda.Device().synchronize()
            best = min(best, (time.perf_counter() - t) / 2000 * 1e6)
        print(f"{label:20s} {best:7.1f} us/call", flush=True)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3000):
        fa.sigmoid(x, out=out)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
    # the pieces of fa.sigmoid(x, out=out), each alone (best of 3 x 20000)
    from fastact.kernels import cuda as kc
    backend = fa._backends.get("cuda")
    launched = []
    original = type(backend)._launch

    def spy(self, *a, **k):
        launched.append((a, k))
        return original(self, *a, **k)
    type(backend)._launch = spy
    fa.sigmoid(x, out=out)
    type(backend)._launch = original
    assert launched, "no launch seen"
    (kernel, blocks, threads, stream, args, *rest), kw = launched[-1]
    library = kc._library_of(x)

    def piece(label, f, n=20000):
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(n):
                f()
            best = min(best, (time.perf_counter() - t) / n * 1e6)
        cp.cuda.Device().synchronize()
        print(f"  {label:40s} {best:6.2f} us", flush=True)
    print("pieces of fa.sigmoid(x, out=out):")
    piece("whole call", lambda: fa.sigmoid(x, out=out), 5000)
    piece("x.__cuda_array_interface__", lambda: x.__cuda_array_interface__)
    piece("_library_of(x)", lambda: kc._library_of(x))
    piece("_Array(x)", lambda: kc._Array("", x))
    piece("library.stream(x)", lambda: library.stream(x))
    piece("cupy.cuda.get_current_stream().ptr", lambda: cp.cuda.get_current_stream().ptr)
    piece("_primary_is_current(0)", lambda: kc._primary_is_current(0))
    piece("_device_context(0) enter/exit", lambda: kc._device_context(0).__enter__().__exit__())
    piece("_flat(a, 0, n)", lambda: kc._flat(kc._Array("", x), 0, x.size))
    kc._plans.clear()
    fa.sigmoid(x, out=out)
    fn = next(iter(kc._plans))[0]  # the key's scalar function
    piece("_plan_key(sigmoid, [x], out)", lambda: kc._plan_key(fn, [x], out))
    def launch_in_context():
        with kc._device_context(0):
            backend._launch(kernel, blocks, threads, stream, args, *rest, **kw)
    piece("backend._launch (fast path, in context)", launch_in_context, 5000)
    # the same calls with parts of the short path switched off, interleaved (5 rounds, best of
    # each): what the plan cache and the launch around the dispatcher each save
    plan_key, fast = kc._plan_key, dict(kc._fast)
    modes = {"plan + cuLaunchKernel": lambda: None,
             "no plan, cuLaunchKernel": lambda: setattr(kc, "_plan_key", lambda *a: (None, None)),
             "no plan, dispatcher": lambda: (
                 setattr(kc, "_plan_key", lambda *a: (None, None)),
                 kc._fast.update({k: False for k in kc._fast}))}
    best = {m: float("inf") for m in modes}
    for _ in range(5):
        for mode, setup in modes.items():
            setup()
            fa.sigmoid(x, out=out)
            t = time.perf_counter()
            for _ in range(2000):
                fa.sigmoid(x, out=out)
            cp.cuda.Device().synchronize()
            best[mode] = min(best[mode], (time.perf_counter() - t) / 2000 * 1e6)
            kc._plan_key = plan_key
            kc._fast.clear()
            kc._fast.update(fast)
    for mode, us in best.items():
        print(f"  sigmoid(x, out=) {mode:28s} {us:6.1f} us", flush=True)
try:
    import torch
    t_x = torch.as_tensor(x, device="cuda")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(2000):
            torch.sigmoid(t_x)
        torch.cuda.synchronize()
    print(f"torch.sigmoid        {(time.perf_counter() - t) / 2000 * 1e6:7.1f} us/call")
except ImportError:
    pass
if differ:
    sys.exit(f"later calls differ from the first: {', '.join(differ)}")
