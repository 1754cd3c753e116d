"""fastact-bench: exponential vs piecewise-linear activations, against the memory roofline and peers.

    fastact-bench                          # every activation, both directions, float32, a size sweep
    fastact-bench --quick                  # a smaller sweep, under 20 s
    fastact-bench --only gelu,relu --sizes 2^20,2^26 --threads 1,2 --json run.json --plot plots/
"""
import argparse
import math
import os
import sys

from .cases import DIRECTIONS, DTYPES, FAMILIES

DEFAULT_SIZES = [1 << k for k in (10, 13, 16, 19, 22, 24)]  # 4 KiB (L1) to 64 MiB (memory) per float32 array
QUICK_SIZES = [1 << 12, 1 << 16, 1 << 20]
ALIASES = {"fwd": "forward", "bwd": "backward", "exp": "exponential", "pwl": "piecewise-linear",
           "f16": "float16", "f32": "float32", "f64": "float64", "half": "float16",
           "float": "float32", "double": "float64"}


class BadInput(Exception):
    """One line for the user (exit code 2)."""


def _list(value, valid, what):
    """A comma-separated list checked against the valid choices."""
    items = [ALIASES.get(v.strip(), v.strip()) for v in value.split(",") if v.strip()]
    for item in items:
        if item not in valid:
            raise BadInput(f"unknown {what} {item!r}; valid: {', '.join(valid)}")
    if not items:
        raise BadInput(f"no {what} given; valid: {', '.join(valid)}")
    return list(dict.fromkeys(items))


MAX_SIZE = 1 << 40  # elements: past any machine's memory; _check_memory sizes against this one


def _size(text):
    t = text.strip().lower().replace("**", "^")
    try:
        if "^" in t:
            base, exp = t.split("^")
            if int(exp) > 64:
                raise OverflowError
            n = int(base) ** int(exp)
        else:
            scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(t[-1:], 1)
            value = float(t[:-1] if scale > 1 else t) * scale
            n = int(value)
            if n != value:  # 1.5 was taken as 1
                raise BadInput(f"bad size {text!r}: not a whole number of elements")
    except (ValueError, OverflowError):  # (inf, 1e400: OverflowError)
        raise BadInput(f"bad size {text!r}; write sizes as 65536, 2^16, 64k or 1e6") from None
    if n < 1:
        raise BadInput(f"bad size {text!r}: must be at least 1")
    if n > MAX_SIZE:
        raise BadInput(f"bad size {text!r}: more than 2^40 elements")
    return n


def _sizes(text, option):
    """A list of sizes, each once, in the order given; an empty list is an error (it had run
    nothing, or the default sweep for an empty string)."""
    sizes = list(dict.fromkeys(_size(s) for s in text.split(",") if s.strip()))
    if not sizes:
        raise BadInput(f"no sizes in {option} {text!r}")
    return sizes


def _check_memory(sizes, dtypes):
    """The largest size must fit this machine's memory: a case holds a few arrays of it (inputs,
    the output, a saved tensor) and the copy roofline two more; a size that cannot had failed
    after the smaller ones were measured, losing the run."""
    itemsize = max({"float16": 2, "float32": 4, "float64": 8}[d] for d in dtypes)
    need = 6 * max(sizes) * itemsize
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: not checked
        return
    if need > total:
        raise BadInput(f"size {max(sizes)} needs about {need / 2 ** 30:.0f} GiB of arrays "
                       f"({', '.join(dtypes)}), more than this machine's {total / 2 ** 30:.0f} GiB")


