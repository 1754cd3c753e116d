"""The per-call fast path (fastact/_fastcall.py, _fastcall.c): which calls it takes, that they give
the Python path's bits on both CPU backends, that every other call is left to the Python path
before anything is touched, and that the library works while it is being built or where it
cannot be."""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastact as fa
from fastact import _api, _backends, _fastcall, _threads, registry
from fastact.bindings import _build
from fastact.kernels.math import STREAM_BYTES

from conftest import CASES, case_id, hostile, kinks

# Every activation the fast path serves (the plain elementwise ones), with the test matrix's
# parameter sets (the defaults, and values that change the branch or the saved tensor).
FAST = [(name, params) for name, params in CASES if type(getattr(fa, name)) is _api.Activation]
BACKENDS = [b for b in ("cpu", "c") if _backends._load(b) is not None]


def _compiler_available():
    try:
        _build.compiler()
        return os.path.exists(os.path.join(_build._python_include(), "Python.h"))
    except _build.BuildError:
        return False


@pytest.fixture(scope="module")
def module():
    """The extension, built (here, a compiler and the headers exist: it must build)."""
    if not _fastcall.enabled():
        pytest.skip("FASTACT_FASTCALL=0")
    if not _compiler_available():
        pytest.skip("no C compiler or Python headers")
    loaded = _fastcall.load(wait=True)
    assert loaded is not None, _fastcall.status()
    assert _fastcall.status() is None
    return loaded


def python_path(activation, *arrays, backward=False, out=None, **params):
    """The same call on the Python path (the activation's fast entries set aside)."""
    saved, activation._by_params = activation._by_params, None
    try:
        return (activation.backward if backward else activation)(*arrays, out=out, **params)
    finally:
        activation._by_params = saved


def fast_call(module, activation, *arrays, backward=False, out=None, **params):
    """The call, made until the fast path takes it (the first calls compile and register);
    returns (result, whether the last call was taken)."""
    fn = activation.backward if backward else activation
    for _ in range(3):
        before = module.calls()
        result = fn(*arrays, out=out, **params)
        if module.calls() == before + 1:
            return result, True
    return result, False


def inputs(name, params, dtype, n=4099, seed=0):
    x = hostile(dtype, kinks(name, params), seed=seed)
    x = np.resize(x, n).astype(dtype)
    dy = np.random.default_rng(seed + 1).standard_normal(n).astype(dtype) * 3
    return x, dy


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", FAST, ids=case_id)
def test_fast_calls_give_the_python_paths_bits(module, case, dtype, backend):
    """Forward and backward, allocating, into out=, in place on each input, 2-D in C and F
    order, with and without parameters: each call is taken by the fast path and equals the
    Python path's result bitwise (hostile values: NaN, infinities, subnormals, the kinks)."""
    name, params = case
    act = getattr(fa, name)
    x, dy = inputs(name, params, dtype)
    with fa.backend(backend):
        y = python_path(act, x, **params)
        saved = y if act.saves_for(**params) == "output" else x
        dx = python_path(act, dy, saved, backward=True, **params)
        calls = [((x,), False, None, y), ((dy, saved), True, None, dx),
                 ((x,), False, np.empty_like(x), y), ((dy, saved), True, np.empty_like(x), dx),
                 ((x.reshape(1, 4099),), False, None, y.reshape(1, 4099))]
        x2 = np.asfortranarray(np.resize(x, (64, 48)))
        calls.append(((x2,), False, None, python_path(act, x2, **params)))
        dy2, s2 = np.asfortranarray(np.resize(dy, (64, 48))), np.asfortranarray(
            np.resize(saved, (64, 48)))
        calls.append(((dy2, s2), True, np.empty_like(dy2),
                      python_path(act, dy2, s2, backward=True, **params)))
        for arrays, backward, out, want in calls:
            got, taken = fast_call(module, act, *arrays, backward=backward, out=out, **params)
            assert taken, (name, backward, out is None)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.flags.f_contiguous == want.flags.f_contiguous
            np.testing.assert_array_equal(got, want)
            if out is not None:
                assert got is out
        for k in range(2):  # in place on each input of the backward
            in_place(module, act, dx, params, dy, saved, k=k)
        in_place(module, act, y, params, x)


