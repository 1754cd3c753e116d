"""Teach Numba (CPU and CUDA targets) the primitives of kernels/math.py, then every @scalar function.

Imported only by the backends, on first use: importing fastact does not import Numba.
The primitives that need bits (fma, 2**k, exponent and mantissa) are LLVM IR; the integer work is
done on the bit patterns with the "shifter" trick (k + 1.5*2**p has k in its low mantissa bits),
so no float<->int conversion instruction is needed (AVX2 has none for 64-bit integers).
"""
import struct
import sys

import numpy as np
import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

from . import math as m
from .. import registry  # noqa: F401  (defines @scalar functions registered below)

_FORMATS = {  # bits, mantissa bits, exponent bias, shifter, sqrt(1/2)
    types.float32: (32, 23, 127, m.SHIFT32, "<f", "<i"),
    types.float64: (64, 52, 1023, m.SHIFT64, "<d", "<q"),
}


def _bits(value, fmt, ifmt):
    return struct.unpack(ifmt, struct.pack(fmt, value))[0]


@intrinsic
def _fma(typingctx, a, b, c):
    def codegen(context, builder, signature, args):
        ty = context.get_value_type(signature.return_type)
        suffix = "f32" if signature.return_type == types.float32 else "f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3),
                                            "llvm.fma." + suffix)
        return builder.call(fn, args)
    return a(a, a, a), codegen


@intrinsic
def _fmax(typingctx, a, b):
    def codegen(context, builder, signature, args):
        ty = context.get_value_type(signature.return_type)
        suffix = "f32" if signature.return_type == types.float32 else "f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty]),
                                            "llvm.maxnum." + suffix)
        return builder.call(fn, args)
    return a(a, a), codegen


@intrinsic
def _pow2_shifted(typingctx, ks, offset):
    nbits, mant, bias, shift, fmt, ifmt = _FORMATS[ks]

    def codegen(context, builder, signature, args):
        fty, ity = context.get_value_type(ks), ir.IntType(nbits)
        # offset is a constant once inlined: LLVM folds it with the bias into one integer addition
        constant = builder.add(builder.fptosi(args[1], ity),
                               ir.Constant(ity, bias - _bits(shift, fmt, ifmt)))
        integer = builder.add(builder.bitcast(args[0], ity), constant)
        return builder.bitcast(builder.shl(integer, ir.Constant(ity, mant)), fty)
    return ks(ks, ks), codegen


def _log_split_codegen(k, want_exponent):
    nbits, mant, bias, shift, fmt, ifmt = _FORMATS[k]
    sqrt_half = _bits(np.sqrt(0.5), fmt, ifmt)

    def codegen(context, builder, signature, args):
        fty, ity = context.get_value_type(k), ir.IntType(nbits)
        ix = builder.add(builder.bitcast(args[0], ity),
                         ir.Constant(ity, _bits(1.0, fmt, ifmt) - sqrt_half))
        if want_exponent:
            e = builder.sub(builder.ashr(ix, ir.Constant(ity, mant)), ir.Constant(ity, bias))
            as_float = builder.add(e, ir.Constant(ity, _bits(shift, fmt, ifmt)))
            return builder.fsub(builder.bitcast(as_float, fty), ir.Constant(fty, shift))
        low = builder.and_(ix, ir.Constant(ity, (1 << mant) - 1))
        return builder.bitcast(builder.add(low, ir.Constant(ity, sqrt_half)), fty)
    return codegen


@intrinsic
def _exponent_of(typingctx, u):
    return u(u), _log_split_codegen(u, True)


@intrinsic
def _mantissa_of(typingctx, u):
    return u(u), _log_split_codegen(u, False)


