"""Task ``prepare_training_data``: input rasters + labels → a fine-tuning dataset folder (TerraTorch layout).

Job: ``inputs`` = one raster per modality (with ``bands``; the first input's grid, cut to ``extent``,
is the dataset's grid, on TerraMind's 10 m working grid as every task); ``params``
(models/core/training_params.py ``PrepareParams``): ``labels`` (features with a class, in
``labels.crs`` = the first input's CRS; QGIS writes them) or ``label_raster`` (a class raster, read
onto the grid with nearest neighbour), ``classes`` (label values → classes), ``buffer`` (points and
lines), ``chip_size``, ``stride``, ``block_size``, ``fractions``, ``seed``, ``bands`` (band names of
inputs that hold a subset), ``overwrite``; ``outputs.dataset`` = the folder to write.

Labels are rasterized onto the grid (``rasterio.features.rasterize``; polygons burn the pixels whose
centre they hold, points and lines the pixels they touch, or, with ``buffer``, a polygon that far
around them). A pixel two features of different classes cover, a pixel of no class and a pixel where
an input has no data are unlabelled: ``ignore_index`` -1. Chips (``split.chip_windows``, edges
covered) without a labelled pixel are skipped; the others are split by spatial blocks and written by
``models/training/dataset.py`` into ``<folder>.partial-<pid>``, renamed when complete.

Result ``metrics``: ``classes``, ``chips`` and ``class_pixels`` per split (class name → pixels),
``ignored_pixels`` per split, ``skipped_chips``, ``grid``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...core.errors import CancelledError, ConfigError
from ...core.features import Feature, FeatureSet
from ...core.job import Job
from ...core.modalities import ClassInfo, get_modality
from ...core.progress import check_cancelled
from ...core.training_params import PrepareParams, check_class_values, check_dataset_folder, resolve_classes
from ...engine import InputRaster, WorkingGrid
from ...engine.reader import open_raster
from .context import RunContext
from .inputs import canonical_job, report_grid, working_grid
from .outputs import plugin_version

LABELS = "params.labels"
LABEL_RASTER = "params.label_raster"
CIRCLE_VERTICES = 32


@dataclass
class PrepareRequest:
    job: Job
    params: PrepareParams
    folder: str
    grid: WorkingGrid
    inputs: list[InputRaster]

    def close(self) -> None:
        for inp in self.inputs:
            inp.close()


def validate(job: Job, backend: str) -> PrepareRequest:
    job = canonical_job(job, outputs=False)
    params = PrepareParams.from_params(job.params)
    counts = {m: len(s.bands) if s.bands else _band_count(s.path, s.name or m) for m, s in job.inputs.items()}
    params.check(list(job.inputs), counts)
    folder = job.outputs.get("dataset") or ""
    check_dataset_folder(folder, params.overwrite)
    real = os.path.realpath(folder)
    for key, spec in job.inputs.items():
        if os.path.realpath(spec.path).startswith(real + os.sep):
            raise ConfigError(f"the input '{spec.name or key}' lies inside the dataset folder, which is written anew",
                              field="outputs.dataset")  # fmt: skip
    keys = list(job.inputs)
    grid = working_grid(job, keys)
    opened: list[InputRaster] = []
    try:
        for key in keys:
            names = params.band_names(key)
            modality = get_modality(key).with_bands(names)
            opened.append(InputRaster(key, job.inputs[key], modality, grid))
        if params.label_raster is not None and not os.path.isfile(params.label_raster.path):
            raise ConfigError(f"'{params.label_raster.path}' does not exist", field=LABEL_RASTER)
    except BaseException:
        for inp in opened:
            inp.close()
        raise
    return PrepareRequest(job, params, folder, grid, opened)


def _band_count(path: str, name: str) -> int:
    with open_raster(path, f"layer '{name}'") as src:
        return src.count


# ----------------------------------------------------------------------------- labels on the grid
def _circle(x: float, y: float, r: float) -> list[list[float]]:
    ring = [[x + r * math.cos(2 * math.pi * i / CIRCLE_VERTICES), y + r * math.sin(2 * math.pi * i / CIRCLE_VERTICES)]
            for i in range(CIRCLE_VERTICES)]  # fmt: skip
    return ring + [ring[0]]


def _segment(a: list[float], b: list[float], r: float) -> list[list[float]] | None:
    dx, dy = b[0] - a[0], b[1] - a[1]
    n = math.hypot(dx, dy)
    if n == 0:
        return None
    ox, oy = -dy / n * r, dx / n * r
    ring = [[a[0] + ox, a[1] + oy], [b[0] + ox, b[1] + oy], [b[0] - ox, b[1] - oy], [a[0] - ox, a[1] - oy]]
    return ring + [ring[0]]


def buffered(geometry: dict[str, Any], distance: float) -> list[dict[str, Any]]:
    """Point and line geometries as polygons ``distance`` around them (circles at the vertices, a band along
    each segment: their union is the buffer); polygons unchanged."""
    kind, coords = geometry["type"], geometry["coordinates"]
    if distance <= 0 or kind in ("Polygon", "MultiPolygon"):
        return [geometry]
    points = [coords] if kind == "Point" else coords if kind in ("MultiPoint", "LineString") else [p for line in coords
                                                                                                    for p in line]  # fmt: skip
    shapes = [{"type": "Polygon", "coordinates": [_circle(p[0], p[1], distance)]} for p in points]
    lines = [coords] if kind == "LineString" else coords if kind == "MultiLineString" else []
    for line in lines:
        for a, b in zip(line[:-1], line[1:]):
            ring = _segment(a, b, distance)
            if ring is not None:
                shapes.append({"type": "Polygon", "coordinates": [ring]})
    return shapes


def feature_labels(features: tuple[Feature, ...], grid: WorkingGrid, class_of: dict[str, int], other: int | None,
                   buffer: float) -> np.ndarray:  # fmt: skip
    """The class of every grid pixel (-1: no class, or two classes)."""
    from rasterio.features import rasterize

    shape = (grid.height, grid.width)
    by_class: dict[int, list[dict[str, Any]]] = {}
    for f in features:
        k = class_of.get(str(f.label), other)
        if k is None:
            continue
        by_class.setdefault(k, []).extend(buffered(f.geometry, buffer))
    labels = np.full(shape, -1, np.int16)
    count = np.zeros(shape, np.uint8)
    for k, shapes in sorted(by_class.items()):
        polygons = [s for s in shapes if s["type"] in ("Polygon", "MultiPolygon")]
        others = [s for s in shapes if s["type"] not in ("Polygon", "MultiPolygon")]
        mask = np.zeros(shape, np.uint8)
        if polygons:
            mask |= rasterize(((s, 1) for s in polygons), out_shape=shape, transform=grid.transform, fill=0, dtype="uint8")
        if others:
            mask |= rasterize(((s, 1) for s in others), out_shape=shape, transform=grid.transform, fill=0, dtype="uint8",
                              all_touched=True)  # fmt: skip
        hit = mask > 0
        labels[hit] = k
        count[hit] = np.minimum(count[hit] + 1, 2)
    labels[count > 1] = -1  # covered by features of two classes: no label
    return labels


def raster_values(path: str, band: int, nodata: float | None, grid: WorkingGrid, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The class raster on the grid (nearest neighbour): values ``(H, W)`` float64 and valid ``(H, W)``."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import transform_bounds

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise ConfigError(f"cannot open the class raster '{path}': {e}", field=LABEL_RASTER) from None
    with src:
        if not 1 <= band <= src.count:
            raise ConfigError(f"layer '{name}' has no band {band} (it has {src.count})", field=LABEL_RASTER)
        if src.crs is None:
            raise ConfigError(f"layer '{name}' has no coordinate reference system; assign one first", field=LABEL_RASTER)
        left, bottom, right, top = transform_bounds(src.crs, grid.crs, *src.bounds, densify_pts=21)
        gl, gb, gr, gt = grid.bounds
        if right <= gl or left >= gr or top <= gb or bottom >= gt:
            raise ConfigError(f"the class raster '{name}' lies outside every input (it does not overlap the first input's "
                              "area, within the extent when one is given)", field=LABEL_RASTER)  # fmt: skip
        if np.dtype(src.dtypes[band - 1]).kind == "c":
            raise ConfigError(f"layer '{name}' has complex values; give a class raster", field=LABEL_RASTER)
        nd = nodata if nodata is not None else src.nodata
        extra = {"src_nodata": nd, "nodata": nd} if nd is not None else {}
        with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=Resampling.nearest, add_alpha=True, **extra) as vrt:  # fmt: skip
            data = vrt.read(band).astype(np.float64)
            valid = vrt.read(vrt.count) > 0
    valid &= np.isfinite(data)
    if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
        valid &= data != nd
    return data, valid


def raster_labels(data: np.ndarray, valid: np.ndarray, class_of: dict[str, int], other: int | None) -> np.ndarray:
    labels = np.full(data.shape, -1, np.int16)
    values = np.unique(data[valid])
    for v in values:
        k = class_of.get(str(int(v)), other)
        if k is not None:
            labels[valid & (data == v)] = k
    return labels


def in_grid_crs(labels: FeatureSet, grid: WorkingGrid) -> tuple[Feature, ...]:
    """The features in the grid's CRS (the grid is TerraMind's 10 m grid: UTM for a geographic first input)."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform_geom

    try:
        crs = CRS.from_user_input(labels.crs)
    except CRSError as e:
        raise ConfigError(f"its CRS '{labels.crs[:60]}' is not understood ({e})", field=LABELS) from None
    if crs == grid.crs:
        return labels.features
    return tuple(replace(f, geometry=dict(transform_geom(crs, grid.crs, f.geometry))) for f in labels.features)


