"""Golden numbers of fine-tuning (issue 11) from the reference, terratorch 1.2.11 (Lightning 2.6).

Run with the reference venv (dev tool only; the tests never import terratorch)::

    PYTHONPATH=.pluginpath /root/.cache/terramind-reference-venv/bin/python tools/goldens/training.py

It imports this plugin (``terramind_qgis`` through ``.pluginpath``) to write datasets and
checkpoints with OUR writers, and the test helpers in ``tests/unit/training`` (the example
datasets, the fixed step batch, tensor summaries). One CPU thread, float32 matmul precision
"highest" (``import terratorch`` sets "medium"). What it stores in ``tests/goldens/training/``:

1. ``losses.npz``: terratorch's criterion (``SemanticSegmentationTask.configure_losses``) for
   ``ce`` (with and without class weights), ``dice`` (with class weights: TerraTorch ignores
   them) and ``focal``, value and gradient w.r.t. the logits, on fixed logits/targets with ignored
   pixels. ``metrics.npz``: the task's ``val_metrics`` (torchmetrics) on fixed predictions.
2. ``step_<case>.npz``: one ``trainer.fit(max_steps=1)`` of a tiny task on the fixed batch
   (``example_data.step_batch``), all ``model.*`` tensors filled by models/weights/untrained.py,
   head dropout 0, no augmentation, AdamW: the loss, the gradients and the weights after the step
   of every trainable parameter (tensor_summary.py), and every BatchNorm buffer after the step.
3. ``checkpoint.npz`` / ``checkpoint.json``: a checkpoint + YAML written by OUR writer
   (``export.training_checkpoint``, ``terratorch_config``) for a rule-filled S2L2A (six-band subset)
   + S1RTC model over OUR dataset (``example_data.three_class_dataset``), loaded by
   ``SemanticSegmentationTask.load_from_checkpoint`` and through the config
   (``terratorch.cli_tools.build_lightning_cli``): logits on the val chips' first batch as
   TerraTorch's data module delivers it, the batch itself (its filenames, masks, sampled inputs);
   then a one-epoch run of OUR trainer on that dataset, and ``Trainer.validate`` of its checkpoint
   through the YAML (val metrics), and ``Trainer.fit(ckpt_path=<last>)`` resuming it for one epoch.
4. ``tim_layout.json``: the key → shape layout of TerraTorch's tiny TiM task for our TiM recipe (a
   checkpoint our writer made for it loads there strictly: ``tim_loaded_strict`` in goldens.json).
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import terratorch  # noqa: F401  (sets matmul precision to "medium"; reset below)
import torch
from torch.utils.data import DataLoader, Dataset

torch.set_float32_matmul_precision("highest")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "training"))

from example_data import HLS6, step_batch, three_class_dataset  # noqa: E402
from tensor_summary import summarise  # noqa: E402
from terratorch.cli_tools import build_lightning_cli  # noqa: E402
from terratorch.tasks import SemanticSegmentationTask  # noqa: E402

from terramind_qgis.models.segmentation.model import build_pixel_wise_model  # noqa: E402
from terramind_qgis.models.training.export import (  # noqa: E402
    save_checkpoint,
    terratorch_config,
    terratorch_parameters,
    training_checkpoint,
    write_yaml,
)
from terramind_qgis.models.training.losses import criterion_for  # noqa: E402
from terramind_qgis.models.training.plan import plan_run  # noqa: E402
from terramind_qgis.models.training.recipe import Recipe, necks  # noqa: E402
from terramind_qgis.models.training.trainer import train  # noqa: E402
from terramind_qgis.models.weights.untrained import deterministic_state_dict, fill_module_  # noqa: E402

OUT = REPO / "tests" / "goldens" / "training"
CLASS_NAMES = ["Others", "Water", "Trees"]
LR, WEIGHT_DECAY = 1e-3, 0.01
STEP_MODEL_ARGS = {
    "backbone": "terramind_v1_tiny", "backbone_pretrained": False, "backbone_modalities": ["S2L2A"],
    "backbone_merge_method": "mean", "necks": necks(Recipe()), "decoder": "UNetDecoder",
    "decoder_channels": [256, 128, 64, 32], "head_dropout": 0.0, "num_classes": 3,
}  # fmt: skip
WEIGHTS = [0.5, 2.0, 1.25]
STEP_CASES = {
    "ce_weighted_frozen": {"loss": "ce", "class_weights": WEIGHTS, "freeze_backbone": True},
    "dice_weighted_frozen": {"loss": "dice", "class_weights": WEIGHTS, "freeze_backbone": True},
    "focal_frozen": {"loss": "focal", "class_weights": None, "freeze_backbone": True},
    "ce_trainable": {"loss": "ce", "class_weights": None, "freeze_backbone": False},
}
# The checkpoint round trip and the one-epoch run (recipe fields; the dataset: three_class_dataset)
RUN_RECIPE = {"modalities": ["S2L2A", "S1RTC"], "bands": {"S2L2A": list(HLS6)}, "loss": "ce",
              "class_weights": "balanced", "batch_size": 4, "augment": False, "max_epochs": 1, "lr": LR,
              "early_stopping_patience": 3}  # fmt: skip


def loss_goldens() -> dict[str, np.ndarray]:
    """Criterion value and logits gradient; ``<name>`` on a target with every class, ``absent_<name>`` on
    one without class 2 (Dice then counts that class as 0 in its mean)."""
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(2, 3, 12, 10, generator=g) * 2
    target = torch.randint(0, 3, (2, 12, 10), generator=g)
    target[0, :3] = -1
    target[1, :, :2] = -1
    target[1][target[1] == 2] = 0  # class 2 absent from the second sample
    absent = target.clone()
    absent[absent == 2] = 1
    out = {"logits": logits.numpy(), "target": target.numpy(), "absent_target": absent.numpy()}
    for name, loss, weights in (("ce", "ce", None), ("ce_weighted", "ce", WEIGHTS), ("dice", "dice", WEIGHTS),
                                ("focal", "focal", None)):  # fmt: skip
        task = SemanticSegmentationTask(model_args=dict(STEP_MODEL_ARGS), model_factory="EncoderDecoderFactory",
                                        loss=loss, ignore_index=-1, class_weights=weights)  # fmt: skip
        for prefix, y in (("", target), ("absent_", absent)):
            x = logits.clone().requires_grad_(True)
            value = task.criterion(x, y)
            value.backward()
            out[f"{prefix}{name}:value"], out[f"{prefix}{name}:grad"] = np.float64(value.item()), x.grad.numpy()
    return out


def metric_goldens() -> dict[str, np.ndarray]:
    task = SemanticSegmentationTask(model_args=dict(STEP_MODEL_ARGS), model_factory="EncoderDecoderFactory",
                                    loss="ce", ignore_index=-1, class_names=CLASS_NAMES)  # fmt: skip
    g = torch.Generator().manual_seed(5)
    out = {}
    for name, absent in (("all", None), ("absent2", 2)):
        preds = torch.randint(0, 3, (3, 20, 20), generator=g)
        target = torch.randint(-1, 3, (3, 20, 20), generator=g)
        if absent is not None:
            preds[preds == absent] = 0
            target[target == absent] = 1
        task.val_metrics.reset()
        task.val_metrics.update(preds, target)
        computed = task.val_metrics.compute()
        values = {k.removeprefix("val/"): float(v) for k, v in computed.items() if k != "val/Boundary_mIoU"}
        out[f"{name}:preds"], out[f"{name}:target"] = preds.numpy(), target.numpy()
        out[f"{name}:names"] = np.array(sorted(values))
        out[f"{name}:values"] = np.array([values[k] for k in sorted(values)])
    return out


class _Batch(Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": {"S2L2A": self.x[i]}, "mask": self.y[i]}


class _Capture(pl.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.model.named_parameters() if p.grad is not None}
        self.n_params = sum(len(group["params"]) for group in optimizer.param_groups)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.loss = float(outputs["loss"])


def step_golden(case: dict) -> dict[str, np.ndarray]:
    x, y = step_batch()
    task = SemanticSegmentationTask(model_args=copy.deepcopy(STEP_MODEL_ARGS), model_factory="EncoderDecoderFactory",
                                    loss=case["loss"], ignore_index=-1, class_weights=case["class_weights"], lr=LR,
                                    optimizer="AdamW", optimizer_hparams={"weight_decay": WEIGHT_DECAY},
                                    freeze_backbone=case["freeze_backbone"], class_names=CLASS_NAMES)  # fmt: skip
    state = task.state_dict()
    fill = deterministic_state_dict({k: (v.shape, v.dtype) for k, v in state.items() if k.startswith("model.")})
    task.load_state_dict({**state, **fill}, strict=True)
    cap = _Capture()
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, precision="32", callbacks=[cap])  # fmt: skip
    trainer.fit(task, train_dataloaders=DataLoader(_Batch(x, y), batch_size=2, shuffle=False))
    after = {k: v for k, v in task.model.named_parameters() if k in cap.grads}
    buffers = {k: v.numpy() for k, v in task.model.state_dict().items() if "running_" in k or "num_batches" in k}
    out = {"loss": np.float64(cap.loss), "n_params": np.int64(cap.n_params), "x_sum": np.float64(x.sum(dtype=np.float64))}
    out.update(summarise("grad", cap.grads))
    out.update(summarise("after", after))
    out.update({f"buffer:{k}": v for k, v in buffers.items()})
    return out


def _tt_batch(dm, split: str) -> dict:
    """The first batch of ``split`` as TerraTorch's data module hands it to the model (standardised)."""
    loader = dm.val_dataloader() if split == "val" else dm.train_dataloader()
    return dm.aug(next(iter(loader)))  # what on_after_batch_transfer applies (MultimodalNormalize)


