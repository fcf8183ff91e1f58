"""VQVAE: ViT encoder + FSQ + ViT decoder, the LULC tokenizer (class maps ↔ 4375 token ids).

Mirrors terratorch 1.2.11 ``VQVAE`` (``tokenizer/vqvae.py``) with ``dec_type='vit_b_dec'``, no
``out_conv``, decoder patch size = encoder patch size (16), inference only. State-dict keys:
``encoder.*``, ``quant_proj.*``, ``decoder.*``, ``post_quant_proj.*`` (310 for the official
configuration).

Input: class ids ``(B, H, W)`` or ``(B, 1, H, W)`` (0..C-1, any numeric dtype; floats are truncated
like the reference's ``.to(long)``), or one-hot / class probabilities ``(B, C, H, W)``. Output of
decoding: raw class logits ``(B, C, H, W)`` float32 (no softmax). The diffusion arguments of the
shared tokenizer API (timesteps, generator, noise) are accepted and ignored, as in the reference.

Dimensions: B batch, C classes, H, W image size, L latent channels, (h, w) token grid, D width.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.configs import TokenizerConfig
from ..core.errors import ConfigError, InputRasterError
from ..core.progress import NullProgress, Progress, check_cancelled
from .base import VQ, as_size
from .vit import ViTDecoder


class VQVAE(VQ):
    """Categorical tokenizer with a ViT decoder producing class logits."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__(cfg)
        self.decoder = ViTDecoder(
            out_channels=cfg.in_channels,
            patch_size=cfg.patch_size,
            resolution=cfg.image_size,
            dim_tokens=cfg.dec_dim,
            depth=cfg.dec_depth,
            num_heads=cfg.dec_heads,
            mlp_ratio=cfg.mlp_ratio,
        )
        self.dec_dim = cfg.dec_dim
        self.post_quant_proj = nn.Conv2d(cfg.latent_dim, cfg.dec_dim, 1)

    @property
    def num_classes(self) -> int:
        return self.n_channels

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        classes = self.n_channels
        is_ids = x.ndim == 3 or (x.ndim == 4 and x.shape[1] == 1 and classes != 1)
        if is_ids:
            if x.dtype == torch.bool or x.numel() == 0:
                raise InputRasterError(f"class ids must be a numeric tensor; got {x.dtype}")
            if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
                raise InputRasterError("class ids contain NaN or infinite values; replace nodata first")
            ids = x.to(torch.long)
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= classes:
                raise InputRasterError(
                    f"class ids must lie in 0..{classes - 1} (the tokenizer's {classes} classes); "
                    f"got values in {low}..{high}"
                )
        elif x.ndim != 4 or x.shape[1] != classes:
            raise InputRasterError(
                f"this tokenizer takes class ids (B, H, W) or (B, 1, H, W) with values 0..{classes - 1}, "
                f"or one-hot / class probabilities (B, {classes}, H, W); got shape {tuple(x.shape)}"
            )
        return super().prepare_input(x)

    @torch.no_grad()
    def decode_quant(
        self,
        quant: torch.Tensor,
        image_size: tuple[int, int] | int | None = None,
        timesteps: int = 50,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Quantised latents ``(B, L, h, w)`` → class logits ``(B, C, h*16, w*16)`` float32.

        ``image_size`` (H, W), if given, must equal the token grid times 16 (the ViT decoder cannot
        produce another size; the reference silently ignores it). Diffusion arguments are ignored."""
        progress = progress or NullProgress()
        check_cancelled(progress)
        _, _, h, w = quant.shape
        expected = (h * self.patch_size, w * self.patch_size)
        size = as_size(image_size) if image_size else expected
        if size != expected:
            raise ConfigError(
                f"LULC decoding of a {h}x{w} token grid gives {expected[0]}x{expected[1]} pixels; "
                f"image_size {size[0]}x{size[1]} cannot be produced"
            )
        quant = quant.to(device=self.device, dtype=self.post_quant_proj.weight.dtype)
        features = self.post_quant_proj(quant)  # (B, D, h, w)
        logits = self.decoder(features).float()  # (B, C, H, W)
        progress.set_progress(100.0)
        return logits
