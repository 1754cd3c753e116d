"""One spec per activation: the single source for the API, every backend, the tests and the benchmarks.

Each activation is written once here as scalar Python over the primitives of kernels/math.py. The
backends compile these same functions (Numba on the CPU, numba-cuda on the GPU); the tests compare
them with fastact/reference.py, which is written independently with NumPy/SciPy.

Scalar conventions: ``NAME_forward(x, *params)``; ``NAME_backward_from_input(dy, x, *params)`` or
``NAME_backward_from_output(dy, y, *params)`` returning grad_input. A backward returns NaN where the
saved value is NaN, and is grad_output times the derivative (so a NaN grad_output gives NaN).
"""
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .kernels import math as m
from .kernels.math import like, pick, scalar

SELU_ALPHA = 1.6732632423543772848170429916717  # Klambauer et al. 2017, eq. 14
SELU_SCALE = 1.0507009873554804934193349852946
GELU_TANH_K1 = (1.5957691669464111, -4.534068054340423e-08,  # 2*sqrt(2/pi), hi/lo in f32 then f64
                1.5957691216057308, -9.96930880911092e-17)
GELU_TANH_K3 = (0.07135481387376785, 2.3988324659995897e-09,  # 2*sqrt(2/pi)*0.044715
                0.07135481627260025, -6.175149918155315e-19)
GELU_TANH_C = 0.044715  # Hendrycks & Gimpel 2016


@scalar
def derivative_select(saved, threshold, below, above):
    """above where saved > threshold, below where saved <= threshold, NaN where saved is NaN."""
    if saved > threshold:
        return above
    return below if saved <= threshold else saved


# --- exponential family -------------------------------------------------------------------------------

@scalar
def sigmoid_forward(x):
    return m.sigmoid(x)


@scalar
def sigmoid_backward_from_output(dy, y):
    return dy * (y * (like(y, 1.0) - y))


@scalar
def tanh_forward(x):
    return m.tanh(x)


@scalar
def tanh_backward_from_output(dy, y):
    return dy * ((like(y, 1.0) - y) * (like(y, 1.0) + y))  # 1 - y^2 without cancellation near |y|=1


@scalar
def elu_forward(x, alpha):
    """x itself for x >= 0: elu(-0) is -0 and elu(+0) +0 whatever alpha's sign (as PyTorch;
    expm1's polynomial gives +0 for -0)."""
    return x if x >= like(x, 0.0) else m.expm1_nonpositive_times(x, alpha)


@scalar
def elu_backward_from_output(dy, y, alpha):
    return dy * derivative_select(y, like(y, 0.0), y + alpha, like(y, 1.0))


@scalar
def elu_backward_from_input(dy, x, alpha):
    return dy if x > like(x, 0.0) else (m.exp_times(x, dy * alpha) if x <= like(x, 0.0) else x)


@scalar
def selu_forward(x):
    return like(x, SELU_SCALE) * elu_forward(x, like(x, SELU_ALPHA))


@scalar
def selu_backward_from_output(dy, y):
    return dy * derivative_select(y, like(y, 0.0), y + like(y, SELU_SCALE * SELU_ALPHA),
                                  like(y, SELU_SCALE))


@scalar
def over_alpha(x, alpha):
    """x / alpha, the division only where alpha != 1 (the default): a loop-invariant test, on which
    LLVM unswitches the loop (C: _generate.UNSWITCHED), so the default celu divides nothing."""
    return x if alpha == like(x, 1.0) else x / alpha


@scalar
def celu_forward(x, alpha):
    """For alpha = 1 (the default) celu is elu (a loop-invariant test, on which LLVM unswitches
    the loop; C: _generate.UNSWITCHED): elu's expm1 of a non-positive x and no division, 24
    instructions per 16 elements where expm1_times of x / alpha took 39."""
    if alpha == like(x, 1.0):
        return elu_forward(x, alpha)
    return x if x >= like(x, 0.0) else m.expm1_times(x / alpha, alpha)  # (zeros: elu_forward)


@scalar
def celu_backward_from_output(dy, y, alpha):
    return dy * derivative_select(y, like(y, 0.0), over_alpha(y, alpha) + like(y, 1.0),
                                  like(y, 1.0))


