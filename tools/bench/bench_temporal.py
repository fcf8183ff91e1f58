"""Benchmark: IBM/ESA's multi-temporal flood model (ImpactMesh, TerraMind base) over 1024² x 4 dates x 3 modalities,
the worker vs terratorch's ``tiled_inference`` on the same weights and the same tile grid.

Run from the repository root with the project venv (CPU; tens of minutes on 2 shared cores)::

    nice -n 5 .venv/bin/python tools/bench/bench_temporal.py --out bench-results/temporal.json

Model: ``terramind_v1_base_flood`` (catalogue id; the ImpactMesh flood config shipped with the plugin:
S2L2A 12 bands + S1RTC + DEM over four dates, TemporalWrapper with concat pooling, UNet decoder) with
the deterministic weights of models/weights/untrained.py in the Lightning checkpoint layout of
``tests/goldens/temporal/base_impactmesh_flood.layout.json`` (the golden tests prove both sides
give the same logits on them). The checkpoint is put in a Hugging Face cache of its own as the
repo ``ibm-esa-geospatial/TerraMind-base-Flood`` (file ``bench_flood.ckpt``: not the real file), so
our side runs the catalogue id offline: the checkpoint found by the card's rule, the shipped YAML.
Input: 1024 x 1024 rasters repeating the 2 x 2 mosaic of the real example patches, dates simulated
as in ``tests/unit/models/temporal_fixtures.py`` (illumination per date, a flooded rectangle from
date 3 on); one GeoTIFF per date, the DEM one file. Tiling on both sides: TerraTorch's, crop 256,
stride 208, delta 8 (the config's ``tiled_inference_parameters``); batch 4 on both (the config's
64 is a GPU's).

- ours: the worker (``python -m terramind_qgis.models.worker job.json``, task ``segment``) as a
  separate process: wall time (interpreter start, checkpoint loading, reading, inference, writing the
  class raster and the logits) and the worker's own run time, peak RSS;
- reference: this file run by the reference venv (``--reference-side``): the task rebuilt with
  ``SemanticSegmentationTask.load_from_checkpoint``, every date of every raster read and standardised
  in memory as the ImpactMesh data module does (the DEM repeated over the dates), then
  ``tiled_inference(crop=256, stride=208, delta=8, batch_size=4)``; wall time of the process and of
  ``tiled_inference`` alone, peak RSS; the logits are saved for the comparison;
- agreement: max |ours - ref| / max |ref| of the logits and the fraction of equal classes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from benchlib import PLUGIN_PATH, REFERENCE_PYTHON, REPO, agreement, machine, measure, run_worker, write_mosaic

CASE = "base_impactmesh_flood"
MODEL_ID = "terramind_v1_base_flood"
REPO_ID = "ibm-esa-geospatial/TerraMind-base-Flood"
CONFIG = REPO / "models" / "segmentation" / "configs" / "terramind_v1_base_impactmesh_flood.yaml"
EXAMPLE_FOLDERS = {"S2L2A": "S2L2A", "S1RTC": "S1RTC", "DEM": "DEM"}
CHIPS = {"crop": 256, "stride": 208, "delta": 8}


def _fixtures():
    sys.path[:0] = [str(PLUGIN_PATH), str(REPO / "tests" / "unit" / "models"), str(REPO / "tests")]
    import temporal_fixtures

    return temporal_fixtures


def make_inputs(folder: Path, size: int) -> dict[str, list[Path]]:
    """One float32 GeoTIFF per date (``<M>_<size>_t<d>.tif``; the DEM one file), kept when present."""
    fx = _fixtures()
    import rasterio

    files: dict[str, list[Path]] = {}
    flood = (slice(None), slice(size // 4, size // 2), slice(size // 5, size // 2))  # bands, rows, cols
    for name, source in EXAMPLE_FOLDERS.items():
        base = write_mosaic(folder / f"{name}_{size}_mosaic.tif", source, size)
        with rasterio.open(base) as src:
            x, profile = src.read().astype(np.float32), dict(src.profile)
        profile.update(dtype="float32", predictor=3, nodata=None)
        dates = 1 if name == "DEM" else 4
        files[name] = []
        for t in range(dates):
            path = folder / f"{name}_{size}_t{t + 1}.tif"
            files[name].append(path)
            if path.exists():
                continue
            if name == "S2L2A":
                v = np.clip(np.round(x * fx.S2_GAIN[t]) + fx.S2_OFFSET[t], 0, 10000)
                if t >= 2:
                    v[flood] = np.round(0.3 * v[flood])
            elif name == "S1RTC":
                v = x + fx.S1_SHIFT[t]
                if t >= 2:
                    v[flood] -= 8.0
            else:
                v = x
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(v.astype(np.float32))
    return files


def make_checkpoint_cache(folder: Path) -> tuple[Path, Path]:
    """The golden case's Lightning checkpoint (rule-filled layout) in a Hugging Face cache of its own."""
    _fixtures()
    from test_temporal_goldens import write_checkpoint

    from testlib.hub import make_hub_cache

    ckpt = folder / f"{CASE}.ckpt"
    if not ckpt.exists():
        write_checkpoint(ckpt, CASE)
    cache = folder / "hf-cache"
    if not (cache / ("models--" + REPO_ID.replace("/", "--"))).exists():
        make_hub_cache(cache, REPO_ID, "bench_flood.ckpt", ckpt)
    return ckpt, cache


