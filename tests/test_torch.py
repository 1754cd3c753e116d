"""Every forward and backward against torch.nn.functional and autograd, where PyTorch is installed.

This checks semantics (parameter names and defaults, which branch at a kink, PyTorch's switch
points), on finite inputs; accuracy is checked against fastact.reference, which is exact to
float64 where PyTorch's float32 kernels are not (README: accuracy). Known, intended differences:
NaN in a backward's saved tensor gives NaN here, and the limits at +-inf are the mathematical ones.
"""
import numpy as np
import pytest

import fastact as fa

from conftest import CASES, case_id, forward_and_saved, hostile, kinks

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH = {
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "elu": F.elu, "selu": F.selu, "celu": F.celu,
    "gelu": F.gelu, "silu": F.silu, "mish": F.mish, "softplus": F.softplus,
    "logsigmoid": F.logsigmoid, "relu": F.relu, "relu6": F.relu6, "leaky_relu": F.leaky_relu,
    "hardtanh": F.hardtanh, "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish,
    "threshold": F.threshold, "softsign": F.softsign,
}
# atol for float32 covers PyTorch's own tail errors, e.g. its float32 gelu backward is exactly 0
# below x = -5.2 where the true value is about -6e-7 (fastact: within 4 ulp, test_activations).
TOLERANCE = {np.float32: dict(rtol=2e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-13)}


def torch_forward_backward(fn, x, dy, **params):
    t = torch.from_numpy(x.copy()).requires_grad_()
    y = fn(t, **params)
    y.backward(torch.from_numpy(dy))
    return y.detach().numpy(), t.grad.numpy()


def assert_close_to_torch(got, want, want64, tolerance, what):
    """Each element within tolerance of PyTorch's result in the same dtype, or of PyTorch's float64
    result for the same inputs. PyTorch's float32 kernels change with the CPU it runs on (its vector
    and MKL paths): on one CI machine its float32 tanh was exactly +-1 from |x| ~ 5 on (an error of
    9e-5), where on this one it is within 1 ulp. PyTorch's float64 op is the same operation (same
    branches, same switch points) without that float32 error, so it is a second oracle that owes
    nothing to fastact."""
    near = np.isclose(got, want, **tolerance) | np.isclose(got, want64, **tolerance)
    np.testing.assert_allclose(got[~near], want[~near], **tolerance, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_pytorch(case, dtype):
    name, params = case
    x = hostile(dtype, kinks(name, params))
    x = x[np.isfinite(x) & (np.abs(x) < 1e6)]
    dy = np.random.default_rng(2).uniform(-2, 2, x.size).astype(dtype)
    want_y, want_dx = torch_forward_backward(TORCH[name], x, dy, **params)
    want64_y, want64_dx = torch_forward_backward(TORCH[name], x.astype(np.float64),
                                                 dy.astype(np.float64), **params)
    act = getattr(fa, name)
    y, saved = forward_and_saved(name, params, x)
    # celu with alpha < 0: PyTorch computes alpha * expm1(x/alpha) and overflows where the product
    # is finite (fastact applies alpha first); compare where PyTorch's result is finite
    finite = np.isfinite(want_y) & np.isfinite(want_dx)
    assert finite.mean() > 0.9
    assert_close_to_torch(y[finite], want_y[finite], want64_y[finite], TOLERANCE[dtype],
                          f"{name} forward")
    tolerance = TOLERANCE[dtype]
    if name == "hardsigmoid":  # PyTorch's float64 kernel multiplies by the float32 constant 1/6
        tolerance = TOLERANCE[np.float32]
    assert_close_to_torch(act.backward(dy, saved, **params)[finite], want_dx[finite],
                          want64_dx[finite], tolerance, f"{name} backward")


def test_torch_comparison_fails_on_a_wrong_value():
    x = np.linspace(-6, 6, 101, dtype=np.float32)
    want, want64 = torch.tanh(torch.from_numpy(x)).numpy(), np.tanh(x.astype(np.float64))
    assert_close_to_torch(fa.tanh(x), want, want64, TOLERANCE[np.float32], "tanh")
    wrong = fa.tanh(x)
    wrong[60] += 1e-3
    with pytest.raises(AssertionError):
        assert_close_to_torch(wrong, want, want64, TOLERANCE[np.float32], "tanh")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_wise_and_prelu_match_pytorch(dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 4, 10)) * 5).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    for name, dim in (("softmax", 1), ("log_softmax", -1)):
        want_y, want_dx = torch_forward_backward(getattr(F, name), x, dy, dim=dim)
        y = getattr(fa, name)(x, axis=dim)
        np.testing.assert_allclose(y, want_y, **TOLERANCE[dtype])
        np.testing.assert_allclose(getattr(fa, name).backward(dy, y, axis=dim), want_dx,
                                   **TOLERANCE[dtype])
    w = rng.uniform(0, 0.5, 4).astype(dtype)
    tx, tw = torch.from_numpy(x.copy()).requires_grad_(), torch.from_numpy(w.copy()).requires_grad_()
    F.prelu(tx, tw).backward(torch.from_numpy(dy))
    np.testing.assert_allclose(fa.prelu(x, w), F.prelu(torch.from_numpy(x), torch.from_numpy(w)),
                               **TOLERANCE[dtype])
    dx, dw = fa.prelu.backward(dy, x, w)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TOLERANCE[dtype])
    np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-4 if dtype == np.float32 else 1e-10)
    want_y, want_dx = torch_forward_backward(F.rrelu, x, dy, lower=0.1, upper=0.3, training=False)
    np.testing.assert_allclose(fa.rrelu(x, 0.1, 0.3), want_y, **TOLERANCE[dtype])
    np.testing.assert_allclose(fa.rrelu.backward(dy, x, 0.1, 0.3), want_dx, **TOLERANCE[dtype])
    # maxout has no torch.nn.functional op: the usual reshape-and-amax
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = tx.unflatten(2, (5, 2)).amax(-1)
    ty.backward(torch.from_numpy(dy[..., :5].copy()))
    np.testing.assert_array_equal(fa.maxout(x, 2, axis=2), ty.detach().numpy())
    np.testing.assert_array_equal(fa.maxout.backward(dy[..., :5], x, 2, axis=2), tx.grad.numpy())
