"""Where edgecomp keeps what it computes once per user: the cache folder, and the built-in models' weights.

Torch-free, so that a build that reuses everything (``edgecomp.build_reuse``) can find them without importing
torch; ``edgecomp.zoo`` defines the models themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

ZOO_VERSION = 1  # bump when a built-in model or its training changes: its cached weights are retrained
ZOO_NAMES = ("digits_cnn", "vgg_digits", "mobile_digits")
DEFAULT_MODEL = "digits_cnn"


def cache_dir() -> Path:
    """Folder for cached weights, plans and artifacts: $EDGECOMP_CACHE_DIR, else the platform's user cache dir."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("EDGECOMP_CACHE_DIR") or user_cache_dir("edgecomp"))


def zoo_weights_path(name: str) -> Path:
    """Where the trained weights of built-in model ``name`` are cached."""
    return cache_dir() / "zoo" / f"{name}-v{ZOO_VERSION}.pt"
