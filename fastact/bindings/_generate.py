"""Writes the C sources of the C backend: template.c once per dtype, plus the loops and exports.

template.c holds ONE type-generic copy of every primitive (kernels/math.py) and every scalar
function of the registry (same names). This module defines, per dtype, the type and the constants
and polynomial coefficients, taken from kernels/math.py and registry.py themselves (one table), then
generates an elementwise loop for every (scalar function, number of arrays) the API uses, and the
exported entry points that compute a [start, stop) range (fastact's thread pool splits calls).
"""
import inspect
import os
import re
import struct

from fastact import registry
from fastact._threads import (POOL_ARGS_SIZE, POOL_ASLEEP, POOL_CLAIM, POOL_DONE,
                              POOL_IDLE_YIELD, POOL_START, POOL_STOP, POOL_STRIDE, POOL_TAKE_BACK,
                              POOL_TASK, POOL_TASK_ARGS, POOL_WAITING, RUN_IDLE, RUN_NOTIFY,
                              RUN_PYTHON)
from fastact.kernels import loops
from fastact.kernels import math as m

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "template.c")
SUFFIX = {"float32": "f32", "float64": "f64"}
CTYPE = {"float32": "float", "float64": "double"}


def map_functions():
    """[(name, n_arrays, n_args)] for every elementwise loop the API layer can ask for: each spec's
    forward (1 array) and backward (2 arrays), plus rrelu in training, whose slopes are an array:
    leaky_relu_forward(x, noise) and leaky_relu_backward(dy, x, noise)."""
    wanted = {}
    for spec in registry.SPECS.values():
        for arrays, table in ((1, spec.forward), (2, spec.backward_from_input),
                              (2, spec.backward_from_output)):
            for fn in table.values():
                wanted[fn.__name__, arrays] = fn
    wanted["leaky_relu_forward", 2] = registry.leaky_relu_forward
    wanted["leaky_relu_backward", 3] = registry.leaky_relu_backward
    return sorted((name, arrays, len(inspect.signature(fn).parameters))
                  for (name, arrays), fn in wanted.items())


ROW_KERNELS = ("prelu_forward_rows", "prelu_backward_rows", "prelu_forward_cols",
               "prelu_backward_cols", "softmax_rows", "log_softmax_rows",
               "softmax_backward_rows", "log_softmax_backward_rows", "maxout_forward_rows",
               "maxout_backward_rows")
MAX_PARAMS = 2


def _bits(value, dtype):
    fmt, ifmt = ("<f", "<i") if dtype == "float32" else ("<d", "<q")
    return struct.unpack(ifmt, struct.pack(fmt, value))[0]


def _lit(value):
    """A C double literal that parses to exactly this Python float."""
    text = repr(float(value))
    assert "inf" not in text and "nan" not in text, text
    return text if ("e" in text or "." in text) else text + ".0"


def _const(dtype, c32, c64):
    """math.pick: the float32 constant is the double c32 rounded once, like np.float32(c32)."""
    return f"((float){_lit(c32)})" if dtype == "float32" else _lit(c64)


def _horner(var, coefficients, fma, lit):
    """math.horner, unrolled: acc = c0; acc = fma(acc, x, c) for the rest (fma(0, x, c0) is c0)."""
    acc = lit(coefficients[0])
    for c in coefficients[1:]:
        acc = f"{fma}({acc}, ({var}), {lit(c)})"
    return acc