@scalar
def celu_backward_from_input(dy, x, alpha):
    """dy e^(x/alpha) below 0: dy joins before exp's scaling (finite where e^(x/alpha) overflows)."""
    return dy if x > like(x, 0.0) else (m.exp_times(over_alpha(x, alpha), dy)
                                        if x <= like(x, 0.0) else x)


@scalar
def gelu_forward(x):
    """x Phi(x) = na Phi(na) for x < 0 and x + na Phi(na) otherwise (na = -|x|: no cancellation),
    with the product na Phi(na) formed before the final scaling of exp (accurate where it is
    subnormal)."""
    q, k, g, na = m.normal_parts(x)
    tail = m.times_exp_parts(g * na, q, k)
    # (max(x, 0) + tail is one operation fewer but gives +0 for every x whose result underflows)
    return tail if x < like(x, 0.0) else x + tail


@scalar
def gelu_backward_from_input(dy, x):
    """Phi(x) + x phi(x) = w for x < 0 and 1 - w above, with w = Phi(na) + na phi(na) (na = -|x|):
    both terms share exp(-x^2/2) = (1 + q) 2**k, w = ((1 + q) (g + na/sqrt(2 pi))) 2**k."""
    q, k, g, na = m.normal_parts(x)
    inv_sqrt_2pi = pick(x, m.INV_SQRT_2PI[0], m.INV_SQRT_2PI[1])
    w = m.times_exp_parts(m.fma(na, inv_sqrt_2pi, g), q, k)
    # dy (1 - w) with one rounding (math.times_one_plus), dy's sign at dy = +-0
    return (dy * w if x < like(x, 0.0)
            else math.copysign(m.times_one_plus(dy, -w, m.finite(dy)), dy))


@scalar
def gelu_tanh_sum(x):
    """(p, pe, a, ae, wh, we): x^2 = p + pe, k3 p = a + ae and k1 + a = wh + we exactly (the sum
    of two positive numbers by Fast2Sum on their max and min: 5 operations, not Knuth's 6), the
    pieces of gelu_tanh_w and gelu_tanh_argument."""
    p, pe = m.two_prod(x, x)
    k3h = pick(x, GELU_TANH_K3[0], GELU_TANH_K3[2])
    k1h = pick(x, GELU_TANH_K1[0], GELU_TANH_K1[2])
    a, ae = m.two_prod(k3h, p)
    wh = k1h + a
    big = a if a > k1h else k1h
    small = k1h if a > k1h else a
    return p, pe, a, ae, wh, small - (wh - big)


@scalar
def gelu_tanh_w(x):
    """(wh, wl): w = k1 + k3 x^2 = wh + wl as a double-word; z = 2*sqrt(2/pi)*(x + 0.044715 x^3) =
    x w and gelu_tanh(x) = x*sigmoid(z). exp(-|z|) multiplies the relative error of z by |z| (up
    to 127 in f32), hence the pair; math.exp_parts_q_of_product takes -|z| as the product
    (-|x|) w. The low parts summed as k1l + k3l p + k3h pe by two FMAs, then ae."""
    p, pe, a, ae, wh, we = gelu_tanh_sum(x)
    k3h, k3l = pick(x, GELU_TANH_K3[0], GELU_TANH_K3[2]), pick(x, GELU_TANH_K3[1], GELU_TANH_K3[3])
    k1l = pick(x, GELU_TANH_K1[1], GELU_TANH_K1[3])
    return wh, we + (ae + m.fma(k3h, pe, m.fma(k3l, p, k1l)))


@scalar
def gelu_tanh_argument(x):
    """(wh, wl, a, tail): the same w as gelu_tanh_w, its low part summed differently (wl = we +
    (tail + k1l), other bits), and the factor k3 x^2 of its cubic term = a + tail, a double-word
    too (for the derivative)."""
    p, pe, a, ae, wh, we = gelu_tanh_sum(x)
    k3h, k3l = pick(x, GELU_TANH_K3[0], GELU_TANH_K3[2]), pick(x, GELU_TANH_K3[1], GELU_TANH_K3[3])
    tail = ae + (k3h * pe + k3l * p)  # k3 x^2 = a + tail
    return wh, we + (tail + pick(x, GELU_TANH_K1[1], GELU_TANH_K1[3])), a, tail


