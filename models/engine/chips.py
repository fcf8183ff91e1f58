"""TerraTorch's tiled inference as a tile plan of the streaming engine (pure numpy).

A fine-tuned model whose config has ``tiled_inference_parameters`` (ImpactMesh: crop 256, stride
208, delta 8) was evaluated with ``terratorch/tasks/tiled_inference.py::tiled_inference`` (1.2.11);
a run of it here cuts the same chips and blends them the same way, streaming as the engine always
does (memory depends on chip and batch size, not on the raster):

- the input is reflect-padded by ``delta`` (``padding='reflect'``); in padded coordinates chips of
  ``crop`` start at ``range(0, H + 2·delta − crop − 1, stride)`` plus one flush with the far edge;
- each chip's logits lose their outer ``delta`` pixels, so chip ``P`` (padded origin) gives the
  ``K = crop − 2·delta`` output pixels starting at image pixel ``P``: ``ChipPlan`` is a ``TilePlan``
  of ``K``-pixel tiles at those origins (``chip_origins``), and ``ChipReader`` reads each tile's chip,
  ``delta`` pixels more on every side, reflect-padded where it leaves the raster;
- every kept region is weighted by the outer product of two 1-D windows that are 1 except cosine
  ramps of length ``L = min(crop // 2, crop − stride) − delta`` at both ends (``get_blend_mask``:
  ``cos(π (i + 1) / (L + 1)) / 2 + 0.5``, flipped at the start), plus 1e-6; the engine's blender then
  forms Σ w · logits / Σ w (``average_patches``);
- ``delta`` is cut to ``(crop − stride) // 2`` when larger (``TiledInferenceSpec.effective_delta``);
  a raster no larger than one chip is one forward pass on the raster itself (``whole``).

Where ``tiled_inference`` fails, the plan still covers every pixel: a flush origin of 1 (an axis of
``K + 1`` pixels) gets the chip at 0 too, and an axis shorter than ``K`` (with the other axis longer
than a chip) gets one chip at 0, reflect-padded beyond the raster. A backend that serves one fixed
chip size (ONNX) never takes the ``whole`` path: small rasters are cut into padded chips.

Shapes: C channels, T dates, K kept chip size, h/w window size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .grid import WorkingGrid
from .tiling import Tile, TilePlan

BLEND_EPS = 1e-6  # get_blend_mask's "buffer to ensure every pixel gets a generation"


class WindowSource(Protocol):
    """What ``reflect_window`` reads: an input stack with in-grid windows (``InputStack``, ``TemporalStack``)."""

    grid: WorkingGrid

    def read_window(self, row: int, col: int, height: int, width: int) -> tuple[dict[str, np.ndarray], np.ndarray]: ...


def chip_origins(length: int, crop: int, stride: int, delta: int) -> tuple[int, ...]:
    """Image pixels where the chips' kept regions start along an axis of ``length`` (module docstring)."""
    kept = crop - 2 * delta
    flush = max(length - kept, 0)  # the padded origin of the chip flush with the far edge
    return tuple(sorted({0, flush, *range(0, length - kept - 1, stride)}))


