"""Frozen-backbone feature cache: the encoder runs once per chip and D4 element, not once per epoch.

With a frozen backbone the encoder's output for a given input never changes (TerraMind's encoder
has no dropout, drop-path or batch statistics at TerraTorch's defaults, so train and eval mode
agree), so it can be computed once and an epoch costs only necks + decoder + head.

D4 augmentation: the cache holds the features of each of the 8 transformed chips
(``encoder(d4(x, k))``), computed the first time element ``k`` of a chip is drawn. Transforming
cached features instead (``d4`` of ``encoder(x)``) would be wrong: the ViT's patch embedding and
absolute positional embeddings make the encoder not equivariant under rotations and flips, so
that would train on features the encoder never produces. Caching the 8 variants keeps training
exactly equal to augmenting the input (as TerraTorch's ``albumentations.D4`` does), at up to 8x the
memory and a one-time 8x encoder cost spread over the first epochs (a chip's element is
computed on first use: after ``e`` epochs a fraction ``1 - (7/8)**e`` of them).

Storage: ``(chips, variants, L, N, D)`` float32 in RAM when it fits ``ram_budget`` bytes, else a
memory-mapped scratch file (``<scratch>/features-<pid>.f32``, removed by ``close``).
Dimensions: ``L`` kept layers, ``N`` tokens, ``D`` width.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .network import Encoded

RAM_BUDGET = 2 << 30  # bytes of features kept in memory before spilling to a scratch file


class FeatureCache:
    """Lazily filled encoder outputs of ``n_chips`` chips x ``variants`` D4 elements."""

    def __init__(
        self,
        n_chips: int,
        variants: int,
        encode_chips: Callable[[Sequence[int], int], Encoded],
        *,
        scratch: str | os.PathLike[str] | None = None,
        ram_budget: int = RAM_BUDGET,
    ) -> None:
        """``encode_chips(indices, k)`` encodes chips ``indices`` under D4 element ``k``."""
        self.n_chips, self.variants = int(n_chips), int(variants)
        self.encode_chips = encode_chips
        self.scratch = Path(scratch) if scratch is not None else None
        self.ram_budget = int(ram_budget)
        self.filled = torch.zeros(self.n_chips, self.variants, dtype=torch.bool)
        self.store: torch.Tensor | None = None
        self.path: Path | None = None
        self.sizes: tuple[tuple[int, int], tuple[int, int]] | None = None  # (padded, out)
        self.computed = 0

    @property
    def nbytes(self) -> int:
        return 0 if self.store is None else self.store.numel() * self.store.element_size()

    def _allocate(self, example: Encoded) -> None:
        layers = torch.stack(example.features, dim=1)  # (B, L, N, D)
        shape = (self.n_chips, self.variants, *layers.shape[1:])
        nbytes = int(np.prod(shape)) * 4
        if nbytes <= self.ram_budget or self.scratch is None:
            self.store = torch.zeros(shape, dtype=torch.float32)
        else:
            self.scratch.mkdir(parents=True, exist_ok=True)
            self.path = self.scratch / f"features-{os.getpid()}.f32"
            array = np.memmap(self.path, dtype=np.float32, mode="w+", shape=shape)
            self.store = torch.from_numpy(array)
        self.sizes = (example.padded_size, example.out_size)

    def fill(self, indices: Sequence[int], ks: Sequence[int]) -> None:
        """Compute the missing (chip, element) pairs among ``zip(indices, ks)``, grouped by element."""
        by_k: dict[int, list[int]] = {}
        for i, k in zip(indices, ks):
            if not bool(self.filled[i, k]) and i not in by_k.get(k, []):
                by_k.setdefault(int(k), []).append(int(i))
        for k, chips in sorted(by_k.items()):
            encoded = self.encode_chips(chips, k)
            if self.store is None:
                self._allocate(encoded)
            assert self.store is not None
            layers = torch.stack([f.detach().float().cpu() for f in encoded.features], dim=1)  # (B, L, N, D)
            self.store[torch.tensor(chips), k] = layers
            self.filled[torch.tensor(chips), k] = True
            self.computed += len(chips)

    def get(self, indices: Sequence[int], ks: Sequence[int], device: torch.device | str = "cpu") -> Encoded:
        """The cached ``Encoded`` of chips ``indices`` under elements ``ks`` (computed first if missing)."""
        self.fill(indices, ks)
        assert self.store is not None and self.sizes is not None
        batch = self.store[torch.tensor(list(indices)), torch.tensor(list(ks))].to(device)  # (B, L, N, D)
        return Encoded(list(batch.unbind(dim=1)), *self.sizes)

    def close(self) -> None:
        """Free the features and remove the scratch file."""
        self.store = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
