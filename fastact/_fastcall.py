"""The per-call fast path: a small CPython extension (``_fastcall.c``) that takes the common
elementwise call, ``fa.NAME(x, ..., out=None)`` / ``fa.NAME.backward(dy, saved, ..., out=None)``
with parameters used before, on same-shape contiguous float32/float64 NumPy arrays, straight to
the compiled kernel, and splits a large one over fastact's thread pool itself (the API's Python
checks, the backend's dispatch and Numba's argument typing cost a call ~2.5 us, PyTorch's 1.2;
_threads.run's hand-off ~7 us, the extension's ~2). Any other call, and any call before its
kernel was compiled by the Python path, goes the Python way: the extension answers
NotImplemented before it touches anything.

Built on first use into the cache directory (``fastcall-<key>``, beside the C backend's), in a
background thread: the calls meanwhile take the Python path, and no call waits for a compiler.
``FASTACT_FASTCALL=0`` turns it off; without a compiler, Python.h or NumPy's headers it stays
off (``status()`` says why) and everything works as before, 2-5 us a call slower.
"""
import os
import sys
import threading

import numpy as np

from . import _backends, _threads, registry
from ._env import flag
from .bindings import _build
from .kernels.math import STREAM_BYTES

MODULE = "_fastact_call"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fastcall.c")
BACKENDS = ("cpu", "c")  # the extension's backend indexes
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)

_module = None  # the loaded extension
_reason = "not loaded yet"
_builder = None  # the background build's thread
_lock = threading.Lock()
_accepted = {}  # backend name -> index, read by the extension on every call (configure)


def enabled():
    return flag("FASTACT_FASTCALL", True)


def key():
    """16 hex digits from the source, the Python ABI, NumPy's version (its headers) and CC."""
    with open(SOURCE, "rb") as f:
        data = f.read()
    data += (f"|{sys.implementation.cache_tag}{_build.EXT_SUFFIX}|{np.__version__}"
             f"|{os.environ.get('CC', '')}").encode()
    return _build.checksum(data)


def build_dir():
    return os.path.join(_build.cache_root(), "fastcall-" + key())


def module_path(directory=None):
    return os.path.join(directory or build_dir(), MODULE + _build.EXT_SUFFIX)


def build(directory=None):
    """Compile the extension into directory (unless there) and return its path; BuildError if
    it cannot be built."""
    directory = directory or build_dir()
    path = module_path(directory)
    return _build.build_locked(directory, path, lambda d: _compile(d, path))


def _compile(directory, path):
    import shutil
    import tempfile
    if os.name != "posix":
        raise _build.BuildError("the fast path is built with gcc/clang on POSIX systems")
    cc = _build.compiler()
    work = tempfile.mkdtemp(prefix="build-", dir=directory)
    try:
        target = os.path.join(work, MODULE + _build.EXT_SUFFIX)
        code, output = _build._run([*cc, "-O2", "-fPIC", "-std=gnu11", *_build.shared_flags(),
                                    f"-I{_build._python_include()}", f"-I{np.get_include()}",
                                    SOURCE, "-o", target], work)
        if code:
            raise _build.BuildError(f"compiling {os.path.basename(SOURCE)} failed: "
                                    f"{output[-2000:]}")
        os.replace(target, path)  # atomic: a process never loads half a file
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load_from(path):
    module = _build.load_extension("fastact." + MODULE, path)
    environ, env_key = _backends._ENVIRON, _backends._ENV_KEY
    if not isinstance(environ, dict) or not isinstance(env_key, bytes):
        raise _build.BuildError("os.environ is not CPython's (no dict of bytes behind it)")
    for index, name in enumerate(BACKENDS):
        _accepted[name] = _accepted[name.encode()] = index
    configure(module)
    return module


def configure(module):
    """Hand the extension what it reads on every call: the backend choice's variables, the split
    and stream sizes, and the thread pool's module and layout (fastact/_threads.py). Its chunks
    are at least FAST_SPLIT_SIZE / 2 elements (times the split cost), half of run()'s
    PARALLEL_THRESHOLD, as its split sizes are half of run()'s."""
    t = _threads
    module.configure(_backends._current, _backends._ENVIRON, _backends._ENV_KEY, _accepted,
                     t.FAST_SPLIT_SIZE, STREAM_BYTES, t, t.FAST_SPLIT_SIZE // 2, t._CHUNK_ALIGN,
                     (t.POOL_STRIDE, t.POOL_TASK, t.POOL_TASK_ARGS, t.POOL_START, t.POOL_STOP,
                      t.POOL_DONE, t.POOL_ASLEEP, t.POOL_CLAIM, t.POOL_TAKE_BACK))


