"""What a NumPy user expects of fa.NAME(x, out=...): dtypes, shapes, layouts, in place, and errors
raised before anything is written."""
import inspect
import re

import numpy as np
import pytest

import fastact as fa
from fastact import reference

from conftest import CASES, case_id, forward_and_saved, hostile, kinks

LAYOUTS = {
    "c": lambda a: a.reshape(6, 7, 11),
    "fortran": lambda a: np.asfortranarray(a.reshape(6, 7, 11)),
    "strided": lambda a: np.repeat(a, 3)[::3],
    "reversed": lambda a: a[::-1],
    "transposed": lambda a: a.reshape(6, 7, 11).transpose(2, 0, 1),
    "column": lambda a: a.reshape(42, 11)[:, 3],
}


def sample(dtype=np.float32):
    return np.random.default_rng(5).uniform(-6, 6, 462).astype(dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_layouts_give_the_contiguous_result(case, layout, cpu_backend):
    name, params = case
    act = getattr(fa, name)
    base = sample()
    x = LAYOUTS[layout](base)
    y = act(x, **params)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_array_equal(y, act(np.ascontiguousarray(x), **params))
    dy = LAYOUTS[layout](np.linspace(-1, 1, base.size, dtype=np.float32))
    _, saved = forward_and_saved(name, params, x)
    np.testing.assert_array_equal(act.backward(dy, saved, **params),
                                  act.backward(np.ascontiguousarray(dy), np.ascontiguousarray(saved), **params))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_zero_d_empty_and_lists(case):
    name, params = case
    act = getattr(fa, name)
    scalar = act(np.float32(0.75), **params)
    assert isinstance(scalar, np.float32)
    assert scalar == act(np.array([0.75], np.float32), **params)[0]
    assert isinstance(act(np.array(0.75), **params), np.float64)
    for shape in [(0,), (3, 0), (0, 5, 2)]:
        empty = act(np.empty(shape, np.float32), **params)
        assert empty.shape == shape and empty.dtype == np.float32
        assert act.backward(np.empty(shape), np.empty(shape), **params).shape == shape
    np.testing.assert_array_equal(act([0.5, -1.0], **params), act(np.array([0.5, -1.0]), **params))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_in_place_and_out(case, cpu_backend):
    name, params = case
    act = getattr(fa, name)
    x = sample()
    expected = act(x, **params)
    out = np.empty_like(x)
    assert act(x, out=out, **params) is out
    np.testing.assert_array_equal(out, expected)
    inplace = x.copy()
    assert act(inplace, out=inplace, **params) is inplace
    np.testing.assert_array_equal(inplace, expected)
    # out overlapping the input with an offset: as if computed into a temporary first
    buf = np.concatenate([x, x[:1]])
    act(buf[1:], out=buf[:-1], **params)
    np.testing.assert_array_equal(buf[:-1], act(np.concatenate([x[1:], x[:1]]), **params))
    # backward in place into grad_output
    dy = np.linspace(-1, 1, x.size, dtype=np.float32)
    _, saved = forward_and_saved(name, params, x)
    expected = act.backward(dy, saved, **params)
    act.backward(dy, saved, out=dy, **params)
    np.testing.assert_array_equal(dy, expected)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_in_place_twice_on_hostile_inputs_on_two_threads(case, cpu_backend):
    """out = an input, bitwise the out-of-place result, forward and backward (into grad_output
    and into the saved tensor), on hostile values, long enough to be split over two threads; each
    call made twice: the Numba backend's first in-place call of a kernel runs its general loop
    and compiles the in-place one, which the second runs (kernels/loops.py)."""
    name, params = case
    act = getattr(fa, name)
    before = fa.get_num_threads()
    fa.set_num_threads(2)
    try:
        x = np.resize(hostile(np.float32, kinks(name, params)), (1 << 17) + 12345)
        dy = np.resize(np.linspace(-3, 3, 1001, dtype=np.float32), x.size)
        _, saved = forward_and_saved(name, params, x)
        expected = (act(x, **params), act.backward(dy, saved, **params))
        bits = [e.view(np.int32) for e in expected]
        for _ in range(2):
            inplace = x.copy()
            assert act(inplace, out=inplace, **params) is inplace
            np.testing.assert_array_equal(inplace.view(np.int32), bits[0])
            inplace = dy.copy()
            assert act.backward(inplace, saved, out=inplace, **params) is inplace
            np.testing.assert_array_equal(inplace.view(np.int32), bits[1])
            inplace = saved.copy()
            assert act.backward(dy, inplace, out=inplace, **params) is inplace
            np.testing.assert_array_equal(inplace.view(np.int32), bits[1])
    finally:
        fa.set_num_threads(before)


def _at(values, offset):
    """A copy of values starting offset elements past a 64-byte boundary (offset < 0: one byte
    past it, an array whose address is no multiple of its item size)."""
    size = values.size * values.itemsize
    raw = np.zeros(size + 2 * 64 + values.itemsize, np.uint8)
    start = -raw.ctypes.data % 64
    start += 1 if offset < 0 else offset * values.itemsize
    view = raw[start:start + size].view(values.dtype)
    view[...] = values
    return view


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["relu", "threshold", "hardtanh", "sigmoid", "gelu", "silu"])
def test_every_start_and_length_gives_the_aligned_result(name, dtype, cpu_backend):
    """The map loops compute the elements before out's first 64-byte boundary on their own, then
    run their vector loop (kernels/loops.py, ALIGNED; the C loops alike): arrays starting 0-16
    elements past a boundary (and one byte past: no element aligned), lengths ending inside that
    head, just after it and in the vector loop, out of place, with out at another offset than
    the inputs, and in place (forward, and backward into grad_output; each in-place call twice:
    the general loop, then the in-place one): bitwise what 64-byte aligned arrays give."""
    act = getattr(fa, name)
    params = {"threshold": 0.1, "value": -2.0} if name == "threshold" else {}
    lanes = 64 // np.dtype(dtype).itemsize
    base = np.resize(hostile(dtype, kinks(name, params)), 1000)
    grad = np.resize(np.linspace(-3, 3, 101, dtype=dtype), base.size)
    for n in (1, 3, lanes - 1, lanes, lanes + 1, 2 * lanes + 7, 100, 1000):
        x, dy = base[:n], grad[:n]
        _, saved = forward_and_saved(name, params, _at(x, 0))
        forward = act(_at(x, 0), **params).view(f"u{x.itemsize}")
        backward = act.backward(_at(dy, 0), _at(saved, 0), **params).view(f"u{x.itemsize}")
        for offset in [-1, *range(lanes + 1)]:
            xs, dys, ss = _at(x, offset), _at(dy, offset), _at(saved, offset)
            got = [act(xs, **params), act.backward(dys, ss, **params),
                   act(xs, out=_at(x, (offset + 3) % lanes), **params)]
            for _ in range(2):
                got.append(act(_at(x, offset), out=None, **params))
                inplace = _at(x, offset)
                got.append(act(inplace, out=inplace, **params))
                inplace = _at(dy, offset)
                got.append(act.backward(inplace, ss, out=inplace, **params))
            for k, result in enumerate(got):
                expected = backward if k in (1, 5, 8) else forward
                np.testing.assert_array_equal(result.view(expected.dtype), expected,
                                              err_msg=f"n={n} offset={offset} call {k}")