def _dtype_header(dtype):
    single = dtype == "float32"
    suf = SUFFIX[dtype]
    nbits, mant, bias, shift = (32, 23, 127, m.SHIFT32) if single else (64, 52, 1023, m.SHIFT64)
    fma = "__builtin_fmaf" if single else "__builtin_fma"
    lit = (lambda c: f"((float){_lit(c)})") if single else _lit
    k = lambda c32, c64: _const(dtype, c32, c64)  # noqa: E731
    R = registry
    defines = {
        "real": CTYPE[dtype],
        "ireal": f"int{nbits}_t",
        "ureal": f"uint{nbits}_t",
        "FN(name)": f"name##_{suf}",
        "K(c32, c64)": "((float)(c32))" if single else "((double)(c64))",
        "L(c)": f"(({CTYPE[dtype]})(c))",
        "FMA": fma,
        "FABS": "__builtin_fabsf" if single else "__builtin_fabs",
        "COPYSIGN": "__builtin_copysignf" if single else "__builtin_copysign",
        "IS_SINGLE": "1" if single else "0",
        "MANT_BITS": str(mant),
        "MANT_MASK": f"{(1 << mant) - 1}",
        "EXP_BIAS": str(bias),
        "SHIFT": lit(shift),
        "SHIFT_BITS": f"INT{nbits}_C({_bits(shift, dtype)})",
        "ONE_BITS": f"INT{nbits}_C({_bits(1.0, dtype)})",
        "SQRT_HALF_BITS": f"INT{nbits}_C({_bits(0.5 ** 0.5, dtype)})",
        "LN2_HI": k(m.LN2[0], m.LN2[2]),
        "LN2_LO": k(m.LN2[1], m.LN2[3]),
        "LOG2E": lit(m.LOG2E),
        "EXP_Q(r)": _horner("r", m.EXP_Q32 if single else m.EXP_Q64, fma, lit),
        "LOG_R(z)": _horner("z", m.LOG_R32 if single else m.LOG_R64, fma, lit),
        "LOG1P_UNIT_Q(x)": _horner("x", m.LOG1P_UNIT_Q32, fma, lit) if single else "x",
        "LOG1P_UNIT_P(x)": "x" if single else _horner("x", m.LOG1P_UNIT_P64, fma, lit),
        "NORMAL_TAIL_C": k(m.NORMAL_TAIL_C32, m.NORMAL_TAIL_C64),
        "NORMAL_TAIL_P(s)": _horner("s", m.NORMAL_TAIL_P32 if single else m.NORMAL_TAIL_P64, fma, lit),
        "NORMAL_CLAMP": k(16.0, 38.75),
        "INV_SQRT_2PI": k(*m.INV_SQRT_2PI),
        "SELU_ALPHA": lit(R.SELU_ALPHA),
        "SELU_SCALE": lit(R.SELU_SCALE),
        "SELU_SCALE_ALPHA": lit(R.SELU_SCALE * R.SELU_ALPHA),
        "LN2_SHORT_HI": k(m.LN2_SHORT[0], m.LN2_SHORT[2]),
        "LN2_SHORT_LO": k(m.LN2_SHORT[1], m.LN2_SHORT[3]),
        "GELU_TANH_K1_HI": k(R.GELU_TANH_K1[0], R.GELU_TANH_K1[2]),
        "GELU_TANH_K1_LO": k(R.GELU_TANH_K1[1], R.GELU_TANH_K1[3]),
        "GELU_TANH_K3_HI": k(R.GELU_TANH_K3[0], R.GELU_TANH_K3[2]),
        "GELU_TANH_K3_LO": k(R.GELU_TANH_K3[1], R.GELU_TANH_K3[3]),
    }
    define = "".join(f"#define {key} {value}\n" for key, value in defines.items())
    undef = "".join(f"#undef {key.split('(')[0]}\n" for key in defines)
    return define, undef


