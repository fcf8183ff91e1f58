"""The worker tasks ``prepare_training_data`` and ``finetune``: jobs in, a dataset folder and a model out,
every bad input one ``ConfigError`` naming its job field, cancel keeps the best checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from terramind_qgis.models.core.errors import CancelledError, ConfigError
from terramind_qgis.models.core.progress import NullProgress
from terramind_qgis.models.segmentation.checkpoint import load_segmentation_model
from terramind_qgis.models.training.dataset import read_dataset
from testlib.progress import RecordingProgress
from testlib.tasks import run_task, validate

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"
SCENE = "282D_485L_3_3"  # LULC water (1) on about half of it
WATER_VS_REST = "*: Others #D9D9D9; 1: Water #1F77B4"


def s2(scene: str = SCENE) -> str:
    return str(EXAMPLES / "S2L2A" / f"{scene}.tif")


def lulc(scene: str = SCENE) -> str:
    return str(EXAMPLES / "LULC" / f"{scene}.tif")


def prepare_job(folder: Path, **params) -> dict:
    p = {"label_raster": {"path": lulc(), "band": 1, "name": "LULC"}, "classes": WATER_VS_REST, "chip_size": 64,
         "stride": 32, "block_size": 64, "fractions": [0.6, 0.2, 0.2], "seed": 1, **params}  # fmt: skip
    return {"task": "prepare_training_data", "inputs": {"S2L2A": {"path": s2(), "name": "S2"}},
            "outputs": {"dataset": str(folder)}, "model": {"id": "-"}, "params": p}  # fmt: skip


def grid_square(col0: int, row0: int, col1: int, row1: int) -> dict:
    """A polygon over pixels [row0, row1) x [col0, col1) of the example scene's grid."""
    with rasterio.open(s2()) as src:
        t = src.transform
    x0, y0 = t @ (col0, row0)
    x1, y1 = t @ (col1, row1)
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def features(*items) -> dict:
    with rasterio.open(s2()) as src:
        crs = src.crs.to_string()
    return {"crs": crs, "features": [{"id": i + 1, "geometry": g, "class": c} for i, (g, c) in enumerate(items)]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prep") / "water"
    progress = RecordingProgress()
    return run_task(prepare_job(folder), progress), folder, progress


def test_prepare_from_a_class_raster_writes_the_terratorch_layout(prepared) -> None:
    result, folder, progress = prepared
    assert result["outputs"] == {"dataset": str(folder)}
    info = read_dataset(folder)
    assert [c.name for c in info.classes] == ["Others", "Water"] and info.classes[1].color == "#1F77B4"
    assert info.chip_size == 64 and list(info.modalities) == ["S2L2A"]
    m = result["metrics"]
    assert sum(m["chips"].values()) == 36 == len(info.chips)  # 6 x 6 chips of 64 px, stride 32, on 224 px
    assert all(m["chips"][s] > 0 for s in ("train", "val", "test"))
    for split, counts in m["class_pixels"].items():  # what the result says is what dataset.json says
        assert tuple(counts.values()) == info.splits[split].class_pixels
    with rasterio.open(lulc()) as src:
        water = src.read(1) == 1
    ids = info.chip_ids("train")
    with rasterio.open(info.label_path(ids[0])) as lab, rasterio.open(info.image_path("S2L2A", ids[0])) as img:
        row, col = int(ids[0].split("_")[1][1:]), int(ids[0].split("_")[2][1:])
        assert lab.read(1).tolist() == water[row : row + 64, col : col + 64].astype(np.int16).tolist()
        with rasterio.open(s2()) as src:
            assert np.array_equal(img.read(), src.read(window=((row, row + 64), (col, col + 64))).astype(np.float32))
            assert img.transform == src.window_transform(((row, row + 64), (col, col + 64)))
    assert not list(folder.parent.glob("*.partial-*"))  # written atomically
    assert any(msg.startswith("train: ") and "Water" in msg for msg in progress.infos)


def test_prepare_from_polygons_and_buffered_points(tmp_path) -> None:
    labels = features((grid_square(0, 0, 100, 100), "water"), (grid_square(120, 120, 224, 224), "land"),
                      ({"type": "Point", "coordinates": list(_centre(160, 40))}, "water"))  # fmt: skip
    job = prepare_job(tmp_path / "ds", labels=labels, label_raster=None, classes=None, buffer=25.0, block_size=64)
    result = run_task(job)
    info = read_dataset(tmp_path / "ds")
    assert [c.name for c in info.classes] == ["land", "water"]  # distinct values, sorted
    total = np.zeros(2, np.int64)
    for s in info.splits.values():
        total += np.asarray(s.class_pixels)
    # every chip pixel counted once per chip: compare with the burnt grid instead, through one chip
    assert total[0] > 0 and total[1] > 0
    cid = next(c["id"] for c in info.chips if c["row"] == 0 and c["col"] == 128)
    with rasterio.open(info.label_path(cid)) as src:
        lab = src.read(1)
    # the point at pixel (row 40, col 160) buffered by 25 m = 2.5 px: a disc of about 5 px across
    disc = np.argwhere(lab == 1)
    assert 12 <= len(disc) <= 30 and abs(disc[:, 0].mean() - 40) < 1 and abs(disc[:, 1].mean() - 32) < 1
    assert result["metrics"]["skipped_chips"] > 0  # chips with no feature are not written


def _centre(col: float, row: float) -> tuple[float, float]:
    with rasterio.open(s2()) as src:
        return tuple(src.transform @ (col, row))


@pytest.mark.parametrize("params, field, words", [
    ({"labels": "far", "label_raster": None}, "params.labels", "outside"),
    ({"classes": "1: Water"}, "params.label_raster", "single class"),
    ({"labels": "fractional", "label_raster": None, "classes": None}, "params.labels.class", "not a whole number"),
    ({"chip_size": 40}, "params.chip_size", "multiple of 16"),
    ({"classes": "1: Water; 1: Lake"}, "params.classes", "both"),
    ({"fractions": [0.9, 0.0, 0.1]}, "params.fractions", "val above 0"),
])  # fmt: skip
def test_prepare_bad_inputs_are_one_message(tmp_path, params, field, words) -> None:
    far = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
    if params.get("labels") == "far":
        params["labels"] = features((far, 1), (far, 2))
    elif params.get("labels") == "fractional":
        params["labels"] = features((grid_square(0, 0, 50, 50), 1.5), (grid_square(60, 60, 90, 90), 2))
    with pytest.raises(ConfigError) as e:
        run_task(prepare_job(tmp_path / "ds", **params))
    assert e.value.field == field and words in str(e.value)
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob("ds.partial-*"))


