"""Tests of ``edgecomp.export``."""
