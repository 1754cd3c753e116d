"""The CUDA backend: the registry's scalar functions compiled by numba-cuda into grid-stride kernels.

GPU arrays come in through ``__cuda_array_interface__`` (CuPy, PyTorch CUDA tensors, Numba device
arrays, anything else that exports it), without copies; results are allocated by the caller's own
library (CuPy in, CuPy out; torch in, torch out; Numba device arrays otherwise), and kernels run on
the caller's current stream (torch.cuda.current_stream(), CuPy's current stream; Numba's legacy
default stream for Numba arrays; the interface's ``stream`` entry for other producers) with no
synchronization added.

Kernels are generated from templates (the source is shown by ``kernel_source``), one per scalar
function, dtype and layout, and named for profilers: ``fastact_gelu_fwd_f32``,
``fastact_sigmoid_bwd_from_output_f16``, ``fastact_softmax_fwd_rows_f32`` ... Elementwise kernels use
64-bit indices. Contiguous float32/float64 arrays of one dtype whose pointers are 16-byte aligned
(what CuPy and PyTorch allocate) take the vector kernel (``fastact_gelu_fwd_f32_v4``): each thread
loads two 16-byte vectors (h.load_vector, ld.global.v4.f32) before it computes, the grid covers
the array (one block per 512 vectors), and the last n % 4 elements follow one per thread; at 2^28
float32 on an H100 this runs at the copy's bandwidth, where 4-byte accesses in a grid-stride
grid of two waves ran at 83-90% (NOTES). Other contiguous arrays (float16, mixed dtypes, an
offset view) take a grid-stride loop unrolled four times; arrays that are not contiguous in one
common order go through a strided kernel over the dimensions that remain after merging. No
``fastmath``: it flushes subnormals to zero and approximates division, and the error bounds of
kernels/math.py (tails down into the subnormals) would not hold. No contraction either (NVVM's
``-fma=0`` and ptxas's ``--fmad=false``, _exact_arithmetic): every product and sum is rounded
where the source writes it, as on the CPU, and FMA only where it calls ``fma``.

Row-wise softmax / log_softmax: one block per row with the row held in shared memory when it fits
(SMEM_ROW_BYTES), block reductions by warp shuffles, and 16-byte accesses where the rows allow
(fwd_rowsv / bwd_rowsv: rows of a multiple of 4 float32 or 2 float64, 16-byte-aligned arrays of
the work type; the backward keeps up to two vectors a thread in registers); longer rows take a
two-pass path (per
chunk partial (max, sum) combined online in float64, then a pass that writes); short rows and rows
along a strided axis take one thread per row. Under NUMBA_ENABLE_CUDASIM=1 (numba-cuda's simulator)
everything runs as Python, with small blocks so that tests on small arrays reach every path.

Per call: the first launch of a kernel goes through numba-cuda's dispatcher; later ones pack the
arguments themselves and call the driver's cuLaunchKernel (_FastKernel). A call whose arrays
describe themselves exactly as an earlier call's did (interface and device) repeats that call's
plan (_Plan: no checks or choices again, only the stream, an allocation where out is None, checked
to be aligned and laid out as the plan's was, and the launch).
"""
import contextlib
import functools
import hashlib
import math
import os
import threading

import numpy as np

from .._backends import Unavailable
from ._codegen import import_source

try:
    from numba import cuda
    from numba.core import config as _numba_config
except ImportError as _e:  # pragma: no cover - reported by Backend()
    cuda = None
    _IMPORT_ERROR = str(_e)
else:
    _IMPORT_ERROR = None

SIMULATOR = bool(cuda is not None and _numba_config.ENABLE_CUDASIM)

# Launch configuration (the simulator runs every thread as a Python thread: tiny blocks there).
BLOCK = 8 if SIMULATOR else 256           # threads per block, elementwise kernels
ROW_BLOCK = 8 if SIMULATOR else 256       # threads per block, row kernels (a power of two)
# threads per block of the 16-byte softmax row kernels (fwd_rowsv, bwd_rowsv), measured on an H100
# at rows of 4096 float32 (NOTES): the forward keeps two vectors a thread in flight and is fastest
# with 128, the backward (dy and y, one vector each) with 512
ROW_BLOCK_VECTOR = {"forward": 128, "backward": 512}
if SIMULATOR:  # simulated: the forward's pair loop, the backward's three paths (tests/cuda_sim_matrix)
    ROW_BLOCK_VECTOR = {"forward": 8, "backward": 4}
UNROLL = 4                                # elements in flight per thread, contiguous kernels
VECTOR_UNROLL = 2                         # 16-byte vectors in flight per thread, aligned kernels
# {lanes (elements in a 16-byte vector: 4 float32, 2 float64): the scalar functions whose aligned
# kernels take one vector per thread}. float32: each was faster so on an H100 at 2^28 float32
# (tests/gpu_vector_unroll.py, NOTES: 3007-3020 -> 3026-3046 GB/s forward, 3044-3053 -> 3060-3069
# backward); five forwards (sigmoid, tanh, gelu, mish, softsign:
# most divide or evaluate a long polynomial) lost 2-9% with one vector and keep two; hardsigmoid's
# forward joined once it multiplied instead of dividing (math.sixth: 3004 -> 3025 GB/s). float64
# (2^27 elements, the same bytes, 2026-11-24): the 18 that were faster with one vector, by 0.1-0.7%
# (forwards 3031-3036 -> 3046-3054 GB/s, backwards 3095-3101 -> 3100-3120); the others lost 0.2-10%
ONE_VECTOR = {4: frozenset({"celu_backward_from_output", "celu_forward", "elu_backward_from_output",
    "elu_forward", "gelu_backward_from_input", "hardsigmoid_backward_from_input",
    "hardsigmoid_forward",
    "hardswish_backward_from_input", "hardswish_forward", "hardtanh_backward_from_input",
    "hardtanh_forward", "leaky_relu_backward", "leaky_relu_forward",
    "logsigmoid_backward_from_input", "logsigmoid_forward", "mish_backward_from_input",
    "relu_backward_from_output", "relu_forward", "selu_backward_from_output", "selu_forward",
    "sigmoid_backward_from_output", "silu_backward_from_input", "silu_forward",
    "softplus_backward_from_input", "softplus_forward", "softsign_backward_from_input",
    "tanh_backward_from_output", "threshold_backward_from_input", "threshold_forward"}),
    2: frozenset({"elu_backward_from_output", "elu_forward", "hardsigmoid_forward",
        "hardtanh_backward_from_input", "hardtanh_forward", "leaky_relu_backward",
        "leaky_relu_forward", "logsigmoid_backward_from_input", "relu_backward_from_output",
        "relu_forward", "selu_backward_from_output", "selu_forward",
        "sigmoid_backward_from_output", "softplus_backward_from_input",
        "softsign_backward_from_input", "tanh_backward_from_output",
        "threshold_backward_from_input", "threshold_forward"})}
GRID_WAVES = 1 if SIMULATOR else 2        # grid-stride grids: this many times the resident blocks
SMEM_ROW_BYTES = 256 if SIMULATOR else 32768  # softmax rows up to this size stay in shared memory
CHUNK = 64 if SIMULATOR else 16384        # elements per block in the long-row path
THREAD_PER_ROW_MAX = 4 if SIMULATOR else 32  # rows up to this length: one thread per row
SEGMENT = 16 if SIMULATOR else 8192       # elements per block in prelu's weight reduction

_TAGS = {np.dtype(np.float16): "f16", np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def _tag(inputs, work):
    """The kernel's dtype tag: the inputs' dtype where they share one, else the work type."""
    dtypes = {a.dtype for a in inputs}
    return (_TAGS.get(inputs[0].dtype) or inputs[0].dtype.name) if len(dtypes) == 1 else work


def _values(params, work):
    wtype = np.float32 if work == "f32" else np.float64
    return [wtype(p) for p in params]


def _fail(name, exc, message):
    raise exc(f"fastact.{name}: {message}")


# --- GPU arrays ------------------------------------------------------------------------------------

class _Library:
    """How to allocate and which stream to use for one kind of caller array (Numba's by default)."""
    name = "numba"

    def interface(self, obj):
        return obj.__cuda_array_interface__

    def device(self, obj):
        return None

    def empty(self, like, shape, dtype, order):
        return cuda.device_array(shape, dtype, order=order)

    def stream(self, like):
        """The stream handle (an int) kernels for this array run on."""
        ptr = self.interface(like).get("stream") if not cuda.devicearray.is_cuda_ndarray(
            like) else None
        return 0 if ptr is None else int(ptr)


class _CuPy(_Library):
    name = "cupy"

    def __init__(self):
        import cupy
        self.cupy = cupy

    def device(self, obj):
        return obj.device.id

    def empty(self, like, shape, dtype, order):
        with self.cupy.cuda.Device(like.device.id):
            return self.cupy.empty(shape, dtype, order=order)

    def stream(self, like):
        with self.cupy.cuda.Device(like.device.id):
            return int(self.cupy.cuda.get_current_stream().ptr)


class _Torch(_Library):
    name = "torch"

    def __init__(self):
        import torch
        self.torch = torch
        self.dtypes = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
                       np.dtype(np.float64): torch.float64}

    def interface(self, obj):
        return obj.detach().__cuda_array_interface__  # a tensor that requires grad refuses it

    def device(self, obj):
        return obj.device.index

    def empty(self, like, shape, dtype, order):
        strides = _contiguous_strides(shape, 1, order)
        return self.torch.empty_strided(tuple(shape), strides, dtype=self.dtypes[np.dtype(dtype)],
                                        device=like.device)

    def stream(self, like):
        return int(self.torch.cuda.current_stream(like.device).cuda_stream)


_NUMBA_LIBRARY = _Library()
_libraries = {}
_custom = []  # (predicate, library) from register_array_type


def register_array_type(predicate, library):
    """Teach the backend another array type: ``predicate(obj)`` says whether obj is one, and
    ``library`` is a _Library (interface, device, empty, stream) that allocates its results."""
    _custom.insert(0, (predicate, library))


def _library_of(obj):
    for predicate, library in _custom:
        if predicate(obj):
            return library
    root = type(obj).__module__.split(".")[0]
    if root in ("cupy", "torch"):
        library = _libraries.get(root)
        if library is None:
            library = _libraries[root] = _CuPy() if root == "cupy" else _Torch()
        return library
    return _NUMBA_LIBRARY


@functools.lru_cache(maxsize=4096)
def _contiguous_strides(shape, itemsize, order="C"):
    strides, step = [0] * len(shape), itemsize
    dims = range(len(shape) - 1, -1, -1) if order == "C" else range(len(shape))
    for d in dims:
        strides[d] = step
        step *= max(int(shape[d]), 1)
    return tuple(strides)