@intrinsic
def _prefetch(typingctx, array, index):
    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = builder.gep(arr.data, [args[1]])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(pointer, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.none(array, index), codegen


def _vector_width_intrinsic(bits):
    @intrinsic
    def vector_width(typingctx):
        def codegen(context, builder, signature, args):
            # llvmlite validates attribute names against a fixed list without key-value
            # attributes
            set.add(builder.function.attributes, f'"prefer-vector-width"="{bits}"')
            return context.get_dummy_value()
        return types.none(), codegen
    return vector_width


_wide_vectors = _vector_width_intrinsic(512)
_narrow_vectors = _vector_width_intrinsic(256)


@intrinsic
def _stream_line(typingctx, dst, i, src, j):
    def codegen(context, builder, signature, args):
        dst_array = context.make_array(signature.args[0])(context, builder, args[0])
        src_array = context.make_array(signature.args[2])(context, builder, args[2])
        item = signature.args[0].dtype
        vector = ir.VectorType(context.get_value_type(item), 64 // (item.bitwidth // 8))
        source = builder.bitcast(builder.gep(src_array.data, [args[3]]), vector.as_pointer())
        target = builder.bitcast(builder.gep(dst_array.data, [args[1]]), vector.as_pointer())
        store = builder.store(builder.load(source, align=item.bitwidth // 8), target, align=64)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()
    return types.none(dst, i, src, j), codegen


@intrinsic
def _store_fence(typingctx):
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")  # mfence on x86: orders the weakly-ordered non-temporal stores
        return context.get_dummy_value()
    return types.none(), codegen


def _int64_at(builder, address, index):
    return builder.gep(builder.inttoptr(address, ir.IntType(64).as_pointer()), [index])


@intrinsic
def _atomic_load(typingctx, address, index):
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_int64_at(builder, *args), "acquire", 8)
    return types.int64(types.int64, types.int64), codegen


@intrinsic
def _atomic_store(typingctx, address, index, value):
    def codegen(context, builder, signature, args):
        builder.store_atomic(args[2], _int64_at(builder, args[0], args[1]), "release", 8)
        return context.get_dummy_value()
    return types.none(types.int64, types.int64, types.int64), codegen


@intrinsic
def _atomic_max(typingctx, address, index, value):
    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("max", _int64_at(builder, args[0], args[1]), args[2], "seq_cst")
    return types.int64(types.int64, types.int64, types.int64), codegen


@intrinsic
def _pointer_at(typingctx, address, like):
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(like).as_pointer())
    return types.CPointer(like)(types.int64, like), codegen


@intrinsic
def _call_task(typingctx, task, args, start, stop):
    def codegen(context, builder, signature, arguments):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(64)] * 3)
        builder.call(builder.inttoptr(arguments[0], fnty.as_pointer()), arguments[1:])
        return context.get_dummy_value()
    return types.none(types.int64, types.int64, types.int64, types.int64), codegen


@intrinsic
def _cycle_counter(typingctx):
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@intrinsic
def _spin_pause(typingctx):
    def codegen(context, builder, signature, args):
        _emit_pause(builder)
        return context.get_dummy_value()
    return types.none(), codegen


def _emit_pause(builder):
    import llvmlite.binding as llvm
    if llvm.get_process_triple().startswith(("x86_64", "i386", "i686")):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                            "llvm.x86.sse2.pause")
        builder.call(fn, [])


@intrinsic
def _yield_cpu(typingctx):
    def codegen(context, builder, signature, args):
        if sys.platform != "win32":  # (the C library's sched_yield, found when the code is linked)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                "sched_yield")
            builder.call(fn, [])
        else:  # (no sched_yield: a spin-wait hint, as spin_pause)
            _emit_pause(builder)
        return context.get_dummy_value()
    return types.none(), codegen


# Numba's CPU target and numba-cuda both read numba.extending's registrations (target "generic").
# Shared, they miscompiled on the GPU (numba 0.68, numba-cuda 0.30.4; the PTX showed it): once the
# CPU backend had compiled gelu in the process, numba-cuda compiled normal_tail_scaled's
# fma(t, p, (t * dl) * p) as fma(0, p, ...), and an overload inlined in Numba's IR (inline="always")
# lost an argument even alone: expm1_reduced's fma(r * r, q, r) became fma(r * r, q, 0), the
# caller's r deleted (which zero-fills it) before the inlined body read it. So every function is
# registered for the CPU target here, and for numba-cuda's own registry by register_cuda, without
# IR inlining there (NVVM inlines these small functions).
_OVERLOADS = []  # (function of kernels/math.py, implementation)
_JITABLE = []  # functions compiled from their own source (kernels/math.py, registry.py)
_JITABLE_OPTIONS = {"forceinline": True}


def _overload(fn):
    """Implement fn for Numba's CPU target, inlined at the level of Numba's IR (so that constant
    selections such as is_single fold away before LLVM sees them), and remember it for CUDA."""
    def decorate(impl):
        _OVERLOADS.append((fn, impl))
        return overload(fn, inline="always", target="cpu")(impl)
    return decorate


def _as_itself(fn):
    def implementation(*args, **kwargs):
        return fn
    return implementation


def _jitable(fn):
    """numba.extending.register_jitable(forceinline=True, error_model="numpy") for the CPU target
    only. error_model="numpy": no ZeroDivisionError check on each / (it made calls that could
    raise, which LLVM neither inlined nor vectorized); forceinline: no call left in a loop."""
    _JITABLE.append(fn)
    overload(fn, jit_options={**_JITABLE_OPTIONS, "error_model": "numpy"}, strict=False,
             target="cpu")(_as_itself(fn))


_cuda_registered = False


