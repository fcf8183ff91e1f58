"""Tiled runs whose output is one value per 16 x 16 patch ("token"), without seams (numpy).

The token grid is the working grid coarsened 16 times (``token_grid``): same CRS and origin,
16 x the pixel size, ``ceil(width / 16)`` x ``ceil(height / 16)`` cells. The last row and column
of tokens may reach past the working grid by < 16 pixels; the reader reflect-pads those pixels
(as the reference pads chips) and they count as outside the grid.

Tile plan (``TokenPlan``), per axis, in tokens: tiles of ``t = tile_size / 16`` tokens whose
neighbours overlap by at least ``o = overlap / 16`` tokens (``tiling.axis_origins`` in token units,
so every tile origin is a whole patch and token boundaries of all tiles line up).

Interior rule (``axis_keep``): each output token comes from exactly one tile, no blending.
Between neighbouring tiles k and k + 1 that share ``s`` tokens (s >= o), the cut lies in the middle
of the shared run: tile k keeps its tokens before ``origin[k+1] + s // 2``, tile k + 1 the rest. So a
kept token is at least ``s // 2 >= o // 2`` tokens (``overlap / 2`` pixels for overlaps of whole
32-pixel multiples) from the border of its tile that faces a neighbour; only at the raster's own
edges does a tile keep tokens up to its border. The kept ranges partition the token grid, so the
raster has no seams: every token is the feature a single forward pass computed with at least that
much context on each side. ``tests/unit/models/test_embedding_goldens.py`` proves it against
terratorch on a 2 x 2-tile raster.

A token is valid when every pixel of its patch that lies inside the working grid is valid (an input's
nodata anywhere in the patch makes the token nodata: the encoder saw filled values there).

Streaming (``run_token_tiles``): tiles row-major, in batches; the kept tokens go into a strip of
token rows ``(C, R, cols)`` with ``R = block + (batch tile-rows) * t``; rows are released in whole
blocks of ``block`` token rows (each output block written once) as soon as every tile that keeps
them has run. Memory: ``R * cols * C * 4`` bytes (e.g. (16 + 2 x 14) rows x 256 tokens x 768 x 4 =
35 MB for a 4096-pixel-wide raster with TerraMind base and batch 4); it grows with the raster's
width, not its height.
Cancellation is checked before every batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..core.embeddings import PATCH_SIZE, token_count
from ..core.errors import ConfigError
from ..core.progress import Progress, ScaledProgress, check_cancelled
from .accumulator import Released
from .grid import WorkingGrid
from .reader import InputStack
from .runner import TiledRunStats
from .tiling import Tile, axis_origins

PredictTokens = Callable[[list[Tile], dict[str, np.ndarray], Progress], np.ndarray]  # -> (B, C, t, t)


def token_grid(grid: WorkingGrid, patch: int = PATCH_SIZE) -> WorkingGrid:
    """The working grid coarsened ``patch`` times (same CRS and origin)."""
    from rasterio.transform import Affine

    t = grid.transform
    return WorkingGrid(grid.crs, Affine(t.a * patch, 0.0, t.c, 0.0, t.e * patch, t.f),
                       token_count(grid.width, patch), token_count(grid.height, patch), grid.note)  # fmt: skip


def fine_grid(tokens: WorkingGrid, width: int, height: int, patch: int = PATCH_SIZE) -> WorkingGrid:
    """The working grid a token grid coarsens (``width`` x ``height`` pixels, same origin)."""
    from rasterio.transform import Affine

    t = tokens.transform
    return WorkingGrid(tokens.crs, Affine(t.a / patch, 0.0, t.c, 0.0, t.e / patch, t.f), width, height, tokens.note)


def axis_keep(origins: tuple[int, ...], tile: int, length: int) -> tuple[tuple[int, int], ...]:
    """Token range ``[start, stop)`` each tile keeps along one axis (module docstring: the interior rule)."""
    cuts = [0]
    for a, b in zip(origins[:-1], origins[1:]):
        shared = a + tile - b
        cuts.append(b + shared // 2)
    cuts.append(length)
    return tuple((cuts[k], cuts[k + 1]) for k in range(len(origins)))


def token_valid(valid: np.ndarray, inside_h: int, inside_w: int, patch: int = PATCH_SIZE) -> np.ndarray:
    """Token validity ``(t, t)`` of a tile's pixel validity ``(T, T)``; pixels at/after ``inside_h`` rows or
    ``inside_w`` columns lie outside the working grid (padding) and do not count."""
    size = valid.shape[0]
    inside = np.zeros_like(valid)
    inside[:inside_h, :inside_w] = True
    t = size // patch
    ok = (valid | ~inside).reshape(t, patch, t, patch).all(axis=(1, 3))
    return ok & inside.reshape(t, patch, t, patch).any(axis=(1, 3))


@dataclass(frozen=True)
class TokenPlan:
    """Tiles over a ``height`` x ``width`` working grid and the tokens each keeps (module docstring)."""

    height: int  # working-grid pixels
    width: int
    tile_size: int = 224
    overlap: int = 32
    block: int = 16  # token rows per released block (the token raster's block height)
    patch: int = PATCH_SIZE
    rows: int = field(init=False)  # token grid
    cols: int = field(init=False)
    row_origins: tuple[int, ...] = field(init=False)  # tokens
    col_origins: tuple[int, ...] = field(init=False)
    row_keep: tuple[tuple[int, int], ...] = field(init=False)
    col_keep: tuple[tuple[int, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        p = self.patch
        if self.tile_size % p or self.overlap % p or self.tile_size < p:
            raise ConfigError(f"token tiles need a tile size and overlap of whole {p}-pixel patches, got "
                              f"{self.tile_size} and {self.overlap}", field="tiling.overlap")  # fmt: skip
        if not 0 <= self.overlap <= self.tile_size // 2:
            raise ConfigError(f"overlap must be between 0 and half the tile size, got {self.overlap}", field="tiling.overlap")
        set_ = object.__setattr__
        t, o = self.tile_size // p, self.overlap // p
        set_(self, "rows", token_count(self.height, p))
        set_(self, "cols", token_count(self.width, p))
        set_(self, "row_origins", axis_origins(self.rows, t, o))
        set_(self, "col_origins", axis_origins(self.cols, t, o))
        set_(self, "row_keep", axis_keep(self.row_origins, t, self.rows))
        set_(self, "col_keep", axis_keep(self.col_origins, t, self.cols))

    @property
    def tile_tokens(self) -> int:
        return self.tile_size // self.patch

    @property
    def num_tiles(self) -> int:
        return len(self.row_origins) * len(self.col_origins)

    def tiles(self) -> Iterator[Tile]:
        """Every tile, row-major (origins in working-grid pixels)."""
        i = 0
        for r, y in enumerate(self.row_origins):
            for c, x in enumerate(self.col_origins):
                yield Tile(i, r, c, 0, y * self.patch, x * self.patch)
                i += 1

    def kept(self, tile: Tile) -> tuple[int, int, int, int]:
        """Token rows ``[r0, r1)`` and columns ``[c0, c1)`` (absolute) that ``tile`` keeps."""
        (r0, r1), (c0, c1) = self.row_keep[tile.row], self.col_keep[tile.col]
        return r0, r1, c0, c1

    def strip_rows(self, batch_size: int) -> int:
        """Token rows held at once: one block plus every tile-row a batch can reach."""
        per_row = len(self.col_origins)
        span = math.ceil((batch_size - 1) / per_row) if batch_size > 1 else 0
        return min(self.rows, self.block + (span + 1) * self.tile_tokens)


def run_token_tiles(stack: InputStack, plan: TokenPlan, channels: int, predict: PredictTokens,
                    finish: Callable[[Released], None], *, batch_size: int, progress: Progress) -> TiledRunStats:  # fmt: skip
    """Run ``predict`` over the plan's tiles and hand the kept tokens to ``finish`` in whole token blocks.

    ``predict(tiles, inputs, progress)`` gets ``{key: (B, C_in, T, T)}`` raw tiles and returns
    ``(B, channels, t, t)``; ``finish`` receives ``Released`` blocks on the token grid (values under
    the head ``"tokens"``).
    """
    tiles = list(plan.tiles())
    stats = TiledRunStats(tiles=len(tiles))
    rows = plan.strip_rows(batch_size)
    values = np.zeros((channels, rows, plan.cols), np.float32)  # (C, R, cols)
    valid = np.zeros((rows, plan.cols), bool)  # (R, cols)
    stats.strip_bytes = values.nbytes + valid.nbytes
    top, i, size, p = 0, 0, plan.tile_size, plan.patch
    while i < len(tiles):
        check_cancelled(progress)
        first = i
        batch = []
        for tile in tiles[i : i + batch_size]:
            data, pixel_valid = stack.read_tile(tile.y, tile.x, size)
            ok = token_valid(pixel_valid, plan.height - tile.y, plan.width - tile.x, p)
            batch.append((tile, data, ok))
        i += len(batch)
        todo = [b for b in batch if b[2].any()]
        stats.skipped_nodata += len(batch) - len(todo)
        if todo:
            share = ScaledProgress(progress, 100.0 * first / len(tiles), 100.0 * i / len(tiles))
            inputs = {k: np.stack([b[1][k] for b in todo]) for k in todo[0][1]}  # (B, C, T, T)
            out = predict([b[0] for b in todo], inputs, share)  # (B, C, t, t)
            stats.predicted += len(todo)
            stats.batches += 1
            for j, (tile, _, ok) in enumerate(todo):
                r0, r1, c0, c1 = plan.kept(tile)
                ty, tx = tile.y // p, tile.x // p  # tile origin in tokens
                if r1 - top > rows:
                    raise RuntimeError(f"token row {r1} is outside the strip [{top}, {top + rows})")
                local = (slice(r0 - ty, r1 - ty), slice(c0 - tx, c1 - tx))
                values[:, r0 - top : r1 - top, c0:c1] = out[j][(slice(None), *local)]
                valid[r0 - top : r1 - top, c0:c1] = ok[local]
        progress.set_progress(100.0 * i / len(tiles))
        done_rows = plan.rows if i == len(tiles) else plan.row_keep[tiles[i].row][0]  # rows no later tile keeps
        upto = done_rows if done_rows == plan.rows else (done_rows // plan.block) * plan.block
        while top < upto:
            n = min(plan.block - top % plan.block, upto - top)
            finish(Released(top, 0, n, plan.cols, {"tokens": values[:, :n].copy()}, valid[:n].copy()))
            _scroll(values.transpose(1, 0, 2), n)
            _scroll(valid, n)
            top += n
    return stats


def _scroll(rows_first: np.ndarray, n: int) -> None:
    """Drop the first ``n`` rows (axis 0) in place: copy forward in chunks of ``n``, zero the tail."""
    keep = rows_first.shape[0] - n
    for s in range(0, keep, n):
        e = min(s + n, keep)
        rows_first[s:e] = rows_first[s + n : e + n]
    rows_first[keep:] = 0
