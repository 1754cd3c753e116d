"""Throughput of the C backend beside the Numba backend and PyTorch's CPU ops, and the C backend's
first-call latency in a fresh process. Not a test: ``python -m fastact.bindings._benchmark``.

Every provider writes into a preallocated output (fastact ``out=``, PyTorch's ``.out`` /
``.grad_input`` ATen overloads where they exist), runs with the same thread count, and the
providers take turns call by call (interleaved), so a change in machine load hits all of them;
the table gives medians in Gelem/s.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

import fastact as fa
from fastact import registry

SELU = (registry.SELU_ALPHA, registry.SELU_SCALE)


def cases():
    """(label, activation, params, backward?) for every elementwise activation."""
    out = []
    for spec in registry.SPECS.values():
        if spec.kind != "elementwise":
            continue
        variants = [{"approximate": "none"}, {"approximate": "tanh"}] if spec.name == "gelu" else [
            {"threshold": 0.5, "value": -2.0} if spec.name == "threshold" else {}]
        for params in variants:
            label = spec.name + ("-tanh" if params.get("approximate") == "tanh" else "")
            out.append((label, spec.name, params, False))
            out.append((label + " bwd", spec.name, params, True))
    return out


def torch_op(torch, name, params, backward):
    """fn(x, dy, saved, out) with PyTorch's CPU kernel for this activation, writing into out."""
    aten = torch.ops.aten
    forward = {
        "sigmoid": lambda x, o: aten.sigmoid.out(x, out=o),
        "tanh": lambda x, o: aten.tanh.out(x, out=o),
        "elu": lambda x, o: aten.elu.out(x, 1.0, 1.0, 1.0, out=o),
        "selu": lambda x, o: aten.elu.out(x, SELU[0], SELU[1], 1.0, out=o),
        "celu": lambda x, o: aten.elu.out(x, 1.0, 1.0, 1.0, out=o),
        "gelu": lambda x, o: aten.gelu.out(x, approximate=params.get("approximate", "none"), out=o),
        "silu": lambda x, o: aten.silu.out(x, out=o),
        "mish": lambda x, o: aten.mish.out(x, out=o),
        "softplus": lambda x, o: aten.softplus.out(x, 1.0, 20.0, out=o),
        "logsigmoid": lambda x, o: aten.log_sigmoid.out(x, out=o),
        "relu": lambda x, o: aten.clamp_min.out(x, 0.0, out=o),
        "leaky_relu": lambda x, o: aten.leaky_relu.out(x, 0.01, out=o),
        "hardtanh": lambda x, o: aten.hardtanh.out(x, -1.0, 1.0, out=o),
        "relu6": lambda x, o: aten.hardtanh.out(x, 0.0, 6.0, out=o),
        "hardsigmoid": lambda x, o: aten.hardsigmoid.out(x, out=o),
        "hardswish": lambda x, o: aten.hardswish.out(x, out=o),
        "threshold": lambda x, o: aten.threshold.out(x, 0.5, -2.0, out=o),
        "softsign": lambda x, o: torch.nn.functional.softsign(x),  # composite: no out
    }
    if not backward:
        f = forward[name]
        return lambda x, dy, saved, o: f(x, o)
    approximate = params.get("approximate", "none")
    saved_buffers = {}

    def buffers(s):  # log_sigmoid_backward takes the forward's buffer, as autograd saves it
        if s.data_ptr() not in saved_buffers:
            saved_buffers[s.data_ptr()] = aten.log_sigmoid_forward(s)[1]
        return saved_buffers[s.data_ptr()]

    grad = {
        "sigmoid": lambda dy, s, o: aten.sigmoid_backward.grad_input(dy, s, grad_input=o),
        "tanh": lambda dy, s, o: aten.tanh_backward.grad_input(dy, s, grad_input=o),
        "elu": lambda dy, s, o: aten.elu_backward.grad_input(dy, 1.0, 1.0, 1.0, True, s,
                                                             grad_input=o),
        "selu": lambda dy, s, o: aten.elu_backward.grad_input(dy, SELU[0], SELU[1], 1.0, True, s,
                                                              grad_input=o),
        "celu": lambda dy, s, o: aten.elu_backward.grad_input(dy, 1.0, 1.0, 1.0, True, s,
                                                              grad_input=o),
        "gelu": lambda dy, s, o: aten.gelu_backward.grad_input(dy, s, approximate=approximate,
                                                               grad_input=o),
        "silu": lambda dy, s, o: aten.silu_backward.grad_input(dy, s, grad_input=o),
        "mish": lambda dy, s, o: aten.mish_backward(dy, s),  # no out overload
        "softplus": lambda dy, s, o: aten.softplus_backward.grad_input(dy, s, 1.0, 20.0,
                                                                       grad_input=o),
        "logsigmoid": lambda dy, s, o: aten.log_sigmoid_backward.grad_input(
            dy, s, buffers(s), grad_input=o),
        "relu": lambda dy, s, o: aten.threshold_backward.grad_input(dy, s, 0.0, grad_input=o),
        "leaky_relu": lambda dy, s, o: aten.leaky_relu_backward.grad_input(dy, s, 0.01, True,
                                                                           grad_input=o),
        "hardtanh": lambda dy, s, o: aten.hardtanh_backward.grad_input(dy, s, -1.0, 1.0,
                                                                       grad_input=o),
        "relu6": lambda dy, s, o: aten.hardtanh_backward.grad_input(dy, s, 0.0, 6.0,
                                                                    grad_input=o),
        "hardsigmoid": lambda dy, s, o: aten.hardsigmoid_backward.grad_input(dy, s, grad_input=o),
        "hardswish": lambda dy, s, o: aten.hardswish_backward.out(dy, s, out=o),
        "threshold": lambda dy, s, o: aten.threshold_backward.grad_input(dy, s, 0.5,
                                                                         grad_input=o),
        "softsign": None,
    }[name]
    if grad is None:  # autograd's formula for softsign, as PyTorch computes it
        return lambda x, dy, saved, o: dy / (1 + saved.abs()).square()
    return lambda x, dy, saved, o: grad(dy, saved, o)


