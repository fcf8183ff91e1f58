"""Golden logits of TerraTorch fine-tuned TerraMind segmentation models (reference: terratorch 1.2.11).

Run with the reference venv (dev tool only; product code and tests never import terratorch)::

    PYTHONPATH=.pluginpath /root/.cache/terramind-reference-venv/bin/python tools/goldens/segmentation.py

For every case it

1. builds the fine-tuning task exactly as the Lightning CLI would from the IBM/terramind YAML
   (``SemanticSegmentationTask(**model.init_args)``, ``backbone_pretrained`` off: no download),
2. lists the Lightning ``state_dict`` layout (key → shape, dtype) and fills that layout with the rule
   of ``models/weights/untrained.py`` (every tensor non-zero, batch-norm running statistics included),
3. saves a Lightning-style checkpoint (``state_dict``, ``hyper_parameters`` as Lightning writes them
   with the config's ``backbone_pretrained: true``, version fields) to a temporary folder and reloads
   it through the reference's own path, ``SemanticSegmentationTask.load_from_checkpoint`` (strict),
4. runs the real example patches, standardised with the config's data-module means/stds
   (S1RTC stands in for S1GRD; the burn-scars case gets the six HLS bands of S2L2A as reflectance
   0-1), and stores the logits.

Cases: tiny (4 scenes, plus a 200x216 and a 160x224 window: padding to 32 and a non-square token
grid), tiny with UperNetDecoder, tiny with ``concat`` merging, small, base, burn scars (band subset,
dataset statistics), base TiM (two scenes, Python ``random`` seeded per call), and large (key layout
only). ``components_<case>.npz``: necks → decoder → head alone on rule-made features.

Outputs in ``tests/goldens/segmentation/``: ``<case>.npz`` (logits), ``<case>.layout.json``
(key → shape, dtype; ``aliases``: names of tensors the model shares),
``configs/<case>.yaml`` (the YAML a user would have), ``goldens.json`` (metadata), and
``lightning_extras.pt``: the non-weight contents of a checkpoint written by a real ``terratorch fit``
run (callbacks, loops, optimizer param groups, schedulers; optimizer state tensors dropped), so the
tests can prove that a real checkpoint's extra contents load with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import terratorch  # noqa: F401  (sets matmul precision to "medium"; reset below)
import torch
import yaml

torch.set_float32_matmul_precision("highest")

from terratorch.tasks import SemanticSegmentationTask  # noqa: E402

from terramind_qgis.models.weights.untrained import deterministic_state_dict, deterministic_tensor  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "tests" / "data" / "examples"
CONFIGS = REPO / "tests" / "data" / "terramind_configs"
OUT = REPO / "tests" / "goldens" / "segmentation"
SCENES = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0")
# The burn-scars model reads the six HLS bands; from S2L2A (B01..B12 without B10) they are
# BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2 = bands 2, 3, 4, 9, 11, 12 (1-based).
HLS_BANDS_1BASED = (2, 3, 4, 9, 11, 12)
TIM_SEEDS = (1234, 98765)
# Necks + decoder + head alone, on synthetic backbone features (the rule, key "features.<layer>"),
# for a square 14x14 and a non-square 10x14 token grid.
COMPONENT_SOURCES = ("tiny_sen1floods11", "tiny_upernet")
COMPONENT_GRIDS = {"square": (14, 14), "nonsquare": (10, 14)}

# case -> (config file, model_args overrides, scenes, windows (row0, col0, h, w) or None)
CASES: dict[str, dict] = {
    "tiny_sen1floods11": dict(config="terramind_v1_tiny_sen1floods11.yaml", scenes=SCENES),
    "tiny_sen1floods11_crop200x216": dict(
        config="terramind_v1_tiny_sen1floods11.yaml", scenes=SCENES[:1], window=(10, 3, 200, 216), same_as="tiny_sen1floods11"
    ),
    "tiny_sen1floods11_crop160x224": dict(
        config="terramind_v1_tiny_sen1floods11.yaml", scenes=SCENES[1:2], window=(32, 0, 160, 224), same_as="tiny_sen1floods11"
    ),
    "tiny_upernet": dict(
        config="terramind_v1_tiny_sen1floods11.yaml",
        overrides={"decoder": "UperNetDecoder", "decoder_channels": 64},
        scenes=SCENES[:2],
    ),
    "small_sen1floods11": dict(
        config="terramind_v1_base_sen1floods11.yaml",
        overrides={"backbone": "terramind_v1_small", "decoder_channels": [256, 128, 64, 32]},
        scenes=SCENES[2:3],
    ),
    "tiny_concat": dict(
        config="terramind_v1_tiny_sen1floods11.yaml", overrides={"backbone_merge_method": "concat"}, scenes=SCENES[3:4]
    ),
    "large_sen1floods11": dict(  # key layout only (a forward of the 300M-parameter model is not stored)
        config="terramind_v1_base_sen1floods11.yaml",
        overrides={"backbone": "terramind_v1_large", "necks": [
            {"name": "SelectIndices", "indices": [5, 11, 17, 23]},
            {"name": "ReshapeTokensToImage", "remove_cls_token": False},
            {"name": "LearnedInterpolateToPyramidal"}]},
        scenes=(), layout_only=True,
    ),
    "base_sen1floods11": dict(config="terramind_v1_base_sen1floods11.yaml", scenes=SCENES[:2]),
    "base_burnscars": dict(config="terramind_v1_base_burnscars.yaml", scenes=SCENES[1:3]),
    "base_tim_lulc_sen1floods11": dict(config="terramind_v1_base_tim_lulc_sen1floods11.yaml", scenes=SCENES[:2]),
}


def read(modality: str, scene: str, bands: tuple[int, ...] | None = None) -> np.ndarray:
    with rasterio.open(EXAMPLES / modality / f"{scene}.tif") as src:
        return src.read(list(bands) if bands else None).astype(np.float32)  # (C, H, W)


def case_config(case: dict) -> dict:
    cfg = yaml.safe_load((CONFIGS / case["config"]).read_text())
    cfg["model"]["init_args"]["model_args"].update(case.get("overrides", {}))
    return cfg


def raw_inputs(cfg: dict, scene: str) -> dict[str, np.ndarray]:
    """The un-standardised inputs the model's data module would see, keyed by config modality."""
    model_args = cfg["model"]["init_args"]["model_args"]
    out = {}
    for modality in model_args["backbone_modalities"]:
        if modality == "S2L2A" and "backbone_bands" in model_args:
            out[modality] = read("S2L2A", scene, HLS_BANDS_1BASED) / np.float32(10000.0)  # reflectance 0-1
        elif modality == "S1GRD":
            out[modality] = read("S1RTC", scene)  # stand-in: no S1GRD example exists
        else:
            out[modality] = read(modality, scene)
    return out


