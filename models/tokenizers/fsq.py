"""Finite scalar quantizer (FSQ) of the TerraMind v1 tokenizers (terratorch 1.2.11
``models/backbones/terramind/tokenizer/quantizers/quantize_finite_scalar.py``).

Mirrors terratorch 1.2.11 ``tokenizer/quantizers/quantize_finite_scalar.py``, inference only:

- encode, per position and latent channel i with L_i levels: ``n_i = round(sigmoid(z_i) * (L_i - 1))``
  (``torch.round``: half to even), code ``n_i / (L_i - 1)`` in [0, 1] (not the usual [-1, 1]),
  token id ``sum_i n_i * basis_i`` with the mixed-radix ``basis = cumprod([1, L_0, ..., L_{-2}])``,
  returned as int32;
- decode: ``n_i = (id // basis_i) % L_i`` and the same code.

The module holds no tensors at all (levels and basis are Python tuples turned into tensors on the
input's device at call time), so it builds on the meta device and never needs re-initialising.
The quantisation always runs in float32, whatever dtype the rest of the tokenizer uses.

Dimensions: B batch, L latent channels (= number of levels), (h, w) token grid, N = h*w.
"""

from __future__ import annotations

import torch
from torch import nn

from .layout import grid_to_tokens, tokens_to_grid


class FiniteScalarQuantizer(nn.Module):
    """FSQ with ``levels`` (e.g. ``(8, 8, 8, 6, 5)``: 15360 codes; LULC ``(7, 5, 5, 5, 5)``: 4375)."""

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.levels = tuple(int(level) for level in levels)
        basis = [1]
        for level in self.levels[:-1]:
            basis.append(basis[-1] * level)
        self.basis = tuple(basis)
        self.codebook_size = basis[-1] * self.levels[-1]

    def _levels_tensor(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.levels, dtype=torch.int32, device=device)

    def _basis_tensor(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.basis, dtype=torch.int32, device=device)

    def latent_to_code_and_indice(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``(..., L)`` → codes ``(..., L)`` in [0, 1] and ids ``(...)`` int32."""
        d = self._levels_tensor(latent.device) - 1  # (L,) int32
        number = torch.round(torch.sigmoid(latent.float()) * d)  # (..., L) integral float32
        code = number / d  # (..., L)
        indice = (number * self._basis_tensor(latent.device)).sum(dim=-1).to(torch.int32)  # (...)
        return code, indice

    def indice_to_code(self, indice: torch.Tensor) -> torch.Tensor:
        """Ids ``(...)`` → codes ``(..., L)`` float32 in [0, 1]."""
        levels = self._levels_tensor(indice.device)
        code = (indice.unsqueeze(-1) // self._basis_tensor(indice.device)) % levels  # (..., L) integer
        return code / (levels - 1)  # (..., L) float32

    def indices_to_embedding(self, indices: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, h, w)`` → quantised latents ``(B, L, h, w)``."""
        b, h, w = indices.shape
        codes = self.indice_to_code(indices.reshape(b, h * w))  # (B, N, L)
        return tokens_to_grid(codes, h, w)  # (B, L, h, w)

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``(B, L, h, w)`` → quantised latents ``(B, L, h, w)`` and ids ``(B, h, w)`` int32."""
        b, _, h, w = latent.shape
        code, indice = self.latent_to_code_and_indice(grid_to_tokens(latent))  # (B, N, L), (B, N)
        return tokens_to_grid(code, h, w), indice.reshape(b, h, w)