def fastact_op(backend, name, params, backward):
    act = getattr(fa, name)

    def run(x, dy, saved, out):
        with fa.backend(backend):
            if backward:
                act.backward(dy, saved, **params, out=out)
            else:
                act(x, **params, out=out)
    return run


def measure(sizes, repeats, only=None, threads=None, separate_torch=True, with_torch=True):
    threads = threads or fa.get_num_threads()
    fa.set_num_threads(threads)
    if with_torch:
        import torch
        torch.set_num_threads(threads)
    rows = []
    for n in sizes:
        rng = np.random.default_rng(0)
        x = (rng.standard_normal(n) * 3).astype(np.float32)
        dy = rng.uniform(-1, 1, n).astype(np.float32)
        out = np.empty_like(x)
        if with_torch:
            tx, tdy, tout = torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(out)
        for label, name, params, backward in cases():
            if only and not any(o == label.split()[0] for o in only):
                continue
            act = getattr(fa, name)
            y = act(x, **params)
            saved = y if act.saves_for(**params) == "output" else x
            tsaved = torch.from_numpy(saved) if with_torch else None
            providers = {"c": (fastact_op("c", name, params, backward), (x, dy, saved, out)),
                         "cpu": (fastact_op("cpu", name, params, backward), (x, dy, saved, out)),
                         }
            if with_torch:
                providers["torch"] = (torch_op(torch, name, params, backward),
                                      (tx, tdy, tsaved, tout))
            times = {p: [] for p in providers}
            for p, (fn, args) in providers.items():  # warm-up (compiles the Numba kernel)
                fn(*args)
            # fastact's providers take turns; PyTorch runs its own block: its OpenMP threads spin
            # after each call, and on 2 cores they take the cores from the next provider's threads
            # (interleaved with PyTorch, the C backend's OpenMP team measured 7 ms per 2^20 call).
            groups = [["c", "cpu"], ["torch"]] if separate_torch else [list(providers)]
            groups = [[p for p in g if p in providers] for g in groups]
            for group in groups:
                for _ in range(repeats):
                    for p in group:
                        fn, args = providers[p]
                        t0 = time.perf_counter()
                        fn(*args)
                        times[p].append(time.perf_counter() - t0)
            rate = {p: n / np.median(t) / 1e9 for p, t in times.items()}
            rows.append((label, n, rate))
            torch_part = (f"torch {rate['torch']:6.2f} Gelem/s   c/cpu {rate['c'] / rate['cpu']:5.2f}  "
                          f"c/torch {rate['c'] / rate['torch']:5.2f}") if with_torch else (
                f"Gelem/s   c/cpu {rate['c'] / rate['cpu']:5.2f}")
            print(f"{label:18s} 2^{int(np.log2(n)):2d}  c {rate['c']:6.2f}  cpu {rate['cpu']:6.2f}  "
                  + torch_part, flush=True)
    return rows


FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy as np
x = np.linspace(-3, 3, 1000, dtype=np.float32)
t1 = time.perf_counter()
import fastact as fa
t2 = time.perf_counter()
fa.gelu(x)
t3 = time.perf_counter()
fa.sigmoid.backward(x, x)
t4 = time.perf_counter()
print(f"{(t2 - t1) * 1e3:.2f} {(t3 - t2) * 1e3:.2f} {(t4 - t3) * 1e3:.3f}")
"""


def first_call(repeats=7):
    """(import fastact ms, first call ms, second function's first call ms), medians over fresh
    processes with FASTACT_BACKEND=c (the extension already built)."""
    subprocess.run([sys.executable, "-c", "import fastact as fa, numpy as np\n"
                    "with fa.backend('c'): fa.relu(np.ones(3))"], check=True)  # builds if needed
    env = {**os.environ, "FASTACT_BACKEND": "c"}
    found = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        found.append([float(v) for v in out])
    return tuple(np.median(np.array(found), axis=0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="20,26", help="log2 of the sizes")
    parser.add_argument("--repeats", type=int, default=0, help="default: 15 at 2^20, 5 above")
    parser.add_argument("--only", nargs="*", help="activation names (default: all)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true",
                        help="leave PyTorch out (importing it loads its libgomp first: see NOTES)")
    parser.add_argument("--interleave-torch", action="store_true",
                        help="PyTorch takes turns with fastact call by call too")
    args = parser.parse_args(argv)
    imp, first, second = first_call()
    print(f"fresh process, C backend: import fastact {imp:.1f} ms, first call (gelu, 1000 "
          f"elements) {first:.2f} ms, then sigmoid.backward's first call {second:.3f} ms")
    for k in (int(s) for s in args.sizes.split(",")):
        measure([1 << k], args.repeats or (15 if k <= 22 else 5), args.only, args.threads or None,
                not args.interleave_torch, not args.no_torch)


if __name__ == "__main__":
    main()