def parser():
    p = argparse.ArgumentParser(
        prog="fastact-bench", description="Throughput of fastact's activations (forward and "
        "backward) against the memory roofline measured in the same run and against peers "
        "(NumPy, numexpr, PyTorch, JAX, CuPy where installed), interleaved, same thread count.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Method and measured numbers: fastact/bench/NOTES.md.")
    p.add_argument("--only", metavar="NAMES", help="activations, e.g. gelu,relu (gelu_tanh for "
                   "one variant); relu is always measured as the baseline")
    p.add_argument("--families", metavar="NAMES", help=f"of {', '.join(FAMILIES)}")
    p.add_argument("--directions", metavar="NAMES", default="forward,backward",
                   help="forward,backward (default both)")
    p.add_argument("--dtypes", metavar="NAMES", default="float32", help=f"of {', '.join(DTYPES)}")
    p.add_argument("--sizes", metavar="N,...", help="elements per array, e.g. 2^10,2^20,2^26 "
                   "(default 2^10,2^13,2^16,2^19,2^22,2^24: L1-resident to memory-sized)")
    p.add_argument("--backends", metavar="NAMES", default="cpu,c,cuda",
                   help="fastact backends cpu, c, cuda, and numpy (NumPy written as a user would); "
                   "default cpu,c,cuda: the unavailable ones are reported as skipped")
    p.add_argument("--peers", metavar="NAMES", default="torch",
                   help="numpy (as a user writes it), numexpr, torch, jax, cupy; all (those "
                   "installed) or none; default torch (CPU, and CUDA with --backends cuda). NumPy "
                   "and numexpr take up to a second per call at 2^24: all peers on the default sizes "
                   "take several minutes")
    p.add_argument("--threads", metavar="T,...", help=f"thread counts (default {os.cpu_count()}: "
                   "all cores); fastact, PyTorch, numexpr and the roofline all get the same count")
    p.add_argument("--repeats", type=int, help="samples per item (default 5; 3 with --quick)")
    p.add_argument("--min-time", type=float, metavar="S",
                   help="shortest sample in seconds (default 0.001; 0.0005 with --quick)")
    p.add_argument("--settle", type=float, metavar="S",
                   help="seconds the next item runs untimed after each sample, so that threads a "
                   "provider leaves spinning do not run into the next sample (default: the "
                   "provider's own: 0.04 after PyTorch and JAX on the CPU, 0.001 after the other "
                   "CPU providers, 0 on GPUs)")
    p.add_argument("--quick", action="store_true", help="sizes 2^12,2^16,2^20 and fewer samples")
    p.add_argument("--json", metavar="PATH", help="everything: machine, versions, every sample")
    p.add_argument("--csv", metavar="PATH", help="one row per result")
    p.add_argument("--markdown", metavar="PATH", help="a Markdown report (the sizes of --table-sizes)")
    p.add_argument("--plot", metavar="DIR", help="PNG plots (needs matplotlib)")
    p.add_argument("--table-sizes", metavar="N,...", default="auto",
                   help="sizes the printed and Markdown tables show: auto (all if three or fewer, "
                   "else the largest in-cache and the largest), all, or a list")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none either when "
                   "stderr is not a terminal)")
    p.add_argument("--profile", action="store_true", help="NVTX range around each measured kernel "
                   "(nvtx package); prints the nsys/ncu command lines that capture them")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return p


