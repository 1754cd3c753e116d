"""Compile every CUDA kernel of fastact to PTX for sm_90 and assemble it with ptxas, without a GPU.

A developer's check, not collected by pytest: needs numba-cuda with NVVM (pip install
"numba-cuda[cu13]") and, for the register counts, ptxas on PATH. It proves the kernels and the
LLVM intrinsics of kernels/_jit.py compile for the real CUDA target (the simulator runs Python).
    python tests/cuda_sim_ptx.py PART NPARTS OUTDIR      (e.g. 0 1 /tmp/ptx; exit status = failures)
numba-cuda asks the current device for its compute capability when it compiles a device function;
with no GPU that is answered here with sm_90.
"""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numba.cuda.dispatcher as d  # noqa: E402


class _Dev:
    compute_capability = (9, 0)


d.get_current_device = lambda: _Dev()
from numba import cuda, types
import numpy as np
from fastact import registry
from fastact.kernels import cuda as kc

T = {"f32": types.float32, "f64": types.float64, "f16": types.float16}
part = int(sys.argv[1]); nparts = int(sys.argv[2]); outdir = sys.argv[3]
os.makedirs(outdir, exist_ok=True)  # a missing OUTDIR failed every kernel with FileNotFoundError
jobs = []
fns = []
for spec in registry.SPECS.values():
    for table in (spec.forward, spec.backward_from_input, spec.backward_from_output):
        for fn in table.values():
            if fn not in fns:
                fns.append(fn)
import inspect
for fn in fns:
    nparams_total = len(inspect.signature(fn).parameters)
    n_in = 1 if fn.__name__.endswith("forward") else 2
    for work, intype in (("f32", "f32"), ("f64", "f64"), ("f32", "f16")):
        jobs.append(("ew", fn, n_in, work, intype, 0))
    jobs.append(("ew", fn, n_in, "f32", "f32", 2))
jobs.append(("ew", registry.leaky_relu_backward, 3, "f32", "f32", 0))  # rrelu backward: 3 inputs
jobs.append(("ew", None, 1, "f32", "f16", 3))  # strided copy
for op in ("softmax", "log_softmax", "other"):
    for work in ("f32", "f64"):
        jobs.append(("rows", op, work))
fails = 0
for k, job in enumerate(jobs):
    if k % nparts != part:
        continue
    t = time.time()
    try:
        if job[0] == "ew":
            _, fn, n_in, work, intype, ndim = job
            w = T[work]
            n_par = len(inspect.signature(fn).parameters) - n_in if fn else 0
            if fn is not None and n_in == 3:
                n_par = 0
            tag = intype if intype != work else work
            name = kc.kernel_name(fn, tag, n_in) + (f"_nd{ndim}" if ndim else "")
            src = kc._elementwise_source(name, fn, n_in, work, ndim)
            disp = kc._load(name, src)
            outt = T[intype] if fn is None else T[tag if tag != "f16" else "f16"]
            if ndim == 0:
                sig = tuple([T[intype][::1]] * n_in + [outt[::1], types.int64] + [w] * n_par)
            else:
                tup = types.UniTuple(types.int64, ndim)
                sig = []
                for _ in range(n_in):
                    sig += [T[intype][::1], types.int64, tup]
                sig += [outt[::1], types.int64, tup, tup, types.int64] + [w] * n_par
                sig = tuple(sig)
            ptx, _ = cuda.compile_ptx(disp.py_func, sig, cc=(9, 0))
            label = name
            kernels = [(label, ptx)]
        else:
            _, op, work = job
            ks = kc._row_kernels(op, work)
            w = T[work]; a = w[::1]; i64 = types.int64; f64a = types.float64[::1]; i64a = types.int64[::1]
            sigs = {
                "fwd_rows": (a, a, i64, i64),
                "fwd_rowsv": (a, a, i64, i64),
                "fwd_partials": (a, a, i64a, f64a, i64, i64, i64, i64),
                "fwd_combine": (a, i64a, f64a, a, f64a, i64, i64),
                "fwd_write": (a, a, a, f64a, i64, i64, i64, i64),
                "fwd_columns": (a, a, i64, i64, i64),
                "bwd_rows": (a, a, a, i64, i64),
                "bwd_rowsv": (a, a, a, i64, i64),
                "bwd_partials": (a, a, f64a, i64, i64, i64, i64),
                "bwd_write": (a, a, a, f64a, i64, i64, i64, i64),
                "bwd_columns": (a, a, a, i64, i64, i64),
                "maxout_fwd": (a, a, i64, i64, i64, i64),
                "maxout_bwd": (a, a, a, i64, i64, i64, i64),
                "prelu_fwd": (a, a, a, i64, i64, i64),
                "prelu_bwd": (a, a, a, a, f64a, i64, i64, i64, i64, i64),
                "prelu_bwd_weight": (f64a, a, i64, i64),
                "rrelu_fwd": (a, a, a, i64, types.float64, types.float64, types.uint64, types.uint64),
            }
            kernels = []
            for short, disp in ks.items():
                if short == "threads":  # the vector kernels' block sizes
                    continue
                ptx, _ = cuda.compile_ptx(disp.py_func, sigs[short], cc=(9, 0))
                kernels.append((f"{op}_{short}_{work}", ptx))
        for label, ptx in kernels:
            path = os.path.join(outdir, label + ".ptx")
            open(path, "w").write(ptx.replace(".version 9.5", ".version 9.0"))
            r = subprocess.run(["ptxas", "-arch=sm_90", "-v", path, "-o", "/dev/null"], capture_output=True, text=True)
            regs = re.findall(r"Used (\d+) registers", r.stderr)
            bad = [x for x in ("call.uni", "ex2.approx", "div.approx", "div.full", ".ftz") if x in ptx]
            print(f"OK {label} {time.time()-t:.1f}s regs={regs} ptxas_rc={r.returncode} flags={bad}", flush=True)
            if r.returncode:
                print(r.stderr[-2000:])
                fails += 1
    except Exception as e:
        fails += 1
        import traceback
        print("FAIL", job[:3], type(e).__name__, [m_.group(1) for m_ in re.finditer(r">>> (.*)", re.sub(r"\x1b\[[0-9;]*m", "", str(e)))][-6:], flush=True)
print("fails", fails)
sys.exit(min(fails, 100))
