"""How things are timed: every item of a group (one device, dtype, size and thread count) is warmed
up, calibrated, then sampled round-robin, so that drift in clock speed or in a neighbour's load
falls on all providers alike.

- Warm-up: each item runs twice before timing (Numba compiles or loads its cache, PyTorch and JAX
  dispatch and jit, pages are touched); the second run calibrates the inner loop.
- A sample is ``inner`` back-to-back calls timed together, ``inner`` chosen so a sample lasts at
  least ``min_sample_s`` (the clock's resolution and the loop's own cost vanish); per-call time is
  the sample divided by ``inner``. Calls in a sample cycle through the item's buffer sets.
- Repeats: ``repeats`` samples per item, round-robin over items, each round in an order of its
  own (a seeded shuffle: the same for every run); the roofline items are sampled again before
  every few items, so their samples span the round. The median is reported with the 20th and
  80th percentiles. Why shuffled: an item's neighbours matter. In a fixed cycle (each round one
  item later, as this was first written) fastact:cpu's sample always came right after
  PyTorch's, fastact:c's after fastact:cpu's, and on the Zen 4 VM, 2^20 elements on two
  threads, whichever item followed PyTorch's ran 15-30% slower (fastact:cpu 89-107 GB/s on
  the light backwards against fastact:c's 116-150 and PyTorch's 122-147; with the two fastact
  backends swapped, fastact:c was the slow one), with the settle below at 40 or 150 ms alike
  (not explained; fastact/bench/NOTES.md, eleventh session). Shuffled, each item follows
  each other one about equally often.
- Settling: an item's ``settle`` (its provider's) is how long worker threads it leaves spinning
  may run on after its sample; the next item runs untimed for that long before its own sample,
  so the spinning ends while that item keeps the cores and caches as busy as its sample will.
  PyTorch's OpenMP workers spin ~9 ms of CPU after a call on the Zen 4 VM (libgomp's default):
  without this they ran into the next one to nine 1-ms samples of other items. Setting
  OMP_WAIT_POLICY=PASSIVE instead makes every PyTorch call wake its workers (2^20, 2 threads:
  relu 233 -> 323 us, sigmoid 286 -> 316 us; 2^16 relu 8 -> 75 us), and a sleep in place of the
  untimed calls let the cores and caches go cold (2^20 points at a quarter of their speed).
- CUDA: a sample is bracketed by events recorded on the array library's current stream (the one
  fastact and the peers launch on), and read after the end event completes.
"""
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Item:
    key: tuple  # what the result row is about
    run: object  # run(i): one call on buffer set i
    sets: int = 1
    context: object = None  # entered around each sample (e.g. fastact's backend)
    events: object = None  # CUDA: (record_start, record_end, elapsed_s), else None: the host clock
    nvtx: str = None  # --profile: the NVTX range name around each sample
    settle: float = 0.0  # seconds its threads may spin on after a sample (module docstring)
    inner: int = 1
    samples: list = field(default_factory=list)
    error: str = None

    def run_for(self, seconds):
        """Untimed calls for at least ``seconds`` (one at least; host-clock items only)."""
        end, j = time.perf_counter() + seconds, 0
        while True:
            self.run(j % self.sets)
            j += 1
            if time.perf_counter() >= end:
                return

    def sample(self, count, profiler=None):
        run, sets = self.run, self.sets
        if profiler is not None and self.nvtx:
            profiler.push(self.nvtx)
        try:
            if self.events is not None:
                start, end, elapsed = self.events
                start()
                for j in range(count):
                    run(j % sets)
                end()
                return elapsed()
            t0 = time.perf_counter()
            for j in range(count):
                run(j % sets)
            return time.perf_counter() - t0
        finally:
            if profiler is not None and self.nvtx:
                profiler.pop()


def _in_context(item, fn):
    if item.context is None:
        return fn()
    with item.context():
        return fn()


def measure(items, repeats, min_sample_s, progress=None, profiler=None, max_inner=100_000,
            anchors=0, anchor_every=8):
    """Fill each item's samples (seconds per call); an item that raises gets .error instead.

    The first ``anchors`` items (the roofline) are sampled again before every ``anchor_every``
    other items, so their samples span the whole round, as the others' conditions do: on a machine
    whose bandwidth moves with other tenants' load, a roofline sampled once per round is a guess."""
    live = []
    for item in items:
        try:
            _in_context(item, lambda: item.sample(1))  # compile, load, touch pages
            once = _in_context(item, lambda: item.sample(1))
            item.inner = int(min(max_inner, max(1, np.ceil(min_sample_s / max(once, 1e-9)))))
            live.append(item)
        except Exception as e:  # a provider's failure is a skipped row, never a crashed run
            item.error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        if progress is not None:
            progress(1)
    anchor_ids = {id(item) for item in items[:anchors]}
    fixed = [item for item in live if id(item) in anchor_ids]
    others = [item for item in live if id(item) not in anchor_ids]
    spinning = 0.0  # how long the previous item's threads may still spin (across rounds too)
    shuffle = np.random.default_rng(0)  # (seeded: every run the same orders)
    for r in range(repeats):
        order = [others[i] for i in shuffle.permutation(len(others))]
        sequence = []
        for start in range(0, max(1, len(order)), anchor_every):
            sequence += fixed + order[start:start + anchor_every]
        for item in sequence:
            if item.error is None:
                try:
                    if spinning > 0 and item.events is None:
                        _in_context(item, lambda: item.run_for(spinning))
                    spinning = item.settle
                    t = _in_context(item, lambda: item.sample(item.inner, profiler))
                    if not t > 0:
                        raise RuntimeError(f"the timer gave {t!r} s (a simulator's fake events?)")
                    item.samples.append(t / item.inner)
                except Exception as e:
                    item.error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            if progress is not None and id(item) not in anchor_ids:
                progress(1)
    return items


def summary(samples):
    """(median, p20, p80) of the per-call times."""
    if not samples:
        return None, None, None
    a = np.asarray(samples)
    return float(np.median(a)), float(np.percentile(a, 20)), float(np.percentile(a, 80))
