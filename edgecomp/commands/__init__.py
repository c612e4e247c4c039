"""CLI subcommands, one module each (see :mod:`edgecomp.cli` for the protocol)."""
