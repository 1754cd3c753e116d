"""Runtime behaviour: many Python threads at once, the on-disk kernel cache across processes,
Numba kept off the import path, and fork."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastact as fa
from fastact import _backends

pytest.importorskip("numba")


def run_python(code, env=None):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_concurrent_calls_from_python_threads_are_correct():
    """Eight threads share the kernel thread pool; each result equals the single-threaded one."""
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(300_000).astype(np.float32) for _ in range(8)]
    names = ["sigmoid", "gelu", "mish", "relu", "tanh", "silu", "elu", "softplus"]
    with fa.backend("cpu"):
        expected = [getattr(fa, n)(x) for n, x in zip(names, inputs)]
        results, errors = [None] * 8, []

        def work(i):
            try:
                for _ in range(5):
                    results[i] = getattr(fa, names[i])(inputs[i])
                    assert np.array_equal(results[i], expected[i])
            except BaseException as e:  # reported below: a thread's assert is not seen by pytest
                errors.append(e)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_second_process_loads_compiled_kernels_from_disk(tmp_path):
    code = ("import numpy as np, fastact as fa\n"
            "from fastact import registry\n"
            "from fastact.kernels import cpu\n"
            "fa.sigmoid(np.ones(10, np.float32))\n"
            "stats = cpu.map_kernel(registry.sigmoid_forward, 1).stats\n"
            "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n")
    env = {"FASTACT_CACHE_DIR": str(tmp_path)}
    hits, misses = run_python(code, env).split()
    assert (hits, misses) == ("0", "1")  # first process compiles
    hits, misses = run_python(code, env).split()
    assert (hits, misses) == ("1", "0")  # second process loads the machine code


@pytest.mark.skipif(sys.platform == "win32", reason="reads /proc/cpuinfo elsewhere")
@pytest.mark.parametrize("variable", ["FASTACT_PREFETCH", "FASTACT_WIDE_MAPS"])
def test_vendor_settings_come_from_the_environment_or_the_cpu_vendor(variable, monkeypatch):
    """math's two CPU-vendor settings: the software prefetches (off on AMD) and the memory-bound
    maps' 512-bit loop below STREAM_BYTES (on on AMD)."""
    import builtins
    import io
    from fastact.kernels import math as m
    read = {"FASTACT_PREFETCH": m._software_prefetch,
            "FASTACT_WIDE_MAPS": lambda: not m._wide_cached_maps()}[variable]  # (AMD: False)
    wide = variable == "FASTACT_WIDE_MAPS"
    for value, expected in (("0", False), ("off", False), ("False", False), ("1", True),
                            ("on", True), (" yes ", True)):
        monkeypatch.setenv(variable, value)
        assert read() is (expected != wide), value
    monkeypatch.setenv(variable, "")  # unset: the vendor decides ("maybe" too, with a warning)
    real_open = builtins.open

    def cpuinfo(text):
        def fake_open(path, *args, **kwargs):
            if path == "/proc/cpuinfo":
                if text is None:
                    raise OSError("no /proc")
                return io.StringIO(text)
            return real_open(path, *args, **kwargs)
        return fake_open
    for text, expected in (("processor\t: 0\nvendor_id\t: AuthenticAMD\n", False),
                           ("vendor_id\t: HygonGenuine\n", False),
                           ("processor\t: 0\nvendor_id\t: GenuineIntel\n", True),
                           ("processor\t: 0\nCPU implementer\t: 0x41\n", True), (None, True)):
        monkeypatch.setattr(builtins, "open", cpuinfo(text))
        assert read() is expected, text
    monkeypatch.setenv(variable, "maybe")
    from fastact import _env
    _env._warned.clear()  # (it warns once a process for each setting and value)
    with pytest.warns(RuntimeWarning, match="is not one of"):
        assert read() is expected


# The streamed sigmoid forward compiled afresh (not from the disk cache, whose code Numba does
# not show; test_math's helper, also in the second process): its assembly, to see whether its
# loop prefetches.
_FRESH_SIGMOID_ASM = (
    "import sys\n"
    f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
    "import numpy as np\n"
    "from fastact import registry\n"
    "from test_math import _uncached_map_kernel\n"
    "def fresh_sigmoid_asm():\n"
    "    kernel = _uncached_map_kernel(registry.sigmoid_forward, 1, streamed=True)\n"
    "    x = np.ones(64, np.float32)\n"
    "    from fastact.kernels import cpu\n"
    "    cpu.call_map(kernel, [x], np.empty_like(x), ())\n"
    "    return '\\n'.join(kernel.inspect_asm().values())\n")


