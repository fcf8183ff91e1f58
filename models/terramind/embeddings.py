"""Encoder and decoder embeddings of TerraMind v1 image modalities (terratorch ``*_embeddings.py``).

Each embedding returns the content ``x`` and, separately, ``emb`` = positional + modality
embedding; the model adds them. Positional tables are fixed 2-D sin-cos buffers for the
construction size (224 → 14 x 14) and are bicubically resized for other grids. Spec §3.3-3.4.

- ``ImageEncoderEmbedding``: raw pixels; patches flattened as **(ph, pw, c)** (channel innermost)
  into a bias-free Linear ``proj``.
- ``ImageTokenEncoderEmbedding``: tokenizer ids → ``token_emb``.
- ``ImageTokenDecoderEmbedding``: ``token_emb`` with a tied output head ``to_logits``.

Coordinates and captions (sequence modalities) are out of scope. Dimensions: ``B`` batch,
``C`` channels, ``H, W`` pixels, ``h, w`` patches, ``N = h*w`` tokens, ``D`` width, ``V`` vocabulary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ConfigError, InputRasterError
from .posemb import build_2d_sincos_posemb, cpu_2d_sincos_posemb, resize_pos_emb


def modality_id(key: str) -> int:
    """terratorch's modality id: ``sha256(key) mod 2**15`` (only equality of ids matters)."""
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 2**15


@dataclass(frozen=True)
class EmbeddingSpec:
    """What a v1 internal modality key embeds (terratorch ``MODALITY_INFO``)."""

    key: str
    num_channels: int | None = None  # raw image modalities
    vocab_size: int | None = None  # tokenized image modalities
    patch_size: int = 16

    @property
    def tokenized(self) -> bool:
        return self.vocab_size is not None

    @property
    def id(self) -> int:
        return modality_id(self.key)


# Note: terratorch's partial for untok_sen2rgb@224 says 13 channels, but the info dict's
# num_channels=3 overrides it (terratorch 1.2.11 ``models/backbones/terramind/model/modality_info.py``), so RGB embeds 3 channels.
EMBEDDING_SPECS: dict[str, EmbeddingSpec] = {
    s.key: s
    for s in (
        EmbeddingSpec("untok_sen2l2a@224", num_channels=12),
        EmbeddingSpec("untok_sen2l1c@224", num_channels=13),
        EmbeddingSpec("untok_sen2rgb@224", num_channels=3),
        EmbeddingSpec("untok_sen1grd@224", num_channels=2),
        EmbeddingSpec("untok_sen1rtc@224", num_channels=2),
        EmbeddingSpec("untok_dem@224", num_channels=1),
        EmbeddingSpec("tok_sen2l2a@224", vocab_size=15360),
        EmbeddingSpec("tok_sen1grd@224", vocab_size=15360),
        EmbeddingSpec("tok_sen1rtc@224", vocab_size=15360),
        EmbeddingSpec("tok_dem@224", vocab_size=15360),
        EmbeddingSpec("tok_ndvi@224", vocab_size=15360),
        EmbeddingSpec("tok_lulc@224", vocab_size=4375),
    )
}


def embedding_spec(key: str) -> EmbeddingSpec:
    """The spec of a v1 internal key (``ConfigError`` for anything else)."""
    try:
        return EMBEDDING_SPECS[key]
    except KeyError:
        raise ConfigError(
            f"no TerraMind v1 embedding for modality key '{key}'; known: {', '.join(EMBEDDING_SPECS)}"
        ) from None


class _ImageEmbedding(nn.Module):
    """What every image embedding holds: the fixed ``pos_emb`` buffer ``(1, h0*w0, D)`` for the
    construction image size and the learned ``mod_emb`` ``(1, 1, D)``."""

    def __init__(self, dim_tokens: int, patch_size: int, image_size: int) -> None:
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.image_size = (image_size, image_size)
        self.dim_tokens = dim_tokens
        h0, w0 = image_size // patch_size, image_size // patch_size
        self.register_buffer("pos_emb", build_2d_sincos_posemb(h=h0, w=w0, embed_dim=dim_tokens))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim_tokens))

    def init_deterministic_buffers(self) -> None:
        """Recompute the sin-cos ``pos_emb`` buffer as a real CPU tensor."""
        h0, w0 = self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]
        self.register_buffer("pos_emb", cpu_2d_sincos_posemb(h0, w0, self.dim_tokens))

    def position_embedding(self, grid: tuple[int, int], batch: int) -> torch.Tensor:
        """``pos_emb`` (resized to ``grid`` when needed) + ``mod_emb``, expanded to ``(B, N, D)``."""
        size = (grid[0] * self.patch_size[0], grid[1] * self.patch_size[1])
        pos_emb = self.pos_emb if size == self.image_size else resize_pos_emb(self.pos_emb, grid)  # (1, N, D)
        return (pos_emb + self.mod_emb).expand(batch, -1, -1)  # (B, N, D)


