"""Task ``similarity``: how much every place looks like the reference features (cosine similarity).

Job: ``inputs.EMBEDDINGS`` = an embedding raster (task ``embed``), or the inputs, model and params of
``embed`` (the embeddings are then made first); ``params``: models/core/embedding_params.py
``SimilarityParams``: ``references`` (points, lines or polygons as JSON in a named CRS:
models/core/features.py) and ``aggregate``; ``outputs.similarity``.

Each reference's embedding is the mean of the unit-length embeddings of the valid tokens it covers
(models/worker/tasks/embedding_source.py says which tokens a geometry covers), scaled to unit length.
Every token's similarity is the cosine of its embedding with them: ``mean`` — with the averaged
reference (the references' mean embedding, again unit length: one prototype); ``max`` — the highest
of its similarities to each reference (any of them). Output: float32, one band in [-1, 1] on the
embedding raster's grid, nodata where the embeddings are nodata, styled with a ramp.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...core.embedding_params import SimilarityParams
from ...core.job import Job
from ...engine import OutputRaster
from ...learning import unit_rows
from .context import RunContext
from .embedding_source import EmbeddingSource, check_progress, feature_tokens, prepare_source, valid_feature_tokens
from .inputs import output_paths

FIELD = "params.references"
TOKEN_BLOCK = 16


@dataclass(frozen=True)
class SimilarityRequest:
    job: Job
    params: SimilarityParams
    source: EmbeddingSource
    path: str

    def close(self) -> None:
        self.source.close()


def validate(job: Job, backend: str) -> SimilarityRequest:
    params = SimilarityParams.from_params(job.params)
    path = output_paths(job, ["similarity"])["similarity"]
    return SimilarityRequest(job, params, prepare_source(job, backend, path), path)


def summarized(job: Job, key: str) -> Job:
    """The job as the outputs' tags record it: features as their count, not their geometries."""
    value = job.params.get(key)
    if isinstance(value, dict) and isinstance(value.get("features"), list):
        return replace(job, params={**job.params, key: {"features": len(value["features"])}})
    return job


def run(req: SimilarityRequest, ctx: RunContext) -> dict[str, Any]:
    try:
        computing = req.source.raster is None
        raster = req.source.open(ctx)
        start = 80.0 if computing else 0.0
        refs = valid_feature_tokens(raster, feature_tokens(req.params.references, raster, FIELD), FIELD)
        vectors = unit_rows(np.stack([unit_rows(v).mean(axis=0) for _, v in refs]))  # (R, D)
        queries = unit_rows(vectors.mean(axis=0, keepdims=True)) if req.params.aggregate == "mean" else vectors
        ctx.progress.info(f"{len(refs)} reference(s) over {sum(len(v) for _, v in refs)} embedding pixels; "
                          f"similarity to {'their mean' if req.params.aggregate == 'mean' else 'the most similar one'}")
        spec = OutputRaster("similarity", req.path, ("cosine similarity",), "similarity", block_size=TOKEN_BLOCK)
        writer = ctx.outputs.open(spec, raster.grid, summarized(req.job, "references"), raster.runtime_info(),
                                  ctx.device.description)  # fmt: skip
        windows = list(raster.windows(raster.dim + len(queries)))
        low, high, total, count = np.inf, -np.inf, 0.0, 0
        for n, (row, col, h, w) in enumerate(windows):
            check_progress(ctx.progress, n, len(windows), start, 99.0)
            data, valid = raster.read(row, col, h, w)  # (D, h, w)
            sims = unit_rows(data.reshape(raster.dim, -1).T) @ queries.T  # (h*w, R)
            sim = sims.max(axis=1).reshape(1, h, w)
            writer.write(row, col, sim, valid)
            if valid.any():
                v = sim[0][valid]
                low, high = min(low, float(v.min())), max(high, float(v.max()))
                total, count = total + float(v.sum()), count + v.size
        check_progress(ctx.progress, 1, 1, 99.0, 99.0)
        paths = ctx.commit()
    finally:
        req.close()
    return {"outputs": paths, "metrics": {
        "references": len(refs), "reference_pixels": {str(ft.feature.id): int(len(v)) for ft, v in refs},
        "aggregate": req.params.aggregate, "valid_pixels": count,
        "similarity_min": low if count else None, "similarity_max": high if count else None,
        "similarity_mean": total / count if count else None}}  # fmt: skip
