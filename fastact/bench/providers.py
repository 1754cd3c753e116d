"""Who is measured: fastact's backends and the peers, each turning a Case and its inputs into a
callable ``run(i)`` that computes one call on buffer set ``i``.

Every provider writes into a preallocated output where its API allows it (fastact ``out=``, numexpr
``out=``, PyTorch's ``.out``/``.grad_input`` overloads of the aten ops that ``torch.nn.functional``
and autograd call); where it does not (NumPy written as a user writes it, composite PyTorch ops,
JAX), the row says ``out_preallocated: false``. A provider that is not installed, or a case it
cannot compute, raises Skip with the reason, which the report prints; nothing crashes the run.
"""
import abc
import contextlib
import importlib
import math
import re
import types

import numpy as np

from .. import registry
from .cases import fastact_backward, fastact_forward


class Skip(Exception):
    """This provider cannot measure this (not installed, no such op, no device): the message says why."""


def _version(module_name):
    try:
        return importlib.import_module(module_name).__version__
    except Exception:
        return None


def full_params(case):
    """The case's parameters with the registry's defaults filled in."""
    spec = registry.SPECS[case.activation]
    params = {p.name: p.default for p in spec.params if p.default is not registry.REQUIRED}
    params.update(spec.fixed)
    params.update(case.params)
    return params


class Provider(abc.ABC):
    name = ""  # as written on the command line and in every result row
    device = "cpu"
    module = None  # the package whose version the rows carry

    @property
    def settle_s(self):
        """How long this provider's threads may spin on after a sample (timing.py: the next item
        runs untimed that long first): on the CPU 1 ms, longer than fastact's pool spins after a
        call (~50 us); none on a GPU."""
        return 1e-3 if self.device == "cpu" else 0.0

    @property
    def version(self):
        return _version(self.module) if self.module else None

    @property
    def label(self):
        return f"{self.name} {self.version}" if self.version else self.name

    def unavailable(self):
        """None if usable here, else the reason."""
        try:
            importlib.import_module(self.module)
        except Exception as e:
            return f"{self.module} not installed ({type(e).__name__}: {e})"
        return None

    def set_threads(self, n):
        pass

    def context(self):
        """Entered around each timed sample (fastact's backend choice)."""
        return contextlib.nullcontext()

    def to_device(self, array):
        return array

    def synchronize(self):
        pass

    def release(self):
        """Drop what this provider keeps for the group that just ended (device copies)."""
        gpu = getattr(self, "gpu", None)
        if gpu is not None:
            gpu.clear()

    @abc.abstractmethod
    def prepare(self, case, sets, outs):
        """run(i) computing case on sets[i] (dicts of host arrays) into outs[i]; raises Skip."""

    out_preallocated = True


# --- fastact -------------------------------------------------------------------------------------------

class Fastact(Provider):
    module = "fastact"

    def __init__(self, backend):
        self.backend = backend
        self.name = f"fastact:{backend}"
        self.device = "cuda" if backend == "cuda" else "cpu"
        self.gpu = GpuArrays() if backend == "cuda" else None

    def unavailable(self):
        import fastact as fa
        ok, reason = fa.backends().get(self.backend, (False, "unknown backend"))
        if not ok:
            return reason
        if self.gpu is not None:
            return self.gpu.unavailable()
        return None

    def set_threads(self, n):
        import fastact as fa
        fa.set_num_threads(n)

    def context(self):
        import fastact as fa
        return fa.backend(self.backend)

    def to_device(self, array):
        return array if self.gpu is None else self.gpu.to_device(array)

    def synchronize(self):
        if self.gpu is not None:
            self.gpu.synchronize()

    def prepare(self, case, sets, outs):
        fn = fastact_forward if case.direction == "forward" else fastact_backward
        sets = [{k: self.to_device(v) for k, v in s.items()} for s in sets]
        outs = [self.to_device(o) for o in outs]
        return lambda i: fn(case, sets[i], out=outs[i])


# --- NumPy as a user writes it (and CuPy, the same code on the GPU) -------------------------------------

SQRT_2 = math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_C = registry.GELU_TANH_C
SELU_ALPHA, SELU_SCALE = registry.SELU_ALPHA, registry.SELU_SCALE


