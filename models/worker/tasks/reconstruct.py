"""Task ``reconstruct``: tokenize and decode a raster tile by tile with one tokenizer.

Job: ``model.id`` = a tokenizer (e.g. ``terramind_v1_tokenizer_s2l2a``); ``inputs[<modality>]``;
``outputs["reconstruction"]`` and optionally ``outputs["difference"]``; ``params``:
``modality`` (default: the only input), ``timesteps`` (DDIM steps, default 10), ``seed``
(default 0), ``difference`` (bool; default: whether a difference path is given).

Per tile: raw values → standardised with the v1 statistics (``models/core/modalities.py``; LULC class
ids go in unchanged) → token ids → decoded at the tile size (DiVAE: DDIM from start noise drawn
per tile from ``tile_seed(seed, row, col)``: on the CPU with ``torch.Generator`` as the reference
draws it, or with numpy (``params.noise``; the ONNX backend's default), so results do not depend
on the batch size; DiVAE decoding needs tiles of a multiple of 32 px) → de-standardised. The same
recipe runs on torch or ONNX Runtime (models/runtime/tokenizer.py).
Continuous outputs are float32 in raw units; LULC is the argmax of the blended logits (uint8).

``difference`` = reconstruction − input (float32, raw units); for LULC a mask, 1 where the class
changed. Metrics (streamed over every valid pixel, raw units, per band label):

- ``mae`` = mean |reconstruction − input|;
- ``psnr`` = 10·log10(R² / MSE) dB, with the data range R = max − min of the band's valid INPUT
  values over the processed area (``data_range`` reports min and max); ``null`` where MSE = 0 or
  R = 0 (undefined);
- LULC instead: ``accuracy`` (fraction of pixels whose class is unchanged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.catalogue import ModelSpec
from ...core.errors import ConfigError
from ...core.job import Job
from ...core.modalities import ClassInfo, Modality, get_modality
from ...core.params import ReconstructParams
from ...core.progress import Progress
from ...engine import GeoTiffWriter, OutputRaster, Released
from ...engine.runner import Predict
from ...runtime.backend import noise_source
from ...runtime.device import OomBackoff
from ...runtime.tokenizer import open_tokenizer, start_noise, tokenizer_spec
from .context import RunContext
from .inputs import TiledInputs, canonical_job, open_tiled
from .outputs import modality_output
from .tiled import TiledTask, chunk_progress

CHANGE_CLASSES = (ClassInfo(0, "Unchanged", "#F7F7F7"), ClassInfo(1, "Changed", "#D7191C"))


@dataclass(frozen=True)
class ReconstructRequest:
    backend: str
    spec: ModelSpec
    params: ReconstructParams
    tiled: TiledInputs

    def close(self) -> None:
        self.tiled.close()

    @property
    def modality(self) -> Modality:
        return get_modality(self.params.modality)


def validate(job: Job, backend: str) -> ReconstructRequest:
    """Check the job and open its input (errors here mean a bad job); no model is loaded yet."""
    job = canonical_job(job)
    if not job.inputs:
        raise ConfigError("reconstruct needs one input raster (job.inputs)", field="inputs")
    params = ReconstructParams.from_params(job.params, list(job.inputs), difference="difference" in job.outputs)
    spec = tokenizer_spec(backend, job)
    params.check(spec, list(job.inputs))
    job.tiling.require_multiple(params.tile_multiple(spec), "the diffusion decoder works on 32-pixel multiples")
    outputs = ["reconstruction"] + (["difference"] if params.difference else [])
    return ReconstructRequest(backend, spec, params, open_tiled(job, [params.modality], outputs))


class ReconstructionMetrics:
    """Streaming MAE / PSNR (continuous) or accuracy (classes); see the module docstring."""

    def __init__(self, labels: tuple[str, ...], categorical: bool) -> None:
        c = len(labels)
        self.labels, self.categorical = labels, categorical
        self.n = 0
        self.sae, self.sse = np.zeros(c), np.zeros(c)
        self.low, self.high = np.full(c, np.inf), np.full(c, -np.inf)
        self.equal = 0

    def update(self, recon: np.ndarray, target: np.ndarray, valid: np.ndarray) -> None:
        """Add ``recon`` and ``target`` ``(C, h, w)`` at the ``valid`` ``(h, w)`` pixels."""
        r, t = recon[:, valid].astype(np.float64), target[:, valid].astype(np.float64)  # (C, n)
        if t.shape[1] == 0:
            return
        self.n += t.shape[1]
        if self.categorical:
            self.equal += int((r == t).all(axis=0).sum())
            return
        d = r - t
        self.sae += np.abs(d).sum(axis=1)
        self.sse += (d * d).sum(axis=1)
        self.low, self.high = np.minimum(self.low, t.min(axis=1)), np.maximum(self.high, t.max(axis=1))

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"valid_pixels": self.n}
        if self.n == 0:
            return out
        if self.categorical:
            out["accuracy"] = self.equal / self.n
            return out
        mse, mae = self.sse / self.n, self.sae / self.n
        psnr = {}
        for i, label in enumerate(self.labels):
            rng = self.high[i] - self.low[i]
            psnr[label] = 10 * math.log10(rng * rng / mse[i]) if mse[i] > 0 and rng > 0 else None
        out["psnr"] = psnr
        out["mae"] = {label: float(mae[i]) for i, label in enumerate(self.labels)}
        out["data_range"] = {label: [float(self.low[i]), float(self.high[i])] for i, label in enumerate(self.labels)}
        return out


def reconstruction_predictor(tok: Any, m: Modality, seed: int, timesteps: int, tile: int, source: str,
                             backoff: OomBackoff) -> Predict:  # fmt: skip
    """Raw tiles → ``{"reconstruction": (B, C, T, T)}`` in raw units (LULC: class logits) through the
    tokenizer runtime ``tok`` (torch or ONNX: the same recipe)."""
    mean = np.asarray(m.mean, np.float32).reshape(1, -1, 1, 1)  # (1, C, 1, 1)
    std = np.asarray(m.std, np.float32).reshape(1, -1, 1, 1)

    def predict(tiles: list, inputs: dict[str, np.ndarray], progress: Progress) -> dict[str, np.ndarray]:
        x = inputs[m.name]  # (B, C, T, T) raw

        def chunk(a: int, b: int) -> np.ndarray:
            xb = x[a:b] if m.categorical else (x[a:b] - mean) / std  # (b-a, C, T, T)
            noise = None if m.categorical else start_noise(seed, tiles[a:b], (m.num_bands, tile, tile), source)
            ids = tok.tokenize(xb)  # (b-a, h, w)
            y = tok.decode_tokens(ids, (tile, tile), timesteps, noise=noise,
                                  progress=chunk_progress(progress, a, b, len(tiles)))  # fmt: skip
            return y if m.categorical else y * std + mean  # (b-a, C, T, T)

        return {"reconstruction": np.concatenate(backoff.run(len(tiles), chunk))}

    return predict


class ReconstructTask(TiledTask[ReconstructRequest, Any]):
    def __init__(self, req: ReconstructRequest, ctx: RunContext) -> None:
        super().__init__(req, ctx)
        self.modality = req.modality
        self.scores = ReconstructionMetrics(self.modality.band_labels, self.modality.categorical)

    def load(self) -> Any:
        job = self.tiled.job
        untrained = " (UNTRAINED weights, testing only)" if job.model.untrained else ""
        self.ctx.progress.info(f"loading {self.req.spec.id}{untrained}")
        return open_tokenizer(self.req.backend, job, self.req.spec, self.ctx.device, self.ctx.progress)

    def output_rasters(self, model: Any) -> list[OutputRaster]:
        m, paths = self.modality, self.tiled.paths
        specs = [modality_output("reconstruction", paths["reconstruction"], m)]
        if "difference" in paths:
            if m.categorical:
                specs.append(OutputRaster("difference", paths["difference"], ("class changed",), "mask", "uint8",
                                          CHANGE_CLASSES))  # fmt: skip
            else:
                labels = tuple(f"{b} difference" for b in m.band_labels)
                specs.append(OutputRaster("difference", paths["difference"], labels, f"difference:{m.name}"))
        return specs

    def heads(self, model: Any) -> dict[str, int]:
        return {"reconstruction": self.modality.output_channels}

    def predictor(self, tok: Any) -> Predict:
        p, job = self.req.params, self.tiled.job
        return reconstruction_predictor(tok, self.modality, p.seed, p.timesteps, job.tiling.tile_size,
                                        noise_source(job, self.req.backend), self.backoff)  # fmt: skip

    def finish(self, rel: Released, writers: dict[str, GeoTiffWriter]) -> None:
        m = self.modality
        target, _ = self.tiled.stack.inputs[0].read(rel.row, rel.col, rel.height, rel.width)  # (C, h, w)
        rec = rel.values["reconstruction"]
        if m.categorical:
            rec = rec.argmax(axis=0)[None].astype(np.float32)  # (1, h, w) class ids
        writers["reconstruction"].write(rel.row, rel.col, rec, rel.valid)
        self.scores.update(rec, target, rel.valid)
        if "difference" in writers:
            diff = (rec != target).astype(np.float32) if m.categorical else rec - target
            writers["difference"].write(rel.row, rel.col, diff, rel.valid)

    def metrics(self, model: Any) -> dict[str, Any]:
        return self.scores.result()


def run(req: ReconstructRequest, ctx: RunContext) -> dict[str, Any]:
    """Run the reconstruction; returns the result event's ``outputs`` and ``metrics``."""
    return ReconstructTask(req, ctx).run()