PRELUDE = r"""/* Generated by fastact/bindings/_generate.py from template.c. Do not edit. */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#define INLINE inline __attribute__((always_inline))
/* The loops bound by arithmetic (exponential family) on the CPU's widest vectors: GCC keeps to
   256-bit ones on AVX-512 CPUs by default, which was faster only for the memory-bound loops. */
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#define FA_WIDE __attribute__((target("prefer-vector-width=512")))
#else
#define FA_WIDE
#endif
/* GCC without its jump threading, for the loops in NO_THREAD_JUMPS (_generate.py) */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
/* (older GCCs' optimize attribute replaced the command line's -f options instead of adding to
   them; 12 measured keeping -ffp-contract=off) */
#define FA_NO_THREAD_JUMPS __attribute__((optimize("no-thread-jumps")))
#else
#define FA_NO_THREAD_JUMPS
#endif

typedef void (*fa_range_fn)(const void *args, int64_t lo, int64_t hi);

int fa_spin_until(intptr_t pool, int64_t index, int64_t want, int64_t ticks);

/* Raise *claim to seq if it is lower; 1 if this call did (the thread pool's claims:
   fastact/_threads.py, Taking back). */
static inline int fa_claim(int64_t *claim, int64_t seq) {
    int64_t old = __atomic_load_n(claim, __ATOMIC_SEQ_CST);
    while (old < seq)
        if (__atomic_compare_exchange_n(claim, &old, seq, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return 1;
    return 0;
}

/* fn(args, lo, hi) over [start, stop) on the calling thread: fastact's thread pool (shared with
   the Numba backend) splits a large call into ranges; no OpenMP runtime (PyTorch ships its own
   libgomp, whose spinning team a linked C backend shared once torch was imported). The pool's
   hand-off (fastact/_threads.py, kernels/loops.py): the caller (slot 0) copies the arguments into
   the pool state and gives each worker of the call fn and that copy, then its go; the workers'
   native loop (fa_run_tasks) calls fn without Python. The caller, its range done, computes the
   range of each worker that has not claimed its own yet and marks it done (Taking back). A
   worker called here (slot >= 1: a test's call) marks its range done. Slot -1: a call on one
   thread. */
static void fa_range_sized(fa_range_fn fn, const void *args, size_t size, int64_t start,
                           int64_t stop, intptr_t pool, int64_t slot, int64_t seq) {
    int64_t *state = (int64_t *)pool;
    if (slot == 0) {
        int64_t *copy = state + __atomic_load_n(state + 2, __ATOMIC_RELAXED);
        memcpy(copy, args, size);
        for (int64_t w = 1; w <= __atomic_load_n(state, __ATOMIC_ACQUIRE); w++) {
            int64_t *line = state + FA_POOL_STRIDE * w;
            __atomic_store_n(line + FA_POOL_TASK, (int64_t)(intptr_t)fn, __ATOMIC_RELAXED);
            __atomic_store_n(line + FA_POOL_TASK_ARGS, (int64_t)(intptr_t)copy, __ATOMIC_RELAXED);
            __atomic_store_n(line, seq, __ATOMIC_RELEASE);
        }
    }
    if (stop > start) fn(args, start, stop);
    if (slot == 0 && __atomic_load_n(state + FA_POOL_TAKE_BACK, __ATOMIC_RELAXED)) {
        for (int64_t w = 1; w <= __atomic_load_n(state, __ATOMIC_ACQUIRE); w++) {
            int64_t *line = state + FA_POOL_STRIDE * w;
            if (__atomic_load_n(line + FA_POOL_DONE, __ATOMIC_ACQUIRE) < seq
                    && fa_claim(line + FA_POOL_CLAIM, seq)) {
                if (line[FA_POOL_STOP] > line[FA_POOL_START])
                    fn(args, line[FA_POOL_START], line[FA_POOL_STOP]);
                __atomic_store_n(line + FA_POOL_DONE, seq, __ATOMIC_RELEASE);
            }
        }
    }
    if (slot > 0)
        __atomic_store_n(state + FA_POOL_STRIDE * slot + FA_POOL_DONE, seq, __ATOMIC_RELEASE);
}
#define fa_range(fn, args, start, stop, pool, slot, seq) do { \
        _Static_assert(sizeof(*(args)) <= 8 * FA_POOL_ARGS_SIZE, "task arguments too large"); \
        fa_range_sized(fn, args, sizeof(*(args)), start, stop, pool, slot, seq); \
    } while (0)

typedef struct {
    const void *a[3];
    void *out;
    double p[2];
    int stream;
} fa_map_args;

/* kernels/loops.py's streaming: a 64-byte-aligned block from an L1 buffer to its place with
   non-temporal stores (past the caches; a plain store first reads the line it writes) */
static inline void fa_stream(void *dst, const void *src, int64_t bytes) {
#if defined(__AVX512F__)
    for (int64_t k = 0; k < bytes; k += 64)
        _mm512_stream_si512((__m512i *)((char *)dst + k), _mm512_load_si512((const char *)src + k));
#elif defined(__AVX__)
    for (int64_t k = 0; k < bytes; k += 32)
        _mm256_stream_si256((__m256i *)((char *)dst + k),
                            _mm256_load_si256((const __m256i *)((const char *)src + k)));
#elif defined(__SSE2__)
    for (int64_t k = 0; k < bytes; k += 16)
        _mm_stream_si128((__m128i *)((char *)dst + k), _mm_load_si128((const __m128i *)((const char *)src + k)));
#else
    __builtin_memcpy(dst, src, (size_t)bytes);
#endif
}

static inline void fa_store_fence(void) {  /* non-temporal stores are weakly ordered */
#if defined(__SSE2__)
    _mm_sfence();
#endif
}
"""