@scalar
def gelu_tanh_clamp(x):
    """x clamped to [-11.5, 11.5] (f32) / [-22, 22] (f64): beyond, gelu_tanh rounds to x above and
    underflows to 0 below (so does its derivative, to 1 and 0), and within, |z| stays in the
    range of exp_parts_q_of_product (k >= -183 / -1147)."""
    cap = pick(x, 11.5, 22.0)
    return m.clamp(x, -cap, cap)


@scalar
def gelu_tanh_forward(x):
    """x sigmoid(z) (math.sigmoid_times) from exp(-|z|) = exp(-|x| w), z = x w."""
    xs = gelu_tanh_clamp(x)
    wh, wl = gelu_tanh_w(xs)
    q, k = m.exp_parts_q_of_product(-abs(xs), wh, wl)  # exp(-|z|)
    # x itself multiplies above the clamp, where sigmoid(z) is 1 (a max, not a compare and blend)
    c = x if x > xs else xs
    return m.sigmoid_times(q + like(x, 1.0), k, xs >= like(x, 0.0), c)


@scalar
def gelu_tanh_backward_from_input(dy, x):
    """dy (sigmoid(z) + x z'(x) sigmoid(z) sigmoid(-z)), compensated
    (math.sigmoid_plus_scaled_derivative_compensated_by)."""
    xs = gelu_tanh_clamp(x)
    wh, wl, a, tail = gelu_tanh_argument(xs)
    q, k = m.exp_parts_q_of_product(-abs(xs), wh, wl)  # exp(-|z|)
    hi = xs * wh
    lo = m.fma(xs, wh, -hi) + xs * wl  # z = hi + lo
    # c = x z'(x) = k1 x + 3 k3 x^3 = z + 2 x (k3 x^2): no cancellation. c rounded once, and c_lo
    # with the low parts and most of that rounding (3.3 ulp for the backward where c alone gave 4.5,
    # before the compensation; 2.1 now)
    c = m.fma(xs + xs, a, hi)
    c_lo = m.fma(xs + xs, tail, lo) + (hi - (c - (xs + xs) * a))
    return m.sigmoid_plus_scaled_derivative_compensated_by(dy, q, k, xs >= like(x, 0.0), c, c_lo)


@scalar
def silu_forward(x):
    """x sigmoid(x) from exp(-|x|) with x itself as the factor, clamped below only: where x e^x
    underflows (p = 0) -inf would make 0 * inf. Above, x / (1 + e) = x once e rounds away, +inf
    included: no final select (Numba 42 -> 38, C 63 -> 41 instructions per 16 elements). -|x|
    needs no upper clamp: exp_parts_bounded_above here (Numba one instruction fewer, +2-5%; C
    too since 2026-11-24: +7% in cache, math.exp_parts_q_bounded_above)."""
    p, k = m.exp_parts_bounded_above(-abs(x), like(x, -0.0))
    lowest = pick(x, -1e30, -1e300)
    return m.sigmoid_times(p, k, x >= like(x, 0.0), x if x > lowest else lowest)


@scalar
def silu_backward_from_input(dy, x):
    """sigmoid(x) + x sigmoid(x) sigmoid(-x) (math.sigmoid_plus_scaled_derivative)."""
    big = pick(x, 1e30, 1e300)
    q, k = m.exp_parts_q_bounded_above(-abs(x), like(x, -0.0))
    c = m.clamp(x, -big, big)
    return dy * m.sigmoid_plus_scaled_derivative(q, k, x >= like(x, 0.0), c, like(x, 0.0))


@scalar
def mish_forward(x):
    return x if x > pick(x, 20.0, 40.0) else m.mish_times_x(x)


