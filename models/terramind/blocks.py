"""Transformer building blocks of TerraMind (terratorch ``tm_utils``), inference only.

Attribute names equal the reference's, so state-dict keys match the official checkpoints
(``norm1``, ``attn.qkv``, ``attn.proj``, ``mlp.fc1``/``fc2``/``fc3``, ``self_attn``, ``cross_attn.q``,
``cross_attn.kv``, ``query_norm``, ``context_norm``, ``norm2``). The forward passes use the same
kernels in the same order as terratorch 1.2.11, which keeps results bit-identical on one machine:
attention is ``F.scaled_dot_product_attention`` with a boolean mask where True means "may attend"
(the model's masks use True = "do not attend" and are inverted here). Spec §3.2.

Dimensions: ``B`` batch, ``N`` query tokens, ``M`` context tokens, ``D`` width, ``h`` heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.configs import TerraMindConfig

_CPU = torch.device("cpu")


class LayerNorm(nn.Module):
    """LayerNorm whose bias is a persistent all-zero buffer when ``bias=False`` (reference layout)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.normalized_shape = (normalized_shape,)
        self.has_bias_parameter = bias
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        if bias:
            self.bias = nn.Parameter(torch.zeros(normalized_shape))
        else:
            self.register_buffer("bias", torch.zeros(normalized_shape))

    def init_deterministic_buffers(self) -> None:
        """Recreate the zero ``bias`` buffer as a real CPU tensor (after building on ``meta``)."""
        if not self.has_bias_parameter:
            self.register_buffer("bias", torch.zeros(self.normalized_shape, device=_CPU))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, eps=self.eps)


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module], bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GatedMlp(nn.Module):
    """SwiGLU: ``fc2(act(fc1(x)) * fc3(x))``; ``hidden`` is the final (already 2/3-scaled) width."""

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module], bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.fc3 = nn.Linear(dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)) * self.fc3(x))


class Attention(nn.Module):
    """Multi-head self-attention; ``mask`` ``(B, 1, N)`` or ``(B, N, N)``, True = do not attend."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)  # (B, N, 3, h, D/h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, D/h)
        attn_mask = None if mask is None else ~mask[:, None, :, :].to(dtype=torch.bool, device=x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)  # (B, h, N, D/h)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))  # (B, N, D)


class CrossAttention(nn.Module):
    """Queries attend to a context; ``mask`` ``(B, M)`` or ``(B, N|1, M)``, True = do not attend."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        M = context.shape[1]
        heads, head_dim = self.num_heads, C // self.num_heads
        q = self.q(x).reshape(B, N, heads, head_dim).permute(0, 2, 1, 3)  # (B, h, N, D/h)
        kv = self.kv(context).reshape(B, M, 2, heads, head_dim).permute(2, 0, 3, 1, 4)  # (2, B, h, M, D/h)
        k, v = kv[0], kv[1]  # (B, h, M, D/h) each
        if mask is None:
            attn_mask = None
        elif mask.dim() == 2:
            attn_mask = ~mask[:, None, None, :].to(dtype=torch.bool, device=x.device)  # (B, 1, 1, M)
        elif mask.dim() == 3:
            attn_mask = ~mask[:, None, :, :].to(dtype=torch.bool, device=x.device)  # (B, 1, N|1, M)
        else:
            raise ValueError("cross-attention mask must be (B, M) or (B, N, M) with True = 'do not attend'")
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)  # (B, h, N, D/h)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))  # (B, N, D)


def _mlp(config: TerraMindConfig) -> nn.Module:
    if config.mlp == "swiglu":
        return GatedMlp(config.dim, config.mlp_hidden, nn.SiLU, config.bias)
    return Mlp(config.dim, config.mlp_hidden, nn.GELU, config.bias)


def make_norm(config: TerraMindConfig) -> LayerNorm:
    """The norm every TerraMind v1 variant uses: LayerNorm, eps 1e-6, zero bias buffer."""
    return LayerNorm(config.dim, eps=1e-6, bias=False)


class Block(nn.Module):
    """Pre-norm encoder block: ``x += attn(norm1(x)); x += mlp(norm2(x))``."""

    def __init__(self, config: TerraMindConfig) -> None:
        super().__init__()
        self.norm1 = make_norm(config)
        self.attn = Attention(config.dim, config.num_heads, config.bias, config.bias)
        self.norm2 = make_norm(config)
        self.mlp = _mlp(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)  # (B, N, D)
        return x + self.mlp(self.norm2(x))  # (B, N, D)


class DecoderBlock(nn.Module):
    """Decoder block: self-attention, cross-attention to the encoder context, MLP (all pre-norm)."""

    def __init__(self, config: TerraMindConfig) -> None:
        super().__init__()
        self.norm1 = make_norm(config)
        self.self_attn = Attention(config.dim, config.num_heads, config.bias, config.bias)
        self.cross_attn = CrossAttention(config.dim, config.num_heads, config.bias, config.bias)
        self.query_norm = make_norm(config)
        self.context_norm = make_norm(config)
        self.norm2 = make_norm(config)
        self.mlp = _mlp(config)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        sa_mask: torch.Tensor | None = None,
        xa_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), sa_mask)  # (B, N, D)
        x = x + self.cross_attn(self.query_norm(x), self.context_norm(context), xa_mask)  # (B, N, D)
        return x + self.mlp(self.norm2(x))  # (B, N, D)