BAD_OUTS = {
    "shape": (lambda x: np.zeros(x.size + 1, x.dtype), ValueError),
    "dtype": (lambda x: np.zeros(x.shape, np.float64), TypeError),
    "readonly": (lambda x: np.zeros(x.shape, x.dtype), ValueError),
    "not-an-array": (lambda x: [0.0] * x.size, TypeError),
}


@pytest.mark.parametrize("bad", BAD_OUTS)
@pytest.mark.parametrize("name", ["sigmoid", "gelu", "relu", "softplus", "hardtanh", "mish"])
def test_bad_out_raises_before_writing(name, bad):
    act = getattr(fa, name)
    x = sample()
    make, error = BAD_OUTS[bad]
    out = make(x)
    before = np.array(out, copy=True)
    if bad == "readonly":
        out.flags.writeable = False
    with pytest.raises(error, match=name):
        act(x, out=out)
    with pytest.raises(error, match=name):
        act.backward(x, x, out=out)
    np.testing.assert_array_equal(np.asarray(out), before)


def test_out_of_the_other_byte_order(cpu_backend):
    """out= in the other byte order is taken, as NumPy's ufuncs take it (computed natively, then
    copied in); another dtype of the same kind is still refused."""
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        swapped = np.dtype(dtype).newbyteorder("S")
        x = rng.standard_normal((4, 64)).astype(dtype)
        dy = rng.standard_normal(x.shape).astype(dtype)
        calls = [(fa.tanh, (x,)), (fa.gelu, (x,)), (fa.softmax, (x,)),
                 (fa.relu.backward, (dy, fa.relu(x))), (fa.gelu.backward, (dy, x)),
                 (fa.log_softmax.backward, (dy, fa.log_softmax(x))),
                 (fa.prelu, (x, np.full(64, 0.25, dtype))), (fa.maxout, (x, 2))]
        for f, args in calls:
            want = f(*args)
            out = np.empty(want.shape, swapped)
            assert f(*args, out=out) is out
            np.testing.assert_array_equal(out, want)
        other = np.float64 if dtype == np.float32 else np.float32
        out = np.zeros(x.shape, np.dtype(other).newbyteorder("S"))
        with pytest.raises(TypeError, match="out has dtype"):
            fa.tanh(x, out=out)
        assert not out.any()
        with pytest.raises(TypeError, match="^fastact.tanh: out has dtype"):  # no byte order
            fa.tanh(x, out=np.empty(x.shape, "U4"))


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="shapes"):
        fa.sigmoid.backward(np.ones(3), np.ones(4))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float16_is_computed_in_float32(case):
    name, params = case
    act = getattr(fa, name)
    x = sample(np.float16)
    y = act(x, **params)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, act(x.astype(np.float32), **params).astype(np.float16))
    dy = np.linspace(-1, 1, x.size).astype(np.float16)
    _, saved = forward_and_saved(name, params, x)
    dx = act.backward(dy, saved, **params)
    assert dx.dtype == np.float16
    np.testing.assert_array_equal(dx, act.backward(dy.astype(np.float32), saved.astype(np.float32),
                                                   **params).astype(np.float16))


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64])
def test_integers_and_bool_follow_numpy(dtype):
    x = np.arange(-3, 4).astype(dtype)
    expected_dtype = np.tanh(x).dtype
    for name in ("tanh", "sigmoid", "relu", "gelu"):
        y = getattr(fa, name)(x)
        assert y.dtype == expected_dtype, name
        np.testing.assert_array_equal(y, getattr(fa, name)(x.astype(expected_dtype)))


