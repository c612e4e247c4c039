"""The bundled digits set is read straight from scikit-learn's CSV file, identically to ``load_digits``."""

import numpy as np

from edgecomp.data import _digits_arrays, digits


def test_digits_arrays_equal_scikit_learns_load_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, target = _digits_arrays()
    assert np.array_equal(images, bunch.images)
    assert np.array_equal(target, bunch.target)


def test_digits_splits_are_disjoint_and_normalised():
    data = digits(seed=0)
    assert (data.size("train"), data.size("val"), data.size("test")) == (1078, 359, 360)
    x_train = data.arrays("train")[0]
    assert x_train.shape[1:] == (1, 8, 8) and x_train.dtype == np.float32
    assert data.num_classes == 10
