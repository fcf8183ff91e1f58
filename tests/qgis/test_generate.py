"""Generate modalities, end to end, with the reduced test TerraMind (untrained, deterministic)."""

from __future__ import annotations

import numpy as np
import processing
from qgis.core import QgsProject
from tm_helpers import raster_facts, read_array

from terramind_qgis.models.core.modalities import LULC_CLASSES, MODALITIES

ALG = "terramind:generatemodalities"


def _params(tmp_path, **extra):
    return {"MODEL": "test_terramind_tiny", "UNTRAINED": True, "TIMESTEPS": 2, "SEED": 7, **extra}


def test_s2_to_dem_and_land_cover(terramind_provider, example, tmp_path, recording_feedback):
    source = example("S2L2A")
    feedback = recording_feedback()
    result = processing.run(ALG, _params(tmp_path, INPUT_S2L2A=source, OUTPUTS=["DEM", "LULC"],
                                         OUTPUT_DEM=str(tmp_path / "dem.tif"), OUTPUT_LULC=str(tmp_path / "lulc.tif"),
                                         OUTPUT_S1GRD=str(tmp_path / "not_requested.tif")), feedback=feedback)
    src, dem, lulc = raster_facts(source), raster_facts(result["OUTPUT_DEM"]), raster_facts(result["OUTPUT_LULC"])
    for out in (dem, lulc):
        assert (out["size"], out["geotransform"], out["epsg"]) == (src["size"], src["geotransform"], "32722")
        assert out["tags"]["TERRAMIND_UNTRAINED"] == "YES" and out["tags"]["TERRAMIND_MODEL_ID"] == "test_terramind_tiny"
    assert (dem["count"], dem["dtype"], dem["nodata"], dem["descriptions"]) == (1, "Float32", -9999.0, ["Elevation"])
    assert (lulc["count"], lulc["dtype"]) == (1, "Byte") and lulc["has_colour_table"]
    assert lulc["categories"][:10] == [c.name for c in LULC_CLASSES]
    assert set(np.unique(read_array(result["OUTPUT_LULC"]))) <= set(range(10))
    assert result["OUTPUT_S1GRD"] is None and not (tmp_path / "not_requested.tif").exists()
    assert {k for k, v in result.items() if k.startswith("OUTPUT_") and v} == {"OUTPUT_DEM", "OUTPUT_LULC"}
    assert (tmp_path / "dem.qml").exists() and (tmp_path / "lulc.qml").exists()


def test_several_inputs_and_reproducible_seed(terramind_provider, example, tmp_path):
    inputs = dict(INPUT_S2L2A=example("S2L2A"), INPUT_S1RTC=example("S1RTC"), INPUT_DEM=example("DEM"), OUTPUTS=["NDVI"])
    first = processing.run(ALG, _params(tmp_path, **inputs, OUTPUT_NDVI=str(tmp_path / "a.tif")))
    again = processing.run(ALG, _params(tmp_path, **inputs, OUTPUT_NDVI=str(tmp_path / "b.tif")))
    other = processing.run(ALG, _params(tmp_path, **inputs, SEED=8, OUTPUT_NDVI=str(tmp_path / "c.tif")))
    a, b, c = (read_array(r["OUTPUT_NDVI"]) for r in (first, again, other))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert raster_facts(first["OUTPUT_NDVI"])["descriptions"] == list(MODALITIES["NDVI"].band_labels)


def test_requested_output_without_destination_goes_to_a_temporary_file(terramind_provider, example, tmp_path):
    result = processing.run(ALG, _params(tmp_path, INPUT_DEM=example("DEM"), OUTPUTS=["S1RTC"]))
    facts = raster_facts(result["OUTPUT_S1RTC"])
    assert facts["descriptions"] == ["VV", "VH"] and facts["size"] == (224, 224)


def test_loaded_outputs_are_styled(terramind_provider, example, tmp_path, qgis_new_project, recording_feedback):
    feedback = recording_feedback()
    temporary = {f"OUTPUT_{m}": "TEMPORARY_OUTPUT" for m in MODALITIES if MODALITIES[m].can_be_output}
    processing.runAndLoadResults(ALG, _params(tmp_path, INPUT_S2L2A=example("S2L2A"), OUTPUTS=["S1GRD", "LULC", "DEM"],
                                              **temporary), feedback=feedback)  # fmt: skip
    assert feedback.errors == []  # e.g. "The following layers were not correctly generated" for phantom outputs
    layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    assert set(layers) == {f"Generated {m} (282D_485L_3_3) UNTRAINED" for m in ("S1GRD", "LULC", "DEM")}
    renderers = {name.split()[1]: layer.renderer().type() for name, layer in layers.items()}
    assert renderers == {"S1GRD": "singlebandgray", "LULC": "paletted", "DEM": "singlebandpseudocolor"}
    lulc = layers["Generated LULC (282D_485L_3_3) UNTRAINED"]
    assert [c.label for c in lulc.renderer().classes()][:10] == [c.name for c in LULC_CLASSES]
    QgsProject.instance().clear()