class _Array:
    """A GPU array as the interface describes it: shape, dtype, element strides, pointer."""
    __slots__ = ("obj", "library", "shape", "dtype", "strides", "ptr", "readonly", "ndim", "size",
                 "device")

    def __init__(self, name, obj):
        self.obj = obj
        self.library = _library_of(obj)
        cai = self.library.interface(obj)
        if cai.get("mask") is not None:
            _fail(name, TypeError, "masked GPU arrays are not supported")
        self.shape = tuple(int(s) for s in cai["shape"])
        try:
            self.dtype = np.dtype(cai["typestr"])
        except TypeError:
            _fail(name, TypeError, f"unsupported dtype {cai['typestr']!r}")
        self.ptr, self.readonly = int(cai["data"][0] or 0), bool(cai["data"][1])
        itemsize = self.dtype.itemsize
        byte_strides = cai.get("strides") or _contiguous_strides(self.shape, itemsize)
        if any(s % itemsize for s in byte_strides):
            _fail(name, ValueError, "strides that are not a multiple of the item size are not "
                  "supported")
        self.strides = tuple(s // itemsize for s in byte_strides)
        self.ndim = len(self.shape)
        self.size = math.prod(self.shape)
        self.device = self.library.device(obj)

    def is_contiguous(self, order="C"):
        return self.size <= 1 or all(
            st == c for n, st, c in zip(self.shape, self.strides,
                                        _contiguous_strides(self.shape, 1, order)) if n > 1)

    def extent(self):
        """(first, last) element offsets from ptr that the array touches."""
        lo = sum(st * (n - 1) for n, st in zip(self.shape, self.strides) if st < 0 and n > 0)
        hi = sum(st * (n - 1) for n, st in zip(self.shape, self.strides) if st > 0 and n > 0)
        return lo, hi

    def byte_range(self):
        lo, hi = self.extent()
        return self.ptr + lo * self.dtype.itemsize, self.ptr + (hi + 1) * self.dtype.itemsize

    def self_overlapping(self):
        return any(st == 0 and n > 1 for n, st in zip(self.shape, self.strides))


def _overlaps(a, b):
    a_lo, a_hi = a.byte_range()
    b_lo, b_hi = b.byte_range()
    return a.size and b.size and a_lo < b_hi and b_lo < a_hi


def _identical(a, b):
    return (a.ptr == b.ptr and a.strides == b.strides and a.shape == b.shape
            and a.dtype == b.dtype)


def _flat(array, first, count, dtype=None):
    """A 1-D contiguous kernel argument over ``count`` elements from element offset ``first``."""
    dtype = np.dtype(dtype or array.dtype)
    return _flat_at(array.ptr + first * dtype.itemsize, max(int(count), 1) if array.size else 0,
                    dtype, array.device)


def _flat_at(ptr, count, dtype, device):
    """A 1-D contiguous kernel argument of ``count`` elements of ``dtype`` at address ``ptr``: a
    _Flat (what numba-cuda passes for it, and a Numba view only when the dispatcher launches),
    a NumPy array over that memory under the simulator."""
    if SIMULATOR:
        if count == 0:
            return np.empty(0, dtype)
        import ctypes
        buffer = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptr)
        return np.frombuffer(buffer, dtype=dtype, count=count)
    return _Flat(ptr, count, dtype, device)


class _Flat:
    """A kernel argument over (pointer, length, dtype): ``fastact_packed`` is (dtype, what
    numba-cuda passes a kernel for such an array: meminfo, parent, size, itemsize, data, shape,
    strides in bytes), for _launch's path around the dispatcher; ``view()`` the Numba device array
    the dispatcher takes, built once per (pointer, length, dtype, device) and kept (building one
    costs tens of microseconds in numba-cuda)."""
    __slots__ = ("fastact_packed", "ptr", "count", "dtype", "device")

    def __init__(self, ptr, count, dtype, device):
        self.ptr, self.count, self.dtype, self.device = ptr, count, dtype, device
        self.fastact_packed = (dtype.str, (0, 0, count, dtype.itemsize, ptr, count,
                                           dtype.itemsize))

    def view(self):
        key = (self.ptr, self.count, self.dtype.str, self.device)
        view = _views.get(key)
        if view is None:
            # No owner: the view is only (pointer, length, dtype), valid for whatever allocation
            # is there while the caller holds it
            desc = {"shape": (self.count,), "strides": None, "typestr": self.dtype.str,
                    "data": (self.ptr, False), "version": 3}
            view = cuda.from_cuda_array_interface(desc, owner=None, sync=False)
            view.fastact_packed = self.fastact_packed
            _views[key] = view
            _forget_oldest(_views, _VIEWS_KEPT)
        return view


_views = {}  # (pointer, count, dtype, device) -> a Numba device array over it, oldest first
_VIEWS_KEPT = 256


def _strided_operand(array, shape, strides):
    """(flat argument, base offset, strides) for the strided kernel, for any signs of strides."""
    lo = sum(st * (n - 1) for n, st in zip(shape, strides) if st < 0 and n > 0)
    hi = sum(st * (n - 1) for n, st in zip(shape, strides) if st > 0 and n > 0)
    return _flat(array, lo, hi - lo + 1), -lo, tuple(int(s) for s in strides)


def _collapse(shape, stride_sets):
    """Drop unit dimensions and merge neighbours that are contiguous in every operand."""
    keep = [d for d, n in enumerate(shape) if n != 1]
    shape = [shape[d] for d in keep]
    stride_sets = [[st[d] for d in keep] for st in stride_sets]
    d = len(shape) - 2
    while d >= 0:
        if all(st[d] == st[d + 1] * shape[d + 1] for st in stride_sets):
            shape[d:d + 2] = [shape[d] * shape[d + 1]]
            for st in stride_sets:
                st[d:d + 2] = [st[d + 1]]
        d -= 1
    return tuple(shape) or (1,), [tuple(st) or (1,) for st in stride_sets]


def enable_simulator_arrays():
    """Under numba-cuda's simulator, give its device arrays the ``__cuda_array_interface__`` that
    real device arrays have (their data is host memory), so that fastact routes them to this
    backend as it would on a GPU. For tests and ``gpu_check --simulate``; a no-op on a GPU."""
    if not SIMULATOR:
        return
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    def interface(self):
        a = self._ary
        return {"shape": a.shape, "strides": None if a.flags.c_contiguous else a.strides,
                "typestr": a.dtype.str, "data": (a.ctypes.data, not a.flags.writeable),
                "version": 3, "stream": None}
    FakeCUDAArray.__cuda_array_interface__ = property(interface)


# --- kernel generation --------------------------------------------------------------------------

def _source_files():
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(here, f) for f in ("math.py", "_jit.py", "_cuda_jit.py", "cuda.py")] + [
        os.path.join(os.path.dirname(here), "registry.py")]


@functools.lru_cache(maxsize=None)
def cache_dir():
    """Generated kernel modules and numba-cuda's cached machine code (FASTACT_CACHE_DIR moves it);
    the name carries a hash of the sources the kernels are made of."""
    digest = hashlib.sha256()
    for path in _source_files():
        with open(path, "rb") as f:
            digest.update(f.read())
    import numba
    digest.update(numba.__version__.encode())
    try:
        from importlib.metadata import version
        digest.update(version("numba-cuda").encode())
    except Exception:
        pass
    root = os.environ.get("FASTACT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fastact")
    return os.path.join(root, ("cuda-sim-" if SIMULATOR else "cuda-") + digest.hexdigest()[:16])


_HEADER = '''# Generated by fastact.kernels.cuda; rewritten when missing. Do not edit.
import numpy as np
from numba import cuda, types
import fastact.kernels._jit  # teaches Numba the scalar functions
from fastact import registry
from fastact.kernels import math as m
from fastact.kernels import _cuda_jit as h
__name__ = "fastact"  # profilers show fastact::KERNEL_NAME

'''
_JIT = "@cuda.jit(cache=True)\n"
_WORK = {"f32": ("np.float32", "types.float32"), "f64": ("np.float64", "types.float64")}

_lock = threading.RLock()
_modules = {}
_sources = {}


def _exact_arithmetic():
    """Compile and link fastact's kernels (named ``fastact_*``) without contraction: NVVM's
    ``-fma=0`` and ptxas's ``--fmad=false``. Other kernels in the process keep numba-cuda's
    defaults.

    numba-cuda compiles with NVVM's default ``-fma=1`` and links through nvJitLink with ptxas's
    default ``--fmad=true``: products and later sums are fused into FMAs wherever the compilers
    like. The double-word arithmetic of kernels/math.py needs each product rounded where it is
    written, as the CPU compiles it. On an H100 (CUDA 13.0), ptxas fused ``a = k3 * x*x`` into
    ``b = k1 + a`` in gelu_tanh_argument (then; now ``wh = k1 + a`` in registry.gelu_tanh_sum), so
    two_sum's error term no longer matched the rounded ``a``: gelu(approximate="tanh") 40 ulp off
    near x = -10. ``-fma=0`` alone (every add and
    product ``.rn`` in the PTX) did not stop that ptxas; with ``--fmad=false`` too all 198 checks
    of gpu_check passed. numba-cuda's kernel dispatcher passes NVVM no option but ``opt`` and
    ``fastmath`` and its linker none for ptxas, so ``compile_cuda``, the code library's
    ``get_cubin`` and the linker's options are wrapped. If this numba-cuda lacks them, a
    RuntimeWarning says so and the kernels compile as numba-cuda does by default."""
    import dataclasses
    import numba.cuda.dispatcher as dispatcher
    try:
        from numba.cuda import codegen
        from numba.cuda.cudadrv import driver
        original = dispatcher.compile_cuda
        get_cubin = codegen.CUDACodeLibrary.get_cubin
        linker_options = driver._Linker._get_linker_options
    except (AttributeError, ImportError) as e:
        import warnings
        warnings.warn(f"fastact: cannot switch off FMA contraction in this numba-cuda ({e}); "
                      "CUDA results may exceed the stated error bounds", RuntimeWarning)
        return
    if getattr(original, "fastact_exact", False):
        return
    linking = threading.local()

    def compile_cuda(pyfunc, *args, nvvm_options=None, **kwargs):
        if getattr(pyfunc, "__name__", "").startswith("fastact_") and nvvm_options is not None:
            nvvm_options = dict(nvvm_options, fma=False)
        return original(pyfunc, *args, nvvm_options=nvvm_options, **kwargs)

    def exact_get_cubin(self, cc=None):
        if (getattr(self, "_nvvm_options", None) or {}).get("fma") is not False:
            return get_cubin(self, cc)
        linking.exact = True
        try:
            return get_cubin(self, cc)
        finally:
            linking.exact = False

    def exact_linker_options(self, ptx):
        options = linker_options(self, ptx)
        if getattr(linking, "exact", False):  # a fastact library's link (exact_get_cubin)
            options = dataclasses.replace(options, ptxas_options=["--fmad=false"])
        return options
    compile_cuda.fastact_exact = True
    dispatcher.compile_cuda = compile_cuda
    codegen.CUDACodeLibrary.get_cubin = exact_get_cubin
    driver._Linker._get_linker_options = exact_linker_options


def _load_module(name, source):
    """The module ``source`` (written to the cache directory as NAME.py and imported: numba-cuda's
    disk cache needs a real file)."""
    with _lock:
        module = _modules.get(name)
        if module is not None:
            return module
        if not SIMULATOR:
            _exact_arithmetic()
        text = _HEADER + source
        _sources[name] = text
        module = import_source(cache_dir(), "fastact._cuda_generated", name, text)
        _modules[name] = module
        return module


def _load(name, source):
    """The kernel ``name`` that ``source`` defines."""
    return getattr(_load_module(name, source), name)


def kernel_source(name):
    """The generated Python source of a kernel that has been built in this process."""
    return _sources[name]


def kernel_name(scalar_fn, tag, n_inputs=None):
    """fastact_gelu_fwd_f32 for gelu_forward, fastact_sigmoid_bwd_from_output_f32 ...; with more
    array inputs than usual (rrelu's slopes as leaky_relu's parameter) _3in before the dtype."""
    base = scalar_fn.__name__ if scalar_fn is not None else "copy"
    usual = 1 if scalar_fn is None or base.endswith("forward") else 2
    arity = f"_{n_inputs}in" if n_inputs not in (None, usual) else ""
    return "fastact_" + base.replace("forward", "fwd").replace("backward", "bwd") + arity + "_" + tag


