"""A user's dataset as one .npz file of arrays already normalised the way the model expects.

Every array's header is checked before anything is loaded (dtype, declared against real size, total size
against the memory there is); the arrays become an in-memory ``Dataset`` (``edgecomp.data.base``).
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

from edgecomp.data.base import Dataset
from edgecomp.errors import ConfigError

MAX_DATA_BYTES = 4 * 1024**3
"""Most bytes of arrays a --data file may hold (4 GiB; less when memory is short, see max_data_bytes)."""
MAX_DATA_BYTES_ENV = "EDGECOMP_MAX_DATA_BYTES"
SAVE_HINT = "save it with numpy.savez(path, x=inputs, y=labels) or savez_compressed"


def max_data_bytes() -> int:
    """The largest total size of the arrays ``load_npz`` will read, in bytes.

    ``EDGECOMP_MAX_DATA_BYTES`` (an integer) sets it; otherwise it is half of the memory the kernel reports
    as available (MemAvailable: the split copies the inputs once more), at most ``MAX_DATA_BYTES``.
    """
    env = os.environ.get(MAX_DATA_BYTES_ENV, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value <= 0:
            raise ConfigError(f"{MAX_DATA_BYTES_ENV}={env!r} is not a positive number of bytes",
                              f"set it to an integer like {MAX_DATA_BYTES}, or unset it")
        return value
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return min(MAX_DATA_BYTES, int(line.split()[1]) * 1024 // 2)
    except (OSError, ValueError, IndexError):
        pass
    return MAX_DATA_BYTES


@dataclass(frozen=True)
class _Member:
    """What a .npy member of a .npz declares in its header, read without loading its data."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool

    @property
    def nbytes(self) -> int:
        """Bytes the declared array takes (exact Python integers: no overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize


def _bad(path: Path, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"data file {path.name}: {problem}", fix)


def _read_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> _Member:
    """Read one member's .npy header and check it against the member's real (uncompressed) size."""
    name = info.filename[: -len(".npy")]
    with zf.open(info) as f:
        try:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npformat.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except ValueError as exc:
            raise _bad(path, f"array '{name}' has no valid .npy header ({exc})",
                       SAVE_HINT) from exc
        data_bytes = info.file_size - f.tell()
    member = _Member(name, tuple(shape), dtype, fortran)
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.names is not None:
        raise _bad(path, f"array '{name}' has dtype {dtype} (objects, strings or records)",
                   "store numbers only: float inputs, integer labels " + f"({SAVE_HINT})")
    if member.nbytes != data_bytes:
        raise _bad(path, f"array '{name}' declares shape {list(shape)} ({member.nbytes:,} bytes) but holds "
                   f"{data_bytes:,} bytes", f"the file is corrupt or crafted; {SAVE_HINT}")
    return member


def _read_arrays(path: Path, names: list[str], members: dict[str, _Member],
                 zf: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """Load the named members, after checking that together they fit under ``max_data_bytes()``."""
    total, cap = sum(members[n].nbytes for n in names), max_data_bytes()
    if total > cap:
        sizes = ", ".join(f"{n} {list(members[n].shape)}" for n in names)
        raise _bad(path, f"its arrays ({sizes}) need {total:,} bytes, over the {cap:,}-byte limit",
                   f"pass a smaller sample (calibration and evaluation need a few thousand inputs), "
                   f"or raise the limit with {MAX_DATA_BYTES_ENV}=BYTES")
    arrays = {}
    for n in names:
        with zf.open(f"{n}.npy") as f:
            try:
                arrays[n] = npformat.read_array(f, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise _bad(path, f"cannot read array '{n}': {exc}", SAVE_HINT) from exc
    return arrays


def _check_pair(path: Path, x: np.ndarray, y: np.ndarray, xn: str, yn: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs as float32 2-D/4-D finite arrays and labels as int64 >= 0, of the same length."""
    if x.dtype.kind != "f" or x.ndim not in (2, 4):
        raise _bad(path, f"'{xn}' is {x.dtype} of shape {list(x.shape)}",
                   f"'{xn}' must hold normalised float inputs, N,C,H,W (images) or N,F (features)")
    if y.ndim != 1 or len(y) != len(x):
        raise _bad(path, f"'{yn}' has shape {list(y.shape)} but '{xn}' holds {len(x)} inputs",
                   f"'{yn}' must hold one integer label per input of '{xn}'")
    if len(x) == 0:
        raise _bad(path, f"'{xn}' holds no inputs", f"store at least a few inputs in '{xn}'")
    if not bool(np.isfinite(x).all()):
        raise _bad(path, f"'{xn}' holds NaN or infinite values", f"clean or drop those inputs of '{xn}'")
    if y.dtype.kind == "f" and not bool((np.isfinite(y) & (y == np.round(y))).all()):
        raise _bad(path, f"'{yn}' holds non-integer labels", f"'{yn}' must hold class indices 0, 1, 2, ...")
    if y.dtype.kind not in "iuf" or (len(y) and y.min() < 0):
        raise _bad(path, f"'{yn}' is not class indices (dtype {y.dtype}, smallest {y.min() if len(y) else None})",
                   f"'{yn}' must hold class indices 0, 1, 2, ...")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def load_npz(path: str | Path, seed: int = 0) -> Dataset:
    """Load a user's dataset from .npz: either x/y (split 60/20/20 here) or x_train/y_train/x_test/y_test.

    Every array's header is read and checked (dtype, declared size against the real size, total size
    against :func:`max_data_bytes`) before any array is loaded; bad data is a ConfigError naming the array.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}", "pass an existing .npz file to --data")
    if not zipfile.is_zipfile(path):
        raise _bad(path, "it is not a .npz archive", SAVE_HINT)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if i.filename.endswith(".npy")]
            keys = {i.filename[: -len(".npy")] for i in infos}
            if {"x_train", "y_train", "x_test", "y_test"} <= keys:
                names = ["x_train", "y_train", "x_test", "y_test"]
            elif {"x", "y"} <= keys:
                names = ["x", "y"]
            else:
                raise ConfigError(
                    f"data file {path} has arrays {sorted(keys)}",
                    "it needs x and y, or x_train, y_train, x_test and y_test (normalised float inputs, int labels)",
                )
            members = {m.name: m for m in (_read_header(zf, i, path) for i in infos if i.filename[:-4] in names)}
            arrays = _read_arrays(path, names, members, zf)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise _bad(path, f"cannot read it ({exc})", SAVE_HINT) from exc
    if len(names) == 4:
        return _train_test(path, arrays)
    return _split_60_20_20(path, arrays, seed)


def _train_test(path: Path, arrays: dict[str, np.ndarray]) -> Dataset:
    """x_train/y_train (its first fifth becomes the validation split) and x_test/y_test."""
    x_tr, y_tr = _check_pair(path, arrays["x_train"], arrays["y_train"], "x_train", "y_train")
    x_te, y_te = _check_pair(path, arrays["x_test"], arrays["y_test"], "x_test", "y_test")
    if x_te.shape[1:] != x_tr.shape[1:]:
        raise _bad(path, f"x_test inputs are {list(x_te.shape[1:])} but x_train inputs are {list(x_tr.shape[1:])}",
                   "store inputs of one shape in both")
    if len(x_tr) < 2:
        raise _bad(path, f"x_train holds {len(x_tr)} input; a fifth of it is kept for validation",
                   "store at least 2 training inputs (a few thousand for useful fine-tuning)")
    n_val = max(1, len(x_tr) // 5)
    return Dataset.from_arrays(path.stem, x_tr[n_val:], y_tr[n_val:], x_tr[:n_val], y_tr[:n_val], x_te, y_te,
                               source=f"arrays from {path.name}")


def _split_60_20_20(path: Path, arrays: dict[str, np.ndarray], seed: int) -> Dataset:
    """x/y split at random (fixed seed) into 60% train, 20% validation, 20% test."""
    x, y = _check_pair(path, arrays.pop("x"), arrays.pop("y"), "x", "y")
    n_tr, n_va = int(0.6 * len(x)), int(0.2 * len(x))
    if min(n_tr, n_va, len(x) - n_tr - n_va) < 1:
        raise _bad(path, f"x holds {len(x)} inputs: a 60/20/20 train/validation/test split leaves one empty",
                   "store at least 5 inputs in x (a few thousand for useful numbers)")
    idx = np.random.default_rng(seed).permutation(len(x))
    tr, va, te = idx[:n_tr], idx[n_tr : n_tr + n_va], idx[n_tr + n_va :]
    return Dataset.from_arrays(path.stem, x[tr], y[tr], x[va], y[va], x[te], y[te],
                               source=f"arrays from {path.name} (split 60/20/20, seed {seed})")
