"""The primitives of kernels/math.py against mpmath, at the error bound each one states, compiled
and in Python mode (what numba-cuda's simulator runs), and the compiled loops' machine code."""
import platform
import re

import mpmath as mp
import numpy as np
import pytest

from fastact.kernels import math as m

numba = pytest.importorskip("numba")

mp.mp.dps = 40
PRIMITIVES = {  # name: (mpmath function, domain of x)
    "exp": (mp.exp, None),
    "expm1": (mp.expm1, None),
    "expm1_bounded": (mp.expm1, "tanh"),  # 2|x| of tanh: [0, 18] / [0, 38.2]
    "expm1_nonpositive": (mp.expm1, "nonpositive"),
    "log1p": (mp.log1p, "nonnegative"),
    "log1p_unit": (mp.log1p, "unit"),
    "tanh": (mp.tanh, None),
    "sigmoid": (lambda x: 1 / (1 + mp.exp(-x)), None),
    "softplus": (lambda x: mp.log1p(mp.exp(x)), None),
}


def _expm1_nonpositive(x):
    return m.expm1_nonpositive_times(x, m.like(x, 1.0))


_expm1_nonpositive.__doc__ = m.expm1_nonpositive_times.__doc__  # its bound, for c = 1


def primitive(name):
    return _expm1_nonpositive if name == "expm1_nonpositive" else getattr(m, name)


def documented_bound(fn, dtype):
    """The 'Error: A ulp / B ulp' of the docstring: A for float32, B for float64."""
    found = re.search(r"Error: ([\d.]+) ulp[^/]*/ ([\d.]+) ulp", fn.__doc__)
    assert found, f"{fn.__name__} states no error bound"
    return float(found.group(1 if dtype == np.float32 else 2))


def compiled(fn):
    from fastact.kernels import _jit  # noqa: F401
    jitted = numba.njit(fn)

    @numba.njit(error_model="numpy")
    def loop(x, out):
        for i in range(x.size):
            out[i] = jitted(x[i])
    return loop


