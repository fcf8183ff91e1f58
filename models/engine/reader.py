"""Windowed reading of the job's input rasters on the working grid.

Each input is checked when opened (``InputRaster``): band count after the ``bands`` mapping against
its modality, band numbers in range, no complex data, a CRS, some overlap with the working grid.
Errors are ``InputRasterError`` naming the layer (the job's ``inputs[..].name``) and the band.

An input already on the working grid's pixel lattice (same CRS, same pixel size, whole-pixel
offset) is read directly with a window offset; any other is read through a GDAL ``WarpedVRT``
onto the working grid (bilinear for continuous data, nearest for class rasters such as LULC), so
whole rasters are never loaded or reprojected in memory.

A pixel is valid when every band of every input is finite, differs from the input's nodata value
(the job's ``nodata`` override, else the file's) and lies inside that input's coverage. Invalid
pixels are filled with 0 in raw units (the reference's ``no_data_replace``) before anything else.
A window that reaches past the grid (only when the grid is smaller than a tile) is reflect-padded,
like the reference pads its chips; padded pixels are marked invalid.

Shapes: C bands, h/w window size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import value_rules
from ..core.errors import InputRasterError, RasterReadError
from ..core.job import InputSpec
from ..core.modalities import Modality
from ..core.sources import missing_sources_message, missing_vrt_sources
from .grid import WorkingGrid, north_up, true_bounds
from .values import check_class_values


def open_raster(path: str, what: str) -> object:
    """``rasterio.open(path)``, the one way the worker opens an input: a VRT with missing local sources,
    a file GDAL cannot open, and a container of several rasters (GeoPackage tables, NetCDF/HDF
    variables: listed, with how to pick one) are ``InputRasterError``s naming ``what`` (the layer)."""
    import warnings

    import rasterio

    missing = missing_vrt_sources(path)
    if missing:
        raise InputRasterError(missing_sources_message(what, path, missing))
    try:
        with warnings.catch_warnings(record=True) as said:  # held back: a container's would mislead
            warnings.simplefilter("always")
            src = rasterio.open(path)
    except (rasterio.errors.RasterioIOError, OSError) as e:
        raise InputRasterError(f"{what}: cannot open '{path}': {e}") from None
    if src.count == 0:
        subdatasets = list(src.subdatasets)
        src.close()
        if subdatasets:
            shown = ", ".join(f"'{d}'" for d in subdatasets[:10]) + (f" and {len(subdatasets) - 10} more"
                                                                     if len(subdatasets) > 10 else "")  # fmt: skip
            raise InputRasterError(f"{what}: '{path}' holds {len(subdatasets)} rasters ({shown}); give one of them "
                                   "as the path, written as listed here (in QGIS: add the one you want as a layer)")  # fmt: skip
        raise InputRasterError(f"{what}: '{path}' has no raster bands")
    for w in said:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if src.transform.is_identity and src.crs is None and not src.gcps[0]:
        src.close()
        raise InputRasterError(f"{what}: '{path}' has no georeferencing (no geotransform and no coordinate reference "
                               "system); georeference it first")  # fmt: skip
    return src


def read_window(src: object, window: tuple[tuple[int, int], tuple[int, int]], what: str, *,
                indexes: list[int] | None = None, mask: bool = False, **kwargs: object) -> np.ndarray:
    """``src.read(indexes, window=window, **kwargs)`` (``mask``: ``src.dataset_mask(window=window)``),
    the one way the worker reads pixels: a GDAL/rasterio failure (truncated or damaged file, a VRT
    source gone) becomes a ``RasterReadError`` naming ``what`` (the layer), the file and the window."""
    import rasterio
    from rasterio._err import CPLE_BaseError

    try:
        if mask:
            return src.dataset_mask(window=window)  # type: ignore[attr-defined]
        return src.read(indexes, window=window, **kwargs)  # type: ignore[attr-defined]
    except (rasterio.errors.RasterioError, CPLE_BaseError, OSError) as e:
        (r0, r1), (c0, c1) = window
        path = getattr(getattr(src, "src_dataset", None), "name", None) or getattr(src, "name", "?")
        raise RasterReadError(f"{what}: cannot read '{path}' (rows {r0}-{r1 - 1}, columns {c0}-{c1 - 1}): "
                              f"{_gdal_reason(e)}; the file may be truncated or damaged") from None  # fmt: skip


def _gdal_reason(error: BaseException) -> str:
    """GDAL's own words for a failed read: the innermost message rasterio chained ("Read failed. See
    previous exception" says nothing)."""
    reasons, seen = [], error
    while seen is not None and len(reasons) < 8:
        text = str(seen).strip()
        if text and "See previous exception" not in text and text not in reasons:
            reasons.append(text)
        seen = seen.__cause__ or seen.__context__
    return reasons[-1] if reasons else type(error).__name__


