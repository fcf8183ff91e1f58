"""The working grid: the one 10 m pixel grid every input is read on and every output written on.

Rules (``build_working_grid``), all driven by the FIRST input of the job:

- Projected CRS whose pixels are 10 m (+-1 %) and north-up: its own grid is kept (outputs then
  line up pixel for pixel with it); ``extent`` only crops it, snapped outward to whole pixels.
- Projected CRS with another pixel size: a 10 m grid in the same CRS, anchored at the input's
  top-left corner, covering its bounds (10 m converted to the CRS's linear unit).
- Geographic CRS (degrees): TerraMind was trained on 10 m pixels in UTM, and a degree grid has
  no fixed metric size, so the work is done on a 10 m grid in the WGS 84 UTM zone of the area's
  centre (EPSG:326xx north / 327xx south), snapped to multiples of 10 m; the outputs are in that
  UTM CRS, which the worker reports in an info event. ``extent`` is still given in the input's
  CRS (degrees) and transformed.
- A north-up grid stored bottom-up (positive y pixel size, first row the southernmost) is the same
  grid: the work and the outputs use its north-up equivalent (top-left origin, negative y pixel size),
  the reader reads it flipped (exact, no resampling), and an info event says so.
- No CRS, a rotated/sheared or east-to-west transform, or an empty intersection with ``extent``:
  InputRasterError.

Pixel windows in this package are ``(row, col, height, width)`` on the working grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.errors import InputRasterError

TARGET_RESOLUTION_M = 10.0
RESOLUTION_TOLERANCE = 0.01  # relative: 9.9 .. 10.1 m keeps the input's own grid


@dataclass(frozen=True)
class WorkingGrid:
    """A north-up pixel grid: CRS, affine transform (rasterio ``Affine``) and size."""

    crs: object  # rasterio.crs.CRS
    transform: object  # affine.Affine
    width: int
    height: int
    note: str = ""  # human explanation when the grid is not the first input's own grid
    source: str = ""  # what the grid covers, for messages: "layer 'x'", "layer 'x' within the extent"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    @property
    def pixel_size(self) -> float:
        return float(self.transform.a)

    def window_transform(self, row: int, col: int) -> object:
        """Transform of a window whose top-left pixel is (row, col)."""
        from rasterio.transform import Affine

        t = self.transform
        return Affine(t.a, 0.0, t.c + col * t.a, 0.0, t.e, t.f + row * t.e)


def _utm_crs(lon: float, lat: float) -> object:
    from rasterio.crs import CRS

    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def _snap_window(grid: WorkingGrid, extent: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Rows/cols ``(r0, c0, r1, c1)`` of the grid pixels touched by ``extent`` (outward snapped)."""
    xmin, ymin, xmax, ymax = extent
    t, eps = grid.transform, 1e-6
    c0 = math.floor((xmin - t.c) / t.a + eps)
    c1 = math.ceil((xmax - t.c) / t.a - eps)
    r0 = math.floor((ymax - t.f) / t.e + eps)
    r1 = math.ceil((ymin - t.f) / t.e - eps)
    return max(r0, 0), max(c0, 0), min(r1, grid.height), min(c1, grid.width)


def crop_grid(grid: WorkingGrid, extent: tuple[float, float, float, float], what: str) -> WorkingGrid:
    """The part of ``grid`` inside ``extent`` (grid CRS), snapped outward to whole pixels."""
    xmin, ymin, xmax, ymax = extent
    if not (xmax > xmin and ymax > ymin):
        raise InputRasterError(f"the extent {list(extent)} is empty (xmin must be < xmax and ymin < ymax)")
    r0, c0, r1, c1 = _snap_window(grid, extent)
    if r1 <= r0 or c1 <= c0:
        raise InputRasterError(
            f"the extent {list(extent)} does not overlap {what} (bounds {[round(v, 3) for v in grid.bounds]})"
        )
    source = f"{grid.source} within the extent" if grid.source else ""
    return WorkingGrid(grid.crs, grid.window_transform(r0, c0), c1 - c0, r1 - r0, grid.note, source)


