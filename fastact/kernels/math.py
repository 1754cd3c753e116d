"""Vectorizable math primitives, written once for float32 and float64.

Numba >= 0.62 compiles ``np.exp`` in a loop to a scalar libm call that LLVM cannot widen, so the
kernels use these instead: branch-free FMA code (selects, no data-dependent branches) that the loop
vectorizer turns into AVX2/AVX-512 instructions. Every function here is plain Python: it runs in
the interpreter (and in numba-cuda's simulator) as written, and ``fastact.kernels._jit`` registers
it with Numba's CPU target and, separately, with numba-cuda's on first use, so importing fastact
does not import Numba.

Dtype-generic code: a literal like ``0.5`` is float64 in Numba and would silently promote a
float32 computation, so constants go through ``like(x, c)`` / ``pick(x, c32, c64)``, which compile
to constants of x's type. ``is_single(x)`` is a compile-time constant.

Error bounds, measured by tests/test_math.py against mpmath over the whole domain (inputs on a
dense grid and tails): listed beside each primitive, in units in the last place (ULP) of the
result's type, float32 / float64.
"""
import math
from fractions import Fraction

import numpy as np

_SCALAR_FUNCTIONS = []  # everything in this package that kernels call, for _jit.register()


def scalar(fn):
    """Mark fn as kernel code: compiled by Numba (CPU and CUDA) from this same Python source."""
    _SCALAR_FUNCTIONS.append(fn)
    return fn


# --- primitives with a compiled implementation in _jit.py (LLVM intrinsics) ----------------------

def fma(a, b, c):
    """a*b + c with one rounding (llvm.fma; the interpreter fallback is exact too)."""
    if isinstance(a, np.float32):
        return np.float32(np.float64(a) * np.float64(b) + np.float64(c))  # exact product in f64
    if a == 0 or b == 0:  # an exact zero product: Fraction would lose its sign (fma(-0, 1, -0))
        return a * b + c
    try:
        return type(a)(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))
    except (OverflowError, ValueError):  # inf or nan
        return a * b + c


def fmax(a, b):
    """The larger of a and b, the other one if either is NaN (llvm.maxnum when compiled: a max
    reduction the loop vectorizer handles; a select on a comparison it left scalar)."""
    return np.fmax(a, b)


def prefetch(array, index):
    """Hint the CPU to bring array[index]'s cache line in (llvm.prefetch when compiled; nothing in
    the interpreter). Out-of-range indices are harmless: a prefetch never faults."""


# An output this large (bytes, per call) is written with non-temporal stores (kernels/loops.py):
# past the caches, which it would overflow anyway, saving the read of each line a store needs.
STREAM_BYTES = 1 << 25
# An array this large (bytes, the whole array) is beyond the caches: the row kernels that outrun
# the hardware prefetcher prefetch ahead of their loops (kernels/loops.py, prefetch_ahead); on
# arrays that fit in L2 the same prefetches cost 5-7%.
PREFETCH_BYTES = 1 << 22


def _software_prefetch():
    """Whether the streaming loops prefetch their inputs ahead of the hardware prefetcher (and the
    softmax / log_softmax rows their next rows): FASTACT_PREFETCH=1/0 (or true/false, yes/no,
    on/off), else off on AMD CPUs (and Hygon's, Zen-based; not measured) and on elsewhere
    (measured on Intel only). On the Intel Xeon VM these prefetches were the streaming loops'
    largest gain (2^26, per thread: silu forward 0.71 -> 1.31, gelu 0.48 -> 0.70 Gelem/s;
    log_softmax backward, 8 rotating 2^20 sets, 2 threads: 13 -> 16-20 GB/s); on the AMD EPYC
    (Zen 4) VM the same loops ran faster without them (2^26, 2 threads: the exponential forwards
    +5-30%, log_softmax backward +33-39%, both backends; NOTES.md, work log). maxout's 4 KiB-ahead
    prefetch (loops.maxout_forward_groups) is not one of these: it helped on both. The C
    backend's loops follow the same setting (bindings/_generate.py, template.c). Read from
    /proc/cpuinfo (Linux) or PROCESSOR_IDENTIFIER (Windows): nothing slower at import."""
    forced = _forced("FASTACT_PREFETCH")
    return not _amd_cpu() if forced is None else forced


def _forced(variable):
    """An environment setting's True (1, true, yes, on) or False (0, false, no, off); None when
    absent (the CPU vendor decides; fastact._env)."""
    from .._env import flag
    return flag(variable)


def _amd_cpu():
    """Whether this is an AMD CPU (or Hygon's, Zen-based; not measured), from /proc/cpuinfo's
    first vendor_id line (Linux) or PROCESSOR_IDENTIFIER (Windows)."""
    import os
    import sys
    vendor = ""
    if sys.platform == "win32":  # e.g. "AMD64 Family 25 Model 97 Stepping 2, AuthenticAMD"
        vendor = os.environ.get("PROCESSOR_IDENTIFIER", "")
    else:
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                vendor = next((line for line in f if line.startswith("vendor_id")), "")
        except OSError:
            pass
    return any(name in vendor for name in ("AuthenticAMD", "HygonGenuine"))


def _wide_cached_maps():
    """Whether the memory-bound backwards' loop for outputs below STREAM_BYTES (loops.map_2_cached)
    takes 512-bit vectors: FASTACT_WIDE_MAPS=1/0, else on AMD CPUs only. On the AMD EPYC (Zen 4)
    VM, 2^20 float32 (in its L3), 2 threads, against PyTorch in the same process: hardtanh
    backward 0.72-0.76x -> 0.84-0.85x, relu6 backward 0.72-0.73x -> 0.91-0.94x, the other light
    backwards within noise (GCC's 512-bit loops of the C backend were 1.3x Numba's there), while
    the same width lost up to 25% on the streamed loop at 2^26 (which keeps 256 bits) and did
    not help the forwards; on the Intel Xeon VM 512-bit memory-bound loops ran 10-25% slower in
    cache (narrow_vectors). NOTES.md, work log."""
    forced = _forced("FASTACT_WIDE_MAPS")
    return _amd_cpu() if forced is None else forced