def run_ours(workdir: Path, files: dict[str, list[Path]], cache: Path, size: int, batch: int) -> dict:
    out = workdir / f"ours_flood_{size}.tif"
    logits = workdir / f"ours_flood_{size}_logits.tif"
    job = {
        "protocol": 1, "task": "segment",
        "inputs": {m: {"dates": [str(p) for p in f], "name": m} if len(f) > 1 else {"path": str(f[0]), "name": m}
                   for m, f in files.items()},
        "outputs": {"classes": str(out), "logits": str(logits)},
        "model": {"id": MODEL_ID},
        "tiling": {"tile_size": 224, "overlap": 32, "batch_size": batch}, "device": "cpu", "precision": "fp32",
    }  # fmt: skip
    saved = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    os.environ.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    try:
        stats, result = run_worker(job, workdir, f"flood_{size}")
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    metrics = result["metrics"]
    stats.update(output=str(out), logits=str(logits), tiles=metrics["tiles"], worker_seconds=metrics["seconds"],
                 mpix_per_s_wall=round(size * size / 1e6 / stats["wall_s"], 4),
                 mpix_per_s_run=round(size * size / 1e6 / metrics["seconds"], 4))  # fmt: skip
    return stats


def run_reference(workdir: Path, files: dict[str, list[Path]], ckpt: Path, size: int, batch: int, python: Path) -> dict:
    out = workdir / f"reference_flood_{size}.tif"
    log = workdir / f"reference_flood_{size}.log"
    listing = workdir / "reference_inputs.json"
    listing.write_text(json.dumps({k: [str(p) for p in v] for k, v in files.items()}))
    env = dict(os.environ, PYTHONPATH=str(PLUGIN_PATH))
    stats = measure([str(python), __file__, "--reference-side", "--checkpoint", str(ckpt), "--inputs", str(listing),
                     "--result", str(out), "--batch", str(batch)], log, env)  # fmt: skip
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    if stats["rc"] or not lines:
        return {"error": f"reference failed (rc {stats['rc']}): {log.read_text()[-1500:]}", **stats}
    stats.update(output=str(out), logits=str(out) + ".npy", **lines[-1],
                 mpix_per_s_wall=round(size * size / 1e6 / stats["wall_s"], 4),
                 mpix_per_s_run=round(size * size / 1e6 / lines[-1]["inference_seconds"], 4))  # fmt: skip
    return stats