def register_cuda():
    """The same functions for numba-cuda (called by kernels/_cuda_jit.py when it is imported)."""
    global _cuda_registered
    if _cuda_registered:
        return
    from numba.cuda.descriptor import cuda_target
    from numba.cuda.extending import overload as cuda_overload
    # numba-cuda also takes in numba.extending's registrations of global functions whatever their
    # target (the CPU ones above), merging them with its own; take them in now and drop ours
    typing = cuda_target.typing_context
    typing.refresh()
    for fn in [fn for fn, _ in _OVERLOADS] + _JITABLE:
        if typing._lookup_global(fn) is not None:
            typing._remove_global(fn)
    for fn, impl in _OVERLOADS:
        cuda_overload(fn, target="cuda")(impl)
    for fn in _JITABLE:
        cuda_overload(fn, jit_options=_JITABLE_OPTIONS, strict=False, target="cuda")(
            _as_itself(fn))
    _cuda_registered = True


def _register():
    @_overload(m.fma)
    def _fma_impl(a, b, c):
        if isinstance(a, types.Float):
            return lambda a, b, c: _fma(a, b, c)

    @_overload(m.fmax)
    def _fmax_impl(a, b):
        if isinstance(a, types.Float) and a == b:
            return lambda a, b: _fmax(a, b)

    @_overload(m.pow2_shifted)
    def _pow2_shifted_impl(ks, offset):
        if isinstance(ks, types.Float) and ks == offset:
            return lambda ks, offset: _pow2_shifted(ks, offset)

    @_overload(m.exponent_of)
    def _exponent_impl(u):
        if isinstance(u, types.Float):
            return lambda u: _exponent_of(u)

    @_overload(m.mantissa_of)
    def _mantissa_impl(u):
        if isinstance(u, types.Float):
            return lambda u: _mantissa_of(u)

    @_overload(m.prefetch)
    def _prefetch_impl(array, index):
        return lambda array, index: _prefetch(array, index)

    @_overload(m.stream_line)
    def _stream_line_impl(dst, i, src, j):
        if isinstance(dst, types.Array) and isinstance(src, types.Array) and dst.dtype == src.dtype:
            return lambda dst, i, src, j: _stream_line(dst, i, src, j)

    @_overload(m.store_fence)
    def _store_fence_impl():
        return lambda: _store_fence()

    @_overload(m.atomic_load)
    def _atomic_load_impl(address, index):
        return lambda address, index: _atomic_load(address, index)

    @_overload(m.atomic_store)
    def _atomic_store_impl(address, index, value):
        return lambda address, index, value: _atomic_store(address, index, value)

    @_overload(m.atomic_max)
    def _atomic_max_impl(address, index, value):
        return lambda address, index, value: _atomic_max(address, index, value)

    @_overload(m.array_at)
    def _array_at_impl(address, n, like):
        return lambda address, n, like: numba.carray(_pointer_at(address, like), n)

    @_overload(m.call_task)
    def _call_task_impl(task, args, start, stop):
        return lambda task, args, start, stop: _call_task(task, args, start, stop)

    @_overload(m.cycle_counter)
    def _cycle_counter_impl():
        return lambda: _cycle_counter()

    @_overload(m.spin_pause)
    def _spin_pause_impl():
        return lambda: _spin_pause()

    @_overload(m.yield_cpu)
    def _yield_cpu_impl():
        return lambda: _yield_cpu()

    _jitable(m.aligned_head)
    _jitable(m.stream_block)

    @_overload(m.wide_vectors)
    def _wide_vectors_impl():
        return lambda: _wide_vectors()

    @_overload(m.narrow_vectors)
    def _narrow_vectors_impl():
        return lambda: _narrow_vectors()

    @_overload(m.cached_map_vectors)
    def _cached_map_vectors_impl():
        if m.WIDE_CACHED_MAPS:
            return lambda: _wide_vectors()
        return lambda: _narrow_vectors()

    @_overload(m.is_single)
    def _is_single(x):
        if x == types.float32:
            return lambda x: True
        return lambda x: False

    @_overload(m.like)
    def _like(x, c):
        if x == types.float32:
            return lambda x, c: np.float32(c)
        return lambda x, c: np.float64(c)

    @_overload(m.pick)
    def _pick(x, c32, c64):
        if x == types.float32:
            return lambda x, c32, c64: np.float32(c32)
        return lambda x, c32, c64: np.float64(c64)

    @_overload(m.horner)
    def _horner(x, coefficients):
        # Straight-line FMAs: a loop over the tuple is only unrolled by LLVM for short tuples,
        # and a loop left in the body stops the vectorizer (float64 gelu backward stayed scalar).
        if not isinstance(x, types.Float) or not isinstance(coefficients, types.BaseTuple):
            return None
        lines = ["def impl(x, coefficients):", "    acc = m.like(x, coefficients[0])"]
        lines += [f"    acc = m.fma(acc, x, m.like(x, coefficients[{i}]))"
                  for i in range(1, len(coefficients))]
        lines.append("    return acc")
        namespace = {"m": m}
        exec("\n".join(lines), namespace)
        return namespace["impl"]

    for fn in m._SCALAR_FUNCTIONS:
        if fn is not m.horner:
            _jitable(fn)


_register()
