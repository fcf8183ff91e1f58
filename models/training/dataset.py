"""A fine-tuning dataset on disk in the layout of TerraTorch's ``GenericMultiModalDataModule``.

Layout (``terratorch/datamodules/generic_multimodal_data_module.py`` with
``terratorch/datasets/generic_multimodal_dataset.py``, 1.2.11: one data root per modality, files
``<chip><image_grep>``, a label root with ``<chip><label_grep>``, split files listing chip ids)::

    <folder>/
      dataset.json                    what this module defines (below)
      <MODALITY>/<chip>_<MODALITY>.tif    one folder per input modality (image_grep "*_<MODALITY>.tif")
      label/<chip>_label.tif          int16 class ids, nodata and ignored pixels -1 (label_grep "*_label.tif")
      split/train.txt, val.txt, test.txt   one chip id per line (train_split, val_split, test_split)

Chips are DEFLATE-compressed GeoTIFFs with the chip's CRS and transform, in the dtype given
(float64 becomes float32, as TerraTorch's dataset casts it), NaN or the given nodata value for
missing pixels (TerraTorch reads them masked and replaces them with ``no_data_replace``).

``dataset.json`` (format ``terramind_qgis.dataset`` version 1): ``chip_size``; ``modalities``
(folder, suffix, bands, dtype, nodata, and the per-band ``mean``/``std`` of the valid pixels of
the TRAIN chips); ``label`` (folder, suffix, nodata); ``classes`` (value, name, colour);
``ignore_index`` (-1); ``splits`` (file, chips, ``class_pixels`` per class, ``ignored_pixels``);
``grids`` (id → CRS WKT, transform, size, source); ``chips`` (id, grid, row, col, split);
``split_method`` and ``provenance`` (whatever the caller records: sources, parameters, time).

``DatasetWriter`` writes into ``<folder>.partial-<pid>`` and renames it to ``folder`` on
``commit``: a reader never sees half a dataset. Chips without a single labelled pixel are skipped
(they carry no training signal, and a batch of them makes the cross-entropy 0/0).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError, InputRasterError
from ..core.modalities import ClassInfo
from ..core.training_params import DATASET_FORMAT, DATASET_FORMAT_VERSION, read_dataset_document
from .split import SPLITS, ChipWindow, check_splits

IGNORE_INDEX = -1
LABEL_FOLDER = "label"
LABEL_SUFFIX = "_label.tif"
SPLIT_FOLDER = "split"


def image_suffix(modality: str) -> str:
    return f"_{modality}.tif"


@dataclass(frozen=True)
class GridInfo:
    """One raster grid chips are cut from: CRS (WKT or ``EPSG:n``), affine transform (a, b, c, d, e, f), size."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    source: str = ""


@dataclass(frozen=True)
class ModalityInfo:
    folder: str
    suffix: str
    bands: tuple[str, ...]
    dtype: str
    nodata: float | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    valid_pixels: int


@dataclass(frozen=True)
class SplitInfo:
    file: str
    chips: int
    class_pixels: tuple[int, ...]
    ignored_pixels: int


@dataclass(frozen=True)
class DatasetInfo:
    """``dataset.json`` of a dataset folder, read and checked (``read_dataset``)."""

    folder: Path
    chip_size: int
    modalities: dict[str, ModalityInfo]
    classes: tuple[ClassInfo, ...]
    splits: dict[str, SplitInfo]
    grids: dict[str, GridInfo]
    chips: tuple[dict[str, Any], ...]
    ignore_index: int = IGNORE_INDEX
    split_method: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def chip_ids(self, split: str) -> list[str]:
        """The chip ids of ``split`` in the order of its split file."""
        path = self.folder / self.splits[split].file
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def image_path(self, modality: str, chip_id: str) -> Path:
        m = self.modalities[modality]
        return self.folder / m.folder / f"{chip_id}{m.suffix}"

    def label_path(self, chip_id: str) -> Path:
        return self.folder / LABEL_FOLDER / f"{chip_id}{LABEL_SUFFIX}"