def chip_axis_window(crop: int, stride: int, delta: int, blend: bool = True) -> np.ndarray:
    """The 1-D blend window ``(crop − 2·delta,)`` float32 of ``get_blend_mask`` (ones without ``blend``)."""
    kept = crop - 2 * delta
    w = np.ones(kept, dtype=np.float32)
    ramp_len = min(crop // 2, crop - stride) - delta
    if blend and ramp_len > 0:
        i = np.arange(ramp_len, dtype=np.float32)
        ramp = (np.cos(np.float32(math.pi) * (i + 1) / np.float32(ramp_len + 1)) / 2 + 0.5).astype(np.float32)
        w[:ramp_len] = ramp[::-1]
        w[-ramp_len:] = ramp
    return w


@dataclass(frozen=True)
class ChipPlan(TilePlan):
    """A ``TilePlan`` whose tiles are the kept regions of TerraTorch's chips (module docstring).

    Build it with ``ChipPlan.build``; ``tile_size`` is the kept size ``K`` (the whole raster's larger
    side for a ``whole`` plan) and ``overlap`` is ``K − stride``, so the engine's strip bounds hold.
    """

    crop: int = 224
    stride: int = 192
    delta: int = 8
    blend: bool = True
    whole: bool = False  # one forward pass on the whole raster

    @classmethod
    def build(cls, height: int, width: int, crop: int, stride: int, delta: int, *, blend: bool = True,
              any_size: bool = True, block_size: int = 256, group_width: int = 2048) -> ChipPlan:  # fmt: skip
        """The plan of a ``height`` × ``width`` raster; ``delta`` is the effective one; ``any_size``: the
        model runs on any image size (torch), so a raster within one chip is one forward pass."""
        if not 0 <= 2 * delta < crop or not 1 <= stride <= crop - 2 * delta:
            raise ValueError(f"chips of {crop} px every {stride} px cannot drop {delta} px at their borders")
        if any_size and height <= crop and width <= crop:
            return cls(height, width, max(height, width), 0, block_size, group_width, crop=crop, stride=stride,
                       delta=0, blend=blend, whole=True)  # fmt: skip
        kept = crop - 2 * delta
        return cls(height, width, kept, kept - stride, block_size, group_width, crop=crop, stride=stride, delta=delta,
                   blend=blend)  # fmt: skip

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.whole:
            set_(self, "row_origins", (0,))
            set_(self, "col_origins", (0,))
        else:
            set_(self, "row_origins", chip_origins(self.height, self.crop, self.stride, self.delta))
            set_(self, "col_origins", chip_origins(self.width, self.crop, self.stride, self.delta))
        set_(self, "groups", self._make_groups())
        window = np.ones(self.tile_size, np.float32) if self.whole else chip_axis_window(self.crop, self.stride,
                                                                                           self.delta, self.blend)  # fmt: skip
        mask = window[:, None] * window[None, :]
        set_(self, "_mask", mask if self.whole else mask + np.float32(BLEND_EPS if self.blend else 0.0))

    @property
    def chip_size(self) -> tuple[int, int] | None:
        """The chip a forward pass sees (``None`` for a ``whole`` plan: the raster's own size)."""
        return None if self.whole else (self.crop, self.crop)

    def weights(self, tile: Tile) -> np.ndarray:
        return self._mask  # type: ignore[attr-defined]  # the same mask for every chip, as with padding

    def describe(self) -> str:
        if self.whole:
            return f"one forward pass on the whole {self.width} x {self.height} raster (no larger than a {self.crop} px chip)"
        return (f"TerraTorch's tiled inference: chips of {self.crop} px every {self.stride} px, {self.delta} px dropped "
                f"at chip borders, {self.num_tiles} chips")  # fmt: skip


def reflect_window(source: WindowSource, row: int, col: int, height: int, width: int
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:  # fmt: skip
    """A window that may reach past the grid on any side: the part inside is read, the rest is its
    reflection at the raster's edges (``torch.nn.functional.pad(mode='reflect')`` of the whole raster)
    and invalid. Arrays keep their leading axes (``(C, h, w)`` or ``(C, T, h, w)``)."""
    g = source.grid
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, g.height), min(col + width, g.width)
    data, valid = source.read_window(r0, c0, r1 - r0, c1 - c0)
    pad = ((r0 - row, row + height - r1), (c0 - col, col + width - c1))
    if any(p for pair in pad for p in pair):
        data = {k: np.pad(d, ((0, 0),) * (d.ndim - 2) + pad, mode="reflect") for k, d in data.items()}
        valid = np.pad(valid, pad, mode="constant", constant_values=False)
    return data, valid


class ChipReader:
    """Reads the chip of each tile of a ``ChipPlan`` from an input stack (what ``run_tiled`` calls).

    ``read_tile(y, x, size)`` returns the chip's arrays (``crop`` px; a ``whole`` plan: the raster's
    own size) and the validity of the tile's kept region ``(size, size)``; ``crop_outputs`` cuts a
    model's chip outputs back to the kept regions.
    """

    def __init__(self, source: Any, plan: ChipPlan) -> None:
        self.source, self.plan = source, plan
        self.grid = source.grid

    @property
    def inputs(self) -> list[Any]:
        return self.source.inputs

    def read_tile(self, y: int, x: int, size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        p = self.plan
        if p.whole:
            data, valid = self.source.read_window(0, 0, p.height, p.width)
            return data, np.pad(valid, ((0, size - p.height), (0, size - p.width)), constant_values=False)
        d = p.delta
        data, valid = reflect_window(self.source, y - d, x - d, p.crop, p.crop)
        return data, valid[d : d + size, d : d + size]

    def crop_outputs(self, outputs: np.ndarray) -> np.ndarray:
        """``(B, K, crop, crop)`` chip outputs → ``(B, K, T, T)`` kept regions (a ``whole`` plan: zero-padded to T)."""
        p, t = self.plan, self.plan.tile_size
        if p.whole:
            return np.pad(outputs, ((0, 0), (0, 0), (0, t - outputs.shape[-2]), (0, t - outputs.shape[-1])))
        return outputs[..., p.delta : p.delta + t, p.delta : p.delta + t]

    def close(self) -> None:
        self.source.close()
