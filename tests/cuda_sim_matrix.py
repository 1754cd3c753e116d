"""The CUDA backend under numba-cuda's simulator: every kernel's indexing and math on small arrays.

Not collected by the main test run (the simulator must be switched on before numba.cuda is first
imported): tests/test_cuda_sim.py runs ``python -m pytest tests/cuda_sim_matrix.py`` in a process
with NUMBA_ENABLE_CUDASIM=1. The simulator's device arrays do not export
``__cuda_array_interface__``; fastact.kernels.cuda.enable_simulator_arrays() adds it (the data
pointer is host memory, the simulator's "device" memory), so they reach the CUDA backend as real
device arrays do.
"""
import os
import sys
import types

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("run by tests/test_cuda_sim.py with NUMBA_ENABLE_CUDASIM=1", allow_module_level=True)

from numba import cuda  # noqa: E402
from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray  # noqa: E402

import fastact as fa  # noqa: E402
from fastact import reference  # noqa: E402
from fastact.kernels import cuda as fcuda  # noqa: E402

from conftest import (CASES, assert_close, case_id, hostile, kinks)  # noqa: E402


def _interface(ary):
    return {"shape": ary.shape, "strides": None if ary.flags.c_contiguous else ary.strides,
            "typestr": ary.dtype.str, "data": (ary.ctypes.data, not ary.flags.writeable),
            "version": 3, "stream": None}


assert fcuda.SIMULATOR
fcuda.enable_simulator_arrays()
# the simulator runs kernels/math.py on NumPy scalars, which warn where compiled code does not
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(autouse=True)
def cuda_backend():
    with fa.backend("cuda"):
        yield


def dev(a):
    a = np.asarray(a)
    return cuda.to_device(a if a.flags.c_contiguous or a.flags.f_contiguous else a.copy())


def host(d):
    return d.copy_to_host() if hasattr(d, "copy_to_host") else np.asarray(d)


def small(x, kink_points):
    """hostile() subsampled: every 23rd value plus all the special values and kink neighbours."""
    tail = 10 + 7 * len(kink_points)  # the specials and the kink steps end the unreversed part
    return np.concatenate([x[::23], x[-513 - tail:-513]])


def inputs(name, params, dtype):
    x = small(hostile(dtype, kinks(name, params)), kinks(name, params))
    dy = np.random.default_rng(1).uniform(-2, 2, x.size).astype(dtype)
    dy[::7] = 1
    return x, dy


# --- every elementwise activation, forward and backward, against the float64 reference ------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_elementwise(case, dtype):
    name, params = case
    act = getattr(fa, name)
    x, dy = inputs(name, params, dtype)
    y = act(dev(x), **params)
    assert isinstance(y, FakeCUDAArray)
    y_host = host(y)
    assert y_host.dtype == dtype and y_host.shape == x.shape
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        ref = reference.forward(name, x64, **params)
    assert_close(y_host, ref, dtype, context=f"{name}{params} forward")
    saved = y if act.saves_for(**params) == "output" else dev(x)
    dx = host(act.backward(dev(dy), saved, **params))
    assert dx.dtype == dtype
    dy64 = dy.astype(np.float64)
    with np.errstate(all="ignore"):
        ref = reference.backward(name, dy64, host(saved).astype(np.float64), **params)
        scale = np.abs(dy64) * reference.condition_scale(name, "backward", x64, **params)
    assert_close(dx, ref, dtype, scale=scale, context=f"{name}{params} backward")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float16(case):
    """float16 in, float16 out, computed in float32: the CPU backend's result exactly."""
    name, params = case
    act = getattr(fa, name)
    x, dy = inputs(name, params, np.float16)
    x, dy = x[::3], dy[::3]
    y = host(act(dev(x), **params))
    assert y.dtype == np.float16
    with fa.backend("cpu"):
        y_cpu = act(x, **params)
        saved = y_cpu if act.saves_for(**params) == "output" else x
        dx_cpu = act.backward(dy, saved, **params)
    np.testing.assert_array_equal(y, y_cpu)
    dx = host(act.backward(dev(dy), dev(saved), **params))
    np.testing.assert_array_equal(dx, dx_cpu)


# --- layouts, out=, errors ------------------------------------------------------------------------

def _grid(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).uniform(-4, 4, shape).astype(dtype)


