"""Helpers of the worker tests: run the real entry point as a subprocess and parse its events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "tests" / "data" / "examples"
CATALOGUE = REPO / "tests" / "data" / "catalogue"
PLUGIN_PATH = REPO / ".pluginpath"
S2 = str(EXAMPLES / "S2L2A" / "282D_485L_3_3.tif")
SCENES = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0")


def worker_command(job_path: str) -> list[str]:
    return [sys.executable, "-m", "terramind_qgis.models.worker", job_path]


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PLUGIN_PATH)
    env.pop("TERRAMIND_CATALOGUE_PATH", None)
    return env


def write_job(folder: Path, job: dict, name: str = "job.json") -> str:
    path = folder / name
    path.write_text(json.dumps(job), encoding="utf-8")
    return str(path)


def run_worker(job_path: str, timeout: float = 120) -> tuple[int, list[dict], str]:
    """(exit code, events, stderr) of one worker run."""
    proc = subprocess.run(worker_command(job_path), capture_output=True, text=True, timeout=timeout, env=worker_env())
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, events, proc.stderr


def reconstruct_job(tmp: Path, *, path: str = S2, modality: str = "S2L2A", model: str = "test_tokenizer_s2l2a",
                    timesteps: int = 1, tile: int = 128, overlap: int = 32, batch: int = 4, difference: bool = True,
                    bands=None) -> dict:  # fmt: skip
    (tmp / "out").mkdir(parents=True, exist_ok=True)  # the worker writes into existing folders only
    outputs = {"reconstruction": str(tmp / "out" / "rec.tif")}
    if difference:
        outputs["difference"] = str(tmp / "out" / "diff.tif")
    return {
        "protocol": 1, "task": "reconstruct",
        "inputs": {modality: {"path": path, "name": "my layer", "bands": bands}},
        "outputs": outputs,
        "model": {"id": model, "untrained": True, "catalogue_paths": [str(CATALOGUE)]},
        "params": {"modality": modality, "timesteps": timesteps, "seed": 5, "difference": difference},
        "tiling": {"tile_size": tile, "overlap": overlap, "batch_size": batch},
        "device": "cpu", "precision": "fp32",
    }  # fmt: skip


def make_mosaic(path: Path) -> str:
    """The four real S2L2A patches stitched 2 x 2 into one 448 x 448 GeoTIFF (first scene's grid)."""
    import rasterio


    arrays = []
    for scene in SCENES:
        with rasterio.open(EXAMPLES / "S2L2A" / f"{scene}.tif") as src:
            arrays.append(src.read())
            if scene == SCENES[0]:
                crs, transform = src.crs, src.transform
    mosaic = np.concatenate([np.concatenate(arrays[:2], axis=2), np.concatenate(arrays[2:], axis=2)], axis=1)
    with rasterio.open(path, "w", driver="GTiff", width=448, height=448, count=12, dtype="int16", crs=crs,
                       transform=transform) as dst:  # fmt: skip
        dst.write(mosaic)
    return str(path)
