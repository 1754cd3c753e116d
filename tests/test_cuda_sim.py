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
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env=_env(NUMBA_ENABLE_CUDASIM="0"), timeout=300)
    if result.returncode == 0:
        pytest.skip("a CUDA device is present")
    assert result.returncode == 3, result.stderr
    assert "no CUDA device" in result.stdout
    check = subprocess.run([sys.executable, "-m", "fastact.bench.gpu_check"], cwd=ROOT,
                           capture_output=True, text=True, env=_env(NUMBA_ENABLE_CUDASIM="0"),
                           timeout=300)
    assert check.returncode == 2 and "no CUDA device" in check.stdout, check.stdout + check.stderr
    assert "Traceback" not in check.stderr
