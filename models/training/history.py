"""What each epoch measured: ``EpochRecord``, the metrics CSV and the training-curve PNG.

CSV columns (one row per epoch, names as TerraTorch logs them): ``epoch`` (1-based), ``lr``,
``train/loss`` (batch-size-weighted mean over the epoch's batches), ``val/loss`` (the same over
the validation batches), ``val/mIoU``, ``val/mIoU_Micro``, ``val/F1_Score``, ``val/Accuracy``,
``val/Pixel_Accuracy``, ``val/IoU_<class>`` and ``val/Class_Accuracy_<class>`` per class
(metrics.py), ``seconds`` and ``best`` (1 when the epoch set a new best ``val/loss``). Both files
are rewritten whole after every epoch, atomically.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .curve_png import training_curve, write_png

VAL_KEYS = ("mIoU", "mIoU_Micro", "F1_Score", "Accuracy", "Pixel_Accuracy")


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch."""

    epoch: int  # 1-based
    lr: float
    train_loss: float
    val_loss: float
    val: dict[str, Any] = field(default_factory=dict)  # ConfusionMatrix.summary(): mIoU, IoU_<class>, ..., confusion_matrix
    seconds: float = 0.0
    best: bool = False

    @property
    def val_miou(self) -> float:
        return float(self.val.get("mIoU", float("nan")))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochRecord:
        return cls(**d)


def columns(class_names: Sequence[str]) -> list[str]:
    return ["epoch", "lr", "train/loss", "val/loss", *(f"val/{k}" for k in VAL_KEYS),
            *(f"val/IoU_{n}" for n in class_names), *(f"val/Class_Accuracy_{n}" for n in class_names),
            "seconds", "best"]  # fmt: skip


def write_text_atomic(path: Path, text: str) -> Path:
    """``text`` to ``path`` through ``<path>.partial-<pid>`` and a rename: never half-written."""
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path


def write_metrics_csv(path: str | os.PathLike[str], records: Sequence[EpochRecord], class_names: Sequence[str]) -> Path:
    """The metrics CSV of ``records`` (module docstring)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns(class_names))
    for r in records:
        writer.writerow([r.epoch, f"{r.lr:.6g}", f"{r.train_loss:.6f}", f"{r.val_loss:.6f}",
                         *(f"{r.val.get(k, float('nan')):.6f}" for k in VAL_KEYS),
                         *(f"{r.val.get(f'IoU_{n}', float('nan')):.6f}" for n in class_names),
                         *(f"{r.val.get(f'Class_Accuracy_{n}', float('nan')):.6f}" for n in class_names),
                         f"{r.seconds:.2f}", int(r.best)])  # fmt: skip
    return write_text_atomic(Path(path), buf.getvalue())


def write_curve(path: str | os.PathLike[str], records: Sequence[EpochRecord], title: str = "") -> Path:
    """The training-curve PNG of ``records``."""
    rgb = training_curve([r.epoch for r in records], [r.train_loss for r in records],
                         [r.val_loss for r in records], [r.val_miou for r in records], title)  # fmt: skip
    return write_png(path, rgb)


def epoch_message(r: EpochRecord, max_epochs: int, class_names: Sequence[str]) -> str:
    """The one info line per epoch: train loss, val loss, val mIoU and the IoU of every class."""
    ious = ", ".join(f"{n} {r.val.get(f'IoU_{n}', float('nan')):.3f}" for n in class_names)
    return (f"epoch {r.epoch}/{max_epochs}: train loss {r.train_loss:.4f}, val loss {r.val_loss:.4f}, "
            f"val mIoU {r.val_miou:.3f} (IoU: {ious}), lr {r.lr:.3g}, {r.seconds:.1f} s"
            + (" - best so far" if r.best else ""))  # fmt: skip
