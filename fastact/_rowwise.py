"""The activations that are not a plain map: prelu (a weight per channel), rrelu (random slopes),
and the row-wise softmax, log_softmax and maxout."""
import inspect
import math
import warnings

import numpy as np

from . import _backends, _fastcall, registry
from ._api import (Activation, _as_array, _fail, _fast_path_ok, check_out, compute_dtype,
                   elementwise, gpu_backend, needs_scratch, plain_view,
                   refuse_float32_overflow, result_dtype, unwrap)


def _run(name, inputs, out_shape, out, compute, dtype=None):
    """Contiguous compute-dtype copies of the inputs (views when they already are), an output that
    is out itself when it can be, else a scratch array copied into out; compute(inputs, target)."""
    dtype = dtype or result_dtype(name, *(a.dtype for a in inputs))
    work = compute_dtype(dtype)
    if out is not None:
        check_out(name, out, out_shape, dtype)
    inputs = [np.ascontiguousarray(a, dtype=work) for a in inputs]
    result = out if out is not None else np.empty(out_shape, dtype)
    plain = plain_view(result)
    target = plain
    if needs_scratch(plain, inputs, work, "C"):
        target = np.empty(out_shape, work)
    if target.size and all(a.size for a in inputs):
        compute(inputs, target)
    if target is not plain:
        np.copyto(plain, target, casting="unsafe")
    return result


def _axis(name, axis, ndim):
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        _fail(name, ValueError, f"axis {axis} is out of bounds for an array of dimension {ndim}")
    return axis % max(ndim, 1)


class _FastRows:
    """The fast entries of an activation's row kernels (fastact/_fastcall.c, Rows): [forward,
    backward], made and given their kernels after Python-path calls; None: never."""
    _row_entries = (None, None)

    def _register_rows(self, slot, kind, kernel, x, **sizes):
        """After a Python-path call whose rows are the entry's (softmax's last axis; prelu by
        rows) on x, that ran the row kernel of x's dtype: the entry gets that kernel."""
        if self._row_entries is None or type(x) is not np.ndarray or not (
                x.dtype is _F32 or x.dtype is _F64):
            return
        try:
            entry = self._row_entries[slot]
            if entry is None:
                entry = _fastcall.rows_entry(kind, **sizes)
                if entry is False:  # no extension in this process
                    self._row_entries = None
                    return
                if entry is None:  # being built
                    return
                entries = list(self._row_entries)
                entries[slot] = entry
                self._row_entries = entries
            _fastcall.register_rows(entry, kernel, x.dtype)
        except Exception as e:  # noqa: BLE001  this call's result is written: the Python path
            self._row_entries = None
            warnings.warn(f"fastact: {self.name}'s calls take the Python path: the per-call fast "
                          f"path failed ({type(e).__name__}: {e})", RuntimeWarning, stacklevel=3)


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
# The fast entries' split cost for softmax / log_softmax (forward, backward): their calls are
# split over threads from FAST_SPLIT_SIZE / cost elements (2^14, 2^15). Rows of 1024, one thread
# against the split call (Zen 4 VM, two runs, noisy): 2^14 forwards 7.9 -> 6.7 us (log_softmax),
# 13.3 -> 9.2 (softmax), backwards 3.1 -> 4.1-4.6 (softmax), 6.3 -> 5.6-7.8 (log_softmax);
# 2^15 forwards 15.0-16.4 -> 9.1-9.5, backwards 6.3 -> 4.9, 12.4 -> 7.9; 2^13 all slower split.
_ROW_SPLIT_COST = (4, 2)


def _last_axis(x, args, kwargs):
    """Whether a softmax call's only parameter names x's last axis (a Python int: -1, or ndim - 1
    of a NumPy array), the rows of the fast entries."""
    if kwargs:
        if args or len(kwargs) != 1 or "axis" not in kwargs:
            return False
        axis = kwargs["axis"]
    elif len(args) == 1:
        axis = args[0]
    else:
        return False
    return type(axis) is int and (axis == -1 or (type(x) is np.ndarray and axis == x.ndim - 1))


