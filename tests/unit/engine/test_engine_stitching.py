"""run_tiled with real small torch models: exact where tiles don't overlap, seam-free where they do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_fixtures import FixedConv, Identity, ThresholdLogits, open_stack, predictor, run_to_array, write_tif

from terramind_qgis.models.engine import TilePlan

H, W = 517, 1130  # several column groups (group width 256 below), ragged edges


@pytest.fixture
def dem_tif(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.normal(0, 1, (1, H, W)).astype(np.float32)
    return write_tif(tmp_path / "dem.tif", (base * 100 + 500).astype(np.float32)), base * 100 + 500


def _plan(overlap, tile=224):
    return TilePlan(H, W, tile_size=tile, overlap=overlap, block_size=64, group_width=256)


def test_identity_without_overlap_is_bit_identical(dem_tif):
    path, data = dem_tif
    grid, stack = open_stack({"DEM": path})
    out, valid, stats = run_to_array(stack, _plan(0), {"out": 1}, predictor(Identity(), "DEM"), batch_size=4)
    assert valid.all()
    assert np.array_equal(out["out"], data)
    assert stats.predicted == stats.tiles == len(_plan(0).row_origins) * len(_plan(0).col_origins)


@pytest.mark.parametrize("overlap,batch", [(32, 3), (112, 5), (8, 1)])
def test_identity_with_overlap_is_seam_free(dem_tif, overlap, batch):
    path, data = dem_tif
    grid, stack = open_stack({"DEM": path})
    plan = _plan(overlap)
    out, valid, _ = run_to_array(stack, plan, {"out": 1}, predictor(Identity(), "DEM"), batch_size=batch)
    rel = np.abs(out["out"] - data) / np.abs(data).max()
    assert rel.max() <= 1e-6
    # and bit-identical wherever a single tile covers the pixel (weight exactly 1)
    cover = np.zeros((H, W), int)
    for t in plan.tiles():
        cover[t.y : t.y + 224, t.x : t.x + 224] += 1
    assert np.array_equal(out["out"][0][cover == 1], data[0][cover == 1])


def test_fixed_conv_matches_untiled_conv_away_from_tile_edges(dem_tif):
    """A 3x3 conv sees zero padding at tile edges; one pixel inside every tile it must equal the
    untiled convolution exactly (weights 1) — this catches any misplaced or mis-weighted tile."""
    path, data = dem_tif
    grid, stack = open_stack({"DEM": path})
    model = FixedConv(1)
    plan = _plan(32)
    out, _, _ = run_to_array(stack, plan, {"out": 1}, predictor(model, "DEM"), batch_size=4)
    with torch.inference_mode():
        full = model(torch.from_numpy(data[None]))[0].numpy()  # (1, H, W)
    inner = np.zeros((H, W), int)  # pixels >= 1 px inside a tile, counted per tile
    cover = np.zeros((H, W), int)
    for t in plan.tiles():
        cover[t.y : t.y + 224, t.x : t.x + 224] += 1
        inner[t.y + 1 : t.y + 223, t.x + 1 : t.x + 223] += 1
    exact = (cover == 1) & (inner == 1)
    assert exact.mean() > 0.5
    np.testing.assert_allclose(out["out"][0][exact], full[0][exact], rtol=1e-6, atol=1e-3)
    # where tiles overlap the blend is a convex combination: bounded by the tiles' own range
    assert np.isfinite(out["out"]).all()


def test_class_logits_are_blended_then_argmaxed(dem_tif):
    path, data = dem_tif
    grid, stack = open_stack({"DEM": path})
    model = ThresholdLogits(step=100.0)
    out, _, _ = run_to_array(stack, _plan(48), {"LULC": 10}, predictor(model, "DEM", head="LULC"), batch_size=2)
    classes = out["LULC"].argmax(axis=0)
    expected = np.clip(np.floor(data[0] / 100.0), 0, 9)
    assert np.array_equal(classes, expected)


def test_raster_smaller_than_a_tile_is_padded_not_dropped(tmp_path):
    data = np.arange(3 * 37 * 50, dtype=np.float32).reshape(3, 37, 50)
    path = write_tif(tmp_path / "small.tif", np.concatenate([data] * 4)[:12])  # 12 bands
    grid, stack = open_stack({"S2L2A": path})
    plan = TilePlan(37, 50, tile_size=64, overlap=16, block_size=16)
    sizes = []

    def predict(tiles, inputs, progress):
        sizes.append(inputs["S2L2A"].shape)
        return {"out": inputs["S2L2A"] * 2}

    out, valid, stats = run_to_array(stack, plan, {"out": 12}, predict)
    assert sizes == [(1, 12, 64, 64)], "one reflect-padded tile of the full tile size"
    assert valid.all() and out["out"].shape == (12, 37, 50)
    assert np.array_equal(out["out"][:3], data * 2)
