"""The embedding raster that ``similarity``, ``cluster`` and ``classify`` read, and features on its grid.

``prepare_source(job, backend, first_output)`` (validation, nothing loaded): the job's
``inputs.EMBEDDINGS`` is opened and checked (``EmbeddingRaster``: the ``TERRAMIND_EMBEDDING`` tag,
its band count and size), or, when the job gives modality inputs instead, the ``embed`` task is
validated on them with the job's model and params, to write the embeddings into a scratch file
next to the first output (``<output>.partial-embed-<pid>.tif``: found by ``job.partial_glob``, removed
when the task ends). ``EmbeddingSource.open`` returns the raster, making it first if needed.

``EmbeddingRaster`` reads windows of whole 16-token blocks (``windows``: sized to a float budget, so
memory does not grow with the raster), the validity of a window (nodata or non-finite in any band:
invalid), and scattered tokens (``gather``). ``feature_tokens`` burns each reference or labelled
feature onto the token grid (rasterio; geometries come as JSON from the QGIS side, which did the
vector work): polygons take the tokens whose centre they contain, or, when that is none, every
token they touch; points the token they lie in; lines every token they touch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...core.embeddings import INPUT_KEY, TAG, EmbeddingInfo
from ...core.errors import ConfigError, InputRasterError
from ...core.features import Feature, FeatureSet
from ...core.job import Job
from ...core.progress import Progress, ScaledProgress, check_cancelled
from ...engine import WorkingGrid
from ...engine.reader import open_raster, read_window
from ...runtime.info import RuntimeInfo
from .context import RunContext
from .outputs import OutputSet

FIELD = f"inputs.{INPUT_KEY}"
BLOCK = 16  # tokens: window sides are multiples of it (the embedding raster's GeoTIFF block)
FLOAT_BUDGET = 8 * 2**20  # floats held by one window (32 MB as float32)


class EmbeddingRaster:
    """An embedding raster, open for windowed reading (see the module docstring)."""

    def __init__(self, path: str, name: str = "", nodata: float | None = None, field_name: str = FIELD) -> None:

        self.path, self.field = path, field_name
        self.what = f"layer '{name or os.path.basename(path)}'"
        self._src = src = open_raster(path, self.what)
        try:
            tags = src.tags()
            self.info = EmbeddingInfo.from_tags(tags, self.what, field_name)
            if src.count != self.info.dim or (src.width, src.height) != tuple(self.info.token_grid):
                raise ConfigError(f"{self.what} has {src.count} bands of {src.width} x {src.height} pixels, but its "
                                  f"{TAG} tag says {self.info.dim} bands of "
                                  f"{self.info.token_grid[0]} x {self.info.token_grid[1]}; it was changed after it was "
                                  "made: use the file 'Extract embeddings' wrote", field=field_name)  # fmt: skip
            if src.crs is None:
                raise InputRasterError(f"{self.what} has no coordinate reference system")
        except BaseException:
            src.close()
            raise
        self.tags = tags
        self.nodata = nodata if nodata is not None else src.nodata
        self.grid = WorkingGrid(src.crs, src.transform, src.width, src.height)

    @property
    def dim(self) -> int:
        return self.info.dim

    def runtime_info(self) -> RuntimeInfo:
        """What the outputs made from these embeddings say about the model (its tags, passed on)."""
        try:
            sources = json.loads(self.tags.get("TERRAMIND_WEIGHTS_SOURCE", "{}"))
        except ValueError:
            sources = {}
        return RuntimeInfo(self.info.model_id, self.tags.get("TERRAMIND_MODEL_REVISION", "n/a"), sources,
                           self.info.untrained, {"TERRAMIND_EMBEDDING_SOURCE": self.info.to_tag(),
                                                 "TERRAMIND_EMBEDDING_FILE": os.path.basename(self.path)})  # fmt: skip

    def windows(self, floats_per_token: int) -> Iterator[tuple[int, int, int, int]]:
        """``(row, col, h, w)`` windows covering the raster, row-major, sides multiples of ``BLOCK`` tokens."""
        g = self.grid
        blocks = max(1, FLOAT_BUDGET // (max(1, floats_per_token) * BLOCK * BLOCK))  # 16 x 16 blocks per window
        across = -(-g.width // BLOCK)
        bw = min(across, blocks)
        bh = max(1, blocks // bw)
        for row in range(0, g.height, bh * BLOCK):
            for col in range(0, g.width, bw * BLOCK):
                yield row, col, min(bh * BLOCK, g.height - row), min(bw * BLOCK, g.width - col)

    def read(self, row: int, col: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """(data ``(D, h, w)`` float32 with invalid = 0, valid ``(h, w)``)."""
        data = read_window(self._src, ((row, row + h), (col, col + w)), self.what, out_dtype=np.float32)  # (D, h, w)
        valid = np.isfinite(data).all(axis=0)
        if self.nodata is not None and not np.isnan(self.nodata):
            valid &= (data != np.float32(self.nodata)).all(axis=0)
        data[:, ~valid] = 0.0
        return data, valid

    def gather(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``(n, D)`` and validity ``(n,)`` of the tokens at ``rows``, ``cols`` (block by block)."""
        out = np.zeros((len(rows), self.dim), np.float32)
        ok = np.zeros(len(rows), bool)
        keys = (np.asarray(rows) // BLOCK) * (self.grid.width // BLOCK + 1) + np.asarray(cols) // BLOCK
        for key in np.unique(keys):
            idx = np.flatnonzero(keys == key)
            r0, c0 = int(rows[idx[0]]) // BLOCK * BLOCK, int(cols[idx[0]]) // BLOCK * BLOCK
            h, w = min(BLOCK, self.grid.height - r0), min(BLOCK, self.grid.width - c0)
            data, valid = self.read(r0, c0, h, w)
            rr, cc = np.asarray(rows)[idx] - r0, np.asarray(cols)[idx] - c0
            out[idx] = data[:, rr, cc].T
            ok[idx] = valid[rr, cc]
        return out, ok

    def close(self) -> None:
        self._src.close()


# ----------------------------------------------------------------------------- features on the token grid
@dataclass(frozen=True)
class FeatureTokens:
    feature: Feature
    rows: np.ndarray  # absolute token rows
    cols: np.ndarray


def feature_tokens(features: FeatureSet, raster: EmbeddingRaster, field_name: str) -> list[FeatureTokens]:
    """Each feature burnt onto the raster's token grid (module docstring); features outside it are refused."""
    from rasterio.crs import CRS
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    grid = raster.grid
    try:
        crs = CRS.from_user_input(features.crs)
    except Exception:  # noqa: BLE001 - rasterio raises CRSError or others for unreadable strings
        raise ConfigError(f"its CRS {features.crs[:80]!r} is not a CRS rasterio can read", field=field_name) from None
    if crs != grid.crs:
        moved = tuple(replace(f, geometry=dict(transform_geom(crs, grid.crs, f.geometry))) for f in features.features)
        features = FeatureSet(grid.crs.to_wkt(), moved)
    features.require_inside(grid.bounds, field_name, f"the embedding raster {raster.what}")
    out, empty = [], []
    t = grid.transform
    for f in features.features:
        left, bottom, right, top = f.bbox
        c0 = max(0, int(np.floor((left - t.c) / t.a)) - 1)
        c1 = min(grid.width, int(np.ceil((right - t.c) / t.a)) + 1)
        r0 = max(0, int(np.floor((top - t.f) / t.e)) - 1)
        r1 = min(grid.height, int(np.ceil((bottom - t.f) / t.e)) + 1)
        mask = np.zeros((0, 0), np.uint8)
        if r1 > r0 and c1 > c0:
            window = grid.window_transform(r0, c0)
            mask = rasterize([(f.geometry, 1)], out_shape=(r1 - r0, c1 - c0), transform=window, fill=0, dtype="uint8")
            if not mask.any() and f.geometry["type"] in ("Polygon", "MultiPolygon"):
                mask = rasterize([(f.geometry, 1)], out_shape=(r1 - r0, c1 - c0), transform=window, fill=0,
                                 dtype="uint8", all_touched=True)  # fmt: skip
        rr, cc = np.nonzero(mask)
        if rr.size == 0:
            empty.append(f.id)
            continue
        out.append(FeatureTokens(f, rr + r0, cc + c0))
    if empty:
        raise ConfigError(f"feature(s) {', '.join(map(str, empty[:10]))} cover no pixel of the embedding raster "
                          f"{raster.what}; move them inside it", field=field_name)  # fmt: skip
    return out


def valid_feature_tokens(raster: EmbeddingRaster, burnt: list[FeatureTokens], field_name: str
                         ) -> list[tuple[FeatureTokens, np.ndarray]]:  # fmt: skip
    """The embeddings ``(n, D)`` of each feature's valid tokens; a feature on nodata only is refused."""
    out, nodata = [], []
    for ft in burnt:
        values, ok = raster.gather(ft.rows, ft.cols)
        if not ok.any():
            nodata.append(ft.feature.id)
            continue
        out.append((replace(ft, rows=ft.rows[ok], cols=ft.cols[ok]), values[ok]))
    if nodata:
        raise ConfigError(f"feature(s) {', '.join(map(str, nodata[:10]))} lie only on nodata pixels of the embedding "
                          f"raster {raster.what} (no valid input there); move them onto valid data",
                          field=field_name)  # fmt: skip
    return out


# ----------------------------------------------------------------------------- the source of a task
@dataclass
class EmbeddingSource:
    """Where a task's embeddings come from: a given raster, or the inputs (embedded into ``scratch``)."""

    raster: EmbeddingRaster | None = None
    embed: Any = None  # embed.EmbedRequest, when the embeddings are made first
    scratch: str | None = None

    def open(self, ctx: RunContext, share: tuple[float, float] = (0.0, 80.0)) -> EmbeddingRaster:
        """The embedding raster; made from the inputs first when the job gave those (progress ``share``)."""
        if self.raster is not None:
            return self.raster
        from . import embed

        sub = RunContext(ScaledProgress(ctx.progress, *share), ctx.device, ctx.backend, OutputSet())
        try:
            embed.EmbedTask(self.embed, sub).run()
        finally:
            sub.outputs.abort()  # a no-op once committed
        self.raster = EmbeddingRaster(self.scratch or "", "embeddings made from the inputs")
        return self.raster

    def close(self) -> None:
        if self.raster is not None:
            self.raster.close()
        if self.embed is not None:
            self.embed.close()
        if self.scratch:
            from ...core.styles import sidecar_path

            for p in (self.scratch, self.scratch + ".aux.xml", sidecar_path(self.scratch)):
                if os.path.exists(p):
                    os.remove(p)


def prepare_source(job: Job, backend: str, first_output: str) -> EmbeddingSource:
    """Check where the job's embeddings come from (validation: nothing is loaded or computed)."""
    if INPUT_KEY in job.inputs:
        others = [k for k in job.inputs if k != INPUT_KEY]
        if others:
            raise ConfigError(f"give either an embedding raster or the inputs to embed ({', '.join(others)}), not both",
                              field=FIELD)  # fmt: skip
        spec = job.inputs[INPUT_KEY]
        return EmbeddingSource(EmbeddingRaster(spec.path, spec.name, spec.nodata))
    if not job.inputs:
        raise ConfigError("give an embedding raster (made by 'Extract embeddings') or the input layers to embed",
                          field=FIELD)  # fmt: skip
    from . import embed

    scratch = f"{first_output}.partial-embed-{os.getpid()}.tif"
    request = embed.validate(replace(job, task="embed", outputs={"embeddings": scratch}), backend)
    return EmbeddingSource(embed=request, scratch=scratch)


def check_progress(progress: Progress, done: int, total: int, start: float, end: float) -> None:
    """Cancellation check and progress between ``start`` and ``end`` % after ``done`` of ``total`` steps."""
    check_cancelled(progress)
    progress.set_progress(start + (end - start) * done / max(1, total))
