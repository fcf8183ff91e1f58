"""Benchmark: embedding extraction (task ``embed``) over large rasters, tiny and base, on the CPU.

Run from the repository root with the project venv (about 15-25 min on 2 busy cores)::

    nice -n 5 .venv/bin/python tools/bench/bench_embeddings.py --sizes 4096 --out bench-results/embeddings.json

Per model and raster size (224: one tile, i.e. the fixed cost of a run: start, model, one tile; 4096:
the size the issue asks for): the worker (``python -m terramind_qgis.models.worker job.json``) as a
separate process — wall time, the worker's own run time, peak RSS (``ru_maxrss``), tiles, tokens
per second — and the size of the embedding raster it wrote. Rasters: square S2L2A mosaics of the
four real example patches (benchlib ``write_mosaic``). Models: ``terramind_v1_tiny`` and
``terramind_v1_base`` (the official architectures) with the deterministic untrained weights
(``untrained: true``: the same arithmetic as trained weights; the Hub is not reachable here), S2L2A
only, merge mean, last layer, float32 output. Tiling: tile 224, overlap 32, batch 4. There is no
reference side: terratorch has no tiled embedding extraction to compare with.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchlib import REPO, machine, run_worker, write_mosaic

MODELS = ("terramind_v1_tiny", "terramind_v1_base")


def run_one(workdir: Path, raster: Path, model: str, size: int, batch: int, dtype: str) -> dict:
    out = workdir / f"emb_{model}_{size}.tif"
    job = {
        "protocol": 1, "task": "embed", "inputs": {"S2L2A": {"path": str(raster), "name": f"S2L2A {size}"}},
        "outputs": {"embeddings": str(out)}, "model": {"id": model, "untrained": True},
        "params": {"merge": "mean", "dtype": dtype}, "tiling": {"tile_size": 224, "overlap": 32, "batch_size": batch},
        "device": "cpu", "precision": "fp32",
    }  # fmt: skip
    stats, result = run_worker(job, workdir, f"{model}_{size}")
    m = result["metrics"]
    tokens = m["token_grid"][0] * m["token_grid"][1]
    stats.update(tiles=m["tiles"], dim=m["dim"], token_grid=m["token_grid"], worker_seconds=m["seconds"],
                 tokens_per_second=round(tokens / m["seconds"], 1), strip_mb=m["blend_buffer_mb"],
                 output_mb=round(out.stat().st_size / 2**20, 1))  # fmt: skip
    out.unlink()
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 4096])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--out", default=str(REPO / "bench-results" / "embeddings.json"))
    p.add_argument("--workdir", default="/tmp/terramind-bench-embeddings")
    args = p.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = {
        "what": "embedding extraction (worker task embed), CPU: wall time and peak RSS of the worker process",
        "setup": f"S2L2A mosaic rasters, merge mean, last layer, {args.dtype} output, deterministic untrained weights "
                 "of the official architectures",
        "tiling": {"tile_size": 224, "overlap": 32, "batch_size": args.batch},
        "machine": machine(),
        "runs": [],
    }  # fmt: skip
    for size in args.sizes:
        raster = write_mosaic(workdir / f"s2_{size}.tif", "S2L2A", size)
        for model in args.models:
            run = {"size": size, "model": model, **run_one(workdir, raster, model, size, args.batch, args.dtype)}
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
    results["machine"]["load_avg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
