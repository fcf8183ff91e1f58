"""Benchmark: fine-tuned segmentation throughput, the worker vs terratorch's ``tiled_inference``.

Run from the repository root with the project venv (CPU; a few minutes on 2 cores)::

    nice -n 5 .venv/bin/python tools/bench/bench_segmentation.py --out bench-results/bench_segmentation.json

Models: the IBM Sen1Floods11 fine-tuning configs, ``tiny`` and ``base`` (S2L1C + S1GRD → 2
classes, UNetDecoder), with the deterministic weights of models/weights/untrained.py in the
Lightning checkpoint layout of tests/goldens/segmentation (the golden tests prove both sides give
the same logits on them). Input: a 1024 x 1024 raster pair (S2L1C 13 bands, S1RTC standing in for
S1GRD) repeating the 2 x 2 mosaic of the real example patches. Tiling: tile 224, overlap 32
(terratorch: crop 224, stride 192, delta 8, reflect padding), batch 4.

- ours: the worker (``python -m terramind_qgis.models.worker job.json``, task ``segment``) as a
  separate process: wall time (interpreter start, checkpoint loading, reading, inference, writing
  the class raster) and the worker's own run time, peak RSS;
- reference: this file run by the reference venv (``--reference-side``): the task rebuilt with
  ``SemanticSegmentationTask.load_from_checkpoint``, the whole raster read and standardised in
  memory, ``tiled_inference(crop=224, stride=192, batch_size=4)``, argmax written as GeoTIFF; wall
  time of the process and of ``tiled_inference`` alone, peak RSS;
- agreement: the fraction of pixels where both class maps agree (the tile grids differ: terratorch
  strides 192 px from an 8-px reflect border, we spread tiles evenly with >= 32 px overlap, so
  blending weights differ slightly at tile borders).
Throughput = pixels / seconds (megapixels per second).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from benchlib import PLUGIN_PATH, REFERENCE_PYTHON, REPO, agreement, machine, measure, run_worker, write_mosaic

GOLD = REPO / "tests" / "goldens" / "segmentation"
MODELS = {"tiny": "tiny_sen1floods11", "base": "base_sen1floods11"}  # golden case of each size
INPUTS = {"S2L1C": "S2L1C", "S1GRD": "S1RTC"}  # model input -> example folder


def make_inputs(folder: Path, size: int) -> dict[str, Path]:
    """``size`` x ``size`` GeoTIFFs of each input, repeating the 2 x 2 mosaic of the real patches."""
    return {name: write_mosaic(folder / f"{name}_{size}.tif", source, size) for name, source in INPUTS.items()}


def make_checkpoint(folder: Path, case: str) -> Path:
    """The golden case's Lightning checkpoint (rule-filled layout), written once."""
    sys.path[:0] = [str(PLUGIN_PATH), str(REPO / "tests" / "unit" / "models")]
    from test_segmentation_goldens import write_checkpoint

    path = folder / f"{case}.ckpt"
    if not path.exists():
        write_checkpoint(path, case)
    return path


def run_ours(workdir: Path, rasters: dict[str, Path], ckpt: Path, case: str, size: int, batch: int) -> dict:
    out = workdir / f"ours_{case}_{size}.tif"
    job = {
        "protocol": 1, "task": "segment",
        "inputs": {k: {"path": str(v), "name": f"{k} {size}"} for k, v in rasters.items()},
        "outputs": {"classes": str(out)},
        "model": {"id": case, "weights": str(ckpt)},
        "params": {"config": str(GOLD / "configs" / f"{case}.yaml")},
        "tiling": {"tile_size": 224, "overlap": 32, "batch_size": batch}, "device": "cpu", "precision": "fp32",
    }  # fmt: skip
    stats, result = run_worker(job, workdir, f"{case}_{size}")
    metrics = result["metrics"]
    stats.update(output=str(out), tiles=metrics["tiles"], worker_seconds=metrics["seconds"],
                 mpix_per_s_wall=round(size * size / 1e6 / stats["wall_s"], 4),
                 mpix_per_s_run=round(size * size / 1e6 / metrics["seconds"], 4))  # fmt: skip
    return stats


