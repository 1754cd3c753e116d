"""Arrays of more than 2^31 elements on a GPU (64-bit indexing): python tests/gpu_large.py

Each path of the CUDA backend on CuPy arrays past 2^31 elements, into outputs poisoned with NaN:
the 16-byte vector path (contiguous, aligned), the scalar 1-D path (misaligned by one element), the
strided path (a 2-D view without its first column), a backward (three arrays) and softmax rows
(rows x 4096). The first and last 2^20 elements and those around 2^31 are copied back and compared
with fastact's CPU backend on the same inputs (4 ulp, float32); every element must have been written
(no NaN: the inputs hold none). Needs ~40 GB of GPU memory. Exit status 1 on any mismatch."""
import os
import sys

os.environ.setdefault("FASTACT_CACHE_DIR", "/tmp/fastact_large")
import cupy as cp  # noqa: E402
import numpy as np  # noqa: E402
import fastact as fa  # noqa: E402

ROWS, COLS = 65540, 32769         # the strided case: ROWS x (COLS - 1) > 2^31 elements
N = ROWS * COLS - 1               # past 2^31, odd: not a multiple of any vector or block size
TAIL = 2 ** 20
failures = []


def windows(n):
    """Index ranges checked: the start, around 2^31 and the end."""
    mid = min(2 ** 31 - TAIL // 2, n - TAIL)
    return [(0, TAIL), (mid, mid + TAIL), (n - TAIL, n)]


def ulps(got, want):
    got, want = got.astype(np.float64), want.astype(np.float64)
    spacing = np.spacing(np.maximum(np.abs(want), np.finfo(np.float32).tiny).astype(np.float32))
    return np.abs(got - want) / spacing.astype(np.float64)


def compare(label, got, want_of):
    """got: a flat CuPy result; want_of(lo, hi): the CPU backend's result for that range."""
    n = got.size
    worst = 0.0
    for lo, hi in windows(n):
        g = cp.asnumpy(got[lo:hi])
        w = want_of(lo, hi)
        if np.isnan(g).any():
            failures.append(label)
            print(f"{label:34s} NaN (unwritten) at {lo + int(np.argmax(np.isnan(g)))}", flush=True)
            return
        worst = max(worst, float(ulps(g, w).max()))
    nan_count = int(cp.isnan(got).sum())
    ok = worst <= 4 and nan_count == 0
    if not ok:
        failures.append(label)
    print(f"{label:34s} n={n} max {worst:.2f} ulp, {nan_count} unwritten "
          f"{'ok' if ok else 'FAIL'}", flush=True)


cp.random.seed(3)
x = cp.random.standard_normal(N + 1, dtype=cp.float32) * 4
out = cp.full(N + 1, cp.nan, cp.float32)
host = {}


def cpu(fn, *args):
    with fa.backend("cpu"):
        return fn(*args)


def host_x(lo, hi, offset=0):
    key = (lo + offset, hi + offset)
    if key not in host:
        host[key] = cp.asnumpy(x[lo + offset:hi + offset])
    return host[key]


with fa.backend("cuda"):
    fa.sigmoid(x[:N], out=out[:N])  # contiguous and aligned: the 16-byte path
    compare("sigmoid, 16-byte path", out[:N], lambda lo, hi: cpu(fa.sigmoid, host_x(lo, hi)))
    out.fill(cp.nan)
    fa.gelu(x[1:], out=out[1:])  # misaligned by 4 bytes: the scalar 1-D path
    compare("gelu, scalar 1-D path", out[1:], lambda lo, hi: cpu(fa.gelu, host_x(lo, hi, 1)))
    out.fill(cp.nan)
    dy = cp.random.standard_normal(N, dtype=cp.float32)
    fa.silu.backward(dy, x[:N], out=out[:N])
    compare("silu backward, 16-byte path", out[:N], lambda lo, hi: cpu(
        fa.silu.backward, cp.asnumpy(dy[lo:hi]), host_x(lo, hi)))
    dy = None
    cp.get_default_memory_pool().free_all_blocks()

    x2 = x.reshape(ROWS, COLS)[:, 1:]
    out2 = out.reshape(ROWS, COLS)[:, 1:]
    out.fill(cp.nan)
    fa.tanh(x2, out=out2)
    flat_out = cp.ascontiguousarray(out2).ravel()
    flat_x = cp.ascontiguousarray(x2).ravel()
    compare("tanh, strided 2-D path", flat_out,
            lambda lo, hi: cpu(fa.tanh, cp.asnumpy(flat_x[lo:hi])))
    x2 = out2 = flat_out = flat_x = None
    cp.get_default_memory_pool().free_all_blocks()

    n_rows, width = (2 ** 31) // 4096 + 3, 4096    # rows x width > 2^31
    xr = x[:n_rows * width].reshape(n_rows, width)
    outr = out[:n_rows * width].reshape(n_rows, width)
    out.fill(cp.nan)
    fa.softmax(xr, out=outr)
    for label, r0, r1 in (("softmax rows, first", 0, 64), ("softmax rows, last", n_rows - 64,
                                                            n_rows)):
        got = cp.asnumpy(outr[r0:r1])
        want = cpu(fa.softmax, cp.asnumpy(xr[r0:r1]))
        worst = float(ulps(got, want).max())
        ok = worst <= 4 and not np.isnan(got).any()
        if not ok:
            failures.append(label)
        print(f"{label:34s} rows {r0}..{r1} of {n_rows}: max {worst:.2f} ulp "
              f"{'ok' if ok else 'FAIL'}", flush=True)
    unwritten = int(cp.isnan(outr).sum())
    print(f"softmax rows: {unwritten} unwritten", flush=True)
    if unwritten:
        failures.append("softmax rows unwritten")

if failures:
    sys.exit(f"FAILED: {', '.join(failures)}")
print("all large-array checks passed")
