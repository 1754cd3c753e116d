"""fastact's thread pool, shared by the CPU backends (Numba and C): large calls are split into
chunks run by serial kernels that release the GIL, the calling thread taking one chunk.

One pool for both backends means they can never oversubscribe the cores together; no Numba
threading layer (its start-up cost, the workqueue layer's abort on concurrent use) and no OpenMP
runtime (PyTorch ships its own libgomp: a C backend linked to OpenMP shared torch's spinning team
and measured 7 ms per 2^20 call once torch was imported) are involved. Calls from several Python
threads at once are safe; a forked child starts a new pool.
"""
import operator
import os
import threading

# Below this much work (elements, or rows x row length) one thread does the whole call. Measured on
# 2 cores, float32, 1 vs 2 threads (fastact/bench/NOTES.md): a split call cost ~7 us more than
# its chunks (9 us with the hand-off in Python, 20 us with concurrent.futures; ~4 us with the
# native tasks below), which 2^16 elements of even the cheapest kernel (relu, ~8 us at
# 8 Gelem/s) nearly repay.
PARALLEL_THRESHOLD = 1 << 16
SPLIT_SIZE = 2 * PARALLEL_THRESHOLD  # the least work (n * cost) that run() splits
# The per-call fast path (fastact/_fastcall.c) splits a call itself, in ~2 us of hand-off where
# run() takes ~7 (Python between the caller and its workers), so it splits from half the size:
# on the Zen 4 VM, one thread against its split call at 2^16 elements, the light kernels
# 1.12-1.31x, the arithmetic-bound ones 1.40-1.81x; at 2^15 those 1.09-1.67x, the light ones
# 0.69-0.99x (NOTES.md).
FAST_SPLIT_SIZE = SPLIT_SIZE // 2
_CHUNK_ALIGN = 64  # elements; keeps chunk edges on cache lines

_lock = threading.Lock()  # guards the worker list
_busy = threading.Lock()  # held by the call that uses the workers
_workers = []
_num_threads = os.cpu_count() or 1


MAX_THREADS = 4096


def set_num_threads(n):
    """Threads the CPU backends use for large arrays (default: all cores)."""
    global _num_threads
    try:
        n = operator.index(n)  # an integer (1.5 or "2" raise, as torch.set_num_threads)
    except TypeError:
        raise TypeError(f"fastact.set_num_threads: number of threads must be an integer, "
                        f"got {n!r}") from None
    if not 1 <= n <= MAX_THREADS:  # (a huge count had been taken, and every split call then
        # raised OverflowError in the fast path)
        raise ValueError(f"fastact.set_num_threads: number of threads must be in [1, "
                         f"{MAX_THREADS}], got {n}")
    _num_threads = n


def get_num_threads():
    return _num_threads


