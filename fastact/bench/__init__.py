"""The benchmark harness: ``fastact-bench`` / ``python -m fastact.bench`` (see __main__.py, and
NOTES.md for the method and the numbers measured). Modules:

    cases.py      what is measured, from the registry (shapes, inputs, bytes moved)
    providers.py  who is measured: fastact backends and peers (NumPy, numexpr, PyTorch, JAX, CuPy)
    timing.py     warm-up, calibration, interleaved repeats, CUDA events
    runner.py     groups of (device, threads, dtype, size) with their roofline
    report.py     table, Markdown, CSV, JSON;  plots.py: PNGs
"""


def main(argv=None):
    """The command line, callable from Python: main(["--quick"]) -> exit code."""
    from .__main__ import main as _main
    return _main(argv)