def _bounds_in(crs: object, bounds: tuple[float, float, float, float], target: object) -> tuple[float, ...]:
    """``bounds`` (in ``crs``) as bounds in ``target``; non-finite where they cannot be expressed there."""
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError
    from rasterio.warp import transform_bounds

    try:
        return tuple(transform_bounds(crs, target, *bounds, densify_pts=21))
    except (CPLE_BaseError, RasterioError, ValueError):
        return (float("nan"),) * 4


def _representable(value: float, dtype: np.dtype) -> bool:
    """Whether ``value`` is a value ``dtype`` can hold exactly (NaN: only floats)."""
    if dtype.kind == "f":
        return True
    if np.isnan(value) or value != int(value):
        return False
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


def _aligned_offset(src: object, grid: WorkingGrid) -> tuple[int, int, bool] | None:
    """(row, col, flipped) of the grid's origin in ``src`` pixels, if ``src`` shares the grid's lattice;
    ``flipped``: ``src`` is stored bottom-up (rows counted from its north-up equivalent, read flipped)."""
    if src.crs != grid.crs:  # type: ignore[attr-defined]
        return None
    s, g = src.transform, grid.transform  # type: ignore[attr-defined]
    flipped = s.e > 0 > g.e
    if flipped:
        s = north_up(s, src.height)  # type: ignore[attr-defined]
    if s.b or s.d or abs(s.a - g.a) > 1e-9 * abs(g.a) or abs(s.e - g.e) > 1e-9 * abs(g.e):
        return None
    col = (g.c - s.c) / s.a
    row = (g.f - s.f) / s.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(row), round(col), flipped