def test_software_prefetch_setting_keys_the_caches_and_keeps_the_bits(tmp_path):
    """This process's setting and the other one (in a second process with its own cache root):
    the prefetch instructions are in the streamed loop exactly when the setting is on, each
    setting has its own Numba cache directory and C build key (and its generated C says which),
    and the results are the same bits: forwards streamed (32 MiB) and not, a wide backward from
    the input, softmax's and log_softmax's backward rows at 4 MiB (PREFETCH_BYTES)."""
    import platform
    from fastact.bindings import _build, _generate
    from fastact.kernels import cpu
    from fastact.kernels import math as m
    other = "0" if m.SOFTWARE_PREFETCH else "1"
    n = m.STREAM_BYTES // 4 + 1001
    rng = np.random.default_rng(5)
    x = (3 * rng.standard_normal(n)).astype(np.float32)
    dy = rng.standard_normal(n).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "dy.npy", dy)
    backends = [name for name in ("cpu", "c") if fa.backends()[name][0]]
    compute = ("def compute(fa, x, dy, be):\n"
               "    xr, dyr = x[:1 << 20].reshape(1024, 1024), dy[:1 << 20].reshape(1024, 1024)\n"
               "    with fa.backend(be):\n"
               "        return {'s': fa.sigmoid(x), 's_small': fa.sigmoid(x[:100003]),\n"
               "                'g': fa.silu.backward(dy, x),\n"
               "                'l': fa.log_softmax.backward(dyr, fa.log_softmax(xr)),\n"
               "                'm': fa.softmax.backward(dyr, fa.softmax(xr))}\n")
    code = (_FRESH_SIGMOID_ASM + compute +
            "import fastact as fa\n"
            "from fastact.kernels import cpu, math as m\n"
            "from fastact.bindings import _build, _generate\n"
            "print(int(m.SOFTWARE_PREFETCH))\n"
            "print(os.path.basename(cpu.cache_dir()))\n"
            "print(_build.key())\n"
            "print(f'#define FA_SOFTWARE_PREFETCH {int(m.SOFTWARE_PREFETCH)}' in "
            "_generate.source('float32'))\n"
            "print('prefetcht0' in fresh_sigmoid_asm())\n"
            f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
            f"dy = np.load({str(tmp_path / 'dy.npy')!r})\n"
            f"for be in {backends!r}:\n"
            "    for k, v in compute(fa, x, dy, be).items():\n"
            f"        np.save(os.path.join({str(tmp_path)!r}, be + '_' + k + '.npy'), v)\n")
    lines = run_python("import os\n" + code, {"FASTACT_PREFETCH": other,
                                              "FASTACT_CACHE_DIR": str(tmp_path / "cache")}
                       ).splitlines()
    flag, directory, key, defined, prefetches = lines[:5]
    assert flag == other and defined == "True"
    assert f"#define FA_SOFTWARE_PREFETCH {int(m.SOFTWARE_PREFETCH)}" in _generate.source("float32")
    assert directory != os.path.basename(cpu.cache_dir())
    assert ("-noprefetch" in directory) == (other == "0")
    assert ("-noprefetch" in cpu.cache_dir()) == (other == "1")
    assert key != _build.key()
    if platform.machine().lower() in ("x86_64", "amd64"):
        namespace = {}
        exec(_FRESH_SIGMOID_ASM, namespace)
        assert ("prefetcht0" in namespace["fresh_sigmoid_asm"]()) == m.SOFTWARE_PREFETCH
        assert prefetches == str(other == "1")
    namespace = {}
    exec(compute, namespace)
    for be in backends:
        for k, v in namespace["compute"](fa, x, dy, be).items():
            np.testing.assert_array_equal(np.load(tmp_path / f"{be}_{k}.npy"), v, err_msg=be + k)


def test_import_does_not_compile_or_import_numba():
    out = run_python("import sys, fastact as fa\n"
                     "print('numba' in sys.modules, len(fa.ACTIVATIONS))")
    assert out.split() == ["False", str(len(fa.ACTIVATIONS))]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_after_threads_were_used():
    code = ("import os, numpy as np, fastact as fa\n"
            "x = np.linspace(-5, 5, 500_000, dtype=np.float32)\n"
            "with fa.backend('cpu'):\n"
            "    y = fa.gelu(x)\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        os._exit(0 if np.array_equal(fa.gelu(x), y) else 3)\n"
            "_, status = os.waitpid(pid, 0)\n"
            "print(os.waitstatus_to_exitcode(status))\n")
    assert run_python(code).strip() == "0"


def test_thread_count_is_configurable():
    x = np.linspace(-5, 5, 500_000, dtype=np.float32)
    before = fa.get_num_threads()
    try:
        fa.set_num_threads(1)
        one = fa.tanh(x)
        fa.set_num_threads(2)
        np.testing.assert_array_equal(fa.tanh(x), one)
        for bad in (0, -1, 4097, 2 ** 70):  # a huge count was taken, then split calls raised
            with pytest.raises(ValueError, match=r"in \[1, 4096\]"):
                fa.set_num_threads(bad)
            assert fa.get_num_threads() == 2
        for bad in (1.5, "2", None):  # as torch.set_num_threads: integers only
            with pytest.raises(TypeError, match="integer"):
                fa.set_num_threads(bad)
        fa.set_num_threads(np.int64(2))
        assert fa.get_num_threads() == 2 and type(fa.get_num_threads()) is int
    finally:
        fa.set_num_threads(before)


def test_pool_splits_the_range_and_hands_back_a_chunks_exception():
    """Every index is covered once across the chunks; an exception raised in a worker's chunk
    reaches the caller, and the pool keeps working after it (and after one raised by the caller's
    own chunk)."""
    from fastact import _threads
    before = fa.get_num_threads()
    fa.set_num_threads(3)
    try:
        n = 3 * _threads.PARALLEL_THRESHOLD + 5
        hits = np.zeros(n, np.int64)

        def mark(array, lo, hi, *hand_off):
            array[lo:hi] += 1
        _threads.run(mark, (hits,), n)
        assert (hits == 1).all()

        def fail_above(limit, lo, hi, *hand_off):
            if lo >= limit:
                raise RuntimeError(f"chunk at {lo}")
        with pytest.raises(RuntimeError, match="chunk at"):
            _threads.run(fail_above, (1,), n)  # the workers' chunks raise, the caller's does not
        with pytest.raises(RuntimeError, match="chunk at 0"):
            _threads.run(fail_above, (0,), n)  # all raise: the caller's own exception wins
        hits[:] = 0
        _threads.run(mark, (hits,), n)
        assert (hits == 1).all()
    finally:
        fa.set_num_threads(before)


