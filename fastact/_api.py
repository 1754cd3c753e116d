"""The public objects: one callable per activation, with ``.backward`` and ``.saves``.

This layer checks and prepares arrays (dtype rules, ``out=``, layouts, overlap) and hands flat,
contiguous arrays of the compute dtype to a backend. Everything that can be wrong with the
arguments is raised before anything is written.
"""
import inspect
import math
import operator
import warnings

import numpy as np

from . import _backends, _fastcall
from .registry import REQUIRED


def _fail(name, exc, message):
    raise exc(f"fastact.{name}: {message}")


_GPU_TYPES = set()  # types whose every instance is a GPU array: CuPy's, Numba's device arrays


def is_gpu_array(value):
    """CuPy arrays, PyTorch CUDA tensors, Numba device arrays: anything with the CUDA interface."""
    kind = type(value)
    if kind in _GPU_TYPES:  # (CuPy builds the interface's dict on each look: ~1 us)
        return True
    try:
        found = hasattr(value, "__cuda_array_interface__")
    except RuntimeError:  # a torch CUDA tensor that requires grad refuses the interface
        return True
    if found and kind.__module__.split(".")[0] in ("cupy", "numba"):
        _GPU_TYPES.add(kind)  # (a torch tensor's type is also a CPU tensor's: looked at each time)
    return found


def _as_array(name, value, what, masked=False):
    """A NumPy array (lists and scalars converted), or a GPU array passed through untouched. A
    masked array is refused (TypeError) unless the caller keeps its mask (masked=True: the plain
    activations, masked_elementwise); elsewhere its mask would be lost without a word."""
    if isinstance(value, np.ndarray) or is_gpu_array(value):
        if not masked and isinstance(value, np.ma.MaskedArray):
            _refuse_masked(name, what)
        return value
    return np.asarray(value)


def _refuse_masked(name, what):
    hint = ("np.ma.getdata(out) and set its mask yourself" if what == "out" else
            f"np.ma.getdata({what}) or {what}.filled(...) and mask the result yourself")
    _fail(name, TypeError, f"{what} is a masked array, which {name} does not take (its mask "
          f"would be lost); pass {hint}")


_MASKED = np.ma.MaskedArray


def masked_elementwise(name, scalar_fn, inputs, params, out):
    """elementwise() for masked arrays, as a NumPy ufunc does: computed on the data everywhere,
    the result masked where any input is (a new masked array, or out's mask set when out is a
    masked array; a plain out gets the data only)."""
    data = [np.ma.getdata(a) for a in inputs]
    masked_out = isinstance(out, np.ma.MaskedArray)
    result = elementwise(name, scalar_fn, data, params, np.ma.getdata(out) if masked_out else out)
    if out is not None and not masked_out:
        return out
    mask = np.zeros(result.shape, bool)  # (shapes checked by elementwise)
    for a in inputs:
        mask |= np.ma.getmaskarray(a)
    if masked_out:
        out.unshare_mask()  # (a view's mask is its base's: NumPy gives out a mask of its own)
        out.mask = mask
        return out
    result = np.ma.MaskedArray(result, mask=mask)
    first = next(a for a in inputs if isinstance(a, np.ma.MaskedArray))
    if first._fill_value is not None:  # one set by the user: kept, as a ufunc keeps it
        try:
            result.fill_value = first.fill_value
        except (TypeError, ValueError, OverflowError):  # not this dtype's: the default
            pass
    # 0-d: a 0-d masked array (np.ma.masked where masked), as np.tanh gives, never a scalar
    return np.ma.masked if result.ndim == 0 and mask.any() else result


def gpu_backend(name, arrays):
    """The CUDA backend if these arrays live on the GPU (None for NumPy arrays); a clear TypeError
    for a mix, a GPU array on a CPU backend, or a NumPy array on the cuda backend: fastact never
    copies between host and device behind the caller's back."""
    chosen = _backends.current()
    on_gpu = [is_gpu_array(a) for a in arrays if a is not None]
    if not any(on_gpu):
        if chosen == "cuda":
            _fail(name, TypeError, "the cuda backend takes GPU arrays (CuPy, PyTorch CUDA, Numba "
                  "device arrays); got a NumPy array: copy it to the device yourself")
        return None
    if not all(on_gpu):
        _fail(name, TypeError, "got both GPU and host arrays; put them on the same device")
    if chosen not in ("auto", "cuda"):
        _fail(name, TypeError, f"got a GPU array, and the {chosen!r} backend works on NumPy "
              "arrays; use fa.backend('cuda') or copy it to the host yourself")
    return _backends.get("cuda")


