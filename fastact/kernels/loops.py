"""The kernel loops, as plain Python. kernels/cpu.py copies a loop's source into a generated module,
where ``scalar`` is bound to a registry function, and compiles it there with Numba (``cache=True``
needs a real file per compiled function, and one file per scalar function keeps caches apart).

Every loop works on C-contiguous arrays and a [start, stop) range of its outer index, so the
caller can split one call over threads. Accumulations are float64 whatever the dtype.
"""
import numpy as np

from fastact import registry
from fastact.kernels import math as m

scalar = None  # bound per generated module

# --- elementwise: out[i] = scalar(a0[i], ..., *params) ------------------------------------------------


def map_1(a0, out, params, start, stop):
    # Slices, then range(size): an index from range(start, stop) may be negative as far as LLVM
    # knows, and the wraparound select on every access kept the loop scalar (1.5 Gelem/s for relu).
    a0, out = a0[start:stop], out[start:stop]
    for i in range(out.size):
        out[i] = scalar(a0[i], *params)


def map_2(a0, a1, out, params, start, stop):
    a0, a1, out = a0[start:stop], a1[start:stop], out[start:stop]
    for i in range(out.size):
        out[i] = scalar(a0[i], a1[i], *params)


def map_3(a0, a1, a2, out, params, start, stop):
    a0, a1, a2, out = a0[start:stop], a1[start:stop], a2[start:stop], out[start:stop]
    for i in range(out.size):
        out[i] = scalar(a0[i], a1[i], a2[i], *params)


# --- prelu: rows of a (outer * C, inner) view, channel = row % C --------------------------------------

def prelu_forward_rows(x, weight, out, start, stop):
    channels = weight.size
    for r in range(start, stop):
        w = weight[r % channels]
        for j in range(x.shape[1]):
            out[r, j] = registry.leaky_relu_forward(x[r, j], w)


def prelu_backward_rows(dy, x, weight, dx, grad_weight_rows, start, stop):
    """dx, and per row the sum of dy*x over x <= 0 (the rows' sums are added per channel later)."""
    channels = weight.size
    for r in range(start, stop):
        w = weight[r % channels]
        acc = 0.0
        for j in range(x.shape[1]):
            dx[r, j] = registry.leaky_relu_backward(dy[r, j], x[r, j], w)
            acc += registry.prelu_grad_weight_term(dy[r, j], x[r, j])
        grad_weight_rows[r] = acc


# --- softmax and log_softmax over the last axis of a (rows, n) view ------------------------------------

def row_max(row):
    """(max, index of its first occurrence); NaN if the row has a NaN (index of the first NaN)."""
    best, where = row[0], 0
    for j in range(1, row.size):
        v = row[j]
        if (v > best or v != v) and best == best:
            best, where = v, j
    return best, where


def softmax_rows(x, out, start, stop):
    for r in range(start, stop):
        best, where = row_max(x[r])
        total = 0.0
        for j in range(x.shape[1]):
            difference, error = m.two_sum(x[r, j], -best)  # exp scales an error in x - max by |x - max|
            e = m.exp_hilo(difference, error)
            out[r, j] = e
            total += e
        denominator = m.like(x[r, 0], total)
        for j in range(x.shape[1]):
            out[r, j] = out[r, j] / denominator


def log_softmax_rows(x, out, start, stop):
    """x - max - log1p(sum of the other terms): accurate even where the result is near 0."""
    for r in range(start, stop):
        best, where = row_max(x[r])
        others = 0.0
        for j in range(x.shape[1]):
            e = np.float64(m.exp_hilo(*m.two_sum(x[r, j], -best)))
            others += 0.0 if j == where else e
        log_sum = m.log1p(others)
        for j in range(x.shape[1]):
            out[r, j] = (np.float64(x[r, j]) - np.float64(best)) - log_sum


def softmax_backward_rows(dy, y, dx, start, stop):
    for r in range(start, stop):
        dot = 0.0
        for j in range(y.shape[1]):
            dot += np.float64(dy[r, j]) * np.float64(y[r, j])
        for j in range(y.shape[1]):
            dx[r, j] = y[r, j] * (np.float64(dy[r, j]) - dot)


def log_softmax_backward_rows(dy, y, dx, start, stop):
    for r in range(start, stop):
        total = 0.0
        for j in range(y.shape[1]):
            total += dy[r, j]
        total_t = m.like(y[r, 0], total)
        for j in range(y.shape[1]):
            dx[r, j] = dy[r, j] - m.exp(y[r, j]) * total_t


# --- maxout over groups of k along an axis: x viewed as (outer, C, k, inner) -----------------------------

def maxout_forward_rows(x, out, start, stop):
    for o in range(start, stop):
        for c in range(x.shape[1]):
            for i in range(x.shape[3]):
                best = x[o, c, 0, i]
                for j in range(1, x.shape[2]):
                    v = x[o, c, j, i]
                    best = v if (v > best or v != v) and best == best else best
                out[o, c, i] = best


def maxout_backward_rows(dy, x, dx, start, stop):
    """dy goes to the first arg-max of each group (the first NaN if any), 0 elsewhere."""
    for o in range(start, stop):
        for c in range(x.shape[1]):
            for i in range(x.shape[3]):
                best, where = x[o, c, 0, i], 0
                for j in range(1, x.shape[2]):
                    v = x[o, c, j, i]
                    if (v > best or v != v) and best == best:
                        best, where = v, j
                for j in range(x.shape[2]):
                    dx[o, c, j, i] = dy[o, c, i] if j == where else 0.0


ROW_KERNELS = ("prelu_forward_rows", "prelu_backward_rows", "softmax_rows", "log_softmax_rows",
               "softmax_backward_rows", "log_softmax_backward_rows", "maxout_forward_rows",
               "maxout_backward_rows")
HELPERS = ("row_max",)
