"""Learning on embeddings without a training run (numpy, deterministic; torch for the classifier fit).

- ``pca``: streaming covariance and the principal components of an embedding raster (the false-colour view).
- ``kmeans``: k-means++ seeding and Lloyd iterations on a sample; nearest-centre assignment.
- ``softmax``: multinomial logistic regression (L2-regularised, class-balanced, L-BFGS in float64).
- ``folds``: stratified k-fold splits of labelled features (all pixels of a feature in one fold).
- ``classifier_file``: the saved few-shot classifier (JSON: weights, scaler, classes, embedding signature).

Embeddings are scaled to unit length before clustering and classification (``unit_rows``): the
cosine geometry the similarity map uses too.
"""

from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` ``(n, D)`` scaled to unit length (float32; zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)
