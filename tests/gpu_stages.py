"""A developer's check for a GPU, not collected by pytest: gelu(approximate="tanh")'s stages on the
GPU against the same functions run by the interpreter, for the inputs where the H100 run of
2026-11-22 was 40 ulp off (fastact/bench/NOTES.md, "Measured on an NVIDIA H100"; found to be
ptxas fusing products into sums, fixed by kernels/cuda.py _exact_arithmetic, which this kernel
gets too through its fastact_ name). The stages are those since 2026-11-23 (w = k1 + k3 x^2 as a
double-word and the fused reduction of exp(-|z|)); that H100 run had z = hi + lo. Runs under
NUMBA_ENABLE_CUDASIM=1 too (the interpreter on both sides: a check of the script only).
    python tests/gpu_stages.py        (prints the stages that differ)
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from numba import cuda  # noqa: E402

import fastact.kernels._jit  # noqa: E402,F401  (the CPU registrations first, as the backends do)
import fastact.kernels._cuda_jit  # noqa: E402,F401
from fastact.kernels import cuda as kc  # noqa: E402
from fastact import registry as r  # noqa: E402
from fastact.kernels import math as m  # noqa: E402

NAMES = ("wh", "wl", "a", "tail", "forward q of exp(-|z|)", "its k + SHIFT", "gelu_tanh", "x*x",
         "x*x error")


kc._exact_arithmetic()  # NVVM's -fma=0 for kernels named fastact_*, as the backend compiles them


@cuda.jit
def fastact_gelu_tanh_stages(x, out):
    v = x[cuda.grid(1)]
    row = out[cuda.grid(1)]
    wh, wl, a, tail = r.gelu_tanh_argument(v)
    row[0], row[1], row[2], row[3] = wh, wl, a, tail
    fh, fl = r.gelu_tanh_w(v)  # the forward's w (its low part summed differently)
    row[4], row[5] = m.exp_parts_q_of_product(-abs(v), fh, fl)
    row[6] = r.gelu_tanh_forward(v)
    row[7], row[8] = m.two_prod(v, v)


def host(v):
    wh, wl, a, tail = r.gelu_tanh_argument(v)
    return [wh, wl, a, tail, *m.exp_parts_q_of_product(-abs(v), *r.gelu_tanh_w(v)),
            r.gelu_tanh_forward(v), *m.two_prod(v, v)]


x = np.array([-10.040965, -10.012965, -9.9, -3.0, 1.7], np.float32)
out = cuda.to_device(np.zeros((x.size, len(NAMES)), np.float32))
fastact_gelu_tanh_stages[1, x.size](cuda.to_device(x), out)
got = out.copy_to_host()
for i, v in enumerate(x):
    want = np.array(host(v), np.float32)
    differ = [f"{n}: gpu {g!r} host {w!r}" for n, g, w in zip(NAMES, got[i], want) if g != w]
    print(f"x = {v!r}: " + ("; ".join(differ) if differ else "all stages agree"))
