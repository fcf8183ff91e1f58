"""Benchmark: torch fp32 vs ONNX Runtime (CPU) per 224x224 tile, with the deviations measured. JSON out.

Run from the repository root with the project venv (a few minutes on 2 cores, peak ~3 GB)::

    nice -n 5 .venv/bin/python tools/bench/bench_onnx.py --out bench-results/bench_onnx.json

Models, all with the deterministic weights of models/weights/untrained.py (the golden tests prove
that our torch models give terratorch's outputs on them):

- ``tiny_sen1floods11`` and ``base_sen1floods11``: the Sen1Floods11 fine-tuning configs (S2L1C +
  S1GRD → 2 classes, UNetDecoder) in the checkpoint layout of tests/goldens/segmentation, loaded
  through ``load_segmentation_model``; timed on raw inputs (standardisation included on both sides);
- ``terramind_v1_tokenizer_s2l2a`` encoder (ViT-B, standardized image → token ids), full size.

For each: export time and file size, session/load time, seconds per tile at batch 1 and 4 for each
thread count of ``--threads`` (default: 1 and every CPU; torch and ORT get the same count; median
of ``--repeats`` after a warm-up, torch and ORT timed alternately so a busy machine slows both
alike), the maximum relative deviation ``max|ort - torch| / max|torch|`` and,
where a terratorch golden exists for the same inputs, ``max|ort - golden| / max|golden|`` (the
segmentation logits of the example scenes; the S2L2A tokenizer's latents and token ids, plus its
2-step decode at 224 from the golden's seeded noise, run through the exported denoiser).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from terramind_qgis.models.core.job import ModelRequest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".pluginpath"))
GOLD = REPO / "tests" / "goldens"
EXAMPLES = REPO / "tests" / "data" / "examples"
SCENES = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0")
SEGMENTATION = ("tiny_sen1floods11", "base_sen1floods11")
TOKENIZER = "terramind_v1_tokenizer_s2l2a"


def rel(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours.astype(np.float64) - ref).max() / max(float(np.abs(ref).max()), 1e-30))


def median_time(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def timed_pair(torch_fn: Callable[[], object], ort_fn: Callable[[], object], repeats: int, batch: int) -> dict:
    torch_fn(), ort_fn()  # warm-up
    t_times, o_times = [], []
    for _ in range(repeats):  # alternate
        t_times += median_time(torch_fn, 1)
        o_times += median_time(ort_fn, 1)
    t, o = statistics.median(t_times) / batch, statistics.median(o_times) / batch
    return {"batch": batch, "torch_s_per_tile": round(t, 4), "ort_s_per_tile": round(o, 4), "speedup": round(t / o, 2)}


def timings(torch_fn: Callable[[int], Callable[[], object]], ort_fn: Callable[[int, int], Callable[[], object]],
            repeats: int, threads: list[int]) -> list[dict]:
    """``timed_pair`` at batch 1 and 4 for every thread count (``ort_fn(threads, batch)`` opens its own session)."""
    out = []
    for n in threads:
        torch.set_num_threads(n)
        for batch in (1, 4):
            out.append({"threads": n, **timed_pair(torch_fn(batch), ort_fn(n, batch), repeats, batch)})
    return out


def segmentation_case(case: str, folder: Path, repeats: int, threads: list[int]) -> dict:
    import rasterio

    from terramind_qgis.models.backends.onnx_export import export_segmentation
    from terramind_qgis.models.backends.onnx_runtime import OnnxSegmentationModel
    from terramind_qgis.models.segmentation.checkpoint import load_segmentation_model
    from terramind_qgis.models.weights.untrained import deterministic_state_dict

    cases = json.loads((GOLD / "segmentation" / "goldens.json").read_text())["cases"]
    layout = json.loads((GOLD / "segmentation" / cases[case]["layout"]).read_text())
    tensors = deterministic_state_dict({k: (tuple(s), getattr(torch, d)) for k, (s, d) in layout["tensors"].items()})
    torch.save({k: tensors[layout["aliases"].get(k, k)] for k in tensors}, folder / f"{case}.pt")
    del tensors
    model = load_segmentation_model(folder / f"{case}.pt", GOLD / "segmentation" / cases[case]["config"])
    start = time.perf_counter()
    path = export_segmentation(model, folder / f"{case}.onnx", tile_size=224)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    onnx_model = OnnxSegmentationModel(path, device="cpu", threads=threads[-1])
    session_s = time.perf_counter() - start
    raw = {}
    for spec in model.config.inputs:
        folder_name = "S1RTC" if spec.modality == "S1GRD" else spec.modality
        stack = []
        for scene in SCENES:
            with rasterio.open(EXAMPLES / folder_name / f"{scene}.tif") as src:
                stack.append(src.read().astype(np.float32))
        raw[spec.name] = np.stack(stack)  # (4, C, 224, 224)
    raw_t = {k: torch.from_numpy(v) for k, v in raw.items()}
    with torch.inference_mode():
        ref_torch = model(raw_t).numpy()
    ours = onnx_model(raw)
    golden = np.load(GOLD / "segmentation" / f"{case}.npz")["logits"]
    n = golden.shape[0]
    out = {"model": case, "graph": "segmentation", "onnx_mb": round(path.stat().st_size / 2**20, 1),
           "export_s": round(export_s, 2), "ort_session_s": round(session_s, 2),
           "max_rel_dev_ort_vs_torch": rel(ours, ref_torch), "max_rel_dev_ort_vs_golden": rel(ours[:n], golden),
           "max_rel_dev_torch_vs_golden": rel(ref_torch[:n], golden),
           "argmax_agreement_ort_vs_torch": float((ours.argmax(1) == ref_torch.argmax(1)).mean())}  # fmt: skip

    def torch_fn(batch: int) -> Callable[[], object]:
        sub = {k: v[:batch] for k, v in raw_t.items()}

        def run() -> object:
            with torch.inference_mode():
                return model(sub)

        return run

    def ort_fn(n: int, batch: int) -> Callable[[], object]:
        session, sub = OnnxSegmentationModel(path, device="cpu", threads=n), {k: v[:batch] for k, v in raw.items()}
        return lambda: session(sub)

    out["timings"] = timings(torch_fn, ort_fn, repeats, threads)
    return out


def tokenizer_case(folder: Path, repeats: int, threads: list[int]) -> dict:
    import rasterio

    from terramind_qgis.models import build
    from terramind_qgis.models.backends.onnx_export import export_tokenizer
    from terramind_qgis.models.backends.onnx_runtime import OnnxTokenizer

    tok = build.load_tokenizer(ModelRequest(TOKENIZER, untrained=True))
    start = time.perf_counter()
    enc_path, dec_path = export_tokenizer(tok, folder, image_size=224)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    onnx_tok = OnnxTokenizer(enc_path, device="cpu", threads=threads[-1])
    session_s = time.perf_counter() - start
    raw = []
    for scene in SCENES:
        with rasterio.open(EXAMPLES / "S2L2A" / f"{scene}.tif") as src:
            raw.append(src.read().astype(np.float32))
    x = onnx_tok.standardize(np.stack(raw))  # (4, 12, 224, 224)
    xt = torch.from_numpy(x)
    golden = np.load(GOLD / "tokenizers" / "s2l2a.npz")
    meta = json.loads((GOLD / "tokenizers" / "goldens.json").read_text())
    latents, (_quant, tokens) = onnx_tok.encode_latents(x), onnx_tok.encode(x)
    with torch.inference_mode():
        ref_latents = tok.encode_latents(xt).numpy()
        ref_tokens = tok.tokenize(xt).numpy()
        seed = meta["tokenizers"][TOKENIZER]["decode_seed"]
        noise = torch.randn((1, 12, 224, 224), generator=torch.Generator().manual_seed(seed))
        golden_tokens = torch.from_numpy(golden["tokens"][:1])
        ref_decode = tok.decode_tokens(golden_tokens, timesteps=meta["decode_timesteps"], noise=noise).numpy()
    decode = onnx_tok.decode_tokens(golden["tokens"][:1], timesteps=meta["decode_timesteps"], noise=noise.numpy())
    out = {"model": TOKENIZER, "graph": "tokenizer_encoder (+ divae_denoiser for the decode check)",
           "onnx_mb": round((enc_path.stat().st_size + dec_path.stat().st_size) / 2**20, 1),
           "export_s": round(export_s, 2), "ort_session_s": round(session_s, 2),
           "max_rel_dev_ort_vs_torch": {"latents": rel(latents, ref_latents), "decode_2_steps": rel(decode, ref_decode)},
           "token_agreement_ort_vs_torch": float((tokens == ref_tokens).mean()),
           "max_rel_dev_ort_vs_golden": {"latents": rel(latents, golden["latents"]),
                                         "decode_2_steps": rel(decode, golden["decode"])},
           "token_agreement_ort_vs_golden": float((tokens == golden["tokens"]).mean())}  # fmt: skip

    def torch_fn(batch: int) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return tok.tokenize(xt[:batch])

        return run

    def ort_fn(n: int, batch: int) -> Callable[[], object]:
        session = OnnxTokenizer(enc_path, device="cpu", threads=n)
        return lambda: session.tokenize(x[:batch])

    out["timings"] = timings(torch_fn, ort_fn, repeats, threads)
    return out


def main() -> None:
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="JSON file to write (default: stdout only)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, len(os.sched_getaffinity(0))}))
    parser.add_argument("--only", choices=["tiny", "base", "tokenizer"], action="append")
    args = parser.parse_args()
    chosen = args.only or ["tiny", "base", "tokenizer"]
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "threads": args.threads, "load_average_at_start": os.getloadavg()},
              "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                           "numpy": np.__version__, "python": platform.python_version()},
              "tile": 224, "repeats": args.repeats, "results": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp:
        for size, case in zip(("tiny", "base"), SEGMENTATION):
            if size in chosen:
                result["results"].append(segmentation_case(case, Path(tmp), args.repeats, args.threads))
        if "tokenizer" in chosen:
            result["results"].append(tokenizer_case(Path(tmp), args.repeats, args.threads))
    result["machine"]["load_average_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