@pytest.mark.parametrize("bad", [np.complex64, np.complex128, object, np.longdouble, "U3",
                                 "datetime64[s]"])
def test_unsupported_dtypes_raise_naming_the_dtype(bad):
    if np.dtype(bad) == np.float64:
        pytest.skip("longdouble is float64 on this platform")
    x = np.zeros(3, dtype=bad)
    with pytest.raises(TypeError, match=re.escape(str(np.dtype(bad)))):
        fa.sigmoid(x)
    with pytest.raises(TypeError, match=re.escape(str(np.dtype(bad)))):
        fa.relu.backward(x, x)


def test_parameters_are_checked_like_python():
    x = sample()
    with pytest.raises(TypeError, match="unexpected keyword"):
        fa.elu(x, alhpa=1.0)
    with pytest.raises(TypeError, match="missing"):
        fa.threshold(x, 0.5)
    with pytest.raises(ValueError, match="approximate"):
        fa.gelu(x, approximate="fast")
    with pytest.raises(ValueError, match="^fastact.celu: alpha must not be 0$"):
        fa.celu(x, alpha=0.0)
    with pytest.raises(ValueError, match="^fastact.hardtanh: min_val"):
        fa.hardtanh(x, min_val=2.0, max_val=1.0)
    with pytest.raises(ValueError, match="^fastact.softplus: beta"):
        fa.softplus(x, beta=0)
    with pytest.raises(ValueError, match="^fastact.rrelu: lower must be <="):
        fa.rrelu(x, 0.5, 0.25)
    for lower, upper in ((-np.inf, np.inf), (0.1, np.inf), (1e308, 1e308), (-1e308, 1e308)):
        for training in (False, True):
            with pytest.raises(ValueError, match="^fastact.rrelu: lower and upper must be finite"):
                fa.rrelu(x, lower, upper, training=training)
    with pytest.raises(ValueError, match="^fastact.leaky_relu: negative_slope is beyond float"):
        fa.leaky_relu(x, 10 ** 400)
    with pytest.raises(TypeError, match="real number"):
        fa.leaky_relu(x, negative_slope="0.1")
    with pytest.raises(ValueError, match="NaN"):
        fa.elu(x, alpha=float("nan"))
    np.testing.assert_array_equal(fa.elu(x, 0.5), fa.elu(x, alpha=0.5))