# Spinning. A thread blocked in a lock sleeps, and on this VM waking it took ~50 us (a halted
# virtual CPU): the worker started ~50 us after the caller's chunk and the caller learned ~55 us
# late that it had finished, 100 us of a 330 us call at 2^20 elements (fastact/bench/NOTES.md).
# So a worker spins for a while after each chunk, waiting for the next, and the caller spins
# while it waits for the workers, both in native code with the GIL released, and both block
# once the budget is spent (an idle pool sleeps; OpenMP's default spins longer).
#
# Native tasks. A worker that returned to Python for each chunk started it ~5 us after the caller
# (the GIL, the task's unpacking, Numba's dispatch), and the caller then waited that long for it:
# 2^20 relu forward on two threads took 72 us where either half alone took 52 and PyTorch's
# OpenMP team 57 (2026-11-23, AMD Zen 4 VM, fastact/bench/NOTES.md). So a worker waits in a
# native loop (run_tasks: a backend's runner, kernels/loops.py and bindings/_generate.py) that
# calls each chunk's compiled function itself, a C function task(args, start, stop) whose
# address and arguments the call's caller writes into the pool state from its own compiled
# kernel (pool_publish), and goes back to Python only to sleep, to wake a caller that sleeps,
# or for a task that has no native form (task 0: plain Python functions; the Numba backend's
# row kernels were such tasks until 2026-11-24): that one it runs in Python, as kernel(*args,
# start, stop, pool, slot, seq).
# A Python task's caller tells its workers to go from inside its compiled chunk, with the GIL
# released: a worker that saw the go while the caller still held the GIL slept in the GIL's wait.
# The locks and conditions keep the hand-off correct on their own (kernels that are plain Python
# in the tests); the spinning and the native loop only decide when to take them.
# spin(pool, index, want, ticks) -> True once the pool state's int64 at index is >= want, False
# after ~ticks of the CPU's time-stamp counter; runner(pool, slot, last) -> 4 * last + why it
# returned (RUN_IDLE, RUN_PYTHON, RUN_NOTIFY), last: the last call it finished. A backend
# registers both (set_spinner).
IDLE_SPIN_TICKS = 130_000  # after a chunk, for the next one: ~50 us at 2.6 GHz
IDLE_YIELD_TICKS = 5_200_000  # then yielding between looks (Idling below): ~2 ms
WAIT_SPIN_TICKS = 6_000_000  # the caller, for its workers: ~2 ms, then it blocks
YIELD_SPIN_TICKS = 130_000  # ... giving its CPU away every ~50 us of it (_spin_wait)
RUN_IDLE, RUN_PYTHON, RUN_NOTIFY = 0, 1, 2
_spin = _runner = None
_spin_provider = None

# Placement. The AMD Zen 4 VM this was measured on runs a kernel that packs threads onto few
# virtual CPUs while the machine is lightly loaded (its command line has sched_vcpu_pack): a
# worker that slept through a pause of a few milliseconds was often woken onto its caller's CPU,
# where the two took turns (each spinning while the other waited to run) and the scheduler did
# not part them. 2^20-element relu backwards on two threads in bursts of 30 calls, 40 ms apart:
# 480-560 us a call (CPU time 1.0x wall time, the other CPU idle) against 140-220 once moved
# (fastact/bench/NOTES.md, tenth session). So a caller that wakes a worker which went to sleep on
# the caller's own CPU first takes that CPU out of the worker's affinity, and the worker puts
# its own affinity back before it next sleeps: no thread stays pinned, and the calls that do not
# wake a worker pay nothing. The two also meet on one CPU while awake (the scheduler moved one);
# there the caller's wait gives its CPU away every ~50 us (_spin_wait), so that they take turns
# sooner (alone, that measured 340-380 us a call: the work still ran on one CPU).
_cpu_reader = None  # sched_getcpu() of the C library, or False where there is none


def _current_cpu():
    """The CPU the calling thread runs on, or -1 where that cannot be read."""
    global _cpu_reader
    if _cpu_reader is None:
        _cpu_reader = False
        if hasattr(os, "sched_setaffinity"):
            try:
                import ctypes
                reader = ctypes.CDLL(None).sched_getcpu
                reader.restype, reader.argtypes = ctypes.c_int, []
                if reader() >= 0:
                    _cpu_reader = reader
            except Exception:  # noqa: BLE001  no such C library function: placement is left alone
                pass
    return _cpu_reader() if _cpu_reader else -1

