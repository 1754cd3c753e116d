"""A Numba target of fastact's own whose machine code uses the small code model.

Numba compiles for the JIT's large code model (static relocation): each constant that a vector
loop cannot keep in a register costs a ``movabsq`` of its constant-pool address on every
iteration (softplus forward: 21 per 16 elements). The small code model with position-independent
code addresses them relative to the instruction pointer instead (bench/NOTES.md, work log
2026-11-23 08:00: the exponential forwards and softmax rows 1.03-1.26x on an AMD Zen 4).

That needs every section of an object within 2 GiB of its code. Numba's engine places each
section where the system's allocator puts it, so ``njit`` here compiles through a target context
of fastact's own: the same typing and lowering as Numba's CPU target (callees are Numba's own
dispatchers, linked in as IR), but its final modules are emitted by a code generator with its own
execution engine that uses llvmlite's memory manager, which reserves one block per object. The
rest of the user's process keeps Numba's code generator.

And it needs no call or reference from one object into another: objects land wherever the
system puts them, gigabytes apart once a program holds large arrays. Numba links each callee
(NRT_incref, NRT_decref, a kernel's loop) into the caller as a weak (linkonce_odr) copy, and the
JIT's linker binds a weak definition to the first object that defined it, through a 32-bit
relative call: loading a kernel more than 2 GiB from the first one aborted the process
(RuntimeDyldELF: isInt<32>(RealOffset)). So the copies are made internal to each object before it
is optimized (``Library``); what an object still needs from outside (Python's C API, Numba's
helpers) is reached through its own stubs and global offset table, 64-bit addresses.

Where this Numba lacks what the target needs, or FASTACT_NUMBA_CODEGEN=numba asks for it
(``available()`` says why), ``njit`` is Numba's.
"""
import inspect
import os
import threading

_REASON = None
_lock = threading.Lock()
MARK = "fastact-small-pic-2"  # -2: weak copies internal (cached objects before it bind across)


def _build():
    from numba.core import base, codegen, config, cpu, registry, types, utils
    from numba.core.compiler_lock import global_compiler_lock

    # CPUCodegen._init must read this setting when it makes the engine (it does in Numba
    # 0.68): else the small code model could meet a memory manager that scatters sections
    if "USE_LLVMLITE_MEMORY_MANAGER" not in inspect.getsource(codegen.CPUCodegen._init):
        raise RuntimeError("this Numba's code generator does not take llvmlite's memory manager")
    if not hasattr(base, "_wrap_impl"):
        raise RuntimeError("this Numba's target context has no _wrap_impl")
    # Library below must see each final module before it is emitted (else the weak copies
    # would stay weak: see the module's docstring)
    if "_optimize_final_module" not in inspect.getsource(codegen.CPUCodeLibrary.finalize):
        raise RuntimeError("this Numba's code library does not optimize through "
                           "_optimize_final_module")

    class Library(codegen.JITCodeLibrary):
        def _optimize_final_module(self):
            _internalize_copies(self._final_module)
            super()._optimize_final_module()

    class Codegen(codegen.JITCPUCodegen):
        _library_class = Library

        def _customize_tm_options(self, options):
            super()._customize_tm_options(options)
            options["codemodel"] = "small"
            options["reloc"] = "pic"

        def _init(self, llvm_module):
            with global_compiler_lock:
                saved = config.USE_LLVMLITE_MEMORY_MANAGER
                config.USE_LLVMLITE_MEMORY_MANAGER = True
                try:
                    super()._init(llvm_module)
                finally:
                    config.USE_LLVMLITE_MEMORY_MANAGER = saved

        def magic_tuple(self):
            # cached objects of this model are not loaded by Numba's engine, nor its by this one
            return super().magic_tuple() + (MARK,)

    class Context(cpu.CPUContext):
        @global_compiler_lock
        def init(self):
            super().init()
            self._internal_codegen = Codegen("fastact.exec")

        def get_function(self, fn, sig, _firstcall=True):
            # A Numba dispatcher (or overload) that a kernel calls registers its compiled code
            # with Numba's context only: take the implementation from there, bound to this
            # context (whose library then links the callee's IR in).
            try:
                return super().get_function(fn, sig, _firstcall)
            except NotImplementedError:
                if not isinstance(fn, types.Callable):
                    raise
                sig = sig.as_function()
                known = registry.cpu_target.target_context._defns.get(fn.get_impl_key(sig))
                if known is None:
                    raise
                return base._wrap_impl(known.find(sig.args), self, sig)

    class Target(registry.CPUTarget):
        @utils.threadsafe_cached_property
        def _toplevel_target_context(self):
            return Context(self.typing_context, self._target_name)

        @property
        def typing_context(self):
            return registry.cpu_target.typing_context

    class Dispatcher(registry.CPUDispatcher):
        targetdescr = Target("cpu")

    made = Dispatcher.targetdescr.target_context.codegen()
    if MARK not in made.magic_tuple():
        raise RuntimeError("the target context did not take fastact's code generator")
    if type(made.create_library("fastact-probe")) is not Library:
        raise RuntimeError("fastact's code generator did not take its library class")
    return Dispatcher


_WEAK = frozenset({"linkonce_any", "linkonce_odr", "linkonce_odr_autohide", "weak_any", "weak_odr"})


def _internalize_copies(module):
    """Give each weak definition of an llvmlite module (the copies of the callees Numba linked
    in) internal linkage: calls to it stay inside this object (see the module's docstring)."""
    for value in (*module.functions, *module.global_variables):
        if not value.is_declaration and value.linkage.name in _WEAK:
            value.linkage = "internal"


_UNBUILT = object()
_class = _UNBUILT


def _dispatcher_class():
    """fastact's dispatcher class, built once (None: Numba's own njit, _REASON says why)."""
    global _REASON, _class
    with _lock:
        if _class is _UNBUILT:
            if os.environ.get("FASTACT_NUMBA_CODEGEN", "").lower() == "numba":
                _class, _REASON = None, "FASTACT_NUMBA_CODEGEN=numba"
            else:
                try:
                    _class = _build()
                except Exception as e:  # an older or newer Numba: its own njit
                    _class, _REASON = None, f"{type(e).__name__}: {e}"
        return _class


def available():
    """(True, "") or (False, why fastact's kernels use Numba's own code generator)."""
    return (_dispatcher_class() is not None, _REASON or "")


def njit(cache=False, **options):
    """numba.njit(**options) compiling through fastact's small-code-model target."""
    import numba
    cls = _dispatcher_class()
    if cls is None:
        return numba.njit(cache=cache, **options)

    def wrap(fn):
        dispatcher = cls(py_func=fn, locals={}, targetoptions=dict(nopython=True, **options))
        if cache:
            dispatcher.enable_caching()
        return dispatcher
    return wrap
