"""The streaming tiled raster engine (worker side; numpy + rasterio, no torch).

- ``grid``: the working 10 m grid every input is aligned on (first input's grid, CRS rules, extent).
- ``reader``: checked inputs, windowed reads (direct or through a WarpedVRT), nodata/NaN handling.
- ``tiling``: the tile plan (origins, column groups, release schedule) and cosine blend weights.
- ``accumulator``: the bounded strip accumulator with an on-disk carry between column groups.
- ``writer``: atomic, tiled, compressed, styled GeoTIFF outputs.
- ``runner``: ``run_tiled``, the loop tying them together.

Peak memory depends on tile size, batch size and the column-group width, never on the raster size.
"""

from .accumulator import Released, StreamingBlender
from .grid import WorkingGrid, build_working_grid, crop_grid, pixel_area_m2
from .reader import InputRaster, InputStack
from .runner import TiledRunStats, run_tiled
from .tiling import ColumnGroup, Tile, TilePlan, axis_origins, axis_weights, cosine_ramp
from .writer import CLASS_NODATA, FLOAT_NODATA, BandStats, GeoTiffWriter, OutputRaster, write_category_names

__all__ = [
    "BandStats", "CLASS_NODATA", "ColumnGroup", "FLOAT_NODATA", "GeoTiffWriter", "InputRaster", "InputStack",
    "OutputRaster", "Released", "StreamingBlender", "Tile", "TilePlan", "TiledRunStats", "WorkingGrid",
    "axis_origins", "axis_weights", "build_working_grid", "cosine_ramp", "crop_grid", "pixel_area_m2", "run_tiled",
    "write_category_names",
]  # fmt: skip