@pytest.mark.skipif(not hasattr(__import__("signal"), "setitimer"), reason="needs setitimer")
def test_pool_survives_an_interrupt_while_waiting_for_a_worker():
    """A KeyboardInterrupt (here a signal handler's exception) that lands while the caller waits
    for a worker must not wedge the pool: the next parallel call runs and is correct."""
    import signal
    import time
    from fastact import _threads
    before = fa.get_num_threads()
    fa.set_num_threads(2)
    release = threading.Event()

    def slow_second_chunk(lo, hi, *hand_off):
        if lo > 0:
            release.wait(5)

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted
    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            _threads.run(slow_second_chunk, (), 4 * _threads.PARALLEL_THRESHOLD)
        release.set()
        time.sleep(0.05)
        n = 4 * _threads.PARALLEL_THRESHOLD
        hits = np.zeros(n, np.int64)

        def mark(lo, hi, *hand_off):
            hits[lo:hi] += 1
        _threads.run(mark, (), n)
        assert (hits == 1).all()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        fa.set_num_threads(before)


def _spin_function(backend):
    if backend == "cpu":
        pytest.importorskip("numba")
        from fastact.kernels import cpu
        return cpu.spin_function()[0]
    return _native_functions("c")[0]


def _native_functions(backend):
    """(spin, runner) of a backend (fastact/_threads.py)."""
    if backend == "cpu":
        pytest.importorskip("numba")
        from fastact.kernels import cpu
        return cpu.spin_function()
    loaded = _backends._load("c")
    if loaded is None:
        pytest.skip(f"C backend unavailable: {_backends.backends()['c'][1]}")
    return loaded._spin_function()


@pytest.mark.parametrize("backend", ["cpu", "c"])
def test_pool_spin_wait_sees_another_threads_store_and_gives_up_after_its_budget(backend):
    """The pool's native spin-wait (fastact/_threads.py): True at once when the counter is already
    there; False after its budget when it never gets there; and True soon after another thread
    stores the value, without the GIL (a load hoisted out of the loop, or a wait that kept the
    GIL, would spin out its ~10 s budget: the main thread could not even make the store)."""
    import time
    spin = _spin_function(backend)
    state = np.zeros(16, np.int64)
    address = state.ctypes.data  # the pool state goes to native code as its address
    state[1] = 7
    assert spin(address, 1, 7, 0)
    started = time.perf_counter()
    assert not spin(address, 0, 1, 3_000_000)  # ~1 ms of a GHz time-stamp counter
    assert time.perf_counter() - started < 1.0
    result = []
    waiter = threading.Thread(target=lambda: result.append(spin(address, 0, 1, 30_000_000_000)))
    waiter.start()
    time.sleep(0.05)
    state[0] = 1
    waiter.join(5)
    assert not waiter.is_alive() and result == [True]


