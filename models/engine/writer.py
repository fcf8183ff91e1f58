"""Atomic, styled GeoTIFF outputs written window by window.

Each output is written to ``<path>.partial-<pid>.tif`` (``job.partial_glob`` finds leftovers) as a
tiled, DEFLATE-compressed GeoTIFF (horizontal predictor for integers, floating-point predictor
for floats, ``BIGTIFF=IF_SAFER``), with band descriptions, a nodata value and metadata tags. On
``commit`` it gets, in this order (class rasters get their colour table when created): the category names in the
GDAL PAM sidecar ``<path>.aux.xml`` (rasterio has no API for them; merged into any sidecar GDAL
wrote), the ``.qml`` style sidecar (``models/core/styles.py``) with per-band display ranges from the
statistics gathered while writing, and finally the rename of the GeoTIFF to ``path`` — so a
reader never sees a half-written file. ``abort`` closes and removes the partial files.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from ..core.modalities import ClassInfo
from .grid import WorkingGrid

FLOAT_NODATA = -9999.0  # float32 outputs (far outside every modality's range)
FLOAT16_NODATA = -65504.0  # float16 outputs: the lowest half float (-9999 is not one: it would read back as -9992)
FLOAT16_MAX = 65504.0
CLASS_NODATA = 255  # uint8 class rasters (class ids are 0..254)


@dataclass(frozen=True)
class OutputRaster:
    """What one output file holds."""

    key: str  # the job's output key
    path: str
    band_descriptions: tuple[str, ...]
    style: str  # a ``models/core/styles.py`` output name: modality or role
    dtype: str = "float32"  # 'float32', 'float16' (half floats: a Float32 band with NBITS=16) or 'uint8'
    classes: tuple[ClassInfo, ...] = ()  # class rasters: colour table + category names
    tags: dict[str, str] = field(default_factory=dict)
    block_size: int = 256  # GeoTIFF block side (pixels)

    @property
    def count(self) -> int:
        return len(self.band_descriptions)

    @property
    def nodata(self) -> float:
        return {"uint8": CLASS_NODATA, "float16": FLOAT16_NODATA}.get(self.dtype, FLOAT_NODATA)


class BandStats:
    """Streaming count, mean, standard deviation, min and max of the valid pixels of each band."""

    def __init__(self, bands: int) -> None:
        self.n = 0
        self.sum = np.zeros(bands, np.float64)
        self.sumsq = np.zeros(bands, np.float64)
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)

    def update(self, data: np.ndarray, valid: np.ndarray) -> None:
        """Add ``data`` ``(C, h, w)`` at the ``valid`` ``(h, w)`` pixels."""
        v = data[:, valid].astype(np.float64)  # (C, n)
        if v.shape[1] == 0:
            return
        self.n += v.shape[1]
        self.sum += v.sum(axis=1)
        self.sumsq += (v * v).sum(axis=1)
        self.min = np.minimum(self.min, v.min(axis=1))
        self.max = np.maximum(self.max, v.max(axis=1))

    def display_ranges(self) -> dict[int, tuple[float, float]]:
        """1-based band -> (low, high): mean +- 2 sigma clipped to the band's min..max."""
        if self.n == 0:
            return {}
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sumsq / self.n - mean * mean, 0.0))
        low = np.maximum(mean - 2 * std, self.min)
        high = np.minimum(mean + 2 * std, self.max)
        return {i + 1: (float(lo), float(hi)) for i, (lo, hi) in enumerate(zip(low, high))}


def write_category_names(raster_path: str, names: list[str], band: int = 1) -> str:
    """Put ``names`` (index = class value) into the GDAL PAM sidecar ``<raster>.aux.xml``.

    An existing sidecar is kept and only the band's ``CategoryNames`` element is replaced.
    """
    aux = raster_path + ".aux.xml"
    if os.path.exists(aux):
        root = ET.parse(aux).getroot()  # nosec B314 # the GDAL sidecar of the output we write
    else:
        root = ET.Element("PAMDataset")
    node = None
    for el in root.findall("PAMRasterBand"):
        if el.get("band") == str(band):
            node = el
    if node is None:
        node = ET.SubElement(root, "PAMRasterBand", {"band": str(band)})
    for old in node.findall("CategoryNames"):
        node.remove(old)
    cats = ET.SubElement(node, "CategoryNames")
    for name in names:
        ET.SubElement(cats, "Category").text = name
    ET.indent(root)
    ET.ElementTree(root).write(aux, encoding="utf-8")
    return aux


