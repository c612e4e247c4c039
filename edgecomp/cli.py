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
    parser.add_argument("--log-file", metavar="PATH", help="also write the full debug log to PATH")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks and debug logs")
        p.add_argument("--log-file", metavar="PATH", default=argparse.SUPPRESS,
                       help="also write the full debug log (third-party output included) to PATH")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgecomp`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    _setup_logging(debug, getattr(args, "log_file", None))
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


def _setup_logging(debug: bool, log_file: str | None) -> None:
    """Console: edgecomp's own lines and other packages' errors (everything with --debug); file: everything.

    Third-party output is captured around converters and runtimes (``edgecomp.quiet``) and logged at
    DEBUG to ``edgecomp.thirdparty``; Python warnings go to the ``py.warnings`` logger.
    """
    import os

    from edgecomp.quiet import ConsoleFilter

    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if debug else logging.INFO)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if debug else "%(message)s"))
    if not debug:
        console.addFilter(ConsoleFilter())
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("GLOG_minloglevel", "2")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "edgecomp_cli", False)]:  # from an earlier main()
        root.removeHandler(old)
        old.close()
    # as logging.basicConfig does, leave an embedding application's (or pytest's) handlers alone
    handlers: list[logging.Handler] = [] if root.handlers else [console]
    if log_file:
        try:
            file = logging.FileHandler(log_file, mode="w", encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write the log file {log_file}: {exc.strerror}", file=sys.stderr)
            print("  hint: pass --log-file a path in a writable folder", file=sys.stderr)
            raise SystemExit(2) from None
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(file)
    for handler in handlers:
        handler.edgecomp_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    if handlers:
        root.setLevel(logging.DEBUG if debug or log_file else logging.INFO)
    logging.captureWarnings(True)


if __name__ == "__main__":
    sys.exit(main())
