"""Tile plan and blend weights: coverage, partition of unity, groups, release schedule, memory bound."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.engine import StreamingBlender, TilePlan, axis_origins, axis_weights, cosine_ramp

rng = np.random.default_rng(1234)
# Property-style: many sizes, including sizes smaller than a tile, exact multiples and odd ones.
SIZES = sorted({1, 2, 15, 16, 100, 223, 224, 225, 255, 256, 257, 383, 384, 385, 447, 448, 449, 1000, 1024}
               | set(int(v) for v in rng.integers(1, 3000, 25)))  # fmt: skip
SETTINGS = [(224, 0), (224, 32), (224, 112), (256, 64), (32, 8), (96, 48)]


@pytest.mark.parametrize("tile,overlap", SETTINGS)
def test_axis_origins_cover_every_pixel_with_at_least_the_overlap(tile, overlap):
    for length in SIZES:
        o = axis_origins(length, tile, overlap)
        assert o[0] == 0
        if length <= tile:
            assert o == (0,)  # one tile, reflect-padded by the reader
            continue
        assert o[-1] == length - tile, "the last tile ends exactly at the edge"
        assert all(b > a for a, b in zip(o, o[1:])), "origins strictly increase"
        assert all(tile - (b - a) >= overlap for a, b in zip(o, o[1:])), "neighbours overlap >= overlap"
        covered = np.zeros(length, int)
        for x in o:
            covered[x : x + tile] += 1
        assert covered.min() >= 1
        assert len(o) == math.ceil((length - overlap) / (tile - overlap)), "the fewest tiles that satisfy the overlap"


def test_cosine_ramp_is_terratorchs_blend_ramp_and_mirrors_to_one():
    for n in (1, 2, 7, 24, 32, 56):
        r = cosine_ramp(n)
        k = np.arange(n)
        expected = np.cos(np.pi * (k + 1) / (n + 1)) / 2 + 0.5  # terratorch get_blend_mask
        np.testing.assert_allclose(r, expected, rtol=0, atol=1e-7)
        np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-6)
        assert np.all(np.diff(r) < 0) and r.min() > 0 and r.max() < 1


@pytest.mark.parametrize("tile,overlap", SETTINGS)
def test_axis_weights_are_a_partition_of_unity(tile, overlap):
    for length in SIZES:
        o = axis_origins(length, tile, overlap)
        total = np.zeros(max(length, tile), np.float64)
        for i, x in enumerate(o):
            w = axis_weights(o, i, tile, overlap)
            assert w.shape == (tile,) and w.min() >= 0 and w.max() <= 1
            total[x : x + tile] += w
        np.testing.assert_allclose(total[:length], 1.0, atol=2e-6, err_msg=f"length {length}")


def test_weights_are_exactly_one_where_a_single_tile_covers():
    o = axis_origins(1000, 224, 32)
    cover = np.zeros(1000, int)
    for x in o:
        cover[x : x + 224] += 1
    for i, x in enumerate(o):
        w = axis_weights(o, i, 224, 32)
        single = cover[x : x + 224] == 1
        assert np.all(w[single] == 1.0)  # bit-exact: tiled == untiled there


def test_two_d_weights_sum_to_one_over_the_plan():
    plan = TilePlan(700, 530, tile_size=224, overlap=48, block_size=64, group_width=256)
    total = np.zeros((700, 530))
    for t in plan.tiles():
        w = plan.weights(t)
        h, wd = min(224, 700 - t.y), min(224, 530 - t.x)
        total[t.y : t.y + h, t.x : t.x + wd] += w[:h, :wd]
    np.testing.assert_allclose(total, 1.0, atol=3e-6)


@pytest.mark.parametrize("tile,overlap", [(224, 32), (224, 0), (32, 16)])
def test_groups_partition_the_columns_and_carry_at_most_one_tile(tile, overlap):
    for width in SIZES:
        plan = TilePlan(300, width, tile_size=tile, overlap=overlap, block_size=64, group_width=128)
        gs = plan.groups
        assert gs[0].x0 == 0 and gs[-1].x1 == width
        assert all(a.x1 == b.x0 for a, b in zip(gs, gs[1:])), "output column ranges are contiguous"
        assert sorted(c for g in gs for c in g.cols) == list(range(len(plan.col_origins)))
        for i, g in enumerate(gs):
            assert g.x1 - g.x0 >= 1
            assert all(g.x0 <= plan.col_origins[c] < g.x1 for c in g.cols)
            assert g.x1 % plan.block_size == 0 or g.x1 == width, "group borders fall on block borders"
            if i + 1 < len(gs):  # the carry lands in the next group's columns only
                assert g.acc_x1 - g.x1 <= tile and g.acc_x1 <= gs[i + 1].x1
            else:
                assert g.acc_x1 == g.x1


def test_tiles_are_ordered_by_group_then_rows_and_all_present():
    plan = TilePlan(900, 2000, tile_size=224, overlap=32, block_size=256, group_width=512)
    tiles = list(plan.tiles())
    assert len(tiles) == plan.num_tiles == len(plan.row_origins) * len(plan.col_origins)
    assert [t.index for t in tiles] == list(range(len(tiles)))
    keys = [(t.group, t.row, t.col) for t in tiles]
    assert keys == sorted(keys)
    assert len({(t.row, t.col) for t in tiles}) == len(tiles)


def test_rows_are_released_in_whole_blocks_and_never_before_they_are_final():
    plan = TilePlan(2000, 300, tile_size=224, overlap=32, block_size=256)
    for r in range(len(plan.row_origins)):
        upto = plan.rows_final_after(r)
        later = plan.row_origins[r + 1 :]
        assert all(upto <= y for y in later), "no later tile row touches released rows"
        assert upto % 256 == 0 or upto == plan.height
    assert plan.rows_final_after(len(plan.row_origins) - 1) == plan.height


def test_plan_rejects_overlap_beyond_half_a_tile():
    with pytest.raises(ConfigError, match="overlap"):
        TilePlan(500, 500, tile_size=224, overlap=113)


@pytest.mark.parametrize("batch", [1, 4, 16])
def test_blender_allocation_is_independent_of_raster_size(batch):
    """The strip buffers (the only per-pixel memory) are the same for 4k, 16k and 100k rasters."""
    heads = {"S2L2A": 12, "LULC": 10}
    sizes = []
    for side in (4096, 16384, 100_000, 1024):
        plan = TilePlan(side, side, tile_size=224, overlap=32, block_size=256, group_width=2048)
        blender = StreamingBlender(plan, heads, batch)
        sizes.append(blender.nbytes)
        blender.close()
    assert sizes[0] == sizes[1] == sizes[2]
    assert sizes[3] <= sizes[0]  # rasters narrower than a column group need less
    # bound from tile/batch/group only: (channels + weight + valid) x rows x (group + tile)
    plan = TilePlan(100_000, 100_000, tile_size=224, overlap=32, block_size=256, group_width=2048)
    rows = plan.max_rows_in_flight(batch)
    assert rows == 256 + 224 + plan.batch_row_span(batch) * 192
    assert sizes[0] <= (22 * 4 + 4 + 1) * rows * (2048 + 224)
    assert sizes[0] < 300 * 2**20  # a 100k x 100k raster: ~100 GB of canvas in terratorch


def test_blender_scratch_folder_sits_next_to_the_output_and_goes_away(tmp_path):
    """Carry files go to a folder beside the output (not a possibly RAM-backed /tmp) that the QGIS
    side's leftover pattern matches, and closing the blender removes it with its files."""
    import glob

    from terramind_qgis.models.core.job import blend_scratch_prefix, partial_glob

    out = str(tmp_path / "dem.tif")
    plan = TilePlan(600, 1200, tile_size=64, overlap=16, block_size=64, group_width=256)  # several column groups
    blender = StreamingBlender(plan, {"DEM": 1}, 2, blend_scratch_prefix(out))
    (folder,) = glob.glob(partial_glob(out))
    assert os.path.isdir(folder) and os.path.dirname(folder) == str(tmp_path)
    blender.begin_group(plan.groups[0])
    blender.begin_group(plan.groups[1])  # the first group's spill-over is carried in a file there
    assert os.listdir(folder)
    blender.close()
    assert glob.glob(partial_glob(out)) == []


def test_tile_counts_quoted_in_the_readme():
    """1024²: 36 tiles at overlap 32 (as terratorch's crop 224 / stride 192), 25 at overlap 16 (its
    blend width); a 10980² Sentinel-2 tile: 3364 and 2809. Every neighbour pair overlaps by >= overlap."""
    counts = {(n, ov): TilePlan(n, n, 224, ov).num_tiles for n in (1024, 10980) for ov in (32, 16)}
    assert counts == {(1024, 32): 36, (1024, 16): 25, (10980, 32): 3364, (10980, 16): 2809}
    for n, ov in counts:
        o = axis_origins(n, 224, ov)
        assert min(224 - (b - a) for a, b in zip(o, o[1:])) >= ov and o[-1] + 224 == n