# Read once, at import: compiled kernels take it as a constant (kernels/cpu.py keys its cache
# on it, and bindings/_build.py the C build's key); changing it later in a process is unsupported.
SOFTWARE_PREFETCH = _software_prefetch()
WIDE_CACHED_MAPS = _wide_cached_maps()  # the same: a constant in the compiled loops


def aligned_head(out):
    """How many elements of out come before its first 64-byte boundary; all of them when no
    element starts on one (an address that is not a multiple of the item size)."""
    address = out.ctypes.data
    if address % out.itemsize:
        return out.size
    return min(out.size, (64 - address % 64) % 64 // out.itemsize)


def stream_line(dst, i, src, j):
    """dst[i:i + L] = src[j:j + L] for the L elements of one 64-byte line, as a non-temporal store
    (llvm store !nontemporal when compiled): dst + i must be 64-byte aligned."""
    n = 64 // dst.itemsize
    dst[i:i + n] = src[j:j + n]


def stream_block(dst, i, src):
    """dst[i:i + 512] = src[:512] by non-temporal stores, dst + i on a 64-byte boundary (a fixed
    size: the 32 or 64 stores are straight-line code; a loop to src.size measured 10% slower)."""
    lanes = 64 // dst.itemsize
    for j in range(0, 512, lanes):
        stream_line(dst, i + j, src, j)


def store_fence():
    """Make the non-temporal stores before it visible before what follows (mfence when
    compiled; they are weakly ordered)."""


def atomic_load(address, index):
    """The int64 at address + 8 * index, read afresh each time (an atomic load with acquire order
    when compiled: a plain load in a waiting loop may be hoisted out of it). The thread pool's
    state (fastact/_threads.py) is passed to native code as an address, one integer type for
    both backends and for every call."""
    import ctypes
    return ctypes.c_int64.from_address(address + 8 * index).value


def atomic_store(address, index, value):
    """Store value to the int64 at address + 8 * index, with release order when compiled: the
    stores before it (a chunk's output) are visible to a thread that sees it."""
    import ctypes
    ctypes.c_int64.from_address(address + 8 * index).value = value


def atomic_max(address, index, value):
    """Raise the int64 at address + 8 * index to value if it is lower, atomically (sequentially
    consistent) when compiled; returns what it held before. The thread pool's claims
    (fastact/_threads.py, Taking back)."""
    import ctypes
    cell = ctypes.c_int64.from_address(address + 8 * index)
    old = cell.value
    if old < value:
        cell.value = value
    return old


def array_at(address, n, like):
    """The n elements of like's type at address, as an array (numba.carray when compiled): a
    native task's arguments and arrays (kernels/loops.py)."""
    import ctypes
    dtype = np.dtype(type(like))
    return np.frombuffer((ctypes.c_char * (n * dtype.itemsize)).from_address(address), dtype)


def call_task(task, args, start, stop):
    """Call the C function at address task as task(args, start, stop), three int64s (a native
    task of the thread pool: kernels/loops.py)."""
    import ctypes
    ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)(task)(args, start, stop)


def cycle_counter():
    """The CPU's time-stamp counter (llvm.readcyclecounter: rdtsc on x86) when compiled; the
    interpreter's nanosecond clock otherwise."""
    import time
    return time.perf_counter_ns()


def spin_pause():
    """The spin-wait hint (pause on x86: saves power and the other hyperthread's issue slots, and
    leaves the loop without a memory-order flush); nothing elsewhere and in the interpreter."""


def yield_cpu():
    """Give the CPU to another thread that is ready to run, if there is one (sched_yield; compiled
    for Windows, which has none, the spin-wait hint): the thread pool's idle workers
    (fastact/_threads.py, Idling)."""
    import os
    if hasattr(os, "sched_yield"):
        os.sched_yield()


def wide_vectors():
    """Let the loops of the calling kernel use the CPU's widest vectors: LLVM, like GCC, keeps to
    256-bit registers on AVX-512 CPUs unless told otherwise (the function attribute
    prefer-vector-width=512 when compiled; nothing in the interpreter). The exponential kernels are
    bound by the vector ports, and 16 lanes on two ports beat 8 on three: sigmoid 1.9 -> 2.3,
    logsigmoid 1.3 -> 1.8 Gelem/s per core in cache (fastact/bench/NOTES.md)."""


def cached_map_vectors():
    """The vector width of the memory-bound backwards' loop for outputs below STREAM_BYTES:
    wide_vectors where WIDE_CACHED_MAPS, else narrow_vectors (nothing in the interpreter)."""


def narrow_vectors():
    """Keep the loops of the calling kernel to 256-bit vectors (prefer-vector-width=256 when
    compiled; nothing in the interpreter). LLVM's own choice depends on the CPU: 256 bits on Intel's
    AVX-512 CPUs (the prefer-256-bit tuning), 512 on AMD's Zen 4. The elementwise loops bound by
    memory were measured 10-25% slower in cache with 512-bit vectors on Intel (NumPy's arrays
    start 16 bytes past a 64-byte boundary, so every zmm access splits a line), so the elementwise
    maps that do not ask for wide_vectors ask for this: the same code on every x86 CPU. The row
    kernels (prelu, maxout) keep LLVM's choice: on Zen 4, maxout's backward ran 2.5x slower at 256
    bits than at its default 512 (NOTES)."""


def is_single(x):
    """True when x is float32 (a compile-time constant in kernels)."""
    return isinstance(x, np.float32)


def like(x, c):
    """The constant c in x's floating type."""
    return np.float32(c) if isinstance(x, np.float32) else np.float64(c)


def pick(x, c32, c64):
    """c32 for float32 x, c64 for float64 x, in x's type."""
    return np.float32(c32) if isinstance(x, np.float32) else np.float64(c64)


def pow2_shifted(ks, offset):
    """2**(k + offset) for k given in the shifter form ks = k + SHIFT (exp_reduce's: k is in the
    low mantissa bits of ks) and a constant integral offset, k + offset in the normal exponent
    range: built from ks's bits with the offset in the integer constant, where pow2(k + offset)
    would add the offset and the shifter again as two float additions."""
    if ks != ks:  # NaN (from a NaN input): the caller's product is NaN whatever this returns
        return ks
    shift = SHIFT32 if isinstance(ks, np.float32) else SHIFT64
    return type(ks)(np.ldexp(type(ks)(1), int(ks - type(ks)(shift)) + int(offset)))


