"""A fine-tuned segmentation model behind one interface, torch or ONNX Runtime.

``model_source(job, config)`` says which model a job runs: a catalogue fine-tuned entry
(``model.id``, e.g. ``terramind_v1_base_flood``: its shipped YAML, classes and Hub weights, or the
weights file/folder ``model.weights``) or a model file (``model.weights``; ``model.id`` is then a
display name). ``describe_segmenter(backend, job, source)`` reads the model's ``SegmentationConfig``
without loading weights (the worker's validation); ``open_segmenter(...)`` loads it on the chosen
device (a catalogue model's weights are downloaded then, if they are not cached). The result has
``config``, ``classes``, ``is_stochastic`` (TiM models sample tokens), ``info`` and
``logits(raw, seed) -> (B, K, H, W)`` float32, where ``raw`` maps each config input name to a
``(B, C, H, W)`` float32 array in raw units (nodata already replaced by the engine); a
multi-temporal model's inputs are ``(B, C, T, H, W)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..core import catalogue
from ..core.catalogue import ModelSpec
from ..core.classes import resolve_classes
from ..core.errors import ConfigError, ModelNotFoundError
from ..core.job import Job
from ..core.progress import Progress
from .device import DeviceChoice
from .info import RuntimeInfo

MODEL_FILES = "a .ckpt, .pt, .safetensors, card .json or .onnx"


@dataclass(frozen=True)
class ModelSource:
    """Which fine-tuned model a job runs (module docstring)."""

    spec: ModelSpec | None  # the catalogue entry (kind 'finetuned'), or None for a model file
    weights: str | None  # the file or folder given; None: the entry's Hugging Face source
    config: str | None  # the TerraTorch YAML: the job's, else the entry's shipped one

    @property
    def name(self) -> str:
        return self.spec.id if self.spec is not None else str(self.weights)


def model_source(job: Job, config: str | None) -> ModelSource:
    """The model of a ``segment``/``export_onnx`` job; errors name ``model.id`` or ``model.weights``."""
    catalogue.register_request_cards(job.model)
    spec = None
    if job.model.id:
        try:
            found = catalogue.get(job.model.id)
        except ModelNotFoundError:
            found = None  # a display name of a model file
        if found is not None and found.kind == "finetuned":
            spec = found
    if spec is None and not job.model.weights:
        ids = ", ".join(s.id for s in catalogue.all_specs("finetuned"))
        raise ConfigError(f"give the fine-tuned model: a catalogue id ({ids}) or its file ({MODEL_FILES})",
                          field="model.weights")  # fmt: skip
    if spec is not None and config is None:
        from ..segmentation.catalogued import config_path

        config = str(config_path(spec))
    return ModelSource(spec, job.model.weights or None, config)


def describe_segmenter(backend: str, job: Job, source: ModelSource) -> tuple[Any, tuple[int, int] | None]:
    """The ``SegmentationConfig`` of the job's model (no weights loaded) and, for an ONNX graph, the
    tile size it serves."""
    if backend == "onnx":
        from ..backends.onnx_card import SEGMENTATION, read_card
        from ..segmentation.config import SegmentationConfig

        card = read_card(str(job.model.weights), (SEGMENTATION,))
        size = card["tile_size"]
        return SegmentationConfig.from_dict(card["config"]), (int(size[0]), int(size[1]))
    if source.spec is not None and (source.weights is None or not os.path.isfile(source.weights)):
        from ..segmentation.config import config_from_yaml_dict, load_yaml_config

        return config_from_yaml_dict(load_yaml_config(str(source.config))), None
    from ..segmentation.checkpoint import describe_model_file

    return describe_model_file(str(source.weights), source.config), None


def _info(model: Any, config: Any, config_path: str | None, weights_source: dict[str, str],
          revision: str = "n/a") -> RuntimeInfo:  # fmt: skip
    return RuntimeInfo(model.provenance.model_id, revision, weights_source, extra_tags={
        "TERRAMIND_BACKBONE": config.backbone,
        "TERRAMIND_FINETUNED_CONFIG": str(config_path or model.provenance.config or "checkpoint hyper_parameters"),
        "TERRAMIND_CLASSES": json.dumps([[c.value, c.name, c.color] for c in model.classes]),
    })  # fmt: skip


class TorchSegmenter:
    """A ``SegmentationModel`` (models/segmentation) on a torch device."""

    def __init__(self, model: Any, device: DeviceChoice, config_path: str | None, weights: str | None = None,
                 revision: str = "n/a") -> None:  # fmt: skip
        self.model, self.device = model, device
        self.config, self.classes, self.is_stochastic = model.config, model.classes, model.is_stochastic
        self.info = _info(model, model.config, config_path, {"model": weights or model.provenance.checkpoint}, revision)

    def logits(self, raw: Mapping[str, np.ndarray], seed: int | None) -> np.ndarray:
        import torch

        x = {k: torch.from_numpy(v).to(self.device.device) for k, v in raw.items()}  # {name: (B, C, [T,] H, W)}
        with torch.inference_mode(), self.device.autocast():
            out = self.model(x, seed=seed)  # (B, K, H, W)
        return out.float().cpu().numpy()


class OnnxSegmenter:
    """An exported segmentation graph in ONNX Runtime (models/backends/onnx_runtime.py); no torch."""

    is_stochastic = False  # TiM models are never exported

    def __init__(self, model: Any, config_path: str | None) -> None:
        self.model = model
        self.config, self.classes = model.config, model.classes
        self.info = _info(model, model.config, config_path, dict(model.weights_source))

    def logits(self, raw: Mapping[str, np.ndarray], seed: int | None) -> np.ndarray:
        return self.model(raw)  # (B, K, H, W)


def open_segmenter(
    backend: str, job: Job, source: ModelSource, classes: str | None, device: DeviceChoice, progress: Progress
) -> TorchSegmenter | OnnxSegmenter:
    """Load the job's model on ``device`` (``classes`` overrides the model's names and colours)."""
    if backend == "onnx":
        from ..backends.onnx_runtime import OnnxSegmentationModel

        model = OnnxSegmentationModel(str(job.model.weights), device=device.device)
        if classes:
            model.classes = resolve_classes(model.config.num_classes, names=model.config.class_names,
                                            card_classes=list(model.classes), override=classes)  # fmt: skip
        return OnnxSegmenter(model, source.config)
    from ..segmentation.checkpoint import load_segmentation_model

    if source.spec is None:
        model = load_segmentation_model(str(source.weights), source.config, classes=classes, device=device.device)
        return TorchSegmenter(model, device, source.config)
    from ..segmentation.catalogued import weights_file

    resolved = weights_file(source.spec, source.weights, progress)
    progress.info(f"loading {resolved.path.name} for '{source.spec.id}' ({resolved.description})")
    model = load_segmentation_model(resolved.path, source.config, classes=classes, card_classes=source.spec.classes,
                                    device=device.device)  # fmt: skip
    model.provenance = replace(model.provenance, model_id=source.spec.id)
    return TorchSegmenter(model, device, source.config, resolved.description, resolved.revision or "n/a")
