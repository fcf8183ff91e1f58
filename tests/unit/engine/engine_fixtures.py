"""Helpers of the engine tests (imported by the test modules of this folder): GeoTIFF fixtures and small real torch
models for the engine.

The models (identity, a fixed 3x3 convolution, a class-logit model) are legitimate fixtures: the
engine is model-agnostic, and these make its stitching exactly checkable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from terramind_qgis.models.core.job import InputSpec
from terramind_qgis.models.core.modalities import get_modality
from terramind_qgis.models.core.progress import NullProgress
from terramind_qgis.models.engine import InputRaster, InputStack, Released, TilePlan, build_working_grid, run_tiled

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"
UTM32 = "EPSG:32632"


def write_tif(path, data, *, crs=UTM32, transform=None, nodata=None, x0=500000.0, y0=5000000.0, res=10.0):
    """Write ``data`` ``(C, H, W)`` as a plain GeoTIFF and return its path as a string."""
    data = np.asarray(data)
    transform = transform or from_origin(x0, y0, res, res)
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype, crs=crs, transform=transform, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


def read_tif(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile


def open_stack(paths: dict[str, str], extent=None, bands=None, nodata=None, file_nodata=True):
    """Open inputs ``{modality: path}`` on the working grid of the first one."""
    keys = list(paths)
    with rasterio.open(paths[keys[0]]) as src:
        grid = build_working_grid(src, keys[0], extent)
    inputs = [InputRaster(k, InputSpec(p, bands=bands, nodata=nodata, file_nodata=file_nodata, name=f"layer {k}"),
                          get_modality(k), grid)
              for k, p in paths.items()]
    return grid, InputStack(inputs, grid)


class Identity(torch.nn.Module):
    def forward(self, x):
        return x.clone()


class FixedConv(torch.nn.Module):
    """A 3x3 convolution with fixed, non-symmetric weights (zero padding at tile edges)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=True)
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            self.conv.weight.copy_(torch.rand(self.conv.weight.shape, generator=g) - 0.3)
            self.conv.bias.copy_(torch.rand(channels, generator=g))

    def forward(self, x):
        return self.conv(x)


class ThresholdLogits(torch.nn.Module):
    """Class logits: class k where band 0 lies in [k*step, (k+1)*step), as 10 one-hot-like logits."""

    def __init__(self, step: float, classes: int = 10) -> None:
        super().__init__()
        self.step, self.classes = step, classes

    def forward(self, x):
        k = torch.clamp((x[:, 0] / self.step).floor().long(), 0, self.classes - 1)  # (B, H, W)
        return torch.nn.functional.one_hot(k, self.classes).permute(0, 3, 1, 2).float() * 5.0  # (B, K, H, W)


def predictor(model: torch.nn.Module, key: str, head: str = "out", calls: list | None = None):
    """``run_tiled`` predict function applying ``model`` to input ``key``."""

    def predict(tiles, inputs, progress):
        if calls is not None:
            calls.append([(t.row, t.col) for t in tiles])
        with torch.inference_mode():
            y = model(torch.from_numpy(inputs[key]))
        return {head: y.numpy()}

    return predict


def run_to_array(stack, plan: TilePlan, heads: dict[str, int], predict, batch_size=3):
    """Run the engine and assemble every released block into full arrays (test-only)."""
    g = stack.grid
    out = {k: np.full((c, g.height, g.width), np.nan, np.float32) for k, c in heads.items()}
    valid = np.zeros((g.height, g.width), bool)
    seen = np.zeros((g.height, g.width), int)

    def finish(rel: Released) -> None:
        win = (slice(rel.row, rel.row + rel.height), slice(rel.col, rel.col + rel.width))
        for k, v in rel.values.items():
            out[k][(slice(None), *win)] = v
        valid[win] = rel.valid
        seen[win] += 1

    stats = run_tiled(stack, plan, heads, predict, finish, batch_size=batch_size, progress=NullProgress())
    assert (seen == 1).all(), "every pixel must be released exactly once"
    return out, valid, stats