@scalar
def pow2(k):
    """2**k for an integral-valued float k in the normal exponent range: k put in the shifter
    form, then pow2_shifted (one float addition, then integer operations on the bits)."""
    return pow2_shifted(k + pick(k, SHIFT32, SHIFT64), like(k, 0.0))


def _log_split(u):
    f, e = np.frexp(u)  # u = f * 2**e, f in [1/2, 1)
    return (f, e) if f >= math.sqrt(0.5) else (2 * f, e - 1)


def exponent_of(u):
    """e such that u = m * 2**e with m in [sqrt(1/2), sqrt(2)); u positive, finite and normal."""
    return type(u)(_log_split(u)[1])


def mantissa_of(u):
    """m in [sqrt(1/2), sqrt(2)) with u = m * 2**exponent_of(u)."""
    return type(u)(_log_split(u)[0])


# --- helpers ---------------------------------------------------------------------------------------

@scalar
def clamp(x, lo, hi):
    """min(max(x, lo), hi) that lets NaN through (x < lo and x > hi are both false for NaN)."""
    x = lo if x < lo else x
    return hi if x > hi else x


@scalar
def sixth(t):
    """t / 6 correctly rounded without a division, for t = +0, NaN and finite |t| >= 2^-100 (-0
    gives +0, +-inf NaN: callers clamp t):
    Markstein's correction of y = t * RN(1/6), q = RN(y + r RN(1/6)) with the residual r = t - 6 y
    exact by FMA, is the correctly rounded quotient whenever y is within an ulp of it (it is: two
    roundings of half an ulp) and nothing underflows. Checked over every float32 t in [2^-100, 6]
    and 10^8 random float64 (tests/test_math.py); below ~2^-125 in float32 the residual's
    underflow breaks it, but hardsigmoid's t = clamp(x + 3, 0, 6) is 0 or at least 2^-22 (2^-51
    in float64). Error: 0.5 ulp / 0.5 ulp. Why: a GPU's div.rn is a sequence with a slow path; on
    an H100 hardsigmoid's forward with one 16-byte vector a thread ran at 2655 GB/s dividing and
    3025 with this (PyTorch's, which multiplies by 1/6 and rounds twice, 3011; NOTES). Without
    hardware FMA (the C backend's portable build, an x86 CPU before Haswell) each fma is a libm
    call, as in every exponential kernel, and this loop no longer vectorizes."""
    c = like(t, 1.0 / 6.0)
    y = t * c
    return fma(fma(-y, like(t, 6.0), t), c, y)


@scalar
def horner(x, coefficients):
    """Polynomial with coefficients from the highest degree down, by FMA."""
    acc = like(x, 0.0)
    for c in coefficients:
        acc = fma(acc, x, like(x, c))
    return acc


@scalar
def two_prod(a, b):
    """(p, e) with p = fl(a*b) and p + e == a*b exactly (FMA)."""
    p = a * b
    return p, fma(a, b, -p)


