"""Device helpers of the CUDA kernels (kernels/cuda.py) that are not activations: the first-maximum
rule of the row-wise kernels, the partial (max, index, sum) of a softmax row and how two combine,
and a counter-based random number generator for rrelu.

Plain Python, like kernels/math.py: the CUDA simulator runs them as written, and numba-cuda's
``register_jitable`` (its own registry, not numba.extending's: kernels/_jit.py) makes the same
source callable from device code. The bit-level primitives of math.py need no CUDA-specific
lowering: their LLVM IR (llvm.fma and bitcasts) is target-independent and NVVM accepts it (checked
by compiling every kernel to PTX, and on an H100).
"""
import numpy as np
from numba.core import config as _numba_config

from . import _jit, math as m

if _numba_config.ENABLE_CUDASIM:
    def register_jitable(fn):
        return fn
else:
    from numba.cuda.extending import register_jitable  # numba-cuda's registry only (_jit.py)
    _jit.register_cuda()

_MASK32 = np.uint64(0xFFFFFFFF)


@register_jitable
def max_first(best, where, v, j):
    """(value, index) of the first maximum of two candidates, NaN winning (the first NaN): the rule
    of kernels/loops.py row_max, made order-independent by comparing indices."""
    if best != best:
        if v != v and j < where:
            return v, j
        return best, where
    if v != v or v > best or (v == best and j < where):
        return v, j
    return best, where


@register_jitable
def chunk_of(p, chunks, chunk, n):
    """(row, lo, hi) of block p when rows of n elements are cut into chunks of ``chunk``."""
    r = p // chunks
    lo = (p - r * chunks) * chunk
    return r, lo, min(lo + chunk, n)


@register_jitable
def exp_scale(v, best):
    """e^(v - best) in float64, 0 for v = -inf (also where best is -inf: a chunk of -inf values
    adds nothing to a row whose maximum is finite)."""
    if v == -np.inf:
        return 0.0
    return m.exp_difference(np.float64(v), np.float64(best))


@register_jitable
def softmax_push(best, where, others, v, j):
    """Add element v (index j) to a partial (max, index of the first max, sum over the other
    elements of e^(x - max)); ``where < 0`` marks an empty partial. Sums are float64."""
    nb, nw = max_first(best, where, v, j) if where >= 0 else (v, j)
    if nw == j:
        if where >= 0:
            others = (others + 1.0) * exp_scale(best, nb)
        return nb, nw, others
    return best, where, others + exp_scale(v, best)


@register_jitable
def softmax_combine(best_a, where_a, others_a, best_b, where_b, others_b):
    """Two partials of softmax_push as one (empty partials have where < 0)."""
    if where_b < 0:
        return best_a, where_a, others_a
    if where_a < 0:
        return best_b, where_b, others_b
    best, where = max_first(best_a, where_a, best_b, where_b)
    if where == where_a:
        return best, where, others_a + (others_b + 1.0) * exp_scale(best_b, best)
    return best, where, others_b + (others_a + 1.0) * exp_scale(best_a, best)


@register_jitable
def mix32(h):
    """A 32-bit integer hash (Wellons' lowbias32) on a uint64 holding 32 bits; every product stays
    below 2**64, so the simulator's NumPy scalars never overflow."""
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(0x7FEB352D)) & _MASK32
    h = h ^ (h >> np.uint64(15))
    h = (h * np.uint64(0x846CA68B)) & _MASK32
    return h ^ (h >> np.uint64(16))


@register_jitable
def uniform(key0, key1, i):
    """A uniform float64 in [0, 1) with 53 random bits, a function of the key and the element
    index i only (so the launch configuration does not change the numbers)."""
    u = np.uint64(i)
    a = mix32((u & _MASK32) ^ key0)
    b = mix32(a ^ (u >> np.uint64(32)) ^ key1)
    c = mix32(b ^ np.uint64(0x68E31DA4))
    bits = (b << np.uint64(21)) | (c >> np.uint64(11))
    return np.float64(bits) * 1.1102230246251565e-16  # 2**-53
