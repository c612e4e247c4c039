"""Content-addressed cache of exported artifacts, with the parity and host latency measured on them.

An export is keyed (``artifact_key``) by everything its file and its measurements depend on: the compressed
model's weights, buffers and structure, the model spec, the export options (dtype and settings), the format,
the calibration and parity inputs, the profiling settings, the hardware profile, and the versions of edgecomp
and of the converters and runtimes. An identical rebuild copies the file from the cache into the bundle and
reuses its record, marked ``cached`` with the date it was measured; any change is a miss.

The cache lives in ``<user cache dir>/artifacts`` (``$EDGECOMP_ARTIFACT_CACHE_DIR`` overrides), holds at most
``$EDGECOMP_CACHE_MAX_MB`` megabytes (default 2048; the least recently used entries are evicted) and is off
when ``$EDGECOMP_NO_CACHE`` is set (as with ``--no-cache``). Entries are written into a private temporary
folder and renamed into place, so a reader sees a whole entry or none, and concurrent builds writing the
same key leave one entry. A restored file is checked against its SHA-256 before it is used.

Folder entries (``store_folder`` / ``restore_folder``) keep a whole bundle the same way, for an identical
build reused whole (``edgecomp.build_reuse``); they share the size cap and the eviction order.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecomp.bundle import FileEntry, copy_model_file, now_iso, sha256_of, size_of
from edgecomp.records import ArtifactRecord

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)
KEY_VERSION = 1  # bump when the key or the entry layout changes
ENTRY_NAME = "entry.json"
FILES_DIR = "files"  # where a folder entry keeps its copy
DEFAULT_MAX_MB = 2048.0
STALE_TEMP_S = 3600.0  # a temporary folder older than this was left by a killed build


def cache_enabled(requested: bool = True) -> bool:
    """Whether builds use the cache: ``requested`` (False with --no-cache) and $EDGECOMP_NO_CACHE unset."""
    return requested and not os.environ.get("EDGECOMP_NO_CACHE")


def default_root() -> Path:
    """$EDGECOMP_ARTIFACT_CACHE_DIR, else the ``artifacts`` folder of edgecomp's user cache dir."""
    override = os.environ.get("EDGECOMP_ARTIFACT_CACHE_DIR")
    if override:
        return Path(override)
    from edgecomp.zoo_cache import cache_dir

    return cache_dir() / "artifacts"


def default_max_bytes() -> int:
    """The size cap: $EDGECOMP_CACHE_MAX_MB megabytes (default 2048); a bad value falls back to the default."""
    text = os.environ.get("EDGECOMP_CACHE_MAX_MB", "")
    try:
        mb = float(text) if text else DEFAULT_MAX_MB
    except ValueError:
        logger.warning("EDGECOMP_CACHE_MAX_MB=%r is not a number; using %g MB", text, DEFAULT_MAX_MB)
        mb = DEFAULT_MAX_MB
    return int(max(mb, 0.0) * 1e6)


def _tensor_bytes(value: Any) -> bytes:
    """The raw bytes of a tensor (integer representation and quantization parameters when quantized)."""
    import torch

    if not isinstance(value, torch.Tensor):
        return repr(value).encode()
    t = value.detach().cpu()
    if t.is_quantized:
        params = (f"{t.qscheme()}:{t.q_per_channel_scales().tolist()}:{t.q_per_channel_zero_points().tolist()}"
                  if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
                  else f"{t.qscheme()}:{t.q_scale()}:{t.q_zero_point()}")
        return params.encode() + _tensor_bytes(t.int_repr())
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def model_digest(model) -> str:
    """SHA-256 of a module's structure (repr, and graph code for a traced module) and of every state entry."""
    digest = hashlib.sha256()
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}\n".encode())
    digest.update(str(getattr(model, "code", "")).encode())
    for name, value in sorted(model.state_dict(keep_vars=False).items()):
        meta = f"{name}:{getattr(value, 'dtype', type(value).__name__)}:{tuple(getattr(value, 'shape', ()))}"
        digest.update(meta.encode())
        digest.update(_tensor_bytes(value))
    return digest.hexdigest()


