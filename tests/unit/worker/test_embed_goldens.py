"""The embedding raster (task ``embed``, run in process as the worker runs it) against terratorch 1.2.11.

Goldens: ``tools/goldens/embeddings.py`` (terratorch's ``terramind_v1_tiny`` backbone, weights of the
untrained rule in the official layout: what ``untrained: true`` builds here). Tolerance: ``RTOL``
(1e-4 of the largest reference magnitude, testlib/tolerances.py).

- One 224 x 224 patch: each token of the raster equals terratorch's feature of that token, for two
  merge modes (mean, last layer; concat, layers 9-12 averaged) and a band subset (6 S2L2A bands, layer 6).
- 2 x 2 tiles: a 352 x 352 raster with tile 224 / overlap 96 is cut into tiles at pixels 0 and 128
  on each axis (14 x 14 tokens each, sharing 6 token rows/columns); the interior rule
  (models/engine/tokens.py) keeps tokens 0-10 from the first tile of an axis and 11-21 from the
  second, 3 tokens (48 px = overlap / 2) from each shared border. Every token of the raster must equal
  terratorch's feature of that token in the tile the rule names — and, where two tiles cover a
  token, the other tile's feature must differ (so choosing the wrong tile would fail).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from worker_fixtures import make_mosaic

from terramind_qgis.models.core.embeddings import EmbeddingInfo
from testlib.paths import GOLDENS, example
from testlib.tasks import run_task
from testlib.tolerances import RTOL, relative_error

CASES = json.loads((GOLDENS / "embeddings" / "cases.json").read_text())
ARRAYS = np.load(GOLDENS / "embeddings" / "tiny.npz")


def embed(tmp_path, inputs: dict, params: dict, tiling: dict, extent=None) -> tuple[np.ndarray, dict]:
    out = tmp_path / "embeddings.tif"
    job = {"protocol": 1, "task": "embed", "inputs": inputs, "outputs": {"embeddings": str(out)},
           "model": {"id": "terramind_v1_tiny", "untrained": True}, "params": params, "tiling": tiling,
           "extent": extent, "device": "cpu"}  # fmt: skip
    run_task(job)
    with rasterio.open(out) as src:
        return src.read(), src.tags()


def tokens(raster: np.ndarray) -> np.ndarray:
    """(D, h, w) → (h*w, D), row-major: the backbone's token order."""
    return raster.reshape(raster.shape[0], -1).T


@pytest.mark.parametrize("case", ["patch_mean", "patch_concat_layers", "patch_bands"])
def test_patch_embedding_equals_reference_features(tmp_path, case):
    c = CASES[case]
    inputs = {m: {"path": str(example(f, c["scene"])), "bands": c.get("band_numbers")} for m, f in c["inputs"].items()}
    params = {"merge": c["merge"], "layers": c["layers"], "bands": c.get("bands", {})}
    raster, tags = embed(tmp_path, inputs, params, {"tile_size": 224, "overlap": 32, "batch_size": 1})
    ref = ARRAYS[case]  # (196, D)
    assert raster.shape == (ref.shape[1], 14, 14)
    assert relative_error(tokens(raster), ref) <= RTOL
    info = EmbeddingInfo.from_tags(tags, "raster", "x")
    assert (info.merge, info.layers, info.dim, info.modalities) == (c["merge"], tuple(c["layers"]), ref.shape[1],
                                                                    tuple(c["inputs"]))  # fmt: skip
    assert info.bands == {k: tuple(v) for k, v in c.get("bands", {}).items()}


def test_two_by_two_tiles_keep_each_tiles_interior(tmp_path):
    c = CASES["tiles_2x2"]
    mosaic = make_mosaic(tmp_path / "mosaic.tif")
    with rasterio.open(mosaic) as src:
        t = src.transform
    crop = c["crop"]
    extent = [t.c, t.f - crop * 10, t.c + crop * 10, t.f]
    raster, _ = embed(tmp_path, {"S2L2A": {"path": mosaic}}, {"merge": "mean"},
                      {"tile_size": c["tile_size"], "overlap": c["overlap"], "batch_size": 3}, extent)  # fmt: skip
    ref = ARRAYS["tiles_2x2"].reshape(2, 2, 14, 14, -1)  # (tile row, tile col, h, w, D)
    assert raster.shape == (192, 22, 22)
    origin = [o // 16 for o in c["origins"]]  # tokens: 0, 8
    assert origin == [0, 8]
    cut = 11  # origin 8 + (14 - 8) // 2: the middle of the 6 shared tokens
    expected = np.zeros((22, 22, 192), np.float32)
    for i in range(22):
        for j in range(22):
            ti, tj = int(i >= cut), int(j >= cut)
            expected[i, j] = ref[ti, tj, i - origin[ti], j - origin[tj]]
    ours = raster.transpose(1, 2, 0)  # (h, w, D)
    assert relative_error(ours, expected) <= RTOL
    # the choice matters: in the shared rows/columns the two tiles' features differ
    shared = range(8, 14)
    other = np.stack([ref[1 - int(i >= cut), 0, i - origin[1 - int(i >= cut)], 3] for i in shared])  # column 3
    assert relative_error(ours[list(shared), 3], other) > 100 * RTOL
