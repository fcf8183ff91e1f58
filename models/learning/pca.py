"""Principal components of embeddings, from streamed sums (numpy, float64).

``Covariance.add(x)`` takes rows ``(n, D)``; ``components(k)`` returns the mean, the top ``k``
eigenvectors of the covariance (``(k, D)``, sign fixed so that each one's largest loading is
positive: the same data give the same colours) and their share of the variance.
"""

from __future__ import annotations

import numpy as np


class Covariance:
    """Running count, sum and sum of outer products of rows of D values."""

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.sum = np.zeros(dim, np.float64)
        self.outer = np.zeros((dim, dim), np.float64)

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)  # (n, D)
        self.n += x.shape[0]
        self.sum += x.sum(axis=0)
        self.outer += x.T @ x

    def components(self, k: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean ``(D,)``, components ``(k, D)``, explained variance ratio ``(k,)``)."""
        if self.n < 2:
            raise ValueError("PCA needs at least two valid embedding pixels")
        mean = self.sum / self.n
        cov = (self.outer - self.n * np.outer(mean, mean)) / (self.n - 1)  # (D, D)
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1][:k]
        comps = vectors[:, order].T  # (k, D)
        signs = np.sign(comps[np.arange(len(order)), np.abs(comps).argmax(axis=1)])
        comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
        total = float(np.clip(values, 0, None).sum())
        ratio = np.clip(values[order], 0, None) / total if total > 0 else np.zeros(len(order))
        return mean, comps, ratio
