"""fastact's own Numba target (kernels/_smallcode.py): its kernels are compiled for the small code
model (constants addressed relative to the instruction pointer, no movabsq per constant), give
the same bits as Numba's own code generator, load from the disk cache, and leave the code model
of the user's other Numba functions alone."""
import os
import platform
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

from fastact import registry  # noqa: E402
from fastact.kernels import _smallcode, cpu  # noqa: E402
from conftest import assert_close  # noqa: E402
from fastact import reference  # noqa: E402
from test_math import _uncached_map_kernel as _uncached  # noqa: E402
from test_runtime import run_python  # noqa: E402


def _hot_loop(asm):
    """The innermost backward-jump loop with the most vector instructions."""
    lines = asm.split("\n")
    labels = {line.strip()[:-1]: i for i, line in enumerate(lines)
              if re.match(r"^\.\w+:$", line.strip())}
    loops = [(labels[m.group(1)], i) for i, line in enumerate(lines)
             for m in [re.match(r"\s*j\w+\s+(\.\w+)$", line)]
             if m and m.group(1) in labels and labels[m.group(1)] < i]
    inner = [(a, b) for a, b in loops if not any(a < c and d < b for c, d in loops)]
    bodies = [lines[a:b + 1] for a, b in inner]
    return max(bodies, key=lambda body: sum(bool(re.search(r"%[yz]mm", x)) for x in body))


x86_64 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                            reason="reads x86-64 assembly")


@x86_64
def test_the_kernels_take_the_small_code_model():
    assert _smallcode.available() == (True, "")
    x = np.linspace(-30, 30, 4096).astype(np.float32)
    loops = {}
    for label, numba_codegen in (("small", False), ("numba", True)):
        kernel = _uncached(registry.softplus_forward, 1, numba_codegen=numba_codegen)
        out = np.empty_like(x)
        cpu.call_map(kernel, [x], out, (np.float32(1.0), np.float32(20.0)))
        asm = "\n".join(kernel.inspect_asm().values())
        loops[label], loops[label + "_loop"] = asm, "\n".join(_hot_loop(asm))
        loops[label + "_out"] = out
        assert (type(kernel).__module__ == _smallcode.__name__) == (label == "small")
    # Numba's large code model loads each constant-pool address with a movabsq (in the loop too:
    # softplus has more constants than vector registers); the small model addresses the
    # constants relative to the instruction pointer
    assert re.search(r"movabsq\s+\$\.LCPI", loops["numba_loop"])
    assert not re.search(r"movabsq\s+\$\.LCPI", loops["small"])
    assert re.search(r"\.LCPI\w*\(%rip\)", loops["small"])
    assert len(loops["small_loop"].split("\n")) < len(loops["numba_loop"].split("\n"))
    np.testing.assert_array_equal(loops["small_out"].view(np.int32),
                                  loops["numba_out"].view(np.int32))


@x86_64
def test_the_users_numba_functions_keep_numba_s_code_generator():
    import numba
    from numba.core import config
    from numba.core.registry import cpu_target
    memory_manager = config.USE_LLVMLITE_MEMORY_MANAGER
    x = np.ones(8)
    cpu.call_map(_uncached(registry.sigmoid_forward, 1, dtype=np.float64), [x], np.empty_like(x), ())
    assert config.USE_LLVMLITE_MEMORY_MANAGER == memory_manager  # set back after the engine

    @numba.njit
    def users(a):
        return a * 1.2345678 + 0.7654321
    np.testing.assert_array_equal(users(x), x * 1.2345678 + 0.7654321)
    # Numba's large code model: the constants' address by movabsq
    assert re.search(r"movabsq\s+\$\.LCPI", "\n".join(users.inspect_asm().values()))
    assert _smallcode.MARK not in cpu_target.target_context.codegen().magic_tuple()
    fastact_codegen = _smallcode._dispatcher_class().targetdescr.target_context.codegen()
    assert _smallcode.MARK in fastact_codegen.magic_tuple()
    assert fastact_codegen is not cpu_target.target_context.codegen()


_EVERY_FAMILY = ("import hashlib, numpy as np, fastact as fa\n"
                 "from fastact import registry\n"
                 "from fastact.kernels import _smallcode, cpu\n"
                 "x = np.linspace(-40, 40, 70007, dtype=np.float32)\n"
                 "with fa.backend('cpu'):\n"
                 "    ys = [fa.gelu(x, approximate='tanh'), fa.relu(x),\n"
                 "          fa.softmax(x.reshape(-1, 7)),\n"
                 "          fa.gelu.backward(x, x, approximate='tanh')]  # Numba's generator\n"
                 "stats = cpu.map_kernel(registry.gelu_tanh_forward, 1).stats\n"
                 "print(_smallcode.available()[0],\n"
                 "      hashlib.sha256(b''.join(y.tobytes() for y in ys)).hexdigest(),\n"
                 "      sum(stats.cache_hits.values()), sum(stats.cache_misses.values()),\n"
                 "      cpu.cache_dir().endswith('-numba'))\n")