class _Moments:
    """Per-band count, mean and sum of squared deviations, merged chip by chip (Chan et al.)."""

    def __init__(self, bands: int) -> None:
        self.n = np.zeros(bands, np.int64)
        self.mean = np.zeros(bands, np.float64)
        self.m2 = np.zeros(bands, np.float64)

    def update(self, x: np.ndarray, valid: np.ndarray) -> None:
        """Add the ``valid`` pixels ``(C, H, W)`` of chip ``x`` ``(C, H, W)``."""
        for b in range(x.shape[0]):
            v = x[b][valid[b]].astype(np.float64)
            if v.size == 0:
                continue
            n_b, mean_b = v.size, float(v.mean())
            m2_b = float(((v - mean_b) ** 2).sum())
            n = self.n[b] + n_b
            delta = mean_b - self.mean[b]
            self.mean[b] += delta * n_b / n
            self.m2[b] += m2_b + delta * delta * self.n[b] * n_b / n
            self.n[b] = n

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / np.maximum(self.n, 1))  # population std (ddof 0)


def _valid(x: np.ndarray, nodata: float | None) -> np.ndarray:
    valid = np.isfinite(x) if np.issubdtype(x.dtype, np.floating) else np.ones(x.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        valid &= x != nodata
    return valid


def _storage_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float64 else np.dtype(dtype)


class DatasetWriter:
    """Writes chips one by one (``add``), then ``commit`` computes statistics and writes ``dataset.json``.

    ``modalities``: band names per input modality (model channel order); ``nodata``: the nodata value of
    a modality's chips (None: only NaN is missing); ``grids``: the grids the chip windows refer to.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        modalities: Mapping[str, Sequence[str]],
        classes: Sequence[ClassInfo],
        chip_size: int,
        grids: Mapping[str, GridInfo],
        nodata: Mapping[str, float | None] | None = None,
        split_method: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not overwrite:
            raise ConfigError(f"dataset folder '{self.folder}' exists already; choose a new folder or allow overwriting")
        if self.folder.exists() and not (self.folder / "dataset.json").is_file():
            raise ConfigError(f"'{self.folder}' exists and is not a dataset folder (no dataset.json); it is not replaced")
        if not modalities:
            raise ConfigError("a dataset needs at least one input modality")
        if len(classes) < 2 or [c.value for c in classes] != list(range(len(classes))):
            raise ConfigError(f"classes must be numbered 0..K-1 with K >= 2, got values {[c.value for c in classes]}")
        self.modalities = {m: tuple(b) for m, b in modalities.items()}
        for m in self.modalities:
            if not m or any(c in m for c in "/\\:_ ."):
                raise ConfigError(f"modality name '{m}' must be a plain word (it names a folder and a file suffix)")
        self.classes = tuple(classes)
        self.chip_size = int(chip_size)
        self.grids = dict(grids)
        self.nodata = {m: (None if nodata is None else nodata.get(m)) for m in self.modalities}
        self.split_method = dict(split_method or {})
        self.provenance = dict(provenance or {})
        self.overwrite = overwrite
        self.partial = self.folder.with_name(f"{self.folder.name}.partial-{os.getpid()}")
        if self.partial.exists():
            shutil.rmtree(self.partial)
        for sub in (*(m for m in self.modalities), LABEL_FOLDER, SPLIT_FOLDER):
            (self.partial / sub).mkdir(parents=True)
        self.chips: list[dict[str, Any]] = []
        self.dtypes: dict[str, np.dtype] = {}
        self.moments = {m: _Moments(len(b)) for m, b in self.modalities.items()}
        self.class_pixels = {s: np.zeros(len(self.classes), np.int64) for s in SPLITS}
        self.ignored = dict.fromkeys(SPLITS, 0)
        self.skipped = 0

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, window: ChipWindow, split: str, images: Mapping[str, np.ndarray], label: np.ndarray) -> str | None:
        """Write one chip: ``images[modality]`` ``(C, H, W)``, ``label`` ``(H, W)`` (class ids, -1 ignored).

        Returns the chip id, or None when the chip has no labelled pixel (skipped).
        """
        import rasterio
        from rasterio.transform import Affine

        cid = window.chip_id
        if split not in SPLITS:
            raise ConfigError(f"chip {cid}: split '{split}' is not one of {', '.join(SPLITS)}")
        if window.grid not in self.grids:
            raise ConfigError(f"chip {cid}: grid '{window.grid}' is not among the dataset's grids {sorted(self.grids)}")
        size = (self.chip_size, self.chip_size)
        label = np.asarray(label)
        if label.shape != size:
            raise InputRasterError(f"chip {cid}: label is {label.shape}, expected {size}")
        bad = np.unique(label[(label != IGNORE_INDEX) & ((label < 0) | (label >= len(self.classes)))])
        if bad.size:
            raise InputRasterError(
                f"chip {cid}: label values {bad[:10].tolist()} are not class ids 0..{len(self.classes) - 1} "
                f"or the ignore value {IGNORE_INDEX}"
            )
        if not (label != IGNORE_INDEX).any():
            self.skipped += 1
            return None
        missing = sorted(set(self.modalities) - set(images))
        if missing:
            raise InputRasterError(f"chip {cid}: no image for modality {missing}")
        a, b, c, d, e, f = self.grids[window.grid].transform
        grid = self.grids[window.grid]
        transform = Affine(a, b, c + a * window.col + b * window.row, d, e, f + d * window.col + e * window.row)
        profile = dict(driver="GTiff", height=size[0], width=size[1], crs=grid.crs, transform=transform,
                       compress="deflate")  # fmt: skip
        for m, bands in self.modalities.items():
            x = np.asarray(images[m])
            if x.shape != (len(bands), *size):
                raise InputRasterError(f"chip {cid}: {m} image is {x.shape}, expected ({len(bands)}, {size[0]}, {size[1]})")
            dtype = self.dtypes.setdefault(m, _storage_dtype(x.dtype))
            x = x.astype(dtype, copy=False)
            floating = np.issubdtype(dtype, np.floating)
            nodata = self.nodata[m] if self.nodata[m] is not None else (float("nan") if floating else None)
            path = self.partial / m / f"{cid}{image_suffix(m)}"
            with rasterio.open(path, "w", **profile, count=len(bands), dtype=dtype.name, nodata=nodata,
                               predictor=3 if floating else 2) as dst:  # fmt: skip
                dst.write(x)
                dst.descriptions = bands
            if split == "train":
                self.moments[m].update(x, _valid(x, self.nodata[m]))
        with rasterio.open(self.partial / LABEL_FOLDER / f"{cid}{LABEL_SUFFIX}", "w", **profile, count=1,
                           dtype="int16", nodata=IGNORE_INDEX, predictor=2) as dst:  # fmt: skip
            dst.write(label.astype(np.int16)[None])
        labelled = label[label != IGNORE_INDEX]
        self.class_pixels[split] += np.bincount(labelled.astype(np.int64), minlength=len(self.classes))
        self.ignored[split] += int(label.size - labelled.size)
        self.chips.append({"id": cid, "grid": window.grid, "row": window.row, "col": window.col, "split": split})
        return cid

    def commit(self, needed_splits: Sequence[str] = ("train", "val")) -> DatasetInfo:
        """Statistics, split files and ``dataset.json``; then the rename that publishes the folder."""
        try:
            check_splits([c["split"] for c in self.chips], needed_splits)
            for m, mom in self.moments.items():
                if (mom.n == 0).any():
                    empty = [self.modalities[m][b] for b in np.flatnonzero(mom.n == 0)]
                    raise InputRasterError(f"modality {m}: bands {empty} have no valid pixel in the train chips")
            splits = {}
            for s in SPLITS:
                ids = [c["id"] for c in self.chips if c["split"] == s]
                (self.partial / SPLIT_FOLDER / f"{s}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
                splits[s] = {"file": f"{SPLIT_FOLDER}/{s}.txt", "chips": len(ids),
                             "class_pixels": self.class_pixels[s].tolist(), "ignored_pixels": self.ignored[s]}  # fmt: skip
            doc = {
                "format": DATASET_FORMAT,
                "format_version": DATASET_FORMAT_VERSION,
                "layout": "terratorch.datamodules.GenericMultiModalDataModule",
                "chip_size": self.chip_size,
                "modalities": {
                    m: {"folder": m, "suffix": image_suffix(m), "bands": list(b), "dtype": self.dtypes[m].name,
                        "nodata": self.nodata[m], "mean": self.moments[m].mean.tolist(),
                        "std": self.moments[m].std().tolist(), "valid_pixels": int(self.moments[m].n.min())}
                    for m, b in self.modalities.items()
                },  # fmt: skip
                "label": {"folder": LABEL_FOLDER, "suffix": LABEL_SUFFIX, "dtype": "int16", "nodata": IGNORE_INDEX},
                "classes": [asdict(c) for c in self.classes],
                "ignore_index": IGNORE_INDEX,
                "splits": splits,
                "statistics_from": "train",
                "skipped_unlabelled_chips": self.skipped,
                "grids": {g: {**asdict(info), "transform": list(info.transform)} for g, info in self.grids.items()},
                "split_method": self.split_method,
                "provenance": self.provenance,
                "chips": self.chips,
            }
            (self.partial / "dataset.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
        except BaseException:
            self.abort()
            raise
        if self.folder.exists():  # overwrite=True, checked to be a dataset folder in __init__
            shutil.rmtree(self.folder)
        os.replace(self.partial, self.folder)
        return read_dataset(self.folder)

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def write_dataset(
    folder: str | os.PathLike[str],
    windows: Sequence[ChipWindow],
    splits: Sequence[str],
    images: Mapping[str, np.ndarray],
    labels: np.ndarray,
    **writer_args: Any,
) -> DatasetInfo:
    """All chips at once: ``images[modality]`` ``(N, C, H, W)``, ``labels`` ``(N, H, W)``; see ``DatasetWriter``."""
    if not (len(windows) == len(splits) == len(labels)) or any(len(v) != len(windows) for v in images.values()):
        raise ConfigError("write_dataset: windows, splits, labels and every image array need one entry per chip")
    with DatasetWriter(folder, **writer_args) as writer:
        for i, (window, split) in enumerate(zip(windows, splits)):
            writer.add(window, split, {m: v[i] for m, v in images.items()}, labels[i])
        return writer.commit()


def read_dataset(folder: str | os.PathLike[str]) -> DatasetInfo:
    """The ``DatasetInfo`` of a dataset folder, with one ``ConfigError`` when it is not one."""
    folder = Path(folder)
    path, doc = read_dataset_document(folder, None)
    try:
        return DatasetInfo(
            folder=folder,
            chip_size=int(doc["chip_size"]),
            modalities={
                m: ModalityInfo(d["folder"], d["suffix"], tuple(d["bands"]), d["dtype"], d["nodata"],
                                tuple(d["mean"]), tuple(d["std"]), int(d["valid_pixels"]))
                for m, d in doc["modalities"].items()
            },  # fmt: skip
            classes=tuple(ClassInfo(int(c["value"]), str(c["name"]), str(c["color"])) for c in doc["classes"]),
            splits={s: SplitInfo(d["file"], int(d["chips"]), tuple(d["class_pixels"]), int(d["ignored_pixels"]))
                    for s, d in doc["splits"].items()},  # fmt: skip
            grids={g: GridInfo(d["crs"], tuple(d["transform"]), int(d["width"]), int(d["height"]), d.get("source", ""))
                   for g, d in doc["grids"].items()},  # fmt: skip
            chips=tuple(doc["chips"]),
            ignore_index=int(doc.get("ignore_index", IGNORE_INDEX)),
            split_method=dict(doc.get("split_method") or {}),
            provenance=dict(doc.get("provenance") or {}),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path} is incomplete or malformed ({type(e).__name__}: {e})") from None