@scalar
def mish_backward_from_input(dy, x):
    """tanh(sp) + x sigmoid(x) sech^2(sp) with sp = softplus(x), over one denominator in v = e^-|x|:
    v (4(1 + x) + v (6 + 4x + v (4 + v))) / D for x < 0 and 1 + v^2 (4x - 2 + v (4x - 4 - 4v)) / D
    for x >= 0, where D = (2 + 2v + v^2)^2 and (1 + 2v + 2v^2)^2: one polynomial with its
    coefficients reversed (v -> 1/v), picked per lane. With v <= 1 nothing overflows, and in the
    input's own precision the rounding errors stay within the bound (this used float64 registers:
    0.7 Gelem/s per core in float32). For x >= 0 the quotient is a small correction to 1 (3.5 ulp
    as one quotient); for x < 0, v = (1 + q) 2**k joins unrounded and before the final scaling
    (math.times_exp_parts). Only the unavoidable cancellation near the
    derivative's zero (x = -1.19) is left."""
    xs = m.clamp(x, pick(x, -118.0, -760.0), pick(x, 20.0, 40.0))  # beyond: 0 / 1 in x's type
    q, k = m.exp_parts_q_in_range(-abs(xs), like(x, -0.0))
    v = m.scale_by_pow2_nonpositive(q + like(x, 1.0), k)
    negative = xs < like(x, 0.0)
    one, four, six, eight = like(x, 1.0), like(x, 4.0), like(x, 6.0), like(x, 8.0)
    four_x = four * xs
    # x < 0: N = 4(1 + x) + v (6 + 4x + v (4 + v)); x >= 0: N = 1 + v^2 M with M = 4x - 2 + v (4x - 4 - 4v)
    below = m.fma(v, m.fma(v, v + four, four_x + six), four_x + four)
    above = v * v * m.fma(v, m.fma(-four, v, four_x - four), four_x - like(x, 2.0))
    # the denominator's coefficients picked by "not x >= 0" (which differs only for NaN, where all is
    # NaN): on the numerator's condition LLVM turned the quotient of two selects into two vdivps
    lower = not xs >= like(x, 0.0)
    denominator = m.fma(v, m.fma(v, m.fma(v, m.fma(v, one if lower else four, four if lower else eight),
                                          eight), eight if lower else four), four if lower else one)
    ratio = (below if negative else above) / denominator
    dyc = m.finite(dy)  # dy (1 + ratio) and dy ratio (1 + q) 2**k with one final rounding
    fused = (m.times_exp_parts_by(dy, ratio, q, k, dyc) if negative
             else m.times_one_plus(dy, ratio, dyc))
    return math.copysign(fused, dy * (ratio if negative else one))  # (dy = +-0: as gelu's)


@scalar
def softplus_forward(x, beta, threshold):
    """log(1 + e^(beta x)) / beta; the division only where beta != 1 (a loop-invariant, well
    predicted branch: the default softplus at 2^26 went from 19.8 to 21.3 GB/s without it)."""
    z = beta * x
    s = m.softplus(z)
    return x if z > threshold else (s if beta == like(x, 1.0) else s / beta)


@scalar
def softplus_backward_from_input(dy, x, beta, threshold):
    z = beta * x
    return dy if z > threshold else dy * m.sigmoid(z)


@scalar
def logsigmoid_forward(x):
    return -m.softplus(-x)


@scalar
def logsigmoid_backward_from_input(dy, x):
    return dy * m.sigmoid(-x)


# --- piecewise-linear family ---------------------------------------------------------------------------

@scalar
def relu_forward(x):
    return like(x, 0.0) if x < like(x, 0.0) else x


@scalar
def relu_backward_from_output(dy, y):
    return dy * derivative_select(y, like(y, 0.0), like(y, 0.0), like(y, 1.0))


@scalar
def leaky_relu_forward(x, negative_slope):
    return x if x > like(x, 0.0) else x * negative_slope


@scalar
def leaky_relu_backward(dy, saved, negative_slope):
    """From the output when negative_slope >= 0 (same sign as the input), else from the input."""
    return dy * derivative_select(saved, like(saved, 0.0), negative_slope, like(saved, 1.0))


@scalar
def prelu_grad_weight_term(dy, x):
    """The contribution of one element to d(loss)/d(weight): dy * x where x <= 0 (NaN x: NaN)."""
    return like(x, 0.0) if x > like(x, 0.0) else dy * x


