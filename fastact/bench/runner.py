"""A benchmark run: groups of (device, threads, dtype, size), each with its roofline and every
(case, provider) item measured interleaved, into one result dict (what --json writes).

Roofline, measured in the same group: ``np.copyto`` (1 in, 1 out) for forwards and
``np.add(a, b, out=c)`` (2 in, 1 out: the same bytes as a backward) for backwards, on arrays of the
group's size and item size (viewed as unsigned integers, see _run_group). With T > 1 threads each is measured both on one thread and split into T
chunks over T threads (NumPy releases the GIL), and the roofline is the faster: the best copy the
machine does with at most T threads. It is a ceiling, so it is taken at the fast end of its samples
(bytes / 20th-percentile time; the copies are sampled throughout the group, see timing.measure),
where a disturbed sample does not pull it down. On the GPU: the array library's device copy and add.
"""
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import machine, timing
from .cases import placed_copy, placed_empty
from .providers import GpuArrays, Skip

MAX_SETS = 8  # rotating buffer sets at most


@dataclass
class Config:
    cases: list
    providers: list  # fastact backends first (the first is the one the tables lead with), then peers
    dtypes: list = field(default_factory=lambda: ["float32"])
    sizes: list = field(default_factory=lambda: [1 << 20])
    threads: list = field(default_factory=lambda: [1])
    repeats: int = 5
    min_sample_s: float = 2e-3
    settle_s: float = None  # untimed seconds after each sample (timing.py); None: the provider's
    profile: bool = False
    progress: bool = False
    seed: int = 0


