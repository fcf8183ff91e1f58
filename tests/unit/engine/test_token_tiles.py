"""The token engine (models/engine/tokens.py): token grid, tile plan, interior rule, validity, streaming.

The "model" here is a patch-mean with the tile's identity in a second channel: exactly checkable,
so the tests see which tile each token came from and that it landed on its own patch.
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_fixtures import open_stack, write_tif

from terramind_qgis.models.core.embedding_params import check_token_tiling
from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.core.job import TilingSpec
from terramind_qgis.models.core.progress import NullProgress
from terramind_qgis.models.engine.tiling import axis_origins
from terramind_qgis.models.engine.tokens import TokenPlan, axis_keep, run_token_tiles, token_grid, token_valid
from testlib.errors import refused
from testlib.progress import RecordingProgress


@pytest.mark.parametrize("length", [1, 7, 14, 15, 22, 29, 64, 257])
@pytest.mark.parametrize(("tile", "overlap"), [(14, 2), (14, 6), (8, 0), (8, 4), (14, 7)])
def test_kept_ranges_partition_the_axis_away_from_shared_borders(length, tile, overlap):
    origins = axis_origins(length, tile, overlap)
    keep = axis_keep(origins, tile, length)
    assert keep[0][0] == 0 and keep[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(keep[:-1], keep[1:]))  # no gap, no token twice
    for k, (start, stop) in enumerate(keep):
        assert origins[k] <= start < stop <= origins[k] + tile  # inside its tile
        if k > 0:
            assert start - origins[k] >= overlap // 2  # from the border shared with the previous tile
        if k < len(keep) - 1:
            assert origins[k] + tile - stop >= overlap // 2  # ... and with the next one


def test_plan_origins_are_whole_patches_and_the_grid_is_coarsened_16_times(tmp_path):
    path = write_tif(tmp_path / "dem.tif", np.zeros((1, 300, 170), np.float32))
    grid, stack = open_stack({"DEM": path})
    stack.close()
    tokens = token_grid(grid)
    assert (tokens.width, tokens.height) == (11, 19)  # ceil(170 / 16), ceil(300 / 16)
    assert tokens.transform.a == 160.0 and tokens.transform.e == -160.0
    assert (tokens.transform.c, tokens.transform.f) == (grid.transform.c, grid.transform.f)
    plan = TokenPlan(300, 170, 128, 32)
    assert all(t.y % 16 == 0 and t.x % 16 == 0 for t in plan.tiles())
    assert plan.row_keep[-1][1] == 19 and plan.col_keep[-1][1] == 11


def test_overlaps_of_partial_patches_are_refused():
    check_token_tiling(TilingSpec(224, 32, 4))
    with refused(r"tiling.overlap: must be a multiple of 16 for embeddings .*got 20 \(try 16\)"):
        check_token_tiling(TilingSpec(224, 20, 4))


def test_a_nodata_pixel_makes_its_token_nodata_but_padding_does_not():
    valid = np.ones((32, 32), bool)
    valid[3, 20] = False  # in token (0, 1)
    valid[20:, :] = False  # rows 20.. are padding (outside the grid) from here on
    ok = token_valid(valid, inside_h=20, inside_w=32)
    assert ok.tolist() == [[True, False], [True, True]]  # token row 1 has 4 real rows, all valid
    valid[18, 5] = False
    assert token_valid(valid, 20, 32).tolist() == [[True, False], [False, True]]


def _patch_mean_model(tiles, inputs, progress):
    """(B, 2, t, t): the mean of each 16 x 16 patch of band 0, and the tile's index."""
    x = inputs["DEM"][:, 0]  # (B, T, T)
    b, size, _ = x.shape
    t = size // 16
    means = x.reshape(b, t, 16, t, 16).mean(axis=(2, 4))
    ids = np.broadcast_to(np.array([tile.index for tile in tiles], np.float32)[:, None, None], means.shape)
    return np.stack([means, ids], axis=1).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_every_token_comes_from_the_tile_the_rule_names(tmp_path, batch):
    h, w = 400, 250  # partial last patches on both axes
    data = np.arange(h * w, dtype=np.float32).reshape(1, h, w) % 977
    grid, stack = open_stack({"DEM": write_tif(tmp_path / "dem.tif", data)})
    plan = TokenPlan(h, w, 128, 64, block=4)
    out = np.full((2, plan.rows, plan.cols), np.nan, np.float32)
    seen = np.zeros((plan.rows, plan.cols), int)
    released = []

    def finish(rel):
        released.append(rel.row)
        assert rel.row % 4 == 0 and rel.col == 0 and rel.width == plan.cols
        out[:, rel.row : rel.row + rel.height] = rel.values["tokens"]
        seen[rel.row : rel.row + rel.height] += 1
        assert rel.valid.all()

    stats = run_token_tiles(stack, plan, 2, _patch_mean_model, finish, batch_size=batch, progress=NullProgress())
    stack.close()
    assert (seen == 1).all() and released == sorted(released)  # each token row once, in order
    assert stats.predicted == plan.num_tiles
    tiles = {t.index: t for t in plan.tiles()}
    for i in range(plan.rows):
        for j in range(plan.cols):
            tile = tiles[int(out[1, i, j])]
            r0, r1, c0, c1 = plan.kept(tile)
            assert r0 <= i < r1 and c0 <= j < c1  # the tile whose kept range holds the token
    pad = np.pad(data[0], ((0, plan.rows * 16 - h), (0, plan.cols * 16 - w)), mode="reflect")
    means = pad.reshape(plan.rows, 16, plan.cols, 16).mean(axis=(1, 3))
    np.testing.assert_allclose(out[0], means, rtol=1e-6)  # on its own patch (edge patches reflect-padded)


def test_strip_memory_does_not_grow_with_the_raster_height():
    small, tall = TokenPlan(1024, 512, 224, 32), TokenPlan(40960, 512, 224, 32)
    assert small.strip_rows(4) == tall.strip_rows(4) <= 16 + 2 * 14


def test_cancel_stops_before_the_next_batch(tmp_path):
    grid, stack = open_stack({"DEM": write_tif(tmp_path / "dem.tif", np.ones((1, 300, 300), np.float32))})
    calls = []

    def model(tiles, inputs, progress):
        calls.append(len(tiles))
        return _patch_mean_model(tiles, inputs, progress)

    progress = RecordingProgress.cancelling_after(percents=1)
    from terramind_qgis.models.core.errors import CancelledError

    with pytest.raises(CancelledError):
        run_token_tiles(stack, TokenPlan(300, 300, 128, 32), 2, model, lambda rel: None, batch_size=2, progress=progress)
    stack.close()
    assert calls == [2]  # one batch, then the cancel check


def test_tile_and_overlap_must_be_whole_patches():
    with pytest.raises(ConfigError, match="whole 16-pixel patches"):
        TokenPlan(100, 100, 128, 40)