@scalar
def hardtanh_forward(x, min_val, max_val):
    return m.clamp(x, min_val, max_val)


@scalar
def hardtanh_backward_from_input(dy, x, min_val, max_val):
    """1 strictly inside (min_val, max_val), 0 at the edges and outside (as PyTorch), NaN for NaN."""
    outside = like(x, 0.0) if (x <= min_val or x >= max_val) else x
    return dy * (like(x, 1.0) if (x > min_val and x < max_val) else outside)


@scalar
def hardsigmoid_forward(x):
    return m.sixth(m.clamp(x + like(x, 3.0), like(x, 0.0), like(x, 6.0)))


@scalar
def hardsigmoid_backward_from_input(dy, x):
    return hardtanh_backward_from_input(dy, x, like(x, -3.0), like(x, 3.0)) / like(x, 6.0)


@scalar
def hardswish_forward(x):
    y = x * (m.clamp(x + like(x, 3.0), like(x, 0.0), like(x, 6.0)) / like(x, 6.0))
    return like(x, 0.0) if x < like(x, -3.0) else y  # -inf * 0 would be NaN


@scalar
def hardswish_backward_from_input(dy, x):
    """PyTorch 2.x's pieces: 0 for x <= -3, x/3 + 1/2 strictly inside, 1 for x >= 3."""
    outer = like(x, 0.0) if x <= like(x, -3.0) else (like(x, 1.0) if x >= like(x, 3.0) else x)
    inside = x > like(x, -3.0) and x < like(x, 3.0)
    return dy * (x / like(x, 3.0) + like(x, 0.5) if inside else outer)


@scalar
def threshold_forward(x, threshold, value):
    return value if x <= threshold else x


@scalar
def threshold_backward_from_input(dy, x, threshold, value):
    return dy * derivative_select(x, threshold, like(x, 0.0), like(x, 1.0))


@scalar
def softsign_forward(x):
    xs = m.clamp(x, pick(x, -1e30, -1e300), pick(x, 1e30, 1e300))  # softsign(inf) = 1, not NaN
    return xs / (like(x, 1.0) + abs(xs))


@scalar
def softsign_backward_from_input(dy, x):
    """1 / (1 + |x|)^2: in float64 registers for float32 (one rounding, and the square cannot
    overflow); float64 squares the reciprocal instead (1/(a a) would overflow above 1e154)."""
    if m.is_single(x):
        a = 1.0 + abs(np.float64(x))
        return dy * like(x, 1.0 / (a * a))
    r = like(x, 1.0) / (like(x, 1.0) + abs(x))
    return dy * (r * r)


# --- softmax and log_softmax backward, per element (the row sums are the kernels' reductions) -------

@scalar
def softmax_backward_element(dy, y, dot):
    """dx = y (dy - dot) with dot = sum(dy y) over the row in float64, rounded once."""
    return like(y, y * (np.float64(dy) - dot))


@scalar
def softmax_backward_element_split(dy, y, hi, lo):
    """softmax_backward_element in y's type, with the row's float64 dot = hi + lo split into two
    numbers of that type (lo = 0 in float64, where this is the same formula). Where dy - dot
    cancels, dy and hi are close and dy - hi is exact, so the difference keeps its bits: three
    roundings, 1.9 ulp measured in float32 (0.5 for the float64 formula, at twice the cost per
    element). The caller keeps it to rows where dy - hi cannot overflow (the CPU kernels)."""
    return y * ((dy - hi) - lo)


@scalar
def log_softmax_backward_element(dy, y, total):
    """dx = dy - e^y total with total = sum(dy) over the row (float64, used in y's type), rounded
    once after the exact product (an FMA: where dy and e^y total cancel, the product's own
    rounding was a part of the error that the cancellation magnifies)."""
    return m.fma(-m.exp(y), like(y, total), dy)


@scalar
def log_softmax_backward_element_nonpositive(dy, y, total):
    """log_softmax_backward_element for y <= 0 (or NaN), the rows of a real log_softmax output:
    e^y without its upper clamp and with the cheaper scaling (math.exp_nonpositive), the same
    bits. The row loops pick it per row (loops.row_nonpositive)."""
    return m.fma(-m.exp_nonpositive(y), like(y, total), dy)


