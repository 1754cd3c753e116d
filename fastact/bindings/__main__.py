"""python -m fastact.bindings [--rebuild]: build the C extension now and print where it is."""
import argparse
import json
import sys

from . import _build


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastact.bindings", description=__doc__)
    parser.add_argument("--rebuild", action="store_true", help="build even if already built")
    args = parser.parse_args(argv)
    try:
        path = _build.build(force=args.rebuild)
    except (_build.BuildError, OSError) as e:  # (OSError: a cache directory not writable)
        print(f"C extension not built: {e}", file=sys.stderr)
        return 1
    print(path)
    print(json.dumps(_build.info(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