ROWS_EXPORTS = r"""
void fa_prelu_forward_rows_{s}(const void *x, const void *w, int64_t channels, void *out,
                               int64_t inner, {chunk}) {{
    prelu_args_{s} a = {{x, w, NULL, out, NULL, channels, inner}};
    fa_range(prelu_forward_range_{s}, &a, start, stop, pool, slot, seq);
}}

void fa_prelu_backward_rows_{s}(const void *dy, const void *x, const void *w, int64_t channels,
                                void *dx, double *grad_weight_rows, int64_t inner,
                                {chunk}) {{
    prelu_args_{s} a = {{x, w, dy, dx, grad_weight_rows, channels, inner}};
    fa_range(prelu_backward_range_{s}, &a, start, stop, pool, slot, seq);
}}

void fa_prelu_forward_cols_{s}(const void *x, const void *w, void *out, int64_t n, {chunk}) {{
    prelu_cols_args_{s} a = {{x, w, NULL, out, NULL, n, 0, 0}};
    fa_range(prelu_forward_cols_range_{s}, &a, start, stop, pool, slot, seq);
}}

void fa_prelu_backward_cols_{s}(const void *dy, const void *x, const void *w, void *dx,
                                double *partial, int64_t n, int64_t block_rows, int64_t n_rows,
                                {chunk}) {{
    prelu_cols_args_{s} a = {{x, w, dy, dx, partial, n, block_rows, n_rows}};
    fa_range(prelu_backward_cols_range_{s}, &a, start, stop, pool, slot, seq);
}}

FA_WIDE void fa_softmax_rows_{s}(const void *x, void *out, int64_t n, {chunk}) {{
    softmax_args_{s} a = {{x, NULL, out, n}};
    fa_range(softmax_range_{s}, &a, start, stop, pool, slot, seq);
}}

FA_WIDE void fa_log_softmax_rows_{s}(const void *x, void *out, int64_t n, {chunk}) {{
    softmax_args_{s} a = {{x, NULL, out, n}};
    fa_range(log_softmax_range_{s}, &a, start, stop, pool, slot, seq);
}}

FA_WIDE void fa_softmax_backward_rows_{s}(const void *dy, const void *y, void *dx, int64_t n,
                                  {chunk}) {{
    softmax_args_{s} a = {{dy, y, dx, n}};
    fa_range(softmax_backward_range_{s}, &a, start, stop, pool, slot, seq);
}}

FA_WIDE void fa_log_softmax_backward_rows_{s}(const void *dy, const void *y, void *dx, int64_t n,
                                      {chunk}) {{
    softmax_args_{s} a = {{dy, y, dx, n}};
    fa_range(log_softmax_backward_range_{s}, &a, start, stop, pool, slot, seq);
}}

void fa_maxout_forward_rows_{s}(const void *x, void *out, int64_t channels, int64_t pieces,
                                int64_t inner, {chunk}) {{
    maxout_args_{s} a = {{x, NULL, out, channels, pieces, inner}};
    fa_range(maxout_forward_range_{s}, &a, start, stop, pool, slot, seq);
}}

void fa_maxout_backward_rows_{s}(const void *dy, const void *x, void *dx, int64_t channels,
                                 int64_t pieces, int64_t inner, {chunk}) {{
    maxout_args_{s} a = {{x, dy, dx, channels, pieces, inner}};
    fa_range(maxout_backward_range_{s}, &a, start, stop, pool, slot, seq);
}}
"""

# The arguments every export ends with: its range, and the thread pool's hand-off (fa_range)
CHUNK = "int64_t start, int64_t stop, intptr_t pool, int64_t slot, int64_t seq"
MAP_SIGNATURE = ("void {export}(const void *a0, const void *a1, const void *a2, void *out, "
                 "double p0, double p1, int stream, " + CHUNK + ")")

ROWS_CDEF = """
void fa_prelu_forward_rows_{s}(const void *x, const void *w, int64_t channels, void *out,
    int64_t inner, {chunk});
void fa_prelu_backward_rows_{s}(const void *dy, const void *x, const void *w, int64_t channels,
    void *dx, double *grad_weight_rows, int64_t inner, {chunk});
void fa_prelu_forward_cols_{s}(const void *x, const void *w, void *out, int64_t n, {chunk});
void fa_prelu_backward_cols_{s}(const void *dy, const void *x, const void *w, void *dx,
    double *partial, int64_t n, int64_t block_rows, int64_t n_rows, {chunk});
void fa_softmax_rows_{s}(const void *x, void *out, int64_t n, {chunk});
void fa_log_softmax_rows_{s}(const void *x, void *out, int64_t n, {chunk});
void fa_softmax_backward_rows_{s}(const void *dy, const void *y, void *dx, int64_t n,
    {chunk});
void fa_log_softmax_backward_rows_{s}(const void *dy, const void *y, void *dx, int64_t n,
    {chunk});
void fa_maxout_forward_rows_{s}(const void *x, void *out, int64_t channels, int64_t pieces,
    int64_t inner, {chunk});
void fa_maxout_backward_rows_{s}(const void *dy, const void *x, void *dx, int64_t channels,
    int64_t pieces, int64_t inner, {chunk});
"""

INFO_CDEF = """
int fa_cpu_supported(void);
int fa_spin_until(intptr_t pool, int64_t index, int64_t want, int64_t ticks);
int64_t fa_run_tasks(intptr_t pool, int64_t slot, int64_t last);
"""