def test_parameters_float32_cannot_hold_are_refused_for_float32_inputs():
    """float32 (and float16) inputs compute in float32: a parameter that overflows it is refused
    (as PyTorch refuses it), and one that rounds to a refused value too (softplus beta=1e-300 is
    0 there: it gave inf); float64 inputs take them. Nothing is written; repeated calls (the fast
    entries) refuse alike."""
    x32 = np.float32([-1.0, 0.0, 2.0])
    calls = [(fa.softplus, {"beta": 1e-300}, "beta must not be 0 .*beta=1e-300 is 0.0 in float32"),
             (fa.celu, {"alpha": 1e-320}, "alpha must not be 0"),
             (fa.softplus, {"beta": 1e300}, r"beta=1e\+300 overflows float32"),
             (fa.hardtanh, {"min_val": -1e300}, r"min_val=-1e\+300 overflows float32"),
             (fa.threshold, {"threshold": 1e39, "value": 0.0}, r"threshold=1e\+39 overflows")]
    for act, params, message in calls:
        for _ in range(3):
            x64 = x32.astype(np.float64)
            y64, saved = forward_and_saved(act.name, params, x64)
            with np.errstate(all="ignore"):
                want = reference.backward(act.name, np.ones(3), saved, **params)
            np.testing.assert_allclose(y64, getattr(reference, f"{act.name}_forward")(x64, **params),
                                       rtol=1e-14)
            np.testing.assert_allclose(act.backward(np.ones(3), saved, **params), want, rtol=1e-14)
            for x in (x32, x32.astype(np.float16), np.int16([1, 2, 3])):
                out = np.zeros(3, fa.sigmoid(x).dtype)
                with pytest.raises(ValueError, match=f"^fastact.{act.name}: {message}"):
                    act(x, **params, out=out)
                with pytest.raises(ValueError, match=f"^fastact.{act.name}: {message}"):
                    act.backward(x, x, **params, out=out)
                assert not out.any()
    np.testing.assert_array_equal(fa.leaky_relu(x32, 1e-50), fa.leaky_relu(x32, 0.0))  # taken
    # rrelu's bounds and prelu's weight as a Python number (which takes x's dtype) alike
    for call in (lambda x: fa.rrelu(x, 1e300, 1e300), lambda x: fa.rrelu(x, 0.1, 1e39, True),
                 lambda x: fa.rrelu.backward(x, x, 1e300, 1e300),
                 lambda x: fa.prelu(x, 1e300), lambda x: fa.prelu.backward(x, x, -1e300)):
        for _ in range(3):
            with pytest.raises(ValueError, match="overflows float32"):
                call(x32)
        assert np.isfinite(call(x32.astype(np.float64))[0]).all()


