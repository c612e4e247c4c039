"""`edgecomp schema [--out PATH | --check PATH]`: the JSON Schema of edgecomp.json.

Prints the schema generated from the manifest model, writes it (``--out``), or checks that a committed
copy is current (``--check``, exit 2 when it is stale).
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "schema"
HELP = "print, write (--out) or check (--check) the JSON Schema of the bundle manifest edgecomp.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `edgecomp schema`."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--out", metavar="PATH", help="write the schema to PATH (e.g. schemas/edgecomp.schema.json)")
    group.add_argument("--check", metavar="PATH", help="fail if PATH differs from the generated schema")


def run(args: argparse.Namespace) -> int:
    """Print, write or check the schema."""
    from edgecomp.errors import ConfigError
    from edgecomp.schema import schema_text

    text = schema_text()
    if args.check:
        path = Path(args.check)
        if not path.is_file() or path.read_text() != text:
            raise ConfigError(f"{path} is {'missing' if not path.is_file() else 'stale'}: it differs from the "
                              "schema generated from edgecomp.bundle.Manifest",
                              f"regenerate it with `edgecomp schema --out {path}` and commit it")
        print(f"{path} is up to date")
        return 0
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"schema written to {path}")
        return 0
    print(text, end="")
    return 0