def result_dtype(name, *dtypes):
    """NumPy's rule, as np.tanh: floats keep their type; bool and integers go to the smallest float
    that holds them (int8 -> float16, int16 -> float32, int32/int64 -> float64)."""
    for dt in dtypes:
        if dt.kind not in "biuf" or dt.itemsize > 8:
            _fail(name, TypeError, f"unsupported dtype {dt} (supported: float16, float32, float64, "
                  "and bool/integers, which are computed as floats like NumPy does)")
    dt = np.result_type(*dtypes)
    if dt.kind in "biu":
        dt = np.result_type(dt, np.float16)
    return dt


def compute_dtype(dt):
    """float16 is computed in float32 registers and rounded once at the end."""
    return np.dtype(np.float32) if dt.itemsize <= 4 else np.dtype(np.float64)


def check_out(name, out, shape, dtype):
    if not isinstance(out, np.ndarray):
        _fail(name, TypeError, f"out must be a numpy.ndarray, got {type(out).__name__}")
    if isinstance(out, np.ma.MaskedArray):  # (masked_elementwise passes its data)
        _refuse_masked(name, "out")
    if out.shape != tuple(shape):
        _fail(name, ValueError, f"out has shape {out.shape}, expected {tuple(shape)}")
    # either byte order is taken, as NumPy's out= (computed natively, then copied in); the kind
    # first: StringDType has no byte order to swap
    if out.dtype.kind != dtype.kind or out.dtype.newbyteorder("=") != dtype:
        _fail(name, TypeError, f"out has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        _fail(name, ValueError, "out is read-only")


def _layout(a):
    if a.flags.c_contiguous:
        return "C"
    return "F" if a.flags.f_contiguous else None


def _same_memory(a, b):
    """a and b are one array (in place): the same start, strides, dtype and shape. (A dy that
    is the start of maxout's larger out shares start and strides with it, not shape.)"""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.strides == b.strides and a.dtype == b.dtype and a.shape == b.shape)


def needs_scratch(out, inputs, work_dtype, layout):
    """True unless out can be written directly: compute dtype, the inputs' layout, and no partial
    overlap with an input (out *being* an input, in place, is fine: each element is read first)."""
    if out.dtype != work_dtype:
        return True
    if not (out.flags.f_contiguous if layout == "F" and out.ndim > 1 else out.flags.c_contiguous):
        return True
    return any(np.may_share_memory(out, a) and not _same_memory(out, a) for a in inputs)


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)  # computed as they are


def _fast_path_ok(inputs, out):
    """Same-shape contiguous float32/float64 NumPy arrays of one layout, out absent or exactly
    like them and not partially overlapping. Every check here is one cheap attribute: this path is
    most of a small call's cost (fastact/bench/NOTES.md, per-call overhead)."""
    x = inputs[0]
    if type(x) is not np.ndarray:
        return False
    dtype, flags = x.dtype, x.flags
    if not (dtype is _F32 or dtype is _F64) or not (flags.c_contiguous or flags.f_contiguous):
        return False  # (an equal dtype that is another object, e.g. with metadata: general path)
    shape, strides = x.shape, x.strides
    for a in inputs[1:]:
        if type(a) is not np.ndarray or a.dtype is not dtype or a.strides != strides or (
                a.shape != shape):
            return False
    if out is None:
        return True
    if type(out) is not np.ndarray or out.dtype is not dtype or out.strides != strides or (
            out.shape != shape):
        return False
    out_flags = out.flags
    if not out_flags.writeable:
        return False
    for a in inputs:  # two arrays that each own their memory are two allocations: no overlap
        if out is not a and not (out_flags.owndata and a.flags.owndata) and (
                np.may_share_memory(out, a)):  # (~0.2 us; the owndata test ~0.05)
            return False
    return True


