"""Where a launch around numba-cuda's dispatcher spends its time on a GPU's host: one small kernel
(fa.sigmoid on 4096 float32, 2 blocks) launched 5000 times back to back, synchronized at the end,
best of 3, each piece alone: python tests/gpu_launch_pieces.py"""
import ctypes
import os
import time

os.environ.setdefault("FASTACT_CACHE_DIR", "/tmp/fastact_pieces")
import cupy as cp  # noqa: E402
import numpy as np  # noqa: E402
import fastact as fa  # noqa: E402
from fastact.kernels import cuda as kc  # noqa: E402

x = cp.asarray(np.random.default_rng(0).standard_normal(4096).astype(np.float32))
out = cp.empty_like(x)
backend = fa._backends.get("cuda")
launched = []
original = kc.Backend._launch
kc.Backend._launch = lambda self, *a, **k: launched.append((a, k)) or original(self, *a, **k)
with fa.backend("cuda"):
    fa.sigmoid(x, out=out)
    fa.sigmoid(x, out=out)
kc.Backend._launch = original
(kernel, blocks, threads, stream, args, shared), _ = launched[-1]
entry = next(v for k, v in kc._fast.items() if k[0] is kernel and v)
buffer, pointers = kc._param_buffer(entry.slots)
entry.struct.pack_into(buffer, 0, *entry.pack(args))
driver = kc._driver()
handle = entry.handle
function = ctypes.c_void_p()
driver.cuKernelGetFunction.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
err = driver.cuKernelGetFunction(ctypes.byref(function), ctypes.c_void_p(handle))
print("handle", hex(handle), "cuKernelGetFunction", err, hex(function.value or 0))
other = cp.cuda.Stream(non_blocking=True)
values = entry.pack(args)


def piece(label, f, n=5000):
    best = float("inf")
    for _ in range(3):
        cp.cuda.Device().synchronize()
        t = time.perf_counter()
        for _ in range(n):
            f()
        cp.cuda.Device().synchronize()
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    print(f"  {label:52s} {best:6.2f} us", flush=True)


with fa.backend("cuda"), kc._device_context(0):
    piece("backend._launch (kinds, lookup, pack, cuLaunchKernel)",
          lambda: backend._launch(kernel, blocks, threads, stream, args, shared))
    piece("entry.launch (pack, cuLaunchKernel)",
          lambda: entry.launch(blocks, threads, shared, stream, args))
    piece("cuLaunchKernel alone, CUkernel, stream 0",
          lambda: driver.cuLaunchKernel(handle, blocks, 1, 1, threads, 1, 1, 0, 0, pointers, None))
    if function.value:
        piece("cuLaunchKernel alone, CUfunction, stream 0",
              lambda: driver.cuLaunchKernel(function.value, blocks, 1, 1, threads, 1, 1, 0, 0,
                                            pointers, None))
        piece("cuLaunchKernel alone, CUfunction, non-blocking stream",
              lambda: driver.cuLaunchKernel(function.value, blocks, 1, 1, threads, 1, 1, 0,
                                            other.ptr, pointers, None))
    piece("cuLaunchKernel alone, CUkernel, non-blocking stream",
          lambda: driver.cuLaunchKernel(handle, blocks, 1, 1, threads, 1, 1, 0, other.ptr,
                                        pointers, None))
    piece("cupy.cuda.driver.launchKernel, CUkernel, stream 0",
          lambda: cp.cuda.driver.launchKernel(handle, blocks, 1, 1, threads, 1, 1, 0, 0,
                                              pointers, 0))
    piece("struct pack + pack_into", lambda: entry.struct.pack_into(buffer, 0, *entry.pack(args)))
    piece("kinds + _fast lookup", lambda: kc._fast.get((kernel, 0, tuple(kc._kind(a)
                                                                          for a in args))))
    piece("cupy x * 2 (an ElementwiseKernel launch)", lambda: cp.multiply(x, 2, out=out))
    import torch
    t = torch.as_tensor(x, device="cuda")
    piece("torch.sigmoid(t)", lambda: torch.sigmoid(t))
