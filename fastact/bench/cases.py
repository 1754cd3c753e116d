"""What is measured, declared as data from the registry: one Case per (activation variant, direction).

A case knows the shapes it works on at a given element count, how to make its inputs (the backward's
saved tensor is the real forward output or input, as ``fa.NAME.saves_for`` says), and how many
bytes one call has to move at the least (what the roofline fraction is computed from):

    elementwise   forward 2 N,  backward 3 N            (x -> y;  dy, saved -> dx)
    prelu         forward 2 N + C, backward 3 N + 2 C   (the per-channel weight and its gradient)
    softmax, log_softmax: rows of ROW_LENGTH, moved once each way: forward 2 N, backward 3 N
    maxout        forward N + N/k, backward 2 N + N/k   (k = MAXOUT_PIECES)

(all times the item size). Everything here is plain NumPy; providers (providers.py) turn a case and
its inputs into a callable.
"""
from dataclasses import dataclass, field

import numpy as np

from .. import registry

# Where every buffer of a run starts: 16 bytes past a 4 KiB page boundary, as NumPy's freshly
# mapped large arrays do (glibc's own mappings, past a 16-byte header). Left to the heap, the
# base x array of the 2^20 group once sat 48 bytes below the outputs modulo 4096, and every call
# that read it ran slower: a load whose address matches an older, still pending store in its
# low 12 bits waits for it (4K aliasing). Zen 4 VM, 2^20, 2 threads, x 48 bytes below out against
# the same offset: fastact relu forward 48 -> 61 us, hardtanh backward 70 -> 94, sigmoid forward
# 191 -> 230; PyTorch's relu / hardtanh backward unchanged, its sigmoid 220 -> 240
# (fastact/bench/NOTES.md, fifteenth session). One offset for all makes the table independent of
# allocation order; it is fastact's best case (heap arrays step by 16 bytes modulo 4096, so
# such offsets are common in user code: README, known weakness).
PAGE, PAGE_OFFSET = 4096, 16


