"""One or two 16-byte vectors a thread in the aligned elementwise kernels, per activation and
direction, on a GPU: 2^28 float32, out= given, CUDA events around 20 calls, the best of 5 rounds,
both variants (and PyTorch's op) interleaved in one process. Prints a table and writes the names of
the scalar functions that were faster with one vector to $OUT/one_vector_DTYPE.txt (or ./...):
python tests/gpu_vector_unroll.py [float32|float64]   (float64: 2^27 elements, the same bytes)"""
import os
import sys

os.environ.setdefault("FASTACT_CACHE_DIR", "/tmp/fastact_unroll")
import numpy as np  # noqa: E402
import fastact as fa  # noqa: E402
from fastact import registry  # noqa: E402
from fastact.kernels import cuda as kc  # noqa: E402
from fastact.bench import gpu_check as g  # noqa: E402

lib = g.pick_library("cupy", False)
import torch  # noqa: E402
peers = g.torch_peers(torch)
dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float32")
lanes = 16 // dtype.itemsize
n = (1 << 30) // dtype.itemsize
rng = np.random.default_rng(0)
x, y, dy, dx = (lib.empty(n, dtype) for _ in range(4))
for i in range(0, n, 1 << 20):
    with fa.backend("cuda"):
        fa.tanh(lib.to_device(rng.standard_normal(1 << 20).astype(dtype) * 3),
                out=x[i:i + (1 << 20)])
        fa.tanh(lib.to_device(rng.standard_normal(1 << 20).astype(dtype)),
                out=dy[i:i + (1 << 20)])
view = g._torch_views(lib)[1]
one = set()
saved_setting = kc.ONE_VECTOR
print(f"{'op':<12} {'dir':<4} {'2 vectors':>9} {'1 vector':>9} {'torch':>7}  GB/s")
with fa.backend("cuda"):
    for spec in registry.SPECS.values():
        if spec.kind != "elementwise":
            continue
        act = getattr(fa, spec.name)
        params = g.PARAM_CASES.get(spec.name, [{}])[0]
        saved = y if act.saves_for(**params) == "output" else x
        forward, backward = peers.get(spec.name, (None, None))
        xt, dyt = view(x), view(dy)
        yt = forward(xt) if forward is not None else None
        for direction, call, peer, moved in (
                ("fwd", lambda: act(x, out=y, **params), forward and (lambda: forward(xt)), 2),
                ("bwd", lambda: act.backward(dy, saved, out=dx, **params),
                 backward and (lambda: backward(dyt, xt, yt)), 3)):
            kc._plans.clear()
            call()
            name = next(iter(kc._plans))[0].__name__
            best = {}
            for _ in range(5):
                for variant in ("2", "1"):
                    kc.ONE_VECTOR = {lanes: frozenset({name} if variant == "1" else ())}
                    kc._plans.clear()
                    t = lib.time(call, 20)
                    best[variant] = min(best.get(variant, t), t)
                if peer is not None:
                    t = lib.time(peer, 20)
                    best["torch"] = min(best.get("torch", t), t)
            kc.ONE_VECTOR = saved_setting
            gbs = {k: moved * n * dtype.itemsize / v / 1e9 for k, v in best.items()}
            if gbs["1"] > gbs["2"]:
                one.add(name)
            print(f"{spec.name:<12} {direction:<4} {gbs['2']:9.0f} {gbs['1']:9.0f} "
                  f"{gbs.get('torch', float('nan')):7.0f}  {name}{' *' if name in one else ''}",
                  flush=True)
path = os.path.join(os.environ.get("OUT", "."), f"one_vector_{dtype.name}.txt")
with open(path, "w") as f:
    f.write("\n".join(sorted(one)) + "\n")
print("one vector:", " ".join(sorted(one)))
