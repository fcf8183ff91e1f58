"""Task ``generate``: any-to-any generation with TerraMind, tile by tile.

Job: ``model.id`` = ``terramind_v1_<size>`` (or a custom card); ``inputs`` = any subset of the
model's input modalities (keys = modality names; the first defines the working grid);
``outputs[<MODALITY>]`` = one path per generated modality; ``params``: models/core/params.py
``GenerateParams`` (``outputs`` in generation order: each output is conditioned on the inputs and
the outputs before it; ``timesteps``, ``temperature``, ``top_p``, ``top_k``, ``seed``).

Per model call (one batch, or a smaller chunk after an out-of-memory back-off) the generation
seed is ``tile_seed(seed, row, col, bits=32)`` of the call's FIRST tile (models/core/seeds.py);
tokens and the DiVAE start noise then follow the model's random-number contract
(``terramind/sampler.py``). The tiles of one call share that seed, so results reproduce for the
same seed, inputs, extent, tiling and batch size (and device), but change with the batch size.

Outputs: one raster per requested modality, on the working grid: S2L2A (12 bands), S1GRD/S1RTC
(VV, VH in dB), DEM (m), NDVI, all float32 in raw units from the blended, de-standardised tile
outputs; LULC uint8 classes = argmax of the blended 10-class logits (colour table and class names).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...core.catalogue import ModelSpec, for_request
from ...core.job import Job
from ...core.modalities import get_modality
from ...core.params import GenerateParams, Sampling
from ...core.progress import Progress
from ...core.seeds import tile_seed
from ...engine import GeoTiffWriter, OutputRaster, Released
from ...engine.runner import Predict
from ...runtime.device import OomBackoff
from ...runtime.generator import TorchGenerator, open_generator
from .context import RunContext
from .inputs import TiledInputs, canonical_job, open_tiled
from .outputs import modality_output
from .tiled import TiledTask, chunk_progress


@dataclass(frozen=True)
class GenerateRequest:
    spec: ModelSpec
    params: GenerateParams
    tiled: TiledInputs

    def close(self) -> None:
        self.tiled.close()


def validate(job: Job, backend: str) -> GenerateRequest:
    """Check parameters, model, outputs and open the inputs (errors mean a bad job)."""
    job = canonical_job(job)
    spec = for_request(job.model)
    params = GenerateParams.from_params(job.params, default_outputs=list(job.outputs))
    inputs = list(job.inputs)
    params.check(spec, inputs)
    job.tiling.require_multiple(params.tile_multiple(spec), "the diffusion decoders work on 32-pixel multiples")
    return GenerateRequest(spec, params, open_tiled(job, inputs, params.outputs))


def generation_predictor(generator: TorchGenerator, sampling: Sampling, seed: int, timesteps: int,
                         backoff: OomBackoff) -> Predict:  # fmt: skip
    """Raw input tiles → ``{output: (B, C, T, T)}`` from ``generator``; each model call is seeded with
    its first tile's seed."""

    def predict(tiles: list, arrays: dict[str, np.ndarray], progress: Progress) -> dict[str, np.ndarray]:
        def chunk(a: int, b: int) -> dict[str, np.ndarray]:
            call_seed = tile_seed(seed, tiles[a].row, tiles[a].col, bits=32)
            return generator.generate({k: v[a:b] for k, v in arrays.items()}, call_seed, sampling, timesteps,
                                      chunk_progress(progress, a, b, len(tiles)))  # fmt: skip

        parts = backoff.run(len(tiles), chunk)
        return {k: np.concatenate([part[k] for part in parts]) for k in generator.outputs}

    return predict


def loading_message(spec: ModelSpec, job: Job, inputs: Sequence[str], outputs: Sequence[str]) -> str:
    untrained = " (UNTRAINED weights, testing only)" if job.model.untrained else ""
    return f"loading {spec.id}: {', '.join(inputs)} → {', '.join(outputs)}{untrained}"


class GenerateTask(TiledTask[GenerateRequest, TorchGenerator]):
    def __init__(self, req: GenerateRequest, ctx: RunContext) -> None:
        super().__init__(req, ctx)
        self.outputs = [get_modality(m) for m in req.params.outputs]
        self.group_width = 2048 if len(self.outputs) < 3 else 1024

    def load(self) -> TorchGenerator:
        job, inputs = self.tiled.job, list(self.tiled.job.inputs)
        self.ctx.progress.info(loading_message(self.req.spec, job, inputs, self.req.params.outputs))
        return open_generator(job.model, self.req.spec, inputs, self.req.params.outputs, self.ctx.device,
                              self.ctx.progress)  # fmt: skip

    def output_rasters(self, model: TorchGenerator) -> list[OutputRaster]:
        return [modality_output(m.name, self.tiled.paths[m.name], m) for m in self.outputs]

    def heads(self, model: TorchGenerator) -> dict[str, int]:
        return {m.name: m.output_channels for m in self.outputs}

    def predictor(self, model: TorchGenerator) -> Predict:
        p = self.req.params
        return generation_predictor(model, p.sampling, p.seed, p.timesteps, self.backoff)

    def finish(self, rel: Released, writers: dict[str, GeoTiffWriter]) -> None:
        for m in self.outputs:
            v = rel.values[m.name]  # (C, h, w)
            if m.categorical:
                v = v.argmax(axis=0)[None].astype(np.float32)  # (1, h, w) class ids
            writers[m.name].write(rel.row, rel.col, v, rel.valid)


def run(req: GenerateRequest, ctx: RunContext) -> dict:
    """Generate every requested modality; returns the result event's ``outputs`` and ``metrics``."""
    return GenerateTask(req, ctx).run()
