"""Fine-tuning inside QGIS: Prepare training data → Fine-tune segmentation model → Segment with fine-tuned model.

The example patch's LULC raster is the label source (water vs the rest), S2L2A the input; the backbone is
TerraMind tiny with deterministic UNTRAINED weights (the Hub is not reachable here), frozen and cached, on 64 px
chips for a few epochs. Even so, the decoder learns water: the segmented map's water IoU beats the all-background
prediction (IoU 0) by a wide margin.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import processing
import pytest
from qgis.core import (
    QgsFeature,
    QgsGeometry,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingModelAlgorithm,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)
from test_qgis_process import QGIS_PROCESS, cli_env  # noqa: F401 - the fixture
from tm_helpers import QGIS_DATA, SCENE, raster_facts, read_array

WATER_VS_REST = "*: Others #D9D9D9\n1: Water #1F77B4"
CHIPS = {"CHIP_SIZE": 64, "STRIDE": 32, "BLOCK_SIZE": 64, "TRAIN_FRACTION": 0.6, "VAL_FRACTION": 0.2,
         "TEST_FRACTION": 0.2, "SEED": 1}  # fmt: skip
TRAIN = {"MODEL": "terramind_v1_tiny", "UNTRAINED": True, "MODEL_NAME": "water", "LOSS": "dice", "LEARNING_RATE": 1e-3,
         "EPOCHS": 3, "BATCH_SIZE": 4, "PATIENCE": 0, "AUGMENT": False, "DEVICE": "cpu"}  # fmt: skip
WATER_IOU_MARGIN = 0.5  # over the all-background map (water IoU 0)


def water_iou(classes_path: str, lulc_path: str) -> float:
    predicted, truth = read_array(classes_path) == 1, read_array(lulc_path) == 1
    return float((predicted & truth).sum() / (predicted | truth).sum())


def polygon_layer(source: str, squares, field_type: str = "string") -> QgsVectorLayer:
    """Polygons over pixel squares (col0, row0, col1, row1, class) of ``source``'s grid."""
    facts = raster_facts(source)
    x0, dx, _, y0, _, dy = facts["geotransform"]
    layer = QgsVectorLayer(f"Polygon?crs=EPSG:{facts['epsg']}&field=class:{field_type}", "labels", "memory")
    features = []
    for c0, r0, c1, r1, cls in squares:
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0 + c0 * dx, y0 + r1 * dy, x0 + c1 * dx, y0 + r0 * dy)))
        f.setAttribute("class", cls)
        features.append(f)
    layer.dataProvider().addFeatures(features)
    return layer


_CHAIN: dict = {}


@pytest.fixture
def chain(terramind_provider, tmp_path_factory):
    """Prepare → fine-tune → segment, each step through processing.run; run once for the module."""
    if _CHAIN:
        return _CHAIN
    import shutil

    from tm_helpers import EXAMPLES, RecordingFeedback

    tmp = tmp_path_factory.mktemp("chain")
    s2, lulc = tmp / "s2.tif", tmp / "lulc.tif"
    shutil.copy(EXAMPLES / "S2L2A" / f"{SCENE}.tif", s2)
    shutil.copy(EXAMPLES / "LULC" / f"{SCENE}.tif", lulc)
    prep_feedback = RecordingFeedback.create()
    prepared = processing.run("terramind:preparetrainingdata", {
        "INPUT_S2L2A": str(s2), "LABEL_RASTER": str(lulc), "CLASSES": WATER_VS_REST, **CHIPS,
        "OUTPUT": str(tmp / "dataset")}, feedback=prep_feedback)  # fmt: skip
    train_feedback = RecordingFeedback.create()
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    trained = processing.run("terramind:finetunesegmentationmodel", {"DATASET": prepared["OUTPUT"], **TRAIN,
                             "OUTPUT": str(tmp / "model")}, feedback=train_feedback, context=context)  # fmt: skip
    to_load = dict(context.layersToLoadOnCompletion())
    segmented = processing.run("terramind:segmentwithfinetunedmodel", {
        "MODEL_FILE": trained["OUTPUT_CHECKPOINT"], "CONFIG": trained["OUTPUT_CONFIG"], "INPUT_S2L2A": str(s2),
        "TILE_SIZE": 64, "OVERLAP": 16, "DEVICE": "cpu", "OUTPUT": str(tmp / "water.tif")})  # fmt: skip
    _CHAIN.update(tmp=tmp, s2=str(s2), lulc=str(lulc), prepared=prepared, trained=trained, segmented=segmented, to_load=to_load,
                  prep_feedback=prep_feedback, train_feedback=train_feedback)  # fmt: skip
    return _CHAIN


