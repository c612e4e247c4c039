"""Profiling: latency and memory measured on the host, on Android devices, or predicted."""
