"""What the tiled benchmarks share: example mosaics, timed worker runs, class-map agreement.

Imported by ``bench_tiled.py`` and ``bench_segmentation.py`` (run as scripts from this folder, so
``import benchlib`` finds it). numpy and the standard library only at import time.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PLUGIN_PATH = REPO / ".pluginpath"
EXAMPLES = REPO / "tests" / "data" / "examples"
SCENES = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0")
REFERENCE_PYTHON = Path("/root/.cache/terramind-reference-venv/bin/python")
MOSAIC = 448  # the 2 x 2 mosaic of the 224 x 224 example patches

# Runs a command in a child process and reports the child's wall time and peak RSS (ru_maxrss).
_MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.monotonic()\n"
    "with open(sys.argv[1], 'w') as log:\n"
    "    rc = subprocess.run(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT).returncode\n"
    "print(json.dumps({'rc': rc, 'wall_s': round(time.monotonic() - t, 2),\n"
    "                  'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}))\n"
)


def best_time(fn, repeats: int = 3) -> float:
    """Best of ``repeats`` wall times of ``fn()`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def machine() -> dict:
    """Where the benchmark ran: CPUs, torch and its threads, platform, load average at the start."""
    import torch

    return {"cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "load_avg_start": os.getloadavg()}  # fmt: skip


def measure(command: list[str], log: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``command`` in a fresh helper process (output to ``log``); exit code, wall time, peak RSS."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(log), *command], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_mosaic(path: Path, folder: str, size: int) -> Path:
    """A ``size`` x ``size`` GeoTIFF repeating the 2 x 2 mosaic of the real patches of ``folder``.

    Tiled (256 px blocks) and DEFLATE-compressed, on the first scene's grid; written row of mosaics
    by row of mosaics, so memory does not grow with ``size``. Kept when it exists.
    """
    import rasterio

    if path.exists():
        return path
    patches = []
    for scene in SCENES:
        with rasterio.open(EXAMPLES / folder / f"{scene}.tif") as src:
            patches.append(src.read())
            if scene == SCENES[0]:
                profile = dict(src.profile)
    mosaic = np.concatenate([np.concatenate(patches[:2], 2), np.concatenate(patches[2:], 2)], 1)  # (C, 448, 448)
    strip = np.tile(mosaic, (1, 1, -(-size // MOSAIC)))[:, :, :size]  # (C, 448, size)
    profile.update(driver="GTiff", width=size, height=size, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", BIGTIFF="IF_SAFER")  # fmt: skip
    if np.issubdtype(mosaic.dtype, np.integer):
        profile["predictor"] = 2
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, size, MOSAIC):
            h = min(MOSAIC, size - row)
            dst.write(strip[:, :h], window=((row, row + h), (0, size)))
    os.replace(tmp, path)
    return path


def run_worker(job: dict, workdir: Path, name: str) -> tuple[dict, dict]:
    """Run the worker (``python -m terramind_qgis.models.worker``) on ``job`` as a measured process.

    Returns the measurement and the worker's ``result`` event; raises with the log's tail otherwise.
    """
    job_path = workdir / f"job_{name}.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    log = workdir / f"ours_{name}.log"
    env = dict(os.environ, PYTHONPATH=str(PLUGIN_PATH))
    stats = measure([sys.executable, "-m", "terramind_qgis.models.worker", str(job_path)], log, env)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    if stats["rc"] or not events or events[-1]["event"] != "result":
        raise RuntimeError(f"worker failed ({stats}): {log.read_text()[-2000:]}")
    return stats, events[-1]


def agreement(a: str, b: str) -> float:
    """Fraction of pixels where the first bands of rasters ``a`` and ``b`` are equal."""
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        return float((x.read(1) == y.read(1)).mean())
