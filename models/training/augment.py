"""D4 augmentation: the eight rotations and reflections of a square chip (albumentations ``D4``).

IBM's TerraMind fine-tuning configs use ``albumentations.D4`` (p=1): every training sample gets
one of the eight elements of the dihedral group, uniformly, the same for every modality and the
mask (``shared_transforms``). Element ``k``: ``k < 4`` rotates by ``k`` quarter turns; ``k >= 4``
transposes first, then rotates by ``k - 4`` quarter turns (``4`` is the transpose, ``6`` the
anti-transpose, ``5``/``7`` the two flips). Works on any ``(..., H, W)`` tensor.
"""

from __future__ import annotations

import torch

D4_ELEMENTS = 8


def d4(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0..7) of D4 applied to the last two dimensions of ``x``."""
    if not 0 <= int(k) < D4_ELEMENTS:
        raise ValueError(f"D4 element must be 0..7, got {k}")
    if k >= 4:
        x = x.transpose(-2, -1)
    return torch.rot90(x, int(k) % 4, dims=(-2, -1)).contiguous()


def d4_batch(x: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Element ``ks[i]`` applied to sample ``i`` of ``x`` ``(B, ..., H, W)``."""
    return torch.stack([d4(x[i], int(k)) for i, k in enumerate(ks.tolist())])
