"""Cross-validation of the few-shot classifier over labelled features (numpy).

Folds split features, never the pixels of one feature (neighbouring pixels of a polygon are nearly
the same sample: splitting them would report memory, not generalisation). ``feature_folds`` is
stratified: each class's features, shuffled with the seed, are dealt round-robin, continuing the
count from class to class, so every fold gets a share of every class that has enough features.
``cross_validate`` fits on all folds but one and predicts the one left out, for every fold; its
pooled out-of-fold predictions give the accuracy, the balanced accuracy (mean recall over the
classes) and the confusion matrix (rows: true class, columns: predicted; counts of pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .softmax import fit_softmax


@dataclass(frozen=True)
class CrossValidation:
    folds: int
    accuracy: float
    balanced_accuracy: float
    confusion: np.ndarray  # (k, k) int64, rows true, columns predicted
    fold_accuracy: tuple[float, ...]


def feature_folds(feature_class: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index of each feature (``feature_class``: the class index of each feature)."""
    out = np.zeros(len(feature_class), np.int64)
    offset = 0
    for c in np.unique(feature_class):
        members = np.flatnonzero(feature_class == c)
        members = members[rng.permutation(len(members))]
        out[members] = (offset + np.arange(len(members))) % folds
        offset += len(members)
    return out


def cross_validate(x: np.ndarray, y: np.ndarray, groups: np.ndarray, group_fold: np.ndarray, k: int,
                   regularization: float, before_fold: Callable[[int, int], None] | None = None) -> CrossValidation:  # fmt: skip
    """Out-of-fold predictions of every sample; ``groups`` index ``group_fold`` (fold of each feature).
    ``before_fold(f, folds)`` is called before each fit (progress, cancellation)."""
    sample_fold = group_fold[groups]
    folds = int(group_fold.max()) + 1
    predicted = np.zeros(len(y), np.int64)
    fold_accuracy = []
    for f in range(folds):
        if before_fold is not None:
            before_fold(f, folds)
        test = sample_fold == f
        if not test.any():
            continue
        model = fit_softmax(x[~test], y[~test], k, groups[~test], regularization)
        predicted[test] = model.probabilities(x[test]).argmax(axis=1)
        fold_accuracy.append(float((predicted[test] == y[test]).mean()))
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (y, predicted), 1)
    present = confusion.sum(axis=1) > 0
    recall = np.diag(confusion)[present] / confusion.sum(axis=1)[present]
    return CrossValidation(folds, float((predicted == y).mean()), float(recall.mean()), confusion, tuple(fold_accuracy))
