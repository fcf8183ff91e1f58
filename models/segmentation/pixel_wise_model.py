"""The fine-tuned segmentation model: backbone → necks → decoder → head (TerraTorch ``PixelWiseModel``).

Mirrors ``terratorch/models/pixel_wise_model.py`` (1.2.11) at inference, with the same attribute
names (``encoder``, ``neck``, ``decoder``, ``head``) so a Lightning checkpoint's ``model.*`` keys load
unchanged:

1. every image input is reflect-padded to a multiple of ``2 * patch_size`` (32 for TerraMind),
   split symmetrically (``floor(pad / 2)`` on top/left, the rest on bottom/right);
2. encoder → necks (given the padded size) → decoder → head;
3. logits of another size are resized bilinearly (``align_corners=False``) to the padded size;
4. the centre (the unpadded area) is cropped out.

Inputs are standardised already (``SegmentationModel`` in ``model.py`` does that). Dimensions:
``B`` batch, ``C`` channels, ``K`` classes, ``H, W`` image size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .necks import NeckSequential


def symmetric_padding(size: int, multiple: int) -> tuple[int, int]:
    """(before, after) padding that brings ``size`` up to a multiple of ``multiple``."""
    total = (multiple - size % multiple) % multiple
    return total // 2, total - total // 2


def pad_inputs(inputs: dict[str, torch.Tensor], multiple: int, mode: str = "reflect") -> dict[str, torch.Tensor]:
    """Pad the last two dims of every image tensor (rank ≥ 4) of ``inputs`` like the reference's ``pad_images``.

    Multi-temporal ``(B, C, T, H, W)`` inputs are padded date by date (the reference pads each
    ``(C, T, H, W)`` sample as a batch of ``C`` images of ``T`` channels: the same values).
    """
    out = {}
    for name, x in inputs.items():
        if x.dim() < 4:
            out[name] = x
            continue
        top, bottom = symmetric_padding(x.shape[-2], multiple)
        left, right = symmetric_padding(x.shape[-1], multiple)
        if not top + bottom + left + right:
            out[name] = x
        elif x.dim() == 4:
            out[name] = F.pad(x, (left, right, top, bottom), mode=mode)  # (B, C, H', W')
        else:
            flat = x.reshape(-1, *x.shape[-3:])  # (B*C, T, H, W): a batch of T-channel images
            padded = F.pad(flat, (left, right, top, bottom), mode=mode)  # (B*C, T, H', W')
            out[name] = padded.reshape(*x.shape[:-2], *padded.shape[-2:])  # (B, C, T, H', W')
    return out


def image_size(inputs: dict[str, torch.Tensor]) -> tuple[int, int]:
    """The largest (H, W) among the image tensors of ``inputs`` (the reference's ``get_image_size``)."""
    sizes = [tuple(x.shape[-2:]) for x in inputs.values() if x.dim() in (4, 5)]
    if not sizes:
        raise ValueError(f"no image among the inputs {list(inputs)}")
    return max(sizes, key=lambda s: s[0] * s[1])  # type: ignore[return-value]


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size`` of ``x`` (offset ``(H - h) // 2``, i.e. the top/left padding)."""
    h, w = size
    top = max((x.shape[-2] - h) // 2, 0)
    left = max((x.shape[-1] - w) // 2, 0)
    return x[..., top : top + h, left : left + w]


class PixelWiseModel(nn.Module):
    """Encoder, necks, decoder and head, with the reference's padding and cropping."""

    def __init__(
        self,
        encoder: nn.Module,
        neck: NeckSequential,
        decoder: nn.Module,
        head: nn.Module,
        patch_size: int = 16,
        padding: str | None = "reflect",
        rescale: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.neck = neck
        self.decoder = decoder
        self.head = head
        self.patch_size = int(patch_size)
        self.padding = padding
        self.rescale = rescale

    def forward(self, inputs: dict[str, torch.Tensor], **encoder_kwargs: Any) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` for standardised inputs ``{modality: (B, C, H, W)}`` (or ``(B, C, T, H, W)``)."""
        out_size = image_size(inputs)
        if self.padding is not None:
            inputs = pad_inputs(inputs, 2 * self.patch_size, self.padding)
        padded_size = image_size(inputs)
        features = self.encoder(inputs, **encoder_kwargs)  # list of (B, N, D)
        features = self.neck(list(features), image_size=padded_size)  # list of (B, C_i, H_i, W_i)
        logits = self.head(self.decoder(features))  # (B, K, H', W')
        if self.rescale and tuple(logits.shape[-2:]) != tuple(padded_size):
            logits = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)  # (B, K, H_pad, W_pad)
        return center_crop(logits, out_size)  # (B, K, H, W)
