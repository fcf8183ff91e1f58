"""The chips of one split as a torch ``Dataset``, read as TerraTorch's generic multimodal dataset reads them.

``terratorch/datasets/generic_multimodal_dataset.py`` (1.2.11) opens every file with
``rioxarray.open_rasterio(masked=True)``: nodata pixels become NaN, the label's NaN becomes
``no_label_replace`` (-1), inputs keep NaN until ``no_data_replace`` fills them; float64 becomes
float32; ``output_bands`` selects channels of ``dataset_bands``. ``ChipDataset`` returns the same
sample dict: ``{"image": {modality: (C, H, W) float32, NaN at nodata}, "mask": (H, W) int64,
"index": int, "filename": chip id}``. Standardisation (NaN → ``no_data_replace``, then mean/std)
happens on the batch, as TerraTorch's data module does after the transfer
(``SegmentationModel.standardize`` in models/segmentation/model.py does exactly that).

Labels are small and read every epoch, so they are kept in memory after the first read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.errors import ConfigError, InputRasterError
from .dataset import DatasetInfo


def read_chip(path: Any, bands: Sequence[int] | None = None) -> np.ndarray:
    """A chip file as float32 ``(C, H, W)`` with NaN where the file has nodata (1-based ``bands``)."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            data = src.read(list(bands) if bands else None, out_dtype="float32", masked=True)
    except rasterio.errors.RasterioIOError as e:
        raise InputRasterError(f"cannot read chip '{path}': {e}") from None
    return np.ma.filled(data, np.nan).astype(np.float32, copy=False)


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch: ``image`` ``{modality: (B, C, H, W)}``, ``mask`` ``(B, H, W)``."""
    return {
        "image": {m: torch.stack([s["image"][m] for s in samples]) for m in samples[0]["image"]},
        "mask": torch.stack([s["mask"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples]),
        "filename": [s["filename"] for s in samples],
    }


class ChipDataset(Dataset):
    """The chips of ``split``; ``bands[modality]`` (band names) selects channels like ``output_bands``."""

    def __init__(
        self,
        info: DatasetInfo,
        split: str,
        modalities: Sequence[str] | None = None,
        bands: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if split not in info.splits:
            raise ConfigError(f"dataset {info.folder} has no split '{split}' (it has {', '.join(info.splits)})")
        self.info = info
        self.split = split
        self.modalities = list(modalities or info.modalities)
        missing = [m for m in self.modalities if m not in info.modalities]
        if missing:
            raise ConfigError(
                f"the dataset {info.folder} has no {', '.join(missing)} chips (it has {', '.join(info.modalities)})"
            )
        self.band_index: dict[str, list[int] | None] = {}
        for m in self.modalities:
            chosen = (bands or {}).get(m)
            have = info.modalities[m].bands
            if chosen is None or tuple(chosen) == have:
                self.band_index[m] = None
                continue
            unknown = [b for b in chosen if b not in have]
            if unknown:
                raise ConfigError(f"bands {unknown} of {m} are not in the dataset (its {m} bands: {', '.join(have)})")
            self.band_index[m] = [have.index(b) + 1 for b in chosen]
        self.ids = info.chip_ids(split)
        self._labels: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, index: int) -> dict[str, torch.Tensor]:
        """The input chips of sample ``index``: ``{modality: (C, H, W)}`` float32 with NaN at nodata."""
        cid = self.ids[index]
        return {m: torch.from_numpy(read_chip(self.info.image_path(m, cid), self.band_index[m])) for m in self.modalities}

    def label(self, index: int) -> torch.Tensor:
        """The label chip ``(H, W)`` int64 (ignored pixels ``ignore_index``)."""
        if index not in self._labels:
            lab = read_chip(self.info.label_path(self.ids[index]))[0]  # (H, W), NaN at nodata
            lab = np.nan_to_num(lab, nan=float(self.info.ignore_index))
            self._labels[index] = torch.from_numpy(lab.astype(np.int16))
        return self._labels[index].long()

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.image(index), "mask": self.label(index), "index": index, "filename": self.ids[index]}
