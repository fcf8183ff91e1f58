"""Architecture configs of TerraMind v1 and its tokenizers (frozen dataclasses, torch-free).

The official values (defaults here, sizes in ``catalogue.OFFICIAL``) are those of terratorch
1.2.11: ``models/backbones/terramind/model/terramind_register.py`` (the ``terramind_v1_*`` builders)
and ``tokenizer_register.py`` (the DiVAE / VQ-VAE tokenizers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class BackboneNamed:
    """``size`` and ``is_tim`` read from a ``backbone`` name such as 'terramind_v1_base_tim' (a mixin)."""

    @property
    def size(self) -> str:
        return self.backbone.split("_")[2]

    @property
    def is_tim(self) -> bool:
        return self.backbone.endswith("_tim")


@dataclass(frozen=True)
class TokenizerConfig:
    """Architecture of one image tokenizer (terratorch 1.2.11 ``models/backbones/terramind/tokenizer/``).

    Defaults are the official v1 values.
    """

    kind: Literal["divae", "vqvae"]
    in_channels: int  # image channels (LULC: number of classes, one-hot inside)
    levels: tuple[int, ...] = (8, 8, 8, 6, 5)  # FSQ levels; vocab = prod(levels)
    patch_size: int = 16
    image_size: int = 256  # size the stored pos_emb grid was made for (16x16)
    enc_dim: int = 768
    enc_depth: int = 12
    enc_heads: int = 12
    mlp_ratio: float = 4.0
    # VQ-VAE (LULC) ViT decoder
    dec_dim: int = 768
    dec_depth: int = 12
    dec_heads: int = 12
    # DiVAE diffusion UNet
    unet_channels: int = 256
    unet_res_blocks: int = 3
    unet_channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    unet_attention_rates: tuple[int, ...] = (4, 8)
    unet_heads: int = 1
    unet_patch_size: int = 4
    num_train_timesteps: int = 1000

    @property
    def latent_dim(self) -> int:
        return len(self.levels)

    @property
    def vocab_size(self) -> int:
        n = 1
        for level in self.levels:
            n *= level
        return n


@dataclass(frozen=True)
class TerraMindConfig:
    """Architecture of the TerraMind encoder-decoder.

    terratorch 1.2.11 ``models/backbones/terramind/model/terramind_register.py``.
    """

    dim: int
    num_heads: int
    encoder_depth: int
    decoder_depth: int
    mlp: Literal["gelu", "swiglu"]
    mlp_hidden: int
    bias: bool  # qkv / proj / mlp linear biases (tiny, small)
    img_size: int = 224
    patch_size: int = 16


@dataclass(frozen=True)
class FinetunedConfig:
    """A fine-tuned segmentation model of the catalogue: the TerraTorch config it was trained with and
    what it reads (so the QGIS side can check a request without reading the YAML).

    ``config_file`` is a file name in ``models/segmentation/configs/`` (the plugin ships the official
    models' YAMLs there) or, for a custom card, a path (relative ones are relative to the card's
    folder). ``dates``: the number of dates every input of a multi-temporal model reads (``None``: one
    date, or any number for ``mean``/``max`` pooling). ``tests/unit/models/test_finetuned_catalogue.py``
    checks the official entries against their YAMLs.
    """

    config_file: str
    backbone: str
    num_classes: int
    dates: int | None = None
    multi_temporal: bool = False
