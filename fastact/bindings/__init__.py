"""The optional C backend ("c"): the activations in C, built with cffi on first use.

    fastact.bindings.build()      # build now (e.g. in a Docker image), returns the module's path
    fastact.bindings.rebuild()    # build again even if built (new processes load the new one)
    fastact.bindings.info()       # compiler, flags and notes of the build in use

Importing this package builds nothing; the backend builds on its first use (see _build.py).
"""


def build():
    """Build the C extension into the cache directory unless it is there; its path."""
    from . import _build
    return _build.build()


def rebuild():
    """Build the C extension again (a running process keeps the module it loaded); its path."""
    from . import _build
    return _build.build(force=True)


def info():
    """{"compiler", "flags", "notes", "seconds", "path", ...} of the current build ({} if none)."""
    from . import _build
    return _build.info()
