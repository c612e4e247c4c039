"""`edgecomp schema [--out PATH | --check PATH]`: the JSON Schema of edgecomp.json.

Prints the schema generated from the manifest model, writes it (``--out``), or checks that a committed
copy is current (``--check``, exit 2 when it is stale).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "schema"
HELP = "print, write (--out) or check (--check) the JSON Schema of the bundle manifest edgecomp.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `edgecomp schema`."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--out", metavar="PATH", help="write the schema to PATH (e.g. schemas/edgecomp.schema.json)")
    group.add_argument("--check", metavar="PATH", help="fail if PATH differs from the generated schema")


def _check_problem(path: Path, expected: str) -> str:
    """Why the committed schema at ``path`` is not ``expected`` ('' when it is), reading at most a little more."""
    if not path.is_file():
        return "missing (or not a file)"
    limit = 2 * len(expected.encode()) + 1  # room for CRLF line ends, which read_text would translate
    try:
        with path.open("rb") as f:
            data = f.read(limit)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if len(data) == limit:
        return "stale: it is far larger than the schema generated from edgecomp.bundle.Manifest"
    try:
        found = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError:
        return "not UTF-8 text (a binary or otherwise encoded file), so not the JSON schema"
    if found == expected:
        return ""
    try:
        json.loads(found)
    except ValueError:
        return "not JSON, so not the schema generated from edgecomp.bundle.Manifest"
    return "stale: it differs from the schema generated from edgecomp.bundle.Manifest"


def run(args: argparse.Namespace) -> int:
    """Print, write or check the schema."""
    from edgecomp.errors import ConfigError
    from edgecomp.schema import schema_text

    text = schema_text()
    if args.check:
        path = Path(args.check)
        problem = _check_problem(path, text)
        if problem:
            raise ConfigError(f"{path} is {problem}", f"regenerate it with `edgecomp schema --out {path}` and commit it")
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
