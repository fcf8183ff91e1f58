"""Multi-date inputs: every date of every input of a multi-temporal model, read together window by window.

A multi-temporal model (TerraTorch's ``TemporalWrapper``) reads each input as ``(C, T, H, W)``:
bands in the model's order, dates in order. ``DateSeries`` is one input over its dates, one
``InputRaster`` (``reader.py``) per date, all on the same working grid (the grid of the job's first
layer: dates and inputs in another CRS or resolution are aligned like any input). ``TemporalStack``
holds every input of the model and reads them together.

Nodata is handled as ImpactMesh's data module does (``ImpactMeshDataset.__getitem__``): per element
(band × date × pixel), a value that is not finite, equals the layer's nodata value or lies outside
the layer's coverage is replaced by ``fill`` (the config's ``no_data_replace``, raw units) and the
model predicts from the rest. A pixel is written as nodata only where no element of any date of any
input has data; everywhere else the model's prediction is kept.

An input given with one date while the model reads ``T`` (a DEM) is repeated over the ``T`` dates,
as the data module repeats a one-date file (the count rules are ``models/core/params.py``
``plan_dates``).

Shapes: C bands, T dates, h/w window size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import WorkingGrid
from .reader import InputRaster


@dataclass
class DateSeries:
    """One input of a multi-temporal model over its dates (one opened ``InputRaster`` per date)."""

    key: str  # the input's modality (job input key)
    dates: list[InputRaster]

    def read_window(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """A window inside the grid → (data ``(C, T', h, w)`` float32 with invalid = 0, valid ``(C, T', h, w)``)."""
        parts = [d.read_elements(row, col, height, width) for d in self.dates]
        return np.stack([p[0] for p in parts], axis=1), np.stack([p[1] for p in parts], axis=1)


class TemporalStack:
    """Every input of a multi-temporal model, read together (see the module docstring)."""

    def __init__(self, series: list[DateSeries], grid: WorkingGrid, dates: int, fill: float = 0.0) -> None:
        self.series, self.grid, self.dates, self.fill = series, grid, dates, fill
        for s in series:
            if len(s.dates) not in (1, dates):
                raise ValueError(f"input {s.key} has {len(s.dates)} dates for a run of {dates}")  # plan_dates checks first

    @property
    def inputs(self) -> list[InputRaster]:
        """Every opened layer (all dates of all inputs)."""
        return [d for s in self.series for d in s.dates]

    def read_window(self, row: int, col: int, height: int, width: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A window inside the grid → ({key: ``(C, T, h, w)`` float32}, valid ``(h, w)``: some element has data)."""
        data: dict[str, np.ndarray] = {}
        valid = np.zeros((height, width), dtype=bool)
        for s in self.series:
            d, ok = s.read_window(row, col, height, width)  # (C, T', h, w)
            if self.fill != 0.0:
                d[~ok] = self.fill
            if d.shape[1] != self.dates:
                d = np.repeat(d, self.dates, axis=1)  # (C, T, h, w): the one date, for every date
            data[s.key] = d
            valid |= ok.any(axis=(0, 1))
        return data, valid

    def read_tile(self, y: int, x: int, size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Tile at (y, x) of ``size`` px (the engine's own tiling); parts outside the grid are reflect-padded, invalid."""
        from .chips import reflect_window

        return reflect_window(self, y, x, size, size)

    def close(self) -> None:
        for inp in self.inputs:
            inp.close()
