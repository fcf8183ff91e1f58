"""Helpers of the fleet tests: small real scenes, a job template, the fleet command as a subprocess."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "tests" / "data" / "examples"
CATALOGUE = REPO / "tests" / "data" / "catalogue"
PLUGIN_PATH = REPO / ".pluginpath"
SCENES = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0")
TIMESTAMP_TAGS = {"TERRAMIND_CREATED"}


def template(tile: int = 224, batch: int = 1, device: str = "cpu") -> dict:
    """Reconstruct a LULC raster with the reduced test tokenizer (no diffusion: about a second of work)."""
    return {
        "protocol": 1, "task": "reconstruct",
        "inputs": {"LULC": {"name": "{scene}"}},
        "outputs": {"reconstruction": "{scene}/rec.tif"},
        "model": {"id": "test_tokenizer_lulc", "untrained": True, "catalogue_paths": [str(CATALOGUE)]},
        "params": {"modality": "LULC", "seed": 3},
        "tiling": {"tile_size": tile, "overlap": 0, "batch_size": batch}, "device": device, "precision": "fp32",
    }  # fmt: skip


def write_template(folder: Path, data: dict, name: str = "template.json") -> str:
    path = folder / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def lulc_mosaic(path: Path, repeat: int = 2) -> str:
    """The four LULC example patches tiled ``repeat`` x ``repeat`` times 2 x 2 (a scene that takes a while)."""
    import rasterio

    arrays = []
    for scene in SCENES:
        with rasterio.open(EXAMPLES / "LULC" / f"{scene}.tif") as src:
            arrays.append(src.read())
            if scene == SCENES[0]:
                profile = src.profile
    block = np.concatenate([np.concatenate(arrays[:2], axis=2), np.concatenate(arrays[2:], axis=2)], axis=1)
    mosaic = np.tile(block, (1, repeat, repeat))
    profile.update(width=mosaic.shape[2], height=mosaic.shape[1], tiled=False)
    profile.pop("blockxsize", None), profile.pop("blockysize", None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mosaic)
    return str(path)


def fleet_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PLUGIN_PATH)
    env.pop("TERRAMIND_CATALOGUE_PATH", None)
    return env


def fleet_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "terramind_qgis.models.fleet", *args]


def run_fleet(*args: str, timeout: float = 120) -> tuple[int, list[dict], str]:
    """(exit code, events, stderr) of one fleet command (with --events)."""
    proc = subprocess.run(fleet_command(*args, "--events"), capture_output=True, text=True, timeout=timeout, env=fleet_env())
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines() if line.strip()], proc.stderr


def read_manifest(folder: Path) -> list[dict]:
    lines = (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def partials(folder: Path) -> list[str]:
    return glob.glob(str(folder / "**" / "*.partial-*"), recursive=True)


def wait_for(predicate, timeout: float = 60.0, step: float = 0.05):
    """Poll until ``predicate()`` is truthy; returns its value (fails the test after ``timeout``)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


def raster_content(path: str) -> tuple[dict, np.ndarray]:
    """(profile facts and tags without timestamps, pixels) of a GeoTIFF."""
    import rasterio

    with rasterio.open(path) as src:
        tags = {k: v for k, v in src.tags().items() if k not in TIMESTAMP_TAGS}
        facts = {"crs": src.crs.to_wkt(), "transform": tuple(src.transform), "dtypes": src.dtypes, "nodata": src.nodata,
                 "descriptions": src.descriptions, "colormap": src.colormap(1) if src.dtypes[0] == "uint8" else None,
                 "tags": tags, "band_tags": [src.tags(b) for b in src.indexes]}  # fmt: skip
        return facts, src.read()
