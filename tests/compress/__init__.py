"""Tests of ``edgecomp.compress``."""
