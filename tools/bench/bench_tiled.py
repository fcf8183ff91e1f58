"""Benchmark: streaming tiled generation (the worker) vs terratorch's ``tiled_inference``.

Run from the repository root with the project venv (CPU; about 15-30 min on 2 cores)::

    nice -n 5 .venv/bin/python tools/bench/bench_tiled.py --sizes 1024 4096 --out bench-results/bench_tiled.json

What it measures, per raster size (square S2L2A rasters made by repeating the four real example
patches as a 2 x 2 mosaic; int16, tiled, DEFLATE):

- ours: the worker (``python -m terramind_qgis.models.worker job.json``, task ``generate``) as a
  separate process: wall time and peak RSS (``ru_maxrss`` of that process);
- reference: ``tools/bench/bench_tiled_reference.py`` in the reference venv (terratorch 1.2.11):
  the whole raster read into memory and ``tiled_inference(crop=224, stride=192, batch_size=...)``,
  the same weights, same timing and RSS measurement; skipped with ``--no-reference`` or when the
  reference venv is missing;
- agreement: the fraction of pixels where both LULC maps have the same class. At 224 x 224 (one
  tile; terratorch's small-input shortcut runs the model once on the raster) both implementations
  see the same pixels, so this checks that they run the same model on the same weights. On larger
  rasters the tile grids differ (terratorch strides 192 px from a reflect-padded border of 8 px,
  we spread tiles evenly with >= 32 px overlap): with untrained weights the near-flat logits make
  the argmax change with any change of context, so agreement there is not a quality measure.

Model (chosen to finish on 2 CPU cores): ``terramind_v1_tiny`` (official architecture), S2L2A ->
LULC, greedy sampling (temperature 0, so both implementations are deterministic), with the
deterministic untrained weights of ``models/weights/untrained.py`` written once in the official
checkpoint layout (``<workdir>/weights``) and loaded by both sides through their normal loaders.
LULC decoding is the full ViT-B VQ-VAE decoder (no diffusion steps); DiVAE outputs (S1, DEM, ...)
would add ``timesteps`` UNet passes per tile and are left out to keep the run short.
Tiling: tile 224, overlap 32 (terratorch: crop 224, stride 192), batch 4.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchlib import PLUGIN_PATH, REFERENCE_PYTHON, REPO, agreement, machine, measure, run_worker, write_mosaic

sys.path.insert(0, str(PLUGIN_PATH))
MODEL, TOKENIZER, INPUTS, OUTPUTS = "terramind_v1_tiny", "terramind_v1_tokenizer_lulc", ["S2L2A"], ["LULC"]


def make_weights(folder: Path) -> dict[str, Path]:
    """Untrained (deterministic) weights in the official checkpoint layouts, written once."""
    import torch

    from terramind_qgis.models.core import catalogue
    from terramind_qgis.models.terramind import TerraMindGeneration
    from terramind_qgis.models.tokenizers import build_tokenizer
    from terramind_qgis.models.weights.loading import untrained_checkpoint
    from terramind_qgis.models.weights.matching import GENERATION
    from terramind_qgis.models.weights.matching import TOKENIZER as TOKENIZER_MAPPING

    folder.mkdir(parents=True, exist_ok=True)
    files = {"model": folder / "TerraMind_v1_tiny.pt", "tokenizer": folder / "TerraMind_Tokenizer_LULC.pt"}
    if not files["model"].exists():
        with torch.device("meta"):
            model = TerraMindGeneration(catalogue.get(MODEL).config, INPUTS, OUTPUTS)
        ckpt = untrained_checkpoint(model, GENERATION)
        torch.save({k: ckpt[k] for k in ckpt}, files["model"])
    if not files["tokenizer"].exists():
        with torch.device("meta"):
            tok = build_tokenizer(catalogue.get(TOKENIZER).config)
        ckpt = untrained_checkpoint(tok, TOKENIZER_MAPPING)
        torch.save({k: ckpt[k] for k in ckpt}, files["tokenizer"])
    return files


def run_ours(workdir: Path, raster: Path, weights: dict[str, Path], size: int, batch: int) -> dict:
    out = workdir / f"ours_{size}.tif"
    job = {
        "protocol": 1, "task": "generate",
        "inputs": {"S2L2A": {"path": str(raster), "name": f"S2L2A {size}"}},
        "outputs": {"LULC": str(out)},
        "model": {"id": MODEL, "weights": str(weights["model"]), "tokenizer_weights": {"LULC": str(weights["tokenizer"])}},
        "params": {"outputs": OUTPUTS, "temperature": 0.0, "top_p": 0.8, "top_k": 0, "seed": 0, "timesteps": 1},
        "tiling": {"tile_size": 224, "overlap": 32, "batch_size": batch}, "device": "cpu", "precision": "fp32",
    }  # fmt: skip
    stats, result = run_worker(job, workdir, str(size))
    stats.update(output=str(out), tiles=result["metrics"]["tiles"], worker_seconds=result["metrics"]["seconds"])
    return stats


def run_reference(workdir: Path, raster: Path, weights: dict[str, Path], size: int, batch: int, python: Path) -> dict:
    out = workdir / f"reference_{size}.tif"
    log = workdir / f"reference_{size}.log"
    script = REPO / "tools" / "bench" / "bench_tiled_reference.py"
    stats = measure([str(python), str(script), "--input", str(raster), "--model", str(weights["model"]),
                     "--tokenizer", str(weights["tokenizer"]), "--out", str(out), "--batch", str(batch)], log)  # fmt: skip
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    if stats["rc"] or not lines:
        return {"error": f"reference failed (rc {stats['rc']}): {log.read_text()[-1500:]}", **stats}
    stats.update(output=str(out), chips=lines[-1]["chips"], inference_seconds=lines[-1]["inference_seconds"])
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 1024, 4096])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--out", default=str(REPO / "bench-results" / "bench_tiled.json"))
    p.add_argument("--workdir", default="/tmp/terramind-bench-tiled")
    p.add_argument("--reference-python", default=str(REFERENCE_PYTHON))
    p.add_argument("--no-reference", action="store_true")
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    weights = make_weights(workdir / "weights")
    ref_python = Path(args.reference_python)
    results = {
        "what": "streaming tiled generation (worker) vs terratorch tiled_inference (reference venv)",
        "model": f"{MODEL} (official architecture, deterministic untrained weights), {INPUTS} -> {OUTPUTS}, "
                 "temperature 0 (greedy), LULC = full ViT-B VQ-VAE decoder",
        "tiling": {"tile_size": 224, "overlap": 32, "stride_reference": 192, "batch_size": args.batch},
        "machine": machine(),
        "runs": [],
    }  # fmt: skip
    for size in args.sizes:
        raster = write_mosaic(workdir / f"s2_{size}.tif", "S2L2A", size)
        run = {"size": size, "input_mb_float32": round(12 * size * size * 4 / 2**20, 1)}
        run["ours"] = run_ours(workdir, raster, weights, size, args.batch)
        print(json.dumps({"size": size, "ours": run["ours"]}), flush=True)
        if not args.no_reference and ref_python.exists():
            run["reference"] = run_reference(workdir, raster, weights, size, args.batch, ref_python)
            if "output" in run["reference"]:
                run["lulc_agreement"] = agreement(run["ours"]["output"], run["reference"]["output"])
            print(json.dumps({"size": size, "reference": run["reference"]}), flush=True)
        results["runs"].append(run)
    results["machine"]["load_avg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
