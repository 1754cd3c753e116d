"""The C backend (fastact/bindings): availability and its reason, the build cache (shared, locked,
rebuilt on request), life without Numba, concurrent use beside the Numba backend, agreement with
the Numba backend, and the compiled loops' assembly. Accuracy is the shared matrix's job
(test_activations.py and test_rowwise.py run on every available backend)."""
import os
import platform
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import fastact as fa
import fastact.bindings as bindings
from fastact import registry
from fastact.bindings import _build, _generate

from conftest import assert_close, hostile

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def python(code, env=None, timeout=600, check=True):
    """Run code in a fresh interpreter (this checkout first on its path); its stdout."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(TESTS)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    full_env = {k: v for k, v in full_env.items() if v is not None}
    done = subprocess.run([sys.executable, "-c", code], env=full_env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def c_backend():
    """The C backend object; skips only where this machine cannot build it (no compiler/headers)."""
    available, reason = fa.backends()["c"]
    if not available:
        assert re.search(r"no compiler|Python\.h|POSIX", reason), f"C backend broken: {reason}"
        pytest.skip(reason)
    from fastact import _backends
    return _backends.get("c")


def _same(a, b):
    """Bitwise equal, any NaN equal to any NaN."""
    a, b = np.asarray(a), np.asarray(b)
    ints = {4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return bool(np.all((a.view(ints) == b.view(ints)) | (np.isnan(a) & np.isnan(b))))


# --- availability and the reason ---------------------------------------------------------------

def test_backends_report_c_available(c_backend):
    assert fa.backends()["c"] == (True, "available")
    info = bindings.info()
    assert Path(info["path"]).exists()
    assert "-ffp-contract=off" in info["flags"] and "-ffast-math" not in info["flags"]
    assert "-fopenmp" not in info["flags"]  # threads come from fastact's pool, not OpenMP


@pytest.mark.parametrize("env,reason", [
    ({"CC": "/nonexistent/bin/cc"}, "C extension not built: no compiler: CC='/nonexistent/bin/cc' not found"),
    ({"CC": None, "PATH": "/nonexistent"}, "C extension not built: no compiler (cc, gcc, clang) on PATH"),
])
def test_without_a_compiler_c_reports_why_and_the_rest_works(tmp_path, env, reason):
    out = python("""
import numpy as np, fastact as fa
available, reason = fa.backends()["c"]
print(available); print(reason)
try:
    with fa.backend("c"):
        fa.relu(np.ones(3))
except RuntimeError as e:
    print("error:", e)
""", env={"FASTACT_CACHE_DIR": str(tmp_path), **env})
    available, why, error = out.splitlines()[:3]
    assert available == "False" and why.startswith(reason), out
    assert error.startswith("error: fastact: backend 'c' is not available (c: C extension not built")


def test_loading_a_built_extension_needs_no_compiler_cffi_or_numba(c_backend):
    """The first call right after import loads a shared library: no JIT, no compiler, no cffi
    import (so it is fast); the PATH without compilers proves nothing is built."""
    out = python("""
import sys, numpy as np, fastact as fa
from fastact import reference
x = np.linspace(-5, 5, 101, dtype=np.float32)
y = fa.sigmoid(x)
np.testing.assert_allclose(y, reference.forward("sigmoid", x.astype(np.float64)), rtol=1e-6)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "cffi", "llvmlite")))
print(fa.backends()["c"])
""", env={"FASTACT_BACKEND": "c", "PATH": "/nonexistent", "CC": None})
    assert out.splitlines() == ["[]", "(True, 'available')"]


# --- the build cache -------------------------------------------------------------------------------

def _build_count(directory):
    log = Path(directory) / "build.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.slow
def test_build_is_shared_locked_and_rebuilt_on_request(tmp_path, c_backend):
    """Two processes starting together on an empty cache build once (file lock) and both compute;
    FASTACT_C_REBUILD=1 and `python -m fastact.bindings --rebuild` build again; others reuse."""
    cache = tmp_path / "cache"
    code = """
