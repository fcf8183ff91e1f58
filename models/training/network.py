"""The trainable network, and its forward pass split in two for the frozen-backbone feature cache.

``build_training_network`` assembles the same module tree as ``build_pixel_wise_model``
(models/segmentation/model.py; ``tests/unit/training`` checks the layouts are equal) with real
tensors: the backbone from ``models/build.py`` (catalogue weights, a local file, or the
deterministic untrained fill), the necks, decoder and head freshly initialised as TerraTorch
initialises them: PyTorch's default initialisation under the run's seed, then, for the UNet
decoder, segmentation_models_pytorch's ``initialize_decoder`` (``base/initialization.py``:
Kaiming-uniform convolutions with zero bias, BatchNorm weight 1 and bias 0), which
``terratorch/models/decoders/unet_decoder.py`` applies to its smp decoder.

``encode`` + ``decode`` is ``PixelWiseModel.forward`` (models/segmentation/pixel_wise_model.py,
after terratorch ``pixel_wise_model.py``) cut after the backbone and the ``SelectIndices`` neck:
``encode`` pads, runs the encoder and keeps the selected layers; ``decode`` runs the remaining
necks, the decoder and the head, rescales and crops. ``decode(encode(x)) == net(x)`` exactly.

Dimensions: ``B`` batch, ``N`` tokens, ``D`` width, ``L`` kept layers, ``K`` classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ..core.job import ModelRequest
from ..core.progress import Progress
from ..segmentation.config import SegmentationConfig
from ..segmentation.decoders import UNetDecoder, build_decoder
from ..segmentation.head import SegmentationHead
from ..segmentation.model import backbone_config
from ..segmentation.necks import SelectIndices, build_necks
from ..segmentation.pixel_wise_model import PixelWiseModel, center_crop, image_size, pad_inputs


def initialize_decoder_(module: nn.Module) -> None:
    """segmentation_models_pytorch ``initialize_decoder`` (0.6.0), in place."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)):
            if m.weight is not None:
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


def load_encoder(
    cfg: SegmentationConfig,
    *,
    weights: str | None = None,
    untrained: bool = False,
    progress: Progress | None = None,
) -> nn.Module:
    """The config's TerraMind backbone with its pre-trained (or untrained) weights, on the CPU."""
    from ..build import load_backbone, load_tim

    names = [i.name for i in cfg.inputs]
    request = ModelRequest(cfg.catalogue_id, weights=weights, untrained=untrained)
    if cfg.is_tim:
        encoder = load_tim(request, names, cfg.tim_modalities, merge_method=cfg.merge_method,
                           tim_chained_generations=bool(cfg.tim_options.get("tim_chained_generations", True)),
                           progress=progress)  # fmt: skip
    else:
        encoder = load_backbone(request, names, merge_method=cfg.merge_method, bands=cfg.bands, progress=progress)
    return own_memory_(encoder)


def own_memory_(module: nn.Module) -> nn.Module:
    """Give every parameter and buffer object its own memory (in place).

    The loader assigns one checkpoint tensor to every name that reads it (memory-mapped): TiM's
    sampler encoder and the backbone's encoder blocks then share memory although they are distinct
    parameters. In TerraTorch they are separate copies: training updates the backbone's, the sampler
    (no gradient flows through sampling) keeps the pre-trained ones. Objects the model really
    shares (TiM's embedding modules, tied weights) stay shared: each object is copied once.
    """
    with torch.no_grad():
        for param in module.parameters():  # each parameter object once: tied ones stay tied
            param.data = param.data.clone()
        for owner in module.modules():  # each module once: buffers of a shared module stay shared
            for name, buffer in owner._buffers.items():
                if buffer is not None:  # e.g. one zero LayerNorm bias the loader gave to many norms
                    owner._buffers[name] = buffer.clone()
    return module