def test_activations_pickle_by_name_and_have_names():
    """As ufuncs: pickled by name (multiprocessing, joblib: the other process's own object),
    copies are the object itself, and __name__ is the activation's name."""
    import copy
    import pickle
    for name in (*fa.ACTIVATIONS, "swish"):
        act = getattr(fa, name)
        assert pickle.loads(pickle.dumps(act)) is act and copy.deepcopy(act) is act
        assert act.__name__ == act.__qualname__ == act.name
    assert fa.swish.__name__ == "silu"


def test_saves_follows_the_parameters():
    assert fa.sigmoid.saves == "output" and fa.gelu.saves == "input"
    assert fa.leaky_relu.saves == "output"
    assert fa.leaky_relu.saves_for(negative_slope=-0.1) == "input"
    assert fa.elu.saves_for(alpha=-1.0) == "input" and fa.celu.saves_for(alpha=2.0) == "output"
    assert fa.threshold.saves == "input"
    assert {fa.softmax.saves, fa.log_softmax.saves} == {"output"}


def test_docstrings_are_the_spec():
    for name in fa.ACTIVATIONS:
        doc = getattr(fa, name).__doc__
        assert ".. math::" in doc and "Backward" in doc, name
        # the call's parameters and defaults first, as help() shows them (it had none)
        assert doc.splitlines()[0] == f"fastact.{name}{inspect.signature(getattr(fa, name))}"


def test_backend_choice():
    x = sample()
    with fa.backend("cpu"):
        y = fa.sigmoid(x)
    np.testing.assert_array_equal(y, fa.sigmoid(x))
    with pytest.raises(ValueError, match="unknown backend 'gpu'; choose one of"):
        with fa.backend("gpu"):
            pass
    report = fa.backends()
    assert set(report) == {"cpu", "c", "cuda"} and report["cpu"] == (True, "available")
    for available, reason in report.values():
        assert isinstance(available, bool) and reason


class FakeGpuArray:
    """Anything with the CUDA array interface counts as a GPU array."""
    __cuda_array_interface__ = {"shape": (3,), "typestr": "<f4", "data": (0, False), "version": 3}


def test_gpu_arrays_are_never_copied_silently():
    with fa.backend("cpu"):
        with pytest.raises(TypeError, match="GPU array"):
            fa.relu(FakeGpuArray())
    with pytest.raises(TypeError, match="same device"):
        fa.relu.backward(FakeGpuArray(), np.ones(3, np.float32))
    with fa.backend("cuda"):
        with pytest.raises(TypeError, match="NumPy array"):
            fa.relu(np.ones(3, np.float32))


def test_matches_reference_on_a_typical_batch():
    """The everyday case, end to end: a float32 activation tensor of a small network."""
    x = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    np.testing.assert_allclose(fa.gelu(x), reference.forward("gelu", x.astype(np.float64)),
                               rtol=3e-7, atol=1e-30)


