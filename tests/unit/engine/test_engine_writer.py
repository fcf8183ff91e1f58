"""GeoTIFF outputs: georeferencing, layout, nodata, descriptions, tags, colour table, category names
(read back by GDAL's own gdalinfo), .qml sidecar, atomic rename, and clean abort."""

from __future__ import annotations

import glob
import json
import os
import subprocess

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from terramind_qgis.models.core.job import partial_glob
from terramind_qgis.models.core.modalities import LULC_CLASSES, get_modality
from terramind_qgis.models.engine import BandStats, GeoTiffWriter, OutputRaster, WorkingGrid, write_category_names

GRID = WorkingGrid(CRS.from_epsg(32632), from_origin(500000.0, 5000000.0, 10.0, 10.0), 300, 270)


def _write_blocks(writer, data, valid, block=64):
    for r in range(0, data.shape[1], block):
        for c in range(0, data.shape[2], block):
            writer.write(r, c, data[:, r : r + block, c : c + block], valid[r : r + block, c : c + block])


def test_float_output_metadata_and_nodata(tmp_path):
    s2 = get_modality("S2L2A")
    path = str(tmp_path / "out" / "gen.tif")
    spec = OutputRaster("S2L2A", path, s2.band_labels, "S2L2A", tags={"TERRAMIND_MODEL_ID": "x", "TERRAMIND_UNTRAINED": "YES"})
    rng = np.random.default_rng(0)
    data = rng.normal(2000, 500, (12, 270, 300)).astype(np.float32)
    valid = np.ones((270, 300), bool)
    valid[:10] = False
    w = GeoTiffWriter(spec, GRID, block_size=64)
    _write_blocks(w, data, valid)
    assert os.path.exists(w.partial) and not os.path.exists(path)
    assert glob.glob(partial_glob(path)) == [w.partial]
    assert w.commit() == path
    assert not glob.glob(partial_glob(path)), "no partial file after commit"
    with rasterio.open(path) as src:
        assert src.crs == GRID.crs and src.transform == GRID.transform and (src.width, src.height) == (300, 270)
        assert src.count == 12 and src.dtypes[0] == "float32" and src.nodata == -9999.0
        assert src.descriptions == s2.band_labels
        assert src.tags()["TERRAMIND_UNTRAINED"] == "YES" and src.tags()["TERRAMIND_MODEL_ID"] == "x"
        assert src.profile["tiled"] and src.profile["blockxsize"] == 64
        assert src.compression.name == "deflate"
        out = src.read()
    assert (out[:, :10] == -9999.0).all()
    assert np.array_equal(out[:, 10:], data[:, 10:])
    qml = path[:-4] + ".qml"
    text = open(qml, encoding="utf-8").read()
    assert 'type="multibandcolor"' in text and 'redBand="4"' in text


def test_band_stats_give_mean_plus_minus_two_sigma_clipped():
    st = BandStats(2)
    a = np.stack([np.linspace(0, 100, 1000), np.full(1000, 5.0)]).reshape(2, 10, 100)
    v = np.ones((10, 100), bool)
    st.update(a[:, :5], v[:5])
    st.update(a[:, 5:], v[5:])
    r = st.display_ranges()
    m, s = a[0].mean(), a[0].std()
    assert r[1] == pytest.approx((max(m - 2 * s, 0.0), min(m + 2 * s, 100.0)))
    assert r[2] == pytest.approx((5.0, 5.0))


def test_class_output_has_colour_table_and_category_names_readable_by_gdal(tmp_path):
    path = str(tmp_path / "lulc.tif")
    spec = OutputRaster("LULC", path, ("LULC class",), "LULC", "uint8", LULC_CLASSES, tags={"A": "b"})
    data = (np.arange(270 * 300) % 10).reshape(1, 270, 300).astype(np.float32)
    valid = np.ones((270, 300), bool)
    valid[0, 0] = False
    w = GeoTiffWriter(spec, GRID, block_size=64)
    _write_blocks(w, data, valid)
    w.commit()
    with rasterio.open(path) as src:
        assert src.nodata == 255 and src.dtypes[0] == "uint8"
        cmap = src.colormap(1)
        assert cmap[1] == (0x31, 0x71, 0xAD, 255) and cmap[9] == (0xC6, 0x65, 0x26, 255)
        assert src.read(1)[0, 0] == 255
    info = json.loads(subprocess.run(["gdalinfo", "-json", path], capture_output=True, text=True, check=True).stdout)
    band = info["bands"][0]
    assert band["categories"][:10] == [c.name for c in LULC_CLASSES]
    assert band["colorInterpretation"] == "Palette" and band["noDataValue"] == 255
    assert os.path.exists(path + ".aux.xml")
    assert 'type="paletted"' in open(path[:-4] + ".qml", encoding="utf-8").read()


def test_category_names_are_merged_into_an_existing_sidecar(tmp_path):
    tif = str(tmp_path / "x.tif")
    with open(tif + ".aux.xml", "w", encoding="utf-8") as f:
        f.write('<PAMDataset><Metadata><MDI key="K">V</MDI></Metadata>'
                '<PAMRasterBand band="1"><Description>d</Description></PAMRasterBand></PAMDataset>')
    write_category_names(tif, ["a", "", "c"])
    write_category_names(tif, ["x", "y"])  # replaces, never duplicates
    text = open(tif + ".aux.xml", encoding="utf-8").read()
    assert '<MDI key="K">V</MDI>' in text and "<Description>d</Description>" in text
    assert text.count("<CategoryNames>") == 1 and "<Category>y</Category>" in text and ">c<" not in text


def test_abort_removes_the_partial_files(tmp_path):
    path = str(tmp_path / "gone.tif")
    w = GeoTiffWriter(OutputRaster("DEM", path, ("Elevation",), "DEM"), GRID)
    w.write(0, 0, np.ones((1, 16, 16), np.float32), np.ones((16, 16), bool))
    w.abort()
    w.abort()  # idempotent
    assert not glob.glob(partial_glob(path)) and not os.path.exists(path)


def test_non_finite_values_are_written_as_nodata_and_counted(tmp_path):
    """NaN/inf from a model (e.g. an fp16 overflow) must not reach the file as data, nor the style's range."""
    path = str(tmp_path / "dem.tif")
    w = GeoTiffWriter(OutputRaster("DEM", path, ("Elevation",), "DEM"), GRID, block_size=64)
    data = np.full((1, 270, 300), 100.0, np.float32)
    data[0, 5, 7], data[0, 200, 250], data[0, 0, 0] = np.nan, np.inf, np.nan
    valid = np.ones((270, 300), bool)
    valid[0, 0] = False  # already nodata: not counted
    _write_blocks(w, data, valid)
    assert w.nonfinite == 2
    w.commit()
    with rasterio.open(path) as src:
        out = src.read(1)
    assert out[5, 7] == out[200, 250] == out[0, 0] == -9999.0 and (out != -9999.0).sum() == 270 * 300 - 3
    text = open(str(tmp_path / "dem.qml"), encoding="utf-8").read()
    assert "nan" not in text.lower().replace("nodata", "")
