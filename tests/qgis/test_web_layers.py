"""Web-service layers (XYZ tiles; WMS goes through the same provider) as inputs.

The tiles are real: the S2RGB example patch warped by GDAL into Web Mercator XYZ tiles at zoom 14
(PNG with alpha outside the patch), served to QGIS's own XYZ provider from a ``file://`` URL. QGIS
renders them; the plugin exports the rendered colours to an RGBA GeoTIFF on a 10 m grid and the
worker reads red, green, blue with the alpha band as the nodata mask.
"""

from __future__ import annotations

import math

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
)
from tm_helpers import raster_facts, read_array

ALG = "terramind:generatemodalities"
ZOOM = 14
HALF_WORLD = 20037508.342789244  # Web Mercator


def _tile_bounds(x: int, y: int) -> tuple[float, float, float, float]:
    size = 2 * HALF_WORLD / 2**ZOOM
    return (-HALF_WORLD + x * size, HALF_WORLD - (y + 1) * size, -HALF_WORLD + (x + 1) * size, HALF_WORLD - y * size)


def _tile_of(lon: float, lat: float) -> tuple[int, int]:
    n = 2**ZOOM
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


@pytest.fixture
def xyz_layer(example, tmp_path):
    """An XYZ tile layer of the S2RGB example patch, and the patch's extent in EPSG:3857."""
    source = example("S2RGB")
    ring = gdal.Info(source, format="json")["wgs84Extent"]["coordinates"][0]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    (x0, y0), (x1, y1) = _tile_of(min(lons), max(lats)), _tile_of(max(lons), min(lats))
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            tile = gdal.Warp("", source, format="MEM", dstSRS="EPSG:3857", outputBounds=_tile_bounds(x, y),
                             width=256, height=256, resampleAlg="bilinear", dstAlpha=True)  # fmt: skip
            (tmp_path / "tiles" / str(ZOOM) / str(x)).mkdir(parents=True, exist_ok=True)
            gdal.Translate(str(tmp_path / "tiles" / str(ZOOM) / str(x) / f"{y}.png"), tile, format="PNG")
            tile = None
    url = f"file://{tmp_path}/tiles/{{z}}/{{x}}/{{y}}.png"
    layer = QgsRasterLayer(f"type=xyz&url={url}&zmin={ZOOM}&zmax={ZOOM}", "S2 tiles", "wms")
    assert layer.isValid() and layer.bandCount() == 1  # one band of rendered colour (ARGB)
    QgsProject.instance().addMapLayer(layer)
    patch = QgsRasterLayer(source, "patch")
    web = QgsCoordinateReferenceSystem("EPSG:3857")
    extent = QgsCoordinateTransform(patch.crs(), web, QgsProject.instance()).transformBoundingBox(patch.extent())
    yield layer, extent
    QgsProject.instance().removeMapLayer(layer.id())


def _params(layer, tmp_path, extent, **extra):
    area = f"{extent.xMinimum()},{extent.xMaximum()},{extent.yMinimum()},{extent.yMaximum()} [EPSG:3857]"
    return {"INPUT_S2RGB": layer, "OUTPUTS": ["DEM"], "MODEL": "test_terramind_tiny", "UNTRAINED": True,
            "TIMESTEPS": 1, "EXTENT": area, "OUTPUT_DEM": str(tmp_path / "dem.tif"), **extra}  # fmt: skip


def test_xyz_tiles_are_exported_on_a_10_m_grid_with_alpha_as_nodata(terramind_provider, xyz_layer, tmp_path,
                                                                    recording_feedback):
    layer, extent = xyz_layer
    feedback = recording_feedback()
    result = processing.run(ALG, _params(layer, tmp_path, extent), feedback=feedback)
    assert any("is a web service" in w and "S2 tiles" in w for w in feedback.warnings)
    facts = raster_facts(result["OUTPUT_DEM"])
    left, res_x, _, top, _, res_y = facts["geotransform"]
    assert facts["epsg"] == "3857" and (res_x, res_y) == (10.0, -10.0)
    assert (left, top) == pytest.approx((extent.xMinimum(), extent.yMaximum()), abs=1e-6)
    assert facts["size"] == (math.ceil(extent.width() / 10 - 1e-6), math.ceil(extent.height() / 10 - 1e-6))
    dem = read_array(result["OUTPUT_DEM"])
    nodata = dem == facts["nodata"]
    # the UTM patch is a rotated square in Web Mercator: the tiles are transparent in the corners of its
    # bounding box, and those pixels are nodata in the output; the patch itself is data
    assert nodata[0, 0] and nodata[0, -1] and nodata[-1, 0] and nodata[-1, -1]
    h, w = dem.shape
    assert not nodata[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].any()
    assert 0.005 < nodata.mean() < 0.2
    assert np.isfinite(dem[~nodata]).all()


def test_whole_world_web_layer_asks_for_an_extent(terramind_provider, xyz_layer, tmp_path):
    layer, extent = xyz_layer
    with pytest.raises(QgsProcessingException, match=r"layer 'S2 tiles' \(INPUT_S2RGB\) would be exported as .* "
                                                     r"pixels; set EXTENT to a smaller area"):  # fmt: skip
        processing.run(ALG, _params(layer, tmp_path, extent, EXTENT=None))
    assert not (tmp_path / "dem.tif").exists()


def test_rendered_colours_are_refused_for_physical_modalities(terramind_provider, xyz_layer, tmp_path):
    layer, extent = xyz_layer
    params = _params(layer, tmp_path, extent, INPUT_S2L2A=layer)
    del params["INPUT_S2RGB"]
    with pytest.raises(QgsProcessingException, match=r"layer 'S2 tiles' \(INPUT_S2L2A\) is a rendered colour map "
                                                     r"\(web tiles: red, green, blue\), but S2L2A needs 12 band"):  # fmt: skip
        processing.run(ALG, params)
