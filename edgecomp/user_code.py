"""Importing the user's own code named on the command line: ``package.module:attr`` or ``path/to/file.py:attr``.

Model factories, dataset factories and metrics are code the user chose to run; edgecomp imports them like any
other Python module (no sandbox) and turns every failure into an ``EdgecompError`` that names the reference.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from edgecomp.errors import ConfigError, EdgecompError


def import_attribute(ref: str, what: str = "factory", error: type[EdgecompError] = ConfigError) -> Any:
    """The object ``attr`` of ``module:attr`` or ``file.py:attr``; ``what`` names it in messages."""
    module_part, sep, attr = ref.rpartition(":")
    if not sep or not module_part or not attr:
        raise error(f"{what} '{ref}' is not of the form module:attribute",
                    f"name the {what} as package.module:name or path/to/file.py:name")
    if module_part.endswith(".py"):
        path = Path(module_part)
        if not path.is_file():
            raise error(f"{what} file not found: {path}", "check the path before ':" + attr + "'")
        spec = importlib.util.spec_from_file_location(f"edgecomp_user_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise error(f"importing {path} failed: {exc!r}", "fix the error in that file") from exc
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as exc:
            raise error(f"cannot import '{module_part}': {exc}", "is the package installed?") from exc
        except Exception as exc:
            raise error(f"importing {module_part} failed: {exc!r}", "fix the error in that module") from exc
    obj = getattr(module, attr, None)
    if obj is None:
        raise error(f"'{attr}' is not defined in {module_part}", f"name a {what} that the module defines")
    return obj


def call_user(fn: Any, ref: str, what: str = "factory", error: type[EdgecompError] = ConfigError) -> Any:
    """``fn()`` with any exception it raises turned into ``error`` naming ``ref``."""
    try:
        return fn()
    except EdgecompError:
        raise
    except Exception as exc:
        raise error(f"{what} {ref} raised {type(exc).__name__}: {exc}",
                    f"fix the {what} (run it on its own in Python to see the traceback)") from exc