def _check_output(option, path, folder=False, create=False):
    """Fail before measuring, not after it (a run takes minutes): a path that cannot be written is
    an error now. Called twice for each output: first to check (creating nothing), then, once
    every option has passed, with create=True to make its folder, as --plot's is."""
    target = path if folder else os.path.dirname(os.path.abspath(path))
    if os.path.exists(target) and not os.path.isdir(target):
        raise BadInput(f"{option} {path!r}: {target!r} is not a folder")
    if not folder and os.path.isdir(path):
        raise BadInput(f"{option} {path!r} is a folder; give a file name")
    existing = os.path.abspath(target)
    while not os.path.exists(existing):  # the folder that would hold the ones to create
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise BadInput(f"{option} {path!r}: {existing!r} is not a folder")
    if not os.access(existing, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise BadInput(f"{option} {path!r}: not writable")
    if create:
        try:
            os.makedirs(target, exist_ok=True)
        except OSError as e:
            raise BadInput(f"{option} {path!r}: cannot create {target!r} ({e.strerror})") from None


def _config(args):
    from . import cases as cases_module
    from . import providers as prov
    from .runner import Config

    only = None if args.only is None else _list(args.only, cases_module.labels(), "activation")
    families = None if args.families is None else _list(args.families, FAMILIES, "family")
    directions = _list(args.directions, DIRECTIONS, "direction")
    dtypes = _list(args.dtypes, DTYPES, "dtype")
    backends = _list(args.backends, prov.BACKENDS, "backend")
    peers = []  # all and none may stand in a list too (torch,all), as they do alone
    for item in _list(args.peers, prov.PEERS + ("all", "auto", "none"), "peer"):
        for peer in (prov.PEERS if item in ("all", "auto") else () if item == "none" else (item,)):
            if peer not in peers:
                peers.append(peer)
    sizes = (_sizes(args.sizes, "--sizes") if args.sizes is not None
             else QUICK_SIZES if args.quick else DEFAULT_SIZES)
    try:
        threads = list(dict.fromkeys(int(t) for t in args.threads.split(","))) if (
            args.threads is not None) else [os.cpu_count() or 1]
    except ValueError:
        raise BadInput(f"bad --threads {args.threads!r}; give counts like 1,2") from None
    from .._threads import MAX_THREADS
    if any(not 1 <= t <= MAX_THREADS for t in threads):
        raise BadInput(f"thread counts must be in [1, {MAX_THREADS}]")
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    min_time = args.min_time if args.min_time is not None else (5e-4 if args.quick else 1e-3)
    settle = args.settle if args.settle is not None else 0.0
    if repeats < 1 or not (0 <= min_time < math.inf) or not (0 <= settle < math.inf):
        raise BadInput("--repeats must be at least 1, --min-time and --settle finite and not "
                       "negative")
    table = args.table_sizes
    if table not in ("auto", "all"):
        table = _sizes(table, "--table-sizes")
        missing = [n for n in table if n not in sizes]
        if missing:
            raise BadInput(f"--table-sizes {args.table_sizes!r}: {missing} not among the sizes "
                           f"run ({', '.join(map(str, sizes))})")
    _check_memory(sizes, dtypes)
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (before measuring: a run takes minutes)
        except ImportError as e:
            raise BadInput(f"--plot needs matplotlib ({e}); pip install matplotlib") from None
    outputs = [(option, path, option == "--plot") for option, path in (
        ("--json", args.json), ("--csv", args.csv), ("--markdown", args.markdown),
        ("--plot", args.plot)) if path]
    for create in (False, True):  # every check before any folder is made
        for option, path, folder in outputs:
            _check_output(option, path, folder, create)

    chosen = cases_module.select(only, families, directions)
    providers = [prov.make_backend(b) for b in backends]
    cuda = "cuda" in backends
    names = {p.name for p in providers}
    if not cuda and "cupy" in (v.strip() for v in args.peers.split(",")):  # named, not by all
        print("fastact-bench: peer cupy runs on the GPU only: add --backends cuda; skipped",
              file=sys.stderr)
    for peer in peers:
        for p in prov.make_peers(peer, cuda):
            if p.name not in names:
                providers.append(p)
                names.add(p.name)
    progress = not args.no_progress and sys.stderr.isatty()
    config = Config(cases=chosen, providers=providers, dtypes=dtypes, sizes=sizes,
                    threads=threads, repeats=repeats, min_sample_s=min_time,
                    settle_s=args.settle, profile=args.profile,
                    progress=progress, seed=args.seed)
    return config, table


def profile_commands(argv):
    """The nsys and ncu command lines that capture exactly the measured kernels."""
    command = "python -m fastact.bench " + " ".join(a for a in argv)
    return [
        "# whole run, timeline of the measured ranges only:",
        f"nsys profile --trace=cuda,nvtx,osrt --capture-range=nvtx --nvtx-capture=fastact-bench "
        f"--capture-range-end=stop -o fastact-bench {command}",
        "# per-kernel metrics for the measured kernels only (add --launch-count to cap it):",
        f"ncu --nvtx --nvtx-include 'regex:fastact-bench/.*' --set full -o fastact-bench {command}",
    ]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    try:
        config, table = _config(args)
    except BadInput as e:
        print(f"fastact-bench: error: {e}", file=sys.stderr)
        return 2

    from . import report as rep
    from .runner import Profiler, run

    if args.profile:
        profiler = Profiler()
        print("fastact-bench --profile: NVTX ranges from "
              + (profiler.source or "nowhere (pip install nvtx): ranges are not emitted"))
        if not any(p.device == "cuda" for p in config.providers):
            print("(no CUDA provider in this run: nsys still shows the CPU ranges; ncu needs GPU "
                  "kernels: add --backends cuda)")
        print("\n".join(profile_commands(argv)) + "\n", flush=True)

    result = run(config)
    print(rep.text(result, table))
    for path, write in ((args.json, rep.to_json), (args.csv, rep.to_csv),
                        (args.markdown, lambda r: rep.markdown(r, table))):
        if path:
            with open(path, "w") as f:
                f.write(write(result))
    if args.plot:
        try:
            from . import plots
        except ImportError as e:
            print(f"fastact-bench: plots skipped: {e} (pip install matplotlib)", file=sys.stderr)
        else:
            for path in plots.write_all(result, args.plot):
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
