"""Task ``segment``: a TerraTorch fine-tuned TerraMind segmentation model, tile by tile.

Job: the model is a catalogue id of kind ``finetuned`` (``model.id``, e.g. ``terramind_v1_base_flood``:
its shipped YAML, classes and Hub weights; ``model.weights`` may name a local file or folder of its
weights) or a model file ``model.weights``: a Lightning ``.ckpt``, a state dict
(``.pt``/``.pth``/``.safetensors``), a plugin model card (``.json``, models/segmentation/export.py) or
an ONNX export (``.onnx``, run by ONNX Runtime); ``model.id`` is then a display name
(models/runtime/segmenter.py ``model_source``). ``params``: models/core/params.py ``SegmentParams``
(``config``: the TerraTorch YAML, optional for a ``.ckpt`` with hyper-parameters and for catalogue
ids; ``classes``: names/colours overriding the model's, models/core/classes.py; ``probabilities``;
``seed`` for TiM models; ``chip_size``/``chip_stride``/``chip_delta``: TerraTorch's tiled inference,
see below). ``inputs``: keyed by modality name (``S2L1C``, ``S1GRD``, ...), one for each input of the
model, with the bands the model reads in its order (a band-subset model such as burn scars reads its
6 bands; map them with ``bands``). A multi-temporal model (``TemporalWrapper``: ImpactMesh) reads
every input over its dates: ``inputs.<M>.dates`` lists them in date order (models/core/job.py); one
date of an input (the DEM) is repeated over the model's dates, any other count is a bad job naming
the input (models/core/params.py ``plan_dates``). ``outputs``: ``classes`` (required),
``probabilities`` and ``logits`` (optional).

Per tile: raw values (nodata/NaN → the config's ``no_data_replace``) → standardised with the
config's means/stds → logits (models/runtime/segmenter.py, torch or ONNX). Logits of overlapping
tiles are blended, then ``classes`` = argmax (uint8, colour table + class names, nodata 255),
``probabilities`` = softmax of the blended logits (float32, one band per class) and ``logits`` = the
blended logits themselves (float32, one band per class). Nodata: a single-date model's output is
nodata exactly where an input had nodata; a multi-temporal model's only where no date of any input
has data (models/engine/dates.py: invalid elements are replaced and predicted from, as ImpactMesh's
data module does).

Tiling: a model whose config has ``tiled_inference_parameters`` (ImpactMesh: crop 256, stride 208,
delta 8) runs with TerraTorch's own tiled inference (models/engine/chips.py: the same chips, border
cut and blend weights as ``terratorch.tasks.tiled_inference``); ``chip_*`` override those settings
(and, given for a model without them, select TerraTorch's tiling for it). The job's ``tiling``
batch size applies (the config's ``batch_size`` is a training machine's); its tile size and overlap
serve the engine's own tiling, used for every other model.

TiM models sample tokens: each model call uses ``tile_seed(seed, row, col, bits=32)`` of its first
tile as the generation seed, so a run reproduces with the same seed, inputs, extent, tiling and
batch size (and device).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...core.errors import ConfigError
from ...core.job import Job
from ...core.modalities import Modality, get_modality
from ...core.params import DatePlan, SegmentParams, plan_dates
from ...core.progress import Progress
from ...core.seeds import tile_seed
from ...engine import GeoTiffWriter, OutputRaster, Released, TilePlan, pixel_area_m2
from ...engine.chips import ChipPlan, ChipReader
from ...engine.runner import Predict
from ...runtime.segmenter import ModelSource, describe_segmenter, model_source, open_segmenter
from .context import RunContext
from .inputs import TiledInputs, canonical_job, open_temporal, open_tiled
from .tiled import TiledTask

MAX_CLASSES = 255  # uint8 class ids 0..254; 255 is nodata
OPTIONAL_OUTPUTS = ("probabilities", "logits")


@dataclass(frozen=True)
class SegmentRequest:
    backend: str
    config: Any  # models.segmentation.config.SegmentationConfig
    params: SegmentParams
    unused_inputs: tuple[str, ...]
    tiled: TiledInputs
    source: ModelSource
    dates: DatePlan = DatePlan(1)
    chips: Any = None  # models.segmentation.temporal_config.TiledInferenceSpec: TerraTorch's tiling, or None

    def close(self) -> None:
        self.tiled.close()


def input_modality(spec: Any) -> Modality:
    """The modality an input of the model reads, narrowed to its band subset (names, labels, stats)."""
    base = get_modality(spec.modality)
    if not spec.band_subset:
        return base
    labels = tuple(base.band_labels[base.bands.index(b)] if b in base.bands else b for b in spec.bands)
    return replace(base, bands=tuple(spec.bands), band_labels=labels, mean=tuple(spec.mean), std=tuple(spec.std))


def missing_inputs_message(config: Any, missing: list[Any]) -> str:
    parts = [f"{s.modality} ({len(s.bands)} band{'s' if len(s.bands) != 1 else ''}: {', '.join(s.bands)})" for s in missing]
    dates = ""
    if config.temporal is not None:
        dates = f", one layer per date{f' ({config.temporal.dates} dates)' if config.temporal.dates else ''}"
    return (
        f"the fine-tuned model ({config.backbone}) needs input {', '.join(parts)}, which was not given; "
        f"give a layer for {' and '.join('INPUT_' + s.modality for s in missing)}{dates}"
    )


def chip_settings(config: Any, params: SegmentParams, backend: str, onnx_tile: tuple[int, int] | None) -> Any:
    """TerraTorch's tiled-inference settings of the run (``None``: the engine's own tiling)."""
    from ...segmentation.temporal_config import TiledInferenceSpec

    base = config.tiled_inference or (TiledInferenceSpec() if params.chips.given else None)
    if base is None:
        return None
    chips = base.with_overrides(params.chips.size, params.chips.stride, params.chips.delta)
    if not chips.square:
        raise ConfigError(f"the model's tiled_inference_parameters ask for {chips.tile[0]}x{chips.tile[1]} chips every "
                          f"{chips.strides} px; this plugin cuts square chips: give the chip size and stride to use",
                          field="params.chip_size")  # fmt: skip
    if chips.strides[0] > chips.tile[0]:
        raise ConfigError(f"a stride of {chips.strides[0]} px leaves pixels between chips of {chips.tile[0]} px without "
                          "a prediction; give a stride no larger than the chip size", field="params.chip_stride")  # fmt: skip
    if onnx_tile is not None and tuple(onnx_tile) != chips.tile:
        raise ConfigError(
            f"the ONNX graph serves {onnx_tile[0]} px chips, but the model's tiled inference uses {chips.tile[0]} px "
            f"chips; set the chip size to {onnx_tile[0]} or export the model again with tile size {chips.tile[0]}",
            field="params.chip_size",
        )
    return chips


def validate(job: Job, backend: str) -> SegmentRequest:
    """Check the job and read the model's description (no weights are loaded)."""
    job = canonical_job(job)
    if job.model.untrained:
        raise ConfigError("segment runs your fine-tuned weights; untrained weights are not available for it",
                          field="model.untrained")  # fmt: skip
    params = SegmentParams.from_params(job.params, probabilities="probabilities" in job.outputs)
    source = model_source(job, params.config)
    config, onnx_tile = describe_segmenter(backend, job, source)
    if config.num_classes > MAX_CLASSES - 1:
        raise ConfigError(f"the model has {config.num_classes} classes; class rasters hold at most {MAX_CLASSES - 1}")
    specs = list(config.inputs)
    missing = [s for s in specs if s.modality not in job.inputs]
    if missing:
        raise ConfigError(missing_inputs_message(config, missing), field=f"inputs.{missing[0].modality}")
    temporal = config.temporal
    dates = plan_dates({s.modality: len(job.inputs[s.modality].all_dates) for s in specs}, temporal=temporal is not None,
                       wanted=temporal.dates if temporal is not None else None)  # fmt: skip
    used = {s.modality for s in specs}
    unused = tuple(k for k in job.inputs if k not in used)
    chips = chip_settings(config, params, backend, onnx_tile)
    if onnx_tile is not None and chips is None and list(onnx_tile) != [job.tiling.tile_size] * 2:
        raise ConfigError(f"'{job.model.weights}' was exported for {onnx_tile[0]}x{onnx_tile[1]} tiles but the job's "
                          f"tile size is {job.tiling.tile_size}; set the tile size to {onnx_tile[0]} or export the "
                          "model again for this size", field="tiling.tile_size")  # fmt: skip
    outputs = ["classes", *(k for k in OPTIONAL_OUTPUTS if k in job.outputs or (k == "probabilities" and params.probabilities))]
    tiled = open_model_inputs(job, config, outputs, dates)
    return SegmentRequest(backend, config, params, unused, tiled, source, dates, chips)


