"""The six TerraMind v1 image tokenizers in plain PyTorch (terratorch 1.2.11 ``models/backbones/terramind/tokenizer/``).

``DiVAE`` (S2L2A, S1GRD, S1RTC, DEM, NDVI: ViT encoder, FSQ, diffusion UNet decoder with DDIM) and
``VQVAE`` (LULC: ViT encoder, FSQ, ViT decoder), mirroring terratorch 1.2.11's module tree so the
official ``TerraMind_Tokenizer_*.pt`` state dicts load unchanged. Shared API::

    tok = build_tokenizer(cfg)                     # cfg: catalogue.TokenizerConfig
    quant, tokens = tok.encode(x)                  # (B, 5, h, w) float, (B, h, w) int32
    tokens = tok.tokenize(x)
    y = tok.decode_tokens(tokens, image_size=(H, W), timesteps=50, generator=None, noise=None,
                          progress=None)           # DiVAE: standardized image in [-1, 1];
                                                   # VQVAE: class logits (B, 10, H, W)
    y = tok.reconstruct(x, timesteps=50, generator=None, progress=None)
"""

from .base import VQ
from .build import build_tokenizer, validate_config
from .ddim import DDIMScheduler, DDIMStepOutput
from .divae import DiVAE
from .fsq import FiniteScalarQuantizer
from .vqvae import VQVAE

__all__ = [
    "DDIMScheduler",
    "DDIMStepOutput",
    "DiVAE",
    "FiniteScalarQuantizer",
    "VQ",
    "VQVAE",
    "build_tokenizer",
    "validate_config",
]
