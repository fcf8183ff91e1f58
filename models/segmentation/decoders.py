"""Segmentation decoders: TerraTorch's ``UNetDecoder`` and ``UperNetDecoder``, weight-compatible.

``UNetDecoder`` wraps segmentation-models-pytorch's ``UnetDecoder`` in the reference; here the smp
module is re-written with the same attribute tree (``decoder.blocks.<i>.conv{1,2}.{0,1}``,
``attention{1,2}.attention``) so TerraTorch checkpoints load unchanged. ``UperNetDecoder`` is the
MMSegmentation-style decoder of ``terratorch/models/decoders/upernet_decoder.py``.

Dimensions: ``B`` batch, ``C`` channels, ``H, W`` feature-map size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ..core.errors import ConfigError


def _norm_layer(use_norm: bool | str | dict[str, Any], channels: int) -> nn.Module:
    """smp's ``get_norm_layer`` for the variants that need no extra package."""
    params: dict[str, Any]
    if use_norm is True:
        params = {"type": "batchnorm"}
    elif use_norm is False:
        params = {"type": "identity"}
    elif isinstance(use_norm, str):
        params = {"type": use_norm.lower()}
    elif isinstance(use_norm, dict):
        params = dict(use_norm)
    else:
        raise ConfigError(f"UNetDecoder: use_batchnorm must be a bool, a string or a dict, got {use_norm!r}")
    kind = params.pop("type", None)
    layers = {"batchnorm": nn.BatchNorm2d, "instancenorm": nn.InstanceNorm2d}
    if kind == "identity":
        return nn.Identity()
    if kind not in layers:
        raise ConfigError(
            f"UNetDecoder: normalisation '{kind}' is not supported; use 'batchnorm', 'instancenorm' or 'identity'"
        )
    return layers[kind](channels, **params)


class Conv2dReLU(nn.Sequential):
    """smp ``Conv2dReLU``: conv (bias only without a norm) → norm → ReLU; keys ``0.*``, ``1.*``."""

    def __init__(self, in_channels: int, out_channels: int, use_norm: bool | str | dict[str, Any]) -> None:
        norm = _norm_layer(use_norm, out_channels)
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=isinstance(norm, nn.Identity))
        super().__init__(conv, norm, nn.ReLU(inplace=True))


class SCSEModule(nn.Module):
    """smp concurrent spatial and channel squeeze-and-excitation."""

    def __init__(self, in_channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.cSE = nn.Sequential(  # noqa: N815 (checkpoint attribute name)
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, in_channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels // reduction, in_channels, 1),
            nn.Sigmoid(),
        )
        self.sSE = nn.Sequential(nn.Conv2d(in_channels, 1, 1), nn.Sigmoid())  # noqa: N815

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cSE(x) + x * self.sSE(x)  # (B, C, H, W)


class Attention(nn.Module):
    """smp ``Attention`` wrapper: identity (``None``) or ``'scse'``."""

    def __init__(self, name: str | None, in_channels: int) -> None:
        super().__init__()
        if name is None:
            self.attention: nn.Module = nn.Identity()
        elif name == "scse":
            self.attention = SCSEModule(in_channels)
        else:
            raise ConfigError(f"UNetDecoder: attention_type '{name}' is not supported; use null or 'scse'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x)


class UnetDecoderBlock(nn.Module):
    """Upsample (nearest) to the skip's size, concatenate the skip, two conv-norm-ReLU."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, use_norm: Any, attention_type: str | None) -> None:
        super().__init__()
        self.conv1 = Conv2dReLU(in_ch + skip_ch, out_ch, use_norm)
        self.attention1 = Attention(attention_type, in_ch + skip_ch)
        self.conv2 = Conv2dReLU(out_ch, out_ch, use_norm)
        self.attention2 = Attention(attention_type, out_ch)

    def forward(self, x: torch.Tensor, size: tuple[int, int], skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")  # (B, C_in, H_skip, W_skip)
        if skip is not None:
            x = self.attention1(torch.cat([x, skip], dim=1))  # (B, C_in + C_skip, H, W)
        return self.attention2(self.conv2(self.conv1(x)))  # (B, C_out, H, W)


class SmpUnetDecoder(nn.Module):
    """smp ``UnetDecoder`` without a centre block (``center`` is the identity)."""

    def __init__(
        self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], use_norm: Any, attention_type: str | None
    ) -> None:
        super().__init__()
        enc = list(encoder_channels[1:])[::-1]  # head first, first skip dropped
        in_channels = [enc[0], *decoder_channels[:-1]]
        skip_channels = [*enc[1:], 0]
        self.center = nn.Identity()
        self.blocks = nn.ModuleList(
            UnetDecoderBlock(i, s, o, use_norm, attention_type)
            for i, s, o in zip(in_channels, skip_channels, decoder_channels, strict=False)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        sizes = [tuple(f.shape[2:]) for f in features][::-1]
        feats = features[1:][::-1]  # coarsest first
        x, skips = self.center(feats[0]), feats[1:]
        for i, block in enumerate(self.blocks):
            x = block(x, sizes[i + 1], skips[i] if i < len(skips) else None)  # (B, C_i, H_i, W_i)
        return x


class UNetDecoder(nn.Module):
    """TerraTorch ``UNetDecoder``: repeats the finest feature because smp drops the first one."""

    def __init__(
        self,
        embed_dim: Sequence[int],
        channels: Sequence[int],
        use_batchnorm: bool | str | dict[str, Any] = "batchnorm",
        attention_type: str | None = None,
    ) -> None:
        super().__init__()
        if len(embed_dim) != len(channels):
            raise ConfigError(
                f"UNetDecoder: decoder_channels has {len(channels)} entries but the neck gives {len(embed_dim)} features"
            )
        self.decoder = SmpUnetDecoder([embed_dim[0], *embed_dim], list(channels), use_batchnorm, attention_type)
        self.out_channels = int(channels[-1])

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return self.decoder([x[0], *x])  # (B, channels[-1], H_0, W_0)


class ConvModule(nn.Module):
    """Conv (no bias) → BatchNorm → ReLU (``conv``, ``norm``, ``act``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=False)
        self.norm = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class PPM(nn.ModuleList):
    """Pooling pyramid: adaptive average pool to each scale, 1×1 ConvModule, bilinear back."""

    def __init__(self, pool_scales: Sequence[int], in_ch: int, channels: int, align_corners: bool) -> None:
        super().__init__(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_ch, channels, 1)) for s in pool_scales)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        size = x.shape[2:]
        return [F.interpolate(m(x), size=size, mode="bilinear", align_corners=self.align_corners) for m in self]


