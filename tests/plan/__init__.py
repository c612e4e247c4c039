"""Tests of ``edgecomp.plan``."""
