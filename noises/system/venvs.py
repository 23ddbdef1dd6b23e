"""Command line for isolated environments (see :mod:`robustbench_sys.noises.system.isolated`)::

    python -m robustbench_sys.noises.system.venvs build pillow9 pillow-simd [--force]
    python -m robustbench_sys.noises.system.venvs list
    python -m robustbench_sys.noises.system.venvs define pillow8 "Pillow==8.4.0" "numpy<2" [--no-resize] [--no-build]

``define`` writes the spec file ``<cache>/envs/NAME.toml`` (see :mod:`robustbench_sys.noises.system.isolated`)
and builds the venv; from then on ``decoder/NAME`` and ``resize/NAME-*`` are registered noises
that any suite can name (e.g. ``[[conditions]] decoder = "pillow8"``).
"""

from __future__ import annotations

import sys
import time

from robustbench_sys.noises.system.isolated import BUILTIN_ENVS as BUILTIN
from robustbench_sys.noises.system.isolated import ENV_SPECS, IsolatedEnvError, build, built_info, write_spec_file


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m robustbench_sys.noises.system.venvs",
                                 description="Build / list isolated Pillow environments.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (once) the named environments")
    b.add_argument("names", nargs="+")
    b.add_argument("--force", action="store_true", help="rebuild even if built")
    sub.add_parser("list", help="list specs and whether they are built")
    d = sub.add_parser("define", help="write a spec file <cache>/envs/NAME.toml and build it")
    d.add_argument("name")
    d.add_argument("requirements", nargs="+", help='pip requirements, e.g. "Pillow==8.4.0" "numpy<2"')
    d.add_argument("--pip-arg", action="append", default=[], help="extra pip install argument (repeatable)")
    d.add_argument("--no-resize", action="store_true", help="register decoder/NAME only, no resize/NAME-*")
    d.add_argument("--no-build", action="store_true", help="only write the spec file")
    d.add_argument("--description", default="")
    args = ap.parse_args(argv)
    if args.cmd == "define":
        if args.name in BUILTIN:
            print(f"error: {args.name!r} is a built-in environment; pick another name", file=sys.stderr)
            return 2
        try:
            path = write_spec_file(args.name, args.requirements, pip_args=args.pip_arg,
                                   resize=not args.no_resize, description=args.description)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{args.name}: spec written to {path}")
        if args.no_build:
            return 0
        args.names, args.force = [args.name], False
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
