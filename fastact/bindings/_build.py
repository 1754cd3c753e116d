"""Build the C extension on first use into a per-user cache directory, and load it.

Where: ``$FASTACT_CACHE_DIR`` (else ``$XDG_CACHE_HOME/fastact``, else ``~/.cache/fastact``) /
``c-<key>/``, where the key hashes the C template, the generator, the math and registry sources, the
Python ABI, the compiler choice, the CPU (the build may use ``-march=native``) and
kernels/math.py's SOFTWARE_PREFETCH (a constant in the generated C). A new fastact
version or another machine therefore gets its own directory; nothing is ever loaded stale.

How: fastact/bindings/_generate.py writes one C file per dtype; cffi (API mode, ``set_source``)
writes the Python wrapper; the compiler builds the three in parallel and links them with OpenMP.
A file lock serializes builds of one directory between processes, and the finished module is
moved into place atomically, so a process never loads half a file. Loading a built module reads
a few small files and opens one shared library: no compiler, no cffi import, no JIT.

Force a rebuild: ``FASTACT_C_REBUILD=1`` (the next process that loads the backend rebuilds), or
``fastact.bindings.rebuild()`` / ``python -m fastact.bindings --rebuild``. ``CC`` picks the
compiler; ``FASTACT_C_NATIVE=0`` builds portable code (no ``-march=native``).
"""
import contextlib
import importlib.machinery
import importlib.util
import os
import sys
import zlib
from .._env import flag

# Only the above on the loading path (a fresh process's first call must stay fast); the build
# imports cffi, subprocess and the rest when it runs.
HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = "_fastact_c"
EXT_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
# Which compiled code may use: never -ffast-math (NaN handling, Cody-Waite and the shifter trick
# depend on exact IEEE arithmetic). -fno-trapping-math and -fno-math-errno only let the vectorizer
# evaluate both sides of a select (no FP traps are enabled in Python); -ffp-contract=off keeps the
# FMAs exactly where the source writes them (as the Numba backend), so results agree bitwise.
BASE_FLAGS = ["-O3", "-fPIC", "-std=gnu11", "-ffp-contract=off", "-fno-math-errno",
              "-fno-trapping-math", "-fno-semantic-interposition"]


class BuildError(Exception):
    """The extension could not be built; the message says why (for fa.backends())."""


def _hashed_sources():
    pkg = os.path.dirname(HERE)
    return [os.path.join(HERE, "template.c"), os.path.join(HERE, "_generate.py"),
            os.path.join(HERE, "_build.py"), os.path.join(pkg, "kernels", "math.py"),
            os.path.join(pkg, "registry.py"),
            os.path.join(pkg, "_threads.py"),  # the pool state's layout, compiled into the C
            os.path.join(pkg, "kernels", "loops.py")]  # (NONPOSITIVE_ROW_MAX, compiled in too)