def elementwise(name, scalar_fn, inputs, params, out):
    """out = scalar_fn(*inputs, *params) elementwise; inputs are same-shape arrays."""
    if _fast_path_ok(inputs, out):  # the common calls, kept short
        chosen = _backends.current()
        if chosen != "cuda":
            x = inputs[0]
            result = np.empty_like(x) if out is None else out  # x's layout, C or F
            if x.size:
                params = tuple(map(x.dtype.type, params)) if params else ()
                flat, flat_out = inputs, result  # 1-D: as they are (each ravel ~0.06 us)
                if x.ndim != 1:  # ravel in memory order: a view of each (one layout, checked above)
                    order = "C" if x.flags.c_contiguous else "F"
                    flat, flat_out = [a.ravel(order) for a in inputs], result.ravel(order)
                _backends.get(chosen).map(scalar_fn, flat, flat_out, params)
            return result
    gpu = gpu_backend(name, [*inputs, out])
    if gpu is not None:
        return gpu.elementwise(name, scalar_fn, inputs, params, out)
    shape = inputs[0].shape
    for a in inputs[1:]:
        if a.shape != shape:
            _fail(name, ValueError, f"arrays have different shapes {shape} and {a.shape}")
    dtype = result_dtype(name, *(a.dtype for a in inputs))
    work = compute_dtype(dtype)
    if out is not None:
        check_out(name, out, shape, dtype)
    if len(inputs) == 1 or all(a.flags.f_contiguous for a in inputs) or all(
            a.flags.c_contiguous for a in inputs):
        layout = _layout(inputs[0])
    else:
        layout = None
    if layout is None or any(a.dtype != work for a in inputs):
        layout = "F" if (inputs[0].flags.f_contiguous and not inputs[0].flags.c_contiguous) else "C"
        inputs = [np.asarray(a, dtype=work, order=layout) for a in inputs]
    inputs = [plain_view(a) for a in inputs]  # the result: a plain array, or out itself
    result = out
    if out is None:
        result = np.empty(shape, dtype, order=layout)
    plain = plain_view(result)
    target = plain
    if needs_scratch(plain, inputs, work, layout):
        target = np.empty(shape, work, order=layout)
    if target.size:
        flat = [a.reshape(-1, order=layout) for a in inputs]
        params = tuple(work.type(p) for p in params)
        _backends.get().map(scalar_fn, flat, target.reshape(-1, order=layout), params)
    if target is not plain:
        np.copyto(plain, target, casting="unsafe")
    return result


def plain_view(a):
    """An ndarray subclass (np.matrix, np.memmap, ...) as a plain view of its data: the kernels
    take ndarrays, and a matrix's reshape(-1) stays 2-d (maxout's 3-d and 4-d views cannot be
    matrices at all)."""
    return a if type(a) is np.ndarray else a.view(np.ndarray)


def unwrap(result, out, was_0d):
    """Like a NumPy ufunc: a 0-d NumPy input without out= gives a NumPy scalar."""
    return result[()] if out is None and was_0d and isinstance(result, np.ndarray) else result


FLOAT32_OVERFLOW = 3.4028235677973366e38  # the smallest magnitude float32 rounds to inf


def float32_overflows(value):
    """A finite value that float32 rounds to inf (PyTorch refuses such a parameter there)."""
    return FLOAT32_OVERFLOW <= abs(value) < math.inf


def _float32_changes(value):
    """Whether float32 may round this value to inf or to 0: the plan then works out what that
    means (a cheap test first: the full one cost 3.6 us a call on the Python path)."""
    return float32_overflows(value) or 0.0 < abs(value) < 2.0 ** -149


def _overflow_message(key, value):
    return f"{key}={value!r} overflows float32, the inputs' compute dtype"


def computes_in_float32(name, arrays):
    """Whether these arrays compute in float32 (float32, float16, small integers). A GPU array's
    dtype may be a torch dtype: read by its name (bfloat16 and the like: not float32 here)."""
    dtypes = []
    for a in arrays:
        dtype = a.dtype
        if not isinstance(dtype, np.dtype):
            try:
                dtype = np.dtype(str(dtype).removeprefix("torch."))
            except TypeError:
                return False
        dtypes.append(dtype)
    return compute_dtype(result_dtype(name, *dtypes)) == _F32


