"""Input layers: checks before a run, and the file the worker reads for each layer.

``check_input`` raises ``InputRasterError`` naming the layer and its parameter for: an invalid
layer, a VRT whose local source files are missing (never exported as if they were data), no CRS,
an empty extent, a band count that does not match the modality (after the band mapping), band
numbers out of range, and data types the models cannot read (complex).

Rendered colour layers (WMS and XYZ tiles: one ARGB band) are red, green and blue for the models,
so they serve as S2RGB only; they are exported as RGBA GeoTIFFs whose alpha marks nodata.

The worker gets a GDAL-readable file for each layer: local files read by QGIS' GDAL provider are
passed by path (``local_file``); anything else (WMS/XYZ tiles, VRT, memory or virtual rasters, subdatasets,
remote ``/vsi`` sources) is first written to a temporary GeoTIFF by QGIS (``export_layer``), limited
to the area of interest, on the layer's own grid (or a 10 m grid for providers without one, e.g. WMS).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from qgis.core import (
    Qgis,
    QgsCoordinateTransform,
    QgsCsException,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProviderRegistry,
    QgsRasterBlockFeedback,
    QgsRasterDataProvider,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
)
from qgis.PyQt.QtCore import Qt

from ..models.core.errors import CancelledError, InputRasterError
from ..models.core.modalities import Modality
from ..models.core.sources import missing_sources_message, missing_vrt_sources

READABLE_TYPES = {
    Qgis.DataType.Byte, Qgis.DataType.UInt16, Qgis.DataType.Int16, Qgis.DataType.UInt32,
    Qgis.DataType.Int32, Qgis.DataType.Float32, Qgis.DataType.Float64,
}  # fmt: skip
_TYPE_NAMES = ("unknown", "Byte", "UInt16", "Int16", "UInt32", "Int32", "Float32", "Float64", "CInt16", "CInt32",
               "CFloat32", "CFloat64", "ARGB32", "ARGB32_Premultiplied")  # Qgis.DataType order
MAX_EXPORT_PIXELS = 20000 * 20000
FALLBACK_RESOLUTION_M = 10.0  # TerraMind's native ground sampling distance
RENDERED_TYPES = {Qgis.DataType.ARGB32, Qgis.DataType.ARGB32_Premultiplied}
RENDERED_MODALITY = "S2RGB"  # the one modality whose bands are display colours
RENDERED_BANDS = (1, 2, 3)  # red, green, blue of the exported RGBA file (band 4: alpha)


@dataclass(frozen=True)
class LayerInput:
    """One checked input: the layer, the parameter it came from, its modality and band mapping."""

    param: str
    modality: Modality
    layer: QgsRasterLayer
    bands: tuple[int, ...] | None  # 1-based, in the modality's band order; None: as they are

    @property
    def label(self) -> str:
        return f"layer '{self.layer.name()}' ({self.param})"

    @property
    def rendered(self) -> bool:
        return is_rendered(self.layer)


def is_rendered(layer: QgsRasterLayer) -> bool:
    """True for a layer of rendered colours (WMS, XYZ tiles), read as red, green and blue."""
    return layer.bandCount() == 1 and layer.dataProvider().dataType(1) in RENDERED_TYPES


def band_count(layer: QgsRasterLayer) -> int:
    """The bands the models can see in ``layer``: 3 (red, green, blue) for rendered colours."""
    return len(RENDERED_BANDS) if is_rendered(layer) else layer.bandCount()


def check_input(param: str, layer: QgsRasterLayer | None, modality: Modality,
                bands: tuple[int, ...] | None = None, *, mapping_param: str | None = None) -> LayerInput:
    """Check ``layer`` as input ``modality`` (``mapping_param``: the band-mapping parameter, if any)."""
    if layer is None:
        raise InputRasterError(f"{param}: no raster layer given")
    label = f"layer '{layer.name()}' ({param})"
    if not layer.isValid():
        raise InputRasterError(f"{label} is not a valid raster layer (source '{layer.source()}')")
    if not layer.crs().isValid():
        raise InputRasterError(f"{label} has no coordinate reference system; assign one in the layer properties")
    path = source_path(layer)
    missing = missing_vrt_sources(path) if path else []
    if missing:  # QGIS would export the missing part as ordinary pixel values
        raise InputRasterError(missing_sources_message(label, path, missing))
    provider = layer.dataProvider()
    gridded = bool(provider.capabilities() & QgsRasterDataProvider.Capability.Size)  # web services have no grid
    if layer.extent().isEmpty() or (gridded and (layer.width() == 0 or layer.height() == 0)):
        raise InputRasterError(f"{label} has an empty extent")
    rendered = is_rendered(layer)
    if rendered and modality.name != RENDERED_MODALITY:
        raise InputRasterError(
            f"{label} is a rendered colour map (web tiles: red, green, blue), but {modality.name} needs "
            f"{modality.num_bands} band(s) of {', '.join(modality.band_labels)} in physical units; rendered colours "
            f"can only be the {RENDERED_MODALITY} input"
        )
    count = band_count(layer)
    for b in bands or ():
        if not 1 <= b <= count:
            raise InputRasterError(f"{label} has no band {b}; it has bands 1 to {count}")
    chosen = bands or tuple(range(1, count + 1))
    if len(chosen) != modality.num_bands:
        names = ", ".join(modality.band_labels)
        if mapping_param:
            how = f"choose {modality.num_bands} band(s) in that order in {mapping_param}"
        else:
            how = "give a raster with exactly these bands in that order"
        raise InputRasterError(
            f"{label} has {len(chosen)} band{'s' if len(chosen) != 1 else ''}"
            f"{' selected' if bands else ''}, but {modality.name} needs {modality.num_bands} ({names}); {how}"
        )
    for b in () if rendered else chosen:  # rendered colours are exported as Byte
        dtype = provider.dataType(b)
        if dtype not in READABLE_TYPES:
            raise InputRasterError(
                f"{label} band {b} has data type {_type_name(dtype)}, "
                "which TerraMind cannot read; expected an integer or floating-point band (not complex)"
            )
    return LayerInput(param, modality, layer, tuple(bands) if bands else None)


def unreadable_file_message(param: str, path: str) -> str | None:
    """Why QGIS could not load the existing file ``path`` given for ``param`` (None: it is not an existing
    file, Processing's own "not found" stands): a container of several rasters, listed with how to pick
    one, or the reason GDAL gives."""
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    rasters = [s for s in QgsProviderRegistry.instance().querySublayers(path) if s.type() == Qgis.LayerType.Raster]
    if len(rasters) > 1:
        shown = ", ".join(f"'{s.uri()}'" for s in rasters[:10]) + (f" and {len(rasters) - 10} more" if len(rasters) > 10 else "")
        return (f"{param}: '{path}' holds {len(rasters)} rasters ({shown}); add the one you want as a layer and "
                "choose it, or give its name as listed here")  # fmt: skip
    layer = QgsRasterLayer(path, os.path.basename(path), "gdal")
    if layer.isValid():
        return None
    reason = " ".join(layer.error().summary().split()) or "no reason given"
    return f"{param}: '{path}' exists but is not a raster QGIS can read ({reason})"


def nodata_value(item: LayerInput, band: int, feedback: QgsProcessingFeedback) -> float | None:
    """The nodata value the worker should use for ``item``: a single value the user set in the layer's
    Transparency properties, else the file's own (None: the file's, as the worker reads it)."""
    provider = item.layer.dataProvider()
    ranges = provider.userNoDataValues(band)
    if len(ranges) == 1 and ranges[0].min() == ranges[0].max():
        return float(ranges[0].min())
    if ranges:
        feedback.pushWarning(f"{item.label}: the additional no-data ranges set in QGIS are not used; only a single "
                             "no-data value is (set one value in the layer's Transparency properties)")
    if provider.sourceHasNoDataValue(band) and provider.useSourceNoDataValue(band):
        return provider.sourceNoDataValue(band)
    return None


def uses_file_nodata(layer: QgsRasterLayer, band: int) -> bool:
    """False when the user unticked "No data value" of the file in the layer's Transparency properties."""
    provider = layer.dataProvider()
    return not provider.sourceHasNoDataValue(band) or provider.useSourceNoDataValue(band)


