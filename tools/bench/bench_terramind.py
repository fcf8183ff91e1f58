"""CPU timing of TerraMind token generation, this package vs terratorch 1.2.11, same weights.

Task: one 224 x 224 S2L2A patch → S1GRD tokens (tokens only, no pixel decoding), temperature 1,
top-p 0.8, batch 1, both models filled with the deterministic untrained rule through the official
checkpoint layout (ours through its one loading path, ``models/weights/loading.load_checkpoint_``).
Prints one JSON object.

    .venv/bin/python tools/bench/bench_terramind.py [--variants tiny base] [--repeat 3]
        runs ours here and the reference with /root/.cache/terramind-reference-venv/bin/python
    <python> tools/bench/bench_terramind.py --impl ours|reference ...   (one side only)

Each timing is the median of ``--repeat`` calls after one warm-up call; threads = torch default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE_PYTHON = "/root/.cache/terramind-reference-venv/bin/python"
SCENE = "282D_485L_3_3"


def _patch():
    import numpy as np
    import rasterio
    import torch

    with rasterio.open(REPO / "tests" / "data" / "examples" / "S2L2A" / f"{SCENE}.tif") as src:
        return torch.from_numpy(src.read().astype(np.float32))[None]  # (1, 12, 224, 224)


def _time(call, repeat: int) -> dict:
    call()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "runs_s": times}


def bench_ours(variant: str, repeat: int) -> dict:
    sys.path.insert(0, str(REPO / ".pluginpath"))
    import torch

    from terramind_qgis.models.core.catalogue import get
    from terramind_qgis.models.terramind import TerraMindGeneration
    from terramind_qgis.models.weights.loading import load_checkpoint_, untrained_checkpoint
    from terramind_qgis.models.weights.matching import GENERATION

    with torch.device("meta"):
        model = TerraMindGeneration(get(f"terramind_v1_{variant}").config, ["S2L2A"], ["S1GRD"])
    load_checkpoint_(model, untrained_checkpoint(model, GENERATION), GENERATION)
    model.eval()
    x = {"S2L2A": _patch()}
    seeds = iter(range(10**6))
    result = _time(lambda: model.generate_tokens(x, seed=next(seeds)), repeat)
    return {**result, "threads": torch.get_num_threads()}


def bench_reference(variant: str, repeat: int) -> dict:
    sys.path.insert(0, str(REPO / ".pluginpath"))
    sys.path.insert(0, str(REPO / "tools" / "goldens"))
    import random

    import terramind as golden  # the golden script: patches hf_hub_download and the tokenizers
    import torch

    builder = getattr(golden.reg, f"terramind_v1_{variant}_generate")
    with golden.checkpoint(golden.official_checkpoint(variant)):
        model = builder(modalities=["S2L2A"], output_modalities=["S1GRD"], pretrained=True, standardize=True).eval()
    x = _patch()

    def call():
        random.seed(0)
        with torch.no_grad():
            model({"S2L2A": x.clone()})
        golden.reset_trace()

    return {**_time(call, repeat), "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["ours", "reference"], default=None)
    parser.add_argument("--variants", nargs="+", default=["tiny", "base"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.impl == "ours":
        print(json.dumps({v: bench_ours(v, args.repeat) for v in args.variants}))
        return 0
    if args.impl == "reference":
        print(json.dumps({v: bench_reference(v, args.repeat) for v in args.variants}))
        return 0
    common = ["--variants", *args.variants, "--repeat", str(args.repeat)]
    env = dict(os.environ, PYTHONPATH=str(REPO / ".pluginpath"))
    ours = json.loads(subprocess.run([sys.executable, __file__, "--impl", "ours", *common], check=True,
                                     capture_output=True, text=True).stdout.splitlines()[-1])
    ref = json.loads(subprocess.run([REFERENCE_PYTHON, __file__, "--impl", "reference", *common], check=True,
                                    capture_output=True, text=True, env=env).stdout.splitlines()[-1])
    report = {
        "task": "S2L2A 224x224 -> S1GRD tokens, batch 1, CPU",
        "results": {
            v: {"ours_s": ours[v]["median_s"], "reference_s": ref[v]["median_s"],
                "speedup": ref[v]["median_s"] / ours[v]["median_s"], "threads": ours[v]["threads"]}
            for v in args.variants
        },
        "load_average": os.getloadavg(),
    }  # fmt: skip
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