def _params_of(scalar_fn, n_inputs):
    import inspect
    return len(inspect.signature(scalar_fn).parameters) - n_inputs if scalar_fn else 0


def _caller(scalar_fn, n_inputs):
    """(the kernel's parameter names, call): call(values) is the source of scalar_fn applied to
    the value expressions and the parameters (the value itself for a copy, scalar_fn None)."""
    params = [f"p{k}" for k in range(_params_of(scalar_fn, n_inputs))]

    def call(values):
        if scalar_fn is None:
            return values[0]
        return f"registry.{scalar_fn.__name__}({', '.join(values + params)})"
    return params, call


@functools.lru_cache(maxsize=None)
def _elementwise_kernel(scalar_fn, tag, n_inputs, work, ndim, lanes=0, unroll=VECTOR_UNROLL):
    """The elementwise kernel: contiguous for ndim 0 (with 16-byte accesses of ``lanes`` elements,
    ``unroll`` vectors a thread, where lanes is given), else strided over ndim dimensions."""
    name = kernel_name(scalar_fn, tag, n_inputs) + (f"_nd{ndim}" if ndim else "") + (
        f"_v{lanes}" if lanes else "") + (
        f"u{unroll}" if lanes and unroll != VECTOR_UNROLL else "")
    if lanes:
        return _load(name, _vector_source(name, scalar_fn, n_inputs, work, lanes, unroll))
    return _load(name, _elementwise_source(name, scalar_fn, n_inputs, work, ndim))


def _vector_source(name, scalar_fn, n_inputs, work, lanes, unroll):
    """out[i] = scalar(a0[i], ..., p0, ...) on contiguous 16-byte-aligned arrays of one dtype: each
    thread loads ``unroll`` vectors of ``lanes`` elements (h.load_vector) before it computes,
    then stores them whole; the last n % lanes elements, one per thread, after."""
    w = _WORK[work][0]
    params, call = _caller(scalar_fn, n_inputs)
    ins = [f"a{k}" for k in range(n_inputs)]

    def body(indent, unroll):
        lines = []
        for u in range(unroll):
            at = "i" if u == 0 else f"i + {u} * stride"
            lines += [f"{indent}v{k}_{u} = h.load_vector({a}, {at})" for k, a in enumerate(ins)]
        for u in range(unroll):
            at = "i" if u == 0 else f"i + {u} * stride"
            lanes_out = ", ".join(call([f"{w}(v{k}_{u}[{j}])" for k in range(n_inputs)])
                                  for j in range(lanes))
            lines.append(f"{indent}h.store_vector(out, {at}, ({lanes_out},))")
        return lines

    args = ", ".join(ins + ["out", "n"] + params)
    lines = [f"def {name}({args}):",
             "    i = cuda.grid(1)",
             "    stride = cuda.gridsize(1)",
             f"    vectors = n // {lanes}",
             f"    while i + {unroll - 1} * stride < vectors:",
             *body("        ", unroll),
             f"        i += {unroll} * stride",
             *(["    while i < vectors:", *body("        ", 1), "        i += stride"]
               if unroll > 1 else []),
             f"    j = vectors * {lanes} + cuda.grid(1)",
             "    if j < n:",
             f"        out[j] = {call([f'{w}({a}[j])' for a in ins])}"]
    return _JIT + "\n".join(lines) + "\n"


def _elementwise_source(name, scalar_fn, n_inputs, work, ndim):
    """out[i] = scalar(W(a0[i]), ..., p0, ...): contiguous (ndim 0) or strided over ndim dims."""
    w = _WORK[work][0]
    params, call = _caller(scalar_fn, n_inputs)
    ins = [f"a{k}" for k in range(n_inputs)]
    if ndim == 0:
        args = ", ".join(ins + ["out", "n"] + params)
        lines = [f"def {name}({args}):",
                 "    i = cuda.grid(1)",
                 "    stride = cuda.gridsize(1)",
                 f"    while i + {UNROLL - 1} * stride < n:"]
        for u in range(UNROLL):
            at = "i" if u == 0 else f"i + {u} * stride"
            lines += [f"        v{k}_{u} = {w}({a}[{at}])" for k, a in enumerate(ins)]
        for u in range(UNROLL):
            at = "i" if u == 0 else f"i + {u} * stride"
            lines.append(f"        out[{at}] = {call([f'v{k}_{u}' for k in range(n_inputs)])}")
        lines += [f"        i += {UNROLL} * stride",
                  "    while i < n:",
                  f"        out[i] = {call([f'{w}({a}[i])' for a in ins])}",
                  "        i += stride"]
        return _JIT + "\n".join(lines) + "\n"
    operands = ins + ["out"]
    args = ", ".join([f"{a}, {a}_off, {a}_st" for a in operands] + ["shape", "n"] + params)
    lines = [f"def {name}({args}):",
             "    i = cuda.grid(1)",
             "    stride = cuda.gridsize(1)",
             "    while i < n:",
             "        r = i"]
    for d in range(ndim - 1, 0, -1):
        lines += [f"        i{d} = r % shape[{d}]", f"        r = r // shape[{d}]"]
    lines.append("        i0 = r")

    def at(a):
        return f"{a}[{a}_off + " + " + ".join(f"i{d} * {a}_st[{d}]" for d in range(ndim)) + "]"
    lines += [f"        {at('out')} = {call([f'{w}({at(a)})' for a in ins])}",
              "        i += stride"]
    return _JIT + "\n".join(lines) + "\n"


# The row-wise kernels: {W} the work type's constructor, {WT} its Numba type, {B} ROW_BLOCK,
# {T} the dtype tag. Sums are float64, as in kernels/loops.py. Every loop that contains
# cuda.syncthreads() has the same trip count in all threads of a block.
_TREE = '''
        s = {B} // 2
        while s > 0:
            if t < s:
{combine}
            cuda.syncthreads()
            s //= 2
'''


def _tree(combine):
    return _TREE.replace("{combine}", "\n".join("                " + c for c in combine))


WARP = 4 if SIMULATOR else 32  # lanes of a warp-level reduction (simulated: 2 warps a block)


def _block_reduce(values, partials, combine, block=ROW_BLOCK):
    """Source that reduces per-thread ``values`` (names) over the block, every thread ending with
    the result: within each warp by shuffles (log2 WARP steps, no barrier), then each thread
    combines the warps' results from the shared arrays ``partials`` in warp order (one barrier),
    so all threads get the same bits. ``combine(a, b)`` is the source line that sets a's names
    from a's and b's (lists of names). The simulator has no shuffles: there they go through the
    partials array (size ``block``) with barriers, the same steps otherwise. Needs ``t``, ``lane``
    and ``warp``, and a barrier before the partials are written again (the row loop's)."""
    other = [f"o_{v}" for v in values]
    lines = [f"off = {WARP // 2}", "while off > 0:"]
    for v, o, part in zip(values, other, partials):
        if SIMULATOR:
            lines += ["    cuda.syncthreads()", f"    {part}[t] = {v}", "    cuda.syncthreads()",
                      f"    {o} = {part}[t + off] if lane + off < {WARP} else {v}"]
        else:
            lines.append(f"    {o} = cuda.shfl_down_sync(0xFFFFFFFF, {v}, off)")
    lines += ["    " + combine(values, other), "    off //= 2"]
    if SIMULATOR:
        lines.append("cuda.syncthreads()")
    lines.append("if lane == 0:")
    lines += [f"    {part}[warp] = {v}" for v, part in zip(values, partials)]
    lines.append("cuda.syncthreads()")
    lines += [f"{v} = {part}[0]" for v, part in zip(values, partials)]
    lines += ["k = 1", f"while k < {block // WARP}:"]
    lines += [f"    {o} = {part}[k]" for o, part in zip(other, partials)]
    lines += ["    " + combine(values, other), "    k += 1"]
    return "\n".join("        " + line for line in lines) + "\n"


def _max_first_combine(a, b):
    return f"{a[0]}, {a[1]} = h.max_first({a[0]}, {a[1]}, {b[0]}, {b[1]})"


def _sum_combine(a, b):
    return f"{a[0]} += {b[0]}"