def _gelu_tanh_parts(m, x):
    t = m.tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x))
    return t, SQRT_2_OVER_PI * (1 + 3 * GELU_C * x * x)


def _mish_parts(m, x):
    t = m.tanh(m.log1p(m.exp(x)))
    return t, 1 / (1 + m.exp(-x))


def _softmax_user(m, x):
    e = m.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _maxout_backward_user(m, dy, x, pieces):
    groups = x.reshape(x.shape[0], -1, pieces)
    dx = m.zeros_like(groups)
    m.put_along_axis(dx, groups.argmax(axis=-1)[..., None], dy[..., None], axis=-1)
    return dx.reshape(x.shape)


# (m: the array module with erf; saved is y or x as fastact's .saves says.) The formulas a user
# writes from the textbook definitions: no fusing, no out=, stable where a user would know to be.
USER_FORWARD = {
    "sigmoid": lambda m, x, **p: 1 / (1 + m.exp(-x)),
    "tanh": lambda m, x, **p: m.tanh(x),
    "elu": lambda m, x, alpha, **p: m.where(x > 0, x, alpha * m.expm1(x)),
    "selu": lambda m, x, **p: SELU_SCALE * m.where(x > 0, x, SELU_ALPHA * m.expm1(x)),
    "celu": lambda m, x, alpha, **p: m.where(x > 0, x, alpha * m.expm1(x / alpha)),
    "gelu": lambda m, x, **p: 0.5 * x * (1 + m.erf(x / SQRT_2)),
    "gelu_tanh": lambda m, x, **p: 0.5 * x * (1 + _gelu_tanh_parts(m, x)[0]),
    "silu": lambda m, x, **p: x / (1 + m.exp(-x)),
    "mish": lambda m, x, **p: x * m.tanh(m.log1p(m.exp(x))),
    "softplus": lambda m, x, beta, threshold, **p: m.where(
        beta * x > threshold, x, m.log1p(m.exp(beta * x)) / beta),
    "logsigmoid": lambda m, x, **p: -m.logaddexp(0, -x),
    "relu": lambda m, x, **p: m.maximum(x, 0),
    "leaky_relu": lambda m, x, negative_slope, **p: m.where(x > 0, x, negative_slope * x),
    "hardtanh": lambda m, x, min_val, max_val, **p: m.clip(x, min_val, max_val),
    "relu6": lambda m, x, **p: m.clip(x, 0, 6),
    "hardsigmoid": lambda m, x, **p: m.clip(x / 6 + 0.5, 0, 1),
    "hardswish": lambda m, x, **p: x * m.clip(x + 3, 0, 6) / 6,
    "threshold": lambda m, x, threshold, value, **p: m.where(x > threshold, x, value),
    "softsign": lambda m, x, **p: x / (1 + m.abs(x)),
    "prelu": lambda m, x, weight, **p: m.where(x > 0, x, weight.reshape(1, -1, 1) * x),
    "rrelu": lambda m, x, lower, upper, **p: m.where(x > 0, x, (lower + upper) / 2 * x),
    "softmax": lambda m, x, **p: _softmax_user(m, x),
    "log_softmax": lambda m, x, **p: x - x.max(axis=-1, keepdims=True) - m.log(
        m.exp(x - x.max(axis=-1, keepdims=True)).sum(axis=-1, keepdims=True)),
    "maxout": lambda m, x, pieces, **p: x.reshape(x.shape[0], -1, pieces).max(axis=-1),
}
USER_BACKWARD = {
    "sigmoid": lambda m, dy, y, **p: dy * y * (1 - y),
    "tanh": lambda m, dy, y, **p: dy * (1 - y * y),
    "elu": lambda m, dy, y, alpha, **p: m.where(y > 0, dy, dy * (y + alpha)),
    "selu": lambda m, dy, y, **p: m.where(y > 0, SELU_SCALE * dy, dy * (y + SELU_SCALE * SELU_ALPHA)),
    "celu": lambda m, dy, y, alpha, **p: m.where(y > 0, dy, dy * (y / alpha + 1)),
    "gelu": lambda m, dy, x, **p: dy * (0.5 * (1 + m.erf(x / SQRT_2)) + x * INV_SQRT_2PI * m.exp(
        -0.5 * x * x)),
    "gelu_tanh": lambda m, dy, x, **p: (lambda t, dz: dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dz))(
        *_gelu_tanh_parts(m, x)),
    "silu": lambda m, dy, x, **p: (lambda s: dy * s * (1 + x * (1 - s)))(1 / (1 + m.exp(-x))),
    "mish": lambda m, dy, x, **p: (lambda t, s: dy * (t + x * s * (1 - t * t)))(*_mish_parts(m, x)),
    "softplus": lambda m, dy, x, beta, threshold, **p: m.where(
        beta * x > threshold, dy, dy / (1 + m.exp(-beta * x))),
    "logsigmoid": lambda m, dy, x, **p: dy / (1 + m.exp(x)),
    "relu": lambda m, dy, y, **p: m.where(y > 0, dy, 0),
    "leaky_relu": lambda m, dy, y, negative_slope, **p: m.where(y > 0, dy, negative_slope * dy),
    "hardtanh": lambda m, dy, x, min_val, max_val, **p: m.where((x > min_val) & (x < max_val), dy, 0),
    "relu6": lambda m, dy, x, **p: m.where((x > 0) & (x < 6), dy, 0),
    "hardsigmoid": lambda m, dy, x, **p: m.where(m.abs(x) < 3, dy / 6, 0),
    "hardswish": lambda m, dy, x, **p: m.where(x < -3, 0, m.where(x > 3, dy, dy * (x / 3 + 0.5))),
    "threshold": lambda m, dy, x, threshold, **p: m.where(x > threshold, dy, 0),
    "softsign": lambda m, dy, x, **p: dy / (1 + m.abs(x)) ** 2,
    "prelu": lambda m, dy, x, weight, **p: (
        m.where(x > 0, dy, weight.reshape(1, -1, 1) * dy),
        m.where(x > 0, 0, dy * x).sum(axis=(0, 2))),
    "rrelu": lambda m, dy, x, lower, upper, **p: m.where(x > 0, dy, (lower + upper) / 2 * dy),
    "softmax": lambda m, dy, y, **p: y * (dy - (dy * y).sum(axis=-1, keepdims=True)),
    "log_softmax": lambda m, dy, y, **p: dy - m.exp(y) * dy.sum(axis=-1, keepdims=True),
    "maxout": lambda m, dy, x, pieces, **p: _maxout_backward_user(m, dy, x, pieces),
}