# The pool state, an int64 array that native code gets as its address: [0] the workers of the
# current call, [1] IDLE_SPIN_TICKS, [2] where the arguments of a call's native task start (the
# caller's copy, POOL_ARGS_SIZE int64s, after the last worker slot), [3] whether callers take
# chunks back (POOL_TAKE_BACK, Taking back below), [4] IDLE_YIELD_TICKS (POOL_IDLE_YIELD,
# Idling below); per worker slot w >= 1, on
# its own cache line at POOL_STRIDE * w: its go counter, then the call's task (0: a Python task),
# the task's arguments' address, its start and stop, and the call a caller sleeps for
# (POOL_WAITING); POOL_DONE further (another line, written by the worker): its done counter,
# whether it sleeps (POOL_ASLEEP) and its claim (POOL_CLAIM). The kernels read this layout from
# here (kernels/loops.py, bindings/_generate.py). A call's number (_seq) only grows: a worker goes
# once its go counter passes the last call it ran, and a call is done once every worker's done
# counter reaches its number.
POOL_STRIDE = 16
POOL_TASK, POOL_TASK_ARGS, POOL_START, POOL_STOP, POOL_WAITING = 1, 2, 3, 4, 5
POOL_DONE = 8
POOL_ASLEEP = POOL_DONE + 1
POOL_CLAIM = POOL_DONE + 2
POOL_TAKE_BACK = 3  # in the caller's slot (0)
POOL_IDLE_YIELD = 4  # (the same)

# Idling. A worker that slept since the last call made the next one wait for its wake-up: on
# the Zen 4 VM a 2^20-element call after 40-640 us of other work took 1.3-2.6x as long as one
# right after another (its worker woke late, and since taking back, the caller computed both
# ranges), and real code runs other work between activations. Spinning on for milliseconds, as
# OpenMP's workers do (PyTorch's ~10 ms), holds a CPU that another thread may need: with 2 ms of
# plain spinning a loop alternating PyTorch and fastact ops ran 2-4x slower, each library's
# spinning worker taking the CPU the other's needed. So after its ~50 us of spinning a worker
# goes on looking for its next go for ~2 ms, giving its CPU away (sched_yield) between looks,
# and sleeps only then: a ready thread runs at once, and otherwise the next call finds the
# worker awake.

# Taking back. A worker that has not begun its chunk by the time its caller has finished its own
# has been late for as long as that chunk took (asleep, or its CPU busy with another thread: on
# the Zen 4 VM, calls right after a PyTorch op, whose OpenMP workers spin ~10 ms, or after a
# pause); waiting for it cannot end sooner than computing its chunk then and there. So each
# worker slot has a claim: the worker, seeing its go for call seq, raises the claim to seq (an
# atomic max) before it touches the task, and a native caller, its own chunk done, raises it
# too for each worker not done yet: whichever raised it from below seq runs the chunk, and a
# caller that did marks it done. A worker that lost its claim goes on to its next go without
# touching the call's arrays, which its caller may have handed back to Python already. The
# native callers take chunks back (the Numba backend's maps: kernels/loops.py's pool_take_back;
# the C backend's every task) where the workers claim, i.e. wait in a native runner
# (state[POOL_TAKE_BACK]); Python tasks are never taken back.
POOL_ARGS_SIZE = 32  # int64s: the largest task arguments (C's structs, the Numba map block)
_pool = None  # (array, address)
_retired = []  # earlier pool states, kept alive: a retired worker may still touch its own
_seq = 0


def set_spinner(provider):
    """provider() returns (spin, runner), the native functions above; it is called when the first
    workers start (a backend registers one when it loads; the first one registered is used)."""
    global _spin_provider
    if _spin_provider is None:
        _spin_provider = provider


def _load_spinner():
    """The registered spin and runner functions, made once; None (plain blocking, every task run
    in Python) if there are none or they fail to build."""
    global _spin, _runner, _spin_provider
    if _spin is None and _spin_provider is not None:
        provider, _spin_provider = _spin_provider, None
        try:
            _spin, _runner = provider()
        except Exception:  # noqa: BLE001  spinning is an optimization: the locks work without it
            _spin = _runner = None


def pool_state(slots):
    """A zeroed, 64-byte aligned pool state for workers 1..slots (layout above), with [2] set."""
    import numpy as np
    size = POOL_STRIDE * (slots + 1) + POOL_ARGS_SIZE
    raw = np.zeros(size + 8, np.int64)  # + 64 bytes to align
    skip = (-raw.ctypes.data % 64) // 8
    state = raw[skip:skip + size]
    state[2] = POOL_STRIDE * (slots + 1)
    return state