def test_prepare_refuses_non_integer_class_rasters_and_labels_outside(tmp_path) -> None:
    with rasterio.open(lulc()) as src:
        profile, data = src.profile, src.read(1).astype(np.float32)
    fractional = tmp_path / "fractional.tif"
    with rasterio.open(fractional, "w", **{**profile, "dtype": "float32"}) as dst:
        dst.write(data + 0.5, 1)
    with pytest.raises(ConfigError, match="non-integer class values") as e:
        run_task(prepare_job(tmp_path / "a", label_raster={"path": str(fractional)}, classes=None))
    assert e.value.field == "params.label_raster"
    moved = tmp_path / "moved.tif"
    shifted = profile["transform"] @ rasterio.Affine.translation(5000, 0)
    with rasterio.open(moved, "w", **{**profile, "transform": shifted}) as dst:
        dst.write(data.astype(profile["dtype"]), 1)
    with pytest.raises(ConfigError, match="outside every input") as e:
        run_task(prepare_job(tmp_path / "b", label_raster={"path": str(moved)}))
    assert e.value.field == "params.label_raster"


def test_prepare_never_replaces_a_folder_and_cancel_leaves_nothing(prepared, tmp_path) -> None:
    _, folder, _ = prepared
    with pytest.raises(ConfigError, match="exists already") as e:
        validate(prepare_job(folder))
    assert e.value.field == "outputs.dataset"

    class CancelSoon(NullProgress):
        def __init__(self) -> None:
            self.calls = 0

        def is_canceled(self) -> bool:
            self.calls += 1
            return self.calls > 5

    with pytest.raises(CancelledError, match="no dataset was written"):
        run_task(prepare_job(tmp_path / "c"), CancelSoon())
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob("c.partial-*"))


