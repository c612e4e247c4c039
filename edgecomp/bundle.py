"""The bundle: the folder a build writes, and ``edgecomp.json``, the manifest apps read.

A bundle is written into a staging folder next to its destination and moved into place only when
the build succeeds, so a failed build never leaves a partial bundle; a folder that is not a bundle is
never replaced without ``force`` (see :mod:`edgecomp.fsutil`). ``Manifest`` is the versioned
contract with apps (``schemas/edgecomp.schema.json`` is generated from it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgecomp.fsutil import check_destination, contained, replace_folder
from edgecomp.spec import ModelSpec

MANIFEST_NAME = "edgecomp.json"
MANIFEST_SCHEMA_VERSION = 1
SAMPLES_NAME = "samples.npz"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Quantization(_Strict):
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``."""

    scale: float = Field(description="Scale of the affine mapping.")
    zero_point: int = Field(description="Integer that represents real zero.")


class TensorInfo(_Strict):
    """One input or output tensor of an artifact, as the runtime sees it."""

    name: str = Field(description="Tensor name inside the file.")
    shape: list[int] = Field(description="Static shape.")
    dtype: Literal["float32", "float16", "int8", "uint8", "int32", "int64"] = Field(description="Element type.")
    layout: Literal["NCHW", "NHWC", "NC", "other"] = Field("other", description="Axis order for images.")
    quantization: Quantization | None = Field(None, description="Set for quantized (int8/uint8) tensors.")


class FileEntry(_Strict):
    """One model file in the bundle."""

    format: str = Field(pattern=r"^[a-z][a-z0-9_]*$",
                        description="File format: a registered export format (onnx, tflite, coreml, pte, ...).")
    path: str = Field(description="Path relative to the bundle folder.")
    bytes: int = Field(ge=0, description="Size on disk (a folder's files summed, for .mlpackage).")
    sha256: str = Field(description="SHA-256 of the file (of its files in sorted order, for a folder).")
    dtype: Literal["fp32", "fp16", "int8", "binary"] = Field(description="Numeric type of the weights.")
    inputs: list[TensorInfo] = Field(description="Input tensors in order.")
    outputs: list[TensorInfo] = Field(description="Output tensors in order.")

    @field_validator("path")
    @classmethod
    def _inside_the_bundle(cls, path: str) -> str:
        """A relative path with '/' separators that stays inside the bundle folder."""
        parts = path.split("/")
        if path.startswith("/") or "\\" in path or "\0" in path or ".." in parts or "" in parts:
            raise ValueError(f"'{path}' is not a relative path inside the bundle (no leading '/', '..', "
                             "backslash or empty part)")
        return path


class Manifest(_Strict):
    """``edgecomp.json``: what an app needs to load and feed the bundle's models."""

    schema_version: Literal[1] = Field(description="Version of this manifest schema.")
    edgecomp_version: str = Field(description="Version of edgecomp that wrote the bundle.")
    created: str = Field(description="UTC time the bundle was written, ISO 8601.")
    target: str = Field(description="Deployment target name.")
    model: ModelSpec = Field(description="The model's I/O contract: shape, layout, normalisation, labels.")
    files: list[FileEntry] = Field(description="Model files, in the target's order of preference.")


def sha256_of(path: Path) -> str:
    """SHA-256 hex digest of a file, or of a folder's files (names and contents, sorted)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(str(f.relative_to(path)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    """Bytes on disk of a file, or of all files in a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def copy_model_file(source: Path, dest: Path) -> None:
    """Copy a model file, or a model folder (a CoreML .mlpackage) with its files, to ``dest``."""
    if source.is_dir():
        shutil.copytree(source, dest, symlinks=False)
    else:
        shutil.copyfile(source, dest)


def deflate_size(path: Path) -> int:
    """Bytes of the file (or a folder's files) after zlib level 9: what a zipped download would weigh."""
    import zlib

    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return sum(len(zlib.compress(f.read_bytes(), 9)) for f in files)


def now_iso() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def write_json(path: Path, data: BaseModel | dict) -> None:
    """Write a pydantic model or dict as indented JSON."""
    text = data.model_dump_json(indent=2) if isinstance(data, BaseModel) else json.dumps(data, indent=2)
    path.write_text(text + "\n")


def read_manifest(bundle: str | Path) -> Manifest:
    """Read and validate a bundle's ``edgecomp.json``."""
    from edgecomp.errors import ConfigError

    path = Path(bundle) / MANIFEST_NAME
    if not path.is_file():
        raise ConfigError(f"no {MANIFEST_NAME} in {bundle}", "pass a folder written by `edgecomp build`")
    contained(Path(bundle), MANIFEST_NAME)  # not a link to a file elsewhere
    try:
        return Manifest.model_validate_json(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not a valid manifest: {exc}", "rebuild the bundle") from exc


def check_bundle_destination(dest: str | Path, force: bool = False) -> None:
    """Raise OutputError now if a bundle may not be written at ``dest`` (see fsutil.check_destination)."""
    check_destination(Path(dest), MANIFEST_NAME, force)


@contextmanager
def staging(dest: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``dest``, on error it is removed.

    ``dest`` must be absent, empty or a bundle (with ``edgecomp.json``); ``force`` replaces any folder.
    """
    with replace_folder(dest, MANIFEST_NAME, force) as folder:
        yield folder