def test_prepare_writes_the_dataset_and_reports_pixels_per_class(chain) -> None:
    prepared, folder = chain["prepared"], Path(chain["prepared"]["OUTPUT"])
    assert folder == chain["tmp"] / "dataset"
    doc = json.loads((folder / "dataset.json").read_text())
    assert [c["name"] for c in doc["classes"]] == ["Others", "Water"]
    chips = json.loads(prepared["CHIPS"])
    assert chips == {s: doc["splits"][s]["chips"] for s in ("train", "val", "test")} and prepared["TRAIN_CHIPS"] == chips["train"]
    pixels = json.loads(prepared["CLASS_PIXELS"])
    assert all(list(pixels[s].values()) == doc["splits"][s]["class_pixels"] for s in pixels)
    assert all(pixels[s]["Water"] > 0 for s in pixels)
    assert sorted(p.name for p in folder.iterdir()) == ["S2L2A", "dataset.json", "label", "split"]
    assert any(m.startswith("train: ") for m in chain["prep_feedback"].infos)


def test_finetune_writes_the_model_files_and_reports_each_epoch(chain) -> None:
    trained = chain["trained"]
    names = {k: Path(v).name for k, v in trained.items() if isinstance(v, str) and k.startswith("OUTPUT_")}
    assert names == {"OUTPUT_CHECKPOINT": "water.ckpt", "OUTPUT_CONFIG": "water.yaml", "OUTPUT_CARD": "water.json",
                     "OUTPUT_METRICS": "metrics.csv", "OUTPUT_CURVE": "training_curve.png",
                     "OUTPUT_EVALUATION": "water.test.json", "OUTPUT_CONFUSION": "water.confusion.csv"}  # fmt: skip
    rows = list(csv.DictReader(open(trained["OUTPUT_METRICS"])))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    epochs = [m for m in chain["train_feedback"].infos if m.startswith("epoch ") and "val mIoU" in m]
    assert len(epochs) == 3 and all("Water" in m for m in epochs)
    assert float(rows[-1]["train/loss"]) < 0.9 * float(rows[0]["train/loss"])  # it learns
    test = json.loads(Path(trained["OUTPUT_EVALUATION"]).read_text())
    assert trained["TEST_MIOU"] == pytest.approx(test["mIoU"]) and json.loads(trained["TEST_IOU"]) == test["iou"]
    assert 1 <= trained["BEST_EPOCH"] <= 3 and Path(trained["OUTPUT_CURVE"]).read_bytes()[:4] == b"\x89PNG"
    assert "backbone_pretrained: false" in Path(trained["OUTPUT_CONFIG"]).read_text()
    metrics = trained["OUTPUT_METRICS"]  # loaded as a table when the run loads its outputs
    assert chain["to_load"][metrics].name == "Training metrics (water)"
    table = QgsVectorLayer(metrics, "metrics", "ogr")
    assert table.isValid() and table.featureCount() == 3 and not table.isSpatial()


def test_the_model_segments_at_once_and_learned_water(chain) -> None:
    out = chain["segmented"]["OUTPUT"]
    facts = raster_facts(out)
    assert facts["size"] == (224, 224) and facts["epsg"] == "32722" and facts["has_colour_table"]
    assert facts["categories"][:2] == ["Others", "Water"]
    iou = water_iou(out, chain["lulc"])
    print(f"water IoU of the segmented map: {iou:.3f} (all-background map: 0)")
    assert iou >= WATER_IOU_MARGIN
    card = processing.run("terramind:segmentwithfinetunedmodel", {  # the model card works as MODEL_FILE too
        "MODEL_FILE": chain["trained"]["OUTPUT_CARD"], "INPUT_S2L2A": chain["s2"], "TILE_SIZE": 64, "OVERLAP": 16,
        "DEVICE": "cpu", "OUTPUT": str(chain["tmp"] / "water_card.tif")})  # fmt: skip
    assert np.array_equal(read_array(card["OUTPUT"]), read_array(out))


