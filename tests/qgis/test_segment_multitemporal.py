"""Segment with fine-tuned model, multi-temporal: ImpactMesh flood mapping over four dates in QGIS.

The rasters are built from the example patches (tests/unit/models/temporal_fixtures.py
``tiled_inputs``: a 2 x 2 mosaic of the four scenes; dates simulated by documented perturbations:
illumination gain/offset, a flood darkening S2 and S1 from date 3 on, a cloud on date 2, a NaN gap on
date 4) and written by the worker interpreter (this process never imports torch), one GeoTIFF per
date, as an analyst has them; plus the tiny ImpactMesh flood checkpoint (deterministic weights,
Lightning layout). A block where every date of every input is NaN must come out as nodata, and
nowhere else.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import processing
import pytest
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterLayer,
    QgsRasterLayer,
    QgsVectorLayer,
)
from test_qgis_process import _qgis_process, cli_env  # noqa: F401 - the qgis_process fixture
from tm_helpers import REPO, raster_facts, read_array

ALG = "terramind:segmentwithfinetunedmodel"
CONFIG = REPO / "tests" / "goldens" / "temporal" / "configs" / "tiny_impactmesh_flood.yaml"
WINDOW = (150, 100, 256, 288)  # rows, cols, height, width of the 480 x 480 input: 2 x 2 chips of 256 px
GAP = (slice(20, 40), slice(30, 70))  # every date of every input is NaN here
CLASSES = "0: No flood #D9D9D9; 1: Flood #1F77B4"


@pytest.fixture(scope="session")
def temporal_data(tmp_path_factory, worker_python) -> dict:
    """{'ckpt': path, 'S2L2A': [4 paths], 'S1RTC': [4 paths], 'DEM': [1 path], 'far': a date far away}."""
    folder = tmp_path_factory.mktemp("temporal")
    script = f"""
import json, sys
from pathlib import Path
import numpy as np
sys.path[:0] = [sys.argv[1], sys.argv[2], str(Path(sys.argv[2]).parents[1])]  # plugin, test module, testlib
from temporal_fixtures import tiled_inputs, write_date_rasters
from test_temporal_goldens import write_checkpoint
folder = Path(sys.argv[3])
raw = tiled_inputs()
for a in raw.values():
    a[..., {WINDOW[0]} + {GAP[0].start}:{WINDOW[0]} + {GAP[0].stop},
        {WINDOW[1]} + {GAP[1].start}:{WINDOW[1]} + {GAP[1].stop}] = np.nan
files = {{k: [str(p) for p in v] for k, v in write_date_rasters(folder / "dates", raw, crop={WINDOW}).items()}}
far = write_date_rasters(folder / "far", {{"S2L2A": raw["S2L2A"][:1]}}, crop=(0, 0, 64, 64))["S2L2A"][0]
import rasterio
with rasterio.open(far, "r+") as dst:  # the same layer 500 km east
    dst.transform = dst.transform * __import__("affine").Affine.translation(50000, 0)
