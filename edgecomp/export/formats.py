"""Every export format, registered: importing this module imports each public module of ``edgecomp.export``.

The registry itself is :mod:`edgecomp.export.base` (``get_format``, ``format_names``); nothing here names a
format.
"""

from __future__ import annotations

from edgecomp.export.base import FORMATS, Format, format_names, get_format

format_names()  # import every format module (each registers its Format subclass)

__all__ = ["FORMATS", "Format", "format_names", "get_format"]