def true_bounds(src: object) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of an open dataset, also when it is stored bottom-up (rasterio's
    ``bounds`` then has bottom > top)."""
    left, bottom, right, top = src.bounds  # type: ignore[attr-defined]
    return min(left, right), min(bottom, top), max(left, right), max(bottom, top)


def north_up(t: object, height: int) -> object:
    """The north-up transform of a bottom-up grid of ``height`` rows (``t.e`` > 0): same pixels, top-left origin."""
    from rasterio.transform import Affine

    return Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + t.e * height)  # type: ignore[attr-defined]


def _is_10m(res: float) -> bool:
    return abs(res - TARGET_RESOLUTION_M) <= RESOLUTION_TOLERANCE * TARGET_RESOLUTION_M


def build_working_grid(
    src: object, layer: str, extent: tuple[float, float, float, float] | None = None
) -> WorkingGrid:
    """The working grid defined by the first input (an open rasterio dataset named ``layer``)."""
    from rasterio.transform import Affine
    from rasterio.warp import transform_bounds

    crs, t = src.crs, src.transform  # type: ignore[attr-defined]
    if crs is None:
        raise InputRasterError(f"layer '{layer}' has no coordinate reference system; assign one first")
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e == 0:
        raise InputRasterError(
            f"layer '{layer}' has a rotated, sheared or east-to-west geotransform; warp it to a north-up grid first"
        )
    width, height = src.width, src.height  # type: ignore[attr-defined]
    what = f"layer '{layer}'"
    flip_note = ""
    if t.e > 0:  # bottom-up: the same grid, north-up
        t = north_up(t, height)
        flip_note = (f"layer '{layer}' is stored bottom-up (positive y pixel size); it is read flipped and the "
                     "outputs are written north-up on the same grid")  # fmt: skip
    if crs.is_geographic:
        left, bottom, right, top = true_bounds(src)
        if extent is not None:
            left, bottom = max(left, extent[0]), max(bottom, extent[1])
            right, top = min(right, extent[2]), min(top, extent[3])
            if not (right > left and top > bottom):
                raise InputRasterError(f"the extent {list(extent)} does not overlap {what}")
        utm = _utm_crs((left + right) / 2, (bottom + top) / 2)
        ul, ub, ur, ut = transform_bounds(crs, utm, left, bottom, right, top, densify_pts=21)
        r = TARGET_RESOLUTION_M
        x0, y0 = math.floor(ul / r) * r, math.ceil(ut / r) * r
        w, h = math.ceil((ur - x0) / r - 1e-9), math.ceil((y0 - ub) / r - 1e-9)
        note = (
            f"layer '{layer}' is in a geographic CRS ({crs.to_string()}); the work and the outputs use "
            f"a 10 m grid in {utm.to_string()} (UTM zone of the area's centre)"
        )
        source = what + (" within the extent" if extent is not None else "")
        note = "; ".join(n for n in (flip_note, note) if n)
        return WorkingGrid(utm, Affine(r, 0.0, x0, 0.0, -r, y0), max(w, 1), max(h, 1), note, source)

    unit = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
    res_x, res_y = t.a * unit, -t.e * unit
    if _is_10m(res_x) and _is_10m(res_y):
        grid = WorkingGrid(crs, t, width, height, flip_note, what)
    else:
        px = TARGET_RESOLUTION_M / unit
        w = math.ceil(width * t.a / px - 1e-9)
        h = math.ceil(height * -t.e / px - 1e-9)
        note = (
            f"layer '{layer}' has {res_x:g} x {res_y:g} m pixels; it is resampled to the 10 m grid "
            "TerraMind was trained on, and the outputs use that grid"
        )
        grid = WorkingGrid(crs, Affine(px, 0.0, t.c, 0.0, -px, t.f), w, h, "; ".join(n for n in (flip_note, note) if n), what)
    return crop_grid(grid, extent, what) if extent is not None else grid


def pixel_area_m2(grid: WorkingGrid) -> float | None:
    """Area of one pixel of ``grid`` in m² (None for grids in degrees)."""
    if grid.crs.is_geographic:
        return None
    factor = float(grid.crs.linear_units_factor[1] or 1.0)  # metres per CRS unit
    return abs(grid.transform.a * grid.transform.e) * factor * factor