def _cpu_identity():
    """The CPU model and feature flags (a -march=native build only runs where they match)."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            head = f.read(8192)
        first = head.split(b"\n\n")[0]
        return b"\n".join(line for line in first.splitlines()
                          if line.startswith((b"model name", b"flags", b"vendor_id")))
    except OSError:
        import platform
        return f"{platform.machine()} {platform.processor()}".encode()


def compiler():
    """The C compiler command: $CC, else the one Python was built with, else cc/gcc/clang."""
    import shlex
    import shutil
    import sysconfig
    configured = os.environ.get("CC") or sysconfig.get_config_var("CC") or ""
    if os.environ.get("CC"):  # the user's choice, or nothing
        command = shlex.split(os.environ["CC"])
        if not shutil.which(command[0]):
            raise BuildError(f"no compiler: CC={os.environ['CC']!r} not found")
        return command
    candidates = [shlex.split(configured)] if configured.strip() else []
    for command in candidates + [["cc"], ["gcc"], ["clang"]]:
        if shutil.which(command[0]):
            return command
    raise BuildError("no compiler (cc, gcc, clang) on PATH; install one or set CC")


def _native():
    return flag("FASTACT_C_NATIVE", True)


def _software_prefetch():
    """kernels/math.py's SOFTWARE_PREFETCH (a constant in the generated C: FASTACT_PREFETCH can
    change it between processes on one machine)."""
    from ..kernels.math import SOFTWARE_PREFETCH
    return int(SOFTWARE_PREFETCH)


def key():
    """16 hex digits from the sources, the ABI, the compiler choice and the CPU (two 32-bit
    checksums: hashlib's import alone would cost a fresh process's first call milliseconds)."""
    parts = []
    for path in _hashed_sources():
        with open(path, "rb") as f:
            parts.append(f.read())
    parts.append(f"{sys.implementation.cache_tag}{EXT_SUFFIX}{os.uname().machine if hasattr(os, 'uname') else ''}"
                 f"|{os.environ.get('CC', '')}|{_native()}"
                 f"|{_software_prefetch()}".encode())
    parts.append(_cpu_identity())
    return checksum(b"\0".join(parts))


def cache_root():
    return os.environ.get("FASTACT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "fastact")


def build_dir():
    return os.path.join(cache_root(), "c-" + key())


def module_path(directory=None):
    return os.path.join(directory or build_dir(), MODULE + EXT_SUFFIX)


@contextlib.contextmanager
def _file_lock(path):
    """An exclusive lock between processes (released by the OS if the holder dies)."""
    with open(path, "a+") as f:
        try:
            import fcntl
        except ImportError:  # not POSIX: builds may race, but each moves a whole file into place
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(command, cwd):
    import subprocess
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    return done.returncode, (done.stdout + done.stderr).strip()


def _probe(cc, flags, source, cwd, link=False):
    """True if cc compiles (and links) this source with these flags."""
    path = os.path.join(cwd, "probe.c")
    with open(path, "w") as f:
        f.write(source)
    out = os.path.join(cwd, "probe.out" if link else "probe.o")
    command = [*cc, *flags, path, "-o", out] if link else [*cc, *flags, "-c", path, "-o", out]
    return _run(command, cwd)[0] == 0


_FMA_PROBE = "double f(double a, double b, double c) { return __builtin_fma(a, b, c); }\n"


def choose_flags(cc, cwd):
    """(compile flags, link flags, notes): -march=native where the compiler takes it, OpenMP where
    it works (else only its simd pragmas: serial but vectorized)."""
    flags = list(BASE_FLAGS)
    notes = []
    if _native() and _probe(cc, [*flags, "-march=native"], _FMA_PROBE, cwd):
        flags.append("-march=native")
    else:
        notes.append("portable build (no -march=native): no FMA instructions, slower")
    # OpenMP's simd pragmas only: threads come from fastact's pool (see backend.py), and linking an
    # OpenMP runtime would share PyTorch's libgomp in a process that imported torch.
    if _probe(cc, [*flags, "-fopenmp-simd"], _FMA_PROBE, cwd):
        flags.append("-fopenmp-simd")
    return flags, [], notes


def _python_include():
    import sysconfig
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        raise BuildError(f"Python.h not found in {include} (install the Python development "
                         "headers, e.g. python3-dev)")
    return include


def _compile(directory):
    """Build the module into directory (the caller holds the lock)."""
    if os.name != "posix":
        raise BuildError("building the C extension is supported with gcc/clang on POSIX systems")
    import io
    import json
    import shutil
    import subprocess
    import tempfile
    import time

    import cffi  # only for building
    cc = compiler()
    include = _python_include()
    from . import _generate
    os.makedirs(directory, exist_ok=True)
    work = tempfile.mkdtemp(prefix="build-", dir=directory)
    try:
        started = time.perf_counter()
        flags, link_flags, notes = choose_flags(cc, work)
        ffi = cffi.FFI()
        declarations = _generate.cdef()
        ffi.cdef(declarations)
        ffi.set_source(MODULE, "#include <stdint.h>\n" + declarations)
        with contextlib.redirect_stdout(io.StringIO()):  # cffi prints "generating ..."
            ffi.emit_c_code(os.path.join(work, "module.c"))
        for dtype in ("float32", "float64"):
            with open(os.path.join(work, f"kernels_{dtype}.c"), "w") as f:
                f.write(_generate.source(dtype))
        jobs = [([*cc, *flags, "-c", f"kernels_{dt}.c", "-o", f"kernels_{dt}.o"], f"kernels_{dt}.c")
                for dt in ("float32", "float64")]
        jobs.append(([*cc, *BASE_FLAGS, "-O2", f"-I{include}", "-c", "module.c", "-o", "module.o"],
                     "module.c"))
        running = [(subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True), name)
                   for cmd, name in jobs]  # in parallel: one compiler per file
        failures = []
        for process, name in running:
            output = process.communicate()[0]
            if process.returncode:
                failures.append(f"{name}: {output.strip()[-2000:]}")
        if failures:
            raise BuildError("compiling failed: " + "\n".join(failures))
        target = MODULE + EXT_SUFFIX
        code, output = _run([*cc, *shared_flags(), "module.o", "kernels_float32.o",
                             "kernels_float64.o", *link_flags, "-lm", "-o", target], work)
        if code:
            raise BuildError(f"linking failed: {output[-2000:]}")
        info = {"compiler": cc, "flags": flags, "link_flags": link_flags, "notes": notes,
                "seconds": round(time.perf_counter() - started, 2), "built_at": time.time(),
                "key": os.path.basename(directory), "software_prefetch": bool(_software_prefetch())}
        with open(os.path.join(work, "build.json"), "w") as f:
            json.dump(info, f, indent=1)
        os.replace(os.path.join(work, "build.json"), os.path.join(directory, "build.json"))
        os.replace(os.path.join(work, target), module_path(directory))  # atomic
        with open(os.path.join(directory, "build.log"), "a") as f:  # one line per build
            f.write(json.dumps(info) + "\n")
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build(force=False, directory=None):
    """Build (unless already built, or force) and return the module's path."""
    directory = directory or build_dir()
    return build_locked(directory, module_path(directory), _compile, force)


