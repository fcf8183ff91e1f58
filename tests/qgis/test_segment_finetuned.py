"""Segment with fine-tuned model, end to end in QGIS, with a TerraTorch-layout tiny Sen1Floods11 checkpoint.

The checkpoint is written by the worker interpreter (this QGIS-side process never imports torch):
the golden layout of tests/goldens/segmentation filled by the deterministic rule, wrapped in a real
``terratorch fit`` checkpoint's extra contents (tests/unit/models/test_segmentation_goldens.py).
S1RTC patches stand in for S1GRD.
"""

from __future__ import annotations

import subprocess

import numpy as np
import processing
import pytest
from qgis.core import QgsProcessingException, QgsProject, QgsVectorLayer
from tm_helpers import REPO, raster_facts, read_array

ALG = "terramind:segmentwithfinetunedmodel"
GOLD = REPO / "tests" / "goldens" / "segmentation"
CONFIG = GOLD / "configs" / "tiny_sen1floods11.yaml"


def _params(ckpt: str, example, tmp_path, **extra) -> dict:
    return {"MODEL_FILE": ckpt, "CONFIG": str(CONFIG), "INPUT_S2L1C": example("S2L1C"), "INPUT_S1GRD": example("S1RTC"),
            "OUTPUT": str(tmp_path / "classes.tif"), "DEVICE": "cpu", **extra}  # fmt: skip


def test_classes_probabilities_and_polygons(terramind_provider, flood_ckpt, example, tmp_path, recording_feedback):
    feedback = recording_feedback()
    result = processing.run(ALG, _params(flood_ckpt, example, tmp_path, OUTPUT_PROBABILITIES=str(tmp_path / "prob.tif"),
                                         OUTPUT_POLYGONS=str(tmp_path / "polygons.gpkg")), feedback=feedback)  # fmt: skip
    src, cls, prob = raster_facts(example("S2L1C")), raster_facts(result["OUTPUT"]), raster_facts(result["OUTPUT_PROBABILITIES"])
    for out in (cls, prob):
        assert (out["size"], out["geotransform"], out["epsg"]) == (src["size"], src["geotransform"], src["epsg"])
    assert (cls["dtype"], cls["nodata"], cls["has_colour_table"]) == ("Byte", 255.0, True)
    assert cls["categories"][:2] == ["Others", "Flood"]
    assert (prob["count"], prob["descriptions"]) == (2, ["P(Others)", "P(Flood)"])
    classes = read_array(result["OUTPUT"])
    assert set(np.unique(classes)) == {0, 1}
    np.testing.assert_allclose(read_array(result["OUTPUT_PROBABILITIES"]).sum(axis=0), 1.0, atol=1e-5)
    polygons = QgsVectorLayer(result["OUTPUT_POLYGONS"], "polygons", "ogr")
    assert polygons.isValid() and polygons.featureCount() > 0
    assert {"class", "class_name"} <= set(polygons.fields().names())
    pairs = {(f["class"], f["class_name"]) for f in polygons.getFeatures()}
    assert pairs == {(0, "Others"), (1, "Flood")}
    summary = {c["name"]: c["pixels"] for c in __import__("json").loads(result["CLASS_SUMMARY"])}
    assert summary == {"Others": int((classes == 0).sum()), "Flood": int((classes == 1).sum())}


def test_class_names_and_colours_from_the_parameter(terramind_provider, flood_ckpt, example, tmp_path):
    result = processing.run(ALG, _params(flood_ckpt, example, tmp_path, CLASSES="0: Dry land #FFFFFF\n1: Flooded #0000FF"))
    from osgeo import gdal

    ds = gdal.Open(result["OUTPUT"])
    table = ds.GetRasterBand(1).GetColorTable()
    assert ds.GetRasterBand(1).GetCategoryNames()[:2] == ["Dry land", "Flooded"]
    assert table.GetColorEntry(0)[:3] == (255, 255, 255) and table.GetColorEntry(1)[:3] == (0, 0, 255)
    ds = None


