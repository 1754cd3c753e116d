"""The softmax row kernels' grid on a GPU, old against new in one process, interleaved: a block per
row (the backend's) against blocks looping over rows in twice the resident blocks (before),
rows at ~2^28 elements: 16-byte float32 rows of 4096, scalar float32 rows of 4095 (not a multiple
of the vector), float16 rows of 4096. python tests/gpu_rows_grid.py"""
import os

os.environ.setdefault("FASTACT_CACHE_DIR", "/tmp/fastact_rows_grid")
import numpy as np  # noqa: E402
import fastact as fa  # noqa: E402
from fastact.kernels import cuda as kc  # noqa: E402
from fastact.bench import gpu_check as g  # noqa: E402

lib = g.pick_library("cupy", False)
new = kc.Backend._block_per_row
grids = {"block per row": new,
         "looping, 2 waves": lambda self, device, rows, threads: self._row_blocks(device, rows,
                                                                                 threads)}
with fa.backend("cuda"):
    for dtype, width in ((np.float32, 4096), (np.float32, 4095), (np.float16, 4096)):
        rows = (1 << 28) // width
        x = lib.to_device(np.random.default_rng(0).standard_normal((rows, width)).astype(dtype))
        dy = lib.to_device(np.random.default_rng(1).standard_normal((rows, width)).astype(dtype))
        y, dx = lib.empty((rows, width), dtype), lib.empty((rows, width), dtype)
        nbytes = rows * width * np.dtype(dtype).itemsize
        for name in ("softmax", "log_softmax"):
            act = getattr(fa, name)
            best = {}
            for _ in range(5):
                for label, grid in grids.items():
                    kc.Backend._block_per_row = grid
                    kc._plans.clear()
                    for direction, fn, moved in (
                            ("fwd", lambda: act(x, out=y), 2),
                            ("bwd", lambda: act.backward(dy, y, out=dx), 3)):
                        t = lib.time(fn, 10)
                        key = (label, direction)
                        best[key] = min(best.get(key, t), t)
            kc.Backend._block_per_row = new
            print(f"{np.dtype(dtype).name} rows of {width}, {name}: " + "  ".join(
                f"{label} fwd {2 * nbytes / best[(label, 'fwd')] / 1e9:.0f} "
                f"bwd {3 * nbytes / best[(label, 'bwd')] / 1e9:.0f} GB/s"
                for label in grids), flush=True)