_ROWS_SOURCE = '''
@cuda.jit(cache=True)
def fastact_{op}_fwd_rows_{T}(x, out, rows, n):
    """One block per row, the row held in (dynamic) shared memory; block reductions by warp
    shuffles (_block_reduce). softmax keeps each e^(x - max) in the row for the last pass."""
    row = cuda.shared.array(0, {WT})
    red_v = cuda.shared.array({B}, {WT})
    red_i = cuda.shared.array({B}, types.int64)
    red_s = cuda.shared.array({B}, types.float64)
    t = cuda.threadIdx.x
    lane = t % {WARP}
    warp = t // {WARP}
    r = np.int64(cuda.blockIdx.x)
    while r < rows:
        base = r * n
        best = {W}(-np.inf)
        where = n
        j = np.int64(t)
        while j < n:
            v = {W}(x[base + j])
            row[j] = v
            best, where = h.max_first(best, where, v, j)
            j += {B}
''' + _block_reduce(["best", "where"], ["red_v", "red_i"], _max_first_combine) + '''
        total = 0.0
        j = np.int64(t)
        while j < n:
            if {LOG} == 0:
                e = m.exp_difference(row[j], best)
                row[j] = e
                total += np.float64(e)
            elif j != where:
                total += np.float64(m.exp_difference(row[j], best))
            j += {B}
''' + _block_reduce(["total"], ["red_s"], _sum_combine) + '''
        j = np.int64(t)
        if {LOG} == 0:
            denominator = {W}(total)
            while j < n:
                out[base + j] = row[j] / denominator
                j += {B}
        else:
            log_sum = m.log1p(total)
            while j < n:
                out[base + j] = (np.float64(row[j]) - np.float64(best)) - log_sum
                j += {B}
        cuda.syncthreads()
        r += cuda.gridDim.x


@cuda.jit(cache=True)
def fastact_{op}_fwd_partials_{T}(x, part_best, part_where, part_others, rows, n, chunk, chunks):
    """Long rows, pass 1: per (row, chunk) the max, its first index and the float64 sum of
    e^(x - max) over the other elements."""
    red_v = cuda.shared.array({B}, {WT})
    red_i = cuda.shared.array({B}, types.int64)
    red_s = cuda.shared.array({B}, types.float64)
    t = cuda.threadIdx.x
    p = np.int64(cuda.blockIdx.x)
    while p < rows * chunks:
        r, lo, hi = h.chunk_of(p, chunks, chunk, n)
        best = {W}(-np.inf)
        where = np.int64(-1)
        others = 0.0
        j = lo + t
        while j < hi:
            best, where, others = h.softmax_push(best, where, others, {W}(x[r * n + j]), j)
            j += {B}
        red_v[t] = best
        red_i[t] = where
        red_s[t] = others
        cuda.syncthreads()
''' + _tree(["red_v[t], red_i[t], red_s[t] = h.softmax_combine(red_v[t], red_i[t], red_s[t], "
             "red_v[t + s], red_i[t + s], red_s[t + s])"]) + '''
        if t == 0:
            part_best[p] = red_v[0]
            part_where[p] = red_i[0]
            part_others[p] = red_s[0]
        cuda.syncthreads()
        p += cuda.gridDim.x


@cuda.jit(cache=True)
def fastact_{op}_fwd_combine_{T}(part_best, part_where, part_others, row_best, row_others, rows,
                                 chunks):
    """Long rows, the partials of each row as one (max, sum over the others)."""
    red_v = cuda.shared.array({B}, {WT})
    red_i = cuda.shared.array({B}, types.int64)
    red_s = cuda.shared.array({B}, types.float64)
    t = cuda.threadIdx.x
    r = np.int64(cuda.blockIdx.x)
    while r < rows:
        best = {W}(-np.inf)
        where = np.int64(-1)
        others = 0.0
        c = np.int64(t)
        while c < chunks:
            q = r * chunks + c
            best, where, others = h.softmax_combine(best, where, others, part_best[q],
                                                    part_where[q], part_others[q])
            c += {B}
        red_v[t] = best
        red_i[t] = where
        red_s[t] = others
        cuda.syncthreads()
''' + _tree(["red_v[t], red_i[t], red_s[t] = h.softmax_combine(red_v[t], red_i[t], red_s[t], "
             "red_v[t + s], red_i[t + s], red_s[t + s])"]) + '''
        if t == 0:
            row_best[r] = red_v[0]
            row_others[r] = red_s[0]
        cuda.syncthreads()
        r += cuda.gridDim.x


@cuda.jit(cache=True)
def fastact_{op}_fwd_write_{T}(x, out, row_best, row_others, rows, n, chunk, chunks):
    """Long rows, pass 2: each (row, chunk) block writes its elements."""
    t = cuda.threadIdx.x
    p = np.int64(cuda.blockIdx.x)
    while p < rows * chunks:
        r, lo, hi = h.chunk_of(p, chunks, chunk, n)
        best = row_best[r]
        if {LOG} == 0:
            denominator = {W}(row_others[r] + np.float64(m.exp(best - best)))  # NaN for inf max
        else:
            log_sum = m.log1p(row_others[r])
        j = lo + t
        while j < hi:
            v = {W}(x[r * n + j])
            if {LOG} == 0:
                out[r * n + j] = m.exp_difference(v, best) / denominator
            else:
                out[r * n + j] = (np.float64(v) - np.float64(best)) - log_sum
            j += {B}
        p += cuda.gridDim.x


@cuda.jit(cache=True)
def fastact_{op}_fwd_columns_{T}(x, out, outer, n, inner):
    """One thread per row of an (outer, n, inner) array: the loops of kernels/loops.py."""
    q = cuda.grid(1)
    while q < outer * inner:
        o = q // inner
        base = o * n * inner + (q - o * inner)
        best = {W}(-np.inf)
        where = n
        for j in range(n):
            best, where = h.max_first(best, where, {W}(x[base + j * inner]), j)
        total = 0.0
        if {LOG} == 0:
            for j in range(n):
                e = m.exp_difference({W}(x[base + j * inner]), best)
                out[base + j * inner] = e  # then divided: x may be out (in place)
                total += np.float64(e)
            denominator = {W}(total)
            for j in range(n):
                out[base + j * inner] = {W}(out[base + j * inner]) / denominator
        else:
            for j in range(n):
                if j != where:
                    total += np.float64(m.exp_difference({W}(x[base + j * inner]), best))
            log_sum = m.log1p(total)
            for j in range(n):
                out[base + j * inner] = (np.float64(x[base + j * inner]) - np.float64(best)) - log_sum
        q += cuda.gridsize(1)


@cuda.jit(cache=True)
def fastact_{op}_bwd_rows_{T}(dy, y, dx, rows, n):
    """One block per row: softmax dx = y (dy - sum(dy y)); log_softmax dx = dy - e^y sum(dy)."""
    red_s = cuda.shared.array({B}, types.float64)
    t = cuda.threadIdx.x
    lane = t % {WARP}
    warp = t // {WARP}
    r = np.int64(cuda.blockIdx.x)
    while r < rows:
        base = r * n
        total = 0.0
        j = np.int64(t)
        while j < n:
            total += registry.{op}_backward_term(dy[base + j], y[base + j])
            j += {B}
''' + _block_reduce(["total"], ["red_s"], _sum_combine) + '''
        j = np.int64(t)
        while j < n:
            dx[base + j] = registry.{op}_backward_element(dy[base + j], y[base + j], total)
            j += {B}
        cuda.syncthreads()
        r += cuda.gridDim.x


@cuda.jit(cache=True)
def fastact_{op}_bwd_partials_{T}(dy, y, part, rows, n, chunk, chunks):
    """Long rows, pass 1: per (row, chunk) the float64 sum of dy y (softmax) or dy (log_softmax)."""
    red_s = cuda.shared.array({B}, types.float64)
    t = cuda.threadIdx.x
    p = np.int64(cuda.blockIdx.x)
    while p < rows * chunks:
        r, lo, hi = h.chunk_of(p, chunks, chunk, n)
        total = 0.0
        j = lo + t
        while j < hi:
            total += registry.{op}_backward_term(dy[r * n + j], y[r * n + j])
            j += {B}
        red_s[t] = total
        cuda.syncthreads()
''' + _tree(["red_s[t] += red_s[t + s]"]) + '''
        if t == 0:
            part[p] = red_s[0]
        cuda.syncthreads()
        p += cuda.gridDim.x


@cuda.jit(cache=True)
def fastact_{op}_bwd_write_{T}(dy, y, dx, part, rows, n, chunk, chunks):
    """Long rows, pass 2: the row's sum from its partials, then each (row, chunk) block writes."""
    t = cuda.threadIdx.x
    p = np.int64(cuda.blockIdx.x)
    while p < rows * chunks:
        r, lo, hi = h.chunk_of(p, chunks, chunk, n)
        total = 0.0
        for c in range(chunks):
            total += part[r * chunks + c]
        j = r * n + lo + t
        while j < r * n + hi:
            dx[j] = registry.{op}_backward_element(dy[j], y[j], total)
            j += {B}
        p += cuda.gridDim.x


@cuda.jit(cache=True)
def fastact_{op}_bwd_columns_{T}(dy, y, dx, outer, n, inner):
    """One thread per row of an (outer, n, inner) array."""
    q = cuda.grid(1)
    while q < outer * inner:
        o = q // inner
        base = o * n * inner + (q - o * inner)
        total = 0.0
        for j in range(n):
            total += registry.{op}_backward_term(dy[base + j * inner], y[base + j * inner])
        for j in range(n):
            q_j = base + j * inner
            dx[q_j] = registry.{op}_backward_element(dy[q_j], y[q_j], total)
        q += cuda.gridsize(1)
'''

_OTHER_ROWS_SOURCE = '''
@cuda.jit(cache=True)
def fastact_maxout_fwd_{T}(x, out, outer, channels, pieces, inner):
    """One thread per output element of (outer, channels, inner); x is (outer, channels, pieces,
    inner): the max of each group, the first NaN winning."""
    q = cuda.grid(1)
    total = outer * channels * inner
    while q < total:
        i = q % inner
        oc = q // inner
        base = oc * pieces * inner + i
        best = {W}(x[base])
        for j in range(1, pieces):
            v = {W}(x[base + j * inner])
            best = v if (v > best or v != v) and best == best else best
        out[q] = best
        q += cuda.gridsize(1)


@cuda.jit(cache=True)
def fastact_maxout_bwd_{T}(dy, x, dx, outer, channels, pieces, inner):
    """dy goes to the first arg-max of each group (the first NaN if any), 0 elsewhere."""
    q = cuda.grid(1)
    total = outer * channels * inner
    while q < total:
        i = q % inner
        oc = q // inner
        base = oc * pieces * inner + i
        best = {W}(x[base])
        where = 0
        for j in range(1, pieces):
            v = {W}(x[base + j * inner])
            if (v > best or v != v) and best == best:
                best = v
                where = j
        g = {W}(dy[q])
        for j in range(pieces):
            dx[base + j * inner] = g if j == where else {W}(0)
        q += cuda.gridsize(1)


@cuda.jit(cache=True)
def fastact_prelu_fwd_{T}(x, weight, out, n, channels, inner):
    q = cuda.grid(1)
    while q < n:
        c = (q // inner) % channels
        out[q] = registry.leaky_relu_forward({W}(x[q]), {W}(weight[c]))
        q += cuda.gridsize(1)


@cuda.jit(cache=True)
def fastact_prelu_bwd_{T}(dy, x, weight, dx, part, outer, channels, inner, segment, segments):
    """dx, and per (channel, segment) block the float64 sum of dy x over x <= 0."""
    red_s = cuda.shared.array({B}, types.float64)
    t = cuda.threadIdx.x
    p = np.int64(cuda.blockIdx.x)
    per_channel = outer * inner
    while p < channels * segments:
        c = p // segments
        lo = (p - c * segments) * segment
        hi = min(lo + segment, per_channel)
        w = {W}(weight[c])
        total = 0.0
        k = lo + t
        while k < hi:
            o = k // inner
            q = (o * channels + c) * inner + (k - o * inner)
            g = {W}(dy[q])
            v = {W}(x[q])
            dx[q] = registry.leaky_relu_backward(g, v, w)
            total += np.float64(registry.prelu_grad_weight_term(g, v))
            k += {B}
        red_s[t] = total
        cuda.syncthreads()
''' + _tree(["red_s[t] += red_s[t + s]"]) + '''
        if t == 0:
            part[p] = red_s[0]
        cuda.syncthreads()
        p += cuda.gridDim.x


@cuda.jit(cache=True)
def fastact_prelu_bwd_weight_{T}(part, grad_weight, channels, segments):
    """grad_weight[c] = the sum of the channel's segments (one block per channel)."""
    red_s = cuda.shared.array({B}, types.float64)
    t = cuda.threadIdx.x
    c = np.int64(cuda.blockIdx.x)
    while c < channels:
        total = 0.0
        k = np.int64(t)
        while k < segments:
            total += part[c * segments + k]
            k += {B}
        red_s[t] = total
        cuda.syncthreads()
''' + _tree(["red_s[t] += red_s[t + s]"]) + '''
        if t == 0:
            grad_weight[c] = red_s[0]
        cuda.syncthreads()
        c += cuda.gridDim.x


@cuda.jit(cache=True)
def fastact_rrelu_fwd_{T}(x, out, noise, n, lower, width, key0, key1):
    """Training: slope lower + width u per element (u uniform from the element's index and the
    key), 1 where x > 0 or x is NaN (as PyTorch's noise); out = x * slope below 0."""
    q = cuda.grid(1)
    while q < n:
        v = {W}(x[q])
        slope = lower + width * h.uniform(key0, key1, q)
        noise[q] = slope if v <= {W}(0) else 1.0
        out[q] = registry.leaky_relu_forward(v, {W}(noise[q]))
        q += cuda.gridsize(1)
'''