import numpy as np, fastact as fa
from fastact.bindings import _build
x = np.linspace(-30, 30, 200_003, dtype=np.float32)
with fa.backend("c"):
    print(fa.gelu(x).tobytes().hex()[:64], float(fa.gelu(x).sum()))
print(_build.build_dir())
"""
    env = {**os.environ, "FASTACT_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    racers = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in racers]
    assert all(p.returncode == 0 for p in racers), outputs
    assert outputs[0][0] == outputs[1][0]
    cache = Path(outputs[0][0].splitlines()[-1])  # the build directory (c-<key>)
    assert cache.parent == tmp_path / "cache"
    assert _build_count(cache) == 1
    module = next(cache.glob("_fastact_c*"))
    first_inode = module.stat().st_ino

    assert python(code, env={"FASTACT_CACHE_DIR": str(cache.parent)}) == outputs[0][0]
    assert _build_count(cache) == 1  # reused

    assert python(code, env={"FASTACT_CACHE_DIR": str(cache.parent), "FASTACT_C_REBUILD": "1"}
                  ) == outputs[0][0]
    assert _build_count(cache) == 2 and module.stat().st_ino != first_inode

    python("import sys; from fastact.bindings.__main__ import main; sys.exit(main(['--rebuild']))",
           env={"FASTACT_CACHE_DIR": str(cache.parent)})
    assert _build_count(cache) == 3
    assert python(code, env={"FASTACT_CACHE_DIR": str(cache.parent)}) == outputs[0][0]


# --- without Numba -----------------------------------------------------------------------------------

BLOCK_NUMBA = """
import sys
class _NoNumba:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numba", "llvmlite"):
            raise ImportError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _NoNumba())
"""


def test_without_numba_fastact_imports_and_uses_c(c_backend):
    out = python(BLOCK_NUMBA + """
import numpy as np
import fastact as fa
from fastact import reference, _backends
from conftest import assert_close, hostile
report = fa.backends()
assert report["cpu"][0] is False and "numba" in report["cpu"][1], report
assert report["c"] == (True, "available"), report
assert _backends.get().name == "c"
for dtype in (np.float32, np.float64):
    x = hostile(dtype)
    x64 = x.astype(np.float64)
    dy = np.linspace(-2, 2, x.size).astype(dtype)
    with np.errstate(all="ignore"):
        for name, params in [("sigmoid", {}), ("gelu", {"approximate": "tanh"}), ("gelu", {}),
                             ("elu", {"alpha": 0.5}), ("mish", {}), ("softplus", {"beta": 2.0}),
                             ("hardswish", {}), ("leaky_relu", {"negative_slope": -0.5})]:
            act = getattr(fa, name)
            y = act(x, **params)
            assert_close(y, reference.forward(name, x64, **params), dtype, context=name)
            saved = y if act.saves_for(**params) == "output" else x
            dx = act.backward(dy, saved, **params)
            ref = reference.backward(name, dy.astype(np.float64), saved.astype(np.float64), **params)
            scale = np.abs(dy.astype(np.float64)) * reference.condition_scale(name, "backward", x64, **params)
            assert_close(dx, ref, dtype, scale=scale, context=name + " backward")
        rows = np.random.default_rng(0).standard_normal((64, 300)).astype(dtype)
        assert_close(fa.softmax(rows), reference.forward("softmax", rows.astype(np.float64)), dtype)
        assert_close(fa.log_softmax(rows, axis=0),
                     reference.forward("log_softmax", rows.astype(np.float64), axis=0), dtype)
        np.testing.assert_array_equal(fa.maxout(rows, 3, axis=1), rows.reshape(64, 100, 3).max(-1))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite")))
""")
    assert out.strip() == "[]"


@pytest.mark.slow
def test_the_shared_matrix_passes_without_numba(c_backend):
    """The tests that do not need Numba (the matrix on the C backend, the references) pass in an
    interpreter where `import numba` fails."""
    out = python(BLOCK_NUMBA + """