def test_pool_wait_gives_the_cpu_away_between_parts_of_its_spin_budget(monkeypatch):
    """The caller's wait for a worker (_threads._spin_wait): the spin budget WAIT_SPIN_TICKS in
    parts of at most YIELD_SPIN_TICKS with a sched_yield between parts (a worker on the caller's
    CPU gets to run), True as soon as a part sees the value, False once the budget is spent, and
    a zero budget still looks once (the tests that make every caller block rely on it)."""
    from fastact import _threads
    yields, parts = [], []

    def never(address, index, want, ticks):
        parts.append(ticks)
        return False
    monkeypatch.setattr(_threads, "_yield", lambda: yields.append(len(parts)))
    monkeypatch.setattr(_threads, "WAIT_SPIN_TICKS", 1_000_000)
    monkeypatch.setattr(_threads, "YIELD_SPIN_TICKS", 300_000)
    assert not _threads._spin_wait(never, 0, 0, 1)
    assert parts == [300_000, 300_000, 300_000, 100_000] and yields == [1, 2, 3]
    parts.clear(), yields.clear()
    assert _threads._spin_wait(lambda *a: never(*a) or len(parts) == 3, 0, 0, 1)
    assert parts == [300_000] * 3 and yields == [1, 2]
    parts.clear(), yields.clear()
    monkeypatch.setattr(_threads, "WAIT_SPIN_TICKS", 0)
    assert not _threads._spin_wait(never, 0, 0, 1)
    assert parts == [0] and yields == []


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs thread affinity and two CPUs")
def test_a_worker_asleep_on_its_callers_cpu_is_woken_elsewhere_and_takes_its_cpus_back():
    """Placement (fastact/_threads.py): a caller that wakes a worker which went to sleep on the
    caller's CPU takes that CPU out of the worker's affinity, so its chunk runs on another CPU,
    and the worker has its whole affinity back once it sleeps again. Here the caller is a thread
    held on one CPU and the worker is made to fall asleep there (held there, as if it had started
    there, then let go)."""
    import time
    from fastact import _threads
    if _threads._current_cpu() < 0:
        pytest.skip("no sched_getcpu")
    cpus = os.sched_getaffinity(0)
    here = min(cpus)
    n = 4 * _threads.PARALLEL_THRESHOLD
    seen = {}

    def where(lo, hi, pool, slot, seq):  # a plain Python kernel: each chunk notes its CPUs
        seen[slot] = (_threads._current_cpu(), os.sched_getaffinity(0))

    def asleep(worker, affinity, cpu):  # (cpu: where it noted it fell asleep; None: anywhere)
        deadline = time.monotonic() + 10
        while not (worker._sleeping and cpu in (None, worker._cpu)
                   and os.sched_getaffinity(worker._tid) == affinity):
            assert time.monotonic() < deadline, "the worker did not sleep with that affinity"
            time.sleep(0.001)

    def caller():
        os.sched_setaffinity(0, {here})  # this thread only
        _threads.run(where, (), n)
        worker = _threads._workers[0]
        worker._home = {here}  # one CPU: nothing to take out of it
        os.sched_setaffinity(worker._tid, {here})
        _threads.run(where, (), n)
        asleep(worker, {here}, here)
        assert seen[1] == (here, {here})
        worker._home = cpus  # asleep on here, free to run anywhere
        os.sched_setaffinity(worker._tid, cpus)
        _threads.run(where, (), n)
        result.append((seen[0], seen[1]))
        asleep(worker, cpus, None)
        result.append(os.sched_getaffinity(worker._tid))

    before = fa.get_num_threads()
    result = []
    try:
        fa.set_num_threads(2)
        thread = threading.Thread(target=caller, daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive()
    finally:
        fa.set_num_threads(before)
        for worker in list(_threads._workers):
            if worker._tid is not None:
                worker._home = cpus
                os.sched_setaffinity(worker._tid, cpus)
    assert len(result) == 2, "the caller thread failed (its assertion above)"
    ((caller_cpu, _), (worker_cpu, worker_cpus)), affinity = result
    assert caller_cpu == here
    assert worker_cpus == cpus - {here} and worker_cpu != here
    assert affinity == cpus


def test_pool_waits_for_a_chunk_slower_than_the_spin_budget():
    """A worker's chunk that outlasts the caller's spinning (here 50 ms): the caller blocks in the
    lock and still sees every index done."""
    import time
    from fastact import _threads
    _backends.get()  # a loaded backend registers its spin-wait
    before = fa.get_num_threads()
    fa.set_num_threads(2)
    try:
        n = 4 * _threads.PARALLEL_THRESHOLD
        hits = np.zeros(n, np.int64)

        def slow_mark(lo, hi, *hand_off):
            if lo > 0:
                time.sleep(0.05)
            hits[lo:hi] += 1
        for _ in range(3):
            _threads.run(slow_mark, (), n)
        assert (hits == 3).all()
    finally:
        fa.set_num_threads(before)


def _backend_or_skip(name):
    loaded = _backends._load(name)
    if loaded is None:
        pytest.skip(f"{name} backend unavailable: {_backends.backends()[name][1]}")
    return loaded


@pytest.mark.parametrize("spinning", [True, False], ids=["spinning", "sleeping"])
@pytest.mark.parametrize("backend", ["cpu", "c"])
def test_back_to_back_parallel_calls_are_correct(backend, spinning, monkeypatch):
    """Parallel calls in a tight loop, where a worker that has marked its chunk done is still
    spinning (in native code) for the next one when it comes, on 2 and 3 threads: every result
    equals the one-thread result (elementwise, two-input and row kernels: native tasks; and a
    plain Python kernel, which the workers run in Python: a Python task). Sleeping: no spin
    budgets, so that every worker goes to sleep after each chunk and every caller waits in the
    condition (the wake-ups and notifies of fastact/_threads.py, and their races)."""
    _backend_or_skip(backend)
    from fastact import _threads
    if not spinning:
        _threads.run(lambda *a: None, (), 4 * _threads.PARALLEL_THRESHOLD)  # a pool state exists
        monkeypatch.setattr(_threads, "WAIT_SPIN_TICKS", 0)
        state = _threads._pool[0]
        state[1] = state[_threads.POOL_IDLE_YIELD] = 0  # the workers' idling (set back below)
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(4 * _threads.PARALLEL_THRESHOLD + 37) * 4).astype(np.float32)
    dy = rng.standard_normal(x.size).astype(np.float32)
    rows = rng.standard_normal((300, 1000)).astype(np.float32)
    def fill(out, start, stop, pool, slot, seq):  # a Python task (task 0)
        out[start:stop] = np.sqrt(np.arange(start, stop, dtype=np.float64))

    def python_task():
        out = np.full(4 * _threads.PARALLEL_THRESHOLD + 5, np.nan)
        _threads.run(fill, (out,), out.size)
        return out

    jobs = [lambda: fa.relu(x), lambda: fa.tanh.backward(dy, x), lambda: fa.gelu(x),
            lambda: fa.softmax(rows), lambda: fa.silu.backward(dy, x), python_task]
    before = fa.get_num_threads()
    try:
        with fa.backend(backend):
            fa.set_num_threads(1)
            expected = [job() for job in jobs]
            order = [i % len(jobs) for i in range(100)] + [0] * 100  # mixed, then one kernel
            for threads in (2, 3):
                fa.set_num_threads(threads)
                results = []  # checked after: no pause between calls

                def calls():  # in a thread of its own, so that a lost hand-off fails, not hangs
                    with fa.backend(backend):  # (a new thread starts in the default backend)
                        results.extend(jobs[k]() for k in order)
                caller = threading.Thread(target=calls, daemon=True)
                caller.start()
                caller.join(120)
                assert not caller.is_alive(), f"{threads} threads: the calls did not finish"
                assert len(results) == len(order)
                for k, result in zip(order, results):
                    np.testing.assert_array_equal(result, expected[k])
    finally:
        fa.set_num_threads(before)
        if not spinning:
            state[1] = _threads.IDLE_SPIN_TICKS
            state[_threads.POOL_IDLE_YIELD] = _threads.IDLE_YIELD_TICKS


