"""The ONNX backend through the real worker process, on a raster larger than one tile.

The tiny Sen1Floods11 golden model is run twice by ``python -m terramind_qgis.models.worker`` on a
448 x 448 mosaic of the real S2L1C / S1RTC patches (tile 224, overlap 32, batch 2): once from its
state dict (torch backend) and once from its ONNX export (chosen by the ``.onnx`` file alone) in a
worker where ``import torch`` fails. Both must give the same class raster (except where the two
top probabilities tie within float noise) and probabilities within the project's tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from onnx_fixtures import CASES, EXAMPLES, GOLD, load_case_model

REPO = Path(__file__).resolve().parents[3]
SCENES = CASES["tiny_sen1floods11"]["scenes"][:4]
# A worker in which torch cannot be imported: sys.modules[...] = None makes every import fail.
NO_TORCH = "import sys, runpy; sys.modules['torch'] = None; sys.argv[0] = 'worker'; " \
           "runpy.run_module('terramind_qgis.models.worker', run_name='__main__')"


def _mosaic(folder: str, out: Path) -> str:
    """The four real patches of ``folder`` stitched 2 x 2 onto the first scene's grid."""
    arrays = []
    for scene in SCENES:
        with rasterio.open(EXAMPLES / folder / f"{scene}.tif") as src:
            arrays.append(src.read().astype(np.float32))
            if not arrays[1:]:
                profile = src.profile
    mosaic = np.concatenate([np.concatenate(arrays[:2], 2), np.concatenate(arrays[2:], 2)], 1)
    profile.update(height=448, width=448, dtype="float32", count=mosaic.shape[0], tiled=True, blockxsize=224, blockysize=224)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(mosaic)
    return str(out)


def _run_worker(job: dict, folder: Path, *, block_torch: bool) -> dict:
    path = folder / "job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO / ".pluginpath"))
    argv = [sys.executable, "-c", NO_TORCH, str(path)] if block_torch else \
           [sys.executable, "-m", "terramind_qgis.models.worker", str(path)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "result", events[-1]
    return events[-1]


def _job(weights: str, inputs: dict, out: Path, **params) -> dict:
    return {
        "protocol": 1, "task": "segment", "inputs": inputs, "model": {"id": "flood_tiny", "weights": weights},
        "outputs": {"classes": str(out / "classes.tif"), "probabilities": str(out / "prob.tif")},
        "params": params, "tiling": {"tile_size": 224, "overlap": 32, "batch_size": 2}, "device": "cpu",
    }  # fmt: skip


def test_onnx_worker_without_torch_equals_the_torch_backend(tiny_onnx: Path, tmp_path: Path) -> None:
    inputs = {"S2L1C": {"path": _mosaic("S2L1C", tmp_path / "s2.tif"), "name": "s2"},
              "S1GRD": {"path": _mosaic("S1RTC", tmp_path / "s1.tif"), "name": "s1"}}  # fmt: skip
    load_case_model("tiny_sen1floods11", tmp_path)  # writes the fine-tuned weights as a plain state dict
    state = tmp_path / "tiny_sen1floods11.pt"
    (tmp_path / "torch").mkdir()
    (tmp_path / "onnx").mkdir()
    config = str(GOLD / CASES["tiny_sen1floods11"]["config"])
    _run_worker(_job(str(state), inputs, tmp_path / "torch", config=config), tmp_path / "torch", block_torch=False)
    _run_worker(_job(str(tiny_onnx), inputs, tmp_path / "onnx"), tmp_path / "onnx", block_torch=True)

    with rasterio.open(tmp_path / "torch" / "prob.tif") as a, rasterio.open(tmp_path / "onnx" / "prob.tif") as b:
        p_torch, p_onnx = a.read(), b.read()
        assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)
    with rasterio.open(tmp_path / "torch" / "classes.tif") as a, rasterio.open(tmp_path / "onnx" / "classes.tif") as b:
        c_torch, c_onnx = a.read(1), b.read(1)
        assert b.colormap(1) == a.colormap(1)
    assert p_torch.shape == (2, 448, 448)
    assert np.abs(p_onnx - p_torch).max() <= 1e-4
    tie = np.abs(p_torch[0] - p_torch[1]) < 1e-4
    assert np.array_equal(c_onnx[~tie], c_torch[~tie])
