"""Bounded-memory blending of overlapping tile outputs (the streaming accumulator).

Tile outputs are blended as ``sum(w * out) / sum(w)`` with the plan's weights (``tiling.py``).
Instead of canvases the size of the raster (terratorch's ``InMemoryTileSink``), the
``StreamingBlender`` keeps a *strip* for the current column group only: for every head (one
accumulated output, e.g. 12 S2L2A bands or 10 LULC logits) a float32 sum buffer ``(C, R, Wg)``,
one weight buffer and one validity buffer ``(R, Wg)``, where

- ``Wg`` = the column-group width plus one tile (what a group's last tiles spill over), and
- ``R``  = ``TilePlan.max_rows_in_flight(batch_size)``: one output block, one tile, and the
  tile-rows a batch can span.

Neither depends on the raster size, only on tile size, batch size and group width (the test
``test_blender_allocation_is_independent_of_raster_size`` checks the allocated bytes).

Rows are released (``release``) when no later tile of the group can touch them, in whole blocks,
and the strip scrolls up. What a group's tiles add right of the group's border belongs to the
next group's pixels: those columns are appended, row by row, to a small *carry file* on disk
(float32 records ``(C_total + 2, carry width)`` per row: the sums of every head, the weight and
the validity) and added back when the next group releases the same rows, so blending across
group borders is exact and nothing the size of the raster is ever held in memory.

Shapes: C channels of a head, R strip rows, Wg strip columns, h/w released block size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .tiling import ColumnGroup, Tile, TilePlan


@dataclass
class Released:
    """A finished block of the output: blended values of every head and the validity."""

    row: int  # working-grid window
    col: int
    height: int
    width: int
    values: dict[str, np.ndarray]  # head -> (C, h, w) float32 (0 where invalid)
    valid: np.ndarray  # (h, w) bool: input valid everywhere and at least one tile contributed


class _CarryFile:
    """Rows of carried sums/weight/validity, written and then read back strictly in order."""

    def __init__(self, folder: str, width: int, channels: int) -> None:
        fd, self.path = tempfile.mkstemp(prefix="carry-", suffix=".f32", dir=folder)
        os.close(fd)
        self.width, self.channels = width, channels
        self._out = open(self.path, "wb")  # noqa: SIM115 - closed in finish_writing/remove
        self._in = None

    def append(self, records: np.ndarray) -> None:
        self._out.write(np.ascontiguousarray(records, dtype=np.float32).tobytes())  # (h, K, cw)

    def finish_writing(self) -> None:
        self._out.close()
        self._in = open(self.path, "rb")  # noqa: SIM115

    def take(self, rows: int) -> np.ndarray:
        count = rows * self.channels * self.width
        data = np.fromfile(self._in, dtype=np.float32, count=count)
        return data.reshape(rows, self.channels, self.width)  # (h, K, cw)

    def remove(self) -> None:
        for f in (self._out, self._in):
            if f is not None and not f.closed:
                f.close()
        if os.path.exists(self.path):
            os.remove(self.path)


class StreamingBlender:
    """Accumulates weighted tile outputs for one column group at a time; see the module docstring."""

    def __init__(self, plan: TilePlan, heads: dict[str, int], batch_size: int, scratch: str | None = None) -> None:
        """``scratch``: path prefix of the folder for the carry files (``job.blend_scratch_prefix``: next to
        the output, where the QGIS side finds leftovers); None: the system's temporary folder."""
        self.plan, self.heads = plan, dict(heads)
        self.rows = plan.max_rows_in_flight(batch_size)
        # widest group + one tile of spill-over (a merged last group is < group + tile wide too)
        self.cols = min(plan.width, plan.effective_group_width + plan.tile_size)
        assert all(g.acc_x1 - g.x0 <= self.cols for g in plan.groups)
        self.sums = {k: np.zeros((c, self.rows, self.cols), np.float32) for k, c in self.heads.items()}
        self.weight = np.zeros((self.rows, self.cols), np.float32)  # (R, Wg)
        self.valid = np.zeros((self.rows, self.cols), bool)  # (R, Wg)
        folder, prefix = os.path.split(scratch) if scratch else (None, "terramind-blend-")
        self._workdir = tempfile.mkdtemp(prefix=prefix, dir=folder or None)
        self._k = sum(self.heads.values()) + 2  # carry record channels
        self.group: ColumnGroup | None = None
        self._carry_in: _CarryFile | None = None
        self._carry_out: _CarryFile | None = None
        self.top = 0  # working-grid row of strip row 0 (all rows above it are released)

    @property
    def nbytes(self) -> int:
        """Bytes held by the strip buffers (the bounded part of the memory)."""
        return sum(a.nbytes for a in self.sums.values()) + self.weight.nbytes + self.valid.nbytes

    # -- groups --------------------------------------------------------------------------------
    def begin_group(self, group: ColumnGroup) -> None:
        """Start a column group: clear the strip, hand the previous group's carry over."""
        if self._carry_in is not None:
            self._carry_in.remove()
        self._carry_in = self._carry_out
        if self._carry_in is not None:
            self._carry_in.finish_writing()
        self._carry_out = None
        if group.acc_x1 > group.x1:
            self._carry_out = _CarryFile(self._workdir, group.acc_x1 - group.x1, self._k)
        self.group, self.top = group, 0
        for a in (*self.sums.values(), self.weight, self.valid):
            a.fill(0)

    # -- accumulation --------------------------------------------------------------------------
    def add(self, tile: Tile, outputs: dict[str, np.ndarray], valid: np.ndarray, weights: np.ndarray) -> None:
        """Add one tile's outputs ``{head: (C, T, T)}`` with blend ``weights`` ``(T, T)``."""
        g, t = self.group, self.plan.tile_size
        assert g is not None and tile.group == g.index, "tile added outside its column group"
        h = min(t, self.plan.height - tile.y)
        w = min(t, self.plan.width - tile.x)
        r0, c0 = tile.y - self.top, tile.x - g.x0
        if r0 < 0 or r0 + h > self.rows:
            raise RuntimeError(f"tile row {tile.y} is outside the strip [{self.top}, {self.top + self.rows})")
        dst = (slice(r0, r0 + h), slice(c0, c0 + w))
        wt = weights[:h, :w]
        for key, out in outputs.items():
            self.sums[key][(slice(None), *dst)] += out[:, :h, :w] * wt  # (C, h, w)
        self.weight[dst] += wt
        self.valid[dst] |= valid[:h, :w]

    # -- release -------------------------------------------------------------------------------
    def release(self, upto_row: int) -> Iterator[Released]:
        """Finish rows ``[top, upto_row)`` of the current group, one output block-row at a time."""
        g, bs = self.group, self.plan.block_size
        assert g is not None
        while self.top < upto_row:
            n = min(bs - self.top % bs, upto_row - self.top)  # stop at block borders
            yield self._release_rows(g, n)
            self._scroll(n)

    def _release_rows(self, g: ColumnGroup, n: int) -> Released:
        width_out, cw_out = g.x1 - g.x0, g.acc_x1 - g.x1
        if self._carry_in is not None:  # the previous group's spill-over into our first columns
            rec = self._carry_in.take(n)  # (n, K, cw)
            cw, i = rec.shape[2], 0
            for key, c in self.heads.items():
                self.sums[key][:, :n, :cw] += rec[:, i : i + c].transpose(1, 0, 2)  # (C, n, cw)
                i += c
            self.weight[:n, :cw] += rec[:, i]
            self.valid[:n, :cw] |= rec[:, i + 1] > 0
        if self._carry_out is not None:
            sl = slice(width_out, width_out + cw_out)
            parts = [self.sums[k][:, :n, sl].transpose(1, 0, 2) for k in self.heads]  # (n, C, cw)
            parts += [self.weight[None, :n, sl].transpose(1, 0, 2)]
            parts += [self.valid[None, :n, sl].transpose(1, 0, 2).astype(np.float32)]
            self._carry_out.append(np.concatenate(parts, axis=1))  # (n, K, cw)
        wt = self.weight[:n, :width_out]  # (n, w)
        valid = self.valid[:n, :width_out] & (wt > 0)
        safe = np.where(valid, wt, 1.0).astype(np.float32)
        values = {}
        for key in self.heads:
            v = self.sums[key][:, :n, :width_out] / safe  # (C, n, w)
            v[:, ~valid] = 0.0
            values[key] = v
        return Released(self.top, g.x0, n, width_out, values, valid)

    def _scroll(self, n: int) -> None:
        """Drop the first ``n`` strip rows (copy forward in chunks of ``n``, no temporary)."""
        keep = self.rows - n
        for a in (*self.sums.values(), self.weight, self.valid):
            view = a if a.ndim == 2 else a.transpose(1, 0, 2)  # rows first
            for s in range(0, keep, n):
                e = min(s + n, keep)
                view[s:e] = view[s + n : e + n]
            view[keep:] = 0
        self.top += n

    def close(self) -> None:
        """Remove the carry files and the work folder."""
        for c in (self._carry_in, self._carry_out):
            if c is not None:
                c.remove()
        self._carry_in = self._carry_out = None
        try:
            for name in os.listdir(self._workdir):
                os.remove(os.path.join(self._workdir, name))
            os.rmdir(self._workdir)
        except OSError:
            pass
