"""The fine-tuning loop: it learns, reports, stops early, cancels cleanly and resumes exactly."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from terramind_qgis.models.core.errors import CancelledError, ConfigError
from terramind_qgis.models.segmentation.checkpoint import load_segmentation_model
from terramind_qgis.models.training import trainer as trainer_module
from terramind_qgis.models.training.curve_png import MIOU, TRAIN, VAL
from terramind_qgis.models.training.recipe import Recipe
from terramind_qgis.models.training.trainer import train
from testlib.progress import RecordingProgress

# Water vs the rest on S2L2A, tiny architecture, untrained deterministic backbone (frozen, cached).
LEARN = Recipe(max_epochs=12, batch_size=4, lr=1e-3, early_stopping_patience=None)
WATER_IOU_MARGIN = 0.35  # the all-background prediction has water IoU 0
MIOU_MARGIN = 0.10  # over the all-background mIoU (IoU of "Others" / 2)


@pytest.fixture(scope="module")
def learned(water_ds, tmp_path_factory):
    progress = RecordingProgress()
    out = tmp_path_factory.mktemp("learn")
    epochs: list = []
    result = train(water_ds, out, LEARN, model_name="water", untrained=True, progress=progress, on_epoch=epochs.append)
    return result, progress, out, epochs


@pytest.mark.slow
def test_it_learns_water(learned, water_ds) -> None:
    result, _, _, epochs = learned
    val_pixels = water_ds.splits["val"].class_pixels
    baseline_miou = (val_pixels[0] / sum(val_pixels)) / 2  # all background: IoU(Others) = its share, IoU(Water) = 0
    first, best = result.history[0], result.history[result.best_epoch - 1]
    assert result.best_val_loss < 0.9 * first.val_loss  # the val loss falls
    assert best.val["IoU_Water"] >= WATER_IOU_MARGIN
    assert best.val["mIoU"] >= baseline_miou + MIOU_MARGIN
    assert [r.epoch for r in epochs] == list(range(1, 13)) and result.stopped == "completed"


def test_progress_csv_and_curve(learned) -> None:
    result, progress, out, _ = learned
    assert progress.percents == sorted(progress.percents) and progress.percents[-1] == 100.0
    per_epoch = [m for m in progress.infos if m.startswith("epoch ") and "train loss" in m]
    assert len(per_epoch) == 12
    assert all("val loss" in m and "val mIoU" in m and "IoU: Others" in m and "Water" in m for m in per_epoch)
    per_batch = [m for m in progress.infos if ", batch " in m]
    assert per_batch and all("loss" in m for m in per_batch) and len(per_batch) <= 12 * 4
    rows = list(csv.DictReader(result.metrics_csv.open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))
    assert {"lr", "train/loss", "val/loss", "val/mIoU", "val/IoU_Water", "val/Class_Accuracy_Others"} <= set(rows[0])
    assert [float(r["val/loss"]) for r in rows] == pytest.approx([r.val_loss for r in result.history], abs=1e-6)
    assert sum(int(r["best"]) for r in rows) >= 2 and rows[result.best_epoch - 1]["best"] == "1"
    with warnings.catch_warnings():  # a PNG has no georeferencing
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(result.curve_png) as png:  # GDAL reads the PNG we encoded
            rgb = np.moveaxis(png.read(), 0, -1)
    assert rgb.shape == (430, 1000, 3)
    for color in (TRAIN, VAL, MIOU):  # each series is drawn
        assert (np.abs(rgb.astype(int) - color).sum(-1) == 0).sum() > 100
    left = (np.abs(rgb[50:350, 100:470].astype(int) - TRAIN).sum(-1) == 0)
    assert left.any() and not (np.abs(rgb[50:350, 610:980].astype(int) - TRAIN).sum(-1) == 0).any()
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "training_curve.png", "water.ckpt", "water.json",
                                                     "water.last.ckpt", "water.safetensors", "water.yaml"]  # fmt: skip


def test_cancel_keeps_the_best_checkpoint_and_says_so(water_ds, tmp_path: Path) -> None:
    def after_two_epochs(p: RecordingProgress) -> bool:
        return any(m.startswith("epoch 2/4:") for m in p.infos)

    progress = RecordingProgress(after_two_epochs)
    with pytest.raises(CancelledError) as err:
        train(water_ds, tmp_path, Recipe(max_epochs=4, batch_size=4), untrained=True, progress=progress)
    msg = str(err.value)
    assert msg.startswith("cancelled in epoch 3, batch 1; the best checkpoint so far (epoch ") and "model.ckpt" in msg
    assert msg in progress.infos
    best = torch.load(tmp_path / "model.ckpt", weights_only=True)
    assert best["epoch"] in (0, 1) and torch.load(tmp_path / "model.last.ckpt", weights_only=True)["epoch"] == 1
    load_segmentation_model(tmp_path / "model.ckpt", tmp_path / "model.yaml")  # complete and loadable
    assert not list(tmp_path.rglob("*partial*")) and not (tmp_path / "model.json").exists()

    early = tmp_path / "early"
    with pytest.raises(CancelledError, match="before the first epoch finished: no checkpoint was written"):
        train(water_ds, early, Recipe(max_epochs=2, batch_size=4), untrained=True,
              progress=RecordingProgress(lambda p: len(p.percents) >= 2))  # fmt: skip
    assert sorted(p.name for p in early.iterdir()) == ["model.yaml"]


def test_resume_continues_exactly(water_ds, tmp_path: Path) -> None:
    recipe = Recipe(max_epochs=3, batch_size=8, lr=1e-3, head_dropout=0.1)  # D4 on: the random state matters
    straight = train(water_ds, tmp_path / "a", recipe, untrained=True)
    train(water_ds, tmp_path / "b", Recipe(max_epochs=2, batch_size=8, lr=1e-3, head_dropout=0.1), untrained=True)
    with pytest.raises(ConfigError, match=r"different recipe \(lr\)"):
        train(water_ds, tmp_path / "b", Recipe(max_epochs=3, lr=1e-2), resume=tmp_path / "b" / "model.last.ckpt")
    resumed = train(water_ds, tmp_path / "b", recipe, resume=tmp_path / "b" / "model.last.ckpt")
    assert [r.val_loss for r in resumed.history] == [r.val_loss for r in straight.history]
    a = torch.load(straight.last_checkpoint, weights_only=True)
    b = torch.load(resumed.last_checkpoint, weights_only=True)
    assert a["global_step"] == b["global_step"] == 3 * 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert "UNTRAINED" in resumed.card.read_text()  # provenance travels through the resume


def test_early_stopping_scheduler_and_non_finite(water_ds, tmp_path: Path, monkeypatch) -> None:
    """Validation losses are scripted (one per epoch), so the stopping and LR logic is checked exactly."""
    real_train_step = trainer_module.train_step
    scripted: dict = {}

    def script(losses: list[float]) -> list[float]:
        scripted.update(losses=iter(losses), epoch=None, seen=[])
        return scripted["seen"]

    def train_step(ctx, batch, ks):  # the first train step of an epoch draws that epoch's val loss
        epoch = len(scripted["seen"])
        if scripted["epoch"] != epoch:
            scripted["epoch"], scripted["loss"] = epoch, next(scripted["losses"])
        return real_train_step(ctx, batch, ks)

    def eval_step(ctx, batch, confusion):
        confusion.update(torch.zeros_like(batch["mask"]), batch["mask"])
        return scripted["loss"]

    monkeypatch.setattr(trainer_module, "train_step", train_step)
    monkeypatch.setattr(trainer_module, "eval_step", eval_step)
    seen = script([0.5, 0.45, 0.6, 0.4, 0.7, 0.8, 0.9])
    result = train(water_ds, tmp_path, Recipe(max_epochs=7, batch_size=8, early_stopping_patience=2, scheduler_patience=0),
                   untrained=True, on_epoch=lambda r: seen.append(r.val_loss))  # fmt: skip
    assert seen == [0.5, 0.45, 0.6, 0.4, 0.7, 0.8]  # best at 4, then two epochs without a strictly lower loss
    assert result.stopped == "early_stopping" and result.best_epoch == 4 and result.best_val_loss == 0.4
    lrs = [r.lr for r in result.history]
    assert lrs == pytest.approx([1e-4, 1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5])  # ReduceLROnPlateau(patience=0) halves
    assert torch.load(result.checkpoint, weights_only=True)["epoch"] == 3

    seen = script([0.5, math.nan, 0.1])
    progress = RecordingProgress()
    result = train(water_ds, tmp_path / "nan", Recipe(max_epochs=3, batch_size=8), untrained=True, progress=progress,
                   on_epoch=lambda r: seen.append(r.val_loss))  # fmt: skip
    assert len(result.history) == 2 and result.stopped == "early_stopping" and result.best_epoch == 1
    assert any("val/loss is nan" in w for w in progress.warnings)
