"""Command line for isolated environments (see :mod:`noises.system.isolated`)::

    python -m noises.system.venvs build pillow9 pillow-simd [--force]
    python -m noises.system.venvs list
"""

from __future__ import annotations

import sys
import time

from noises.system.isolated import ENV_SPECS, IsolatedEnvError, build, built_info


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m noises.system.venvs",
                                 description="Build / list isolated Pillow environments.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (once) the named environments")
    b.add_argument("names", nargs="+")
    b.add_argument("--force", action="store_true", help="rebuild even if built")
    sub.add_parser("list", help="list specs and whether they are built")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for n, s in sorted(ENV_SPECS.items()):
            info = built_info(n)
            state = f"built in {info['build_seconds']}s: {info['versions']}" if info else "not built"
            print(f"{n}: {' '.join(s.requirements)} -> {s.path} ({state})")
        return 0
    rc = 0
    for n in args.names:
        try:
            t = time.perf_counter()
            path = build(n, force=args.force)
            print(f"{n}: {path} ({time.perf_counter() - t:.1f}s)")
        except IsolatedEnvError as e:
            print(f"error: {e}", file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