def _relu_call_and_a_pool(backend, monkeypatch, slots):
    """(kernel, args, runner, x, out, state): the compiled map kernel and arguments of a relu
    call on x (1000 elements) into out (NaN), the backend's runner, and a pool state for workers
    1..slots whose call has two workers, 1 on [100, 500) and 2 on [500, 1000), with a short
    idle spin (fastact/_threads.py, kernels/loops.py)."""
    _backend_or_skip(backend)
    from fastact import _threads as T
    from fastact.kernels import cpu  # (its calls below the split size skip _threads.run)
    runner = _native_functions(backend)[1]
    calls = []
    monkeypatch.setattr(T, "run", lambda kernel, args, n, cost=1, align=None: calls.append(
        (kernel, args)) or n)
    monkeypatch.setattr(cpu, "_SPLIT_SIZE", 0)
    monkeypatch.setattr(fa.relu, "_by_params", None)  # (not the per-call fast path: _fastcall.py)
    x = np.linspace(-3, 3, 1000, dtype=np.float32)
    out = np.full_like(x, np.nan)
    with fa.backend(backend):
        fa.relu(x, out=out)
    (kernel, args), = calls
    state = T.pool_state(slots)
    state[0], state[1] = 2, 1000
    for w, (lo, hi) in ((1, (100, 500)), (2, (500, 1000))):
        state[w * T.POOL_STRIDE + T.POOL_START], state[w * T.POOL_STRIDE + T.POOL_STOP] = lo, hi
    return kernel, args, runner, x, out, state


@pytest.mark.parametrize("backend", ["cpu", "c"])
def test_kernels_do_the_pools_hand_off_in_native_code(backend, monkeypatch):
    """A compiled map kernel called as a split call's caller (slot 0) gives each worker of the
    call its task and the task's arguments (a copy in the pool state) and then its go, and
    computes its own range; a worker's native loop (the runner) then computes the worker's range
    without Python and marks it done, and returns why it stopped: asleep when no next go came
    within its idle budget, its caller waiting, or a go for a Python task (task 0). Called alone
    (slot -1, no pool) the kernel touches no pool (fastact/_threads.py, kernels/loops.py)."""
    from fastact import _threads as T
    kernel, args, runner, x, out, state = _relu_call_and_a_pool(backend, monkeypatch, 3)
    stride, address = T.POOL_STRIDE, state.ctypes.data
    kernel(*args, 0, 100, address, 0, 5)
    assert state[stride] == 5 and state[2 * stride] == 5  # workers 1 and 2 told to go
    task = state[stride + T.POOL_TASK]
    assert task != 0 and state[2 * stride + T.POOL_TASK] == task
    copy = address + 8 * state[2]  # the arguments' copy, after the worker slots
    assert state[stride + T.POOL_TASK_ARGS] == state[2 * stride + T.POOL_TASK_ARGS] == copy
    assert state[3 * stride] == state[3 * stride + T.POOL_TASK] == 0  # not in this call
    assert state[stride + T.POOL_DONE] == state[2 * stride + T.POOL_DONE] == 0
    np.testing.assert_array_equal(out[:100], np.maximum(x[:100], 0))
    assert np.isnan(out[100:]).all()
    assert runner(address, 1, 0) == 4 * 5 + T.RUN_IDLE  # worker 1: its range, then no go
    assert state[stride + T.POOL_DONE] == 5 and state[stride + T.POOL_ASLEEP] == 1
    np.testing.assert_array_equal(out[:500], np.maximum(x[:500], 0))
    assert np.isnan(out[500:]).all()
    state[2 * stride + T.POOL_WAITING] = 5  # worker 2's caller sleeps until call 5 is done
    assert runner(address, 2, 0) == 4 * 5 + T.RUN_NOTIFY
    assert state[2 * stride + T.POOL_DONE] == 5 and state[2 * stride + T.POOL_ASLEEP] == 0
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    state[stride + T.POOL_TASK], state[stride] = 0, 6  # call 6 is a Python task: not run here
    assert runner(address, 1, 5) == 4 * 5 + T.RUN_PYTHON
    assert state[stride + T.POOL_DONE] == 5 and state[stride + T.POOL_ASLEEP] == 0
    kernel(*args, 0, 10, address, 1, 7)  # called as worker 1 (a Python task): marks it done
    assert state[stride + T.POOL_DONE] == 7
    before = state.copy()
    out[:] = np.nan
    kernel(*args, 0, 1000, 0, -1, 0)  # alone: address 0 is never touched
    np.testing.assert_array_equal(state, before)
    np.testing.assert_array_equal(out, np.maximum(x, 0))


@pytest.mark.parametrize("backend", ["cpu", "c"])
def test_a_caller_takes_back_the_ranges_its_workers_have_not_claimed(backend, monkeypatch):
    """Taking back (fastact/_threads.py): a native map kernel called as a split call's caller
    (slot 0), its own range done, claims and computes the range of each worker of the call that
    has not claimed its own (here worker 1) and marks it done; a range its worker claimed (worker
    2) it leaves. Worker 1's runner, seeing its go for that call afterwards, finds its claim
    taken and passes over it without touching the arrays. With the pool's take-back flag off (a
    pool whose workers do not claim) see test_kernels_do_the_pools_hand_off_in_native_code."""
    from fastact import _threads as T
    kernel, args, runner, x, out, state = _relu_call_and_a_pool(backend, monkeypatch, 2)
    stride, address = T.POOL_STRIDE, state.ctypes.data
    state[T.POOL_TAKE_BACK] = 1
    state[2 * stride + T.POOL_CLAIM] = 5  # worker 2 claimed call 5 (and is computing it)
    kernel(*args, 0, 100, address, 0, 5)
    np.testing.assert_array_equal(out[:500], np.maximum(x[:500], 0))
    assert np.isnan(out[500:]).all()
    assert state[stride + T.POOL_CLAIM] == 5 and state[stride + T.POOL_DONE] == 5
    assert state[2 * stride + T.POOL_DONE] == 0
    out[:] = -7.0  # the caller has its result: nothing may be written into it now
    assert runner(address, 1, 0) == 4 * 5 + T.RUN_IDLE  # passed over call 5, then no go
    assert (out == -7.0).all()
    assert state[stride + T.POOL_DONE] == 5 and state[stride + T.POOL_ASLEEP] == 1


