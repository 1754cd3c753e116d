"""The CUDA backend without a GPU: tests/cuda_sim_matrix.py under numba-cuda's simulator, in its own
process (NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported), and the reason the
backend gives on a machine without a GPU."""
import importlib.util
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None


def _env(**extra):
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


def _python(code, timeout=300, **env):
    """Run code in a fresh interpreter with this checkout first on its path."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=_env(**env), timeout=timeout)


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda not installed (pip install numba-cuda)")
def test_cuda_kernels_under_the_simulator():
    workers = []
    if importlib.util.find_spec("xdist") is not None:
        workers = ["-n", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *workers,
         os.path.join(HERE, "cuda_sim_matrix.py")],
        cwd=ROOT, env=_env(NUMBA_ENABLE_CUDASIM="1"), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda not installed (pip install numba-cuda)")
def test_without_a_gpu_the_backend_says_why():
    code = ("import fastact as fa, sys; ok, why = fa.backends()['cuda']; print(why); "
            "sys.exit(0 if ok else 3)")
    result = _python(code, NUMBA_ENABLE_CUDASIM="0")
    if result.returncode == 0:
        pytest.skip("a CUDA device is present")
    assert result.returncode == 3, result.stderr
    assert "no CUDA device" in result.stdout
    check = subprocess.run([sys.executable, "-m", "fastact.bench.gpu_check"], cwd=ROOT,
                           capture_output=True, text=True, env=_env(NUMBA_ENABLE_CUDASIM="0"),
                           timeout=300)
    assert check.returncode == 2 and "no CUDA device" in check.stdout, check.stdout + check.stderr
    assert "Traceback" not in check.stderr


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda not installed (pip install numba-cuda)")
def test_a_numba_cuda_that_cannot_load_with_this_numpy_is_reported():
    # numba-cuda 0.30.4 fails inside its first compile under NumPy 2.5 (np.row_stack removed);
    # the backend probes for it and says so instead of raising from deep inside a launch
    code = ("import numpy as np; del np.row_stack; import fastact as fa; "
            "print(fa.backends()['cuda'])")
    result = _python(code, NUMBA_ENABLE_CUDASIM="0")
    assert result.returncode == 0, result.stderr
    assert "(False," in result.stdout and "row_stack" in result.stdout, result.stdout
    assert "numpy<2.5" in result.stdout


# Run in a fresh process: the CPU backend compiles gelu first (the order that miscompiled on an
# H100), then the CUDA target's view of every function of kernels/_jit.py is inspected and, where
# NVVM is installed, gelu's CUDA kernel is compiled to PTX, and gelu-tanh's through the kernel
# dispatcher's path.
_SEPARATE_TARGETS = r'''
import re, sys
import numpy as np
import fastact as fa
from fastact import registry
from fastact.kernels import _jit, _cuda_jit, math as m
with fa.backend("cpu"):
    fa.gelu(np.linspace(-12, 3, 64, dtype=np.float32), approximate="tanh")
from numba.cuda.descriptor import cuda_target
from numba.core.registry import cpu_target
typing = cuda_target.typing_context
typing.refresh()
cpu_target.typing_context.refresh()
functions = [fn for fn, _ in _jit._OVERLOADS] + _jit._JITABLE
assert len(functions) > 80, len(functions)
for fn in functions:
    for context, target in ((typing, "cuda"), (cpu_target.typing_context, "cpu")):
        templates = context._lookup_global(fn).templates
        found = {getattr(t, "metadata", {}).get("target") for t in templates}
        assert found == {target}, (fn.__name__, target, found)
import numba.cuda.dispatcher as d
class Device:
    compute_capability = (9, 0)
d.get_current_device = lambda: Device()  # no GPU: numba-cuda asks it for the target
from numba import cuda, types
from fastact.kernels import cuda as kc
kernel = kc._elementwise_kernel(registry.gelu_forward, "f32", 1, "f32", 0)
array = types.Array(types.float32, 1, "C")
try:
    ptx, _ = cuda.compile_ptx(kernel.py_func, (array, array, types.int64), cc=(9, 0))
except Exception as e:
    if "nvvm" in str(e).lower() or "nvrtc" in str(e).lower():
        print("NO-NVVM", e)
        sys.exit(0)
    raise
zero_operand = [l for l in ptx.splitlines() if re.search(r"fma\.rn\.f32\s+%f\d+, [^;]*0f00000000", l)]
assert not zero_operand, zero_operand[:3]
assert ptx.count("fma.rn.f32") > 40, ptx.count("fma.rn.f32")
# the kernel dispatcher's own compile (kc._exact_arithmetic's -fma=0): every product and sum of
# gelu-tanh rounded where written; a bare mul.f32/add.f32 is one ptxas may fuse into an FMA (it did
# on an H100: 40 ulp)
kernel = kc._elementwise_kernel(registry.gelu_tanh_forward, "f32", 1, "f32", 0)
cres = d.compile_cuda(kernel.py_func, types.void, (array, array, types.int64), fastmath=False,
                      nvvm_options={"fastmath": False, "opt": 3}, cc=(9, 0))
ptx = cres.library.get_asm_str(cc=(9, 0))
bare = [l for l in ptx.splitlines() if re.search(r"\b(add|sub|mul)\.f(32|64)\b", l)]
assert not bare, bare[:3]
assert ptx.count("add.rn.f32") > 20 and ptx.count("mul.rn.f32") > 20, ptx
# and its link gets ptxas's --fmad=false (CUDA 13.0's ptxas fused mul.rn/add.rn without it); a
# kernel that is not fastact's keeps numba-cuda's defaults
from numba.cuda.cudadrv import driver
seen = []
patched = driver._Linker._get_linker_options
def spy(self, ptx):
    options = patched(self, ptx)
    seen.append(options.ptxas_options)
    return options
driver._Linker._get_linker_options = spy
def other_kernel(a):
    a[0] = a[0] * 2.0 + 1.0
other = d.compile_cuda(other_kernel, types.void, (array,), fastmath=False,
                       nvvm_options={"fastmath": False, "opt": 3}, cc=(9, 0))
for result in (cres, other):
    d.kernel_fixup(result.library.get_function(result.fndesc.llvm_func_name), False)
    result.library._entry_name = result.fndesc.llvm_func_name
try:
    cres.library.get_cubin(cc=(9, 0))
    other.library.get_cubin(cc=(9, 0))
except Exception as e:
    if "nvjitlink" not in (type(e).__module__ + str(e)).lower():
        raise
    print("NO-NVJITLINK", e)
else:
    assert seen == [["--fmad=false"], None], seen
print("PTX-CHECKED")
'''


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda not installed (pip install numba-cuda)")
def test_cuda_and_cpu_targets_keep_separate_registrations(tmp_path):
    # numba-cuda 0.30 merged numba.extending's (CPU) registrations of these functions into its own
    # and, after a CPU compile in the same process, compiled gelu on the GPU with an operand of
    # normal_tail_scaled's last FMA replaced by 0 (16.8M ulp at x = -11.2 on an H100)
    result = _python(_SEPARATE_TARGETS, timeout=600, NUMBA_ENABLE_CUDASIM="0",
                     FASTACT_CACHE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "PTX-CHECKED" in result.stdout or "NO-NVVM" in result.stdout, result.stdout


_FAST_LAUNCH = r"""
import ctypes
import numpy as np
from numba import types
from numba.cuda import dispatcher
from fastact.kernels import cuda as kc