INFO_SOURCE = r"""
/* The extension may be built with -march=native: refuse to run on a CPU without those features
   (a cache directory shared by machines), rather than die of an illegal instruction. */
int fa_cpu_supported(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
#ifdef __AVX__
    if (!__builtin_cpu_supports("avx")) return 0;
#endif
#ifdef __AVX2__
    if (!__builtin_cpu_supports("avx2")) return 0;
#endif
#ifdef __FMA__
    if (!__builtin_cpu_supports("fma")) return 0;
#endif
#ifdef __AVX512F__
    if (!__builtin_cpu_supports("avx512f")) return 0;
#endif
#ifdef __AVX512BW__
    if (!__builtin_cpu_supports("avx512bw")) return 0;
#endif
#endif
    return 1;
}

/* The thread pool's spin-wait (fastact/_threads.py): 1 once state[index] >= want, 0 after about
   `ticks` of the time-stamp counter (nanoseconds where there is none). Called with the GIL
   released, as every function of this module. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FA_TICKS() ((int64_t)__builtin_ia32_rdtsc())
#define FA_PAUSE() __builtin_ia32_pause()
#else
#include <time.h>
static int64_t fa_ticks(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}
#define FA_TICKS() fa_ticks()
#define FA_PAUSE() ((void)0)
#endif
int fa_spin_until(intptr_t pool, int64_t index, int64_t want, int64_t ticks) {
    int64_t start = FA_TICKS();
    while (__atomic_load_n((int64_t *)pool + index, __ATOMIC_ACQUIRE) < want) {
        if (FA_TICKS() - start > ticks) return 0;
        FA_PAUSE();
    }
    return 1;
}

/* fa_spin_until, giving the CPU away (sched_yield) between looks: an idle worker's wait after
   its spinning (fastact/_threads.py, Idling). */
#if defined(__unix__) || defined(__APPLE__)
#include <sched.h>
#define FA_YIELD() ((void)sched_yield())
#else
#define FA_YIELD() FA_PAUSE()
#endif
static int fa_idle_until(intptr_t pool, int64_t index, int64_t want, int64_t ticks) {
    int64_t start = FA_TICKS();
    while (__atomic_load_n((int64_t *)pool + index, __ATOMIC_ACQUIRE) < want) {
        if (FA_TICKS() - start > ticks) return 0;
        FA_YIELD();
    }
    return 1;
}

/* A worker's native loop (fastact/_threads.py; kernels/loops.py's run_tasks, the same steps):
   waits for its next go and calls that call's task, task(args, start, stop), until a go comes
   with task 0 (FA_RUN_PYTHON: a Python task), none comes within the idle budget (FA_RUN_IDLE,
   marked asleep) or its caller sleeps (FA_RUN_NOTIFY); returns 4 * the last call it finished +
   why; passes over a go whose claim its caller raised first (it took the range back). The tasks
   may be Numba's (their C wrappers take three int64s, as fa_range_fn). */
int64_t fa_run_tasks(intptr_t pool, int64_t slot, int64_t last) {
    int64_t *state = (int64_t *)pool, *go = state + FA_POOL_STRIDE * slot;
    __atomic_store_n(go + FA_POOL_ASLEEP, 0, __ATOMIC_RELAXED);
    for (;;) {
        if (!fa_spin_until(pool, FA_POOL_STRIDE * slot, last + 1,
                           __atomic_load_n(state + 1, __ATOMIC_ACQUIRE))
                && !fa_idle_until(pool, FA_POOL_STRIDE * slot, last + 1,
                                  __atomic_load_n(state + FA_POOL_IDLE_YIELD, __ATOMIC_ACQUIRE))) {
            __atomic_store_n(go + FA_POOL_ASLEEP, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(go, __ATOMIC_SEQ_CST) <= last) return 4 * last + FA_RUN_IDLE;
            __atomic_store_n(go + FA_POOL_ASLEEP, 0, __ATOMIC_RELAXED);
            continue;
        }
        int64_t seq = __atomic_load_n(go, __ATOMIC_ACQUIRE);
        if (!fa_claim(go + FA_POOL_CLAIM, seq)) {  /* its caller took it back */
            last = seq;
            continue;
        }
        int64_t task = __atomic_load_n(go + FA_POOL_TASK, __ATOMIC_RELAXED);
        if (!task) return 4 * last + FA_RUN_PYTHON;
        ((fa_range_fn)(intptr_t)task)((const void *)(intptr_t)go[FA_POOL_TASK_ARGS],
                                      go[FA_POOL_START], go[FA_POOL_STOP]);
        __atomic_store_n(go + FA_POOL_DONE, seq, __ATOMIC_SEQ_CST);
        last = seq;
        if (__atomic_load_n(go + FA_POOL_WAITING, __ATOMIC_SEQ_CST) >= seq)
            return 4 * last + FA_RUN_NOTIFY;
    }
}
"""


# Backwards bound by arithmetic that take the streamed loop on 512-bit vectors at every size (not
# the prefetched loop below 32 MiB outputs). GCC's streamed loop won for these two, whose
# arithmetic is one sigmoid (2^26, 2 threads: softplus 24 -> 30, logsigmoid 25 -> 33 GB/s). For
# the heavier ones the streamed loop lost against the prefetched one (gelu 16 -> 10, mish 12 -> 9,
# silu 20 -> 17; an every-line prefetch added to it: gelu 15) until its blocks prefetched one
# line per input 8 KiB ahead, as map_2_wide does (`paged` below): from 32 MiB outputs up every
# wide backward now streams that way (2^26, 2 threads: gelu 21 -> 24.5-24.9, mish 20.2-20.5 ->
# 23.8, silu 22 -> 26.3-27.1, gelu-tanh 14.8 -> 15.9-16.9, softplus 28 -> 30 GB/s).
STREAMED_WIDE = {"softplus_backward_from_input", "logsigmoid_backward_from_input"}