def points(dtype, domain, count=4000):
    lim = 110.0 if dtype == np.float32 else 760.0
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-lim, lim, count // 2), rng.standard_normal(count // 4) * 3,
                        np.geomspace(1e-30, 1, count // 8), -np.geomspace(1e-30, 1, count // 8),
                        [0.0, 1e-8, -1e-8, 0.5, -0.5, 20.0, -20.0]])
    if domain == "nonnegative":
        x = np.abs(x) * np.where(np.arange(x.size) % 2, 1, 1e6)
    if domain == "unit":
        x = np.concatenate([np.linspace(0, 1, count), np.geomspace(1e-30, 1, count // 4)])
    if domain == "tanh":
        top = 18.0 if dtype == np.float32 else 38.2
        x = np.concatenate([np.linspace(0, top, count), np.geomspace(1e-30, top, count // 4),
                            [0.0, top, 17.3, 16.6, 36.7, 37.4]])
        x = x[x <= top]
    if domain == "nonpositive":
        x = -np.abs(x)
    return x.astype(dtype)


def ulps(got, exact, dtype):
    fi = np.finfo(dtype)
    out = []
    for g, e in zip(got, exact):
        if mp.isinf(e) or abs(e) > fi.max:
            out.append(0.0 if np.isinf(g) and np.sign(g) == mp.sign(e) else np.inf)
            continue
        spacing = max(float(np.spacing(dtype(abs(float(e))))), float(fi.smallest_subnormal))
        out.append(float(abs(mp.mpf(float(g)) - e)) / spacing)
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_primitive_within_its_documented_bound(name, dtype):
    fn = primitive(name)
    exact_fn, domain = PRIMITIVES[name]
    x = points(dtype, domain)
    got = np.empty_like(x)
    compiled(fn)(x, got)
    exact = [exact_fn(mp.mpf(float(v))) for v in x]
    err = ulps(got, exact, dtype)
    worst = int(np.argmax(err))
    assert err[worst] <= documented_bound(fn, dtype), (
        f"{name}({x[worst]!r}) = {got[worst]!r}, exact {mp.nstr(exact[worst], 17)}: "
        f"{err[worst]:.2f} ulp")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", PRIMITIVES)
def test_special_values(name, dtype):
    fn = primitive(name)
    x = np.array([np.nan, np.inf, -np.inf, 0.0] * 20, dtype)  # long enough to be vectorized
    if PRIMITIVES[name][1] == "nonnegative":
        x[2::4] = 0.0
    if PRIMITIVES[name][1] == "unit":
        x[1::4], x[2::4] = 1.0, 0.0
    if PRIMITIVES[name][1] == "tanh":
        x[1::4], x[2::4] = 18.0, 0.0
    if PRIMITIVES[name][1] == "nonpositive":
        x[1::4] = -0.0
    got = np.empty_like(x)
    compiled(fn)(x, got)
    with np.errstate(all="ignore"):
        expected = {"exp": np.exp, "expm1": np.expm1, "log1p": np.log1p, "log1p_unit": np.log1p,
                    "expm1_bounded": np.expm1, "expm1_nonpositive": np.expm1,
                    "tanh": np.tanh,
                    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
                    "softplus": lambda v: np.logaddexp(0, v)}[name](x)
    np.testing.assert_array_equal(got, expected)


def assert_exp_parts(fn, args, got, dtype):
    """got (the compiled (1 + q) 2**k of fn(u, w[, wl])) against Python mode on every 50th input
    (the simulator's: the same bits) and against mpmath's exp(u (w [+ wl])) at fn's documented
    bound."""
    python = []
    for row in zip(*(a[::50] for a in args)):
        q, ks = fn(*row)
        python.append(m.scale_by_pow2_nonpositive(q + m.like(q, 1.0), ks))
    np.testing.assert_array_equal(np.array(python, dtype), got[::50])
    exact = [mp.exp(mp.mpf(float(row[0])) * sum(mp.mpf(float(v)) for v in row[1:]))
             for row in zip(*args)]
    err = ulps(got, exact, dtype)
    worst = int(np.argmax(err))
    assert err[worst] <= documented_bound(fn, dtype), (
        f"{fn.__name__}{tuple(a[worst] for a in args)!r}: {err[worst]:.2f} ulp")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_of_a_product_with_a_double_word(dtype):
    """exp_parts_q_of_product(u, wh, wl): exp(u (wh + wl)) = (1 + q) 2**k against mpmath over its
    whole range (down to -131 / -1124), including products whose k ln2 cancels most of u wh."""
    from fastact import registry

    @numba.njit(error_model="numpy")
    def loop(u, wh, wl, out):
        for i in range(u.size):
            q, ks = m.exp_parts_q_of_product(u[i], wh[i], wl[i])
            out[i] = m.scale_by_pow2_nonpositive(q + m.like(q, 1.0), ks)

    from fastact.kernels import _jit  # noqa: F401
    rng = np.random.default_rng(3)
    cap = 11.5 if dtype == np.float32 else 22.0
    x = np.concatenate([-rng.uniform(0, cap, 3000), -np.geomspace(1e-6, cap, 500)]).astype(dtype)
    pairs = [registry.gelu_tanh_argument(v)[:2] for v in x]  # gelu-tanh's w = k1 + k3 x^2
    wh = np.array([p[0] for p in pairs], dtype)
    wl = np.array([p[1] for p in pairs], dtype)
    # and arbitrary double-words: u w in [-131, 0] / [-1124, 0], w in [1, 8)
    lowest = 131.0 if dtype == np.float32 else 1124.0
    w2 = rng.uniform(1.0, 8.0, 2000).astype(dtype)
    w2l = (w2 * rng.uniform(-0.5, 0.5, 2000) * np.finfo(dtype).eps).astype(dtype)
    u2 = (-rng.uniform(0, 1, 2000) * lowest / (w2.astype(np.float64) + 1e-6)).astype(dtype)
    u, wh, wl = np.concatenate([x, u2]), np.concatenate([wh, w2]), np.concatenate([wl, w2l])
    got = np.empty_like(u)
    loop(u, wh, wl, got)
    assert_exp_parts(m.exp_parts_q_of_product, (u, wh, wl), got, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_of_an_exact_product(dtype):
    """exp_parts_q_of_exact_product(u, w): exp(u w) against mpmath, for gelu's exp(-x^2/2) =
    exp(na (-na/2)) with na down to -16 / -38.75 and for products over the rest of its range
    (down to -131 / -1124)."""
    from fastact.kernels import _jit  # noqa: F401

    @numba.njit(error_model="numpy")
    def loop(u, w, out):
        for i in range(u.size):
            q, ks = m.exp_parts_q_of_exact_product(u[i], w[i])
            out[i] = m.scale_by_pow2_nonpositive(q + m.like(q, 1.0), ks)

    rng = np.random.default_rng(5)
    cap, lowest = (16.0, 131.0) if dtype == np.float32 else (38.75, 1124.0)
    na = np.concatenate([-rng.uniform(0, cap, 3000), -np.geomspace(1e-6, cap, 500)]).astype(dtype)
    w2 = rng.uniform(0.5, 8.0, 2000).astype(dtype)
    u2 = (-rng.uniform(0, 1, 2000) * lowest / w2.astype(np.float64)).astype(dtype)
    u = np.concatenate([na, u2])
    w = np.concatenate([(dtype(-0.5) * na).astype(dtype), w2])
    got = np.empty_like(u)
    loop(u, w, got)
    assert_exp_parts(m.exp_parts_q_of_exact_product, (u, w), got, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_python_mode_is_bitwise_the_compiled_code(dtype):
    """The simulator runs the same Python functions; they must compute the same bits, signed
    zeros included (compared as integers)."""
    from fastact import registry
    x = np.concatenate([points(dtype, None, 400), np.array([-0.0, -1e-40, -200.0], dtype)])
    for fn in (registry.gelu_forward, registry.gelu_tanh_forward,
               registry.gelu_tanh_backward_from_input, registry.mish_forward,
               registry.silu_backward_from_input, registry.softplus_forward):
        args = () if fn.__name__.startswith(("gelu", "mish", "silu")) else (dtype(1.0), dtype(20.0))
        if "backward" in fn.__name__:
            python = np.array([fn(dtype(1.0), v, *args) for v in x], dtype)
        else:
            python = np.array([fn(v, *args) for v in x], dtype)
        from fastact.kernels import cpu
        n = 2 if "backward" in fn.__name__ else 1
        kernel = cpu.map_kernel(fn, n, dtype=dtype)
        out = np.empty_like(x)
        params = tuple(dtype(a) for a in args)
        cpu.call_map(kernel, [np.ones_like(x), x] if n == 2 else [x], out, params)
        bits = np.int32 if dtype == np.float32 else np.int64
        np.testing.assert_array_equal(python.view(bits), out.view(bits), err_msg=fn.__name__)


def elementwise_scalar_functions():
    from fastact import registry
    found = {}
    for spec in registry.SPECS.values():
        for table in (spec.forward, spec.backward_from_input, spec.backward_from_output):
            for fn in table.values():
                found[fn.__name__] = fn
    return sorted(found.values(), key=lambda f: f.__name__)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn", elementwise_scalar_functions(), ids=lambda f: f.__name__)
def test_hot_loop_is_vectorized_without_libm_calls(fn, dtype):
    """The loop body must be packed SIMD (ymm/zmm) with no call to libm (expf, tanh, ...) and no
    call at all (a call that can raise, e.g. from error_model="python", blocks vectorization)."""
    import inspect
    n_arrays = 2 if "backward" in fn.__name__ else 1
    n_params = len(inspect.signature(fn).parameters) - n_arrays
    from fastact.kernels import cpu
    loop = _uncached_map_kernel(fn, n_arrays, dtype=dtype)
    x = np.ones(64, dtype)
    cpu.call_map(loop, [x] * n_arrays, np.empty_like(x), tuple(dtype(0.5) for _ in range(n_params)))
    asm = _assert_packed_without_libm(loop, fn.__name__, dtype)
    llvm = "\n".join(loop.inspect_llvm().values())
    left = re.findall(r"call [^\n]*@(_ZN7fastact8registry\w+|_ZN7fastact7kernels4math\w+)", llvm)
    assert not left, f"{fn.__name__}: calls to scalar functions are left: {left[:3]}"
    if _host_has_avx512():  # 512-bit vectors exactly where arithmetic binds (registry's choice)
        from fastact import registry
        from fastact.kernels import math as m  # (memory-bound: map_N_cached's width)
        wide = fn.__name__ in registry.arithmetic_bound_scalar_names() or (
            m.WIDE_CACHED_MAPS and n_arrays == 2)
        # packed zmm arithmetic only, in either precision (float32 kernels that compute in
        # float64 registers, e.g. softsign's backward, have their zmm operations in pd)
        zmm = len(re.findall(r"\bv(?!cvt|mov)\w+p[sd]\s+%zmm", asm))
        assert (zmm > 0) == wide, f"{fn.__name__}: {zmm} packed zmm instructions, wide={wide}"


def _innermost_loops(asm):
    """The bodies of the innermost loops of an assembly listing: from a label to a jump back to it
    with no other label between."""
    lines = asm.splitlines()
    found, label_at = [], {}
    for i, line in enumerate(lines):
        label = re.match(r"^(\.LBB\w+):", line)
        if label:
            label_at = {label.group(1): i}  # a new label: loops spanning it are not innermost
        jump = re.match(r"\s+j\w+\s+(\.LBB\w+)\b", line)
        if jump and jump.group(1) in label_at:
            found.append(lines[label_at[jump.group(1)]:i + 1])
    return found


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly")
@pytest.mark.parametrize("name", ["relu_forward", "hardtanh_backward_from_input",
                                  "elu_backward_from_output"])
def test_memory_bound_loops_load_two_vectors_before_storing(name):
    """The memory-bound map loops (cpu._compile_interleaved_twice) load two vectors of each input
    before they store: with one vector an iteration each load followed a store, and an input 48-128
    bytes below out modulo 4096 then waited on that store (4K aliasing: 25-40% at 2^20). Every
    innermost loop with packed arithmetic and packed stores has two loads before its first store."""
    from fastact import registry
    from fastact.kernels import cpu
    fn = getattr(registry, name)
    n_arrays = 2 if "backward" in name else 1
    kernel = _uncached_map_kernel(fn, n_arrays)
    cpu.task_address(kernel, interleave_twice=True)
    asm = "\n".join(kernel.inspect_asm().values())
    if not re.search(r"%[yz]mm", asm):
        pytest.skip("no 256-bit vectors on this host")
    store = re.compile(r"\s+vmov\w+\s+%[yz]mm\d+, [^%]*\(")
    load = re.compile(r"\s+v\w+\s+-?\d*\(%\w+(,%\w+(,\d)?)?\), %[yz]mm")
    arithmetic = re.compile(r"\s+v(?!mov)\w+ps\s+.*%[yz]mm")
    checked = 0
    for body in _innermost_loops(asm):
        first_store = next((i for i, line in enumerate(body) if store.match(line)), None)
        if first_store is None or not any(arithmetic.match(line) for line in body):
            continue
        loads = sum(1 for line in body[:first_store] if load.match(line))
        assert loads >= 2 * n_arrays, f"{name}: {loads} loads before the first store:\n" + "\n".join(
            body)
        checked += 1
    assert checked, f"{name}: no packed loop found"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sigmoid_forward", "relu_forward", "gelu_forward"])
def test_in_place_loops_have_no_overlap_check(name, dtype):
    """A map's loop given out and its input as two arrays is vectorized behind a run-time check
    that they do not overlap, which fails in place (the scalar loop then ran: sigmoid 8-11x
    slower, gelu 11-15x); the in-place form reads and writes one array and has no such check. Both
    forms compute the same bits in place, on a partial last vector."""
    from fastact import registry
    from fastact.kernels import cpu
    fn = getattr(registry, name)
    x = np.linspace(-30, 30, 1001).astype(dtype)
    bits = np.int32 if dtype == np.float32 else np.int64
    expected = np.array([fn(v) for v in x], dtype).view(bits)
    checks = {}
    for alias in (-1, 0):
        kernel = _uncached_map_kernel(fn, 1, dtype=dtype, alias=alias)
        data = x.copy()
        cpu.call_map(kernel, [data], data, ())
        np.testing.assert_array_equal(data.view(bits), expected)
        llvm = "\n".join(kernel.inspect_llvm().values())
        checks[alias] = len(re.findall(r"%(?:diff\.check|found\.conflict|bound0)", llvm))
    assert checks[-1] > 0 and checks[0] == 0, checks


@pytest.mark.parametrize("prefetch", [False, True])
def test_in_place_loops_compute_the_general_bits(prefetch, monkeypatch):
    """The in-place forms (loops.in_place_task_source), in 512-element blocks with the inputs'
    prefetch where math.SOFTWARE_PREFETCH (as on Intel CPUs) or flat, give the general loop's
    bits in place, forward and backward into either input, on hostile values over a partial
    last block."""
    from fastact import registry
    from fastact.kernels import cpu
    from conftest import hostile
    cpu.map_caller(1, 0)  # the pool module loaded first: its cache directory is the real one
    monkeypatch.setattr(cpu.loops.m, "SOFTWARE_PREFETCH", prefetch)  # read when compiled
    x = np.resize(hostile(np.float32), 5000 + 77)
    dy = np.resize(np.linspace(-2, 2, 999, dtype=np.float32), x.size)
    for fn, inputs in ((registry.gelu_forward, [x]), (registry.relu_forward, [x]),
                       (registry.silu_backward_from_input, [dy, x]),
                       (registry.tanh_backward_from_output, [dy, np.tanh(x)])):
        general = np.empty_like(x)
        cpu.call_map(_uncached_map_kernel(fn, len(inputs)), inputs, general, ())
        for alias in range(len(inputs)):
            kernel = _uncached_map_kernel(fn, len(inputs), alias=alias)
            source = cpu.map_source(fn, len(inputs), alias=alias)
            wide = fn.__name__ in registry.arithmetic_bound_scalar_names()
            assert ("m.prefetch(" in source) == (prefetch and wide), fn.__name__
            arrays = [a.copy() for a in inputs]
            cpu.call_map(kernel, arrays, arrays[alias], ())
            np.testing.assert_array_equal(arrays[alias].view(np.int32), general.view(np.int32),
                                          err_msg=f"{fn.__name__} into input {alias}")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sigmoid_forward", "mish_forward", "softplus_forward"])
def test_streamed_forward_loops_are_vectorized_with_non_temporal_stores(name, dtype):
    """map_1_streamed (the forwards' loop for large outputs): packed arithmetic, no libm call,
    and the non-temporal stores it exists for; only the forwards of registry's choice take it."""
    import inspect
    from fastact import registry
    from fastact.kernels import cpu
    fn = getattr(registry, name)
    loop = _uncached_map_kernel(fn, 1, streamed=True, dtype=dtype)
    x = np.linspace(-30, 30, 3000).astype(dtype)  # a partial last block
    params = tuple(dtype(v) for v in (1.0, 20.0)[:len(inspect.signature(fn).parameters) - 1])
    expected = np.array([fn(v, *params) for v in x], dtype)
    bits = np.int32 if dtype == np.float32 else np.int64
    storage = np.empty(x.size + 32, dtype)
    base = (-storage.ctypes.data % 64) // x.itemsize  # the element on a 64-byte boundary
    for shift in (0, 1):  # an aligned output and one an element off (a head before the lines)
        out = storage[base + shift:base + shift + x.size]
        out[:] = np.nan
        for lo, hi in ((0, 1203), (1203, x.size)):  # two chunks, the second starting mid-line
            cpu.call_map(loop, [x], out, params, lo, hi)
        np.testing.assert_array_equal(out.view(bits), expected.view(bits))
    asm = _assert_packed_without_libm(loop, name, dtype)
    suffix = "ps" if dtype == np.float32 else "pd"
    if _host_has_avx512():  # the 64-element parts on 512-bit vectors, as the other forwards
        assert re.findall(r"\bv(?!cvt|mov)\w+%s\s+%%zmm" % suffix, asm), "no zmm arithmetic"
    assert re.search(r"\bvmovnt", asm), "no non-temporal store"
    big = np.empty(cpu.loops.m.STREAM_BYTES // x.itemsize, dtype)
    assert cpu.streams_forward(fn, 1, big) and not cpu.streams_forward(fn, 1, big[:-1])
    assert not cpu.streams_forward(registry.gelu_forward, 1, big)
    assert not cpu.streams_forward(registry.relu_forward, 1, big)


def _uncached_map_kernel(fn, n_arrays, streamed=False, numba_codegen=False, dtype=np.float32,
                         alias=-1):
    """The generated kernel itself (a native task: cpu.call_map runs it), compiled without the
    disk cache (cached code has no assembly to inspect); numba_codegen: with Numba's code
    generator (kernels/_smallcode.py); alias: the in-place form (cpu.map_kernel)."""
    from fastact.kernels import cpu
    source = cpu.map_source(fn, n_arrays, streamed, dtype, alias).replace("cache=True",
                                                                          "cache=False")
    if numba_codegen:
        source = source.replace("from fastact.kernels._smallcode import njit",
                                "from numba import njit")
    namespace = {}
    exec(source, namespace)
    return namespace["kernel"]


def _assert_packed_without_libm(loop, name, dtype):
    """The compiled loop's assembly, after checking it has packed (ymm/zmm) arithmetic of dtype
    and no call to libm."""
    asm = "\n".join(loop.inspect_asm().values())
    suffix = "ps" if dtype == np.float32 else "pd"
    packed = re.findall(r"\bv\w+%s\s+%%[yz]mm" % suffix, asm)
    assert len(packed) >= 4, f"{name}: {len(packed)} packed {suffix} instructions"
    assert not re.search(r"call\w*\s+\S*(exp|log|tanh|erf)", asm), f"{name} calls libm"
    return asm


def _host_has_avx512():
    import llvmlite.binding as llvm
    return "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")


def test_sixth_is_the_correctly_rounded_quotient():
    """m.sixth(t) == t / 6 (the division rounds correctly: an independent reference) for every
    float32 t in [2^-100, 6], 10^8 random float64 t over [2^-100, 6] and the ends; NaN stays NaN."""
    from fastact.kernels import _jit  # noqa: F401

    @numba.njit(parallel=True, error_model="numpy")
    def differ32(t):
        bad = 0
        for i in numba.prange(t.size):
            if m.sixth(t[i]) != t[i] / np.float32(6.0):
                bad += 1
        return bad

    @numba.njit(parallel=True, error_model="numpy")
    def differ64(t):
        bad = 0
        for i in numba.prange(t.size):
            if m.sixth(t[i]) != t[i] / 6.0:
                bad += 1
        return bad

    lo, hi = (int(np.float32(v).view(np.uint32)) for v in (2.0 ** -100, 6.0))
    assert sum(differ32(np.arange(a, min(a + (1 << 26), hi + 1), dtype=np.uint32).view(np.float32))
               for a in range(lo, hi + 1, 1 << 26)) == 0
    rng = np.random.default_rng(11)
    for _ in range(4):
        t = np.ldexp(rng.uniform(1.0, 2.0, 25_000_000), rng.integers(-100, 3, 25_000_000))
        assert differ64(np.minimum(t, 6.0)) == 0
    for dtype in (np.float32, np.float64):
        assert (differ32 if dtype == np.float32 else differ64)(
            np.array([0.0, 2.0 ** -100, 6.0], dtype)) == 0
        assert np.isnan(numba.njit(lambda t: m.sixth(t))(dtype(np.nan)))
        assert numba.njit(lambda t: m.sixth(t))(dtype(6.0)) == 1.0


def test_float64_softplus_and_log1p_unit_on_dense_samples():
    """float64 softplus and log1p_unit within their documented bounds on 400k random points where
    their errors peak (softplus near |x| < 1, log1p_unit near its upper end): the 1.5 ulp of
    log1p_unit and the exponential's error add up there (a single polynomial on [0, 1] gave
    softplus 2.01 ulp at x = 0.02687, which the 4000-point test missed). The 2000 worst points by
    NumPy's float64 results are checked against mpmath."""
    rng = np.random.default_rng(17)
    cases = {"softplus": (m.softplus, rng.uniform(-1.0, 1.0, 200_000),
                          lambda v: mp.log1p(mp.exp(v)), lambda a: np.logaddexp(0, a)),
             "log1p_unit": (m.log1p_unit, rng.uniform(0.4, 1.0, 200_000), mp.log1p, np.log1p)}
    for name, (fn, x, exact_of, numpy_of) in cases.items():
        got = np.empty_like(x)
        compiled(fn)(x, got)
        near = np.abs(got - numpy_of(x)) / np.spacing(np.abs(numpy_of(x)))
        worst = np.argsort(near)[-2000:]
        err = ulps(got[worst], [exact_of(mp.mpf(float(v))) for v in x[worst]], np.float64)
        assert max(err) <= documented_bound(fn, np.float64), (name, max(err))