class UperNetDecoder(nn.Module):
    """TerraTorch ``UperNetDecoder`` (PPM on the coarsest level, FPN top-down, fused at the finest)."""

    def __init__(
        self,
        embed_dim: Sequence[int],
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        channels: int = 256,
        align_corners: bool = True,
        scale_modules: bool = False,
    ) -> None:
        super().__init__()
        if scale_modules:
            raise ConfigError(
                "UperNetDecoder: scale_modules=True (deprecated in TerraTorch) is not supported; "
                "use the LearnedInterpolateToPyramidal neck"
            )
        dims = list(embed_dim)
        self.out_channels = self.channels = int(channels)
        self.align_corners = bool(align_corners)
        self.psp_modules = PPM(pool_scales, dims[-1], self.channels, self.align_corners)
        self.bottleneck = ConvModule(dims[-1] + len(pool_scales) * self.channels, self.channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(d, self.channels, 1) for d in dims[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(self.channels, self.channels, 3, padding=1) for _ in dims[:-1])
        self.fpn_bottleneck = ConvModule(len(dims) * self.channels, self.channels, 3, padding=1)

    def _resize(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=self.align_corners)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]  # (B, C, H_i, W_i)
        top = inputs[-1]
        laterals.append(self.bottleneck(torch.cat([top, *self.psp_modules(top)], dim=1)))  # (B, C, H_n, W_n)
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals) - 1)] + [laterals[-1]]
        finest = outs[0].shape[2:]
        outs = [outs[0]] + [self._resize(o, finest) for o in outs[1:]]  # each (B, C, H_0, W_0)
        return self.fpn_bottleneck(torch.cat(outs, dim=1))  # (B, C, H_0, W_0)


DECODERS: dict[str, type[nn.Module]] = {"UNetDecoder": UNetDecoder, "UperNetDecoder": UperNetDecoder}


def build_decoder(name: str, channel_list: Sequence[int], kwargs: dict[str, Any]) -> nn.Module:
    """A decoder by TerraTorch registry name, with its ``decoder_*`` arguments (prefix stripped)."""
    if name not in DECODERS:
        raise ConfigError(f"decoder '{name}' is not supported; supported decoders: {', '.join(DECODERS)}")
    try:
        return DECODERS[name](list(channel_list), **kwargs)
    except TypeError as e:
        raise ConfigError(f"decoder '{name}': {e}") from None