# ----------------------------------------------------------------------------- the run
def _labels(req: PrepareRequest, ctx: RunContext) -> tuple[np.ndarray, tuple[ClassInfo, ...]]:
    p, grid = req.params, req.grid
    if p.labels is not None:
        features = in_grid_crs(p.labels, grid)
        left, bottom, right, top = grid.bounds
        outside = FeatureSet(p.labels.crs, features).outside(grid.bounds)
        if len(outside) == len(features):
            raise ConfigError(f"none of the {len(features)} labelled features lies inside the inputs' area "
                              f"(bounds {[round(v, 3) for v in (left, bottom, right, top)]}); the labels lie outside "
                              "every input, or outside the extent", field=LABELS)  # fmt: skip
        if outside:
            ctx.progress.warn(f"{len(outside)} of {len(features)} labelled features lie outside the inputs' area and are "
                              "not used")  # fmt: skip
        outside_ids = set(outside)
        inside = tuple(f for f in features if f.id not in outside_ids)
        present = [f.label for f in inside if f.label is not None]
        classes, class_of, other = resolve_classes(p.classes, present)
        labels = feature_labels(inside, grid, class_of, other, p.buffer)
        if not (labels >= 0).any():
            raise ConfigError(f"the {len(inside)} features inside the area burn no pixel of a class (check the class "
                              "field and the classes)", field=LABELS)  # fmt: skip
        return labels, classes
    r = p.label_raster
    assert r is not None
    name = r.name or os.path.basename(r.path)
    data, valid = raster_values(r.path, r.band, r.nodata, grid, name)
    if not valid.any():
        raise ConfigError(f"the class raster '{name}' has no valid pixel inside the inputs' area", field=LABEL_RASTER)
    distinct = np.unique(data[valid])
    check_class_values([float(v) for v in distinct], LABEL_RASTER)
    classes, class_of, other = resolve_classes(p.classes, [int(v) for v in distinct])
    return raster_labels(data, valid, class_of, other), classes


