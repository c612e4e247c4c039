"""Hostile data files, outputs and arguments end in a clear error (cause and fix), never a traceback or a bomb.

Attack files are small and made here: a .npz whose member inflates to hundreds of MB of zeros from about
1 MB on disk, .npy headers that declare far more data than they hold, strings, mismatched labels.
"""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npformat

from edgecomp.cli import main
from edgecomp.data import MAX_DATA_BYTES, MAX_DATA_BYTES_ENV, load_npz, max_data_bytes
from edgecomp.errors import ConfigError

TINY_MODEL_PY = """
from torch import nn

def tiny():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
"""


def _header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _write_member(zf: zipfile.ZipFile, name: str, header: bytes, zero_bytes: int) -> None:
    """Write ``name``.npy as a header and ``zero_bytes`` zeros, streamed in 1 MiB chunks (never held)."""
    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
        f.write(header)
        chunk = bytes(1 << 20)
        for start in range(0, zero_bytes, len(chunk)):
            f.write(chunk[: min(len(chunk), zero_bytes - start)])


def _labels(zf: zipfile.ZipFile, n: int) -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros(n, np.int64))
    zf.writestr("y.npy", buf.getvalue())


@pytest.fixture
def good_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((20, 1, 4, 4)).astype(np.float32), "y": rng.integers(0, 4, 20)}


def _npz(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_good_data_loads_without_copying_float32_inputs(tmp_path, good_arrays):
    ds = load_npz(_npz(tmp_path, **good_arrays))
    assert (ds.size("train"), ds.size("val"), ds.size("test")) == (12, 4, 4)
    assert ds.arrays("train")[0].dtype == np.float32 and ds.arrays("train")[1].dtype == np.int64


def test_npz_bomb_is_refused_before_anything_big_is_allocated(tmp_path, monkeypatch):
    """256 MiB of zeros in a ~1 MB file, over a 64 MiB limit: refused from the headers alone."""
    monkeypatch.setenv(MAX_DATA_BYTES_ENV, str(64 << 20))
    n = (256 << 20) // (4 * 64)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        _write_member(zf, "x", _header((n, 1, 8, 8)), n * 64 * 4)
        _labels(zf, n)
    assert path.stat().st_size < 4 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="over the 67,108,864-byte limit") as err:
            load_npz(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak:,} bytes allocated while refusing the bomb"
    assert "x [1048576, 1, 8, 8]" in err.value.message and MAX_DATA_BYTES_ENV in err.value.hint


def test_default_limit_is_bounded_and_the_env_var_must_be_a_number(monkeypatch):
    monkeypatch.delenv(MAX_DATA_BYTES_ENV, raising=False)
    assert 0 < max_data_bytes() <= MAX_DATA_BYTES
    monkeypatch.setenv(MAX_DATA_BYTES_ENV, "lots")
    with pytest.raises(ConfigError, match=MAX_DATA_BYTES_ENV):
        max_data_bytes()


def test_header_declaring_2_to_the_36_elements_is_refused(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        _write_member(zf, "x", _header((2**36,)), 64)
        _labels(zf, 1)
    with pytest.raises(ConfigError, match=r"array 'x' declares shape \[68719476736\] .* but holds 64 bytes"):
        load_npz(path)


def test_a_bare_npy_file_is_not_loaded(tmp_path):
    path = tmp_path / "huge.npy"
    path.write_bytes(_header((2**36,)) + bytes(64))
    with pytest.raises(ConfigError, match="not a .npz archive") as err:
        load_npz(path)
    assert "numpy.savez" in err.value.hint


@pytest.mark.parametrize("name, value, match", [
    ("x", np.array(["a", "b"] * 10), r"'x' has dtype <U1"),
    ("y", np.array(["cat", "dog"] * 10), r"'y' has dtype <U3"),
    ("y", np.array([{"a": 1}] * 20, dtype=object), r"'y' has dtype object"),
    ("x", np.ones((20, 1, 4, 4), np.complex64), r"'x' has dtype complex64"),
    ("x", np.ones((20, 4, 4), np.float32), r"'x' is float32 of shape \[20, 4, 4\]"),
    ("x", np.ones((20, 1, 4, 4), np.int64), r"'x' is int64"),
    ("y", np.zeros(19, np.int64), r"'y' has shape \[19\] but 'x' holds 20 inputs"),
    ("y", np.full(20, 0.5), r"'y' holds non-integer labels"),
    ("y", np.full(20, -1), r"'y' is not class indices"),
    ("x", np.full((20, 1, 4, 4), np.nan, np.float32), r"'x' holds NaN or infinite values"),
])
def test_bad_arrays_are_named_with_the_fix(tmp_path, good_arrays, name, value, match):
    path = tmp_path / "bad.npz"
    arrays = {**good_arrays, name: value}
    with zipfile.ZipFile(path, "w") as zf:  # np.savez refuses nothing, but pickles object arrays
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=True)
            zf.writestr(f"{key}.npy", buf.getvalue())
    with pytest.raises(ConfigError, match=match) as err:
        load_npz(path)
    assert err.value.hint


