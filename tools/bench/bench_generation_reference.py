"""Reference side of ``bench_generation.py``: terratorch 1.2.11 any-to-any generation with ``tiled_inference``.

Run with the reference venv (a dev tool; product code never imports terratorch)::

    /root/.cache/terramind-reference-venv/bin/python tools/bench/bench_generation_reference.py \
        --input s2.tif --model TerraMind_v1_tiny.pt --tokenizer S1GRD=TerraMind_Tokenizer_S1GRD.pt \
        --outputs S1GRD --timesteps 10 --out s1.tif

Builds ``terramind_v1_tiny_generate`` (S2L2A -> outputs, ``standardize=True``) through terratorch's
registry with ``pretrained=True`` (``hf_hub_download`` redirected to the given files, so terratorch's
own key mapping and strict loading are used), reads the WHOLE raster (``tiled_inference`` needs one
tensor), runs ``tiled_inference(crop=224, stride=192, batch_size=B)`` (delta 8, reflect padding:
terratorch's defaults) on the outputs concatenated along the channels, writes them as one float32
GeoTIFF and prints one JSON line with the timings. ``--matmul highest`` sets
``torch.set_float32_matmul_precision("highest")``; by default terratorch's own setting stays (its
import sets "medium", which on the CPU changes nothing measurable).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import rasterio
import terratorch  # noqa: F401  (sets float32 matmul precision to "medium")
import torch
from terratorch.models.backbones.terramind.model import terramind_register as model_register
from terratorch.models.backbones.terramind.tokenizer import tokenizer_register
from terratorch.tasks.tiled_inference import tiled_inference

TOKENIZER_FILES = {"S1GRD": "TerraMind_Tokenizer_S1GRD.pt", "DEM": "TerraMind_Tokenizer_DEM.pt",
                   "S1RTC": "TerraMind_Tokenizer_S1RTC.pt", "NDVI": "TerraMind_Tokenizer_NDVI.pt"}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--tokenizer", nargs="+", required=True, help="MODALITY=path ...")
    p.add_argument("--outputs", nargs="+", required=True)
    p.add_argument("--timesteps", type=int, default=10)
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--stride", type=int, default=192)
    p.add_argument("--matmul", choices=["default", "highest"], default="default")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.matmul == "highest":
        torch.set_float32_matmul_precision("highest")
    files = {"TerraMind_v1_tiny.pt": args.model}
    for item in args.tokenizer:
        modality, _, path = item.partition("=")
        files[TOKENIZER_FILES[modality]] = path

    def local_download(repo_id: str, filename: str, **_: object) -> str:
        return files[filename]

    model_register.hf_hub_download = local_download
    tokenizer_register.hf_hub_download = local_download
    torch.manual_seed(args.seed)
    t0 = time.monotonic()
    model = model_register.terramind_v1_tiny_generate(
        modalities=["S2L2A"], output_modalities=list(args.outputs), pretrained=True, standardize=True,
        timesteps=args.timesteps,
    ).eval()
    loaded = time.monotonic()
    with rasterio.open(args.input) as src:
        x = torch.from_numpy(src.read().astype(np.float32))[None]  # (1, 12, H, W)
        profile = dict(driver="GTiff", width=src.width, height=src.height, dtype="float32", crs=src.crs,
                       transform=src.transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    read = time.monotonic()
    chips = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        chips.append(batch.shape[0])
        out = model(batch, timesteps=args.timesteps)
        return torch.cat([out[m] for m in args.outputs], 1)  # (B, sum C, crop, crop)

    with torch.no_grad():
        y = tiled_inference(forward, x, crop=args.crop, stride=args.stride, batch_size=args.batch)  # (1, C, H, W)
    done = time.monotonic()
    arr = y[0].float().numpy()
    with rasterio.open(args.out, "w", count=arr.shape[0], **profile) as dst:
        dst.write(arr)
    print(json.dumps({"load_seconds": round(loaded - t0, 2), "read_seconds": round(read - loaded, 2),
                      "inference_seconds": round(done - read, 2), "chips": sum(chips), "calls": len(chips),
                      "matmul_precision": torch.get_float32_matmul_precision()}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
