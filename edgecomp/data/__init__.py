"""Data for calibration, fine-tuning, evaluation and parity: one ``Dataset`` interface, one module per source.

- :mod:`edgecomp.data.base` — the ``Dataset`` (three streamed splits) every source returns;
- :mod:`edgecomp.data.digits` — scikit-learn's bundled digits (the built-in models' data);
- :mod:`edgecomp.data.npz` — a user's arrays in one .npz file;
- :mod:`edgecomp.data.image_folder` — a folder of images in class folders (ImageFolder layout);
- :mod:`edgecomp.data.factory` — ``package.module:factory`` / ``file.py:factory`` returning torch datasets;
- :mod:`edgecomp.data.sources` — ``load_data``, which picks the source for a ``--data`` value.
"""

from edgecomp.data.base import ArraySplit, Dataset
from edgecomp.data.digits import DIGITS_MEAN, DIGITS_SCALE, DIGITS_STD, _digits_arrays, digits
from edgecomp.data.npz import MAX_DATA_BYTES, MAX_DATA_BYTES_ENV, load_npz, max_data_bytes

__all__ = [
           "DIGITS_MEAN",
           "DIGITS_SCALE",
           "DIGITS_STD",
           "MAX_DATA_BYTES",
           "MAX_DATA_BYTES_ENV",
           "ArraySplit",
           "Dataset",
           "_digits_arrays",
           "digits",
           "load_npz",
           "max_data_bytes",
]