@scalar
def two_sum(a, b):
    """(s, e) with s = fl(a+b) and s + e == a+b exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


# --- exp ------------------------------------------------------------------------------------------

LN2 = (0.6931471824645996, -1.9046542121259336e-09, 0.6931471805599453, 2.3190468138462996e-17)
# ln2 = short + rest, the short part with 15 (f32) / 40 (f64) significant bits, so that k times it
# is exact for |k| < 2**9 / 2**12 (reduce_product): (short, rest) for f32, then for f64
LN2_SHORT = (0.693145751953125, 1.428606765330187e-06, 0.6931471805592082, 7.371002565167799e-13)
LOG2E = 1.4426950408889634
SHIFT32 = 12582912.0  # 1.5 * 2**23: x + SHIFT - SHIFT rounds x to an integer (|x| < 2**22)
SHIFT64 = 6755399441055744.0  # 1.5 * 2**52
# e^r = 1 + r + r^2 q(r) on |r| <= ln2/2; least-squares fits at Chebyshev nodes, relative error of
# the polynomial 1.0e-8 (f32, 0.08 ulp) and 2.9e-17 (f64, 0.26 ulp) with rounded coefficients.
EXP_Q32 = (0.0013893831055611372, 0.00836312584578991, 0.041666943579912186,
           0.16666577756404877, 0.5)
EXP_Q64 = (2.1638023906116968e-09, 2.5112845331567674e-08, 2.755514839708109e-07,
           2.7557234832700357e-06, 2.4801589533089977e-05, 0.00019841269893447832,
           0.001388888888794185, 0.008333333333319978, 0.04166666666666771,
           0.16666666666666669, 0.49999999999999983)


@scalar
def round_to_integer(x):
    """Nearest integer (ties to even) as a float, for |x| < 2**22 (f32) / 2**51 (f64)."""
    shift = pick(x, SHIFT32, SHIFT64)
    return (x + shift) - shift


@scalar
def exp_reduce(x):
    """(ks, r) with x = k*ln2 + r, k integral, |r| <= ln2/2 + tiny (Cody-Waite: r exact before the
    lo part), for |x| < 2**21 (f32) / 2**50 (f64). k is returned in the shifter form ks = k + SHIFT
    (k in the low mantissa bits, the form round_to_integer passes through): pow2_shifted builds
    2**k from it directly, and every exp_parts* k below is this form. One FMA rounds x log2e to an
    integer (a multiply and two additions before; ties may go the other way, r stays in range)."""
    shift = pick(x, SHIFT32, SHIFT64)
    ks = fma(x, like(x, LOG2E), shift)
    k = ks - shift
    r = fma(k, -pick(x, LN2[0], LN2[2]), x)
    return ks, fma(k, -pick(x, LN2[1], LN2[3]), r)


@scalar
def expm1_reduced(r):
    """e^r - 1 for |r| <= ln2/2 + tiny, accurate relative to the result (r + r^2 q(r))."""
    if is_single(r):
        q = horner(r, EXP_Q32)
    else:
        q = horner(r, EXP_Q64)
    return fma(r * r, q, r)


@scalar
def scale_by_pow2(p, ks):
    """p * 2**k for integral k in [-1076, 1024] given as ks = k + SHIFT (exp_reduce), rounding
    once even into subnormals or to inf."""
    k = ks - pick(p, SHIFT32, SHIFT64)
    k_half = round_to_integer(k * like(k, 0.5))
    return p * pow2(k_half) * pow2(k - k_half)


@scalar
def scale_by_pow2_nonpositive(p, ks):
    """p * 2**k for integral k in [-190, 63] (f32) / [-1622, 423] (f64), given as ks = k + SHIFT
    (exp_reduce), where 2**(k + 64) (f64: 600) is a normal number: the exponent of exp of a
    non-positive argument (exp_parts_q's k >= -171 / -1097), or of mish's e^x for x <= 20 / 40.
    One exponent-bit construction and a constant factor, 2**(k + 64) * 2**-64, instead of
    splitting k in halves; the same single rounding into the subnormals (15% off sigmoid)."""
    two_k = pow2_shifted(ks, pick(p, 64.0, 600.0))
    return p * two_k * pick(p, 5.421010862427522e-20, 2.409919865102884e-181)


@scalar
def exp_parts_q(hi, lo):
    """(q, k) with exp(hi + lo) = (1 + q) * 2**k, 1 + q in [0.7, 1.42], k integral (for |lo| <=
    ulp(hi)) and carried in exp_reduce's shifter form; q = -1 where exp is 0. The pair lets an
    argument carried as a double-word keep its full precision (exp multiplies the relative error
    of its argument by |argument|), and a caller
    applies 1 + q to a factor v unrounded, fma(v, q, v), before the final scaling: c * exp(x) is
    then accurate where exp(x) alone would be subnormal, and no rounding of 1 + q (up to 1 ulp)."""
    lowest = pick(hi, -118.0, -760.0)  # exp is 0 below, even times a factor up to 2**20
    x = clamp(hi, lowest, pick(hi, 176.0, 1418.0))  # inf above, even times a factor down to 2**-80
    # beyond the clamp lo is meaningless (and can be huge); -0.0, which adding is no operation at
    # all: where a caller's lo is the constant -0.0 the select then folds away, where +0.0 it
    # had stayed as a compare, an add and a blend (sigmoid forward 36 -> 33 instructions)
    lo = lo if x == hi else like(hi, -0.0)
    q, k = exp_parts_q_in_range(x, lo)
    return (like(hi, -1.0) if hi < lowest else q), k


@scalar
def exp_parts_q_bounded_above(hi, lo):
    """exp_parts_q for hi that cannot exceed its upper clamp (176 f32 / 1418 f64), e.g. x <= 0 or
    an argument clamped lower, or NaN: that clamp is left out (a vminps in Numba's loops, compares
    and blends in GCC's). Used by exp_nonpositive (softplus and logsigmoid forwards, +5% Numba,
    +9-14% C in cache), by C's mish (+8-16%; Numba's was 3% slower with it) and by the sigmoid,
    silu and silu backward of both backends (Numba +2-5%, 2026-11-23; C, where GCC had first
    if-converted them differently with it and duplicated divisions (sigmoid forward -35%), on the
    later code +7-32%: one thread in L1, sigmoid forward 0.366 -> 0.327 ns per element, silu
    0.422 -> 0.393, silu backward 0.559 -> 0.498, softplus backward 0.499 -> 0.379, logsigmoid
    backward 0.382 -> 0.345; 2026-11-24). It repeats exp_parts_q's lines on
    purpose: exp_parts_q as its upper clamp followed by this function compiled worse (sigmoid
    forward 64 -> 74 instructions a vector in Numba, 67 -> 87 in C; review, 19:00 UTC)."""
    lowest = pick(hi, -118.0, -760.0)
    x = lowest if hi < lowest else hi
    lo = lo if x == hi else like(hi, -0.0)  # (see exp_parts_q)
    q, k = exp_parts_q_in_range(x, lo)
    return (like(hi, -1.0) if hi < lowest else q), k


@scalar
def exp_parts_bounded_above(hi, lo):
    """exp_parts for hi within exp_parts_q_bounded_above's range: p = 1 + q of that."""
    q, k = exp_parts_q_bounded_above(hi, lo)
    return q + like(hi, 1.0), k


@scalar
def exp_parts_q_in_range(hi, lo):
    """exp_parts_q without its clamps, for a caller whose argument is already within
    [-118, 176] (f32) / [-760, 1418] (f64) or NaN (the clamps cost 4 vector operations).
    lo = -0.0 where there is none: adding it is no operation at all once compiled."""
    ks, r = exp_reduce(hi)
    return expm1_reduced(r + lo), ks


@scalar
def reduce_product(u, w):
    """(ks, k, r1) for exp of a product u w in [-131, 0] (f32) / [-1124, 0] (f64), or NaN: k from
    the rounded product (also in the shifter form ks), r1 = fma(u, w, -k ln2s) with a short ln2s
    (k ln2s exact for |k| < 2**9 / 2**12): the exact u w - k ln2s, below ln2/2 + 2**-11, rounded
    once. u w - k ln2 = r1 - k ln2r up to r1's rounding; k >= -190 / -1622
    (scale_by_pow2_nonpositive's range)."""
    shift = pick(u, SHIFT32, SHIFT64)
    ks = fma(u * w, like(u, LOG2E), shift)
    k = ks - shift
    return ks, k, fma(u, w, -(k * pick(u, LN2_SHORT[0], LN2_SHORT[2])))


@scalar
def exp_parts_q_of_exact_product(u, w):
    """exp_parts_q(u w) for a product of two floats in reduce_product's range: the product is
    never formed as a double-word (two_prod, then exp_reduce on hi + lo: two operations more).
    Error: 1.5 ulp / 1.5 ulp for (1 + q) 2**k rounded (0.99 / 1.19 measured). gelu's
    exp(-x^2/2) = exp(na (-na/2))."""
    ks, k, r = reduce_product(u, w)
    return expm1_reduced(fma(k, -pick(u, LN2_SHORT[1], LN2_SHORT[3]), r)), ks