# ----------------------------------------------------------------------------- finetune
def finetune_job(data: Path, out: Path, **params) -> dict:
    p = {"dataset": str(data), "name": "water", "epochs": 2, "batch_size": 4, "lr": 1e-3, "patience": 0,
         "augment": False, **params}  # fmt: skip
    return {"task": "finetune", "inputs": {}, "outputs": {"model": str(out)},
            "model": {"id": "terramind_v1_tiny", "untrained": True}, "params": p, "device": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def finetuned(prepared, tmp_path_factory):
    _, folder, _ = prepared
    out = tmp_path_factory.mktemp("model")
    progress = RecordingProgress()
    return run_task(finetune_job(folder, out), progress), out, progress


def test_finetune_writes_a_loadable_model_and_its_test_evaluation(finetuned, prepared) -> None:
    result, out, progress = finetuned
    o = result["outputs"]
    assert {Path(v).name for v in o.values()} == {"water.ckpt", "water.yaml", "water.json", "water.last.ckpt",
                                                 "metrics.csv", "training_curve.png", "water.test.json",
                                                 "water.confusion.csv"}  # fmt: skip
    model = load_segmentation_model(o["checkpoint"], o["config"])
    assert [c.name for c in model.classes] == ["Others", "Water"]
    card = load_segmentation_model(o["card"])
    assert card.config.to_dict() == model.config.to_dict()
    ev = json.loads(Path(o["evaluation"]).read_text())
    info = read_dataset(prepared[1])
    assert ev["chips"] == info.splits["test"].chips and ev["pixels"] == sum(info.splits["test"].class_pixels)
    assert np.asarray(ev["confusion_matrix"]).sum(axis=1).tolist() == list(info.splits["test"].class_pixels)
    assert set(ev["iou"]) == {"Others", "Water"} and 0 <= ev["mIoU"] <= 1
    assert result["metrics"]["test"] == ev and result["metrics"]["epochs_run"] == 2
    epochs = [m for m in progress.infos if m.startswith("epoch ") and "val mIoU" in m]
    assert len(epochs) == 2 and progress.percents[-1] == 100.0
    assert Path(o["confusion"]).read_text().splitlines()[0].startswith("true \\ predicted,Others,Water")


@pytest.mark.parametrize("params, model_id, field, words", [
    ({"batch_size": 64}, None, "params.batch_size", "fewer chips than one batch"),
    ({"modalities": ["S1RTC"]}, None, "params.modalities", "prepared with S2L2A"),
    ({"bands": {"S2L2A": ["BLUE", "COASTAL_AEROSOL_X"]}}, None, "params.bands", None),
    ({"loss": "l2"}, None, "params.loss", "dice"),
    ({}, "test_terramind_tiny", "model.id", "not a TerraMind backbone"),
    ({"dataset": "/nonexistent"}, None, "params.dataset", "not a fine-tuning dataset folder"),
])  # fmt: skip
def test_finetune_bad_inputs_are_one_message(prepared, tmp_path, params, model_id, field, words) -> None:
    _, folder, _ = prepared
    job = finetune_job(folder, tmp_path / "m", **params)
    if model_id:
        job["model"]["id"] = model_id
    with pytest.raises(ConfigError) as e:
        validate(job)
    assert e.value.field == field and (words is None or words in str(e.value)), str(e.value)


def test_finetune_refuses_a_dataset_written_for_other_bands(tmp_path) -> None:
    six = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
    job = prepare_job(tmp_path / "six", bands={"S2L2A": six})
    job["inputs"]["S2L2A"]["bands"] = [2, 3, 4, 9, 11, 12]
    run_task(job)
    assert read_dataset(tmp_path / "six").modalities["S2L2A"].bands == tuple(six)
    with pytest.raises(ConfigError, match="written for other bands") as e:
        validate(finetune_job(tmp_path / "six", tmp_path / "m", bands={"S2L2A": ["COASTAL_AEROSOL", "BLUE"]}))
    assert e.value.field == "params.bands"


def test_finetune_single_class_dataset(tmp_path) -> None:
    """Two classes in the dataset, but only one in its train split: fine-tuning refuses it."""
    from terramind_qgis.models.core.modalities import ClassInfo
    from terramind_qgis.models.training.dataset import GridInfo, write_dataset
    from terramind_qgis.models.training.split import chip_windows

    windows = chip_windows(64, 128, 32)[:4]
    images = np.ones((4, 12, 32, 32), np.float32)
    labels = np.stack([np.zeros((32, 32), np.int16)] * 2 + [np.ones((32, 32), np.int16)] * 2)
    grid = GridInfo("EPSG:32632", (10.0, 0.0, 0.0, 0.0, -10.0, 0.0), 128, 64)
    from terramind_qgis.models.core.modalities import MODALITIES

    write_dataset(tmp_path / "one", windows, ["train", "train", "val", "test"], {"S2L2A": images}, labels,
                  modalities={"S2L2A": MODALITIES["S2L2A"].bands}, classes=(ClassInfo(0, "a", "#000000"),
                  ClassInfo(1, "b", "#FFFFFF")), chip_size=32, grids={"g0": grid})  # fmt: skip
    with pytest.raises(ConfigError, match="single class") as e:
        validate(finetune_job(tmp_path / "one", tmp_path / "m", batch_size=2))
    assert e.value.field == "params.dataset"


def test_finetune_cancel_keeps_the_best_checkpoint_and_says_so(prepared, tmp_path) -> None:
    _, folder, _ = prepared

    class CancelInEpoch2(RecordingProgress):
        def is_canceled(self) -> bool:
            return any(m.startswith("epoch 1/") and "val mIoU" in m for m in self.infos)

    progress = CancelInEpoch2()
    with pytest.raises(CancelledError) as e:
        run_task(finetune_job(folder, tmp_path / "m", epochs=3), progress)
    assert "best checkpoint so far (epoch 1" in str(e.value) and "is kept" in str(e.value)
    assert (tmp_path / "m" / "water.ckpt").is_file() and not list((tmp_path / "m").glob("*.partial-*"))
    load_segmentation_model(tmp_path / "m" / "water.ckpt", tmp_path / "m" / "water.yaml")
    # resume from the last checkpoint and finish the run
    shutil.copy(tmp_path / "m" / "water.last.ckpt", tmp_path / "resume.ckpt")
    result = run_task(finetune_job(folder, tmp_path / "m", epochs=2, resume=str(tmp_path / "resume.ckpt")))
    assert result["metrics"]["epochs_run"] == 2


# ----------------------------------------------------------------------------- the worker's command line
def _worker(tmp_path: Path, job: dict) -> tuple[int, list[dict], str]:
    import os
    import subprocess
    import sys

    path = tmp_path / "job.json"
    path.write_text(json.dumps({"protocol": 1, **job}), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / ".pluginpath")}
    proc = subprocess.run([sys.executable, "-m", "terramind_qgis.models.worker", str(path)], capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines() if line.strip()], proc.stderr


