"""A tiny bundle on disk for the tests of commands that read bundles (verify, isolation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecomp.bundle import SAMPLES_NAME, FileEntry, Manifest, TensorInfo, now_iso, sha256_of, write_json
from edgecomp.spec import ModelSpec


def fake_bundle(folder: Path, samples: bool = True) -> Path:
    """A bundle folder whose manifest lists one (fake, 15-byte) fp32 model.onnx, with samples.npz unless told."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"not really onnx")
    spec = ModelSpec(name="tiny", input_shape=[1, 1, 8, 8])
    tensor = TensorInfo(name="input", shape=[1, 1, 8, 8], dtype="float32", layout="NCHW")
    entry = FileEntry(format="onnx", path="model.onnx", bytes=15, sha256=sha256_of(folder / "model.onnx"),
                      dtype="fp32", inputs=[tensor], outputs=[tensor])
    write_json(folder / "edgecomp.json", Manifest(schema_version=1, edgecomp_version="0", created=now_iso(),
                                                  target="android-arm64", model=spec, files=[entry]))
    if samples:
        np.savez(folder / SAMPLES_NAME, x=np.zeros((2, 1, 8, 8), np.float32))
    return folder
