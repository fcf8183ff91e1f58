"""Fine-tuning datasets cut from the example patches (tests/data/examples), shared by the tests and
tools/goldens/training.py (which puts this folder on ``sys.path``).

``water_dataset``: S2L2A chips, LULC Water (1) vs everything else (0), four scenes.
``three_class_dataset``: S2L2A + S1RTC chips (a few S1RTC pixels set to NaN: nodata), LULC
Water (1), Trees (2), the rest (0); Built area (5) pixels are ignored (-1).
Both split the chips by spatial blocks of 128 px (fractions 0.6/0.2/0.2; seed 1 puts water in the
val split).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from terramind_qgis.models.core.modalities import MODALITIES, ClassInfo
from terramind_qgis.models.training.dataset import DatasetInfo, GridInfo, write_dataset
from terramind_qgis.models.training.split import chip_windows, spatial_block_split

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "tests" / "data" / "examples"
SCENES = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0")
HLS6 = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
BLOCK, FRACTIONS, SPLIT_SEED = 128, (0.6, 0.2, 0.2), 1
WATER_CLASSES = (ClassInfo(0, "Others", "#D9D9D9"), ClassInfo(1, "Water", "#1F77B4"))
THREE_CLASSES = (ClassInfo(0, "Others", "#D9D9D9"), ClassInfo(1, "Water", "#1F77B4"), ClassInfo(2, "Trees", "#2CA02C"))


def read(modality: str, scene: str) -> tuple[np.ndarray, GridInfo]:
    with rasterio.open(EXAMPLES / modality / f"{scene}.tif") as src:
        grid = GridInfo(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height, f"{modality}/{scene}.tif")
        return src.read(), grid


def _chips(chip: int, modalities: tuple[str, ...], label_fn) -> tuple[list, dict, np.ndarray, dict]:
    windows, images, labels, grids = [], {m: [] for m in modalities}, [], {}
    for gi, scene in enumerate(SCENES):
        g = f"g{gi}"
        data = {m: read(m, scene)[0] for m in modalities}
        lulc, grids[g] = read("LULC", scene)
        lab = label_fn(lulc[0])
        for w in chip_windows(lab.shape[0], lab.shape[1], chip, grid=g):
            windows.append(w)
            for m in modalities:
                images[m].append(data[m][:, w.row : w.row + chip, w.col : w.col + chip])
            labels.append(lab[w.row : w.row + chip, w.col : w.col + chip])
    return windows, {m: np.stack(v) for m, v in images.items()}, np.stack(labels), grids


def water_dataset(folder: Path, chip: int = 64) -> DatasetInfo:
    windows, images, labels, grids = _chips(chip, ("S2L2A",), lambda y: (y == 1).astype(np.int16))
    splits = spatial_block_split(windows, BLOCK, FRACTIONS, SPLIT_SEED)
    return write_dataset(folder, windows, splits, images, labels, modalities={"S2L2A": MODALITIES["S2L2A"].bands},
                         classes=WATER_CLASSES, chip_size=chip, grids=grids,
                         split_method={"method": "spatial_blocks", "block_size": BLOCK, "fractions": FRACTIONS,
                                       "seed": SPLIT_SEED})  # fmt: skip


def three_class_labels(lulc: np.ndarray) -> np.ndarray:
    out = np.zeros(lulc.shape, np.int16)
    out[lulc == 1] = 1
    out[lulc == 2] = 2
    out[lulc == 5] = -1
    return out


def three_class_dataset(folder: Path, chip: int = 64) -> DatasetInfo:
    windows, images, labels, grids = _chips(chip, ("S2L2A", "S1RTC"), three_class_labels)
    s1 = images["S1RTC"].astype(np.float32)
    s1[::5, :, 3:6, 10:14] = np.nan  # nodata in every fifth chip
    images["S1RTC"] = s1
    splits = spatial_block_split(windows, BLOCK, FRACTIONS, SPLIT_SEED)
    return write_dataset(folder, windows, splits, images, labels,
                         modalities={"S2L2A": MODALITIES["S2L2A"].bands, "S1RTC": MODALITIES["S1RTC"].bands},
                         classes=THREE_CLASSES, chip_size=chip, grids=grids)  # fmt: skip


STEP_CROPS = (("282D_485L_3_3", 128, 64), ("433D_629L_3_1", 64, 64))  # (scene, row, col) of the 64 px step batch


def step_batch() -> tuple[np.ndarray, np.ndarray]:
    """The fixed batch of the training-step goldens: S2L2A ``(2, 12, 64, 64)`` standardised with
    TerraMind's pre-training statistics, and the three-class labels ``(2, 64, 64)`` (-1 ignored)."""
    s2 = MODALITIES["S2L2A"]
    mean = np.asarray(s2.mean, np.float32)[:, None, None]
    std = np.asarray(s2.std, np.float32)[:, None, None]
    xs, ys = [], []
    for scene, r, c in STEP_CROPS:
        x = read("S2L2A", scene)[0][:, r : r + 64, c : c + 64].astype(np.float32)
        xs.append((x - mean) / std)
        ys.append(three_class_labels(read("LULC", scene)[0][0])[r : r + 64, c : c + 64])
    return np.stack(xs), np.stack(ys).astype(np.int64)
