"""Android: adb, benchmark runs on a device and their output, the demo app protocol, bundle deployment.

Above profile/ (it labels device latencies with :mod:`edgecomp.records`), below the CLI commands.
"""