def _colormap(classes: tuple[ClassInfo, ...]) -> dict[int, tuple[int, int, int, int]]:
    cmap = {c.value: (int(c.color[1:3], 16), int(c.color[3:5], 16), int(c.color[5:7], 16), 255) for c in classes}
    cmap[CLASS_NODATA] = (0, 0, 0, 0)
    return cmap


class GeoTiffWriter:
    """Writes one ``OutputRaster`` on the working grid; see the module docstring."""

    def __init__(self, spec: OutputRaster, grid: WorkingGrid, block_size: int | None = None) -> None:
        import rasterio

        self.spec, self.grid = spec, grid
        block_size = block_size or spec.block_size
        self.partial = f"{spec.path}.partial-{os.getpid()}.tif"
        folder = os.path.dirname(os.path.abspath(spec.path))
        os.makedirs(folder, exist_ok=True)
        tiled = grid.width >= 16 and grid.height >= 16
        half = spec.dtype == "float16"
        profile = {
            "driver": "GTiff", "width": grid.width, "height": grid.height, "count": spec.count,
            "dtype": "float32" if half else spec.dtype, "crs": grid.crs, "transform": grid.transform,
            "nodata": spec.nodata, "compress": "deflate", "predictor": 3 if spec.dtype.startswith("float") else 2,
            "BIGTIFF": "IF_SAFER", "tiled": tiled,
        }  # fmt: skip
        if half:
            profile["NBITS"] = 16
        if tiled:
            profile.update(blockxsize=block_size, blockysize=block_size)
        self._dst = rasterio.open(self.partial, "w", **profile)
        for i, desc in enumerate(spec.band_descriptions, start=1):
            self._dst.set_band_description(i, desc)
        self._dst.update_tags(**spec.tags)
        if spec.classes:  # before any pixel: GeoTIFF fixes the photometric interpretation on first write
            self._dst.write_colormap(1, _colormap(spec.classes))
        self.stats = BandStats(spec.count)
        self.nonfinite = 0  # valid pixels whose values were NaN or infinite (written as nodata)
        self.done = False

    def write(self, row: int, col: int, data: np.ndarray, valid: np.ndarray) -> None:
        """Write ``data`` ``(C, h, w)`` at (row, col); pixels not ``valid`` (or not finite) become nodata."""
        c, h, w = data.shape
        if data.dtype.kind == "f":
            finite = np.isfinite(data).all(axis=0)  # (h, w)
            if self.spec.dtype == "float16":  # beyond the half-float range it would be written as infinity
                finite &= (np.abs(data) <= FLOAT16_MAX).all(axis=0)
            bad = valid & ~finite
            if bad.any():
                self.nonfinite += int(bad.sum())
                valid = valid & finite
        out = data.astype("float32" if self.spec.dtype == "float16" else self.spec.dtype, copy=True)
        out[:, ~valid] = self.spec.nodata
        self.stats.update(data, valid)
        self._dst.write(out, window=((row, row + h), (col, col + w)))

    def finish_writing(self) -> str:
        """Close the partial file so that it can be read back before ``commit`` (e.g. for a second pass);
        returns its path. Nothing may be written after this."""
        self._dst.close()
        return self.partial

    def commit(self) -> str:
        """Finish the file: colour table, category names, style sidecar, then the atomic rename."""
        from ..core import styles

        if not self._dst.closed:
            self._dst.close()
        final, aux = self.spec.path, self.partial + ".aux.xml"
        if self.spec.classes:
            names = [""] * (max(c.value for c in self.spec.classes) + 1)
            for c in self.spec.classes:
                names[c.value] = c.name
            write_category_names(self.partial, names)
        if os.path.exists(aux):
            os.replace(aux, final + ".aux.xml")
        elif os.path.exists(final + ".aux.xml"):
            os.remove(final + ".aux.xml")  # a stale sidecar of an earlier run would mislabel the new file
        ranges = {} if self.spec.classes else self.stats.display_ranges()
        spec = styles.style_for(self.spec.style, stats=ranges, classes=self.spec.classes or None)
        styles.write_sidecar(final, spec)
        os.replace(self.partial, final)
        self.done = True
        return final

    def abort(self) -> None:
        """Close and delete the partial files (safe to call more than once)."""
        if self.done:
            return
        try:
            if not self._dst.closed:
                self._dst.close()
        except Exception:  # noqa: BLE001 - closing a half-written file may fail; deleting is what matters
            pass
        for p in (self.partial, self.partial + ".aux.xml"):
            if os.path.exists(p):
                os.remove(p)
        self.done = True
