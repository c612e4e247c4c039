"""The artifact cache: hit on identical input, miss on any change, integrity, LRU cap, concurrent writers,
and real builds that reuse an identical export (and say so) unless --no-cache."""

from __future__ import annotations

import json
import multiprocessing
import os

import numpy as np
import pytest
import torch
from torch import nn

from edgecomp.artifact_cache import ArtifactCache, model_digest
from edgecomp.bundle import FileEntry, sha256_of
from edgecomp.records import ArtifactRecord


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)).eval()


def _key(model=None, fmt="onnx", **changes):
    """build's own cache key for the default target, with ``changes`` to its inputs."""
    from edgecomp.artifact_cache import package_versions
    from edgecomp.build import BuildOptions, _cache_key
    from edgecomp.compress.base import BuildContext, ExportOptions
    from edgecomp.spec import ModelSpec
    from edgecomp.targets import load_profile, load_target

    target = load_target("android-arm64")
    spec = ModelSpec(name="net", input_shape=[1, 1, 8, 8])
    opts = changes.get("opts", BuildOptions())
    ctx = BuildContext(spec=spec, target=target, profile=load_profile(target.hardware),
                       export=changes.get("export", ExportOptions()), threads=opts.threads or 2)
    x = np.zeros((4, 1, 8, 8), np.float32)
    return _cache_key(fmt, model if model is not None else _net(), ctx, opts,
                      changes.get("calibration", x), x, None, changes.get("versions", package_versions()))


def test_key_is_stable_for_identical_input_and_changes_with_any_input():
    from edgecomp.artifact_cache import package_versions
    from edgecomp.build import BuildOptions
    from edgecomp.compress.base import ExportOptions, Int8Export

    base = _key()
    assert _key() == base  # a fresh model with the same weights and the same settings
    tweaked = _net()
    with torch.no_grad():
        tweaked[4].bias[0] += 1e-6
    bumped = {**package_versions(), "edgecomp": "9.9.9"}
    pruned = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(108, 10))
    others = {
        "weights": _key(tweaked),
        "buffers (BN statistics)": _key(_bn_moved()),
        "structure (a recipe's pruning)": _key(pruned.eval()),
        "export dtype (a recipe's quantization)": _key(export=ExportOptions(dtype="fp16")),
        "export settings": _key(export=ExportOptions(int8=Int8Export(weights="per-tensor"))),
        "format": _key(fmt="tflite"),
        "host runs": _key(opts=BuildOptions(runs=7)),
        "threads": _key(opts=BuildOptions(threads=1)),
        "calibration data": _key(calibration=np.ones((4, 1, 8, 8), np.float32)),
        "edgecomp version": _key(versions=bumped),
        "converter version": _key(versions={**package_versions(), "onnx": "0.0.1"}),
    }
    for what, key in others.items():
        assert key != base, f"a change of {what} did not change the key"
    assert len(set(others.values())) == len(others)


def _bn_moved() -> nn.Module:
    m = _net()
    m.train()(torch.randn(8, 1, 8, 8))  # updates BatchNorm running statistics (buffers), not parameters
    return m.eval()


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_model_digest_covers_quantized_tensors():
    q = torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8)
    a, b = nn.Module(), nn.Module()
    a.register_buffer("w", q)
    b.register_buffer("w", torch.quantize_per_tensor(q.dequantize(), 0.2, 0, torch.qint8))
    assert model_digest(a) != model_digest(b)


def _entry(tmp_path, text: str = "weights") -> tuple[object, ArtifactRecord, FileEntry]:
    src = tmp_path / f"src-{len(text)}"
    src.mkdir(exist_ok=True)
    path = src / "model.onnx"
    path.write_text(text * 100)
    sha = sha256_of(path)
    record = ArtifactRecord(format="onnx", path="model.onnx", dtype="fp32", bytes=path.stat().st_size, sha256=sha,
                            measured_at="2024-01-02T03:04:05+00:00")
    entry = FileEntry(format="onnx", path="model.onnx", bytes=record.bytes, sha256=sha, dtype="fp32", inputs=[],
                      outputs=[])
    return path, record, entry


def test_store_then_restore_copies_the_file_and_marks_the_record_cached(tmp_path):
    cache = ArtifactCache(tmp_path / "cache", max_bytes=10**9)
    path, record, entry = _entry(tmp_path)
    assert cache.restore("k1", tmp_path, "unused") is None  # miss on an empty cache
    cache.store("k1", path, record, entry)
    out = tmp_path / "bundle"
    out.mkdir()
    got = cache.restore("k1", out, "model.onnx")
    assert got is not None
    rec, file_entry = got
    assert rec.cached and rec.measured_at == "2024-01-02T03:04:05+00:00" and file_entry == entry
    assert (out / "model.onnx").read_bytes() == path.read_bytes()
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == ["k1"]


