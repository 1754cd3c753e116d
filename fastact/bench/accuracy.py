"""Accuracy report: the largest error of every activation, forward and backward, in ulp of the
result, against the float64 reference, for fastact and (where installed) PyTorch on the same inputs.

    python -m fastact.bench.accuracy [--dtype float32] [--markdown]

Inputs: a dense grid over [-30, 30], both tails (to +-120 in float32), tiny values, and values
around each kink; finite only, so PyTorch's different NaN/inf conventions don't count. The ulp is
measured at the result's magnitude, or for a backward that is a sum of cancelling terms at the
magnitude of those terms (fastact.reference.condition_scale), the same measure as the tests.
"""
import argparse
import sys

import numpy as np

from .. import reference

TORCH_NAMES = {"sigmoid": "sigmoid", "tanh": "tanh", "logsigmoid": "logsigmoid", "gelu": "gelu",
               "elu": "elu", "selu": "selu", "celu": "celu", "silu": "silu", "mish": "mish",
               "softplus": "softplus", "relu": "relu", "relu6": "relu6", "leaky_relu": "leaky_relu",
               "hardtanh": "hardtanh", "hardsigmoid": "hardsigmoid", "hardswish": "hardswish",
               "softsign": "softsign"}
VARIANTS = {"gelu": [{"approximate": "none"}, {"approximate": "tanh"}]}


def inputs(dtype):
    lim = 120.0 if dtype == np.float32 else 800.0
    small = np.geomspace(1e-30, 1.0, 400)
    x = np.concatenate([np.linspace(-30, 30, 60001), np.linspace(-lim, lim, 4001), small, -small,
                        [-3.0, 3.0, 6.0, 20.0, -1.0, 1.0]])
    return x.astype(dtype)


def max_ulp(got, ref, scale, dtype):
    got = np.asarray(got, np.float64)
    fi = np.finfo(dtype)
    ok = np.isfinite(ref) & (np.abs(ref) <= float(fi.max)) & np.isfinite(got)
    scale = np.maximum(np.abs(ref), np.abs(scale))
    with np.errstate(all="ignore"):
        unit = np.maximum(np.spacing(np.minimum(scale, float(fi.max)).astype(dtype)).astype(np.float64),
                          float(fi.smallest_subnormal))
        err = np.where(ok, np.abs(got - ref) / unit, 0.0)
    bad = ~np.isfinite(got) & np.isfinite(ref) & (np.abs(ref) <= float(fi.max))
    return np.inf if bad.any() else float(err.max())


def torch_pair(name, x, dy, params):
    import torch
    fn = getattr(torch.nn.functional, TORCH_NAMES[name], None) or getattr(torch, name)
    t = torch.from_numpy(x.copy()).requires_grad_()
    y = fn(t, **params)
    y.backward(torch.from_numpy(dy))
    return y.detach().numpy(), t.grad.numpy()


def rows(dtype, with_torch):
    import fastact as fa
    x = inputs(dtype)
    dy = np.ones_like(x)
    x64 = x.astype(np.float64)
    for name in TORCH_NAMES:
        for params in VARIANTS.get(name, [{}]):
            act = getattr(fa, name)
            with np.errstate(all="ignore"):
                ref_y = reference.forward(name, x64, **params)
                exact_derivative = getattr(reference, f"{name}_backward_from_input")
                ref_dx = exact_derivative(np.ones_like(x64), x64, **params)
                scale = reference.condition_scale(name, "backward", x64, **params)
            y = act(x, **params)
            saved = y if act.saves_for(**params) == "output" else x
            # fastact's from-output backward is judged against the exact derivative too
            row = {"activation": name + "".join(f" {v}" for v in params.values()),
                   "forward": max_ulp(y, ref_y, ref_y, dtype),
                   "backward": max_ulp(act.backward(dy, saved, **params), ref_dx, scale, dtype)}
            if with_torch:
                ty, tdx = torch_pair(name, x, dy, params)
                row["torch forward"] = max_ulp(ty, ref_y, ref_y, dtype)
                row["torch backward"] = max_ulp(tdx, ref_dx, scale, dtype)
            yield row


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastact.bench.accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
        with_torch = True
    except ImportError:
        with_torch = False
    dtype = np.dtype(args.dtype).type
    table = list(rows(dtype, with_torch))
    columns = list(table[0])
    print(f"max error in ulp of {args.dtype} vs the float64 reference"
          + (" (PyTorch " + __import__("torch").__version__ + ")" if with_torch else ""))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in table:
        print("| " + " | ".join(v if isinstance(v, str) else (
            "inf" if v == np.inf else f"{v:.2g}") for v in row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
