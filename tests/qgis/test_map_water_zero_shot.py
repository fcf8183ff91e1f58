"""Map water (zero-shot), end to end in QGIS, with the reduced test TerraMind (untrained, deterministic)."""

from __future__ import annotations

import numpy as np
import processing
import pytest
from qgis.core import QgsProcessingException, QgsProject
from tm_helpers import raster_facts, read_array

from terramind_qgis.models.core.modalities import LULC_CLASSES

ALG = "terramind:mapwaterzeroshot"


def _params(tmp_path, **extra) -> dict:
    return {"MODEL": "test_terramind_tiny", "UNTRAINED": True, "SEED": 5, "DEVICE": "cpu",
            "OUTPUT_WATER": str(tmp_path / "water.tif"), "OUTPUT_LULC": str(tmp_path / "lulc.tif"), **extra}  # fmt: skip


@pytest.mark.parametrize("flooded", [False, True])
def test_water_is_the_generated_water_class(terramind_provider, example, tmp_path, flooded):
    source = example("S2L2A")
    result = processing.run(ALG, _params(tmp_path, INPUT_S2L2A=source, INPUT_S1RTC=example("S1RTC"),
                                         FLOODED_VEGETATION=flooded))  # fmt: skip
    src, water, lulc = raster_facts(source), raster_facts(result["OUTPUT_WATER"]), raster_facts(result["OUTPUT_LULC"])
    for out in (water, lulc):
        assert (out["size"], out["geotransform"], out["epsg"]) == (src["size"], src["geotransform"], "32722")
        assert (out["dtype"], out["nodata"], out["has_colour_table"]) == ("Byte", 255.0, True)
        assert out["tags"]["TERRAMIND_UNTRAINED"] == "YES"
    assert water["categories"][:2] == ["Not water", "Water"]
    assert lulc["categories"][:10] == [c.name for c in LULC_CLASSES]
    classes, mask = read_array(result["OUTPUT_LULC"]), read_array(result["OUTPUT_WATER"])
    expected = np.isin(classes, [1, 3] if flooded else [1]).astype(np.uint8)
    assert 0 < expected.mean() < 1  # the untrained test model does generate some water
    np.testing.assert_array_equal(mask, expected)
    assert result["WATER_FRACTION"] == pytest.approx(expected.mean())
    assert result["WATER_AREA"] == pytest.approx(100.0 * expected.sum())


def test_loaded_layers_are_styled(terramind_provider, example, tmp_path, qgis_new_project):
    processing.runAndLoadResults(ALG, _params(tmp_path, INPUT_S2L2A=example("S2L2A"), OUTPUT_WATER="TEMPORARY_OUTPUT",
                                              OUTPUT_LULC="TEMPORARY_OUTPUT"))  # fmt: skip
    layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    water = layers["Water (282D_485L_3_3) UNTRAINED"]
    lulc = layers["Generated land cover (282D_485L_3_3) UNTRAINED"]
    assert water.renderer().type() == lulc.renderer().type() == "paletted"
    assert [c.label for c in water.renderer().classes()][:2] == ["Not water", "Water"]
    assert [c.label for c in lulc.renderer().classes()][:10] == [c.name for c in LULC_CLASSES]
    QgsProject.instance().clear()


def test_sentinel2_band_count_is_checked(terramind_provider, example, tmp_path):
    with pytest.raises(QgsProcessingException, match=r"has 13 bands, but S2L2A needs 12 .*BANDS_S2L2A"):
        processing.run(ALG, _params(tmp_path, INPUT_S2L2A=example("S2L1C")))