def _type_name(dtype: int) -> str:
    return _TYPE_NAMES[int(dtype)] if 0 <= int(dtype) < len(_TYPE_NAMES) else str(int(dtype))


def _gdal_source(layer: QgsRasterLayer) -> dict | None:
    """The decoded source of a layer read by QGIS's GDAL provider from an existing file, else None."""
    if layer.providerType() != "gdal":
        return None
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    return parts if parts.get("path") and os.path.isfile(parts["path"]) else None


def source_path(layer: QgsRasterLayer) -> str | None:
    """The file behind a layer read by QGIS's GDAL provider (also a VRT or a subdataset's file), else None."""
    parts = _gdal_source(layer)
    return parts["path"] if parts else None


def local_file(layer: QgsRasterLayer) -> str | None:
    """The local file the worker can read directly, or None if the layer must be exported."""
    parts = _gdal_source(layer)
    if parts is None or parts.get("layerName"):
        return None
    if layer.crs() != layer.dataProvider().crs():  # a CRS assigned in QGIS: the export writes it
        return None
    if parts["path"].lower().endswith(".vrt"):  # may reference relative, remote or QGIS-only sources
        return None
    return parts["path"]


def extent_in_layer_crs(layer: QgsRasterLayer, area: QgsRectangle | None, area_crs,
                        context: QgsProcessingContext) -> QgsRectangle:
    """The part of ``layer`` inside ``area`` (given in ``area_crs``), in the layer's CRS; the full extent if None."""
    if area is None or area.isNull():
        return QgsRectangle(layer.extent())
    transform = QgsCoordinateTransform(area_crs, layer.crs(), context.transformContext())
    try:
        return transform.transformBoundingBox(area).intersect(layer.extent())
    except QgsCsException:
        return QgsRectangle()  # cannot be expressed in the layer's CRS: no overlap


