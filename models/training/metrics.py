"""Segmentation metrics as TerraTorch reports them (torchmetrics semantics, ``ignore_index`` respected).

``SemanticSegmentationTask.configure_metrics`` (terratorch 1.2.11) logs, per epoch, from
torchmetrics 1.9 ``Multiclass*`` metrics that accumulate one confusion matrix over the epoch
(pixels whose target is ``ignore_index`` are dropped; rows = target, columns = prediction):

- ``IoU_<class>``: ``tp / (tp + fp + fn)`` (0 when the class is absent from target and prediction);
- ``mIoU``: the mean of those over the classes that occur in target or prediction;
- ``mIoU_Micro``: ``sum tp / sum (tp + fp + fn)``;
- ``F1_Score``: macro F1, ``2 tp / (2 tp + fp + fn)`` averaged over classes with ``tp + fp + fn > 0``;
- ``Accuracy``: macro recall ``tp / (tp + fn)`` averaged over the same classes;
- ``Pixel_Accuracy``: ``sum tp / number of pixels``; ``Class_Accuracy_<class>``: recall per class.

(``Boundary_mIoU`` is not computed.) ``ConfusionMatrix`` holds the int64 counts; ``summary()``
returns these numbers as floats, plus the matrix itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    num, den = num.double(), den.double()
    return torch.where(den == 0, torch.zeros_like(num), num / torch.where(den == 0, torch.ones_like(den), den))


def _weighted_mean(score: torch.Tensor, present: torch.Tensor) -> float:
    w = present.double()
    return float((w * score).sum() / w.sum()) if w.sum() > 0 else 0.0


class ConfusionMatrix:
    """Counts ``[target, prediction]`` over an epoch, ``ignore_index`` pixels left out."""

    def __init__(self, num_classes: int, ignore_index: int | None = -1) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add class predictions ``(B, H, W)`` (or logits ``(B, K, H, W)``) against ``target`` ``(B, H, W)``."""
        if prediction.dim() == target.dim() + 1:
            prediction = prediction.argmax(dim=1)
        p, t = prediction.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            p, t = p[keep], t[keep]
        k = self.num_classes
        self.matrix += torch.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def reset(self) -> None:
        self.matrix.zero_()

    def per_class(self) -> dict[str, torch.Tensor]:
        """``tp``, ``fp``, ``fn`` ``(K,)`` and per-class ``iou``, ``f1``, ``recall`` (float64)."""
        cm = self.matrix
        tp = torch.diag(cm)
        fp = cm.sum(0) - tp
        fn = cm.sum(1) - tp
        return {
            "tp": tp, "fp": fp, "fn": fn,
            "iou": _safe_divide(tp, tp + fp + fn),
            "f1": _safe_divide(2 * tp, 2 * tp + fp + fn),
            "recall": _safe_divide(tp, tp + fn),
        }  # fmt: skip

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The numbers of the module docstring, keyed as TerraTorch logs them (without the ``val/`` prefix)."""
        s = self.per_class()
        present = (s["tp"] + s["fp"] + s["fn"]) > 0
        names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        total = int(self.matrix.sum())
        out: dict[str, Any] = {
            "mIoU": _weighted_mean(s["iou"], present),
            "mIoU_Micro": float(_safe_divide(s["tp"].sum(), (s["tp"] + s["fp"] + s["fn"]).sum())),
            "F1_Score": _weighted_mean(s["f1"], present),
            "Accuracy": _weighted_mean(s["recall"], present),
            "Pixel_Accuracy": float(s["tp"].sum()) / total if total else 0.0,
        }
        out.update({f"IoU_{n}": float(v) for n, v in zip(names, s["iou"])})
        out.update({f"Class_Accuracy_{n}": float(v) for n, v in zip(names, s["recall"])})
        out["confusion_matrix"] = self.matrix.tolist()
        return out