def test_worker_command_line_prepares_and_refuses_a_bad_finetune_job(prepared, tmp_path) -> None:
    code, events, _ = _worker(tmp_path, prepare_job(tmp_path / "cli", chip_size=64, stride=64))
    assert code == 0 and events[-1]["event"] == "result"
    assert events[-1]["outputs"] == {"dataset": str(tmp_path / "cli")} and sum(events[-1]["metrics"]["chips"].values()) == 16
    assert any(e["event"] == "progress" for e in events)
    code, events, stderr = _worker(tmp_path, finetune_job(prepared[1], tmp_path / "m", batch_size=500))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr
    assert events[-1]["event"] == "error" and events[-1]["field"] == "params.batch_size"
    assert lines[0].startswith("terramind worker: params.batch_size: is 500, but the dataset's train split has")
    assert not (tmp_path / "m").exists()


def test_finetune_never_trains_on_random_weights_silently(prepared, tmp_path) -> None:
    """Without UNTRAINED the backbone's weights come from the Hub (its cache offline): none there is one error,
    and the model folder keeps nothing of the run."""
    import os

    job = finetune_job(prepared[1], tmp_path / "m")
    job["model"]["untrained"] = False
    os.environ["HF_HUB_OFFLINE"], saved = "1", os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_CACHE"], saved_cache = str(tmp_path / "empty-cache"), os.environ.get("HF_HUB_CACHE")
    try:
        code, events, stderr = _worker(tmp_path, job)
    finally:
        for key, value in (("HF_HUB_OFFLINE", saved), ("HF_HUB_CACHE", saved_cache)):
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    assert code == 1 and events[-1]["event"] == "error" and "Traceback" not in stderr
    assert "TerraMind_v1_tiny.pt" in events[-1]["message"]
    assert not (tmp_path / "m").exists() or os.listdir(tmp_path / "m") == []
