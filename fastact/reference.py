"""Float64 NumPy/SciPy reference ("oracle") for the fastact activations.

Written independently of the kernels, from plain formulas chosen so that nothing cancels: every
forward is accurate to a few ulps (relative) over the whole real line, tails included, and so is
every backward except next to the zeros of gelu', silu', mish' (see ``condition_scale``).
Semantics are those of torch.nn.functional: parameter names and defaults, branch conditions, the
gradient at kinks.  ``forward(name, x, **params)`` gives y; ``backward(name, dy, saved, **params)``
gives grad_input = dy * f'(x) from ``saved``: the input x or the output y, as ``saves(name)`` says.
Per activation: ``NAME_forward``, ``NAME_backward_from_input`` (every elementwise activation, and
prelu, rrelu, maxout) and ``NAME_backward_from_output`` (those that may save their output).
Inputs are converted to float64 arrays, results are float64 arrays; NaN in gives NaN out (a NaN
saved value gives a NaN gradient, also where f' would be 0), +-inf gives the limit.
"""
import functools

import numpy as np
from scipy.special import erfcx, expit, log_expit, ndtr

FAMILIES = {
    "exponential": ["sigmoid", "tanh", "elu", "selu", "celu", "gelu", "silu", "mish", "softplus",
                    "logsigmoid"],
    "piecewise-linear": ["relu", "relu6", "leaky_relu", "prelu", "rrelu", "hardtanh", "hardsigmoid",
                         "hardswish", "threshold", "softsign"],
    "row-wise": ["softmax", "log_softmax", "maxout"],
}

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_A = (1.5957691216057308, -9.96930880911092e-17)     # 2*sqrt(2/pi) as hi + lo (double-double)
_B = (0.07135481627260025, -6.175149918155315e-19)   # 2*sqrt(2/pi)*0.044715 as hi + lo
_INV_SQRT_2PI = 0.3989422804014327
_SQRT_HALF = 0.7071067811865476
_LN2_HI, _LN2_LO = 0.6931471803691238, 1.9082149292705877e-10  # ln 2; the first has 33 bits
_SAVES_OUTPUT = {"sigmoid", "tanh", "selu", "relu", "softmax", "log_softmax"}


def _api(f):
    """Array arguments to float64 ndarrays, numpy warnings off, results as float64 ndarrays."""
    def conv(a):
        return a if a is None or isinstance(a, (bool, str)) else np.asarray(a, dtype=np.float64)

    @functools.wraps(f)
    def wrapper(*args, **kw):
        args = [conv(a) for a in args]
        kw = {k: conv(v) if k in ("weight", "noise") else v for k, v in kw.items()}
        with np.errstate(all="ignore"):
            r = f(*args, **kw)
        if isinstance(r, tuple):
            return tuple(np.asarray(t, dtype=np.float64) for t in r)
        return np.asarray(r, dtype=np.float64)
    return wrapper


def _require(condition, message):
    if not condition:
        raise ValueError(message)


# --- helpers -----------------------------------------------------------------------------------------

def _xmul(x, g):
    """x*g, but 0 where g == 0 (so that x*g -> 0 at x = +-inf instead of inf*0 = NaN)."""
    return np.where(g == 0, 0.0, x * g)


def _step(s, cond, a, b=0.0):
    """a where cond else b (a piecewise-constant derivative), NaN where the saved s is NaN."""
    return np.where(np.isnan(s), np.nan, np.where(cond, a, b))


def _split(a):
    """Veltkamp split: a = hi + lo, each with at most 26 significant bits."""
    c = 134217729.0 * a
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a, b):
    """a*b = p + e exactly (Dekker); e = 0 where it cannot be formed (inf, overflow)."""
    p = a * b
    (ah, al), (bh, bl) = _split(a), _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, np.where(np.isfinite(e), e, 0.0)


