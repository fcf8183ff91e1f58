"""Task ``segment``: a TerraTorch fine-tuned TerraMind segmentation model, tile by tile.

Job: ``model.weights`` = the model file: a Lightning ``.ckpt``, a state dict (``.pt``/``.pth``/
``.safetensors``) or a plugin model card (``.json``, models/segmentation/export.py); ``model.id``
= a display name. ``params``: ``config`` (the TerraTorch YAML; optional for a ``.ckpt`` with
hyper-parameters, ignored for cards), ``classes`` (names/colours overriding the model's,
models/core/classes.py), ``probabilities`` (bool; default: whether a path is given),
``seed`` (TiM models only, default 0). ``inputs``: keyed by modality name (``S2L1C``, ``S1GRD``,
...), one for each input of the model, with the bands the model reads in its order (a band-subset
model such as burn scars reads its 6 bands; map them with ``bands``). ``outputs``: ``classes``
(required), ``probabilities`` (optional).

Per tile: raw values (nodata/NaN → the config's ``no_data_replace``) → standardised with the
config's means/stds → logits. Logits of overlapping tiles are blended, then ``classes`` = argmax
(uint8, colour table + class names, nodata 255 exactly where an input had nodata) and
``probabilities`` = softmax of the blended logits (float32, one band per class).

TiM models sample tokens: each model call uses ``tile_seed(seed, row, col, bits=32)`` of its first
tile (``common.py``) as the generation seed, so a run reproduces with the same seed, inputs, extent,
tiling and batch size (and device).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...core import catalogue
from ...backends.tasks import describe_onnx_segmentation, job_backend, load_onnx_segmentation, onnx_segment_predictor
from ...core.catalogue import ModelSpec
from ...engine import InputStack, OutputRaster, Released, WorkingGrid, run_tiled
from ...core.errors import ConfigError
from ...core.job import Job
from ...core.modalities import Modality, get_modality
from ...core.progress import Progress
from ..device import OomBackoff
from . import common
from .context import RunContext

MAX_CLASSES = 255  # uint8 class ids 0..254; 255 is nodata


@dataclass(frozen=True)
class SegmentRequest:
    job: Job
    config: Any  # models.segmentation.config.SegmentationConfig
    config_path: str | None
    classes: str | None
    seed: int
    paths: dict[str, str]
    unused_inputs: tuple[str, ...]
    grid: WorkingGrid
    stack: InputStack


class _FillStack(InputStack):
    """An input stack whose invalid pixels hold ``value`` (the config's ``no_data_replace``) instead of 0."""

    def __init__(self, stack: InputStack, value: float) -> None:
        super().__init__(stack.inputs, stack.grid)
        self.value = value

    def read_tile(self, y: int, x: int, size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        data, valid = super().read_tile(y, x, size)
        for d in data.values():
            d[:, ~valid] = self.value
        return data, valid


def input_modality(spec: Any) -> Modality:
    """The modality an input of the model reads, narrowed to its band subset (names, labels, stats)."""
    base = get_modality(spec.modality)
    if not spec.band_subset:
        return base
    labels = tuple(base.band_labels[base.bands.index(b)] if b in base.bands else b for b in spec.bands)
    return replace(base, bands=tuple(spec.bands), band_labels=labels, mean=tuple(spec.mean), std=tuple(spec.std))


def missing_inputs_message(config: Any, missing: list[Any]) -> str:
    parts = [f"{s.modality} ({len(s.bands)} band{'s' if len(s.bands) != 1 else ''}: {', '.join(s.bands)})" for s in missing]
    return (
        f"the fine-tuned model ({config.backbone}) needs input {', '.join(parts)}, which was not given; "
        f"give a layer for {' and '.join('INPUT_' + s.modality for s in missing)}"
    )


def open_model_inputs(job: Job, config: Any) -> tuple[WorkingGrid, InputStack]:
    """Open the inputs the model reads (first = the grid's reference), checked against its bands."""
    specs = list(config.inputs)
    missing = [s for s in specs if s.modality not in job.inputs]
    if missing:
        raise ConfigError(missing_inputs_message(config, missing))
    grid, stack = common.open_inputs(job, [s.modality for s in specs], {s.modality: input_modality(s) for s in specs})
    return grid, (_FillStack(stack, config.no_data_replace) if config.no_data_replace != 0 else stack)


def validate(job: Job) -> SegmentRequest:
    """Check the job and read the model's description (no weights are loaded)."""
    job = common.canonical_job(job)
    if not job.model.weights:
        raise ConfigError("segment needs the fine-tuned model file (model.weights: a .ckpt, .pt, .safetensors or card .json)")
    if job.model.untrained:
        raise ConfigError("segment runs your fine-tuned weights; untrained weights are not available for it")
    params = job.params
    config_path = params.get("config") or None
    if job_backend(job) == "onnx":
        config = describe_onnx_segmentation(job)
    else:
        from ...segmentation.checkpoint import describe_model_file

        config = describe_model_file(job.model.weights, config_path)
    if config.num_classes > MAX_CLASSES - 1:
        raise ConfigError(f"the model has {config.num_classes} classes; class rasters hold at most {MAX_CLASSES - 1}")
    probabilities = bool(params.get("probabilities", "probabilities" in job.outputs))
    paths = common.check_output_paths(job, ["classes"] + (["probabilities"] if probabilities else []))
    classes = params.get("classes") or None
    if classes is not None and not isinstance(classes, str):
        raise ConfigError(f"parameter 'classes' must be text like '0: Others #D9D9D9; 1: Flood', got {classes!r}")
    used = {s.modality for s in config.inputs}
    unused = tuple(k for k in job.inputs if k not in used)
    grid, stack = open_model_inputs(job, config)
    return SegmentRequest(job, config, config_path, classes, common.param_int(params, "seed", 0), paths, unused, grid, stack)


def _spec_for_tags(req: SegmentRequest, model: Any) -> ModelSpec:
    return ModelSpec(id=model.provenance.model_id, kind="terramind", title="fine-tuned segmentation model",
                     config=catalogue.get(req.config.catalogue_id).config, weights=None, official=False)  # fmt: skip


def _tagged(req: SegmentRequest, model: Any, spec: OutputRaster, ctx: RunContext) -> OutputRaster:
    """``spec`` with the common tags plus the fine-tuned model's backbone, config and classes."""
    spec = common.tagged(spec, req.job, _spec_for_tags(req, model), req.grid, model, ctx.device.description)
    return replace(spec, tags={
        **spec.tags,
        "TERRAMIND_BACKBONE": req.config.backbone,
        "TERRAMIND_FINETUNED_CONFIG": str(req.config_path or model.provenance.config or "checkpoint hyper_parameters"),
        "TERRAMIND_CLASSES": json.dumps([[c.value, c.name, c.color] for c in model.classes]),
    })  # fmt: skip


def _predictor(req: SegmentRequest, model: Any, ctx: RunContext):  # noqa: ANN202
    import torch

    backoff = OomBackoff(req.job.tiling.batch_size, ctx.progress)
    device = ctx.device.device
    specs = list(req.config.inputs)

    def predict(tiles: list, inputs: dict[str, np.ndarray], progress: Progress) -> dict[str, np.ndarray]:
        x = {s.name: torch.from_numpy(inputs[s.modality]) for s in specs}  # {config name: (B, C, T, T)} raw

        def chunk(a: int, b: int) -> np.ndarray:
            seed = common.tile_seed(req.seed, tiles[a].row, tiles[a].col, bits=32) if model.is_stochastic else None
            with torch.inference_mode(), ctx.device.autocast():
                logits = model({k: v[a:b].to(device) for k, v in x.items()}, seed=seed)  # (b-a, K, T, T)
            return logits.float().cpu().numpy()

        return {"logits": np.concatenate(backoff.run(len(tiles), chunk))}

    return predict


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the class axis 0 of ``(K, h, w)`` logits (float32)."""
    z = logits - logits.max(axis=0, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)  # (K, h, w)


def run(req: SegmentRequest, ctx: RunContext) -> dict[str, Any]:
    """Segment the inputs; returns the result event's ``outputs`` and ``metrics`` (pixels per class)."""
    job, grid, stack, cfg = req.job, req.grid, req.stack, req.config
    try:
        common.report_grid(ctx.progress, grid, stack)
        if req.unused_inputs:
            ctx.progress.warn(f"the model does not read {', '.join(req.unused_inputs)}; those layers are ignored")
        ctx.progress.info(f"loading the fine-tuned model {job.model.weights} ({cfg.backbone}, {cfg.decoder}, "
                          f"{cfg.num_classes} classes, inputs {', '.join(s.name for s in cfg.inputs)})")  # fmt: skip
        onnx = job_backend(job) == "onnx"
        if onnx:  # an exported .onnx file: onnxruntime, no torch; keeps its source checkpoint's provenance
            model = load_onnx_segmentation(job, ctx.device.device, req.classes)
        else:
            from ...segmentation.checkpoint import load_segmentation_model

            model = load_segmentation_model(job.model.weights, req.config_path, classes=req.classes,
                                            device=ctx.device.device)  # fmt: skip
            model.weights_source = {"model": model.provenance.checkpoint}  # type: ignore[assignment]
        for note in model.config.notes:
            ctx.progress.warn(note)
        if model.is_stochastic:
            ctx.progress.info(f"TiM model: tokens of {', '.join(cfg.tim_modalities)} are sampled with seed {req.seed}")
        specs = [OutputRaster("classes", req.paths["classes"], ("class",), "classes", "uint8", model.classes)]
        if "probabilities" in req.paths:
            names = tuple(f"P({c.name})" for c in model.classes)
            specs.append(OutputRaster("probabilities", req.paths["probabilities"], names, "probability"))
        for spec in specs:
            ctx.outputs.open(_tagged(req, model, spec, ctx), grid)
        counts = np.zeros(cfg.num_classes, np.int64)

        def finish(rel: Released) -> None:
            logits = rel.values["logits"]  # (K, h, w), blended
            cls = logits.argmax(axis=0)  # (h, w)
            counts[:] += np.bincount(cls[rel.valid], minlength=cfg.num_classes)
            ctx.outputs.writers["classes"].write(rel.row, rel.col, cls[None].astype(np.float32), rel.valid)
            if "probabilities" in ctx.outputs.writers:
                ctx.outputs.writers["probabilities"].write(rel.row, rel.col, softmax(logits), rel.valid)

        plan = common.make_plan(job, grid, group_width=2048 if cfg.num_classes <= 16 else 1024)
        predict = onnx_segment_predictor(req, model, ctx) if onnx else _predictor(req, model, ctx)
        stats = run_tiled(stack, plan, {"logits": cfg.num_classes}, predict, finish,
                          **common.tiled_run_options(job, ctx))
        paths = ctx.outputs.commit(ctx.progress)
    finally:
        stack.close()
    metrics: dict[str, Any] = {
        "tiles": stats.tiles, "tiles_predicted": stats.predicted, "tiles_skipped_nodata": stats.skipped_nodata,
        "class_pixels": {c.name: int(n) for c, n in zip(model.classes, counts, strict=True)},
        "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in model.classes],
    }  # fmt: skip
    area = pixel_area_m2(grid)
    if area is not None:
        metrics["class_area_m2"] = {c.name: float(n) * area for c, n in zip(model.classes, counts, strict=True)}
    return {"outputs": paths, "metrics": metrics}


def pixel_area_m2(grid: WorkingGrid) -> float | None:
    """Area of one pixel in m² (None for grids in degrees)."""
    crs = grid.crs
    if getattr(crs, "is_geographic", False):
        return None
    factor = float(getattr(crs, "linear_units_factor", ("metre", 1.0))[1] or 1.0)
    return abs(grid.transform.a * grid.transform.e) * factor * factor  # type: ignore[attr-defined]