@scalar
def exp_parts_q_of_product(u, wh, wl):
    """exp_parts_q(u (wh + wl)) for a product with a double-word (wh > 0, |wl| <= ulp(wh)) in
    reduce_product's range, without the product's double-word (two_prod and the low parts' sum,
    then exp_reduce): the reduction fused into the product, r = r1 + fma(k, -ln2r, u wl), whose
    terms are below 2**-11 (|r|'s error about 2**-25.5 / 2**-54.5, as exp_reduce's r + lo).
    Error: 1.5 ulp / 1.5 ulp for (1 + q) 2**k rounded (as exp; 0.99 / 1.19 measured).
    gelu-tanh: 35 -> ~23 operations per 16 elements for exp(-|z|) with its clamps and signs."""
    ks, k, r = reduce_product(u, wh)
    r = r + fma(k, -pick(u, LN2_SHORT[1], LN2_SHORT[3]), u * wl)
    return expm1_reduced(r), ks


@scalar
def times_exp_parts(v, q, k):
    """v (1 + q) 2**k for k <= 0 (the parts of exp_parts_q): 1 + q joins v unrounded, fma(v, q, v),
    and the power of two comes last, so the product is accurate where it is subnormal."""
    return scale_by_pow2_nonpositive(fma(v, q, v), k)


@scalar
def finite(dy):
    """dy clamped to the finite range (NaN passes): the factor of a backward's small correction
    terms, so that dy = +-inf gives +-inf, not inf - inf or inf * 0 = NaN."""
    big = pick(dy, 3.4028234663852886e38, 1.7976931348623157e308)
    return clamp(dy, -big, big)


@scalar
def times_one_plus(dy, t, dyc):
    """dy (1 + t) with one rounding, fma(dyc, t, dy) with dyc = finite(dy), for a backward whose
    derivative is 1 + t (|t| < 1): dy * (1 + t) rounds 1 + t at the bottom of its binade and
    then the product at the top of its own, up to twice the derivative's ulps. At dy = +-0 the
    sum of two zeros is +0 unless both are -0: the caller gives the result dy's sign (copysign,
    as 1 + t > 0)."""
    return fma(dyc, t, dy)


@scalar
def times_exp_parts_by(dy, v, q, k, dyc):
    """dy v (1 + q) 2**k for k <= 0, a backward's dy times times_exp_parts(v, q, k), as
    fma(dy, u, dyc (u q)) with u = v 2**k and dyc = finite(dy): the product dy u is exact inside
    the FMA, so the roundings are the small term's two and one final one (the small term is at
    most 0.41 of the result), where dy * times_exp_parts rounds the derivative at the bottom of
    its binade and then the product at the top of its own: up to twice the derivative's ulps.
    u first: v alone can be large (mish's ratio reaches -117 at x = -118, where 2**k is tiny)
    and dy v overflow where the result does not; a subnormal u rounds once there, as in
    dy * times_exp_parts. At dy = +-0 the FMA's sum of two zeros is +0 unless both are -0: the
    caller gives the result dy u's sign (copysign; a select on dy = 0 instead cost gelu-tanh's
    backward 9%, copysign 2-3%)."""
    u = scale_by_pow2_nonpositive(v, k)
    return fma(dy, u, dyc * (u * q))


@scalar
def exp_parts(hi, lo):
    """(p, k) with exp(hi + lo) = p * 2**k: exp_parts_q with p = 1 + q rounded (0 where exp is 0)."""
    q, k = exp_parts_q(hi, lo)
    return q + like(hi, 1.0), k


@scalar
def exp_hilo(hi, lo):
    """exp(hi + lo). Error: 1 ulp (f32) / 1 ulp (f64), down into the subnormals; 0 below, inf above."""
    p, k = exp_parts(hi, lo)
    return scale_by_pow2(p, k)


@scalar
def exp_times(x, c):
    """c * e**x with c applied before the final scaling: accurate where the result is subnormal
    and finite where e**x alone would overflow. Error: 1.5 ulp / 1.5 ulp."""
    p, k = exp_parts(x, like(x, -0.0))  # -0.0: no low part (exp_parts_q)
    return scale_by_pow2(p * c, k)


@scalar
def exp_nonpositive(x):
    """e**x for x <= 0 (or NaN): exp with the cheaper scaling. Error: 1.5 ulp / 1.5 ulp."""
    p, k = exp_parts_bounded_above(x, like(x, -0.0))
    return scale_by_pow2_nonpositive(p, k)


@scalar
def exp_difference(v, best):
    """e^(v - best) for v <= best (a softmax row's maximum), the difference carried exactly as a
    double-word (two_sum): rounded, half an ulp of |v - best| would become a relative error of
    |v - best| / 2 ulp (32 ulp at v - best = -64 in float32). The error is exp_hilo's."""
    hi, lo = two_sum(v, -best)
    p, k = exp_parts(hi, lo)
    return scale_by_pow2_nonpositive(p, k)


@scalar
def exp(x):
    """e**x. Error: 1.5 ulp (f32) / 1.5 ulp (f64); exp(-inf) = 0, exp(inf) = inf, NaN -> NaN."""
    return exp_hilo(x, like(x, -0.0))


@scalar
def expm1_times(x, c):
    """c * (e**x - 1), accurate relative to the result near 0, with c applied before the final
    power-of-two scaling so that c < 1 keeps a result near the overflow threshold finite.
    Error: 1.5 ulp (f32) / 1.5 ulp (f64) for c = 1 (1.44 / 1.13 measured near x = 17 / 37, where
    2^k1 - 2^-k2 rounds), plus the rounding of the product otherwise.
    e^x - 1 = 2^k2 * (2^k1 * expm1(r) + (2^k1 - 2^-k2)) with k = k1 + k2: one FMA rounding, then an
    exact scaling; for k = 0 it is expm1(r) itself."""
    x = clamp(x, pick(x, -30.0, -50.0), pick(x, 176.0, 1418.0))  # 2^(k/2) stays a normal number
    ks, r = exp_reduce(x)
    k = ks - pick(x, SHIFT32, SHIFT64)
    k2 = round_to_integer(k * like(x, 0.5))
    s1 = pow2(k - k2)
    return (fma(s1, expm1_reduced(r), s1 - pow2(-k2)) * c) * pow2(k2)