def snap_to_grid(area: QgsRectangle, grid: QgsRectangle, xres: float, yres: float) -> QgsRectangle:
    """``area`` grown to whole pixels of the grid that starts at ``grid``'s top-left corner, within ``grid``."""
    eps = 1e-6  # of a pixel: coordinates that are on a pixel edge up to rounding stay there
    left = math.floor((area.xMinimum() - grid.xMinimum()) / xres + eps)
    right = math.ceil((area.xMaximum() - grid.xMinimum()) / xres - eps)
    top = math.floor((grid.yMaximum() - area.yMaximum()) / yres + eps)
    bottom = math.ceil((grid.yMaximum() - area.yMinimum()) / yres - eps)
    snapped = QgsRectangle(grid.xMinimum() + left * xres, grid.yMaximum() - bottom * yres,
                           grid.xMinimum() + right * xres, grid.yMaximum() - top * yres)
    return snapped.intersect(grid)


def export_layer(item: LayerInput, area: QgsRectangle, path: str, context: QgsProcessingContext,
                 feedback: QgsProcessingFeedback) -> str:
    """Write ``item.layer`` within ``area`` (layer CRS) to a GeoTIFF at ``path`` with QGIS; return ``path``."""
    layer = item.layer
    provider: QgsRasterDataProvider = layer.dataProvider()
    if area.isEmpty():
        raise InputRasterError(f"{item.label}: the area to process does not overlap the layer")
    if provider.capabilities() & QgsRasterDataProvider.Capability.Size:
        xres, yres = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
        area = snap_to_grid(area, layer.extent(), xres, yres)  # whole source pixels: no resampling
    else:  # tiled web services have no native grid: sample at TerraMind's 10 m
        metres = FALLBACK_RESOLUTION_M / 111320.0 if layer.crs().isGeographic() else FALLBACK_RESOLUTION_M
        xres = yres = metres
        cols, rows = math.ceil(area.width() / xres - 1e-6), math.ceil(area.height() / yres - 1e-6)
        area = QgsRectangle(area.xMinimum(), area.yMaximum() - rows * yres, area.xMinimum() + cols * xres,
                            area.yMaximum())  # whole 10 m pixels from the top-left corner
        feedback.pushWarning(f"{item.label} is a web service: its rendered colours are exported at 10 m; "
                             "they are not calibrated reflectance or backscatter")
    cols, rows = max(1, round(area.width() / xres)), max(1, round(area.height() / yres))
    if cols * rows > MAX_EXPORT_PIXELS:
        raise InputRasterError(f"{item.label} would be exported as {cols} x {rows} pixels; set EXTENT to a smaller area")
    feedback.pushInfo(f"Exporting {item.label} to a temporary GeoTIFF ({cols} x {rows} pixels)")
    pipe = QgsRasterPipe()
    if not pipe.set(provider.clone()):
        raise InputRasterError(f"{item.label} cannot be read for export")
    writer = QgsRasterFileWriter(path)
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(["COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER"])
    block_feedback = QgsRasterBlockFeedback()
    # direct: this runs in Processing's worker thread, which has no event loop for a queued cancel
    feedback.canceled.connect(block_feedback.cancel, Qt.ConnectionType.DirectConnection)
    if feedback.isCanceled():
        raise CancelledError("cancelled by the user")
    err = writer.writeRaster(pipe, cols, rows, area, layer.crs(), context.transformContext(), block_feedback)
    if feedback.isCanceled():
        raise CancelledError("cancelled by the user")
    if err != QgsRasterFileWriter.WriterError.NoError or not os.path.isfile(path):
        raise InputRasterError(f"{item.label} could not be exported to a GeoTIFF (QGIS raster writer error {int(err)})")
    return path
