"""fastact's thread pool, shared by the CPU backends (Numba and C): large calls are split into
chunks run by serial kernels that release the GIL, the calling thread taking one chunk.

One pool for both backends means they can never oversubscribe the cores together; no Numba
threading layer (its start-up cost, the workqueue layer's abort on concurrent use) and no OpenMP
runtime (PyTorch ships its own libgomp: a C backend linked to OpenMP shared torch's spinning team
and measured 7 ms per 2^20 call once torch was imported) are involved. Calls from several Python
threads at once are safe; a forked child starts a new pool.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

# Below this much work (elements, or rows x row length) one thread does the whole call. Measured on
# 2 cores, float32, 1 vs 2 threads (fastact/bench/NOTES.md): the pool costs about 20 us a call,
# which 2^16 elements of even the cheapest kernel (relu, ~8 us at 8 Gelem/s) roughly repays.
PARALLEL_THRESHOLD = 1 << 16
_CHUNK_ALIGN = 64  # elements; keeps chunk edges on cache lines

_lock = threading.Lock()
_pool = None
_pool_size = 0
_num_threads = os.cpu_count() or 1


def set_num_threads(n):
    """Threads the CPU backends use for large arrays (default: all cores)."""
    global _num_threads
    if int(n) < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _num_threads = int(n)


def get_num_threads():
    return _num_threads


def _forget_pool_after_fork():
    """A forked child has none of the parent's worker threads: start a new pool when needed."""
    global _pool, _pool_size, _lock
    _pool, _pool_size, _lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _get_pool(size):
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < size:
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="fastact")
            _pool_size = size
        return _pool


def run(kernel, args, n, cost=1):
    """kernel(*args, start, stop) over [0, n), split over threads when n * cost is large."""
    threads = min(_num_threads, max(1, (n * cost) // PARALLEL_THRESHOLD))
    if threads <= 1:
        kernel(*args, 0, n)
        return
    step = -(-n // threads)
    if cost == 1:
        step = -(-step // _CHUNK_ALIGN) * _CHUNK_ALIGN
    bounds = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    pool = _get_pool(threads - 1)
    futures = [pool.submit(kernel, *args, lo, hi) for lo, hi in bounds[1:]]
    error = None
    try:
        kernel(*args, *bounds[0])
    except BaseException as e:  # still wait for the others: they write into the same arrays
        error = e
    for f in futures:
        f.result()
    if error is not None:
        raise error