def refuse_float32_overflow(name, arrays, **values):
    """ValueError where these arrays compute in float32 and a value overflows it (rrelu's bounds,
    prelu's weight given as a Python number)."""
    for key, value in values.items():
        if float32_overflows(value) and computes_in_float32(name, arrays):
            _fail(name, ValueError, _overflow_message(key, value))


def _activation_named(name):
    """fastact.NAME (unpickling an activation)."""
    import fastact
    return getattr(fastact, name)


class Activation:
    """An activation: call it for the forward pass; ``.backward`` for grad_input."""

    def __init__(self, spec):
        self.spec = spec
        self.name = spec.name
        self.__name__ = self.__qualname__ = spec.name  # as a ufunc's (np.tanh.__name__)
        self.family = spec.family
        self.formula = spec.formula
        parameters = [inspect.Parameter("x", inspect.Parameter.POSITIONAL_ONLY)]
        for p in spec.params:
            default = inspect.Parameter.empty if p.default is REQUIRED else p.default
            parameters.append(inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                default=default))
        parameters.append(inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=None))
        self.__signature__ = inspect.Signature(parameters)
        self._param_signature = inspect.Signature(parameters[1:-1])
        self._scalar_names = _scalar_parameter_names(spec)
        self._choice = next((p.name for p in spec.params if p.choices), None)
        self._default_params = None  # bound once, on first use (validate may reject no default)
        self._default_plan = None  # _plan's answer for a call without parameters
        # _fastcall.Entries of the calls made (by their parameters); None: never this activation
        self._by_params = {}
        self._defaults_or_required = {p.name for p in spec.params}
        self._saves_output_names = set(inspect.signature(spec.saves_output).parameters)
        self.__doc__ = (f"fastact.{spec.name}{self.__signature__}\n\n"
                        f"{spec.summary}\n\n.. math:: {spec.formula}\n\n"
                        f"Backward: ``fastact.{self.name}.backward(grad_output, saved, ...)`` with "
                        f"saved = the forward's {self.saves}." + (
                            f"\n\nReference: {spec.reference}" if spec.reference else ""))

    def __repr__(self):
        return f"<fastact activation {self.name} ({self.family})>"

    def __reduce__(self):
        """Pickled by name, as ufuncs are (multiprocessing, joblib): the other process's own."""
        return _activation_named, (self.name,)

    def bind(self, args, kwargs):
        """The parameters as a dict, with defaults, checked; raises TypeError/ValueError."""
        if not args and not kwargs:  # the common call: nothing to check again
            if self._default_params is None:
                self._default_params = self._bind((), {})
            return dict(self._default_params)
        return self._bind(args, kwargs)

    def _bind(self, args, kwargs):
        specs = self.spec.params
        if len(args) <= len(specs) and all(k in self._defaults_or_required for k in kwargs) and not any(
                p.name in kwargs for p in specs[:len(args)]):
            params = {p.name: a for p, a in zip(specs, args)}
            params.update(kwargs)
            missing = [p.name for p in specs if p.name not in params and p.default is REQUIRED]
            if not missing:
                for p in specs:
                    params.setdefault(p.name, p.default)
                return self._check(params)
        try:  # the slow path, for Python's own error message
            bound = self._param_signature.bind(*args, **kwargs)
        except TypeError as e:
            _fail(self.name, TypeError, str(e))
        bound.apply_defaults()
        return self._check(dict(bound.arguments))

    def _check(self, params):
        for p in self.spec.params:
            value = params[p.name]
            if p.choices:
                if value not in p.choices:
                    _fail(self.name, ValueError,
                          f"{p.name} must be one of {', '.join(map(repr, p.choices))}, got {value!r}")
            elif p.name == "training":
                params[p.name] = bool(value)
            elif p.name in ("pieces", "axis"):
                try:
                    params[p.name] = operator.index(value)
                except TypeError:
                    _fail(self.name, TypeError, f"{p.name} must be an integer, got {value!r}")
            elif p.name != "weight":
                if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(
                        value, (complex, np.complexfloating)):
                    _fail(self.name, TypeError, f"{p.name} must be a real number, got {value!r}")
                try:
                    params[p.name] = float(value)
                except OverflowError:  # an int beyond float's range
                    _fail(self.name, ValueError, f"{p.name} is beyond float range: {value!r}")
                if math.isnan(params[p.name]) and not p.nan:
                    _fail(self.name, ValueError, f"{p.name} must not be NaN")
        if self.spec.validate is not None:
            try:
                self.spec.validate(**params)
            except ValueError as e:  # (registry's messages start "name: ")
                _fail(self.name, ValueError, str(e).removeprefix(f"{self.spec.name}: "))
        return params

    @property
    def saves(self):
        """Which tensor backward needs, "input" or "output", at the default parameters."""
        required = [p for p in self.spec.params if p.default is REQUIRED]
        if required:
            return "input" if not self.spec.backward_from_output else "output"
        return self.saves_for()

    def saves_for(self, *args, **kwargs):
        """Which tensor backward needs with these parameters (leaky_relu with a negative slope and
        elu/celu with a negative alpha need the input)."""
        params = self.bind(args, kwargs)
        checked = {k: v for k, v in params.items() if k in self._saves_output_names}
        return "output" if self.spec.saves_output(**checked) else "input"

    def _scalar_params(self, params):
        params = {**params, **self.spec.fixed}
        variant = params[self._choice] if self._choice else None
        return variant, [params[k] for k in self._scalar_names]

    def _plan(self, args, kwargs):
        """(forward scalar function, backward scalar function, parameter values) for these
        arguments; the plain call's plan is worked out once (it is most calls, and binding and
        choosing the backward table cost ~1 us a call)."""
        if not args and not kwargs and self._default_plan is not None:
            return self._default_plan
        params = self.bind(args, kwargs)
        variant, values = self._scalar_params(params)
        checked = {k: v for k, v in params.items() if k in self._saves_output_names}
        table = (self.spec.backward_from_output if self.spec.saves_output(**checked)
                 else self.spec.backward_from_input)
        plan = (self.spec.forward[variant], table[variant], tuple(values),
                self._float32_problem(params, values) if any(
                    map(_float32_changes, values)) else None)
        if not args and not kwargs:
            self._default_plan = plan
        return plan

    def _float32_problem(self, params, values):
        """(exception type, message) if these parameters cannot be used in float32 (float32 and
        float16 inputs compute in it), else None: a value that overflows it (as PyTorch refuses),
        or one that rounds to a value the checks refuse (softplus(beta=1e-300): 0)."""
        names = [n for n in self._scalar_names if n in params]
        cast = {}
        for name, value in zip(self._scalar_names, values):
            if name in params:
                if float32_overflows(value):
                    return ValueError, _overflow_message(name, value)
                cast[name] = float(np.float32(value))
        changed = [n for n in names if cast[n] != params[n]]
        if changed and self.spec.validate is not None:
            try:
                self.spec.validate(**{**params, **cast})
            except ValueError as e:
                return ValueError, (f"{str(e).removeprefix(f'{self.spec.name}: ')} ("
                                    + ", ".join(f"{n}={params[n]!r} is {cast[n]!r}" for n in changed)
                                    + " in float32, the inputs' compute dtype)")
        return None

    def _refuse_in_float32(self, problem, arrays):
        """Raise the plan's float32 problem if these arrays compute in float32."""
        if computes_in_float32(self.name, arrays):
            _fail(self.name, *problem)

    def __call__(self, x, *args, out=None, **kwargs):
        if self._by_params:  # parameters used before: the extension's path (_fastcall.py)
            entries = self._by_params.get(_key(args, kwargs) if args or kwargs else ())
            if entries is not None:
                result = entries.forward(x, out)
                if result is not NotImplemented:
                    return result
        forward, _, values, problem = self._plan(args, kwargs)
        x = _as_array(self.name, x, "x", masked=True)
        if problem is not None:
            self._refuse_in_float32(problem, [x])
        if isinstance(x, _MASKED) or isinstance(out, _MASKED):
            return masked_elementwise(self.name, forward, [x], values, out)
        result = elementwise(self.name, forward, [x], values, out)
        if self._by_params is not None:
            self._register(forward, 1, x, args, kwargs, values)
        return unwrap(result, out, x.ndim == 0)

    def backward(self, grad_output, saved, *args, out=None, **kwargs):
        """grad_input = grad_output * f'(x), from the tensor named by ``saves_for(params)``."""
        if self._by_params:
            entries = self._by_params.get(_key(args, kwargs) if args or kwargs else ())
            if entries is not None:
                result = entries.backward(grad_output, saved, out)
                if result is not NotImplemented:
                    return result
        _, backward, values, problem = self._plan(args, kwargs)
        dy = _as_array(self.name, grad_output, "grad_output", masked=True)
        saved = _as_array(self.name, saved, "saved", masked=True)
        if problem is not None:
            self._refuse_in_float32(problem, [dy, saved])
        if isinstance(dy, _MASKED) or isinstance(saved, _MASKED) or isinstance(out, _MASKED):
            return masked_elementwise(self.name, backward, [dy, saved], values, out)
        result = elementwise(self.name, backward, [dy, saved], values, out)
        if self._by_params is not None:
            self._register(backward, 2, dy, args, kwargs, values)
        return unwrap(result, out, dy.ndim == 0)

    def _fast_call(self, x, out, args, kwargs, saved=None):
        """The fast entries' call with these parameters (saved given: the backward's), or
        NotImplemented (not made for them yet, or not a call they take)."""
        entries = self._by_params.get(_key(args, kwargs) if args or kwargs else ())
        if entries is None:
            return NotImplemented
        return entries.forward(x, out) if saved is None else entries.backward(x, saved, out)

    def _register(self, scalar_fn, n_inputs, x, args, kwargs, values):
        """After a call on the Python path: make the fast entries of calls with these parameters
        (once the extension is loaded; for up to _MAX_FAST parameter sets), and give them the
        kernel this call compiled (the classes of _rowwise.py call it only for calls that are
        elementwise maps: rrelu in eval mode)."""
        if type(x) is not np.ndarray or not (x.dtype is _F32 or x.dtype is _F64):
            return
        key = _key(args, kwargs) if args or kwargs else ()
        if key is None:  # parameters of other types: always the Python path
            return
        try:
            entries = self._by_params.get(key)
            if entries is None:
                if len(self._by_params) >= _MAX_FAST:
                    return
                entries = _fastcall.entries(values)
                if entries is False:  # no extension in this process
                    self._by_params = None
                    return
                if entries is None:  # being built
                    return
                self._by_params[key] = entries
            _fastcall.register(entries.forward if n_inputs == 1 else entries.backward,
                               scalar_fn, n_inputs, x.dtype)
        except Exception as e:  # noqa: BLE001  this call's result is written: the Python path
            self._by_params = None  # for this activation from now on, and say why once
            warnings.warn(f"fastact: {self.name}'s calls take the Python path: the per-call fast "
                          f"path failed ({type(e).__name__}: {e})", RuntimeWarning, stacklevel=3)