def checkpoint_goldens(work: Path) -> tuple[dict[str, np.ndarray], dict]:
    info = three_class_dataset(work / "dataset")
    recipe = Recipe.from_dict(RUN_RECIPE)
    plan = plan_run(recipe, info, "cpu")
    net = build_pixel_wise_model(plan.config)
    fill_module_(net, "model.")
    criterion = criterion_for("ce", -1, plan.class_weights)
    optimizer = torch.optim.AdamW(terratorch_parameters(net), lr=LR)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    ckpt_path = save_checkpoint(work / "filled.ckpt", training_checkpoint(
        net, plan.task_args, plan.recipe, criterion=criterion, optimizer=optimizer, scheduler=scheduler, epochs=1,
        global_step=0, train_batches=0, val_batches=0, best_path=work / "filled.ckpt", best_loss=1.0,
        current_loss=1.0))  # fmt: skip
    yaml_path = write_yaml(work / "filled.yaml", terratorch_config(plan.recipe, info, plan.task_args, plan.means,
                                                                   plan.stds, work / "filled"))  # fmt: skip

    meta: dict = {"class_weights": plan.class_weights}
    task = SemanticSegmentationTask.load_from_checkpoint(ckpt_path, map_location="cpu").eval()  # strict
    meta["state_dict_keys_equal"] = list(task.state_dict()) == list(torch.load(ckpt_path, weights_only=True)["state_dict"])
    cli = build_lightning_cli(["--config", str(yaml_path)], run=False)
    dm = cli.datamodule
    dm.setup("fit")
    meta["splits"] = {"train": [Path(s["mask"]).name for s in dm.train_dataset.samples],
                      "val": [Path(s["mask"]).name for s in dm.val_dataset.samples]}  # fmt: skip
    batch = _tt_batch(dm, "val")
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    cli.model.load_state_dict(state, strict=True)
    with torch.no_grad():
        logits = task(batch["image"]).output
        via_cli = cli.model.eval()(batch["image"]).output
    meta["cli_equals_load_from_checkpoint"] = bool(torch.equal(logits, via_cli))
    out = {"logits": logits.numpy(), "mask": batch["mask"].numpy()}
    out.update(summarise("input", {m: v for m, v in batch["image"].items()}))
    meta["val_batch_files"] = [Path(p).name for p in batch["filename"]["mask"]]

    # One epoch of OUR trainer, validated and resumed by Lightning through OUR YAML.
    result = train(info, work / "run", recipe, model_name="run", untrained=True)
    cli = build_lightning_cli(["--config", str(result.config)], run=False)
    metrics = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=str(result.checkpoint))[0]
    meta["validate"] = {k: float(v) for k, v in metrics.items()}
    cli = build_lightning_cli(["--config", str(result.config), "--trainer.max_epochs", "2"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(result.last_checkpoint))
    ours = torch.load(result.last_checkpoint, weights_only=True)
    meta["resumed"] = {"current_epoch": int(cli.trainer.current_epoch), "global_step": int(cli.trainer.global_step),
                       "our_global_step": int(ours["global_step"])}  # fmt: skip
    return out, meta


def tim_layout(work: Path) -> tuple[dict, bool]:
    """Key → shape of TerraTorch's tiny TiM task for our TiM recipe, and whether a checkpoint written by
    our writer (rule-filled network + untrained TiM tokenizer) loads into it strictly."""
    from terramind_qgis.models.segmentation.config import config_from_task_args
    from terramind_qgis.models.training.network import tim_tokenizer_tensors
    from terramind_qgis.models.training.recipe import task_args

    recipe = Recipe(backbone="terramind_v1_tiny_tim")
    targs = task_args(recipe, 2, ("Others", "Water"), None, True)
    task = SemanticSegmentationTask(**copy.deepcopy(targs))
    layout = {k: list(v.shape) for k, v in task.state_dict().items()}
    groups: dict[int, list[str]] = {}
    for key, tensor in task.state_dict(keep_vars=True).items():  # names of one shared tensor
        groups.setdefault(id(tensor), []).append(key)
    shared = sorted(g for g in groups.values() if len(g) > 1)
    cfg = config_from_task_args(targs, {})
    net = build_pixel_wise_model(cfg)
    fill_module_(net, "model.")
    optimizer = torch.optim.AdamW(terratorch_parameters(net))
    ckpt = training_checkpoint(net, targs, recipe, criterion=criterion_for("dice", -1, None), optimizer=optimizer,
                               scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer), epochs=1,
                               global_step=0, train_batches=0, val_batches=0, best_path=work / "tim.ckpt",
                               best_loss=1.0, current_loss=1.0,
                               extra_tensors=tim_tokenizer_tensors(cfg, untrained=True))  # fmt: skip
    save_checkpoint(work / "tim.ckpt", ckpt)
    SemanticSegmentationTask.load_from_checkpoint(work / "tim.ckpt", map_location="cpu")  # strict; raises if not
    return {"tensors": layout, "shared": shared, "task_args": targs}, True


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta: dict = {
        "reference": {"terratorch": importlib.metadata.version("terratorch"), "torch": torch.__version__,
                      "lightning": importlib.metadata.version("lightning"),
                      "segmentation_models_pytorch": importlib.metadata.version("segmentation_models_pytorch"),
                      "torchmetrics": importlib.metadata.version("torchmetrics"), "matmul_precision": "highest",
                      "threads": 1},  # fmt: skip
        "lr": LR, "weight_decay": WEIGHT_DECAY, "class_names": CLASS_NAMES, "step_model_args": STEP_MODEL_ARGS,
        "step_cases": STEP_CASES, "run_recipe": RUN_RECIPE,
    }  # fmt: skip
    np.savez_compressed(OUT / "losses.npz", **loss_goldens())
    np.savez_compressed(OUT / "metrics.npz", **metric_goldens())
    for name, case in STEP_CASES.items():
        np.savez_compressed(OUT / f"step_{name}.npz", **step_golden(case))
    with tempfile.TemporaryDirectory() as tmp:
        layout, meta["tim_loaded_strict"] = tim_layout(Path(tmp))
        (OUT / "tim_layout.json").write_text(json.dumps(layout, indent=0))
        arrays, meta["checkpoint"] = checkpoint_goldens(Path(tmp))
    np.savez_compressed(OUT / "checkpoint.npz", **arrays)
    (OUT / "goldens.json").write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