@pytest.mark.parametrize("backend", ["cpu", "c"])
def test_an_idle_worker_yielding_its_cpu_still_takes_the_next_go(backend, monkeypatch):
    """Idling (fastact/_threads.py): past its spinning budget (0 here) a worker's runner goes on
    looking for its next go for the yielding budget, and runs the call that comes then instead of
    going to sleep; with no yielding budget it goes to sleep at once."""
    import time
    from fastact import _threads as T
    kernel, args, runner, x, out, state = _relu_call_and_a_pool(backend, monkeypatch, 2)
    stride, address = T.POOL_STRIDE, state.ctypes.data
    state[1], state[T.POOL_IDLE_YIELD] = 0, 1 << 40  # no spinning; yielding for minutes

    def next_call():
        time.sleep(0.05)
        state[stride + T.POOL_WAITING] = 6  # its caller will sleep: the runner returns after it
        kernel(*args, 0, 100, address, 0, 6)
    caller = threading.Thread(target=next_call, daemon=True)
    start = time.monotonic()
    caller.start()
    assert runner(address, 1, 5) == 4 * 6 + T.RUN_NOTIFY
    assert time.monotonic() - start >= 0.05
    caller.join(10)
    np.testing.assert_array_equal(out[:500], np.maximum(x[:500], 0))
    assert state[stride + T.POOL_DONE] == 6 and state[stride + T.POOL_ASLEEP] == 0
    state[T.POOL_IDLE_YIELD] = 0
    assert runner(address, 1, 6) == 4 * 6 + T.RUN_IDLE
    assert state[stride + T.POOL_ASLEEP] == 1


class _Wake:
    """A worker's semaphore around the real one: counts releases and the worker's acquires, and
    loses the releases while ``lost`` (a worker that stays asleep, as one that the scheduler
    leaves waiting would)."""

    def __init__(self, real):
        self.real, self.lost, self.releases, self.acquires = real, True, 0, 0

    def release(self):
        self.releases += 1
        if not self.lost:
            self.real.release()

    def acquire(self, *args):
        self.acquires += 1
        return self.real.acquire(*args)


@pytest.mark.parametrize("backend", ["cpu", "c"])
def test_a_call_whose_worker_never_wakes_ends_and_the_late_worker_writes_nothing(backend):
    """A split call whose worker sleeps through it (its wake-up lost) still ends, with the whole
    result, its caller having taken the worker's range back; when the worker does wake later it
    touches none of that call's arrays, and the next calls are right (fastact/_threads.py,
    Taking back). Without taking back the call would wait for the worker forever."""
    import time
    _backend_or_skip(backend)
    from fastact import _threads as T
    n = 4 * T.PARALLEL_THRESHOLD + 37
    x = np.random.default_rng(3).standard_normal(n).astype(np.float32) * 4
    before = fa.get_num_threads()
    try:
        with fa.backend(backend):
            fa.set_num_threads(1)
            expected = fa.sigmoid(x)
            fa.set_num_threads(2)
            fa.sigmoid(x)  # the pool and its worker exist
            worker = T._workers[0]
            state = worker._pool[0]
            deadline = time.monotonic() + 10
            while not (worker._sleeping and state[worker._go_index + T.POOL_ASLEEP]):
                assert time.monotonic() < deadline, "the worker did not go to sleep"
                time.sleep(0.001)
            real = worker._wake  # (it waits in this one's acquire now)
            worker._wake = wake = _Wake(real)
            out = np.full_like(x, np.nan)
            done = []

            def call():
                with fa.backend(backend):
                    fa.sigmoid(x, out=out)
                done.append(True)
            caller = threading.Thread(target=call, daemon=True)
            caller.start()
            caller.join(60)
            assert done, "the call waited for a worker that was never woken"
            assert wake.releases >= 1 and wake.acquires == 0  # it slept through the call
            np.testing.assert_array_equal(out, expected)
            out[:] = -7.0
            wake.lost = False
            real.release()  # it wakes now, late, passes over that call and sleeps again
            deadline = time.monotonic() + 10
            while not wake.acquires:
                assert time.monotonic() < deadline, "the worker did not wake and sleep again"
                time.sleep(0.001)
            assert (out == -7.0).all()
            np.testing.assert_array_equal(fa.sigmoid(x), expected)
    finally:
        fa.set_num_threads(before)


def test_an_in_place_loop_that_fails_to_compile_leaves_the_general_one(monkeypatch):
    """The Numba backend compiles a kernel's in-place loop after the first in-place call has
    written its result with the general loop: if that compile fails, the result stands, a
    warning says so, and later in-place calls run the general loop (no retry, no error)."""
    _backend_or_skip("cpu")
    from fastact import registry
    from fastact.kernels import cpu
    x = np.linspace(-30, 30, 1001, dtype=np.float32)
    want = fa.sigmoid(x)
    general = cpu.Backend._task
    asked = []

    def failing(key, alias):
        asked.append(alias)
        if alias >= 0:
            raise RuntimeError("no compiler today")
        return general(key, alias)

    monkeypatch.setattr(cpu.Backend, "_task", staticmethod(failing))
    backend = cpu.Backend()
    data = x.copy()
    with pytest.warns(RuntimeWarning, match="in-place loop of sigmoid_forward did not compile"):
        backend.map(registry.sigmoid_forward, [data], data, ())
    np.testing.assert_array_equal(data, want)
    (_, tasks, _), = backend._maps.values()
    assert tasks[1] == tasks[0] != 0
    data = x.copy()
    backend.map(registry.sigmoid_forward, [data], data, ())  # no warning, no second try
    np.testing.assert_array_equal(data, want)
    assert asked == [-1, 0]


