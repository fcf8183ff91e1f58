"""One TerraMind tokenizer behind one interface, torch or ONNX Runtime (numpy in, numpy out).

``tokenizer_spec(backend, job)`` is the tokenizer's catalogue entry (for ONNX: the one stored in the
graph's card); ``open_tokenizer(...)`` loads it. The result has ``info`` and

- ``tokenize(x) -> (B, h, w)`` token ids of a standardised image ``(B, C, T, T)`` (LULC: class ids);
- ``decode_tokens(ids, (T, T), timesteps, noise=..., progress=...) -> (B, C, T, T)``: a standardised
  image (DiVAE, DDIM from the start ``noise``) or class logits (the LULC VQ-VAE).

``start_noise`` draws each tile's DiVAE start noise from its tile seed, as torch does
(``torch.Generator().manual_seed(s)``, the reference's CPU draw) or with numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core import catalogue
from ..core.catalogue import ModelSpec
from ..core.errors import ConfigError
from ..core.job import Job
from ..core.progress import Progress
from ..core.seeds import tile_seed
from .backend import check_tile_size
from .device import DeviceChoice, prepare_decoders
from .info import RuntimeInfo


def tokenizer_spec(backend: str, job: Job) -> ModelSpec:
    """The catalogue entry of the job's tokenizer (ONNX: the entry the export stored in its card)."""
    if backend == "onnx":
        from ..backends.onnx_card import DIVAE_DENOISER, TOKENIZER_ENCODER, VQVAE_DECODER, read_card

        path = str(job.model.weights)
        card = read_card(path, (TOKENIZER_ENCODER, DIVAE_DENOISER, VQVAE_DECODER))
        check_tile_size(card["image_size"], job, path)
        return ModelSpec.from_dict(card["spec"])
    return catalogue.for_request(job.model)


class TorchTokenizer:
    """A ``DiVAE`` / ``VQVAE`` (models/tokenizers) on a torch device."""

    def __init__(self, tok: Any, device: DeviceChoice, spec: ModelSpec) -> None:
        self.tok, self.device = tok, device
        prepare_decoders(tok, device)  # bf16/fp16: the diffusion UNet's weights cast once, not per call
        self.info = RuntimeInfo(spec.id, spec.weights.revision if spec.weights else "n/a", dict(tok.weights_source),
                                tok.untrained)  # fmt: skip

    def tokenize(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), self.device.autocast():
            ids = self.tok.tokenize(torch.from_numpy(x).to(self.device.device))  # (B, h, w)
        return ids.cpu().numpy()

    def decode_tokens(self, ids: np.ndarray, image_size: tuple[int, int], timesteps: int, *,
                      noise: np.ndarray | None = None, progress: Progress | None = None) -> np.ndarray:  # fmt: skip
        import torch

        start = None if noise is None else torch.from_numpy(noise)  # on the CPU, as the reference draws it
        with torch.inference_mode(), self.device.autocast():
            y = self.tok.decode_tokens(torch.from_numpy(ids).to(self.device.device), image_size=image_size,
                                       timesteps=timesteps, noise=start, progress=progress)  # fmt: skip
        return y.float().cpu().numpy()  # (B, C, T, T)


class OnnxTokenizerRuntime:
    """An exported tokenizer pair in ONNX Runtime (models/backends/onnx_runtime.py ``OnnxTokenizer``)."""

    def __init__(self, tok: Any, spec: ModelSpec) -> None:
        self.tok = tok
        self.info = RuntimeInfo(tok.model_id, spec.weights.revision if spec.weights else "n/a", dict(tok.weights_source))

    def tokenize(self, x: np.ndarray) -> np.ndarray:
        return self.tok.tokenize(x)

    def decode_tokens(self, ids: np.ndarray, image_size: tuple[int, int], timesteps: int, *,
                      noise: np.ndarray | None = None, progress: Progress | None = None) -> np.ndarray:  # fmt: skip
        return self.tok.decode_tokens(ids, image_size, timesteps, noise=noise, progress=progress)


def open_tokenizer(backend: str, job: Job, spec: ModelSpec, device: DeviceChoice,
                   progress: Progress) -> TorchTokenizer | OnnxTokenizerRuntime:  # fmt: skip
    """Load the job's tokenizer on ``device``."""
    if backend == "onnx":
        from ..backends.onnx_runtime import OnnxTokenizer

        return OnnxTokenizerRuntime(OnnxTokenizer(str(job.model.weights), device=device.device), spec)
    from .. import build

    return TorchTokenizer(build.load_tokenizer(job.model, device=device.device, progress=progress), device, spec)


def start_noise(seed: int, tiles: list, shape: tuple[int, int, int], source: str) -> np.ndarray:
    """Start noise ``(B, C, T, T)`` float32, one draw per tile from ``tile_seed(seed, row, col)``."""
    seeds = [tile_seed(seed, t.row, t.col) for t in tiles]
    if source == "torch":
        try:
            import torch
        except ImportError:
            raise ConfigError("'torch' needs torch in the worker's Python; use 'numpy'", field="params.noise") from None
        return np.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)).numpy() for s in seeds])
    return np.stack([np.random.default_rng(s).standard_normal(shape, dtype=np.float32) for s in seeds])