@scalar
def softmax_backward_term(dy, y):
    """One term of the row sum softmax's backward needs: dy y, in float64."""
    return np.float64(dy) * np.float64(y)


@scalar
def log_softmax_backward_term(dy, y):
    """One term of the row sum log_softmax's backward needs: dy, in float64."""
    return np.float64(dy)


# --- maxout -----------------------------------------------------------------------------------------

@scalar
def maxout_takes_over(v, best):
    """Whether v replaces best as a group's running maximum, scanning the group in order: a larger
    value, or the first NaN (a NaN best stays): the max is the first NaN or the first maximum."""
    return (v > best or v != v) and best == best


# --- the table ------------------------------------------------------------------------------------------

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    name: str
    default: object = REQUIRED
    choices: tuple = ()  # for string-valued parameters (gelu's approximate)
    nan: bool = False  # NaN taken (threshold's value, as PyTorch); other parameters refuse it


@dataclass(frozen=True)
class Spec:
    """One activation. ``forward``/``backward_*`` map a variant (the value of the choice parameter,
    or None) to scalar functions; ``kind`` names the kernel shape: elementwise, prelu, rrelu,
    softmax, log_softmax, maxout."""
    name: str
    family: str
    formula: str
    summary: str
    params: tuple = ()
    forward: dict = field(default_factory=dict)
    backward_from_input: dict = field(default_factory=dict)
    backward_from_output: dict = field(default_factory=dict)
    saves_output: Callable = lambda **p: False  # given the parameters
    validate: Optional[Callable] = None
    kind: str = "elementwise"
    aliases: tuple = ()
    fixed: dict = field(default_factory=dict)  # parameters bound by an alias (relu6 = hardtanh(0, 6))
    reference: str = ""  # paper or documentation


def _require(condition, message):
    if not condition:
        raise ValueError(message)


SPECS = {}


def _add(spec):
    SPECS[spec.name] = spec


_add(Spec("sigmoid", "exponential", r"\sigma(x) = \frac{1}{1 + e^{-x}}", "Logistic sigmoid.",
          forward={None: sigmoid_forward}, backward_from_output={None: sigmoid_backward_from_output},
          saves_output=lambda: True))
_add(Spec("tanh", "exponential", r"\tanh(x) = \frac{e^x - e^{-x}}{e^x + e^{-x}}", "Hyperbolic tangent.",
          forward={None: tanh_forward}, backward_from_output={None: tanh_backward_from_output},
          saves_output=lambda: True))
_add(Spec("elu", "exponential", r"x \text{ if } x > 0 \text{ else } \alpha (e^x - 1)",
          "Exponential linear unit.", params=(Param("alpha", 1.0),),
          forward={None: elu_forward}, backward_from_input={None: elu_backward_from_input},
          backward_from_output={None: elu_backward_from_output},
          saves_output=lambda alpha: alpha >= 0, reference="https://arxiv.org/abs/1511.07289"))
_add(Spec("selu", "exponential", r"\lambda \,\mathrm{elu}(x, \alpha), \lambda=1.0507, \alpha=1.6733",
          "Scaled exponential linear unit.", forward={None: selu_forward},
          backward_from_output={None: selu_backward_from_output}, saves_output=lambda: True,
          reference="https://arxiv.org/abs/1706.02515"))
_add(Spec("celu", "exponential", r"\max(0, x) + \min(0, \alpha (e^{x/\alpha} - 1))",
          "Continuously differentiable ELU.", params=(Param("alpha", 1.0),),
          forward={None: celu_forward}, backward_from_input={None: celu_backward_from_input},
          backward_from_output={None: celu_backward_from_output},
          saves_output=lambda alpha: alpha >= 0,
          validate=lambda alpha: _require(alpha != 0, "celu: alpha must not be 0"),
          reference="https://arxiv.org/abs/1704.07483"))