def test_map_callers_pick_the_in_place_task_where_out_is_an_input():
    """The Numba backend's caller entry runs tasks[1 + k] where out is input k (the same
    address), and where that is 0 (not compiled yet) runs tasks[0] and returns -(1 + k) for the
    backend to compile it; otherwise it returns the size (kernels/loops.py, caller_source)."""
    _backend_or_skip("cpu")
    from fastact import registry
    from fastact.kernels import cpu
    def general(fn, n_arrays):  # as the backend compiles it (and caches it on disk)
        return cpu.Backend._task((fn, n_arrays, np.dtype(np.float32), False), -1)

    relu = general(registry.relu_forward, 1)
    relu_backward = general(registry.relu_backward_from_output, 2)
    x = np.linspace(-3, 3, 1000, dtype=np.float32)
    caller = cpu.map_caller(1, 0)
    tasks = np.array([relu, 0], np.int64)
    data = x.copy()
    assert caller(tasks, data, data, (), 0, data.size, 0, -1, 0) == -1
    np.testing.assert_array_equal(data, np.maximum(x, 0))  # tasks[0] ran
    tasks[1] = cpu.Backend._task((registry.sigmoid_forward, 1, np.dtype(np.float32), False), -1)
    data = x.copy()
    assert caller(tasks, data, data, (), 0, data.size, 0, -1, 0) == data.size
    np.testing.assert_array_equal(data, fa.sigmoid(x))  # tasks[1] ran
    out = np.empty_like(x)
    assert caller(tasks, x, out, (), 0, x.size, 0, -1, 0) == x.size
    np.testing.assert_array_equal(out, np.maximum(x, 0))  # not in place: tasks[0]
    dy = np.ones_like(x)
    caller2 = cpu.map_caller(2, 0)  # out is input 1 (the saved output): tasks[2]
    tasks2 = np.array([relu_backward, 0, 0], np.int64)
    y = np.maximum(x, 0)
    assert caller2(tasks2, dy, y, y, (), 0, y.size, 0, -1, 0) == -2
    np.testing.assert_array_equal(y, (x > 0).astype(np.float32))


def test_in_place_calls_fill_the_task_table_with_their_own_forms():
    """After in-place calls through the API, the backend's task table of each kernel holds a
    task of its own for each input that was out (not 0, not the general task). (Other slots
    may be filled by earlier tests in this process: the backend is shared.)"""
    _backend_or_skip("cpu")
    from fastact import _backends, registry
    x = np.linspace(-3, 3, 5000, dtype=np.float32)
    dy = np.ones_like(x)
    with fa.backend("cpu"):
        for _ in range(2):
            a = x.copy()
            fa.gelu(a, out=a)
            g = dy.copy()
            fa.gelu.backward(g, x, out=g)
    maps = _backends.get("cpu")._maps
    key = (np.dtype(np.float32), False)  # (dtype, streamed)
    _, forward, _ = maps[(registry.gelu_forward, 1, *key)]
    _, backward, _ = maps[(registry.gelu_backward_from_input, 2, *key)]
    assert forward[1] not in (0, forward[0])
    assert backward[1] not in (0, backward[0])


_MEMORY_BOUND_MAPS = (
    "import hashlib, numpy as np, fastact as fa\n"
    "from fastact.kernels import cpu\n"
    "rng = np.random.default_rng(3)\n"
    "x = np.concatenate([np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 3.0, -3.0,\n"
    "                              6.0, 1.0, -1.0, 1e30, -1e30]), 4 * rng.standard_normal(100003)])\n"
    "dy = rng.standard_normal(x.size)\n"
    "digest = hashlib.sha256()\n"
    "with fa.backend('cpu'):\n"
    "    for t in (np.float32, np.float64):\n"
    "        a, g = x.astype(t), dy.astype(t)\n"
    "        for y in (fa.relu(a), fa.leaky_relu(a, 0.1), fa.hardtanh(a), fa.relu6(a),\n"
    "                  fa.hardsigmoid(a), fa.hardswish(a), fa.threshold(a, 0.5, 2.0),\n"
    "                  fa.softsign(a), fa.relu.backward(g, fa.relu(a)),\n"
    "                  fa.hardtanh.backward(g, a), fa.relu6.backward(g, a),\n"
    "                  fa.hardsigmoid.backward(g, a), fa.hardswish.backward(g, a),\n"
    "                  fa.threshold.backward(g, a, 0.5, 2.0), fa.softsign.backward(g, a)):\n"
    "            digest.update(y.tobytes())\n"
    "print(digest.hexdigest(), cpu.cache_dir().endswith('-widemaps'))\n")


def test_wide_maps_setting_keys_the_cache_and_keeps_the_bits(tmp_path):
    """FASTACT_WIDE_MAPS on and off (the memory-bound maps' loop below STREAM_BYTES on 512 or 256
    bits): each in a cache directory of its own, the same bits (hostile values included)."""
    pytest.importorskip("numba")
    env = {"FASTACT_CACHE_DIR": str(tmp_path)}
    on = run_python(_MEMORY_BOUND_MAPS, {**env, "FASTACT_WIDE_MAPS": "1"}).split()
    off = run_python(_MEMORY_BOUND_MAPS, {**env, "FASTACT_WIDE_MAPS": "0"}).split()
    assert on[1] == "True" and off[1] == "False"
    assert on[0] == off[0]


