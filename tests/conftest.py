"""Shared test inputs and the one tolerance table.

Tolerances come from the issue's accuracy contract, in units of each dtype's own spacing:
float32 results within 4 ulp of the float64 reference, float64 within 1e-14 relative, float16
(computed in float32, rounded once) within 1 ulp. "ulp" is measured at the magnitude of the
result, or, for a derivative that is a sum of cancelling terms (gelu, silu, mish backward), at the
magnitude of those terms (reference.condition_scale): no finite-precision formula does better there.
Results in the subnormal range are allowed the same count of subnormal steps (4), float64 too:
its floor was 16 while the float64 reference rounded gelu backward's subnormal intermediates (up
to 62 steps of 2^-1074 off near x = -38 against mpmath, fastact within 1); that reference now
folds the factors into the exponent (test_activations), and 4 steps hold everywhere.
"""
import numpy as np
import pytest

import fastact as fa
from fastact import registry

TOLERANCE = {  # dtype: (kind, bound)
    np.dtype(np.float16): ("ulp", 1.0),
    np.dtype(np.float32): ("ulp", 4.0),
    np.dtype(np.float64): ("relative", 1e-14),
}
FLOATS = (np.float32, np.float64)

# Parameter sets per activation: the defaults, plus values that change which branch or which
# saved tensor is used.
PARAM_CASES = {
    "elu": [{}, {"alpha": 0.5}, {"alpha": -0.3}],
    "celu": [{}, {"alpha": 2.0}, {"alpha": -0.5}],
    "gelu": [{"approximate": "none"}, {"approximate": "tanh"}],
    "softplus": [{}, {"beta": 2.0, "threshold": 10.0}, {"beta": 0.5}],
    "leaky_relu": [{}, {"negative_slope": 0.2}, {"negative_slope": -0.5}],
    "hardtanh": [{}, {"min_val": -2.0, "max_val": 0.5}],
    "threshold": [{"threshold": 0.5, "value": -2.0}],
}
ELEMENTWISE = [s.name for s in registry.SPECS.values() if s.kind == "elementwise"]
CASES = [(name, params) for name in ELEMENTWISE for params in PARAM_CASES.get(name, [{}])]


def case_id(case):
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


def kinks(name, params):
    """Points where a piecewise function changes piece (inputs are placed on and around them)."""
    p = {**{q.name: q.default for q in registry.SPECS[name].params}, **params}
    return {"hardtanh": [p.get("min_val"), p.get("max_val")], "relu6": [0.0, 6.0],
            "hardsigmoid": [-3.0, 3.0], "hardswish": [-3.0, 3.0],
            "threshold": [p.get("threshold")],
            "softplus": [p.get("threshold", 20.0) / p.get("beta", 1.0)]}.get(name, [0.0])


def hostile(dtype, kink_points=(0.0,), seed=0):
    """Dense grid, both tails to beyond overflow/underflow, tiny and subnormal values, NaN and
    infinities, and values a few ulps either side of each kink: one array, long enough that the
    vectorized loop body (not only its scalar remainder) sees every kind of value."""
    dtype = np.dtype(dtype)
    fi = np.finfo(dtype)
    lim = {2: 12.0, 4: 120.0, 8: 800.0}[dtype.itemsize]
    rng = np.random.default_rng(seed)
    small = np.geomspace(float(fi.smallest_subnormal), 1.0, 300)
    big = np.exp(np.linspace(0.0, np.log(float(fi.max)), 300))
    parts = [np.linspace(-30, 30, 3001), np.linspace(-lim, lim, 1001), small, -small,
             big, -big,
             rng.standard_normal(1000) * 4,
             [0.0, -0.0, np.nan, np.inf, -np.inf, 1e4, -1e4, np.nan, 1.0, -1.0]]
    for k in kink_points:
        k = dtype.type(k)
        steps = [k]
        up = down = k
        for _ in range(3):
            up, down = np.nextafter(up, dtype.type(np.inf)), np.nextafter(down, dtype.type(-np.inf))
            steps += [up, down]
        parts.append(np.array(steps, dtype=np.float64))
    with np.errstate(over="ignore"):
        x = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]).astype(dtype)
    return np.concatenate([x, x[::-1][:513]])  # odd length: a scalar remainder after the vectors


def ulp_error(got, ref, dtype, scale=None):
    """|got - ref| in units of the tolerance (<= 1 passes) and where it is worst; checks NaN, inf."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    dtype = np.dtype(dtype)
    nan_mismatch = np.isnan(got) != np.isnan(ref)
    assert not nan_mismatch.any(), (
        f"NaN mismatch: {np.flatnonzero(nan_mismatch)[:5]}: got {got[nan_mismatch][:5]}, "
        f"expected {ref[nan_mismatch][:5]}")
    fi = np.finfo(dtype)
    big = np.abs(ref) > float(fi.max)
    wrong_overflow = big & ~np.isnan(ref) & ((np.abs(got) < float(fi.max)) | (np.sign(got) != np.sign(ref)))
    assert not wrong_overflow.any(), f"expected overflow to inf: got {got[wrong_overflow][:5]}"
    ok = ~np.isnan(ref) & ~big
    scale = np.abs(ref) if scale is None else np.maximum(np.abs(np.asarray(scale, np.float64)),
                                                         np.abs(ref))
    kind, bound = TOLERANCE[dtype]
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "ulp":
            unit = np.spacing(np.minimum(scale, float(fi.max)).astype(dtype)).astype(np.float64)
        else:
            unit = scale
        unit = np.maximum(unit * bound, float(fi.smallest_subnormal) * 4)  # 4 subnormal steps
        err = np.where(ok, np.abs(got - ref) / unit, 0.0)
    worst = int(np.argmax(err)) if err.size else 0
    return (float(err.max()) if err.size else 0.0), worst


def assert_close(got, ref, dtype, scale=None, context=""):
    err, worst = ulp_error(got, ref, dtype, scale)
    got_f, ref_f = np.ravel(got), np.ravel(ref)
    assert err <= 1.0, (f"{context}: error {err:.3g} x the {TOLERANCE[np.dtype(dtype)]} bound at "
                        f"index {worst}: got {got_f[worst]!r}, expected {ref_f[worst]!r}")


@pytest.fixture(params=FLOATS, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return np.dtype(request.param)


CPU_BACKENDS = ("cpu", "c")


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """Runs the test inside fa.backend(name) for each host backend; skips one not available."""
    available, reason = fa.backends()[request.param]
    if not available:
        pytest.skip(f"backend {request.param!r} not available: {reason}")
    with fa.backend(request.param):
        yield request.param


def forward_and_saved(name, params, x):
    """(y, saved) as a training loop would have them: saved is y or x per saves_for(params)."""
    act = getattr(fa, name)
    y = act(x, **params)
    return y, (y if act.saves_for(**params) == "output" else x)
