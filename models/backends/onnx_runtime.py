"""Run exported TerraMind graphs with ONNX Runtime: numpy in, numpy out, no torch.

- ``OnnxSegmentationModel(path)``: a fine-tuned segmentation model exported by onnx_export.py.
  ``model(raw)`` takes raw inputs ``{config input name: (B, C, H, W)}`` (a multi-temporal model:
  ``(B, C, T, H, W)`` with the ``dates`` its card names) and does what
  models/segmentation's ``SegmentationModel`` does: NaN → ``no_data_replace`` (raw units, also
  ±inf → the largest finite float32, like ``torch.nan_to_num``), ``(x - mean) / std`` in float32,
  then the graph → logits ``(B, K, H, W)`` float32. H, W must be the tile size the graph was
  exported for (``tile_size``).
- ``OnnxTokenizer(path)``: a tokenizer exported as two graphs (encoder, and DiVAE denoiser or LULC
  decoder); either file may be given, the other is found through the card's ``companion``. The
  API follows models/tokenizers: ``encode`` / ``tokenize`` / ``tokens_to_embedding`` /
  ``decode_tokens`` / ``reconstruct`` on standardized images (``standardize`` /
  ``destandardize`` apply the card's statistics). The token id → latent lookup (FSQ) and the DDIM
  loop run in numpy (onnx_ddim.py).

Noise contract of DiVAE decoding: ``noise`` (``(B, C, H, W)``) is used when given — pass the array
torch would draw (``torch.randn(shape, generator=torch.Generator().manual_seed(s))``) to reproduce
a torch decode to within the graph's float tolerance. Otherwise the start noise is
``numpy.random.default_rng(seed).standard_normal(shape, dtype=float32)``: reproducible for a seed,
but a different stream from torch's, so such decodes are not comparable value by value with the
torch backend's (``seed=None``: fresh entropy, like torch's global generator).

Dimensions: B batch, C channels, K classes, H, W image size, L latent channels, (h, w) token grid,
N = h*w.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import CheckpointError, ConfigError, InputRasterError
from ..core.modalities import ClassInfo
from ..core.progress import NullProgress, Progress, check_cancelled
from .onnx_card import DIVAE_DENOISER, SEGMENTATION, TOKENIZER_ENCODER, VQVAE_DECODER, PathLike, read_card
from .onnx_ddim import NumpyDDIM
from .onnx_session import OnnxGraph, open_graph


@dataclass(frozen=True)
class OnnxProvenance:
    """Where a loaded ONNX model came from (same fields as models/segmentation ``Provenance``)."""

    checkpoint: str  # the .onnx file
    config: str | None
    format: str  # 'onnx'
    model_id: str


def _classes(card: dict[str, Any]) -> tuple[ClassInfo, ...]:
    return tuple(ClassInfo(int(c["value"]), str(c["name"]), str(c["color"])) for c in card.get("classes") or [])


def _weights_source(path: Path, card: dict[str, Any]) -> dict[str, str]:
    source = card.get("source") or {}
    out = {"model": str(path)}
    if source.get("checkpoint"):
        out["exported from"] = str(source["checkpoint"]) + (f" (sha256 {source['sha256']})" if source.get("sha256") else "")
    return out


class OnnxSegmentationModel:
    """A fine-tuned segmentation model in ONNX Runtime (see the module docstring)."""

    is_stochastic = False  # TiM models are never exported

    def __init__(self, path: PathLike, device: str = "auto", threads: int | None = None) -> None:
        from ..segmentation.config import SegmentationConfig  # torch-free

        self.graph: OnnxGraph = open_graph(path, (SEGMENTATION,), device, threads)
        card = self.graph.card
        self.card = card
        try:
            self.config = SegmentationConfig.from_dict(card["config"])
            self.tile_size: tuple[int, int] = (int(card["tile_size"][0]), int(card["tile_size"][1]))
        except (KeyError, TypeError, IndexError, ConfigError) as e:
            raise CheckpointError(f"the segmentation card of '{Path(path).name}' is incomplete: {e}") from None
        if [i.name for i in self.config.inputs] != self.graph.input_names:
            raise CheckpointError(
                f"the model card of '{Path(path).name}' does not describe its graph: config inputs "
                f"{self.input_names} vs graph inputs {self.graph.input_names}"
            )
        from ..core.classes import resolve_classes  # torch-free

        self.classes = resolve_classes(self.config.num_classes, names=self.config.class_names, card_classes=_classes(card))
        self.provenance = OnnxProvenance(str(path), None, "onnx", str(card["model_id"]))
        self.weights_source = _weights_source(Path(path), card)
        self.temporal = self.config.temporal is not None
        self.dates = int(card.get("dates") or (self.config.temporal.dates or 1) if self.temporal else 1)
        self._stats = {
            s.name: (np.asarray(s.mean, np.float32).reshape(-1, 1, 1), np.asarray(s.std, np.float32).reshape(-1, 1, 1))
            for s in self.config.inputs
        }  # name -> (C, 1, 1) mean, std

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.config.inputs]

    @property
    def providers(self) -> list[str]:
        return self.graph.providers

    def standardize(self, raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """NaN → ``no_data_replace``, then ``(x - mean) / std`` per band, in config input order (float32)."""
        out = {}
        for spec in self.config.inputs:
            if spec.name not in raw:
                raise InputRasterError(
                    f"the model needs input '{spec.name}' ({spec.modality}, {len(spec.bands)} bands), which was not given"
                )
            x = np.asarray(raw[spec.name], dtype=np.float32)
            shape = self.config.input_shape(spec.name)  # ('B', C, H, W) or ('B', C, T, H, W)
            if self.temporal and shape[2] == "T":
                shape = (*shape[:2], self.dates, *shape[3:])  # the dates the graph was traced with
            if x.ndim != len(shape) or tuple(x.shape[1:-2]) != tuple(shape[1:-2]):
                want = ", ".join(str(v) for v in shape)
                raise InputRasterError(f"input '{spec.name}' must be ({want}) ({', '.join(spec.bands)}), got {tuple(x.shape)}")
            if tuple(x.shape[-2:]) != self.tile_size:
                h, w = self.tile_size
                raise ConfigError(
                    f"this ONNX model was exported for {h}x{w} tiles; input '{spec.name}' is "
                    f"{x.shape[-2]}x{x.shape[-1]}: use tile size {h} or export the model again with --tile-size"
                )
            x = np.nan_to_num(x, nan=np.float32(self.config.no_data_replace))  # (B, C, [T,] H, W)
            mean, std = self._stats[spec.name]
            if x.ndim == 5:
                mean, std = mean[..., None], std[..., None]  # (C, 1, 1, 1): every date alike
            out[spec.name] = np.ascontiguousarray((x - mean) / std)  # (B, C, [T,] H, W)
        return out

    def __call__(self, raw: Mapping[str, np.ndarray], seed: int | None = None) -> np.ndarray:
        """Class logits ``(B, K, H, W)`` float32 of raw inputs (``seed`` is ignored: the model is deterministic)."""
        return self.graph.run(self.standardize(raw))["logits"]


# ----------------------------------------------------------------------------- tokenizers


def _tokenizer_paths(path: Path, decoder_path: PathLike | None) -> tuple[Path, Path]:
    """(encoder, decoder) files from either file of a tokenizer export."""
    card = read_card(path, (TOKENIZER_ENCODER, DIVAE_DENOISER, VQVAE_DECODER))
    companion = Path(decoder_path) if decoder_path else path.parent / str(card.get("companion") or "")
    if card["graph"] != TOKENIZER_ENCODER:
        path, companion = companion, path
    if not path.is_file() or not companion.is_file():
        missing = path if not path.is_file() else companion
        raise CheckpointError(
            f"tokenizer graph '{missing.name}' (named by the card of the other graph) is not next to it; "
            "keep both files of an export together"
        )
    return path, companion


class OnnxTokenizer:
    """A tokenizer (encoder + DiVAE denoiser or LULC decoder) in ONNX Runtime (see the module docstring)."""

    def __init__(
        self, path: PathLike, decoder_path: PathLike | None = None, device: str = "auto", threads: int | None = None
    ) -> None:
        encoder_path, dec_path = _tokenizer_paths(Path(path), decoder_path)
        self.encoder = open_graph(encoder_path, (TOKENIZER_ENCODER,), device, threads)
        self.decoder = open_graph(dec_path, (DIVAE_DENOISER, VQVAE_DECODER), device, threads)
        enc, dec = self.encoder.card, self.decoder.card
        if enc["model_id"] != dec["model_id"] or enc.get("exported_at") != dec.get("exported_at"):
            raise CheckpointError(
                f"'{encoder_path.name}' ({enc['model_id']}) and '{dec_path.name}' ({dec['model_id']}) are not the two "
                "graphs of one tokenizer export"
            )
        self.card = enc
        self.model_id = str(enc["model_id"])
        self.kind = str(enc["kind"])  # 'divae' | 'vqvae'
        self.modality = str(enc["modality"])
        self.n_channels = int(enc["in_channels"])
        self.patch_size = int(enc["patch_size"])
        self.levels = tuple(int(v) for v in enc["levels"])
        self.image_size: tuple[int, int] = (int(enc["image_size"][0]), int(enc["image_size"][1]))
        self.mean = np.asarray(enc.get("mean") or [0.0] * self.n_channels, np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(enc.get("std") or [1.0] * self.n_channels, np.float32).reshape(1, -1, 1, 1)
        self.classes = _classes(enc)
        self.scheduler = NumpyDDIM.from_table(dec["alphas_cumprod"]) if self.kind == "divae" else None
        self.weights_source = _weights_source(encoder_path, enc)
        basis = [1]
        for level in self.levels[:-1]:
            basis.append(basis[-1] * level)
        self._basis = np.asarray(basis, np.int32)  # (L,)
        self._levels = np.asarray(self.levels, np.int32)  # (L,)

    @property
    def vocab_size(self) -> int:
        return int(np.prod(self.levels))

    @property
    def providers(self) -> list[str]:
        return self.encoder.providers

    def standardize(self, raw: np.ndarray) -> np.ndarray:
        """Raw values ``(B, C, H, W)`` → standardized with the card's statistics (float32)."""
        return (np.asarray(raw, np.float32) - self.mean) / self.std

    def destandardize(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32) * self.std + self.mean

    # -- encoding --------------------------------------------------------------------------------

    def prepare_input(self, x: np.ndarray) -> np.ndarray:
        """Validate an encoder input; LULC class ids become one-hot ``(B, C, H, W)`` float32."""
        x = np.asarray(x)
        if self.kind == "vqvae" and (x.ndim == 3 or (x.ndim == 4 and x.shape[1] == 1 and self.n_channels != 1)):
            x = self._one_hot(x)  # (B, C, H, W)
        elif x.ndim != 4 or x.shape[1] != self.n_channels:
            what = "class ids (B, H, W) or one-hot " if self.kind == "vqvae" else "standardized images "
            raise InputRasterError(f"this tokenizer takes {what}(B, {self.n_channels}, H, W); got shape {tuple(x.shape)}")
        elif not np.issubdtype(x.dtype, np.floating):
            raise InputRasterError(f"tokenizer input must be floating point; got {x.dtype}")
        elif not np.isfinite(x).all():
            raise InputRasterError("tokenizer input contains NaN or infinite values; replace nodata before tokenizing")
        if tuple(x.shape[-2:]) != self.image_size:
            h, w = self.image_size
            raise ConfigError(
                f"this ONNX tokenizer was exported for {h}x{w} images; got {x.shape[-2]}x{x.shape[-1]}: use tile size "
                f"{h} or export it again with --image-size"
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def _one_hot(self, x: np.ndarray) -> np.ndarray:
        if x.dtype == np.bool_ or x.size == 0:
            raise InputRasterError(f"class ids must be a numeric array; got {x.dtype}")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise InputRasterError("class ids contain NaN or infinite values; replace nodata first")
        ids = x.astype(np.int64).reshape(x.shape[0], *x.shape[-2:])  # (B, H, W), truncated like torch's .to(long)
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.n_channels:
            raise InputRasterError(
                f"class ids must lie in 0..{self.n_channels - 1} (the tokenizer's {self.n_channels} classes); "
                f"got values in {low}..{high}"
            )
        eye = np.eye(self.n_channels, dtype=np.float32)
        return np.ascontiguousarray(eye[ids].transpose(0, 3, 1, 2))  # (B, C, H, W)

    def encode_latents(self, x: np.ndarray) -> np.ndarray:
        """Pre-quantisation latents ``(B, L, h, w)`` float32."""
        return self.encoder.run({"image": self.prepare_input(x)})["latents"]

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` → FSQ latents ``(B, L, h, w)`` in [0, 1] and token ids ``(B, h, w)`` int32."""
        out = self.encoder.run({"image": self.prepare_input(x)})
        return out["quant"], out["tokens"]

    def tokenize(self, x: np.ndarray) -> np.ndarray:
        return self.encode(x)[1]

    # -- tokens ----------------------------------------------------------------------------------

    def token_grid(self, tokens: np.ndarray) -> np.ndarray:
        """Validated ids as ``(B, h, w)`` (flat ``(B, N)`` needs a square N)."""
        tokens = np.asarray(tokens)
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ConfigError(f"token ids must be an integer array; got {tokens.dtype}")
        if tokens.ndim == 2:
            side = math.isqrt(tokens.shape[1])
            if side * side != tokens.shape[1]:
                raise ConfigError(f"flat token ids (B, N) need a square number of tokens N; got N={tokens.shape[1]}")
            tokens = tokens.reshape(tokens.shape[0], side, side)
        if tokens.ndim != 3 or tokens.size == 0:
            raise ConfigError(f"token ids must be (B, h, w) or (B, N); got shape {tuple(tokens.shape)}")
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.vocab_size:
            raise ConfigError(f"token ids must lie in 0..{self.vocab_size - 1}; got values in {low}..{high}")
        return tokens.astype(np.int32)

    def tokens_to_embedding(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids → FSQ latents ``(B, L, h, w)`` float32: ``((id // basis) % levels) / (levels - 1)``."""
        ids = self.token_grid(tokens)  # (B, h, w)
        code = (ids[..., None] // self._basis) % self._levels  # (B, h, w, L) int32
        quant = code.astype(np.float32) / (self._levels - 1).astype(np.float32)  # (B, h, w, L)
        return np.ascontiguousarray(quant.transpose(0, 3, 1, 2))  # (B, L, h, w)

    # -- decoding --------------------------------------------------------------------------------

    def initial_noise(self, batch: int, noise: np.ndarray | None = None, seed: int | None = None) -> np.ndarray:
        """The start sample ``(B, C, H, W)`` float32 (see the noise contract)."""
        shape = (batch, self.n_channels, *self.image_size)
        if noise is not None:
            noise = np.asarray(noise, dtype=np.float32)
            if noise.shape != shape:
                raise ConfigError(f"noise must have shape {shape} (B, C, H, W); got {tuple(noise.shape)}")
            return np.ascontiguousarray(noise)
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)

    def check_decode_size(self, quant: np.ndarray, image_size: tuple[int, int] | int | None) -> None:
        """The graphs are exported for one size: the token grid and ``image_size`` must be theirs."""
        size = (image_size, image_size) if isinstance(image_size, int) else image_size
        grid = (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)
        if tuple(quant.shape[-2:]) != grid or (size is not None and tuple(int(v) for v in size) != self.image_size):
            asked = f"{size[0]}x{size[1]} pixels from " if size is not None else ""
            raise ConfigError(
                f"this ONNX tokenizer decodes {grid[0]}x{grid[1]} token grids into {self.image_size[0]}x"
                f"{self.image_size[1]} images; asked for {asked}{quant.shape[-2]}x{quant.shape[-1]} tokens "
                "(export it again with --image-size for another size)"
            )

    def decode_quant(
        self,
        quant: np.ndarray,
        image_size: tuple[int, int] | int | None = None,
        timesteps: int = 50,
        *,
        noise: np.ndarray | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """FSQ latents ``(B, L, h, w)`` → standardized image (DiVAE, in [-1, 1]) or class logits (LULC).

        Reports the percentage after each DDIM step and checks for cancellation between steps."""
        progress = progress or NullProgress()
        quant = np.ascontiguousarray(quant, dtype=np.float32)
        if quant.ndim != 4 or quant.shape[1] != len(self.levels):
            raise ConfigError(f"latents must be (B, {len(self.levels)}, h, w); got shape {tuple(quant.shape)}")
        self.check_decode_size(quant, image_size)
        check_cancelled(progress)
        if self.scheduler is None:  # LULC: one decoder pass, no diffusion
            logits = self.decoder.run({"quant": quant})["logits"]
            progress.set_progress(100.0)
            return logits
        steps = self.scheduler.timesteps(timesteps)
        image = self.initial_noise(quant.shape[0], noise, seed)  # (B, C, H, W)
        for index, t in enumerate(steps):
            feeds = {"sample": image, "timestep": np.asarray([t], np.int64), "quant": quant}
            x0 = self.decoder.run(feeds)["x0"]  # (B, C, H, W) predicted clean sample
            _, image = self.scheduler.step(x0, t, image, timesteps)
            progress.set_progress(100.0 * (index + 1) / len(steps))
            if index + 1 < len(steps):
                check_cancelled(progress)
        return image

    def decode_tokens(
        self,
        tokens: np.ndarray,
        image_size: tuple[int, int] | int | None = None,
        timesteps: int = 50,
        *,
        noise: np.ndarray | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Token ids ``(B, h, w)`` or ``(B, N)`` → standardized image / class logits at ``image_size``."""
        quant = self.tokens_to_embedding(tokens)  # (B, L, h, w)
        return self.decode_quant(quant, image_size, timesteps, noise=noise, seed=seed, progress=progress)

    def reconstruct(
        self,
        x: np.ndarray,
        timesteps: int = 50,
        *,
        noise: np.ndarray | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Encode and decode a standardized image (LULC: class ids or one-hot → logits)."""
        quant, _ = self.encode(x)  # (B, L, h, w)
        return self.decode_quant(quant, None, timesteps, noise=noise, seed=seed, progress=progress)