@scalar
def expm1_bounded(x):
    """e**x - 1 for x in [-30, 18] (f32) / [-50, 38.2] (f64) or NaN, where k lies in [-44, 26] /
    [-73, 55]: the same fma(2**k, expm1(r), 2**k - 1) as expm1_times (2**k - 1 exact for
    |k| <= 24 / 53, and the same rounding beyond), without splitting the scaling, which only the
    overflow range needs: one power of two instead of three (tanh, elu). Error: 1.5 ulp / 1.5 ulp
    (1.44 / 1.13 measured, where 2**k - 1 rounds), bits of expm1_times(x, 1)."""
    ks, r = exp_reduce(x)
    s = pow2_shifted(ks, like(x, 0.0))
    return fma(s, expm1_reduced(r), s - like(x, 1.0))


@scalar
def expm1_nonpositive_times(x, c):
    """c * (e**x - 1) for x <= 0 or NaN (elu, selu: their lanes with x >= 0 are discarded, and take
    the clamp's 0): expm1_bounded on [-30, 0] (f32) / [-50, 0] (f64), one power of two; no
    overflow for c to prevent. Error: 1.5 ulp / 1.5 ulp for c = 1, plus the product's rounding
    (bits of expm1_times unless c * (e**x - 1) is subnormal or c * 2**22 overflows, where this
    one is the correctly rounded one)."""
    return expm1_bounded(clamp(x, pick(x, -30.0, -50.0), like(x, 0.0))) * c


@scalar
def expm1(x):
    """e**x - 1, accurate relative to the result near 0. Error: 1.5 ulp (f32) / 1.5 ulp (f64)."""
    return expm1_times(x, like(x, 1.0))


# --- log1p ----------------------------------------------------------------------------------------

# log(1+f) = f - f^2/2 + s*(f^2/2 + R(s^2)), s = f/(2+f), R(z) = sum 2 z^n/(2n+1) (fdlibm's form);
# |s| <= 0.1716 so the truncated series is below 2e-9 (f32, 4 terms) / 1e-18 (f64, 11 terms).
LOG_R32 = tuple(2.0 / (2 * n + 1) for n in range(4, 0, -1))
LOG_R64 = tuple(2.0 / (2 * n + 1) for n in range(11, 0, -1))


@scalar
def log1p(x):
    """log(1 + x) for x >= 0 (log_softmax needs it). Error: 1.5 ulp / 1.5 ulp.
    Written as log(u) + (x - (u - 1))/u with u = fl(1 + x): the second term restores the bits of x
    that the rounding of 1 + x dropped, so log1p(1e-30) is 1e-30."""
    xx = clamp(x, like(x, 0.0), pick(x, 1e38, 1e307))  # inf -> a finite u; the select below fixes it
    u = xx + like(x, 1.0)
    e = exponent_of(u)
    f = mantissa_of(u) - like(x, 1.0)
    s = f / (like(x, 2.0) + f)
    z = s * s
    if is_single(x):
        big_r = z * horner(z, LOG_R32)
    else:
        big_r = z * horner(z, LOG_R64)
    half_f2 = like(x, 0.5) * f * f
    log_m = f - (half_f2 - s * (half_f2 + big_r))
    correction = (xx - (u - like(x, 1.0))) / u
    y = fma(e, pick(x, LN2[0], LN2[2]), fma(e, pick(x, LN2[1], LN2[3]), correction) + log_m)
    return x if x > pick(x, 1e38, 1e307) else y


# log1p(x) = x Q(x) on [0, 1] (softplus needs no more: its argument is exp(-|x|)): a least-squares
# Chebyshev fit in float32, no division. Measured 0.9 ulp with FMA Horner in float32 (mpmath).
LOG1P_UNIT_Q32 = (0.0019794295076280832, -0.01315114926546812, 0.04092780873179436,
                  -0.0817866325378418, 0.12371236830949783, -0.1608460247516632,
                  0.19884996116161346, -0.2498636692762375, 0.3333248794078827,
                  -0.4999997913837433, 1.0)


# float64: log1p(x) on [0, 1] as log1p(u) = u + u^2 P(u) with u = x (x <= 1/2), or log 2 +
# log1p(u) with u = (x - 1) / 2 (exact) above: u in [-1/4, 1/2], where P (degree 19) was fitted for
# relative error by least squares on Chebyshev nodes (mpmath, 50 digits). 1.01 ulp measured
# (mpmath, 20k points; a single polynomial on [0, 1] reached 1.36 near x = 1, which made softplus
# 2.01 ulp). No division: on an H100 log1p's two float64 divisions a value made softplus's and
# logsigmoid's float64 forwards issue-bound at 0.84x / 0.77x of PyTorch's (NOTES, runs 27-28).
LOG1P_UNIT_P64 = (0.007892974475876075, -0.02895099582504716, 0.05038781060771346,
                  -0.059678054340737634, 0.06092036458321159, -0.06252620190979848,
                  0.06642486160598818, -0.07138077316921142, 0.07693411900304198,
                  -0.08333747600549755, 0.09090894575295769, -0.09999983420626515,
                  0.11111110628650915, -0.12500000353417176, 0.1428571430441406,
                  -0.1666666666271035, 0.19999999999789841, -0.25000000000020406,
                  0.33333333333334025, -0.49999999999999967)
LN2_64 = (0.6931471805599453, 2.3190468138462996e-17)  # log 2 = hi + lo, each rounded to nearest


@scalar
def log1p_unit(x):
    """log(1 + x) for x in [0, 1]. Error: 1.5 ulp / 1.5 ulp. Division-free polynomials: float32
    x Q(x) (log1p's two divisions made softplus the slowest kernel), float64 u + u^2 P(u) on a
    halved argument above 1/2."""
    if is_single(x):
        return x * horner(x, LOG1P_UNIT_Q32)
    upper = x > like(x, 0.5)
    u = (x - like(x, 1.0)) * like(x, 0.5) if upper else x
    y = fma(u, u * horner(u, LOG1P_UNIT_P64), u)
    return like(x, LN2_64[0]) + (like(x, LN2_64[1]) + y) if upper else y


