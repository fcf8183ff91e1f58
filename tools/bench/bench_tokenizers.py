"""CPU timings of the S2L2A tokenizer on one 224x224 patch: ours vs the reference, same weights. Prints JSON.

    PYTHONPATH=.pluginpath .venv/bin/python tools/bench/bench_tokenizers.py             # ours vs reference
    PYTHONPATH=.pluginpath .venv/bin/python tools/bench/bench_tokenizers.py --impl ours --bf16

Both implementations get the deterministic weights of models/weights/untrained.py and scene
282D_485L_3_3 of tests/data/examples/S2L2A standardized with the v1 statistics. Operations:
``tokenize``; ``ddim_step`` = a 1-step decode from tokens (one UNet evaluation, one scheduler step
and the noise draw); ``reconstruct_10`` = encode plus a 10-step decode. Each repeat times every
operation of every implementation in turn (interleaved, so a busy machine slows all alike); the
JSON gives the minimum and the median over ``--repeats`` after one warm-up.

The reference (terratorch) lives in its own venv: when this interpreter cannot import it, the
script re-runs itself with ``--reference-python`` (default ``$REF_PY`` or
/root/.cache/terramind-reference-venv/bin/python), where both implementations are importable.
With ``--bf16`` ours is also timed after ``set_compute_dtype(torch.bfloat16)`` and its deviation
from float32 is reported (token agreement; max/mean absolute difference of the 10-step
reconstruction, in standardized units).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
PATCH = REPO / "tests" / "data" / "examples" / "S2L2A" / "282D_485L_3_3.tif"
MODEL_ID = "terramind_v1_tokenizer_s2l2a"
DEFAULT_REF_PY = "/root/.cache/terramind-reference-venv/bin/python"


def patch() -> torch.Tensor:
    import rasterio

    from terramind_qgis.models.core.modalities import get_modality

    with rasterio.open(PATCH) as src:
        raw = src.read().astype(np.float64)[None]  # (1, 12, 224, 224)
    s2 = get_modality("S2L2A")
    mean, std = np.asarray(s2.mean)[None, :, None, None], np.asarray(s2.std)[None, :, None, None]
    return torch.from_numpy(((raw - mean) / std).astype(np.float32))


def seeded() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def ours(state_dict: dict, dtype: torch.dtype | None) -> dict[str, Callable[[torch.Tensor], object]]:
    from terramind_qgis.models.core.catalogue import get
    from terramind_qgis.models.tokenizers import build_tokenizer
    from terramind_qgis.models.weights.loading import load_checkpoint_
    from terramind_qgis.models.weights.matching import TOKENIZER
    from terramind_qgis.models.weights.reading import TensorDictCheckpoint

    with torch.device("meta"):
        tok = build_tokenizer(get(MODEL_ID).config)
    # the product's loading path; shares the tensors (``set_compute_dtype`` makes new ones)
    load_checkpoint_(tok, TensorDictCheckpoint(state_dict), TOKENIZER)
    tok.eval()
    if dtype is not None:
        tok.set_compute_dtype(dtype)
    return {
        "tokenize": tok.tokenize,
        "ddim_step": lambda x: tok.decode_tokens(tok.tokenize(x), timesteps=1, generator=seeded()),
        "reconstruct_10": lambda x: tok.reconstruct(x, timesteps=10, generator=seeded()),
    }


def reference(state_dict: dict) -> dict[str, Callable[[torch.Tensor], object]]:
    import terratorch  # noqa: F401

    torch.set_float32_matmul_precision("highest")  # import terratorch set it to "medium"
    from terratorch.models.backbones.terramind.tokenizer import tokenizer_register

    model = tokenizer_register.terramind_v1_tokenizer_s2l2a(pretrained=False).eval()
    model.load_state_dict(state_dict, strict=True)
    return {
        "tokenize": model.tokenize,
        "ddim_step": lambda x: model.decode_tokens(model.tokenize(x), timesteps=1, generator=seeded(), verbose=False),
        "reconstruct_10": lambda x: model(x, timesteps=10, generator=seeded(), verbose=False),
    }


def run(impls: list[str], repeats: int, bf16: bool) -> dict:
    from terramind_qgis.models.weights.untrained import deterministic_state_dict

    with torch.device("meta"):
        from terramind_qgis.models.core.catalogue import get
        from terramind_qgis.models.tokenizers import build_tokenizer

        layout = build_tokenizer(get(MODEL_ID).config).state_dict()
    state_dict = deterministic_state_dict({k: (tuple(v.shape), v.dtype) for k, v in layout.items()})
    models: dict[str, dict] = {}
    if "ours" in impls:
        models["ours_fp32"] = ours(state_dict, None)
        if bf16:
            models["ours_bf16"] = ours(state_dict, torch.bfloat16)
    if "reference" in impls:
        models["reference"] = reference(state_dict)
    del state_dict
    x = patch()
    times: dict[str, dict[str, list[float]]] = {name: {} for name in models}
    with torch.no_grad():
        for repeat in range(repeats + 1):  # repeat 0 is the warm-up
            for op in ("tokenize", "ddim_step", "reconstruct_10"):
                for name, fns in models.items():
                    start = time.perf_counter()
                    fns[op](x)
                    if repeat:
                        times[name].setdefault(op, []).append(time.perf_counter() - start)
        results: dict = {
            name: {op: {"min": round(min(t), 3), "median": round(statistics.median(t), 3)} for op, t in ops.items()}
            for name, ops in times.items()
        }
        if bf16 and "ours_fp32" in models:
            t32, t16 = models["ours_fp32"]["tokenize"](x), models["ours_bf16"]["tokenize"](x)
            diff = (models["ours_bf16"]["reconstruct_10"](x) - models["ours_fp32"]["reconstruct_10"](x)).abs()
            results["ours_bf16"]["deviation_from_fp32"] = {
                "token_agreement": round(float((t16 == t32).float().mean()), 4),
                "reconstruct_10_max_abs": round(float(diff.max()), 4),
                "reconstruct_10_mean_abs": round(float(diff.mean()), 5),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("ours", "reference", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also time ours in bfloat16")
    parser.add_argument("--reference-python", default=os.environ.get("REF_PY", DEFAULT_REF_PY))
    args = parser.parse_args()
    impls = ["ours", "reference"] if args.impl == "both" else [args.impl]
    if "reference" in impls and importlib.util.find_spec("terratorch") is None:
        paths = [str(REPO / ".pluginpath"), os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
        cmd = [args.reference_python, __file__, *sys.argv[1:]]
        sys.exit(subprocess.run(cmd, env=env, check=False).returncode)
    report = {"model": MODEL_ID, "patch": f"{PATCH.parent.name}/{PATCH.name}", "torch": torch.__version__,
              "threads": torch.get_num_threads(), "python": sys.executable, "repeats": args.repeats,
              "unit": "seconds per 224x224 patch"}  # fmt: skip
    report.update(run(impls, args.repeats, args.bf16))
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
