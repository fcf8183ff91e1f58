"""Task ``cluster``: the region split into its natural kinds of land, by k-means on the embeddings.

Job: ``inputs.EMBEDDINGS`` (or the inputs of ``embed``, embedded first); ``params``:
models/core/embedding_params.py ``ClusterParams`` (``k``, ``seed``, ``sample_size``,
``max_iterations``); ``outputs.clusters`` (uint8 class raster with a palette) and optionally
``outputs.centres`` (.csv: one row per cluster: ``cluster``, ``pixels``, ``c1`` … ``c<D>``).

Three passes over the raster: count the valid tokens; gather a uniform random sample of
``sample_size`` of them (``numpy.random.default_rng(seed)``: the same seed, embeddings and sample
size give the same clusters); fit k-means on the sample (models/learning/kmeans.py, on unit-length
embeddings: cosine geometry; clusters numbered largest first), then give every valid token the
nearest centre. Centres are in that unit-length space.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.embedding_params import ClusterParams
from ...core.errors import ConfigError
from ...core.job import Job
from ...core.modalities import ClassInfo
from ...core.outputs import check_output_path, check_outputs_apart
from ...core.styles import qualitative_palette
from ...engine import OutputRaster, pixel_area_m2
from ...learning import unit_rows
from ...learning.kmeans import assign, fit_kmeans
from .context import RunContext
from .embedding_source import EmbeddingRaster, EmbeddingSource, check_progress, prepare_source
from .inputs import output_paths

TOKEN_BLOCK = 16


@dataclass(frozen=True)
class ClusterRequest:
    job: Job
    params: ClusterParams
    source: EmbeddingSource
    path: str
    centres: str | None

    def close(self) -> None:
        self.source.close()


def validate(job: Job, backend: str) -> ClusterRequest:
    params = ClusterParams.from_params(job.params)
    path = output_paths(job, ["clusters"])["clusters"]
    centres = job.outputs.get("centres") or None
    if centres:
        check_output_path("outputs.centres", centres, (".csv",))
        check_outputs_apart({f"layer '{s.name or k}'": s.path for k, s in job.inputs.items()},
                            {"outputs.centres": centres, "outputs.clusters": path})  # fmt: skip
    return ClusterRequest(job, params, prepare_source(job, backend, path), path, centres)


def sample(raster: EmbeddingRaster, params: ClusterParams, ctx: RunContext, start: float) -> np.ndarray:
    """A uniform random sample of the valid tokens (unit length), ``(n, D)``."""
    windows = list(raster.windows(raster.dim))
    counts = []
    for n, win in enumerate(windows):
        check_progress(ctx.progress, n, len(windows), start, start + 0.1 * (99.0 - start))
        counts.append(int(raster.read(*win)[1].sum()))  # all bands: the same validity as the gathering pass
    total = sum(counts)
    if total < params.k:
        raise ConfigError(f"is {params.k}, but the embeddings have only {total} valid pixel(s)", field="params.k")
    size = min(params.sample_size, total)
    chosen = np.sort(np.random.default_rng(params.seed).choice(total, size=size, replace=False))
    out, offset = [], 0
    for n, (win, count) in enumerate(zip(windows, counts)):
        check_progress(ctx.progress, n, len(windows), start + 0.1 * (99.0 - start), start + 0.3 * (99.0 - start))
        lo, hi = np.searchsorted(chosen, [offset, offset + count])
        if hi > lo:
            data, valid = raster.read(*win)
            x = data[:, valid].T  # (count, D), row-major over the window
            out.append(x[chosen[lo:hi] - offset])
        offset += count
    return unit_rows(np.concatenate(out))


def write_centres(path: str, centres: np.ndarray, pixels: np.ndarray) -> str:
    """The centres table as ``<path>.partial-<pid>.csv`` (renamed with the rasters); returns that file."""
    tmp = f"{path}.partial-{os.getpid()}.csv"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["cluster", "pixels", *(f"c{i + 1}" for i in range(centres.shape[1]))])
        for j, (c, n) in enumerate(zip(centres, pixels)):
            w.writerow([j, int(n), *(f"{v:.7g}" for v in c)])
    return tmp


def run(req: ClusterRequest, ctx: RunContext) -> dict[str, Any]:
    p = req.params
    table = None
    try:
        computing = req.source.raster is None
        raster = req.source.open(ctx)
        start = 80.0 if computing else 0.0
        span = 99.0 - start
        x = sample(raster, p, ctx, start)
        ctx.progress.info(f"k-means: {p.k} clusters fitted on {len(x)} of the valid embedding pixels (seed {p.seed})")
        fit = fit_kmeans(x, p.k, np.random.default_rng(p.seed), p.max_iterations,
                         lambda i, n: check_progress(ctx.progress, i, n, start + 0.3 * span, start + 0.35 * span))  # fmt: skip
        if not fit.converged:
            ctx.progress.warn(f"k-means did not converge in {p.max_iterations} iterations; the clusters may still move")
        colours = qualitative_palette(p.k)
        classes = tuple(ClassInfo(j, f"cluster {j}", colours[j]) for j in range(p.k))
        spec = OutputRaster("clusters", req.path, ("cluster",), "classes", "uint8", classes, block_size=TOKEN_BLOCK)
        writer = ctx.outputs.open(spec, raster.grid, req.job, raster.runtime_info(), ctx.device.description)
        pixels = np.zeros(p.k, np.int64)
        windows = list(raster.windows(raster.dim + p.k))
        for n, (row, col, h, w) in enumerate(windows):
            check_progress(ctx.progress, n, len(windows), start + 0.35 * span, 99.0)
            data, valid = raster.read(row, col, h, w)
            labels = assign(unit_rows(data.reshape(raster.dim, -1).T), fit.centres).reshape(h, w)
            pixels += np.bincount(labels[valid], minlength=p.k)
            writer.write(row, col, labels[None].astype(np.float32), valid)
        check_progress(ctx.progress, 1, 1, 99.0, 99.0)
        if req.centres:
            table = write_centres(req.centres, fit.centres, pixels)
        paths = ctx.commit()
        if req.centres and table:
            os.replace(table, req.centres)
            paths["centres"] = req.centres
    finally:
        if table and os.path.exists(table):
            os.remove(table)
        req.close()
    area = pixel_area_m2(raster.grid)
    return {"outputs": paths, "metrics": {
        "k": p.k, "sample": int(len(x)), "iterations": fit.iterations, "converged": fit.converged,
        "inertia": fit.inertia, "cluster_pixels": {c.name: int(n) for c, n in zip(classes, pixels)},
        "cluster_area_m2": {c.name: float(n) * area for c, n in zip(classes, pixels)} if area is not None else None,
        "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in classes]}}  # fmt: skip