_add(Spec("gelu", "exponential",
          r"x \Phi(x) \text{ ('none') or } \tfrac{x}{2} (1 + \tanh(\sqrt{2/\pi}(x + 0.044715 x^3)))",
          "Gaussian error linear unit.", params=(Param("approximate", "none", ("none", "tanh")),),
          forward={"none": gelu_forward, "tanh": gelu_tanh_forward},
          backward_from_input={"none": gelu_backward_from_input, "tanh": gelu_tanh_backward_from_input},
          reference="https://arxiv.org/abs/1606.08415"))
_add(Spec("silu", "exponential", r"x \sigma(x)", "Sigmoid linear unit (swish with beta = 1).",
          forward={None: silu_forward}, backward_from_input={None: silu_backward_from_input},
          aliases=("swish",), reference="https://arxiv.org/abs/1702.03118"))
_add(Spec("mish", "exponential", r"x \tanh(\log(1 + e^x))", "Mish.",
          forward={None: mish_forward}, backward_from_input={None: mish_backward_from_input},
          reference="https://arxiv.org/abs/1908.08681"))
_add(Spec("softplus", "exponential",
          r"\tfrac{1}{\beta}\log(1 + e^{\beta x}) \text{, or } x \text{ where } \beta x > \text{threshold}",
          "Softplus.", params=(Param("beta", 1.0), Param("threshold", 20.0)),
          forward={None: softplus_forward}, backward_from_input={None: softplus_backward_from_input},
          validate=lambda beta, threshold: _require(beta != 0, "softplus: beta must not be 0")))
_add(Spec("logsigmoid", "exponential", r"\log \sigma(x) = -\log(1 + e^{-x})", "Log of the sigmoid.",
          forward={None: logsigmoid_forward}, backward_from_input={None: logsigmoid_backward_from_input}))

_add(Spec("relu", "piecewise-linear", r"\max(0, x)", "Rectified linear unit.",
          forward={None: relu_forward}, backward_from_output={None: relu_backward_from_output},
          saves_output=lambda: True))
_add(Spec("leaky_relu", "piecewise-linear", r"x \text{ if } x > 0 \text{ else } a x", "Leaky ReLU.",
          params=(Param("negative_slope", 0.01),), forward={None: leaky_relu_forward},
          backward_from_input={None: leaky_relu_backward},
          backward_from_output={None: leaky_relu_backward},
          saves_output=lambda negative_slope: negative_slope >= 0))
_add(Spec("hardtanh", "piecewise-linear", r"\min(\max(x, \text{min\_val}), \text{max\_val})",
          "Hard tanh: a clip.", params=(Param("min_val", -1.0), Param("max_val", 1.0)),
          forward={None: hardtanh_forward}, backward_from_input={None: hardtanh_backward_from_input},
          validate=lambda min_val, max_val: _require(
              min_val <= max_val, "hardtanh: min_val must be <= max_val")))
_add(Spec("relu6", "piecewise-linear", r"\min(\max(x, 0), 6)", "ReLU capped at 6 (hardtanh(x, 0, 6)).",
          forward={None: hardtanh_forward}, backward_from_input={None: hardtanh_backward_from_input},
          fixed={"min_val": 0.0, "max_val": 6.0}))
_add(Spec("hardsigmoid", "piecewise-linear", r"\mathrm{relu6}(x + 3) / 6", "Hard sigmoid.",
          forward={None: hardsigmoid_forward}, backward_from_input={None: hardsigmoid_backward_from_input}))
_add(Spec("hardswish", "piecewise-linear", r"x \,\mathrm{relu6}(x + 3) / 6", "Hard swish.",
          forward={None: hardswish_forward}, backward_from_input={None: hardswish_backward_from_input},
          reference="https://arxiv.org/abs/1905.02244"))
_add(Spec("threshold", "piecewise-linear", r"x \text{ if } x > \text{threshold} \text{ else value}",
          "Threshold.", params=(Param("threshold"), Param("value", nan=True)),
          forward={None: threshold_forward}, backward_from_input={None: threshold_backward_from_input}))
_add(Spec("softsign", "piecewise-linear", r"\frac{x}{1 + |x|}", "Softsign.",
          forward={None: softsign_forward}, backward_from_input={None: softsign_backward_from_input}))
