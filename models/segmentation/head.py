"""TerraTorch's ``SegmentationHead``: optional 3×3 conv-ReLU blocks, dropout, 1×1 conv to classes.

Keys ``head.0.<i>.0.*`` (only with ``channel_list``) and ``head.2.{weight,bias}``, as in
``terratorch/models/heads/segmentation_head.py``. Dropout is inactive at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.errors import ConfigError


class SegmentationHead(nn.Module):
    """Decoder features ``(B, C, H, W)`` → class logits ``(B, num_classes, H, W)``."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channel_list: Sequence[int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        pre_head: nn.Module = nn.Identity()
        if channel_list is not None:
            chans = [in_channels, *channel_list]
            pre_head = nn.Sequential(
                *(
                    nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], kernel_size=3, padding=1), nn.ReLU())
                    for i in range(len(chans) - 1)
                )
            )
            in_channels = chans[-1]
        self.head = nn.Sequential(
            pre_head,
            nn.Identity() if dropout == 0 else nn.Dropout(dropout),
            nn.Conv2d(in_channels, self.num_classes, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)  # (B, num_classes, H, W)
