"""Build the pixel-wise model a ``SegmentationConfig`` describes, and run it on raw pixels.

``build_pixel_wise_model(config)`` assembles the TerraMind backbone (``TerraMindViT`` or
``TerraMindTiM`` of models/terramind), the necks, the decoder and the head like TerraTorch's
``EncoderDecoderFactory``; it allocates nothing under ``with torch.device("meta")``, so the loader
can assign checkpoint tensors without a random initialisation first.

``SegmentationModel`` adds what TerraTorch's data module did outside the model: nodata/NaN pixels
are replaced by ``no_data_replace`` in raw units, then every input is standardised with the
config's means/stds. Dimensions: ``B`` batch, ``C`` channels, ``K`` classes, ``H, W`` image size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core import catalogue
from ..core.configs import TerraMindConfig
from ..core.errors import ConfigError, InputRasterError
from ..core.modalities import ClassInfo
from ..core.params import Sampling
from ..terramind import TerraMindTiM, TerraMindViT
from .config import SegmentationConfig
from .decoders import build_decoder
from .head import SegmentationHead
from .necks import build_necks
from .pixel_wise_model import PixelWiseModel


def backbone_config(config: SegmentationConfig) -> TerraMindConfig:
    """The architecture of the config's TerraMind size (from the model catalogue)."""
    arch = catalogue.get(config.catalogue_id).config
    if not isinstance(arch, TerraMindConfig):
        raise ConfigError(f"catalogue entry '{config.catalogue_id}' is not a TerraMind model")
    return arch


def build_backbone(config: SegmentationConfig) -> nn.Module:
    """``TerraMindViT`` (or ``TerraMindTiM`` for ``*_tim``) over the config's inputs."""
    arch = backbone_config(config)
    names = [i.name for i in config.inputs]
    if config.is_tim:
        opts = config.tim_options
        sampling = Sampling(
            temperature=float(opts.get("tim_temps", 1.0)),
            top_p=float(opts.get("tim_top_p", 0.8)),
            top_k=opts.get("tim_top_k", 0),
        )
        return TerraMindTiM(
            arch,
            names,
            tim_modalities=list(config.tim_modalities),
            merge_method=config.merge_method,
            tim_chained_generations=bool(opts.get("tim_chained_generations", True)),
            tim_sampling=sampling,
        )
    return TerraMindViT(arch, names, merge_method=config.merge_method, bands=config.bands)


def build_pixel_wise_model(config: SegmentationConfig) -> PixelWiseModel:
    """Backbone → necks → decoder → head, as ``EncoderDecoderFactory.build_model`` wires them."""
    encoder = build_backbone(config)
    neck, channels = build_necks(config.necks, encoder.out_channels)
    decoder = build_decoder(config.decoder, channels, dict(config.decoder_kwargs))
    head = SegmentationHead(decoder.out_channels, config.num_classes, config.head_channel_list, config.head_dropout)
    patch = backbone_config(config).patch_size
    return PixelWiseModel(encoder, neck, decoder, head, patch_size=patch, rescale=config.rescale)


@dataclass(frozen=True)
class Provenance:
    """Where a loaded model came from (written into output metadata)."""

    checkpoint: str
    config: str | None
    format: str  # 'lightning', 'state_dict' or 'card'
    model_id: str  # a short name: the card id or the checkpoint file stem


class SegmentationModel(nn.Module):
    """A fine-tuned TerraMind segmentation model on raw (un-standardised) inputs."""

    def __init__(
        self, net: PixelWiseModel, config: SegmentationConfig, classes: tuple[ClassInfo, ...], provenance: Provenance
    ) -> None:
        super().__init__()
        self.net = net
        self.config = config
        self.classes = classes
        self.provenance = provenance
        for spec in config.inputs:
            self.register_buffer(f"mean_{spec.name}", torch.tensor(spec.mean).view(-1, 1, 1), persistent=False)
            self.register_buffer(f"std_{spec.name}", torch.tensor(spec.std).view(-1, 1, 1), persistent=False)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.config.inputs]

    @property
    def is_stochastic(self) -> bool:
        """TiM models sample tokens: their outputs depend on the seed."""
        return self.config.is_tim

    def standardize(self, raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """NaN → ``no_data_replace`` (raw units), then ``(x - mean) / std`` per band, in config input order."""
        out = {}
        for spec in self.config.inputs:
            if spec.name not in raw:
                raise InputRasterError(
                    f"the model needs input '{spec.name}' ({spec.modality}, {len(spec.bands)} bands), which was not given"
                )
            x = raw[spec.name].float()
            if x.dim() != 4 or x.shape[1] != len(spec.bands):
                raise InputRasterError(
                    f"input '{spec.name}' must be (B, {len(spec.bands)}, H, W) ({', '.join(spec.bands)}), "
                    f"got {tuple(x.shape)}"
                )
            x = torch.nan_to_num(x, nan=self.config.no_data_replace)  # (B, C, H, W)
            mean, std = getattr(self, f"mean_{spec.name}"), getattr(self, f"std_{spec.name}")
            out[spec.name] = (x - mean) / std  # (B, C, H, W)
        return out

    def forward(self, raw: Mapping[str, torch.Tensor], seed: int | None = None) -> torch.Tensor:
        """Class logits ``(B, K, H, W)`` of raw inputs ``{config input name: (B, C, H, W)}``.

        ``seed`` is required for TiM models (the token-generation seed, models/terramind/sampler.py)
        and ignored otherwise.
        """
        kwargs: dict[str, Any] = {}
        if self.is_stochastic:
            if seed is None:
                raise ConfigError("this TiM model generates tokens at random: give a seed so that runs reproduce")
            kwargs["seed"] = int(seed)
        return self.net(self.standardize(raw), **kwargs)