class _RowActivation(_FastRows, Activation):
    """softmax / log_softmax: rows along ``axis``, each handled in one pass after finding its max."""

    def __call__(self, x, *args, out=None, **kwargs):
        entries = self._row_entries
        last = (not args and not kwargs) or _last_axis(x, args, kwargs)
        if last and entries is not None and entries[0] is not None:
            result = entries[0](x, out)
            if result is not NotImplemented:
                return result
        result = self._forward(x, args, kwargs, out)
        if last:
            self._register_rows(0, _fastcall.ROWS_FORWARD, f"{self.name}_rows", x,
                                cost=_ROW_SPLIT_COST[0])
        return result

    def backward(self, grad_output, saved, *args, out=None, **kwargs):
        entries = self._row_entries
        last = (not args and not kwargs) or _last_axis(grad_output, args, kwargs)
        if last and entries is not None and entries[1] is not None:
            result = entries[1](grad_output, saved, out)
            if result is not NotImplemented:
                return result
        result = self._backward(grad_output, saved, args, kwargs, out)
        if last and type(saved) is np.ndarray and type(grad_output) is np.ndarray and (
                saved.dtype == grad_output.dtype):  # (the kernel it ran is of that dtype)
            self._register_rows(1, _fastcall.ROWS_BACKWARD, f"{self.name}_backward_rows",
                                grad_output, cost=_ROW_SPLIT_COST[1])
        return result

    def _forward(self, x, args, kwargs, out):
        params = self.bind(args, kwargs)
        fast = self._fast(f"{self.name}_rows", [x], params["axis"], out)
        if fast is not None:
            return fast
        x = _as_array(self.name, x, "x")
        gpu = gpu_backend(self.name, [x, out])
        if gpu is not None:
            return gpu.rowwise(self.name, "forward", [x], params, out)
        axis = params["axis"]
        return self._rows(f"{self.name}_rows", [x], axis, out)

    def _backward(self, grad_output, saved, args, kwargs, out):
        params = self.bind(args, kwargs)
        fast = self._fast(f"{self.name}_backward_rows", [grad_output, saved], params["axis"], out)
        if fast is not None:
            return fast
        dy = _as_array(self.name, grad_output, "grad_output")
        y = _as_array(self.name, saved, "saved")
        gpu = gpu_backend(self.name, [dy, y, out])
        if gpu is not None:
            return gpu.rowwise(self.name, "backward", [dy, y], params, out)
        axis = params["axis"]
        if dy.shape != y.shape:
            _fail(self.name, ValueError, f"arrays have different shapes {dy.shape} and {y.shape}")
        return self._rows(f"{self.name}_backward_rows", [dy, y], axis, out)

    @staticmethod
    def _fast(kernel, inputs, axis, out):
        """The common call, kept short (the general path's axis moves and checks cost ~12 us):
        C-contiguous float32/float64 NumPy arrays of one shape, rows along the last axis, out
        absent or exactly like them and not partially overlapping; None for any other call."""
        x = inputs[0]
        if not _fast_path_ok(inputs, out) or not x.flags.c_contiguous or x.ndim == 0 or (
                axis not in (-1, x.ndim - 1)) or not x.size:
            return None
        chosen = _backends.current()
        if chosen == "cuda":
            return None
        result = np.empty_like(x) if out is None else out
        n = x.shape[-1]
        _backends.get(chosen).rows(kernel, (*[a.reshape(-1, n) for a in inputs],
                                            result.reshape(-1, n)), x.size // n, n)
        return result

    def _rows(self, kernel, inputs, axis, out):
        if inputs[0].ndim == 0:  # one row of one element
            if out is not None:
                check_out(self.name, out, (), result_dtype(self.name, *(a.dtype for a in inputs)))
            flat_out = None if out is None else out.reshape(1)
            result = self._rows(kernel, [a.reshape(1) for a in inputs], axis, flat_out)
            return out if out is not None else result[0]
        shape = inputs[0].shape
        axis = _axis(self.name, axis, len(shape))
        dtype = result_dtype(self.name, *(a.dtype for a in inputs))
        if out is not None:
            check_out(self.name, out, shape, dtype)
        result = out if out is not None else np.empty(shape, dtype)
        moved = [np.moveaxis(a, axis, -1) for a in inputs]
        n = shape[axis]

        def compute(arrays, target):
            rows = [a.reshape(-1, n) for a in arrays]
            _backends.get().rows(kernel, (*rows, target.reshape(-1, n)), rows[0].shape[0], n)
        _run(self.name, moved, moved[0].shape, np.moveaxis(result, axis, -1), compute, dtype)
        return result


class _Maxout(Activation):
    """maxout(x, pieces, axis=1): the max over groups of ``pieces`` consecutive entries on axis."""

    def _geometry(self, x, pieces, axis):
        if pieces < 1:
            _fail(self.name, ValueError, f"pieces must be >= 1, got {pieces}")
        if x.ndim == 0:
            _fail(self.name, ValueError, "needs an array with at least one dimension")
        axis = _axis(self.name, axis, x.ndim)
        if x.shape[axis] % pieces:
            _fail(self.name, ValueError, f"x.shape[{axis}] = {x.shape[axis]} is not a multiple "
                  f"of pieces = {pieces}")
        outer, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1:])
        out_shape = x.shape[:axis] + (x.shape[axis] // pieces,) + x.shape[axis + 1:]
        return (outer, x.shape[axis] // pieces, pieces, inner), out_shape

    def __call__(self, x, *args, out=None, **kwargs):
        params = self.bind(args, kwargs)
        x = _as_array(self.name, x, "x")
        gpu = gpu_backend(self.name, [x, out])
        if gpu is not None:
            return gpu.rowwise(self.name, "forward", [x], params, out)
        view, out_shape = self._geometry(x, params["pieces"], params["axis"])

        def compute(arrays, target):
            _backends.get().rows("maxout_forward_rows",
                                 (arrays[0].reshape(view), target.reshape(view[:2] + view[3:])),
                                 view[0], math.prod(view[1:]))
        return _run(self.name, [x], out_shape, out, compute)

    def backward(self, grad_output, saved, *args, out=None, **kwargs):
        params = self.bind(args, kwargs)
        dy = _as_array(self.name, grad_output, "grad_output")
        x = _as_array(self.name, saved, "saved")
        gpu = gpu_backend(self.name, [dy, x, out])
        if gpu is not None:
            return gpu.rowwise(self.name, "backward", [dy, x], params, out)
        view, out_shape = self._geometry(x, params["pieces"], params["axis"])
        if dy.shape != out_shape:
            _fail(self.name, ValueError, f"grad_output has shape {dy.shape}, expected {out_shape}")

        def compute(arrays, target):
            _backends.get().rows("maxout_backward_rows",
                                 (arrays[0].reshape(view[:2] + view[3:]), arrays[1].reshape(view),
                                  target.reshape(view)), view[0], math.prod(view[1:]))
        return _run(self.name, [dy, x], x.shape, out, compute)


def _channel_rows(name, x, weight):
    """(rows, inner) with channel = row % weight.size, for prelu's per-channel weight on axis 1."""
    channels = weight.size
    if channels == 0:
        _fail(name, ValueError, "weight is empty")
    if channels != 1 and (x.ndim < 2 or x.shape[1] != channels):
        _fail(name, ValueError, f"weight has {channels} elements but x has "
              f"{x.shape[1] if x.ndim >= 2 else 'no'} channels (axis 1)")
    if x.ndim >= 2 and channels > 1:
        inner = math.prod(x.shape[2:])
    else:
        inner = x.size // math.gcd(x.size, 1024) if x.size else 1  # any split works for one weight
    return (x.size // inner if inner else 0, inner)


class _Columns:
    """prelu on x of shape (N, C, *rest) where rest holds fewer than BELOW elements (x of shape
    (N, C) above all): one row per (sample, channel), the row kernels' layout, would run loops a
    few elements long, so rows here are whole samples, k of them joined so that a row holds at
    least ROW elements and a multiple of 16 (a sample of ROW or more: a row each), each element
    with its own weight from the per-channel weights repeated to the row's length (the
    prelu_*_cols kernels). A last part of fewer than k samples goes as rows of one sample each."""
    BELOW = 512
    ROW = 2048
    # The fast path (fastact/_fastcall.c, Rows) runs rows from SHORT elements in arrays of up to
    # SHORT_SIZE elements (in cache): there the row path measured faster from rows of 64 (2^20,
    # forward: 131.8 against 67.8 GB/s), and it skips the columns' per-element weights, made
    # per call in Python (~20 us: prelu on (1, 16, 64) 24.4 us a call, PyTorch's 2.2).
    SHORT = 64
    SHORT_SIZE = 1 << 20

    def __init__(self, inner, period, samples, k, weights):
        self.inner, self.period, self.samples, self.k, self.weights = inner, period, samples, k, \
            weights

    @classmethod
    def of(cls, x, w, rows, forward=False):
        """The layout for x and its compute-dtype weights w, or None for the row kernels' (the
        forward's as the fast path's: SHORT above)."""
        samples, inner = (x.shape[0], rows[1]) if x.ndim >= 2 else (0, 0)
        if w.size == 1 or samples == 0 or inner == 0 or inner >= cls.BELOW or (
                forward and inner >= cls.SHORT and x.size <= cls.SHORT_SIZE):
            return None
        period = w.size * inner
        step = 16 // math.gcd(period, 16)  # rows of whole 64-byte lines (float32) keep alignment
        k = 1 if period >= cls.ROW else min(samples, -(-cls.ROW // (period * step)) * step)
        return cls(inner, period, samples, k, np.tile(np.repeat(w, inner), k))

    def parts(self, *arrays):
        """[(views of each array, their weights)] for the joined rows and the last samples."""
        main = self.samples // self.k * self.k
        flat = [a.reshape(-1) for a in arrays]
        parts = [([f[:main * self.period].reshape(main // self.k, self.k * self.period)
                   for f in flat], self.weights)]
        if main < self.samples:
            parts.append(([f[main * self.period:].reshape(self.samples - main, self.period)
                           for f in flat], self.weights[:self.period]))
        return parts


def _weak(weight):
    """A Python number as prelu's weight takes x's dtype, as NumPy's rule for Python scalars
    (np.result_type(float32 array, 0.25) is float32; fa.leaky_relu(x, 0.25) likewise)."""
    return type(weight) in (int, float, bool)


def _weight_apart(weight, dtype, out):
    """prelu's weights as a contiguous array of the compute dtype, copied where they share
    memory with out (the kernels write out while they read the weights)."""
    w = np.ascontiguousarray(weight, dtype=compute_dtype(dtype))
    if isinstance(out, np.ndarray) and np.may_share_memory(w, out):
        w = w.copy()
    return w


class _Prelu(_FastRows, Activation):
    def __call__(self, x, weight, *, out=None):
        entries = self._row_entries
        if entries is not None and entries[0] is not None:
            result = entries[0](x, weight, out)
            if result is not NotImplemented:
                return result
        result, by_rows = self._forward(x, weight, out)
        if by_rows:  # (the row kernel of x's dtype ran: the fast entry's)
            self._register_rows(0, _fastcall.ROWS_PRELU, "prelu_forward_rows", x,
                                below=_Columns.BELOW, short=_Columns.SHORT,
                                short_size=_Columns.SHORT_SIZE)
        return result

    def _forward(self, x, weight, out):
        """(the result, whether it ran the row kernel of x's dtype)"""
        x = _as_array(self.name, x, "x")
        weak = _weak(weight)
        if weak:
            refuse_float32_overflow(self.name, [x], weight=weight)
        weight = _as_array(self.name, weight, "weight")
        gpu = gpu_backend(self.name, [x, weight, out])
        if gpu is not None:
            return gpu.rowwise(self.name, "forward", [x, weight], {}, out), False
        weight = weight.reshape(-1)
        rows = _channel_rows(self.name, x, weight)
        dtype = result_dtype(self.name, x.dtype, *([] if weak else [weight.dtype]))
        w = _weight_apart(weight, dtype, out)

        columns = _Columns.of(x, w, rows, forward=True)

        def compute(arrays, target):
            if columns is None:
                _backends.get().rows("prelu_forward_rows",
                                     (arrays[0].reshape(rows), w, target.reshape(rows)), *rows)
                return
            for view, weights in columns.parts(arrays[0], target):
                _backends.get().rows("prelu_forward_cols", (view[0], weights, view[1]),
                                     *view[0].shape)
        result = unwrap(_run(self.name, [x], x.shape, out, compute, dtype), out, x.ndim == 0)
        return result, columns is None and x.size > 0 and dtype == x.dtype

    def backward(self, grad_output, saved, weight, *, out=None):
        """(grad_input, grad_weight); grad_weight has weight's shape and dtype."""
        dy = _as_array(self.name, grad_output, "grad_output")
        x = _as_array(self.name, saved, "saved")
        weak = _weak(weight)
        if weak:
            refuse_float32_overflow(self.name, [dy, x], weight=weight)
        weight_in = _as_array(self.name, weight, "weight")
        gpu = gpu_backend(self.name, [dy, x, weight_in, out])
        if gpu is not None:
            return gpu.rowwise(self.name, "backward", [dy, x, weight_in], {}, out)
        weight = weight_in.reshape(-1)
        if dy.shape != x.shape:
            _fail(self.name, ValueError, f"arrays have different shapes {dy.shape} and {x.shape}")
        rows = _channel_rows(self.name, x, weight)
        dtype = result_dtype(self.name, dy.dtype, x.dtype, *([] if weak else [weight.dtype]))
        w = _weight_apart(weight, dtype, out)
        columns = _Columns.of(x, w, rows)
        row_sums = np.zeros(rows[0] if columns is None else 0, np.float64)
        column_sums = []

        def compute(arrays, target):
            if columns is None:
                _backends.get().rows("prelu_backward_rows", (
                    arrays[0].reshape(rows), arrays[1].reshape(rows), w, target.reshape(rows),
                    row_sums), *rows)
                return
            for view, weights in columns.parts(arrays[0], arrays[1], target):
                n_rows, length = view[0].shape
                block = max(1, min(64, n_rows // 16))
                partial = np.empty((-(-n_rows // block), length), np.float64)
                _backends.get().rows("prelu_backward_cols", (*view[:2], weights, view[2], partial,
                                     block), partial.shape[0], block * length)
                with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, as torch
                    column_sums.append(partial.sum(axis=0).reshape(-1, weight.size,
                                                                   columns.inner))
        grad_input = _run(self.name, [dy, x], x.shape, out, compute, dtype)
        if columns is not None:
            with np.errstate(invalid="ignore", over="ignore"):
                per_channel = sum(c.sum(axis=(0, 2)) for c in column_sums)
        else:
            per_channel = row_sums.reshape(-1, weight.size).sum(axis=0) if row_sums.size else \
                np.zeros(weight.size)
        grad_weight = per_channel.astype(dtype if weak else result_dtype(self.name, weight.dtype)
                                         ).reshape(weight_in.shape)
        return unwrap(grad_input, out, x.ndim == 0), grad_weight


class _Rrelu(Activation):
    """Randomized leaky ReLU. In training, slopes are drawn from U(lower, upper) per element with
    ``generator`` (a numpy.random.Generator or a seed: the same seed gives the same slopes);
    ``return_noise=True`` also returns them (1 where x > 0, as PyTorch's noise), which backward needs."""

    def __init__(self, spec):
        super().__init__(spec)
        keyword = inspect.Parameter.KEYWORD_ONLY
        self.__signature__ = self.__signature__.replace(parameters=[
            *self.__signature__.parameters.values(),
            inspect.Parameter("generator", keyword, default=None),
            inspect.Parameter("return_noise", keyword, default=False)])
        rest = self.__doc__.split("\n", 1)[1]  # the docstring's signature line, these too
        self.__doc__ = f"fastact.{self.name}{self.__signature__}\n{rest}"

    def __call__(self, x, *args, out=None, generator=None, return_noise=False, **kwargs):
        if self._by_params and generator is None and not return_noise:
            result = self._fast_call(x, out, args, kwargs)  # in eval mode: leaky_relu's kernel
            if result is not NotImplemented:
                return result
        params = self.bind(args, kwargs)
        x = _as_array(self.name, x, "x")
        refuse_float32_overflow(self.name, [x], lower=params["lower"], upper=params["upper"])
        gpu = gpu_backend(self.name, [x, out])
        if gpu is not None and params["training"]:
            return gpu.rowwise(self.name, "forward", [x], {
                **params, "generator": generator, "return_noise": return_noise}, out)
        lower, upper = params["lower"], params["upper"]
        noise = None
        if not params["training"]:
            slope = (lower + upper) / 2
            result = elementwise(self.name, registry.leaky_relu_forward, [x], [slope], out)
            if generator is None and not return_noise and self._by_params is not None:
                self._register(registry.leaky_relu_forward, 1, x, args, kwargs, [slope])
        else:
            dtype = result_dtype(self.name, x.dtype)
            if out is not None:
                check_out(self.name, out, x.shape, dtype)
            try:
                rng = np.random.default_rng(generator)
            except (TypeError, ValueError) as e:  # NumPy's own words, under fastact's name
                _fail(self.name, type(e), f"generator must be a numpy.random.Generator, a "
                      f"BitGenerator, a seed (a non-negative integer) or None, got "
                      f"{generator!r} ({e})")
            noise = rng.uniform(lower, upper, size=x.shape).astype(dtype)
            with np.errstate(invalid="ignore"):
                noise[~(x <= 0)] = 1  # NaN inputs too, as PyTorch
            result = elementwise(self.name, registry.leaky_relu_forward, [x, noise], [], out)
        result = unwrap(result, out, x.ndim == 0)
        return (result, noise) if return_noise else result

    def backward(self, grad_output, saved, *args, out=None, noise=None, **kwargs):
        if self._by_params and noise is None:
            result = self._fast_call(grad_output, out, args, kwargs, saved)
            if result is not NotImplemented:
                return result
        params = self.bind(args, kwargs)
        dy = _as_array(self.name, grad_output, "grad_output")
        x = _as_array(self.name, saved, "saved")
        refuse_float32_overflow(self.name, [dy, x], lower=params["lower"], upper=params["upper"])
        if not params["training"]:
            slope = (params["lower"] + params["upper"]) / 2
            result = elementwise(self.name, registry.leaky_relu_backward, [dy, x], [slope], out)
            if noise is None and self._by_params is not None:
                self._register(registry.leaky_relu_backward, 2, dy, args, kwargs, [slope])
        else:
            if noise is None:
                _fail(self.name, ValueError, "training=True needs the noise the forward drew: "
                      "y, noise = fastact.rrelu(x, training=True, return_noise=True)")
            noise = _as_array(self.name, noise, "noise")
            result = elementwise(self.name, registry.leaky_relu_backward, [dy, x, noise], [], out)
        return unwrap(result, out, dy.ndim == 0)


softmax = _RowActivation(registry.SPECS["softmax"])
log_softmax = _RowActivation(registry.SPECS["log_softmax"])
maxout = _Maxout(registry.SPECS["maxout"])
prelu = _Prelu(registry.SPECS["prelu"])
rrelu = _Rrelu(registry.SPECS["rrelu"])