# Kernels whose loops are compiled twice, once with the parameter of this index fixed at 1.0 (a
# run-time test picks the copy), calling the named C function there if one is given:
# softplus_forward's division by beta and celu's by alpha only where that parameter is not 1
# (registry.over_alpha), and celu forward as elu for alpha = 1 (registry.celu_forward). LLVM
# unswitches the loop on that loop-invariant test itself; GCC if-converted the select first and
# divided every vector (softplus forward: 49 instructions per 16 elements, one vdivps; 42 and
# none unswitched).
UNSWITCHED = {"softplus_forward": (0, None), "celu_forward": (0, "elu_forward"),
              "celu_backward_from_input": (0, None), "celu_backward_from_output": (0, None)}


# Loops compiled without GCC's jump threading (-fno-thread-jumps for these functions alone):
# with it GCC threaded the clamp's cases through the division by 6 (or softsign's by 1 + |x|) and
# blended the result per case (hardswish forward: 17 -> 14 instructions per 16 elements, loop
# control included). One thread, float32, in L1 (4096 elements), ns per element, with / without:
# hardswish forward 0.158 -> 0.108, softsign forward 0.120 -> 0.102, hardsigmoid forward 0.119 ->
# 0.102. The whole build without it lost on 25 of the other 37 loops (light backwards 0.10 ->
# 0.15, elu / selu / celu forward -10%).
NO_THREAD_JUMPS = {"hardswish_forward", "softsign_forward", "hardsigmoid_forward"}

# Functions whose streamed blocks (outputs of STREAM_BYTES and more) call another form of them,
# from template.c: hardswish's backward with its three pieces selected in the shorter form runs
# 17 -> 12 instructions per 16 elements in cache (one thread, L1: 0.167 -> 0.107 ns per element),
# but its streamed blocks ran slower (one thread, 2^24, DRAM: 0.26-0.28 -> 0.39-0.47 ns; with the
# selects on bits 0.31-0.36): the longer form there. Not analysed.
STREAMED_SCALAR = {"hardswish_backward_from_input": "hardswish_backward_from_input_streamed"}


def map_export(name, arrays, dtype):
    return f"fa_map_{name}_{arrays}_{SUFFIX[dtype]}"


def template_functions():
    """Names of the scalar functions template.c defines."""
    with open(TEMPLATE) as f:
        return set(re.findall(r"^static INLINE real FN\((\w+)\)\(", f.read(), re.M))


def check_coverage():
    """Every scalar function the registry uses has a C port (raises naming the missing ones), and
    each UNSWITCHED or STREAMED_SCALAR replacement takes the arguments of the function it stands
    in for."""
    used = {name for name, _, _ in map_functions()}
    used |= {function for _, function in UNSWITCHED.values() if function}
    used |= set(STREAMED_SCALAR.values())
    missing = sorted(used - template_functions())
    if missing:
        raise RuntimeError(f"template.c has no C port of: {', '.join(missing)}")
    with open(TEMPLATE) as f:
        arity = {name: len(args.split(",")) for name, args in
                 re.findall(r"^static INLINE real FN\((\w+)\)\(([^)]*)\)", f.read(), re.M)}
    for name, (_, function) in UNSWITCHED.items():
        if function and arity[function] != arity[name]:
            raise RuntimeError(f"UNSWITCHED: {function} does not take {name}'s arguments")
    for name, function in STREAMED_SCALAR.items():
        if arity[function] != arity[name]:
            raise RuntimeError(f"STREAMED_SCALAR: {function} does not take {name}'s arguments")


