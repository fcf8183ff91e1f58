"""Task ``segment``: a TerraTorch fine-tuned TerraMind segmentation model, tile by tile.

Job: ``model.weights`` = the model file: a Lightning ``.ckpt``, a state dict (``.pt``/``.pth``/
``.safetensors``), a plugin model card (``.json``, models/segmentation/export.py) or an ONNX export
(``.onnx``, run by ONNX Runtime); ``model.id`` = a display name. ``params``: models/core/params.py
``SegmentParams`` (``config``: the TerraTorch YAML, optional for a ``.ckpt`` with hyper-parameters;
``classes``: names/colours overriding the model's, models/core/classes.py; ``probabilities``;
``seed`` for TiM models). ``inputs``: keyed by modality name (``S2L1C``, ``S1GRD``, ...), one for each
input of the model, with the bands the model reads in its order (a band-subset model such as burn
scars reads its 6 bands; map them with ``bands``). ``outputs``: ``classes`` (required),
``probabilities`` (optional).

Per tile: raw values (nodata/NaN → the config's ``no_data_replace``) → standardised with the
config's means/stds → logits (models/runtime/segmenter.py, torch or ONNX). Logits of overlapping
tiles are blended, then ``classes`` = argmax (uint8, colour table + class names, nodata 255 exactly
where an input had nodata) and ``probabilities`` = softmax of the blended logits (float32, one band
per class).

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
from ...core.params import SegmentParams
from ...core.progress import Progress
from ...core.seeds import tile_seed
from ...engine import GeoTiffWriter, OutputRaster, Released, pixel_area_m2
from ...engine.runner import Predict
from ...runtime.segmenter import describe_segmenter, open_segmenter
from .context import RunContext
from .inputs import TiledInputs, canonical_job, open_tiled
from .tiled import TiledTask

MAX_CLASSES = 255  # uint8 class ids 0..254; 255 is nodata


@dataclass(frozen=True)
class SegmentRequest:
    backend: str
    config: Any  # models.segmentation.config.SegmentationConfig
    params: SegmentParams
    unused_inputs: tuple[str, ...]
    tiled: TiledInputs

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
    return (
        f"the fine-tuned model ({config.backbone}) needs input {', '.join(parts)}, which was not given; "
        f"give a layer for {' and '.join('INPUT_' + s.modality for s in missing)}"
    )


def validate(job: Job, backend: str) -> SegmentRequest:
    """Check the job and read the model's description (no weights are loaded)."""
    job = canonical_job(job)
    if not job.model.weights:
        raise ConfigError("segment needs the fine-tuned model file (a .ckpt, .pt, .safetensors, card .json or .onnx)",
                          field="model.weights")  # fmt: skip
    if job.model.untrained:
        raise ConfigError("segment runs your fine-tuned weights; untrained weights are not available for it",
                          field="model.untrained")  # fmt: skip
    params = SegmentParams.from_params(job.params, probabilities="probabilities" in job.outputs)
    config = describe_segmenter(backend, job, params.config)
    if config.num_classes > MAX_CLASSES - 1:
        raise ConfigError(f"the model has {config.num_classes} classes; class rasters hold at most {MAX_CLASSES - 1}")
    specs = list(config.inputs)
    missing = [s for s in specs if s.modality not in job.inputs]
    if missing:
        raise ConfigError(missing_inputs_message(config, missing), field=f"inputs.{missing[0].modality}")
    used = {s.modality for s in specs}
    unused = tuple(k for k in job.inputs if k not in used)
    outputs = ["classes"] + (["probabilities"] if params.probabilities else [])
    return SegmentRequest(backend, config, params, unused, open_model_inputs(job, config, outputs))


def open_model_inputs(job: Job, config: Any, outputs: list[str]) -> TiledInputs:
    """Open the inputs the model reads (first = the grid's reference), read as its band subsets."""
    specs = list(config.inputs)
    return open_tiled(job, [s.modality for s in specs], outputs, {s.modality: input_modality(s) for s in specs},
                      fill=config.no_data_replace)  # fmt: skip


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
        cfg, progress = self.req.config, self.ctx.progress
        if self.req.unused_inputs:
            progress.warn(f"the model does not read {', '.join(self.req.unused_inputs)}; those layers are ignored")
        progress.info(f"loading the fine-tuned model {self.tiled.job.model.weights} ({cfg.backbone}, {cfg.decoder}, "
                      f"{cfg.num_classes} classes, inputs {', '.join(s.name for s in cfg.inputs)})")  # fmt: skip

    def load(self) -> Any:
        p = self.req.params
        model = open_segmenter(self.req.backend, self.tiled.job, p.config, p.classes, self.ctx.device, self.ctx.progress)
        for note in model.config.notes:
            self.ctx.progress.warn(note)
        if model.is_stochastic:
            self.ctx.progress.info(f"TiM model: tokens of {', '.join(self.req.config.tim_modalities)} are sampled "
                                   f"with seed {p.seed}")  # fmt: skip
        return model

    def output_rasters(self, model: Any) -> list[OutputRaster]:
        paths = self.tiled.paths
        specs = [OutputRaster("classes", paths["classes"], ("class",), "classes", "uint8", model.classes)]
        if "probabilities" in paths:
            names = tuple(f"P({c.name})" for c in model.classes)
            specs.append(OutputRaster("probabilities", paths["probabilities"], names, "probability"))
        return specs

    def heads(self, model: Any) -> dict[str, int]:
        return {"logits": self.req.config.num_classes}

    def predictor(self, model: Any) -> Predict:
        specs, seed = list(self.req.config.inputs), self.req.params.seed

        def predict(tiles: list, inputs: dict[str, np.ndarray], progress: Progress) -> dict[str, np.ndarray]:
            def chunk(a: int, b: int) -> np.ndarray:
                call_seed = tile_seed(seed, tiles[a].row, tiles[a].col, bits=32) if model.is_stochastic else None
                return model.logits({s.name: inputs[s.modality][a:b] for s in specs}, call_seed)  # (b-a, K, T, T)

            return {"logits": np.concatenate(self.backoff.run(len(tiles), chunk))}

        return predict

    def finish(self, rel: Released, writers: dict[str, GeoTiffWriter]) -> None:
        logits = rel.values["logits"]  # (K, h, w), blended
        cls = logits.argmax(axis=0)  # (h, w)
        self.counts += np.bincount(cls[rel.valid], minlength=len(self.counts))
        writers["classes"].write(rel.row, rel.col, cls[None].astype(np.float32), rel.valid)
        if "probabilities" in writers:
            writers["probabilities"].write(rel.row, rel.col, softmax(logits), rel.valid)

    def metrics(self, model: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "class_pixels": {c.name: int(n) for c, n in zip(model.classes, self.counts, strict=True)},
            "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in model.classes],
        }
        area = pixel_area_m2(self.tiled.grid)
        if area is not None:
            out["class_area_m2"] = {c.name: float(n) * area for c, n in zip(model.classes, self.counts, strict=True)}
        return out


def run(req: SegmentRequest, ctx: RunContext) -> dict[str, Any]:
    """Segment the inputs; returns the result event's ``outputs`` and ``metrics`` (pixels per class)."""
    return SegmentTask(req, ctx).run()
