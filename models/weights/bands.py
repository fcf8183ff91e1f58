"""A checkpoint view that slices full pretrained patch embeddings to a band subset.

terratorch's ``bands={modality: [band names]}`` (``select_modality_patch_embed_weights``, applied
after loading there) keeps, of the raw patch embedding weight viewed as ``(D, pixels, bands)``, the
requested band columns in the requested order. Here the loader sees the file through this view,
so the strict key/shape check and the assignment work on the already-sliced tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch

from ..modalities import modality_for_key
from .reading import Checkpoint


class BandSubsetCheckpoint(Checkpoint):
    """``base`` with ``encoder_embeddings.<key>.proj.weight`` sliced to ``band_indices[key]``.

    Only a weight of the full pretrained width is sliced; one that already has another width (a
    fine-tuned file, or a wrong one) is passed through for the strict check to judge.
    """

    def __init__(self, base: Checkpoint, band_indices: Mapping[str, Sequence[int]], pixels: int) -> None:
        super().__init__(base.path, base.container)
        self.base, self.pixels = base, pixels
        self.subsets = {f"encoder_embeddings.{k}.proj.weight": tuple(v) for k, v in band_indices.items()}
        self.full_width = {
            f"encoder_embeddings.{k}.proj.weight": pixels * modality_for_key(k).num_bands for k in band_indices
        }

    def _sliced(self, key: str) -> bool:
        if key not in self.subsets or key not in self.base:
            return False
        shape = self.base.shape(key)
        return len(shape) == 2 and shape[1] == self.full_width[key]

    def __getitem__(self, key: str) -> torch.Tensor:
        from ..terramind import select_band_columns

        tensor = self.base[key]
        return select_band_columns(tensor, self.subsets[key], self.pixels) if self._sliced(key) else tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)

    def __contains__(self, key: object) -> bool:
        return key in self.base

    def dtype(self, key: str) -> torch.dtype:
        return self.base.dtype(key)

    def shape(self, key: str) -> tuple[int, ...]:
        shape = self.base.shape(key)
        return (shape[0], self.pixels * len(self.subsets[key])) if self._sliced(key) else shape
