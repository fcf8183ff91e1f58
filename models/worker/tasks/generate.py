"""Task ``generate``: any-to-any generation with TerraMind, tile by tile.

Job: ``model.id`` = ``terramind_v1_<size>`` (or a custom card); ``inputs`` = any subset of the
model's input modalities (keys = modality names; the first defines the working grid);
``outputs[<MODALITY>]`` = one path per generated modality; ``params``: ``outputs`` (list, in
generation order: each output is conditioned on the inputs and the outputs before it),
``timesteps`` (DDIM steps, default 10), ``temperature`` (1.0), ``top_p`` (0.8), ``top_k`` (0),
``seed`` (0).

Per model call (one batch, or a smaller chunk after a CUDA out-of-memory back-off) the generation
seed is ``tile_seed(seed, row, col, bits=32)`` of the call's FIRST tile (``common.py``); tokens and
the DiVAE start noise then follow the model's random-number contract (``terramind/sampler.py``).
The tiles of one call share that seed, so results reproduce for the same seed, inputs, extent,
tiling and batch size (and device), but change with the batch size.

Outputs: one raster per requested modality, on the working grid: S2L2A (12 bands), S1GRD/S1RTC
(VV, VH in dB), DEM (m), NDVI, all float32 in raw units from the blended, de-standardised tile
outputs; LULC uint8 classes = argmax of the blended 10-class logits (colour table and class names).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...catalogue import ModelSpec
from ...engine import InputStack, OutputRaster, Released, WorkingGrid, run_tiled
from ...errors import ConfigError, UnsupportedModalityError
from ...job import Job
from ...modalities import Modality, get_modality
from ...progress import Progress, ScaledProgress
from ..device import OomBackoff
from . import common
from .context import RunContext


@dataclass(frozen=True)
class GenerateRequest:
    job: Job
    spec: ModelSpec
    inputs: tuple[Modality, ...]
    outputs: tuple[Modality, ...]
    timesteps: int
    temperature: float
    top_p: float
    top_k: int
    seed: int
    paths: dict[str, str]
    grid: WorkingGrid
    stack: InputStack


def validate(job: Job) -> GenerateRequest:
    """Check parameters, model, outputs and open the inputs (errors mean a bad job)."""
    job = common.canonical_job(job)
    p = job.params
    spec = common.load_catalogue(job)
    if spec.kind != "terramind":
        raise ConfigError(f"model '{spec.id}' is a tokenizer; generate needs a TerraMind model (e.g. terramind_v1_base)")
    requested = p.get("outputs") or [k for k in job.outputs]
    if isinstance(requested, str) or not isinstance(requested, (list, tuple)):
        raise ConfigError(f"parameter 'outputs' must be a list of modality names, got {requested!r}")
    outputs = tuple(get_modality(str(n)) for n in requested)
    inputs = tuple(get_modality(k) for k in job.inputs)
    if not inputs:
        raise ConfigError(f"generate needs at least one input; model '{spec.id}' accepts {', '.join(spec.inputs)}")
    for m in inputs:
        if m.name not in spec.inputs:
            raise UnsupportedModalityError(f"model '{spec.id}' does not accept input {m.name} (it accepts {', '.join(spec.inputs)})")
    seen = set()
    for m in outputs:
        if m.name not in spec.outputs:
            raise UnsupportedModalityError(f"model '{spec.id}' cannot generate {m.name} (it generates {', '.join(spec.outputs)})")
        if m.name in job.inputs:
            raise ConfigError(f"{m.name} is both an input and a requested output; TerraMind cannot generate a modality it is given")
        if m.name in seen:
            raise ConfigError(f"output {m.name} is requested twice")
        seen.add(m.name)
    if not outputs:
        raise ConfigError("parameter 'outputs' is empty; request at least one modality to generate")
    if any(not m.categorical for m in outputs):
        common.check_tile_size(job, 32, "the diffusion decoders need sizes that are multiples of 32")
    common.check_tile_size(job, 16, "TerraMind works on 16-pixel patches")
    paths = common.check_output_paths(job, [m.name for m in outputs])
    sampling = dict(temperature=common.param_float(p, "temperature", 1.0, 0.0),
                    top_p=common.param_float(p, "top_p", 0.8, 0.0, 1.0),
                    top_k=common.param_int(p, "top_k", 0, 0))  # fmt: skip
    grid, stack = common.open_inputs(job, [m.name for m in inputs])
    return GenerateRequest(job, spec, inputs, outputs, common.param_int(p, "timesteps", 10, 1, 1000), **sampling,
                           seed=common.param_int(p, "seed", 0), paths=paths, grid=grid, stack=stack)  # fmt: skip


def _predictor(req: GenerateRequest, model: Any, ctx: RunContext):  # noqa: ANN202
    import torch

    from ...terramind.sampler import SamplingConfig

    sampling = SamplingConfig(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k)
    backoff = OomBackoff(req.job.tiling.batch_size, ctx.progress)
    device = ctx.device.device

    def predict(tiles: list, inputs: dict[str, np.ndarray], progress: Progress) -> dict[str, np.ndarray]:
        for m in req.inputs:
            common.check_class_values(req.job, m, inputs[m.name])
        x = {k: torch.from_numpy(v) for k, v in inputs.items()}  # {modality: (B, C, T, T)} raw

        def chunk(a: int, b: int) -> dict[str, np.ndarray]:
            seed = common.tile_seed(req.seed, tiles[a].row, tiles[a].col, bits=32)
            sub = ScaledProgress(progress, 100.0 * a / len(tiles), 100.0 * b / len(tiles))
            with torch.inference_mode(), ctx.device.autocast():
                out = model({k: v[a:b].to(device) for k, v in x.items()}, seed=seed, sampling=sampling,
                            timesteps=req.timesteps, standardize=True, progress=sub)  # fmt: skip
            return {k: v.float().cpu().numpy() for k, v in out.items()}  # {modality: (b-a, C, T, T)}

        parts = backoff.run(len(tiles), chunk)
        return {m.name: np.concatenate([part[m.name] for part in parts]) for m in req.outputs}

    return predict


def _output_raster(req: GenerateRequest, m: Modality, model: Any, ctx: RunContext) -> OutputRaster:
    if m.categorical:
        spec = OutputRaster(m.name, req.paths[m.name], (f"{m.name} class",), m.name, "uint8", m.classes)
    else:
        spec = OutputRaster(m.name, req.paths[m.name], m.band_labels, m.name)
    tags = common.output_tags(req.job, req.spec, m.name, req.grid, model, ctx.device.description)
    return replace(spec, tags=tags)


def run(req: GenerateRequest, ctx: RunContext) -> dict[str, Any]:
    """Generate every requested modality; returns the result event's ``outputs`` and ``metrics``."""
    from ... import build

    job, grid, stack = req.job, req.grid, req.stack
    try:
        common.report_grid(ctx.progress, grid, stack)
        plan = common.make_plan(job, grid, group_width=2048 if len(req.outputs) < 3 else 1024)
        untrained = " (UNTRAINED weights, testing only)" if job.model.untrained else ""
        ctx.progress.info(f"loading {req.spec.id}: {', '.join(m.name for m in req.inputs)} → "
                          f"{', '.join(m.name for m in req.outputs)}{untrained}")  # fmt: skip
        model = build.load_generation(
            job.model.id, [m.name for m in req.inputs], [m.name for m in req.outputs], weights=job.model.weights,
            tokenizer_weights=job.model.tokenizer_weights or None, untrained=job.model.untrained,
            device=ctx.device.device, progress=ctx.progress,
        )  # fmt: skip
        model.eval()
        for m in req.outputs:
            ctx.outputs.open(_output_raster(req, m, model, ctx), grid)

        def finish(rel: Released) -> None:
            for m in req.outputs:
                v = rel.values[m.name]  # (C, h, w)
                if m.categorical:
                    v = v.argmax(axis=0)[None].astype(np.float32)  # (1, h, w) class ids
                ctx.outputs.writers[m.name].write(rel.row, rel.col, v, rel.valid)

        heads = {m.name: m.output_channels for m in req.outputs}
        stats = run_tiled(stack, plan, heads, _predictor(req, model, ctx), finish,
                          batch_size=job.tiling.batch_size, progress=ScaledProgress(ctx.progress, 2.0, 99.0))  # fmt: skip
        paths = ctx.outputs.commit()
    finally:
        stack.close()
    return {"outputs": paths, "metrics": {"tiles": stats.tiles, "tiles_predicted": stats.predicted,
                                          "tiles_skipped_nodata": stats.skipped_nodata,
                                          "blend_buffer_mb": round(stats.strip_bytes / 2**20, 1)}}  # fmt: skip