def _map_loop(name, arrays, n_args, dtype):
    s = SUFFIX[dtype]
    real = CTYPE[dtype]
    if n_args - arrays > MAX_PARAMS:
        raise RuntimeError(f"{name}: more than {MAX_PARAMS} scalar parameters")
    decls = "".join(f"    const {real} *a{i} = (const {real} *)a->a[{i}];\n" for i in range(arrays))
    decls += "".join(f"    const {real} p{i} = ({real})a->p[{i}];\n" for i in range(n_args - arrays))
    def call(index, params, function=name):
        args = [f"a{i}[{index}]" for i in range(arrays)] + params
        return f"{function}_{s}({', '.join(args)})"
    export = map_export(name, arrays, dtype)
    wide = name in registry.arithmetic_bound_scalar_names()
    prefetched = wide and arrays <= 2 and name not in STREAMED_WIDE
    # FA_SOFTWARE_PREFETCH (math.SOFTWARE_PREFETCH: 0 on AMD CPUs) switches every prefetch of the
    # map loops and of log_softmax's rows (template.c) off (Zen 4 VM, 2^26, 2 threads, C: sigmoid
    # forward 35 -> 42, tanh 40 -> 50, silu 31-32 -> 36-37, log_softmax backward 26-27 -> 35-36
    # GB/s).
    # As kernels/loops.py: the kernels bound by arithmetic (512-bit vectors) prefetch their inputs
    # 4096 elements ahead (Numba's 2048 since 2026-11-23; here both measured the same), 512 at a
    # time (in DRAM a core did not overlap their arithmetic with its loads); the memory-bound ones
    # write large outputs past the caches (non-temporal stores)

    def body(params, function=name):
        at_i, at_qj, at_ij = (call(j, params, function) for j in ("i", "q + j", "i + j"))
        if function in STREAMED_SCALAR:  # its streamed blocks' own form of the function
            if arrays == 1:  # (the forwards' streamed branch computes at_qj: not swapped here)
                raise RuntimeError(f"STREAMED_SCALAR: {function} takes one array")
            at_ij = call("i + j", params, STREAMED_SCALAR[function])
        # the elements before out's first 64-byte boundary first, one at a time (kernels/loops.py,
        # ALIGNED): NumPy's large arrays start 16 bytes past one
        head = f"""int64_t h = lo;
    if ((uintptr_t)out % sizeof({real}) == 0)
        for (; h < hi && ((uintptr_t)(out + h) & 63); h++) out[h] = {call("h", params, function)};
    """
        loop = head + f"""#pragma omp simd
        for (int64_t i = h; i < hi; i++) out[i] = {at_i};"""
        if not prefetched:
            # the loops without a prefetch (the memory-bound ones, and the STREAMED_WIDE
            # backwards: softplus's and logsigmoid's, unchanged at 2^20 by this, 61.1 / 65.9 ->
            # 60.9 / 66.4 GB/s): two 64-byte blocks computed before either is stored. GCC keeps
            # its statements' order, and its one-vector loop alternated each load with a store,
            # which 4K aliasing stalls where an input sits 48-128 bytes below out modulo 4096
            # (kernels/cpu.py _compile_interleaved_twice, the same for Numba; NOTES)
            b = 16 if dtype == "float32" else 8  # elements in 64 bytes
            first, second = (call(f"i + {k}j", params, function) for k in ("", f"{b} + "))
            loop = head + f"""int64_t i = h;
    for (; i + {2 * b} <= hi; i += {2 * b}) {{
        {real} t0[{b}], t1[{b}];
#pragma omp simd
        for (int64_t j = 0; j < {b}; j++) t0[j] = {first};
#pragma omp simd
        for (int64_t j = 0; j < {b}; j++) t1[j] = {second};
#pragma omp simd
        for (int64_t j = 0; j < {b}; j++) out[i + j] = t0[j];
#pragma omp simd
        for (int64_t j = 0; j < {b}; j++) out[i + {b} + j] = t1[j];
    }}
#pragma omp simd
    for (int64_t k = i; k < hi; k++) out[k] = {call("k", params, function)};"""
        streamed = ""
        if prefetched:
            prefetch = "".join(f"            if (FA_SOFTWARE_PREFETCH) "
                               f"__builtin_prefetch(a{i} + p, 0, 3);\n" for i in range(arrays))
            # without software prefetch (AMD) one flat loop: the 512-element blocks were only
            # the prefetches' stride, and cost the loop at L3 sizes (2^20, 2 threads: C elu
            # forward 171-174 -> 141-149 us, tanh 207-214 -> 165-186; NOTES work log)
            loop = head + f"""#if FA_SOFTWARE_PREFETCH
        for (int64_t b = h; b < hi; b += 512) {{
            int64_t e = b + 512 < hi ? b + 512 : hi;
            for (int64_t p = b + 4096; p < e + 4096 && p < hi; p += 64 / sizeof({real})) {{
{prefetch}        }}
#pragma omp simd
            for (int64_t i = b; i < e; i++) out[i] = {at_i};
        }}
#else
#pragma omp simd
        for (int64_t i = h; i < hi; i++) out[i] = {at_i};
#endif"""

        def stream_branch(part, prefetch):
            # kernels/loops.py's streaming: 512-element blocks, each computed `part` elements at
            # a time into an L1 buffer and written from it with non-temporal stores
            parts = f"""#pragma omp simd
                for (int64_t j = 0; j < 512; j++) buffer[j] = {at_ij};
                fa_stream(out + i, buffer, (int64_t)sizeof buffer);""" if part == 512 else f"""\
                for (int64_t q = i; q < i + 512; q += {part}) {{
#pragma omp simd
                    for (int64_t j = 0; j < {part}; j++) buffer[j] = {at_qj};
                    fa_stream(out + q, buffer, (int64_t)sizeof buffer);
                }}"""
            return f"""if (a->stream) {{
        int64_t i = lo;
        for (; i < hi && ((uintptr_t)(out + i) & 63); i++) out[i] = {at_i};
        if (((uintptr_t)(out + i) & 63) == 0) {{
            {real} buffer[{part}] __attribute__((aligned(64)));
            for (; i + 512 <= hi; i += 512) {{
{prefetch}{parts}
            }}
        }}
        for (; i < hi; i++) out[i] = {at_i};
        fa_store_fence();
        return;
    }}
    """
        if prefetched and arrays == 1 and name not in registry.UNSTREAMED_FORWARDS:
            # as map_1_streamed: the forwards' large outputs 64 elements at a time (4 lines per
            # store burst for float32), their input prefetched a block 4096 elements ahead
            prefetch = f"""\
                for (int64_t p = i + 4096; p < i + 4608 && p < hi; p += 64 / sizeof({real}))
                    if (FA_SOFTWARE_PREFETCH) __builtin_prefetch(a0 + p, 0, 3);
"""
            streamed = stream_branch(64, prefetch)
        # as map_2_wide: the streamed blocks of the backwards bound by arithmetic prefetch one
        # line of each input 8 KiB ahead (the page walk the hardware prefetcher does not make)
        paged = wide and arrays == 2
        if arrays <= 2 and (paged or not prefetched):
            streamed = stream_branch(512, "".join(
                f"                if (FA_SOFTWARE_PREFETCH && i + 2048 < hi) "
                f"__builtin_prefetch(a{k} + i + 2048, 0, 3);\n"
                for k in range(arrays)) if paged else "")
        return streamed + loop

    params = [f"p{i}" for i in range(n_args - arrays)]
    if name in UNSWITCHED:  # a copy of the loops for the parameter's common value, as a constant
        k, function = UNSWITCHED[name]
        fast = params[:k] + [f"({real})1.0"] + params[k + 1:]
        code = f"""if (p{k} == ({real})1.0) {{
    {body(fast, function or name)}
    }} else {{
    {body(params)}
    }}"""
    else:
        code = body(params)
    attribute = ("FA_WIDE " if wide else "") + (
        "FA_NO_THREAD_JUMPS " if name in NO_THREAD_JUMPS else "")
    return f"""
{attribute}static void {export}_range(const void *args, int64_t lo, int64_t hi) {{
    const fa_map_args *a = args;
{decls}    {real} *out = ({real} *)a->out;
    {code}
}}

{attribute}{MAP_SIGNATURE.format(export=export)} {{
    fa_map_args a = {{{{a0, a1, a2}}, out, {{p0, p1}}, stream}};
    fa_range({export}_range, &a, start, stop, pool, slot, seq);
}}
"""