def in_place(module, act, want, params, *arrays, k=0):
    """out = arrays[k], on fresh copies, until the fast path takes it (its first call compiles
    the in-place form); every call's result is right."""
    for _ in range(3):
        copies = [a.copy() for a in arrays]
        before = module.calls()
        got = (act.backward if len(arrays) == 2 else act)(*copies, out=copies[k], **params)
        assert got is copies[k]
        np.testing.assert_array_equal(got, want)
        if module.calls() == before + 1:
            return
    raise AssertionError(f"{act.name}: the in-place call on input {k} was never taken")


def test_parameters_key_the_entries_and_their_number_is_bounded(module):
    """Calls with parameters: each parameter set (as passed, by exact type and value) has its
    entries; equal values passed alike share them; values that compare equal to a cached one but
    are errors (complex, Fraction) or give other results (-0.0 against 0.0) get the Python
    path's answer; an unhashable or invalid parameter gets its error; past _MAX_FAST sets the
    calls stay right on the Python path."""
    from fractions import Fraction
    x = np.linspace(-4, 4, 3000, dtype=np.float32)
    act = fa.leaky_relu
    act._by_params.clear()
    for slope in (0.2, 0.2, 0.2):
        got = act(x, slope)
    assert _api._key((0.2,), {}) in act._by_params and len(act._by_params) == 1
    got, taken = fast_call(module, act, x, 0.2)
    assert taken
    np.testing.assert_array_equal(got, python_path(act, x, negative_slope=0.2))
    fast_call(module, act, x, negative_slope=0.2)
    got, taken = fast_call(module, act, x, negative_slope=0.2)
    assert taken and len(act._by_params) == 2
    np.testing.assert_array_equal(got, python_path(act, x, negative_slope=0.2))
    with pytest.raises(TypeError, match="real number"):
        act(x, [0.2])
    with pytest.raises(ValueError, match="NaN"):
        act(x, float("nan"))
    fast_call(module, act, x, 0.5)
    for bad in (0.5 + 0j, np.complex128(0.5), Fraction(1, 2)):
        with pytest.raises(TypeError, match="real number"):
            act(x, bad)
    for slope in (0.0, -0.0, 0.0, -0.0, np.float32(0.2), np.float64(-0.0)):
        want = python_path(act, x, negative_slope=slope)
        for _ in range(2):
            got = act(x, slope)
            assert got.tobytes() == want.tobytes(), slope  # (the sign of zero included)
    for k in range(_api._MAX_FAST + 8):
        slope = 0.01 * k
        for _ in range(2):
            np.testing.assert_array_equal(act(x, slope), python_path(act, x, negative_slope=slope))
    assert len(act._by_params) == _api._MAX_FAST
    act._by_params.clear()


def assert_declined(module, declined):
    """Each (label, call, the Python path's exception or None) is not taken: a finite result or
    that exception."""
    for label, call, error in declined:
        before = module.calls()
        if error is None:
            result = call()
            assert np.all(np.isfinite(np.asarray(result, dtype=np.float64))), label
        else:
            with pytest.raises(error):
                call()
        assert module.calls() == before, label