def test_loaded_layers_are_styled(terramind_provider, flood_ckpt, example, tmp_path, qgis_new_project):
    processing.runAndLoadResults(ALG, _params(flood_ckpt, example, tmp_path, OUTPUT="TEMPORARY_OUTPUT",
                                              OUTPUT_POLYGONS="TEMPORARY_OUTPUT"))  # fmt: skip
    layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    raster = layers["Segmentation (282D_485L_3_3)"]
    assert raster.renderer().type() == "paletted"
    assert [c.label for c in raster.renderer().classes()][:2] == ["Others", "Flood"]
    (vector,) = [layer for layer in layers.values() if isinstance(layer, QgsVectorLayer)]
    assert vector.renderer().type() == "categorizedSymbol"
    assert [c.label() for c in vector.renderer().categories()] == ["Others", "Flood"]
    QgsProject.instance().clear()


def test_unsupported_decoder_is_named(terramind_provider, flood_ckpt, example, tmp_path):
    config = tmp_path / "fcn.yaml"
    config.write_text(CONFIG.read_text().replace("decoder: UNetDecoder", "decoder: FCNDecoder"))
    with pytest.raises(QgsProcessingException, match="decoder 'FCNDecoder' \\(supported: UNetDecoder, UperNetDecoder\\)"):
        processing.run(ALG, _params(flood_ckpt, example, tmp_path, CONFIG=str(config)))
    assert not (tmp_path / "classes.tif").exists()


def test_missing_modality_is_named(terramind_provider, flood_ckpt, example, tmp_path):
    params = _params(flood_ckpt, example, tmp_path)
    del params["INPUT_S1GRD"]
    with pytest.raises(QgsProcessingException, match=r"needs input S1GRD \(2 bands: VV, VH\).*INPUT_S1GRD"):
        processing.run(ALG, params)


def test_model_file_is_required_and_checked(terramind_provider, example, tmp_path):
    with pytest.raises(QgsProcessingException, match="MODEL_FILE: '.*missing.ckpt' does not exist"):
        processing.run(ALG, _params(str(tmp_path / "missing.ckpt"), example, tmp_path))


def test_onnx_export_runs_and_matches_the_checkpoint(terramind_provider, flood_ckpt, example, tmp_path, worker_python):
    """The same model exported to .onnx (ONNX Runtime in the worker) gives the checkpoint's classes."""
    onnx_path = tmp_path / "flood_tiny.onnx"
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO / ".pluginpath")}
    subprocess.run([worker_python, "-m", "terramind_qgis.models.backends.onnx_export", "segmentation", flood_ckpt,
                    "--config", str(CONFIG), "--out", str(onnx_path)], check=True, capture_output=True, env=env,
                   timeout=300)  # fmt: skip
    torch_run = processing.run(ALG, _params(flood_ckpt, example, tmp_path / "t",
                                            OUTPUT_PROBABILITIES=str(tmp_path / "t_prob.tif")))  # fmt: skip
    onnx_run = processing.run(ALG, {**_params(str(onnx_path), example, tmp_path / "o",
                                              OUTPUT_PROBABILITIES=str(tmp_path / "o_prob.tif")), "CONFIG": None})
    assert raster_facts(onnx_run["OUTPUT"])["categories"][:2] == ["Others", "Flood"]
    p_torch, p_onnx = read_array(torch_run["OUTPUT_PROBABILITIES"]), read_array(onnx_run["OUTPUT_PROBABILITIES"])
    assert np.abs(p_onnx - p_torch).max() <= 1e-4
    decided = np.abs(p_torch[0] - p_torch[1]) >= 1e-4
    assert np.array_equal(read_array(onnx_run["OUTPUT"])[decided], read_array(torch_run["OUTPUT"])[decided])
