"""Inputs on the working grid: nodata/NaN, extent, alignment of other CRSs/resolutions, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from engine_fixtures import EXAMPLES, Identity, open_stack, predictor, run_to_array, write_tif
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

from terramind_qgis.models.core.errors import InputRasterError
from terramind_qgis.models.engine import TilePlan


def _plan(grid, tile=64, overlap=16):
    return TilePlan(grid.height, grid.width, tile_size=tile, overlap=overlap, block_size=32, group_width=128)


# -- nodata / NaN ----------------------------------------------------------------------------
def test_nodata_and_nan_are_filled_with_zero_and_propagate_to_the_output(tmp_path):
    rng = np.random.default_rng(0)
    s1 = rng.normal(-12, 3, (2, 150, 170)).astype(np.float32)
    s1[0, 10:20, 30:40] = np.nan  # NaN in one band only
    s1[1, 100:105, 5:9] = -9999.0  # declared nodata in the other
    dem = rng.integers(0, 1000, (1, 150, 170)).astype(np.int16)
    dem[0, 60, 60] = -32768
    seen = []

    def predict(tiles, inputs, progress):
        for v in inputs.values():
            assert np.isfinite(v).all(), "the model never sees NaN"
            seen.append(v)
        return {"out": np.concatenate([inputs["S1RTC"], inputs["DEM"]], axis=1)}

    a = write_tif(tmp_path / "s1.tif", s1, nodata=-9999.0)
    b = write_tif(tmp_path / "dem.tif", dem, nodata=-32768)
    grid, stack = open_stack({"S1RTC": a, "DEM": b})
    out, valid, _ = run_to_array(stack, _plan(grid), {"out": 3}, predict)
    expected_invalid = np.zeros((150, 170), bool)
    expected_invalid[10:20, 30:40] = True
    expected_invalid[100:105, 5:9] = True
    expected_invalid[60, 60] = True
    assert np.array_equal(~valid, expected_invalid), "a pixel is invalid where ANY band of ANY input is"
    assert (out["out"][:, ~valid] == 0).all()
    ok = valid
    np.testing.assert_allclose(out["out"][:2][:, ok], s1[:, ok], rtol=1e-6)
    # the model saw 0 (raw units) at the NaN pixels, not NaN and not the nodata value
    data, v = stack.inputs[0].read(0, 0, 150, 170)
    assert (data[:, 10:20, 30:40] == 0).all() and (data[:, 100:105, 5:9] == 0).all()


def test_job_nodata_overrides_the_file_and_all_nodata_tiles_are_skipped(tmp_path):
    dem = np.full((1, 200, 200), 7, np.int16)
    dem[0, :, 100:] = 123  # right half: the user says 123 is nodata (the file declares none)
    path = write_tif(tmp_path / "dem.tif", dem)
    grid, stack = open_stack({"DEM": path}, nodata=123)
    calls = []
    plan = TilePlan(200, 200, tile_size=64, overlap=0, block_size=32, group_width=64)
    out, valid, stats = run_to_array(stack, plan, {"out": 1}, predictor(Identity(), "DEM", calls=calls))
    assert not valid[:, 100:].any() and valid[:, :100].all()
    predicted = {rc for batch in calls for rc in batch}
    assert all(plan.col_origins[c] < 100 for _, c in predicted), "all-nodata tiles never reach the model"
    assert stats.skipped_nodata == stats.tiles - len(predicted) > 0


@pytest.mark.parametrize("nodata", [-9999.0, 0.5, 70000.0])
def test_a_nodata_value_the_data_type_cannot_hold_is_ignored_with_a_note(tmp_path, nodata):
    """-9999 on uint16 would wrap to 55537 (and 0.5 truncate to 0), masking real pixels."""
    dem = np.array([[[0, 55537, 4464, 1]]], np.uint16).repeat(40, axis=1).repeat(10, axis=2)  # (1, 40, 40)
    path = write_tif(tmp_path / "dem.tif", dem)
    grid, stack = open_stack({"DEM": path}, nodata=nodata)
    data, valid = stack.inputs[0].read(0, 0, 40, 40)
    assert valid.all() and np.array_equal(data, dem.astype(np.float32))
    assert f"nodata value {nodata:g} cannot occur in its uint16 data and is ignored" in " ".join(stack.inputs[0].warnings)
    _, kept = open_stack({"DEM": path}, nodata=55537)  # representable: honoured, no note
    assert not kept.inputs[0].read(0, 0, 40, 40)[1].all() and kept.inputs[0].warnings == []


# -- extent ----------------------------------------------------------------------------------
def test_extent_is_snapped_outward_to_the_grid(s2_path):
    with rasterio.open(s2_path) as src:
        t = src.transform
    # a box that cuts pixels: from 10.3 px to 100.2 px in x, 20.5 to 60.9 px down in y
    extent = (t.c + 10.3 * 10, t.f - 60.9 * 10, t.c + 100.2 * 10, t.f - 20.5 * 10)
    grid, stack = open_stack({"S2L2A": s2_path}, extent=extent)
    assert (grid.width, grid.height) == (91, 41)
    assert grid.transform.c == pytest.approx(t.c + 10 * 10) and grid.transform.f == pytest.approx(t.f - 20 * 10)
    out, valid, _ = run_to_array(stack, _plan(grid, tile=32, overlap=8), {"out": 12}, predictor(Identity(), "S2L2A"))
    with rasterio.open(s2_path) as src:
        ref = src.read(window=((20, 61), (10, 101))).astype(np.float32)
    assert np.allclose(out["out"], ref, rtol=1e-6)


@pytest.mark.parametrize("extent,match", [((0, 0, 1, 1), "does not overlap"), ((5, 5, 5, 9), "empty")])
def test_bad_extent_is_an_input_error(s2_path, extent, match):
    with pytest.raises(InputRasterError, match=match):
        open_stack({"S2L2A": s2_path}, extent=extent)


# -- alignment -------------------------------------------------------------------------------
def _reproject_to(path, out, dst_crs, res=None):
    with rasterio.open(path) as src:
        transform, w, h = calculate_default_transform(src.crs, dst_crs, src.width, src.height, *src.bounds, resolution=res)
        data = np.zeros((src.count, h, w), src.dtypes[0])
        reproject(src.read(), data, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                  dst_crs=dst_crs, resampling=Resampling.bilinear, dst_nodata=np.nan if data.dtype.kind == "f" else 0)
        return write_tif(out, data, crs=dst_crs, transform=transform, nodata=np.nan if data.dtype.kind == "f" else None)


def test_input_in_another_crs_is_warped_onto_the_first_inputs_grid(tmp_path, s2_path):
    s1 = str(EXAMPLES / "S1RTC" / "282D_485L_3_3.tif")
    warped = _reproject_to(s1, tmp_path / "s1_4326.tif", CRS.from_epsg(4326))  # geographic, ~9x11 m pixels
    grid, stack = open_stack({"S2L2A": s2_path, "S1RTC": warped})
    with rasterio.open(s2_path) as src:
        assert grid.crs == src.crs and grid.transform == src.transform and (grid.width, grid.height) == (224, 224)
    assert stack.inputs[1].resampled and not stack.inputs[0].resampled
    data, valid = stack.inputs[1].read(0, 0, 224, 224)
    with rasterio.open(s1) as src:
        truth = src.read().astype(np.float32)
    inner = np.zeros((224, 224), bool)
    inner[4:-4, 4:-4] = True
    assert valid[inner].all(), "the warped input covers the grid (except possibly its rim)"
    # two bilinear resamplings of speckled SAR: close on average, and strongly correlated
    both = valid & inner
    err = np.abs(data[:, both] - truth[:, both])
    assert np.median(err) < 1.5  # dB
    assert np.corrcoef(data[0, both], truth[0, both])[0, 1] > 0.7


def test_coarser_first_input_defines_a_10m_grid_and_classes_use_nearest(tmp_path):
    lulc = str(EXAMPLES / "LULC" / "282D_485L_3_3.tif")
    with rasterio.open(lulc) as src:
        t, classes = src.transform, src.read()
    coarse = np.kron(np.arange(12, dtype=np.float32).reshape(1, 3, 4), np.ones((1, 40, 40), np.float32))
    dem = write_tif(tmp_path / "dem30.tif", coarse, crs=src.crs, transform=from_origin(t.c, t.f, 30.0, 30.0))
    grid, stack = open_stack({"DEM": dem, "LULC": lulc})
    assert grid.pixel_size == 10.0 and (grid.width, grid.height) == (480, 360)
    assert stack.inputs[0].resampled
    data, valid = stack.inputs[1].read(0, 0, 224, 224)  # LULC on the (same-lattice) grid: direct read
    assert not stack.inputs[1].resampled and np.array_equal(data[0], classes[0].astype(np.float32))
    # LULC shifted by half a pixel: warped with nearest neighbour, values stay class ids
    shifted = write_tif(tmp_path / "lulc_shift.tif", classes, crs=src.crs, transform=from_origin(t.c + 5, t.f - 5, 10, 10))
    grid2, stack2 = open_stack({"DEM": dem, "LULC": shifted})
    d2, v2 = stack2.inputs[1].read(0, 0, 224, 224)
    assert stack2.inputs[1].resampled
    assert set(np.unique(d2[0][v2])) <= set(np.unique(classes))


def test_geographic_first_input_works_on_a_utm_10m_grid(tmp_path, s2_path):
    warped = _reproject_to(s2_path, tmp_path / "s2_4326.tif", CRS.from_epsg(4326))
    grid, stack = open_stack({"S2L2A": warped})
    assert grid.crs.to_epsg() == 32722  # UTM 22S, where the scene lies
    assert grid.pixel_size == 10.0 and grid.transform.c % 10 == 0 and grid.transform.f % 10 == 0
    assert "UTM" in grid.note and 224 <= grid.width <= 240
    data, valid = stack.inputs[0].read(0, 0, grid.height, grid.width)
    assert valid.mean() > 0.8


# -- input checks ----------------------------------------------------------------------------
def test_input_checks_name_the_layer_and_the_band(tmp_path, s2_path):
    with pytest.raises(InputRasterError, match=r"layer 'layer S2L2A'.*needs 12 band\(s\).*got 3"):
        open_stack({"S2L2A": s2_path}, bands=(1, 2, 3))
    with pytest.raises(InputRasterError, match=r"layer 'layer S2L2A': band 13 does not exist \(the layer has 12"):
        open_stack({"S2L2A": s2_path}, bands=tuple(range(2, 14)))
    cplx = write_tif(tmp_path / "c.tif", np.ones((1, 8, 8), np.complex64))
    with pytest.raises(InputRasterError, match=r"layer 'layer DEM': band 1 has complex values \(complex64\)"):
        open_stack({"DEM": cplx})
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", width=8, height=8, count=1, dtype="float32") as dst:
        dst.write(np.ones((1, 8, 8), np.float32))
    with pytest.raises(InputRasterError, match="layer 'DEM' has no coordinate reference system"):
        open_stack({"DEM": str(nocrs)})
    far = write_tif(tmp_path / "far.tif", np.ones((2, 8, 8), np.float32), x0=100000.0, y0=100000.0,
                    crs="EPSG:32722")
    with pytest.raises(InputRasterError, match="layer 'layer S1RTC' does not overlap"):
        open_stack({"S2L2A": s2_path, "S1RTC": far})


@pytest.mark.parametrize("warped", [False, True])
def test_the_files_nodata_can_be_switched_off(tmp_path, warped):
    """QGIS's "use the file's no-data value" unticked: file_nodata=False reads every pixel as data, both
    directly and through the warp onto another grid."""
    dem = np.full((1, 64, 64), 50, np.int16)
    dem[0, :8] = -32768
    path = write_tif(tmp_path / "dem.tif", dem, nodata=-32768)
    inputs = {"DEM": path}
    if warped:  # a first input on a shifted grid makes the DEM go through the WarpedVRT
        first = write_tif(tmp_path / "s1.tif", np.ones((2, 64, 64), np.float32), x0=500005.0)
        inputs = {"S1RTC": first, "DEM": path}
    for use_file, expect_masked in ((True, True), (False, False)):
        grid, stack = open_stack(inputs, file_nodata=use_file)
        dem_input = stack.inputs[-1]
        assert dem_input.resampled == warped
        _, valid = dem_input.read(0, 0, 30, 30)
        assert (not valid[:3].all()) == expect_masked, (use_file, warped)