def standardise(cfg: dict, raw: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    data = cfg["data"]["init_args"]
    means, stds = data["means"], data["stds"]
    out = {}
    for modality, x in raw.items():
        mean = np.asarray(means[modality] if isinstance(means, dict) else means, np.float32)[:, None, None]
        std = np.asarray(stds[modality] if isinstance(stds, dict) else stds, np.float32)[:, None, None]
        out[modality] = torch.from_numpy((x - mean) / std)[None]  # (1, C, H, W)
    return out


def build_and_fill(cfg: dict, workdir: Path, name: str) -> tuple[Path, dict]:
    """Build the task, fill its Lightning layout by the rule, save a checkpoint; return path and layout."""
    init_args = copy.deepcopy(cfg["model"]["init_args"])
    init_args["model_args"]["backbone_pretrained"] = False
    task = SemanticSegmentationTask(**init_args)
    layout = {k: (tuple(v.shape), v.dtype) for k, v in task.state_dict().items()}
    # Tensors the model shares under several names (TiM) hold one value in a real checkpoint:
    # every name of a shared tensor gets the value the rule gives its first name.
    first_name: dict[int, str] = {}
    alias_of = {}
    for key, tensor in task.state_dict(keep_vars=True).items():
        alias_of[key] = first_name.setdefault(id(tensor), key)
    hparams = dict(task.hparams)
    hparams["model_args"] = copy.deepcopy(cfg["model"]["init_args"]["model_args"])  # as trained: pretrained true
    del task
    state_dict = deterministic_state_dict(layout)
    state_dict = {k: state_dict[alias_of[k]] for k in state_dict}
    ckpt = {
        "epoch": 41,
        "global_step": 1234,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": state_dict,
        "hparams_name": "kwargs",
        "hyper_parameters": hparams,
    }
    path = workdir / f"{name}.ckpt"
    torch.save(ckpt, path)
    aliases = {k: v for k, v in alias_of.items() if k != v}
    return path, {
        "tensors": {k: [list(s), str(d).replace("torch.", "")] for k, (s, d) in layout.items()},
        "aliases": aliases,
    }


def load_reference(cfg: dict, path: Path) -> SemanticSegmentationTask:
    model_args = copy.deepcopy(cfg["model"]["init_args"]["model_args"])
    model_args["backbone_pretrained"] = False  # the weights come from the checkpoint
    task = SemanticSegmentationTask.load_from_checkpoint(path, map_location="cpu", model_args=model_args)
    return task.eval()


def component_outputs(task: SemanticSegmentationTask, dim: int, depth: int) -> dict[str, np.ndarray]:
    """Head outputs (before the final resize) of necks → decoder → head on rule-made features."""
    out = {}
    for grid_name, (h, w) in COMPONENT_GRIDS.items():
        feats = [deterministic_tensor(f"features.{i}", (2, h * w, dim)) for i in range(depth)]  # (B, N, D)
        with torch.no_grad():
            maps = task.model.neck(feats, image_size=(16 * h, 16 * w))
            out[grid_name] = task.model.head(task.model.decoder(maps)).numpy()  # (B, K, 4h, 4w)
    return out


def lightning_extras(workdir: Path) -> dict:
    """Non-weight contents of a checkpoint from a real ``terratorch fit`` (tiny, one step on random data)."""
    (workdir / "dummydm.py").write_text(
        "import torch, lightning.pytorch as pl\n"
        "class DS(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 2\n"
        "    def __getitem__(self, i):\n"
        "        g = torch.Generator().manual_seed(i)\n"
        "        return {'image': {'S2L1C': torch.randn(13, 64, 64, generator=g),\n"
        "                          'S1GRD': torch.randn(2, 64, 64, generator=g)},\n"
        "                'mask': torch.randint(0, 2, (64, 64), generator=g)}\n"
        "class DummyDM(pl.LightningDataModule):\n"
        "    def __init__(self, batch_size: int = 2, means: dict | None = None, stds: dict | None = None,\n"
        "                 no_data_replace: float = 0):\n"
        "        super().__init__()\n"
        "    def train_dataloader(self): return torch.utils.data.DataLoader(DS(), batch_size=2)\n"
        "    def val_dataloader(self): return torch.utils.data.DataLoader(DS(), batch_size=2)\n"
    )
    cfg = yaml.safe_load((CONFIGS / "terramind_v1_tiny_sen1floods11.yaml").read_text())
    out = workdir / "fit"
    cfg["trainer"].update(precision="32", max_epochs=1, default_root_dir=str(out), enable_progress_bar=False)
    cfg["trainer"]["callbacks"] = [
        {"class_path": "LearningRateMonitor", "init_args": {"logging_interval": "epoch"}},
        {"class_path": "ModelCheckpoint", "init_args": {"monitor": "val/loss", "dirpath": str(out / "ck")}},
        {"class_path": "EarlyStopping", "init_args": {"monitor": "val/loss"}},
    ]
    cfg["trainer"]["logger"] = {"class_path": "CSVLogger", "init_args": {"save_dir": str(out)}}
    data = cfg["data"]["init_args"]
    cfg["data"] = {"class_path": "dummydm.DummyDM", "init_args": {"means": data["means"], "stds": data["stds"]}}
    cfg["model"]["init_args"]["model_args"]["backbone_pretrained"] = False
    cfg["optimizer"] = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 2e-5}}
    (workdir / "fit.yaml").write_text(yaml.safe_dump(cfg))
    cli = Path(sys.executable).with_name("terratorch")
    subprocess.run([str(cli), "fit", "--config", str(workdir / "fit.yaml")], cwd=workdir, check=True,
                   env={**os.environ, "PYTHONPATH": str(workdir)}, capture_output=True)
    (path,) = (out / "ck").glob("*.ckpt")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # the check itself: must not raise
    ckpt.pop("state_dict")
    for state in ckpt.get("optimizer_states", []):
        state["state"] = {}
    return ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--skip-extras", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "configs").mkdir(exist_ok=True)
    meta_path = OUT / "goldens.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["reference"] = {"terratorch": importlib.metadata.version("terratorch"), "torch": torch.__version__,
                         "matmul_precision": "highest"}
    meta.setdefault("cases", {})
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        tasks: dict[str, SemanticSegmentationTask] = {}
        for name in args.cases:
            case = CASES[name]
            cfg = case_config(case)
            source = case.get("same_as", name)
            if case.get("layout_only"):
                init_args = copy.deepcopy(cfg["model"]["init_args"])
                init_args["model_args"]["backbone_pretrained"] = False
                task = SemanticSegmentationTask(**init_args)  # terratorch cannot be built on "meta"
                layout = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in task.state_dict().items()}
                (OUT / f"{name}.layout.json").write_text(json.dumps({"tensors": layout, "aliases": {}}, indent=0))
                (OUT / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
                meta["cases"][name] = {"config": f"configs/{name}.yaml", "layout": f"{name}.layout.json", "layout_only": True}
                del task
                continue
            if source not in tasks:
                tasks.clear()
                ckpt_path, layout = build_and_fill(case_config(CASES[source]), workdir, source)
                tasks[source] = load_reference(cfg, ckpt_path)
                ckpt_path.unlink()
                (OUT / f"{source}.layout.json").write_text(json.dumps(layout, indent=0))
                if source in COMPONENT_SOURCES:
                    encoder = tasks[source].model.encoder
                    comp = component_outputs(tasks[source], encoder.out_channels[0], len(encoder.out_channels))
                    np.savez_compressed(OUT / f"components_{source}.npz", **comp)
            task = tasks[source]
            (OUT / "configs" / f"{name}.yaml").write_text(
                (CONFIGS / case["config"]).read_text() if not case.get("overrides") else yaml.safe_dump(cfg, sort_keys=False)
            )
            logits, seeds = [], []
            tim = "tim" in cfg["model"]["init_args"]["model_args"]["backbone"]
            for i, scene in enumerate(case["scenes"]):
                raw = raw_inputs(cfg, scene)
                if case.get("window"):
                    r, c, h, w = case["window"]
                    raw = {k: v[:, r : r + h, c : c + w] for k, v in raw.items()}
                x = standardise(cfg, raw)
                if tim:
                    seeds.append(TIM_SEEDS[i])
                    random.seed(TIM_SEEDS[i])  # the TiM forward draws its generation seed from `random`
                with torch.no_grad():
                    logits.append(task.model(x).output.numpy())
            logits_arr = np.concatenate(logits)  # (S, K, H, W)
            np.savez_compressed(OUT / f"{name}.npz", logits=logits_arr.astype(np.float32))
            meta["cases"][name] = {
                "config": f"configs/{name}.yaml",
                "layout": f"{source}.layout.json",
                "scenes": list(case["scenes"]),
                "window": list(case["window"]) if case.get("window") else None,
                "python_random_seeds": seeds or None,
                "logits_shape": list(logits_arr.shape),
                "inputs": "S2L1C + S1RTC (as S1GRD)" if "S1GRD" in cfg["model"]["init_args"]["model_args"]["backbone_modalities"]
                else "S2L2A bands 2,3,4,9,11,12 / 10000 (HLS reflectance)",
            }
            sys.stdout.write(f"{name} {logits_arr.shape} max |logit| {float(np.abs(logits_arr).max()):.4g}\n")
        if not args.skip_extras:
            torch.save(lightning_extras(workdir), OUT / "lightning_extras.pt")
    meta_path.write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
