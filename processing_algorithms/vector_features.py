"""Reference and label features for the worker: QGIS reads the vector layer, the worker gets JSON.

``read_features`` takes a feature-source parameter (any vector layer: file, memory, a model's
output; selected features only when the user ticks that), transforms every geometry into the CRS
of the raster the worker will burn it on (``target``) and returns the ``FeatureSet`` of
models/core/features.py: its rules (geometry types, ids, classes, folds) are the worker's too.
Features without a geometry, or (``class_field``) without a class, are refused by id. Geometries
are passed as GeoJSON (``QgsGeometry.asJson``), ids are the layer's feature ids.
"""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeatureRequest,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsRectangle,
)

from ..models.core.errors import ConfigError
from ..models.core.features import FeatureSet


def read_features(alg: QgsProcessingAlgorithm, parameters: dict, key: str, context: QgsProcessingContext,
                  target: QgsCoordinateReferenceSystem, *, field: str, class_field: str | None = None) -> FeatureSet:  # fmt: skip
    """The features of parameter ``key`` in ``target``'s CRS (``field``: their job field)."""
    source = alg.parameterAsSource(parameters, key, context)
    if source is None:
        raise ConfigError("no vector layer given", field=field)
    index = source.fields().lookupField(class_field) if class_field else -1
    if class_field and index < 0:
        raise ConfigError(f"the layer has no field '{class_field}'", field=f"{field}.class")
    transform = QgsCoordinateTransform(source.sourceCrs(), target, context.transformContext())
    out: list[dict[str, Any]] = []
    no_geometry, no_class, not_here = [], [], []
    for feature in source.getFeatures(QgsFeatureRequest()):
        geometry = feature.geometry()
        if geometry is None or geometry.isNull() or geometry.isEmpty():
            no_geometry.append(feature.id())
            continue
        try:
            geometry.transform(transform)
        except QgsCsException:
            not_here.append(feature.id())
            continue
        label = None
        if class_field:
            value = feature.attribute(index)
            label = None if value is None or str(value) == "NULL" or (isinstance(value, str) and not value.strip()) else value
            if label is None:
                no_class.append(feature.id())
                continue
            label = label if isinstance(label, (int, float, str)) and not isinstance(label, bool) else str(label)
        out.append({"id": int(feature.id()), "geometry": json.loads(geometry.asJson()), "class": label})
    for ids, what, where in ((no_geometry, "have no geometry", field), (not_here, "cannot be expressed in the raster's CRS",
                             field), (no_class, f"have no class in '{class_field}' (NULL)", f"{field}.class")):  # fmt: skip
        if ids:
            raise ConfigError(f"feature(s) {', '.join(map(str, ids[:10]))} {what}; fix or deselect them", field=where)
    crs = target.authid() if target.authid().upper().startswith("EPSG:") else target.toWkt()
    return FeatureSet.from_params({"crs": crs, "features": out}, field, labelled=bool(class_field))


def extent_bounds(extent: QgsRectangle) -> tuple[float, float, float, float]:
    return extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()
