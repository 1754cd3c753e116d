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
