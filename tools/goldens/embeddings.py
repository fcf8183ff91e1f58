"""Golden features for the embedding rasters (task ``embed``), from terratorch 1.2.11 (a dev tool).

Run with the reference venv, from the repository root::

    PYTHONPATH=.pluginpath nice -n 5 /root/.cache/terramind-reference-venv/bin/python tools/goldens/embeddings.py

(about a minute on 2 cores). It reuses ``tools/goldens/terramind.py``: the official tiny checkpoint
layout filled by the untrained rule (models/weights/untrained.py), loaded by terratorch's own
registry through a redirected ``hf_hub_download`` — the weights the worker builds for
``terramind_v1_tiny`` with ``untrained: true``. Cases (``tests/goldens/embeddings/``):

- ``patch_mean``: one 224 x 224 patch (scene 282D_485L_3_3), S2L2A + S1GRD (the S1RTC patch stands
  in), ``merge_method="mean"``, the last layer: features ``(196, 192)``;
- ``patch_concat_layers``: the same inputs, ``merge_method="concat"``, layers 9-12 averaged: ``(196, 384)``;
- ``patch_bands``: S2L2A with the band subset BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2 (terratorch's
  ``bands``), ``mean``, layer 6: ``(196, 192)``;
- ``tiles_2x2``: the 2 x 2 mosaic of the four S2L2A patches (``tests/unit/worker/worker_fixtures.py``
  ``make_mosaic``), its top-left 352 x 352 pixels, cut into the 2 x 2 tiles the worker plans for
  tile size 224 and overlap 96 (pixel origins 0 and 128 on each axis): each tile's last-layer
  features, ``(4, 196, 192)`` in row-major tile order.

Features are terratorch's backbone output for inputs standardised with the v1 statistics, as the
worker standardises them; the layers' token order is row-major over the patch grid.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import terramind as tg  # noqa: E402  (the reference set-up: checkpoints, hub redirect, data readers)

OUT = tg.REPO / "tests" / "goldens" / "embeddings"
SCENE = tg.SCENES[0]
MOSAIC_SCENES = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0")
BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
TILES = {"tile_size": 224, "overlap": 96, "crop": 352, "origins": [0, 128]}


def features(modalities: list[str], inputs: dict, merge: str, layers: list[int], bands=None) -> np.ndarray:
    """terratorch ``terramind_v1_tiny`` backbone features, the given 1-based layers averaged: (B, N, D)."""
    with tg.checkpoint(tg.official_checkpoint("tiny")):
        model = tg.reg.terramind_v1_tiny(modalities=modalities, pretrained=True, merge_method=merge, bands=bands)
    model.eval()
    with torch.no_grad():
        out = model({k: v.clone() for k, v in inputs.items()})
    chosen = [out[n - 1] for n in layers]
    f = chosen[0] if len(chosen) == 1 else torch.stack(chosen).mean(dim=0)
    return f.float().numpy()


def mosaic_tiles() -> torch.Tensor:
    """The four 224 x 224 tiles of the 352 x 352 crop of the S2L2A mosaic, raw ``(4, 12, 224, 224)``."""
    patches = [tg.read("S2L2A", scenes=(s,))[0] for s in MOSAIC_SCENES]  # (12, 224, 224) each
    mosaic = torch.cat([torch.cat(patches[:2], dim=2), torch.cat(patches[2:], dim=2)], dim=1)  # (12, 448, 448)
    crop, size = TILES["crop"], TILES["tile_size"]
    mosaic = mosaic[:, :crop, :crop]
    return torch.stack([mosaic[:, y : y + size, x : x + size] for y in TILES["origins"] for x in TILES["origins"]])


def main() -> int:
    s2 = tg.read("S2L2A", scenes=(SCENE,))
    grd = tg.read("S1RTC", scenes=(SCENE,))
    pair = {"S2L2A": tg.standardized(s2, "untok_sen2l2a@224"), "S1GRD": tg.standardized(grd, "untok_sen1grd@224")}
    idx = [tg.reg.PRETRAINED_BANDS["untok_sen2l2a@224"].index(b) for b in BANDS]
    arrays = {
        "patch_mean": features(["S2L2A", "S1GRD"], pair, "mean", [12])[0],
        "patch_concat_layers": features(["S2L2A", "S1GRD"], pair, "concat", [9, 10, 11, 12])[0],
        "patch_bands": features(["S2L2A"], {"S2L2A": tg.standardized(s2[:, idx], "untok_sen2l2a@224", idx)}, "mean", [6],
                                bands={"S2L2A": BANDS})[0],
        "tiles_2x2": features(["S2L2A"], {"S2L2A": tg.standardized(mosaic_tiles(), "untok_sen2l2a@224")}, "mean", [12]),
    }
    cases = {
        "patch_mean": {"scene": SCENE, "inputs": {"S2L2A": "S2L2A", "S1GRD": "S1RTC"}, "merge": "mean", "layers": [12]},
        "patch_concat_layers": {"scene": SCENE, "inputs": {"S2L2A": "S2L2A", "S1GRD": "S1RTC"}, "merge": "concat",
                                "layers": [9, 10, 11, 12]},
        "patch_bands": {"scene": SCENE, "inputs": {"S2L2A": "S2L2A"}, "merge": "mean", "layers": [6],
                        "bands": {"S2L2A": BANDS}, "band_numbers": [i + 1 for i in idx]},
        "tiles_2x2": {"mosaic": list(MOSAIC_SCENES), "inputs": {"S2L2A": "S2L2A"}, "merge": "mean", "layers": [12],
                      **TILES},
        "model": "terramind_v1_tiny (untrained rule, official layout)", "torch": torch.__version__,
    }  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "tiny.npz", **{k: v.astype(np.float32) for k, v in arrays.items()})
    (OUT / "cases.json").write_text(json.dumps(cases, indent=1), encoding="utf-8")
    for k, v in arrays.items():
        print(f"{k}: {v.shape}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