def _two_sum(a, b):
    """a + b = s + e exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _expit(x):
    """expit(x); e^x/(1+e^x) rounds to e^x below -40, where scipy's expit underflows early (-709)."""
    return np.where(x < -40, np.exp(x), expit(x))


def _expit2(v, e):
    """expit(v + e) for a tiny correction e: expit(v) * (1 + e*expit(-v))."""
    return _expit(v) * (1.0 + e * _expit(-v))


def _x_expit(x, v, e=0.0):
    """x * expit(v + e), e a tiny correction to v; where v < -40 (there x < 0) as -exp(v + log(-x)),
    with the rounding error of the sum put back: exp(v) may be subnormal while x*exp(v) is not."""
    tail = v < -40
    s, se = _two_sum(np.maximum(v, -2000.0), np.minimum(np.log(np.where(tail, -x, 1.0)), 700.0))
    return np.where(tail, -np.exp(s) * (1.0 + (se + e)), _xmul(x, _expit2(v, e)))


def _exp_neg_half_sq(x):
    """exp(-x^2/2), with the rounding error of x*x put back (it is amplified x^2/2 times)."""
    s, e = _two_prod(x, x)
    return np.exp(-0.5 * s) * (1.0 - 0.5 * e)


def _normal_cdf(x, c=1.0):
    """c*Phi(x); Phi(x) = erfc(-x/sqrt2)/2 = erfcx(-x/sqrt2) exp(-x^2/2)/2 for x < 0, with the
    (possibly subnormal) exp factor last."""
    return np.where(x < 0, _xmul(0.5 * c * erfcx(-_SQRT_HALF * x), _exp_neg_half_sq(x)), c * ndtr(x))


def _gelu_tanh_arg(x):
    """(v, e): v + e = 2*sqrt(2/pi)*(x + 0.044715 x^3) in double-double, x clipped to +-1e5."""
    x = np.clip(x, -1e5, 1e5)
    s, se = _two_prod(x, x)
    p, pe = _two_prod(_B[0], s)
    t, te = _two_sum(_A[0], p)
    v, ve = _two_prod(x, t)
    return v, ve + x * (te + _A[1] + pe + _B[0] * se + _B[1] * s)