class _WithErf(types.SimpleNamespace):
    """An array module with erf added (NumPy has none: SciPy's, as a user would import it)."""

    def __getattr__(self, name):
        return getattr(self.xp, name)


def _user_call(m, case, arrays):
    params = full_params(case)
    params.pop("approximate", None)
    if "weight" in arrays:
        params["weight"] = arrays["weight"]
    if case.direction == "forward":
        return USER_FORWARD[case.label](m, arrays["x"], **params)
    return USER_BACKWARD[case.label](m, arrays["dy"], arrays["saved"], **params)


class NumpyUser(Provider):
    """NumPy written the way a NumPy user writes it: 1 / (1 + np.exp(-x)), temporaries and all."""
    name = "numpy"
    module = "numpy"
    out_preallocated = False

    def prepare(self, case, sets, outs):
        if case.label not in USER_FORWARD:
            raise Skip(f"no NumPy formula for {case.label}")
        erf = None
        if case.label == "gelu":
            try:
                from scipy.special import erf
            except ImportError:
                raise Skip("gelu needs erf: scipy not installed") from None
        m = _WithErf(xp=np, erf=erf)
        return lambda i: _user_call(m, case, sets[i])


class Cupy(Provider):
    """The NumPy user's formulas run by CuPy on the GPU."""
    name = "cupy"
    module = "cupy"
    device = "cuda"
    out_preallocated = False

    def __init__(self):
        self.gpu = GpuArrays(prefer="cupy")

    def unavailable(self):
        return super().unavailable() or self.gpu.unavailable()

    def to_device(self, array):
        return self.gpu.to_device(array)

    def synchronize(self):
        self.gpu.synchronize()

    def prepare(self, case, sets, outs):
        import cupy
        if case.label not in USER_FORWARD:
            raise Skip(f"no formula for {case.label}")
        erf = None
        if case.label == "gelu":
            from cupyx.scipy.special import erf
        m = _WithErf(xp=cupy, erf=erf)
        sets = [{k: self.to_device(v) for k, v in s.items()} for s in sets]
        return lambda i: _user_call(m, case, sets[i])


