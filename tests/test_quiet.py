"""Quiet by default: third-party chatter goes to the debug log, edgecomp's own lines stay on the console."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecomp.quiet import THIRDPARTY, ConsoleFilter, captured_output

ROOT = Path(__file__).resolve().parents[1]
# lines a default build printed before: torchao, torch's pytree/torchvision notices, litert-torch's JAX
# lowering log, LiteRT's C++ XNNPACK INFO, litert-torch's quantizer print
CHATTER = ("XNNPACK", "Use JAX lowering", "triton", "Failed to load", "pytree", "partition has more than one output",
           "torchvision is not installed", "fontManager")


def _fd_target(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def test_fd_writes_are_captured_and_logged_at_debug(caplog, capfd):
    before = (_fd_target(1), _fd_target(2))
    with caplog.at_level(logging.DEBUG, logger="edgecomp.thirdparty"), captured_output("unit"):
        os.write(2, b"INFO: from C on fd 2\n")
        os.write(1, b"progress from C on fd 1\n")
        print("python print", flush=True)
    assert (_fd_target(1), _fd_target(2)) == before
    out, err = capfd.readouterr()
    assert "from C" not in out + err and "python print" not in out + err
    logged = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("edgecomp.thirdparty", logging.DEBUG, "[unit] INFO: from C on fd 2") in logged
    assert ("edgecomp.thirdparty", logging.DEBUG, "[unit] progress from C on fd 1") in logged
    assert ("edgecomp.thirdparty", logging.DEBUG, "[unit] python print") in logged


def test_exception_propagates_fds_restored_and_output_logged(caplog, capfd):
    before = (_fd_target(1), _fd_target(2))
    caplog.set_level(logging.DEBUG, logger="edgecomp.thirdparty")
    with pytest.raises(ValueError, match="boom"), captured_output("failing"):
        os.write(2, b"last words\n")
        raise ValueError("boom")
    assert (_fd_target(1), _fd_target(2)) == before
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("[failing] failed (ValueError: boom)") for m in messages)
    assert "[failing] last words" in messages
    os.write(2, b"after the block\n")
    assert "after the block" in capfd.readouterr().err


def test_nested_blocks_and_own_log_lines_reach_the_console(tmp_path, capfd):
    """edgecomp's logger keeps writing to the real stderr inside a (nested) capture."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ConsoleFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        with captured_output("outer"):
            logging.getLogger("edgecomp.test").info("own line, outer")
            with captured_output("inner"):
                os.write(2, b"inner chatter\n")
                logging.getLogger("edgecomp.test").warning("own line, inner")
                logging.getLogger("somepackage").warning("third-party warning")
                logging.getLogger("somepackage").error("third-party error")
            os.write(1, b"outer chatter\n")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    out, err = capfd.readouterr()
    assert "own line, outer" in err and "own line, inner" in err and "third-party error" in err
    assert "chatter" not in out + err and "third-party warning" not in err
    assert THIRDPARTY.name == "edgecomp.thirdparty"


def _cli(tmp_path: Path, *extra: str) -> str:
    cmd = [sys.executable, "-m", "edgecomp", *extra, "build", "--target", "android-arm64",
           "--formats", "tflite,onnx", "--runs", "3", "--out", str(tmp_path / "bundle")]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    return text


def test_default_build_console_has_no_third_party_chatter(tmp_path):
    text = _cli(tmp_path)
    assert "[export 1/2] tflite" in text and "bundle:" in text and "tflite: parity passed" in text
    leaked = [line for line in text.splitlines() if any(p.lower() in line.lower() for p in CHATTER)]
    assert leaked == []


def test_debug_build_shows_the_chatter_and_log_file_keeps_it(tmp_path):
    log = tmp_path / "debug.log"
    text = _cli(tmp_path, "--debug", "--log-file", str(log))
    assert "[export 1/2] tflite" in text
    assert any(p in text for p in ("XNNPACK", "Use JAX lowering", "torchvision is not installed"))
    assert "edgecomp.thirdparty" in log.read_text()
