"""Checks shared by the algorithms' ``plan`` methods (no side effects; errors name the parameter)."""

from __future__ import annotations

import os

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingUtils,
    QgsRectangle,
)

from ..models.core.errors import ConfigError, InputRasterError
from ..models.core.outputs import check_output_path
from .layers import LayerInput
from .parameters import EXTENT


def read_extent(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext,
                inputs: list[LayerInput]) -> QgsRectangle | None:
    """EXTENT in the CRS of the first input (None: the whole first input); every input must overlap it."""
    first = inputs[0]
    crs = first.layer.crs()
    area = alg.parameterAsExtent(parameters, EXTENT, context, crs)
    if area.isNull():
        area = None  # not given: the whole first input
    elif area.isEmpty():
        raise ConfigError("EXTENT is empty; give an area with a width and a height, or leave it empty")
    elif not area.intersects(first.layer.extent()):
        raise InputRasterError(f"EXTENT does not overlap {first.label}; choose an area inside it")
    work = QgsRectangle(first.layer.extent()) if area is None else area.intersect(first.layer.extent())
    for item in inputs[1:]:
        transform = QgsCoordinateTransform(item.layer.crs(), crs, context.transformContext())
        try:
            overlaps = transform.transformBoundingBox(item.layer.extent()).intersects(work)
        except QgsCsException:  # e.g. far outside the first input's UTM zone
            overlaps = False
        if not overlaps:
            what = f"the extent of {first.label}{' within EXTENT' if area is not None else ''}"
            raise InputRasterError(f"{item.label} does not overlap the area to process ({what}): "
                                   f"{_both_bounds(item, item.layer.extent(), what, work, crs, context)}")  # fmt: skip
    return area


def _both_bounds(item: LayerInput, extent: QgsRectangle, what: str, work: QgsRectangle, crs,
                 context: QgsProcessingContext) -> str:  # fmt: skip
    """Both rectangles in one CRS (longitude/latitude, where both can be expressed in it) for a message."""
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    try:
        mine = QgsCoordinateTransform(item.layer.crs(), wgs84, context.transformContext()).transformBoundingBox(extent)
        area = QgsCoordinateTransform(crs, wgs84, context.transformContext()).transformBoundingBox(work)
        target, digits = "EPSG:4326", 6
    except QgsCsException:
        mine, area, target, digits = None, work, crs.authid() or crs.description(), 1
    box = lambda r: [round(v, digits) for v in (r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum())]  # noqa: E731
    covers = f"{item.label} covers {box(mine)}, " if mine is not None else ""
    return f"{covers}{what} {box(area)} (left, bottom, right, top in {target})"


def destination(alg: QgsProcessingAlgorithm, parameters: dict, key: str, context: QgsProcessingContext, *,
                fallback_name: str | None = None) -> str:
    """The file path of raster destination ``key`` ('' if skipped and no ``fallback_name``)."""
    path = alg.parameterAsOutputLayer(parameters, key, context)
    if not path:
        return QgsProcessingUtils.generateTempFilename(fallback_name) if fallback_name else ""
    return check_output_path(key, path)  # the field at fault is the parameter itself


def input_file(alg: QgsProcessingAlgorithm, parameters: dict, key: str, context: QgsProcessingContext,
               suffixes: tuple[str, ...]) -> str | None:  # fmt: skip
    """The existing file parameter ``key`` (None if empty), with one of ``suffixes``."""
    path = alg.parameterAsFile(parameters, key, context) or None
    if path is None:
        return None
    if not os.path.isfile(path):
        raise ConfigError(f"'{path}' does not exist or is not a file", field=key)
    if not path.lower().endswith(suffixes):
        raise ConfigError(f"'{os.path.basename(path)}' should be one of {', '.join(suffixes)}", field=key)
    return path


def layer_name(what: str, source: str, untrained: bool) -> str:
    """Name of a result layer, marked UNTRAINED where untrained weights made it."""
    return f"{what} ({source})" + (" UNTRAINED" if untrained else "")
