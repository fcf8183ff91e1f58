"""Fine-tuning data: chip windows, spatial-block splits, the dataset writer (TerraTorch layout + dataset.json),
the chip reader and D4 augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from example_data import EXAMPLES, SCENES, WATER_CLASSES

from terramind_qgis.models.core.errors import ConfigError, InputRasterError
from terramind_qgis.models.training.augment import d4
from terramind_qgis.models.training.chip_dataset import ChipDataset
from terramind_qgis.models.training.dataset import GridInfo, read_dataset, write_dataset
from terramind_qgis.models.training.split import ChipWindow, block_of, check_splits, chip_windows, spatial_block_split


def test_chip_windows_cover_the_grid() -> None:
    w = chip_windows(224, 200, 64, grid="a")
    assert [(x.row, x.col) for x in w[:4]] == [(0, 0), (0, 64), (0, 128), (64, 0)] and len(w) == 9
    edge = chip_windows(224, 200, 64, grid="a", cover_edges=True)
    assert {x.row for x in edge} == {0, 64, 128, 160} and {x.col for x in edge} == {0, 64, 128, 136}
    assert len(chip_windows(224, 224, 64, stride=32)) == 36
    assert w[4].chip_id == "a_r000064_c000064"
    with pytest.raises(ConfigError, match="smaller than one chip of 256 px"):
        chip_windows(224, 224, 256)
    with pytest.raises(ConfigError, match="grid id 'a_b'"):
        chip_windows(224, 224, 64, grid="a_b")


def test_spatial_block_split_is_deterministic_by_whole_blocks() -> None:
    windows = [w for g in ("p", "q") for w in chip_windows(512, 512, 64, grid=g)]  # 128 chips, 32 blocks of 128 px
    splits = spatial_block_split(windows, 128, (0.6, 0.2, 0.2), seed=3)
    assert splits == spatial_block_split(list(reversed(windows)), 128, (0.6, 0.2, 0.2), seed=3)[::-1]  # order-free
    assert splits != spatial_block_split(windows, 128, (0.6, 0.2, 0.2), seed=4)
    by_block: dict = {}
    for w, s in zip(windows, splits):
        by_block.setdefault(block_of(w, 128), set()).add(s)
    assert all(len(s) == 1 for s in by_block.values())  # never a block across splits
    counts = {s: splits.count(s) for s in ("train", "val", "test")}
    for name, fraction in zip(("train", "val", "test"), (0.6, 0.2, 0.2)):
        assert abs(counts[name] - fraction * 128) <= 4  # within one block (4 chips) of the target
    assert spatial_block_split(windows, 128, (1.0, 0.0, 0.0)) == ["train"] * len(windows)


def test_split_errors_say_what_to_change() -> None:
    windows = chip_windows(128, 128, 64)
    with pytest.raises(ConfigError, match="add up to 1"):
        spatial_block_split(windows, 64, (0.5, 0.2, 0.2))
    with pytest.raises(ConfigError, match="the val split is empty.*smaller block size"):
        check_splits(spatial_block_split(windows, 1024, (0.7, 0.3, 0.0)))


def _tiny(tmp_path: Path, **kw) -> Path:
    """Two 32 px chips of a 3-band float modality with NaN nodata, one of them in val."""
    rng = np.random.default_rng(0)
    x = rng.normal(100, 20, (3, 3, 32, 32)).astype(np.float64)
    x[0, 1, :4, :4] = np.nan
    labels = rng.integers(0, 2, (3, 32, 32)).astype(np.int16)
    labels[2] = -1  # no labelled pixel: skipped
    windows = [ChipWindow("g", 0, 0, 32), ChipWindow("g", 0, 32, 32), ChipWindow("g", 32, 0, 32)]
    grid = GridInfo("EPSG:32632", (10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0), 64, 64, "x.tif")
    info = write_dataset(tmp_path / "ds", windows, kw.pop("splits", ["train", "val", "train"]), {"S1RTC": x},
                         kw.pop("labels", labels), modalities={"S1RTC": ("A", "B", "C")}, classes=WATER_CLASSES,
                         chip_size=32, grids={"g": grid}, provenance={"by": "test"}, **kw)  # fmt: skip
    return info, x, labels


def test_writer_layout_statistics_and_georeferencing(tmp_path: Path) -> None:
    info, x, labels = _tiny(tmp_path)
    root = tmp_path / "ds"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "S1RTC/g_r000000_c000000_S1RTC.tif", "S1RTC/g_r000000_c000032_S1RTC.tif", "dataset.json",
        "label/g_r000000_c000000_label.tif", "label/g_r000000_c000032_label.tif",
        "split/test.txt", "split/train.txt", "split/val.txt"]  # fmt: skip
    assert (root / "split" / "train.txt").read_text() == "g_r000000_c000000\n"
    assert not list(tmp_path.glob("*.partial-*"))
    doc = json.loads((root / "dataset.json").read_text())
    assert doc["skipped_unlabelled_chips"] == 1 and doc["provenance"] == {"by": "test"}
    train = x[0].astype(np.float32).astype(np.float64)  # statistics over the train chip only, NaN left out
    for b in range(3):
        v = train[b][np.isfinite(train[b])]
        assert info.modalities["S1RTC"].mean[b] == pytest.approx(v.mean(), rel=1e-12)
        assert info.modalities["S1RTC"].std[b] == pytest.approx(v.std(), rel=1e-9)
    assert info.splits["val"].class_pixels == tuple(np.bincount(labels[1].ravel(), minlength=2))
    assert info.splits["train"].chips == 1 and info.splits["test"].chips == 0
    with rasterio.open(info.image_path("S1RTC", "g_r000000_c000032")) as src:
        assert src.crs.to_epsg() == 32632 and src.transform.c == 500320.0 and src.transform.f == 6000000.0
        assert src.dtypes == ("float32",) * 3 and np.isnan(src.nodata) and src.descriptions == ("A", "B", "C")
    with rasterio.open(info.label_path("g_r000000_c000000")) as src:
        assert src.nodata == -1 and src.dtypes == ("int16",)
        assert np.array_equal(src.read(1), labels[0])


def test_reader_gives_nan_at_nodata_and_selects_bands(tmp_path: Path) -> None:
    info, x, labels = _tiny(tmp_path)
    ds = ChipDataset(info, "train")
    sample = ds[0]
    img = sample["image"]["S1RTC"]
    assert img.dtype == torch.float32 and img.shape == (3, 32, 32)
    assert torch.isnan(img[1, :4, :4]).all() and torch.isfinite(img[1, 4:]).all()
    assert torch.equal(img[0], torch.from_numpy(x[0, 0].astype(np.float32)))
    assert sample["mask"].dtype == torch.int64 and torch.equal(sample["mask"], torch.from_numpy(labels[0]).long())
    sub = ChipDataset(info, "train", bands={"S1RTC": ["C", "A"]})
    assert torch.equal(sub.image(0)["S1RTC"][0], img[2]) and torch.equal(sub.image(0)["S1RTC"][1], img[0])
    with pytest.raises(ConfigError, match=r"bands \['D'\] of S1RTC are not in the dataset"):
        ChipDataset(info, "train", bands={"S1RTC": ["D"]})
    with pytest.raises(ConfigError, match="has no S2L2A chips"):
        ChipDataset(info, "train", ["S2L2A"])


def test_writer_refuses_bad_labels_and_leaves_nothing(tmp_path: Path) -> None:
    labels = np.zeros((3, 32, 32), np.int16)
    labels[1, 0, 0] = 7
    with pytest.raises(InputRasterError, match=r"chip g_r000000_c000032: label values \[7\] are not class ids 0..1"):
        _tiny(tmp_path, labels=labels)
    assert list(tmp_path.iterdir()) == []  # the partial folder is gone
    with pytest.raises(ConfigError, match="the val split is empty"):
        _tiny(tmp_path, splits=["train", "train", "train"])
    assert list(tmp_path.iterdir()) == []
    _tiny(tmp_path)
    with pytest.raises(ConfigError, match="exists already"):
        _tiny(tmp_path)
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="not a dataset folder"):
        write_dataset(tmp_path / "other", [], [], {}, np.zeros((0, 32, 32)), modalities={"S1RTC": ("A",)},
                      classes=WATER_CLASSES, chip_size=32, grids={}, overwrite=True)  # fmt: skip
    with pytest.raises(ConfigError, match="not a fine-tuning dataset folder"):
        read_dataset(tmp_path / "other")


def test_example_dataset_is_the_terratorch_layout(water_ds) -> None:
    assert set(water_ds.splits) == {"train", "val", "test"}
    assert sum(s.chips for s in water_ds.splits.values()) == 36 and water_ds.splits["val"].class_pixels[1] > 0
    ids = water_ds.chip_ids("train")
    assert all(water_ds.image_path("S2L2A", i).name == f"{i}_S2L2A.tif" for i in ids)  # image_grep "*_S2L2A.tif"
    assert {g.source for g in water_ds.grids.values()} == {f"LULC/{s}.tif" for s in SCENES}
    with rasterio.open(EXAMPLES / "S2L2A" / f"{SCENES[0]}.tif") as src, \
         rasterio.open(water_ds.image_path("S2L2A", "g0_r000064_c000128")) as chip:  # fmt: skip
        assert np.array_equal(chip.read(), src.read(window=((64, 128), (128, 192))))
        assert chip.crs == src.crs
        expected = (10.0, 0.0, src.transform.c + 1280, 0.0, -10.0, src.transform.f - 640)  # row 64, col 128
        assert tuple(chip.transform)[:6] == pytest.approx(expected)


def test_d4_is_the_dihedral_group() -> None:
    x = torch.arange(12.0).reshape(1, 3, 4)[:, :, :3].reshape(1, 3, 3)  # (1, 3, 3), no symmetry
    images = [d4(x, k) for k in range(8)]
    assert len({tuple(i.flatten().tolist()) for i in images}) == 8
    assert torch.equal(d4(x, 1), torch.rot90(x, 1, (-2, -1))) and torch.equal(d4(x, 4), x.transpose(-2, -1))
    for k in range(8):  # closed under composition; every element is a pixel permutation
        for j in range(8):
            assert any(torch.equal(d4(d4(x, k), j), i) for i in images)
        assert sorted(d4(x, k).flatten().tolist()) == sorted(x.flatten().tolist())
    with pytest.raises(ValueError, match="0..7"):
        d4(x, 8)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(format_version=2), "has format_version 2; this plugin reads 1"),
    (lambda d: d.update(format="other"), 'is not a fine-tuning dataset description'),
    (lambda d: d.pop("classes"), "is incomplete"),
])  # fmt: skip
def test_both_readers_of_dataset_json_apply_the_same_rules(tmp_path: Path, change, message) -> None:
    """The worker's reader (models/training) and the QGIS side's summary (models/core) read the one file
    through one function: a document either refuses is refused by both, with the same words."""
    from terramind_qgis.models.core.training_params import DatasetSummary

    _tiny(tmp_path)
    path = tmp_path / "ds" / "dataset.json"
    assert DatasetSummary.read(str(tmp_path / "ds")).chip_size == read_dataset(tmp_path / "ds").chip_size == 32
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=message):
        read_dataset(tmp_path / "ds")
    with pytest.raises(ConfigError, match=message) as e:
        DatasetSummary.read(str(tmp_path / "ds"))
    assert e.value.field == "params.dataset"