_add(Spec("prelu", "piecewise-linear", r"x \text{ if } x > 0 \text{ else } w_c x",
          "Parametric ReLU: a learnable slope per channel (axis 1) or one for all.",
          params=(Param("weight"),), forward={None: leaky_relu_forward},
          backward_from_input={None: leaky_relu_backward}, kind="prelu",
          reference="https://arxiv.org/abs/1502.01852"))


def _rrelu_bounds(lower, upper, training):
    _require(bool(np.isfinite([lower, upper, lower + upper, upper - lower]).all()),
             "rrelu: lower and upper must be finite (their sum and difference too)")
    _require(lower <= upper, "rrelu: lower must be <= upper")


_add(Spec("rrelu", "piecewise-linear",
          r"x \text{ if } x \ge 0 \text{ else } a x,\ a \sim U(\text{lower}, \text{upper})",
          "Randomized leaky ReLU: random slopes when training, their mean in eval.",
          params=(Param("lower", 1.0 / 8), Param("upper", 1.0 / 3), Param("training", False)),
          forward={None: leaky_relu_forward}, backward_from_input={None: leaky_relu_backward},
          kind="rrelu", validate=_rrelu_bounds,
          reference="https://arxiv.org/abs/1505.00853"))

_add(Spec("softmax", "exponential", r"\frac{e^{x_i}}{\sum_j e^{x_j}}", "Softmax along an axis.",
          params=(Param("axis", -1),), kind="softmax", saves_output=lambda axis: True))
_add(Spec("log_softmax", "exponential", r"x_i - \log \sum_j e^{x_j}", "Log-softmax along an axis.",
          params=(Param("axis", -1),), kind="log_softmax", saves_output=lambda axis: True))
_add(Spec("maxout", "piecewise-linear", r"\max_{j < k} x_{c k + j}",
          "Maxout: the max over groups of k consecutive entries along an axis.",
          params=(Param("pieces"), Param("axis", 1)), kind="maxout",
          reference="https://arxiv.org/abs/1302.4389"))


@functools.lru_cache(maxsize=None)
def arithmetic_bound_scalar_names():
    """The exponential family's forwards and backwards from the input: bound by arithmetic, their
    CPU loops use 512-bit vectors where the CPU has them and prefetch their inputs. The rest
    (memory-bound in cache, and the backwards from a saved output) ran 10-25% slower on 512-bit
    vectors and instead write large outputs past the caches (kernels/loops.py, NOTES.md)."""
    return {fn.__name__ for spec in SPECS.values() if spec.family == "exponential"
            for table in (spec.forward, spec.backward_from_input) for fn in table.values()}


# How many light elements one element of a map costs, for splitting a call over threads
# (_threads.run splits calls of _threads.SPLIT_SIZE / cost elements and more): the arithmetic-bound
# loops split from 2^16 elements, the rest from 2^17. On the Zen 4 VM, one thread against a split
# call (~7 us of hand-off) at 2^16: the exponential forwards and backwards from the input
# 0.92-1.44x (celu / elu forward 0.92 / 0.96x, sigmoid 1.13x, gelu 1.42x), the light ones
# 0.54-0.76x (relu forward 6.5 against 10.9-11.2 us); at 2^15 only gelu and mish backward gained
# (1.18x; NOTES.md).
@functools.lru_cache(maxsize=None)
def split_cost(scalar_name):
    return 2 if scalar_name in arithmetic_bound_scalar_names() else 1


# The forwards bound by arithmetic whose large outputs keep plain stores: the heaviest two, which
# lost 2% and 7% with non-temporal stores through an L1 buffer (Numba reloads their loops'
# constants per 64-element part; kernels/loops.py, map_1_streamed). Every other one streams.
UNSTREAMED_FORWARDS = frozenset({"gelu_forward", "gelu_tanh_forward"})


def families():
    """{"exponential": [...], "piecewise-linear": [...]}: the two families, from the specs (the
    row-wise softmax and log_softmax are exponential, maxout is piecewise-linear)."""
    out = {}
    for spec in SPECS.values():
        out.setdefault(spec.family, []).append(spec.name)
    return out