def source(dtype):
    """One translation unit: the template for both dtypes (float32 kernels call log1p_f64), and
    the loops and exports of this dtype."""
    check_coverage()
    with open(TEMPLATE) as f:
        template = f.read()
    first, rest = PRELUDE.split("\n", 1)  # the pool state's layout from fastact/_threads.py
    layout = {"POOL_STRIDE": POOL_STRIDE, "POOL_DONE": POOL_DONE, "POOL_ASLEEP": POOL_ASLEEP,
              "POOL_TASK": POOL_TASK, "POOL_TASK_ARGS": POOL_TASK_ARGS, "POOL_START": POOL_START,
              "POOL_STOP": POOL_STOP, "POOL_WAITING": POOL_WAITING, "POOL_CLAIM": POOL_CLAIM,
              "POOL_TAKE_BACK": POOL_TAKE_BACK, "POOL_IDLE_YIELD": POOL_IDLE_YIELD,
              "POOL_ARGS_SIZE": POOL_ARGS_SIZE, "RUN_IDLE": RUN_IDLE, "RUN_PYTHON": RUN_PYTHON,
              "RUN_NOTIFY": RUN_NOTIFY}
    defines = "".join(f"#define FA_{name} {value}\n" for name, value in layout.items())
    parts = [f"{first}\n{defines}"
             f"#define FA_SOFTWARE_PREFETCH {int(m.SOFTWARE_PREFETCH)}\n"
             f"#define FA_NONPOSITIVE_ROW_MAX {loops.NONPOSITIVE_ROW_MAX}\n{rest}"]
    for dt in ("float64", "float32"):
        define, undef = _dtype_header(dt)
        parts += [f"\n/* ===== {dt} ===== */\n", define, template, "\n"]
        if dt == dtype:
            parts += [_map_loop(*entry, dt) for entry in map_functions()]
            parts.append(ROWS_EXPORTS.format(s=SUFFIX[dt], chunk=CHUNK))
        parts.append(undef)
    if dtype == "float64":
        parts.append(INFO_SOURCE)
    return "".join(parts)


def cdef():
    """The declarations cffi wraps (also valid C: the extension's own source)."""
    lines = []
    for dtype in SUFFIX:
        for name, arrays, _ in map_functions():
            lines.append(MAP_SIGNATURE.format(export=map_export(name, arrays, dtype)) + ";")
        lines.append(ROWS_CDEF.format(s=SUFFIX[dtype], chunk=CHUNK))
    lines.append(INFO_CDEF)
    return "\n".join(lines)
