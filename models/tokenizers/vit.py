"""ViT encoder and decoder of the TerraMind v1 image tokenizers.

Mirrors terratorch 1.2.11 ``tokenizer/models/vit_models.py`` (``ViTEncoder`` / ``ViTDecoder`` as
built by ``vit_b_enc`` / ``vit_b_dec``), inference only, with the same module tree and attribute
names so the official ``TerraMind_Tokenizer_*.pt`` state dicts load unchanged (terratorch 1.2.11
``models/backbones/terramind/tokenizer/models/vit_models.py``; terratorch 1.2.11
``models/backbones/terramind/tokenizer/models/vit_models.py`` ``vit_b_dec``).

Dimensions: B batch, C channels, H, W image size, P patch size (16), (h, w) = (H/P, W/P) token grid,
N = h*w tokens, D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..terramind.posemb import build_2d_sincos_posemb
from .layout import grid_to_tokens, token_patches_to_image, tokens_to_grid

LAYER_NORM_EPS = 1e-6


def sincos_grid(h: int, w: int, embed_dim: int) -> torch.Tensor:
    """The reference's MoCo-v3 sin-cos table as a grid ``(1, D, h, w)`` (the initial value of ``pos_emb``)."""
    return tokens_to_grid(build_2d_sincos_posemb(h, w, embed_dim), h, w)  # (1, D, h, w)


def resized_pos_emb(pos_emb: nn.Parameter, nh: int, nw: int, dtype: torch.dtype) -> torch.Tensor:
    """The stored ``(1, D, 16, 16)`` table bicubic-resampled to the token grid, as ``(1, N, D)``.

    The reference's parameter is a channels-last view (it was made by einops and checkpoint loading
    copies into it), and bicubic resampling rounds differently per layout, so resample that layout.
    """
    table = pos_emb.float().contiguous(memory_format=torch.channels_last)  # (1, D, 16, 16)
    table = F.interpolate(table, size=(nh, nw), mode="bicubic", align_corners=False)  # (1, D, h, w)
    return grid_to_tokens(table).to(dtype)  # (1, N, D)


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))``; GELU in the blocks, Tanh in the post-MLP."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with ``F.scaled_dot_product_attention`` like the reference."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, D/heads) each
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, scale=self.scale)
        x = y.transpose(1, 2).reshape(b, n, c)  # (B, N, D)
        return self.proj(x)


class Block(nn.Module):
    """Pre-norm transformer block: ``x += attn(norm1(x)); x += mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


def one_hot_classes(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids ``(B, H, W)`` or ``(B, 1, H, W)`` → one-hot ``(B, classes, H, W)`` float32."""
    ids = x.to(torch.long)
    if ids.ndim == 4:
        ids = ids.squeeze(1)  # (B, H, W)
    return F.one_hot(ids, num_classes=num_classes).permute(0, 3, 1, 2).to(torch.float32)  # (B, C, H, W)


class ViTEncoder(nn.Module):
    """Image → latent grid ``(B, D, h, w)``: conv patch embedding, resized ``pos_emb``, blocks, post-MLP.

    The post-MLP residual is computed in float32 with autocast off, as in the reference (also when
    the weights were cast to a lower precision).
    Class-id inputs (``(B, H, W)`` or ``(B, 1, H, W)`` when ``in_channels > 1``) are one-hot encoded
    first (LULC); callers validate shapes and ids before calling.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        patch_size: int,
        resolution: int,
        dim_tokens: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.P_H = self.P_W = patch_size
        self.dim_tokens = dim_tokens
        n = resolution // patch_size
        self.pos_emb = nn.Parameter(sincos_grid(n, n, dim_tokens), requires_grad=False)
        self.proj = nn.Conv2d(in_channels, dim_tokens, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.Sequential(*[Block(dim_tokens, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm_mlp = nn.LayerNorm(dim_tokens, eps=LAYER_NORM_EPS)
        self.post_mlp = Mlp(dim_tokens, int(mlp_ratio * dim_tokens), act_layer=nn.Tanh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3 or x.shape[1] != self.in_channels:
            x = one_hot_classes(x, self.in_channels)  # (B, C, H, W)
        dtype = self.proj.weight.dtype
        _, _, height, width = x.shape
        nh, nw = height // self.P_H, width // self.P_W
        x = grid_to_tokens(self.proj(x.to(dtype)))  # (B, N, D)
        x = x + resized_pos_emb(self.pos_emb, nh, nw, x.dtype)  # (B, N, D)
        x = self.blocks(x)  # (B, N, D)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float() + self._post_mlp_fp32(x.float())  # (B, N, D) float32
        return tokens_to_grid(x, nh, nw)  # (B, D, h, w)

    def _post_mlp_fp32(self, x: torch.Tensor) -> torch.Tensor:
        """``post_mlp(norm_mlp(x))`` in float32 whatever the weights' dtype (same ops as the modules)."""
        norm, fc1, fc2 = self.norm_mlp, self.post_mlp.fc1, self.post_mlp.fc2
        x = F.layer_norm(x, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps)
        x = self.post_mlp.act(F.linear(x, fc1.weight.float(), fc1.bias.float()))  # (B, N, 4D)
        return F.linear(x, fc2.weight.float(), fc2.bias.float())  # (B, N, D)


class ViTDecoder(nn.Module):
    """Latent grid ``(B, D, h, w)`` → image ``(B, C, H, W)`` (LULC: class logits). No out_conv."""

    def __init__(
        self,
        *,
        out_channels: int,
        patch_size: int,
        resolution: int,
        dim_tokens: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.P_H = self.P_W = patch_size
        self.dim_tokens = dim_tokens
        n = resolution // patch_size
        self.pos_emb = nn.Parameter(sincos_grid(n, n, dim_tokens), requires_grad=False)
        self.blocks = nn.Sequential(*[Block(dim_tokens, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm_mlp = nn.LayerNorm(dim_tokens, eps=LAYER_NORM_EPS)
        self.post_mlp = Mlp(dim_tokens, int(mlp_ratio * dim_tokens), act_layer=nn.Tanh)
        self.out_proj = nn.Linear(dim_tokens, out_channels * patch_size * patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, nh, nw = x.shape
        x = grid_to_tokens(x)  # (B, N, D)
        x = x + resized_pos_emb(self.pos_emb, nh, nw, x.dtype)  # (B, N, D)
        x = self.blocks(x)  # (B, N, D)
        x = x + self.post_mlp(self.norm_mlp(x))  # (B, N, D)
        x = self.out_proj(x)  # (B, N, C*P*P)
        return token_patches_to_image(x, nh, nw, self.out_channels, self.P_H)  # (B, C, H, W)
