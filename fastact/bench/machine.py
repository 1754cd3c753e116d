"""The machine a report was measured on: CPU model, cores, caches, memory, GPU, versions."""
import glob
import importlib
import importlib.util
import os
import platform
import sys


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def caches():
    """{"L1d": bytes, "L2": bytes, "L3": bytes} as Linux reports them for cpu0 (empty elsewhere)."""
    found = {}
    for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            level = open(os.path.join(index, "level")).read().strip()
            kind = open(os.path.join(index, "type")).read().strip()
            size = open(os.path.join(index, "size")).read().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        found["L1d" if level == "1" else f"L{level}"] = int(size.rstrip("KMG")) * scale
    return found


def memory_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def versions(modules=("fastact", "numpy", "numba", "scipy", "numexpr", "torch", "jax", "cupy",
                      "matplotlib")):
    found = {"python": platform.python_version()}
    for name in modules:
        if name in sys.modules or importlib.util.find_spec(name) is not None:
            try:
                found[name] = importlib.import_module(name).__version__
            except Exception:
                pass
    return found


def describe(gpu_name=None):
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "caches": caches(),
            "memory_bytes": memory_bytes(), "platform": platform.platform(),
            "gpu": gpu_name}


def cache_level_for(nbytes, cache_sizes):
    """(name, capacity) of the smallest cache that holds nbytes twice over, or (None, None)."""
    for name in ("L1d", "L2", "L3"):
        size = cache_sizes.get(name)
        if size and 2 * nbytes <= size:
            return name, size
    return None, None