def reference_side(args: argparse.Namespace) -> int:
    """terratorch 1.2.11: the Lightning task and ``tiled_inference`` on the whole 4-date raster in memory."""
    import rasterio
    import terratorch  # noqa: F401  (sets float32 matmul precision to "medium")
    import torch
    import yaml

    torch.set_float32_matmul_precision("highest")
    from terratorch.datamodules.generic_multimodal_data_module import MultimodalNormalize
    from terratorch.tasks import SemanticSegmentationTask
    from terratorch.tasks.tiled_inference import tiled_inference

    sys.path.insert(0, str(REPO / "tools" / "goldens"))
    from temporal import impactmesh_stats  # the data module's statistics, read from its source

    cfg = yaml.safe_load(CONFIG.read_text())
    model_args = dict(cfg["model"]["init_args"]["model_args"], backbone_pretrained=False)
    task = SemanticSegmentationTask.load_from_checkpoint(args.checkpoint, map_location="cpu", model_args=model_args).eval()
    files = json.loads(Path(args.inputs).read_text())
    batch = {}
    for name, paths in files.items():
        dates = []
        for path in paths:
            with rasterio.open(path) as src:
                dates.append(src.read().astype(np.float32))  # (C, H, W)
                profile = src.profile
        a = np.stack(dates)  # (T, C, H, W)
        if a.shape[0] == 1:
            a = np.repeat(a, 4, axis=0)  # ImpactMeshDataset: a one-date file over every date
        a = np.nan_to_num(a, nan=0.0)
        batch[name] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, 0, 1)))[None]  # (1, C, T, H, W)
    means, stds = impactmesh_stats(cfg["data"]["init_args"])
    x = MultimodalNormalize(means, stds)({"image": batch})["image"]
    start = time.monotonic()
    with torch.no_grad():
        logits = tiled_inference(lambda t: task.model(t).output, x, batch_size=args.batch, **CHIPS)
    seconds = time.monotonic() - start
    np.save(args.result + ".npy", logits[0].numpy().astype(np.float32))
    classes = logits.argmax(1)[0].numpy().astype(np.uint8)  # (H, W)
    profile.update(count=1, dtype="uint8", nodata=None, predictor=2)
    with rasterio.open(args.result, "w", **profile) as dst:
        dst.write(classes[None])
    print(json.dumps({"inference_seconds": round(seconds, 2)}))
    return 0


def logit_deviation(ours: str, reference_npy: str) -> float:
    import rasterio

    with rasterio.open(ours) as src:
        a = src.read()
    b = np.load(reference_npy)
    return float(np.abs(a - b).max() / np.abs(b).max())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--out", default=str(REPO / "bench-results" / "temporal.json"))
    p.add_argument("--workdir", default="/tmp/terramind-bench-temporal")
    p.add_argument("--reference-python", default=str(REFERENCE_PYTHON))
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work folder (inputs, checkpoint, outputs)")
    # reference side (run by the reference venv)
    p.add_argument("--reference-side", action="store_true", help=argparse.SUPPRESS)
    for name in ("--checkpoint", "--inputs", "--result"):
        p.add_argument(name, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reference_side:
        return reference_side(args)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    files = make_inputs(workdir, args.size)
    ckpt, cache = make_checkpoint_cache(workdir)
    results = {
        "what": "multi-temporal segmentation (worker, task segment, catalogue id terramind_v1_base_flood) vs terratorch "
                "tiled_inference (reference venv), same weights, same tile grid",
        "model": f"{MODEL_ID}: IBM/ImpactMesh flood config (TerraMind base, 4 dates, concat pooling, UNet), "
                 "deterministic untrained weights",
        "input": {"size": args.size, "dates": 4, "modalities": {"S2L2A": 12, "S1RTC": 2, "DEM": "1 (one date)"}},
        "tiling": {**CHIPS, "batch_size": args.batch},
        "machine": machine(),
    }  # fmt: skip
    results["ours"] = run_ours(workdir, files, cache, args.size, args.batch)
    sys.stdout.write(json.dumps({"ours": results["ours"]}) + "\n")
    ref_python = Path(args.reference_python)
    if not args.no_reference and ref_python.exists():
        results["reference"] = run_reference(workdir, files, ckpt, args.size, args.batch, ref_python)
        sys.stdout.write(json.dumps({"reference": results["reference"]}) + "\n")
        if "output" in results["reference"]:
            results["class_agreement"] = agreement(results["ours"]["output"], results["reference"]["output"])
            results["logits_max_relative_deviation"] = logit_deviation(results["ours"]["logits"], results["reference"]["logits"])
            ours, ref = results["ours"], results["reference"]
            results["ratios"] = {"wall_ours_over_reference": round(ours["wall_s"] / ref["wall_s"], 3),
                                 "peak_rss_ours_over_reference": round(ours["peak_rss_mb"] / ref["peak_rss_mb"], 3)}  # fmt: skip
    results["machine"]["load_avg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")
    sys.stdout.write(f"wrote {args.out}\n")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