def _background_build(path):
    global _module, _reason
    try:
        build(os.path.dirname(path))
        module = _load_from(path)
    except Exception as e:  # no compiler, no headers, a failed compile: the Python path stays
        _reason = f"{type(e).__name__}: {e}"
        return
    _module = module
    _reason = None


def load(wait=False):
    """The extension, or None while it is being built (or when it cannot be: status())."""
    global _module, _reason, _builder
    if _module is not None or not enabled():
        return _module
    with _lock:
        if _module is None and _builder is None:
            try:
                path = module_path()  # (reads the source: absent where the package was frozen)
                if os.path.exists(path):
                    _module = _load_from(path)
                    _reason = None
                    return _module
                _reason = "being built"
                _builder = threading.Thread(target=_background_build, args=(path,),
                                            name="fastact-fastcall-build")
                _builder.start()  # not a daemon: an exit waits for the compiler (~0.2 s)
            except Exception as e:  # noqa: BLE001  e.g. no thread at interpreter shutdown
                _module, _reason = None, f"{type(e).__name__}: {e}"
                _builder = False  # never again in this process
                return None
        builder = _builder
    if wait and builder:
        builder.join()
    return _module


def _after_fork_in_child():
    """A build in the parent's thread did not come along: the child may load or build anew."""
    global _builder, _reason, _lock
    _lock = threading.Lock()
    if _module is None and isinstance(_builder, threading.Thread):
        _builder, _reason = None, "not loaded yet"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def status():
    """None when the fast path is on, else why not."""
    if not enabled():
        return "turned off (FASTACT_FASTCALL=0)"
    return _reason


class Entries:
    """An activation's two fast entries (forward: one array; backward: two), made when the
    extension is there; register() gives them their kernels as the Python path compiles them."""

    def __init__(self, module, values):
        self.forward = module.Map(1, values)
        self.backward = module.Map(2, values)


def _loaded():
    """The extension; None while it is being built, False where it is off or cannot be built
    (the Python path for good)."""
    module = load()
    if module is None:
        return None if _reason == "being built" and enabled() else False
    return module


def entries(values):
    """An activation's Entries, or _loaded()'s None / False."""
    module = _loaded()
    return Entries(module, values) if module else module


def _in_force(entry, dtype):
    """(the backend in force, its index, dtype's index) where entry has no kernel for them yet
    and the extension serves that backend and dtype; else None."""
    if dtype is _F32:
        index = 0
    elif dtype is _F64:
        index = 1
    else:
        return None
    name = _backends.current()
    if name not in ("auto", "cpu", "c"):
        return None
    backend = _backends.get(name)
    which = BACKENDS.index(backend.name)
    if name == "auto" and None not in _accepted:  # "auto" is the first available: fixed
        _accepted[None] = _accepted["auto"] = _accepted[b"auto"] = which
    spelling = _backends.environment_spelling()
    if spelling is not None and spelling not in _accepted and len(_accepted) < 64:
        _accepted[spelling] = which  # FASTACT_BACKEND=" C ": c's calls, as "c" takes them
    return None if entry.has(which, index) else (backend, which, index)


def register(entry, scalar_fn, n_inputs, dtype):
    """After a Python-path call with the default parameters: give entry this dtype's kernel of
    the backend in force, if that backend has it compiled."""
    found = _in_force(entry, dtype)
    if found is None:
        return
    backend, which, index = found
    table = backend.fast_table(scalar_fn, n_inputs, dtype)
    if table is not None:
        entry.set(which, index, table, registry.split_cost(scalar_fn.__name__))


# Rows kinds (_fastcall.c): softmax-like forward (x, out), backward (dy, y, out), prelu forward
ROWS_FORWARD, ROWS_BACKWARD, ROWS_PRELU = 0, 1, 2


def rows_entry(kind, cost=1, below=0, short=0, short_size=0):
    """A row kernel's fast entry (_fastcall.c's Rows: calls split from FAST_SPLIT_SIZE / cost
    elements; prelu's: rows of `below` elements or more, or of `short` or more in arrays of up
    to `short_size`), or _loaded()'s None / False."""
    module = _loaded()
    return module.Rows(kind, cost, below, short, short_size) if module else module


def register_rows(entry, kernel, dtype):
    """After a Python-path call of the row kernel ``kernel`` on x of dtype: give entry the
    backend in force's compiled kernel for it."""
    found = _in_force(entry, dtype)
    if found is None:
        return
    backend, which, index = found
    task = backend.fast_row_task(kernel, dtype)
    if task is not None:
        entry.set(which, index, task)