def buffer_sets(nbytes, cache_sizes):
    """How many buffer sets to rotate through: as many as fit together in the cache level one set
    fits in (at most MAX_SETS), so consecutive calls touch different memory of the same level; one
    when the set is DRAM-sized."""
    _, capacity = machine.cache_level_for(nbytes, cache_sizes)
    if capacity is None:
        return 1
    return int(max(1, min(MAX_SETS, capacity // (2 * nbytes))))


def _settle(config, own):
    return own if config.settle_s is None else config.settle_s


class _Split:
    """A NumPy op over T threads, each on a contiguous chunk (the caller's thread takes one)."""

    def __init__(self, threads):
        self.threads = threads
        self.pool = ThreadPoolExecutor(max_workers=threads - 1) if threads > 1 else None

    def __call__(self, fn, *arrays):
        if self.pool is None:
            fn(*arrays)
            return
        n = arrays[0].size
        step = -(-n // self.threads)
        parts = [[a[lo:lo + step] for a in arrays] for lo in range(0, n, step)]
        futures = [self.pool.submit(fn, *p) for p in parts[1:]]
        fn(*parts[0])
        for f in futures:
            f.result()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


def _copy(dst, src):
    np.copyto(dst, src)


def _add(a, b, out):
    np.add(a, b, out=out)


class Profiler:
    """NVTX ranges (the nvtx package, else torch.cuda.nvtx) around each measured sample."""

    def __init__(self):
        self.push = self.pop = None
        try:
            import nvtx
            self.push, self.pop = (lambda name: nvtx.push_range(name)), nvtx.pop_range
            self.source = f"nvtx {getattr(nvtx, '__version__', '')}".strip()
        except ImportError:
            try:
                import torch
                if torch.cuda.is_available():
                    self.push, self.pop = torch.cuda.nvtx.range_push, torch.cuda.nvtx.range_pop
                    self.source = "torch.cuda.nvtx"
            except ImportError:
                pass
        if self.push is None:
            self.source = None
            self.push = self.pop = lambda *a: None


def _random_base(rng, role, n, dtype):
    """The shared random values of one role (x: N(0, 3^2), dy: N(0, 1)), placed (cases.py)."""
    return placed_copy((rng.standard_normal(n, dtype=np.float32) * (3 if role == "x" else 1)
                        ).astype(dtype))


def _touched(shape, dtype):
    a = placed_empty(shape, dtype)
    a.fill(0)  # page faults now, not in the timed calls
    return a


def run(config):
    """Measure everything config asks for; returns the report dict."""
    cache_sizes = machine.caches()
    skipped, results, rooflines = [], [], []
    live = []
    for p in config.providers:
        reason = p.unavailable()
        if reason is None:
            live.append(p)
        else:
            skipped.append({"provider": p.name, "reason": reason})
    gpu = GpuArrays()
    gpu_name = gpu.device_name() if any(p.device == "cuda" for p in live) else None
    profiler = Profiler() if config.profile else None

    groups = []
    for device in ("cpu", "cuda"):
        on_device = [p for p in live if p.device == device]
        if not on_device:
            continue
        for threads in (config.threads if device == "cpu" else config.threads[:1]):
            for dtype in config.dtypes:
                for n in config.sizes:
                    groups.append((device, on_device, threads, dtype, n))

    per_group = [len(config.cases) * len(g[1]) + 4 for g in groups]
    bar = _progress_bar(sum(per_group) * (config.repeats + 1), config.progress)
    started = time.time()
    load_before = _load_average()
    if profiler is not None and profiler.source:
        profiler.push("fastact-bench")
    try:
        for (device, providers, threads, dtype, n), expected in zip(groups, per_group):
            before = bar.n if bar is not None else 0
            with np.errstate(all="ignore"):  # NumPy users' formulas overflow on purpose
                group = _run_group(config, device, providers, threads, np.dtype(dtype), n,
                                   cache_sizes, gpu, profiler, skipped, bar)
            results.extend(group["results"])
            rooflines.append(group["roofline"])
            if bar is not None:  # skipped items did not tick: keep the bar honest
                bar.update(max(0, before + expected * (config.repeats + 1) - bar.n))
    finally:
        if profiler is not None and profiler.source:
            profiler.pop()
        if bar is not None:
            bar.close()
    _add_ratios(results)
    first = next((p.name for p in config.providers if p in live), None)
    return {
        "fastact_bench": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(time.time() - started, 2),
        "machine": {**machine.describe(gpu_name),
                    "load_average_before_after": [load_before, _load_average()]},
        "versions": machine.versions(),
        "config": {"dtypes": list(config.dtypes), "sizes": list(config.sizes),
                   "threads": list(config.threads), "repeats": config.repeats,
                   "min_sample_s": config.min_sample_s, "settle_s": config.settle_s,
                   "providers": [p.name for p in config.providers], "primary": first,
                   "cases": sorted({c.label for c in config.cases}, key=[
                       c.label for c in config.cases].index)},
        "providers": {p.name: {"label": p.label, "version": p.version, "device": p.device}
                      for p in live},
        "skipped": skipped,
        "rooflines": rooflines,
        "results": results,
    }


def _load_average():
    """The 1-minute load average: other work on the machine shows up here, not in the samples."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _progress_bar(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="sample", leave=False, dynamic_ncols=True)


def _run_group(config, device, providers, threads, dtype, n, cache_sizes, gpu, profiler, skipped,
               bar):
    for p in providers:
        p.set_threads(threads)
    nsets = buffer_sets(3 * n * dtype.itemsize, cache_sizes) if device == "cpu" else 1
    rng = np.random.default_rng(config.seed)
    base = {}

    def source(role, shape, k):
        key = (role, k)
        if key not in base:
            base[key] = _random_base(rng, role, n, dtype)
        return base[key][:int(np.prod(shape))].reshape(shape)

    outs_by_shape = {}

    def outs(shape):
        if shape not in outs_by_shape:
            outs_by_shape[shape] = [_touched(shape, dtype) for _ in range(nsets)]
        return outs_by_shape[shape]

    tag = dict(device=device, threads=threads, dtype=dtype.name, size=n)
    items, meta = [], {}
    profile_name = (lambda *parts: "fastact-bench/" + "/".join(map(str, parts))) if profiler else (
        lambda *parts: None)

    # the roofline
    split = _Split(threads) if device == "cpu" else None
    # Viewed as unsigned integers of the same size: the same bytes moved, no float arithmetic
    # (NumPy adds float16 one element at a time through float32, far below memory speed).
    bits = f"u{dtype.itemsize}"
    a, b = source("x", (n,), 0).view(bits), source("dy", (n,), 0).view(bits)
    c = _touched((n,), dtype).view(bits)
    if device == "cpu":
        roof = {("copy", 1): lambda i: _copy(c, a), ("add", 1): lambda i: _add(a, b, c)}
        if threads > 1:
            roof[("copy", threads)] = lambda i: split(_copy, c, a)
            roof[("add", threads)] = lambda i: split(_add, a, b, c)
        events = None
    else:
        da, db, dc = gpu.to_device(a), gpu.to_device(b), gpu.to_device(c)
        roof = {("copy", 1): lambda i: gpu.copy(dc, da), ("add", 1): lambda i: gpu.add(da, db, dc)}
        events = gpu.events()
    for (op, t), fn in roof.items():
        items.append(timing.Item(("roofline", op, t), fn, events=events,
                                 nvtx=profile_name("roofline", op, dtype.name, n),
                                 settle=_settle(config, 1e-3 if device == "cpu" else 0.0)))

    # the cases
    inputs = {}
    for case in config.cases:
        reason = case.check_size(n)
        for p in providers:
            where = dict(provider=p.name, activation=case.label, direction=case.direction, **tag)
            if reason is not None:
                skipped.append({**where, "reason": reason})
                continue
            if case.key not in inputs:
                inputs[case.key] = [case.make_inputs(n, lambda role, shape, k=k: source(role, shape, k))
                                    for k in range(nsets)]
            try:
                fn = p.prepare(case, inputs[case.key], outs(case.output_shape(n)))
            except Skip as e:
                skipped.append({**where, "reason": str(e)})
                continue
            except Exception as e:
                skipped.append({**where, "reason": f"{type(e).__name__}: {e}".splitlines()[0]})
                continue
            item = timing.Item((p.name, case.label, case.direction), fn, sets=nsets,
                               context=p.context, events=gpu.events() if p.device == "cuda" else None,
                               nvtx=profile_name(p.name, case.label, case.direction, dtype.name, n),
                               settle=_settle(config, p.settle_s))
            items.append(item)
            meta[item.key] = (p, case)

    ticker = (lambda k: bar.update(k)) if bar is not None else None
    timing.measure(items, config.repeats, config.min_sample_s, ticker,
                   profiler if profiler is not None and profiler.source else None,
                   anchors=len(roof))
    if split is not None:
        split.close()
    gpu.clear()
    for p in providers:
        p.release()

    # the roofline: the best 1-in-1-out and 2-in-1-out copy with at most `threads` threads
    roofline = {**tag, "samples": {}}
    for item in items[:len(roof)]:
        _, op, t = item.key
        median, p20, p80 = timing.summary(item.samples)
        nbytes = (2 if op == "copy" else 3) * n * dtype.itemsize
        roofline["samples"][f"{op}@{t}"] = {
            "samples_s": item.samples, "median_s": median, "p20_s": p20, "p80_s": p80,
            "gb_s": nbytes / median / 1e9 if median else None,
            "ceiling_gb_s": nbytes / p20 / 1e9 if p20 else None, "error": item.error}
    for op, direction in (("copy", "forward"), ("add", "backward")):
        rates = [v["ceiling_gb_s"] for k, v in roofline["samples"].items()
                 if k.startswith(op) and v["ceiling_gb_s"]]
        roofline[direction + "_gb_s"] = max(rates) if rates else None

    results = []
    for item in items[len(roof):]:
        p, case = meta[item.key]
        median, p20, p80 = timing.summary(item.samples)
        nbytes = case.bytes_moved(n, dtype.itemsize)
        roof_gb_s = roofline[case.direction + "_gb_s"]
        gb_s = nbytes / median / 1e9 if median else None
        row = {
            **tag, "provider": p.name, "provider_label": p.label, "provider_version": p.version,
            "activation": case.label, "registry_name": case.activation, "family": case.family,
            "direction": case.direction, "saves": case.saves if case.direction == "backward" else None,
            "elements": case.elements(n), "bytes": nbytes,
            "out_preallocated": p.out_preallocated and not getattr(p, "allocates", lambda c: False)(case),
            "buffer_sets": nsets, "inner_loops": item.inner,
            "samples_s": item.samples, "median_s": median, "p20_s": p20, "p80_s": p80,
            "gelem_s": case.elements(n) / median / 1e9 if median else None,
            "gb_s": gb_s, "roofline_gb_s": roof_gb_s,
            "roofline_fraction": gb_s / roof_gb_s if gb_s and roof_gb_s else None,
            "error": item.error,
        }
        results.append(row)
    return {"results": results, "roofline": roofline}


def _add_ratios(results):
    """time / ReLU's time, for the same provider, direction, dtype, size, threads and device."""
    relu = {(r["device"], r["provider"], r["direction"], r["dtype"], r["size"], r["threads"]):
            r["median_s"] for r in results if r["activation"] == "relu"}
    for r in results:
        base = relu.get((r["device"], r["provider"], r["direction"], r["dtype"], r["size"],
                         r["threads"]))
        r["relu_ratio"] = r["median_s"] / base if r["median_s"] and base else None
