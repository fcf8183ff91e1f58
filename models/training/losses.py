"""The segmentation losses of TerraTorch's ``SemanticSegmentationTask``, in plain torch.

``terratorch/tasks/segmentation_tasks.py`` ``init_loss`` (1.2.11) builds, with the task's
``ignore_index`` and ``class_weights``:

- ``ce``: ``nn.CrossEntropyLoss(ignore_index=ignore_index, weight=class_weights)``;
- ``dice``: ``smp.losses.DiceLoss("multiclass", ignore_index=ignore_index)`` —
  segmentation_models_pytorch 0.6.0 ``losses/dice.py``: softmax probabilities (``log_softmax().exp()``),
  ignored pixels zeroed in the probabilities and the one-hot target, the soft Dice score per class
  over batch and pixels (``soft_tversky_score`` with alpha = beta = 0.5, smooth 0, eps 1e-7, the
  intersection written as ``(sum p + sum t - |p - t|_1) / 2``), ``1 - score``, classes absent from
  the batch's target contribute 0 but still count in the mean over classes;
- ``focal``: ``smp.losses.FocalLoss("multiclass", ignore_index=ignore_index, normalized=True)`` —
  ``losses/focal.py`` + ``_functional.focal_loss_with_logits``: per class a BINARY focal loss of
  that class's raw logit (sigmoid, not softmax) against ``target == class`` over the non-ignored
  pixels, gamma 2, no alpha, normalised by the sum of the focal terms, mean over pixels, then the
  mean over classes.

TerraTorch passes ``class_weights`` to the cross-entropy only: Dice and focal ignore them
(``criterion_for`` reproduces that and the recipe says so in a note). The criterion is a module
(``CrossEntropyLoss`` holds its weights as the buffer ``criterion.weight`` of a Lightning
checkpoint, as TerraTorch's does).

Dimensions: ``B`` batch, ``K`` classes, ``H, W`` pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ..core.errors import ConfigError

LOSSES = ("ce", "dice", "focal")


def soft_dice_score(p: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """smp ``soft_tversky_score(p, t, 0.5, 0.5, smooth=0, eps, dims=(0, 2))`` of ``(B, K, N)`` tensors → ``(K,)``."""
    p_sum = p.sum(dim=(0, 2))
    t_sum = t.sum(dim=(0, 2))
    difference = torch.linalg.vector_norm(p - t, ord=1, dim=(0, 2))
    intersection = (p_sum + t_sum - difference) / 2  # TP
    fp = p_sum - intersection
    fn = t_sum - intersection
    return intersection / (intersection + 0.5 * fp + 0.5 * fn).clamp_min(eps)


class DiceLoss(nn.Module):
    """Multiclass soft Dice loss with ``ignore_index`` (smp 0.6.0 ``DiceLoss``, as TerraTorch uses it)."""

    def __init__(self, ignore_index: int | None = None, eps: float = 1e-7) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b, k = logits.shape[:2]
        p = logits.log_softmax(dim=1).exp().reshape(b, k, -1)  # (B, K, N)
        t = target.reshape(b, -1)  # (B, N)
        if self.ignore_index is not None:
            mask = t != self.ignore_index  # (B, N)
            p = p * mask.unsqueeze(1)
            onehot = F.one_hot((t * mask).to(torch.long), k).permute(0, 2, 1) * mask.unsqueeze(1)  # (B, K, N)
        else:
            onehot = F.one_hot(t, k).permute(0, 2, 1)  # (B, K, N)
        t1 = onehot.type_as(p)
        loss = 1.0 - soft_dice_score(p, t1, self.eps)  # (K,)
        loss = loss * (t1.sum(dim=(0, 2)) > 0).to(loss.dtype)  # classes absent from the batch count 0
        return loss.mean()


def binary_focal_with_logits(
    logit: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, eps: float = 1e-6
) -> torch.Tensor:
    """smp ``focal_loss_with_logits(alpha=None, reduction="mean", normalized=True)`` of flat tensors."""
    target = target.to(dtype=logit.dtype)
    logpt = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    pt = torch.exp(-logpt)
    focal_term = (1.0 - pt).pow(gamma)
    loss = focal_term * logpt
    loss = loss / focal_term.sum().clamp_min(eps)
    return loss.mean()


class FocalLoss(nn.Module):
    """Multiclass focal loss, one binary focal term per class (smp 0.6.0 ``FocalLoss``, normalized)."""

    def __init__(self, ignore_index: int | None = None, gamma: float = 2.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        keep = target != self.ignore_index if self.ignore_index is not None else None  # (B, H, W)
        losses = []
        for k in range(logits.shape[1]):
            t = (target == k).long()
            p = logits[:, k, ...]  # (B, H, W)
            if keep is not None:
                t, p = t[keep], p[keep]
            losses.append(binary_focal_with_logits(p, t, self.gamma))
        return torch.stack(losses).mean()


def criterion_for(loss: str, ignore_index: int | None, class_weights: Sequence[float] | None) -> nn.Module:
    """The loss module TerraTorch's ``init_loss`` builds for ``loss`` (``ce``, ``dice``, ``focal``)."""
    if loss == "ce":
        weight = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        return nn.CrossEntropyLoss(weight=weight, ignore_index=-100 if ignore_index is None else int(ignore_index))
    if loss == "dice":
        return DiceLoss(ignore_index)
    if loss == "focal":
        return FocalLoss(ignore_index)
    raise ConfigError(f"loss '{loss}' is not supported; choose one of {', '.join(LOSSES)}")


def balanced_class_weights(class_pixels: Sequence[int]) -> tuple[float, ...]:
    """``n / (K * n_k)`` per class from the train split's pixel counts (scikit-learn's "balanced").

    A class without a single train pixel gets weight 0 (it cannot be learned; the caller warns).
    """
    counts = [int(c) for c in class_pixels]
    total, k = sum(counts), len(counts)
    if total == 0:
        raise ConfigError("the train split has no labelled pixel: class weights cannot be computed")
    return tuple((total / (k * c)) if c else 0.0 for c in counts)
