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

# Below this much work (elements, or rows x row length) one thread does the whole call. Measured on
# 2 cores, float32, 1 vs 2 threads (fastact/bench/NOTES.md): handing a chunk to a worker costs
# about 9 us a call (20 us with concurrent.futures), which 2^16 elements of even the cheapest
# kernel (relu, ~8 us at 8 Gelem/s) repays.
PARALLEL_THRESHOLD = 1 << 16
_CHUNK_ALIGN = 64  # elements; keeps chunk edges on cache lines

_lock = threading.Lock()  # guards the worker list
_busy = threading.Lock()  # held by the call that uses the workers
_workers = []
_num_threads = os.cpu_count() or 1


def set_num_threads(n):
    """Threads the CPU backends use for large arrays (default: all cores)."""
    global _num_threads
    if int(n) < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _num_threads = int(n)


def get_num_threads():
    return _num_threads


# Spinning. A thread blocked in a lock sleeps, and on this VM waking it took ~50 us (a halted
# virtual CPU): the worker started ~50 us after the caller's chunk and the caller learned ~55 us
# late that it had finished, 100 us of a 330 us call at 2^20 elements (fastact/bench/NOTES.md).
# So a worker spins for a while after each chunk, waiting for the next, and the caller spins
# while it waits for the workers, both in native code with the GIL released, and both block in
# the locks once the budget is spent (an idle pool sleeps; OpenMP's default spins longer). The
# locks alone keep the hand-off correct; the spinning only decides when to take them.
# spin(state, index, want, ticks) -> True once state[index] >= want, False after ~ticks of the
# CPU's time-stamp counter; a backend registers its native one (set_spinner).
IDLE_SPIN_TICKS = 130_000  # after a chunk, for the next one: ~50 us at 2.6 GHz
WAIT_SPIN_TICKS = 6_000_000  # the caller, for its workers: ~2 ms, then it blocks
_spin = None
_spin_provider = None


def set_spinner(provider):
    """provider() returns a spin function (see above); it is called when the first workers start
    (a backend registers one when it loads; the first one registered is used)."""
    global _spin_provider
    if _spin_provider is None:
        _spin_provider = provider


def _load_spinner():
    """The registered spin function, made once; None (plain blocking) if there is none or it
    fails to build."""
    global _spin, _spin_provider
    if _spin is None and _spin_provider is not None:
        provider, _spin_provider = _spin_provider, None
        try:
            _spin = provider()
        except Exception:  # noqa: BLE001  spinning is an optimization: the locks work without it
            _spin = None


class _Worker:
    """One persistent thread, handed a chunk through a pair of locks (a lock release wakes it and
    back in ~9 us a call, where concurrent.futures' submit and result took ~20 us on 2 cores), and
    a pair of counters in state (chunks handed out, chunks done) that the spinning watches."""

    def __init__(self):
        import numpy as np
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._task = self._error = None
        self._state = np.zeros(16, np.int64)  # [0] handed out, [1] done; a cache line of its own
        self._handed = 0
        threading.Thread(target=self._loop, name="fastact", daemon=True).start()

    def _loop(self):
        done = 0
        while True:
            spin = _spin
            if spin is not None:
                spin(self._state, 0, done + 1, IDLE_SPIN_TICKS)
            self._go.acquire()
            kernel, args, lo, hi = self._task
            try:
                kernel(*args, lo, hi)
            except BaseException as e:  # handed to the caller by wait()
                self._error = e
            self._task = None
            done += 1
            self._state[1] = done
            self._done.release()

    def start(self, kernel, args, lo, hi):
        self._task = (kernel, args, lo, hi)
        self._handed += 1
        self._state[0] = self._handed
        self._go.release()

    def wait(self):
        """Block until the chunk is done; its exception, if it raised one."""
        spin = _spin
        if spin is not None:
            spin(self._state, 1, self._handed, WAIT_SPIN_TICKS)
        self._done.acquire()
        error, self._error = self._error, None
        return error


def _forget_pool_after_fork():
    """A forked child has none of the parent's worker threads: start new ones when needed."""
    global _workers, _lock, _busy
    _workers, _lock, _busy = [], threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _get_workers(count):
    with _lock:
        _load_spinner()
        while len(_workers) < count:
            _workers.append(_Worker())
        return _workers[:count]


def run(kernel, args, n, cost=1):
    """kernel(*args, start, stop) over [0, n), split over threads when n * cost is large. A call
    made while another Python thread's call holds the workers runs whole on its own thread (the
    cores are busy anyway; nothing queues behind anything)."""
    threads = min(_num_threads, max(1, (n * cost) // PARALLEL_THRESHOLD))
    if threads <= 1 or not _busy.acquire(blocking=False):
        kernel(*args, 0, n)
        return
    try:
        step = -(-n // threads)
        if cost == 1:
            step = -(-step // _CHUNK_ALIGN) * _CHUNK_ALIGN
        bounds = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
        workers = _get_workers(len(bounds) - 1)
        for worker, (lo, hi) in zip(workers, bounds[1:]):
            worker.start(kernel, args, lo, hi)
        error = None
        try:
            kernel(*args, *bounds[0])
        except BaseException as e:  # still wait for the others: they write into the same arrays
            error = e
        try:
            for worker in workers:
                failed = worker.wait()
                error = error or failed
        except BaseException:  # interrupted (Ctrl-C) while a worker may still be computing:
            _discard(workers)  # never hand it another chunk; new workers replace it
            raise
        if error is not None:
            raise error
    finally:
        _busy.release()


def _discard(workers):
    with _lock:
        _workers[:] = [w for w in _workers if w not in workers]
