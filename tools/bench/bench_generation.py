"""Benchmark: generation with the diffusion decoders at the hardware limit (CPU), next to terratorch.

Run from the repository root with the project venv (``make bench`` runs it as ``generation``)::

    nice -n 5 .venv/bin/python tools/bench/bench_generation.py --out bench-results/generation.json

What it measures (one run; every side-by-side part interleaved, so a shared CPU slows all alike —
quote the ratios, not the seconds):

(a) ``conv_peak``: the 3x3 convolutions of the S1GRD DiVAE's UNet (terratorch ``PatchedUNetCondCat``:
    patch 4, 256 channels, multipliers 1-2-2-2) on one ``--unet-batch`` of 224² tiles, every conv
    shape with its multiplicity, timed alone, per precision and layout: fp32 NCHW, fp32
    channels-last, bf16 NCHW, bf16 channels-last. ``ceiling_gflops`` = their FLOPs / their time
    (the most the UNet could reach if everything but its 3x3 convs were free); ``best_shape_gflops``
    = the fastest single shape.
(b) ``unet``: one UNet evaluation (the same batch) per mode: fp32 NCHW (the default), fp32
    channels-last (model and activations), bf16 autocast with per-call weight casts, bf16 with the
    weights cast once (``prepare_decoders``: what the worker does), and the latter channels-last;
    GFLOP/s (FLOPs counted by ``torch.utils.flop_counter``) and the fraction of the conv ceiling of
    the same layout and of the best layout of the same precision. (a) and (b) are timed in turn in
    every one of ``--unet-repeats`` rounds (each conv set, then the UNet modes that use it), so the
    fractions compare figures taken under the same load; each figure is the best round.
(c) ``end_to_end``: tiled generation S2L2A → ``--outputs`` on a ``--size``² raster (the four real
    example patches as a mosaic), ``terramind_v1_tiny``, ``--timesteps`` DDIM steps, batch 4, tile
    224 / overlap 32, the same deterministic untrained weights: the worker in fp32 and bf16, and
    terratorch 1.2.11 ``tiled_inference`` (crop 224, stride 192: the same 32 px overlap) with its
    default precision, each a separate process (wall time, peak RSS), run ``--repeats`` times in
    turn. Also: the bf16 deviation from fp32 (MAE, max abs error per band in output units: dB for
    S1, m for DEM), and the seconds per 10980² Sentinel-2 tile extrapolated from the worker's
    measured seconds per tile (the same plan gives 3364 tiles).
(c') ``end_to_end_same_blend_width``: ours again at ``OVERLAP`` 16 (the 16 px over which terratorch's
    chips blend, with fewer tiles), fp32 and bf16, against the reference of (c).
(d) ``peak_rss``: the worker (``--rss-precision``, 1 DDIM step) at two raster sizes (``--rss-sizes``,
    1024² and 4096² by default), peak RSS (bf16 by default so that the 4096² run fits a bench session;
    the strips and buffers that could grow with the raster do not depend on the precision).
(e) ``winograd_trial``: Winograd F(2,3) against the direct 3x3 convolution on the UNet's dominant
    shapes, per precision, with errors against float64 (``winograd_trial.py``): measured, not used.
(f) ``onnxruntime_unet``: the UNet exported as the ONNX backend exports it, on onnxruntime's CPU
    provider, against torch fp32 on the same batch (``onnx_unet_trial.py``): measured, not used.

Defaults are the issue's target configuration: 1024², S1GRD + DEM, 10 DDIM steps, batch 4.

The reference side needs the terratorch venv (``tools/reference/setup-terratorch.sh``); without it
(or with ``--no-reference``) only our side is timed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from benchlib import PLUGIN_PATH, REFERENCE_PYTHON, REPO, machine, measure, run_worker, write_mosaic

sys.path.insert(0, str(PLUGIN_PATH))
MODEL, INPUTS = "terramind_v1_tiny", ["S2L2A"]
TOKENIZERS = {"S1GRD": ("terramind_v1_tokenizer_s1grd", "TerraMind_Tokenizer_S1GRD.pt"),
              "DEM": ("terramind_v1_tokenizer_dem", "TerraMind_Tokenizer_DEM.pt")}  # fmt: skip
S2_TILE = 10980
TILE, OVERLAP = 224, 32


# -- (a) and (b): the UNet and its convolutions ---------------------------------------------------


def build_unet():
    import torch

    from terramind_qgis.models.core import catalogue
    from terramind_qgis.models.tokenizers import build_tokenizer
    from terramind_qgis.models.weights.untrained import fill_module_

    torch.manual_seed(0)
    return fill_module_(build_tokenizer(catalogue.get(TOKENIZERS["S1GRD"][0]).config)).eval()


def conv_shapes(unet, sample, cond) -> Counter:
    """``(C_in, C_out, H, W, stride) -> count`` of the UNet's 3x3 convolutions on ``sample``."""
    import torch

    shapes: Counter = Counter()
    hooks = []
    for m in unet.modules():
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3):
            def hook(mod, inp, _out, _shapes=shapes):
                _shapes[(mod.in_channels, mod.out_channels, *inp[0].shape[2:], mod.stride[0])] += 1
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        unet(sample, 999, cond)
    for h in hooks:
        h.remove()
    return shapes


