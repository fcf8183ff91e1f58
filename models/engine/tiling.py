"""Tile plan and blend weights for streaming tiled inference (pure numpy).

The working grid (``height`` x ``width`` pixels) is covered by square tiles of ``tile_size``.

Tile origins, per axis (:func:`axis_origins`): an axis no longer than a tile gets one tile at 0
(the reader reflect-pads it to the full tile); a longer axis gets the fewest tiles whose
neighbours overlap by at least ``overlap`` pixels, spread evenly from 0 to ``length - tile_size``
(so the last tile ends exactly at the edge: edges are never dropped and nothing is read outside
the grid).

Blend weights (:func:`axis_weights`): every pair of neighbouring tiles shares one cosine ramp
(terratorch's ``get_blend_mask`` ramp, ``cos(pi (k + 1) / (r + 1)) / 2 + 0.5``), of length
``r = min(overlap, actual overlap, step)`` centred in their overlap; before it the left tile has
weight 1 and the right 0, after it the reverse. The two ramps are mirror images, so along each axis
the weights of all tiles sum to exactly 1 at every pixel, and the 2-D weight of a tile (outer
product of its two axis weights) is a partition of unity too. Pixels outside ramps take one tile's
output unchanged (weight exactly 1), so tiled and untiled results are bit-identical there.

Streaming order (:class:`TilePlan`): the columns are cut into *column groups* whose borders are
multiples of the output block width; a tile belongs to the group its left edge starts in. Groups
are processed left to right, each top to bottom, row by row. Within a group, after the last tile
of tile-row ``r`` the rows above the next tile-row's origin are final; they are released in
multiples of the output block height (so each GeoTIFF block is written once). What the last tiles
of a group contribute right of the group's border (at most one tile width) is carried to the next
group (see ``accumulator.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import ConfigError


def axis_origins(length: int, tile_size: int, overlap: int) -> tuple[int, ...]:
    """Tile origins along one axis of ``length`` pixels (see the module docstring)."""
    if length < 1:
        raise ConfigError(f"cannot tile an axis of {length} pixels")
    if length <= tile_size:
        return (0,)
    step = tile_size - overlap
    count = math.ceil((length - overlap) / step)  # fewest tiles with overlap >= `overlap`
    span = length - tile_size
    return tuple(round(k * span / (count - 1)) for k in range(count))


def cosine_ramp(length: int) -> np.ndarray:
    """A falling ramp from ~1 to ~0 (terratorch ``get_blend_mask``); ``ramp + ramp[::-1] == 1``."""
    k = np.arange(length, dtype=np.float64)
    return (np.cos(np.pi * (k + 1) / (length + 1)) / 2 + 0.5).astype(np.float32)


def _pair_ramp(origins: tuple[int, ...], k: int, tile_size: int, overlap: int) -> tuple[int, int]:
    """Start and length (absolute pixels) of the ramp shared by tiles ``k`` and ``k + 1``."""
    step = origins[k + 1] - origins[k]
    shared = tile_size - step  # pixels both tiles cover
    length = max(0, min(overlap, shared, step))
    start = origins[k + 1] + (shared - length) // 2
    return start, length


def axis_weights(origins: tuple[int, ...], index: int, tile_size: int, overlap: int) -> np.ndarray:
    """Blend weights ``(tile_size,)`` float32 of tile ``index`` along one axis."""
    w = np.ones(tile_size, dtype=np.float32)
    o = origins[index]
    if index > 0:  # rising edge shared with the previous tile
        start, length = _pair_ramp(origins, index - 1, tile_size, overlap)
        w[: start - o] = 0.0
        w[start - o : start - o + length] = cosine_ramp(length)[::-1]
    if index < len(origins) - 1:  # falling edge shared with the next tile
        start, length = _pair_ramp(origins, index, tile_size, overlap)
        w[start - o : start - o + length] = cosine_ramp(length)
        w[start - o + length :] = 0.0
    return w


@dataclass(frozen=True)
class Tile:
    """One tile: its place in the processing order, the tile grid and the working grid."""

    index: int  # position in processing order
    row: int  # tile-grid row / column
    col: int
    group: int  # column group
    y: int  # origin in working-grid pixels
    x: int


@dataclass(frozen=True)
class ColumnGroup:
    """A band of tile columns processed top to bottom before the next one."""

    index: int
    x0: int  # first output column this group finalises
    x1: int  # end (exclusive) of the columns it finalises
    cols: tuple[int, ...]  # tile-grid columns whose tiles start in [x0, x1)
    acc_x1: int  # end of the columns its tiles touch (>= x1; the excess is carried on)


@dataclass(frozen=True)
class TilePlan:
    """Which tiles cover a ``height`` x ``width`` grid, in which order, with which weights."""

    height: int
    width: int
    tile_size: int = 224
    overlap: int = 32
    block_size: int = 256  # output GeoTIFF block (rows are released in multiples of it)
    group_width: int = 2048  # column group width (rounded up to a multiple of block_size >= tile)
    row_origins: tuple[int, ...] = field(init=False)
    col_origins: tuple[int, ...] = field(init=False)
    groups: tuple[ColumnGroup, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.tile_size < 1 or not 0 <= self.overlap <= self.tile_size // 2:
            raise ConfigError(
                f"overlap must be between 0 and half the tile size ({self.tile_size // 2}), got {self.overlap}"
            )
        if self.block_size < 16 or self.block_size % 16:
            raise ConfigError(f"block size must be a multiple of 16, got {self.block_size}")
        set_ = object.__setattr__
        set_(self, "row_origins", axis_origins(self.height, self.tile_size, self.overlap))
        set_(self, "col_origins", axis_origins(self.width, self.tile_size, self.overlap))
        set_(self, "groups", self._make_groups())

    @property
    def effective_group_width(self) -> int:
        """Group width actually used: a multiple of the block size, at least one tile."""
        b = self.block_size
        return max(-(-self.group_width // b), -(-self.tile_size // b)) * b

    def _make_groups(self) -> tuple[ColumnGroup, ...]:
        gw, t = self.effective_group_width, self.tile_size
        borders = list(range(0, self.width, gw)) + [self.width]
        groups: list[list[int]] = []
        bounds: list[tuple[int, int]] = []
        for x0, x1 in zip(borders[:-1], borders[1:]):
            cols = [c for c, x in enumerate(self.col_origins) if x0 <= x < x1]
            if cols:
                groups.append(cols)
                bounds.append((x0, x1))
            else:  # no tile starts here: the previous group's tiles reach the end
                bounds[-1] = (bounds[-1][0], x1)
        out = []
        for i, (cols, (x0, x1)) in enumerate(zip(groups, bounds)):
            acc_x1 = min(self.width, max(self.col_origins[c] + t for c in cols))
            out.append(ColumnGroup(i, x0, x1, tuple(cols), max(acc_x1, x1)))
        return tuple(out)

    @property
    def num_tiles(self) -> int:
        return len(self.row_origins) * len(self.col_origins)

    def tiles(self) -> Iterator[Tile]:
        """Every tile in processing order: group by group, then row-major within a group."""
        i = 0
        for g in self.groups:
            for r, y in enumerate(self.row_origins):
                for c in g.cols:
                    yield Tile(i, r, c, g.index, y, self.col_origins[c])
                    i += 1

    def weights(self, tile: Tile) -> np.ndarray:
        """Blend weights ``(tile_size, tile_size)`` float32 of ``tile``."""
        wy = axis_weights(self.row_origins, tile.row, self.tile_size, self.overlap)
        wx = axis_weights(self.col_origins, tile.col, self.tile_size, self.overlap)
        return wy[:, None] * wx[None, :]  # (T, T)

    def rows_final_after(self, row: int) -> int:
        """Rows ``[0, n)`` that no tile after tile-row ``row`` touches, released in whole blocks."""
        if row + 1 >= len(self.row_origins):
            return self.height
        return (self.row_origins[row + 1] // self.block_size) * self.block_size

    def max_rows_in_flight(self, batch_size: int) -> int:
        """Strip height that holds every tile of a batch plus the rows not yet released.

        Batches never cross a column group and reach at most ``batch_row_span(batch_size)``
        tile-rows past their first; unreleased rows start less than one block above the first
        batch row; tile-rows are at most ``tile_size - overlap`` apart.
        """
        step = self.tile_size - self.overlap
        return min(self.height, self.block_size + self.batch_row_span(batch_size) * step + self.tile_size)

    def batch_row_span(self, batch_size: int) -> int:
        """How many tile-rows past its first one a batch may reach (narrow groups cut batches early)."""
        step = self.tile_size - self.overlap
        per_row = max(1, min(len(self.col_origins), self.effective_group_width // step))
        return math.ceil((batch_size - 1) / per_row) if batch_size > 1 else 0