def placed_empty(shape, dtype):
    """An uninitialised C-contiguous array of this shape and dtype starting PAGE_OFFSET bytes
    past a PAGE boundary (see above)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + PAGE + PAGE_OFFSET, np.uint8)
    start = (PAGE_OFFSET - raw.ctypes.data) % PAGE
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def placed_copy(a):
    """a copied into placed_empty memory."""
    out = placed_empty(a.shape, a.dtype)
    out[...] = a
    return out

ROW_LENGTH = 1024  # softmax/log_softmax row (attention-sized); shorter when N is smaller
PRELU_CHANNELS = 16  # prelu on (1, C, N / C), weight per channel
MAXOUT_PIECES = 4  # maxout over groups of 4 on axis 1 of (N / 256, 256)
MAXOUT_WIDTH = 256
DIRECTIONS = ("forward", "backward")
DTYPES = ("float32", "float64", "float16")
FAMILIES = ("exponential", "piecewise-linear")
# Parameters where the registry's defaults are not enough (threshold has no defaults).
PARAMS = {"threshold": {"threshold": 0.1, "value": 0.0}, "maxout": {"pieces": MAXOUT_PIECES}}
# Activations with a string choice get one case per choice: gelu (erf) and gelu_tanh.
VARIANT_SUFFIX = {"none": "", "tanh": "_tanh"}
BASELINE = "relu"  # every run measures it: the "x ReLU" column divides by it


@dataclass(frozen=True)
class Case:
    label: str  # "gelu_tanh"
    activation: str  # registry name: "gelu"
    family: str
    kind: str  # registry Spec.kind
    direction: str
    params: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self):
        return (self.label, self.direction)

    @property
    def saves(self):
        """"input" or "output": what the backward reads besides grad_output."""
        import fastact as fa
        obj = getattr(fa, self.activation)
        if self.kind == "elementwise":
            return obj.saves_for(**self.params)
        return obj.saves

    def shape(self, n):
        """The input's shape for n elements."""
        if self.kind in ("softmax", "log_softmax"):
            row = min(ROW_LENGTH, n)
            return (n // row, row)
        if self.kind == "prelu":
            c = PRELU_CHANNELS if n % PRELU_CHANNELS == 0 else 1
            return (1, c, n // c)
        if self.kind == "maxout":
            width = min(MAXOUT_WIDTH, n)
            return (n // width, width)
        return (n,)

    def output_shape(self, n):
        shape = self.shape(n)
        if self.kind == "maxout" and self.direction == "forward":
            return (shape[0], shape[1] // MAXOUT_PIECES)
        return shape

    def elements(self, n):
        return int(np.prod(self.shape(n)))

    def bytes_moved(self, n, itemsize):
        n = self.elements(n)
        if self.kind == "maxout":
            words = n + n // MAXOUT_PIECES if self.direction == "forward" else 2 * n + n // MAXOUT_PIECES
        else:
            words = 2 * n if self.direction == "forward" else 3 * n
        if self.kind == "prelu":
            words += self.shape(n)[1] * (1 if self.direction == "forward" else 2)
        return words * itemsize

    def check_size(self, n):
        """None, or why this case cannot run at n elements."""
        if self.elements(n) != n:
            return f"{n} elements do not fill whole {self.kind} rows of {self.shape(n)[-1]}"
        return None

    def make_inputs(self, n, source):
        """{"x": ..., and for backward "dy", "saved"} as NumPy arrays; source(role, shape) gives
        the shared random inputs (views of one array per role, so cases do not each make their
        own). The backward's saved tensor is the real forward output where .saves says "output"."""
        shape = self.shape(n)
        arrays = {"x": source("x", shape)}
        if self.kind == "prelu":
            arrays["weight"] = np.full(shape[1], 0.25, arrays["x"].dtype)
        if self.direction == "backward":
            out_shape = (shape[0], shape[1] // MAXOUT_PIECES) if self.kind == "maxout" else shape
            arrays["dy"] = source("dy", out_shape)
            if self.saves == "output":
                import fastact as fa
                with fa.backend("cpu"):
                    arrays["saved"] = fastact_forward(
                        self, arrays, out=placed_empty(self.output_shape(n), arrays["x"].dtype))
            else:
                arrays["saved"] = arrays["x"]
        return arrays


def fastact_forward(case, arrays, out=None):
    """The forward call through fastact's public API."""
    import fastact as fa
    obj = getattr(fa, case.activation)
    if case.kind == "prelu":
        return obj(arrays["x"], arrays["weight"], out=out)
    return obj(arrays["x"], **case.params, out=out)


def fastact_backward(case, arrays, out=None):
    import fastact as fa
    obj = getattr(fa, case.activation)
    if case.kind == "prelu":
        return obj.backward(arrays["dy"], arrays["saved"], arrays["weight"], out=out)
    return obj.backward(arrays["dy"], arrays["saved"], **case.params, out=out)


def all_cases():
    """Every activation variant in registry order, forward then backward."""
    cases = []
    for spec in registry.SPECS.values():
        choice = next((p for p in spec.params if p.choices), None)
        variants = [(spec.name, {})] if choice is None else [
            (spec.name + VARIANT_SUFFIX.get(v, "_" + v), {choice.name: v}) for v in choice.choices]
        for label, params in variants:
            for direction in DIRECTIONS:
                cases.append(Case(label, spec.name, spec.family, spec.kind, direction,
                                  {**PARAMS.get(spec.name, {}), **params}))
    return cases


def labels():
    """Valid names for --only: activation names, their aliases and variant labels."""
    names = []
    for case in all_cases():
        for name in (case.activation, case.label):
            if name not in names:
                names.append(name)
    for spec in registry.SPECS.values():
        names.extend(a for a in spec.aliases if a not in names)
    return names


def select(only=None, families=None, directions=None):
    """The cases chosen by the CLI's filters, always with the ReLU baseline in each direction."""
    aliases = {a: s.name for s in registry.SPECS.values() for a in s.aliases}
    wanted = None if only is None else {aliases.get(n, n) for n in only}
    chosen = []
    for case in all_cases():
        if directions is not None and case.direction not in directions:
            continue
        baseline = case.label == BASELINE
        if not baseline and families is not None and case.family not in families:
            continue
        if not baseline and wanted is not None and not (
                case.label in wanted or case.activation in wanted):
            continue
        chosen.append(case)
    return chosen
