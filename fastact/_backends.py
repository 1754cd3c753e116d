"""Backend choice: "auto" | "cpu" (Numba) | "c" (cffi) | "cuda" (numba-cuda), and what is
available, with the reason when not.

``fa.backend(name)`` is a context manager (per thread and per asyncio task, through contextvars);
``FASTACT_BACKEND`` sets the default. "auto" takes, for NumPy arrays, the first available of
cpu, c; GPU arrays always go to cuda.

A CPU backend is an object with
    name: str
    map(scalar_fn, inputs, out, params)
        out[i] = scalar_fn(*(a[i] for a in inputs), *params); inputs and out are 1-D C-contiguous
        arrays of one dtype (float32 or float64), params a tuple of scalars of that dtype;
        scalar_fn is a function of fastact.registry (the C backend maps it by __name__).
    rows(name, args, n_rows, row_cost)
        the loop fastact.kernels.loops.<name>(*args, start, stop) over [0, n_rows); row_cost is
        the work per row in elements (for splitting over threads).
"""
import contextlib
import contextvars
import os

NAMES = ("auto", "cpu", "c", "cuda")
_ORDER = ("cpu", "c")
_ALL = ("cpu", "c", "cuda")


class Unavailable(Exception):
    """Raised by a backend's constructor; its message is the reason fa.backends() reports."""


_current = contextvars.ContextVar("fastact_backend", default=None)
_loaded = {}
_reasons = {}


def _check(name):
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")
    return name


try:  # CPython's dict behind os.environ: os.environ.get encodes the key on every call (0.57 us
    _ENVIRON, _ENV_KEY = os.environ._data, os.environ.encodekey("FASTACT_BACKEND")  # -> 0.04 us)
    _decode = os.environ.decodevalue
except AttributeError:  # another Python: the public mapping
    _ENVIRON, _ENV_KEY, _decode = os.environ, "FASTACT_BACKEND", str


def current():
    """The backend name in force here ("auto" unless set). FASTACT_BACKEND is read on each call,
    so a change to os.environ takes effect at once."""
    name = _current.get()
    if name:
        return name
    value = _ENVIRON.get(_ENV_KEY)
    if not value:
        return "auto"
    value = _decode(value)
    return value if value in NAMES else _from_environment(value)


def environment_spelling():
    """FASTACT_BACKEND's raw value (as os.environ holds it) where it is in force and spelled
    otherwise than a backend's name (" C ", "CPU"), else None: the fast path (_fastcall) learns it
    as that backend's, or each such call would take the Python path."""
    if _current.get():
        return None
    value = _ENVIRON.get(_ENV_KEY)
    return None if value is None or _decode(value) in NAMES else value


def _from_environment(value):
    """FASTACT_BACKEND's name with spaces and case taken off (" C" is c), or a ValueError that
    names the variable (it read as if the caller had passed the name to fa.backend)."""
    name = value.strip().lower()
    if name not in NAMES:
        raise ValueError(f"FASTACT_BACKEND={value!r} names no backend; choose one of "
                         f"{', '.join(NAMES)}")
    return name


@contextlib.contextmanager
def backend(name):
    """Run the enclosed fastact calls on this backend: with fa.backend("cpu"): ... The choice
    holds in this thread (and asyncio task) only, as a context variable: threads started inside
    the block, such as a ThreadPoolExecutor's workers, run on the default (FASTACT_BACKEND, else
    "auto") unless they enter a block of their own."""
    token = _current.set(_check(name))
    try:
        yield
    finally:
        _current.reset(token)


def _load(name):
    if name in _loaded or name in _reasons:
        return _loaded.get(name)
    try:
        if name == "cpu":
            from .kernels import cpu as module
        elif name == "c":
            from .bindings import backend as module
        else:
            from .kernels import cuda as module
        _loaded[name] = module.Backend()
    except Unavailable as e:
        _reasons[name] = str(e)
    except ImportError as e:
        _reasons[name] = f"{e.name or 'a module'} not installed ({e})"
    except Exception as e:  # a broken install must not break the other backends
        _reasons[name] = f"failed to load: {type(e).__name__}: {e}"
    return _loaded.get(name)


def get(name=None):
    """The backend object for the current choice (or name); RuntimeError naming why if not
    available."""
    name = name or current()
    if name == "auto" and _ORDER[0] in _loaded:  # the common case, kept short
        return _loaded[_ORDER[0]]
    for candidate in (_ORDER if name == "auto" else (name,)):
        found = _load(candidate)
        if found is not None:
            return found
    reasons = "; ".join(f"{n}: {_reasons.get(n, 'unknown')}" for n in (
        _ORDER if name == "auto" else (name,)))
    raise RuntimeError(f"fastact: backend {name!r} is not available ({reasons})")


def backends():
    """{name: (available, reason)} for every backend. Loading compiles no kernel, but the C
    backend builds its extension if this machine has none built yet (seconds, once: README)."""
    report = {}
    for name in _ALL:
        available = _load(name) is not None
        report[name] = (available, "available" if available else _reasons[name])
    return report
