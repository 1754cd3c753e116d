"""fastact: compiled neural-network activation kernels, forward and backward, for array code.

    import fastact as fa
    y = fa.gelu(x)                      # like a NumPy ufunc: same dtype, any shape, out=
    dx = fa.gelu.backward(dy, x)        # grad_input from grad_output and the saved tensor
    fa.gelu.saves                       # "input" or "output": which tensor backward needs
"""
from . import registry as _registry
from ._api import Activation as _Activation
from ._backends import backend, backends
from ._rowwise import log_softmax, maxout, prelu, rrelu, softmax

__version__ = "0.1.0"

_ELEMENTWISE = [s for s in _registry.SPECS.values() if s.kind == "elementwise"]
for _spec in _ELEMENTWISE:
    globals()[_spec.name] = _Activation(_spec)
    for _alias in _spec.aliases:
        globals()[_alias] = globals()[_spec.name]

ACTIVATIONS = tuple(_registry.SPECS)


def families():
    """{"exponential": [...], "piecewise-linear": [...]}: activation names by family."""
    return _registry.families()


from ._threads import get_num_threads, set_num_threads  # noqa: E402

__all__ = ["ACTIVATIONS", "backend", "backends", "families", "set_num_threads", "get_num_threads",
           *ACTIVATIONS, "swish"]
