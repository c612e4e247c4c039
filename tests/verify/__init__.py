"""Tests of ``edgecomp.verify``."""