@dataclass
class InputRaster:
    """One job input, opened and checked, readable in working-grid windows."""

    key: str  # modality name (job input key)
    spec: InputSpec
    modality: Modality
    grid: WorkingGrid

    def __post_init__(self) -> None:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        self.name = self.spec.name or self.key
        what = f"layer '{self.name}'"
        self._src = src = open_raster(self.spec.path, what)
        self.warnings: list[str] = []  # what the user should hear about this input (warning events)
        self.infos: list[str] = []  # (info events)
        self.bands = self._check_bands(src)
        self.bands, info, warning = value_rules.band_order(what, self.modality, tuple(src.descriptions), self.bands,
                                                          explicit=self.spec.bands is not None)  # fmt: skip
        self.infos += [info] if info else []
        self.warnings += [warning] if warning else []
        for b in self.bands:
            if np.dtype(src.dtypes[b - 1]).kind == "c":
                raise InputRasterError(
                    f"layer '{self.name}': band {b} has complex values ({src.dtypes[b - 1]}), which TerraMind "
                    "cannot use; convert it to real values (e.g. backscatter in dB) first"
                )
        if src.crs is None:
            raise InputRasterError(f"layer '{self.name}' has no coordinate reference system; assign one first")
        file_nodata = src.nodata if self.spec.file_nodata else None
        self.nodata = self.spec.nodata if self.spec.nodata is not None else file_nodata
        dtype = np.dtype(src.dtypes[self.bands[0] - 1])
        if self.nodata is not None and not _representable(self.nodata, dtype):
            # cast to the data type it would wrap or truncate and mask real values (e.g. -9999 as uint16 = 55537)
            self.warnings.append(f"layer '{self.name}': its nodata value {self.nodata:g} cannot occur in its {dtype} "
                                 "data and is ignored; every pixel is read as valid")  # fmt: skip
            self.nodata = None
        self._scale = value_rules.scale_offset(self.modality, tuple(src.scales[b - 1] for b in self.bands),
                                               tuple(src.offsets[b - 1] for b in self.bands))  # fmt: skip
        problem = value_rules.dtype_problem(what, self.modality, str(dtype), scaled=self._scale is not None)
        if problem:
            raise InputRasterError(problem)
        if self._scale is not None:
            self.infos.append(value_rules.scale_message(what, self.modality, *self._scale))
            # per-tile form, made once: float32 (C, 1, 1), applied in place to each window
            self._tile_scale = tuple(v.astype(np.float32)[:, None, None] for v in self._scale)
        self._check_sample(src, what)
        self._offset = _aligned_offset(src, self.grid)
        self._vrt = None
        if self._offset is None:
            resampling = Resampling.nearest if self.modality.categorical else Resampling.bilinear
            if self.nodata is not None or not self.spec.file_nodata:  # None: the file's value is ignored too
                extra = {"src_nodata": self.nodata, "nodata": self.nodata}
            else:
                extra = {}  # GDAL uses the file's no-data value
            self._vrt = WarpedVRT(
                src, crs=self.grid.crs, transform=self.grid.transform, width=self.grid.width,
                height=self.grid.height, resampling=resampling, add_alpha=True, **extra,
            )  # fmt: skip
        self._check_overlap()

    def _check_sample(self, src: object, what: str, windows: int = 3, size: int = 64) -> None:
        """The value rules judged on ``windows`` x ``windows`` windows of ``size`` pixels spread over the file."""
        h, w = src.height, src.width  # type: ignore[attr-defined]
        rows = sorted({max(0, min(h - size, round(i * (h - size) / max(1, windows - 1)))) for i in range(windows)})
        cols = sorted({max(0, min(w - size, round(i * (w - size) / max(1, windows - 1)))) for i in range(windows)})
        values, masked, total = [], 0, 0
        for r in rows:
            for c in cols:
                win = ((r, min(h, r + size)), (c, min(w, c + size)))
                raw = read_window(src, win, what, indexes=list(self.bands)).reshape(len(self.bands), -1)  # (C, n)
                ok = np.isfinite(raw).all(axis=0) if raw.dtype.kind == "f" else np.ones(raw.shape[1], bool)
                total += int(ok.sum())
                if self.nodata is not None and not np.isnan(self.nodata):
                    hit = (raw == np.asarray(self.nodata).astype(raw.dtype)).any(axis=0) & ok
                    masked, ok = masked + int(hit.sum()), ok & ~hit
                values.append(raw[:, ok].astype(np.float64))
        sample = np.concatenate(values, axis=1) if values else np.zeros((len(self.bands), 0))  # (C, n)
        if self._scale is not None:
            sample = sample * self._scale[0][:, None] + self._scale[1][:, None]
        if self.nodata is not None and not np.isnan(self.nodata):
            raw_valid = np.concatenate(values, axis=1) if values else sample
            note = value_rules.nodata_warning(what, float(self.nodata), masked, raw_valid, total)
            self.warnings += [note] if note else []
        note = value_rules.scale_warning(what, self.modality, sample)
        self.warnings += [note] if note else []

    def _check_bands(self, src: object) -> tuple[int, ...]:
        count, m = src.count, self.modality  # type: ignore[attr-defined]
        bands = self.spec.bands or tuple(range(1, count + 1))
        for b in bands:
            if not 1 <= b <= count:
                raise InputRasterError(
                    f"layer '{self.name}': band {b} does not exist (the layer has {count} band(s))"
                )
        if len(bands) != m.num_bands:
            raise InputRasterError(
                f"layer '{self.name}': {m.name} needs {m.num_bands} band(s) "
                f"({', '.join(m.band_labels)}), got {len(bands)}; choose a band mapping listing "
                f"{m.num_bands} of the layer's bands in that order"
            )
        return tuple(bands)

    def _check_overlap(self) -> None:
        src = self._src
        left, bottom, right, top = _bounds_in(src.crs, true_bounds(src), self.grid.crs)
        gl, gb, gr, gt = self.grid.bounds
        if right <= gl or left >= gr or top <= gb or bottom >= gt:
            crs, mine, area = self.grid.crs, (left, bottom, right, top), self.grid.bounds
            if not all(map(np.isfinite, mine)):  # outside the grid CRS's domain: both in longitude/latitude
                from rasterio.crs import CRS

                crs = CRS.from_epsg(4326)
                mine, area = _bounds_in(src.crs, true_bounds(src), crs), _bounds_in(self.grid.crs, self.grid.bounds, crs)
            digits = 6 if crs.is_geographic else 1
            other = self.grid.source or "the area being processed"
            raise InputRasterError(
                f"layer '{self.name}' does not overlap {other}: layer '{self.name}' covers "
                f"{[round(v, digits) for v in mine]}, {other} {[round(v, digits) for v in area]} "
                f"(left, bottom, right, top in {crs.to_string()})"
            )

    @property
    def resampled(self) -> bool:
        """True when the input is warped onto the working grid."""
        return self._vrt is not None

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Window inside the grid → (data ``(C, h, w)`` float32 with invalid = 0, valid ``(h, w)`` bool)."""
        data, ok = self.read_elements(row, col, height, width)
        valid = ok.all(axis=0)
        data[:, ~valid] = 0.0
        return data, valid

    def read_elements(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Window inside the grid → (data ``(C, h, w)`` float32, valid ``(C, h, w)`` per band and pixel).

        An element is invalid when it is not finite, equals the nodata value, or lies outside the
        input's coverage; invalid elements hold 0 (the reference's ``no_data_replace`` in raw units).
        """
        if self._vrt is not None:
            idx = [*self.bands, self._vrt.count]  # the alpha band is last
            raw = read_window(self._vrt, ((row, row + height), (col, col + width)), f"layer '{self.name}'",
                              indexes=idx)  # (C+1, h, w)
            covered = raw[-1] > 0
            raw = raw[:-1]
        else:
            raw, covered = self._read_direct(row, col, height, width)
        ok = np.broadcast_to(covered, raw.shape).copy()  # (C, h, w)
        if raw.dtype.kind == "f":
            ok &= np.isfinite(raw)
        if self.nodata is not None and not np.isnan(self.nodata):
            ok &= raw != np.asarray(self.nodata).astype(raw.dtype)
        data = raw.astype(np.float32)  # (C, h, w)
        if self._scale is not None:  # the file's scale/offset, to the modality's unit
            data *= self._tile_scale[0]
            data += self._tile_scale[1]
        check_class_values(self.name, self.modality, data, ok.all(axis=0))
        data[~ok] = 0.0
        return data, ok

    def _read_direct(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        src = self._src
        r0, c0, flipped = row + self._offset[0], col + self._offset[1], self._offset[2]  # type: ignore[index]
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + height, src.height), min(c0 + width, src.width)
        dtype = np.dtype(src.dtypes[self.bands[0] - 1])
        out = np.zeros((len(self.bands), height, width), dtype=dtype)  # (C, h, w)
        valid = np.zeros((height, width), dtype=bool)
        if rr1 > rr0 and cc1 > cc0:
            # rows rr0..rr1 of the north-up grid are rows H-rr1..H-rr0 of a bottom-up file, in reverse
            win = ((src.height - rr1, src.height - rr0) if flipped else (rr0, rr1), (cc0, cc1))
            rows = slice(None, None, -1) if flipped else slice(None)
            sub = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
            what = f"layer '{self.name}'"
            out[(slice(None), *sub)] = read_window(src, win, what, indexes=list(self.bands), out_dtype=dtype)[:, rows]
            if any(f.name in ("per_dataset", "alpha") for f in src.mask_flag_enums[self.bands[0] - 1]):
                valid[sub] = (read_window(src, win, what, mask=True) > 0)[rows]
            else:
                valid[sub] = True
        return out, valid

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
        self._src.close()