# --- numexpr -------------------------------------------------------------------------------------------

NUMEXPR_FORWARD = {
    "sigmoid": "1 / (1 + exp(-x))",
    "tanh": "tanh(x)",
    "elu": "where(x > 0, x, alpha * expm1(x))",
    "selu": f"{SELU_SCALE!r} * where(x > 0, x, {SELU_ALPHA!r} * expm1(x))",
    "celu": "where(x > 0, x, alpha * expm1(x / alpha))",
    "gelu_tanh": f"0.5 * x * (1 + tanh({SQRT_2_OVER_PI!r} * (x + {GELU_C!r} * x * x * x)))",
    "silu": "x / (1 + exp(-x))",
    "mish": "x * tanh(log1p(exp(x)))",
    "softplus": "where(beta * x > threshold, x, log1p(exp(beta * x)) / beta)",
    "logsigmoid": "-log1p(exp(-x))",
    "relu": "where(x > 0, x, 0)",
    "leaky_relu": "where(x > 0, x, negative_slope * x)",
    "hardtanh": "where(x < min_val, min_val, where(x > max_val, max_val, x))",
    "relu6": "where(x < 0, 0, where(x > 6, 6, x))",
    "hardsigmoid": "where(x < -3, 0, where(x > 3, 1, x / 6 + 0.5))",
    "hardswish": "where(x < -3, 0, where(x > 3, x, x * (x + 3) / 6))",
    "threshold": "where(x > threshold, x, value)",
    "softsign": "x / (1 + abs(x))",
    "rrelu": "where(x > 0, x, (lower + upper) / 2 * x)",
}
NUMEXPR_BACKWARD = {
    "sigmoid": "dy * saved * (1 - saved)",
    "tanh": "dy * (1 - saved * saved)",
    "elu": "where(saved > 0, dy, dy * (saved + alpha))",
    "selu": f"where(saved > 0, {SELU_SCALE!r} * dy, dy * (saved + {SELU_SCALE * SELU_ALPHA!r}))",
    "celu": "where(saved > 0, dy, dy * (saved / alpha + 1))",
    "gelu_tanh": (f"dy * (0.5 * (1 + tanh({SQRT_2_OVER_PI!r} * (saved + {GELU_C!r} * saved ** 3)))"
                  f" + 0.5 * saved * (1 - tanh({SQRT_2_OVER_PI!r} * (saved + {GELU_C!r} * saved ** 3))"
                  f" ** 2) * {SQRT_2_OVER_PI!r} * (1 + {3 * GELU_C!r} * saved * saved))"),
    "silu": "dy / (1 + exp(-saved)) * (1 + saved * (1 - 1 / (1 + exp(-saved))))",
    "mish": ("dy * (tanh(log1p(exp(saved))) + saved / (1 + exp(-saved))"
             " * (1 - tanh(log1p(exp(saved))) ** 2))"),
    "softplus": "where(beta * saved > threshold, dy, dy / (1 + exp(-beta * saved)))",
    "logsigmoid": "dy / (1 + exp(saved))",
    "relu": "where(saved > 0, dy, 0)",
    "leaky_relu": "where(saved > 0, dy, negative_slope * dy)",
    "hardtanh": "where((saved > min_val) & (saved < max_val), dy, 0)",
    "relu6": "where((saved > 0) & (saved < 6), dy, 0)",
    "hardsigmoid": "where((saved > -3) & (saved < 3), dy / 6, 0)",
    "hardswish": "where(saved < -3, 0, where(saved > 3, dy, dy * (saved / 3 + 0.5)))",
    "threshold": "where(saved > threshold, dy, 0)",
    "softsign": "dy / ((1 + abs(saved)) * (1 + abs(saved)))",
    "rrelu": "where(saved > 0, dy, (lower + upper) / 2 * dy)",
}


