"""Task ``map_water``: zero-shot water mapping from TerraMind's generated land cover.

TerraMind generates the LULC modality from Sentinel-2 L2A (and optionally Sentinel-1 GRD and/or
RTC) with its any-to-any generation (``build.load_generation``; no fine-tuning). Water is LULC
class 1 "Water", optionally together with class 3 "Flooded vegetation" (models/core/modalities.py).

Job: ``model.id`` = ``terramind_v1_<size>`` (or a custom card that can generate LULC);
``inputs``: ``S2L2A`` (required, the working grid), ``S1GRD`` / ``S1RTC`` (optional);
``outputs``: ``water`` (uint8 mask: 1 water, 0 not water, 255 nodata exactly where an input had
nodata) and ``lulc`` (uint8, the 10 land-cover classes; optional); ``params``:
``flooded_vegetation`` (bool, default false), ``temperature`` (1.0), ``top_p`` (0.8), ``top_k``
(0), ``seed`` (0) — the sampling of the LULC tokens, as in ``generate``.

Per model call the generation seed is ``tile_seed(seed, row, col, bits=32)`` of the call's first
tile (common.py), so a run reproduces with the same seed, inputs, extent, tiling and batch size.
The 10 LULC logits of overlapping tiles are blended; class = argmax of the blend; water = class 1
(or 3). Metrics: water pixels, their fraction of the valid pixels and area, pixels per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.catalogue import ModelSpec
from ...engine import InputStack, OutputRaster, Released, WorkingGrid, run_tiled
from ...core.errors import ConfigError, UnsupportedModalityError
from ...core.job import Job
from ...core.modalities import LULC_CLASSES, ClassInfo, get_modality
from . import common
from .context import RunContext
from .generate import generation_predictor
from .segment import pixel_area_m2

WATER_CLASS, FLOODED_VEGETATION_CLASS = 1, 3
OPTIONAL_INPUTS = ("S1GRD", "S1RTC")
WATER_MASK_CLASSES = (ClassInfo(0, "Not water", "#F2EFE9"), ClassInfo(1, "Water", LULC_CLASSES[WATER_CLASS].color))


@dataclass(frozen=True)
class MapWaterRequest:
    job: Job
    spec: ModelSpec
    inputs: tuple[str, ...]
    flooded_vegetation: bool
    temperature: float
    top_p: float
    top_k: int
    seed: int
    paths: dict[str, str]
    grid: WorkingGrid
    stack: InputStack


def water_mask(lulc: np.ndarray, flooded_vegetation: bool) -> np.ndarray:
    """1 where ``lulc`` is water (or flooded vegetation, if asked), else 0 (uint8)."""
    water = lulc == WATER_CLASS
    if flooded_vegetation:
        water |= lulc == FLOODED_VEGETATION_CLASS
    return water.astype(np.uint8)


def validate(job: Job) -> MapWaterRequest:
    """Check model, inputs, outputs and parameters; open the inputs (S2L2A first)."""
    job = common.canonical_job(job, outputs=False)  # output keys are roles: 'water', 'lulc'
    p = job.params
    spec = common.load_catalogue(job)
    if spec.kind != "terramind" or "LULC" not in spec.outputs:
        raise ConfigError(f"model '{spec.id}' cannot generate LULC; map water needs a TerraMind model (e.g. terramind_v1_base)")
    if "S2L2A" not in job.inputs:
        raise ConfigError("map water needs a Sentinel-2 L2A input (S2L2A, 12 bands); Sentinel-1 is optional")
    extra = [k for k in job.inputs if k != "S2L2A" and k not in OPTIONAL_INPUTS]
    if extra:
        raise UnsupportedModalityError(
            f"map water reads S2L2A and optionally {' or '.join(OPTIONAL_INPUTS)}; remove the input(s) {', '.join(extra)}"
        )
    inputs = ("S2L2A", *(m for m in OPTIONAL_INPUTS if m in job.inputs))
    for m in inputs:
        if m not in spec.inputs:
            raise UnsupportedModalityError(f"model '{spec.id}' does not accept input {m} (it accepts {', '.join(spec.inputs)})")
    keys = ["water"] + (["lulc"] if "lulc" in job.outputs else [])
    paths = common.check_output_paths(job, keys)
    flooded = p.get("flooded_vegetation", False)
    if not isinstance(flooded, bool):
        raise ConfigError(f"parameter 'flooded_vegetation' must be true or false, got {flooded!r}")
    sampling = common.read_sampling(p)
    grid, stack = common.open_inputs(job, list(inputs))
    return MapWaterRequest(job, spec, inputs, flooded, **sampling, seed=common.param_int(p, "seed", 0),
                           paths=paths, grid=grid, stack=stack)  # fmt: skip


def _predictor(req: MapWaterRequest, model: Any, ctx: RunContext):  # noqa: ANN202
    """Raw tiles → ``{"LULC": (B, 10, T, T)}`` logits (one token-generation step, no diffusion)."""
    sampling = {"temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k}
    inputs = [get_modality(k) for k in req.inputs]
    return generation_predictor(req.job, model, ctx, inputs, ["LULC"], sampling, req.seed, timesteps=1)


def run(req: MapWaterRequest, ctx: RunContext) -> dict[str, Any]:
    """Generate land cover, derive the water mask, write both."""
    from ... import build

    job, grid, stack = req.job, req.grid, req.stack
    lulc_modality = get_modality("LULC")
    try:
        common.report_grid(ctx.progress, grid, stack)
        untrained = " (UNTRAINED weights, testing only)" if job.model.untrained else ""
        ctx.progress.info(f"loading {req.spec.id}: {', '.join(req.inputs)} → LULC{untrained}")
        model = build.load_generation(
            job.model.id, list(req.inputs), ["LULC"], weights=job.model.weights,
            tokenizer_weights=job.model.tokenizer_weights or None, untrained=job.model.untrained,
            device=ctx.device.device, progress=ctx.progress,
        )  # fmt: skip
        what = "Water + Flooded vegetation" if req.flooded_vegetation else "Water"
        specs = [OutputRaster("water", req.paths["water"], (f"water ({what})",), "mask", "uint8", WATER_MASK_CLASSES)]
        if "lulc" in req.paths:
            specs.append(common.modality_output("lulc", req.paths["lulc"], lulc_modality))
        for spec in specs:
            ctx.outputs.open(common.tagged(spec, job, req.spec, grid, model, ctx.device.description), grid)
        counts = np.zeros(len(lulc_modality.classes), np.int64)

        def finish(rel: Released) -> None:
            lulc = rel.values["LULC"].argmax(axis=0)  # (h, w) class ids of the blended logits
            counts[:] += np.bincount(lulc[rel.valid], minlength=len(counts))
            water = water_mask(lulc, req.flooded_vegetation)
            ctx.outputs.writers["water"].write(rel.row, rel.col, water[None].astype(np.float32), rel.valid)
            if "lulc" in ctx.outputs.writers:
                ctx.outputs.writers["lulc"].write(rel.row, rel.col, lulc[None].astype(np.float32), rel.valid)

        plan = common.make_plan(job, grid)
        stats = run_tiled(stack, plan, {"LULC": lulc_modality.output_channels}, _predictor(req, model, ctx), finish,
                          **common.tiled_run_options(job, ctx))
        paths = ctx.outputs.commit(ctx.progress)
    finally:
        stack.close()
    water_px = int(counts[WATER_CLASS] + (counts[FLOODED_VEGETATION_CLASS] if req.flooded_vegetation else 0))
    valid_px = int(counts.sum())
    metrics: dict[str, Any] = {
        "tiles": stats.tiles, "tiles_predicted": stats.predicted, "tiles_skipped_nodata": stats.skipped_nodata,
        "water_pixels": water_px, "valid_pixels": valid_px,
        "water_fraction": water_px / valid_px if valid_px else None,
        "lulc_pixels": {c.name: int(n) for c, n in zip(lulc_modality.classes, counts, strict=True)},
    }  # fmt: skip
    area = pixel_area_m2(grid)
    if area is not None:
        metrics["water_area_m2"] = water_px * area
    return {"outputs": paths, "metrics": metrics}
