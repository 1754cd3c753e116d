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
# 2 cores, float32, 1 vs 2 threads (fastact/bench/NOTES.md): a split call costs ~7 us more than
# its chunks (9 us with the hand-off in Python, 20 us with concurrent.futures), which 2^16
# elements of even the cheapest kernel (relu, ~8 us at 8 Gelem/s) nearly repay.
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
# while it waits for the workers, both in native code with the GIL released, and both block
# once the budget is spent (an idle pool sleeps; OpenMP's default spins longer). Neither may need
# the GIL while the other holds it, since a thread that waits for the GIL sleeps too: so the
# caller tells its workers to go from inside its compiled chunk (the GIL released), and a worker
# reports its chunk done and spins for the next one from inside its own (kernels/loops.py,
# pool_enter). The locks and the condition alone keep the hand-off correct, for kernels that do
# none of this too (plain Python ones in the tests); the spinning only decides when to take them.
# spin(pool, index, want, ticks) -> True once the pool state's int64 at index is >= want, False
# after ~ticks of the CPU's time-stamp counter; a backend registers its native one (set_spinner).
IDLE_SPIN_TICKS = 130_000  # after a chunk, for the next one: ~50 us at 2.6 GHz
WAIT_SPIN_TICKS = 6_000_000  # the caller, for its workers: ~2 ms, then it blocks
_spin = None
_spin_provider = None

# The pool state, an int64 array that native code gets as its address: [0] the workers of the
# current call, [1] IDLE_SPIN_TICKS, then per worker slot w >= 1 its go counter at
# POOL_STRIDE * w and its done counter at POOL_STRIDE * w + POOL_DONE (their own cache lines).
# The kernels read this layout from here (kernels/loops.py, bindings/_generate.py). A call's
# number (_seq) only grows: a worker goes once its go counter passes the last call it ran, and a
# call is done once every worker's done counter reaches its number.
POOL_STRIDE = 16
POOL_DONE = 8
_pool = None  # (array, address)
_retired = []  # earlier pool states, kept alive: a retired worker may still touch its own
_seq = 0


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


def pool_state(slots):
    """A zeroed, 64-byte aligned pool state for workers 1..slots (layout above)."""
    import numpy as np
    raw = np.zeros(POOL_STRIDE * (slots + 1) + 8, np.int64)  # + 64 bytes to align
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip:skip + POOL_STRIDE * (slots + 1)]


def _new_pool(slots):
    """A new pool state for workers 1..slots; the old one is kept alive."""
    global _pool
    if _pool is not None:
        _retired.append(_pool)
    array = pool_state(slots)
    array[1] = IDLE_SPIN_TICKS
    _pool = (array, array.ctypes.data)


class _Worker:
    """One persistent thread with a slot in the pool state. A chunk is handed over by a lock that
    the caller releases once per chunk and the worker takes once per chunk (after spinning for
    its go counter, it finds the lock released at once); the caller waits for the done counter,
    spinning, then in a condition that the worker notifies when someone waits there."""

    def __init__(self, slot, pool):
        self.slot, self._pool = slot, pool
        self._done_index = POOL_STRIDE * slot + POOL_DONE
        self._go = threading.Lock()
        self._go.acquire()
        self._finished = threading.Condition(threading.Lock())
        self._waiting = False
        self._task = self._error = None
        threading.Thread(target=self._loop, name="fastact", daemon=True).start()

    def _loop(self):
        (state, address), done = self._pool, self._done_index
        while True:
            self._go.acquire()
            (kernel, args, lo, hi, seq), self._task = self._task, None  # before the next start()
            try:  # a native kernel marks its chunk done, then spins for the next go
                kernel(*args, lo, hi, address, self.slot, seq)
            except BaseException as e:  # noqa: BLE001  handed to the caller by wait()
                self._error = e
            if state[done] < seq:  # a kernel without the hand-off (or one that raised)
                state[done] = seq
            if self._waiting:
                with self._finished:
                    self._finished.notify()

    def start(self, kernel, args, lo, hi, seq):
        self._task = (kernel, args, lo, hi, seq)
        self._go.release()

    def wait(self, seq):
        """Until the chunk of call seq is done; its exception, if it raised one."""
        (state, address), done = self._pool, self._done_index
        spin = _spin
        if spin is None or not spin(address, done, seq, WAIT_SPIN_TICKS):
            with self._finished:
                self._waiting = True
                while state[done] < seq:
                    self._finished.wait()
                self._waiting = False
        error, self._error = self._error, None
        return error


def _forget_pool_after_fork():
    """A forked child has none of the parent's worker threads: start new ones when needed."""
    global _workers, _lock, _busy, _pool
    _workers, _lock, _busy, _pool = [], threading.Lock(), threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _get_workers(count):
    """The first count workers and the pool state they use."""
    with _lock:
        _load_spinner()
        if _pool is None or len(_pool[0]) < POOL_STRIDE * (count + 1):
            _new_pool(max(count, 2 * (os.cpu_count() or 1)))
            _workers.clear()  # the old ones keep (and block on) their own state
        while len(_workers) < count:
            _workers.append(_Worker(len(_workers) + 1, _pool))
        return _workers[:count], _pool


def run(kernel, args, n, cost=1):
    """kernel(*args, start, stop, pool, slot, seq) over [0, n), split over threads when n * cost
    is large (pool, slot, seq: the hand-off, kernels/loops.py; a call on one thread passes
    slot -1). A call made while another Python thread's call holds the workers runs whole on its
    own thread (the cores are busy anyway; nothing queues behind anything)."""
    global _seq
    if n * cost < 2 * PARALLEL_THRESHOLD or _num_threads == 1:  # one thread: the short way
        kernel(*args, 0, n, 0, -1, 0)  # (min/max below cost a small call ~0.3 us)
        return
    threads = min(_num_threads, (n * cost) // PARALLEL_THRESHOLD)
    if not _busy.acquire(blocking=False):
        kernel(*args, 0, n, 0, -1, 0)
        return
    try:
        step = -(-n // threads)
        if cost == 1:
            step = -(-step // _CHUNK_ALIGN) * _CHUNK_ALIGN
        bounds = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
        workers, (state, address) = _get_workers(len(bounds) - 1)
        _seq += 1
        seq = _seq
        state[0] = len(workers)
        for worker, (lo, hi) in zip(workers, bounds[1:]):
            worker.start(kernel, args, lo, hi, seq)
        error = None
        try:
            kernel(*args, *bounds[0], address, 0, seq)  # tells the workers to go, then computes
        except BaseException as e:  # still wait for the others: they write into the same arrays
            error = e
        try:
            for worker in workers:
                failed = worker.wait(seq)
                error = error or failed
        except BaseException:  # interrupted (Ctrl-C) while a worker may still be computing:
            _discard()  # never hand it another chunk; new workers replace it
            raise
        if error is not None:
            raise error
    finally:
        _busy.release()


def _discard():
    """Start over with new workers in a new pool state (the old workers may still be running,
    and would write to the slots of the new ones)."""
    global _pool
    with _lock:
        _workers.clear()
        if _pool is not None:
            _retired.append(_pool)
            _pool = None