class Numexpr(Provider):
    name = "numexpr"
    module = "numexpr"

    def set_threads(self, n):
        import numexpr
        numexpr.set_num_threads(n)

    def prepare(self, case, sets, outs):
        import numexpr
        table = NUMEXPR_FORWARD if case.direction == "forward" else NUMEXPR_BACKWARD
        if case.label not in table:
            raise Skip(f"numexpr has no {'erf' if case.activation == 'gelu' else 'row reductions'} "
                       f"for {case.label}")
        if sets[0]["x"].dtype == np.float16:
            raise Skip("numexpr has no float16")
        expression = table[case.label]
        for k, v in full_params(case).items():  # parameters as literals: numexpr keeps float32
            if not isinstance(v, str):
                expression = re.sub(rf"\b{k}\b", repr(float(v)), expression)
        names = ("x",) if case.direction == "forward" else ("dy", "saved")
        return lambda i: numexpr.evaluate(expression, local_dict={k: sets[i][k] for k in names},
                                          out=outs[i])


# --- PyTorch -------------------------------------------------------------------------------------------

def _torch_ops():
    """{label: (forward(x, out, **params), backward(dy, saved, out, **params))}: the aten ops that
    torch.nn.functional and autograd run, through their out= overloads where they have one."""
    import torch
    a = torch.ops.aten
    buf = torch.empty(0)

    def elu_like(alpha, scale, input_scale):
        return (lambda x, o, **p: a.elu.out(x, alpha(p), scale, input_scale(p), out=o),
                lambda dy, y, o, **p: a.elu_backward.grad_input(
                    dy, alpha(p), scale, input_scale(p), True, y, grad_input=o))

    ops = {
        "sigmoid": (lambda x, o, **p: a.sigmoid.out(x, out=o),
                    lambda dy, y, o, **p: a.sigmoid_backward.grad_input(dy, y, grad_input=o)),
        "tanh": (lambda x, o, **p: a.tanh.out(x, out=o),
                 lambda dy, y, o, **p: a.tanh_backward.grad_input(dy, y, grad_input=o)),
        "elu": elu_like(lambda p: p["alpha"], 1.0, lambda p: 1.0),
        "selu": elu_like(lambda p: SELU_ALPHA, SELU_SCALE, lambda p: 1.0),
        "celu": elu_like(lambda p: p["alpha"], 1.0, lambda p: 1.0 / p["alpha"]),
        "gelu": (lambda x, o, **p: a.gelu.out(x, approximate="none", out=o),
                 lambda dy, x, o, **p: a.gelu_backward.grad_input(dy, x, approximate="none",
                                                                  grad_input=o)),
        "gelu_tanh": (lambda x, o, **p: a.gelu.out(x, approximate="tanh", out=o),
                      lambda dy, x, o, **p: a.gelu_backward.grad_input(dy, x, approximate="tanh",
                                                                       grad_input=o)),
        "silu": (lambda x, o, **p: a.silu.out(x, out=o),
                 lambda dy, x, o, **p: a.silu_backward.grad_input(dy, x, grad_input=o)),
        "mish": (lambda x, o, **p: a.mish.out(x, out=o),
                 lambda dy, x, o, **p: a.mish_backward(dy, x)),  # no out= overload
        "softplus": (lambda x, o, beta, threshold, **p: a.softplus.out(x, beta, threshold, out=o),
                     lambda dy, x, o, beta, threshold, **p: a.softplus_backward.grad_input(
                         dy, x, beta, threshold, grad_input=o)),
        "logsigmoid": (lambda x, o, **p: a.log_sigmoid_forward.output(x, output=o, buffer=buf),
                       lambda dy, x, o, **p: a.log_sigmoid_backward.grad_input(dy, x, buf,
                                                                               grad_input=o)),
        "relu": (lambda x, o, **p: a.relu.out(x, out=o),
                 lambda dy, y, o, **p: a.threshold_backward.grad_input(dy, y, 0, grad_input=o)),
        "leaky_relu": (lambda x, o, negative_slope, **p: a.leaky_relu.out(x, negative_slope, out=o),
                       lambda dy, y, o, negative_slope, **p: a.leaky_relu_backward.grad_input(
                           dy, y, negative_slope, True, grad_input=o)),
        "hardtanh": (lambda x, o, min_val, max_val, **p: a.hardtanh.out(x, min_val, max_val, out=o),
                     lambda dy, x, o, min_val, max_val, **p: a.hardtanh_backward.grad_input(
                         dy, x, min_val, max_val, grad_input=o)),
        "hardsigmoid": (lambda x, o, **p: a.hardsigmoid.out(x, out=o),
                        lambda dy, x, o, **p: a.hardsigmoid_backward.grad_input(dy, x,
                                                                                grad_input=o)),
        "hardswish": (lambda x, o, **p: a.hardswish.out(x, out=o),
                      lambda dy, x, o, **p: a.hardswish_backward.out(dy, x, out=o)),
        "threshold": (lambda x, o, threshold, value, **p: a.threshold.out(x, threshold, value, out=o),
                      lambda dy, x, o, threshold, **p: a.threshold_backward.grad_input(
                          dy, x, threshold, grad_input=o)),
        "rrelu": (lambda x, o, lower, upper, **p: a.leaky_relu.out(x, (lower + upper) / 2, out=o),
                  lambda dy, x, o, lower, upper, **p: a.leaky_relu_backward.grad_input(
                      dy, x, (lower + upper) / 2, False, grad_input=o)),
        "softmax": (lambda x, o, **p: a._softmax.out(x, -1, False, out=o),
                    lambda dy, y, o, **p: a._softmax_backward_data.out(dy, y, -1, y.dtype, grad_input=o)),
        "log_softmax": (lambda x, o, **p: a._log_softmax.out(x, -1, False, out=o),
                        lambda dy, y, o, **p: a._log_softmax_backward_data.out(
                            dy, y, -1, y.dtype, out=o)),
    }
    ops["relu6"] = (lambda x, o, **p: ops["hardtanh"][0](x, o, min_val=0.0, max_val=6.0),
                    lambda dy, x, o, **p: ops["hardtanh"][1](dy, x, o, min_val=0.0, max_val=6.0))
    return ops