import pytest
code = pytest.main(["-q", "-p", "no:cacheprovider", "-k", "not cpu", "-W", "ignore",
                    "tests/test_activations.py", "tests/test_rowwise.py"])
assert "numba" not in sys.modules
sys.exit(code)
""", check=False)
    last = out.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last and "error" not in last, out[-3000:]


# --- concurrency -------------------------------------------------------------------------------------

def test_mixed_concurrent_use_of_c_and_numba_threads(c_backend):
    """Python threads calling the C backend and the Numba backend (both on fastact's pool)
    at once, on arrays above both threading thresholds, get the single-threaded results."""
    from fastact import _backends
    have_cpu = fa.backends()["cpu"][0]
    backends = ["c", "cpu"] if have_cpu else ["c"]
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(300_007) * 6).astype(np.float32)
    dy = rng.uniform(-1, 1, x.size).astype(np.float32)
    rows = rng.standard_normal((600, 700)).astype(np.float32)
    jobs = {
        "gelu": lambda: fa.gelu(x),
        "sigmoid_backward": lambda: fa.sigmoid.backward(dy, fa.sigmoid(x)),
        "relu": lambda: fa.relu(x),
        "mish_backward": lambda: fa.mish.backward(dy, x),
        "softmax": lambda: fa.softmax(rows),
        "log_softmax_backward": lambda: fa.log_softmax.backward(rows, fa.log_softmax(rows)),
    }
    threads_before = fa.get_num_threads()
    fa.set_num_threads(1)
    try:
        expected = {}
        for b in backends:
            with fa.backend(b):
                expected.update({(b, name): job() for name, job in jobs.items()})
    finally:
        fa.set_num_threads(threads_before)
    assert threads_before > 1 or os.cpu_count() == 1

    errors, mismatches = [], []

    def worker(index):
        try:
            for step in range(6):
                b = backends[(index + step) % len(backends)]
                for name in list(jobs)[index % 2::2] if step % 2 else jobs:
                    with fa.backend(b):
                        got = jobs[name]()
                    if not _same(got, expected[b, name]):
                        mismatches.append((b, name))
        except BaseException as e:  # reported below
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert not any(w.is_alive() for w in workers), "a thread hung"
    assert not errors, errors
    assert not mismatches, mismatches


# --- agreement with the Numba backend ------------------------------------------------------------------

PARAM_SETS = {0: [()], 1: [(0.5,), (-0.3,), (1.0,)],
              2: [(1.0, 20.0), (2.0, 10.0), (-2.0, 0.5), (-1.0, 1.0)]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_every_c_kernel_agrees_bitwise_with_numba(dtype, c_backend):
    """Every elementwise loop the API can ask for (all scalar functions of the registry, each
    number of array arguments), on hostile inputs: the C port computes the same bits."""
    if not fa.backends()["cpu"][0]:
        pytest.skip("the Numba backend is not available to compare with")
    from fastact import _backends
    cpu = _backends.get("cpu")
    x = hostile(dtype)
    rng = np.random.default_rng(0)
    others = [rng.uniform(-2, 2, x.size).astype(dtype) for _ in range(2)]
    others[1][::3] = rng.uniform(0, 1, others[1][::3].size)  # rrelu noise
    # hostile dy as well: the backwards clamp dy (math.finite) and select on dy = +-0
    fi = np.finfo(dtype)
    special = np.array([np.inf, -np.inf, 0.0, -0.0, fi.max, -fi.max, fi.smallest_subnormal, np.nan],
                       dtype)
    others[0][::5] = np.resize(special, others[0][::5].size)
    differ = []
    for name, arrays, n_args in _generate.map_functions():
        fn = getattr(registry, name)
        inputs = [x] if arrays == 1 else [others[0], x, others[1]][:arrays]
        for params in PARAM_SETS[n_args - arrays]:
            params = tuple(dtype(p) for p in params)
            got, want = np.empty_like(x), np.empty_like(x)
            c_backend.map(fn, inputs, got, params)
            cpu.map(fn, inputs, want, params)
            if not _same(got, want):
                differ.append(f"{name}/{arrays}{params}")
    assert not differ, differ


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_streamed_forms_agree_bitwise_with_numba(dtype, c_backend):
    """The functions whose streamed blocks call another C form of them (STREAMED_SCALAR): both
    forms (an output in cache, one of STREAM_BYTES) on hostile values around every kink and
    NaN / inf / huge dy, the same bits as Numba's."""
    if not fa.backends()["cpu"][0]:
        pytest.skip("the Numba backend is not available to compare with")
    from fastact import _backends
    from fastact.kernels.math import STREAM_BYTES
    cpu = _backends.get("cpu")
    assert _generate.STREAMED_SCALAR
    big = STREAM_BYTES // np.dtype(dtype).itemsize + 77
    x0 = hostile(dtype, kink_points=(-3.0, 0.0, 3.0))
    dy0 = hostile(dtype, seed=1)[::-1]
    for n in (x0.size, big):  # the in-cache form, then the streamed one
        x, dy = np.resize(x0, n), np.resize(dy0, n)
        for name in _generate.STREAMED_SCALAR:
            assert (name, 2, 2) in _generate.map_functions()  # (dy, x) as this test calls it
            fn = getattr(registry, name)
            got, want = np.empty_like(x), np.empty_like(x)
            c_backend.map(fn, [dy, x], got, ())
            cpu.map(fn, [dy, x], want, ())
            assert _same(got, want), (name, n)
            assert np.isnan(got).any() and (got == 0).any()  # the pieces were all there


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_row_kernels_agree_with_numba(dtype, c_backend):
    if not fa.backends()["cpu"][0]:
        pytest.skip("the Numba backend is not available to compare with")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((40, 6, 9)) * 30).astype(dtype)
    x[0, 0, :3] = [np.nan, np.inf, -np.inf]
    x[1, :, :] = -np.inf
    dy = rng.uniform(-1, 1, x.shape).astype(dtype)
    w = rng.uniform(-0.5, 0.5, 6).astype(dtype)
    results = {}
    for b in ("c", "cpu"):
        with fa.backend(b):
            y, ly = fa.softmax(x, axis=1), fa.log_softmax(x)
            results[b] = [y, ly, fa.softmax.backward(dy, y, axis=1), fa.log_softmax.backward(dy, ly),
                          fa.maxout(x, 3, axis=2), fa.maxout.backward(dy[..., :3], x, 3, axis=2),
                          fa.maxout(x, 2, axis=1), *fa.prelu.backward(dy, x, w), fa.prelu(x, w),
                          fa.rrelu.backward(dy, x, training=True,
                                            noise=fa.rrelu(x, training=True, generator=7,
                                                           return_noise=True)[1])]
    # the row sums (softmax family, prelu's grad_weight) are added in another order by the Numba
    # backend's vectorized reductions: those agree to rounding, everything else bit for bit
    y, ly = results["cpu"][:2]
    with np.errstate(invalid="ignore"):  # the size of the cancelling terms, as the reference's
        scales = {2: np.abs(y) * (np.abs(dy) + np.nansum(np.abs(dy * y), axis=1, keepdims=True)),
                  3: np.abs(dy) + np.exp(ly) * np.sum(np.abs(dy), axis=-1, keepdims=True)}
    summed = {0, 1, 2, 3, 8}
    for i, (a, b) in enumerate(zip(results["c"], results["cpu"])):
        if i in summed:
            assert_close(a, b.astype(np.float64), dtype, scale=scales.get(i), context=f"result {i}")
        else:
            assert _same(a, b), f"result {i} differs"