def build_locked(directory, path, compile, force=False):
    """compile(directory) under the directory's file lock unless path exists (or force); the
    path. (Also the per-call fast path's build: fastact/_fastcall.py.)"""
    if os.path.exists(path) and not force:
        return path
    os.makedirs(directory, exist_ok=True)
    with _file_lock(os.path.join(directory, ".lock")):
        # another process may have built it while this one waited for the lock
        if force or not os.path.exists(path):
            compile(directory)
    return path


def checksum(data):
    """16 hex digits (two 32-bit checksums: hashlib's import alone would cost a fresh process's
    first call milliseconds)."""
    return f"{zlib.crc32(data):08x}{zlib.adler32(data[::-1]):08x}"


def shared_flags():
    return ["-bundle", "-undefined", "dynamic_lookup"] if sys.platform == "darwin" else ["-shared"]


def load_extension(name, path):
    """Import the extension module at path as name (registered in sys.modules)."""
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[name] = module
    return module


def _rebuild_requested():
    return flag("FASTACT_C_REBUILD", False)


_loaded_from = None  # the directory of the module this process loaded


def load():
    """The compiled module (its .ffi and .lib), building it first if needed."""
    global _loaded_from
    directory = build_dir()
    path = build(force=_rebuild_requested(), directory=directory)
    name = "fastact.bindings." + MODULE
    if name in sys.modules:
        return sys.modules[name]
    module = load_extension(name, path)
    _loaded_from = directory
    return module


def info():
    """What the build recorded (compiler, flags, notes, seconds) and its path: of the module this
    process loaded, else of the one it would load; {} if not built."""
    import json
    directory = _loaded_from or build_dir()
    try:
        with open(os.path.join(directory, "build.json")) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return {}
    found["path"] = module_path(directory)
    return found