def tim_tokenizer_tensors(cfg: SegmentationConfig, *, untrained: bool = False,
                          progress: Progress | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """The TiM modalities' tokenizers as TerraTorch's ``TerraMindTiM`` stores them (``encoder.tokenizer.<key>.*``).

    TerraTorch keeps them in its checkpoints (a strict ``load_from_checkpoint`` needs them) but never
    runs them; our TiM backbone generates token ids only and does not hold them.
    """
    if not cfg.is_tim:
        return {}
    from ..build import load_tokenizer
    from ..core import catalogue
    from ..terramind.names import output_key

    spec = catalogue.get(cfg.catalogue_id)
    out: dict[str, torch.Tensor] = {}
    for modality in cfg.tim_modalities:
        tok = load_tokenizer(ModelRequest(catalogue.tokenizer_for(spec, modality).id, untrained=untrained), progress=progress)
        out.update({f"encoder.tokenizer.{output_key(modality)}.{k}": v for k, v in tok.state_dict().items()})
    return out


def build_training_network(cfg: SegmentationConfig, encoder: nn.Module, seed: int) -> PixelWiseModel:
    """Backbone ``encoder`` + freshly initialised necks, decoder and head (``seed`` fixes their init)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        neck, channels = build_necks(cfg.necks, encoder.out_channels)
        decoder = build_decoder(cfg.decoder, channels, dict(cfg.decoder_kwargs))
        if isinstance(decoder, UNetDecoder):
            initialize_decoder_(decoder.decoder)
        head = SegmentationHead(decoder.out_channels, cfg.num_classes, cfg.head_channel_list, cfg.head_dropout)
    patch = backbone_config(cfg).patch_size
    return PixelWiseModel(encoder, neck, decoder, head, patch_size=patch, rescale=cfg.rescale)


def set_backbone_trainable_(net: PixelWiseModel, trainable: bool) -> None:
    """``requires_grad`` of the encoder (TerraTorch ``freeze_encoder`` when False); the rest always trains."""
    net.encoder.requires_grad_(bool(trainable))
    for part in (net.neck, net.decoder, net.head):
        part.requires_grad_(True)


@dataclass(frozen=True)
class Encoded:
    """Encoder output of a batch, ready for ``decode``."""

    features: list[torch.Tensor]  # L x (B, N, D): the layers ``SelectIndices`` keeps (all when it is absent)
    padded_size: tuple[int, int]
    out_size: tuple[int, int]


def selected_layers(net: PixelWiseModel) -> list[int] | None:
    """The layer indices of a leading ``SelectIndices`` neck (None: the decoder needs every layer)."""
    first = net.neck[0] if len(net.neck) else None
    return list(first.indices) if isinstance(first, SelectIndices) else None


def encode(net: PixelWiseModel, inputs: Mapping[str, torch.Tensor], **encoder_kwargs: object) -> Encoded:
    """Pad, run the encoder, keep the selected layers (``PixelWiseModel.forward`` up to the first neck)."""
    inputs = dict(inputs)
    out_size = image_size(inputs)
    if net.padding is not None:
        inputs = pad_inputs(inputs, 2 * net.patch_size, net.padding)
    padded = image_size(inputs)
    features = list(net.encoder(inputs, **encoder_kwargs))  # depth x (B, N, D)
    layers = selected_layers(net)
    if layers is not None:
        features = [features[i] for i in layers]  # L x (B, N, D)
    return Encoded(features, padded, out_size)


def decode(net: PixelWiseModel, encoded: Encoded) -> torch.Tensor:
    """The rest of ``PixelWiseModel.forward``: remaining necks → decoder → head → rescale → crop."""
    necks = list(net.neck)[1:] if selected_layers(net) is not None else list(net.neck)
    features = list(encoded.features)
    for neck in necks:
        features = neck(features, image_size=encoded.padded_size)  # list of (B, C_i, H_i, W_i)
    logits = net.head(net.decoder(features))  # (B, K, H', W')
    if net.rescale and tuple(logits.shape[-2:]) != tuple(encoded.padded_size):
        logits = F.interpolate(logits, size=encoded.padded_size, mode="bilinear", align_corners=False)
    return center_crop(logits, encoded.out_size)  # (B, K, H, W)