def _gelu_dterms(x, approximate):
    """(a, b) with gelu'(x) = a + b: Phi + x*pdf, or s + x*s*(1-s)*v' with s = expit(v)."""
    if approximate == "tanh":
        v, e = _gelu_tanh_arg(x)
        xc, s = np.clip(x, -1e5, 1e5), _expit2(v, e)
        return s, _xmul(_x_expit(xc * (_A[0] + 3 * _B[0] * xc * xc), v, e), _expit2(-v, -e))
    _require(approximate == "none", f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    return _normal_cdf(x), _xmul(x, _INV_SQRT_2PI * _exp_neg_half_sq(x))


def _silu_dterms(x):
    """(a, b) with silu'(x) = a + b = expit(x) + x*expit(x)*expit(-x)."""
    return _expit(x), _xmul(_x_expit(x, x), _expit(-x))


def _mish_dterms(x):
    """(a, b) with mish'(x) = tanh(sp) + x*expit(x)*sech^2(sp), sech^2(u) = 4 expit(2u) expit(-2u)."""
    sp = np.logaddexp(0.0, x)
    return np.tanh(sp), _xmul(_x_expit(x, x), 4 * _expit(2 * sp) * _expit(-2 * sp))


# --- exponential family ----------------------------------------------------------------------------

@_api
def sigmoid_forward(x):
    """1 / (1 + exp(-x))"""
    return _expit(x)


@_api
def sigmoid_backward_from_output(dy, y):
    """dy * y * (1 - y)"""
    return dy * y * (1 - y)


@_api
def sigmoid_backward_from_input(dy, x):
    """dy * expit(x) * expit(-x)"""
    return dy * _expit(x) * _expit(-x)


@_api
def tanh_forward(x):
    """tanh(x)"""
    return np.tanh(x)


@_api
def tanh_backward_from_output(dy, y):
    """dy * (1 - y) * (1 + y)"""
    return dy * (1 - y) * (1 + y)


@_api
def tanh_backward_from_input(dy, x):
    """dy * sech(x)^2 = dy * 4 expit(2x) expit(-2x)"""
    return dy * 4 * _expit(2 * x) * _expit(-2 * x)


def _times_expm1(alpha, z):
    """alpha * expm1(z), finite where the product is although expm1(z) alone overflows (alpha < 1)."""
    return np.where(z > 700, (alpha * np.exp(np.minimum(z, 1500) - 2)) * np.exp(2.0),
                    alpha * np.expm1(np.minimum(z, 700)))


@_api
def elu_forward(x, alpha=1.0):
    """x if x > 0 else alpha * expm1(x)"""
    return np.where(x > 0, x, _times_expm1(alpha, x))


@_api
def elu_backward_from_output(dy, y, alpha=1.0):
    """dy if y > 0 else dy * (y + alpha)   (alpha >= 0 only)"""
    _require(alpha >= 0, "elu: the backward from the output needs alpha >= 0")
    return dy * np.where(y > 0, 1.0, y + alpha)


@_api
def elu_backward_from_input(dy, x, alpha=1.0):
    """dy if x > 0 else dy * alpha * exp(x)"""
    return dy * np.where(x > 0, 1.0, alpha * np.exp(x))


@_api
def selu_forward(x):
    """scale * elu(x, alpha), alpha = 1.67326..., scale = 1.05070..."""
    return SELU_SCALE * elu_forward(x, SELU_ALPHA)


@_api
def selu_backward_from_output(dy, y):
    """dy * scale if y > 0 else dy * (y + scale * alpha)"""
    return dy * np.where(y > 0, SELU_SCALE, y + SELU_SCALE * SELU_ALPHA)


@_api
def selu_backward_from_input(dy, x):
    """dy * scale if x > 0 else dy * scale * alpha * exp(x)"""
    return SELU_SCALE * elu_backward_from_input(dy, x, SELU_ALPHA)


@_api
def celu_forward(x, alpha=1.0):
    """max(0, x) + min(0, alpha * expm1(x / alpha)) = x if x > 0 else alpha * expm1(x / alpha)"""
    _require(alpha != 0, "celu: alpha must not be 0")
    return np.where(x > 0, x, _times_expm1(alpha, x / alpha))


@_api
def celu_backward_from_output(dy, y, alpha=1.0):
    """dy if y > 0 else dy * (y / alpha + 1)"""
    _require(alpha != 0, "celu: alpha must not be 0")
    return dy * np.where(y > 0, 1.0, y / alpha + 1)


def _times_exp(dy, z):
    """dy * exp(z), finite and within a few units of the last place wherever the product is,
    although exp(z) alone overflows or rounds to a subnormal: exp(z) in 2 or 4 equal parts (z / 2
    and z / 4 are exact), each multiplied in, where |z| > 700 (an H100 gpu_check drew celu's
    dy = 0.38, z = 710.7: the product is 1.79e308, exp(z) alone inf)."""
    z = np.asarray(z, dtype=float)
    a = np.where(np.isfinite(z), np.minimum(np.abs(z), 2800.0), np.abs(z))
    zc = np.copysign(a, z)  # |z| beyond 2800: the product overflows or underflows all the same
    half, quarter = np.exp(zc / 2), np.exp(zc / 4)
    return np.where(a > 1400, (((dy * quarter) * quarter) * quarter) * quarter,
                    np.where(a > 700, (dy * half) * half, dy * np.exp(zc)))


@_api
def celu_backward_from_input(dy, x, alpha=1.0):
    """dy if x > 0 else dy * exp(x / alpha)"""
    _require(alpha != 0, "celu: alpha must not be 0")
    return np.where(x > 0, dy * 1.0, _times_exp(dy, x / alpha))


@_api
def gelu_forward(x, approximate="none"):
    """none: x * Phi(x);  tanh: x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) = x * expit(2u)"""
    if approximate == "tanh":
        return _x_expit(x, *_gelu_tanh_arg(x))
    _require(approximate == "none", f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
    return _normal_cdf(x, x)


@_api
def gelu_backward_from_input(dy, x, approximate="none"):
    """none: dy * (Phi(x) + x pdf(x));  tanh: dy * (s + x s (1 - s) 2u'(x)), s = expit(2u).
    none, x < -20: dy (erfcx(-x/sqrt2)/2 + x/sqrt(2 pi)) exp(-x^2/2) with the factors folded into
    the exponent, as _x_expit does (dy's exponent as e ln2 in two parts, so that any dy keeps full
    precision): Phi and pdf as (possibly subnormal) numbers first, then summed and times dy, were
    up to ~60 subnormal units off near x = -38 (against mpmath)."""
    a, b = _gelu_dterms(x, approximate)
    result = dy * (a + b)
    if approximate != "none":
        return result
    tail = x < -20
    f, e = np.frexp(dy)  # dy = f 2**e: f joins the logarithm, e ln2 the exponent in two parts
    m = np.where(tail, f * (0.5 * erfcx(-_SQRT_HALF * x) + _INV_SQRT_2PI * x), 1.0)
    sq, sq_err = _two_prod(np.where(tail, x, 0.0), np.where(tail, x, 0.0))
    t, t_err = _two_sum(-0.5 * sq, np.log(np.where(m != 0, np.abs(m), 1.0)))
    t, e_err = _two_sum(t, e * _LN2_HI)  # e * _LN2_HI is exact (|e| < 2**11)
    t, lo_err = _two_sum(t, e * _LN2_LO)  # up to 2e-7: too large for the first-order correction
    correction = t_err + e_err + lo_err - 0.5 * sq_err  # NaN where x*x overflows (exp is 0)
    scaled = np.sign(m) * np.exp(t) * (1.0 + np.where(np.isfinite(correction), correction, 0.0))
    return np.where(tail & np.isfinite(m), scaled, result)


@_api
def silu_forward(x):
    """x * expit(x)"""
    return _x_expit(x, x)


@_api
def silu_backward_from_input(dy, x):
    """dy * expit(x) * (1 + x * expit(-x))"""
    a, b = _silu_dterms(x)
    return dy * (a + b)


swish_forward = silu_forward
swish_backward_from_input = silu_backward_from_input


@_api
def mish_forward(x):
    """x * tanh(softplus(x))   (= x * exp(x) to the last bit for x < -40)"""
    return np.where(x < -40, _x_expit(x, x), _xmul(x, np.tanh(np.logaddexp(0.0, x))))


@_api
def mish_backward_from_input(dy, x):
    """dy * (tanh(sp) + x expit(x) (1 - tanh(sp)^2)), sp = softplus(x)"""
    a, b = _mish_dterms(x)
    return dy * (a + b)


@_api
def softplus_forward(x, beta=1.0, threshold=20.0):
    """x if beta*x > threshold else log1p(exp(beta*x)) / beta"""
    _require(beta != 0, "softplus: beta must not be 0")
    bx, e = _two_prod(beta, x)  # beta*x = bx + e exactly; softplus(bx + e) = softplus(bx) + e expit(bx)
    return np.where(bx > threshold, x, (np.logaddexp(0.0, bx) + e * _expit(bx)) / beta)


@_api
def softplus_backward_from_input(dy, x, beta=1.0, threshold=20.0):
    """dy if beta*x > threshold else dy * expit(beta*x)"""
    _require(beta != 0, "softplus: beta must not be 0")
    bx, e = _two_prod(beta, x)
    return dy * np.where(bx > threshold, 1.0, _expit2(bx, e))


@_api
def logsigmoid_forward(x):
    """log(expit(x)) = -softplus(-x)"""
    return log_expit(x)


@_api
def logsigmoid_backward_from_input(dy, x):
    """dy * expit(-x)"""
    return dy * _expit(-x)


# --- piecewise-linear family -----------------------------------------------------------------------

@_api
def relu_forward(x):
    """max(x, 0)"""
    return np.maximum(x, 0.0)


@_api
def relu_backward_from_output(dy, y):
    """dy if y > 0 else 0"""
    return dy * _step(y, y > 0, 1.0)


@_api
def relu_backward_from_input(dy, x):
    """dy if x > 0 else 0"""
    return dy * _step(x, x > 0, 1.0)


@_api
def hardtanh_forward(x, min_val=-1.0, max_val=1.0):
    """clip(x, min_val, max_val)"""
    _require(min_val <= max_val, "hardtanh: min_val must be <= max_val")
    return np.clip(x, min_val, max_val)


@_api
def hardtanh_backward_from_input(dy, x, min_val=-1.0, max_val=1.0):
    """dy if min_val < x < max_val else 0"""
    return dy * _step(x, (x > min_val) & (x < max_val), 1.0)


@_api
def relu6_forward(x):
    """hardtanh(x, 0, 6)"""
    return hardtanh_forward(x, 0.0, 6.0)


@_api
def relu6_backward_from_input(dy, x):
    """dy if 0 < x < 6 else 0"""
    return hardtanh_backward_from_input(dy, x, 0.0, 6.0)


@_api
def leaky_relu_forward(x, negative_slope=0.01):
    """x if x > 0 else negative_slope * x"""
    return np.where(x > 0, x, x * negative_slope)


@_api
def leaky_relu_backward_from_input(dy, x, negative_slope=0.01):
    """dy if x > 0 else dy * negative_slope"""
    return dy * _step(x, x > 0, 1.0, negative_slope)


@_api
def leaky_relu_backward_from_output(dy, y, negative_slope=0.01):
    """dy if y > 0 else dy * negative_slope   (negative_slope >= 0 only)"""
    _require(negative_slope >= 0, "leaky_relu: the backward from the output needs negative_slope >= 0")
    return leaky_relu_backward_from_input(dy, y, negative_slope)


@_api
def hardsigmoid_forward(x):
    """relu6(x + 3) / 6"""
    return relu6_forward(x + 3) / 6


@_api
def hardsigmoid_backward_from_input(dy, x):
    """dy / 6 if -3 < x < 3 else 0"""
    return dy * _step(x, (x > -3) & (x < 3), 1 / 6)


@_api
def hardswish_forward(x):
    """x * relu6(x + 3) / 6"""
    return _xmul(x, hardsigmoid_forward(x))


@_api
def hardswish_backward_from_input(dy, x):
    """0 if x <= -3, dy * (x/3 + 1/2) if -3 < x < 3, dy if x >= 3 (PyTorch 2.x: both edges take the
    outer piece)"""
    return dy * _step(x, x <= -3, 0.0, np.where(x < 3, (2 * x + 3) / 6, 1.0))


@_api
def threshold_forward(x, threshold, value):
    """x if x > threshold else value   (torch: x <= threshold ? value : x, so NaN stays NaN)"""
    return np.where(x <= threshold, value, x)


@_api
def threshold_backward_from_input(dy, x, threshold, value):
    """dy if x > threshold else 0"""
    return dy * _step(x, x > threshold, 1.0)


@_api
def softsign_forward(x):
    """x / (1 + |x|)"""
    return np.where(np.isinf(x), np.sign(x), x / (1 + np.abs(x)))


@_api
def softsign_backward_from_input(dy, x):
    """dy / (1 + |x|)^2"""
    return dy * (1 / (1 + np.abs(x))) ** 2


def _prelu_weight(x, weight):
    """weight (1 or C = x.shape[1] elements) shaped to broadcast over x's channel axis 1."""
    _require(weight.ndim <= 1, "prelu: weight must be a scalar or a 1-D array")
    if weight.size == 1:
        return weight.reshape(())
    _require(x.ndim >= 2 and x.shape[1] == weight.size,
             f"prelu: weight has {weight.size} elements, x has shape {x.shape} (channels on axis 1)")
    return weight.reshape((-1,) + (1,) * (x.ndim - 2))


@_api
def prelu_forward(x, weight):
    """x if x > 0 else w_c * x   (c: index along axis 1)"""
    return np.where(x > 0, x, _prelu_weight(x, weight) * x)


@_api
def prelu_backward_from_input(dy, x, weight):
    """(dy if x > 0 else dy * w_c,  grad_w[c] = sum of dy * x over channel c where x <= 0)"""
    w = _prelu_weight(x, weight)
    grad_w = np.where(x > 0, 0.0, dy * x)
    other_axes = tuple(i for i in range(x.ndim) if i != 1 or w.ndim == 0)
    return dy * _step(x, x > 0, 1.0, w), np.sum(grad_w, axis=other_axes).reshape(weight.shape)


@_api
def rrelu_forward(x, lower=1 / 8, upper=1 / 3, training=False, noise=None):
    """eval: leaky_relu(x, (lower + upper) / 2);  training: x if x > 0 else x * noise"""
    _require(lower <= upper, "rrelu: lower must be <= upper")
    if not training:
        return leaky_relu_forward(x, (lower + upper) / 2)
    _require(noise is not None, "rrelu: training needs noise (the slopes, of x's shape)")
    return np.where(x > 0, x, x * noise)


@_api
def rrelu_backward_from_input(dy, x, lower=1 / 8, upper=1 / 3, training=False, noise=None):
    """eval: dy if x > 0 else dy * (lower + upper) / 2;  training: dy * noise"""
    if not training:
        return leaky_relu_backward_from_input(dy, x, (lower + upper) / 2)
    _require(noise is not None, "rrelu: training needs noise (the slopes, of x's shape)")
    return dy * np.where(np.isnan(x), np.nan, noise)


# --- row-wise ----------------------------------------------------------------------------------------

@_api
def softmax_forward(x, axis=-1):
    """exp(x - max) / sum(exp(x - max))"""
    e = np.exp(x - np.max(x, axis=int(axis), keepdims=True))
    return e / np.sum(e, axis=int(axis), keepdims=True)


@_api
def softmax_backward_from_output(dy, y, axis=-1):
    """y * (dy - sum(dy * y))"""
    return y * (dy - np.sum(dy * y, axis=int(axis), keepdims=True))


@_api
def log_softmax_forward(x, axis=-1):
    """(x - max) - log1p(sum of exp(x - max) over all but the first arg-max)"""
    z = x - np.max(x, axis=int(axis), keepdims=True)
    e = np.exp(z)
    np.put_along_axis(e, np.argmax(x, axis=int(axis), keepdims=True), 0.0, axis=int(axis))
    return z - np.log1p(np.sum(e, axis=int(axis), keepdims=True))


@_api
def log_softmax_backward_from_output(dy, y, axis=-1):
    """dy - exp(y) * sum(dy)"""
    return dy - np.exp(y) * np.sum(dy, axis=int(axis), keepdims=True)


def _groups(x, pieces, axis):
    """x with its axis of size C*pieces split into (C, pieces); returns (view, axis of the pieces)."""
    pieces, axis = int(pieces), int(axis) % x.ndim
    _require(pieces >= 1 and x.shape[axis] % pieces == 0,
             f"maxout: size {x.shape[axis]} of axis {axis} is not a multiple of pieces={pieces}")
    return x.reshape(x.shape[:axis] + (x.shape[axis] // pieces, pieces) + x.shape[axis + 1:]), axis + 1


@_api
def maxout_forward(x, pieces, axis=1):
    """y[.., c, ..] = max_j x[.., c*pieces + j, ..]   (NaN if the group holds a NaN)"""
    g, a = _groups(x, pieces, axis)
    return np.max(g, axis=a)


@_api
def maxout_backward_from_input(dy, x, pieces, axis=1):
    """dy at the first arg-max (first NaN if any) of each group, 0 elsewhere"""
    g, a = _groups(x, pieces, axis)
    dx = np.zeros_like(g)
    np.put_along_axis(dx, np.argmax(g, axis=a, keepdims=True), np.expand_dims(dy, a), axis=a)
    return dx.reshape(x.shape)


# --- dispatch ----------------------------------------------------------------------------------------

def _function(name, kind):
    f = globals().get(f"{name}_{kind}")
    _require(f is not None and f"{name}_forward" in globals(), f"unknown activation or kind: {name}_{kind}")
    return f


def saves(name, **params):
    """"output" if the backward of `name` (with these parameters) uses the output, else "input"."""
    _function(name, "forward")
    if name in ("elu", "celu"):
        return "output" if params.get("alpha", 1.0) >= 0 else "input"
    if name == "leaky_relu":
        return "output" if params.get("negative_slope", 0.01) >= 0 else "input"
    return "output" if name in _SAVES_OUTPUT else "input"


def forward(name, x, **params):
    """y = f(x)"""
    return _function(name, "forward")(x, **params)


def backward(name, grad_output, saved, **params):
    """grad_output * f'(x) from saved (x or y, as saves(name, **params) says); prelu: (dx, dweight)."""
    return _function(name, f"backward_from_{saves(name, **params)}")(grad_output, saved, **params)


def condition_scale(name, direction, x, grad_output=None, **params):
    """Scale for rounding errors at input x: |exact result|, or the sum of |terms| where the formula
    is a sum of terms that cancel (gelu', silu', mish', hardswish', the derivative from a saved
    output, softmax/log_softmax backward, prelu's grad_weight).  grad_output: dy, default 1."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        y = forward(name, x, **params)
        if direction == "forward":
            return np.abs(y)
        _require(direction == "backward", f"direction must be 'forward' or 'backward', not {direction!r}")
        dy = np.ones_like(y) if grad_output is None else np.asarray(grad_output, dtype=np.float64)
        ady, axis = np.abs(dy), int(params.get("axis", -1))
        if name == "softmax":
            return np.abs(y) * (ady + np.sum(np.abs(dy * y), axis=axis, keepdims=True))
        if name == "log_softmax":
            return ady + np.exp(y) * np.sum(ady, axis=axis, keepdims=True)
        if name == "prelu":
            dx, _ = prelu_backward_from_input(dy, x, **params)
            return np.abs(dx), np.abs(prelu_backward_from_input(ady, np.minimum(x, 0), **params)[1])
        if name == "maxout":
            return np.abs(backward(name, dy, x, **params))
        alpha = params.get("alpha", 1.0)
        terms = {
            "gelu": lambda: _gelu_dterms(x, params.get("approximate", "none")),
            "silu": lambda: _silu_dterms(x), "swish": lambda: _silu_dterms(x),
            "mish": lambda: _mish_dterms(x),
            "hardswish": lambda: (np.where(np.abs(x) <= 3, x / 3, x > 3), np.where(np.abs(x) <= 3, 0.5, 0)),
            "sigmoid": lambda: (y, y * y),
            "tanh": lambda: (1.0, y * y),
            "selu": lambda: (np.where(y > 0, SELU_SCALE, y), np.where(y > 0, 0, SELU_SCALE * SELU_ALPHA)),
            "elu": lambda: (np.where(y > 0, 1, y), np.where(y > 0, 0, alpha)),
            "celu": lambda: (np.where(y > 0, 1, y / alpha), np.where(y > 0, 0, 1)),
        }.get(name)
        if terms is None or (name in ("elu", "celu") and saves(name, **params) == "input"):
            return np.abs(_function(name, "backward_from_input")(dy, x, **params))
        a, b = terms()
        return ady * (np.abs(a) + np.abs(b))
