"""Tests of ``edgecomp.android``."""