def _rows_vector_source(lanes, fwd_block, bwd_block):
    """fwd_rowsv and bwd_rowsv: the block-per-row kernels of _ROWS_SOURCE for rows of a multiple
    of ``lanes`` elements in 16-byte-aligned arrays of the work type. Every global access is a
    16-byte vector (h.load_vector); the forward loads two vectors a thread before it uses either
    and keeps the row in shared memory as vectors (16-byte shared accesses: no bank conflicts).
    The same arithmetic as the scalar kernels, summed in another order. Blocks of ``fwd_block``
    and ``bwd_block`` threads (ROW_BLOCK_VECTOR) in place of ROW_BLOCK."""
    L = lanes

    def each(fmt, v="a", at="j"):
        return [fmt.format(v=f"{v}[{k}]", i=f"{L} * {at} + {k}") for k in range(L)]

    def vec(items):
        return "(" + ", ".join(items) + ",)"

    def indent(lines, n):
        return "".join(" " * n + line + "\n" for line in lines)

    keep = "best, where = h.max_first(best, where, {v}, {i})"
    load_pair = ["a = h.load_vector(x, base + j)", "b = h.load_vector(x, base + j + {B})",
                 "h.store_vector(row, j, a)", "h.store_vector(row, j + {B}, b)",
                 *each(keep), *each(keep, "b", "(j + {B})")]
    load_one = ["a = h.load_vector(x, base + j)", "h.store_vector(row, j, a)", *each(keep)]
    skip_where = sum(([f"if {L} * j + {k} != where:",
                       f"    total += np.float64(m.exp_difference(a[{k}], best))"]
                      for k in range(L)), [])
    rows_loop = ("    t = cuda.threadIdx.x\n"  # both kernels: a block's rows, 16-byte vector indices
                 "    lane = t % {WARP}\n"
                 "    warp = t // {WARP}\n"
                 f"    nv = n // {L}\n"
                 "    r = np.int64(cuda.blockIdx.x)\n"
                 "    while r < rows:\n"
                 "        base = r * nv\n")
    forward = (
        "\n@cuda.jit(cache=True)\n"
        "def fastact_{op}_fwd_rowsv_{T}(x, out, rows, n):\n"
        '    """fwd_rows with 16-byte accesses (_rows_vector_source)."""\n'
        "    row = cuda.shared.array(0, {WT}{ALIGN})\n"
        "    red_v = cuda.shared.array({B}, {WT})\n"
        "    red_i = cuda.shared.array({B}, types.int64)\n"
        "    red_s = cuda.shared.array({B}, types.float64)\n"
        + rows_loop +
        "        best = {W}(-np.inf)\n"
        "        where = n\n"
        "        j = np.int64(t)\n"
        "        while j + {B} < nv:\n"
        + indent(load_pair, 12) +
        "            j += 2 * {B}\n"
        "        if j < nv:\n"
        + indent(load_one, 12)
        + _block_reduce(["best", "where"], ["red_v", "red_i"], _max_first_combine, fwd_block) +
        "        total = 0.0\n"
        "        j = np.int64(t)\n"
        "        while j < nv:\n"
        "            a = h.load_vector(row, j)\n"
        "            if {LOG} == 0:\n"
        + indent([f"e{k} = m.exp_difference(a[{k}], best)" for k in range(L)], 16) +
        f"                h.store_vector(row, j, {vec(f'e{k}' for k in range(L))})\n"
        f"                total += {' + '.join(f'np.float64(e{k})' for k in range(L))}\n"
        "            else:\n"
        + indent(skip_where, 16) +
        "            j += {B}\n"
        + _block_reduce(["total"], ["red_s"], _sum_combine, fwd_block) +
        "        j = np.int64(t)\n"
        "        if {LOG} == 0:\n"
        "            denominator = {W}(total)\n"
        "            while j < nv:\n"
        "                a = h.load_vector(row, j)\n"
        f"                h.store_vector(out, base + j, {vec(each('{v} / denominator'))})\n"
        "                j += {B}\n"
        "        else:\n"
        "            log_sum = m.log1p(total)\n"
        "            while j < nv:\n"
        "                a = h.load_vector(row, j)\n"
        "                h.store_vector(out, base + j, "
        f"{vec(each('(np.float64({v}) - np.float64(best)) - log_sum'))})\n"
        "                j += {B}\n"
        "        cuda.syncthreads()\n"
        "        r += cuda.gridDim.x\n")
    def term(u, v):
        return " + ".join(f"registry.{{op}}_backward_term({u}[{k}], {v}[{k}])" for k in range(L))

    def element(u, v):
        return vec(f"registry.{{op}}_backward_element({u}[{k}], {v}[{k}], total)"
                   for k in range(L))
    zero = vec(["{W}(0)"] * L)
    backward = (
        "\n@cuda.jit(cache=True)\n"
        "def fastact_{op}_bwd_rowsv_{T}(dy, y, dx, rows, n):\n"
        '    """bwd_rows with 16-byte accesses (_rows_vector_source). Rows of up to two vectors a\n'
        "    thread keep them in registers: dy and y are read once (else twice, the second time\n"
        '    mostly from the L2)."""\n'
        "    red_s = cuda.shared.array({B}, types.float64)\n"
        + rows_loop +
        "        total = 0.0\n"
        "        j = np.int64(t)\n"
        "        j2 = j + {B}\n"
        f"        a = b = c = d = {zero}\n"
        "        if nv <= 2 * {B}:\n"
        "            if j2 < nv:\n"
        "                a = h.load_vector(dy, base + j)\n"
        "                b = h.load_vector(y, base + j)\n"
        "                c = h.load_vector(dy, base + j2)\n"
        "                d = h.load_vector(y, base + j2)\n"
        f"                total += ({term('a', 'b')}) + ({term('c', 'd')})\n"
        "            elif j < nv:\n"
        "                a = h.load_vector(dy, base + j)\n"
        "                b = h.load_vector(y, base + j)\n"
        f"                total += {term('a', 'b')}\n"
        "        else:\n"
        "            while j < nv:\n"
        "                a = h.load_vector(dy, base + j)\n"
        "                b = h.load_vector(y, base + j)\n"
        f"                total += {term('a', 'b')}\n"
        "                j += {B}\n"
        + _block_reduce(["total"], ["red_s"], _sum_combine, bwd_block) +
        "        j = np.int64(t)\n"
        "        if nv <= 2 * {B}:\n"
        "            if j < nv:\n"
        f"                h.store_vector(dx, base + j, {element('a', 'b')})\n"
        "            if j2 < nv:\n"
        f"                h.store_vector(dx, base + j2, {element('c', 'd')})\n"
        "        else:\n"
        "            while j < nv:\n"
        "                a = h.load_vector(dy, base + j)\n"
        "                b = h.load_vector(y, base + j)\n"
        f"                h.store_vector(dx, base + j, {element('a', 'b')})\n"
        "                j += {B}\n"
        "        cuda.syncthreads()\n"
        "        r += cuda.gridDim.x\n")
    return forward.replace("{B}", str(fwd_block)) + backward.replace("{B}", str(bwd_block))


def _row_kernels(op, work):
    """The kernels of _ROWS_SOURCE for op in softmax, log_softmax (or "other" for
    _OTHER_ROWS_SOURCE) as a dict by short name; for softmax and log_softmax also "threads", the
    block sizes (ROW_BLOCK_VECTOR when they were built) that fwd_rowsv and bwd_rowsv need."""
    if op == "other":
        return _row_kernels_built(op, work, 0, 0)
    return _row_kernels_built(op, work, ROW_BLOCK_VECTOR["forward"], ROW_BLOCK_VECTOR["backward"])


@functools.lru_cache(maxsize=None)
def _row_kernels_built(op, work, fwd_block, bwd_block):
    w, wt = _WORK[work]
    template = _ROWS_SOURCE if op != "other" else _OTHER_ROWS_SOURCE
    name = f"fastact_{op}_kernels_{work}"
    if op != "other":
        if min(fwd_block, bwd_block) < WARP or (fwd_block | bwd_block) % WARP:
            raise ValueError(f"ROW_BLOCK_VECTOR {ROW_BLOCK_VECTOR}: whole warps of {WARP} needed")
        template += _rows_vector_source(4 if work == "f32" else 2, fwd_block, bwd_block)
        name += f"_{fwd_block}_{bwd_block}"
    source = (template.replace("{op}", op).replace("{T}", work).replace("{WT}", wt)
              .replace("{W}", w).replace("{B}", str(ROW_BLOCK)).replace("{WARP}", str(WARP))
              .replace("{ALIGN}", "" if SIMULATOR else ", alignment=16")
              .replace("{LOG}", "1" if op == "log_softmax" else "0"))
    module = _load_module(name, source)
    kernels = {k[len("fastact_"):].replace(f"{op}_", "").rsplit("_", 1)[0]: getattr(module, k)
               for k in dir(module) if k.startswith("fastact_") and k.endswith("_" + work)}
    kernels["threads"] = {"forward": fwd_block, "backward": bwd_block}
    return kernels


def _plannable(recorder, result, target, given, used):
    """Whether a row-wise call can become a plan: one is being recorded, the kernel writes the
    result itself, and reads the arrays given (no contiguous or work-type copies)."""
    return (recorder is not None and target is result and len(given) == len(used)
            and all(u is g for u, g in zip(used, given)))


def _vector_rows(work, n, *arrays):
    """Whether the block-per-row kernels can take 16-byte accesses (fwd_rowsv, bwd_rowsv): every
    array of the work type, 16-byte aligned, rows of a multiple of the vector's lanes."""
    from ._cuda_jit import lanes
    wdt = np.dtype(np.float32 if work == "f32" else np.float64)
    return n % lanes(wdt) == 0 and all(a.dtype == wdt and a.ptr % 16 == 0 for a in arrays)


# --- launching ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _device_limits(device):
    if SIMULATOR:
        return 2, 2 * BLOCK
    with _device_context(device):
        d = cuda.get_current_device()
        return d.MULTIPROCESSOR_COUNT, d.MAX_THREADS_PER_MULTIPROCESSOR


_local = threading.local()  # .device: the device of the innermost _device_context


class _DeviceContext:
    """numba-cuda's context of ``device`` (cuda.gpus[device]), the device noted for _launch. When
    that device's primary context is already the current one (CuPy and PyTorch use the primary
    contexts too), numba-cuda's push and pop are skipped: one driver call instead of about four
    through numba-cuda's wrappers."""
    __slots__ = ("device", "context", "previous", "pushed")

    def __init__(self, device):
        self.device, self.context = device, cuda.gpus[device]

    def __enter__(self):
        self.pushed = not _primary_is_current(self.device)
        if self.pushed:
            self.context.__enter__()
        self.previous = getattr(_local, "device", None)
        _local.device = self.device
        return self

    def __exit__(self, *exc):
        _local.device = self.previous
        if self.pushed:
            self.context.__exit__(*exc)


_primary = {}  # device -> (its primary context's handle as an int, cuCtxGetCurrent), or None


def _primary_is_current(device):
    entry = _primary.get(device, False)
    if entry is False:
        try:
            from cuda.bindings import driver as cu
            with cuda.gpus[device]:
                entry = (int(cuda.current_context().handle), cu.cuCtxGetCurrent)
        except Exception:  # another numba-cuda or cuda-python: always push
            entry = None
        _primary[device] = entry
    if entry is None:
        return False
    handle, get_current = entry
    err, current = get_current()
    return not int(err) and int(current) == handle


def _device_context(device):
    if SIMULATOR or device is None:
        return contextlib.nullcontext()
    return _DeviceContext(device)


# --- launching without numba-cuda's dispatcher --------------------------------------------------
# A launch through the dispatcher (kernel[grid, block, stream, shared](*args)) types every
# argument, looks the overload up and converts each argument again (~40% of a call's ~110 us on an
# H100, NOTES); cuda.core's launch, which it ends in, took another ~40 us a call on an H100's host.
# After a kernel's first launch with some kinds of arguments, later launches with the same kinds on
# the same device pack the arguments as numba-cuda's _Kernel.launch does, into one buffer of
# 8-byte slots, and call the driver's cuLaunchKernel through ctypes. Only what fastact passes: 1-D
# arrays from _flat (_Flat), Python ints (int64), NumPy float32/float64 scalars and tuples of
# ints; anything else takes the dispatcher.

