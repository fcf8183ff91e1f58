"""Reconstruct with tokenizer, end to end: processing.run -> worker -> GeoTIFFs -> styled layers.

Reduced test tokenizers (tests/data/catalogue) with deterministic untrained weights keep runs to a
few seconds; the numbers are meaningless, the plumbing is real.
"""

from __future__ import annotations

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import QgsProject, QgsRasterLayer
from tm_helpers import raster_facts, read_array

from terramind_qgis.models.core.modalities import LULC_CLASSES, MODALITIES

ALG = "terramind:reconstructwithtokenizer"


def _params(path, tmp_path, modality="S2L2A", **extra):
    return {"INPUT": path, "MODALITY": modality, "MODEL": f"test_tokenizer_{modality.lower()}", "UNTRAINED": True,
            "TIMESTEPS": 2, "SEED": 3, "OUTPUT": str(tmp_path / f"{modality}_rec.tif"), **extra}


def test_sentinel2_reconstruction_and_difference(terramind_provider, example, tmp_path, recording_feedback):
    source = example("S2L2A")
    feedback = recording_feedback()
    result = processing.run(ALG, _params(source, tmp_path, DIFFERENCE=str(tmp_path / "diff.tif")), feedback=feedback)
    src, rec, diff = raster_facts(source), raster_facts(result["OUTPUT"]), raster_facts(result["DIFFERENCE"])
    labels = list(MODALITIES["S2L2A"].band_labels)
    for out in (rec, diff):
        assert (out["size"], out["geotransform"], out["epsg"]) == (src["size"], src["geotransform"], "32722")
        assert (out["count"], out["dtype"], out["nodata"]) == (12, "Float32", -9999.0)
        assert out["tags"]["TERRAMIND_UNTRAINED"] == "YES" and out["tags"]["TERRAMIND_MODEL_ID"] == "test_tokenizer_s2l2a"
    assert rec["descriptions"] == labels
    assert diff["descriptions"] == [f"{b} difference" for b in labels]
    # difference = reconstruction - input, pixel by pixel
    np.testing.assert_allclose(read_array(result["DIFFERENCE"]),
                               read_array(result["OUTPUT"]) - read_array(source).astype(np.float32), atol=1e-2)
    assert sorted(result["PSNR"]) == sorted(labels) and sorted(result["MAE"]) == sorted(labels)
    assert result["MAE_MEAN"] == pytest.approx(np.mean(list(result["MAE"].values())))
    assert result["MAE"]["B04"] == pytest.approx(np.abs(read_array(result["DIFFERENCE"])[3]).mean(), rel=1e-4)
    assert any(line.startswith("B04: PSNR") for line in feedback.infos)
    assert any("UNTRAINED" in w for w in feedback.warnings)
    assert (tmp_path / "S2L2A_rec.qml").exists() and (tmp_path / "diff.qml").exists()
    assert feedback.progress[-1] == 100


def test_lulc_reconstruction_is_a_class_raster(terramind_provider, example, tmp_path):
    result = processing.run(ALG, _params(example("LULC"), tmp_path, "LULC", TILE_SIZE=208, OVERLAP=16,
                                         DIFFERENCE=str(tmp_path / "changed.tif")))
    rec, diff = raster_facts(result["OUTPUT"]), raster_facts(result["DIFFERENCE"])
    assert (rec["count"], rec["dtype"], rec["size"]) == (1, "Byte", (224, 224))
    assert rec["has_colour_table"] and rec["categories"][: len(LULC_CLASSES)] == [c.name for c in LULC_CLASSES]
    assert set(np.unique(read_array(result["OUTPUT"]))) <= set(range(10))
    assert set(np.unique(read_array(result["DIFFERENCE"]))) <= {0, 1} and diff["dtype"] == "Byte"
    assert 0.0 <= result["ACCURACY"] <= 1.0 and result["PSNR"] == {}


def test_band_mapping_reorders_the_layer_bands(terramind_provider, example, tmp_path):
    """The same bands in reverse file order + a reversed mapping give exactly the same reconstruction."""
    source = example("S1RTC")
    reversed_path = str(tmp_path / "reversed.tif")
    gdal.Translate(reversed_path, source, bandList=[2, 1])  # VH, VV
    direct = processing.run(ALG, _params(source, tmp_path, "S1RTC", OUTPUT=str(tmp_path / "direct.tif")))
    mapped = processing.run(ALG, _params(reversed_path, tmp_path, "S1RTC", BANDS=[2, 1], OUTPUT=str(tmp_path / "mapped.tif")))
    np.testing.assert_array_equal(read_array(mapped["OUTPUT"]), read_array(direct["OUTPUT"]))
    assert mapped["PSNR"] == direct["PSNR"] and sorted(direct["PSNR"]) == ["VH", "VV"]
    assert raster_facts(mapped["OUTPUT"])["descriptions"] == ["VV", "VH"]


