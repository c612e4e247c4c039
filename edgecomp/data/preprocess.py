"""How image files become model inputs: the recipe (``Preprocess``) and applying it to a decoded image.

The recipe has two halves, both recorded in the bundle's edgecomp.json so apps do exactly the same:
``image`` (``edgecomp.spec.ImagePreprocess``: colour order, resize, crop, layout) and ``normalization``
(``edgecomp.spec.Normalization``: ``x = (raw * scale - mean[c]) / std[c]``).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecomp.spec import ImagePreprocess, Normalization


@dataclass(frozen=True)
class Preprocess:
    """An image-folder preprocessing recipe: decode/resize/crop (``image``), then normalise (``normalization``)."""

    image: ImagePreprocess
    normalization: Normalization
