"""Task ``embed``: TerraMind's encoder features as a raster, one pixel per 16 x 16 patch.

Job: ``model.id`` = a TerraMind model (``terramind_v1_<size>`` or a custom card); ``inputs`` = any
subset of its input modalities (keys = modality names, the first defines the working grid; with a
band subset in ``params.bands`` an input holds those bands, in that order); ``params``:
models/core/embedding_params.py ``EmbedParams`` (``merge``, ``layers``, ``bands``, ``tim``, ``seed``,
``dtype``); ``outputs``: ``embeddings`` (required) and ``pca`` (optional: three principal
components, a false-colour view). ``tiling.overlap`` must be a multiple of 16.

The raster (models/engine/tokens.py): the token grid (the working grid coarsened 16 times, same
origin), D bands ``E1`` … ``E<D>`` (D = the model width, times the merged modalities for
``concat``), float32 or float16, nodata where any pixel of a token's patch was nodata, GeoTIFF
blocks of 16 x 16 tokens (pixel-interleaved: the tasks that read it take all bands of a window).
Each token is computed by exactly one tile (the interior rule of models/engine/tokens.py: no
blending, no seams). The ``TERRAMIND_EMBEDDING`` tag (models/core/embeddings.py) says how it was
made, so that similarity, clustering and classification can refuse embeddings of another model or
configuration. TiM models sample tokens: each model call uses ``tile_seed(seed, row, col, bits=32)``
of its first tile.

PCA: the covariance of the valid tokens is gathered while they are written; afterwards the written
embeddings are read back and projected on the top three components (signs fixed), float32,
styled as a false-colour image with each component stretched on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.catalogue import ModelSpec, for_request
from ...core.embedding_params import EmbedParams, check_token_tiling
from ...core.embeddings import PCA_TAG, TAG, EmbeddingInfo, band_names
from ...core.job import Job
from ...core.modalities import Modality
from ...core.progress import Progress, ScaledProgress
from ...core.seeds import tile_seed
from ...engine import GeoTiffWriter, OutputRaster, Released, TiledRunStats, WorkingGrid
from ...engine.tokens import PredictTokens, TokenPlan, run_token_tiles, token_grid
from ...engine.writer import FLOAT16_MAX
from ...learning.pca import Covariance
from ...runtime.embedder import TorchEmbedder, open_embedder
from .context import RunContext
from .embedding_source import EmbeddingRaster, check_progress
from .inputs import TiledInputs, canonical_job, open_tiled
from .tiled import TiledTask

TOKEN_BLOCK = 16  # GeoTIFF block side of token rasters (tokens)


@dataclass(frozen=True)
class EmbedRequest:
    spec: ModelSpec
    params: EmbedParams
    inputs: tuple[str, ...]
    modalities: dict[str, Modality]
    tiled: TiledInputs

    def close(self) -> None:
        self.tiled.close()


def validate(job: Job, backend: str) -> EmbedRequest:
    """Check the model, inputs, parameters and outputs; open the inputs (nothing is loaded)."""
    job = canonical_job(job, outputs=False)  # output keys are roles: 'embeddings', 'pca'
    spec = for_request(job.model)
    params = EmbedParams.from_params(job.params, pca="pca" in job.outputs)
    inputs = tuple(job.inputs)
    params.check(spec, inputs)
    check_token_tiling(job.tiling)
    modalities = {m: params.modality(m) for m in inputs}
    outputs = ["embeddings"] + (["pca"] if params.pca else [])
    return EmbedRequest(spec, params, inputs, modalities, open_tiled(job, list(inputs), outputs, modalities))


def embedding_info(req: EmbedRequest) -> EmbeddingInfo:
    """What the embeddings of ``req`` will say about themselves (known before the model is loaded)."""
    p, job, grid = req.params, req.tiled.job, req.tiled.grid
    tokens = token_grid(grid)
    return EmbeddingInfo(
        model_id=req.spec.id, untrained=bool(job.model.untrained), modalities=req.inputs, bands=dict(p.bands),
        merge=p.merge, layers=p.layer_numbers(req.spec), tim=p.tim, dim=p.dim(req.spec, req.inputs),
        token_grid=(tokens.width, tokens.height), input_grid=(grid.width, grid.height), dtype=p.dtype,
        extra={"tile_size": job.tiling.tile_size, "overlap": job.tiling.overlap, "seed": p.seed if p.tim else None},
    )  # fmt: skip


class EmbedTask(TiledTask[EmbedRequest, TorchEmbedder]):
    def __init__(self, req: EmbedRequest, ctx: RunContext) -> None:
        super().__init__(req, ctx)
        self.tokens = token_grid(self.tiled.grid)
        self.dim = req.params.dim(req.spec, req.inputs)
        self.covariance = Covariance(self.dim) if req.params.pca else None
        self.valid_tokens = 0
        self.explained: list[float] = []

    def before_load(self) -> None:
        p, spec = self.req.params, self.req.spec
        tim = f", TiM {'+'.join(p.tim)} (seed {p.seed})" if p.tim else ""
        self.ctx.progress.info(f"loading the encoder of '{spec.id}' for {', '.join(self.req.inputs)} (merge {p.merge}, "
                               f"layer(s) {', '.join(map(str, p.layer_numbers(spec)))}{tim}): {self.dim} dimensions "
                               f"on a {self.tokens.width} x {self.tokens.height} token grid")  # fmt: skip

    def load(self) -> TorchEmbedder:
        r = self.req
        model = open_embedder(self.tiled.job.model, r.spec, r.params, r.inputs, r.modalities, self.ctx.device,
                              self.ctx.progress)  # fmt: skip
        if model.dim != self.dim:
            raise RuntimeError(f"the encoder gives {model.dim} dimensions, expected {self.dim}")
        return model

    def output_grid(self) -> WorkingGrid:
        return self.tokens

    def output_rasters(self, model: TorchEmbedder) -> list[OutputRaster]:
        info, paths = embedding_info(self.req), self.tiled.paths
        specs = [OutputRaster("embeddings", paths["embeddings"], band_names(self.dim), "embeddings", self.req.params.dtype,
                              tags={TAG: info.to_tag()}, block_size=TOKEN_BLOCK)]  # fmt: skip
        if "pca" in paths:
            specs.append(OutputRaster("pca", paths["pca"], ("PC1", "PC2", "PC3"), "embeddings",
                                      tags={PCA_TAG: json.dumps(info.signature())}, block_size=TOKEN_BLOCK))  # fmt: skip
        return specs

    def heads(self, model: TorchEmbedder) -> dict[str, int]:
        return {"tokens": self.dim}

    def predictor(self, model: TorchEmbedder) -> PredictTokens:  # type: ignore[override]
        seed, stochastic = self.req.params.seed, bool(self.req.params.tim)

        def predict(tiles: list, inputs: dict[str, np.ndarray], progress: Progress) -> np.ndarray:
            def chunk(a: int, b: int) -> np.ndarray:
                call_seed = tile_seed(seed, tiles[a].row, tiles[a].col, bits=32) if stochastic else None
                return model.embed({k: v[a:b] for k, v in inputs.items()}, call_seed)  # (b-a, D, t, t)

            return np.concatenate(self.backoff.run(len(tiles), chunk))

        return predict

    def execute(self, model: TorchEmbedder) -> TiledRunStats:
        job, ctx = self.tiled.job, self.ctx
        plan = TokenPlan(self.tiled.grid.height, self.tiled.grid.width, job.tiling.tile_size, job.tiling.overlap,
                         block=TOKEN_BLOCK)  # fmt: skip
        ctx.progress.info(f"{plan.num_tiles} tiles of {plan.tile_tokens} x {plan.tile_tokens} tokens; each keeps the "
                          f"tokens at least {job.tiling.overlap // 32 * 16} pixels from the borders it shares")  # fmt: skip
        end = 90.0 if self.covariance is not None else 99.0
        stats = run_token_tiles(self.tiled.stack, plan, self.dim, self.predictor(model),
                                lambda rel: self.finish(rel, ctx.outputs.writers), batch_size=job.tiling.batch_size,
                                progress=ScaledProgress(ctx.progress, 2.0, end))  # fmt: skip
        if self.covariance is not None:
            self.write_pca(ctx.outputs.writers)
        return stats

    def finish(self, rel: Released, writers: dict[str, GeoTiffWriter]) -> None:
        values, valid = rel.values["tokens"], rel.valid  # (D, h, w), (h, w)
        ok = valid & np.isfinite(values).all(axis=0)
        if self.req.params.dtype == "float16":
            ok &= (np.abs(values) <= FLOAT16_MAX).all(axis=0)
        self.valid_tokens += int(ok.sum())
        writers["embeddings"].write(rel.row, rel.col, values, valid)
        if self.covariance is not None:
            self.covariance.add(values[:, ok].T)

    def write_pca(self, writers: dict[str, GeoTiffWriter]) -> None:
        """Project the written embeddings on their three principal components."""
        assert self.covariance is not None
        if self.covariance.n < 2:
            self.ctx.progress.warn("fewer than two valid embedding pixels: the PCA view is all nodata")
            return
        mean, comps, ratio = self.covariance.components(3)
        self.explained = [round(float(v), 6) for v in ratio]
        path = writers["embeddings"].finish_writing()
        raster = EmbeddingRaster(path, "the embeddings being written")
        try:
            windows = list(raster.windows(self.dim))
            for n, (row, col, h, w) in enumerate(windows):
                check_progress(self.ctx.progress, n, len(windows), 90.0, 99.0)
                data, valid = raster.read(row, col, h, w)  # (D, h, w)
                flat = data.reshape(self.dim, -1).T.astype(np.float64) - mean  # (h*w, D)
                pcs = (flat @ comps.T).T.reshape(3, h, w).astype(np.float32)
                writers["pca"].write(row, col, pcs, valid)
        finally:
            raster.close()

    def metrics(self, model: TorchEmbedder) -> dict[str, Any]:
        out: dict[str, Any] = {"dim": self.dim, "token_grid": [self.tokens.width, self.tokens.height],
                               "valid_tokens": self.valid_tokens, "pixel_size": self.tokens.pixel_size}  # fmt: skip
        if self.explained:
            out["explained_variance"] = self.explained
        return out


def run(req: EmbedRequest, ctx: RunContext) -> dict[str, Any]:
    """Embed the inputs; returns the result event's ``outputs`` and ``metrics`` (D, token grid, PCA variance)."""
    return EmbedTask(req, ctx).run()
