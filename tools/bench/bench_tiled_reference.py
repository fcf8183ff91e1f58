"""Reference side of ``bench_tiled.py``: terratorch 1.2.11's ``tiled_inference`` on a whole raster.

Run with the reference venv (a dev tool; product code never imports terratorch)::

    /root/.cache/terramind-reference-venv/bin/python tools/bench/bench_tiled_reference.py \
        --input s2.tif --model TerraMind_v1_tiny.pt --tokenizer TerraMind_Tokenizer_LULC.pt --out lulc.tif

Builds ``terramind_v1_tiny_generate`` (S2L2A -> LULC, standardize=True, temps=0: greedy) through
terratorch's registry with ``pretrained=True``; ``hf_hub_download`` is redirected to the given
files, so terratorch's own key mapping and strict loading are used. Reads the WHOLE raster into
memory (``tiled_inference`` needs one tensor), runs ``tiled_inference(crop=224, stride=192,
batch_size=B)`` (delta 8, reflect padding: terratorch's defaults), writes the argmax as a GeoTIFF
and prints one JSON line with the timings.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import rasterio
import terratorch  # noqa: F401  (sets float32 matmul precision to "medium")
import torch

torch.set_float32_matmul_precision("highest")

from terratorch.models.backbones.terramind.model import terramind_register as model_register  # noqa: E402
from terratorch.models.backbones.terramind.tokenizer import tokenizer_register  # noqa: E402
from terratorch.tasks.tiled_inference import tiled_inference  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--stride", type=int, default=192)
    args = p.parse_args()
    files = {"TerraMind_v1_tiny.pt": args.model, "TerraMind_Tokenizer_LULC.pt": args.tokenizer}

    def local_download(repo_id: str, filename: str, **_: object) -> str:
        return files[filename]

    model_register.hf_hub_download = local_download
    tokenizer_register.hf_hub_download = local_download
    t0 = time.monotonic()
    model = model_register.terramind_v1_tiny_generate(
        modalities=["S2L2A"], output_modalities=["LULC"], pretrained=True, standardize=True, temps=0.0
    ).eval()
    loaded = time.monotonic()
    with rasterio.open(args.input) as src:
        x = torch.from_numpy(src.read().astype(np.float32))[None]  # (1, 12, H, W)
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    read = time.monotonic()
    chips = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        chips.append(batch.shape[0])
        return model(batch)["LULC"]  # (B, 10, crop, crop) logits

    with torch.no_grad():
        logits = tiled_inference(forward, x, crop=args.crop, stride=args.stride, batch_size=args.batch)  # (1, 10, H, W)
    done = time.monotonic()
    classes = logits[0].argmax(0).to(torch.uint8).numpy()
    with rasterio.open(args.out, "w", **profile) as dst:
        dst.write(classes[None])
    print(json.dumps({"load_seconds": round(loaded - t0, 2), "read_seconds": round(read - loaded, 2),
                      "inference_seconds": round(done - read, 2), "chips": sum(chips), "calls": len(chips)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
