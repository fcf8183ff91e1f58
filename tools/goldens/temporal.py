"""Golden tensors of TerraTorch's multi-temporal models (reference: terratorch 1.2.11).

Run with the reference venv (dev tool only; product code and tests never import terratorch)::

    PYTHONPATH=.pluginpath /root/.cache/terramind-reference-venv/bin/python tools/goldens/temporal.py

Three parts, written to ``tests/goldens/temporal/``:

1. ``wrapper.npz``: ``terratorch.models.utils.TemporalWrapper`` alone around the toy encoders of
   ``tests/unit/models/temporal_fixtures.py`` (imported from there, so both sides run the same
   encoder weights and inputs), for every case of ``WRAPPER_CASES`` (every pooling; tensor and
   dict inputs; token, dict-token and conv features; ``subset_lengths``; ``features_permute_op``):
   key ``<case>/<layer>[.<modality>]``; ``goldens.json`` holds each case's ``out_channels``.
2. ``<case>.npz`` (``logits``): the ImpactMesh flood/fire models (tiny and base) and a tiny variant
   of the multi-temporal crop config, built by ``SemanticSegmentationTask(**model.init_args)``,
   filled by the untrained rule (models/weights/untrained.py) in their Lightning ``state_dict``
   layout (``<case>.layout.json``: key → shape, dtype), saved in the layout
   ``ModelCheckpoint(save_weights_only=True)`` writes and reloaded with
   ``SemanticSegmentationTask.load_from_checkpoint`` (strict). ``weights_only_extras.pt``: the
   non-weight contents of a real ``terratorch fit`` of the tiny ImpactMesh flood config with such a
   callback (so the tests can rebuild the exact file layout a user has).
3. ``tiled_impactmesh_flood.npz`` (``output (1, 2, 480, 480)``): ``terratorch.tasks.tiled_inference``
   with the config's ``tiled_inference_parameters`` (crop 256, stride 208, delta 8, batch 64) on
   the 4-date 480 × 480 input of ``temporal_fixtures.tiled_inputs()`` (built from the example
   patches; its SHA-256 per modality is stored in ``goldens.json`` so the tests prove they rebuild
   the identical arrays).

How the input arrays map to terratorch's input dict (what ``ImpactMeshDataset.__getitem__`` and the
data module do): every modality is a ``(T, C, H, W)`` array (a one-date file, the DEM, is
``(1, C, H, W)`` and is repeated to ``T`` dates with ``np.repeat``), nodata (NaN) is replaced by
``no_data_replace`` = 0 in raw units, the array is moved to ``(C, T, H, W)``
(``MultimodalToTensor``), batched to ``(B, C, T, H, W)`` and standardised per band with the data
module's statistics (``MultimodalNormalize``: ``view(1, -1, 1, 1, 1)``); the model gets
``{'S2L2A': (B, 12, T, H, W), 'S1RTC': (B, 2, T, H, W), 'DEM': (B, 1, T, H, W)}``. The ImpactMesh
statistics are read from ``tests/data/terramind_configs/impactmesh/impactmesh_datamodule.py.txt``
(``datasets_stats``, with ``ast``), the crop ones from the real
``MultiTemporalCropClassificationDataModule`` (its ``aug``).
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import terratorch  # noqa: F401  (sets matmul precision to "medium"; reset below)
import torch
import yaml

torch.set_float32_matmul_precision("highest")

from terratorch.datamodules.generic_multimodal_data_module import MultimodalNormalize  # noqa: E402
from terratorch.models.utils import TemporalWrapper  # noqa: E402
from terratorch.tasks import SemanticSegmentationTask  # noqa: E402
from terratorch.tasks.tiled_inference import tiled_inference  # noqa: E402

from terramind_qgis.models.weights.untrained import deterministic_state_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "models"))
import temporal_fixtures as fx  # noqa: E402

CONFIGS = REPO / "tests" / "data" / "terramind_configs"
IMPACTMESH = CONFIGS / "impactmesh"
OUT = REPO / "tests" / "goldens" / "temporal"
HLS_BANDS = (1, 2, 3, 8, 10, 11)  # 0-based S2L2A bands BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2

# case -> config, model_args overrides, window (row, col, h, w) of the tiled input, dates used
CASES: dict[str, dict] = {
    "tiny_impactmesh_flood": dict(config="impactmesh/terramind_v1_tiny_impactmesh_flood.yaml", window=(0, 256, 224, 224)),
    "tiny_impactmesh_fire": dict(config="impactmesh/terramind_v1_tiny_impactmesh_fire.yaml", window=(256, 0, 128, 160)),
    "base_impactmesh_flood": dict(config="impactmesh/terramind_v1_base_impactmesh_flood.yaml", window=(200, 200, 160, 192)),
    "base_impactmesh_fire": dict(config="impactmesh/terramind_v1_base_impactmesh_fire.yaml", window=(60, 380, 64, 96)),
    "tiny_multitemporal_crop": dict(
        config="terramind_v1_base_multitemporal_crop.yaml", window=(100, 300, 64, 96), dates=3,
        overrides={"backbone": "terramind_v1_tiny", "decoder_channels": [256, 128, 64, 32]},
    ),
}  # fmt: skip
TILED_CASE = "tiny_impactmesh_flood"


def case_config(case: dict) -> dict:
    cfg = yaml.safe_load((CONFIGS / case["config"]).read_text())
    cfg["model"]["init_args"]["model_args"].update(case.get("overrides", {}))
    return cfg


def impactmesh_stats(data_args: dict) -> tuple[dict, dict]:
    """(means, stds) the ImpactMesh data module picks: ``datasets_stats`` of its source, by disaster type."""
    tree = ast.parse((IMPACTMESH / "impactmesh_datamodule.py.txt").read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "datasets_stats"]
    stats = ast.literal_eval(node.value)
    disaster = data_args.get("disaster_type")
    if disaster not in stats:  # ImpactMeshDataModule.__init__: the first key found in data_root
        disaster = next(k for k in stats if k in str(data_args["data_root"]).lower())
    mods = data_args.get("modalities") or ["S2L2A", "S1RTC", "DEM"]
    return {m: stats[disaster]["means"][m] for m in mods}, {m: stats[disaster]["stds"][m] for m in mods}


def model_input(cfg: dict, raw: dict[str, np.ndarray], window: tuple[int, int, int, int], dates: int) -> dict:
    """Raw ``(T, C, H, W)`` arrays → the standardised input dict of the model (module docstring)."""
    r, c, h, w = window
    data = cfg["data"]["init_args"]
    batch = {}
    for name in cfg["model"]["init_args"]["model_args"]["backbone_modalities"]:
        a = raw[name][:dates, :, r : r + h, c : c + w]
        if name == "S2L2A" and "backbone_bands" in cfg["model"]["init_args"]["model_args"]:
            a = a[:, list(HLS_BANDS)]  # the crop model's six HLS bands
        if a.shape[0] == 1:
            a = np.repeat(a, dates, axis=0)  # ImpactMeshDataset: a one-date file over every date
        a = np.nan_to_num(a, nan=float(data.get("no_data_replace") or 0))  # (T, C, h, w)
        batch[name] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, 0, 1)))[None]  # (1, C, T, h, w)
    if cfg["data"]["class_path"].endswith("ImpactMeshDataModule"):
        means, stds = impactmesh_stats(data)
        return MultimodalNormalize(means, stds)({"image": batch})["image"]
    from terratorch.datamodules import MultiTemporalCropClassificationDataModule

    dm = MultiTemporalCropClassificationDataModule(data_root="unused", **{k: v for k, v in data.items()
                                                   if k not in ("data_root", "train_transform")})  # fmt: skip
    (name,) = batch
    return {name: dm.aug({"image": batch[name]})["image"]}


def build_and_fill(cfg: dict, workdir: Path, name: str, extras: dict) -> tuple[Path, dict]:
    """Task → its Lightning layout filled by the rule → a weights-only checkpoint file."""
    init_args = copy.deepcopy(cfg["model"]["init_args"])
    init_args["model_args"]["backbone_pretrained"] = False
    task = SemanticSegmentationTask(**init_args)
    layout = {k: (tuple(v.shape), v.dtype) for k, v in task.state_dict().items()}
    ckpt = copy.deepcopy(extras)
    # hyper_parameters as Lightning saves them (every task argument), the model_args as trained
    # (pretrained true), and the CLI's own entries of the real fit (_class_path, _instantiator)
    fit_hparams = ckpt["hyper_parameters"]
    ckpt["hyper_parameters"] = {**dict(task.hparams), "model_args": copy.deepcopy(cfg["model"]["init_args"]["model_args"])}
    ckpt["hyper_parameters"].update({k: v for k, v in fit_hparams.items() if k.startswith("_")})
    del task
    ckpt["state_dict"] = deterministic_state_dict(layout)
    path = workdir / f"{name}.ckpt"
    torch.save(ckpt, path)
    return path, {"tensors": {k: [list(s), str(d).replace("torch.", "")] for k, (s, d) in layout.items()}, "aliases": {}}


def load_reference(cfg: dict, path: Path) -> SemanticSegmentationTask:
    model_args = copy.deepcopy(cfg["model"]["init_args"]["model_args"])
    model_args["backbone_pretrained"] = False
    return SemanticSegmentationTask.load_from_checkpoint(path, map_location="cpu", model_args=model_args).eval()


def weights_only_extras(workdir: Path) -> dict:
    """Non-weight contents of a real ``terratorch fit`` checkpoint, ``ModelCheckpoint(save_weights_only=True)``."""
    (workdir / "dummytemporal.py").write_text(
        "import torch, lightning.pytorch as pl\n"
        "class DS(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 2\n"
        "    def __getitem__(self, i):\n"
        "        g = torch.Generator().manual_seed(i)\n"
        "        return {'image': {m: torch.randn(c, 4, 32, 32, generator=g)\n"
        "                          for m, c in (('S2L2A', 12), ('S1RTC', 2), ('DEM', 1))},\n"
        "                'mask': torch.randint(0, 2, (32, 32), generator=g)}\n"
        "class DummyDM(pl.LightningDataModule):\n"
        "    def __init__(self, batch_size: int = 2):\n"
        "        super().__init__()\n"
        "    def train_dataloader(self): return torch.utils.data.DataLoader(DS(), batch_size=2)\n"
        "    def val_dataloader(self): return torch.utils.data.DataLoader(DS(), batch_size=2)\n"
    )
    cfg = yaml.safe_load((IMPACTMESH / "terramind_v1_tiny_impactmesh_flood.yaml").read_text())
    out = workdir / "fit"
    cfg["trainer"].update(precision="32", max_epochs=1, default_root_dir=str(out), enable_progress_bar=False)
    cfg["trainer"]["callbacks"] = [
        {"class_path": "LearningRateMonitor", "init_args": {"logging_interval": "epoch"}},
        {"class_path": "EarlyStopping", "init_args": {"monitor": "val/loss", "patience": 10}},
        {"class_path": "ModelCheckpoint", "init_args": {"monitor": "val/loss", "mode": "min", "save_weights_only": True,
                                                        "dirpath": str(out / "ck"), "filename": "best_val_loss"}},
    ]  # fmt: skip
    cfg["trainer"]["logger"] = {"class_path": "CSVLogger", "init_args": {"save_dir": str(out)}}
    cfg["data"] = {"class_path": "dummytemporal.DummyDM", "init_args": {}}
    cfg["model"]["init_args"]["model_args"]["backbone_pretrained"] = False
    (workdir / "fit.yaml").write_text(yaml.safe_dump(cfg))
    cli = Path(sys.executable).with_name("terratorch")
    subprocess.run([str(cli), "fit", "--config", str(workdir / "fit.yaml")], cwd=workdir, check=True,
                   env={**os.environ, "PYTHONPATH": str(workdir)}, capture_output=True)  # fmt: skip
    ckpt = torch.load(out / "ck" / "best_val_loss.ckpt", map_location="cpu", weights_only=True)  # must not raise
    assert "optimizer_states" not in ckpt, "not a weights-only checkpoint"
    ckpt.pop("state_dict")
    return ckpt


def wrapper_goldens() -> tuple[dict[str, np.ndarray], dict[str, list | None]]:
    arrays, channels = {}, {}
    for name, case in fx.WRAPPER_CASES.items():
        wrapper = TemporalWrapper(fx.wrapper_encoder(case), **fx.wrapper_kwargs(case))
        with torch.no_grad():
            out = wrapper(fx.wrapper_input(name, case))
        arrays.update({f"{name}/{k}": v for k, v in fx.flatten_outputs(out).items()})
        channels[name] = wrapper.out_channels
    return arrays, channels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--skip-tiled", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    meta_path = OUT / "goldens.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["reference"] = {"terratorch": importlib.metadata.version("terratorch"), "torch": torch.__version__,
                         "matmul_precision": "highest"}  # fmt: skip
    arrays, channels = wrapper_goldens()
    np.savez_compressed(OUT / "wrapper.npz", **arrays)
    meta["wrapper"] = {"out_channels": channels}
    raw = fx.tiled_inputs()
    meta["tiled_input_sha256"] = {k: fx.array_sha256(v) for k, v in raw.items()}
    meta.setdefault("cases", {})
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        extras = weights_only_extras(workdir)
        torch.save(extras, OUT / "weights_only_extras.pt")
        for name in args.cases:
            case = CASES[name]
            cfg = case_config(case)
            ckpt_path, layout = build_and_fill(cfg, workdir, name, extras)
            task = load_reference(cfg, ckpt_path)
            ckpt_path.unlink()
            (OUT / f"{name}.layout.json").write_text(json.dumps(layout, indent=0))
            (OUT / "configs").mkdir(exist_ok=True)
            (OUT / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            dates = case.get("dates", 4)
            x = model_input(cfg, raw, case["window"], dates)
            with torch.no_grad():
                logits = task.model(x).output.numpy()
            np.savez_compressed(OUT / f"{name}.npz", logits=logits.astype(np.float32))
            meta["cases"][name] = {"config": f"configs/{name}.yaml", "layout": f"{name}.layout.json",
                                   "window": list(case["window"]), "dates": dates,
                                   "logits_shape": list(logits.shape)}  # fmt: skip
            sys.stdout.write(f"{name} {logits.shape} max |logit| {float(np.abs(logits).max()):.4g}\n")
            if name == TILED_CASE and not args.skip_tiled:
                params = task.hparams["tiled_inference_parameters"]
                full = model_input(cfg, raw, (0, 0, fx.TILED_SIZE, fx.TILED_SIZE), 4)
                output = tiled_inference(lambda t, task=task, **kw: task(t, **kw).output, full, **params)
                np.savez_compressed(OUT / "tiled_impactmesh_flood.npz", output=output.numpy().astype(np.float32))
                meta["tiled"] = {"case": name, "parameters": dict(params), "output_shape": list(output.shape)}
                sys.stdout.write(f"tiled {tuple(output.shape)} max |logit| {float(output.abs().max()):.4g}\n")
    meta_path.write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
