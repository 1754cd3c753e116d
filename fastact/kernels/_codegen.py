"""Generated kernel modules: Numba's disk cache (cache=True) needs a real source file per cached
function, so the backends write each generated module into their cache directory and import it."""
import importlib.util
import os
import sys
import threading


def import_source(directory, package, name, source):
    """Write ``source`` to DIRECTORY/NAME.py (atomically, and only when it changed, so that
    concurrent processes never see half a file and cached machine code stays valid) and import it
    as PACKAGE.NAME."""
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
    spec.loader.exec_module(module)
    return module


def _read(path):
    with open(path) as f:  # closed here (a ResourceWarning under -X dev or -W error otherwise)
        return f.read()
