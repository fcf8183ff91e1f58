"""One training or validation step, as ``SemanticSegmentationTask`` computes it under Lightning.

``training_step`` (terratorch/tasks/segmentation_tasks.py) with Lightning's automatic
optimisation: ``zero_grad`` → forward (under autocast for ``bf16``/``fp16``, Lightning's
``*-mixed`` precision) → ``criterion(logits, mask)`` (loss_handler.py ``compute_loss``: the
criterion on the main output) → ``backward`` (through a ``GradScaler`` for fp16) →
``optimizer.step()``. ``validation_step``: the same forward and loss without gradients, and the
arg-max prediction into the epoch's confusion matrix.

The forward pass takes one of two routes with identical results: the whole network on
standardised inputs (``SegmentationModel.standardize``: NaN → ``no_data_replace``, then mean/std,
as TerraTorch's data module does), or, with a frozen backbone, the cached encoder outputs
(features.py) through ``network.decode``. D4 element ``ks[i]`` is applied to sample ``i``'s
inputs and mask (element 0, the identity, for validation). TiM backbones get a token-sampling
``seed`` per forward from ``encoder_kwargs`` (TerraTorch draws it from Python's ``random``).

Dimensions: ``B`` batch, ``K`` classes, ``H, W`` pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..segmentation.model import SegmentationModel
from .augment import d4_batch
from .features import FeatureCache
from .metrics import ConfusionMatrix
from .network import decode

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class StepContext:
    """What a step needs: the model (raw-input wrapper), loss, optimiser and the feature caches."""

    model: SegmentationModel
    criterion: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    scaler: Any = None  # torch.amp.GradScaler for fp16
    train_cache: FeatureCache | None = None
    val_cache: FeatureCache | None = None
    encoder_kwargs: Callable[[], dict[str, Any]] | None = None  # TiM: a fresh token-sampling seed per call

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = AUTOCAST[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)


def forward(
    ctx: StepContext, batch: dict[str, Any], ks: Sequence[int], cache: FeatureCache | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits ``(B, K, H, W)``, mask ``(B, H, W)``) of a batch under D4 elements ``ks``."""
    k = torch.as_tensor(list(ks))
    mask = d4_batch(batch["mask"], k).to(ctx.device)  # (B, H, W)
    if cache is not None:
        encoded = cache.get(batch["index"].tolist(), k.tolist(), ctx.device)
        return decode(ctx.model.net, encoded), mask
    raw = {m: d4_batch(x, k).to(ctx.device) for m, x in batch["image"].items()}  # (B, C, H, W)
    kwargs = ctx.encoder_kwargs() if ctx.encoder_kwargs is not None else {}
    return ctx.model.net(ctx.model.standardize(raw), **kwargs), mask


def loss_of(
    ctx: StepContext, batch: dict[str, Any], ks: Sequence[int], cache: FeatureCache | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, logits, mask) under the run's autocast: the part of ``training_step`` before ``backward``."""
    with ctx.autocast():
        logits, mask = forward(ctx, batch, ks, cache)
        loss = ctx.criterion(logits, mask)
    return loss, logits, mask


def train_step(ctx: StepContext, batch: dict[str, Any], ks: Sequence[int]) -> float:
    """One optimiser step on ``batch``; returns the loss (a float)."""
    assert ctx.optimizer is not None
    ctx.optimizer.zero_grad(set_to_none=True)
    loss, _, _ = loss_of(ctx, batch, ks, ctx.train_cache)
    if ctx.scaler is not None:
        ctx.scaler.scale(loss).backward()
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        loss.backward()
        ctx.optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def eval_step(ctx: StepContext, batch: dict[str, Any], confusion: ConfusionMatrix) -> float:
    """Validation loss of ``batch`` (a float); its predictions go into ``confusion``."""
    ks = [0] * len(batch["mask"])
    loss, logits, mask = loss_of(ctx, batch, ks, ctx.val_cache)
    confusion.update(logits.argmax(dim=1), mask)
    return float(loss)