class ImageEncoderEmbedding(_ImageEmbedding):
    """Raw-pixel patch embedding: ``proj`` Linear(C*16*16 → D, no bias), ``mod_emb``, ``pos_emb``."""

    def __init__(self, num_channels: int, dim_tokens: int, patch_size: int = 16, image_size: int = 224) -> None:
        super().__init__(dim_tokens, patch_size, image_size)
        self.num_channels = num_channels
        self.proj = nn.Linear(num_channels * patch_size * patch_size, dim_tokens, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(B, C, H, W)`` → ``(tokens (B, N, D), emb (B, N, D))``."""
        B, C, H, W = x.shape
        ph, pw = self.patch_size
        if H % ph or W % pw:
            raise InputRasterError(f"image size {H}x{W} must be divisible by the patch size {ph}x{pw}")
        in_features = self.proj.in_features
        if C * ph * pw != in_features:
            raise InputRasterError(
                f"this modality's patch embedding expects {in_features // (ph * pw)} bands, got {C}"
            )
        h, w = H // ph, W // pw
        x = x.to(self.proj.weight.dtype)  # e.g. float64 rasters; a no-op for float32
        patches = x.reshape(B, C, h, ph, w, pw).permute(0, 2, 4, 3, 5, 1).reshape(B, h * w, ph * pw * C)  # (B, N, 256C)
        return self.proj(patches), self.position_embedding((h, w), B)  # (B, N, D) each


def _square_token_grid(ids: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Flatten ``(B, h, w)`` or ``(B, N)`` ids to ``(B, N)`` and return the (square) grid."""
    B = ids.shape[0]
    flat = ids.reshape(B, -1)  # (B, N)
    side = int(flat.shape[1] ** 0.5)
    square = side * side == flat.shape[1] and (ids.dim() != 3 or ids.shape[1] == ids.shape[2])
    if not square:
        raise ConfigError(
            f"token grid {tuple(ids.shape[1:])} is not square; TerraMind's token embeddings need square "
            "images (terratorch asserts or silently transposes here)"
        )
    return flat, (side, side)


class ImageTokenEncoderEmbedding(_ImageEmbedding):
    """Tokenized-image input embedding: ``token_emb`` Embedding(V, D), ``mod_emb``, ``pos_emb``."""

    def __init__(self, vocab_size: int, dim_tokens: int, patch_size: int = 16, image_size: int = 224) -> None:
        super().__init__(dim_tokens, patch_size, image_size)
        self.vocab_size = vocab_size
        self.token_emb = nn.Embedding(vocab_size, dim_tokens)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids`` ``(B, h, w)`` or ``(B, N)`` (square grid) → ``(tokens (B, N, D), emb (B, N, D))``."""
        flat, grid = _square_token_grid(ids)  # (B, N)
        return self.token_emb(flat), self.position_embedding(grid, flat.shape[0])  # (B, N, D) each


class ImageTokenDecoderEmbedding(_ImageEmbedding):
    """Target embedding of a generated image modality; ``to_logits`` is tied to ``token_emb``."""

    def __init__(self, vocab_size: int, dim_tokens: int, patch_size: int = 16, image_size: int = 224) -> None:
        super().__init__(dim_tokens, patch_size, image_size)
        self.vocab_size = vocab_size
        self.token_emb = nn.Embedding(vocab_size, dim_tokens)
        self.to_logits = nn.Linear(dim_tokens, vocab_size, bias=False)
        self.to_logits.weight = self.token_emb.weight  # tied, as in the reference

    def forward_logits(self, y: torch.Tensor) -> torch.Tensor:
        """Decoder outputs ``(..., D)`` → logits ``(..., V)``."""
        return self.to_logits(y)


def build_encoder_embedding(key: str, dim: int, img_size: int) -> nn.Module:
    """The encoder embedding terratorch builds for internal key ``key``."""
    spec = embedding_spec(key)
    if spec.tokenized:
        return ImageTokenEncoderEmbedding(spec.vocab_size, dim, spec.patch_size, img_size)  # type: ignore[arg-type]
    return ImageEncoderEmbedding(spec.num_channels, dim, spec.patch_size, img_size)  # type: ignore[arg-type]


def build_decoder_embedding(key: str, dim: int, img_size: int) -> ImageTokenDecoderEmbedding:
    """The decoder embedding of an output key (only tokenized image modalities can be generated)."""
    spec = embedding_spec(key)
    if not spec.tokenized:
        raise ConfigError(f"modality key '{key}' is a raw-pixel input and cannot be generated")
    return ImageTokenDecoderEmbedding(spec.vocab_size, dim, spec.patch_size, img_size)  # type: ignore[arg-type]
