"""Tensor re-layouts of the tokenizers, written to give the reference's exact memory layouts.

The reference (terratorch 1.2.11) uses ``einops.rearrange``; einops 0.8 first merges axes that stay
adjacent, then permutes, then reshapes, so several results are non-contiguous views. Later kernels
(1x1 convolutions, bicubic resampling, GEMMs) pick their algorithm by memory layout, and different
algorithms round differently, so these helpers reproduce einops' sequence of ``reshape``/``permute``
calls rather than just the values. Each docstring gives the einops pattern it stands for.

Dimensions: B batch, C channels, D width, N = h*w tokens, (h, w) token grid, P patch size.
"""

from __future__ import annotations

import torch


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``b d nh nw -> b (nh nw) d``."""
    b, d, nh, nw = x.shape
    return x.reshape(b, d, nh * nw).permute(0, 2, 1)  # (B, N, D)


def tokens_to_grid(x: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """``b (nh nw) d -> b d nh nw`` (a channels-last view of the token sequence)."""
    b, _, d = x.shape
    return x.permute(0, 2, 1).reshape(b, d, nh, nw)  # (B, D, h, w)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``b c (nh ph) (nw pw) -> b (c ph pw) nh nw`` (channel outermost)."""
    b, c, height, width = x.shape
    nh, nw = height // patch, width // patch
    x = x.reshape(b, c, nh, patch, nw, patch)  # (B, C, h, P, w, P)
    x = x.permute(0, 1, 3, 5, 2, 4)  # (B, C, P, P, h, w)
    return x.reshape(b, c * patch * patch, nh, nw)  # (B, C*P*P, h, w)


def unpatchify(x: torch.Tensor, channels: int, patch: int) -> torch.Tensor:
    """``b (c ph pw) nh nw -> b c (nh ph) (nw pw)``."""
    b, _, nh, nw = x.shape
    x = x.reshape(b, channels, patch, patch, nh, nw)  # (B, C, P, P, h, w)
    x = x.permute(0, 1, 4, 2, 5, 3)  # (B, C, h, P, w, P)
    return x.reshape(b, channels, nh * patch, nw * patch)  # (B, C, H, W)


def token_patches_to_image(x: torch.Tensor, nh: int, nw: int, channels: int, patch: int) -> torch.Tensor:
    """``b (nh nw) (c ph pw) -> b c (nh ph) (nw pw)``."""
    b = x.shape[0]
    x = x.reshape(b, nh, nw, channels, patch, patch)  # (B, h, w, C, P, P)
    x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, h, P, w, P)
    return x.reshape(b, channels, nh * patch, nw * patch)  # (B, C, H, W)