# --- functions built from exp ---------------------------------------------------------------------

@scalar
def sigmoid(x):
    """1 / (1 + e^-x) from e = exp(-|x|) <= 1 (nothing overflows): r = 1 / (1 + e) for x >= 0
    and e r below, accurate relative to itself (no 1 - sigmoid cancellation; NaN: e r is NaN).
    Error: 3 ulp / 3 ulp; sigmoid(-100) is 3.7e-44 in float32, not 0."""
    p, k = exp_parts_bounded_above(-abs(x), like(x, -0.0))
    e = scale_by_pow2_nonpositive(p, k)
    r = like(x, 1.0) / (like(x, 1.0) + e)
    return r if x >= like(x, 0.0) else e * r


@scalar
def sigmoid_times(p, k, positive, c):
    """c * sigmoid(z) from exp(-|z|) = p 2**k (exp_parts, or a fused reduction such as
    exp_parts_q_of_product) and positive = z >= 0, with one rounding into the subnormals: for
    z < 0 it is (p c / (1 + e)) * 2**k with e = p * 2**k = exp(z), instead of c times a subnormal
    sigmoid (whose rounding error c would multiply). Error: 2 ulp / 2 ulp (with exp's)."""
    d = like(p, 1.0) + scale_by_pow2_nonpositive(p, k)
    q = (c if positive else p * c) / d  # one division: a select of two quotients computed both
    return q if positive else scale_by_pow2_nonpositive(q, k)


@scalar
def sigmoid_plus_scaled_derivative(q, k, positive, c, c_lo):
    """sigmoid(z) + c sigmoid(z) sigmoid(-z) from exp(-|z|) = (1 + q) 2**k (exp_parts_q or a fused
    reduction) and positive = z >= 0, for a finite c = c + c_lo (a double-word of z's type) with
    the sign of z. The derivative of x sigmoid(z(x)) is this with c = x z'(x) (silu: z = c = x).
    With v = exp(-|z|), over one denominator D = (1 + v)^2 = 1 + v (2 + v) (one rounding):
    (1 + v (1 + c)) / D for z >= 0, all terms positive, and v ((1 + c) + v) / D for z < 0, where
    1 + c is exact for c <= -0.5 and v joins unrounded and before the final scaling (accurate where
    subnormal). In the input's precision: float32 had a compensated 1/(1 + v) and r^2 (66
    instructions per 16 elements; 56 then) and, before that, float64 registers (half the
    forward's speed). Error: 3 ulp / 3 ulp of the terms' size."""
    one = like(q, 1.0)
    v = scale_by_pow2_nonpositive(q + one, k)
    one_plus_c = one + c
    numerator = fma(v, one_plus_c + c_lo, one) if positive else one_plus_c + (v + c_lo)
    ratio = numerator / fma(v, v + like(q, 2.0), one)
    return ratio if positive else times_exp_parts(ratio, q, k)


@scalar
def sigmoid_plus_scaled_derivative_compensated_by(dy, q, k, positive, c, c_lo):
    """dy (sigmoid(z) + c sigmoid(z) sigmoid(-z)) as sigmoid_plus_scaled_derivative, with the
    numerator n, the denominator D = (1 + v)^2 and their quotient carried as double-words: n = a + b
    by 2Sum (a = 1, b = v (1 + c + c_lo) for z >= 0; a = 1 + c, b = v + c_lo below), D = Dh + Dl
    (Fast2Sum of v + 2, then the FMA's residual), the quotient rh + rl from one reciprocal and the
    exact remainder fma(-rh, Dh, nh) + nl - rh Dl, and dy times it with one final rounding:
    fma(dy, rh, dyc rl) for z >= 0, fma(dy, uh, dyc (uh q + ul (1 + q))) below (u = r 2**k, as in
    times_exp_parts_by). The roundings of n, D and the quotient were 0.9-1.0 ulp each where
    gelu-tanh's derivative sits at the bottom of its binade, and dy * d counted them twice
    (4.03 ulp at x = -3.7322142, dy = -0.4245254, an H100 gpu_check's point; dy folded into the
    last product alone still gave 4.06 at x = -3.800582, dy = 1.0960611); 2.1 ulp now for every
    dy (16 per x on 600K x). It costs 39 instructions per 16 elements (80 -> 119) and 49% of
    gelu-tanh's backward in cache (13.3 -> 19.8 us at 2^14, one vector an iteration): silu, 3.45
    ulp with the plain form and near PyTorch's speed, keeps that."""
    one = like(q, 1.0)
    v = scale_by_pow2_nonpositive(q + one, k)
    one_plus_c = one + c
    a = one if positive else one_plus_c
    b = v * (one_plus_c + c_lo) if positive else v + c_lo
    nh, nl = two_sum(a, b)
    s2 = v + like(q, 2.0)
    e2 = (like(q, 2.0) - s2) + v
    dh = fma(v, s2, one)
    dl = fma(v, e2, fma(v, s2, one - dh))
    reciprocal = one / dh
    rh = nh * reciprocal
    rl = fma(-rh, dl, fma(-rh, dh, nh) + nl) * reciprocal
    dyc = finite(dy)
    uh, ul = scale_by_pow2_nonpositive(rh, k), scale_by_pow2_nonpositive(rl, k)
    fused = (fma(dy, rh, dyc * rl) if positive
             else fma(dy, uh, dyc * fma(uh, q, fma(ul, q, ul))))
    return math.copysign(fused, dy * (rh if positive else uh))  # (+-0: times_exp_parts_by)


@scalar
def tanh(x):
    """tanh(x) = sign(x) * expm1(2|x|) / (expm1(2|x|) + 2). Error: 3 ulp / 3 ulp; tanh(1e-8) = 1e-8.
    |x| is capped where tanh rounds to 1 (9 in f32, 19.1 in f64) so that e stays finite."""
    a = abs(x)
    a = pick(x, 9.0, 19.1) if a > pick(x, 9.0, 19.1) else a  # NaN passes
    e = expm1_bounded(a + a)
    return math.copysign(e / (e + like(x, 2.0)), x)