def _masked(a, seed):
    return np.ma.MaskedArray(a, mask=np.random.default_rng(seed).random(a.shape) < 0.3)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_masked_arrays_keep_their_mask(case, cpu_backend):
    """As a NumPy ufunc on masked arrays: computed on the data, masked where any input is; a masked
    out gets that mask, a plain out the data alone; the Numba backend used to raise its own
    'Unsupported array type' here."""
    name, params = case
    act = getattr(fa, name)
    base = hostile(np.float32).reshape(-1)[:96].reshape(8, 12).copy()
    x = _masked(base, 1)
    y = act(x, **params)
    assert type(y) is np.ma.MaskedArray and y.dtype == np.float32
    np.testing.assert_array_equal(np.ma.getmaskarray(y), x.mask)
    np.testing.assert_array_equal(y.data, act(base, **params))
    _, saved = forward_and_saved(name, params, base)
    dy, saved_m = _masked(np.linspace(-2, 2, 96, dtype=np.float32).reshape(8, 12), 2), _masked(saved, 3)
    want = act.backward(dy.data, saved, **params)
    for g, s, mask in ((dy, saved_m, dy.mask | saved_m.mask), (dy, saved, dy.mask),
                       (dy.data, saved_m, saved_m.mask)):
        dx = act.backward(g, s, **params)
        assert type(dx) is np.ma.MaskedArray
        np.testing.assert_array_equal(np.ma.getmaskarray(dx), mask)
        np.testing.assert_array_equal(dx.data, want)
    out = np.ma.MaskedArray(np.zeros_like(base), mask=True)  # plain inputs: out's mask cleared
    assert act(base, **params, out=out) is out
    assert not out.mask.any()
    np.testing.assert_array_equal(out.data, act(base, **params))
    out = np.ma.MaskedArray(np.zeros_like(base))
    assert act.backward(dy, saved_m, **params, out=out) is out
    np.testing.assert_array_equal(out.mask, dy.mask | saved_m.mask)
    np.testing.assert_array_equal(out.data, want)
    plain = np.zeros_like(base)
    assert act(x, **params, out=plain) is plain  # a plain out: the data, as np.tanh(masked, out=)
    np.testing.assert_array_equal(plain, act(base, **params))
    inplace = x.copy()
    assert act(inplace, **params, out=inplace) is inplace
    np.testing.assert_array_equal(inplace.data, act(base, **params))
    np.testing.assert_array_equal(inplace.mask, x.mask)
    assert act(np.ma.array(np.float32(0.5), mask=True), **params) is np.ma.masked
    with pytest.raises(ValueError, match="shapes"):  # checked before anything is written
        act.backward(dy[:4], saved_m, **params, out=out)
    np.testing.assert_array_equal(out.data, want)


def test_masked_array_details_follow_numpy(cpu_backend):
    """As np.tanh on masked arrays: a 0-d masked array gives a 0-d masked array (np.ma.masked
    where masked), a fill value the user set is kept, and a masked out that is a view of
    another array gets a mask of its own (the other's stays)."""
    for value, mask in ((1.0, False), (np.float32(1.0), False), (1.0, True)):
        x = np.ma.array(value, mask=mask)
        want, got = np.tanh(x), fa.tanh(x)
        assert type(got) is type(want) and (got is np.ma.masked) == (want is np.ma.masked)
        if want is not np.ma.masked:
            assert got.ndim == 0 and got.dtype == want.dtype and not got.mask
            np.testing.assert_allclose(got.data, want.data, rtol=1e-6)
    x = np.ma.array(np.float32([1, 2]), fill_value=7.0)
    assert fa.tanh(x).fill_value == np.tanh(x).fill_value == 7.0
    assert fa.tanh(np.ma.array(np.float16([1, 2]), fill_value=5)).fill_value == 5
    base = np.ma.array([1.0, 2.0, 3.0], mask=[0, 1, 0])
    view = base[:]
    assert fa.tanh(np.ones(3), out=view) is view
    np.testing.assert_array_equal(base.mask, [False, True, False])
    assert not view.mask.any()


def test_masked_arrays_are_refused_where_the_mask_would_be_lost(cpu_backend):
    """The row-wise activations, maxout, prelu and rrelu take no masked array (a softmax over a
    masked row has no one meaning): a TypeError naming the argument, nothing written."""
    x = np.random.default_rng(4).standard_normal((4, 8)).astype(np.float32)
    xm, w = _masked(x, 5), np.full(8, 0.25, np.float32)
    calls = {"softmax": (fa.softmax, (xm,), fa.softmax.backward, (xm, fa.softmax(x))),
             "log_softmax": (fa.log_softmax, (xm,), fa.log_softmax.backward, (x, xm)),
             "maxout": (fa.maxout, (xm, 2), fa.maxout.backward, (_masked(x[:, :4], 6), x, 2)),
             "prelu": (fa.prelu, (xm, w), fa.prelu.backward, (x, xm, w)),
             "rrelu": (fa.rrelu, (xm,), fa.rrelu.backward, (xm, x))}
    for name, (forward, fargs, backward, bargs) in calls.items():
        with pytest.raises(TypeError, match=f"^fastact.{name}: .* is a masked array"):
            forward(*fargs)
        with pytest.raises(TypeError, match=f"^fastact.{name}: .* is a masked array"):
            backward(*bargs)
        plain = [np.ma.getdata(a) if isinstance(a, np.ndarray) else a for a in fargs]
        out = np.ma.MaskedArray(np.zeros_like(forward(*plain)))
        with pytest.raises(TypeError, match=f"^fastact.{name}: out is a masked array"):
            forward(*plain, out=out)
        assert not out.data.any()


