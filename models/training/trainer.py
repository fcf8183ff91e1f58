"""The fine-tuning loop: epochs of training steps, validation, LR schedule, early stopping, checkpoints.

What one epoch does mirrors ``terratorch fit`` with the recipe's callbacks (Lightning 2.6): the
train chips in a random order (``RandomSampler``) in batches of ``batch_size`` with the last
partial batch dropped (``GenericMultiModalDataModule(drop_last=True)``), one D4 element per chip
when augmenting, ``step.train_step`` per batch; then the val chips in order, ``step.eval_step``;
``val/loss`` is the batch-size-weighted mean (Lightning's ``on_epoch`` reduction); then
``ModelCheckpoint(monitor="val/loss", mode="min")`` (a strictly lower loss saves ``<name>.ckpt``),
``EarlyStopping(monitor="val/loss", patience)`` (stops after ``patience`` epochs without a strictly
lower loss, or at a non-finite one) and ``ReduceLROnPlateau.step(val_loss)``.

Frozen backbone (the default on CPU): the encoder runs once per chip and D4 element and is cached
(features.py; not for TiM, which samples tokens at every call), so an epoch costs only neck +
decoder + head. Randomness: one ``torch.Generator`` seeded with ``recipe.seed`` draws the order
and the D4 elements, the global generator (dropout) is seeded with it too; both states are saved.

Files in ``out_dir`` (all written to a temporary name and renamed, never half-written):
``<name>.yaml`` (TerraTorch config, first), ``<name>.ckpt`` (best epoch), ``<name>.last.ckpt``
(latest epoch: ``resume=`` continues from it, recipe and random state included),
``metrics.csv`` and ``training_curve.png`` (after every epoch), ``<name>.json`` +
``<name>.safetensors`` (the model card, from the best checkpoint at the end).

Progress: ``set_progress`` after every batch (percent of all epochs); an info line with the loss
about four times per epoch, one per epoch with train loss, val loss, val mIoU and the IoU of each
class; cancellation is checked before every batch and raises ``CancelledError`` saying which
checkpoint was kept.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CancelledError, CheckpointError, ConfigError
from ..core.progress import NullProgress, Progress, check_cancelled
from ..segmentation.checkpoint import load_segmentation_model
from ..segmentation.model import Provenance, SegmentationModel
from .augment import D4_ELEMENTS
from .chip_dataset import ChipDataset, collate
from .dataset import DatasetInfo, read_dataset
from .export import (
    EXTRA_KEY,
    export_card,
    save_checkpoint,
    terratorch_config,
    terratorch_parameters,
    training_checkpoint,
    write_yaml,
)
from .features import FeatureCache
from .history import EpochRecord, epoch_message, write_curve, write_metrics_csv
from .losses import criterion_for
from .metrics import ConfusionMatrix
from .network import build_training_network, encode, load_encoder, set_backbone_trainable_, tim_tokenizer_tensors
from .plan import RunPlan, plan_run
from .recipe import Recipe
from .step import StepContext, eval_step, train_step

RESUMABLE_CHANGES = ("max_epochs", "early_stopping_patience")


def feature_scratch_name() -> str:
    """The feature cache's spill folder in the model folder: named like every unfinished file
    (``*.partial-<pid>``, ``core.job.partial_glob``), so one rule finds what a stopped run leaves."""
    return f"features.partial-{os.getpid()}"


@dataclass(frozen=True)
class TrainingResult:
    """What a finished run produced."""

    checkpoint: Path  # best epoch, Lightning format
    config: Path  # TerraTorch YAML
    card: Path  # the plugin's model card (.json next to its .safetensors)
    last_checkpoint: Path
    metrics_csv: Path
    curve_png: Path
    best_epoch: int
    best_val_loss: float
    best_metrics: dict[str, Any]
    epochs_run: int
    stopped: str  # 'completed' (max_epochs) or 'early_stopping'
    history: tuple[EpochRecord, ...]


@dataclass
class _State:
    history: list[EpochRecord]
    best_loss: float = math.inf
    best_epoch: int = 0
    wait: int = 0
    global_step: int = 0


def _batches(n: int, size: int, order: torch.Tensor | None, drop_last: bool) -> list[list[int]]:
    idx = order.tolist() if order is not None else list(range(n))
    out = [idx[i : i + size] for i in range(0, n, size)]
    return [b for b in out if len(b) == size] if drop_last else out


def _batch(ds: ChipDataset, indices: Sequence[int], images: bool) -> dict[str, Any]:
    if images:
        return collate([ds[i] for i in indices])
    return {"image": {}, "mask": torch.stack([ds.label(i) for i in indices]), "index": torch.tensor(list(indices))}


def _encoder(ctx: StepContext, ds: ChipDataset) -> Callable[[Sequence[int], int], Any]:
    from .augment import d4

    def encode_chips(indices: Sequence[int], k: int) -> Any:
        images = [ds.image(i) for i in indices]
        raw = {m: torch.stack([d4(im[m], k) for im in images]).to(ctx.device) for m in ds.modalities}
        with torch.no_grad(), ctx.autocast():
            return encode(ctx.model.net, ctx.model.standardize(raw))

    return encode_chips


def train(
    dataset: str | os.PathLike[str] | DatasetInfo,
    out_dir: str | os.PathLike[str],
    recipe: Recipe | None = None,
    *,
    model_name: str = "model",
    weights: str | None = None,
    untrained: bool = False,
    device: str | torch.device = "cpu",
    resume: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainingResult:
    """Fine-tune on ``dataset`` with ``recipe`` and write the files of the module docstring into ``out_dir``.

    ``weights``: the pre-trained TerraMind file or folder (None: the catalogue's Hugging Face
    source); ``untrained=True``: deterministic untrained backbone weights (tests only; the card and
    checkpoint say so). ``resume``: a ``<name>.last.ckpt`` of an earlier run (its recipe is used;
    only ``max_epochs`` and ``early_stopping_patience`` may change).
    """
    progress = progress or NullProgress()
    if not model_name or any(c in model_name for c in "/\\:") or model_name.startswith("."):
        raise ConfigError(f"model name '{model_name}' must be a plain file name (no path separators)")
    info = dataset if isinstance(dataset, DatasetInfo) else read_dataset(dataset)
    dev = torch.device(device)
    resumed = _read_resume(resume, recipe) if resume is not None else None
    if resumed:
        changes = {k: getattr(recipe, k) for k in RESUMABLE_CHANGES} if recipe is not None else {}
        recipe = Recipe.from_dict({**resumed["recipe"], **changes})
    recipe = recipe or Recipe()
    plan = plan_run(recipe, info, dev.type)
    recipe = plan.recipe
    for note in plan.notes:
        progress.info(note)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"{model_name}{s}" for k, s in (("best", ".ckpt"), ("last", ".last.ckpt"), ("yaml", ".yaml"))}
    untrained = bool(resumed["untrained_backbone"]) if resumed else untrained
    write_yaml(paths["yaml"], terratorch_config(recipe, info, plan.task_args, plan.means, plan.stds, out),
               _yaml_header(model_name, untrained))  # fmt: skip

    if resumed:
        model = load_segmentation_model(resume, paths["yaml"])  # strict: every tensor from the checkpoint
        net = model.net
        source = resumed["backbone_weights"]
        tim_tensors = resumed["tim_tensors"]
    else:
        progress.info(f"loading the {recipe.backbone} backbone" + (" (UNTRAINED test weights)" if untrained else ""))
        encoder = load_encoder(plan.config, weights=weights, untrained=untrained, progress=progress)
        source = getattr(encoder, "weights_source", {}).get("model", str(weights))
        net = build_training_network(plan.config, encoder, recipe.seed)
        tim_tensors = tim_tokenizer_tensors(plan.config, untrained=untrained, progress=progress)
    model = SegmentationModel(net, plan.config, info.classes, Provenance(str(paths["best"]), str(paths["yaml"]),
                                                                         "lightning", model_name)).to(dev)  # fmt: skip
    set_backbone_trainable_(net, not plan.frozen)
    criterion = criterion_for(recipe.loss, -1, plan.class_weights).to(dev)
    optimizer = torch.optim.AdamW(terratorch_parameters(net), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=recipe.scheduler_factor,
                                                           patience=recipe.scheduler_patience)  # fmt: skip
    scaler = torch.amp.GradScaler(dev.type) if recipe.precision == "fp16" else None
    ctx = StepContext(model, criterion, optimizer, dev, recipe.precision, scaler)
    train_ds = ChipDataset(info, "train", recipe.modalities, recipe.bands)
    val_ds = ChipDataset(info, "val", recipe.modalities, recipe.bands)
    batch_size = recipe.batch_size
    if len(train_ds) < batch_size:
        progress.warn(f"the train split has {len(train_ds)} chips, fewer than the batch size {batch_size}: "
                      f"batches of {len(train_ds)} are used")  # fmt: skip
        batch_size = len(train_ds)
    cached = plan.frozen and recipe.cache_features and not recipe.is_tim
    if cached:
        variants = D4_ELEMENTS if recipe.augment else 1
        ctx.train_cache = FeatureCache(len(train_ds), variants, _encoder(ctx, train_ds), scratch=out / feature_scratch_name())
        ctx.val_cache = FeatureCache(len(val_ds), 1, _encoder(ctx, val_ds), scratch=out / feature_scratch_name())
        progress.info(f"frozen backbone: its features are computed once per chip{' and D4 element' if variants > 1 else ''} "
                      f"and cached ({len(train_ds)} train, {len(val_ds)} val chips)")  # fmt: skip

    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    if recipe.is_tim:  # a token-sampling seed per training forward, from the run's generator
        ctx.encoder_kwargs = lambda: {"seed": int(torch.randint(0, 2**31 - 1, (1,), generator=generator))}
    state = _State(history=[])
    if resumed:
        _restore(resumed, optimizer, scheduler, generator, state)
    extra_base = {"recipe": recipe.to_dict(), "dataset": str(info.folder), "backbone_weights": source,
                  "untrained_backbone": untrained, "format_version": 1}  # fmt: skip
    train_batches = len(_batches(len(train_ds), batch_size, None, True))
    val_batches = len(_batches(len(val_ds), batch_size, None, False))
    stopped, epoch, b = "completed", len(state.history), 0
    try:
        for epoch in range(len(state.history) + 1, recipe.max_epochs + 1):
            t0 = time.monotonic()
            lr = float(optimizer.param_groups[0]["lr"])
            order = torch.randperm(len(train_ds), generator=generator)
            ks = torch.randint(0, D4_ELEMENTS, (len(train_ds),), generator=generator) if recipe.augment \
                else torch.zeros(len(train_ds), dtype=torch.long)  # fmt: skip
            net.train()
            if plan.frozen:
                net.encoder.eval()
            total, count = 0.0, 0
            batches = _batches(len(train_ds), batch_size, order, True)
            for b, idx in enumerate(batches, 1):
                check_cancelled(progress)
                loss = train_step(ctx, _batch(train_ds, idx, not cached), ks[idx].tolist())
                total, count = total + loss * len(idx), count + len(idx)
                state.global_step += 1
                progress.set_progress(100.0 * (epoch - 1 + b / (len(batches) + 1)) / recipe.max_epochs)
                if b % max(1, len(batches) // 4) == 0 and b < len(batches):
                    progress.info(f"epoch {epoch}/{recipe.max_epochs}, batch {b}/{len(batches)}: loss {loss:.4f}")
            net.eval()
            confusion = ConfusionMatrix(info.num_classes, -1)
            vtotal, vcount = 0.0, 0
            train_kwargs = ctx.encoder_kwargs
            for vb, idx in enumerate(_batches(len(val_ds), batch_size, None, False)):
                check_cancelled(progress)
                if recipe.is_tim:  # the same tokens every epoch: val losses stay comparable
                    ctx.encoder_kwargs = lambda vb=vb: {"seed": recipe.seed + vb}
                vtotal += eval_step(ctx, _batch(val_ds, idx, not cached), confusion) * len(idx)
                vcount += len(idx)
            ctx.encoder_kwargs = train_kwargs
            val_loss = vtotal / vcount
            improved = val_loss < state.best_loss  # ModelCheckpoint / EarlyStopping: strictly lower
            if improved:
                state.best_loss, state.best_epoch, state.wait = val_loss, epoch, 0
            else:
                state.wait += 1
            record = EpochRecord(epoch, lr, total / max(count, 1), val_loss, confusion.summary(info.class_names),
                                 time.monotonic() - t0, improved)  # fmt: skip
            state.history.append(record)
            scheduler.step(val_loss)
            ckpt = _checkpoint(net, criterion, plan, recipe, optimizer, scheduler, generator, state, extra_base,
                               paths["best"], train_batches, val_batches, val_loss, tim_tensors)  # fmt: skip
            if improved:
                save_checkpoint(paths["best"], ckpt)
            save_checkpoint(paths["last"], ckpt)
            write_metrics_csv(out / "metrics.csv", state.history, info.class_names)
            write_curve(out / "training_curve.png", state.history, _title(model_name, recipe, untrained))
            progress.info(epoch_message(record, recipe.max_epochs, info.class_names))
            progress.set_progress(100.0 * epoch / recipe.max_epochs)
            if on_epoch is not None:
                on_epoch(record)
            if not math.isfinite(val_loss):
                progress.warn(f"val/loss is {val_loss} at epoch {epoch}: stopping (as EarlyStopping(check_finite=True))")
                stopped = "early_stopping"
                break
            if recipe.early_stopping_patience is not None and state.wait >= recipe.early_stopping_patience:
                progress.info(f"early stopping: val/loss has not improved for {state.wait} epochs "
                              f"(best {state.best_loss:.4f} at epoch {state.best_epoch})")  # fmt: skip
                stopped = "early_stopping"
                break
    except CancelledError:
        if state.best_epoch:
            msg = (f"cancelled in epoch {epoch}, batch {b}; the best checkpoint so far (epoch {state.best_epoch}, "
                   f"val loss {state.best_loss:.4f}) is kept: {paths['best']} with its config {paths['yaml']}")  # fmt: skip
        else:
            msg = f"cancelled in epoch {epoch}, batch {b}, before the first epoch finished: no checkpoint was written"
        progress.info(msg)
        raise CancelledError(msg) from None
    finally:
        for cache in (ctx.train_cache, ctx.val_cache):
            if cache is not None:
                cache.close()
        with contextlib.suppress(OSError):
            (out / feature_scratch_name()).rmdir()  # only when it exists and is empty
    progress.set_progress(100.0)
    best_model = load_segmentation_model(paths["best"], paths["yaml"])  # the card comes from the file itself
    best_model.classes = info.classes
    card = export_card(best_model, out, model_name, title=_title(model_name, recipe, untrained),
                       description=_description(recipe, info, source, untrained, state, plan.frozen))  # fmt: skip
    best = state.history[state.best_epoch - 1]
    return TrainingResult(paths["best"], paths["yaml"], card, paths["last"], out / "metrics.csv",
                          out / "training_curve.png", state.best_epoch, state.best_loss, dict(best.val), len(state.history),
                          stopped, tuple(state.history))  # fmt: skip


def _checkpoint(net: Any, criterion: Any, plan: RunPlan, recipe: Recipe, optimizer: Any, scheduler: Any,
                generator: torch.Generator, state: _State, extra_base: dict[str, Any], best_path: Path,
                train_batches: int, val_batches: int, current: float,
                tim_tensors: dict[str, torch.Tensor]) -> dict[str, Any]:  # fmt: skip
    extra = {**extra_base, "history": [r.to_dict() for r in state.history], "best_epoch": state.best_epoch,
             "best_loss": state.best_loss, "wait": state.wait,
             "rng": {"trainer": generator.get_state(), "torch": torch.get_rng_state()}}  # fmt: skip
    return training_checkpoint(net, plan.task_args, recipe, criterion=criterion, optimizer=optimizer,
                               scheduler=scheduler, epochs=len(state.history), global_step=state.global_step,
                               train_batches=train_batches, val_batches=val_batches, best_path=best_path,
                               best_loss=state.best_loss, current_loss=current, wait=state.wait, extra=extra,
                               extra_tensors=tim_tensors)  # fmt: skip


def _read_resume(path: str | os.PathLike[str], recipe: Recipe | None) -> dict[str, Any]:
    from ..weights.reading import load_torch_file

    ckpt = load_torch_file(Path(path))
    extra = ckpt.get(EXTRA_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(extra, dict) or "recipe" not in extra:
        raise CheckpointError(f"'{path}' is not a checkpoint of this plugin's fine-tuning (no '{EXTRA_KEY}' record)")
    if recipe is not None:
        stored = Recipe.from_dict(extra["recipe"]).to_dict()
        differ = [k for k, v in recipe.to_dict().items() if k not in RESUMABLE_CHANGES and stored.get(k) != v]
        if differ:
            raise ConfigError(f"resuming '{path}' with a different recipe ({', '.join(differ)}); only "
                              f"{', '.join(RESUMABLE_CHANGES)} may change")  # fmt: skip
    tim = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.encoder.tokenizer.")}
    return {**extra, "optimizer_states": ckpt["optimizer_states"], "lr_schedulers": ckpt["lr_schedulers"],
            "global_step": int(ckpt["global_step"]), "tim_tensors": tim}  # fmt: skip


def _restore(resumed: dict[str, Any], optimizer: Any, scheduler: Any, generator: torch.Generator, state: _State) -> None:
    optimizer.load_state_dict(resumed["optimizer_states"][0])
    scheduler.load_state_dict(resumed["lr_schedulers"][0])
    generator.set_state(resumed["rng"]["trainer"])
    torch.set_rng_state(resumed["rng"]["torch"])
    state.history = [EpochRecord.from_dict(d) for d in resumed["history"]]
    state.best_loss, state.best_epoch = float(resumed["best_loss"]), int(resumed["best_epoch"])
    state.wait, state.global_step = int(resumed["wait"]), int(resumed["global_step"])


def _title(name: str, recipe: Recipe, untrained: bool) -> str:
    return f"{name}: {recipe.backbone}" + (" (UNTRAINED backbone, test only)" if untrained else "")


def _yaml_header(name: str, untrained: bool) -> str:
    lines = [f"TerraTorch config of the fine-tuned model '{name}', written by TerraMind for QGIS.",
             "terratorch fit|validate|predict --config <this file> [--ckpt_path <name>.ckpt]"]  # fmt: skip
    if untrained:
        lines.append("UNTRAINED: the backbone started from deterministic untrained test weights.")
    return "\n".join(lines)


def _description(recipe: Recipe, info: DatasetInfo, source: str, untrained: bool, state: _State, frozen: bool) -> str:
    best = state.history[state.best_epoch - 1]
    return (f"Fine-tuned from {recipe.backbone} ({'UNTRAINED test weights' if untrained else source}) on "
            f"{info.folder.name} ({info.splits['train'].chips} train / {info.splits['val'].chips} val chips, "
            f"{info.chip_size} px); best epoch {state.best_epoch}: val loss {state.best_loss:.4f}, "
            f"val mIoU {best.val_miou:.3f}; loss {recipe.loss}, "
            f"{'frozen' if frozen else 'trainable'} backbone.")  # fmt: skip
