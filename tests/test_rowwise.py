"""softmax, log_softmax, maxout, prelu and rrelu against the reference, with hostile rows."""
import inspect

import numpy as np
import pytest

import fastact as fa
from fastact import reference

from conftest import assert_close, hostile


def rows(dtype, shape=(7, 33), seed=0):
    x = np.random.default_rng(seed).standard_normal(shape) * 8
    x[0, :] = 0.0                       # all equal
    x[1, :5] = [1e4, -1e4, 0.0, 88.0, -200.0]  # huge spread: the max term dominates
    x[2, :] = -np.inf
    x[2, 3] = 1.0                       # -inf entries give 0 / -inf
    x[3, 7] = np.nan                    # NaN row
    x[4, :] = np.linspace(-30, 0, shape[1])  # log_softmax of the max is close to 0
    return x.astype(dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_family(name, axis, dtype, cpu_backend):
    act = getattr(fa, name)
    x = rows(dtype)
    if axis == 0:
        x = np.ascontiguousarray(x.T)
    y = act(x, axis=axis)
    with np.errstate(all="ignore"):
        ref = reference.forward(name, x.astype(np.float64), axis=axis)
    assert_close(y, ref, dtype, context=f"{name} axis={axis}")
    dy = np.random.default_rng(1).uniform(-1, 1, x.shape).astype(dtype)
    dx = act.backward(dy, y, axis=axis)
    with np.errstate(all="ignore"):
        ref_dx = reference.backward(name, dy.astype(np.float64), y.astype(np.float64), axis=axis)
        scale = reference.condition_scale(name, "backward", x.astype(np.float64), axis=axis,
                                          grad_output=dy.astype(np.float64))
    assert_close(dx, ref_dx, dtype, scale=scale, context=f"{name} backward axis={axis}")


def test_softmax_layouts_and_shapes(cpu_backend):
    x = np.random.default_rng(2).standard_normal((4, 5, 6)).astype(np.float32)
    for axis in (0, 1, 2, -2):
        expected = fa.softmax(np.ascontiguousarray(np.moveaxis(x, axis, -1)))
        np.testing.assert_array_equal(np.moveaxis(fa.softmax(x, axis=axis), axis, -1), expected)
    xf = np.asfortranarray(x)
    np.testing.assert_array_equal(fa.softmax(xf, axis=1), fa.softmax(x, axis=1))
    out = np.empty_like(x)
    assert fa.log_softmax(x, 1, out=out) is out
    np.testing.assert_array_equal(out, fa.log_softmax(x, axis=1))
    inplace = x.copy()
    fa.softmax(inplace, out=inplace)
    np.testing.assert_array_equal(inplace, fa.softmax(x))
    assert fa.softmax(np.float32(3.0)) == 1.0
    assert fa.softmax(np.empty((0, 4), np.float32)).shape == (0, 4)
    assert fa.softmax(np.empty((3, 0), np.float32)).shape == (3, 0)
    with pytest.raises(ValueError, match="axis 3 is out of bounds"):
        fa.softmax(x, axis=3)
    with pytest.raises(TypeError, match="out has dtype"):
        fa.softmax(x, out=np.empty(x.shape))


def test_softmax_backward_rows_near_the_float32_range(cpu_backend):
    """softmax's float32 backward works in float32 on the row's dot split in two; rows where
    dy - dot could overflow float32 (|dy| summing to 2^126 or more) take the float64 formula:
    here dot is -6e37 and dy - dot 3.6e38 (inf in float32), while y (dy - dot) is finite. Inf and NaN in dy give
    what the float64 formula gives."""
    dy = np.array([[3e38, -3e38, 1.0, 2.0],
                   [np.inf, 1.0, 2.0, 3.0],
                   [np.nan, 1.0, 2.0, 3.0],
                   [1e-30, -2e-30, 3e-45, 0.0]], np.float32)
    y = np.array([[0.1, 0.3, 0.3, 0.3],
                  [0.2, 0.3, 0.4, 0.1],
                  [0.2, 0.3, 0.4, 0.1],
                  [0.5, 0.25, 0.25, 0.0]], np.float32)
    dx = fa.softmax.backward(dy, y)
    with np.errstate(all="ignore"):
        ref = reference.backward("softmax", dy.astype(np.float64), y.astype(np.float64))
    assert np.isfinite(dx[0]).all() and np.isfinite(ref[0]).all()
    assert_close(dx, ref, np.float32)


def test_log_softmax_backward_from_any_saved_output(dtype, cpu_backend):
    """log_softmax's backward from saved outputs of any kind, not only log_softmax's (<= 0):
    positive entries, the tails of e^y (subnormal, 0, inf), an exact 0, -inf, +inf and NaN (a
    NaN beside a large entry), against the float64 formula, each row on the scale of its terms.
    Rows with no entry above 0 take a cheaper exp (loops.row_nonpositive, counting entries > 0;
    an earlier pick by a max that ignored NaN failed here on row 0). Rows of 130: vector loops
    and remainders; in place (into dy, into y) the same bits."""
    rng = np.random.default_rng(5)
    y = -rng.exponential(3.0, (9, 130))
    y[1, :] = np.linspace(-120.0, 0.0, 130)         # e^y subnormal, 0 and 1 (max exactly 0)
    y[2, :] = np.linspace(-800.0, -1e-30, 130)      # float64's subnormal e^y too
    y[3, 4], y[3, 9] = -np.inf, -0.0
    y[4, 11] = np.nan
    y[5, 20] = 0.5                                 # one positive entry: the general exp
    y[0, 1], y[0, 65] = np.nan, 60.0               # a NaN must not hide a large entry
    y[6, :] = np.linspace(-3.0, 80.0, 130)          # e^80: large, finite in float32
    y[7, 2], y[7, 30] = np.inf, 700.0              # inf (and inf in float32 for 700)
    y[8, :] = rng.uniform(-5.0, 1.0, 130)
    y = y.astype(dtype)
    dy = rng.uniform(-1.0, 1.0, y.shape).astype(dtype)
    dy[8, :] = 1.0 / 130                           # dx = 1/130 - e^y: cancels near y = -4.9
    dx = fa.log_softmax.backward(dy, y)
    y64, dy64 = y.astype(np.float64), dy.astype(np.float64)
    with np.errstate(all="ignore"):
        ref = reference.backward("log_softmax", dy64, y64)
        scale = np.abs(dy64) + np.exp(y64) * np.sum(np.abs(dy64), axis=-1, keepdims=True)
    assert np.isnan(dx[4, 11]) and np.isfinite(np.delete(dx[4], 11)).all() and np.isinf(dx[7, 2])
    assert_close(dx, ref, dtype, scale=scale)
    for into in ("dy", "y"):
        g, s = dy.copy(), y.copy()
        fa.log_softmax.backward(g, s, out=g if into == "dy" else s)
        np.testing.assert_array_equal(g if into == "dy" else s, dx)
    # rows past loops.NONPOSITIVE_ROW_MAX skip the check (the general exp), entries <= 0 or not
    from fastact.kernels.loops import NONPOSITIVE_ROW_MAX
    long_y = np.resize(y[[1, 5]], (2, NONPOSITIVE_ROW_MAX + 1))
    long_dy = np.resize(dy[[1, 5]], long_y.shape) / 600
    long_dx = fa.log_softmax.backward(long_dy, long_y)
    ly64, ldy64 = long_y.astype(np.float64), long_dy.astype(np.float64)
    with np.errstate(all="ignore"):
        scale = np.abs(ldy64) + np.exp(ly64) * np.sum(np.abs(ldy64), axis=-1, keepdims=True)
    assert_close(long_dx, reference.backward("log_softmax", ldy64, ly64), dtype, scale=scale)


def test_row_calls_with_an_overlapping_or_foreign_out(cpu_backend):
    """The short path for C-contiguous rows along the last axis takes only an out exactly like
    the input (or the input itself); a partly overlapping out, a strided one and a wrong one go
    the general way (correct result, or the error before anything is written)."""
    x = np.random.default_rng(5).standard_normal((6, 40)).astype(np.float32)
    dy = np.random.default_rng(6).standard_normal(x.shape).astype(np.float32)
    want, want_dx = fa.softmax(x), fa.softmax.backward(dy, fa.softmax(x))
    buffer = np.concatenate([x.ravel(), np.zeros(40, np.float32)])
    shifted_in, shifted_out = buffer[:240].reshape(6, 40), buffer[40:].reshape(6, 40)
    fa.softmax(shifted_in, out=shifted_out)  # out overlaps the input one row later
    np.testing.assert_array_equal(shifted_out, want)
    strided = np.zeros((6, 80), np.float32)[:, ::2]
    assert fa.softmax.backward(dy, want, out=strided) is strided
    np.testing.assert_array_equal(strided, want_dx)
    bad = np.full((6, 40), 7.0)
    with pytest.raises(TypeError, match="out has dtype"):
        fa.softmax.backward(dy, want, out=bad)
    assert (bad == 7.0).all()
    with pytest.raises(ValueError, match="out has shape"):
        fa.softmax(x, out=np.empty((6, 41), np.float32))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_in_place_forward_and_backward(name, dtype, cpu_backend):
    """out = x for the forward, out = grad_output or the saved output for the backward: the bits
    of the out-of-place calls, on the hostile rows and rows whose dy reaches 2^126 (softmax's
    float64 row path), rows enough for two threads. The Numba row kernels write such a row
    through one view (kernels/loops.py, row_map_2)."""
    act = getattr(fa, name)
    before = fa.get_num_threads()
    fa.set_num_threads(2)
    try:
        x = np.tile(rows(dtype, (7, 1024)), (20, 1))
        y = act(x)
        dy = np.resize(np.linspace(-3, 3, 1001), x.shape).astype(dtype)
        dy[5, :3] = [3e38, -3e38, 1e38]
        with np.errstate(all="ignore"):
            want = act.backward(dy, y)
        inplace = x.copy()
        assert act(inplace, out=inplace) is inplace
        np.testing.assert_array_equal(inplace, y)
        for which in (0, 1):
            inputs = [dy.copy(), y.copy()]
            with np.errstate(all="ignore"):
                assert act.backward(*inputs, out=inputs[which]) is inputs[which]
            np.testing.assert_array_equal(inputs[which], want)
    finally:
        fa.set_num_threads(before)


@pytest.mark.parametrize("n", [33, 1500])
def test_log_softmax_in_place_and_overlapping_out_agree(n, dtype, cpu_backend):
    """log_softmax writes its exps into out before the last pass reads x again, except in place
    (a scratch row): in place, into a separate out and into an out overlapping x one row later,
    the same bits, on the hostile rows."""
    x = rows(dtype, (7, n))
    want = fa.log_softmax(x)
    with np.errstate(all="ignore"):
        assert_close(want, reference.forward("log_softmax", x.astype(np.float64)), dtype)
    inplace = x.copy()
    assert fa.log_softmax(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, want)
    buffer = np.concatenate([x.ravel(), np.zeros(n, dtype)])
    shifted_in, shifted_out = buffer[:7 * n].reshape(7, n), buffer[n:].reshape(7, n)
    fa.log_softmax(shifted_in, out=shifted_out)
    np.testing.assert_array_equal(shifted_out, want)


def test_long_rows_are_parallel_and_exact(cpu_backend):
    x = np.random.default_rng(3).standard_normal((3, 200_000)).astype(np.float32)
    y = fa.log_softmax(x)
    assert_close(y, reference.forward("log_softmax", x.astype(np.float64)), np.float32)
    many = np.random.default_rng(4).standard_normal((50_000, 8)).astype(np.float32)
    np.testing.assert_array_equal(fa.softmax(many), np.concatenate(
        [fa.softmax(many[i:i + 1000]) for i in range(0, len(many), 1000)]))


@pytest.mark.parametrize("pieces,axis", [(2, 1), (3, -1), (1, 0), (4, 2), (2, -1), (6, -1)])
@pytest.mark.parametrize("inner", [8, 600], ids=["short", "long"])
def test_maxout(pieces, axis, inner, dtype, cpu_backend):
    """Against the reference, with ties, NaN and inf; "long": 600 elements after the pieces' axis
    where it is not the last (the C loops go over those in blocks of 256)."""
    shape = [4, 6, inner]
    shape[axis] = 12
    x = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    x.flat[::17] = 0.5  # ties
    x.flat[5] = np.nan
    x.flat[7] = np.inf
    x.flat[x.size // 2 + 3::997] = np.nan  # more NaNs, past the first block
    y = fa.maxout(x, pieces, axis=axis)
    ref = reference.forward("maxout", x.astype(np.float64), pieces=pieces, axis=axis)
    np.testing.assert_array_equal(y, ref.astype(dtype))
    dy = np.random.default_rng(6).standard_normal(y.shape).astype(dtype)
    dx = fa.maxout.backward(dy, x, pieces, axis=axis)
    ref_dx = reference.backward("maxout", dy.astype(np.float64), x.astype(np.float64),
                                pieces=pieces, axis=axis)
    np.testing.assert_array_equal(dx, ref_dx.astype(dtype))
    np.testing.assert_array_equal(fa.maxout(np.asfortranarray(x), pieces, axis=axis), y)


def test_softmax_backward_large_output(cpu_backend):
    """Outputs of 4 MiB and more take the path that prefetches the next output row (where
    math.SOFTWARE_PREFETCH; test_runtime runs the other setting)."""
    x = np.random.default_rng(8).standard_normal((1100, 1024)).astype(np.float32) * 4
    y = fa.softmax(x)
    dy = np.random.default_rng(9).standard_normal(x.shape).astype(np.float32)
    dy[5, 7] = np.nan
    dx = fa.softmax.backward(dy, y)
    with np.errstate(all="ignore"):
        ref = reference.backward("softmax", dy.astype(np.float64), y.astype(np.float64))
        scale = reference.condition_scale("softmax", "backward", x.astype(np.float64),
                                          grad_output=dy.astype(np.float64))
    assert np.isnan(dx[5]).all() and not np.isnan(np.delete(dx, 5, axis=0)).any()
    assert_close(np.delete(dx, 5, axis=0), np.delete(ref, 5, axis=0), np.float32,
                 scale=np.delete(scale, 5, axis=0))


@pytest.mark.parametrize("width", [256, 36])
def test_maxout_large_input(width, cpu_backend):
    """Inputs of 4 MiB and more are prefetched ahead of the loop (rows of 1 KiB, and rows that
    do not divide a page), with NaN, inf and ties spread over the whole array."""
    x = np.random.default_rng(7).standard_normal(((1 << 20) // width + 3, width)).astype(np.float32)
    x.flat[::4099] = np.nan
    x.flat[1::5003] = -np.inf
    x.flat[2::13] = 0.5
    y = fa.maxout(x, 4, axis=1)
    ref = reference.forward("maxout", x.astype(np.float64), pieces=4, axis=1)
    np.testing.assert_array_equal(y, ref.astype(np.float32))


def test_maxout_errors():
    x = np.ones((2, 6, 3), np.float32)
    with pytest.raises(ValueError, match="multiple of pieces"):
        fa.maxout(x, 4)
    with pytest.raises(ValueError, match="pieces must be >= 1"):
        fa.maxout(x, 0)
    with pytest.raises(ValueError, match="grad_output has shape"):
        fa.maxout.backward(np.ones((2, 6, 3)), x, 2)
    with pytest.raises(TypeError, match="integer"):
        fa.maxout(x, 2.5)


@pytest.mark.parametrize("shape,channels", [((4, 3, 5, 5), 3), ((4, 3, 5, 5), 1), ((1000,), 1),
                                            ((6, 7), 7), ((2, 4, 0), 4), ((1000, 3), 3),
                                            ((2, 3, 600), 3), ((0, 5), 5)])
def test_prelu(shape, channels, dtype, cpu_backend):
    rng = np.random.default_rng(7)
    x = hostile(dtype)[:int(np.prod(shape))]
    x = np.resize(x, shape).astype(dtype)
    w = rng.uniform(-0.5, 0.5, channels).astype(dtype)
    y = fa.prelu(x, w)
    assert_close(y, reference.forward("prelu", x.astype(np.float64), weight=w.astype(np.float64)),
                 dtype, context="prelu")
    dy = rng.uniform(-1, 1, shape).astype(dtype)
    dx, dw = fa.prelu.backward(dy, x, w)
    ref_dx, ref_dw = reference.backward("prelu", dy.astype(np.float64), x.astype(np.float64),
                                        weight=w.astype(np.float64))
    assert_close(dx, ref_dx, dtype, context="prelu grad_input")
    assert dw.shape == w.shape and dw.dtype == w.dtype
    finite = np.isfinite(x).all() and np.isfinite(dy).all()
    if finite:
        np.testing.assert_allclose(dw, ref_dw, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("layout", ["rows", "cols"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_prelu_large_outputs_stream_with_the_same_bits(dtype, layout, cpu_backend):
    """Outputs of STREAM_BYTES and more go through an L1 buffer and non-temporal stores (rows in
    chunks of 2048, partial lines plain): the same bits as the call made in pieces below the
    threshold, for an output a 64-byte line starts on and one an element off (which splits the
    joined samples of (N, C) rows differently), and in place on x and on dy. rows: (3, 4, inner)
    by (sample, channel) rows; cols: (N, 3) by joined samples and a last part of samples."""
    from fastact.kernels import math as m
    item = np.dtype(dtype).itemsize
    if layout == "rows":
        shape = (3, 4, m.STREAM_BYTES // item // 12 + 1001)  # rows not a multiple of a line
        nan, nan_channels, clean = (0, 1, slice(0, 5000)), 1, slice(1, None)
    else:
        shape = (m.STREAM_BYTES // item // 3 + 997, 3)
        nan, nan_channels, clean = slice(5, 9), 3, slice(10, None)
    n = int(np.prod(shape))
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(dtype)
    x[nan] = np.nan
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.uniform(-0.5, 0.5, shape[1]).astype(dtype)
    cut = [0, shape[0] // 3, 2 * shape[0] // 3, shape[0]]
    parts = [slice(a, b) for a, b in zip(cut, cut[1:])]
    pieces = [fa.prelu.backward(dy[p], x[p], w) for p in parts]  # plain stores
    expected_y = np.concatenate([fa.prelu(x[p], w) for p in parts])
    expected_dx = np.concatenate([p[0] for p in pieces])
    expected_dw = sum(p[1].astype(np.float64) for p in pieces)
    assert np.isnan(expected_dw).sum() == nan_channels
    storage = np.empty(n + 32, dtype)
    base = (-storage.ctypes.data % 64) // item  # the element that starts on a 64-byte boundary
    for shift in (0, 1):
        out = storage[base + shift:base + shift + n].reshape(shape)
        assert fa.prelu(x, w, out=out) is out
        np.testing.assert_array_equal(out, expected_y)
        dx, dw = fa.prelu.backward(dy, x, w, out=out)
        assert dx is out
        np.testing.assert_array_equal(dx, expected_dx)
        np.testing.assert_array_equal(np.isnan(dw), np.isnan(expected_dw))
        np.testing.assert_allclose(dw, expected_dw, rtol=1e-6)
    _, clean_dw = fa.prelu.backward(dy[clean], x[clean], w)
    terms = np.where(x[clean] > 0, 0.0, dy[clean].astype(np.float64) * x[clean])
    np.testing.assert_allclose(clean_dw, terms.reshape(terms.shape[0], w.size, -1).sum(axis=(0, 2)),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)
    in_place = x.copy()
    fa.prelu(in_place, w, out=in_place)
    np.testing.assert_array_equal(in_place, expected_y)
    in_place = dy.copy()
    fa.prelu.backward(in_place, x, w, out=in_place)
    np.testing.assert_array_equal(in_place, expected_dx)
    in_place = x.copy()
    _, dw = fa.prelu.backward(dy, in_place, w, out=in_place)  # sums read x before dx is written
    np.testing.assert_array_equal(in_place, expected_dx)
    np.testing.assert_allclose(dw, expected_dw, rtol=1e-6)


def test_prelu_forward_takes_rows_of_64_and_more_in_arrays_up_to_the_short_size(cpu_backend,
                                                                                monkeypatch):
    """The forward runs (N, C, *rest) with rest of SHORT (64) to BELOW (512) elements by rows in
    arrays of up to SHORT_SIZE elements (the fast path's choice), by columns above; the backward
    by columns; results the reference's either way."""
    from fastact import _backends, _rowwise
    monkeypatch.setattr(fa.prelu, "_row_entries", None)  # the Python path's choice of kernels
    backend = _backends.get()
    called = []
    rows = type(backend).rows
    monkeypatch.setattr(type(backend), "rows", lambda self, name, *a: (called.append(name),
                                                                      rows(self, name, *a)))
    monkeypatch.setattr(_rowwise._Columns, "SHORT_SIZE", 2 * 3 * 100)
    rng = np.random.default_rng(5)
    w = np.array([0.25, -0.5, 2.0], np.float32)
    for shape, forward in [((2, 3, 100), "prelu_forward_rows"), ((2, 3, 63), "prelu_forward_cols"),
                           ((3, 3, 100), "prelu_forward_cols")]:
        x = np.resize(hostile(np.float32), shape).astype(np.float32)
        dy = rng.uniform(-1, 1, shape).astype(np.float32)
        called.clear()
        y, (dx, dw) = fa.prelu(x, w), fa.prelu.backward(dy, x, w)
        assert called == [forward, "prelu_backward_cols"], shape
        want = reference.prelu_forward(x.astype(np.float64), w.astype(np.float64))
        np.testing.assert_array_equal(y, want.astype(np.float32))
        np.testing.assert_array_equal(dx, reference.prelu_backward_from_input(
            dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64))[0].astype(
                np.float32))


@pytest.mark.parametrize("shape,path", [((6, 7), "cols"), ((1000, 3), "cols"),
                                        ((4, 3, 5, 5), "cols"), ((2, 3, 600), "rows"),
                                        ((1000,), "rows")])
def test_prelu_layouts_give_the_same_results(shape, path, dtype, cpu_backend, monkeypatch):
    """prelu runs x of shape (N, C, *short) by whole samples with a weight per element
    (prelu_*_cols, samples joined into rows of 2048+ elements, the last ones a row each) and
    longer inner extents by (sample, channel) rows: each shape takes the path named, and both
    paths give the same bits (grad_weight: the same float64 sums in another order)."""
    from fastact import _backends, _rowwise
    rng = np.random.default_rng(3)
    x = np.resize(hostile(dtype), shape).astype(dtype)
    dy = rng.uniform(-1, 1, shape).astype(dtype)
    w = rng.uniform(-0.5, 0.5, shape[1] if len(shape) > 1 else 1).astype(dtype)
    backend = _backends.get()
    called = []
    monkeypatch.setattr(fa.prelu, "_row_entries", None)  # the Python path's choice of kernels
    rows = type(backend).rows
    monkeypatch.setattr(type(backend), "rows", lambda self, name, *a: (called.append(name),
                                                                      rows(self, name, *a)))
    y, (dx, dw) = fa.prelu(x, w), fa.prelu.backward(dy, x, w)
    assert set(called) == {f"prelu_forward_{path}", f"prelu_backward_{path}"}
    monkeypatch.setattr(_rowwise._Columns, "BELOW", 0 if path == "cols" else 10 ** 9)
    monkeypatch.setattr(_rowwise._Columns, "SHORT", 10 ** 9)  # (the forward's rows below BELOW)
    called.clear()
    y2, (dx2, dw2) = fa.prelu(x, w), fa.prelu.backward(dy, x, w)
    assert {c.rsplit("_", 1)[1] for c in called} == ({"rows"} if path == "cols" else
                                                      ({"rows"} if len(shape) == 1 else {"cols"}))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(dx, dx2)
    with np.errstate(invalid="ignore", over="ignore"):
        terms = np.abs(np.where(x > 0, 0.0, dy.astype(np.float64) * x))
    scale = np.nan_to_num(terms.reshape(shape[0], w.size, -1).sum(axis=(0, 2)), posinf=0.0)
    np.testing.assert_array_less(np.nan_to_num(np.abs(dw.astype(np.float64) - dw2), nan=0.0),
                                 scale * (2e-7 if dtype == np.float32 else 1e-13) + 1e-300)
    np.testing.assert_array_equal(np.isnan(dw), np.isnan(dw2))


def test_prelu_by_columns_in_place_and_long_samples(dtype, cpu_backend):
    """In place on x and on dy (the column sums read a piece before its dx is written), for
    joined samples and for samples of ROW elements or more (a row each)."""
    rng = np.random.default_rng(12)
    for shape in ((300, 5, 3), (6, 700, 3)):
        x = rng.standard_normal(shape).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        w = rng.uniform(-0.5, 0.5, shape[1]).astype(dtype)
        expected_y = np.where(x > 0, x, w[:, None] * x)
        expected_dx = np.where(x > 0, dy, w[:, None] * dy)
        terms = np.where(x > 0, 0.0, dy.astype(np.float64) * x)
        expected_dw = terms.sum(axis=(0, 2))
        # each term rounded to dtype (float32 for float16) before the float64 sum
        dw_bound = np.abs(terms).sum(axis=(0, 2)) * (1e-13 if dtype == np.float64 else 2e-7) + \
            np.abs(expected_dw) * (1e-3 if dtype == np.float16 else 1e-7)
        tolerance = {"rtol": 1e-3 if dtype == np.float16 else 1e-6}
        for target in ("x", "dy"):
            a, g = x.copy(), dy.copy()
            out = a if target == "x" else g
            dx, dw = fa.prelu.backward(g, a, w, out=out)
            assert dx is out
            np.testing.assert_allclose(dx, expected_dx, **tolerance)
            np.testing.assert_array_less(np.abs(dw - expected_dw), dw_bound)
        a = x.copy()
        assert fa.prelu(a, w, out=a) is a
        np.testing.assert_allclose(a, expected_y, **tolerance)


@pytest.mark.parametrize("shape", [(4, 6, 6000), (24000, 6)], ids=["rows", "cols"])
def test_prelu_in_place_is_bitwise_out_of_place(shape, dtype, cpu_backend):
    """prelu's forward in place and its backward into dy or into x give the out-of-place bits,
    grad_weight included, on hostile values, on two threads (the Numba kernels write such a call
    through one view: kernels/loops.py, prelu_forward_rows_in_place and the into forms)."""
    before = fa.get_num_threads()
    fa.set_num_threads(2)
    try:
        _prelu_in_place(shape, dtype)
    finally:
        fa.set_num_threads(before)


def _prelu_in_place(shape, dtype):
    x = np.resize(hostile(dtype), shape).astype(dtype)
    dy = np.resize(np.linspace(-2, 2, 999), shape).astype(dtype)
    w = np.linspace(-0.5, 0.5, shape[1]).astype(dtype)
    y = fa.prelu(x, w)
    with np.errstate(over="ignore"):  # grad_weight's float64 sums of huge terms: inf in float32
        dx, dw = fa.prelu.backward(dy, x, w)
    inplace = x.copy()
    assert fa.prelu(inplace, w, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, y)
    for which in (0, 1):
        inputs = [dy.copy(), x.copy()]
        with np.errstate(over="ignore"):
            got, got_w = fa.prelu.backward(*inputs, w, out=inputs[which])
        assert got is inputs[which]
        np.testing.assert_array_equal(got, dx)
        np.testing.assert_array_equal(got_w, dw)


def test_grad_output_or_weight_that_is_a_view_of_out(cpu_backend):
    """A maxout grad_output at the start of out (its start and strides are out's, its shape is
    not) and prelu weights inside out are read while out is written: the results of separate
    arrays. Found by review: maxout read gradients it had already overwritten, prelu weights
    it had overwritten (the C fast path refused these; the general path ran in place)."""
    rng = np.random.default_rng(11)
    for shape, axis in (((8,), 0), ((6, 10), 0), ((4, 30), 1)):
        x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64)
        dy_shape = tuple(d // 2 if k == axis else d for k, d in enumerate(shape))
        dy = rng.standard_normal(dy_shape)
        want = fa.maxout.backward(dy, x, 2, axis=axis)
        buffer = np.zeros(x.size)
        view = buffer[:dy.size].reshape(dy_shape)
        view[...] = dy
        got = fa.maxout.backward(view, x, 2, axis=axis, out=buffer.reshape(shape))
        np.testing.assert_array_equal(got, want)
    for shape, channels in (((4,), 1), ((2, 3, 600), 3), ((5, 3), 3)):
        x = rng.standard_normal(shape)
        w = rng.uniform(0.1, 0.9, channels)
        dy = rng.standard_normal(shape)
        want, (want_dx, want_dw) = fa.prelu(x, w), fa.prelu.backward(dy, x, w)
        out = np.zeros(shape)
        out.reshape(-1)[:channels] = w
        np.testing.assert_array_equal(fa.prelu(x, out.reshape(-1)[:channels], out=out), want)
        out = np.zeros(shape)
        out.reshape(-1)[:channels] = w
        dx, dw = fa.prelu.backward(dy, x, out.reshape(-1)[:channels], out=out)
        np.testing.assert_array_equal(dx, want_dx)
        np.testing.assert_array_equal(dw, want_dw)


def test_prelu_errors():
    x = np.ones((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="channels"):
        fa.prelu(x, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="channels"):
        fa.prelu(np.ones(5, np.float32), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="empty"):
        fa.prelu(x, np.ones(0, np.float32))


def test_rrelu_eval_and_training(cpu_backend):
    x = np.random.default_rng(8).standard_normal(10_000).astype(np.float32)
    lower, upper = 0.1, 0.3
    np.testing.assert_array_equal(fa.rrelu(x, lower, upper),
                                  fa.leaky_relu(x, np.float32((lower + upper) / 2)))
    y1, noise1 = fa.rrelu(x, lower, upper, training=True, generator=42, return_noise=True)
    y2, noise2 = fa.rrelu(x, lower, upper, training=True, generator=42, return_noise=True)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(noise1, noise2)
    y3 = fa.rrelu(x, lower, upper, training=True, generator=43)
    assert not np.array_equal(y1, y3)
    negative = x < 0
    assert np.all((noise1[negative] >= lower) & (noise1[negative] <= upper))
    assert np.all(noise1[~negative] == 1)
    np.testing.assert_array_equal(y1, np.where(negative, x * noise1, x))
    dy = np.ones_like(x)
    np.testing.assert_array_equal(fa.rrelu.backward(dy, x, lower, upper, training=True, noise=noise1),
                                  reference.backward("rrelu", dy.astype(np.float64), x.astype(np.float64),
                                                     lower=lower, upper=upper, training=True,
                                                     noise=noise1.astype(np.float64)).astype(np.float32))
    with pytest.raises(ValueError, match="noise"):
        fa.rrelu.backward(dy, x, training=True)
    with pytest.raises(ValueError, match="lower"):
        fa.rrelu(x, 0.5, 0.1)
    y_nan = fa.rrelu(np.array([np.nan, -1.0, 2.0], np.float32), training=True, generator=0)
    assert np.isnan(y_nan[0]) and y_nan[2] == 2.0


def test_prelu_takes_a_python_number_as_weak(cpu_backend):
    """A Python number as the weight keeps x's dtype, as NumPy's rule for Python scalars
    (np.result_type(float32 array, 0.25) is float32; leaky_relu with the same slope); a NumPy
    float64 scalar or a list is an array of its own dtype."""
    x = np.random.default_rng(3).standard_normal((2, 3, 5)).astype(np.float32)
    dy = np.ones_like(x)
    for weight in (0.25, 1, True):
        y = fa.prelu(x, weight)
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, fa.leaky_relu(x, float(weight)))
        gi, gw = fa.prelu.backward(dy, x, weight)
        assert gi.dtype == gw.dtype == np.float32 and gw.shape == ()
        want = reference.prelu_backward_from_input(dy.astype(np.float64), x.astype(np.float64),
                                                   np.float64([weight]))
        np.testing.assert_array_equal(gi, want[0].astype(np.float32))
        np.testing.assert_allclose(gw, want[1][0], rtol=1e-6)
    assert fa.prelu(x.astype(np.float16), 0.25).dtype == np.float16
    assert fa.prelu(x, np.float64(0.25)).dtype == np.float64
    assert fa.prelu(x, [0.25]).dtype == np.float64
    assert fa.prelu(np.int32([-2, 1]), 0.25).dtype == np.float64


def test_rrelu_generator_errors_name_fastact(cpu_backend):
    x = np.float32([-1.0, 2.0])
    out = np.zeros_like(x)
    for bad, error in (("x", TypeError), (1.5, TypeError), (-1, ValueError)):
        with pytest.raises(error, match="^fastact.rrelu: generator must be"):
            fa.rrelu(x, training=True, generator=bad, out=out)
        assert not out.any()


def test_rrelu_signature_lists_its_keywords():
    """inspect.signature(fa.rrelu) shows the keywords the call takes (help() and IDEs read it)."""
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    signature = inspect.signature(fa.rrelu)
    bound = signature.bind(x, 0.1, 0.3, training=True, generator=42, return_noise=True)
    assert bound.arguments["generator"] == 42 and bound.arguments["return_noise"] is True
    assert signature.parameters["generator"].default is None
    assert signature.parameters["return_noise"].default is False
    y, noise = fa.rrelu(*bound.args, **bound.kwargs)
    np.testing.assert_array_equal(y, np.where(x < 0, x * noise, x))