def test_prepare_from_polygons_with_a_class_field(terramind_provider, example, tmp_path) -> None:
    source = example("S2L2A")
    labels = polygon_layer(source, [(0, 0, 100, 100, "water"), (120, 120, 224, 224, "land")])
    result = processing.run("terramind:preparetrainingdata", {"INPUT_S2L2A": source, "LABELS": labels,
                            "CLASS_FIELD": "class", **CHIPS, "OUTPUT": str(tmp_path / "ds")})  # fmt: skip
    doc = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert [c["name"] for c in doc["classes"]] == ["land", "water"]
    total = {k: sum(json.loads(result["CLASS_PIXELS"])[s][k] for s in ("train", "val", "test")) for k in ("land", "water")}
    assert total["land"] > 0 and total["water"] > 0


def _bad(alg: str, params: dict, match: str) -> None:
    with pytest.raises(QgsProcessingException, match="(?m)" + match):
        processing.run(alg, params)


def test_prepare_bad_inputs(terramind_provider, example, tmp_path) -> None:
    source, lulc = example("S2L2A"), example("LULC")
    out = str(tmp_path / "ds")
    far = polygon_layer(source, [(5000, 5000, 5100, 5100, "a"), (5200, 5200, 5300, 5300, "b")])
    _bad("terramind:preparetrainingdata", {"INPUT_S2L2A": source, "LABELS": far, "CLASS_FIELD": "class", "OUTPUT": out},
         "^LABELS: none of the 2 features of the class field 'class' lies in the area")  # fmt: skip
    fractional = polygon_layer(source, [(0, 0, 50, 50, 1.5), (60, 60, 90, 90, 2.0)], field_type="double")
    _bad("terramind:preparetrainingdata", {"INPUT_S2L2A": source, "LABELS": fractional, "CLASS_FIELD": "class",
                                           "OUTPUT": out}, "^CLASS_FIELD: holds non-integer class values \\(1.5\\)")  # fmt: skip
    _bad("terramind:preparetrainingdata", {"INPUT_S2L2A": source, "LABEL_RASTER": lulc, "CLASSES": "1: Water", **CHIPS,
                                           "OUTPUT": out},
         "^LABEL_RASTER: the labels hold a single class \\(Water\\)")  # fmt: skip
    _bad("terramind:preparetrainingdata", {"INPUT_S2L2A": source, "OUTPUT": out}, "^LABELS: give the labels either")
    assert not os.path.exists(out) and not list(tmp_path.glob("ds.partial-*"))


def test_finetune_bad_inputs(chain, tmp_path) -> None:
    dataset, out = chain["prepared"]["OUTPUT"], str(tmp_path / "m")
    alg = "terramind:finetunesegmentationmodel"
    _bad(alg, {"DATASET": dataset, **TRAIN, "BATCH_SIZE": 64, "OUTPUT": out}, "^BATCH_SIZE: .*fewer chips than one batch")
    _bad(alg, {"DATASET": dataset, **TRAIN, "MODALITIES": ["S1RTC"], "OUTPUT": out},
         "^MODALITIES: the model is to read S1RTC, but the dataset .* was prepared with S2L2A")  # fmt: skip
    _bad(alg, {"DATASET": str(tmp_path), **TRAIN, "OUTPUT": out}, "^DATASET: .* is not a fine-tuning dataset folder")
    _bad(alg, {"DATASET": dataset, **TRAIN, "OUTPUT": str(chain["tmp"] / "model")}, "^OUTPUT: .* already holds a model 'water'")
    assert not os.path.exists(out)