_KEYWORDS = object()  # (a key's mark: positional parameters are never this object)
_KEY_TYPES = (int, bool, str)
_MAX_FAST = 32  # parameter sets with fast entries, per activation


def _key(args, kwargs):
    """The fast entries' key of a call's parameters, or None (never cached): each value by its
    exact type, and a float's zero by its sign, so that only calls the Python path checked alike
    share entries (0.5 and 0.5+0j or Fraction(1, 2) compare equal and the latter are errors
    there; 0.0 and -0.0 compare equal and give different results)."""
    key = []
    for a in args:
        t = type(a)
        if t is float:
            if a != a:  # NaN (threshold's value): never equal to itself as a key
                return None
            key.append((a, a == 0.0 and math.copysign(1.0, a) < 0.0))
        elif t in _KEY_TYPES:
            key.append((t, a))
        else:
            return None
    if kwargs:
        key.append(_KEYWORDS)
        for k, v in kwargs.items():
            t = type(v)
            if t is float:
                if v != v:
                    return None
                key.append((k, v, v == 0.0 and math.copysign(1.0, v) < 0.0))
            elif t in _KEY_TYPES:
                key.append((k, t, v))
            else:
                return None
    return tuple(key)


def _scalar_parameter_names(spec):
    names = [p.name for p in spec.params if not p.choices]
    if not spec.forward:  # row-wise: no scalar function
        return names
    fn = next(iter(spec.forward.values()))
    return [n for n in list(inspect.signature(fn).parameters)[1:] if n in names or n in spec.fixed]
