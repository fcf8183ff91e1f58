"""Task ``finetune``: fine-tune a TerraMind backbone on a dataset folder; a TerraTorch-compatible model out.

Job: ``model.id`` = the backbone (``terramind_v1_<tiny|small|base|large>[_tim]``), its pre-trained
weights from ``model.weights`` or the Hugging Face Hub (its cache offline) as every task, or
``model.untrained`` (deterministic untrained weights, for tests: the files say so); ``params``
(models/core/training_params.py ``FinetuneParams``): ``dataset`` (a folder of
``prepare_training_data``), ``name``, ``modalities``, ``bands``, ``loss``, ``class_weights``, ``lr``,
``epochs``, ``batch_size``, ``patience``, ``backbone`` (auto: frozen on CPU), ``augment``,
``statistics``, ``seed``, ``resume`` (a ``<name>.last.ckpt``); ``outputs.model`` = the folder the
model is written to; ``device``, ``precision``.

The loop is models/training/trainer.py (IBM's TerraMind recipe, each choice overridable): progress
per batch, one info line per epoch, cancel at any batch (the best checkpoint so far is kept and the
message says so). Then the best checkpoint is evaluated on the test split (per-class IoU, F1,
accuracy, confusion matrix: ``<name>.test.json`` and ``<name>.confusion.csv``).

Result ``outputs``: ``checkpoint`` (``<name>.ckpt``, Lightning), ``config`` (``<name>.yaml``,
TerraTorch), ``card`` (``<name>.json``), ``last_checkpoint``, ``metrics`` (CSV per epoch), ``curve``
(PNG), ``evaluation`` (JSON) and ``confusion`` (CSV) when the test split has chips; ``metrics``:
``best_epoch``, ``best_val_loss``, ``epochs_run``, ``stopped``, ``val`` (the best epoch's), ``test``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.errors import ConfigError
from ...core.job import Job
from ...core.training_params import DatasetSummary, FinetuneParams, check_model_folder
from .context import RunContext

FIELD = "params.dataset"


@dataclass
class FinetuneRequest:
    job: Job
    params: FinetuneParams
    summary: DatasetSummary
    folder: str

    def close(self) -> None:
        pass


def validate(job: Job, backend: str) -> FinetuneRequest:
    if backend != "torch":
        raise ConfigError("fine-tuning needs torch (ONNX Runtime runs models, it does not train them)", field="params.backend")
    if job.inputs:
        raise ConfigError("fine-tuning reads its chips from the dataset folder; give no input layers", field="inputs")
    params = FinetuneParams.from_params(job.params)
    summary = DatasetSummary.read(params.dataset)
    params.check(job.model.id, summary)
    folder = job.outputs.get("model") or ""
    check_model_folder(folder, params.name, params.resume)
    real, data = os.path.realpath(folder), os.path.realpath(params.dataset)
    if real == data or real.startswith(data + os.sep):
        raise ConfigError("is the dataset folder (or inside it); write the model to a folder of its own", field="outputs.model")
    if params.resume and not os.path.isfile(params.resume):
        raise ConfigError(f"'{params.resume}' does not exist; give the <name>.last.ckpt of an earlier run", field="params.resume")
    return FinetuneRequest(job, params, summary, folder)


def _recipe(req: FinetuneRequest) -> Any:
    from ...training.recipe import Recipe

    p = req.params
    cw: Any = None if p.class_weights == "none" else p.class_weights
    return Recipe(backbone=req.job.model.id, modalities=p.modalities or tuple(req.summary.modalities), bands=dict(p.bands),
                  loss=p.loss, class_weights=cw, lr=p.lr, max_epochs=p.epochs, batch_size=p.batch_size,
                  augment=p.augment, freeze_backbone=p.freeze_backbone, precision=req.job.precision, seed=p.seed,
                  early_stopping_patience=p.patience or None, statistics=p.statistics)  # fmt: skip


def evaluate(checkpoint: Path, config: Path, dataset: Any, recipe: Any, device: Any, progress: Any) -> dict[str, Any] | None:
    """Per-class IoU, F1, accuracy and the confusion matrix of ``checkpoint`` on the test split (None: no test chips)."""
    import torch

    from ...segmentation.checkpoint import load_segmentation_model
    from ...training.chip_dataset import ChipDataset, collate
    from ...training.metrics import ConfusionMatrix

    test = ChipDataset(dataset, "test", recipe.modalities, recipe.bands)
    if len(test) == 0:
        return None
    model = load_segmentation_model(checkpoint, config, device=device).eval()
    confusion = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    with torch.no_grad():
        for start in range(0, len(test), recipe.batch_size):
            batch = collate([test[i] for i in range(start, min(start + recipe.batch_size, len(test)))])
            raw = {m: x.to(device) for m, x in batch["image"].items()}
            logits = model(raw, seed=recipe.seed + start)
            confusion.update(logits.cpu(), batch["mask"])
    s = confusion.per_class()
    names = list(dataset.class_names)
    summary = confusion.summary(names)
    out = {
        "chips": len(test), "pixels": int(confusion.matrix.sum()), "classes": names,
        "iou": {n: float(v) for n, v in zip(names, s["iou"])}, "f1": {n: float(v) for n, v in zip(names, s["f1"])},
        "accuracy": {n: float(v) for n, v in zip(names, s["recall"])},
        "mIoU": summary["mIoU"], "F1_Score": summary["F1_Score"], "Accuracy": summary["Accuracy"],
        "Pixel_Accuracy": summary["Pixel_Accuracy"], "confusion_matrix": confusion.matrix.tolist(),
        "confusion_matrix_layout": "rows: true class, columns: predicted class (ignored pixels left out)",
    }  # fmt: skip
    progress.info(f"test split ({len(test)} chips): mIoU {out['mIoU']:.3f}, pixel accuracy {out['Pixel_Accuracy']:.3f}; "
                  "IoU " + ", ".join(f"{n} {v:.3f}" for n, v in out["iou"].items()))  # fmt: skip
    return out


def confusion_csv(evaluation: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = evaluation["classes"]
    w.writerow(["true \\ predicted", *names, "IoU", "F1", "accuracy"])
    for n, row in zip(names, evaluation["confusion_matrix"]):
        w.writerow([n, *row, f"{evaluation['iou'][n]:.6f}", f"{evaluation['f1'][n]:.6f}", f"{evaluation['accuracy'][n]:.6f}"])
    return buf.getvalue()


def run(req: FinetuneRequest, ctx: RunContext) -> dict[str, Any]:
    from ...training.dataset import read_dataset
    from ...training.history import write_text_atomic
    from ...training.trainer import train

    job, p = req.job, req.params
    info = read_dataset(p.dataset)
    recipe = _recipe(req)
    device = ctx.device.device
    ctx.progress.info(f"fine-tuning {job.model.id} on {info.folder.name}: {info.splits['train'].chips} train, "
                      f"{info.splits['val'].chips} val, {info.splits['test'].chips} test chips of {info.chip_size} px; "
                      f"loss {recipe.loss}, lr {recipe.lr:g}, batch size {recipe.batch_size}, up to {recipe.max_epochs} "
                      f"epochs on {ctx.device.description}")  # fmt: skip
    os.makedirs(req.folder, exist_ok=True)
    before = set(os.listdir(req.folder))
    try:
        result = train(info, req.folder, recipe, model_name=p.name, weights=job.model.weights,
                       untrained=job.model.untrained, device=device, resume=p.resume, progress=ctx.progress)  # fmt: skip
    except BaseException:
        if not os.path.exists(os.path.join(req.folder, f"{p.name}.ckpt")):  # no model came of it: leave no stray files
            for name in set(os.listdir(req.folder)) - before:
                path = os.path.join(req.folder, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
        raise
    folder = Path(req.folder)
    outputs = {"checkpoint": str(result.checkpoint), "config": str(result.config), "card": str(result.card),
               "last_checkpoint": str(result.last_checkpoint), "metrics": str(result.metrics_csv),
               "curve": str(result.curve_png)}  # fmt: skip
    evaluation = evaluate(result.checkpoint, result.config, info, recipe, device, ctx.progress)
    if evaluation is not None:
        outputs["evaluation"] = str(write_text_atomic(folder / f"{p.name}.test.json", json.dumps(evaluation, indent=1)))
        outputs["confusion"] = str(write_text_atomic(folder / f"{p.name}.confusion.csv", confusion_csv(evaluation)))
    else:
        ctx.progress.warn("the dataset's test split is empty: no test evaluation")
    ctx.progress.info(f"best epoch {result.best_epoch} (val loss {result.best_val_loss:.4f}); the model: {result.checkpoint} "
                      f"with {result.config}, or the card {result.card}")  # fmt: skip
    val = {k: v for k, v in result.best_metrics.items() if k != "confusion_matrix"}
    metrics = {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
               "stopped": result.stopped, "val": val, "test": evaluation,
               "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in info.classes]}  # fmt: skip
    return {"outputs": outputs, "metrics": metrics}

