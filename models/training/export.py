"""What a fine-tuning run writes: a Lightning ``.ckpt``, a TerraTorch YAML and the plugin's model card.

The checkpoint is the dictionary Lightning 2.6's ``ModelCheckpoint`` saves for a
``SemanticSegmentationTask`` trained by ``terratorch fit`` (compare
``tests/goldens/segmentation/lightning_extras.pt``, the extra contents of a real one):

- ``state_dict``: ``model.`` + the pixel-wise model's keys in TerraTorch's module order (encoder,
  decoder, head, neck), every tensor contiguous and on the CPU, plus ``criterion.weight`` when the
  loss is ``ce`` with class weights (``nn.CrossEntropyLoss`` keeps them as a buffer); for TiM also
  the TiM modality's tokenizer, which TerraTorch's ``TerraMindTiM`` holds (and never runs) and our
  loader drops (models/segmentation/checkpoint.py);
- ``hyper_parameters``: every ``SemanticSegmentationTask.__init__`` argument, as the Lightning CLI
  stores them (``_class_path``, ``_instantiator``), with ``model_args.backbone_pretrained: false``
  so that ``load_from_checkpoint`` builds the model offline (the weights are in ``state_dict``);
  ``hparams_name: "kwargs"``;
- ``epoch`` (0-based index of the last finished epoch), ``global_step`` (optimizer steps),
  ``pytorch-lightning_version``, ``loops`` (the fit loop's progress counters), ``callbacks``
  (``EarlyStopping`` and ``ModelCheckpoint`` state under Lightning's state keys),
  ``optimizer_states`` (AdamW, parameters indexed in the task's ``parameters()`` order) and
  ``lr_schedulers`` (ReduceLROnPlateau) — so ``terratorch fit --ckpt_path`` can resume it;
- ``terramind_qgis``: this plugin's own record (recipe, per-epoch history, random-number states,
  provenance); Lightning ignores unknown top-level keys.

Everything in it is a tensor, number, string or container: it loads with
``torch.load(weights_only=True)``. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..segmentation.export import export_model
from ..segmentation.model import SegmentationModel
from ..segmentation.pixel_wise_model import PixelWiseModel
from .dataset import IGNORE_INDEX, LABEL_FOLDER, LABEL_SUFFIX, DatasetInfo
from .recipe import PRECISIONS, Recipe

LIGHTNING_VERSION = "2.6.6"  # the checkpoint format mirrored (Lightning of the terratorch 1.2.11 reference)
TASK_CLASS = "terratorch.tasks.SemanticSegmentationTask"
EXTRA_KEY = "terramind_qgis"
TORCH_ORDER = ("encoder", "decoder", "head", "neck")  # TerraTorch PixelWiseModel registration order
EARLY_STOPPING_KEY = "EarlyStopping{'monitor': 'val/loss', 'mode': 'min'}"
CHECKPOINT_KEY = ("ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min', 'every_n_train_steps': 0, "
                  "'every_n_epochs': 1, 'train_time_interval': None}")  # fmt: skip


def terratorch_parameters(net: PixelWiseModel) -> list[torch.nn.Parameter]:
    """The model's parameters in the order of TerraTorch's ``task.parameters()`` (optimizer indices)."""
    return [p for part in TORCH_ORDER for p in getattr(net, part).parameters()]


def task_state_dict(net: PixelWiseModel, criterion: torch.nn.Module | None = None,
                    extra: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """The Lightning ``state_dict`` of the task: ``model.*`` in TerraTorch's order, then ``criterion.*``.

    ``extra``: tensors TerraTorch's model holds and ours does not (the TiM tokenizer,
    ``encoder.tokenizer.<key>.*``), added after the encoder's own.
    """
    out: dict[str, torch.Tensor] = {}
    for part in TORCH_ORDER:
        for key, value in getattr(net, part).state_dict().items():
            out[f"model.{part}.{key}"] = value.detach().cpu().contiguous()
        if part == "encoder":
            out.update({f"model.{k}": v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    if criterion is not None:
        out.update({f"criterion.{k}": v.detach().cpu().contiguous() for k, v in criterion.state_dict().items()})
    return out


def hyper_parameters(task_args: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """``SemanticSegmentationTask`` hyper-parameters as the Lightning CLI records them."""
    return {
        "_class_path": TASK_CLASS,
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "model_args": dict(task_args["model_args"]),
        "model_factory": task_args["model_factory"],
        "model": None,
        "loss": task_args["loss"],
        "aux_heads": None,
        "aux_loss": None,
        "class_weights": task_args["class_weights"],
        "ignore_index": task_args["ignore_index"],
        "lr": recipe.lr,
        "optimizer": "AdamW",
        "optimizer_hparams": {"weight_decay": recipe.weight_decay},
        "scheduler": "ReduceLROnPlateau",
        "scheduler_hparams": {"factor": recipe.scheduler_factor, "patience": recipe.scheduler_patience},
        "freeze_backbone": task_args["freeze_backbone"],
        "freeze_decoder": task_args["freeze_decoder"],
        "freeze_head": False,
        "plot_on_val": 10,
        "class_names": list(task_args["class_names"]),
        "tiled_inference_parameters": None,
        "test_dataloaders_names": None,
        "lr_overrides": None,
        "output_on_inference": "prediction",
        "output_most_probable": True,
        "path_to_record_metrics": None,
        "tiled_inference_on_testing": False,
        "tiled_inference_on_validation": False,
    }


def _progress(n: int, *, started: bool = True, processed: bool = True) -> dict[str, int]:
    d = {"ready": n, "completed": n}
    if started:
        d["started"] = n
    if processed:
        d["processed"] = n
    return d


def lightning_loops(epochs_done: int, steps: int, train_batches: int, val_batches: int) -> dict[str, Any]:
    """The fit loop's counters after ``epochs_done`` epochs, as saved at the end of the last validation."""
    e = int(epochs_done)
    epoch_current = {"ready": e, "started": e, "processed": e, "completed": e - 1}
    step = {"current": _progress(train_batches, started=False, processed=False),
            "total": _progress(steps, started=False, processed=False)}  # fmt: skip
    zero = {"current": _progress(train_batches, processed=False), "total": _progress(steps, processed=False)}
    none = {"current": {"ready": 0, "completed": 0}, "total": {"ready": 0, "completed": 0}}
    empty_batches = {"current": _progress(0), "total": _progress(0)}
    return {
        "fit_loop": {
            "state_dict": {},
            "epoch_loop.state_dict": {"_batches_that_stepped": steps},
            "epoch_loop.batch_progress": {"total": _progress(steps), "current": _progress(train_batches),
                                          "is_last_batch": True},  # fmt: skip
            "epoch_loop.scheduler_progress": {"total": {"ready": e - 1, "completed": e - 1},
                                              "current": {"ready": 0, "completed": 0}},  # fmt: skip
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {"step": step, "zero_grad": zero}},
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": none,
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": {"total": _progress(val_batches * e), "current": _progress(val_batches),
                                                   "is_last_batch": True},  # fmt: skip
            "epoch_progress": {"total": dict(epoch_current), "current": dict(epoch_current)},
        },
        "validate_loop": {"state_dict": {}, "batch_progress": {**empty_batches, "is_last_batch": False}},
        "test_loop": {"state_dict": {}, "batch_progress": {**empty_batches, "is_last_batch": False}},
        "predict_loop": {"state_dict": {}, "batch_progress": empty_batches},
    }