def array_digest(*arrays: np.ndarray | None) -> str:
    """SHA-256 of arrays' dtypes, shapes and bytes (None counts as an absent array)."""
    import numpy as np

    digest = hashlib.sha256()
    for a in arrays:
        if a is None:
            digest.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}:{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of edgecomp and of the converters and runtimes it drives (the ones installed)."""
    from importlib.metadata import PackageNotFoundError, version

    from edgecomp import __version__

    out = {"edgecomp": __version__}
    for pkg in ("torch", "onnx", "onnxruntime", "litert-torch", "ai-edge-litert", "coremltools"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def artifact_key(model, fmt: str, parts: dict[str, Any]) -> str:
    """The cache key of exporting ``model`` to ``fmt``: SHA-256 of its digest and every JSON-able part."""
    payload = {"key_version": KEY_VERSION, "format": fmt, "model": model_digest(model), **parts}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class ArtifactCache:
    """A folder of cache entries ``<root>/<key>/`` holding the model file and ``entry.json``."""

    def __init__(self, root: str | Path | None = None, max_bytes: int | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes

    def restore(self, key: str, folder: Path, filename: str) -> tuple[ArtifactRecord, FileEntry] | None:
        """Copy the entry's file to ``folder/filename`` and return its record and manifest entry, or None.

        A missing, unreadable or corrupt entry (or one evicted while copying) is a miss; a file whose
        SHA-256 does not match its record is removed from the cache and from ``folder``.
        """
        entry_dir = self.root / key
        dest = folder / filename
        try:
            if entry_dir.is_symlink() or not entry_dir.is_dir():
                return None
            entry = json.loads((entry_dir / ENTRY_NAME).read_text())
            record = ArtifactRecord.model_validate(entry["record"])
            file_entry = FileEntry.model_validate(entry["file"])
            source = entry_dir / filename
            if source.is_symlink():
                return None
            copy_model_file(source, dest)
            os.utime(entry_dir)  # least recently used goes first
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.debug("artifact cache: no usable entry %s (%s)", key[:12], exc)
            _remove(dest)
            return None
        if sha256_of(dest) != record.sha256 or file_entry.sha256 != record.sha256:
            logger.warning("  artifact cache entry %s is corrupt; discarding it and exporting again", key[:12])
            _remove(dest)
            self._discard(entry_dir)
            return None
        record.cached = True
        return record, file_entry

    def store(self, key: str, path: Path, record: ArtifactRecord, file_entry: FileEntry) -> None:
        """Add ``path`` with its record under ``key`` (atomically; a concurrent writer of the same key wins)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".tmp-{secrets.token_hex(8)}"
            tmp.mkdir()
        except OSError as exc:
            logger.warning("  artifact cache %s is not writable (%s); not caching", self.root, exc.strerror)
            return
        try:
            copy_model_file(path, tmp / path.name)
            entry = {"key_version": KEY_VERSION, "stored_at": now_iso(),
                     "record": record.model_dump(mode="json"), "file": file_entry.model_dump(mode="json")}
            (tmp / ENTRY_NAME).write_text(json.dumps(entry, indent=1))
            os.rename(tmp, self.root / key)  # atomic; fails if another build stored this key first
        except OSError as exc:
            logger.debug("artifact cache: entry %s not stored (%s)", key[:12], exc)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        self.evict()

    def store_folder(self, key: str, folder: Path, meta: dict[str, Any]) -> None:
        """Add a copy of ``folder`` (regular files only) with ``meta`` under ``key``, atomically, like ``store``."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".tmp-{secrets.token_hex(8)}"
            tmp.mkdir()
        except OSError as exc:
            logger.warning("  artifact cache %s is not writable (%s); not caching", self.root, exc.strerror)
            return
        try:
            shutil.copytree(folder, tmp / FILES_DIR, symlinks=True, ignore=_links)
            files = {str(p.relative_to(tmp / FILES_DIR)): sha256_of(p)
                     for p in sorted((tmp / FILES_DIR).rglob("*")) if p.is_file()}
            entry = {"key_version": KEY_VERSION, "stored_at": now_iso(), "kind": "folder", "files": files,
                     "meta": meta}
            (tmp / ENTRY_NAME).write_text(json.dumps(entry, indent=1, default=str))
            os.rename(tmp, self.root / key)
        except OSError as exc:
            logger.debug("artifact cache: folder %s not stored (%s)", key[:12], exc)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        self.evict()

    def folder_meta(self, key: str) -> dict[str, Any] | None:
        """The ``meta`` (plus ``stored_at``) of folder entry ``key`` without copying anything, or None."""
        try:
            entry = json.loads((self.root / key / ENTRY_NAME).read_text())
            if entry.get("kind") != "folder" or entry.get("key_version") != KEY_VERSION:
                return None
            return {**dict(entry["meta"]), "stored_at": entry.get("stored_at")}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def restore_folder(self, key: str, dest: Path) -> dict[str, Any] | None:
        """Copy the files of folder entry ``key`` into ``dest``; its ``meta`` (plus ``stored_at``), or None.

        Every file is checked against its SHA-256; a missing, unreadable or corrupt entry is a miss (a corrupt
        one is discarded), and what was copied is left for the caller to remove with ``dest``.
        """
        entry_dir = self.root / key
        try:
            if entry_dir.is_symlink() or not entry_dir.is_dir():
                return None
            entry = json.loads((entry_dir / ENTRY_NAME).read_text())
            if entry.get("kind") != "folder" or entry.get("key_version") != KEY_VERSION:
                return None
            files, meta = dict(entry["files"]), dict(entry["meta"])
            shutil.copytree(entry_dir / FILES_DIR, dest, symlinks=True, ignore=_links, dirs_exist_ok=True)
            os.utime(entry_dir)  # least recently used goes first
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.debug("artifact cache: no usable folder entry %s (%s)", key[:12], exc)
            return None
        copied = {str(p.relative_to(dest)): p for p in dest.rglob("*") if p.is_file()}
        if set(copied) != set(files) or any(sha256_of(copied[name]) != sha for name, sha in files.items()):
            logger.warning("  artifact cache entry %s is corrupt; discarding it and building again", key[:12])
            self._discard(entry_dir)
            return None
        return {**meta, "stored_at": entry.get("stored_at")}

    def entries(self) -> list[Path]:
        """The complete entries (not temporary folders), oldest use first."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            try:
                if not p.name.startswith(".") and p.is_dir() and not p.is_symlink():
                    found.append((p.stat().st_mtime, p))
            except OSError:
                continue
        return [p for _, p in sorted(found)]

    def evict(self) -> None:
        """Remove least recently used entries until the cache fits its cap, and stale temporary folders.

        One process evicts at a time (others skip it); a build restoring an entry being evicted gets a miss.
        """
        try:
            fd = os.open(self.root / ".evict.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            self._remove_stale_temporaries()
            entries = self.entries()
            sizes = {p: _size(p) for p in entries}
            total = sum(sizes.values())
            for p in entries:
                if total <= self.max_bytes:
                    break
                logger.debug("artifact cache: evicting %s (%d bytes)", p.name[:12], sizes[p])
                self._discard(p)
                total -= sizes[p]
        finally:
            os.close(fd)

    def _remove_stale_temporaries(self) -> None:
        now = time.time()
        for p in self.root.glob(".tmp-*"):
            try:
                if now - p.stat().st_mtime > STALE_TEMP_S:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                continue

    def _discard(self, entry_dir: Path) -> None:
        """Remove an entry: renamed aside first, so no reader sees it half deleted."""
        aside = self.root / f".tmp-{secrets.token_hex(8)}"
        try:
            os.rename(entry_dir, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)


def _links(folder: str, names: list[str]) -> list[str]:
    """``copytree`` ignore rule: leave out symbolic links (a cache entry holds regular files only)."""
    return [n for n in names if os.path.islink(os.path.join(folder, n))]


def _size(path: Path) -> int:
    try:
        return size_of(path)
    except OSError:
        return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
