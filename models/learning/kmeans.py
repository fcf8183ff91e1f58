"""k-means on a sample of embeddings (numpy; deterministic for a seed).

``fit_kmeans(x, k, rng, max_iterations)``: k-means++ seeding (the first centre uniformly, then each
next one with probability proportional to the squared distance to the nearest centre chosen), then
Lloyd iterations until no assignment changes or ``max_iterations``. A cluster that loses all its
points takes the point farthest from its centre. Clusters are returned largest first (ties: lower
index), so the same sample and seed always give the same numbering. ``assign(x, centres)`` is the
nearest centre of each row. Distances are squared Euclidean, computed as ``|x|^2 - 2 x.c + |c|^2``
in float64 for the fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KMeansResult:
    centres: np.ndarray  # (k, D) float32, largest cluster first
    counts: np.ndarray  # (k,) sample points per cluster
    inertia: float  # sum of squared distances of the sample to its centres
    iterations: int
    converged: bool


def _sq_dist(x: np.ndarray, c: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    d = x_sq[:, None] - 2.0 * (x @ c.T) + (c * c).sum(axis=1)[None, :]  # (n, k)
    return np.maximum(d, 0.0)


def _seed_centres(x: np.ndarray, k: int, rng: np.random.Generator, x_sq: np.ndarray) -> np.ndarray:
    centres = [x[int(rng.integers(len(x)))]]
    nearest = _sq_dist(x, centres[0][None], x_sq)[:, 0]
    for _ in range(1, k):
        total = nearest.sum()
        i = int(rng.choice(len(x), p=nearest / total)) if total > 0 else int(rng.integers(len(x)))
        centres.append(x[i])
        nearest = np.minimum(nearest, _sq_dist(x, x[i][None], x_sq)[:, 0])
    return np.stack(centres)


def fit_kmeans(x: np.ndarray, k: int, rng: np.random.Generator, max_iterations: int = 100,
               before_iteration: Callable[[int, int], None] | None = None) -> KMeansResult:  # fmt: skip
    """Cluster the rows of ``x`` ``(n, D)`` into ``k`` clusters (``n >= k``); ``before_iteration(i, max)``
    is called before each Lloyd iteration (progress, cancellation)."""
    x = np.asarray(x, np.float64)
    if len(x) < k:
        raise ValueError(f"{len(x)} points cannot form {k} clusters")
    x_sq = (x * x).sum(axis=1)
    centres = _seed_centres(x, k, rng, x_sq)
    labels = np.full(len(x), -1)
    converged, it = False, 0
    for it in range(1, max_iterations + 1):
        if before_iteration is not None:
            before_iteration(it - 1, max_iterations)
        d = _sq_dist(x, centres, x_sq)
        new = d.argmin(axis=1)
        if np.array_equal(new, labels):
            converged = True
            break
        labels = new
        for j in range(k):
            members = labels == j
            if members.any():
                centres[j] = x[members].mean(axis=0)
            else:  # an empty cluster restarts at the worst-served point
                far = int(d[np.arange(len(x)), labels].argmax())
                centres[j] = x[far]
                labels[far] = j
    d = _sq_dist(x, centres, x_sq)
    labels = d.argmin(axis=1)
    counts = np.bincount(labels, minlength=k)
    inertia = float(d[np.arange(len(x)), labels].sum())
    order = np.lexsort((np.arange(k), -counts))  # largest first, then by index
    return KMeansResult(centres[order].astype(np.float32), counts[order], inertia, it, converged)


def assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of each row of ``x`` ``(n, D)``."""
    x = np.asarray(x, np.float32)
    d = (centres * centres).sum(axis=1)[None, :] - 2.0 * (x @ centres.T)  # |x|^2 is the same for every centre
    return d.argmin(axis=1)
