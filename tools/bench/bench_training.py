"""Benchmark: fine-tuning seconds per epoch and peak RSS on CPU, ours vs ``terratorch fit`` (same recipe).

Run from the repository root with the project venv (CPU; about 15 minutes on 2 shared cores)::

    nice -n 5 .venv/bin/python tools/bench/bench_training.py --out bench-results/training.json

Dataset: 224 px chips (TerraMind's native size) of S2L2A with LULC water vs the rest as labels,
cut from a 1344 x 1344 mosaic repeating the 2 x 2 mosaic of the real example patches (36 chips;
spatial blocks of 448 px: 27 train / 9 val), written by ``models/training/dataset.py``. Recipe: IBM's
defaults (dice, AdamW, UNetDecoder) with batch size 8, no D4 augmentation (so that the cache's
steady state shows; with D4 the first epochs also fill the 8 variants), untrained deterministic
backbone weights (the Hub is unreachable; the cost is the same).

Runs, each in its own process (wall time and peak RSS of the process, ``benchlib.measure``):

- ours, ``frozen+cached`` (the CPU default): 3 epochs; epoch 1 includes computing the encoder
  features once, epochs 2-3 cost only neck + decoder + head;
- ours, ``frozen`` without the cache (``cache_features=False``): the encoder runs every batch, as in
  TerraTorch with ``freeze_backbone: true``; 2 epochs;
- terratorch 1.2.11 ``fit`` through the YAML our run wrote (``freeze_backbone: true``, same data
  module over the same folder, same batch size), one epoch, via ``build_lightning_cli`` with a
  callback timing the epoch (train + validation), in the reference venv; once as shipped
  (``import terratorch`` sets float32 matmul precision "medium", which lets oneDNN use bf16 on CPUs
  with avx512_bf16/AMX) and once with ``terratorch_FLOAT_32_PRECISION=highest`` (fp32, like ours).

Each configuration runs ``--repeats`` times (default 2): on a shared machine take the minimum.

Per run: setup seconds (start to the first batch: imports, model building, dataset), seconds per
epoch (train + validation), wall seconds, peak RSS (MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchlib import PLUGIN_PATH, REFERENCE_PYTHON, machine, measure, write_mosaic

SIZES = ("tiny", "base")
CHIP, MOSAIC_SIZE, BLOCK = 224, 1344, 448


def make_dataset(folder: Path) -> Path:
    """The benchmark dataset (module docstring); kept when it exists."""
    sys.path.insert(0, str(PLUGIN_PATH))
    import numpy as np
    import rasterio

    from terramind_qgis.models.core.modalities import MODALITIES, ClassInfo
    from terramind_qgis.models.training.dataset import GridInfo, write_dataset
    from terramind_qgis.models.training.split import chip_windows, spatial_block_split

    if (folder / "dataset" / "dataset.json").is_file():
        return folder / "dataset"
    s2 = write_mosaic(folder / "S2L2A.tif", "S2L2A", MOSAIC_SIZE)
    lulc = write_mosaic(folder / "LULC.tif", "LULC", MOSAIC_SIZE)
    with rasterio.open(s2) as src:
        x = src.read()
        grid = GridInfo(src.crs.to_wkt(), tuple(src.transform)[:6], src.width, src.height, s2.name)
    with rasterio.open(lulc) as src:
        y = (src.read(1) == 1).astype(np.int16)
    windows = chip_windows(MOSAIC_SIZE, MOSAIC_SIZE, CHIP, grid="m")
    splits = spatial_block_split(windows, BLOCK, (0.75, 0.25, 0.0), seed=0)
    images = np.stack([x[:, w.row : w.row + CHIP, w.col : w.col + CHIP] for w in windows])
    labels = np.stack([y[w.row : w.row + CHIP, w.col : w.col + CHIP] for w in windows])
    write_dataset(folder / "dataset", windows, splits, {"S2L2A": images}, labels,
                  modalities={"S2L2A": MODALITIES["S2L2A"].bands},
                  classes=[ClassInfo(0, "Others", "#D9D9D9"), ClassInfo(1, "Water", "#1F77B4")], chip_size=CHIP,
                  grids={"m": grid})  # fmt: skip
    return folder / "dataset"


def ours_side(dataset: str, out: str, size: str, cached: bool, epochs: int) -> None:
    """Child process: one of our runs; prints a JSON line with setup and per-epoch seconds."""
    t0 = time.monotonic()
    sys.path.insert(0, str(PLUGIN_PATH))
    from terramind_qgis.models.core.progress import NullProgress
    from terramind_qgis.models.training.recipe import Recipe
    from terramind_qgis.models.training.trainer import train

    starts: list[float] = []

    class Clock(NullProgress):
        def set_progress(self, percent: float) -> None:
            if not starts:
                starts.append(time.monotonic())

    recipe = Recipe(backbone=f"terramind_v1_{size}", batch_size=8, augment=False, max_epochs=epochs,
                    cache_features=cached, early_stopping_patience=None)  # fmt: skip
    result = train(dataset, out, recipe, model_name="bench", untrained=True, progress=Clock())
    print(json.dumps({"setup_s": round(starts[0] - t0, 2), "epoch_s": [round(r.seconds, 2) for r in result.history],
                      "config": str(result.config)}))  # fmt: skip


def reference_side(config: str, epochs: int) -> None:
    """Child process in the reference venv: ``terratorch fit`` of our YAML for ``epochs`` epochs, timed."""
    t0 = time.monotonic()
    import lightning.pytorch as pl
    import terratorch  # noqa: F401
    from terratorch.cli_tools import build_lightning_cli

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.start: list[float] = []
            self.end: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            self.start.append(time.monotonic())

        def on_validation_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
            if not trainer.sanity_checking:
                self.end.append(time.monotonic())

    cli = build_lightning_cli(["--config", config, "--trainer.max_epochs", str(epochs),
                               "--trainer.num_sanity_val_steps", "0"], run=False)  # fmt: skip
    timer = Timer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    print(json.dumps({"setup_s": round(timer.start[0] - t0, 2),
                      "epoch_s": [round(e - s, 2) for s, e in zip(timer.start, timer.end)]}))  # fmt: skip


def _last_json(log: Path) -> dict:
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench-results/training.json")
    parser.add_argument("--work", default=None, help="folder for the dataset and runs (default: a temporary one)")
    parser.add_argument("--sizes", nargs="*", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration (the machine is shared)")
    parser.add_argument("--no-reference", action="store_true", help="ours only (no terratorch venv)")
    parser.add_argument("--ours-side", nargs=5, metavar=("DATASET", "OUT", "SIZE", "CACHED", "EPOCHS"))
    parser.add_argument("--reference-side", nargs=2, metavar=("CONFIG", "EPOCHS"))
    args = parser.parse_args()
    if args.ours_side:
        d, o, s, c, e = args.ours_side
        return ours_side(d, o, s, c == "1", int(e))
    if args.reference_side:
        return reference_side(args.reference_side[0], int(args.reference_side[1]))
    report: dict = {"machine": machine(), "dataset": {"chip": CHIP, "mosaic": MOSAIC_SIZE, "block": BLOCK},
                    "batch_size": 8, "runs": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        dataset = make_dataset(work)
        info = json.loads((dataset / "dataset.json").read_text())
        report["dataset"]["chips"] = {s: d["chips"] for s, d in info["splits"].items()}
        env = {**os.environ, "PYTHONPATH": str(PLUGIN_PATH)}
        script = str(Path(__file__).resolve())
        for size in args.sizes:
            config = None
            for repeat in range(args.repeats):
                for name, cached, epochs in (("frozen+cached", 1, 3), ("frozen", 0, 2)):
                    log = work / f"{size}-{name}-{repeat}.log"
                    cmd = [sys.executable, script, "--ours-side", str(dataset), str(work / f"{size}-{name}-{repeat}"),
                           size, str(cached), str(epochs)]  # fmt: skip
                    run = measure(cmd, log, env)
                    run.update(_last_json(log))
                    config = config or run["config"]
                    run.pop("config", None)
                    report["runs"].setdefault(f"ours {size} {name}", []).append(run)
                    print(f"ours {size} {name}: {run}", flush=True)
                # terratorch as shipped (``import terratorch`` sets float32 matmul precision "medium": bf16
                # matmuls where the CPU has them) and with terratorch_FLOAT_32_PRECISION=highest (fp32, as ours)
                for precision in () if args.no_reference else ("medium", "highest"):
                    log = work / f"{size}-terratorch-{precision}-{repeat}.log"
                    tenv = {**env, "terratorch_FLOAT_32_PRECISION": precision}
                    run = measure([str(REFERENCE_PYTHON), script, "--reference-side", config, "1"], log, tenv)
                    run.update(_last_json(log))
                    report["runs"].setdefault(f"terratorch {size} frozen ({precision})", []).append(run)
                    print(f"terratorch {size} frozen ({precision}): {run}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
