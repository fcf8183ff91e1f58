"""Chips on a raster grid and their train/val/test split by spatial blocks (numpy only, no torch).

A fine-tuning dataset is cut from co-registered rasters into square chips (``chip_windows``).
Neighbouring chips are strongly correlated, so a random split per chip (or worse, per pixel)
would leak: the validation score would measure memory, not generalisation. ``spatial_block_split``
therefore groups chips into square blocks of the grid (a chip belongs to the block holding its
centre) and assigns whole blocks to ``train``/``val``/``test``:

1. blocks are keyed ``(grid, block_row, block_col)`` and sorted, so the result does not depend on
   the order the chips are listed in;
2. they are shuffled with ``numpy.random.default_rng(seed)``;
3. each block in turn goes to the split whose chip count is furthest below its target
   (``fraction * number of chips``; ties in the order train, val, test).

The same chips, block size, fractions and seed always give the same split. Every split with a
non-zero fraction gets at least one block when there are enough blocks (step 3 guarantees it as
soon as a split's target exceeds the others' remaining deficits); ``check_splits`` says what to
change when a needed split stayed empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import ConfigError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ChipWindow:
    """A square chip: its grid (one raster set on one CRS/transform), top-left pixel and size."""

    grid: str
    row: int
    col: int
    size: int

    @property
    def chip_id(self) -> str:
        """The file-name stem of the chip, e.g. ``g0_r000064_c000128``."""
        return f"{self.grid}_r{self.row:06d}_c{self.col:06d}"


def _offsets(length: int, size: int, stride: int, cover_edge: bool) -> list[int]:
    starts = list(range(0, length - size + 1, stride))
    if cover_edge and starts and starts[-1] + size < length:
        starts.append(length - size)  # one more chip flush with the edge (overlaps its neighbour)
    return starts


def chip_windows(
    height: int, width: int, chip_size: int, *, stride: int | None = None, grid: str = "g0", cover_edges: bool = False
) -> list[ChipWindow]:
    """Chips of ``chip_size`` px covering a ``height`` x ``width`` grid, row-major.

    ``stride`` defaults to ``chip_size`` (no overlap). ``cover_edges`` adds a last row/column of
    chips flush with the bottom/right edge when the grid is not a multiple of the stride.
    """
    stride = int(stride or chip_size)
    if chip_size < 1 or stride < 1:
        raise ConfigError(f"chip size ({chip_size}) and stride ({stride}) must be positive")
    if height < chip_size or width < chip_size:
        raise ConfigError(
            f"grid '{grid}' is {height} x {width} px, smaller than one chip of {chip_size} px; choose a smaller chip size"
        )
    if not grid or any(c in grid for c in "/\\:_ ") or grid.startswith("."):
        raise ConfigError(f"grid id '{grid}' must be a plain word (no path separators, '_', ':' or spaces)")
    rows = _offsets(height, chip_size, stride, cover_edges)
    cols = _offsets(width, chip_size, stride, cover_edges)
    return [ChipWindow(grid, r, c, chip_size) for r in rows for c in cols]


def block_of(window: ChipWindow, block_size: int) -> tuple[str, int, int]:
    """The block holding the chip's centre pixel."""
    half = window.size // 2
    return window.grid, (window.row + half) // block_size, (window.col + half) // block_size


def spatial_block_split(
    windows: Sequence[ChipWindow],
    block_size: int,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> list[str]:
    """The split (``train``/``val``/``test``) of every window, by whole spatial blocks (module docstring)."""
    if block_size < 1:
        raise ConfigError(f"block size must be a positive number of pixels, got {block_size}")
    fr = np.asarray([float(f) for f in fractions], np.float64)
    if fr.shape != (3,) or (fr < 0).any() or not 0.999 <= fr.sum() <= 1.001 or fr[0] == 0:
        raise ConfigError(
            f"split fractions {list(fractions)} must be three non-negative numbers (train, val, test) "
            "that add up to 1, with a non-zero train fraction"
        )
    keys = [block_of(w, block_size) for w in windows]
    blocks = sorted(set(keys))
    members: dict[tuple[str, int, int], int] = {}
    for key in keys:
        members[key] = members.get(key, 0) + 1
    order = np.random.default_rng(int(seed)).permutation(len(blocks))
    target = fr * len(windows)
    count = np.zeros(3)
    assigned: dict[tuple[str, int, int], str] = {}
    for i in order:
        block = blocks[int(i)]
        deficit = np.where(fr > 0, target - count, -np.inf)
        s = int(np.argmax(deficit))  # first maximum: train, then val, then test
        assigned[block] = SPLITS[s]
        count[s] += members[block]
    return [assigned[key] for key in keys]


def split_counts(splits: Sequence[str]) -> dict[str, int]:
    """Number of chips per split name."""
    return {name: sum(1 for s in splits if s == name) for name in SPLITS}


def check_splits(splits: Sequence[str], needed: Sequence[str] = ("train", "val")) -> None:
    """Raise one ``ConfigError`` naming every needed split that has no chip, and what to change."""
    counts = split_counts(splits)
    unknown = sorted({s for s in splits} - set(SPLITS))
    if unknown:
        raise ConfigError(f"unknown split name(s) {unknown}; expected {', '.join(SPLITS)}")
    empty = [s for s in needed if counts.get(s, 0) == 0]
    if empty:
        raise ConfigError(
            f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty ({counts}); "
            "use more chips (a larger area or smaller chips), a smaller block size, or larger fractions for them"
        )
