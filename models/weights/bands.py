"""Band subsets: a checkpoint view that slices full pretrained patch embeddings to the bands asked for.

terratorch's ``bands={modality: [band names]}`` (``select_modality_patch_embed_weights``, applied
after loading there) keeps, of the raw patch embedding weight viewed as ``(D, pixels, bands)``, the
requested band columns in the requested order. A module declares its subsets as ``band_indices``
(``{internal key: pretrained band positions}``, ``TerraMindViT``); the loader then sees the file
through ``band_subset_view``, so the strict key/shape check and the assignment work on the
already-sliced tensors, and the file layout of such a module (``pretrained_proj_shapes``) keeps the
full, all-band patch embeddings of the official checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..core.modalities import modality_for_key
from ..terramind.backbone import select_band_columns
from .reading import Checkpoint


def proj_key(key: str) -> str:
    """Checkpoint key of the raw-pixel patch embedding of internal modality ``key``."""
    return f"encoder_embeddings.{key}.proj.weight"


def band_subsets(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """The band subsets ``module`` declares (``band_indices``); empty for every other module."""
    return dict(getattr(module, "band_indices", None) or {})


def _patch_pixels(module: nn.Module) -> int:
    patch = int(module.config.patch_size)  # type: ignore[union-attr]
    return patch * patch


def pretrained_proj_shapes(module: nn.Module) -> dict[str, tuple[int, int]]:
    """``{checkpoint key: full pretrained shape}`` of ``module``'s band-subset patch embeddings."""
    subsets = band_subsets(module)
    if not subsets:
        return {}
    dim, pixels = int(module.config.dim), _patch_pixels(module)  # type: ignore[union-attr]
    return {proj_key(k): (dim, pixels * modality_for_key(k).num_bands) for k in subsets}


def band_subset_view(checkpoint: Checkpoint, module: nn.Module) -> Checkpoint:
    """``checkpoint`` as ``module`` takes it: sliced to its band subsets, if it has any."""
    subsets = band_subsets(module)
    return BandSubsetCheckpoint(checkpoint, subsets, _patch_pixels(module)) if subsets else checkpoint


class BandSubsetCheckpoint(Checkpoint):
    """``base`` with ``encoder_embeddings.<key>.proj.weight`` sliced to ``band_indices[key]``.

    Only a weight of the full pretrained width is sliced; one that already has another width (a
    fine-tuned file, or a wrong one) is passed through for the strict check to judge.
    """

    def __init__(self, base: Checkpoint, band_indices: Mapping[str, Sequence[int]], pixels: int) -> None:
        super().__init__(base.path, base.container)
        self.base, self.pixels = base, pixels
        self._names = base
        self.subsets = {proj_key(k): tuple(v) for k, v in band_indices.items()}
        self.full_width = {proj_key(k): pixels * modality_for_key(k).num_bands for k in band_indices}

    def _sliced(self, key: str) -> bool:
        if key not in self.subsets or key not in self.base:
            return False
        shape = self.base.shape(key)
        return len(shape) == 2 and shape[1] == self.full_width[key]

    def __getitem__(self, key: str) -> torch.Tensor:
        tensor = self.base[key]
        return select_band_columns(tensor, self.subsets[key], self.pixels) if self._sliced(key) else tensor

    def dtype(self, key: str) -> torch.dtype:
        return self.base.dtype(key)

    def shape(self, key: str) -> tuple[int, ...]:
        shape = self.base.shape(key)
        return (shape[0], self.pixels * len(self.subsets[key])) if self._sliced(key) else shape