@scalar
def softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|). Error: 2 ulp / 2 ulp."""
    positive_part = like(x, 0.0) if x < like(x, 0.0) else x
    return positive_part + log1p_unit(exp_nonpositive(-abs(x)))


@scalar
def mish_times_x(x):
    """x tanh(softplus(x)) for x <= 20 (f32) / 40 (f64), above which tanh(softplus(x)) rounds to 1.
    With e = e^x = p 2**k and n = e (e + 2): tanh(softplus(x)) = n / (n + 2), written without
    cancellation as e (1 - e (e + 1) / (n + 2)) for x < 0, where x e (...) is formed before the
    final scaling (accurate where it is subnormal), and as 1 - 2 / (n + 2) for x >= 0. (The form
    e (e + 2) / (n + 2) rounds e + 2 and n + 2 apart: 4.1 ulp at x = -2.05 in float32.)
    Error: 2.5 ulp / 2.5 ulp."""
    xs = clamp(x, pick(x, -200.0, -1000.0), pick(x, 20.0, 40.0))
    p, k = exp_parts(xs, like(x, -0.0))  # (C: exp_parts_bounded_above, for GCC)
    e = scale_by_pow2_nonpositive(p, k)  # k <= 29 (f32) / 58 (f64): within its range
    negative = xs < like(x, 0.0)
    numerator = fma(e, e, e) if negative else like(x, 2.0)
    v = like(x, 1.0) - numerator / fma(e, e + like(x, 2.0), like(x, 2.0))
    return scale_by_pow2_nonpositive(p * xs * v, k) if negative else xs * v


# --- the normal distribution, for GELU --------------------------------------------------------------

# g(a) = Phi(-a) exp(a^2/2) = t P(2t - 1), t = 1/(1 + c a): near-minimax fits on the relative error,
# highest degree first. float32: c = 0.3, 10 terms, fit error 3.5e-9 on [0, 15] (2.4e-8 with these
# float32-exact coefficients). float64: c = 0.25, 24 terms, 2.9e-16 on [0, 40] with the compensated
# evaluation below (fitted for fastact with mpmath).
NORMAL_TAIL_C32 = 0.30000001192092896
NORMAL_TAIL_P32 = (
    -4.029030242236331e-05, 7.670227932976559e-05, 0.000280597188975662,
    -0.0005697004962712526, -0.0024234873708337545, 0.0018160304753109813,
    0.027760330587625504, 0.08654970675706863, 0.16457948088645935,
    0.22197061777114868)
NORMAL_TAIL_C64 = 0.25
NORMAL_TAIL_P64 = (
    1.6541113965384258e-10, -5.99489592400831e-10, -4.330331319673121e-10,
    4.7904555372219975e-09, -3.3695454426160072e-09, -2.1169075008152957e-08,
    3.875853268964481e-08, 6.778487419859508e-08, -2.55379361554791e-07,
    -1.5732980750007103e-07, 1.4800314339482983e-06, 1.7913196875699828e-07,
    -8.786166150201602e-06, -4.770564046851051e-07, 5.777373249957802e-05,
    3.3336076877663815e-05, -0.00040770461422331967, -0.0008699230917411029,
    0.0018850472416694249, 0.015099143722729289, 0.046630464489914696,
    0.09678435018555372, 0.15197416049297302, 0.18882128260393788)
INV_SQRT_2PI = (0.3989422917366028, 0.3989422804014327)  # 1/sqrt(2 pi) in f32, f64


@scalar
def normal_tail_scaled(a):
    """g(a) = Phi(-a) * exp(a^2/2) for 0 <= a <= 16 (f32) / 40 (f64) (Phi the standard normal CDF;
    g = erfcx(a/sqrt2)/2). Error: 2.5 ulp / 3 ulp. The compensated reciprocal: t = 1/(1 + c a)
    rounds away low bits of a that g is sensitive to (through t and s = 2t - 1), and dl restores
    them (exact 1/(1 + c a) = t (1 + dl) to first order): without it 5.9 ulp for gelu in float32.
    All in the input's precision: float32's error (2.2 ulp measured) keeps gelu within its bound
    once the exponential's 1 + q is not rounded on its own (normal_parts); with the last two steps
    in float64 registers, as before, float32 gelu ran at half the speed."""
    c, one = pick(a, NORMAL_TAIL_C32, NORMAL_TAIL_C64), like(a, 1.0)
    d = fma(c, a, one)
    t = one / d
    dl = fma(-fma(c, a, one - d), t, fma(-d, t, one))
    t_lo = t * dl  # 1/(1 + c a) = t + t_lo, for both s and the product (one operation fewer)
    s = fma(like(a, 2.0), t_lo, fma(like(a, 2.0), t, -one))
    p = horner(s, NORMAL_TAIL_P32) if is_single(a) else horner(s, NORMAL_TAIL_P64)
    return fma(t, p, t_lo * p)


@scalar
def normal_parts(x):
    """(q, k, g, na) with na = -|x| clamped to [-16, 0] (f32) / [-38.75, 0] (f64), below which
    x Phi(-|x|) and x phi(x) underflow to 0, exp(-na^2/2) = (1 + q) 2**k and Phi(na) =
    (1 + q) g 2**k (Phi the standard normal CDF, g = normal_tail_scaled(-na)). -na^2/2 is the
    exact product na (-na/2), reduced as one (exp_parts_q_of_exact_product: an error in x^2 is
    multiplied by x^2/2), and 1 + q is left to the caller unrounded: times_exp_parts(v, q, k)
    for its factor v, one rounding fewer (rounding 1 + q alone costs up to 1 ulp), and accurate
    where x Phi(x) is subnormal. The sign taken off once (-|x|, one clamp) serves both signs of
    x: gelu is na Phi(na) for x < 0 and x + na Phi(na) above, and its derivative's two cases
    share one term (x clamped to [-16, 16] and |x| apart cost one operation more and, in the
    backward, a second product with exp). NaN stays NaN; +-inf become -16 / -38.75."""
    lowest = pick(x, -16.0, -38.75)
    na = -abs(x)
    na = lowest if na < lowest else na
    q, k = exp_parts_q_of_exact_product(na, like(x, -0.5) * na)
    return q, k, normal_tail_scaled(-na), na