# Composite in PyTorch (several ops, and autograd for the backward): measured as a user gets them.
TORCH_COMPOSITE = {"softsign": "softsign", "prelu": "prelu"}
TORCH_ALLOCATES = {("mish", "backward")}


class Torch(Provider):
    module = "torch"

    def __init__(self, device="cpu"):
        self.device = device
        self.name = "torch" if device == "cpu" else "torch:cuda"
        self._ops = None

    def unavailable(self):
        reason = super().unavailable()
        if reason is None and self.device == "cuda":
            import torch
            if not torch.cuda.is_available():
                return "torch has no CUDA device here"
        return reason

    @property
    def version(self):
        v = _version("torch")
        return v.split("+")[0] if v else v

    @property
    def settle_s(self):
        """40 ms on the CPU: its OpenMP workers spin ~9 ms of CPU after each call (libgomp's
        default spin count; measured on the Zen 4 VM), longer on a CPU with a slower pause."""
        return 0.04 if self.device == "cpu" else 0.0

    def set_threads(self, n):
        import torch
        torch.set_num_threads(n)

    def to_device(self, array):
        import torch
        t = torch.from_numpy(array)
        return t if self.device == "cpu" else t.to(self.device)

    def synchronize(self):
        if self.device == "cuda":
            import torch
            torch.cuda.synchronize()

    def allocates(self, case):
        return case.label in TORCH_COMPOSITE or (case.label, case.direction) in TORCH_ALLOCATES

    def prepare(self, case, sets, outs):
        import torch
        import torch.nn.functional as F
        if self._ops is None:
            self._ops = _torch_ops()
        tensors = [{k: self.to_device(v) for k, v in s.items()} for s in sets]
        touts = [self.to_device(o) for o in outs]
        params = {k: v for k, v in full_params(case).items() if k != "approximate"}
        if case.label in TORCH_COMPOSITE:
            fn = getattr(F, TORCH_COMPOSITE[case.label])
            if case.direction == "forward":
                if case.kind == "prelu":
                    return lambda i: fn(tensors[i]["x"], tensors[i]["weight"])
                return lambda i: fn(tensors[i]["x"])
            graphs = []  # the forward graph is built once per buffer set; only .grad is timed
            for t in tensors:
                leaves = [t["x"].detach().requires_grad_()]
                if case.kind == "prelu":
                    leaves.append(t["weight"].detach().requires_grad_())
                y = fn(*leaves)
                graphs.append((y, leaves, t["dy"]))
            return lambda i: torch.autograd.grad(graphs[i][0], graphs[i][1], graphs[i][2],
                                                 retain_graph=True)
        if case.label not in self._ops:
            raise Skip(f"PyTorch has no {case.label} op")
        forward, backward = self._ops[case.label]
        if case.direction == "forward":
            return lambda i: forward(tensors[i]["x"], touts[i], **params)
        return lambda i: backward(tensors[i]["dy"], tensors[i]["saved"], touts[i], **params)


