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


# --- 16-byte loads and stores -------------------------------------------------------------------
# Element i of a float32 (float64) array viewed as 4 (2) lanes: one ld.global.v4.f32 (v2.f64) per
# thread instead of four 4-byte loads, as PyTorch's vectorized elementwise kernels do. The caller
# guarantees a 16-byte-aligned data pointer and 4 * i + 3 (2 * i + 1) < size. The pointer is
# computed without Numba's negative-index wraparound and bounds logic.

def lanes(dtype):
    """Lanes of one 16-byte vector of dtype (a NumPy dtype), 0 where no vector path exists."""
    return {4: 4, 8: 2}.get(np.dtype(dtype).itemsize, 0) if np.dtype(dtype).kind == "f" else 0


if _numba_config.ENABLE_CUDASIM:
    def load_vector(array, i):
        w = lanes(array.dtype)
        return tuple(array[w * i + k] for k in range(w))

    def store_vector(array, i, values):
        w = lanes(array.dtype)
        for k in range(w):
            array[w * i + k] = values[k]
else:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    def _vector_pointer(context, builder, array_type, array, i):
        w = lanes(np.dtype(str(array_type.dtype)))
        data = context.make_array(array_type)(context, builder, array).data
        vector = ir.VectorType(context.get_value_type(array_type.dtype), w)
        return builder.gep(builder.bitcast(data, vector.as_pointer()), [i]), w

    @intrinsic
    def load_vector(typingctx, array, i):
        if not (isinstance(array, types.Array) and lanes(np.dtype(str(array.dtype)))):
            return None
        result = types.UniTuple(array.dtype, lanes(np.dtype(str(array.dtype))))

        def codegen(context, builder, signature, args):
            pointer, w = _vector_pointer(context, builder, signature.args[0], args[0],
                                         context.cast(builder, args[1], signature.args[1],
                                                      types.int64))
            vector = builder.load(pointer, align=16)
            items = [builder.extract_element(vector, ir.Constant(ir.IntType(32), k))
                     for k in range(w)]
            return context.make_tuple(builder, signature.return_type, items)
        return result(array, i), codegen

    @intrinsic
    def store_vector(typingctx, array, i, values):
        w = lanes(np.dtype(str(array.dtype))) if isinstance(array, types.Array) else 0
        if not (w and isinstance(values, types.BaseTuple) and len(values) == w):
            return None

        def codegen(context, builder, signature, args):
            pointer, _ = _vector_pointer(context, builder, signature.args[0], args[0],
                                         context.cast(builder, args[1], signature.args[1],
                                                      types.int64))
            element = signature.args[0].dtype
            vector = ir.Constant(pointer.type.pointee, ir.Undefined)
            for k, t in enumerate(signature.args[2]):
                item = context.cast(builder, builder.extract_value(args[2], k), t, element)
                vector = builder.insert_element(vector, item, ir.Constant(ir.IntType(32), k))
            builder.store(vector, pointer, align=16)
            return context.get_dummy_value()
        return types.void(array, i, values), codegen