@pytest.mark.parametrize("backend", ["cpu", "c"])
def test_a_parallel_call_keeps_no_reference_to_its_arrays(backend):
    """Once a split call returns, neither the pool nor its workers hold its arrays (a worker's
    task of a native call was kept until its next call, with the caller's arrays)."""
    import gc
    import weakref
    _backend_or_skip(backend)
    from fastact import _threads
    before = fa.get_num_threads()
    fa.set_num_threads(2)
    try:
        x = np.linspace(-3, 3, 4 * _threads.PARALLEL_THRESHOLD, dtype=np.float32)
        with fa.backend(backend):
            y = fa.relu(x)
            dx = fa.tanh.backward(y, x)
        refs = [weakref.ref(a) for a in (x, y, dx)]
        del x, y, dx
        gc.collect()
        assert [r() is None for r in refs] == [True] * 3
    finally:
        fa.set_num_threads(before)


def test_generated_modules_are_read_with_the_file_closed(tmp_path):
    """import_source reads an existing module's text to compare it: with the file closed (an
    unclosed one warned ResourceWarning on every kernel import under -X dev or -W error)."""
    import gc
    import warnings
    from fastact.kernels import _codegen
    source = "VALUE = 3\n"
    _codegen.import_source(str(tmp_path), "fastact_test_gen", "mod", source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = _codegen.import_source(str(tmp_path), "fastact_test_gen", "mod", source)
        gc.collect()
    assert module.VALUE == 3
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], caught


def test_an_unwritable_cache_directory_compiles_in_a_temporary_one(tmp_path):
    """A cache directory that cannot be written (here a path through a plain file; a read-only
    home or a cache mounted read-only alike): the Numba kernels compile in a temporary directory
    for the process, with one warning, and give the usual results (every call used to raise
    OSError while fa.backends() called the cpu backend available)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = run_python(
        "import warnings, numpy as np, fastact as fa\n"
        "warnings.simplefilter('always')\n"
        "x = np.linspace(-4, 4, 1000, dtype=np.float32)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    with fa.backend('cpu'):\n"
        "        r = [fa.relu(x), fa.sigmoid(x), fa.softmax(x.reshape(10, 100)), fa.gelu(x)]\n"
        "messages = [str(w.message) for w in caught if 'cannot write compiled kernels' in str(w.message)]\n"
        "print(len(messages), messages[0].split(' instead')[0].split('them in ')[1])\n"
        "np.save(r'" + str(tmp_path / "r.npy") + "', np.concatenate([a.ravel() for a in r]))\n",
        env={"FASTACT_CACHE_DIR": str(blocker / "cache")})
    count, where = out.split()
    assert count == "1" and not os.path.exists(where)  # (removed at exit)
    x = np.linspace(-4, 4, 1000, dtype=np.float32)
    with fa.backend("cpu"):
        want = np.concatenate([a.ravel() for a in (fa.relu(x), fa.sigmoid(x),
                                                   fa.softmax(x.reshape(10, 100)), fa.gelu(x))])
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), want)


def test_on_off_settings_are_read_one_way(monkeypatch):
    """FASTACT_FASTCALL, FASTACT_C_NATIVE, FASTACT_C_REBUILD, FASTACT_PREFETCH and
    FASTACT_WIDE_MAPS: 1/true/yes/on and 0/false/no/off in any case, unset or empty is the
    default, anything else warns and is the default (FASTACT_C_REBUILD=off had rebuilt in every
    process, FASTACT_FASTCALL=off had left the fast path on, FASTACT_C_NATIVE= had turned native
    code off)."""
    from fastact import _env, _fastcall
    from fastact.bindings import _build
    readers = {"FASTACT_FASTCALL": (_fastcall.enabled, True),
               "FASTACT_C_NATIVE": (_build._native, True),
               "FASTACT_C_REBUILD": (_build._rebuild_requested, False)}
    for variable, (read, default) in readers.items():
        monkeypatch.delenv(variable, raising=False)
        assert read() is default
        for value, want in (("off", False), ("OFF", False), (" No ", False), ("0", False),
                            ("false", False), ("on", True), ("TRUE", True), ("yes", True),
                            ("1", True), ("", default)):
            monkeypatch.setenv(variable, value)
            assert read() is want, (variable, value)
        monkeypatch.setenv(variable, "maybe")
        _env._warned.clear()  # (it warns once a process for each setting and value)
        with pytest.warns(RuntimeWarning, match=f"{variable}='maybe' is not one of"):
            assert read() is default
    monkeypatch.setenv("FASTACT_PREFETCH", "Off")
    from fastact.kernels import math as m
    assert m._forced("FASTACT_PREFETCH") is False


def test_row_tasks_are_kept_per_array_dimensions():
    """A row kernel called with arrays of other dimensions gets a task of its own: maxout's first
    call in a process with a 2-d output (as a np.matrix out= had made) compiled a task that every
    later maxout call then used, reading 3-d arrays as 2-d (uninitialised memory in the result)."""
    out = run_python(
        "import numpy as np, fastact as fa\n"
        "from fastact import _backends\n"
        "x = np.arange(8.0).reshape(2, 2, 2, 1)\n"
        "_backends.get('cpu').rows('maxout_forward_rows', (x, np.zeros((2, 2))), 2, 4)\n"
        "x3 = np.arange(16.0).reshape(2, 4, 2)\n"
        "with fa.backend('cpu'):\n"
        "    got = fa.maxout(x3, 2)\n"
        "print(np.array_equal(got, np.maximum(x3[:, 0::2], x3[:, 1::2])))\n")
    assert out.split() == ["True"]