@pytest.mark.parametrize("view", ["slices", "transposed", "reversed", "broadcast", "fortran", "3d"])
def test_non_contiguous_inputs(view):
    base = _grid((9, 14))
    d = dev(base)
    views = {"slices": (d[::2, 1:], base[::2, 1:]), "transposed": (d.T, base.T),
             "reversed": (d[::-1, ::-3], base[::-1, ::-3]),
             "fortran": (dev(np.asfortranarray(base)), np.asfortranarray(base)),
             "3d": (dev(_grid((4, 5, 6)))[:, ::2, 1:], _grid((4, 5, 6))[:, ::2, 1:])}
    if view == "broadcast":  # a zero stride in an input is fine
        b = np.broadcast_to(base[:1], (5, 14))
        views[view] = (FakeCUDAArray(b), b)
    gpu_x, x = views[view]
    y = host(fa.gelu(gpu_x))
    np.testing.assert_array_equal(y, host(fa.gelu(dev(np.ascontiguousarray(x)))))
    dy = _grid(x.shape, seed=1)
    dx = host(fa.silu.backward(dev(dy), gpu_x))  # a C-contiguous and a strided input
    np.testing.assert_array_equal(dx, host(fa.silu.backward(dev(dy), dev(np.ascontiguousarray(x)))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("one_vector", [False, True], ids=["two-vectors", "one-vector"])
def test_aligned_and_unaligned_contiguous_paths_agree(dtype, one_vector, monkeypatch):
    """16-byte-aligned contiguous arrays of one dtype take the vector kernel (4 float32 or 2
    float64 per access, then a scalar tail); one element further on (unaligned) they take the
    scalar kernel. Both give the CPU's bits, at lengths that end mid-vector, on hostile values;
    the vector kernels with two vectors a thread and with one (ONE_VECTOR)."""
    lanes = 16 // np.dtype(dtype).itemsize
    monkeypatch.setattr(fcuda, "ONE_VECTOR", {lanes: frozenset(
        {"silu_forward", "sigmoid_backward_from_output"} if one_vector else ())})
    fcuda._plans.clear()
    values = small(hostile(dtype, kinks("silu", {})), kinks("silu", {}))
    dy_all = _grid(values.size, dtype, seed=2)
    before = set(fcuda._modules)
    for n in (1, lanes - 1, lanes + 1, 3 * lanes, values.size - lanes - 1):
        for offset in (0, 1, lanes):
            d, dyd = dev(values), dev(dy_all)
            x, gx, gdy = values[offset:offset + n], d[offset:offset + n], dyd[offset:offset + n]
            aligned = offset % lanes == 0
            assert (gx.__cuda_array_interface__["data"][0] % 16 == 0) == aligned
            with fa.backend("cpu"):
                want = fa.silu(x), fa.sigmoid.backward(dy_all[offset:offset + n], x)
            np.testing.assert_array_equal(host(fa.silu(gx)), want[0], err_msg=f"{n} {offset}")
            np.testing.assert_array_equal(host(fa.sigmoid.backward(gdy, gx)), want[1],
                                          err_msg=f"{n} {offset}")
            out = dev(np.full(n, 7.0, dtype))  # into a separate (aligned) out
            fa.silu(gx, out=out)
            np.testing.assert_array_equal(host(out), want[0])
    fcuda._plans.clear()  # (plans keep the kernel they were made with)
    tag = "f32" if dtype == np.float32 else "f64"
    built = set(fcuda._modules) | before
    v = f"_v{lanes}u1" if one_vector else f"_v{lanes}"
    assert f"fastact_silu_fwd_{tag}{v}" in built and f"fastact_silu_fwd_{tag}" in built
    assert f"fastact_sigmoid_bwd_from_output_{tag}{v}" in built


def test_fortran_inputs_give_fortran_output():
    x = np.asfortranarray(_grid((6, 7)))
    y = fa.tanh(dev(x))
    assert y._ary.flags.f_contiguous and not y._ary.flags.c_contiguous


def test_mixed_dtypes_promote_like_the_cpu():
    x16, x32 = _grid(50, np.float16), _grid(50, np.float32, seed=2)
    dx = fa.gelu.backward(dev(x32), dev(x16))
    with fa.backend("cpu"):
        expected = fa.gelu.backward(x32, x16)
    assert host(dx).dtype == np.float32
    np.testing.assert_array_equal(host(dx), expected)
    xi = np.arange(-20, 20, dtype=np.int32)
    np.testing.assert_array_equal(host(fa.relu(dev(xi))), np.maximum(xi, 0).astype(np.float64))


def test_out_contiguous_strided_and_in_place():
    x = _grid((8, 10))
    expected = host(fa.sigmoid(dev(x)))
    out = dev(np.full((8, 10), 7.0, np.float32))
    assert fa.sigmoid(dev(x), out=out) is out
    np.testing.assert_array_equal(host(out), expected)
    big = dev(np.full((8, 20), 7.0, np.float32))
    strided = big[:, ::2]
    assert fa.sigmoid(dev(x), out=strided) is strided
    np.testing.assert_array_equal(host(big)[:, ::2], expected)
    np.testing.assert_array_equal(host(big)[:, 1::2], 7.0)
    d = dev(x)
    fa.sigmoid(d, out=d)
    np.testing.assert_array_equal(host(d), expected)


def test_out_partially_overlapping_the_input():
    x = _grid(101)
    d = dev(x)
    expected = host(fa.elu(dev(x[:-1])))
    fa.elu(d[:-1], out=d[1:])  # every element read before it is overwritten: a scratch array
    np.testing.assert_array_equal(host(d)[1:], expected)


def _assert_untouched(out, value=7.0):
    np.testing.assert_array_equal(host(out), value)


def test_errors_before_anything_is_written():
    x = dev(_grid(10))
    out = dev(np.full(10, 7.0, np.float32))
    with pytest.raises(ValueError, match="shape"):
        fa.relu(x, out=dev(np.full(11, 7.0, np.float32)))
    with pytest.raises(TypeError, match="dtype"):
        fa.relu(x, out=dev(np.full(10, 7.0, np.float64)))
    with pytest.raises(ValueError, match="shapes"):
        fa.relu.backward(dev(_grid(9)), x, out=out)
    _assert_untouched(out)
    readonly = np.full(10, 7.0, np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fa.relu(x, out=FakeCUDAArray(readonly))
    with pytest.raises(ValueError, match="overlapping"):
        fa.relu(x, out=FakeCUDAArray(np.lib.stride_tricks.as_strided(np.zeros(1, np.float32),
                                                                     (10,), (0,))))
    with pytest.raises(TypeError, match="both GPU and host"):
        fa.relu(x, out=np.zeros(10, np.float32))
    with pytest.raises(TypeError, match="NumPy array"):
        fa.relu(np.zeros(10, np.float32))
    with pytest.raises(TypeError, match="unsupported dtype"):
        fa.relu(dev(np.zeros(4, np.complex64)))
    with pytest.raises(ValueError, match="axis"):
        fa.softmax(x, axis=1, out=out)
    with pytest.raises(ValueError, match="multiple of pieces"):
        fa.maxout(dev(_grid((2, 5))), 2)
    with pytest.raises(ValueError, match="channels"):
        fa.prelu(dev(_grid((2, 5))), dev(np.ones(3, np.float32)), out=dev(np.full((2, 5), 7.0, np.float32)))
    _assert_untouched(out)
    with fa.backend("cpu"), pytest.raises(TypeError, match="GPU array"):
        fa.relu(x)


def _spy_launches(monkeypatch):
    """The names of the kernels Backend._launch launches from now on, in order."""
    launched = []
    launch = fcuda.Backend._launch

    def spy(self, kernel, *args, **kwargs):
        launched.append(getattr(kernel, "__name__", None) or kernel.py_func.__name__)
        return launch(self, kernel, *args, **kwargs)
    monkeypatch.setattr(fcuda.Backend, "_launch", spy)
    return launched


def _spy_checks(monkeypatch):
    """The activation names of the calls that take the full path (Backend._arrays) from now on."""
    checked = []
    arrays = fcuda.Backend._arrays
    monkeypatch.setattr(fcuda.Backend, "_arrays",
                        lambda self, *a: checked.append(a[0]) or arrays(self, *a))
    return checked


def test_repeated_calls_repeat_the_plan_with_this_calls_parameters(monkeypatch):
    """A call whose arrays describe themselves as an earlier call's did repeats its plan (no
    checks, no kernel choice) but reads its parameters, allocates a fresh result where out is
    None, and writes where this call says; arrays described otherwise take the full path."""
    x_host = _grid((6, 7))
    x_host[0, :3] = [np.nan, -np.inf, -0.0]
    alphas = (0.5, 2.0, -0.0, 0.0)
    expected = [host(fa.elu(dev(x_host), alpha=alpha)).view(np.int32) for alpha in alphas]
    expected_gelu = host(fa.gelu(dev(x_host)))
    fcuda._plans.clear()
    x = dev(x_host)
    out = dev(np.full((6, 7), 7.0, np.float32))
    checked = _spy_checks(monkeypatch)
    for alpha, want in zip(alphas, expected):  # -0.0 and 0.0 give different bits
        assert fa.elu(x, alpha=alpha, out=out) is out
        np.testing.assert_array_equal(host(out).view(np.int32), want)
    assert checked.count("elu") == 1  # the first call; the others repeated its plan
    first, second = fa.gelu(x), fa.gelu(x)
    assert (first.__cuda_array_interface__["data"][0]
            != second.__cuda_array_interface__["data"][0])
    np.testing.assert_array_equal(host(first), expected_gelu)
    np.testing.assert_array_equal(host(second), expected_gelu)
    assert checked.count("gelu") == 1
    # the same memory described otherwise: its own checks and kernel
    with pytest.raises(ValueError, match="shape"):
        fa.elu(x, out=out.reshape(7, 6))
    readonly = host(out)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fa.elu(x, out=FakeCUDAArray(readonly))
    out_host = host(out)
    fa.elu(x[:, ::2], out=out[:, ::2])
    out_host[:, ::2] = host(fa.elu(dev(x_host[:, ::2])))
    np.testing.assert_array_equal(host(out), out_host)


class _Held:
    """An array type of a library registered with register_array_type (tests below)."""

    def __init__(self, data, device=0):
        self.data, self.device = data, device

    @property
    def __cuda_array_interface__(self):
        return _interface(self.data)

    ndim = property(lambda self: self.data.ndim)
    shape = property(lambda self: self.data.shape)


class _HeldLibrary(fcuda._Library):
    """Allocates _Held arrays; ``offsets`` (elements) shift the allocations that follow, one each:
    a custom allocator handing back memory that is not 16-byte aligned."""
    name = "held"

    def __init__(self):
        self.offsets = []

    def device(self, obj):
        return obj.device

    def empty(self, like, shape, dtype, order):
        skip = self.offsets.pop(0) if self.offsets else 0
        n = int(np.prod(shape))
        buffer = np.full(n + 8, np.nan, dtype)
        start = (-buffer.ctypes.data // np.dtype(dtype).itemsize) % 4 + skip  # 16-byte + skip
        return _Held(buffer[start:start + n].reshape(shape, order=order), like.device)

    def stream(self, like):
        return 0


def test_plans_hold_for_the_same_devices_and_allocations_only(monkeypatch):
    """A plan is the same arrays on the same devices: the same buffers said to be on another
    device are checked again (and refused); an allocation unlike the plan's (a custom allocator's
    memory 4 bytes past 16-byte alignment) takes the full path, with the scalar kernel."""
    library = _HeldLibrary()
    monkeypatch.setattr(fcuda, "_custom", [(lambda o: isinstance(o, _Held), library)])
    fcuda._plans.clear()
    x_host = _grid(64)
    x, y = _Held(x_host.copy(), 0), _Held(np.full(64, 7.0, np.float32), 0)
    want = host(fa.relu(dev(x_host)))
    for _ in range(2):
        fa.relu(x, out=y)
        np.testing.assert_array_equal(y.data, want)
    y.device = 1  # the same memory, said to be on device 1
    with pytest.raises(ValueError, match="different devices"):
        fa.relu(x, out=y)
    launched = _spy_launches(monkeypatch)
    first = fa.relu(x)  # a plan made on an aligned result
    assert first.data.ctypes.data % 16 == 0 and launched[-1].endswith("_v4u1")
    library.offsets = [1]
    second = fa.relu(x)  # the same call, its result 4 bytes off: not the plan's vector kernel
    assert second.data.ctypes.data % 16 == 4 and launched[-1] == "fastact_relu_fwd_f32"
    np.testing.assert_array_equal(first.data, want)
    np.testing.assert_array_equal(second.data, want)


def test_repeated_row_calls_repeat_the_plan(monkeypatch):
    """softmax / log_softmax rows (the block-per-row kernels) repeat a plan as elementwise calls
    do; another axis, or an input that needs a copy, is not that plan."""
    rows_host = _grid((10, 40))
    rows_host[2, 5], rows_host[3, :] = np.nan, -np.inf
    dy_host = _grid((10, 40), seed=3)
    want = {}
    for name in ("softmax", "log_softmax"):
        y = host(getattr(fa, name)(dev(rows_host)))
        want[name] = (y, host(getattr(fa, name).backward(dev(dy_host), dev(y))),
                      host(getattr(fa, name)(dev(rows_host), axis=0)))
    fcuda._plans.clear()
    checked = _spy_checks(monkeypatch)
    x, dy = dev(rows_host), dev(dy_host)
    for name, (y_want, dx_want, axis0_want) in want.items():
        act = getattr(fa, name)
        out, dx = dev(np.full((10, 40), 7.0, np.float32)), dev(np.full((10, 40), 7.0, np.float32))
        for _ in range(3):
            first, second = act(x), act(x)
            np.testing.assert_array_equal(host(first), y_want)
            np.testing.assert_array_equal(host(second), y_want)
            assert act(x, out=out) is out
            np.testing.assert_array_equal(host(out), y_want)
            assert act.backward(dy, out, out=dx) is dx
            np.testing.assert_array_equal(host(dx), dx_want)
            np.testing.assert_array_equal(host(act(x, axis=0)), axis0_want)
        # full path once per kind of call (axis 0 takes the column kernel: no plan, checked each
        # time); every other call repeated a plan
        assert checked.count(name) == 3 + 3, checked


def test_empty_and_zero_dimensional():
    assert host(fa.relu(dev(np.zeros((0, 3), np.float32)))).shape == (0, 3)
    y = fa.tanh(dev(np.float64(0.5)))
    assert host(y).shape == () and host(y) == np.tanh(0.5)
    s = fa.softmax(dev(np.float32(3.0)))
    assert host(s).shape == () and host(s) == 1.0


# --- row-wise -------------------------------------------------------------------------------------

def _rows(shape, dtype, seed=0):
    x = np.random.default_rng(seed).normal(0, 3, shape).astype(dtype)
    flat = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
    if flat.shape[0] >= 5:
        flat[1, ::3] = -np.inf
        flat[2, 1] = np.nan
        flat[3, :] = -np.inf
        flat[4, 2] = np.inf
        flat[0, 1] = flat[0, 0] = flat[0].max() + 1  # a tied maximum
    return x


ROW_SHAPES = {  # which path each takes with the simulator's limits (fastact.kernels.cuda)
    "thread-per-row": ((6, 3), -1),
    "block-per-row": ((7, 40), -1),  # 16-byte kernels (rows of a multiple of 4 / 2)
    "block-per-row-scalar": ((7, 39), -1),
    "two-pass": ((6, 150), -1),
    "strided-axis": ((5, 6, 4), 1),
    "axis-0": ((9, 5), 0),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("path", list(ROW_SHAPES))
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_paths(name, path, dtype):
    """Every path against the reference, rows with -inf, inf, NaN and tied maxima included."""
    shape, axis = ROW_SHAPES[path]
    if path.startswith("block-per-row") and dtype == np.float64:
        shape = (7, 30 if path == "block-per-row" else 31)  # <= 248 bytes: in shared memory
    x = _rows(shape, dtype)
    x64 = x.astype(np.float64)
    act = getattr(fa, name)
    y = host(act(dev(x), axis=axis))
    with np.errstate(all="ignore"):
        assert_close(y, reference.forward(name, x64, axis=axis), dtype,
                     context=f"{name} {path} forward")
    dy = _grid(shape, dtype, seed=3)
    dx = host(act.backward(dev(dy), dev(y), axis=axis))
    dy64 = dy.astype(np.float64)
    with np.errstate(all="ignore"):
        ref = reference.backward(name, dy64, y.astype(np.float64), axis=axis)
        scale = reference.condition_scale(name, "backward", x64, dy64, axis=axis)
    assert_close(dx, ref, dtype, scale=np.where(np.isfinite(scale), scale, 0),
                 context=f"{name} {path} backward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_block_rows_vector_and_scalar_kernels(name, dtype, monkeypatch):
    """Block-per-row rows of a multiple of the vector's lanes in 16-byte-aligned arrays take
    fwd_rowsv / bwd_rowsv (16-byte accesses); one element further on, or a row one longer, the
    scalar fwd_rows / bwd_rows. With the simulator's blocks (8 forward, 4 backward threads) rows
    of 10 or 15 vectors take the forward's pair loop and remainder and the backward's loop, rows
    of 6 vectors the backward's registers (two vectors in some threads, one in others); 10 rows
    for 4 (forward) and 8 (backward) simulated blocks, so blocks loop over rows. All against the
    reference, with -inf, tied maxima, a NaN, an inf and an all -inf row (_rows), and the two
    kernels against each other."""
    lanes = 16 // np.dtype(dtype).itemsize
    n = 40 if dtype == np.float32 else 30  # 160 / 240 bytes: in shared memory (SMEM_ROW_BYTES)
    rows = 10
    launched = _spy_launches(monkeypatch)
    act = getattr(fa, name)
    tag = "f32" if dtype == np.float32 else "f64"
    results = {}
    for length, offset in ((n, 0), (n, 1), (n + 1, 0), (6 * lanes, 0)):
        block = _rows((rows, length), dtype, seed=length)
        block[:, [3, 9]] = block.max(axis=1, keepdims=True)  # tied maxima
        block[:, 5], block[::2, length - 2] = -np.inf, -np.inf
        x, dy = np.zeros(rows * length + 1, dtype), np.zeros(rows * length + 1, dtype)
        x[offset:offset + rows * length] = block.ravel()  # the same rows, aligned or not
        dy[offset:offset + rows * length] = _grid(rows * length, dtype, seed=7)
        gx, gdy = (FakeCUDAArray(a[offset:offset + rows * length].reshape(rows, length))
                   for a in (x, dy))
        assert (gx.__cuda_array_interface__["data"][0] % 16 == 0) == (offset == 0)
        launched.clear()
        y = host(act(gx))
        dx = host(act.backward(gdy, FakeCUDAArray(y)))
        vector = offset == 0 and length % lanes == 0
        kind = "v" if vector else ""
        assert launched == [f"fastact_{name}_fwd_rows{kind}_{tag}",
                            f"fastact_{name}_bwd_rows{kind}_{tag}"], (length, offset, launched)
        x64, dy64 = block.astype(np.float64), host(gdy).astype(np.float64)
        assert_close(y, reference.forward(name, x64), dtype, context=f"{name} {length} {offset}")
        with np.errstate(all="ignore"):
            ref = reference.backward(name, dy64, y.astype(np.float64))
            scale = reference.condition_scale(name, "backward", x64, dy64)
        assert_close(dx, ref, dtype, scale=np.where(np.isfinite(scale), scale, 0),
                     context=f"{name} backward {length} {offset}")
        results[(length, offset)] = y, dx
    (y, dx), (y1, dx1) = results[(n, 0)], results[(n, 1)]  # the same rows and dy, both kernels
    eps = np.finfo(dtype).eps  # they sum in different orders: a rounding or two apart
    np.testing.assert_allclose(y, y1, rtol=4 * eps, atol=0)
    np.testing.assert_allclose(dx, dx1, rtol=0, atol=8 * eps * np.abs(dy).max())  # ~ eps max |dy|


def test_softmax_long_rows_are_accurate():
    """The two-pass path combines chunk partials; against the reference on a wide range."""
    x = np.random.default_rng(5).uniform(-80, 80, (3, 300)).astype(np.float32)
    for name in ("softmax", "log_softmax"):
        y = host(getattr(fa, name)(dev(x)))
        assert_close(y, reference.forward(name, x.astype(np.float64)), np.float32, context=name)


def test_softmax_out_and_layouts():
    x = _rows((6, 40), np.float32, seed=4)
    expected = host(fa.softmax(dev(x)))
    d = dev(x)
    assert fa.softmax(d, out=d) is d  # in place
    np.testing.assert_array_equal(host(d), expected)
    big = dev(np.full((6, 80), 7.0, np.float32))
    fa.softmax(dev(x), out=big[:, ::2])
    np.testing.assert_array_equal(host(big)[:, ::2], expected)
    np.testing.assert_array_equal(host(big)[:, 1::2], 7.0)
    wide = dev(np.repeat(x, 2, axis=1))
    np.testing.assert_array_equal(host(fa.softmax(wide[:, ::2])), expected)
    np.testing.assert_array_equal(host(fa.log_softmax(dev(x.T.copy()), axis=0)),
                                  host(fa.log_softmax(dev(x))).T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("weight_shape", [(3,), (1,), ()])
def test_prelu(weight_shape, dtype):
    shape = (4, 3, 5) if weight_shape == (3,) else (40,)
    x = _grid(shape, dtype)
    x.flat[0] = np.nan
    x.flat[7] = 0.0
    weight = np.random.default_rng(2).uniform(-0.5, 0.5, weight_shape).astype(dtype)
    y = host(fa.prelu(dev(x), dev(weight)))
    assert_close(y, reference.prelu_forward(x, weight), dtype, context="prelu forward")
    dy = _grid(shape, dtype, seed=1)
    dx, dw = fa.prelu.backward(dev(dy), dev(x), dev(weight))
    ref_dx, ref_dw = reference.prelu_backward_from_input(dy, x, weight)
    assert_close(host(dx), ref_dx, dtype, context="prelu dx")
    assert host(dw).shape == weight.shape and host(dw).dtype == dtype
    xf = np.where(np.isnan(x), 0, x)
    _, scale = reference.condition_scale("prelu", "backward", xf, dy, weight=weight)
    ref_dw = reference.prelu_backward_from_input(dy, xf, weight)[1]
    _, dw_clean = fa.prelu.backward(dev(dy), dev(xf), dev(weight))
    assert_close(host(dw_clean), ref_dw, dtype, scale=scale, context="prelu dweight")
    with fa.backend("cpu"):
        np.testing.assert_array_equal(host(dx), fa.prelu.backward(dy, x, weight)[0])


@pytest.mark.parametrize("shape", [(4, 3, 5), (2, 3, 40)])
def test_prelu_weight_inside_out(shape, monkeypatch):
    """Weights that are a view of out are read as they were, forward and backward: the kernels
    write a scratch target (the simulator's threads do not race, so the target is checked
    too), and the results are the CPU backend's."""
    from fastact.kernels import cuda as cuda_backend
    targets = []
    original = cuda_backend.Backend._target

    def recording(self, *args):
        result, target = original(self, *args)
        targets.append(target is result)
        return result, target
    monkeypatch.setattr(cuda_backend.Backend, "_target", recording)
    x, dy = _grid(shape), _grid(shape, seed=1)
    w = np.array([0.25, -0.5, 0.75], np.float32)
    with fa.backend("cpu"):
        want, (want_dx, want_dw) = fa.prelu(x, w), fa.prelu.backward(dy, x, w)
    start = np.zeros(shape, np.float32)
    start.reshape(-1)[:3] = w
    out = dev(start)
    np.testing.assert_array_equal(host(fa.prelu(dev(x), out.reshape(-1)[:3], out=out)), want)
    out = dev(start)
    dx, dw = fa.prelu.backward(dev(dy), dev(x), out.reshape(-1)[:3], out=out)
    np.testing.assert_array_equal(host(dx), want_dx)
    np.testing.assert_allclose(host(dw), want_dw, rtol=1e-6)
    assert targets == [False, False]  # both calls wrote a scratch target, not out


def test_prelu_non_contiguous():
    x = _grid((4, 3, 10))
    w = np.array([0.1, -0.2, 0.3], np.float32)
    y = host(fa.prelu(dev(x)[:, :, ::2], dev(w)))
    np.testing.assert_array_equal(y, host(fa.prelu(dev(x[:, :, ::2].copy()), dev(w))))


@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_maxout(axis, dtype):
    x = np.round(_grid((4, 6, 6), dtype), 0)  # rounding makes ties
    x[0, 0, 1] = np.nan
    y = host(fa.maxout(dev(x), 3, axis=axis))
    np.testing.assert_array_equal(y, reference.maxout_forward(x, 3, axis=axis).astype(dtype))
    dy = _grid(y.shape, dtype, seed=1)
    dx = host(fa.maxout.backward(dev(dy), dev(x), 3, axis=axis))
    np.testing.assert_array_equal(dx, reference.maxout_backward_from_input(dy, x, 3, axis=axis))
    strided = host(fa.maxout(dev(np.repeat(x, 2, axis=0))[::2], 3, axis=axis))
    np.testing.assert_array_equal(strided, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_rrelu_training(dtype):
    x = _grid(300, dtype)
    x[:3] = [np.nan, 0.0, -np.inf]
    y, noise = fa.rrelu(dev(x), training=True, generator=7, return_noise=True)
    y, noise = host(y), host(noise)
    assert noise.dtype == dtype and y.dtype == dtype
    below = x <= 0
    assert np.all((noise[below] >= np.float32(1 / 8)) & (noise[below] <= np.float32(1 / 3)))
    assert np.all(noise[~below] == 1)
    assert np.unique(noise[below]).size > below.sum() // 2  # not one slope for all
    np.testing.assert_array_equal(y, reference.rrelu_forward(x, training=True, noise=noise).astype(dtype))
    y2, noise2 = fa.rrelu(dev(x), training=True, generator=7, return_noise=True)
    np.testing.assert_array_equal(host(noise2), noise)
    _, noise3 = fa.rrelu(dev(x), training=True, generator=8, return_noise=True)
    assert not np.array_equal(host(noise3), noise)
    dy = _grid(300, dtype, seed=1)
    dx = host(fa.rrelu.backward(dev(dy), dev(x), training=True, noise=dev(noise)))
    assert_close(dx, reference.rrelu_backward_from_input(dy, x, training=True, noise=noise), dtype)
    assert isinstance(fa.rrelu(dev(x), training=True), FakeCUDAArray)
    assert_close(host(fa.rrelu(dev(x))), reference.rrelu_forward(x), dtype)  # eval: elementwise


# --- the caller's array type and stream -----------------------------------------------------------

class _FakeStream:
    def __init__(self, ptr):
        self.ptr = ptr
        self.cuda_stream = ptr


class _Device:
    def __init__(self, index):
        self.id = self.index = index

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fake_library(root, stream_ptr):
    """A module named ``root`` ("cupy" or "torch") with just what the backend uses, whose arrays
    live in host memory (the simulator's device memory)."""
    module = types.ModuleType(root)

    class Array:
        def __init__(self, data):
            self.data = data
            self.device = _Device(0)

        @property
        def __cuda_array_interface__(self):
            return {**_interface(self.data), "stream": stream_ptr}

        def detach(self):
            return self

        ndim = property(lambda self: self.data.ndim)
        shape = property(lambda self: self.data.shape)

    Array.__module__ = root
    module.Array = Array
    module.cuda = types.SimpleNamespace(Device=_Device,
                                        get_current_stream=lambda: _FakeStream(stream_ptr),
                                        current_stream=lambda device=None: _FakeStream(stream_ptr))
    module.empty = lambda shape, dtype, order="C": Array(np.full(shape, np.nan, dtype, order=order))
    module.float16, module.float32, module.float64 = np.float16, np.float32, np.float64

    def empty_strided(shape, strides, dtype, device):
        itemsize = np.dtype(dtype).itemsize
        buffer = np.full(max(1, int(np.prod(shape))), np.nan, dtype)
        return Array(np.lib.stride_tricks.as_strided(buffer, shape, [s * itemsize for s in strides]))
    module.empty_strided = empty_strided
    return module


@pytest.mark.parametrize("root", ["cupy", "torch"])
def test_callers_array_type_and_stream(root, monkeypatch):
    library = _fake_library(root, stream_ptr=0xC0FFEE)
    monkeypatch.setitem(sys.modules, root, library)
    monkeypatch.setattr(fcuda, "_libraries", {})
    x = _grid((5, 6))
    for result in (fa.gelu(library.Array(x.copy())), fa.softmax(library.Array(x.copy())),
                   fa.prelu.backward(library.Array(x.copy()), library.Array(x.copy()),
                                     library.Array(np.ones(6, np.float32) * 0.1))[1]):
        assert type(result) is library.Array
    backend = fa._backends.get("cuda")
    assert backend.last_stream == 0xC0FFEE
    np.testing.assert_array_equal(fa.gelu(library.Array(x.copy())).data, host(fa.gelu(dev(x))))
    fortran = fa.tanh(library.Array(np.asfortranarray(x)))
    assert fortran.data.flags.f_contiguous
    np.testing.assert_array_equal(fortran.data, host(fa.tanh(dev(x))))


def test_numba_arrays_use_the_default_stream():
    fa.relu(dev(_grid(5)))
    assert fa._backends.get("cuda").last_stream == 0


# --- the GPU check script, in the simulator --------------------------------------------------------

def test_gpu_check_simulated(capsys):
    from fastact.bench import gpu_check
    assert gpu_check.main(["--simulate", "--only", "gelu,relu,softmax,prelu,maxout,rrelu",
                           "--size", "200"]) == 0
    out = capsys.readouterr().out
    assert "gelu" in out and "FAIL" not in out