files["far"] = str(far)
files["ckpt"] = str(write_checkpoint(folder / "flood_tiny.ckpt", "tiny_impactmesh_flood"))
print(json.dumps(files))
"""
    done = subprocess.run([worker_python, "-c", script, str(REPO / ".pluginpath"), str(REPO / "tests" / "unit" / "models"),
                           str(folder)], check=True, capture_output=True, text=True, timeout=600)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def _params(data: dict, tmp_path, **extra) -> dict:
    return {"MODEL_FILE": data["ckpt"], "CONFIG": str(CONFIG), "DATES_S2L2A": data["S2L2A"], "DATES_S1RTC": data["S1RTC"],
            "INPUT_DEM": data["DEM"][0], "CLASSES": CLASSES, "OUTPUT": str(tmp_path / "flood.tif"), "DEVICE": "cpu",
            "BATCH_SIZE": 4, **extra}  # fmt: skip


def test_four_dates_grid_classes_style_nodata(terramind_provider, temporal_data, tmp_path, recording_feedback):
    feedback = recording_feedback()
    result = processing.run(ALG, _params(temporal_data, tmp_path, OUTPUT_PROBABILITIES=str(tmp_path / "p.tif"),
                                         OUTPUT_POLYGONS=str(tmp_path / "flood.gpkg")), feedback=feedback)  # fmt: skip
    first, cls = raster_facts(temporal_data["S2L2A"][0]), raster_facts(result["OUTPUT"])
    assert (cls["size"], cls["geotransform"], cls["epsg"]) == (first["size"], first["geotransform"], first["epsg"])
    assert (cls["dtype"], cls["nodata"], cls["has_colour_table"]) == ("Byte", 255.0, True)
    assert cls["categories"][:2] == ["No flood", "Flood"]
    tiling = json.loads(cls["tags"]["TERRAMIND_TILED_INFERENCE"])
    assert tiling == {"crop": 256, "stride": 208, "delta": 8, "blend_overlaps": True, "dates": 4}
    inputs = json.loads(cls["tags"]["TERRAMIND_INPUTS"])
    assert [d["file"] for d in inputs["S1RTC"]["dates"]] == [f"S1RTC_t{t}.tif" for t in (1, 2, 3, 4)]
    classes = read_array(result["OUTPUT"])
    gap = np.zeros(classes.shape, bool)
    gap[GAP] = True
    assert ((classes == 255) == gap).all()  # nodata only where no date of any input has data
    assert set(np.unique(classes[~gap])) <= {0, 1}
    prob = read_array(result["OUTPUT_PROBABILITIES"])
    np.testing.assert_allclose(prob[:, ~gap].sum(axis=0), 1.0, atol=1e-5)
    assert (tmp_path / "flood.qml").exists() and (tmp_path / "p.qml").exists()
    assert any("DEM has one date (layer); it is used for all 4 dates" in m for m in feedback.infos)
    assert any("chips of 256 px every 208 px, 8 px dropped at chip borders, 4 chips" in m for m in feedback.infos)
    summary = {c["name"]: c["pixels"] for c in json.loads(result["CLASS_SUMMARY"])}
    assert summary["No flood"] + summary["Flood"] == int((~gap).sum())
    polygons = QgsVectorLayer(result["OUTPUT_POLYGONS"], "polygons", "ogr")
    assert polygons.isValid() and polygons.featureCount() > 0
    assert {(f["class"], f["class_name"]) for f in polygons.getFeatures()} <= {(0, "No flood"), (1, "Flood")}


@pytest.mark.parametrize("change, message", [
    (lambda d: {"DATES_S1RTC": d["S1RTC"][:3]},
     r"(?m)^DATES_S1RTC: 3 dates \(layers\) given, but the model reads 4 dates of S1RTC; give 4 layers in date order"),
    (lambda d: {"DATES_DEM": d["DEM"] * 2, "INPUT_DEM": None},
     r"(?m)^DATES_DEM: 2 dates \(layers\) given, but the model reads 4 dates of DEM"),
    (lambda d: {"INPUT_S2L2A": d["S2L2A"][0]},
     r"(?m)^DATES_S2L2A: give S2L2A either as one layer \(INPUT_S2L2A\) or as its dates"),
    (lambda d: {"DATES_S1RTC": d["S1RTC"][:2] + [d["S2L2A"][2]] + d["S1RTC"][3:]},
     r"layer 'S2L2A_t3 \(date 3\)': S1RTC needs 2 band\(s\) \(VV, VH\), got 12"),
    (lambda d: {"DATES_S1RTC": d["S1RTC"][:3] + [d["far"]]}, r"layer 'S2L2A_t1' \(DATES_S1RTC \(date 4\)\) does not overlap"),
])  # fmt: skip
def test_count_and_grid_mismatches_are_one_message_and_no_file(terramind_provider, temporal_data, tmp_path, change, message):
    with pytest.raises(QgsProcessingException, match=message):
        processing.run(ALG, _params(temporal_data, tmp_path, **change(temporal_data)))
    assert list(tmp_path.iterdir()) == []


def test_catalogue_model_requests_are_checked_before_the_worker(terramind_provider, temporal_data, tmp_path):
    """MODEL by id: its card says what it reads, so QGIS checks the dates itself (no weights needed for that)."""
    base = {**_params(temporal_data, tmp_path, MODEL="terramind_v1_base_flood"), "MODEL_FILE": None, "CONFIG": None}
    alg = terramind_provider.algorithm("segmentwithfinetunedmodel")
    assert {"terramind_v1_base_flood", "terramind_v1_base_fire"} <= set(alg.parameterDefinition("MODEL").options())
    download = terramind_provider.algorithm("downloadmodels")  # downloadable for offline use
    assert {"terramind_v1_base_flood", "terramind_v1_base_fire"} <= set(download.parameterDefinition("MODELS").options())
    with pytest.raises(QgsProcessingException, match=r"(?m)^DATES_S1RTC: 2 dates \(layers\) given, but the model reads 4"):
        processing.run(ALG, {**base, "DATES_S1RTC": temporal_data["S1RTC"][:2]})
    missing_dem = r"(?m)^INPUT_DEM: model 'terramind_v1_base_flood' reads S2L2A, S1RTC, DEM; give DEM"
    with pytest.raises(QgsProcessingException, match=missing_dem):
        processing.run(ALG, {**base, "INPUT_DEM": None})
    assert list(tmp_path.iterdir()) == []


def test_catalogue_model_without_its_weights_offline_is_one_message(terramind_provider, temporal_data, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    (tmp_path / "out").mkdir()
    params = {**_params(temporal_data, tmp_path / "out", MODEL="terramind_v1_base_fire"), "MODEL_FILE": None, "CONFIG": None}
    with pytest.raises(QgsProcessingException, match=r"cannot get the checkpoint named \*fire\* from Hugging Face repo "
                                                     r"'ibm-esa-geospatial/TerraMind-base-Fire'.*HF_HUB_OFFLINE=1"):  # fmt: skip
        processing.run(ALG, params)
    assert list((tmp_path / "out").iterdir()) == []


def test_dates_in_a_graphical_model(terramind_provider, temporal_data, tmp_path):
    """A model whose multiple-layer input feeds DATES_S2L2A (the order of the list is the date order)."""
    model = QgsProcessingModelAlgorithm("flood over dates", "tests")
    for name, param in (("s2", QgsProcessingParameterMultipleLayers("s2", "S2 dates", QgsProcessing.SourceType.TypeRaster)),
                        ("s1", QgsProcessingParameterMultipleLayers("s1", "S1 dates", QgsProcessing.SourceType.TypeRaster)),
                        ("dem", QgsProcessingParameterRasterLayer("dem", "DEM"))):  # fmt: skip
        model.addModelParameter(param, QgsProcessingModelParameter(name))
    child = QgsProcessingModelChildAlgorithm(ALG)
    child.setChildId("flood")
    child.addParameterSources("DATES_S2L2A", [QgsProcessingModelChildParameterSource.fromModelParameter("s2")])
    child.addParameterSources("DATES_S1RTC", [QgsProcessingModelChildParameterSource.fromModelParameter("s1")])
    child.addParameterSources("INPUT_DEM", [QgsProcessingModelChildParameterSource.fromModelParameter("dem")])
    for key, value in (("MODEL_FILE", temporal_data["ckpt"]), ("CONFIG", str(CONFIG)), ("DEVICE", "cpu"), ("CLASSES", CLASSES)):
        child.addParameterSources(key, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    out = QgsProcessingModelOutput("flood map")
    out.setChildOutputName("OUTPUT")
    child.setModelOutputs({"flood map": out})
    model.addChildAlgorithm(child)
    saved = tmp_path / "flood_over_dates.model3"
    assert model.toFile(str(saved))
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(saved))  # run the saved .model3
    target = tmp_path / "model_flood.tif"
    result = processing.run(model, {"s2": temporal_data["S2L2A"], "s1": temporal_data["S1RTC"], "dem": temporal_data["DEM"][0],
                                    "flood:flood map": str(target)})  # fmt: skip
    assert result["flood:flood map"] == str(target)
    direct = processing.run(ALG, _params(temporal_data, tmp_path / "direct"))
    assert np.array_equal(read_array(target), read_array(direct["OUTPUT"]))
    assert isinstance(QgsRasterLayer(str(target)), QgsRasterLayer)


def test_dates_from_qgis_process(cli_env, temporal_data, tmp_path):  # noqa: F811 - the imported fixture
    """``qgis_process``: a multi-layer parameter is repeated once per date, in date order."""
    out = tmp_path / "cli_flood.tif"
    args = [f"DATES_S2L2A={p}" for p in temporal_data["S2L2A"]] + [f"DATES_S1RTC={p}" for p in temporal_data["S1RTC"]]
    done = _qgis_process(cli_env, "--json", "run", ALG, "--", *args, f"INPUT_DEM={temporal_data['DEM'][0]}",
                         f"MODEL_FILE={temporal_data['ckpt']}", f"CONFIG={CONFIG}", f"CLASSES={CLASSES}", "DEVICE=cpu",
                         f"OUTPUT={out}")  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["results"]["OUTPUT"] == str(out)
    facts = raster_facts(out)
    assert facts["categories"][:2] == ["No flood", "Flood"] and (tmp_path / "cli_flood.qml").exists()
    assert json.loads(facts["tags"]["TERRAMIND_TILED_INFERENCE"])["dates"] == 4
    classes = read_array(out)
    assert (classes[GAP] == 255).all() and (classes != 255).sum() == classes.size - classes[GAP].size
    bad = _qgis_process(cli_env, "run", ALG, "--", *args[:6], f"INPUT_DEM={temporal_data['DEM'][0]}",
                        f"MODEL_FILE={temporal_data['ckpt']}", f"CONFIG={CONFIG}", "DEVICE=cpu", f"OUTPUT={tmp_path / 'bad.tif'}")
    assert bad.returncode != 0
    assert "DATES_S1RTC: 2 dates (layers) given, but the model reads 4 dates of S1RTC" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr and not (tmp_path / "bad.tif").exists()
