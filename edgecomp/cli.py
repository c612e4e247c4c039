"""Command-line interface: a thin layer over the library.

Each subcommand lives in ``edgecomp/commands/<name>.py`` and defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; this module finds them, parses the command line,
and maps :class:`EdgecompError` to its exit code (2, or 3 for an infeasible budget).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback

from edgecomp import commands
from edgecomp.errors import EdgecompError
from edgecomp.fsutil import exit_on_sigterm


def _command_modules() -> list:
    names = sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"edgecomp.commands.{name}") for name in names]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with one subparser per module in ``edgecomp.commands``."""
    parser = argparse.ArgumentParser(prog="edgecomp", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks and debug logs")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgecomp`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if debug else "%(message)s",
    )
    if not debug:
        _quiet_third_party()
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    try:
        with exit_on_sigterm():  # SIGTERM unwinds like Ctrl-C, so staging folders are removed
            return int(args._run(args) or 0)
    except EdgecompError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _quiet_third_party() -> None:
    """Silence chatty converters (coremltools, torch.onnx, absl) unless --debug."""
    import warnings

    warnings.filterwarnings("ignore")
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")
    for name in ("coremltools", "torch", "torch.onnx", "absl", "jax", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
