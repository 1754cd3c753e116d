"""The kernel loops, as plain Python. kernels/cpu.py copies a loop's source into a generated module,
where ``scalar`` is bound to a registry function, and compiles it there with Numba (``cache=True``
needs a real file per compiled function, and one file per scalar function keeps caches apart).

Every loop works on C-contiguous arrays and a [start, stop) range of its outer index, so the
caller can split one call over threads. Accumulations are float64 whatever the dtype.
"""
import numpy as np

from fastact import registry
from fastact._threads import (POOL_ARGS_SIZE, POOL_ASLEEP, POOL_CLAIM, POOL_DONE,
                              POOL_IDLE_YIELD, POOL_START, POOL_STOP, POOL_STRIDE, POOL_TAKE_BACK, POOL_TASK, POOL_TASK_ARGS,
                              POOL_WAITING, RUN_IDLE, RUN_NOTIFY, RUN_PYTHON)
from fastact.kernels import math as m

scalar = None  # bound per generated module

# --- elementwise: out[i] = scalar(a0[i], ..., *params) ------------------------------------------------

# ALIGNED. A map's task (task_source below) runs its loop twice: on the elements before out's
# first 64-byte boundary (m.aligned_head), then from there, so that the vector loop stores whole
# cache lines, and, where the inputs start at the same offset as out (NumPy's large arrays all
# start 16 bytes past a boundary), loads them too: a 512-bit access at such an offset touches
# two lines, a 256-bit one every other time. AMD Zen 4 VM, 2^18 elements (in L3), one thread,
# ratio to PyTorch on the same arrays: relu / hardtanh / sigmoid backward 0.93 / 0.85 / 0.95 ->
# 1.05 / 0.98-1.04 / 1.04, relu / hardtanh / leaky_relu forward 0.86 / 0.90 / 0.95 -> 0.90 /
# 0.97 / 1.04-1.15, silu backward +6%; in L1 (2^12) and at 2^26 unchanged
# (fastact/bench/NOTES.md, tenth session). An earlier try on the Intel VM (one loop, 256-bit
# vectors) had measured no gain. The C loops do the same.


def map_1(a0, out, params, start, stop):
    m.narrow_vectors()
    # Slices, then range(size): an index from range(start, stop) may be negative as far as LLVM
    # knows, and the wraparound select on every access kept the loop scalar (1.5 Gelem/s for relu).
    stream = out.size * out.itemsize >= m.STREAM_BYTES  # the whole output, not this chunk
    a0, out = a0[start:stop], out[start:stop]
    head = m.aligned_head(out) if stream else out.size
    for i in range(head):
        out[i] = scalar(a0[i], *params)
    if stream:
        buffer = np.empty(512, out.dtype)
        end = head + (out.size - head) // 512 * 512
        for block in range(head, end, 512):
            x = a0[block:block + 512]
            for i in range(512):
                buffer[i] = scalar(x[i], *params)
            m.stream_block(out, block, buffer)
        x, y = a0[end:], out[end:]
        for i in range(y.size):
            y[i] = scalar(x[i], *params)
        m.store_fence()


def map_2_cached(a0, a1, out, params, start, stop):
    """map_2 for outputs below STREAM_BYTES (the streaming branch left out), on the vectors of
    math.cached_map_vectors (a function attribute, hence a loop of its own). The memory-bound
    forwards keep map_1 at every size: 512 bits measured no better for them in L3."""
    m.cached_map_vectors()
    a0, a1, out = a0[start:stop], a1[start:stop], out[start:stop]
    for i in range(out.size):
        out[i] = scalar(a0[i], a1[i], *params)


def map_2(a0, a1, out, params, start, stop):
    m.narrow_vectors()
    map_2_body(a0, a1, out, params, start, stop, False)


def map_2_body(a0, a1, out, params, start, stop, page_ahead):
    """map_2's loop; page_ahead (a constant once inlined: map_2_wide) prefetches one line of each
    input 8 KiB ahead per 512-element block of the streamed part (see below). Inlined by Numba
    into map_2 and map_2_wide: their vector widths are theirs."""
    stream = out.size * out.itemsize >= m.STREAM_BYTES
    a0, a1, out = a0[start:stop], a1[start:stop], out[start:stop]
    head = m.aligned_head(out) if stream else out.size
    for i in range(head):
        out[i] = scalar(a0[i], a1[i], *params)
    if stream:
        buffer = np.empty(512, out.dtype)
        end = head + (out.size - head) // 512 * 512
        for block in range(head, end, 512):
            if page_ahead:
                m.prefetch(a0, block + 2048)
                m.prefetch(a1, block + 2048)
            x0, x1 = a0[block:block + 512], a1[block:block + 512]
            for i in range(512):
                buffer[i] = scalar(x0[i], x1[i], *params)
            m.stream_block(out, block, buffer)
        x0, x1, y = a0[end:], a1[end:], out[end:]
        for i in range(y.size):
            y[i] = scalar(x0[i], x1[i], *params)
        m.store_fence()


# map_1 and map_2 serve the memory-bound kernels (not in registry.arithmetic_bound_scalar_names):
# outputs of STREAM_BYTES (32 MiB) and more are computed a 512-element block at a time into a
# buffer that stays in L1, then written with non-temporal stores: a plain store first reads the
# line it writes (write-allocate), so a DRAM-sized backward moved 4 bytes per 3 it needed. One
# thread, 2^26 float32, relu backward: 12.7 -> 21.7 GB/s (Numba), 14.7 -> 21.3 (C, intrinsics).
# Smaller outputs keep plain stores: the next operation may find them in cache.
#
# map_1_prefetched serves the kernels bound by arithmetic with one input (the exponential
# forwards), which compute long enough per element that, in DRAM, a core did not overlap
# that arithmetic with its loads (silu: 0.74 Gelem/s per thread against 1.52 in cache, i.e.
# compute time plus memory time). Prefetching the inputs 4096 elements ahead, a 512-element block
# at a time, measured per thread at 2^26: silu 0.71 -> 1.31, tanh 0.88 -> 1.37, gelu 0.48 -> 0.70,
# sigmoid 1.17 -> 1.39 Gelem/s; relu lost 11% (the hardware prefetcher already keeps up with it,
# and 256-prefetch bursts cost sigmoid 13%). Now 2048 ahead (8 KiB): 2026-11-23, on faster
# kernels, 2 threads, four alternations, gelu 22.3 -> 23.0 GB/s, gelu-tanh 21.9 -> 22.2, silu
# 24.8 -> 25.6, sigmoid 25.2 -> 26.2, softplus 23.1 -> 24.3, 2^20 unchanged (C's loops measured
# the same either way and keep 4096). All of this on the Intel VM: on AMD CPUs these prefetches
# are left out (math.SOFTWARE_PREFETCH, a constant in the compiled loops), since on the Zen 4 VM
# the loops ran faster without them (2^26, 2 threads: the exponential forwards +5-30%; NOTES.md,
# work log). Their large outputs (STREAM_BYTES and more) take
# map_1_streamed, its own compiled kernel: 64 elements at a time into an L1 buffer, then 4 lines
# of non-temporal stores (512-element parts, 32 lines a burst, had lost: silu 22.7 -> 18.8 GB/s).
# 2^26, 2 threads, two alternations: silu 24.6 -> 31.0-33.0 GB/s, sigmoid 25.2 -> 32.6-34.0,
# tanh 26.2 -> 39.0-41.6, elu 26.1 -> 44.0-45.4, selu 25.9 -> 41.2-43.1, mish 23.8 -> 28.0-29.4,
# softplus 23.4 -> 27.3-29.2, celu 24.4 -> 30.0-31.4, logsigmoid 23.9 -> 27.7-29.3 (C the same
# way: silu 23.7 -> 31.4, tanh 25.2 -> 41.3); gelu and gelu-tanh, bound by their arithmetic,
# -2% and -7%, keep plain stores (registry.UNSTREAMED_FORWARDS). The
# light backwards from a saved output (sigmoid, tanh, elu, ...) went from the prefetched loops to
# map_2 with streaming: 38 -> 46 GB/s at 2^26. The exponential backwards from the input run on
# map_2_wide: 512-bit vectors for their arithmetic, and streaming (2^26, 2 threads: softplus
# 22.7 -> 28-30, logsigmoid 25 -> 34-36, gelu 16.5 -> 18, mish 14.5 -> 16.6 GB/s, silu
# unchanged; on the forwards the same change lost 5-12%). (Literal sizes: this source is copied
# into another module.)

