"""pytest-benchmark suite, parametrized from the registry (deselected from the default run).

    pytest tests/bench --benchmark-only -p no:cacheprovider
    pytest tests/bench --benchmark-only --benchmark-autosave      # keep a run
    pytest tests/bench --benchmark-only --benchmark-compare       # against the last

FASTACT_BENCH_SIZE (elements, default 2^20), FASTACT_BENCH_DTYPE (float32) and
FASTACT_BENCH_THREADS (all cores) choose the point measured; FASTACT_BENCH_PROVIDERS
(fastact:cpu,torch) the providers. Each benchmark's extra_info carries bytes moved, elements,
family, direction and provider, so saved runs compare in GB/s as well as in seconds.
"""
import os

import numpy as np
import pytest

from fastact.bench.cases import all_cases
from fastact.bench.providers import Fastact, NumpyUser, Numexpr, Skip, Torch
from fastact.bench.runner import _touched

SIZE = int(os.environ.get("FASTACT_BENCH_SIZE", 1 << 20))
DTYPE = np.dtype(os.environ.get("FASTACT_BENCH_DTYPE", "float32"))
THREADS = int(os.environ.get("FASTACT_BENCH_THREADS", os.cpu_count() or 1))
PROVIDERS = os.environ.get("FASTACT_BENCH_PROVIDERS", "fastact:cpu,torch").split(",")
MAKE = {"fastact:cpu": lambda: Fastact("cpu"), "fastact:c": lambda: Fastact("c"),
        "numpy": NumpyUser, "numexpr": Numexpr, "torch": Torch}


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    base = {role: (rng.standard_normal(SIZE, dtype=np.float32) * scale).astype(DTYPE)
            for role, scale in (("x", 3), ("dy", 1))}
    return lambda role, shape: base[role][:int(np.prod(shape))].reshape(shape)


@pytest.fixture(scope="module", params=PROVIDERS)
def provider(request):
    if request.param not in MAKE:
        pytest.skip(f"unknown provider {request.param!r}; choose from {', '.join(MAKE)}")
    p = MAKE[request.param]()
    reason = p.unavailable()
    if reason:
        pytest.skip(f"{p.name}: {reason}")
    p.set_threads(THREADS)
    return p


def _info(benchmark, **info):
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: f"{c.label}-{c.direction}")
def test_activation(benchmark, case, provider, source):
    if case.check_size(SIZE):
        pytest.skip(case.check_size(SIZE))
    arrays = case.make_inputs(SIZE, source)
    out = _touched(case.output_shape(SIZE), DTYPE)
    try:
        run = provider.prepare(case, [arrays], [out])
    except Skip as e:
        pytest.skip(f"{provider.name}: {e}")
    nbytes = case.bytes_moved(SIZE, DTYPE.itemsize)
    benchmark.group = f"{case.label} {case.direction} {DTYPE.name} n={SIZE} threads={THREADS}"
    _info(benchmark, bytes=nbytes, elements=case.elements(SIZE), family=case.family,
          activation=case.label, direction=case.direction, provider=provider.name,
          provider_version=provider.version, dtype=DTYPE.name, threads=THREADS)
    with provider.context():
        run(0)  # warm-up: compile or load from the cache, outside the timing
        benchmark(run, 0)
    _info(benchmark, gb_s_median=nbytes / benchmark.stats.stats.median / 1e9)


@pytest.mark.parametrize("op", ["copy", "add"])
def test_roofline(benchmark, op, source):
    """np.copyto (what a forward moves) and np.add(a, b, out=c) (what a backward moves), one thread:
    fastact-bench measures the threaded roofline; this is the reference for saved runs."""
    a, b = source("x", (SIZE,)), source("dy", (SIZE,))
    c = _touched((SIZE,), DTYPE)
    fn = (lambda: np.copyto(c, a)) if op == "copy" else (lambda: np.add(a, b, out=c))
    nbytes = (2 if op == "copy" else 3) * SIZE * DTYPE.itemsize
    benchmark.group = f"roofline {DTYPE.name} n={SIZE}"
    _info(benchmark, bytes=nbytes, elements=SIZE, family="roofline", activation=op,
          direction="forward" if op == "copy" else "backward", provider="numpy", dtype=DTYPE.name)
    benchmark(fn)
    _info(benchmark, gb_s_median=nbytes / benchmark.stats.stats.median / 1e9)
