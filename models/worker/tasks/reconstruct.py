"""Task ``reconstruct``: tokenize and decode a raster tile by tile with one tokenizer.

Job: ``model.id`` = a tokenizer (e.g. ``terramind_v1_tokenizer_s2l2a``); ``inputs[<modality>]``;
``outputs["reconstruction"]`` and optionally ``outputs["difference"]``; ``params``:
``modality`` (default: the only input), ``timesteps`` (DDIM steps, default 10), ``seed``
(default 0), ``difference`` (bool; default: whether a difference path is given).

Per tile: raw values → standardised with the v1 statistics (``models/core/modalities.py``; LULC class
ids go in unchanged) → token ids → decoded at the tile size (DiVAE: DDIM from start noise drawn on
the CPU from ``torch.Generator().manual_seed(tile_seed(seed, row, col))``, so results do not
depend on the batch size; DiVAE decoding needs tiles of a multiple of 32 px) → de-standardised.
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

from ...backends.tasks import job_backend, load_onnx_tokenizer, onnx_reconstruct_predictor, onnx_tokenizer_spec
from ...core.catalogue import ModelSpec
from ...engine import InputStack, OutputRaster, Released, WorkingGrid, run_tiled
from ...core.errors import ConfigError
from ...core.job import Job
from ...core.modalities import ClassInfo, Modality, get_modality
from ...core.progress import Progress, ScaledProgress
from ..device import OomBackoff
from . import common
from .context import RunContext


@dataclass(frozen=True)
class ReconstructRequest:
    job: Job
    spec: ModelSpec
    modality: Modality
    timesteps: int
    seed: int
    difference: bool
    paths: dict[str, str]
    grid: WorkingGrid
    stack: InputStack


def validate(job: Job) -> ReconstructRequest:
    """Check the job and open its input (errors here mean a bad job); no model is loaded yet."""
    job = common.canonical_job(job)
    params = job.params
    if not job.inputs:
        raise ConfigError("reconstruct needs one input raster (job.inputs)")
    name = params.get("modality") or (next(iter(job.inputs)) if len(job.inputs) == 1 else None)
    if not name:
        raise ConfigError("parameter 'modality' is required when the job has several inputs")
    modality = get_modality(str(name))
    if modality.name not in job.inputs:
        raise ConfigError(f"parameter 'modality' is {modality.name} but the job has no input '{modality.name}'")
    spec = onnx_tokenizer_spec(job) if job_backend(job) == "onnx" else common.load_catalogue(job)
    if spec.kind != "tokenizer":
        raise ConfigError(f"model '{spec.id}' is not a tokenizer; reconstruct needs a tokenizer model id")
    if spec.modality != modality.name:
        raise ConfigError(f"model '{spec.id}' is the tokenizer of {spec.modality}, not of {modality.name}")
    if spec.config.kind == "divae":  # type: ignore[union-attr]
        common.check_tile_size(job, 32, "the diffusion decoder needs sizes that are multiples of 32")
    difference = bool(params.get("difference", "difference" in job.outputs))
    keys = ["reconstruction"] + (["difference"] if difference else [])
    paths = common.check_output_paths(job, keys)
    timesteps, seed = common.param_int(params, "timesteps", 10, 1, 1000), common.param_int(params, "seed", 0)
    grid, stack = common.open_inputs(job, [modality.name])
    return ReconstructRequest(job, spec, modality, timesteps, seed, difference, paths, grid, stack)


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


def _predictor(req: ReconstructRequest, tok: Any, ctx: RunContext, tile: int):  # noqa: ANN202
    import torch

    m, device = req.modality, ctx.device.device
    mean = torch.tensor(m.mean, dtype=torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)
    std = torch.tensor(m.std, dtype=torch.float32).view(1, -1, 1, 1)
    backoff = OomBackoff(req.job.tiling.batch_size, ctx.progress)

    def predict(tiles: list, inputs: dict[str, np.ndarray], progress: Progress) -> dict[str, np.ndarray]:
        common.check_class_values(req.job, m, inputs[m.name])
        x = torch.from_numpy(inputs[m.name])  # (B, C, T, T) raw

        def chunk(a: int, b: int) -> np.ndarray:
            xb = x[a:b] if m.categorical else (x[a:b] - mean) / std  # (b-a, C, T, T)
            noise = None
            if not m.categorical:
                noise = torch.stack([
                    torch.randn((m.num_bands, tile, tile), generator=torch.Generator().manual_seed(
                        common.tile_seed(req.seed, t.row, t.col)))
                    for t in tiles[a:b]
                ])  # (b-a, C, T, T), on the CPU like the reference's draw
            sub = ScaledProgress(progress, 100.0 * a / len(tiles), 100.0 * b / len(tiles))
            with torch.inference_mode(), ctx.device.autocast():
                ids = tok.tokenize(xb.to(device))  # (b-a, h, w)
                y = tok.decode_tokens(ids, image_size=(tile, tile), timesteps=req.timesteps, noise=noise, progress=sub)
            y = y.float().cpu()  # (b-a, C, T, T)
            return (y if m.categorical else y * std + mean).numpy()

        return {"reconstruction": np.concatenate(backoff.run(len(tiles), chunk))}

    return predict


def run(req: ReconstructRequest, ctx: RunContext) -> dict[str, Any]:
    """Run the reconstruction; returns the result event's ``outputs`` and ``metrics``."""
    job, m, grid, stack = req.job, req.modality, req.grid, req.stack
    try:
        common.report_grid(ctx.progress, grid, stack)
        plan = common.make_plan(job, grid)
        ctx.progress.info(f"loading {req.spec.id}" + (" (UNTRAINED weights, testing only)" if job.model.untrained else ""))
        onnx = job_backend(job) == "onnx"
        if onnx:  # an exported .onnx tokenizer: onnxruntime, no torch
            tok = load_onnx_tokenizer(job, ctx.device.device)
        else:
            from ... import build

            tok = build.load_tokenizer(job.model.id, weights=job.model.weights, untrained=job.model.untrained,
                                       device=ctx.device.device, progress=ctx.progress)  # fmt: skip
        outputs = _open_outputs(req, grid, ctx, tok)
        metrics = ReconstructionMetrics(m.band_labels, m.categorical)

        def finish(rel: Released) -> None:
            target, _ = stack.inputs[0].read(rel.row, rel.col, rel.height, rel.width)  # (C, h, w)
            rec = rel.values["reconstruction"]
            if m.categorical:
                rec = rec.argmax(axis=0)[None].astype(np.float32)  # (1, h, w) class ids
            outputs.writers["reconstruction"].write(rel.row, rel.col, rec, rel.valid)
            metrics.update(rec, target, rel.valid)
            if req.difference:
                diff = (rec != target).astype(np.float32) if m.categorical else rec - target
                outputs.writers["difference"].write(rel.row, rel.col, diff, rel.valid)

        predictor = onnx_reconstruct_predictor if onnx else _predictor
        predict = predictor(req, tok, ctx, plan.tile_size)
        heads = {"reconstruction": len(m.classes) if m.categorical else m.num_bands}
        stats = run_tiled(stack, plan, heads, predict, finish, **common.tiled_run_options(job, ctx))
        paths = outputs.commit(ctx.progress)
    finally:
        stack.close()
    result = metrics.result()
    result.update(tiles=stats.tiles, tiles_predicted=stats.predicted, tiles_skipped_nodata=stats.skipped_nodata,
                  blend_buffer_mb=round(stats.strip_bytes / 2**20, 1))
    return {"outputs": paths, "metrics": result}


def _open_outputs(req: ReconstructRequest, grid: Any, ctx: RunContext, model: Any) -> common.OutputSet:
    m = req.modality
    specs = [common.modality_output("reconstruction", req.paths["reconstruction"], m)]
    if req.difference:
        if m.categorical:
            change = (ClassInfo(0, "Unchanged", "#F7F7F7"), ClassInfo(1, "Changed", "#D7191C"))
            specs.append(OutputRaster("difference", req.paths["difference"], ("class changed",), "mask", "uint8", change))
        else:
            labels = tuple(f"{b} difference" for b in m.band_labels)
            specs.append(OutputRaster("difference", req.paths["difference"], labels, f"difference:{m.name}"))
    for spec in specs:
        ctx.outputs.open(common.tagged(spec, req.job, req.spec, grid, model, ctx.device.description), grid)
    return ctx.outputs
