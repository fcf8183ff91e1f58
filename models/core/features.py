"""Reference and label features as a job carries them: GeoJSON geometries in a named CRS (torch-free).

QGIS does the vector work: the QGIS side reads the layer, transforms each feature's geometry into the
CRS of the embedding raster (or of the first input) and writes into the job's params (``references``
for similarity, ``labels`` for classification)::

    {"crs": "<WKT or EPSG:n>",
     "features": [{"id": <feature id>, "geometry": <GeoJSON geometry>, "class": <value>}, ...]}

The worker burns each feature onto the token grid (models/worker/tasks/embedding_source.py). The
rules are written once, here: geometry types and coordinates, which features lie outside a raster,
the class table of labelled features (values, names, colours), at least two classes, enough features
for the folds. Errors are ``ConfigError`` with the job field (``params.references``,
``params.labels``, ``params.labels.class`` for class problems, ``params.folds``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .modalities import ClassInfo
from .styles import qualitative_palette

GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")
MAX_CLASS_VALUE = 254  # uint8 class rasters; 255 is nodata
Label = str | int


@dataclass(frozen=True)
class Feature:
    """One reference or labelled feature: its id (the layer's feature id), geometry and class."""

    id: int | str
    geometry: dict[str, Any]
    label: Label | None = None

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        xs, ys = zip(*_points(self.geometry["coordinates"]))
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class FeatureSet:
    """The features of one job parameter, in the CRS ``crs`` (WKT or an authority string)."""

    crs: str
    features: tuple[Feature, ...]

    @classmethod
    def from_params(cls, value: Any, field: str, *, labelled: bool) -> FeatureSet:
        """Read and check ``params[field]`` (``labelled``: every feature needs a class)."""
        if not isinstance(value, Mapping) or not isinstance(value.get("features"), list):
            raise ConfigError('must be {"crs": ..., "features": [{"id": ..., "geometry": {...}}, ...]}', field=field)
        crs = value.get("crs")
        if not isinstance(crs, str) or not crs:
            raise ConfigError("needs the CRS of its coordinates ('crs': WKT or e.g. 'EPSG:32632')", field=field)
        features = tuple(_feature(f, i, field, labelled) for i, f in enumerate(value["features"]))
        if not features:
            raise ConfigError("has no features; give at least one point or polygon", field=field)
        ids = [f.id for f in features]
        twice = sorted({str(i) for i in ids if ids.count(i) > 1})
        if twice:
            raise ConfigError(f"feature id(s) {', '.join(twice)} appear more than once", field=field)
        return cls(crs, features)

    def as_params(self) -> dict[str, Any]:
        return {"crs": self.crs, "features": [{"id": f.id, "geometry": f.geometry, "class": f.label}
                                              for f in self.features]}  # fmt: skip

    def outside(self, bounds: tuple[float, float, float, float]) -> list[int | str]:
        """Ids of the features whose bounding box does not meet ``bounds`` (left, bottom, right, top)."""
        left, bottom, right, top = bounds
        return [f.id for f in self.features
                if (b := f.bbox)[2] < left or b[0] > right or b[3] < bottom or b[1] > top]  # fmt: skip

    def require_inside(self, bounds: tuple[float, float, float, float], field: str, what: str) -> None:
        """Every feature must meet ``bounds`` (of ``what``, in this set's CRS)."""
        out = self.outside(bounds)
        if out:
            shown = ", ".join(str(i) for i in out[:10]) + (f" and {len(out) - 10} more" if len(out) > 10 else "")
            verb = "lies" if len(out) == 1 else "lie"
            raise ConfigError(f"{_plural(len(out), 'feature')} ({shown}) of {len(self.features)} {verb} outside {what} "
                              f"(bounds {[round(v, 3) for v in bounds]}); move them inside or remove them",
                              field=field)  # fmt: skip

    @property
    def labels(self) -> list[Label]:
        return [f.label for f in self.features if f.label is not None]


def class_table(labels: Sequence[Label]) -> tuple[ClassInfo, ...]:
    """The classes of ``labels``: sorted distinct values; raster value = the value itself when every
    value is a whole number 0..254, else 0, 1, ... in sorted order; names = the values as text;
    colours from the qualitative palette."""
    distinct = sorted(set(labels), key=lambda v: (isinstance(v, str), v))
    as_codes = all(isinstance(v, int) and 0 <= v <= MAX_CLASS_VALUE for v in distinct)
    if not as_codes and len(distinct) > MAX_CLASS_VALUE + 1:
        raise ConfigError(f"has {len(distinct)} classes; class rasters hold at most {MAX_CLASS_VALUE + 1}",
                          field="params.labels.class")  # fmt: skip
    names = [str(v) for v in distinct]
    if len(set(names)) < len(names):
        clash = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"mixes numbers and text for the class(es) {', '.join(clash)}; use one type for the class field",
                          field="params.labels.class")  # fmt: skip
    colours = qualitative_palette(len(distinct))
    return tuple(ClassInfo(int(v) if as_codes else i, names[i], colours[i]) for i, v in enumerate(distinct))


