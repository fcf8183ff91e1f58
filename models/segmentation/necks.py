"""Necks between a TerraMind backbone and a segmentation decoder (TerraTorch ``models/necks.py``).

A neck turns the backbone's per-layer outputs into what a decoder wants. The classes mirror
terratorch 1.2.11 (names, constructor arguments, attribute names, so the state-dict keys of a
fine-tuned checkpoint, ``neck.<i>.fpn1.0.weight`` ..., load unchanged). Each neck gets the current
channel list first, like the reference's ``build_neck_list``, and reports the list it produces.

Dimensions: ``B`` batch, ``N`` tokens, ``D`` channels, ``H, W`` feature-map size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ..core.errors import ConfigError


class Neck(nn.Module):
    """Base class: ``channel_list`` in, ``out_channels`` (the list the next stage sees) out."""

    def __init__(self, channel_list: Sequence[int]) -> None:
        super().__init__()
        self.channel_list = list(channel_list)

    @property
    def out_channels(self) -> list[int]:
        return list(self.channel_list)


class NeckSequential(nn.Sequential):
    """The necks in order; each gets ``image_size`` (the padded input size) as a keyword."""

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        for neck in self:
            features = neck(features, image_size=image_size)
        return features


class SelectIndices(Neck):
    """Keep the backbone layers at ``indices`` (e.g. ``[2, 5, 8, 11]``: blocks 3, 6, 9, 12)."""

    def __init__(self, channel_list: Sequence[int], indices: Sequence[int]) -> None:
        super().__init__(channel_list)
        self.indices = [int(i) for i in indices]
        n = len(self.channel_list)
        bad = [i for i in self.indices if not -n <= i < n]
        if bad:
            raise ConfigError(
                f"neck SelectIndices: indices {bad} are out of range for a backbone with {n} layers"
            )

    @property
    def out_channels(self) -> list[int]:
        return [self.channel_list[i] for i in self.indices]

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        return [features[i] for i in self.indices]


class ReshapeTokensToImage(Neck):
    """Token sequences ``(B, N, D)`` → feature maps ``(B, D, h, w)``, row-major like the reference.

    Grid height: ``h`` if given; else from the padded input size ``(H, W)``: patch
    ``p = sqrt(H*W/N)``, ``h = H // p``; else ``sqrt(N)``. For square inputs this is exactly the
    reference. Deliberate fix: terratorch 1.2.11 tries ``sqrt(N)`` first, so a non-square input
    whose token count is a perfect square (128×512 → 256 tokens) is scrambled into 16×16 there;
    here it becomes the right 8×32 grid. With ``remove_cls_token=True`` and a token count that
    forms no grid, the neck stops removing the first token for good, as the reference does.
    """

    def __init__(
        self,
        channel_list: Sequence[int],
        remove_cls_token: bool = True,
        effective_time_dim: int = 1,
        h: int | None = None,
        temporal_inputs: bool = False,
    ) -> None:
        super().__init__(channel_list)
        if temporal_inputs:
            raise ConfigError("neck ReshapeTokensToImage: temporal_inputs=True (multi-temporal models) is not supported")
        self.remove_cls_token = bool(remove_cls_token)
        self.effective_time_dim = int(effective_time_dim)
        self.h = h

    def _grid(self, n: int, image_size: tuple[int, int] | None) -> tuple[int, int] | None:
        """(h, w) of ``n`` tokens per time step, or None when they form no grid."""
        if self.h:
            return (int(self.h), n // int(self.h)) if n % int(self.h) == 0 else None
        if image_size is not None:
            height, width = int(image_size[0]), int(image_size[1])
            patch = math.sqrt(height * width / n)
            if patch == int(patch) and height % int(patch) == 0 and width % int(patch) == 0:
                return height // int(patch), width // int(patch)
            return None
        root = math.isqrt(n)
        return (root, root) if root * root == n else None

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        out = []
        for x in features:
            if x.dim() >= 4:
                out.append(x)
                continue
            if x.dim() != 3:
                raise ConfigError(f"neck ReshapeTokensToImage expects (B, N, D) tokens, got shape {tuple(x.shape)}")
            t = self.effective_time_dim
            tokens = x[:, 1:, :] if self.remove_cls_token else x  # (B, N, D)
            grid = self._grid(tokens.shape[1] // t, image_size)
            if grid is None and self.remove_cls_token:
                self.remove_cls_token = False  # the reference's fallback: there was no CLS token
                tokens = x
                grid = self._grid(tokens.shape[1] // t, image_size)
            if grid is None:
                raise ConfigError(
                    f"neck ReshapeTokensToImage: {x.shape[1]} tokens do not form a grid for image size {image_size}"
                )
            b, n, d = tokens.shape
            h, w = grid
            maps = tokens.reshape(b, t, h, w, d)  # (B, t, h, w, D)
            out.append(maps.permute(0, 1, 4, 2, 3).reshape(b, t * d, h, w))  # (B, t*D, h, w)
        return out


class LearnedInterpolateToPyramidal(Neck):
    """Four same-size maps → a pyramid ×4, ×2, ×1, ×½ with learned transposed convolutions."""

    def __init__(self, channel_list: Sequence[int]) -> None:
        super().__init__(channel_list)
        c = self.channel_list
        if len(c) != 4:
            raise ConfigError(f"neck LearnedInterpolateToPyramidal needs exactly 4 inputs, got {len(c)}")
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(c[0], c[0] // 2, 2, 2),
            nn.BatchNorm2d(c[0] // 2),
            nn.GELU(),
            nn.ConvTranspose2d(c[0] // 2, c[0] // 4, 2, 2),
        )
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c[1], c[1] // 2, 2, 2))
        self.fpn3 = nn.Sequential(nn.Identity())
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))

    @property
    def out_channels(self) -> list[int]:
        c = self.channel_list
        return [c[0] // 4, c[1] // 2, c[2], c[3]]

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        return [
            self.fpn1(features[0]),  # (B, C0/4, 4h, 4w)
            self.fpn2(features[1]),  # (B, C1/2, 2h, 2w)
            self.fpn3(features[2]),  # (B, C2, h, w)
            self.fpn4(features[3]),  # (B, C3, h/2, w/2)
        ]


class InterpolateToPyramidal(Neck):
    """Fixed interpolation: feature ``i`` of ``n`` is scaled by ``scale_factor ** (n - i)``."""

    def __init__(self, channel_list: Sequence[int], scale_factor: int = 2, mode: str = "nearest") -> None:
        super().__init__(channel_list)
        self.scale_factor, self.mode = scale_factor, mode

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        n = len(features)
        return [F.interpolate(x, scale_factor=self.scale_factor ** (n - i), mode=self.mode) for i, x in enumerate(features)]


class MaxpoolToPyramidal(Neck):
    """Fixed max-pooling: feature ``i`` is pooled by ``kernel_size ** i``."""

    def __init__(self, channel_list: Sequence[int], kernel_size: int = 2) -> None:
        super().__init__(channel_list)
        self.kernel_size = kernel_size

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        return [x.clone() if i == 0 else F.max_pool2d(x, kernel_size=self.kernel_size**i) for i, x in enumerate(features)]


class PermuteDims(Neck):
    """Permute the dimensions of every feature."""

    def __init__(self, channel_list: Sequence[int], new_order: Sequence[int]) -> None:
        super().__init__(channel_list)
        self.new_order = [int(i) for i in new_order]

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        return [x.permute(*self.new_order).contiguous() for x in features]


class AddBottleneckLayer(Neck):
    """Append a 1×1-conv half-width copy of the last feature (for some smp decoders)."""

    def __init__(self, channel_list: Sequence[int]) -> None:
        super().__init__(channel_list)
        self.bottleneck = nn.Conv2d(self.channel_list[-1], self.channel_list[-1] // 2, kernel_size=1)

    @property
    def out_channels(self) -> list[int]:
        return [*self.channel_list, self.channel_list[-1] // 2]

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        return [*features, self.bottleneck(features[-1])]


NECKS: dict[str, type[Neck]] = {
    cls.__name__: cls
    for cls in (
        SelectIndices,
        ReshapeTokensToImage,
        LearnedInterpolateToPyramidal,
        InterpolateToPyramidal,
        MaxpoolToPyramidal,
        PermuteDims,
        AddBottleneckLayer,
    )
}


def build_necks(specs: Sequence[dict[str, Any]], channel_list: Sequence[int]) -> tuple[NeckSequential, list[int]]:
    """The necks of a TerraTorch ``necks:`` list (``[{name: ..., <kwargs>}]``) and their output channels."""
    necks = []
    channels = list(channel_list)
    for i, spec in enumerate(specs):
        name = spec.get("name")
        if name not in NECKS:
            raise ConfigError(
                f"neck '{name}' (necks[{i}]) is not supported; supported necks: {', '.join(NECKS)}"
            )
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        try:
            neck = NECKS[name](channels, **kwargs)
        except TypeError as e:
            raise ConfigError(f"neck '{name}' (necks[{i}]): {e}") from None
        channels = neck.out_channels
        necks.append(neck)
    return NeckSequential(*necks), channels