def _new_pool(slots):
    """A new pool state for workers 1..slots; the old one is kept alive."""
    global _pool
    if _pool is not None:
        _retired.append(_pool)
    array = pool_state(slots)
    array[1] = IDLE_SPIN_TICKS
    array[POOL_TAKE_BACK] = _runner is not None  # (Taking back above)
    array[POOL_IDLE_YIELD] = IDLE_YIELD_TICKS
    _pool = (array, array.ctypes.data)


class _Worker:
    """One persistent thread with a slot in the pool state. It waits for its go counter in the
    backend's native loop (the runner), which runs native tasks without Python; it sleeps on a
    semaphore that a caller releases when it finds the worker asleep (a spare release only costs
    one more idle spin). A caller that blocks while waiting for the worker's done counter sleeps
    in a condition, which the worker notifies once it sees POOL_WAITING (the caller also looks
    again every millisecond: a notify may come before the wait)."""

    def __init__(self, slot, pool):
        self.slot, self._pool = slot, pool
        self._go_index = POOL_STRIDE * slot
        self._done_index = self._go_index + POOL_DONE
        self._wake = threading.Semaphore(0)
        self._finished = threading.Condition(threading.Lock())
        self._task = self._error = None
        self._tid = self._home = None  # set by the thread: its id, its CPUs when it started
        self._cpu = -1  # where it last went to sleep
        self._sleeping = False  # past its restore, in (or about to enter) its semaphore's wait
        self._moved = False  # a caller took a CPU out of its affinity (Placement above)
        threading.Thread(target=self._loop, name="fastact", daemon=True).start()

    def _loop(self):
        self._tid = threading.get_native_id()
        if hasattr(os, "sched_getaffinity"):
            self._home = os.sched_getaffinity(0)
        (state, address), slot = self._pool, self.slot
        go, done = self._go_index, self._done_index
        asleep = go + POOL_ASLEEP
        last = 0  # the last call this worker finished
        while True:
            runner = _runner
            if runner is not None:
                code = runner(address, slot, last)
                last, why = code >> 2, code & 3
            else:
                why = RUN_PYTHON if state[go] > last else RUN_IDLE
            if why == RUN_PYTHON:  # the call's task has no native form: run it here
                seq = int(state[go])
                (kernel, args, lo, hi, _), self._task = self._task, None
                try:
                    kernel(*args, lo, hi, address, slot, seq)
                except BaseException as e:  # noqa: BLE001  handed to the caller by wait()
                    self._error = e
                if state[done] < seq:  # a kernel without the hand-off (or one that raised)
                    state[done] = seq
                last = seq
                if state[go + POOL_WAITING] >= seq:
                    why = RUN_NOTIFY
            if why == RUN_NOTIFY:
                with self._finished:
                    self._finished.notify()
            elif why == RUN_IDLE:  # asleep (a runner marked that, then looked for a go again)
                if self._moved:  # a caller moved it off its CPU: take every CPU back
                    self._moved = False
                    _set_affinity(0, self._home)
                self._cpu = _current_cpu()
                state[asleep] = 1
                if state[go] <= last:
                    self._sleeping = True  # a caller may move it from here on
                    self._wake.acquire()
                    self._sleeping = False
                state[asleep] = 0

    def start(self, kernel, args, lo, hi, seq):
        """Hand the worker its part of call seq; its go comes from the caller's kernel."""
        state, go = self._pool[0], self._go_index
        self._task = (kernel, args, lo, hi, seq)
        state[go + POOL_TASK] = 0  # a native kernel's caller writes its task over this
        state[go + POOL_START], state[go + POOL_STOP] = lo, hi
        if state[go + POOL_ASLEEP]:
            if self._sleeping and self._cpu >= 0 and self._cpu == _current_cpu():
                self._leave_cpu(self._cpu)
            self._wake.release()

    def _leave_cpu(self, cpu):
        """Take cpu (its caller's, where it sleeps) out of the sleeping worker's affinity until
        it next sleeps, when it takes back the CPUs it started with (Placement above). Only a
        worker past that restore is moved (_sleeping), so no move is undone before its chunk."""
        home = self._home
        if home and home - {cpu}:
            _set_affinity(self._tid, home - {cpu})
            self._moved = True

    def wait(self, seq):
        """Until the chunk of call seq is done; its exception, if it raised one."""
        (state, address), done = self._pool, self._done_index
        asleep = self._go_index + POOL_ASLEEP
        if state[done] < seq:
            if state[self._go_index] < seq:  # the caller's kernel did not say go: a plain
                state[self._go_index] = seq  # Python one, or it raised first
            if state[asleep]:  # it went to sleep just as the caller's kernel told it to go
                self._wake.release()
            spin = _spin
            if spin is None or not _spin_wait(spin, address, done, seq):
                with self._finished:
                    state[self._go_index + POOL_WAITING] = seq
                    while state[done] < seq:
                        if state[asleep]:
                            self._wake.release()
                        self._finished.wait(0.001)
        self._task = None  # (a native task left it: the call's arrays would stay alive)
        error, self._error = self._error, None
        return error