def map_1_prefetched(a0, out, params, start, stop):
    m.wide_vectors()
    a0, out = a0[start:stop], out[start:stop]
    for block in range(0, out.size, 512):
        if m.SOFTWARE_PREFETCH:
            for i in range(block + 2048, block + 2560, 64 // a0.itemsize):  # one per cache line
                m.prefetch(a0, i)
        x, y = a0[block:block + 512], out[block:block + 512]
        for i in range(y.size):
            y[i] = scalar(x[i], *params)


def map_1_streamed(a0, out, params, start, stop):
    """map_1_prefetched for outputs of STREAM_BYTES and more (kernels/cpu.py picks it per call):
    each 64-element part of a 512-element block is computed into an L1 buffer, then written by
    non-temporal stores, 4 lines (float32) at a time."""
    m.wide_vectors()
    a0, out = a0[start:stop], out[start:stop]
    head = m.aligned_head(out)
    for i in range(head):
        out[i] = scalar(a0[i], *params)
    buffer = np.empty(64, out.dtype)
    lanes = 16 if m.is_single(buffer[0]) else 8  # a constant: a division otherwise
    end = head + (out.size - head) // 512 * 512
    for block in range(head, end, 512):
        if m.SOFTWARE_PREFETCH:
            for i in range(block + 2048, block + 2560, 64 // a0.itemsize):  # one per cache line
                m.prefetch(a0, i)
        for part in range(block, block + 512, 64):
            x = a0[part:part + 64]
            for i in range(x.size):  # not range(64): unrolled 4 times, it spilled
                buffer[i] = scalar(x[i], *params)
            for j in range(0, 64, lanes):
                m.stream_line(out, part + j, buffer, j)
    x, y = a0[end:], out[end:]
    for i in range(y.size):
        y[i] = scalar(x[i], *params)
    m.store_fence()


def map_2_wide(a0, a1, out, params, start, stop):
    """map_2 on 512-bit vectors (its body is inlined here by Numba, before LLVM vectorizes), with
    the streamed blocks' inputs prefetched a line per block 8 KiB ahead: the page walk and the
    first line of the page after next. These loops compute long enough per line that the
    hardware prefetcher, which stops at each 4 KiB page, left them waiting on every new page's
    translation and first lines without transparent huge pages: 2^24, 2 threads, THP off for
    the process, gelu backward 17.5-18.7 -> 23.9-24.3 GB/s, mish 19.6-20.8 -> 25.5-26.6, silu
    22.3-24.4 -> 28.4-29.1 (with THP: +2 to +12%); 2^26 with THP gelu 22.1-22.9 -> 24.3, mish
    23.5 -> 25.2. In map_2's light loops (relu, sigmoid backward) the same cost 13% (NOTES). Not
    on AMD CPUs (math.SOFTWARE_PREFETCH): on the Zen 4 VM the loops ran 1-10% faster without."""
    m.wide_vectors()
    map_2_body(a0, a1, out, params, start, stop, m.SOFTWARE_PREFETCH)


# What each loop's generated module also holds, inlined into it by Numba (kernels/cpu.py).
INLINED = {"map_2": ("map_2_body",), "map_2_wide": ("map_2_body",)}


def map_3(a0, a1, a2, out, params, start, stop):
    m.narrow_vectors()
    a0, a1, a2, out = a0[start:stop], a1[start:stop], a2[start:stop], out[start:stop]
    for i in range(out.size):
        out[i] = scalar(a0[i], a1[i], a2[i], *params)


# --- prelu: rows of a (outer * C, inner) view, channel = row % C --------------------------------------

# Row kernels whose output reaches m.STREAM_BYTES compute 2048 elements of a row at a time into
# an L1 buffer and write them with stream_row, non-temporal stores as the map loops' (a plain
# store first reads the line it writes: a backward moved 4 bytes per 3 it needed). (Literal
# sizes: this source is copied into another module.)

def prelu_forward_rows(x, weight, out, start, stop):
    if out.ctypes.data == x.ctypes.data:  # in place (the API passes no other overlap)
        prelu_forward_rows_in_place(out, weight, start, stop)
        return
    channels = weight.size
    stream = out.size * out.itemsize >= m.STREAM_BYTES
    buffer = np.empty(2048 if stream else 0, out.dtype)
    for r in range(start, stop):
        w = weight[r % channels]
        v, d = x[r], out[r]
        if stream:
            for c in range(0, d.size, 2048):
                vc = v[c:c + 2048]
                for j in range(vc.size):
                    buffer[j] = registry.leaky_relu_forward(vc[j], w)
                stream_row(d[c:c + 2048], buffer)
        else:
            for j in range(d.size):
                d[j] = registry.leaky_relu_forward(v[j], w)
    if stream:
        m.store_fence()


def prelu_backward_rows(dy, x, weight, dx, grad_weight_rows, start, stop):
    """dx, and per row the sum of dy*x over x <= 0 (the rows' sums are added per channel later),
    in blocks of 2048 so that the sum and dx read the inputs from memory once (a whole row's
    sum first, then its dx, read long rows twice: 55% of the roofline at 2^26)."""
    into = into_of(dx, dy, x)
    if into != 0:
        prelu_backward_rows_into(dy, x, weight, grad_weight_rows, into, start, stop)
        return
    channels = weight.size
    stream = dx.size * dx.itemsize >= m.STREAM_BYTES
    buffer = np.empty(2048 if stream else 0, dx.dtype)
    for r in range(start, stop):
        w = weight[r % channels]
        total = 0.0
        for b in range(0, dx.shape[1], 2048):  # a block's sum, then its dx while it is in L1
            g, v, d = dy[r, b:b + 2048], x[r, b:b + 2048], dx[r, b:b + 2048]
            total += row_grad_weight(g, v)  # first: dx may be dy or x (in place)
            if stream:
                for j in range(d.size):
                    buffer[j] = registry.leaky_relu_backward(g[j], v[j], w)
                stream_row(d, buffer)
            else:
                for j in range(d.size):
                    d[j] = registry.leaky_relu_backward(g[j], v[j], w)
        grad_weight_rows[r] = total
    if stream:
        m.store_fence()


def prelu_forward_cols(x, weight, out, start, stop):
    """prelu where the channel changes along a row: out[r, j] = leaky(x[r, j], weight[j]). The
    rows hold whole periods of the channel pattern (weight is the per-channel weights repeated
    to a row's length): x of shape (N, C), or with a short extent after the channels, where one
    row per (sample, channel) ran a loop a few elements long (0.6 GB/s for (2^16, 1024))."""
    if out.ctypes.data == x.ctypes.data:  # in place
        for r in range(start, stop):
            d = out[r]  # one view (row_exp_in_place)
            for j in range(d.size):
                d[j] = registry.leaky_relu_forward(d[j], weight[j])
        return
    stream = out.size * out.itemsize >= m.STREAM_BYTES
    buffer = np.empty(2048 if stream else 0, out.dtype)
    for r in range(start, stop):
        v, d = x[r], out[r]
        if stream:
            for c in range(0, d.size, 2048):
                vc, wc = v[c:c + 2048], weight[c:c + 2048]
                for j in range(vc.size):
                    buffer[j] = registry.leaky_relu_forward(vc[j], wc[j])
                stream_row(d[c:c + 2048], buffer)
        else:
            for j in range(d.size):
                d[j] = registry.leaky_relu_forward(v[j], weight[j])
    if stream:
        m.store_fence()


def prelu_backward_cols(dy, x, weight, dx, partial, block_rows, start, stop):
    """prelu_forward_cols's backward: dx, and for each block b of block_rows rows the float64
    column sums of dy*x over x <= 0 in partial[b] (the blocks are what the threads split, so
    each partial row has one writer; the caller adds them up per channel). A row goes by
    2048-element pieces, each piece's sums first (dx may be dy or x) and then its dx."""
    into = into_of(dx, dy, x)
    if into != 0:
        prelu_backward_cols_into(dy, x, weight, partial, block_rows, into, start, stop)
        return
    stream = dx.size * dx.itemsize >= m.STREAM_BYTES
    buffer = np.empty(2048 if stream else 0, dx.dtype)
    for b in range(start, stop):
        acc = partial[b]
        acc[:] = 0.0
        for r in range(b * block_rows, min((b + 1) * block_rows, dx.shape[0])):
            for c in range(0, dx.shape[1], 2048):
                g, v, d = dy[r, c:c + 2048], x[r, c:c + 2048], dx[r, c:c + 2048]
                w, a = weight[c:c + 2048], acc[c:c + 2048]
                for j in range(d.size):
                    a[j] += np.float64(registry.prelu_grad_weight_term(g[j], v[j]))
                if stream:
                    for j in range(d.size):
                        buffer[j] = registry.leaky_relu_backward(g[j], v[j], w[j])
                    stream_row(d, buffer)
                else:
                    for j in range(d.size):
                        d[j] = registry.leaky_relu_backward(g[j], v[j], w[j])
    if stream:
        m.store_fence()


def prelu_backward_cols_into(dy, x, weight, partial, block_rows, into, start, stop):
    """prelu_backward_cols for dx = dy (into 1) or x (into 2), dx written through one view
    (row_exp_in_place; the branch inside prelu_backward_cols's loop cost its calls out of place
    4% in cache)."""
    for b in range(start, stop):
        acc = partial[b]
        acc[:] = 0.0
        for r in range(b * block_rows, min((b + 1) * block_rows, dy.shape[0])):
            for c in range(0, dy.shape[1], 2048):
                g, v = dy[r, c:c + 2048], x[r, c:c + 2048]
                w, a = weight[c:c + 2048], acc[c:c + 2048]
                for j in range(g.size):
                    a[j] += np.float64(registry.prelu_grad_weight_term(g[j], v[j]))
                if into == 1:
                    for j in range(g.size):
                        g[j] = registry.leaky_relu_backward(g[j], v[j], w[j])
                else:
                    for j in range(v.size):
                        v[j] = registry.leaky_relu_backward(g[j], v[j], w[j])


def prelu_forward_rows_in_place(x, weight, start, stop):
    """prelu_forward_rows for out = x, through one view (row_exp_in_place); plain stores (the
    lines are in the cache, read by the same loop)."""
    channels = weight.size
    for r in range(start, stop):
        w = weight[r % channels]
        d = x[r]
        for j in range(d.size):
            d[j] = registry.leaky_relu_forward(d[j], w)


def prelu_backward_rows_into(dy, x, weight, grad_weight_rows, into, start, stop):
    """prelu_backward_rows for dx = dy (into 1) or x (into 2): each block's sum first, then its
    dx through one view (row_exp_in_place; LLVM's vector width, as the other prelu loops)."""
    channels = weight.size
    for r in range(start, stop):
        w = weight[r % channels]
        total = 0.0
        for b in range(0, dy.shape[1], 2048):
            g, v = dy[r, b:b + 2048], x[r, b:b + 2048]
            total += row_grad_weight(g, v)
            if into == 1:
                for j in range(g.size):
                    g[j] = registry.leaky_relu_backward(g[j], v[j], w)
            else:
                for j in range(v.size):
                    v[j] = registry.leaky_relu_backward(g[j], v[j], w)
        grad_weight_rows[r] = total


def stream_row(d, buffer):
    """d[:] = buffer[:d.size]: d's whole 64-byte lines by non-temporal stores, its partial first
    and last lines by plain ones (d may start anywhere; a line split between two chunks is
    written plainly by both)."""
    head = m.aligned_head(d)
    lanes = 64 // d.itemsize
    end = head + (d.size - head) // lanes * lanes
    for j in range(head):
        d[j] = buffer[j]
    for j in range(head, end, lanes):
        m.stream_line(d, j, buffer, j)
    for j in range(end, d.size):
        d[j] = buffer[j]


# --- softmax and log_softmax over the last axis of a (rows, n) view ------------------------------------
# Reductions live in small helpers compiled with their own fastmath flags (FASTMATH below) and
# inlined by LLVM, which keeps each instruction's flags: only the accumulations may be reordered
# (so they vectorize); the exp code inlined into them stays exact. A NaN anywhere in a row makes
# the whole row NaN through the sums, whatever the max found (as PyTorch), so the max ignores
# NaN; a +inf max or an all -inf row gives NaN (inf - inf), as PyTorch. softmax multiplies by
# the reciprocal of the sum (one more rounding, 1.36 -> 1.58 Gelem/s per core: the divider took
# 10 cycles per 16 lanes).

def row_max(row):
    """The largest entry, NaN ignored (a NaN still makes the row NaN through its exp). fmax is
    llvm.maxnum, which the loop vectorizer reduces; a select on a comparison stayed scalar, at 4
    cycles per element (softmax forward ran at 0.5 Gelem/s per core). Compiled with nnan (FASTMATH):
    maxnum is then a plain vmaxps, without the compare and blend that keep NaN out, and the final
    horizontal max is a vector tree, not a chain of 15 scalar maxnums (softmax 1.19 -> 1.35 Gelem/s
    per core; whichever operand a NaN lane yields, the row's exps make the row NaN)."""
    m.wide_vectors()
    best = row[0]
    for j in range(1, row.size):
        best = m.fmax(best, row[j])
    return best


def row_exp(row, best, dst):
    """dst = exp(row - best), the difference carried as a double-word (exp multiplies an error in it
    by |row - best|); dst is not row (row_exp_in_place). (Summing in this loop too kept it from
    vectorizing.)"""
    m.wide_vectors()  # helpers are optimized on their own before the kernel inlines them
    for j in range(row.size):
        dst[j] = m.exp_difference(row[j], best)


def row_exp_in_place(row, best):
    """row_exp(row, best, row) through one view: given two, LLVM's vectorized loop checks that
    they do not overlap and runs its scalar loop where they do (in_place_task_source)."""
    m.wide_vectors()
    for j in range(row.size):
        row[j] = m.exp_difference(row[j], best)


def row_map_2(fn, a, b, into, params):
    """a[j] = fn(a[j], b[j], *params) over a row where into is 1 (the output is a), else b[j] =
    the same (the output is b): through one view, see row_exp_in_place."""
    m.wide_vectors()
    if into == 1:
        for j in range(a.size):
            a[j] = fn(a[j], b[j], *params)
    else:
        for j in range(b.size):
            b[j] = fn(a[j], b[j], *params)


def into_of(dst, a, b):
    """The in-place case of a row kernel whose arrays are all one shape: 1 where dst is a, 2 where
    it is b (the API passes out as an input or not overlapping any), else 0."""
    return 1 if dst.ctypes.data == a.ctypes.data else 2 if dst.ctypes.data == b.ctypes.data else 0


def row_others(e):
    """Sum of e over all but one of the entries equal to 1 (the max's exp(0) is exactly 1), so that
    log1p of it is exact where log_softmax is close to 0; NaN entries count (as NaN)."""
    others, ones = 0.0, 0
    for j in range(e.size):
        others += np.float64(e[j]) if e[j] != 1.0 else 0.0
        ones += 1 if e[j] == 1.0 else 0
    return others + (ones - 1)


def row_grad_weight(dy, x):
    """prelu's per-row sum of dy * x over x <= 0, in float64 (a reduction: reassoc, see below)."""
    total = 0.0
    for j in range(x.size):
        total += np.float64(registry.prelu_grad_weight_term(dy[j], x[j]))
    return total


def row_dot(dy, y):
    """softmax backward's row sum of dy y in float64 (registry.softmax_backward_term), and the
    sum of |dy| in dy's type (which bounds every |dy|, or is inf or NaN). The float32 products
    are exact in float64, so the fma that contract allows changes no bits. The sum of |dy| in
    float64 had cost 4 of the loop's 12 vector operations per 16 elements (two conversions,
    two adds on 8 lanes): float32, 2^20 rows of 1024, 2 threads 62 -> 75 GB/s (NOTES.md)."""
    m.wide_vectors()
    total, size = 0.0, m.like(dy[0], 0.0)
    for j in range(y.size):
        total += registry.softmax_backward_term(dy[j], y[j])
        size += abs(dy[j])
    return total, size


def row_sum(a):
    m.wide_vectors()
    total = 0.0
    for j in range(a.size):
        total += a[j]
    return total


NONPOSITIVE_ROW_MAX = 1 << 16  # elements: longer rows skip the check (C: the same)


def row_nonpositive(a):
    """True where no entry is above 0 (NaN counts as not): log_softmax's backward then takes
    exp_nonpositive for the row's e^y (registry.log_softmax_backward_element_nonpositive, the
    same bits). Rows longer than NONPOSITIVE_ROW_MAX answer False without looking: there the
    check's extra read of y would come from memory, not from the L2 the next pass reads it in."""
    m.wide_vectors()
    if a.size > NONPOSITIVE_ROW_MAX:
        return False
    above = 0
    for j in range(a.size):
        above += a[j] > 0.0
    return above == 0


FASTMATH = {"row_others": {"reassoc"}, "row_dot": {"reassoc", "contract"},
            "row_grad_weight": {"reassoc"}, "row_sum": {"reassoc"}, "row_max": {"nnan", "nsz"}}


def softmax_rows(x, out, start, stop):
    m.wide_vectors()
    in_place = out.ctypes.data == x.ctypes.data  # the API passes out = x or no overlap at all
    for r in range(start, stop):
        dst = out[r]
        if in_place:
            row_exp_in_place(dst, row_max(dst))
        else:
            row = x[r]
            row_exp(row, row_max(row), dst)
        inverse = m.like(dst[0], 1.0 / row_sum(dst))
        for j in range(dst.size):
            dst[j] = dst[j] * inverse


def log_softmax_rows(x, out, start, stop):
    """x - max - log1p(sum of the other terms): accurate even where the result is near 0. The exps
    go to the output row (softmax's order: the output's lines arrive while the exps compute, and
    the last pass finds them in L1), or to a scratch row when out is x. One thread, float32,
    against a scratch row always: 2^26 1.03-1.11 -> 1.55-1.6, 2^20 1.53 -> 1.72 Gelem/s, 2^16
    (in L2) even; the last pass had stalled on the output's lines (NOTES.md). The two loops are
    written out: one loop choosing the array per row, or the row's code as a helper (inlined by
    LLVM or by Numba), ran 8-25% slower; only the log-sum reduction as a helper (row_log_sum) ran
    22% slower at 2^26 and 9% in cache (review, 18:58 UTC)."""
    m.wide_vectors()
    if out.ctypes.data == x.ctypes.data:  # the API passes out = x or no overlap at all
        scratch = np.empty(x.shape[1], x.dtype)
        for r in range(start, stop):
            row = dst = out[r]  # one view (row_exp_in_place)
            best = row_max(row)
            row_exp(row, best, scratch)
            if m.is_single(best):  # 1 + the others as one float64 sum, unless they are small
                total = row_sum(scratch)
                others = total - 1.0 if total >= 1.0 + 2.0 ** -10 else row_others(scratch)
            else:  # float64: 1 + 2^-10 would keep too few of the others' bits
                others = row_others(scratch)
            log_sum = m.like(best, m.log1p(others))
            for j in range(dst.size):
                dst[j] = (row[j] - best) - log_sum
    else:  # the same loop, exps in dst
        for r in range(start, stop):
            row, dst = x[r], out[r]
            best = row_max(row)
            row_exp(row, best, dst)
            if m.is_single(best):  # 1 + the others as one float64 sum, unless they are small
                total = row_sum(dst)
                others = total - 1.0 if total >= 1.0 + 2.0 ** -10 else row_others(dst)
            else:  # float64: 1 + 2^-10 would keep too few of the others' bits
                others = row_others(dst)
            log_sum = m.like(best, m.log1p(others))
            for j in range(dst.size):
                dst[j] = (row[j] - best) - log_sum


def prefetch_ahead(rows, r, ahead):
    """Hint the cache lines ``ahead`` elements past the start of row r of a C-contiguous 2-D
    array, a row's worth of them (one per line), as if its rows were one flat array: ahead =
    rows.shape[1] is the next row. Past the end is harmless (a prefetch never faults).
    softmax's backward prefetches its output's next row from PREFETCH_BYTES up: its last pass,
    with little arithmetic, otherwise waits for each line it writes (write-allocate; 2^26, 2
    threads: 27.2 -> 33.8 GB/s). log_softmax's backward, which prefetches its inputs' next rows,
    lost 15% with that one too (NOTES.md). Both only where math.SOFTWARE_PREFETCH: on the AMD
    Zen 4 VM, 2^26 rows of 1024, 2 threads, softmax's backward ran 5-15% and log_softmax's 33-39%
    faster without (maxout's forward keeps its prefetch everywhere: there it gained 14% on one
    thread and was even on two). Indexed from row r's own view with a constant step: the flat
    view (a reshape call) and 64 // itemsize (a division) had cost each row ~50 cycles,
    a third of a row of 128 (softmax backward, 2^20 rows of 128: see NOTES.md)."""
    row = rows[r]
    for j in range(ahead, ahead + row.size, 16 if m.is_single(row[0]) else 8):  # one per line
        m.prefetch(row, j)


# The softmax backward computes in y's type, with the row's float64 dot split into a pair
# (registry.softmax_backward_element_split), on rows where neither the sum of |dy| nor |dot|
# reaches 2^126, so that dy - hi cannot overflow; in float64 on other rows. In cache, one core:
# 3.1 -> 4.4 Gelem/s (NOTES.md), without prefetching the next row (which cost 20% in cache;
# log_softmax's backward keeps it where math.SOFTWARE_PREFETCH: its exps did not overlap their
# loads otherwise, on Intel). Both on
# 512-bit vectors: log_softmax's exp loop 1.8 -> 2.2 Gelem/s.

def softmax_backward_rows(dy, y, dx, start, stop):
    m.wide_vectors()
    into = into_of(dx, dy, y)
    if into != 0:  # in place: its own row loop (see log_softmax_backward_rows)
        softmax_backward_rows_into(dy, y, into, start, stop)
        return
    ahead = m.SOFTWARE_PREFETCH and dx.size * dx.itemsize >= m.PREFETCH_BYTES  # prefetch_ahead
    for r in range(start, stop):
        if ahead:
            prefetch_ahead(dx, r, dx.shape[1])
        g, s, d = dy[r], y[r], dx[r]
        dot, size = row_dot(g, s)
        if size < 2.0 ** 126 and abs(dot) < 2.0 ** 126:
            hi = m.like(s[0], dot)
            lo = m.like(hi, dot - hi)
            for j in range(d.size):
                d[j] = registry.softmax_backward_element_split(g[j], s[j], hi, lo)
        else:
            for j in range(d.size):
                d[j] = registry.softmax_backward_element(g[j], s[j], dot)


def softmax_backward_rows_into(dy, y, into, start, stop):
    m.wide_vectors()
    ahead = m.SOFTWARE_PREFETCH and dy.size * dy.itemsize >= m.PREFETCH_BYTES
    for r in range(start, stop):
        g, s = dy[r], y[r]
        if ahead:  # the output's next row: dy's or y's
            prefetch_ahead(dy if into == 1 else y, r, dy.shape[1])
        dot, size = row_dot(g, s)
        if size < 2.0 ** 126 and abs(dot) < 2.0 ** 126:
            hi = m.like(s[0], dot)
            lo = m.like(hi, dot - hi)
            row_map_2(registry.softmax_backward_element_split, g, s, into, (hi, lo))
        else:
            row_map_2(registry.softmax_backward_element, g, s, into, (dot,))


def log_softmax_backward_rows(dy, y, dx, start, stop):
    m.wide_vectors()
    into = into_of(dx, dy, y)
    if into != 0:  # in place: a row loop of its own (its loops inside this row loop, beside
        # the one below, cost the call out of place 7% in cache: rows of 1024, one thread)
        log_softmax_backward_rows_into(dy, y, into, start, stop)
        return
    for r in range(start, stop):
        if m.SOFTWARE_PREFETCH:
            prefetch_ahead(dy, r, dy.shape[1])
            prefetch_ahead(y, r, y.shape[1])
        g, s, d = dy[r], y[r], dx[r]
        total = row_sum(g)
        if row_nonpositive(s):  # a real log_softmax output's row
            for j in range(d.size):
                d[j] = registry.log_softmax_backward_element_nonpositive(g[j], s[j], total)
        else:
            for j in range(d.size):
                d[j] = registry.log_softmax_backward_element(g[j], s[j], total)


def log_softmax_backward_rows_into(dy, y, into, start, stop):
    m.wide_vectors()
    for r in range(start, stop):
        if m.SOFTWARE_PREFETCH:
            prefetch_ahead(dy, r, dy.shape[1])
            prefetch_ahead(y, r, y.shape[1])
        g, s = dy[r], y[r]
        total = row_sum(g)
        if row_nonpositive(s):
            row_map_2(registry.log_softmax_backward_element_nonpositive, g, s, into, (total,))
        else:
            row_map_2(registry.log_softmax_backward_element, g, s, into, (total,))


# --- maxout over groups of k along an axis: x viewed as (outer, C, k, inner) -----------------------------
# The kernels take x as (outer, C*k*inner) rows and the result as (outer, C*inner): element i of
# piece j of group c is row[(c*k + j)*inner + i]. Where the groups run along the last axis (inner
# 1, the benchmark's shape) and k <= 4, k and inner are constants in the loops below (literal
# arguments, inlined), so LLVM vectorizes over the groups with interleaved loads; otherwise the
# loops over i vectorize. 2^26 float32, 2 threads, inner 1: forward 5.0 -> 21.5 GB/s (the loop
# over i of length 1 was scalar), backward 3.4 -> 23.8 (NOTES.md).

def group_max(row, base, stride, k):
    """(max, index of its first occurrence) over row[base + j*stride], j < k; the first NaN if there
    is one (registry.maxout_takes_over)."""
    best, where = row[base], 0
    for j in range(1, k):
        v = row[base + j * stride]
        if registry.maxout_takes_over(v, best):
            best, where = v, j
    return best, where


def maxout_forward_groups(x, out, k, inner, start, stop):
    """Inputs beyond the caches are prefetched 4 KiB ahead: the hardware prefetcher stops at each
    4 KiB page, and this loop, faster than memory, then waited on every page's first lines (2^26
    float32, 2 threads: 21.7 -> 27.5 GB/s; in L2 it cost 7%, hence only from PREFETCH_BYTES)."""
    ahead = 4096 // x.itemsize if x.size * x.itemsize >= m.PREFETCH_BYTES else 0
    for o in range(start, stop):
        if ahead:
            prefetch_ahead(x, o, ahead)
        row, dst = x[o], out[o]
        for c in range(dst.size // inner):
            for i in range(inner):
                dst[c * inner + i] = group_max(row, c * k * inner + i, inner, k)[0]


def maxout_backward_groups(dy, x, dx, k, inner, start, stop):
    """dy goes to each group's first arg-max, 0 elsewhere: a row's arg-maxes first (scratch), then
    its outputs. For inner 1 (k a constant there) a group's k outputs are written together, an
    interleaved store group: the memory-order loop (piece j of group c = cj // k) read dy and the
    arg-maxes by gathers (99 vgatherqps on Zen 4, which runs them slowly: 2 threads, rows of
    256, k = 4, 2^20 27 -> 82 GB/s, 2^26 12 -> 32; with Intel tuning, compiled for
    skylake-avx512 or sapphirerapids, equal speed and no scatters; an earlier try of this form
    had become scatters on Intel, 14 against 24 GB/s, and a form that also fused the arg-max
    pass ran 45)."""
    where = np.empty(dy.shape[1], np.int32)
    for o in range(start, stop):
        row, g, d = x[o], dy[o], dx[o]
        for c in range(g.size // inner):
            for i in range(inner):
                where[c * inner + i] = group_max(row, c * k * inner + i, inner, k)[1]
        if inner == 1:
            for c in range(g.size):
                w = where[c]
                v = g[c]
                for j in range(k):
                    d[c * k + j] = v if j == w else 0.0
        else:
            for cj in range(d.size // inner):  # piece j of group c
                c = cj // k
                j = cj - c * k
                for i in range(inner):
                    d[cj * inner + i] = g[c * inner + i] if j == where[c * inner + i] else 0.0


def maxout_forward_rows(x, out, start, stop):
    k, inner = x.shape[2], x.shape[3]
    rows, outs = x.reshape(x.shape[0], -1), out.reshape(out.shape[0], -1)
    if inner == 1 and k == 2:
        maxout_forward_groups(rows, outs, 2, 1, start, stop)
    elif inner == 1 and k == 3:
        maxout_forward_groups(rows, outs, 3, 1, start, stop)
    elif inner == 1 and k == 4:
        maxout_forward_groups(rows, outs, 4, 1, start, stop)
    else:
        maxout_forward_groups(rows, outs, k, inner, start, stop)


def maxout_backward_rows(dy, x, dx, start, stop):
    k, inner = x.shape[2], x.shape[3]
    rows, outs = x.reshape(x.shape[0], -1), dx.reshape(dx.shape[0], -1)
    grads = dy.reshape(dy.shape[0], -1)
    if inner == 1 and k == 2:
        maxout_backward_groups(grads, rows, outs, 2, 1, start, stop)
    elif inner == 1 and k == 3:
        maxout_backward_groups(grads, rows, outs, 3, 1, start, stop)
    elif inner == 1 and k == 4:
        maxout_backward_groups(grads, rows, outs, 4, 1, start, stop)
    else:
        maxout_backward_groups(grads, rows, outs, k, inner, start, stop)


def look_until(pool, index, want, ticks, yielding):
    """True once the pool state's int64 at index (pool: its address) is >= want, False once about
    ticks of the time-stamp counter have passed; between looks a spin-wait hint, or, yielding (a
    constant where it is inlined), sched_yield (fastact/_threads.py, Idling)."""
    start = m.cycle_counter()
    while m.atomic_load(pool, index) < want:
        if m.cycle_counter() - start > ticks:
            return False
        if yielding:
            m.yield_cpu()
        else:
            m.spin_pause()
    return True


def spin_until(pool, index, want, ticks):
    """Wait until the pool state's int64 at index is >= want (True), or about ticks of the
    time-stamp counter have passed (False): the thread pool's spin-wait (fastact/_threads.py),
    compiled without the GIL."""
    return look_until(pool, index, want, ticks, False)


def idle_until(pool, index, want, ticks):
    """spin_until, giving the CPU away (sched_yield) between looks: an idle worker's wait after
    its spinning (fastact/_threads.py, Idling)."""
    return look_until(pool, index, want, ticks, True)


# --- the thread pool's hand-off, in native code (fastact/_threads.py) ---------------------------------
# The pool state (pool: its address; layout in fastact/_threads.py) holds [0] the number of
# workers of this call, [1] a worker's idle-spin budget, [2] where a call's task arguments go;
# worker w's "go" counter at POOL_STRIDE w, with its task, the task's arguments, start and stop
# after it, and its "done" counter POOL_DONE further.
#
# Native tasks (the elementwise maps): the generated module's kernel(args, start, stop) is the
# loop, its arguments in a block of int64s (MAP_BLOCK: the size, the arrays' addresses, the
# parameters as float64 from MAP_PARAMS on); a worker's run_tasks calls it through its C wrapper
# (Numba makes one for every compiled function: "cfunc." + its name). The caller's entry,
# call_K_P(tasks, *arrays, out, params, start, stop, pool, slot, seq) below, writes the block
# into the pool state, tells the workers to go (pool_publish) and calls the task itself, all
# without the GIL: the workers never need Python. tasks: the map's task table, [0] its task and
# [1 + k] its in-place form for out being input k (0 until compiled; in_place_task_source).
# The row kernels' tasks (row_task_source) read their arrays' addresses and shapes from a block
# that their caller's entry writes as call_K_P does. Until 2026-11-24 they were Python tasks (a
# worker went back to Python for the GIL and Numba's dispatch of the pooled entry): on the Zen 4
# VM a split 2^20 prelu forward then took about one thread's time (96 us, half the rows alone
# 48); as native tasks 68-74 us (fastact/bench/NOTES.md, thirteenth session; where the old
# worker's time went was not analysed).
# Python tasks (task 0: plain Python kernels, the tests' own) are called as kernel(*args, start,
# stop, pool, slot, seq), pool_enter before the loop, pool_leave after it; their caller (slot 0)
# tells its workers to go once it has released the GIL (a worker that saw the go while the
# caller still held the GIL slept in the GIL's wait, and a sleeping core of this VM took ~50 us
# to wake: 2^20 relu backward on 2 threads took 340 us where either half alone took 230).
# Direct calls pass slot -1.
MAP_BLOCK = 12  # int64s, within _threads.POOL_ARGS_SIZE
MAP_PARAMS = 5  # the first parameter's index: up to 3 arrays and out before it
_MAP_VALUES = "m.array_at(args + 8 * MAP_PARAMS, MAP_BLOCK - MAP_PARAMS, np.float64(0))"


def pool_enter(pool, slot, seq):
    if slot == 0:
        for worker in range(1, m.atomic_load(pool, 0) + 1):
            m.atomic_store(pool, POOL_STRIDE * worker, seq)


def pool_leave(pool, slot, seq):
    if slot > 0:
        m.atomic_store(pool, POOL_STRIDE * slot + POOL_DONE, seq)


def pool_publish(pool, task, args, seq):
    """A native task's caller (slot 0): the task and its arguments' address for each worker of
    the call (their start and stop are there already), then their go."""
    for worker in range(1, m.atomic_load(pool, 0) + 1):
        m.atomic_store(pool, POOL_STRIDE * worker + POOL_TASK, task)
        m.atomic_store(pool, POOL_STRIDE * worker + POOL_TASK_ARGS, args)
    pool_enter(pool, 0, seq)


def pool_take_back(pool, task, args, seq):
    """A native task's caller (slot 0), its own range done: each worker's range that the worker
    has not claimed yet, claimed and computed here, and marked done (fastact/_threads.py, Taking
    back)."""
    if m.atomic_load(pool, POOL_TAKE_BACK) != 0:
        for worker in range(1, m.atomic_load(pool, 0) + 1):
            line = POOL_STRIDE * worker
            if (m.atomic_load(pool, line + POOL_DONE) < seq
                    and m.atomic_max(pool, line + POOL_CLAIM, seq) < seq):
                m.call_task(task, args, m.atomic_load(pool, line + POOL_START),
                            m.atomic_load(pool, line + POOL_STOP))
                m.atomic_store(pool, line + POOL_DONE, seq)


def run_tasks(pool, slot, last):
    """A worker's wait for its next go, and the native tasks it then runs (fastact/_threads.py):
    returns 4 * the last call it finished + RUN_IDLE (no go within the idle budget: marked asleep),
    RUN_PYTHON (a go whose task is 0: Python runs it) or RUN_NOTIFY (its caller sleeps: wake
    it). The fences order each store before the load after it, which the other thread does the
    other way round (a caller stores the go, then looks whether the worker sleeps; the worker
    stores that it sleeps, then looks for a go; the same for done and POOL_WAITING). A go whose
    claim the caller raised first (it took the range back) is passed over."""
    go = POOL_STRIDE * slot
    done = go + POOL_DONE
    m.atomic_store(pool, go + POOL_ASLEEP, 0)
    while True:
        if not (spin_until(pool, go, last + 1, m.atomic_load(pool, 1))
                or idle_until(pool, go, last + 1, m.atomic_load(pool, POOL_IDLE_YIELD))):
            m.atomic_store(pool, go + POOL_ASLEEP, 1)
            m.store_fence()
            if m.atomic_load(pool, go) <= last:
                return 4 * last + RUN_IDLE
            m.atomic_store(pool, go + POOL_ASLEEP, 0)
            continue
        seq = m.atomic_load(pool, go)
        if m.atomic_max(pool, go + POOL_CLAIM, seq) >= seq:  # its caller took it back
            last = seq
            continue
        task = m.atomic_load(pool, go + POOL_TASK)
        if task == 0:
            return 4 * last + RUN_PYTHON
        m.call_task(task, m.atomic_load(pool, go + POOL_TASK_ARGS),
                    m.atomic_load(pool, go + POOL_START), m.atomic_load(pool, go + POOL_STOP))
        m.atomic_store(pool, done, seq)
        last = seq
        m.store_fence()
        if m.atomic_load(pool, go + POOL_WAITING) >= seq:
            return 4 * last + RUN_NOTIFY


POOL_HELPERS = ("look_until", "spin_until", "pool_enter", "pool_leave")
POOL_FUNCTIONS = ("pool_publish", "pool_take_back", "run_tasks")


def _task_head(jit, n_arrays, dtype, skip=-1):
    """The lines of a native task's head: its arrays (all but input skip) and its parameters."""
    like = f"np.{np.dtype(dtype).name}(0)"
    arrays = [f"a{j}" for j in range(n_arrays)] + ["out"]
    lines = [f"\n\n{jit}def kernel(args, start, stop):",
             "    block = m.array_at(args, MAP_BLOCK, np.int64(0))"]
    lines += [f"    {a} = m.array_at(block[{j + 1}], block[0], {like})"
              for j, a in enumerate(arrays) if j != skip]
    return lines + [f"    values = {_MAP_VALUES}"]


def _task_params(n_params, dtype):
    return "(" + "".join(f"np.{np.dtype(dtype).name}(values[{j}]), " for j in range(n_params)) + ")"


def task_source(jit, loop, n_arrays, n_params, dtype):
    """Source of a map's native task kernel(args, start, stop) for this dtype (see above): its
    loop on the part of [start, stop) before out's first 64-byte boundary, then on the rest
    (ALIGNED above)."""
    arrays = [f"a{j}" for j in range(n_arrays)] + ["out"]
    call = f"    {loop}({', '.join(arrays)}, {_task_params(n_params, dtype)}, "
    lines = _task_head(jit, n_arrays, dtype)
    lines += ["    head = start + m.aligned_head(out[start:stop])",
              call + "start, head)", call + "head, stop)"]
    return "\n".join(lines) + "\n"


# In-place forms whose loop stores only the lanes it changes (a masked store of a constant):
# their vector loop starts where out does, not at its first 64-byte boundary (ALIGNED above). On
# fresh data, 2^18 elements in place, one thread (Zen 4 VM): relu forward 22.6-24.6 -> 25.2-25.5
# us aligned (-5-10%; on 64-byte aligned arrays without the head too: 23.7 -> 28.5), where
# hardtanh / relu6 forward 22.5 / 23.0 -> 19.0 / 19.0, sigmoid forward 108-124 -> 99-101 and
# sigmoid / hardtanh backward into dy 33.3 / 41 -> 29.7 / 38 us gained from it.
UNALIGNED_IN_PLACE = frozenset({"relu_forward", "threshold_forward"})


def in_place_task_source(jit, vectors, n_arrays, n_params, dtype, alias, prefetched=False,
                         aligned=True):
    """Source of a map's native task for calls whose out is input alias (the same address), its
    loop written with out for that input, read and written at one index through one view
    (vectors: the math function that sets its vector width; prefetched: in 512-element blocks,
    the inputs' lines hinted 2048 elements ahead where math.SOFTWARE_PREFETCH, as the
    arithmetic-bound loops do). Given two views, even of one array, LLVM cannot tell that their
    addresses are equal (Numba's slices branch), and its vectorized loop first checks at run
    time that they do not overlap and runs its scalar loop where they do: in place, sigmoid's
    forward ran 8-11x slower, gelu's 11-15x (AMD Zen 4, 2^14 elements, one thread;
    bench/NOTES.md). Plain stores at every size: in place, each line is in the cache already
    (read by the same iteration), which is what the streamed loops avoid. aligned: the
    elements before out's first 64-byte boundary first (ALIGNED, UNALIGNED_IN_PLACE above)."""
    views = ["out" if j == alias else f"a{j}" for j in range(n_arrays)]
    lines = _task_head(jit, n_arrays, dtype, skip=alias)
    lines += [f"    params = {_task_params(n_params, dtype)}",
              f"    m.{vectors}()",
              "    out = out[start:stop]"]
    lines += [f"    a{j} = a{j}[start:stop]" for j in range(n_arrays) if j != alias]
    inputs = ", ".join(f"{v}[i]" for v in views)
    if aligned:
        lines += ["    head = m.aligned_head(out)  # (ALIGNED above)",
                  "    for i in range(head):",
                  f"        out[i] = scalar({inputs}, *params)"]
        lines += [f"    {v} = {v}[head:]" for v in sorted(set(views))]
    if not prefetched:
        lines += ["    for i in range(out.size):",
                  f"        out[i] = scalar({inputs}, *params)"]
        return "\n".join(lines) + "\n"
    lines += ["    for b in range(0, out.size, 512):",
              "        if m.SOFTWARE_PREFETCH:",
              "            for i in range(b + 2048, b + 2560, 64 // out.itemsize):"]
    lines += [f"                m.prefetch({v}, i)" for v in sorted(set(views))]
    lines += [f"        {v}_ = {v}[b:b + 512]" for v in sorted(set(views))]
    lines += ["        for i in range(out_.size):",
              f"            out_[i] = scalar({', '.join(f'{v}_[i]' for v in views)}, *params)"]
    return "\n".join(lines) + "\n"


def _caller_block(size):
    """A caller entry's lines that make its block of `size` int64s: in the pool state for the
    caller of a split call (slot 0: the workers read it there), else its own."""
    return ["    if slot == 0:",
            f"        block = m.array_at(pool + 8 * m.atomic_load(pool, 2), {size}, np.int64(0))",
            "    else:",
            f"        block = np.empty({size}, np.int64)"]


# a caller entry's run of its task (args: its block's address): published to the workers, its
# own range, the workers' unclaimed ranges taken back, then its done
_CALLER_RUN = ["    if slot == 0:",
               "        pool_publish(pool, task, args, seq)",
               "    m.call_task(task, args, start, stop)",
               "    if slot == 0:",
               "        pool_take_back(pool, task, args, seq)",
               "    pool_leave(pool, slot, seq)"]


def row_task_source(jit, loop, signature):
    """Source of a row kernel's native task kernel(args, start, stop), loop(*arguments, start,
    stop) with its arguments read from a block of int64s, and of its caller's entry
    caller(task, *arguments, start, stop, pool, slot, seq), which writes the block (into the
    pool state for slot 0, as call_K_P) and runs the task as call_K_P does. Per entry of
    signature: an array, ("float32" | "float64", ndim), C-contiguous (the caller's guarantee):
    its address, then its shape; or "int": the value. The fast path (fastact/_fastcall.c, Rows)
    writes the same blocks."""
    task = [f"\n\n{jit}def kernel(args, start, stop):"]
    names, writes, j = [], [], 0
    for k, entry in enumerate(signature):
        names.append(f"a{k}")
        if entry == "int":
            task.append(f"    a{k} = block[{j}]")
            writes.append(f"    block[{j}] = a{k}")
            j += 1
            continue
        dtype, ndim = entry
        dims = [f"block[{j + 1 + d}]" for d in range(ndim)]
        task.append(f"    a{k} = m.array_at(block[{j}], {' * '.join(dims)}, np.{dtype}(0))"
                    + (f".reshape(({', '.join(dims)}))" if ndim > 1 else ""))
        writes.append(f"    block[{j}] = a{k}.ctypes.data")
        writes += [f"    block[{j + 1 + d}] = a{k}.shape[{d}]" for d in range(ndim)]
        j += 1 + ndim
    assert j <= POOL_ARGS_SIZE, (loop, signature)
    task.insert(1, f"    block = m.array_at(args, {j}, np.int64(0))")
    task.append(f"    {loop}({', '.join(names)}, start, stop)")
    caller = [f"\n\n{jit}def caller(task, {', '.join(names)}, start, stop, pool, slot, seq):",
              *_caller_block(j)]
    caller += writes
    caller += ["    args = block.ctypes.data", *_CALLER_RUN,
               "    return block[0]  # (read after the call: a block of its own lives through it)"]
    return "\n".join(task + caller) + "\n"


def caller_source(jit, n_arrays, n_params):
    """Source of call_K_P, the caller's entry of a native map task with K input arrays and P
    parameters (see above): task(block, start, stop) with the block in the pool state (slot 0)
    or its own (a call alone, or a test's call as a worker, which then marks itself done). The
    task is tasks[0], or tasks[1 + k] where out is input k; where that in-place form is not
    compiled yet (0), tasks[0] runs (right, slower) and the call returns -(1 + k) for the
    caller to compile it (cpu.Backend.map); else it returns the size."""
    arrays = [f"a{j}" for j in range(n_arrays)] + ["out"]
    lines = [f"\n\n{jit}def call_{n_arrays}_{n_params}(tasks, {', '.join(arrays)}, params, start, "
             "stop, pool, slot, seq):",
             *_caller_block("MAP_BLOCK"),
             "    block[0] = out.size"]
    lines += [f"    block[{j + 1}] = {a}.ctypes.data" for j, a in enumerate(arrays)]
    lines += ["    args = block.ctypes.data",
              "    task = tasks[0]",
              "    wanted = 0"]
    for j in reversed(range(n_arrays)):  # the first input that is out wins
        lines += [f"    if block[{j + 1}] == block[{n_arrays + 1}]:",
                  f"        if tasks[{j + 1}] != 0:",
                  f"            task, wanted = tasks[{j + 1}], 0",
                  "        else:",
                  f"            task, wanted = tasks[0], {j + 1}"]
    if n_params:
        lines.append(f"    values = {_MAP_VALUES}")
        lines += [f"    values[{j}] = params[{j}]" for j in range(n_params)]
    lines += [*_CALLER_RUN,
              "    size = block[0]  # (read after the call: a block of its own lives through it)",
              "    return size if wanted == 0 else -wanted"]
    return "\n".join(lines) + "\n"


HELPERS = ("prefetch_ahead", "stream_row", "row_grad_weight", "row_max", "row_exp",
           "row_exp_in_place", "row_map_2", "into_of", "softmax_backward_rows_into",
           "log_softmax_backward_rows_into", "prelu_forward_rows_in_place",
           "prelu_backward_rows_into", "prelu_backward_cols_into", "row_others", "row_dot",
           "row_sum", "row_nonpositive", "group_max", "maxout_forward_groups",
           "maxout_backward_groups")
