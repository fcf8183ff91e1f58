"""Shared part of the TerraMind v1 image tokenizers: ViT encoder, ``quant_proj``, the FSQ quantizer,
and the decoding API around a subclass's ``decode_quant`` (``decode_tokens``, ``reconstruct``).

Mirrors the reference's ``VQ`` base class (terratorch 1.2.11 ``tokenizer/vqvae.py``) for the
constructor arguments the registry uses (``enc_type='vit_b_enc'``, ``post_mlp=True``,
``quant_type='fsq'``, ``image_size=256``, ``patch_size=16``, no ``n_labels``/``cls_emb``, no
``undo_std``), inference only. Attribute order and names match, so ``state_dict()`` keys and order
equal the reference's.

Input checks the reference does not make (it crashes or silently returns garbage instead) raise
this package's errors: sizes → ``ConfigError``; band count, NaN, class ids → ``InputRasterError``;
token ids → ``ConfigError``.

Dimensions: B batch, C channels, H, W image size, P patch size (16), (h, w) = (H/P, W/P) token grid,
N = h*w, L latent channels (5), D encoder width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.configs import TokenizerConfig
from ..core.errors import ConfigError, InputRasterError
from ..core.progress import NullProgress, Progress, check_cancelled
from .fsq import FiniteScalarQuantizer
from .unet import GroupNorm32
from .vit import ViTEncoder


def as_size(image_size: tuple[int, int] | list[int] | int) -> tuple[int, int]:
    """``(H, W)`` from an int or a pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = (int(v) for v in image_size)
    return height, width


