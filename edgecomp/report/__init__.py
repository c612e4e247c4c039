"""Rendering of a build report (:mod:`edgecomp.records`): console table, HTML page, plots.

The top of the package: only the build and the CLI import it; the records it reads live in :mod:`edgecomp.records`.
"""