def require_two_classes(features: FeatureSet) -> None:
    distinct = sorted({str(v) for v in features.labels})
    if len(distinct) < 2:
        raise ConfigError(f"has one class ('{distinct[0]}') among the {len(features.features)} labelled features; "
                          "label features of at least two classes", field="params.labels.class")  # fmt: skip


def require_folds(features: FeatureSet, folds: int) -> None:
    """Cross-validation splits features (never the pixels of one feature) into ``folds`` folds."""
    n = len(features.features)
    if n < folds:
        raise ConfigError(f"is {folds}, but there are only {_plural(n, 'labelled feature')}; cross-validation needs at "
                          f"least as many labelled features as folds: label more features or lower the folds",
                          field="params.folds")  # fmt: skip


def _feature(d: Any, index: int, field: str, labelled: bool) -> Feature:
    where = f"feature {index + 1}"
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where} must be an object with 'id' and 'geometry'", field=field)
    fid = d.get("id", index + 1)
    if isinstance(fid, bool) or not isinstance(fid, (int, str)):
        raise ConfigError(f"{where}: id must be a number or text, got {fid!r}", field=field)
    where = f"feature {fid}"
    geometry = d.get("geometry")
    if not isinstance(geometry, Mapping) or geometry.get("type") not in GEOMETRY_TYPES:
        kind = geometry.get("type") if isinstance(geometry, Mapping) else geometry
        raise ConfigError(f"{where}: geometry must be one of {', '.join(GEOMETRY_TYPES)}, got {kind!r}", field=field)
    coords = geometry.get("coordinates")
    try:
        points = list(_points(coords))
    except (TypeError, ValueError):
        points = []
    if not points or not all(math.isfinite(c) for p in points for c in p):
        raise ConfigError(f"{where}: its {geometry['type']} has no valid coordinates", field=field)
    label = _label(d.get("class"), where, field) if labelled else None
    return Feature(fid, {"type": geometry["type"], "coordinates": coords}, label)


def _label(value: Any, where: str, field: str) -> Label:
    if value is None or value == "":
        raise ConfigError(f"{where} has no class; give every labelled feature a class (or leave it out)",
                          field=f"{field}.class")  # fmt: skip
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: its class must be a number or text, got {value!r}", field=f"{field}.class")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: its class is {value!r}", field=f"{field}.class")
        return int(value) if value == int(value) else str(value)
    return value


def _points(coords: Any) -> Iterator[tuple[float, float]]:
    """Every (x, y) of nested GeoJSON coordinates."""
    if isinstance(coords, (list, tuple)) and coords and all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                                            for c in coords):  # fmt: skip
        if len(coords) < 2:
            raise ValueError("a position needs x and y")
        yield float(coords[0]), float(coords[1])
        return
    if not isinstance(coords, (list, tuple)):
        raise TypeError("coordinates must be nested lists")
    for c in coords:
        yield from _points(c)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"
