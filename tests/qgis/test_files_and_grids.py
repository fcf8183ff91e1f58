"""Where files go and which grid they are on: relative paths, outputs that would overwrite inputs or each
other, unwritable folders, a CRS assigned in QGIS, a larger second input, band lists as one string."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import QgsCoordinateReferenceSystem, QgsProcessingException, QgsRasterLayer, QgsRasterRange
from tm_helpers import raster_facts, read_array

RECONSTRUCT = "terramind:reconstructwithtokenizer"
GENERATE = "terramind:generatemodalities"


def _rec(source, output, **extra):
    return {"INPUT": source, "MODALITY": "DEM", "MODEL": "test_tokenizer_dem", "UNTRAINED": True, "TIMESTEPS": 1,
            "OUTPUT": output, **extra}  # fmt: skip


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_relative_paths_are_taken_from_the_working_directory(terramind_provider, example, tmp_path, monkeypatch):
    """As qgis_process gets them from a shell: the worker runs elsewhere, so it must get absolute paths."""
    source = example("DEM")
    monkeypatch.chdir(os.path.dirname(source))
    (tmp_path / "out").mkdir()
    result = processing.run(RECONSTRUCT, _rec(os.path.basename(source), os.path.relpath(tmp_path / "out" / "rec.tif")))
    assert os.path.isfile(tmp_path / "out" / "rec.tif")
    assert os.path.samefile(result["OUTPUT"], tmp_path / "out" / "rec.tif")


def test_an_output_never_overwrites_an_input_or_another_output(terramind_provider, example, tmp_path):
    source = example("DEM")
    before = _sha(source)
    with pytest.raises(QgsProcessingException, match=r"OUTPUT: '.*' is the file of input layer '.*' \(INPUT\); "
                                                     r"writing there would destroy the input"):  # fmt: skip
        processing.run(RECONSTRUCT, _rec(source, source))
    assert _sha(source) == before
    same = str(tmp_path / "same.tif")
    pattern = (r"(DIFFERENCE|OUTPUT): '.*same\.tif' is also the file of (OUTPUT|DIFFERENCE); "
               r"give each output its own file name")
    with pytest.raises(QgsProcessingException, match=pattern):
        processing.run(RECONSTRUCT, _rec(source, same, DIFFERENCE=same))
    assert not os.path.exists(same)


def test_an_output_that_is_a_hard_link_of_the_input_is_refused(terramind_provider, example, tmp_path):
    """Another name of the same file (a hard link, compared by device and inode) is the input too."""
    import shutil

    source = tmp_path / "dem.tif"
    shutil.copy(example("DEM"), source)
    link = tmp_path / "other-name.tif"
    os.link(source, link)
    before = _sha(source)
    with pytest.raises(QgsProcessingException, match=r"OUTPUT: '.*other-name\.tif' is the file of input layer '.*' \(INPUT\)"):
        processing.run(RECONSTRUCT, _rec(str(source), str(link)))
    assert _sha(source) == before and sorted(f for f in os.listdir(tmp_path) if ".tif" in f and not f.endswith(".aux.xml")) == [
        "dem.tif", "other-name.tif"]  # no partial file


def test_an_unwritable_output_folder_is_one_message(terramind_provider, example):
    with pytest.raises(QgsProcessingException) as info:
        processing.run(RECONSTRUCT, _rec(example("DEM"), "/proc/not-a-folder/rec.tif"))
    message = str(info.value)
    assert message.startswith("OUTPUT: cannot create the folder '/proc/not-a-folder'") and "Traceback" not in message


def test_a_crs_assigned_in_qgis_is_the_outputs_crs(terramind_provider, example, tmp_path):
    """The file says EPSG:32722; the user set EPSG:32721 on the layer: QGIS's choice wins."""
    layer = QgsRasterLayer(example("DEM"), "dem with assigned crs")
    layer.setCrs(QgsCoordinateReferenceSystem("EPSG:32721"))
    result = processing.run(RECONSTRUCT, _rec(layer, str(tmp_path / "rec.tif")))
    facts, source = raster_facts(result["OUTPUT"]), raster_facts(example("DEM"))
    assert facts["epsg"] == "32721" and source["epsg"] == "32722"
    assert facts["geotransform"] == source["geotransform"] and facts["size"] == source["size"]


