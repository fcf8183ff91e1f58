"""Helpers shared by the multi-temporal tests and their golden script (tools/goldens/temporal.py).

The golden script imports this module too (with the reference interpreter), so the toy encoders and
the tiled input are defined once: the goldens and the tests run the SAME encoder weights and the
SAME input arrays, and only the code under test (terratorch's ``TemporalWrapper`` there, ours
here) differs.

- ``ToyTokenEncoder`` / ``ToyConvEncoder``: tiny deterministic backbones (weights from the rule of
  models/weights/untrained.py under the key prefix ``toy.``) producing ViT-style tokens
  ``(B, N, D)`` (optionally as ``{modality: tokens}`` dicts) or conv maps ``(B, C, h, w)`` at two
  scales, so every branch of the wrapper runs.
- ``WRAPPER_CASES``: the wrapper-alone cases (pooling × encoder kind × input kind × date groups).
- ``tiled_inputs()``: the 4-date, 3-modality 480×480 input of the tiled-inference golden, built
  from the example patches in tests/data/examples with documented perturbations (see there).

Dimensions: ``B`` batch, ``C`` channels, ``T`` dates, ``H, W`` image size, ``N`` tokens, ``D`` width.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from terramind_qgis.models.weights.untrained import deterministic_tensor

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "tests" / "data" / "examples"


def fill_(module: nn.Module, prefix: str) -> nn.Module:
    """Every tensor of ``module`` from the untrained rule (key ``<prefix>.<name>``); eval mode."""
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            tensor.copy_(deterministic_tensor(f"{prefix}.{name}", tensor.shape, tensor.dtype))
    return module.eval()


class ToyTokenEncoder(nn.Module):
    """Patchify (4×4, stride 4) then ``depth`` tanh-linear layers: ``depth`` × ``(B, N, D)``.

    A dict input is embedded per modality and summed; ``dict_output`` returns every layer as
    ``{modality: (B, N, D)}`` (the layer applied to each modality's own tokens).
    """

    def __init__(self, channels: Mapping[str, int] | int, dim: int = 8, depth: int = 3, dict_output: bool = False):
        super().__init__()
        self.names = list(channels) if isinstance(channels, Mapping) else ["image"]
        sizes = dict(channels) if isinstance(channels, Mapping) else {"image": int(channels)}
        self.embed = nn.ModuleDict({k: nn.Conv2d(c, dim, 4, 4) for k, c in sizes.items()})
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth))
        self.dict_output = dict_output
        self.out_channels = [dim] * depth
        fill_(self, "toy.token")

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> list:
        d = dict(x) if isinstance(x, Mapping) else {"image": x}
        tokens = {k: self.embed[k](v).flatten(2).transpose(1, 2) for k, v in d.items()}  # {m: (B, N, D)}
        out = []
        if self.dict_output:
            for layer in self.layers:
                tokens = {k: torch.tanh(layer(t)) for k, t in tokens.items()}
                out.append(dict(tokens))
            return out
        h = sum(tokens.values())  # (B, N, D)
        for layer in self.layers:
            h = torch.tanh(layer(h))  # (B, N, D)
            out.append(h)
        return out


class ToyConvEncoder(nn.Module):
    """Two stride-2 conv stages: ``[(B, 6, H/2, W/2), (B, 5, H/4, W/4)]`` (a dict input is concatenated)."""

    def __init__(self, channels: int):
        super().__init__()
        self.stage1 = nn.Conv2d(channels, 6, 3, 2, 1)
        self.stage2 = nn.Conv2d(6, 5, 3, 2, 1)
        self.out_channels = [6, 5]
        fill_(self, "toy.conv")

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        if isinstance(x, Mapping):
            x = torch.cat(list(x.values()), dim=1)  # (B, C, H, W)
        a = torch.relu(self.stage1(x))  # (B, 6, H/2, W/2)
        return [a, self.stage2(a)]  # + (B, 5, H/4, W/4)


# name -> encoder kind, input kind ("tensor" 3 bands, or "dict" {a: 3 bands, b: 1 band}), dates,
# TemporalWrapper kwargs. B = 2, H = W = 16 (16 tokens per date).
WRAPPER_CASES: dict[str, dict] = {
    **{f"token_tensor_{p}": dict(encoder="token", input="tensor", dates=2 if p == "diff" else 3, pooling=p)
       for p in ("mean", "max", "diff", "keep", "concat")},
    **{f"token_dict_{p}": dict(encoder="token", input="dict", dates=2 if p == "diff" else 3, pooling=p)
       for p in ("mean", "concat", "diff")},
    **{f"dict_output_{p}": dict(encoder="dict_output", input="dict", dates=3, pooling=p) for p in ("mean", "keep", "concat")},
    **{f"conv_{p}": dict(encoder="conv", input="tensor", dates=2 if p == "diff" else 3, pooling=p)
       for p in ("mean", "max", "diff", "keep", "concat")},
    **{f"token_subsets_{p}": dict(encoder="token", input="tensor", dates=5, pooling=p, subset_lengths=[2, 3])
       for p in ("mean", "max", "diff", "keep", "concat")},
    "conv_subsets_diff": dict(encoder="conv", input="dict", dates=5, pooling="diff", subset_lengths=[1, 4]),
    "conv_subsets_mean_three": dict(encoder="conv", input="tensor", dates=6, pooling="mean", subset_lengths=[1, 2, 3]),
    "conv_permuted_mean": dict(encoder="conv", input="tensor", dates=3, pooling="mean", features_permute_op=[0, 2, 3, 1]),
    "token_concat_n_timestamps": dict(encoder="token", input="tensor", dates=3, pooling="concat", n_timestamps=3),
    "token_concat_subsets_n_timestamps": dict(encoder="token", input="tensor", dates=5, pooling="concat",
                                              subset_lengths=[2, 3], n_timestamps=5),
}  # fmt: skip


def wrapper_encoder(case: dict) -> nn.Module:
    """The (filled) toy encoder of a wrapper case."""
    if case["encoder"] == "conv":
        return ToyConvEncoder(4 if case["input"] == "dict" else 3)
    channels = {"a": 3, "b": 1} if case["input"] == "dict" else 3
    return ToyTokenEncoder(channels, dict_output=case["encoder"] == "dict_output")


def wrapper_kwargs(case: dict) -> dict:
    return {k: case[k] for k in ("pooling", "n_timestamps", "subset_lengths", "features_permute_op") if k in case}


def wrapper_input(name: str, case: dict) -> torch.Tensor | dict[str, torch.Tensor]:
    """``(2, C, T, 16, 16)`` inputs of a case (a tensor, or ``{a: 3 bands, b: 1 band}``)."""
    t = case["dates"]
    if case["input"] == "dict":
        return {m: deterministic_tensor(f"toy.input.{name}.{m}", (2, c, t, 16, 16)) for m, c in (("a", 3), ("b", 1))}
    return deterministic_tensor(f"toy.input.{name}", (2, 3, t, 16, 16))


def flatten_outputs(outputs: list) -> dict[str, np.ndarray]:
    """Wrapper outputs as ``{'<layer>' or '<layer>.<modality>': array}``."""
    flat = {}
    for i, o in enumerate(outputs):
        if isinstance(o, Mapping):
            flat.update({f"{i}.{k}": v.detach().numpy() for k, v in o.items()})
        else:
            flat[str(i)] = o.detach().numpy()
    return flat


# ---- the tiled-inference input -------------------------------------------------------------------------------

TILED_SIZE = 480
MOSAIC = (("282D_485L_3_3", "38D_378R_2_3"), ("433D_629L_3_1", "609U_541L_3_0"))  # 2 x 2 scenes = 448 x 448
S2_GAIN = (1.0, 0.92, 1.05, 0.97)  # per date
S2_OFFSET = (0, 40, -25, 10)  # DN, per date
S1_SHIFT = (0.0, -0.5, 0.25, -1.0)  # dB, per date
FLOOD = (slice(150, 330), slice(100, 260))  # rows, cols flooded from date 2 on
CLOUD = (1, slice(300, 400), slice(320, 440))  # date, rows, cols
NODATA = (3, slice(40, 72), slice(400, 460))  # date, rows, cols: NaN in every S2L2A band


def _mosaic(modality: str) -> np.ndarray:
    import rasterio

    rows = []
    for row in MOSAIC:
        tiles = []
        for scene in row:
            with rasterio.open(EXAMPLES / modality / f"{scene}.tif") as src:
                tiles.append(src.read().astype(np.float64))  # (C, 224, 224)
        rows.append(np.concatenate(tiles, axis=2))
    mosaic = np.concatenate(rows, axis=1)  # (C, 448, 448)
    pad = (TILED_SIZE - mosaic.shape[1]) // 2
    return np.pad(mosaic, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")  # (C, 480, 480)


def tiled_inputs() -> dict[str, np.ndarray]:
    """The raw 4-date input of the tiled golden, per modality ``(T, C, H, W)`` float32 (file layout).

    Base image: the four example scenes as a 2 × 2 mosaic (448 × 448), reflect-padded by 16 to
    480 × 480. Dates ``t = 0..3`` simulate a flood:

    - S2L2A: ``round(x * S2_GAIN[t]) + S2_OFFSET[t]`` clipped to 0..10000 (illumination); from
      date 2 on the ``FLOOD`` rectangle is water-dark (``round(0.3 x)``); date 1 has a bright cloud
      (``7000 + 100 * band``) in ``CLOUD``; date 3 has no data (NaN, every band) in ``NODATA``;
    - S1RTC: ``x + S1_SHIFT[t]`` dB; from date 2 on ``FLOOD`` is 8 dB darker (specular water);
    - DEM: one date ``(1, 1, H, W)``, as ImpactMesh stores it (its data set repeats it over the
      dates; so does the model, ``SegmentationModel.standardize``).
    """
    s2, s1, dem = _mosaic("S2L2A"), _mosaic("S1RTC"), _mosaic("DEM")
    s2_dates, s1_dates = [], []
    for t in range(4):
        x = np.clip(np.round(s2 * S2_GAIN[t]) + S2_OFFSET[t], 0, 10000)
        v = s1 + S1_SHIFT[t]
        if t >= 2:
            x[:, FLOOD[0], FLOOD[1]] = np.round(0.3 * x[:, FLOOD[0], FLOOD[1]])
            v[:, FLOOD[0], FLOOD[1]] -= 8.0
        if t == CLOUD[0]:
            x[:, CLOUD[1], CLOUD[2]] = 7000 + 100 * np.arange(x.shape[0])[:, None, None]
        if t == NODATA[0]:
            x[:, NODATA[1], NODATA[2]] = np.nan
        s2_dates.append(x)
        s1_dates.append(v)
    return {
        "S2L2A": np.stack(s2_dates).astype(np.float32),  # (4, 12, 480, 480)
        "S1RTC": np.stack(s1_dates).astype(np.float32),  # (4, 2, 480, 480)
        "DEM": dem[None].astype(np.float32),  # (1, 1, 480, 480)
    }


def array_sha256(a: np.ndarray) -> str:
    """SHA-256 of an array's C-order bytes (float32 NaN included), with its shape and dtype."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.shape}{a.dtype}".encode() + a.tobytes()).hexdigest()


# ---- the tiled input as GeoTIFFs (one file per date, as a GIS analyst has them) ----------------------------

TILED_CRS = "EPSG:32632"
TILED_ORIGIN = (500000.0, 5000000.0)  # top-left corner, 10 m pixels


def write_date_rasters(folder: Path, raw: Mapping[str, np.ndarray] | None = None, crop: tuple[int, int, int, int] | None = None
                       ) -> dict[str, list[Path]]:  # fmt: skip
    """``tiled_inputs()`` (or ``raw``) as float32 GeoTIFFs ``<MODALITY>_t<date>.tif`` on a 10 m UTM grid.

    One file per date (NaN stays NaN: no nodata value is set, so NaN is what marks it); the DEM is one
    file. ``crop`` = (row, col, height, width) writes that window only (on the same grid)."""
    import rasterio
    from rasterio.transform import from_origin

    raw = raw if raw is not None else tiled_inputs()
    folder.mkdir(parents=True, exist_ok=True)
    r, c, h, w = crop or (0, 0, *next(iter(raw.values())).shape[-2:])
    transform = from_origin(TILED_ORIGIN[0] + 10.0 * c, TILED_ORIGIN[1] - 10.0 * r, 10.0, 10.0)
    files: dict[str, list[Path]] = {}
    for name, dates in raw.items():  # (T, C, H, W)
        files[name] = []
        for t, image in enumerate(dates):
            path = folder / f"{name}_t{t + 1}.tif"
            with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=image.shape[0], dtype="float32",
                               crs=TILED_CRS, transform=transform) as dst:  # fmt: skip
                dst.write(image[:, r : r + h, c : c + w].astype(np.float32))
            files[name].append(path)
    return files
