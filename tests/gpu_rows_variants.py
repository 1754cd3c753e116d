"""Block sizes and grids of the 16-byte softmax row kernels on a GPU (ROW_BLOCK_VECTOR), rows of 4096
float32 at 2^28 elements: python tests/gpu_rows_variants.py FORWARD_THREADS BACKWARD_THREADS [GRID]
GRID: "waves2" (the backend's: blocks loop over rows, twice the resident blocks), "waves8", or
"rows" (one block per row, as PyTorch launches its row kernels)."""
import os
import sys

forward, backward = int(sys.argv[1]), int(sys.argv[2])
grid = sys.argv[3] if len(sys.argv) > 3 else "waves2"
os.environ["FASTACT_CACHE_DIR"] = f"/tmp/fr_{forward}_{backward}"
import numpy as np  # noqa: E402
import fastact as fa  # noqa: E402
from fastact.kernels import cuda as kc  # noqa: E402
from fastact.bench import gpu_check as g  # noqa: E402

kc.ROW_BLOCK_VECTOR = {"forward": forward, "backward": backward}
if grid != "waves2":
    def row_blocks(self, device, count, threads=kc.ROW_BLOCK):
        if grid == "rows":
            return max(1, min(count, 2 ** 31 - 1))
        sms, threads_per_sm = kc._device_limits(device)
        return max(1, min(count, sms * max(1, threads_per_sm // threads) * int(grid[5:])))
    kc.Backend._row_blocks = row_blocks
lib = g.pick_library("cupy", False)
with fa.backend("cuda"):
    import cupy as cp
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((64, 4096)) * 5).astype(np.float32)
    x[3, 7] = np.nan
    with fa.backend("cpu"):
        want = fa.softmax(x), fa.log_softmax(x)
    got = cp.asnumpy(fa.softmax(cp.asarray(x))), cp.asnumpy(fa.log_softmax(cp.asarray(x)))
    err = [float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))) for a, b in zip(got, want)]
    print("rel err vs cpu", err, [bool(np.isnan(a[3]).all()) for a in got])
    copy_bw, add_bw, table = g.benchmark(lib, 28, {"softmax", "log_softmax"})
print(f"threads {forward}/{backward} grid {grid}: copy {copy_bw/1e9:.0f} add {add_bw/1e9:.0f} | " + "  ".join(
    f"{r[0]} {r[1]/1e9:.0f}/{(r[2] or 0)/1e9:.0f} {r[3]/1e9:.0f}/{(r[4] or 0)/1e9:.0f}"
    for r in table), flush=True)
