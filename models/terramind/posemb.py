"""Fixed sine-cosine positional tables and their bicubic resizing (terratorch ``tm_utils``).

The tables are computed exactly as terratorch 1.2.11 computes them (same ops, same order), so a
recomputed table is bit-identical to the buffer the reference holds. Spec §3.3.

Dimensions: ``N`` positions, ``D`` token width, ``h, w`` grid height and width in patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CPU = torch.device("cpu")


def build_1d_sincos_posemb(
    max_len: int, embed_dim: int, temperature: float = 10000.0, device: torch.device | None = None
) -> torch.Tensor:
    """1-D table ``[sin(p w_k), cos(p w_k)]``, ``w_k = T^(-k / (D/2))``; shape ``(1, N, D)``."""
    if embed_dim % 2:
        raise ValueError(f"1-D sin-cos table needs an even width, got {embed_dim}")
    dtype = torch.get_default_dtype()
    arange = torch.arange(max_len, dtype=dtype, device=device)  # (N,)
    pos_dim = embed_dim // 2
    omega = torch.arange(pos_dim, dtype=dtype, device=device) / pos_dim  # (D/2,)
    omega = 1.0 / (temperature**omega)
    out = torch.einsum("n,d->nd", [arange, omega])  # (N, D/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1).unsqueeze(0)  # (1, N, D)


def build_2d_sincos_posemb(
    h: int, w: int, embed_dim: int, temperature: float = 10000.0, device: torch.device | None = None
) -> torch.Tensor:
    """2-D table of MoCo-v3; flat index ``n`` has ``a = n // h``, ``b = n % h``; shape ``(1, h*w, D)``.

    ``pe[n] = [sin(a w), cos(a w), sin(b w), cos(b w)]`` with ``w_k = T^(-k / (D/4))``.
    """
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos table needs a width divisible by 4, got {embed_dim}")
    grid_w = torch.arange(w, device=device)  # (w,)
    grid_h = torch.arange(h, device=device)  # (h,)
    grid_w, grid_h = torch.meshgrid(grid_w, grid_h, indexing="ij")  # (w, h) each
    pos_dim = embed_dim // 4
    omega = torch.arange(pos_dim, dtype=torch.get_default_dtype(), device=device) / pos_dim  # (D/4,)
    omega = 1.0 / (temperature**omega)
    out_w = torch.einsum("n,d->nd", [grid_w.reshape(-1), omega])  # (w*h, D/4)
    out_h = torch.einsum("n,d->nd", [grid_h.reshape(-1), omega])  # (w*h, D/4)
    pos_emb = torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1)
    return pos_emb.unsqueeze(0)  # (1, w*h, D)


def cpu_2d_sincos_posemb(h: int, w: int, embed_dim: int) -> torch.Tensor:
    """``build_2d_sincos_posemb`` as a real CPU tensor, also inside ``with torch.device('meta')``."""
    return build_2d_sincos_posemb(h, w, embed_dim, device=_CPU)


def resize_pos_emb(pos_emb: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bicubically resize a square ``(1, N, D)`` table to ``grid = (h, w)`` patches → ``(1, h*w, D)``.

    Same call as terratorch ``interpolate_pos_encoding`` (``align_corners=False``, PyTorch bicubic
    with a = -0.75). The stored table must be square.
    """
    num_positions, dim = pos_emb.shape[1], pos_emb.shape[2]
    side = int(num_positions**0.5)
    if side * side != num_positions:
        raise ValueError(f"positional table of {num_positions} entries is not a square grid")
    table = pos_emb.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, D, s, s)
    table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)  # (1, D, h, w)
    return table.permute(0, 2, 3, 1).reshape(1, -1, dim)  # (1, h*w, D)