@pytest.mark.parametrize("n", [7, 15, 16, 17, 32, 33, 37, 1029])
def test_softmax_backward_row_dot_on_every_row_length(n, c_backend):
    """C softmax backward's row dot (AVX-512 intrinsics for float32 where built for them: 16 at a
    time, then the rest of the row) against the float64 formula and Numba: an ordinary row, one
    with NaN, one of huge dy, and rows whose dy - dot overflows float32 while the dot itself is
    in range (only the sum of |dy| sends them past the split: dy = +-3e38, four equal maxima of
    x so that dot = 3e38 / 4, the negative dy among the first 16 and in the rest of the row)."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((6, n)) * 5).astype(np.float32)
    dy = rng.standard_normal((6, n)).astype(np.float32)
    dy[1, -1] = np.nan
    dy[2] = 1e30
    dy[3, 0] = 3e38
    for row, k in ((4, 5), (5, n - 1)):
        x[row, :4] = 200.0  # y = 1/4 there, 0 elsewhere: dot ~ 7.5e37 < 2^126
        dy[row, 1:4] = 0.0
        dy[row, 0], dy[row, k] = 3e38, -3e38  # dy[row, k] - dot overflows float32
    y = fa.softmax(x)
    with fa.backend("c"):
        got = fa.softmax.backward(dy, y)
    d64, y64 = dy.astype(np.float64), y.astype(np.float64)
    dot = np.sum(d64 * y64, axis=-1, keepdims=True)
    want = y64 * (d64 - dot)
    rows = [0, 2, 3, 4, 5]
    assert np.isnan(got[1]).all() and np.isfinite(got[rows]).all()
    scale = y64 * (np.abs(d64) + np.sum(np.abs(d64 * y64), axis=-1, keepdims=True))
    assert_close(got[rows], want[rows], np.float32, scale=scale[rows], context=f"n={n}")
    if fa.backends()["cpu"][0]:
        with fa.backend("cpu"):
            numba = fa.softmax.backward(dy, y)
        assert_close(got[rows], numba[rows].astype(np.float64), np.float32, scale=scale[rows])


def test_every_registry_function_has_a_c_port(c_backend, monkeypatch):
    _generate.check_coverage()
    for spec in registry.SPECS.values():
        for table in (spec.forward, spec.backward_from_input, spec.backward_from_output):
            for fn in table.values():
                for dtype in (np.float32, np.float64):
                    arrays = 1 if table is spec.forward else 2
                    assert c_backend._map_function(fn, arrays, np.dtype(dtype)) is not None
    monkeypatch.setattr(_generate, "template_functions",
                        lambda: {"sigmoid_forward", "sigmoid_backward_from_output"})
    with pytest.raises(RuntimeError, match="no C port of: celu_backward_from_input"):
        _generate.check_coverage()


def test_float16_and_out_go_through_the_c_backend(c_backend):
    x = np.linspace(-8, 8, 1001).astype(np.float16)
    with fa.backend("c"):
        y = fa.silu(x)
        out = np.empty(x.shape, np.float32)
        fa.tanh(x.astype(np.float32), out=out)
    assert y.dtype == np.float16
    from fastact import reference
    assert_close(y, reference.forward("silu", x.astype(np.float64)), np.float16)
    assert_close(out, np.tanh(x.astype(np.float64)), np.float32)


# --- the compiled loops ----------------------------------------------------------------------------

def _functions(asm):
    """{name: body} of the functions in gcc -S output."""
    found, name = {}, None
    for line in asm.splitlines():
        label = re.match(r"^([A-Za-z_][\w.]*):", line)
        if label:
            name = label.group(1)
            found[name] = []
        elif name and line.strip().startswith(".size"):
            name = None
        elif name:
            found[name].append(line)
    return {k: "\n".join(v) for k, v in found.items()}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly")
@pytest.mark.parametrize("dtype,packed", [("float32", "ps"), ("float64", "pd")])
def test_hot_loops_are_vectorized_fma_without_libm_calls(tmp_path, dtype, packed, c_backend):
    info = bindings.info()
    if "-march=native" not in info["flags"]:
        pytest.skip("portable build: no AVX to look for")
    source = tmp_path / "kernels.c"
    source.write_text(_generate.source(dtype))
    subprocess.run([*info["compiler"], *info["flags"], "-S", str(source), "-o",
                    str(tmp_path / "kernels.s")], check=True, timeout=300)
    functions = _functions((tmp_path / "kernels.s").read_text())
    suffix = _generate.SUFFIX[dtype]
    exponential = [n for n, a, _ in _generate.map_functions() if n.split("_")[0] in (
        "sigmoid", "tanh", "elu", "selu", "celu", "gelu", "silu", "mish", "softplus", "logsigmoid")
        and not n.endswith("_from_output")]  # those are polynomials of the saved output
    for name, arrays, _ in _generate.map_functions():
        export = _generate.map_export(name, arrays, dtype)
        body = functions.get(f"{export}_range") or functions[export]  # the range may be inlined
        assert not re.search(r"\bcall", body), f"{name}: {re.findall(r'call.*', body)}"
        vector = re.findall(rf"\bv\w+{packed}\s+[^\n]*%[yz]mm", body)
        assert len(vector) >= (20 if name in exponential else 2), (name, len(vector))
        if name in exponential:
            assert re.search(rf"\bvfn?m(add|sub)\w*{packed}\b", body), f"{name}: no FMA"
    for name in ("softmax", "log_softmax", "log_softmax_backward"):
        body = functions.get(f"{name}_range_{suffix}") or functions[f"fa_{name}_rows_{suffix}"]
        assert not re.search(r"\bcall", body), name


def _innermost_loops(asm):
    """The bodies of the innermost loops of GCC's assembly: from a label to a jump back to it with
    no other label between."""
    found, label_at = [], {}
    lines = asm.splitlines()
    for i, line in enumerate(lines):
        label = re.match(r"^(\.L\d+):", line)
        if label:
            label_at = {label.group(1): i}
        jump = re.match(r"\s+j\w+\s+(\.L\d+)\b", line)
        if jump and jump.group(1) in label_at:
            found.append(lines[label_at[jump.group(1)]:i + 1])
    return found


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly")
@pytest.mark.parametrize("name,arrays", [("relu_forward", 1), ("hardtanh_backward_from_input", 2),
                                         ("elu_backward_from_output", 2)])
def test_memory_bound_loops_load_two_vectors_before_storing(tmp_path, name, arrays, c_backend):
    """The memory-bound map loops compute two 64-byte blocks before they store either (as the
    Numba maps, cpu._compile_interleaved_twice): GCC's one-vector loop alternated each load with a
    store, which 4K aliasing stalls where an input sits 48-128 bytes below out modulo 4096. Some
    innermost loop of the range function loads two vectors of each input before its first store."""
    info = bindings.info()
    if "-march=native" not in info["flags"]:
        pytest.skip("portable build: no AVX to look for")
    source = tmp_path / "kernels.c"
    source.write_text(_generate.source("float32"))
    subprocess.run([*info["compiler"], *info["flags"], "-S", str(source), "-o",
                    str(tmp_path / "kernels.s")], check=True, timeout=300)
    export = _generate.map_export(name, arrays, "float32")
    functions = _functions((tmp_path / "kernels.s").read_text())
    body = functions.get(f"{export}_range") or functions[export]
    store = re.compile(r"\s+vmov\w+\s+%[yz]mm\d+, [^%]*\(")
    load = re.compile(r"\s+v\w+\s+-?\d*\(%\w+(,%\w+(,\d)?)?\), %[yz]mm")
    best = 0
    for loop in _innermost_loops(body):
        first_store = next((i for i, line in enumerate(loop) if store.match(line)), None)
        if first_store is not None:
            best = max(best, sum(1 for line in loop[:first_store] if load.match(line)))
    assert best >= 2 * arrays, f"{name}: at most {best} vector loads before a store in a loop"