@pytest.mark.parametrize("n", [0, 1, 4])
def test_too_few_inputs_for_three_splits(tmp_path, n):
    path = _npz(tmp_path, x=np.zeros((n, 3), np.float32), y=np.zeros(n, np.int64))
    with pytest.raises(ConfigError, match="no inputs|leaves one empty"):
        load_npz(path)


def test_train_test_form_checks_both_pairs(tmp_path, good_arrays):
    x, y = good_arrays["x"], good_arrays["y"]
    with pytest.raises(ConfigError, match="'x_test' holds no inputs"):
        load_npz(_npz(tmp_path, x_train=x, y_train=y, x_test=x[:0], y_test=y[:0]))
    with pytest.raises(ConfigError, match=r"x_test inputs are \[1, 2, 8\]"):
        load_npz(_npz(tmp_path, x_train=x, y_train=y, x_test=x.reshape(20, 1, 2, 8), y_test=y))
    ds = load_npz(_npz(tmp_path, x_train=x, y_train=y, x_test=x, y_test=y.astype(np.float64)))
    assert (ds.size("train"), ds.size("val"), ds.arrays("test")[1].dtype) == (16, 4, np.int64)


def test_build_with_string_data_exits_2_and_writes_no_bundle(tmp_path, capsys):
    model = tmp_path / "models.py"
    model.write_text(TINY_MODEL_PY)
    data = _npz(tmp_path, x=np.array(["a"] * 10), y=np.zeros(10, np.int64))
    out = tmp_path / "b"
    code = main(["build", f"{model}:tiny", "--input-shape", "1,1,4,4", "--data", str(data), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "'x' has dtype <U1" in err and "hint:" in err and "Traceback" not in err
    assert not out.exists()


# --- parity: all-zero outputs, NaN/Inf outputs (finding 9) -------------------------------------------------


@pytest.mark.parametrize("quantized", [True, False])
def test_identical_all_zero_outputs_pass_parity(quantized):
    from edgecomp.export.parity import compare_to_reference

    zeros = np.zeros((8, 10), np.float32)
    p = compare_to_reference(zeros, zeros.copy(), quantized=quantized)
    assert (p.status, p.cosine, p.max_abs_err, p.top1_agreement) == ("passed", 1.0, 0.0, 100.0)


def test_zero_row_against_a_non_zero_row_still_fails_quantized_parity():
    from edgecomp.export.parity import compare_to_reference

    ref = np.ones((4, 10), np.float32)
    out = ref.copy()
    out[2] = 0.0
    p = compare_to_reference(ref, out, quantized=True)
    assert p.status == "failed" and p.cosine == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("quantized", [True, False])
def test_non_finite_artifact_outputs_fail_with_a_note(bad, quantized):
    from edgecomp.export.parity import compare_to_reference

    ref = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)
    out = ref.copy()
    out[3, 4] = bad
    p = compare_to_reference(ref, out, quantized=quantized)
    assert p.status == "failed" and "artifact's outputs hold 1 NaN/Inf value(s) of 60" in p.note
    assert "NaN/Inf" in p.summary() and p.criterion in p.summary()
    all_nan = compare_to_reference(ref, np.full_like(ref, np.nan), quantized=quantized)
    assert all_nan.status == "failed" and "60 NaN/Inf" in all_nan.note
    assert compare_to_reference(np.full_like(ref, bad), ref, quantized=quantized).status == "failed"


def test_verify_and_build_parity_share_one_cosine():
    from edgecomp.export import parity

    tiny = np.full((2, 4), 1e-8)
    assert np.allclose(parity.cosine_rows(tiny, tiny), 1.0)  # no floor that scores tiny outputs as different
    zeros = np.zeros((3, 5), np.float32)
    assert parity.compare_across_machines(zeros, zeros, "int8").passed


# --- command-line arguments (finding 11) ---------------------------------------------------------------------


@pytest.mark.parametrize("flag, value, message", [
    ("--runs", "0", "argument --runs: '0' is not a whole number of 1 or more"),
    ("--runs", "-3", "argument --runs: '-3' is not a whole number of 1 or more"),
    ("--threads", "0", "argument --threads: '0' is not a whole number of 1 or more"),
    ("--input-shape", "1,3,x,8", "argument --input-shape: '1,3,x,8' is not a shape like 1,3,224,224"),
    ("--input-shape", "1,,8", "argument --input-shape: '1,,8' is not a shape like 1,3,224,224"),
])
def test_bad_build_arguments_are_refused_before_any_work(tmp_path, capsys, flag, value, message):
    model = tmp_path / "models.py"
    model.write_text(TINY_MODEL_PY)
    out = tmp_path / "b"
    args = ["build", f"{model}:tiny", "--out", str(out)]
    args += [flag, value] if flag == "--input-shape" else ["--input-shape", "1,1,4,4", flag, value]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_input_shape_accepts_both_documented_spellings():
    from edgecomp.commands.build import _shape

    assert _shape("1,3,8,8") == _shape("1x3x8x8") == _shape(" 1, 3, 8, 8 ") == [1, 3, 8, 8]


@pytest.mark.parametrize("content, problem", [
    (bytes(range(256)) * 4, "not UTF-8 text"),
    (b"\xff\xfe{\x00}\x00", "not UTF-8 text"),
    (b"not json at all", "not JSON"),
    (b'{"title": "EdgecompManifest"}', "stale"),
])
def test_schema_check_of_a_binary_or_foreign_file_is_a_clear_error(tmp_path, capsys, content, problem):
    path = tmp_path / "edgecomp.schema.json"
    path.write_bytes(content)
    assert main(["schema", "--check", str(path)]) == 2
    err = capsys.readouterr().err
    assert problem in err and "edgecomp schema --out" in err and "Traceback" not in err


def test_schema_check_accepts_crlf_line_ends_and_refuses_a_huge_file(tmp_path, capsys):
    from edgecomp.schema import schema_text

    path = tmp_path / "s.json"
    path.write_bytes(schema_text().replace("\n", "\r\n").encode())
    assert main(["schema", "--check", str(path)]) == 0
    path.write_bytes(b" " * (10 * len(schema_text())))
    assert main(["schema", "--check", str(path)]) == 2 and "far larger" in capsys.readouterr().err


# --- the demo app's result file (profile --via app) -----------------------------------------------------------

GOOD_RESULT = {"result_version": 1, "status": "ok", "file": "m.tflite", "threads": 4, "warmup": 1, "runs": 3,
               "init_ms": 5.0, "times_ms": [1.0, 2.0, 4.0], "device": {"model": "Pixel"}}


@pytest.mark.parametrize("change, field", [
    ({"times_ms": [1.0, float("nan"), 2.0]}, "times_ms"),
    ({"times_ms": [1.0, float("inf"), 2.0]}, "times_ms"),
    ({"times_ms": [1.0, -2.0, 2.0]}, "times_ms"),
    ({"times_ms": [1.0, "2", 2.0]}, "times_ms"),
    ({"times_ms": [[1.0], [2.0], [3.0]]}, "times_ms"),
    ({"times_ms": "1,2,3"}, "times_ms"),
    ({"init_ms": float("nan")}, "init_ms"),
    ({"runs": 0}, "runs"),
    ({"runs": 5}, "runs=5 but holds 3"),
    ({"threads": 0}, "threads"),
    ({"threads": True}, "threads"),
    ({"device": "Pixel"}, "device"),
])
def test_app_results_with_bad_times_or_counts_are_refused(change, field):
    from edgecomp.android.via_app import parse_result
    from edgecomp.errors import DeviceError

    assert parse_result(dict(GOOD_RESULT), "X").p50_ms == 2.0
    with pytest.raises(DeviceError, match=field) as err:
        parse_result({**GOOD_RESULT, **change}, "X")
    assert "android_demo" in err.value.hint


def test_app_result_from_json_with_nan_tokens_is_refused():
    import json

    from edgecomp.android.via_app import parse_result
    from edgecomp.errors import DeviceError

    text = json.dumps({**GOOD_RESULT, "times_ms": [1.0, 2.0, 3.0]}).replace("2.0", "NaN")
    with pytest.raises(DeviceError, match="times_ms"):
        parse_result(json.loads(text), "X")
    with pytest.raises(DeviceError, match="JSON list"):
        parse_result([GOOD_RESULT], "X")  # type: ignore[arg-type]


# --- report.html escapes what a user controls ------------------------------------------------------------------


def test_report_html_escapes_model_name_recipe_and_notes():
    from edgecomp.records import ArtifactRecord, BuildReport, ModelRecord, Parity, StageRecord
    from edgecomp.report.html import render_html

    evil = "<script>alert(1)</script>"
    report = BuildReport(
        edgecomp_version="0", created=evil, target=evil, hardware=evil,
        model=ModelRecord(name=evil, source=evil, params=1, macs=1), recipe=[evil], parity_inputs=evil,
        stages=[StageRecord(name=evil, seconds=0.0, params=1, macs=1, notes=[evil])],
        artifacts=[ArtifactRecord(format=evil, dtype=evil, notes=[evil],
                                  parity=Parity(status="failed", note=evil))],
    )
    page = render_html(report)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_build_and_verify_rules_share_their_thresholds():
    from edgecomp.export import parity

    host = np.eye(4, dtype=np.float32) * 5
    assert parity.compare_to_reference(host, host + 2 * parity.ATOL).status == "failed"  # elementwise
    assert parity.compare_across_machines(host, host + 2 * parity.ATOL, "fp32").passed  # scales with max|host|
    assert "99%" in parity.cross_machine_criterion("int8") and "0.0001" in parity.cross_machine_criterion("fp32")