_fast = {}  # (dispatcher, device, argument kinds) -> _FastKernel, or False: the dispatcher


def _kind(a):
    t = type(a)
    if t is int or t is np.float32 or t is np.float64:
        return t
    if t is tuple:
        return (int,) * len(a) if all(type(v) is int for v in a) else None
    packed = getattr(a, "fastact_packed", None)  # a _flat view: (dtype, its arguments)
    return packed[0] if packed is not None else None


def _packer(ty):
    """(slot kinds, function(value, list)) for an argument of Numba type ``ty``: the function
    appends the values that numba-cuda passes for it (_Kernel._prepare_args), one per 8-byte slot,
    of the kinds given ('q' an integer or pointer, 'f' a float32, 'd' a float64); None where
    fastact does not pack that type itself."""
    from numba import types
    if isinstance(ty, types.Array) and ty.ndim == 1 and ty.layout in "CA":
        # meminfo, parent, size, itemsize, data, shape, strides (bytes), as numba-cuda's array
        return "q" * 7, lambda a, values: values.extend(a.fastact_packed[1])
    scalar = {types.int64: "q", types.float32: "f", types.float64: "d"}
    if ty in scalar:
        return scalar[ty], lambda a, values: values.append(a)
    if isinstance(ty, types.UniTuple) and ty.dtype == types.int64:
        return "q" * ty.count, lambda a, values: values.extend(a)
    return None


class _FastKernel:
    """One overload's CUfunction/CUkernel handle and how to pack its arguments; launch() packs
    them into a per-thread buffer (the ctypes call releases the GIL) and calls cuLaunchKernel."""
    __slots__ = ("kernel", "handle", "packers", "kinds", "struct", "slots")

    def __init__(self, kernel, handle, packers):
        import struct
        self.kernel, self.handle = kernel, handle  # kernel: keeps the handle's module loaded
        self.packers = [pack for _, pack in packers]
        self.kinds = "".join(kinds for kinds, _ in packers)
        self.struct = struct.Struct("<" + "".join("f4x" if k == "f" else k for k in self.kinds))
        self.slots = len(self.kinds)

    def slot_values(self, args):
        """The packed arguments as (kind, value) per slot, to compare with numba-cuda's."""
        return [(k, float(v) if k in "fd" else int(v))
                for k, v in zip(self.kinds, self.pack(args))]

    def pack(self, args):
        values = []
        for pack, a in zip(self.packers, args):
            pack(a, values)
        return values

    def launch(self, blocks, threads, shared, stream, args):
        buffer, pointers = _param_buffer(self.slots)
        self.struct.pack_into(buffer, 0, *self.pack(args))
        err = _driver().cuLaunchKernel(self.handle, blocks, 1, 1, threads, 1, 1, shared, stream,
                                       pointers, None)
        if err:
            raise RuntimeError(f"fastact: cuLaunchKernel failed: {_error_name(err)} ({err})")


_buffers = threading.local()  # .get(slots) -> (buffer, address of its array of slot pointers)


def _param_buffer(slots):
    import ctypes
    cache = getattr(_buffers, "cache", None)
    if cache is None:
        cache = _buffers.cache = {}
    entry = cache.get(slots)
    if entry is None:
        buffer = (ctypes.c_int64 * slots)()
        base = ctypes.addressof(buffer)
        pointers = (ctypes.c_void_p * slots)(*(base + 8 * i for i in range(slots)))
        entry = cache[slots] = (buffer, pointers, ctypes.addressof(pointers))
    return entry[0], entry[2]


@functools.lru_cache(maxsize=1)
def _driver():
    """libcuda's cuLaunchKernel (and cuGetErrorName) through ctypes."""
    import ctypes
    lib = ctypes.CDLL("libcuda.so.1")
    lib.cuLaunchKernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
    lib.cuLaunchKernel.restype = ctypes.c_int
    lib.cuGetErrorName.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    lib.cuGetErrorName.restype = ctypes.c_int
    return lib


def _error_name(err):
    import ctypes
    name = ctypes.c_char_p()
    _driver().cuGetErrorName(err, ctypes.byref(name))
    return (name.value or b"CUDA_ERROR_UNKNOWN").decode()


def _fast_entry(kernel, args, stream):
    """The _FastKernel of the overload that the dispatcher just launched, or False where fastact
    would pack its arguments differently from numba-cuda (checked on these arguments against the
    overload's own _prepare_args) or this numba-cuda or driver lacks a piece."""
    try:
        overload = kernel.overloads[tuple(kernel.typeof_pyval(a) for a in args)]
        if overload.debug or overload.cooperative or overload.extensions:
            return False
        packers = [_packer(t) for t in overload.argument_types]
        if None in packers:
            return False
        cufunc = overload._codelibrary.get_cufunc()
        fast = _FastKernel(cufunc.kernel, int(cufunc.handle), packers)
        theirs = []
        for t, a in zip(overload.argument_types, args):
            overload._prepare_args(t, a, _stream(stream), [], theirs)
        if fast.slot_values(args) != [_comparable(v) for v in theirs]:
            return False
        _driver()
        return fast
    except Exception:  # another numba-cuda, no libcuda.so.1: the dispatcher it is
        return False


def _comparable(value):
    """What numba-cuda passes for one slot, as (kind, value): a ctypes float or double by its
    kind, any integer (ctypes ints and pointers, NumPy ints) as 'q'."""
    import ctypes
    if isinstance(value, ctypes.c_float):
        return "f", float(value.value)
    if isinstance(value, ctypes.c_double):
        return "d", float(value.value)
    if isinstance(value, (int, np.integer)):
        return "q", int(value)
    if isinstance(value, ctypes.c_void_p):
        return "q", int(value.value or 0)
    return "q", int(getattr(value, "value", value))


def _forget_oldest(cache, keep=64):
    """Drop the oldest entries of a dict past ``keep`` (the views of _flat, one stream per
    handle seen)."""
    with _lock:
        while len(cache) > keep:
            cache.pop(next(iter(cache)), None)


_streams = {}


def _stream(ptr):
    """The numba Stream for a handle (0: the legacy default stream)."""
    if SIMULATOR:
        return 0  # the simulator has no external streams; it runs kernels synchronously
    stream = _streams.get(ptr)
    if stream is None:
        stream = _streams[ptr] = (cuda.legacy_default_stream() if ptr == 0
                                  else cuda.external_stream(ptr))
        _forget_oldest(_streams)
    return stream


_nvtx = None


def _range(label):
    """An NVTX range ``fastact.NAME.fwd`` around a call when the nvtx package is installed."""
    global _nvtx
    if _nvtx is None:
        try:
            import nvtx
            _nvtx = nvtx
        except ImportError:
            _nvtx = False
    return _nvtx.annotate(label, domain="fastact") if _nvtx else contextlib.nullcontext()


# --- repeated calls ------------------------------------------------------------------------------
# A call's checks and choices (dtypes, out=, overlap, layout, kernel, grid) depend only on what the
# arrays' __cuda_array_interface__ says (pointer, read-only flag, shape, strides, typestr), on their
# devices and on what is computed (the scalar function; the row-wise op, direction and axis), and,
# where out is None, on the new result's alignment and layout (checked again on every call). A
# call whose arrays say exactly what an earlier call's said, where that call wrote its result
# with one kernel over flat views of its arrays, repeats that call's plan: the current stream, an
# allocation where out is None, the launch (the parameters' values are read on every call).
# Module settings (ONE_VECTOR, ROW_BLOCK_VECTOR, ...) are read when a plan is made: clear _plans
# after changing one. fa.sigmoid(x, out=out) on
# 4096 float32 took ~36 us a call on an H100's host with the plan, ~98 us without (NOTES).

_plans = {}  # (what, per array: library, device, data, shape, strides, typestr) -> _Plan
_PLANS_KEPT = 1024


def _plan_key(what, inputs, out):
    """(key, data pointers of the arrays given), or (None, None) where an interface says what a
    key cannot hold (a mask, a list for a shape)."""
    parts, ptrs = [what], []
    try:
        for obj in (*inputs, out):
            if obj is None:
                parts.append(None)
                continue
            library = _library_of(obj)
            cai = library.interface(obj)
            if cai.get("mask") is not None:
                return None, None
            data = cai["data"]
            parts.append((library, library.device(obj), data, cai["shape"], cai.get("strides"),
                          cai["typestr"]))
            ptrs.append(int(data[0] or 0))
        key = tuple(parts)
        hash(key)
    except Exception:  # an interface fastact's checks will explain (on the general path)
        return None, None
    return key, ptrs


def _made(library, obj):
    """(address, what a plan's kernel choice read from a result it allocated: its alignment,
    shape, strides and typestr) from the result's interface."""
    cai = library.interface(obj)
    ptr = int(cai["data"][0] or 0)
    return ptr, (ptr % 16, tuple(cai["shape"]), cai.get("strides"), cai["typestr"])


class _Plan:
    """One launch of a kernel over flat views of a call's arrays (inputs, then the result), then
    ``tail``, then the call's parameters in the work type (where ``work`` is set)."""
    __slots__ = ("library", "device", "label", "kernel", "blocks", "threads", "shared", "counts",
                 "dtypes", "tail", "work", "alloc", "made")

    def __init__(self, like, label, kernel, grid, arrays, tail, work, alloc):
        self.library, self.device, self.label, self.kernel = like.library, like.device, label, kernel
        self.blocks, self.threads, self.shared = grid
        self.counts, self.dtypes = [a.size for a in arrays], [a.dtype for a in arrays]
        self.tail, self.work, self.alloc = list(tail), work, alloc  # alloc: (shape, dtype, order)
        # where the plan allocates its result (by like's library): that result as its interface
        # says, to compare each new allocation with
        self.made = _made(self.library, arrays[-1].obj)[1] if alloc is not None else None

    def launch(self, backend, stream, ptrs, params):
        args = [_flat_at(p, c, dt, self.device)
                for p, c, dt in zip(ptrs, self.counts, self.dtypes)] + self.tail
        if self.work is not None:
            args += _values(params, self.work)
        backend._launch(self.kernel, self.blocks, self.threads, stream, args, self.shared)

    def run(self, backend, like, out, ptrs, params):
        """(True, result), or (False, the new result) where out is None and the allocation is not
        as the plan's was (another alignment or layout: the caller takes the full path into it)."""
        stream = self.library.stream(like)
        with _range(self.label), _device_context(self.device):
            if out is None:
                shape, dtype, order = self.alloc
                out = self.library.empty(like, shape, dtype, order)
                ptr, made = _made(self.library, out)
                if made != self.made:
                    return False, out
                ptrs = ptrs + [ptr]
            self.launch(backend, stream, ptrs, params)
        return True, out


def _repeat(backend, key, ptrs, like, out, params):
    """(True, result) where a plan for key ran; else (False, out): the caller's out, or the new
    result a plan allocated unlike its own (another alignment or layout), for the full path."""
    plan = _plans.get(key) if key is not None else None
    if plan is None:  # (a plan: these arrays as before, the same checks passed, the same kernel)
        return False, out
    return plan.run(backend, like, out, ptrs, params)