def test_finetune_refuses_a_dataset_written_for_other_bands(terramind_provider, example, tmp_path) -> None:
    source = example("S2L2A")
    processing.run("terramind:preparetrainingdata", {  # B02, B03, B04 of the layer as BLUE, GREEN, RED
        "INPUT_S2L2A": source, "BANDS_S2L2A": [2, 3, 4], "BAND_NAMES": "S2L2A: BLUE, GREEN, RED",
        "LABEL_RASTER": example("LULC"), "CLASSES": WATER_VS_REST, **CHIPS, "OUTPUT": str(tmp_path / "rgb")})  # fmt: skip
    doc = json.loads((tmp_path / "rgb" / "dataset.json").read_text())
    assert doc["modalities"]["S2L2A"]["bands"] == ["BLUE", "GREEN", "RED"]
    _bad("terramind:finetunesegmentationmodel", {"DATASET": str(tmp_path / "rgb"), **TRAIN, "BANDS": "S2L2A: NIR_NARROW",
                                                 "OUTPUT": str(tmp_path / "m")},
         "^BANDS: the dataset was written for other bands of S2L2A: it holds BLUE, GREEN, RED, not NIR_NARROW")  # fmt: skip
    _bad("terramind:preparetrainingdata", {"INPUT_S2L2A": source, "BAND_NAMES": "S2L2A: BLUE, GREEN, RED",
                                           "LABEL_RASTER": example("LULC"), "OUTPUT": str(tmp_path / "x")},
         "has 12 bands, but S2L2A needs 3")  # fmt: skip


def test_cancel_mid_epoch_keeps_the_best_checkpoint(chain, recording_feedback, tmp_path) -> None:
    feedback = recording_feedback(cancel_at_progress=40)  # epoch 1 of 3 ends at 33 %: cancelled in epoch 2
    out = tmp_path / "m"
    with pytest.raises(QgsProcessingException, match="the best checkpoint so far is kept: .*water.ckpt"):
        processing.run("terramind:finetunesegmentationmodel", {"DATASET": chain["prepared"]["OUTPUT"], **TRAIN,
                       "EPOCHS": 3, "OUTPUT": str(out)}, feedback=feedback)  # fmt: skip
    assert feedback.cancelled_at is not None and max(feedback.progress) < 67
    assert (out / "water.ckpt").is_file() and (out / "water.yaml").is_file()
    assert not list(out.glob("*.partial-*")) and not (out / ".scratch").exists()
    seg = processing.run("terramind:segmentwithfinetunedmodel", {"MODEL_FILE": str(out / "water.ckpt"),
                         "CONFIG": str(out / "water.yaml"), "INPUT_S2L2A": chain["s2"], "TILE_SIZE": 64, "OVERLAP": 16,
                         "DEVICE": "cpu", "OUTPUT": str(tmp_path / "after_cancel.tif")})  # fmt: skip
    assert raster_facts(seg["OUTPUT"])["size"] == (224, 224)


def test_model3_chains_prepare_finetune_and_segment(terramind_provider, example, tmp_path) -> None:
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(QGIS_DATA / "finetune_chain.model3"))
    ids = [model.childAlgorithm(c).algorithmId() for c in ("prepare", "finetune", "segment")]
    assert ids == ["terramind:preparetrainingdata", "terramind:finetunesegmentationmodel",
                   "terramind:segmentwithfinetunedmodel"]  # fmt: skip
    lulc = example("LULC")
    result = processing.run(model, {"s2": example("S2L2A"), "labels": lulc, "classes": str(tmp_path / "classes.tif")})
    assert result["classes"] == str(tmp_path / "classes.tif")
    facts = raster_facts(result["classes"])
    assert facts["size"] == (224, 224) and facts["categories"][:2] == ["Others", "Water"]
    assert water_iou(result["classes"], lulc) > 0.2  # one epoch: above the all-background map already


def test_prepare_from_the_shell(cli_env, example, tmp_path) -> None:  # noqa: F811 - the fixture
    out = tmp_path / "cli_ds"
    done = subprocess.run([QGIS_PROCESS, "--json", "run", "terramind:preparetrainingdata", "--",
                           f"INPUT_S2L2A={example('S2L2A')}", f"LABEL_RASTER={example('LULC')}",
                           "CLASSES=*: Others; 1: Water", "CHIP_SIZE=64", "BLOCK_SIZE=64", f"OUTPUT={out}"],
                          env=cli_env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["results"]["OUTPUT"] == str(out)
    assert sum(json.loads(report["results"]["CHIPS"]).values()) == 16  # 4 x 4 chips of 64 px (edges covered) on 224 px
    assert json.loads((out / "dataset.json").read_text())["chip_size"] == 64
