"""``edgecomp verify``: check a bundle's files compute the same on ARM64 (under qemu-user emulation)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgecomp.errors import ConfigError

NAME = "verify"
HELP = "run a bundle's .tflite/.onnx files on emulated ARM64 and compare them with the host"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edgecomp verify``."""
    from edgecomp.verify.userland import CPU_MIDR, DEFAULT_CPU

    parser.add_argument("bundle", nargs="?", type=Path, help="bundle folder written by `edgecomp build`")
    parser.add_argument("--arch", default="arm64", choices=["arm64"], help="architecture to verify on")
    parser.add_argument("--cpu", default=DEFAULT_CPU,
                        help=f"CPU qemu emulates: one of {', '.join(sorted(CPU_MIDR))}, optionally with qemu "
                             f"feature switches (e.g. max,sme=off); default {DEFAULT_CPU}: NEON + dot-product")
    parser.add_argument("--samples", type=int, default=None, help="use only the first N inputs of samples.npz")
    parser.add_argument("--timeout", type=float, default=900, help="seconds the emulated run may take")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--out", type=Path, help="also write the report as JSON to this file (not into the bundle)")
    parser.add_argument("--setup-arm64", action="store_true",
                        help="set up the ARM64 userland (qemu-user-static, Debian arm64 Python, aarch64 wheels)")
    parser.add_argument("--force", action="store_true",
                        help="with --setup-arm64: rebuild even if present, and replace a --root folder that is "
                             "not a userland (its files are deleted)")
    parser.add_argument("--root", type=Path, default=None,
                        help="userland folder (default: $EDGECOMP_ARM64_ROOT or the user cache edgecomp/arm64)")


def _write_report(path: Path, text: str) -> None:
    """Write the JSON report to ``path``; a failed write is a clear error."""
    from edgecomp.fsutil import write_error

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise write_error(exc, path.parent) from exc


def run(args: argparse.Namespace) -> int:
    """Set up the userland, or verify a bundle; exit 2 when a file fails the comparison."""
    from edgecomp.verify.arm64 import format_table, require_passed, verify_bundle
    from edgecomp.verify.userland import default_root, setup_userland

    if args.setup_arm64:
        info = setup_userland(args.root, force=args.force)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            state = "already present" if info["skipped"] else f"set up in {info['setup_seconds']:.0f} s"
            print(f"ARM64 userland {state} at {args.root or default_root()}: Python {info['python']}, "
                  f"numpy {info['numpy']}, ai-edge-litert {info['ai-edge-litert']}, "
                  f"onnxruntime {info['onnxruntime']}; {info['qemu']}")
        if args.bundle is None:
            return 0
    if args.bundle is None:
        raise ConfigError("no bundle given", "usage: edgecomp verify BUNDLE --arch arm64 "
                          "(or `edgecomp verify --setup-arm64` to prepare the emulator)")
    if args.out is not None and args.out.is_dir():  # say so now, not after minutes of emulation
        raise ConfigError(f"--out {args.out} is a folder", "pass a file name for the report, e.g. --out verify.json")
    report = verify_bundle(args.bundle, arch=args.arch, root=args.root, cpu=args.cpu,
                           max_samples=args.samples, timeout=args.timeout)
    if args.out:
        _write_report(args.out, report.model_dump_json(indent=2) + "\n")
    print(report.model_dump_json(indent=2) if args.json else format_table(report))
    require_passed(report)
    return 0