def test_a_corrupted_entry_is_discarded_not_used(tmp_path):
    cache = ArtifactCache(tmp_path / "cache", max_bytes=10**9)
    path, record, entry = _entry(tmp_path)
    cache.store("k1", path, record, entry)
    (tmp_path / "cache" / "k1" / "model.onnx").write_text("tampered")
    out = tmp_path / "bundle"
    out.mkdir()
    assert cache.restore("k1", out, "model.onnx") is None
    assert not (out / "model.onnx").exists() and not (tmp_path / "cache" / "k1").exists()
    (tmp_path / "cache" / "k2").mkdir()
    (tmp_path / "cache" / "k2" / "entry.json").write_text("{not json")
    assert cache.restore("k2", out, "model.onnx") is None


def test_the_size_cap_evicts_the_least_recently_used_entry(tmp_path):
    path, record, entry = _entry(tmp_path)
    one = path.stat().st_size + len(json.dumps(record.model_dump(mode="json"))) + 400
    cache = ArtifactCache(tmp_path / "cache", max_bytes=int(2.9 * one))
    for key in ("a", "b"):
        cache.store(key, path, record, entry)
    os.utime(tmp_path / "cache" / "a", (1000, 1000))
    os.utime(tmp_path / "cache" / "b", (2000, 2000))
    out = tmp_path / "out"
    out.mkdir()
    assert cache.restore("a", out, "model.onnx") is not None  # a is now the most recently used
    cache.store("c", path, record, entry)
    cache.store("d", path, record, entry)
    names = sorted(p.name for p in cache.entries())
    assert "b" not in names and "a" in names and "d" in names
    assert sum(sum(f.stat().st_size for f in p.iterdir()) for p in cache.entries()) <= cache.max_bytes


def _store_and_restore(args) -> bool:
    root, src_dir, n, worker = args
    from pathlib import Path

    cache = ArtifactCache(root, max_bytes=10**9)
    path = Path(src_dir) / "model.onnx"
    sha = sha256_of(path)
    record = ArtifactRecord(format="onnx", path="model.onnx", dtype="fp32", bytes=path.stat().st_size, sha256=sha)
    entry = FileEntry(format="onnx", path="model.onnx", bytes=record.bytes, sha256=sha, dtype="fp32", inputs=[],
                      outputs=[])
    ok = True
    for i in range(n):
        out = Path(root).parent / f"out-{worker}-{i}"  # one pool process may run two of the four
        out.mkdir()
        got = cache.restore("shared", out, "model.onnx")
        if got is None:
            cache.store("shared", path, record, entry)
        else:
            ok = ok and (out / "model.onnx").read_bytes() == path.read_bytes()
    return ok


def test_concurrent_builds_share_one_entry_and_never_see_a_partial_one(tmp_path):
    path, _, _ = _entry(tmp_path, "x" * 2000)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        results = pool.map(_store_and_restore, [(str(tmp_path / "cache"), str(path.parent), 5, k) for k in range(4)])
    assert all(results)
    cache_dir = tmp_path / "cache"
    assert sorted(p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock")) == ["shared"]
    assert sha256_of(cache_dir / "shared" / "model.onnx") == sha256_of(path)


@pytest.fixture
def cache_on(tmp_path, monkeypatch):
    """The cache turned on (tests run with it off) in a folder of this test's own."""
    monkeypatch.delenv("EDGECOMP_NO_CACHE", raising=False)
    monkeypatch.setenv("EDGECOMP_ARTIFACT_CACHE_DIR", str(tmp_path / "artifact-cache"))
    return tmp_path / "artifact-cache"


def test_an_identical_rebuild_reuses_the_export_and_says_so_unless_no_cache(tmp_path, cache_on, capsys):
    from edgecomp.cli import main

    argv = ["build", "--recipe", "", "--formats", "onnx", "--runs", "3"]
    assert main([*argv, "--out", str(tmp_path / "first")]) == 0
    first = json.loads((tmp_path / "first" / "report.json").read_text())["artifacts"][0]
    assert first["cached"] is False and first["measured_at"]
    assert [p.name.startswith(("build-", "loaded-")) for p in ArtifactCache(cache_on).entries()].count(False) == 1
    capsys.readouterr()

    # --fresh-search: the whole build is not reused (tests/test_build_reuse.py), so each export is looked up
    assert main([*argv, "--fresh-search", "--out", str(tmp_path / "again")]) == 0
    report = json.loads((tmp_path / "again" / "report.json").read_text())
    again = report["artifacts"][0]
    assert again["cached"] is True and again["measured_at"] == first["measured_at"]
    assert again["parity"] == first["parity"] and again["latency"] == first["latency"]
    assert (tmp_path / "again" / "model.onnx").read_bytes() == (tmp_path / "first" / "model.onnx").read_bytes()
    assert "export:onnx" not in [p["name"] for p in report["phases"]]
    assert f"onnx: cached from {first['measured_at']}" in capsys.readouterr().out
    assert "cached from" in (tmp_path / "again" / "report.html").read_text()

    assert main([*argv, "--no-cache", "--out", str(tmp_path / "fresh")]) == 0
    fresh = json.loads((tmp_path / "fresh" / "report.json").read_text())
    assert fresh["artifacts"][0]["cached"] is False
    assert "export:onnx" in [p["name"] for p in fresh["phases"]]
