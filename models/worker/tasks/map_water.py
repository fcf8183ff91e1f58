"""Task ``map_water``: zero-shot water mapping from TerraMind's generated land cover.

TerraMind generates the LULC modality from Sentinel-2 L2A (and optionally Sentinel-1 GRD and/or
RTC) with its any-to-any generation (no fine-tuning). Water is LULC class 1 "Water", optionally
together with class 3 "Flooded vegetation" (models/core/modalities.py).

Job: ``model.id`` = ``terramind_v1_<size>`` (or a custom card that can generate LULC);
``inputs``: ``S2L2A`` (required, the working grid), ``S1GRD`` / ``S1RTC`` (optional);
``outputs``: ``water`` (uint8 mask: 1 water, 0 not water, 255 nodata exactly where an input had
nodata) and ``lulc`` (uint8, the 10 land-cover classes; optional); ``params``: models/core/params.py
``MapWaterParams`` (``flooded_vegetation``, and the sampling of the LULC tokens as in ``generate``).

Per model call the generation seed is ``tile_seed(seed, row, col, bits=32)`` of the call's first
tile, so a run reproduces with the same seed, inputs, extent, tiling and batch size. The 10 LULC
logits of overlapping tiles are blended; class = argmax of the blend; water = class 1 (or 3).
Metrics: water pixels, their fraction of the valid pixels and area, pixels per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.catalogue import ModelSpec, for_request
from ...core.job import Job
from ...core.modalities import LULC_CLASSES, ClassInfo, get_modality
from ...core.params import MapWaterParams
from ...engine import GeoTiffWriter, OutputRaster, Released, pixel_area_m2
from ...engine.runner import Predict
from ...runtime.generator import TorchGenerator, open_generator
from .context import RunContext
from .generate import generation_predictor, loading_message
from .inputs import TiledInputs, canonical_job, open_tiled
from .outputs import modality_output
from .tiled import TiledTask

WATER_CLASS, FLOODED_VEGETATION_CLASS = 1, 3
WATER_MASK_CLASSES = (ClassInfo(0, "Not water", "#F2EFE9"), ClassInfo(1, "Water", LULC_CLASSES[WATER_CLASS].color))
LULC = get_modality("LULC")


@dataclass(frozen=True)
class MapWaterRequest:
    spec: ModelSpec
    params: MapWaterParams
    inputs: tuple[str, ...]
    tiled: TiledInputs

    def close(self) -> None:
        self.tiled.close()


def water_mask(lulc: np.ndarray, flooded_vegetation: bool) -> np.ndarray:
    """1 where ``lulc`` is water (or flooded vegetation, if asked), else 0 (uint8)."""
    water = lulc == WATER_CLASS
    if flooded_vegetation:
        water |= lulc == FLOODED_VEGETATION_CLASS
    return water.astype(np.uint8)


def validate(job: Job, backend: str) -> MapWaterRequest:
    """Check model, inputs, outputs and parameters; open the inputs (S2L2A first)."""
    job = canonical_job(job, outputs=False)  # output keys are roles: 'water', 'lulc'
    spec = for_request(job.model)
    params = MapWaterParams.from_params(job.params)
    params.check(spec, list(job.inputs))
    inputs = MapWaterParams.inputs_in_order(list(job.inputs))
    outputs = ["water"] + (["lulc"] if "lulc" in job.outputs else [])
    return MapWaterRequest(spec, params, inputs, open_tiled(job, list(inputs), outputs))


class MapWaterTask(TiledTask[MapWaterRequest, TorchGenerator]):
    def __init__(self, req: MapWaterRequest, ctx: RunContext) -> None:
        super().__init__(req, ctx)
        self.counts = np.zeros(len(LULC.classes), np.int64)

    def load(self) -> TorchGenerator:
        job = self.tiled.job
        self.ctx.progress.info(loading_message(self.req.spec, job, self.req.inputs, ["LULC"]))
        return open_generator(job.model, self.req.spec, self.req.inputs, ["LULC"], self.ctx.device, self.ctx.progress)

    def output_rasters(self, model: TorchGenerator) -> list[OutputRaster]:
        what = "Water + Flooded vegetation" if self.req.params.flooded_vegetation else "Water"
        paths = self.tiled.paths
        specs = [OutputRaster("water", paths["water"], (f"water ({what})",), "mask", "uint8", WATER_MASK_CLASSES)]
        if "lulc" in paths:
            specs.append(modality_output("lulc", paths["lulc"], LULC))
        return specs

    def heads(self, model: TorchGenerator) -> dict[str, int]:
        return {"LULC": LULC.output_channels}

    def predictor(self, model: TorchGenerator) -> Predict:
        """Raw tiles → ``{"LULC": (B, 10, T, T)}`` logits (one token-generation step, no diffusion)."""
        p = self.req.params
        return generation_predictor(model, p.sampling, p.seed, 1, self.backoff)

    def finish(self, rel: Released, writers: dict[str, GeoTiffWriter]) -> None:
        lulc = rel.values["LULC"].argmax(axis=0)  # (h, w) class ids of the blended logits
        self.counts += np.bincount(lulc[rel.valid], minlength=len(self.counts))
        water = water_mask(lulc, self.req.params.flooded_vegetation)
        writers["water"].write(rel.row, rel.col, water[None].astype(np.float32), rel.valid)
        if "lulc" in writers:
            writers["lulc"].write(rel.row, rel.col, lulc[None].astype(np.float32), rel.valid)

    def metrics(self, model: TorchGenerator) -> dict[str, Any]:
        counts = self.counts
        water = int(counts[WATER_CLASS] + (counts[FLOODED_VEGETATION_CLASS] if self.req.params.flooded_vegetation else 0))
        valid = int(counts.sum())
        out: dict[str, Any] = {
            "water_pixels": water, "valid_pixels": valid, "water_fraction": water / valid if valid else None,
            "lulc_pixels": {c.name: int(n) for c, n in zip(LULC.classes, counts, strict=True)},
        }  # fmt: skip
        area = pixel_area_m2(self.tiled.grid)
        if area is not None:
            out["water_area_m2"] = water * area
        return out


def run(req: MapWaterRequest, ctx: RunContext) -> dict[str, Any]:
    """Generate land cover, derive the water mask, write both."""
    return MapWaterTask(req, ctx).run()