class InputStack:
    """All inputs of a job, read together tile by tile; invalid pixels hold ``fill`` (raw units: the
    reference's ``no_data_replace``, 0 unless a fine-tuned model's config says otherwise)."""

    def __init__(self, inputs: list[InputRaster], grid: WorkingGrid, fill: float = 0.0) -> None:
        self.inputs, self.grid, self.fill = inputs, grid, fill

    def read_tile(self, y: int, x: int, size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Tile at (y, x) of ``size`` px → ({key: ``(C, size, size)`` float32}, valid ``(size, size)``).

        Parts outside the grid (grids smaller than a tile) are reflect-padded and invalid.
        """
        g = self.grid
        h, w = min(size, g.height - y), min(size, g.width - x)
        data, valid = self.read_window(y, x, h, w)
        if (h, w) != (size, size):
            pad = ((0, size - h), (0, size - w))
            data = {k: np.pad(d, ((0, 0), *pad), mode="reflect") for k, d in data.items()}
            valid = np.pad(valid, pad, mode="constant", constant_values=False)
            if self.fill != 0.0:
                for d in data.values():
                    d[:, ~valid] = self.fill
        return data, valid

    def read_window(self, row: int, col: int, height: int, width: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A window inside the grid → ({key: ``(C, h, w)`` float32}, valid ``(h, w)``: every input valid there).

        Invalid pixels hold ``fill`` in every band of every input.
        """
        data: dict[str, np.ndarray] = {}
        valid = np.ones((height, width), dtype=bool)
        for inp in self.inputs:
            d, v = inp.read(row, col, height, width)
            data[inp.key], valid = d, valid & v
        if self.fill != 0.0:
            for d in data.values():
                d[:, ~valid] = self.fill
        return data, valid

    def close(self) -> None:
        for inp in self.inputs:
            inp.close()
