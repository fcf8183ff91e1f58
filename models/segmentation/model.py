"""Build the pixel-wise model a ``SegmentationConfig`` describes, and run it on raw pixels.

``build_pixel_wise_model(config)`` assembles the TerraMind backbone (``TerraMindViT`` or
``TerraMindTiM`` of models/terramind), the necks, the decoder and the head like TerraTorch's
``EncoderDecoderFactory``; it allocates nothing under ``with torch.device("meta")``, so the loader
can assign checkpoint tensors without a random initialisation first.

A multi-temporal config (``config.temporal``) wraps the backbone in ``TemporalWrapper``
(``temporal.py``) exactly where ``terratorch/models/utils.py::_get_backbone`` does, so the necks
are built for the wrapper's ``out_channels`` (``concat``: the backbone's times the number of dates).

``SegmentationModel`` adds what TerraTorch's data module did outside the model: nodata/NaN pixels
are replaced by ``no_data_replace`` in raw units, then every input is standardised with the
config's means/stds (per band, over every date: ``MultimodalNormalize``'s ``view(1, -1, 1, 1, 1)``).
A multi-temporal model takes ``(B, C, T, H, W)`` inputs; where the data module repeated a one-date
file over every date (ImpactMesh's DEM), a ``T = 1`` input is repeated here the same way.
Dimensions: ``B`` batch, ``C`` channels, ``T`` dates, ``K`` classes, ``H, W`` image size.
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
from .temporal import TemporalWrapper


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


def build_encoder(config: SegmentationConfig) -> nn.Module:
    """The backbone, in ``TemporalWrapper`` for a multi-temporal config (``_get_backbone``)."""
    backbone = build_backbone(config)
    t = config.temporal
    if t is None:
        return backbone
    return TemporalWrapper(backbone, pooling=t.pooling, n_timestamps=t.n_timestamps,
                           features_permute_op=t.features_permute_op, subset_lengths=t.subset_lengths)  # fmt: skip


def build_pixel_wise_model(config: SegmentationConfig) -> PixelWiseModel:
    """Backbone → necks → decoder → head, as ``EncoderDecoderFactory.build_model`` wires them."""
    encoder = build_encoder(config)
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
        """NaN → ``no_data_replace`` (raw units), then ``(x - mean) / std`` per band, in config input order.

        Single-date models take ``(B, C, H, W)``, multi-temporal ones ``(B, C, T, H, W)``
        (``dates_of`` checks the dates).
        """
        missing = [s for s in self.config.inputs if s.name not in raw]
        if missing:
            s = missing[0]
            raise InputRasterError(
                f"the model needs input '{s.name}' ({s.modality}, {len(s.bands)} bands), which was not given"
            )
        dates = self.dates_of(raw)
        out = {}
        for spec in self.config.inputs:
            x = raw[spec.name].float()
            if dates is not None and x.dim() == 5 and x.shape[2] == 1 and dates > 1:
                x = x.expand(-1, -1, dates, -1, -1)  # (B, C, T, H, W): the one date, repeated
            x = torch.nan_to_num(x, nan=self.config.no_data_replace)  # (B, C, [T,] H, W)
            mean, std = getattr(self, f"mean_{spec.name}"), getattr(self, f"std_{spec.name}")
            if dates is not None:
                mean, std = mean.unsqueeze(-1), std.unsqueeze(-1)  # (C, 1, 1, 1)
            out[spec.name] = (x - mean) / std  # (B, C, [T,] H, W)
        return out

    def dates_of(self, raw: Mapping[str, torch.Tensor]) -> int | None:
        """Check every input's shape; the number of dates ``T`` (``None`` for a single-date model)."""
        cfg, temporal = self.config, self.config.temporal
        for spec in cfg.inputs:
            x, bands = raw[spec.name], len(spec.bands)
            want = f"(B, {bands}, H, W)" if temporal is None else f"(B, {bands}, {temporal.dates or 'T'}, H, W)"
            if x.dim() != len(cfg.input_layout) or x.shape[1] != bands:
                raise InputRasterError(f"input '{spec.name}' must be {want} ({', '.join(spec.bands)}), got {tuple(x.shape)}")
        if temporal is None:
            return None
        given = {s.name: int(raw[s.name].shape[2]) for s in cfg.inputs}
        # inputs that bring their own dates (a one-date input is repeated where the data module did so)
        own = {n: t for n, t in given.items() if not (t == 1 and temporal.repeat_single_date)}
        counts = set(own.values()) | ({temporal.dates} if temporal.dates is not None else set())
        if len(counts) > 1:
            need = f"{temporal.dates} dates" if temporal.dates is not None else "the same number of dates"
            repeat = " (an input with one date is repeated over every date)" if temporal.repeat_single_date else ""
            raise InputRasterError(f"this multi-temporal model needs {need} in every input{repeat}; got dates {given}")
        return counts.pop() if counts else 1

    def forward(self, raw: Mapping[str, torch.Tensor], seed: int | None = None) -> torch.Tensor:
        """Class logits ``(B, K, H, W)`` of raw inputs ``{config input name: (B, C, H, W)}``
        (multi-temporal models: ``(B, C, T, H, W)``, see ``standardize``).

        ``seed`` is required for TiM models (the token-generation seed, models/terramind/sampler.py)
        and ignored otherwise.
        """
        kwargs: dict[str, Any] = {}
        if self.is_stochastic:
            if seed is None:
                raise ConfigError("this TiM model generates tokens at random: give a seed so that runs reproduce")
            kwargs["seed"] = int(seed)
        return self.net(self.standardize(raw), **kwargs)
