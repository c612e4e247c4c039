"""`edgecomp targets [show NAME]`: list deployment targets, or print one."""

from __future__ import annotations

import argparse

NAME = "targets"
HELP = "list deployment targets, or show one (`edgecomp targets show NAME`)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `edgecomp targets`."""
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list", help="list (default) or show")
    p.add_argument("name", nargs="?", help="target to show")


def run(args: argparse.Namespace) -> int:
    """Print the list, or one target's YAML after validating it."""
    from edgecomp.errors import ConfigError
    from edgecomp.targets import available, load_target, resolve_path

    if args.action == "show":
        if not args.name:
            raise ConfigError("`edgecomp targets show` needs a target name", "e.g. edgecomp targets show android-arm64")
        load_target(args.name)
        print(resolve_path("targets", args.name).read_text(), end="")
        return 0
    for name, path in available("targets").items():
        target = load_target(str(path), check_methods=False)  # the list never imports torch
        print(f"{name:16s} {target.description}")
    return 0