CONV_MODES = {"fp32_nchw": ("fp32", False), "fp32_channels_last": ("fp32", True),
              "bf16_nchw": ("bf16", False), "bf16_channels_last": ("bf16", True)}  # fmt: skip


def conv_sets(shapes: Counter, batch: int) -> dict:
    """Per conv mode: ``[(conv, x, flop, count)]`` for every 3x3 conv shape of the UNet."""
    import torch

    sets = {}
    for name, (precision, cl) in CONV_MODES.items():
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        items = []
        for (cin, cout, h, w, stride), count in shapes.items():
            conv = torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1).eval().to(dtype)
            x = torch.randn(batch, cin, h, w).to(dtype)
            if cl:
                conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
            items.append((conv, x, 2 * cin * cout * 9 * batch * (h // stride) * (w // stride), count))
        sets[name] = items
    return sets


def time_convs(items: list) -> tuple[float, float, float]:
    """(FLOPs, seconds, best single-shape GFLOP/s) of one pass over a conv set, each shape x its count."""
    import torch

    flop = seconds = best = 0.0
    with torch.no_grad():
        for conv, x, f, count in items:
            conv(x)  # warm
            t = time.perf_counter()
            conv(x)
            s = time.perf_counter() - t
            flop, seconds, best = flop + f * count, seconds + s * count, max(best, f / s / 1e9)
    return flop, seconds, best


def unet_and_peak(tok, batch: int, repeats: int) -> tuple[dict, dict]:
    """(a) the conv peak per mode and (b) the UNet per mode, measured in turn in every repeat (so the
    fraction compares numbers taken under the same load); each figure is the best over the repeats."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from terramind_qgis.models.runtime.device import prepare_decoders, select_device

    unet = tok.decoder
    sample = torch.randn(batch, 2, TILE, TILE)
    cond = torch.randn(batch, tok.latent_dim, TILE // 16, TILE // 16)
    shapes = conv_shapes(unet, sample, cond)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(sample, 999, cond)
    flop = counter.get_total_flops()
    prepared = copy.deepcopy(tok)
    prepare_decoders(prepared, select_device("cpu", "bf16"))

    class ChannelsLast(torch.nn.Module):  # the UNet with its input (so every activation) channels-last
        def __init__(self, inner):
            super().__init__()
            self.inner = inner.to(memory_format=torch.channels_last)

        def forward(self, x, t, c):
            return self.inner(x.contiguous(memory_format=torch.channels_last), t, c)

    modes = {"fp32_nchw (default)": (unet, False, "fp32_nchw"),
             "fp32_channels_last": (ChannelsLast(copy.deepcopy(unet)), False, "fp32_channels_last"),
             "bf16_autocast_per_call_cast": (unet, True, "bf16_nchw"),
             "bf16_prepared_weights (worker bf16)": (prepared.decoder, True, "bf16_nchw"),
             "bf16_prepared_channels_last": (ChannelsLast(copy.deepcopy(prepared.decoder)), True,
                                             "bf16_channels_last")}  # fmt: skip

    def call(mod, ac):
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=ac):
            return mod(sample, 999, cond)

    sets = conv_sets(shapes, batch)
    conv_best: dict[str, list] = {k: [0.0, 0.0, 0.0] for k in CONV_MODES}  # ceiling, best shape, seconds
    unet_times: dict[str, list[float]] = {k: [] for k in modes}
    for mod, ac, _ in modes.values():
        call(mod, ac)  # warm-up
    for _ in range(repeats):
        for conv_mode in CONV_MODES:
            f, sec, best = time_convs(sets[conv_mode])
            b = conv_best[conv_mode]
            if f / sec / 1e9 > b[0]:
                b[0], b[2] = f / sec / 1e9, sec
            b[1] = max(b[1], best)
            for k, (mod, ac, m) in modes.items():
                if m == conv_mode:
                    t = time.perf_counter()
                    call(mod, ac)
                    unet_times[k].append(time.perf_counter() - t)
    peak = {"batch": batch, "conv3x3_calls": sum(shapes.values()), "distinct_shapes": len(shapes)}
    for k, (ceiling, best, sec) in conv_best.items():
        peak[k] = {"ceiling_gflops": round(ceiling, 1), "best_shape_gflops": round(best, 1),
                   "seconds_all_convs": round(sec, 3)}  # fmt: skip
    ref = call(unet, False).float()
    out = {"gflop_per_call": round(flop / 1e9, 1), "batch": batch, "modes": {}}
    for k, (mod, ac, m) in modes.items():
        s = min(unet_times[k])
        rate = flop / s / 1e9
        precision = CONV_MODES[m][0]
        best_ceiling = max(peak[c]["ceiling_gflops"] for c, (p, _) in CONV_MODES.items() if p == precision)
        dev = (call(mod, ac).float() - ref).abs()
        out["modes"][k] = {"seconds_min": round(s, 3), "seconds_median": round(statistics.median(unet_times[k]), 3),
                           "gflops": round(rate, 1), "conv_mode": m,
                           "fraction_of_conv_ceiling_same_layout": round(rate / peak[m]["ceiling_gflops"], 3),
                           "fraction_of_best_conv_ceiling_same_precision": round(rate / best_ceiling, 3),
                           "mae_vs_fp32_one_call": float(f"{float(dev.mean()):.3g}")}  # fmt: skip
    return peak, out


# -- (c) and (d): the worker and terratorch ----------------------------------------------------------


def make_weights(folder: Path, outputs: list[str]) -> dict[str, Path]:
    """Untrained (deterministic) weights in the official checkpoint layouts, written once."""
    import torch

    from terramind_qgis.models.core import catalogue
    from terramind_qgis.models.terramind import TerraMindGeneration
    from terramind_qgis.models.tokenizers import build_tokenizer
    from terramind_qgis.models.weights.loading import untrained_checkpoint
    from terramind_qgis.models.weights.matching import GENERATION
    from terramind_qgis.models.weights.matching import TOKENIZER as TOKENIZER_MAPPING

    folder.mkdir(parents=True, exist_ok=True)
    files = {"model": folder / f"TerraMind_v1_tiny_{'_'.join(outputs)}.pt"}
    if not files["model"].exists():
        with torch.device("meta"):
            model = TerraMindGeneration(catalogue.get(MODEL).config, INPUTS, outputs)
        torch.save(dict(untrained_checkpoint(model, GENERATION)), files["model"])
    for m in outputs:
        model_id, name = TOKENIZERS[m]
        files[m] = folder / name
        if not files[m].exists():
            with torch.device("meta"):
                tok = build_tokenizer(catalogue.get(model_id).config)
            torch.save(dict(untrained_checkpoint(tok, TOKENIZER_MAPPING)), files[m])
    return files


def run_ours(workdir: Path, raster: Path, weights: dict, outputs: list[str], size: int, precision: str,
             timesteps: int, name: str, overlap: int = OVERLAP) -> dict:  # fmt: skip
    paths = {m: str(workdir / f"ours_{name}_{m}.tif") for m in outputs}
    job = {
        "protocol": 1, "task": "generate",
        "inputs": {"S2L2A": {"path": str(raster), "name": f"S2L2A {size}"}},
        "outputs": paths,
        "model": {"id": MODEL, "weights": str(weights["model"]), "tokenizer_weights": {m: str(weights[m]) for m in outputs}},
        "params": {"outputs": outputs, "temperature": 1.0, "top_p": 0.8, "top_k": 0, "seed": 0, "timesteps": timesteps},
        "tiling": {"tile_size": TILE, "overlap": overlap, "batch_size": 4}, "device": "cpu", "precision": precision,
    }  # fmt: skip
    stats, result = run_worker(job, workdir, name)
    log = (workdir / f"ours_{name}.log").read_text()
    said = [json.loads(line)["message"] for line in log.splitlines()
            if line.startswith("{") and "precision" in json.loads(line).get("message", "")]  # fmt: skip
    stats.update(outputs=paths, tiles=result["metrics"]["tiles"], worker_seconds=result["metrics"]["seconds"],
                 precision_message=said[0] if said else None)  # fmt: skip
    return stats


def run_reference(workdir: Path, raster: Path, weights: dict, outputs: list[str], timesteps: int, name: str,
                  python: Path) -> dict:  # fmt: skip
    out = workdir / f"reference_{name}.tif"
    log = workdir / f"reference_{name}.log"
    script = REPO / "tools" / "bench" / "bench_generation_reference.py"
    stats = measure([str(python), str(script), "--input", str(raster), "--model", str(weights["model"]),
                     "--tokenizer", *[f"{m}={weights[m]}" for m in outputs], "--outputs", *outputs,
                     "--timesteps", str(timesteps), "--out", str(out), "--batch", "4"], log)  # fmt: skip
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    if stats["rc"] or not lines:
        return {"error": f"reference failed (rc {stats['rc']}): {log.read_text()[-1500:]}", **stats}
    stats.update(output=str(out), **lines[-1])
    return stats


def deviation(a: dict[str, str], b: dict[str, str]) -> dict:
    """Per output and band: MAE and max |a - b| (output units) of two runs' rasters."""
    import rasterio

    out = {}
    for m in a:
        with rasterio.open(a[m]) as x, rasterio.open(b[m]) as y:
            d = np.abs(x.read().astype(np.float64) - y.read().astype(np.float64))  # (C, H, W)
        out[m] = {"mae_per_band": [round(float(v), 4) for v in d.reshape(len(d), -1).mean(1)],
                  "max_abs_per_band": [round(float(v), 3) for v in d.reshape(len(d), -1).max(1)]}  # fmt: skip
    return out


def s2_tiles() -> int:
    from terramind_qgis.models.engine.tiling import TilePlan

    return TilePlan(S2_TILE, S2_TILE, TILE, OVERLAP).num_tiles


def reference_chips(length: int, crop: int = TILE, stride: int = TILE - OVERLAP, delta: int = 8) -> int:
    """terratorch 1.2.11 ``tiled_inference`` chips along one axis: the raster reflect-padded by ``delta``,
    chips every ``stride`` plus one flush with the far edge (8 px of each chip's border are dropped, so
    neighbours blend over ``crop - stride - 2 delta`` = 16 px)."""
    padded = length + 2 * delta
    return 1 if padded <= crop else -(-(padded - crop) // stride) + 1


def tile_plans() -> dict:
    """Tiles per raster size: ours at overlap 32 (terratorch's raw chip overlap) and 16 (its blended
    overlap), and terratorch's chips (crop 224, stride 192)."""
    from terramind_qgis.models.engine.tiling import TilePlan

    out = {}
    for size in (448, 1024, 4096, S2_TILE):
        out[str(size)] = {"ours_overlap_32": TilePlan(size, size, TILE, 32).num_tiles,
                          "ours_overlap_16": TilePlan(size, size, TILE, 16).num_tiles,
                          "terratorch_crop224_stride192": reference_chips(size) ** 2}  # fmt: skip
    return out


def same_blend_width(e2e: dict, workdir: Path, weights: dict, args: argparse.Namespace) -> dict:
    """(c') ours at ``OVERLAP`` 16, the width over which terratorch's chips actually blend (it drops 8 px
    of each 224 px chip's border, stride 192), next to the reference measured in (c)."""
    raster = write_mosaic(workdir / f"s2_{args.size}.tif", "S2L2A", args.size)
    out: dict = {"overlap": 16, "note": "terratorch crop 224 / stride 192 / delta 8 blends neighbours over 16 px"}
    for precision in ("fp32", "bf16"):
        out[f"ours_{precision}"] = run_ours(workdir, raster, weights, e2e["outputs"], args.size, precision,
                                            e2e["timesteps"], f"{precision}_overlap16", overlap=16)  # fmt: skip
        print(json.dumps({f"ours_{precision}_overlap16": out[f"ours_{precision}"]}), flush=True)
    ref = e2e["rounds"][0].get("reference_default", {}).get("wall_s")
    if ref:
        out["ratios_wall_time"] = {f"{p}_speedup_over_reference": round(ref / out[f"ours_{p}"]["wall_s"], 2)
                                   for p in ("fp32", "bf16")}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--outputs", nargs="+", default=["S1GRD", "DEM"], choices=sorted(TOKENIZERS))
    p.add_argument("--timesteps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1, help="end-to-end rounds (each: ours fp32, reference, ours bf16)")
    p.add_argument("--unet-batch", type=int, default=4)
    p.add_argument("--unet-repeats", type=int, default=3)
    p.add_argument("--rss-sizes", type=int, nargs=2, default=[1024, 4096])
    p.add_argument("--rss-precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["unet", "end_to_end", "blend_width", "peak_rss", "winograd", "onnxruntime"])
    p.add_argument("--out", default=str(REPO / "bench-results" / "generation.json"))
    p.add_argument("--workdir", default="/tmp/terramind-bench-generation")
    p.add_argument("--reference-python", default=os.environ.get("REF_PY") or str(REFERENCE_PYTHON))
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--merge", action="store_true", help="keep the parts of an existing --out that this run skips")
    args = p.parse_args(argv)
    import torch

    from terramind_qgis.models.runtime.device import configure_threads, cpu_bf16_support

    configure_threads()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"what": __doc__.split("\n\n")[0], "machine": machine(), "cpu_bf16_native": cpu_bf16_support(),
                     "cpu_capability": torch.backends.cpu.get_cpu_capability()}  # fmt: skip
    if args.merge and Path(args.out).exists():  # keep the parts skipped now from an earlier run
        earlier = json.loads(Path(args.out).read_text(encoding="utf-8"))
        results = {**earlier, **results, "machine_earlier_parts": earlier.get("machine")}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out_path.write_text(json.dumps(results, indent=1), encoding="utf-8")

    results["tile_plans"] = tile_plans()
    if "unet" not in args.skip:
        tok = build_unet()
        results["conv_peak"], results["unet"] = unet_and_peak(tok, args.unet_batch, args.unet_repeats)
        print(json.dumps({"conv_peak": results["conv_peak"], "unet": results["unet"]}), flush=True)
        del tok
        save()
    ref_python = Path(args.reference_python)
    with_ref = not args.no_reference and ref_python.exists()
    weights = make_weights(workdir / "weights", args.outputs)
    if "end_to_end" not in args.skip:
        raster = write_mosaic(workdir / f"s2_{args.size}.tif", "S2L2A", args.size)
        e2e: dict = {"size": args.size, "outputs": args.outputs, "timesteps": args.timesteps, "batch": 4,
                     "tiling": {"tile_size": TILE, "overlap": OVERLAP, "reference_crop_stride": [TILE, TILE - OVERLAP]},
                     "rounds": []}  # fmt: skip
        results["end_to_end"] = e2e
        for r in range(args.repeats):
            rnd: dict = {}
            rnd["ours_fp32"] = run_ours(workdir, raster, weights, args.outputs, args.size, "fp32", args.timesteps, f"fp32_{r}")
            print(json.dumps({"ours_fp32": rnd["ours_fp32"]}), flush=True)
            if with_ref:
                rnd["reference_default"] = run_reference(workdir, raster, weights, args.outputs, args.timesteps,
                                                         f"{r}", ref_python)  # fmt: skip
                print(json.dumps({"reference": rnd["reference_default"]}), flush=True)
            rnd["ours_bf16"] = run_ours(workdir, raster, weights, args.outputs, args.size, "bf16", args.timesteps, f"bf16_{r}")
            print(json.dumps({"ours_bf16": rnd["ours_bf16"]}), flush=True)
            e2e["rounds"].append(rnd)
            save()
        first = e2e["rounds"][0]
        e2e["bf16_deviation_from_fp32"] = deviation(first["ours_bf16"]["outputs"], first["ours_fp32"]["outputs"])

        def med(key: str, field: str = "wall_s") -> float | None:
            vals = [rnd[key][field] for rnd in e2e["rounds"] if key in rnd and field in rnd[key]]
            return statistics.median(vals) if vals else None

        fp32, bf16, ref = med("ours_fp32"), med("ours_bf16"), med("reference_default")
        tiles = first["ours_fp32"]["tiles"]
        ratios = {"bf16_speedup_over_fp32": round(fp32 / bf16, 2)}
        if ref:
            ratios.update(fp32_speedup_over_reference=round(ref / fp32, 2), bf16_speedup_over_reference=round(ref / bf16, 2))
        e2e["ratios_wall_time"] = ratios
        n = s2_tiles()
        e2e["sentinel2_tile_extrapolation"] = {
            "tiles_per_10980_tile": n, "measured_tiles": tiles,
            "fp32_seconds": round(med("ours_fp32", "worker_seconds") / tiles * n),
            "bf16_seconds": round(med("ours_bf16", "worker_seconds") / tiles * n),
            "note": "worker seconds per tile at this size x tiles of the same plan on 10980² (2-core shared CPU)",
        }  # fmt: skip
        print(json.dumps({"ratios": ratios, "s2": e2e["sentinel2_tile_extrapolation"]}), flush=True)
        save()
    if "blend_width" not in args.skip and "end_to_end" in results:
        results["end_to_end_same_blend_width"] = same_blend_width(results["end_to_end"], workdir, weights, args)
        save()
    if "peak_rss" not in args.skip:
        rss = {"timesteps": 1, "precision": args.rss_precision, "outputs": args.outputs, "runs": []}
        for size in args.rss_sizes:
            raster = write_mosaic(workdir / f"s2_{size}.tif", "S2L2A", size)
            stats = run_ours(workdir, raster, weights, args.outputs, size, args.rss_precision, 1, f"rss_{size}")
            rss["runs"].append({"size": size, "tiles": stats["tiles"], "peak_rss_mb": stats["peak_rss_mb"],
                                "wall_s": stats["wall_s"]})  # fmt: skip
            print(json.dumps({"rss": rss["runs"][-1]}), flush=True)
        a, b = rss["runs"][0]["peak_rss_mb"], rss["runs"][1]["peak_rss_mb"]
        rss["growth"] = round(b / a - 1, 3)
        results["peak_rss"] = rss
        save()
    if "winograd" not in args.skip:
        from winograd_trial import trial

        results["winograd_trial"] = trial(args.unet_batch)
        print(json.dumps({"winograd_trial": results["winograd_trial"]}), flush=True)
        save()
    if "onnxruntime" not in args.skip:
        from onnx_unet_trial import trial as onnx_trial

        from terramind_qgis.models.runtime.device import cpu_threads

        results["onnxruntime_unet"] = onnx_trial(build_unet(), args.unet_batch, cpu_threads())
        print(json.dumps({"onnxruntime_unet": results["onnxruntime_unet"]}), flush=True)
    results["machine"]["load_avg_end"] = os.getloadavg()
    save()
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