# --- JAX (jit), only if installed ----------------------------------------------------------------------

def _jax_functions(case):
    import jax
    import jax.numpy as jnp
    nn = jax.nn
    p = full_params(case)
    table = {
        "sigmoid": nn.sigmoid, "tanh": jnp.tanh, "elu": lambda x: nn.elu(x, p.get("alpha", 1.0)),
        "selu": nn.selu, "celu": lambda x: nn.celu(x, p.get("alpha", 1.0)),
        "gelu": lambda x: nn.gelu(x, approximate=False),
        "gelu_tanh": lambda x: nn.gelu(x, approximate=True), "silu": nn.silu,
        "mish": getattr(nn, "mish", lambda x: x * jnp.tanh(nn.softplus(x))),
        "softplus": nn.softplus, "logsigmoid": nn.log_sigmoid, "relu": nn.relu,
        "leaky_relu": lambda x: nn.leaky_relu(x, p.get("negative_slope", 0.01)),
        "hardtanh": lambda x: jnp.clip(x, p.get("min_val", -1.0), p.get("max_val", 1.0)),
        "relu6": nn.relu6, "hardsigmoid": nn.hard_sigmoid, "hardswish": nn.hard_swish,
        "threshold": lambda x: jnp.where(x > p.get("threshold", 0.0), x, p.get("value", 0.0)),
        "softsign": nn.soft_sign,
        "rrelu": lambda x: nn.leaky_relu(x, (p.get("lower", 0.125) + p.get("upper", 1 / 3)) / 2),
        "softmax": lambda x: nn.softmax(x, axis=-1), "log_softmax": lambda x: nn.log_softmax(x, axis=-1),
    }
    return table.get(case.label)


class Jax(Provider):
    name = "jax"
    module = "jax"
    out_preallocated = False

    settle_s = 0.04  # XLA's CPU thread pool may spin as PyTorch's does (not measured)

    def set_threads(self, n):
        pass  # XLA's CPU thread pool is fixed when JAX starts (XLA_FLAGS); reported in the notes

    def prepare(self, case, sets, outs):
        import jax
        import jax.numpy as jnp
        f = _jax_functions(case)
        if f is None:
            raise Skip(f"no JAX function for {case.label}")
        arrays = [{k: jnp.asarray(v) for k, v in s.items()} for s in sets]
        if case.direction == "forward":
            jitted = jax.jit(f)
            return lambda i: jitted(arrays[i]["x"]).block_until_ready()
        # JAX's backward recomputes what it needs from x (it has no saved-output form).
        grad = jax.jit(lambda dy, x: jax.vjp(f, x)[1](dy)[0])
        return lambda i: grad(arrays[i]["dy"], arrays[i]["x"]).block_until_ready()


# --- GPU arrays for fastact:cuda and the GPU roofline ---------------------------------------------------

