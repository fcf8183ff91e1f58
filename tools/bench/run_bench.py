"""``make bench``: every benchmark of the project, ours next to terratorch on the same weights.

Runs, one after another (never in parallel: the timings share the CPU), from the repository root:

1. ``bench_tokenizers.py`` — S2L2A tokenizer per 224² patch: tokenize, one DDIM step, 10-step
   reconstruction;
2. ``bench_terramind.py`` — tiny and base token generation per 224² patch (S2L2A → S1GRD);
3. ``bench_tiled.py`` — tiled generation over 1024² and 4096² rasters (crop 224, stride 192 /
   overlap 32) with the worker's peak RSS, next to terratorch's ``tiled_inference``;
4. ``bench_segmentation.py`` — fine-tuned Sen1Floods11 segmentation throughput (tiny, base; 1024²);
5. ``bench_onnx.py`` — torch fp32 vs ONNX Runtime per 224² tile (segmentation tiny/base, S2L2A
   tokenizer encoder), with the deviation measured;
6. ``bench_fleet.py`` — 8 scenes of 1024² on the fleet's LocalCluster (2 workers x 1 thread) against
   the same scenes one after another: throughput, peak RSS per worker, on-paper N-node throughput;
7. ``bench_embeddings.py`` — embedding extraction over a 4096² raster, tiny and base, CPU: seconds and
   the worker's peak RSS.
8. ``bench_temporal.py`` — IBM/ESA's multi-temporal flood model (ImpactMesh, TerraMind base) over
   1024² x 4 dates x 3 modalities, the worker vs terratorch's ``tiled_inference`` (same weights, same
   tile grid): wall time, peak RSS, logit deviation.
9. ``bench_generation.py`` — the diffusion decoders at the hardware limit: the 3x3-conv peak per
   precision at the UNet's shapes, the UNet's GFLOP/s per precision (and as a fraction of that peak),
   tiled generation S2L2A → S1GRD + DEM (1024², 10 DDIM steps, batch 4) for the worker fp32/bf16 next to
   terratorch's default, the bf16 deviation, the seconds per 10980² Sentinel-2 tile, and peak RSS at
   two raster sizes.
10. ``bench_training.py`` — fine-tuning seconds per epoch and peak RSS, tiny and base (frozen, with and
    without the feature cache), next to ``terratorch fit`` with the same recipe (one epoch, same batch).

Each writes ``bench-results/<name>.json``; this script adds ``bench-results/environment.json`` (CPU,
threads, versions) and ``bench-results/SUMMARY.md``. The reference side needs the terratorch venv
(``tools/reference/setup-terratorch.sh``, or ``REF_PY``); without it only our side is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_REF_PY = Path.home() / ".cache" / "terramind-reference-venv" / "bin" / "python"


def _run(name: str, argv: list[str], out: Path, env: dict[str, str], stdout_json: bool) -> dict:
    target = out / f"{name}.json"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, text=True, capture_output=True)
    wall = round(time.monotonic() - t0, 1)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        return {"name": name, "error": f"exit {proc.returncode}", "wall_s": wall}
    if stdout_json:
        target.write_text(proc.stdout, encoding="utf-8")
    return {"name": name, "wall_s": wall, "file": str(target.relative_to(REPO))}


def environment() -> dict:
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench-results")
    p.add_argument("--only", nargs="*", default=None,
                   help="tokenizers terramind tiled segmentation onnx fleet embeddings temporal generation training")
    p.add_argument("--tiled-sizes", nargs="+", default=["1024", "4096"])
    args = p.parse_args()
    out = (REPO / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO / ".pluginpath"))
    ref = os.environ.get("REF_PY") or str(DEFAULT_REF_PY)
    env["REF_PY"] = ref
    no_ref = [] if Path(ref).exists() else ["--no-reference"]
    runs = {
        "tokenizers": (["tools/bench/bench_tokenizers.py", "--reference-python", ref]
                       + (["--impl", "ours"] if no_ref else []) + ["--bf16"], True),
        "terramind": (["tools/bench/bench_terramind.py"] + (["--impl", "ours"] if no_ref else []), True),
        "tiled": (["tools/bench/bench_tiled.py", "--sizes", *args.tiled_sizes,
                   "--out", str(out / "tiled.json"), *no_ref], False),
        "segmentation": (["tools/bench/bench_segmentation.py", "--out", str(out / "segmentation.json"), *no_ref],
                         False),
        "onnx": (["tools/bench/bench_onnx.py", "--out", str(out / "onnx.json")], False),
        "fleet": (["tools/bench/bench_fleet.py", "--out", str(out / "fleet.json")], False),
        "embeddings": (["tools/bench/bench_embeddings.py", "--out", str(out / "embeddings.json")], False),
        "temporal": (["tools/bench/bench_temporal.py", "--out", str(out / "temporal.json"), *no_ref], False),
        "generation": (["tools/bench/bench_generation.py", "--out", str(out / "generation.json"), *no_ref], False),
        "training": (["tools/bench/bench_training.py", "--out", str(out / "training.json"),
                      *(["--no-reference"] if no_ref else [])], False),
    }
    (out / "environment.json").write_text(json.dumps(environment(), indent=1), encoding="utf-8")
    done = []
    for name, (argv, stdout_json) in runs.items():
        if args.only and name not in args.only:
            continue
        print(f"bench: {name} ...", flush=True)
        done.append(_run(name, argv, out, env, stdout_json))
        print(f"bench: {name}: {done[-1]}", flush=True)
    summary = ["# Benchmark results", "", f"Environment: `{json.dumps(environment())}`", ""]
    ran = {run["name"]: run for run in done}
    for name in runs:  # every benchmark with a result file; those not run now (--only) keep their earlier one
        run = ran.get(name)
        file = out / f"{name}.json"
        if run is None and not file.exists():
            continue
        when = f"{run['wall_s']} s" if run else "from an earlier run: its own machine and load fields say where"
        summary.append(f"## {name} ({when})")
        if run is not None and "error" in run:
            summary.append(f"failed: {run['error']}")
        else:
            summary += ["```json", file.read_text(encoding="utf-8").strip(), "```"]
        summary.append("")
    (out / "SUMMARY.md").write_text("\n".join(summary), encoding="utf-8")
    return 1 if any("error" in r for r in done) else 0


if __name__ == "__main__":
    sys.exit(main())
