"""Generated kernel modules: Numba's disk cache (cache=True) needs a real source file per cached
function, so the backends write each generated module into their cache directory and import it."""
import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import warnings

# cache directory -> the temporary one this process writes instead, where it cannot write there
_instead = {}


def import_source(directory, package, name, source):
    """Write ``source`` to DIRECTORY/NAME.py (atomically, and only when it changed, so that
    concurrent processes never see half a file and cached machine code stays valid) and import it
    as PACKAGE.NAME. Where the directory cannot be written (a read-only home, a cache built ahead
    and mounted read-only) and the module or its compiled code is not there yet, the module goes
    to a temporary directory for this process instead, with one warning: the kernels then compile
    again in each process, but they work (the backend used to fail every call)."""
    place = _instead.get(directory, directory)
    try:
        return _import(place, package, name, source)
    except (OSError, RuntimeError) as e:
        # (Numba raises RuntimeError "cannot cache function ... no locator available" where
        # neither the module's __pycache__ nor its own user-wide cache can be written)
        if place != directory or (isinstance(e, RuntimeError) and "cannot cache" not in str(e)):
            raise
        with _lock:
            if directory not in _instead:
                _instead[directory] = tempfile.mkdtemp(prefix="fastact-kernels-")
                atexit.register(shutil.rmtree, _instead[directory], ignore_errors=True)
                warnings.warn(f"fastact: cannot write compiled kernels to {directory} "
                              f"({type(e).__name__}: {e}); this process compiles them in "
                              f"{_instead[directory]} instead (set FASTACT_CACHE_DIR to a writable "
                              "directory to keep them between processes)", RuntimeWarning,
                              stacklevel=2)
        return _import(_instead[directory], package, name, source)


_lock = threading.Lock()


def _import(directory, package, name, source):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name + ".py")
    if not os.path.exists(path) or _read(path) != source:
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(f"{package}.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def _read(path):
    with open(path) as f:  # closed here (a ResourceWarning under -X dev or -W error otherwise)
        return f.read()