def callback_states(best_path: str, best_score: float, current_score: float, wait_count: int, patience: int | None,
                    dirpath: str) -> dict[str, Any]:  # fmt: skip
    """``EarlyStopping`` (when used) and ``ModelCheckpoint`` state under Lightning's ``state_key``s."""
    best = torch.tensor(float(best_score))
    out: dict[str, Any] = {
        CHECKPOINT_KEY: {
            "monitor": "val/loss", "best_model_score": best, "best_model_path": best_path,
            "current_score": torch.tensor(float(current_score)), "dirpath": dirpath,
            "best_k_models": {best_path: best}, "kth_best_model_path": best_path, "kth_value": best,
            "last_model_path": "",
        }
    }  # fmt: skip
    if patience is not None:
        out[EARLY_STOPPING_KEY] = {"wait_count": int(wait_count), "stopped_epoch": 0, "best_score": best,
                                   "patience": int(patience), "stopping_reason": 0,
                                   "stopping_reason_message": None}  # fmt: skip
    return out


def training_checkpoint(
    net: PixelWiseModel,
    task_args: Mapping[str, Any],
    recipe: Recipe,
    *,
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epochs: int,
    global_step: int,
    train_batches: int,
    val_batches: int,
    best_path: str | os.PathLike[str],
    best_loss: float,
    current_loss: float,
    wait: int = 0,
    extra: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The checkpoint dictionary of the module docstring after ``epochs`` finished epochs."""
    with_weights = task_args["loss"] == "ce" and task_args.get("class_weights") is not None
    best = Path(best_path)
    return {
        "epoch": int(epochs) - 1,
        "global_step": int(global_step),
        "pytorch-lightning_version": LIGHTNING_VERSION,
        "state_dict": task_state_dict(net, criterion if with_weights else None, extra_tensors),
        "loops": lightning_loops(epochs, global_step, train_batches, val_batches),
        "callbacks": callback_states(str(best), best_loss, current_loss, wait, recipe.early_stopping_patience,
                                     str(best.parent)),  # fmt: skip
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters(task_args, recipe),
        EXTRA_KEY: dict(extra or {}),
    }


def save_checkpoint(path: str | os.PathLike[str], ckpt: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temporary name, then rename: the file is complete or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        torch.save(dict(ckpt), partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def data_section(recipe: Recipe, info: DatasetInfo, means: Mapping[str, Sequence[float]],
                 stds: Mapping[str, Sequence[float]]) -> dict[str, Any]:  # fmt: skip
    """``data:`` of the TerraTorch config: ``GenericMultiModalDataModule`` over the dataset folder."""
    root = info.folder.resolve()
    roots = {m: str(root / info.modalities[m].folder) for m in recipe.modalities}
    args: dict[str, Any] = {
        "task": "segmentation",
        "batch_size": recipe.batch_size,
        "num_workers": 0,
        "modalities": list(recipe.modalities),
        "rgb_indices": {recipe.modalities[0]: [0]},
        **{f"{s}_data_root": dict(roots) for s in ("train", "val", "test")},
        **{f"{s}_label_data_root": str(root / LABEL_FOLDER) for s in ("train", "val", "test")},
        **{f"{s}_split": str(root / info.splits[s].file) for s in ("train", "val", "test")},
        "image_grep": {m: f"*{info.modalities[m].suffix}" for m in recipe.modalities},
        "label_grep": f"*{LABEL_SUFFIX}",
        "no_label_replace": IGNORE_INDEX,
        "no_data_replace": recipe.no_data_replace,
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
        "means": {m: list(means[m]) for m in recipe.modalities},
        "stds": {m: list(stds[m]) for m in recipe.modalities},
    }
    if recipe.bands:
        args["dataset_bands"] = {m: list(info.modalities[m].bands) for m in recipe.bands}
        args["output_bands"] = {m: list(b) for m, b in recipe.bands.items()}
    if recipe.augment:
        args["train_transform"] = [{"class_path": "albumentations.D4"},
                                   {"class_path": "albumentations.pytorch.ToTensorV2"}]  # fmt: skip
    return {"class_path": "terratorch.datamodules.GenericMultiModalDataModule", "init_args": args}


def terratorch_config(recipe: Recipe, info: DatasetInfo, task_args: Mapping[str, Any],
                      means: Mapping[str, Sequence[float]], stds: Mapping[str, Sequence[float]],
                      out_dir: str | os.PathLike[str]) -> dict[str, Any]:  # fmt: skip
    """The Lightning CLI config ``terratorch fit|validate|predict --config`` takes for this run."""
    out = Path(out_dir).resolve() / "terratorch"
    callbacks: list[dict[str, Any]] = [{"class_path": "LearningRateMonitor", "init_args": {"logging_interval": "epoch"}}]
    if recipe.early_stopping_patience is not None:
        callbacks.append({"class_path": "EarlyStopping",
                          "init_args": {"monitor": "val/loss", "patience": recipe.early_stopping_patience}})  # fmt: skip
    callbacks.append({"class_path": "ModelCheckpoint",
                      "init_args": {"monitor": "val/loss", "mode": "min", "dirpath": str(out / "checkpoints"),
                                    "filename": "best_val_loss"}})  # fmt: skip
    return {
        "seed_everything": recipe.seed,
        "trainer": {
            "accelerator": "auto", "strategy": "auto", "devices": 1, "num_nodes": 1,
            "precision": PRECISIONS[recipe.precision],
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(out)}},
            "callbacks": callbacks, "max_epochs": recipe.max_epochs, "log_every_n_steps": 5,
            "default_root_dir": str(out), "enable_progress_bar": False,
        },  # fmt: skip
        "data": data_section(recipe, info, means, stds),
        "model": {"class_path": TASK_CLASS, "init_args": {k: v for k, v in task_args.items()}},
        "optimizer": {"class_path": "torch.optim.AdamW",
                      "init_args": {"lr": recipe.lr, "weight_decay": recipe.weight_decay}},  # fmt: skip
        "lr_scheduler": {"class_path": "ReduceLROnPlateau",
                         "init_args": {"monitor": "val/loss", "factor": recipe.scheduler_factor,
                                       "patience": recipe.scheduler_patience}},  # fmt: skip
    }


def write_yaml(path: str | os.PathLike[str], config: Mapping[str, Any], header: str = "") -> Path:
    """The config as YAML (safe dumper, keys in order), with ``header`` lines as comments; atomic."""
    import yaml

    path = Path(path)
    text = "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(dict(config), sort_keys=False)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path


def export_card(model: SegmentationModel, folder: str | os.PathLike[str], model_id: str, *, title: str = "",
                description: str = "") -> Path:  # fmt: skip
    """The plugin's model card (``<id>.json`` + ``<id>.safetensors``), models/segmentation/export.py."""
    return export_model(model, folder, model_id, title=title, description=description)