def open_model_inputs(job: Job, config: Any, outputs: list[str], dates: DatePlan | None = None) -> TiledInputs:
    """Open the inputs the model reads (first = the grid's reference), read as its band subsets
    (a multi-temporal model: every date)."""
    specs = list(config.inputs)
    keys, modalities = [s.modality for s in specs], {s.modality: input_modality(s) for s in specs}
    if config.temporal is not None:
        return open_temporal(job, keys, outputs, modalities, (dates or DatePlan(1)).dates, fill=config.no_data_replace)
    return open_tiled(job, keys, outputs, modalities, fill=config.no_data_replace)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the class axis 0 of ``(K, h, w)`` logits (float32)."""
    z = logits - logits.max(axis=0, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)  # (K, h, w)


class SegmentTask(TiledTask[SegmentRequest, Any]):
    def __init__(self, req: SegmentRequest, ctx: RunContext) -> None:
        super().__init__(req, ctx)
        self.counts = np.zeros(req.config.num_classes, np.int64)
        self.group_width = 2048 if req.config.num_classes <= 16 else 1024

    def before_load(self) -> None:
        cfg, progress, req = self.req.config, self.ctx.progress, self.req
        if req.unused_inputs:
            progress.warn(f"the model does not read {', '.join(req.unused_inputs)}; those layers are ignored")
        if cfg.temporal is not None:
            progress.info(f"multi-temporal model ({cfg.temporal.pooling} pooling): {req.dates.dates} date(s) of "
                          f"{', '.join(s.modality for s in cfg.inputs)}")  # fmt: skip
            for m in req.dates.repeated:
                how = "as ImpactMesh's data module does" if m == "DEM" else "the model sees no change in it"
                report = progress.info if m == "DEM" else progress.warn
                report(f"{m} has one date (layer); it is used for all {req.dates.dates} dates ({how})")
        progress.info(f"loading the fine-tuned model {req.source.name} ({cfg.backbone}, {cfg.decoder}, "
                      f"{cfg.num_classes} classes, inputs {', '.join(s.name for s in cfg.inputs)})")  # fmt: skip

    def load(self) -> Any:
        p = self.req.params
        model = open_segmenter(self.req.backend, self.tiled.job, self.req.source, p.classes, self.ctx.device,
                               self.ctx.progress)  # fmt: skip
        for note in model.config.notes:
            self.ctx.progress.warn(note)
        if model.is_stochastic:
            self.ctx.progress.info(f"TiM model: tokens of {', '.join(self.req.config.tim_modalities)} are sampled "
                                   f"with seed {p.seed}")  # fmt: skip
        return model

    def tile_plan(self) -> TilePlan:
        chips, grid = self.req.chips, self.tiled.grid
        if chips is None:
            return super().tile_plan()
        plan = ChipPlan.build(grid.height, grid.width, chips.tile[0], chips.strides[0], chips.effective_delta,
                              blend=chips.blend_overlaps, any_size=self.req.backend == "torch",
                              group_width=self.group_width)  # fmt: skip
        progress = self.ctx.progress
        progress.info(f"tiling: {plan.describe()} (the model's tiled_inference_parameters; TILE_SIZE and OVERLAP "
                      f"are not used), {self.tiled.job.tiling.batch_size} per batch")  # fmt: skip
        if chips.effective_delta != chips.delta:
            progress.warn(f"delta {chips.delta} is more than half the chips' overlap; {chips.effective_delta} px are "
                          "dropped at chip borders (as TerraTorch does)")  # fmt: skip
        if not chips.average_patches:
            progress.warn("average_patches false is not reproduced: overlapping chips are averaged")
        if chips.padding != "reflect":
            progress.warn(f"padding {chips.padding!r} is not reproduced: the raster is reflect-padded")
        return plan

    def tile_reader(self, plan: TilePlan) -> Any:
        return ChipReader(self.tiled.stack, plan) if isinstance(plan, ChipPlan) else self.tiled.stack

    def output_rasters(self, model: Any) -> list[OutputRaster]:
        paths = self.tiled.paths
        tags = {"TERRAMIND_TILED_INFERENCE": self._tiling_tag()}
        specs = [OutputRaster("classes", paths["classes"], ("class",), "classes", "uint8", model.classes, tags=tags)]
        if "probabilities" in paths:
            names = tuple(f"P({c.name})" for c in model.classes)
            specs.append(OutputRaster("probabilities", paths["probabilities"], names, "probability", tags=tags))
        if "logits" in paths:
            names = tuple(f"logit({c.name})" for c in model.classes)
            specs.append(OutputRaster("logits", paths["logits"], names, "logits", tags=tags))
        return specs

    def _tiling_tag(self) -> str:
        import json

        c = self.req.chips
        if c is None:
            return "null"
        return json.dumps({"crop": c.tile[0], "stride": c.strides[0], "delta": c.effective_delta,
                           "blend_overlaps": c.blend_overlaps, "dates": self.req.dates.dates})  # fmt: skip

    def heads(self, model: Any) -> dict[str, int]:
        return {"logits": self.req.config.num_classes}

    def predictor(self, model: Any) -> Predict:
        specs, seed = list(self.req.config.inputs), self.req.params.seed
        reader = self.reader if isinstance(self.reader, ChipReader) else None

        def predict(tiles: list, inputs: dict[str, np.ndarray], progress: Progress) -> dict[str, np.ndarray]:
            def chunk(a: int, b: int) -> np.ndarray:
                call_seed = tile_seed(seed, tiles[a].row, tiles[a].col, bits=32) if model.is_stochastic else None
                logits = model.logits({s.name: inputs[s.modality][a:b] for s in specs}, call_seed)  # (b-a, K, h, w)
                return reader.crop_outputs(logits) if reader is not None else logits  # (b-a, K, T, T)

            return {"logits": np.concatenate(self.backoff.run(len(tiles), chunk))}

        return predict

    def finish(self, rel: Released, writers: dict[str, GeoTiffWriter]) -> None:
        logits = rel.values["logits"]  # (K, h, w), blended
        cls = logits.argmax(axis=0)  # (h, w)
        self.counts += np.bincount(cls[rel.valid], minlength=len(self.counts))
        writers["classes"].write(rel.row, rel.col, cls[None].astype(np.float32), rel.valid)
        if "probabilities" in writers:
            writers["probabilities"].write(rel.row, rel.col, softmax(logits), rel.valid)
        if "logits" in writers:
            writers["logits"].write(rel.row, rel.col, logits, rel.valid)

    def metrics(self, model: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "class_pixels": {c.name: int(n) for c, n in zip(model.classes, self.counts, strict=True)},
            "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in model.classes],
            "dates": self.req.dates.dates,
        }
        area = pixel_area_m2(self.tiled.grid)
        if area is not None:
            out["class_area_m2"] = {c.name: float(n) * area for c, n in zip(model.classes, self.counts, strict=True)}
        return out


def run(req: SegmentRequest, ctx: RunContext) -> dict[str, Any]:
    """Segment the inputs; returns the result event's ``outputs`` and ``metrics`` (pixels per class)."""
    return SegmentTask(req, ctx).run()
