"""The EdgecompError family: every expected failure carries a message (the cause) and a hint (the fix).

Each class carries its exit code (``exit_code``: 2, or 3 for an infeasible budget); :func:`edgecomp.cli.main`
returns it and prints a traceback only with ``--debug``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgecompError(Exception):
    """An expected failure with a cause (``message``) and a fix (``hint``)."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ModelLoadError(EdgecompError):
    """A model file is missing, unreadable, unsafe or of an unknown kind."""


class ConfigError(EdgecompError):
    """A target, profile, recipe or stage configuration is malformed or unknown."""


class ExportError(EdgecompError):
    """A format could not export the model (for example an unsupported op)."""


class ParityError(EdgecompError):
    """An exported artifact does not compute what the PyTorch model computes."""


class DeviceError(EdgecompError):
    """adb is missing, or no usable device is attached, or the device failed mid-run."""


class InfeasibleBudgetError(EdgecompError):
    """No candidate recipe meets the budgets; the message names the best reachable numbers."""

    exit_code = 3


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest choice to ``name``, or '' if none is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{matches[0]}'?" if matches else ""
