"""The streaming tiled loop: read tiles, batch them, predict, blend, release finished blocks.

``run_tiled`` is numpy-level and model-agnostic. The caller supplies

- ``predict(tiles, inputs, progress) -> outputs``: ``inputs`` maps each input key to a
  ``(B, C, T, T)`` float32 array in raw units (nodata already 0); ``outputs`` maps each head to
  ``(B, C_head, T, T)`` float32 (class heads: logits). ``progress`` is scaled to the batch's share,
  so a model can report per diffusion step and check cancellation there;
- ``finish(released)``: receives every finished block (``accumulator.Released``) once, in
  group/row order, and writes it.

Tiles whose pixels are all invalid are read but never predicted. A batch holds at most
``batch_size`` tiles to predict, never crosses a column group, and spans at most
``plan.batch_row_span(batch_size)`` tile-rows past its first (this bounds the strip memory).
Cancellation is checked before every batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..core.progress import Progress, ScaledProgress, check_cancelled
from .accumulator import Released, StreamingBlender
from .reader import InputStack
from .tiling import Tile, TilePlan

Predict = Callable[[list[Tile], dict[str, np.ndarray], Progress], dict[str, np.ndarray]]


@dataclass
class TiledRunStats:
    """What a tiled run did (reported in the worker's result)."""

    tiles: int = 0
    predicted: int = 0
    skipped_nodata: int = 0
    batches: int = 0
    strip_bytes: int = 0  # bytes held by the blender's strip buffers


def run_tiled(
    stack: InputStack,
    plan: TilePlan,
    heads: dict[str, int],
    predict: Predict,
    finish: Callable[[Released], None],
    *,
    batch_size: int,
    progress: Progress,
    scratch: str | None = None,
) -> TiledRunStats:
    """Run ``predict`` over every tile of ``plan`` and hand blended blocks to ``finish``.

    ``scratch``: where the blender keeps its carry files (``StreamingBlender``).
    """
    stats = TiledRunStats(tiles=plan.num_tiles)
    blender = StreamingBlender(plan, heads, batch_size, scratch)
    stats.strip_bytes = blender.nbytes
    span, t_size = plan.batch_row_span(batch_size), plan.tile_size
    by_group: dict[int, list[Tile]] = {g.index: [] for g in plan.groups}
    for t in plan.tiles():
        by_group[t.group].append(t)
    before = 0  # tiles of the groups already finished
    try:
        for group in plan.groups:
            blender.begin_group(group)
            tiles, i = by_group[group.index], 0
            while i < len(tiles):
                check_cancelled(progress)
                first, first_row = i, tiles[i].row
                batch: list[tuple[Tile, dict[str, np.ndarray], np.ndarray]] = []
                while i < len(tiles) and len(batch) < batch_size and tiles[i].row <= first_row + span:
                    tile = tiles[i]
                    data, valid = stack.read_tile(tile.y, tile.x, t_size)
                    i += 1
                    if valid.any():
                        batch.append((tile, data, valid))
                    else:
                        stats.skipped_nodata += 1
                if batch:
                    share = ScaledProgress(progress, 100.0 * (before + first) / plan.num_tiles,
                                           100.0 * (before + i) / plan.num_tiles)  # fmt: skip
                    _predict_batch(batch, predict, blender, plan, share)
                    stats.predicted += len(batch)
                    stats.batches += 1
                progress.set_progress(100.0 * (before + i) / plan.num_tiles)
                upto = plan.height if i == len(tiles) else plan.rows_final_after(tiles[i].row - 1) if tiles[i].row else 0
                for released in blender.release(upto):
                    finish(released)
            before += len(tiles)
    finally:
        blender.close()
    return stats


def _predict_batch(
    batch: list[tuple[Tile, dict[str, np.ndarray], np.ndarray]],
    predict: Predict,
    blender: StreamingBlender,
    plan: TilePlan,
    progress: Progress,
) -> None:
    tiles = [b[0] for b in batch]
    keys = batch[0][1].keys()
    inputs = {k: np.stack([b[1][k] for b in batch]) for k in keys}  # (B, C, T, T)
    outputs = predict(tiles, inputs, progress)
    for j, (tile, _, valid) in enumerate(batch):
        blender.add(tile, {k: v[j] for k, v in outputs.items()}, valid, plan.weights(tile))
