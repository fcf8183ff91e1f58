"""``build_tokenizer``: a ``TokenizerConfig`` (models/core/catalogue.py) → ``DiVAE`` or ``VQVAE`` module.

The module is built with the reference's initial values only where they are cheap and
deterministic (sin-cos ``pos_emb``); everything else is PyTorch's default init, meant to be
replaced by a checkpoint. It builds under ``with torch.device("meta"):`` without allocating: every
tensor the tokenizer needs that is not in the official checkpoint (FSQ levels and basis, the DDIM
schedule) is a Python constant or a small CPU tensor made with an explicit device, never a buffer,
so ``load_state_dict(checkpoint, assign=True)`` leaves nothing on the meta device and no
``init_deterministic_buffers`` step is needed.
"""

from __future__ import annotations

from ..core.configs import TokenizerConfig
from ..core.errors import ConfigError
from .divae import DiVAE
from .unet import GROUP_NORM_GROUPS
from .vqvae import VQVAE


def _check_width(name: str, dim: int, heads: int) -> None:
    if dim <= 0 or heads <= 0 or dim % heads or dim % 4:
        raise ConfigError(f"{name} must be a positive multiple of 4 divisible by its {heads} heads; got {dim}")


def validate_config(cfg: TokenizerConfig) -> None:
    """Raise ``ConfigError`` for a configuration the architecture cannot be built with."""
    if cfg.kind not in ("divae", "vqvae"):
        raise ConfigError(f"tokenizer kind must be 'divae' or 'vqvae'; got {cfg.kind!r}")
    if cfg.in_channels < 1:
        raise ConfigError(f"tokenizer in_channels must be >= 1; got {cfg.in_channels}")
    if not cfg.levels or any(level < 2 for level in cfg.levels):
        raise ConfigError(f"FSQ levels must be a non-empty list of integers >= 2; got {cfg.levels}")
    if cfg.patch_size < 1 or cfg.image_size < cfg.patch_size or cfg.image_size % cfg.patch_size:
        raise ConfigError(
            f"image_size ({cfg.image_size}) must be a positive multiple of patch_size ({cfg.patch_size})"
        )
    _check_width("enc_dim", cfg.enc_dim, cfg.enc_heads)
    if cfg.enc_depth < 0:
        raise ConfigError(f"enc_depth must be >= 0; got {cfg.enc_depth}")
    if cfg.kind == "vqvae":
        _check_width("dec_dim", cfg.dec_dim, cfg.dec_heads)
        if cfg.dec_depth < 0:
            raise ConfigError(f"dec_depth must be >= 0; got {cfg.dec_depth}")
        return
    if not cfg.unet_channel_mult or cfg.unet_res_blocks < 1 or cfg.unet_patch_size < 1 or cfg.unet_heads < 1:
        raise ConfigError(
            "DiVAE UNet needs unet_channel_mult (non-empty), unet_res_blocks >= 1, unet_patch_size >= 1 and "
            f"unet_heads >= 1; got {cfg.unet_channel_mult}, {cfg.unet_res_blocks}, {cfg.unet_patch_size}, "
            f"{cfg.unet_heads}"
        )
    for mult in cfg.unet_channel_mult:
        width = cfg.unet_channels * mult
        if width <= 0 or width % GROUP_NORM_GROUPS or width % cfg.unet_heads:
            raise ConfigError(
                f"every UNet width unet_channels x multiplier must be a positive multiple of "
                f"{GROUP_NORM_GROUPS} (GroupNorm groups) and of unet_heads ({cfg.unet_heads}); "
                f"got {cfg.unet_channels} x {mult} = {width}"
            )
    if cfg.num_train_timesteps < 1:
        raise ConfigError(f"num_train_timesteps must be >= 1; got {cfg.num_train_timesteps}")


def build_tokenizer(cfg: TokenizerConfig) -> DiVAE | VQVAE:
    """The tokenizer module for ``cfg`` (``kind='divae'`` → ``DiVAE``, ``'vqvae'`` → ``VQVAE``)."""
    validate_config(cfg)
    return DiVAE(cfg) if cfg.kind == "divae" else VQVAE(cfg)
