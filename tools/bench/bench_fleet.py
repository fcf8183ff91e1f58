"""Benchmark: a fleet of scenes on a Dask LocalCluster against the same scenes one after another. JSON out.

Run from the repository root with the project venv (a few minutes on 2 cores)::

    nice -n 5 .venv/bin/python tools/bench/bench_fleet.py --out bench-results/fleet.json

Scenes: ``--scenes`` (8) scenes of ``--size``² (1024²) Sentinel-2 L2A, each the 2 x 2 mosaic of the
real example patches repeated (``benchlib.write_mosaic``). Task: LULC generation with the reduced
test TerraMind card (``test_terramind_tiny``, untrained weights, tile 224, overlap 32, batch 4) — the
real pipeline (encoder-decoder, token sampling, LULC tokenizer decoding) at a cost a CI machine
can pay.

- **sequential**: the worker command (``python -m terramind_qgis.models.worker``), one scene after
  the other, each with every core (torch's default threads): wall time, per-scene time and peak RSS.
- **fleet**: ``python -m terramind_qgis.models.fleet`` on its own LocalCluster (``--workers`` 2 x 1
  thread; each scene's worker process gets cores / 2 threads): wall time (cluster start included),
  and from the manifest each scene's time, its worker process's peak RSS (``wait4``) and its Dask
  worker; peak RSS per Dask worker = the largest of its scenes'.

Reported: throughput (scenes per hour) of both and their ratio; whether the outputs agree
(LULC classes, fraction of equal pixels); and, on paper, the throughput N nodes would give:
``N x slots_per_node x 3600 / t_scene`` with ``t_scene`` the fleet's measured mean time per scene
(worker start + model load + compute; the scheduler's own overhead per task is milliseconds), which
a GPU node replaces by its own per-scene time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

REPO = benchlib.REPO
CATALOGUE = REPO / "tests" / "data" / "catalogue"
NODES = (1, 2, 4, 8, 16, 64)


def template(tile: int, batch: int) -> dict:
    return {
        "protocol": 1, "task": "generate",
        "inputs": {"S2L2A": {"name": "{scene}"}},
        "outputs": {"LULC": "{scene}/lulc.tif"},
        "model": {"id": "test_terramind_tiny", "untrained": True, "catalogue_paths": [str(CATALOGUE)]},
        "params": {"outputs": ["LULC"], "seed": 0},
        "tiling": {"tile_size": tile, "overlap": 32, "batch_size": batch}, "device": "cpu", "precision": "fp32",
    }  # fmt: skip


def run_sequential(tmpl_path: Path, scenes: list[str], mosaic: Path, work: Path, threads: int | None = None) -> dict:
    """The scenes one after another; ``threads``: OMP_NUM_THREADS of each worker (default: torch's, every core)."""
    sys.path.insert(0, str(benchlib.PLUGIN_PATH))
    saved = os.environ.pop("OMP_NUM_THREADS", None)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        return _sequential(tmpl_path, scenes, mosaic, work) | {"threads": threads or os.cpu_count()}
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)
        if saved is not None:
            os.environ["OMP_NUM_THREADS"] = saved


def _sequential(tmpl_path: Path, scenes: list[str], mosaic: Path, work: Path) -> dict:
    from terramind_qgis.models.fleet.template import JobTemplate

    tmpl = JobTemplate.from_file(str(tmpl_path))
    out, per_scene, outputs = work / "sequential", [], {}
    start = time.monotonic()
    for scene in scenes:
        job = tmpl.scene_job(scene, {"S2L2A": str(mosaic)}, str(out))
        os.makedirs(os.path.dirname(job.outputs["LULC"]), exist_ok=True)
        stats, result = benchlib.run_worker(job.job, work, f"seq_{scene}")
        per_scene.append({"scene": scene, "wall_s": stats["wall_s"], "peak_rss_mb": stats["peak_rss_mb"],
                          "worker_seconds": result["metrics"]["seconds"]})  # fmt: skip
        outputs[scene] = job.outputs["LULC"]
    wall = time.monotonic() - start
    return {"wall_s": round(wall, 2), "scenes_per_hour": round(3600 * len(scenes) / wall, 1), "per_scene": per_scene,
            "mean_scene_s": round(statistics.mean(s["wall_s"] for s in per_scene), 2), "outputs": outputs}  # fmt: skip