def test_numba_s_code_generator_on_request_gives_the_same_bits(tmp_path):
    """FASTACT_NUMBA_CODEGEN=numba compiles the same kernels with Numba's code generator: the
    same results bit for bit, in a cache directory of its own; a second process of each kind
    loads its code from the disk cache."""
    env = {"FASTACT_CACHE_DIR": str(tmp_path)}
    numba_env = {**env, "FASTACT_NUMBA_CODEGEN": "numba"}
    small = run_python(_EVERY_FAMILY, env).split()
    numba_own = run_python(_EVERY_FAMILY, numba_env).split()
    assert small[0] == "True" and numba_own[0] == "False"
    assert small[1] == numba_own[1]
    assert small[2:] == ["0", "1", "False"]  # compiled
    assert numba_own[2:] == ["0", "1", "True"]  # compiled, in its own directory
    assert run_python(_EVERY_FAMILY, env).split() == small[:2] + ["1", "0", "False"]  # loaded
    assert run_python(_EVERY_FAMILY, numba_env).split() == numba_own[:2] + ["1", "0", "True"]


def test_available_names_the_reason_when_off(tmp_path):
    out = run_python("from fastact.kernels import _smallcode\nprint(_smallcode.available())",
                     {"FASTACT_NUMBA_CODEGEN": "numba"})
    assert "FASTACT_NUMBA_CODEGEN=numba" in out and "False" in out


# Loads one kernel, then makes every later mapping of the process land below a 4 GiB reservation
# (the holes above it filled, largest pieces first), so that the kernels loaded next lie more
# than 2 GiB from the first: as they do once a program holds large arrays.
_FAR_LOAD = """
import ctypes, sys, numpy as np, fastact as fa
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
def reserve(size):  # PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE: address space only
    p = libc.mmap(None, size, 0, 0x2 | 0x20 | 0x4000, -1, 0)
    return None if p in (None, ctypes.c_void_p(-1).value) else p
def entry(scalar):  # where a map kernel's compiled code was put
    from fastact.kernels import cpu
    (result,) = cpu.map_kernel(scalar, 1).overloads.values()
    return result.library.get_pointer_to_function(result.fndesc.llvm_func_name)
x = np.load(sys.argv[1])
with fa.backend("cpu"):
    first = fa.sigmoid(x)
from fastact import _fastcall
_fastcall.load(wait=True)  # (its build thread's stack is unmapped at its end: not below the wall)
wall, size = reserve(4 << 30), 1 << 40
if wall is None:  # an address-space limit (ulimit -v)
    sys.exit(77)
while size >= 4096:
    p = reserve(size)
    if p is not None and p > wall:
        continue
    if p is not None:
        libc.munmap(p, size)
    size //= 2
assert reserve(4096) < wall
with fa.backend("cpu"):
    np.savez(sys.argv[2], first=first, tanh=fa.tanh(x), gelu_backward=fa.gelu.backward(x, x),
             softmax=fa.softmax(x.reshape(-1, 7)))
from fastact import registry
assert abs(entry(registry.tanh_forward) - entry(registry.sigmoid_forward)) > 2 ** 31
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="places mappings with Linux's mmap")
def test_kernels_load_gigabytes_away_from_the_first_ones(tmp_path):
    """Numba links each callee (NRT_incref, NRT_decref, a kernel's loop) into its caller as a
    weak copy, and the JIT linker bound a weak definition to the first object that had one, by
    a 32-bit relative call: with the small code model, a kernel loaded more than 2 GiB from the
    first aborted the process (RuntimeDyldELF: isInt<32>(RealOffset)); _smallcode makes the
    copies internal. Compiled (an empty cache) and loaded from the disk cache; the script checks
    that the later kernel did land more than 2 GiB from the first."""
    x = np.linspace(-12, 12, 7 * 1001).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    env = {"FASTACT_CACHE_DIR": str(tmp_path / "cache")}
    script = tmp_path / "far.py"
    script.write_text(_FAR_LOAD)
    for run in ("compiled", "loaded"):
        out = tmp_path / f"{run}.npz"
        result = subprocess.run([sys.executable, str(script), str(tmp_path / "x.npy"), str(out)],
                                capture_output=True, text=True, timeout=600,
                                env={**os.environ, **env})
        if result.returncode == 77:
            pytest.skip("no 4 GiB of address space to reserve (ulimit -v)")
        assert result.returncode == 0, f"{run}: {result.returncode}: {result.stderr[-2000:]}"
        got = np.load(out)
        assert_close(got["first"], reference.sigmoid_forward(x), np.float32, context=run)
        assert_close(got["tanh"], reference.tanh_forward(x), np.float32, context=run)
        assert_close(got["gelu_backward"], reference.gelu_backward_from_input(x, x),
                     np.float32, scale=reference.condition_scale("gelu", "backward", x, x),
                     context=run)
        assert_close(got["softmax"], reference.softmax_forward(x.reshape(-1, 7)), np.float32,
                     context=run)