def _spin_wait(spin, address, index, want):
    """spin(address, index, want, WAIT_SPIN_TICKS), but giving the CPU away (sched_yield) after
    every YIELD_SPIN_TICKS of it: a worker that shares its caller's CPU (Placement above) then
    runs its chunk at the first yield instead of after the caller's whole budget (such calls of
    2^20 elements took 3.3 ms, 80-110 of 1200 calls in bursts; 0-4 with the yields)."""
    budget = WAIT_SPIN_TICKS
    while True:
        step = min(YIELD_SPIN_TICKS, budget)
        if spin(address, index, want, step):
            return True
        budget -= step
        if budget <= 0:
            return False
        if _yield is not None:
            _yield()


_yield = getattr(os, "sched_yield", None)


def _set_affinity(tid, cpus):
    try:
        os.sched_setaffinity(tid, cpus)
    except OSError:  # e.g. a CPU taken out of the process's set meanwhile: leave it as it is
        pass


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


def run(kernel, args, n, cost=1, align=None):
    """kernel(*args, start, stop, pool, slot, seq) over [0, n), split over threads when n * cost
    is large (pool, slot, seq: the hand-off, kernels/loops.py; a call on one thread passes
    slot -1); align: the chunks' edges on cache lines (_CHUNK_ALIGN elements; by default where
    cost is 1: elements, not rows). A call made while another Python thread's call holds the
    workers runs whole on its own thread (the cores are busy anyway; nothing queues behind
    anything). Returns what the calling thread's kernel call returned."""
    global _seq
    if n * cost < SPLIT_SIZE or _num_threads == 1:  # one thread: the short way
        return kernel(*args, 0, n, 0, -1, 0)  # (min/max below cost a small call ~0.3 us)
    threads = min(_num_threads, (n * cost) // PARALLEL_THRESHOLD)
    if not _busy.acquire(blocking=False):
        return kernel(*args, 0, n, 0, -1, 0)
    try:
        step = -(-n // threads)
        if align or (align is None and cost == 1):
            step = -(-step // _CHUNK_ALIGN) * _CHUNK_ALIGN
        bounds = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
        workers, (state, address) = _get_workers(len(bounds) - 1)
        _seq += 1
        seq = _seq
        state[0] = len(workers)
        for worker, (lo, hi) in zip(workers, bounds[1:]):
            worker.start(kernel, args, lo, hi, seq)
        error, finished, result = None, False, None
        try:
            try:
                result = kernel(*args, *bounds[0], address, 0, seq)  # tells the workers to go
            except BaseException as e:  # still wait for the others: they write into the arrays
                error = e
            for worker in workers:
                failed = worker.wait(seq)
                error = error or failed
            finished = True
        finally:
            if not finished:  # interrupted (Ctrl-C) while a worker may still be computing:
                _discard()  # never hand it another chunk; new workers replace it
        if error is not None:
            raise error
        return result
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