class _Recorder:
    """Where a call may become a plan: its key and label, and whether it allocated its result
    (out=None). launch() launches as the plan will and keeps the plan."""

    def __init__(self, key, label, allocates):
        self.key, self.label, self.allocates = key, label, allocates

    def launch(self, backend, stream, kernel, grid, arrays, tail, alloc, params=(), work=None):
        """alloc: (shape, dtype, order) of the result as the plan allocates it."""
        plan = _Plan(arrays[0], self.label, kernel, grid, arrays, tail, work,
                     alloc if self.allocates else None)
        plan.launch(backend, stream, [a.ptr for a in arrays], params)
        with _lock:  # (the eviction iterates over the dict)
            _plans[self.key] = plan
            _forget_oldest(_plans, _PLANS_KEPT)


# --- the backend ----------------------------------------------------------------------------------

class Backend:
    """The CUDA backend: elementwise(...) and rowwise(...) on GPU arrays, called by the API layer."""
    name = "cuda"

    def __init__(self):
        if cuda is None:
            raise Unavailable(f"numba-cuda not installed ({_IMPORT_ERROR})")
        if getattr(cuda, "implementation", "") != "NVIDIA" and not SIMULATOR:
            raise Unavailable("numba-cuda not installed (this is Numba's deprecated built-in "
                              "CUDA target): pip install numba-cuda")
        if not SIMULATOR:
            try:  # loaded by numba-cuda at its first compile; probed here for a clear reason
                import numba.cuda.np.arrayobj  # noqa: F401
            except Exception as e:  # numba-cuda 0.30.4 with NumPy 2.5: np.row_stack is gone
                hint = "; numba-cuda 0.30 needs numpy<2.5" if "row_stack" in str(e) else ""
                raise Unavailable(f"numba-cuda does not work with NumPy {np.__version__} "
                                  f"({type(e).__name__}: {e}){hint}") from None
            try:
                available = cuda.is_available()
            except Exception as e:  # a broken driver install
                raise Unavailable(f"no CUDA device ({type(e).__name__}: {e})") from None
            if not available:
                raise Unavailable("no CUDA device (numba.cuda.is_available() is False: no GPU, "
                                  "or no CUDA driver)")
        self.last_stream = None  # the stream handle of the latest launch (for tests)

    # -- helpers --

    def _launch(self, kernel, blocks, threads, stream, args, shared=0):
        self.last_stream = stream
        device = None if SIMULATOR else getattr(_local, "device", None)
        if device is not None:
            kinds = tuple(_kind(a) for a in args)
            key = (kernel, device, kinds)
            entry = _fast.get(key) if None not in kinds else False
            if entry:
                entry.launch(int(blocks), int(threads), int(shared), stream, args)
                return
        args = [a.view() if type(a) is _Flat else a for a in args]
        kernel[int(blocks), int(threads), _stream(stream), int(shared)](*args)
        if device is not None and entry is None:
            _fast[key] = _fast_entry(kernel, args, stream)

    def _blocks(self, device, work, per_block):
        sms, threads_per_sm = _device_limits(device)
        resident = sms * max(1, threads_per_sm // BLOCK) * GRID_WAVES
        return max(1, min(-(-work // per_block), resident))

    def _row_blocks(self, device, count, threads=ROW_BLOCK):
        sms, threads_per_sm = _device_limits(device)
        return max(1, min(count, sms * max(1, threads_per_sm // threads) * GRID_WAVES))

    def _block_per_row(self, device, rows, threads):
        """Grid of the block-per-row softmax kernels: a block for every row, as PyTorch launches
        its row kernels, so that the blocks an SM holds are at different points of their rows
        (loading, reducing, writing) and some always have loads in flight; rows of 4096 float32
        at 2^28 on an H100: backward 2904 -> 3091 GB/s, forward 2750 -> 2854 (softmax), against
        blocks looping over rows in a grid of twice the resident blocks (NOTES). The kernels loop
        over rows all the same: the simulator keeps the smaller grid, so that tests reach the
        loop."""
        if SIMULATOR:
            return self._row_blocks(device, rows, threads)
        return max(1, min(rows, 2 ** 31 - 1))

    def _arrays(self, name, objs):
        arrays = [None if o is None else _Array(name, o) for o in objs]
        devices = {a.device for a in arrays if a is not None and a.device is not None}
        if len(devices) > 1:
            _fail(name, ValueError, f"arrays are on different devices {sorted(devices)}")
        return arrays

    def _check_out(self, name, out, shape, dtype):
        if out.shape != tuple(shape):
            _fail(name, ValueError, f"out has shape {out.shape}, expected {tuple(shape)}")
        if out.dtype != dtype:
            _fail(name, TypeError, f"out has dtype {out.dtype}, expected {dtype}")
        if out.readonly:
            _fail(name, ValueError, "out is read-only")
        if out.self_overlapping():
            _fail(name, ValueError, "out has overlapping elements (a zero stride)")

    def _empty(self, like, shape, dtype, order="C"):
        with _device_context(like.device):
            return _Array("", like.library.empty(like.obj, tuple(shape), np.dtype(dtype), order))

    def _map(self, scalar_fn, inputs, target, params, work, stream, device):
        """target = scalar_fn(*inputs, *params) elementwise (same shapes; any strides)."""
        n = target.size
        if n == 0:
            return
        values = _values(params, work)
        kernel, blocks = self._flat_kernel(scalar_fn, inputs, target, work, device)
        if kernel is not None:
            args = [_flat(a, 0, n) for a in (*inputs, target)] + [n] + values
        else:
            tag = _tag(inputs, work)
            shape, strides = _collapse(target.shape, [a.strides for a in (*inputs, target)])
            kernel = _elementwise_kernel(scalar_fn, tag, len(inputs), work, len(shape))
            args = []
            for a, st in zip((*inputs, target), strides):
                args += _strided_operand(a, shape, st)
            args += [tuple(shape), n] + values
            blocks = self._blocks(device, n, BLOCK)
        self._launch(kernel, blocks, BLOCK, stream, args)

    def _flat_kernel(self, scalar_fn, inputs, target, work, device):
        """(kernel, blocks) for arrays contiguous in one common order, whose kernel takes
        (*flat arrays, n, *values); (None, None) for the strided kernel."""
        n = target.size
        if not any(all(a.is_contiguous(o) for a in (*inputs, target)) for o in ("C", "F")):
            return None, None
        from ._cuda_jit import lanes as vector_lanes
        lanes = vector_lanes(target.dtype)
        tag = _tag(inputs, work)
        if lanes and all(a.dtype == target.dtype and a.ptr % 16 == 0
                         for a in (*inputs, target)) and work == _TAGS.get(target.dtype):
            # one block per BLOCK * unroll vectors, not a grid-stride grid of a few waves: at 2^28
            # float32 on an H100 this took the forwards from 89-94% of the copy (2 waves) to
            # 99-100% (NOTES)
            unroll = 1 if getattr(scalar_fn, "__name__", "") in ONE_VECTOR.get(
                lanes, ()) else VECTOR_UNROLL
            return (_elementwise_kernel(scalar_fn, tag, len(inputs), work, 0, lanes, unroll),
                    min(-(-n // (lanes * BLOCK * unroll)), 2 ** 31 - 1))
        return (_elementwise_kernel(scalar_fn, tag, len(inputs), work, 0),
                self._blocks(device, n, BLOCK * UNROLL))

    def _contiguous(self, array, stream, dtype=None):
        """array itself when C-contiguous (and of dtype), else a C-contiguous copy."""
        dtype = np.dtype(dtype or array.dtype)
        if array.is_contiguous("C") and array.dtype == dtype:
            return array
        copy = self._empty(array, array.shape, dtype)
        work = "f64" if dtype.itemsize == 8 or array.dtype.itemsize == 8 else "f32"
        self._map(None, [array], copy, [], work, stream, array.device)
        return copy

    def _target(self, name, out, inputs, like, shape, dtype):
        """(result, target): the caller's out= (or a new array) and where the kernel writes, a
        C-contiguous scratch array when out cannot be written directly."""
        result = out if out is not None else self._empty(like, shape, dtype)
        if result.is_contiguous("C") and not any(
                _overlaps(result, a) and not _identical(result, a) for a in inputs):
            return result, result
        return result, self._empty(like, shape, dtype)

    # -- the interface --

    def elementwise(self, name, scalar_fn, inputs, params, out):
        key, ptrs = _plan_key(scalar_fn, inputs, out)
        done, result = _repeat(self, key, ptrs, inputs[0], out, params)
        if done:
            return result
        out, key = result, key if result is out else None
        from .._api import compute_dtype, result_dtype
        arrays = self._arrays(name, [*inputs, out])
        inputs, out = arrays[:-1], arrays[-1]
        shape = inputs[0].shape
        for a in inputs[1:]:
            if a.shape != shape:
                _fail(name, ValueError, f"arrays have different shapes {shape} and {a.shape}")
        dtype = result_dtype(name, *(a.dtype for a in inputs))
        work = "f32" if compute_dtype(dtype).itemsize == 4 else "f64"
        if out is not None:
            self._check_out(name, out, shape, dtype)
        like = inputs[0]
        stream = like.library.stream(like.obj)
        direction = "fwd" if scalar_fn.__name__.endswith("forward") else "bwd"
        label = f"fastact.{name}.{direction}"
        with _range(label), _device_context(like.device):
            order = "F" if all(a.is_contiguous("F") and not a.is_contiguous("C")
                               for a in inputs) else "C"
            if out is None:
                result = target = self._empty(like, shape, dtype, order)
            else:
                result = target = out
                if any(_overlaps(out, a) and not _identical(out, a) for a in inputs):
                    target = self._empty(like, shape, dtype)
            kernel, blocks = self._flat_kernel(scalar_fn, inputs, target, work, like.device)
            if key is not None and target is result and kernel is not None and result.size:
                _Recorder(key, label, out is None).launch(
                    self, stream, kernel, (blocks, BLOCK, 0), [*inputs, result], [result.size],
                    (shape, dtype, order), params, work)
            else:
                self._map(scalar_fn, inputs, target, params, work, stream, like.device)
            if target is not result:
                self._map(None, [target], result, [], work, stream, like.device)
        return result.obj

    def rowwise(self, name, direction, arrays, params, out):
        rows = name not in ("prelu", "maxout", "rrelu")  # softmax, log_softmax
        key, ptrs = _plan_key((name, direction, tuple(sorted(params.items()))), arrays,
                              out) if rows else (None, None)
        done, result = _repeat(self, key, ptrs, arrays[0], out, params)
        if done:
            return result
        out, key = result, key if result is out else None
        from .._api import compute_dtype, result_dtype
        arrays = self._arrays(name, [*arrays, out])
        arrays, out = arrays[:-1], arrays[-1]
        like = arrays[0]
        stream = like.library.stream(like.obj)
        label = f"fastact.{name}.{'fwd' if direction == 'forward' else 'bwd'}"
        method = getattr(self, f"_rows_{direction}" if rows else f"_{name}_{direction}")
        extra = {}
        if key is not None:
            extra["recorder"] = _Recorder(key, label, out is None)
        with _range(label), _device_context(like.device):
            result = method(name, arrays, params, out, stream, result_dtype, compute_dtype,
                            **extra)
        if isinstance(result, tuple):
            return tuple(r.obj for r in result)
        return result.obj

    # -- softmax, log_softmax --

    def _rows_geometry(self, name, arrays, params):
        from .._rowwise import _axis
        shape = arrays[0].shape
        for a in arrays[1:]:
            if a.shape != shape:
                _fail(name, ValueError, f"arrays have different shapes {shape} and {a.shape}")
        axis = _axis(name, params["axis"], len(shape))
        if not shape:
            return 1, 1, 1
        return (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))

    def _finish(self, inputs, result, target, work, stream):
        if target is not result:
            self._map(None, [target], result, [], work, stream, result.device)
        return result

    def _rows_forward(self, name, arrays, params, out, stream, result_dtype, compute_dtype,
                      recorder=None):
        outer, n, inner = self._rows_geometry(name, arrays, params)
        x = arrays[0]
        dtype = result_dtype(name, x.dtype)
        work = "f32" if compute_dtype(dtype).itemsize == 4 else "f64"
        if out is not None:
            self._check_out(name, out, x.shape, dtype)
        result, target = self._target(name, out, arrays, x, x.shape, dtype)
        if x.size == 0:
            return result
        x = self._contiguous(x, stream)
        k = _row_kernels(name, work)
        xa, ta = _flat(x, 0, x.size), _flat(target, 0, target.size)
        rows = outer * inner
        if inner > 1 or n <= THREAD_PER_ROW_MAX:
            self._launch(k["fwd_columns"], self._blocks(x.device, rows, BLOCK), BLOCK, stream,
                         (xa, ta, outer, n, inner))
        elif n * (4 if work == "f32" else 8) <= SMEM_ROW_BYTES:
            vector = _vector_rows(work, n, x, target)
            threads = k["threads"]["forward"] if vector else ROW_BLOCK
            kernel = k["fwd_rowsv" if vector else "fwd_rows"]
            grid = (self._block_per_row(x.device, rows, threads), threads,
                    n * (4 if work == "f32" else 8))
            if _plannable(recorder, result, target, arrays, [x]):
                recorder.launch(self, stream, kernel, grid, [x, target], [rows, n],
                                (x.shape, dtype, "C"))
            else:
                self._launch(kernel, grid[0], threads, stream, (xa, ta, rows, n), shared=grid[2])
        else:
            chunks = -(-n // CHUNK)
            wdt = np.float32 if work == "f32" else np.float64
            best = self._empty(x, (rows * chunks,), wdt)
            where = self._empty(x, (rows * chunks,), np.int64)
            others = self._empty(x, (rows * chunks,), np.float64)
            row_best = self._empty(x, (rows,), wdt)
            row_others = self._empty(x, (rows,), np.float64)
            parts = [_flat(a, 0, a.size) for a in (best, where, others)]
            rb, ro = _flat(row_best, 0, rows), _flat(row_others, 0, rows)
            pairs = self._row_blocks(x.device, rows * chunks)
            self._launch(k["fwd_partials"], pairs, ROW_BLOCK, stream,
                         (xa, *parts, rows, n, CHUNK, chunks))
            self._launch(k["fwd_combine"], self._row_blocks(x.device, rows), ROW_BLOCK, stream,
                         (*parts, rb, ro, rows, chunks))
            self._launch(k["fwd_write"], pairs, ROW_BLOCK, stream,
                         (xa, ta, rb, ro, rows, n, CHUNK, chunks))
        return self._finish(arrays, result, target, work, stream)

    def _rows_backward(self, name, arrays, params, out, stream, result_dtype, compute_dtype,
                       recorder=None):
        outer, n, inner = self._rows_geometry(name, arrays, params)
        dy, y = arrays
        dtype = result_dtype(name, dy.dtype, y.dtype)
        work = "f32" if compute_dtype(dtype).itemsize == 4 else "f64"
        if out is not None:
            self._check_out(name, out, y.shape, dtype)
        result, target = self._target(name, out, arrays, dy, y.shape, dtype)
        if y.size == 0:
            return result
        wdt = np.float32 if work == "f32" else np.float64
        # the backward kernels do their arithmetic in the inputs' type: give them the work type
        dy, y = (self._contiguous(a, stream, wdt if a.dtype != wdt else None) for a in (dy, y))
        k = _row_kernels(name, work)
        args = [_flat(a, 0, a.size) for a in (dy, y, target)]
        rows = outer * inner
        if inner > 1 or n <= THREAD_PER_ROW_MAX:
            self._launch(k["bwd_columns"], self._blocks(y.device, rows, BLOCK), BLOCK, stream,
                         (*args, outer, n, inner))
        elif n * (4 if work == "f32" else 8) <= SMEM_ROW_BYTES:
            vector = _vector_rows(work, n, dy, y, target)
            threads = k["threads"]["backward"] if vector else ROW_BLOCK
            kernel = k["bwd_rowsv" if vector else "bwd_rows"]
            grid = (self._block_per_row(y.device, rows, threads), threads, 0)
            if _plannable(recorder, result, target, arrays, [dy, y]):
                recorder.launch(self, stream, kernel, grid, [dy, y, target], [rows, n],
                                (y.shape, dtype, "C"))
            else:
                self._launch(kernel, grid[0], threads, stream, (*args, rows, n))
        else:
            chunks = -(-n // CHUNK)
            part = self._empty(y, (rows * chunks,), np.float64)
            pa = _flat(part, 0, part.size)
            pairs = self._row_blocks(y.device, rows * chunks)
            self._launch(k["bwd_partials"], pairs, ROW_BLOCK, stream,
                         (args[0], args[1], pa, rows, n, CHUNK, chunks))
            self._launch(k["bwd_write"], pairs, ROW_BLOCK, stream,
                         (*args, pa, rows, n, CHUNK, chunks))
        return self._finish(arrays, result, target, work, stream)

    # -- maxout --

    def _maxout_forward(self, name, arrays, params, out, stream, result_dtype, compute_dtype):
        from .._rowwise import maxout
        x = arrays[0]
        view, out_shape = maxout._geometry(x, params["pieces"], params["axis"])
        dtype = result_dtype(name, x.dtype)
        work = "f32" if compute_dtype(dtype).itemsize == 4 else "f64"
        if out is not None:
            self._check_out(name, out, out_shape, dtype)
        result, target = self._target(name, out, arrays, x, out_shape, dtype)
        if target.size:
            x = self._contiguous(x, stream)
            self._launch(_row_kernels("other", work)["maxout_fwd"],
                         self._blocks(x.device, target.size, BLOCK), BLOCK, stream,
                         (_flat(x, 0, x.size), _flat(target, 0, target.size), *view))
        return self._finish(arrays, result, target, work, stream)

    def _maxout_backward(self, name, arrays, params, out, stream, result_dtype, compute_dtype):
        from .._rowwise import maxout
        dy, x = arrays
        view, out_shape = maxout._geometry(x, params["pieces"], params["axis"])
        if dy.shape != out_shape:
            _fail(name, ValueError, f"grad_output has shape {dy.shape}, expected {out_shape}")
        dtype = result_dtype(name, dy.dtype, x.dtype)
        work = "f32" if compute_dtype(dtype).itemsize == 4 else "f64"
        if out is not None:
            self._check_out(name, out, x.shape, dtype)
        result, target = self._target(name, out, arrays, dy, x.shape, dtype)
        if target.size:
            dy, x = self._contiguous(dy, stream), self._contiguous(x, stream)
            self._launch(_row_kernels("other", work)["maxout_bwd"],
                         self._blocks(x.device, dy.size, BLOCK), BLOCK, stream,
                         (_flat(dy, 0, dy.size), _flat(x, 0, x.size),
                          _flat(target, 0, target.size), *view))
        return self._finish(arrays, result, target, work, stream)

    # -- prelu --

    def _prelu_geometry(self, name, x, weight):
        from .._rowwise import _channel_rows
        flat = _FlatShape(weight.size)
        rows, inner = _channel_rows(name, x, flat)
        return rows // weight.size if weight.size else 0, weight.size, inner

    def _prelu_forward(self, name, arrays, params, out, stream, result_dtype, compute_dtype):
        x, weight = arrays
        outer, channels, inner = self._prelu_geometry(name, x, weight)
        dtype = result_dtype(name, x.dtype, weight.dtype)
        work = "f32" if compute_dtype(dtype).itemsize == 4 else "f64"
        if out is not None:
            self._check_out(name, out, x.shape, dtype)
        # (weight too: a weight inside out would be read while out is written)
        result, target = self._target(name, out, [x, weight], x, x.shape, dtype)
        if target.size:
            x, w = self._contiguous(x, stream), self._contiguous(weight, stream)
            self._launch(_row_kernels("other", work)["prelu_fwd"],
                         self._blocks(x.device, x.size, BLOCK), BLOCK, stream,
                         (_flat(x, 0, x.size), _flat(w, 0, w.size), _flat(target, 0, x.size),
                          x.size, channels, inner))
        return self._finish(arrays, result, target, work, stream)

    def _prelu_backward(self, name, arrays, params, out, stream, result_dtype, compute_dtype):
        dy, x, weight = arrays
        if dy.shape != x.shape:
            _fail(name, ValueError, f"arrays have different shapes {dy.shape} and {x.shape}")
        outer, channels, inner = self._prelu_geometry(name, x, weight)
        dtype = result_dtype(name, dy.dtype, x.dtype, weight.dtype)
        work = "f32" if compute_dtype(dtype).itemsize == 4 else "f64"
        weight_dtype = result_dtype(name, weight.dtype)
        if out is not None:
            self._check_out(name, out, x.shape, dtype)
        result, target = self._target(name, out, [dy, x, weight], dy, x.shape, dtype)
        grad_weight = self._empty(weight, weight.shape, weight_dtype)
        per_channel = outer * inner
        segments = max(1, -(-per_channel // SEGMENT))
        part = self._empty(x, (channels * segments,), np.float64)
        dy, x, w = (self._contiguous(a, stream) for a in (dy, x, weight))
        k = _row_kernels("other", work)
        pa = _flat(part, 0, part.size)
        self._launch(k["prelu_bwd"], self._row_blocks(x.device, channels * segments), ROW_BLOCK,
                     stream, (_flat(dy, 0, dy.size), _flat(x, 0, x.size), _flat(w, 0, w.size),
                              _flat(target, 0, target.size), pa, outer, channels, inner,
                              SEGMENT, segments))
        self._launch(k["prelu_bwd_weight"], self._row_blocks(x.device, channels), ROW_BLOCK,
                     stream, (pa, _flat(grad_weight, 0, channels), channels, segments))
        self._finish(arrays, result, target, work, stream)
        return result, grad_weight

    # -- rrelu (training) --

    def _rrelu_forward(self, name, arrays, params, out, stream, result_dtype, compute_dtype):
        x = arrays[0]
        dtype = result_dtype(name, x.dtype)
        work = "f32" if compute_dtype(dtype).itemsize == 4 else "f64"
        if out is not None:
            self._check_out(name, out, x.shape, dtype)
        seed = int(np.random.default_rng(params.get("generator")).integers(0, 2**63))
        result, target = self._target(name, out, [x], x, x.shape, dtype)
        noise = self._empty(x, x.shape, dtype)
        if x.size:
            x = self._contiguous(x, stream)
            lower, upper = params["lower"], params["upper"]
            self._launch(_row_kernels("other", work)["rrelu_fwd"],
                         self._blocks(x.device, x.size, BLOCK), BLOCK, stream,
                         (_flat(x, 0, x.size), _flat(target, 0, x.size), _flat(noise, 0, x.size),
                          x.size, np.float64(lower), np.float64(upper - lower),
                          np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)))
        self._finish(arrays, result, target, work, stream)
        return (result, noise) if params.get("return_noise") else result


class _FlatShape:
    """The size of prelu's weight, as _rowwise._channel_rows reads it."""

    def __init__(self, size):
        self.size = size