def run_reference(workdir: Path, rasters: dict[str, Path], ckpt: Path, case: str, size: int, batch: int,
                  python: Path) -> dict:
    out = workdir / f"reference_{case}_{size}.tif"
    log = workdir / f"reference_{case}_{size}.log"
    stats = measure([str(python), __file__, "--reference-side", "--case", case, "--checkpoint", str(ckpt),
                     "--s2", str(rasters["S2L1C"]), "--s1", str(rasters["S1GRD"]), "--result", str(out),
                     "--batch", str(batch)], log)  # fmt: skip
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    if stats["rc"] or not lines:
        return {"error": f"reference failed (rc {stats['rc']}): {log.read_text()[-1500:]}", **stats}
    stats.update(output=str(out), **lines[-1], mpix_per_s_wall=round(size * size / 1e6 / stats["wall_s"], 4),
                 mpix_per_s_run=round(size * size / 1e6 / lines[-1]["inference_seconds"], 4))  # fmt: skip
    return stats


def reference_side(args: argparse.Namespace) -> int:
    """terratorch 1.2.11: load the checkpoint with Lightning, ``tiled_inference`` on the whole raster."""
    import rasterio
    import terratorch  # noqa: F401  (sets float32 matmul precision to "medium")
    import torch
    import yaml

    torch.set_float32_matmul_precision("highest")
    from terratorch.tasks import SemanticSegmentationTask
    from terratorch.tasks.tiled_inference import tiled_inference

    cfg = yaml.safe_load((GOLD / "configs" / f"{args.case}.yaml").read_text())
    model_args = dict(cfg["model"]["init_args"]["model_args"], backbone_pretrained=False)
    task = SemanticSegmentationTask.load_from_checkpoint(args.checkpoint, map_location="cpu", model_args=model_args).eval()
    data = cfg["data"]["init_args"]
    x = {}
    for name, path in (("S2L1C", args.s2), ("S1GRD", args.s1)):
        with rasterio.open(path) as src:
            raw = src.read().astype(np.float32)  # (C, H, W)
            profile = src.profile
        mean = np.asarray(data["means"][name], np.float32)[:, None, None]
        std = np.asarray(data["stds"][name], np.float32)[:, None, None]
        x[name] = torch.from_numpy((raw - mean) / std)[None]  # (1, C, H, W)
    start = time.monotonic()
    with torch.no_grad():
        logits = tiled_inference(lambda t: task.model(t).output, x, crop=224, stride=192, batch_size=args.batch)
    seconds = time.monotonic() - start
    classes = logits.argmax(1)[0].numpy().astype(np.uint8)  # (H, W)
    profile.update(count=1, dtype="uint8", nodata=None)
    with rasterio.open(args.result, "w", **profile) as dst:
        dst.write(classes[None])
    print(json.dumps({"inference_seconds": round(seconds, 2)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--out", default=str(REPO / "bench-results" / "bench_segmentation.json"))
    p.add_argument("--workdir", default="/tmp/terramind-bench-segmentation")
    p.add_argument("--reference-python", default=str(REFERENCE_PYTHON))
    p.add_argument("--no-reference", action="store_true")
    # reference side (run by the reference venv)
    p.add_argument("--reference-side", action="store_true", help=argparse.SUPPRESS)
    for name in ("--case", "--checkpoint", "--s2", "--s1", "--result"):
        p.add_argument(name, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reference_side:
        return reference_side(args)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ref_python = Path(args.reference_python)
    results = {
        "what": "fine-tuned segmentation (worker, task segment) vs terratorch tiled_inference (reference venv)",
        "models": {size: f"{case}: IBM Sen1Floods11 config, deterministic untrained weights" for size, case in MODELS.items()},
        "tiling": {"tile_size": 224, "overlap": 32, "stride_reference": 192, "batch_size": args.batch},
        "machine": machine(),
        "runs": [],
    }  # fmt: skip
    for size in args.sizes:
        rasters = make_inputs(workdir, size)
        for model in args.models:
            case = MODELS[model]
            ckpt = make_checkpoint(workdir, case)
            run = {"model": model, "size": size, "ours": run_ours(workdir, rasters, ckpt, case, size, args.batch)}
            sys.stdout.write(json.dumps({"model": model, "size": size, "ours": run["ours"]}) + "\n")
            if not args.no_reference and ref_python.exists():
                run["reference"] = run_reference(workdir, rasters, ckpt, case, size, args.batch, ref_python)
                if "output" in run["reference"]:
                    run["class_agreement"] = agreement(run["ours"]["output"], run["reference"]["output"])
                sys.stdout.write(json.dumps({"model": model, "size": size, "reference": run["reference"]}) + "\n")
            results["runs"].append(run)
    results["machine"]["load_avg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