class _Subclass(np.ndarray):
    pass


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix's own
def test_array_subclasses_give_plain_arrays(cpu_backend):
    """np.matrix and other ndarray subclasses are read as their data; the result is a plain array
    (np.matrix's reshape(-1) stays 2-d: written through a plain view), or out itself."""
    x = np.random.default_rng(8).standard_normal((3, 5)).astype(np.float32)
    for sub in (np.asmatrix(x), x.view(_Subclass), np.asmatrix(np.asfortranarray(x))):
        for act in (fa.gelu, fa.relu, fa.softmax):
            y = act(sub)
            assert type(y) is np.ndarray
            np.testing.assert_array_equal(y, act(x))
        np.testing.assert_array_equal(fa.tanh.backward(sub, sub), fa.tanh.backward(x, x))
        out = np.zeros_like(sub)
        assert fa.sigmoid(x, out=out) is out and type(out) is type(sub)
        np.testing.assert_array_equal(np.asarray(out), fa.sigmoid(x))
        out64 = np.asmatrix(np.zeros(x.shape))
        assert fa.sigmoid(x.astype(np.float64), out=out64) is out64
        np.testing.assert_array_equal(np.asarray(out64), fa.sigmoid(x.astype(np.float64)))
    # the row kinds into a matrix out: written through a plain view (maxout's kernels take 3-d
    # and 4-d views, which a matrix cannot be), and a later call of other dimensions is right
    x4 = np.random.default_rng(9).standard_normal((3, 4)).astype(np.float32)
    x3 = np.arange(24, dtype=np.float32).reshape(2, 4, 3)[:, ::-1].copy()
    for call, args in ((fa.maxout, (x4, 2)), (fa.maxout.backward, (np.ones((3, 2), np.float32), x4, 2)),
                       (fa.softmax, (x4,)), (fa.log_softmax.backward, (x4, fa.log_softmax(x4))),
                       (fa.prelu, (x4, np.float32([0.25])))):
        want = call(*args)
        out = np.asmatrix(np.zeros(want.shape, np.float32))
        assert call(*args, out=out) is out
        np.testing.assert_array_equal(np.asarray(out), want)
    np.testing.assert_array_equal(fa.maxout(x3, 2), np.maximum(x3[:, 0::2], x3[:, 1::2]))


def test_threshold_takes_a_nan_value(cpu_backend):
    """value=NaN marks the thresholded elements (PyTorch takes it); threshold=NaN is refused (its
    comparisons would drop every element's derivative). The calls never take a fast entry's slot
    (NaN is no dictionary key)."""
    x = np.concatenate([hostile(np.float32).reshape(-1), np.float32([0.5, np.nextafter(0.5, 1)])])
    dy = np.random.default_rng(9).standard_normal(x.size).astype(np.float32)
    want = reference.threshold_forward(x.astype(np.float64), 0.5, np.nan)
    want_dx = reference.threshold_backward_from_input(dy.astype(np.float64), x.astype(np.float64),
                                                      0.5, np.nan)
    assert np.isnan(want).any() and (~np.isnan(want)).any()
    for _ in range(3):
        for value in (float("nan"), np.nan, np.float32("nan"), -float("nan")):
            np.testing.assert_array_equal(fa.threshold(x, 0.5, value), want.astype(np.float32))
            np.testing.assert_array_equal(fa.threshold(x, 0.5, value=value), want.astype(np.float32))
            np.testing.assert_array_equal(fa.threshold.backward(dy, x, 0.5, value),
                                          want_dx.astype(np.float32))
    assert "nan" not in repr(list(fa.threshold._by_params or {}))
    with pytest.raises(ValueError, match="^fastact.threshold: threshold must not be NaN$"):
        fa.threshold(x, float("nan"), 0.0)
