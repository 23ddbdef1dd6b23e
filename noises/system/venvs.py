"""Command line for isolated environments (see :mod:`robustbench_sys.noises.system.isolated`)::

    python -m robustbench_sys.noises.system.venvs build pillow9 pillow-simd [--force]
    python -m robustbench_sys.noises.system.venvs list
    python -m robustbench_sys.noises.system.venvs define pillow8 "Pillow==8.4.0" "numpy<2" [--no-resize] [--no-build]

``define`` writes the spec file ``<cache>/envs/NAME.toml`` (see :mod:`robustbench_sys.noises.system.isolated`)
and builds the venv; from then on ``decoder/NAME`` and ``resize/NAME-*`` are registered noises
that any suite can name (e.g. ``[[conditions]] decoder = "pillow8"``).

What ``define`` accepts (the rules of :mod:`robustbench_sys.noises.system.isolated`): NAME matches
``[a-z0-9][a-z0-9._-]*`` (at most 40 characters) and names no built-in environment or noise
(``pil``, ``opencv``, ``cv2``, ...); each REQUIREMENT is one PEP 508 requirement (``Pillow==8.4.0``,
``pillow @ https://...``), never a pip option; ``--pip-arg`` takes only ``--no-cache-dir``,
``--prefer-binary``, ``--pre``, ``--no-build-isolation``, ``--no-binary=PKGS``, ``--only-binary=PKGS``
(write it as ``--pip-arg=--no-binary=pillow-simd``).  A broken rule: exit status 2 and one
``error: ...`` line naming what broke which rule, with nothing written.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import NoReturn

from robustbench_sys.noises.system.isolated import ENV_SPECS, IsolatedEnvError, build, built_info, write_spec_file

PROG = "python -m robustbench_sys.noises.system.venvs"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``error: ...`` line (exit status 2), like the rule errors of ``define``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def main(argv=None) -> int:
    ap = _Parser(prog=PROG, description="Build / list isolated Pillow environments.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (once) the named environments")
    b.add_argument("names", nargs="+")
    b.add_argument("--force", action="store_true", help="rebuild even if built")
    sub.add_parser("list", help="list specs and whether they are built")
    d = sub.add_parser("define", help="write a spec file <cache>/envs/NAME.toml and build it")
    d.add_argument("name")
    d.add_argument("requirements", nargs="+",
                   help='PEP 508 requirements, e.g. "Pillow==8.4.0" "numpy<2" (no pip options)')
    d.add_argument("--pip-arg", action="append", default=[],
                   help="extra pip install argument (repeatable), one of --no-cache-dir, --prefer-binary, --pre, "
                        "--no-build-isolation, --no-binary=PKGS, --only-binary=PKGS; "
                        "write it as --pip-arg=--no-binary=PKGS")
    d.add_argument("--no-resize", action="store_true", help="register decoder/NAME only, no resize/NAME-*")
    d.add_argument("--no-build", action="store_true", help="only write the spec file")
    d.add_argument("--description", default="")
    args, extra = ap.parse_known_args(argv)
    if extra:
        if args.cmd == "define" and extra[0].startswith("-"):
            # an option argparse does not know, meant for pip (-r FILE, --index-url=...): refused by rule
            print(f"error: requirement {extra[0]!r}: pip options are not accepted; give PEP 508 requirements "
                  "like 'Pillow==8.4.0' (pip arguments: --pip-arg, see --help)", file=sys.stderr)
            return 2
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.cmd == "define":
        try:
            path = write_spec_file(args.name, args.requirements, pip_args=args.pip_arg,
                                   resize=not args.no_resize, description=args.description)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: isolated environment {args.name!r}: cannot write its spec file ({e})", file=sys.stderr)
            return 1
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
