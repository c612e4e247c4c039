"""Tests of ``edgecomp.profile``."""