def run_fleet(tmpl_path: Path, scene_csv: Path, work: Path, workers: int) -> dict:
    out = work / "fleet"
    env = dict(os.environ, PYTHONPATH=str(benchlib.PLUGIN_PATH))
    env.pop("OMP_NUM_THREADS", None)
    command = [sys.executable, "-m", "terramind_qgis.models.fleet", str(tmpl_path), str(scene_csv), "-o", str(out),
               "--workers", str(workers), "--threads-per-worker", "1", "--dashboard-address", ":0", "--events"]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not events or events[-1]["event"] != "result":
        raise RuntimeError(f"fleet failed ({proc.returncode}): {proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]
    per_worker: dict[str, dict] = {}
    for r in records:
        w = per_worker.setdefault(r["worker"], {"scenes": 0, "peak_rss_mb": 0.0, "busy_s": 0.0})
        w["scenes"] += 1
        w["peak_rss_mb"] = max(w["peak_rss_mb"], r["peak_rss_mb"])
        w["busy_s"] = round(w["busy_s"] + r["seconds"], 2)
    scene_s = [r["seconds"] for r in records]
    overhead = [r["seconds"] - r["metrics"]["seconds"] for r in records]
    return {
        "wall_s": round(wall, 2), "scenes_per_hour": round(3600 * len(records) / wall, 1),
        "workers": workers, "threads_per_worker": 1, "scene_threads": max(1, (os.cpu_count() or 1) // workers),
        "mean_scene_s": round(statistics.mean(scene_s), 2),
        "mean_worker_start_s": round(statistics.mean(overhead), 2),
        "per_worker": per_worker,
        "per_scene": [{"scene": r["scene"], "seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"], "worker": r["worker"],
                       "worker_seconds": r["metrics"]["seconds"]} for r in records],  # fmt: skip
        "metrics": events[-1]["metrics"],
        "outputs": {r["scene"]: str(out / r["outputs"]["LULC"]["path"]) for r in records},
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "bench-results" / "fleet.json"))
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tile", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    p.add_argument("--previous", help="a result file of an earlier run to summarise in this one")
    p.add_argument("--sequential-first", action="store_true", help="run the sequential baseline before the fleet")
    p.add_argument("--sequential-threads", type=int, default=None,
                   help="OMP_NUM_THREADS of the sequential runs (default: torch's own, every core)")  # fmt: skip
    args = p.parse_args()
    info = benchlib.machine()
    with tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        mosaic = benchlib.write_mosaic(work / f"s2l2a_{args.size}.tif", "S2L2A", args.size)
        tmpl_path = work / "template.json"
        tmpl_path.write_text(json.dumps(template(args.tile, args.batch)), encoding="utf-8")
        scenes = [f"scene{i:02d}" for i in range(args.scenes)]
        scene_csv = work / "scenes.csv"
        scene_csv.write_text("scene,S2L2A\n" + "".join(f"{s},{mosaic}\n" for s in scenes), encoding="utf-8")
        if args.sequential_first:
            sequential = run_sequential(tmpl_path, scenes, mosaic, work, args.sequential_threads)
            fleet = run_fleet(tmpl_path, scene_csv, work, args.workers)
        else:
            fleet = run_fleet(tmpl_path, scene_csv, work, args.workers)
            sequential = run_sequential(tmpl_path, scenes, mosaic, work, args.sequential_threads)
        agree = {s: benchlib.agreement(fleet["outputs"][s], sequential["outputs"][s]) for s in scenes}
    for d in (fleet, sequential):
        d.pop("outputs")
    t_scene = fleet["mean_scene_s"]
    slots = args.workers
    result = {
        "benchmark": "fleet", "machine": info, "load_avg_end": os.getloadavg(),
        "scenes": args.scenes, "size": args.size, "order": "sequential, fleet" if args.sequential_first else "fleet, sequential",
        "task": f"generate LULC from S2L2A, test_terramind_tiny (untrained), tile {args.tile} overlap 32 batch {args.batch}, cpu",
        "sequential": sequential, "fleet": fleet,
        "throughput_ratio_fleet_over_sequential": round(fleet["scenes_per_hour"] / sequential["scenes_per_hour"], 3),
        "outputs_equal_fraction": {"min": min(agree.values()), "mean": round(statistics.mean(agree.values()), 6)},
        "on_paper": {
            "formula": "scenes_per_hour(N) = N x slots_per_node x 3600 / t_scene (scheduler overhead per task: milliseconds)",
            "t_scene_s": t_scene, "slots_per_node": slots,
            "scenes_per_hour_by_nodes": {str(n): round(n * slots * 3600 / t_scene, 1) for n in NODES},
            "note": "t_scene measured here on CPU slots of this machine; for GPU nodes (one Dask worker per GPU, "
                    "resources GPU=1) put the per-scene time of one GPU in the formula, worker start included "
                    f"(here {fleet['mean_worker_start_s']} s per scene: interpreter, torch import, model load)",
        },
    }  # fmt: skip
    if args.previous and Path(args.previous).exists():  # an earlier run (e.g. the other order) kept beside this one
        prev = json.loads(Path(args.previous).read_text(encoding="utf-8"))
        runs = prev.get("previous_runs", [])
        result["previous_runs"] = runs + [{"order": prev.get("order") or "fleet, sequential",
                                           "sequential_threads": prev["sequential"].get("threads", os.cpu_count())}
                                   | {k: prev.get(k) for k in ("load_avg_end", "throughput_ratio_fleet_over_sequential")}
                                   | {"fleet_wall_s": prev["fleet"]["wall_s"], "sequential_wall_s": prev["sequential"]["wall_s"],
                                      "load_avg_start": prev["machine"]["load_avg_start"]}]  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("throughput_ratio_fleet_over_sequential", "outputs_equal_fraction")}
                     | {"fleet_wall_s": fleet["wall_s"], "sequential_wall_s": sequential["wall_s"]}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