def test_extent_limits_the_output(terramind_provider, example, tmp_path):
    source = example("DEM")
    x0, y0 = 790236.040382003993727, 7198039.252334283664823  # top-left corner of the patch
    extent = f"{x0 + 300},{x0 + 1500},{y0 - 1400},{y0 - 200} [EPSG:32722]"
    result = processing.run(ALG, _params(source, tmp_path, "DEM", EXTENT=extent))
    out = raster_facts(result["OUTPUT"])
    width, height = out["size"]
    assert 120 <= width <= 128 and 120 <= height <= 128  # 1200 m at 10 m, snapped to the input grid
    gt = out["geotransform"]
    assert gt[1] == 10.0 and (gt[0] - x0) % 10 == pytest.approx(0, abs=1e-6) and abs(gt[0] - (x0 + 300)) <= 10
    assert out["descriptions"] == ["Elevation"]


def test_non_file_layers_are_exported_first(terramind_provider, example, tmp_path, recording_feedback):
    """A VRT is written to a temporary GeoTIFF by QGIS (within EXTENT, on whole source pixels) and
    gives the same result as its source file."""
    source = example("DEM")
    vrt = str(tmp_path / "dem.vrt")
    gdal.BuildVRT(vrt, [source])
    x0, y0 = 790236.040382003993727, 7198039.252334283664823
    extent = f"{x0 + 303.3},{x0 + 1797.1},{y0 - 1502.5},{y0 - 4.2} [EPSG:32722]"  # not on pixel edges
    feedback = recording_feedback()
    via_vrt = processing.run(ALG, _params(vrt, tmp_path, "DEM", EXTENT=extent, OUTPUT=str(tmp_path / "vrt.tif")),
                             feedback=feedback)
    direct = processing.run(ALG, _params(source, tmp_path, "DEM", EXTENT=extent, OUTPUT=str(tmp_path / "file.tif")))
    assert any(i.startswith("Exporting layer 'dem' (INPUT) to a temporary GeoTIFF (150 x 151 pixels)") for i in feedback.infos)
    assert raster_facts(via_vrt["OUTPUT"])["geotransform"] == raster_facts(direct["OUTPUT"])["geotransform"]
    np.testing.assert_array_equal(read_array(via_vrt["OUTPUT"]), read_array(direct["OUTPUT"]))


def test_loaded_results_are_styled_and_named(terramind_provider, example, tmp_path, qgis_new_project):
    results = processing.runAndLoadResults(ALG, _params(example("S2L2A"), tmp_path, OUTPUT="TEMPORARY_OUTPUT",
                                                        DIFFERENCE="TEMPORARY_OUTPUT"))
    layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    assert set(layers) == {"S2L2A reconstruction (282D_485L_3_3) UNTRAINED", "S2L2A difference (282D_485L_3_3) UNTRAINED"}
    rec = layers["S2L2A reconstruction (282D_485L_3_3) UNTRAINED"]
    diff = layers["S2L2A difference (282D_485L_3_3) UNTRAINED"]
    assert isinstance(rec, QgsRasterLayer) and rec.source() == results["OUTPUT"]
    assert rec.renderer().type() == "multibandcolor" and rec.renderer().usesBands() == [4, 3, 2]
    assert diff.renderer().type() == "singlebandpseudocolor" and diff.renderer().usesBands() == [4]
    assert diff.renderer().classificationMin() == pytest.approx(-diff.renderer().classificationMax())
    QgsProject.instance().clear()


def test_loaded_lulc_has_its_class_legend(terramind_provider, example, tmp_path, qgis_new_project):
    processing.runAndLoadResults(ALG, _params(example("LULC"), tmp_path, "LULC", OUTPUT="TEMPORARY_OUTPUT",
                                              TILE_SIZE=224, OVERLAP=0))
    (layer,) = QgsProject.instance().mapLayers().values()
    assert layer.renderer().type() == "paletted"
    assert [c.label for c in layer.renderer().classes()][:10] == [c.name for c in LULC_CLASSES]
    QgsProject.instance().clear()
