"""Patched guided-diffusion UNet: the DiVAE decoder of the TerraMind v1 tokenizers (terratorch 1.2.11
``models/backbones/terramind/tokenizer/models/unet/unet.py`` ``PatchedUNetCondCat``).

Mirrors terratorch 1.2.11 ``tokenizer/models/unet/{unet,nn}.py`` (``PatchedUNetCondCat`` as built by
``unet_patched``: patch 4, 256 channels, 3 res-blocks per level, channel multipliers (1, 2, 2, 2),
attention at downsample rates 4 and 8, one head, no scale-shift norm, conv resampling), inference
only, with the reference's module tree and attribute names (``input_blocks.i.j``, ``middle_block``,
``output_blocks``, ``in_layers.0/2``, ``emb_layers.1``, ``out_layers.0/3``, ``skip_connection``,
``qkv``, ``proj_out``, ``op``, ``conv``, ``time_embed.0/2``, ``out.0/2``).

The model predicts the clean sample x0 from the noisy image and the nearest-upsampled quantised
latents. GroupNorm and the attention softmax run in float32 whatever the weights' dtype.
Sizes: the 4-px patch grid is halved ``len(channel_mult) - 1`` times and the skip connections are
concatenated, so H and W must be multiples of ``4 * 2**3 = 32`` (the reference fails otherwise).

Dimensions: B batch, C channels, H, W image size, P patch (4), (H/P, W/P) the UNet grid,
F feature channels, T = grid cells, L latent channels, E time-embedding width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layout import patchify, unpatchify

GROUP_NORM_GROUPS = 32


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) computed in float32 (weights included), returned in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(GROUP_NORM_GROUPS, channels)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding ``(N, dim)`` of timesteps ``(N,)``: cos first, then sin."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half).to(
        device=timesteps.device
    )
    args = timesteps[:, None].float() * freqs[None]  # (N, dim/2)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, dim)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class TimestepBlock(nn.Module):
    """A module whose forward takes the time embedding as a second argument."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that passes the time embedding to the children that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")  # (B, F, 2h, 2w)
        return self.conv(x)


class Downsample(nn.Module):
    """3x3 convolution with stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)  # (B, F, h/2, w/2)


class ResBlock(TimestepBlock):
    """``skip(x) + conv(SiLU(GN(conv(SiLU(GN(x))) + Linear(SiLU(emb)))))``; dropout (0) left out."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, self.out_channels))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Identity(),  # the reference's Dropout(p=0)
            nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)  # (B, F_out, h, w)
        emb_out = self.emb_layers(emb).type(h.dtype)  # (1 or B, F_out)
        while len(emb_out.shape) < len(h.shape):
            emb_out = emb_out[..., None]  # (1 or B, F_out, 1, 1)
        h = h + emb_out
        h = self.out_layers(h)  # (B, F_out, h, w)
        return self.skip_connection(x) + h


class QKVAttentionLegacy(nn.Module):
    """QKV attention with the legacy split (heads first, then q, k, v); softmax in float32."""

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)  # (B*heads, ch, T) each
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)  # (B*heads, T, T)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        a = torch.einsum("bts,bcs->bct", weight, v)  # (B*heads, ch, T)
        return a.reshape(bs, -1, length)  # (B, F, T)


class AttentionBlock(nn.Module):
    """``x + proj_out(attention(qkv(GN(x))))`` over the flattened feature map."""

    def __init__(self, channels: int, num_heads: int = 1) -> None:
        super().__init__()
        self.channels = channels
        self.num_heads = num_heads
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.attention = QKVAttentionLegacy(num_heads)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)  # (B, F, T)
        qkv = self.qkv(self.norm(x))  # (B, 3F, T)
        h = self.proj_out(self.attention(qkv))  # (B, F, T)
        return (x + h).reshape(b, c, *spatial)  # (B, F, h, w)


class UNetModel(nn.Module):
    """The guided-diffusion UNet body (no class conditioning, ``dims=2``)."""

    def __init__(
        self,
        *,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: tuple[int, ...],
        channel_mult: tuple[int, ...],
        num_heads: int = 1,
    ) -> None:
        super().__init__()
        self.model_channels = model_channels
        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        input_block_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, time_embed_dim, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                input_block_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, time_embed_dim), AttentionBlock(ch, num_heads), ResBlock(ch, time_embed_dim)
        )
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                ich = input_block_chans.pop()
                layers = [ResBlock(ch + ich, time_embed_dim, int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(input_ch, out_channels, 3, padding=1))
        self.downsample_factor = 2 ** (len(channel_mult) - 1)

    def unet_forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """UNet on ``x (B, F_in, h, w)`` at ``timesteps (1,)`` (broadcast) or ``(B,)``."""
        t_emb = timestep_embedding(timesteps, self.model_channels)  # (1 or B, F)
        emb = self.time_embed(t_emb.to(self.time_embed[0].weight.dtype))  # (1 or B, E)
        hs = []
        h = x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = torch.cat([h, hs.pop()], dim=1)  # (B, F + F_skip, h, w)
            h = module(h, emb)
        return self.out(h)  # (B, F_out, h, w)


class PatchedUNetCondCat(UNetModel):
    """UNet on 4x4 patches with the quantised latents upsampled (nearest) and concatenated."""

    def __init__(self, *, in_channels: int, out_channels: int, cond_channels: int, patch_size: int, **kwargs) -> None:
        super().__init__(
            in_channels=in_channels * patch_size * patch_size + cond_channels,
            out_channels=out_channels * patch_size * patch_size,
            **kwargs,
        )
        self.P_H = self.P_W = patch_size
        self.in_channels = in_channels
        self.out_channels = out_channels

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (32 for the official tokenizers)."""
        return self.P_H * self.downsample_factor

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, cond: torch.Tensor) -> torch.Tensor:
        """Predict x0 ``(B, C, H, W)`` from ``sample (B, C, H, W)``, ``timestep`` and ``cond (B, L, h, w)``."""
        _, _, height, width = sample.shape
        n_h, n_w = height // self.P_H, width // self.P_W
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], dtype=torch.long, device=sample.device)
        elif timestep.ndim == 0:
            timestep = timestep[None].to(sample.device)  # (1,)
        dtype = self.input_blocks[0][0].weight.dtype
        x = patchify(sample, self.P_H)  # (B, C*P*P, H/P, W/P)
        cond_upsampled = F.interpolate(cond, (n_h, n_w), mode="nearest")  # (B, L, H/P, W/P)
        x = torch.cat([x, cond_upsampled], dim=1).to(dtype)  # (B, C*P*P + L, H/P, W/P)
        x = self.unet_forward(x, timestep)  # (B, C*P*P, H/P, W/P)
        return unpatchify(x, self.out_channels, self.P_H)  # (B, C, H, W)