def test_a_larger_second_input_is_cut_to_the_first(terramind_provider, example, tmp_path):
    """Without EXTENT the work area is the first input; a large VRT as second input is exported only there."""
    dem = example("DEM")
    big = str(tmp_path / "big_dem.vrt")
    info = gdal.Info(dem, format="json")
    left, res, _, top, _, _ = info["geoTransform"]
    # a 30000 x 30000 pixel mosaic around the patch (the patch repeated by reference: no data written)
    gdal.BuildVRT(big, [dem], outputBounds=(left - 150000, top - 150000, left + 150000, top + 150000))
    result = processing.run(GENERATE, {"INPUT_S2L2A": example("S2L2A"), "INPUT_DEM": big, "OUTPUTS": ["NDVI"],
                                       "MODEL": "test_terramind_tiny", "UNTRAINED": True, "TIMESTEPS": 1,
                                       "OUTPUT_NDVI": str(tmp_path / "ndvi.tif")})  # fmt: skip
    assert raster_facts(result["OUTPUT_NDVI"])["size"] == raster_facts(example("S2L2A"))["size"]


def test_band_list_as_one_string(terramind_provider, tmp_path):
    """BANDS=2,1 from a shell: band 2 then band 1, not 'band 0'."""
    path = str(tmp_path / "two.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, 32, 32, 2, gdal.GDT_Float32)
    ds.SetGeoTransform((500000, 10, 0, 4000000, 0, -10))
    ds.SetProjection("EPSG:32633")
    ds.GetRasterBand(1).WriteArray(np.full((32, 32), 5.0))
    ds.GetRasterBand(2).WriteArray(np.full((32, 32), 100.0))
    ds = None
    params = {"INPUT": path, "MODALITY": "S1RTC", "MODEL": "test_tokenizer_s1rtc", "UNTRAINED": True, "TIMESTEPS": 1,
              "OUTPUT": str(tmp_path / "rec.tif"), "TILE_SIZE": 32, "OVERLAP": 0}  # fmt: skip
    swapped = processing.run(RECONSTRUCT, dict(params, BANDS="2,1", OUTPUT=str(tmp_path / "a.tif")))
    listed = processing.run(RECONSTRUCT, dict(params, BANDS=[2, 1], OUTPUT=str(tmp_path / "b.tif")))
    in_order = processing.run(RECONSTRUCT, dict(params, BANDS="1 2", OUTPUT=str(tmp_path / "c.tif")))
    assert swapped["MAE"] == listed["MAE"] != in_order["MAE"]
    with pytest.raises(QgsProcessingException, match=r"BANDS: 'red' is not a list of band numbers"):
        processing.run(RECONSTRUCT, dict(params, BANDS="red"))


def test_a_nodata_value_set_in_qgis_is_honoured(terramind_provider, example, tmp_path):
    """The user marked one elevation as no-data in the layer's Transparency properties (the file has none)."""

    source = example("DEM")
    dem = read_array(source)
    value = float(dem[0, 0])
    layer = QgsRasterLayer(source, "dem with user nodata")
    layer.dataProvider().setUserNoDataValue(1, [QgsRasterRange(value, value)])
    result = processing.run(RECONSTRUCT, _rec(layer, str(tmp_path / "rec.tif")))
    facts = raster_facts(result["OUTPUT"])
    out_nodata = read_array(result["OUTPUT"]) == facts["nodata"]
    assert out_nodata.any() and np.array_equal(out_nodata, dem == value)


def test_unticking_the_files_nodata_in_qgis_reads_every_pixel(terramind_provider, example, tmp_path):
    source = example("DEM")
    dem = gdal.Open(source).ReadAsArray()
    value = float(dem[0, 0])
    with_nodata = str(tmp_path / "dem_nodata.tif")
    gdal.Translate(with_nodata, source, noData=value)
    declared = processing.run(RECONSTRUCT, _rec(with_nodata, str(tmp_path / "a.tif")))
    layer = QgsRasterLayer(with_nodata, "dem, file nodata unticked")
    layer.dataProvider().setUseSourceNoDataValue(1, False)
    unticked = processing.run(RECONSTRUCT, _rec(layer, str(tmp_path / "b.tif")))
    nodata = raster_facts(declared["OUTPUT"])["nodata"]

    assert np.array_equal(read_array(declared["OUTPUT"]) == nodata, dem == value)
    assert not (read_array(unticked["OUTPUT"]) == nodata).any()