class Overload:  # what _Kernel._prepare_args reads from its kernel
    extensions = []
    _prepare_args = dispatcher._Kernel._prepare_args

cases = ((types.int64, 7), (types.int64, -3), (types.float32, np.float32(1.5)),
         (types.float64, np.float64(-2.25)), (types.UniTuple(types.int64, 3), (4, -5, 6)),
         (types.float32, np.float32(-0.0)), (types.int64, 2 ** 40 + 3))
for ty, value in cases:
    kinds, pack = kc._packer(ty)
    ours, theirs = [], []
    pack(value, ours)
    Overload()._prepare_args(ty, value, 0, [], theirs)
    fast = kc._FastKernel(None, 0, [(kinds, pack)])
    assert fast.slot_values([value]) == [kc._comparable(a) for a in theirs], (ty, ours, theirs)
    # the buffer cuLaunchKernel reads: slot i at pointer i holds numba-cuda's value i, bit for bit
    buffer, pointers = kc._param_buffer(fast.slots)
    fast.struct.pack_into(buffer, 0, *fast.pack([value]))
    slots = (ctypes.c_void_p * fast.slots).from_address(pointers)
    for slot, theirs_one in zip(slots, theirs):
        size = ctypes.sizeof(theirs_one)
        assert ctypes.string_at(slot, size) == bytes(theirs_one), (ty, slot, theirs_one)
# an array: numba-cuda's seven slots (meminfo, parent, size, itemsize, data, shape, strides)
flat = kc._Flat(0x7F0000001000, 5, np.dtype(np.float32), 0)
kinds, pack = kc._packer(types.float32[::1])
fast = kc._FastKernel(None, 0, [(kinds, pack), kc._packer(types.int64)])
assert fast.slot_values([flat, 5]) == [("q", v) for v in (0, 0, 5, 4, 0x7F0000001000, 5, 4, 5)]
for ty in (types.uint64, types.int32, types.float64[:, ::1], types.UniTuple(types.float64, 2)):
    assert kc._packer(ty) is None, ty  # left to the dispatcher
assert kc._kind(3) is int and kc._kind((1, 2)) == (int, int) and kc._kind(np.float32(1)) is np.float32
assert kc._kind(flat) == "<f4"
assert kc._kind(np.uint64(3)) is None and kc._kind((1, 2.0)) is None and kc._kind(object()) is None
assert kc._primary_is_current(0) is False  # no driver here: numba-cuda's push it is
print("PACKED")
"""


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda not installed (pip install numba-cuda)")
def test_fast_launch_packs_scalars_as_numba_cuda_does():
    # after a kernel's first launch, _launch packs the arguments itself and calls the driver's
    # cuLaunchKernel (a GPU is needed to run that path: gpu_check and tests/gpu_overhead.py
    # compare its results with the first call's); here the packers against numba-cuda's own
    # _prepare_args, and the slots of the parameter buffer byte for byte
    result = _python(_FAST_LAUNCH, NUMBA_ENABLE_CUDASIM="0")
    assert result.returncode == 0 and "PACKED" in result.stdout, result.stdout + result.stderr