class VQ(nn.Module):
    """Encoder + quantizer. Subclasses add the decoder (``DiVAE``: diffusion UNet, ``VQVAE``: ViT) and
    implement ``decode_quant`` (and, where the decoder restricts sizes, ``check_decode_size``)."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.image_size = cfg.image_size
        self.n_channels = cfg.in_channels
        self.patch_size = cfg.patch_size
        self.latent_dim = cfg.latent_dim
        self.encoder = ViTEncoder(
            in_channels=cfg.in_channels,
            patch_size=cfg.patch_size,
            resolution=cfg.image_size,
            dim_tokens=cfg.enc_dim,
            depth=cfg.enc_depth,
            num_heads=cfg.enc_heads,
            mlp_ratio=cfg.mlp_ratio,
        )
        self.enc_dim = cfg.enc_dim
        self.quant_proj = nn.Conv2d(cfg.enc_dim, cfg.latent_dim, 1)
        self.quantize = FiniteScalarQuantizer(cfg.levels)

    @property
    def vocab_size(self) -> int:
        """Number of token ids (codebook size)."""
        return self.quantize.codebook_size

    @property
    def device(self) -> torch.device:
        """Where the weights are (inputs are moved there)."""
        return self.quant_proj.weight.device

    # -- dtype -----------------------------------------------------------------------------------

    def _fp32_modules(self) -> list[nn.Module]:
        """Modules computed in float32 whatever the model's dtype."""
        keep: list[nn.Module] = [self.encoder.norm_mlp, self.encoder.post_mlp, self.quant_proj]
        keep += [m for m in self.modules() if isinstance(m, GroupNorm32)]
        return keep

    def set_compute_dtype(self, dtype: torch.dtype) -> VQ:
        """Cast the weights to ``dtype`` (e.g. ``torch.bfloat16``) for speed, keeping float32 weights
        where the reference computes in float32 (the encoder's post-MLP, every GroupNorm) and in
        ``quant_proj`` (so FSQ rounds float32 latents). The DDIM scheduler and the outputs stay
        float32. Opt-in: the float32 path is the one that matches the reference. Returns ``self``."""
        if not dtype.is_floating_point:
            raise ConfigError(f"compute dtype must be a floating-point dtype; got {dtype}")
        self.to(dtype)
        for module in self._fp32_modules():
            module.float()
        return self

    # -- encoding --------------------------------------------------------------------------------

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate an encoder input (subclasses check band count / class ids)."""
        if x.ndim not in (3, 4):
            raise InputRasterError(f"tokenizer input must be (B, C, H, W); got shape {tuple(x.shape)}")
        if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
            raise InputRasterError(
                "tokenizer input contains NaN or infinite values; replace nodata before tokenizing"
            )
        height, width = x.shape[-2:]
        if height % self.patch_size or width % self.patch_size or height == 0 or width == 0:
            raise ConfigError(
                f"tokenizer input height and width must be positive multiples of {self.patch_size} "
                f"(the token patch size); got {height}x{width}"
            )
        return x.to(self.device)

    @torch.no_grad()
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latents ``(B, L, h, w)`` float32 (what FSQ rounds)."""
        x = self.prepare_input(x)
        h = self.encoder(x)  # (B, D, h, w) float32
        proj = self.quant_proj  # float32 whatever the weights' dtype or autocast: FSQ rounds float32 latents
        with torch.autocast(device_type=h.device.type, enabled=False):
            return F.conv2d(h.float(), proj.weight.float(), proj.bias.float())  # (B, L, h, w)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, *_ignored: object) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` → quantised latents ``(B, L, h, w)`` float32 in [0, 1] and token ids ``(B, h, w)`` int32.

        (The reference also returns a dummy zero loss; extra positional arguments such as the
        device the reference's generation passes are ignored like there.)"""
        return self.quantize(self.encode_latents(x))

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` → token ids ``(B, h, w)`` int32."""
        return self.encode(x)[1]

    # -- tokens ----------------------------------------------------------------------------------

    def token_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """Validate ids and give them as a ``(B, h, w)`` grid (flat ``(B, N)`` needs a square N)."""
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ConfigError(f"token ids must be an integer tensor; got {tokens.dtype}")
        if tokens.ndim == 2:
            b, n = tokens.shape
            side = math.isqrt(n)
            if side * side != n:
                raise ConfigError(
                    f"flat token ids (B, N) need a square number of tokens N; got N={n} (pass (B, h, w) instead)"
                )
            tokens = tokens.reshape(b, side, side)
        if tokens.ndim != 3 or tokens.numel() == 0:
            raise ConfigError(f"token ids must be (B, h, w) or (B, N); got shape {tuple(tokens.shape)}")
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.vocab_size:
            raise ConfigError(f"token ids must lie in 0..{self.vocab_size - 1}; got values in {low}..{high}")
        return tokens

    def tokens_to_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, h, w)`` or ``(B, N)`` → quantised latents ``(B, L, h, w)`` float32."""
        return self.quantize.indices_to_embedding(self.token_grid(tokens))

    # -- decoding --------------------------------------------------------------------------------

    def check_decode_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` if the decoder can produce it, else ``ConfigError`` (any size by default)."""
        return image_size

    def decode_quant(
        self,
        quant: torch.Tensor,
        image_size: tuple[int, int] | int | None = None,
        timesteps: int = 50,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Quantised latents ``(B, L, h, w)`` → the decoder's output ``(B, C, H, W)`` float32."""
        raise NotImplementedError

    @torch.no_grad()
    def decode_tokens(
        self,
        tokens: torch.Tensor,
        image_size: tuple[int, int] | int | None = None,
        timesteps: int = 50,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Token ids ``(B, h, w)`` or ``(B, N)`` → ``decode_quant`` of their latents.

        ``image_size`` defaults to the token grid times the patch size (16)."""
        quant = self.tokens_to_embedding(tokens)  # (B, L, h, w)
        return self.decode_quant(quant, image_size, timesteps, generator, noise, progress)

    @torch.no_grad()
    def reconstruct(
        self,
        x: torch.Tensor,
        timesteps: int = 50,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode and decode ``x`` at its own ``(H, W)`` (the reference's ``forward`` assumes square inputs)."""
        check_cancelled(progress or NullProgress())
        size = self.check_decode_size(as_size(tuple(x.shape[-2:])))
        quant, _ = self.encode(x)  # (B, L, h, w)
        return self.decode_quant(quant, size, timesteps, generator, noise, progress)