def test_calls_it_does_not_take_go_the_python_way_unchanged(module):
    """Every call outside the fast path's few shapes of call is declined before anything is
    written, and the Python path then gives what it always gave: results, NumPy scalars for
    0-d, conversions, errors with nothing written."""
    x = np.linspace(-5, 5, 1000, dtype=np.float32)
    fa.sigmoid(x)
    fa.sigmoid(x)  # registered
    declined = [  # (what, the call, the Python path's exception or None)
        ("float16", lambda: fa.sigmoid(x.astype(np.float16)), None),
        ("int", lambda: fa.sigmoid(np.arange(10)), None),
        ("list", lambda: fa.sigmoid([0.5, 1.0]), None),
        ("strided", lambda: fa.sigmoid(x[::2]), None),
        ("0-d", lambda: fa.sigmoid(np.array(0.5, np.float32)), None),
        ("empty", lambda: fa.sigmoid(np.empty(0, np.float32)), None),
        ("byte-swapped", lambda: fa.sigmoid(x.astype(">f4")), None),
        ("subclass", lambda: fa.sigmoid(x.view(np.recarray)), None),
        ("parameters never seen", lambda: fa.elu(x, 0.123), None),
        ("streamed", lambda: fa.sigmoid(np.zeros(STREAM_BYTES // 4, np.float32)), None),
        ("dtypes differ", lambda: fa.sigmoid.backward(x, x.astype(np.float64)), None),
        ("out strided", lambda: fa.sigmoid(x, out=np.empty(2000, np.float32)[::2]), None),
        ("out F-ordered", lambda: fa.sigmoid(x.reshape(10, 100), out=np.empty(
            (10, 100), np.float32, order="F")), None),
        ("shapes differ", lambda: fa.sigmoid.backward(x, x.reshape(10, 100)), ValueError),
        ("out float64", lambda: fa.sigmoid(x, out=np.empty(1000)), TypeError),
        ("out a list", lambda: fa.sigmoid(x, out=[0.0] * 1000), TypeError),
        ("complex", lambda: fa.sigmoid(x.astype(np.complex64)), TypeError),
    ]
    assert_declined(module, declined)
    assert type(fa.sigmoid(np.array(0.5, np.float32))) is np.float32  # a scalar, as NumPy's

    # partial overlap: the Python path computes into a scratch array first
    z = np.linspace(-3, 3, 1001, dtype=np.float32)
    want = python_path(fa.sigmoid, z[:-1].copy())
    before = module.calls()
    fa.sigmoid(z[:-1], out=z[1:])
    assert module.calls() == before
    np.testing.assert_array_equal(z[1:], want)

    # errors: the Python path's, with nothing written
    for bad in [np.full((10, 100), 7.0, np.float32), np.full(999, 7.0, np.float32)]:
        with pytest.raises(ValueError):
            fa.sigmoid(x, out=bad)
        assert np.all(bad == 7.0)
    readonly = np.full(1000, 7.0, np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fa.sigmoid(x, out=readonly)
    assert np.all(readonly == 7.0)


def test_the_backend_choice_in_force_picks_the_kernels_or_the_python_path(module, monkeypatch):
    """A context's choice over FASTACT_BACKEND, read on every call as on the Python path: a
    backend the entry has a kernel for is taken, "cuda" and unknown names are declined (the
    Python path answers them), and an unknown name still raises."""
    x = np.linspace(-5, 5, 1000, dtype=np.float32)
    want = python_path(fa.tanh, x)
    for backend in BACKENDS:
        with fa.backend(backend):
            got, taken = fast_call(module, fa.tanh, x)
            assert taken, backend
            np.testing.assert_array_equal(got, want)
        monkeypatch.setenv("FASTACT_BACKEND", backend)
        got, taken = fast_call(module, fa.tanh, x)
        assert taken, backend
        np.testing.assert_array_equal(got, want)
        monkeypatch.delenv("FASTACT_BACKEND")
    entry = fa.tanh._by_params[()].forward  # (the key of the call without parameters)
    for index, backend in enumerate(_fastcall.BACKENDS):
        assert entry.has(index, 0) == (backend in BACKENDS)
    monkeypatch.setenv("FASTACT_BACKEND", "nonsense")
    before = module.calls()
    with pytest.raises(ValueError, match="^FASTACT_BACKEND='nonsense' names no backend"):
        fa.tanh(x)
    assert module.calls() == before
    monkeypatch.setenv("FASTACT_BACKEND", "cpu" if "c" not in BACKENDS else "c")
    with fa.backend("cuda"):  # a context over the variable: not this path's
        try:
            fa.tanh(x)
        except Exception:  # no device here: the Python path's error
            pass
    assert module.calls() == before
    for spelled in (f" {BACKENDS[0].upper()} ", BACKENDS[0].title()):  # case and spaces off,
        monkeypatch.setenv("FASTACT_BACKEND", spelled)  # and the fast path takes them after the
        np.testing.assert_array_equal(fa.tanh(x), want)  # first call (a Python-path call each)
        assert _backends.current() == BACKENDS[0]
        got, taken = fast_call(module, fa.tanh, x)
        assert taken, spelled
        np.testing.assert_array_equal(got, want)


def test_fast_calls_from_many_python_threads_are_correct(module):
    """The GIL is released around the kernel: eight threads calling at once each get their own
    results."""
    rng = np.random.default_rng(0)
    names = ["sigmoid", "gelu", "relu", "tanh", "silu", "elu", "softplus", "mish"]
    xs = [rng.standard_normal(20_000).astype(np.float32) for _ in names]
    want = [python_path(getattr(fa, n), x) for n, x in zip(names, xs)]
    for n, x in zip(names, xs):
        fast_call(module, getattr(fa, n), x)
    errors = []
    before = module.calls()

    def work(i):
        try:
            out = np.empty_like(xs[i])
            for _ in range(200):
                got = getattr(fa, names[i])(xs[i], out=out)
                assert np.array_equal(got, want[i])
        except BaseException as e:
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert module.calls() - before == 200 * len(names)


def _run(code, env):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_built_in_the_background_while_calls_take_the_python_path(tmp_path):
    """A fresh cache: the first calls are answered at once (the Python path) while the
    extension compiles in a thread; afterwards the calls are the fast path's, and the next
    process loads it from disk."""
    if not _compiler_available():
        pytest.skip("no C compiler or Python headers")
    code = """if True:
        import time, numpy as np, fastact as fa
        from fastact import _fastcall
        x = np.linspace(-4, 4, 5000, dtype=np.float32)
        want = fa.relu(x)
        print(_fastcall.status())
        _fastcall.load(wait=True)
        print(_fastcall.status())
        for _ in range(3):
            assert np.array_equal(fa.relu(x), want)
        print(_fastcall._module.calls())
    """
    env = {"FASTACT_CACHE_DIR": str(tmp_path), "FASTACT_BACKEND": "c" if "cpu" not in BACKENDS
           else "cpu"}
    first = _run(code, env).split("\n")
    assert first[0] == "being built" and first[1] == "None" and int(first[2]) >= 2, first
    assert any(p.name.startswith("fastcall-") for p in tmp_path.iterdir())
    second = _run(code, env).split("\n")
    assert second[0] == "None", second  # loaded from disk on the first call


def test_without_a_compiler_everything_works_on_the_python_path(tmp_path):
    code = """if True:
        import numpy as np, fastact as fa
        from fastact import _fastcall
        x = np.linspace(-4, 4, 5000, dtype=np.float32)
        y = fa.sigmoid(x)
        _fastcall.load(wait=True)
        assert np.array_equal(fa.sigmoid(x), y) and np.array_equal(fa.sigmoid(x), y)
        assert fa.sigmoid._by_params is None
        print(_fastcall.status())
    """
    env = {"FASTACT_CACHE_DIR": str(tmp_path), "CC": "/nonexistent/cc"}
    if "cpu" in BACKENDS:
        env["FASTACT_BACKEND"] = "cpu"  # (the C backend would need the compiler too)
    else:
        pytest.skip("the C backend alone needs a compiler")
    out = _run(code, env)
    assert "no compiler" in out, out
    del env["CC"]
    off = _run(code, {**env, "FASTACT_FASTCALL": "0"})
    assert "turned off" in off, off


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_calls_are_split_over_the_pool_from_their_kernels_split_size(module, backend):
    """registry.split_cost: the fast path splits sigmoid's calls (arithmetic-bound) over threads
    from FAST_SPLIT_SIZE / 2 elements and relu's from FAST_SPLIT_SIZE, itself (a call number from
    _threads, as _threads.run takes one), on the pool's workers, and gets one thread's bits,
    allocating, into out= and in place, forward and backward. With the workers busy (another
    Python thread's call holds them) or one thread set, a call runs whole on its own thread.
    The Python path splits from SPLIT_SIZE / cost."""
    threads = fa.get_num_threads()
    fast = _threads.FAST_SPLIT_SIZE
    sizes = {"sigmoid": fast // 2, "relu": fast // 2, "hardtanh": fast,
             "tanh": 5 * _threads.SPLIT_SIZE + 3}
    with fa.backend(backend):
        try:
            for name, n in sizes.items():
                act = getattr(fa, name)
                x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 4
                fa.set_num_threads(1)
                want = python_path(act, x)
                fa.set_num_threads(2)
                fast_call(module, act, x)
                for _ in range(2):  # (the first compiles the in-place form)
                    a = x.copy()
                    act(a, out=a)
                for how in ("allocating", "out=", "in place"):
                    a = x.copy() if how == "in place" else x
                    out = {"allocating": None, "out=": np.empty_like(x), "in place": a}[how]
                    before, seq = module.calls(), _threads._seq
                    got = act(a, out=out)
                    assert module.calls() == before + 1, (name, how)
                    split = n * registry.split_cost(name + "_forward") >= fast
                    assert _threads._seq == seq + split, (name, n)
                    np.testing.assert_array_equal(got, want)
                dy = np.random.default_rng(n + 1).standard_normal(n).astype(np.float32)
                fa.set_num_threads(1)
                want_dx = python_path(act, dy, want, backward=True)
                fa.set_num_threads(2)
                fast_call(module, act, dy, want, backward=True)
                for k in range(2):
                    args = [dy.copy(), want.copy()]
                    act.backward(*args, out=args[k])  # (compiles the in-place form)
                    args = [dy.copy(), want.copy()]
                    before = module.calls()
                    np.testing.assert_array_equal(act.backward(*args, out=args[k]), want_dx)
                    assert module.calls() == before + 1
                before, seq = module.calls(), _threads._seq
                with _threads._busy:  # another thread's call has the workers
                    np.testing.assert_array_equal(act(x), want)
                fa.set_num_threads(1)
                np.testing.assert_array_equal(act(x), want)
                assert module.calls() == before + 2 and _threads._seq == seq
                fa.set_num_threads(2)
                np.testing.assert_array_equal(python_path(act, x), want)
                split = n * registry.split_cost(name + "_forward") >= _threads.SPLIT_SIZE
                assert _threads._seq == seq + split, (name, n)
        finally:
            fa.set_num_threads(threads)
    assert registry.split_cost("sigmoid_forward") == 2 and registry.split_cost("relu_forward") == 1


def test_a_split_call_after_its_worker_fell_asleep_is_right(module):
    """A worker asleep (past its ~2 ms of looking for a go) is woken for the call, or its range
    is taken back; either way the result is whole."""
    x = np.random.default_rng(1).standard_normal(_threads.SPLIT_SIZE * 2).astype(np.float32)
    want = python_path(fa.silu, x)
    fast_call(module, fa.silu, x)
    for pause in (0.0, 0.003, 0.02, 0.1):
        time.sleep(pause)
        before = module.calls()
        np.testing.assert_array_equal(fa.silu(x), want)
        assert module.calls() == before + 1


def test_rrelu_in_eval_mode_takes_the_fast_path_and_training_never_does(module):
    """rrelu in eval mode is leaky_relu with slope (lower + upper) / 2: its calls (forward, and
    backward from the input) take the fast path with the Python path's bits; calls in training
    mode, with a generator, return_noise or noise, never do."""
    x, dy = inputs("rrelu", {}, np.float32)
    for params in ({}, {"lower": 0.05, "upper": 0.2}, {"training": False}):
        y = python_path(fa.rrelu, x, **params)
        dx = python_path(fa.rrelu, dy, x, backward=True, **params)
        got, taken = fast_call(module, fa.rrelu, x, **params)
        assert taken, params
        np.testing.assert_array_equal(got, y)
        got, taken = fast_call(module, fa.rrelu, dy, x, backward=True, **params)
        assert taken, params
        np.testing.assert_array_equal(got, dx)
    before = module.calls()
    for _ in range(3):
        y1, noise = fa.rrelu(x, training=True, generator=7, return_noise=True)
        y2 = fa.rrelu(x, training=True, generator=7)
        np.testing.assert_array_equal(y1, y2)
        fa.rrelu.backward(dy, x, training=True, noise=noise)
        fa.rrelu(x, generator=3)
        fa.rrelu(x, return_noise=True)
    assert module.calls() == before
    for key in fa.rrelu._by_params:  # entries only for calls in eval mode
        assert ("training", bool, True) not in key, key


def test_a_build_that_cannot_start_leaves_the_python_path(tmp_path):
    """No thread for the build (e.g. at interpreter shutdown) or no source to hash: the calls
    that triggered it keep their results, the fast path stays off and says why."""
    code = """if True:
        import threading, numpy as np, fastact as fa
        from fastact import _fastcall
        def refuse(self):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        threading.Thread.start = refuse
        x = np.linspace(-4, 4, 5000, dtype=np.float32)
        y = fa.relu(x)
        assert np.array_equal(fa.relu(x), y) and np.array_equal(fa.relu(x), np.maximum(x, 0))
        assert _fastcall.load(wait=True) is None and fa.relu._by_params is None
        print(_fastcall.status())
    """
    env = {"FASTACT_CACHE_DIR": str(tmp_path)}
    if "cpu" not in BACKENDS:
        pytest.skip("needs the Numba backend (the C backend's build would need the thread)")
    env["FASTACT_BACKEND"] = "cpu"
    out = _run(code, env)
    assert "RuntimeError" in out and "shutdown" in out, out


# --- the row kernels' entries (_fastcall.c, Rows) -------------------------------------------------


def rows_python_path(activation, *arrays, backward=False, out=None):
    """The same call on the Python path (the activation's row entries set aside)."""
    saved, activation._row_entries = activation._row_entries, None
    try:
        return (activation.backward if backward else activation)(*arrays, out=out)
    finally:
        activation._row_entries = saved


def row_inputs(dtype, shape, seed=0):
    """Hostile values (NaN, infinities, subnormals, huge) and normal ones, with a row of -inf and
    a row of large equal values, in shape."""
    x = np.resize(hostile(dtype, [0.0], seed=seed), int(np.prod(shape))).astype(dtype)
    rng = np.random.default_rng(seed)
    x[::3] = (rng.standard_normal(x[::3].size) * 30).astype(dtype)
    x = x.reshape(shape)
    if x.ndim >= 2 and x.shape[0] > 2:
        x.reshape(-1, shape[-1])[1] = -np.inf
        x.reshape(-1, shape[-1])[2] = 1e4
    dy = (rng.standard_normal(shape) * 3).astype(dtype)
    return x, dy


ROW_CASES = [  # (activation, its arrays' shape, prelu's channels)
    ("softmax", (37, 129), None), ("log_softmax", (5, 3, 64), None), ("softmax", (300,), None),
    ("prelu", (3, 4, 520), 4), ("prelu", (2, 3, 16, 40), 3), ("prelu", (1025,), 1),
    ("prelu", (5, 4, 64), 4), ("prelu", (2, 3, 100), 3),
    ("prelu", (7, 9), 1),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: f"{c[0]}{c[1]}")
def test_row_kernels_fast_calls_give_the_python_paths_bits(module, case, dtype, backend):
    """softmax / log_softmax forward and backward along the last axis, prelu forward where it
    runs as rows (a single weight; rest of (N, C, *rest) 512 elements or more, or 64 or more in
    arrays of up to 2^20 elements): allocating,
    into out=, in place on each input, each call taken and equal to the Python path's bitwise."""
    name, shape, channels = case
    act = getattr(fa, name)
    x, dy = row_inputs(dtype, shape)
    with fa.backend(backend):
        if name == "prelu":
            w = np.linspace(-0.5, 2.0, channels).astype(dtype)
            y = rows_python_path(act, x, w)
            calls = [((x, w), False, None, y), ((x, w), False, np.empty_like(x), y)]
        else:
            y = rows_python_path(act, x)
            dx = rows_python_path(act, dy, y, backward=True)
            calls = [((x,), False, None, y), ((x,), False, np.empty_like(x), y),
                     ((dy, y), True, None, dx), ((dy, y), True, np.empty_like(x), dx)]
        for arrays, backward, out, want in calls:
            got, taken = fast_call(module, act, *arrays, backward=backward, out=out)
            assert taken, (name, backward, out is None)
            assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want)
            if out is not None:
                assert got is out
        ins = [(x.copy(), w)] if name == "prelu" else [(x.copy(),), (dy.copy(), y.copy()),
                                                       (dy.copy(), y.copy())]
        for k, arrays in enumerate(ins):  # in place: forward on x, backward on dy, then on y
            before = module.calls()
            target = arrays[min(k, 2) - 1] if k else arrays[0]
            got = (act.backward if len(arrays) == 2 and name != "prelu" else act)(
                *arrays, out=target)
            assert got is target and module.calls() == before + 1, (name, k)
            np.testing.assert_array_equal(got, dx if k else y)


def test_row_calls_it_does_not_take_go_the_python_way_unchanged(module):
    """Row calls outside the entries' shapes are declined untouched and the Python path gives
    its results and errors, nothing written: another axis (or one not given as a Python int),
    strided or F-ordered arrays, 0-d,
    empty, float16, prelu by columns ((N, C) and short rest), a weight of another dtype or not
    contiguous, rest under 64 elements or under 512 in arrays of more than 2^20 elements, out
    partly overlapping or the weight itself; errors for channels that do not
    match, a read-only or misshapen out. The last axis named (-1 or ndim - 1) is taken."""
    x = np.random.default_rng(2).standard_normal((6, 8, 600)).astype(np.float32)
    w = np.linspace(0.1, 0.9, 8).astype(np.float32)
    for _ in range(2):  # registered
        fa.softmax(x), fa.softmax.backward(x, fa.softmax(x)), fa.prelu(x, w)
    before = module.calls()
    fa.softmax(x), fa.softmax.backward(x, x), fa.prelu(x, w)
    assert module.calls() == before + 3  # (so each call below is declined, not unregistered)
    declined = [
        ("axis", lambda: fa.softmax(x, axis=1), None),
        ("axis 0", lambda: fa.softmax(x, 0), None),
        ("axis a NumPy int", lambda: fa.softmax(x, axis=np.int64(-1)), None),
        ("axis True", lambda: fa.softmax(x[0], True), None),
        ("axis out of range", lambda: fa.softmax(x, axis=3), ValueError),
        ("strided", lambda: fa.softmax(x[:, :, ::2]), None),
        ("F-ordered", lambda: fa.softmax(np.asfortranarray(x)), None),
        ("0-d", lambda: fa.softmax(np.array(0.5, np.float32)), None),
        ("empty", lambda: fa.softmax(np.empty((0, 4), np.float32)), None),
        ("float16", lambda: fa.softmax(x.astype(np.float16)), None),
        ("backward shapes", lambda: fa.softmax.backward(x, x.reshape(48, 600)), ValueError),
        ("backward dtypes", lambda: fa.softmax.backward(x, x.astype(np.float64)), None),
        ("prelu (N, C)", lambda: fa.prelu(x[:, :, 0].copy(), w), None),
        ("prelu short rest", lambda: fa.prelu(x[:, :, :63].copy(), w), None),
        ("prelu short rest, large", lambda: fa.prelu(np.resize(x, (1024, 8, 200)), w), None),
        ("prelu weight float64", lambda: fa.prelu(x, w.astype(np.float64)), None),
        ("prelu weight strided", lambda: fa.prelu(x, np.repeat(w, 2)[::2]), None),
        ("prelu channels", lambda: fa.prelu(x, w[:5].copy()), ValueError),
        ("prelu 0-d", lambda: fa.prelu(np.array(-2.0, np.float32), w[:1].copy()), None),
        ("out float64", lambda: fa.softmax(x, out=np.empty(x.shape)), TypeError),
    ]
    assert_declined(module, declined)

    # the last axis named (-1 or ndim - 1, by position or keyword): taken, the same bits
    want = rows_python_path(fa.softmax, x)
    for args, kwargs in [((-1,), {}), ((2,), {}), ((), {"axis": -1}), ((), {"axis": 2})]:
        before = module.calls()
        np.testing.assert_array_equal(fa.softmax(x, *args, **kwargs), want)
        np.testing.assert_array_equal(fa.softmax.backward(x, want, *args, **kwargs),
                                      rows_python_path(fa.softmax, x, want, backward=True))
        assert module.calls() == before + 2, (args, kwargs)

    # partial overlap and out = the weight: the Python path's results
    z = np.linspace(-3, 3, 2 * 600 + 1, dtype=np.float32)
    want = rows_python_path(fa.softmax, z[:-1].reshape(2, 600).copy())
    before = module.calls()
    fa.softmax(z[:-1].reshape(2, 600), out=z[1:].reshape(2, 600))
    assert module.calls() == before
    np.testing.assert_array_equal(z[1:].reshape(2, 600), want)
    one = np.full(1, 0.25, np.float32)
    v = np.linspace(-2, 2, 1, dtype=np.float32)
    fa.prelu(v, one)
    before = module.calls()
    np.testing.assert_array_equal(fa.prelu(v, one, out=one), [-0.5])
    assert module.calls() == before

    # errors: the Python path's, nothing written
    for bad in [np.full((6, 8, 599), 7.0, np.float32), np.full(x.size, 7.0, np.float32)]:
        with pytest.raises(ValueError):
            fa.softmax(x, out=bad)
        with pytest.raises(ValueError):
            fa.prelu(x, w, out=bad)
        assert np.all(bad == 7.0)
    readonly = np.full(x.shape, 7.0, np.float32)
    readonly.flags.writeable = False
    for call in (lambda: fa.softmax(x, out=readonly), lambda: fa.prelu(x, w, out=readonly),
                 lambda: fa.softmax.backward(x, x, out=readonly)):
        with pytest.raises(ValueError, match="read-only"):
            call()
    assert np.all(readonly == 7.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_row_calls_are_split_over_the_pool(module, backend):
    """Row calls are split over the pool by rows (a call number taken, a worker given a range)
    from FAST_SPLIT_SIZE elements / their cost (softmax and log_softmax forward 4, backward 2,
    prelu 1), smaller ones not, nor calls of one row; with the workers busy or one thread, whole
    on the caller's thread; one thread's bits every time."""
    threads = fa.get_num_threads()
    fast = _threads.FAST_SPLIT_SIZE
    cases = [("softmax", (fast // 512, 512), None), ("softmax", (fast // 4096, 1024), None),
             ("softmax", (fast // 4096 - 1, 1024), None), ("log_softmax", (3, fast // 2), None),
             ("log_softmax", (1, fast), None), ("prelu", (2, 16, fast // 16), 16),
             ("prelu", (1, 16, fast // 16 - 64), 16), ("prelu", (2 * fast + 6,), 1),
             ("prelu", (fast + 3,), 1)]
    cost = {"softmax": (4, 2), "log_softmax": (4, 2), "prelu": (1, 1)}
    with fa.backend(backend):
        try:
            for name, shape, channels in cases:
                act = getattr(fa, name)
                x, dy = row_inputs(np.float32, shape, seed=len(shape))
                args = (x,) if channels is None else (x, np.linspace(0.1, 1, channels,
                                                                       dtype=np.float32))
                fa.set_num_threads(1)
                want = rows_python_path(act, *args)
                fa.set_num_threads(2)
                fast_call(module, act, *args)
                rows = x.size // x.shape[-1]
                if channels == 1:  # one weight: two rows where the size halves, else one
                    rows = 2 if x.size % 2 == 0 else 1
                split = rows > 1 and x.size * cost[name][0] >= fast
                before, seq = module.calls(), _threads._seq
                np.testing.assert_array_equal(act(*args), want)
                assert module.calls() == before + 1, (name, shape)
                assert _threads._seq == seq + split, (name, shape)
                if split:  # a worker had a range of it
                    assert _threads._pool[0][0] >= 1, (name, shape)
                with _threads._busy:
                    np.testing.assert_array_equal(act(*args), want)
                fa.set_num_threads(1)
                np.testing.assert_array_equal(act(*args), want)
                assert module.calls() == before + 3 and _threads._seq == seq + split
                fa.set_num_threads(2)
                if channels is None:
                    fa.set_num_threads(1)
                    want_dx = rows_python_path(act, dy, want, backward=True)
                    fa.set_num_threads(2)
                    fast_call(module, act, dy, want, backward=True)
                    seq = _threads._seq
                    np.testing.assert_array_equal(act.backward(dy, want), want_dx)
                    assert _threads._seq == seq + (rows > 1 and x.size * cost[name][1] >= fast), (
                        name, shape)
        finally:
            fa.set_num_threads(threads)
