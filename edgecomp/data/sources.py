"""``load_data``: which loader a ``--data`` value goes to (a .npz file, an image folder, a dataset factory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecomp.data.base import Dataset
from edgecomp.errors import ConfigError

DATA_HINT = ("pass a .npz of arrays, a folder of images in class folders (root/<class>/*.png or "
             "root/{train,val,test}/<class>/...), or a dataset factory package.module:fn / file.py:fn")


def load_data(ref: str, seed: int = 0, preprocess: Any = None, workers: int | None = None,
              spec: Any = None) -> Dataset:
    """The ``Dataset`` that ``ref`` names; ``preprocess`` (image folders only) says how files become inputs and
    ``spec`` (the model's ModelSpec) what size and channels they must come out as."""
    path = Path(ref)
    if path.is_dir():
        from edgecomp.data.image_folder import load_image_folder

        return load_image_folder(path, preprocess, seed=seed, workers=workers, spec=spec)
    if preprocess is not None:
        raise ConfigError("preprocessing flags apply to image folders only",
                          f"--data {ref} is not a folder; drop the preprocessing flags or point --data at images")
    if path.is_file():
        from edgecomp.data.npz import load_npz

        return load_npz(path, seed)
    if ":" in ref:
        from edgecomp.data.factory import load_factory

        return load_factory(ref, seed)
    raise ConfigError(f"data not found: {ref}", DATA_HINT)
