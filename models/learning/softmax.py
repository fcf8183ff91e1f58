"""Multinomial logistic regression for few-shot classification (fit with torch L-BFGS in float64).

Features: the embeddings scaled to unit length (``unit_rows``), then standardised per dimension
with the training mean and standard deviation (a dimension's deviation is floored at a tenth of the
mean deviation, so that a dimension almost constant in a few samples cannot dominate).

Objective: the weighted mean cross-entropy of ``softmax(W z + b)`` plus ``regularization / 2 *
|W|^2`` (the bias is not penalised). Weights: every class weighs the same in total and, within a
class, every labelled feature weighs the same (a large polygon does not outvote a point). The
problem is convex; L-BFGS with a strong-Wolfe line search runs to a gradient norm of 1e-8 (at most
``max_iterations`` steps), from zero weights, so a fit is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import unit_rows

STD_FLOOR = 0.1  # of the mean standard deviation


@dataclass(frozen=True)
class SoftmaxModel:
    """A fitted classifier over ``k`` classes (indices 0..k-1) of D-dimensional embeddings."""

    mean: np.ndarray  # (D,) of the unit-length training rows
    std: np.ndarray  # (D,) floored
    weights: np.ndarray  # (k, D)
    bias: np.ndarray  # (k,)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, k)`` float32 of embeddings ``x`` ``(n, D)``."""
        z = (unit_rows(x) - self.mean.astype(np.float32)) / self.std.astype(np.float32)
        logits = z @ self.weights.T.astype(np.float32) + self.bias.astype(np.float32)  # (n, k)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def balanced_weights(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Sample weights: each class sums to 1, split equally among its groups (features), then their samples."""
    w = np.zeros(len(y), np.float64)
    for c in np.unique(y):
        in_class = y == c
        feats = np.unique(groups[in_class])
        for g in feats:
            members = in_class & (groups == g)
            w[members] = 1.0 / (len(feats) * members.sum())
    return w / w.sum()


def fit_softmax(x: np.ndarray, y: np.ndarray, k: int, groups: np.ndarray, regularization: float,
                max_iterations: int = 500) -> SoftmaxModel:  # fmt: skip
    """Fit on embeddings ``x`` ``(n, D)`` with class indices ``y`` ``(n,)`` and feature ids ``groups``."""
    import torch

    u = unit_rows(x).astype(np.float64)
    mean = u.mean(axis=0)
    std = u.std(axis=0)
    std = np.maximum(std, STD_FLOOR * float(std.mean()) if std.mean() > 0 else 1.0)
    z = torch.from_numpy((u - mean) / std)  # (n, D) float64
    target = torch.from_numpy(np.asarray(y, np.int64))
    w = torch.from_numpy(balanced_weights(np.asarray(y), np.asarray(groups)))
    params = torch.zeros(k, z.shape[1] + 1, dtype=torch.float64, requires_grad=True)  # [W | b]
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=max_iterations, tolerance_grad=1e-8, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = z @ params[:, :-1].T + params[:, -1]  # (n, k)
        loss = (torch.nn.functional.cross_entropy(logits, target, reduction="none") * w).sum()
        loss = loss + 0.5 * regularization * (params[:, :-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    p = params.detach().numpy()
    return SoftmaxModel(mean, std, p[:, :-1].copy(), p[:, -1].copy())