def run(req: PrepareRequest, ctx: RunContext) -> dict[str, Any]:
    from ...training.dataset import DatasetWriter, GridInfo
    from ...training.split import chip_windows, spatial_block_split

    p, grid, progress = req.params, req.grid, ctx.progress
    try:
        from ...engine import InputStack

        report_grid(progress, grid, InputStack(req.inputs, grid))
        labels, classes = _labels(req, ctx)
        present = np.bincount(labels[labels >= 0].astype(np.int64), minlength=len(classes))
        if int((present > 0).sum()) < 2:
            only = [c.name for c, n in zip(classes, present) if n > 0]
            raise ConfigError(f"the labels hold a single class ({', '.join(only)}) in the inputs' area; a segmentation "
                              "model needs labelled pixels of at least two classes (label another class, or add a '*' "
                              "class for every other value)", field=LABELS if p.labels else LABEL_RASTER)  # fmt: skip
        windows = chip_windows(grid.height, grid.width, p.chip_size, stride=p.effective_stride, grid="g0", cover_edges=True)
        labelled = [w for w in windows if (labels[w.row : w.row + w.size, w.col : w.col + w.size] >= 0).any()]
        if not labelled:
            raise ConfigError("no chip holds a labelled pixel", field=LABELS if p.labels else LABEL_RASTER)
        splits = spatial_block_split(labelled, p.effective_block_size, p.fractions, p.seed)
        progress.info(f"{len(labelled)} chips of {p.chip_size} px with labels ({len(windows) - len(labelled)} without are "
                      f"skipped); split by spatial blocks of {p.effective_block_size} px, seed {p.seed}")  # fmt: skip
        first = next(iter(req.job.inputs.values()))
        info = GridInfo(grid.crs.to_wkt(), tuple(grid.transform)[:6], grid.width, grid.height, first.path)
        provenance = {
            "inputs": {k: {"path": s.path, "bands": list(s.bands) if s.bands else None, "name": s.name}
                       for k, s in req.job.inputs.items()},
            "labels": "features" if p.labels else {"raster": p.label_raster.as_dict()} if p.label_raster else None,
            "features": len(p.labels.features) if p.labels else None,
            "params": {k: v for k, v in p.as_params().items() if k not in ("labels",)},
            "extent": list(req.job.extent) if req.job.extent else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "plugin_version": plugin_version(),
        }  # fmt: skip
        writer = DatasetWriter(req.folder, modalities={k: p.band_names(k) for k in req.job.inputs}, classes=classes,
                               chip_size=p.chip_size, grids={"g0": info}, nodata=None,
                               split_method={"method": "spatial_blocks", "block_size": p.effective_block_size,
                                             "fractions": list(p.fractions), "seed": p.seed},
                               provenance=provenance, overwrite=p.overwrite)  # fmt: skip
        with writer:
            for n, (w, split) in enumerate(zip(labelled, splits)):
                check_cancelled(progress)
                images, lab = {}, labels[w.row : w.row + w.size, w.col : w.col + w.size].copy()
                for inp in req.inputs:
                    data, ok = inp.read_elements(w.row, w.col, w.size, w.size)
                    data[~ok] = np.nan
                    images[inp.key] = data
                    lab[~ok.any(axis=0)] = -1  # no data at all in an input: no label there
                writer.add(w, split, images, lab)
                progress.set_progress(95.0 * (n + 1) / len(labelled))
            check_cancelled(progress)
            ctx.on_commit()
            ds = writer.commit()
    except CancelledError:
        raise CancelledError("cancelled: no dataset was written (the partial folder was removed)") from None
    finally:
        req.close()
    progress.set_progress(100.0)
    per_split = {s: {c.name: int(n) for c, n in zip(ds.classes, ds.splits[s].class_pixels)} for s in ds.splits}
    for s, counts in per_split.items():
        progress.info(f"{s}: {ds.splits[s].chips} chips; " + ", ".join(f"{k} {v} px" for k, v in counts.items()))
    metrics = {
        "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in ds.classes],
        "chips": {s: ds.splits[s].chips for s in ds.splits},
        "class_pixels": per_split,
        "ignored_pixels": {s: ds.splits[s].ignored_pixels for s in ds.splits},
        "skipped_chips": len(windows) - len(labelled),
        "chip_size": p.chip_size,
        "grid": {"width": grid.width, "height": grid.height, "crs": grid.crs.to_string()},
    }
    return {"outputs": {"dataset": req.folder}, "metrics": metrics}
