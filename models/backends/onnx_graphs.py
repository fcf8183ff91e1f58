"""The torch modules that are traced into ONNX graphs (export wrappers, kept apart from the models).

Each wrapper takes and returns plain tensors in a fixed order (ONNX graphs have positional,
named inputs and outputs) and leaves out what the ONNX runtime does in numpy instead: NaN
replacement and standardisation (segmentation), one-hot encoding of class ids (LULC), the token
id → latent lookup and the DDIM loop (DiVAE).

Dimensions: B batch, C channels, K classes, H, W image size, L latent channels, (h, w) token grid,
D encoder width.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

ENCODER_OUTPUTS = ("latents", "quant", "tokens")
DENOISER_INPUTS = ("sample", "timestep", "quant")


def _pool_matrix(size: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """``(out, size)`` averaging matrix of adaptive pooling: row i averages ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    rows = []
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def adaptive_avg_pool2d_fixed(x: torch.Tensor, output_size: int | tuple[int | None, int | None]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` as two matrix products for the traced (fixed) input size.

    The TorchScript exporter cannot export adaptive pooling to sizes that do not divide the input
    (UperNet's pyramid pools a 7x7 map to 2x2, 3x3, 6x6); the bins are the same, the sums are taken
    in another order (deviation ~1e-7 relative)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    oh, ow = oh or h, ow or w
    if h % oh == 0 and w % ow == 0:
        return F.adaptive_avg_pool2d(x, (oh, ow))  # exportable as it is
    rows, cols = _pool_matrix(h, oh, x), _pool_matrix(w, ow, x)  # (oh, h), (ow, w)
    return torch.matmul(torch.matmul(rows, x), cols.t())  # (B, C, oh, ow)


@contextlib.contextmanager
def exportable_pooling(module: nn.Module) -> Iterator[None]:
    """Within the block, every ``nn.AdaptiveAvgPool2d`` of ``module`` runs ``adaptive_avg_pool2d_fixed``."""
    pools = [m for m in module.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    for pool in pools:
        fixed = functools.partial(adaptive_avg_pool2d_fixed, output_size=pool.output_size)
        pool.forward = fixed  # type: ignore[method-assign]
    try:
        yield
    finally:
        for pool in pools:
            del pool.forward


class SegmentationGraph(nn.Module):
    """Standardised inputs, one positional tensor per config input (in config order) → logits."""

    def __init__(self, net: nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.net = net
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(dict(zip(self.input_names, inputs)))  # (B, K, H, W)


class TokenizerEncoderGraph(nn.Module):
    """Standardized image (LULC: one-hot classes) → pre-quantisation latents, FSQ latents, token ids."""

    def __init__(self, tokenizer: nn.Module) -> None:
        super().__init__()
        self.encoder = tokenizer.encoder
        self.quant_proj = tokenizer.quant_proj
        self.quantize = tokenizer.quantize

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, D, h, w)
        proj = self.quant_proj
        latents = F.conv2d(h.float(), proj.weight.float(), proj.bias.float())  # (B, L, h, w)
        quant, tokens = self.quantize(latents)  # (B, L, h, w) in [0, 1], (B, h, w) int32
        return latents, quant, tokens


class DenoiserGraph(nn.Module):
    """The DiVAE UNet: noisy sample x_t ``(B, C, H, W)``, timestep ``(1,)`` int64, FSQ latents → x0."""

    def __init__(self, tokenizer: nn.Module) -> None:
        super().__init__()
        self.decoder = tokenizer.decoder

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, quant: torch.Tensor) -> torch.Tensor:
        return self.decoder(sample, timestep, quant)  # (B, C, H, W)


class VQVAEDecoderGraph(nn.Module):
    """The LULC VQ-VAE decoder: FSQ latents ``(B, L, h, w)`` → class logits ``(B, K, H, W)``."""

    def __init__(self, tokenizer: nn.Module) -> None:
        super().__init__()
        self.post_quant_proj = tokenizer.post_quant_proj
        self.decoder = tokenizer.decoder

    def forward(self, quant: torch.Tensor) -> torch.Tensor:
        h = self.post_quant_proj(quant)  # (B, D, h, w)
        return self.decoder(h).float()  # (B, K, H, W)
