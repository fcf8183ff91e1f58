"""The training-curve PNG: train/val loss and val mIoU per epoch, drawn with numpy, encoded with zlib.

Why not matplotlib: it would add a ~40 MB dependency tree (matplotlib, fonttools, kiwisolver,
contourpy, pillow) to the worker environment for one small chart. The chart needs lines, markers,
axes with ticks and a handful of labels, which a numpy canvas with a 5 x 7 bitmap font
(``bitmap_font.py``) draws; the PNG container is a few lines of ``zlib`` + ``struct`` (RGB, 8 bit,
filter 0). Two panels: left "loss" (train and val), right "val mIoU" (0 to 1), both over "epoch".
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .bitmap_font import HEIGHT, text_bitmap

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (200, 200, 200)
TRAIN, VAL, MIOU = (31, 119, 180), (214, 39, 40), (44, 160, 44)  # category10 blue, red, green


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 image."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


class Canvas:
    """An RGB image with the few drawing operations the chart needs (pixel coordinates, y down)."""

    def __init__(self, width: int, height: int) -> None:
        self.rgb = np.full((height, width, 3), 255, dtype=np.uint8)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        h, w, _ = self.rgb.shape
        xa, xb = sorted((max(0, min(w, x0)), max(0, min(w, x1))))
        ya, yb = sorted((max(0, min(h, y0)), max(0, min(h, y1))))
        self.rgb[ya:yb, xa:xb] = color

    def line(self, x0: float, y0: float, x1: float, y1: float, color: tuple[int, int, int], width: int = 2) -> None:
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for t in np.linspace(0.0, 1.0, steps):
            x, y = round(x0 + t * (x1 - x0)), round(y0 + t * (y1 - y0))
            self.rect(x - width // 2, y - width // 2, x - width // 2 + width, y - width // 2 + width, color)

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int] = BLACK, scale: int = 2,
             anchor: str = "left", vertical: bool = False) -> None:  # fmt: skip
        """Draw ``text`` with its top-left (``anchor`` left), top-centre or top-right at ``(x, y)``."""
        bitmap = text_bitmap(text, scale)
        if vertical:
            bitmap = np.rot90(bitmap)
        bh, bw = bitmap.shape
        x = {"left": x, "center": x - bw // 2, "right": x - bw}[anchor]
        y = y - bh // 2 if vertical else y
        h, w, _ = self.rgb.shape
        ys, xs = np.nonzero(bitmap)
        ys, xs = ys + y, xs + x
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        self.rgb[ys[keep], xs[keep]] = color


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 x 10^n)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.1
    raw = (hi - lo) / max(1, count - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 5, 10) if s * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = [start + i * step for i in range(int(math.ceil((hi - start) / step)) + 1)]
    return [round(t, 10) for t in ticks]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 and abs(v) >= 1 else f"{v:.3g}"


Series = tuple[str, Sequence[float], tuple[int, int, int]]  # (legend, values per epoch, colour)


def _panel(c: Canvas, box: tuple[int, int, int, int], epochs: Sequence[int], series: Sequence[Series],
           ylabel: str, ylim: tuple[float, float] | None) -> None:  # fmt: skip
    x0, y0, x1, y1 = box
    values = [v for _, vs, _ in series for v in vs if math.isfinite(v)]
    yt = nice_ticks(*(ylim or ((min(values), max(values)) if values else (0.0, 1.0))))
    ylo, yhi = yt[0], yt[-1]
    xlo, xhi = (min(epochs), max(epochs)) if epochs else (1, 1)
    xspan = max(1, xhi - xlo)

    def px(e: float) -> float:
        return x0 + (e - xlo) / xspan * (x1 - x0) if xhi > xlo else (x0 + x1) / 2

    def py(v: float) -> float:
        return y1 - (v - ylo) / (yhi - ylo) * (y1 - y0)

    for t in yt:
        c.line(x0, py(t), x1, py(t), GREY, 1)
        c.text(x0 - 8, round(py(t)) - HEIGHT, _fmt(t), anchor="right")
    xstep = max(1, math.ceil(xspan / 8))
    for e in range(xlo, xhi + 1, xstep):
        c.line(px(e), y1, px(e), y1 + 6, BLACK, 2)
        c.text(round(px(e)), y1 + 10, str(e), anchor="center")
    c.line(x0, y0, x0, y1, BLACK, 2)
    c.line(x0, y1, x1, y1, BLACK, 2)
    c.text((x0 + x1) // 2, y1 + 34, "epoch", anchor="center")
    c.text(x0 - 90, (y0 + y1) // 2, ylabel, vertical=True)
    for i, (name, vs, color) in enumerate(series):
        pts = [(px(e), py(v)) for e, v in zip(epochs, vs) if math.isfinite(v)]
        for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
            c.line(xa, ya, xb, yb, color, 3)
        for xa, ya in pts:
            c.rect(round(xa) - 4, round(ya) - 4, round(xa) + 5, round(ya) + 5, color)
        ly = y0 + 8 + 24 * i
        c.rect(x1 - 150, ly + 4, x1 - 126, ly + 9, color)
        c.text(x1 - 118, ly, name)


def training_curve(epochs: Sequence[int], train_loss: Sequence[float], val_loss: Sequence[float],
                   val_miou: Sequence[float], title: str = "") -> np.ndarray:  # fmt: skip
    """The chart as an ``(H, W, 3)`` uint8 image."""
    c = Canvas(1000, 430)
    c.text(500, 12, title or "training curve", anchor="center")
    _panel(c, (100, 50, 470, 350), epochs, [("train loss", train_loss, TRAIN), ("val loss", val_loss, VAL)], "loss", None)
    _panel(c, (610, 50, 980, 350), epochs, [("val mIoU", val_miou, MIOU)], "val mIoU", (0.0, 1.0))
    return c.rgb


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write ``rgb`` as a PNG atomically (temporary name, then rename)."""
    path = Path(path)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    partial.write_bytes(encode_png(rgb))
    os.replace(partial, path)
    return path