class GpuArrays:
    """Host arrays put on the GPU with the first of CuPy, PyTorch, Numba that is installed (cached
    per host array, so providers share device inputs), and that library's stream and events."""

    def __init__(self, prefer=None):
        self.prefer = prefer
        self._lib = None
        self._cache = {}

    def library(self):
        if self._lib is None:
            for lib in ([self.prefer] if self.prefer else ["cupy", "torch", "numba"]):
                try:
                    if lib == "cupy":
                        import cupy
                        cupy.cuda.runtime.getDeviceCount()
                    elif lib == "torch":
                        import torch
                        if not torch.cuda.is_available():
                            continue
                    else:
                        from numba import cuda
                        if not cuda.is_available():
                            continue
                        _simulator_arrays()
                    self._lib = lib
                    break
                except Exception:
                    continue
        return self._lib

    def unavailable(self):
        return None if self.library() else "no CUDA device (or none of cupy, torch, numba-cuda sees one)"

    def to_device(self, array):
        key = id(array)
        if key not in self._cache:
            lib = self.library()
            if lib == "cupy":
                import cupy
                dev = cupy.asarray(array)
            elif lib == "torch":
                import torch
                dev = torch.from_numpy(array).cuda()
            else:
                from numba import cuda
                dev = cuda.to_device(array)
            self._cache[key] = (array, dev)  # keeps the host array alive: id() stays unique
        return self._cache[key][1]

    def clear(self):
        self._cache.clear()

    def synchronize(self):
        lib = self.library()
        if lib == "cupy":
            import cupy
            cupy.cuda.get_current_stream().synchronize()
        elif lib == "torch":
            import torch
            torch.cuda.synchronize()
        elif lib == "numba":
            from numba import cuda
            cuda.synchronize()

    def device_name(self):
        try:
            return self._device_name()
        except Exception as e:  # a report without the GPU's name, never a crash
            return f"unknown ({type(e).__name__})"

    def _device_name(self):
        lib = self.library()
        if lib == "cupy":
            import cupy
            name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
            return name.decode() if isinstance(name, bytes) else name
        if lib == "torch":
            import torch
            return torch.cuda.get_device_name()
        if lib == "numba":
            from numba import cuda
            device = cuda.get_current_device()
            name = getattr(device, "name", type(device).__name__)
            return name.decode() if isinstance(name, bytes) else name
        return None

    def events(self):
        """(record_start, record_end, elapsed_seconds) on the library's current stream, which is
        the stream fastact launches on."""
        lib = self.library()
        if lib == "cupy":
            import cupy
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            return (lambda: start.record(cupy.cuda.get_current_stream()),
                    lambda: end.record(cupy.cuda.get_current_stream()),
                    lambda: (end.synchronize(), cupy.cuda.get_elapsed_time(start, end) / 1e3)[1])
        if lib == "torch":
            import torch
            start, end = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            return (lambda: start.record(torch.cuda.current_stream()),
                    lambda: end.record(torch.cuda.current_stream()),
                    lambda: (end.synchronize(), start.elapsed_time(end) / 1e3)[1])
        from numba import cuda
        stream = cuda.default_stream()
        start, end = cuda.event(), cuda.event()
        return (lambda: start.record(stream), lambda: end.record(stream),
                lambda: (end.synchronize(), start.elapsed_time(end) / 1e3)[1])

    def copy(self, dst, src):
        lib = self.library()
        if lib == "cupy":
            import cupy
            cupy.copyto(dst, src)
        elif lib == "torch":
            dst.copy_(src)
        else:
            dst.copy_to_device(src)

    def add(self, a, b, out):
        lib = self.library()
        if lib == "cupy":
            import cupy
            cupy.add(a, b, out=out)
        elif lib == "torch":
            import torch
            torch.add(a, b, out=out)
        else:
            _numba_add()[(out.size + 255) // 256, 256](a, b, out)


def _simulator_arrays():
    """Under NUMBA_ENABLE_CUDASIM=1 the simulator's arrays get the CUDA array interface (fastact's
    hook; a no-op on a real GPU), so the whole GPU path of the harness runs without a GPU."""
    try:
        from ..kernels.cuda import enable_simulator_arrays
    except ImportError:
        return
    enable_simulator_arrays()


def _numba_add():
    from numba import cuda

    @cuda.jit
    def add(a, b, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = a[i] + b[i]
    return add


# --- the registry of providers --------------------------------------------------------------------------

BACKENDS = ("cpu", "c", "cuda", "numpy")
PEERS = ("numpy", "numexpr", "torch", "jax", "cupy")


def make_backend(name):
    return NumpyUser() if name == "numpy" else Fastact(name)


def make_peers(name, cuda):
    """The providers a peer name stands for: on the CPU, and on the GPU when cuda is measured."""
    if name == "numpy":
        return [NumpyUser()]
    if name == "numexpr":
        return [Numexpr()]
    if name == "torch":
        return [Torch("cpu")] + ([Torch("cuda")] if cuda else [])
    if name == "jax":
        return [Jax()]
    if name == "cupy":
        return [Cupy()] if cuda else []
    raise ValueError(name)
