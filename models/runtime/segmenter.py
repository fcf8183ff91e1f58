"""A fine-tuned segmentation model behind one interface, torch or ONNX Runtime.

``describe_segmenter(backend, job, config)`` reads the model's ``SegmentationConfig`` without loading
weights (the worker's validation); ``open_segmenter(...)`` loads it on the chosen device. The result
has ``config``, ``classes``, ``is_stochastic`` (TiM models sample tokens), ``info`` and
``logits(raw, seed) -> (B, K, T, T)`` float32, where ``raw`` maps each config input name to a
``(B, C, T, T)`` float32 array in raw units (nodata already replaced by the engine).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.classes import resolve_classes
from ..core.job import Job
from ..core.progress import Progress
from .backend import check_tile_size
from .device import DeviceChoice
from .info import RuntimeInfo


def describe_segmenter(backend: str, job: Job, config_path: str | None) -> Any:
    """The ``SegmentationConfig`` of the job's model file (no weights loaded)."""
    if backend == "onnx":
        from ..backends.onnx_card import SEGMENTATION, read_card
        from ..segmentation.config import SegmentationConfig

        card = read_card(str(job.model.weights), (SEGMENTATION,))
        check_tile_size(card["tile_size"], job, str(job.model.weights))
        return SegmentationConfig.from_dict(card["config"])
    from ..segmentation.checkpoint import describe_model_file

    return describe_model_file(job.model.weights, config_path)


def _info(model: Any, config: Any, config_path: str | None, weights_source: dict[str, str]) -> RuntimeInfo:
    return RuntimeInfo(model.provenance.model_id, "n/a", weights_source, extra_tags={
        "TERRAMIND_BACKBONE": config.backbone,
        "TERRAMIND_FINETUNED_CONFIG": str(config_path or model.provenance.config or "checkpoint hyper_parameters"),
        "TERRAMIND_CLASSES": json.dumps([[c.value, c.name, c.color] for c in model.classes]),
    })  # fmt: skip


class TorchSegmenter:
    """A ``SegmentationModel`` (models/segmentation) on a torch device."""

    def __init__(self, model: Any, device: DeviceChoice, config_path: str | None) -> None:
        self.model, self.device = model, device
        self.config, self.classes, self.is_stochastic = model.config, model.classes, model.is_stochastic
        self.info = _info(model, model.config, config_path, {"model": model.provenance.checkpoint})

    def logits(self, raw: Mapping[str, np.ndarray], seed: int | None) -> np.ndarray:
        import torch

        x = {k: torch.from_numpy(v).to(self.device.device) for k, v in raw.items()}  # {name: (B, C, T, T)}
        with torch.inference_mode(), self.device.autocast():
            out = self.model(x, seed=seed)  # (B, K, T, T)
        return out.float().cpu().numpy()


class OnnxSegmenter:
    """An exported segmentation graph in ONNX Runtime (models/backends/onnx_runtime.py); no torch."""

    is_stochastic = False  # TiM models are never exported

    def __init__(self, model: Any, config_path: str | None) -> None:
        self.model = model
        self.config, self.classes = model.config, model.classes
        self.info = _info(model, model.config, config_path, dict(model.weights_source))

    def logits(self, raw: Mapping[str, np.ndarray], seed: int | None) -> np.ndarray:
        return self.model(raw)  # (B, K, T, T)


def open_segmenter(
    backend: str, job: Job, config_path: str | None, classes: str | None, device: DeviceChoice, progress: Progress
) -> TorchSegmenter | OnnxSegmenter:
    """Load the job's model file on ``device`` (``classes`` overrides the model's names and colours)."""
    if backend == "onnx":
        from ..backends.onnx_runtime import OnnxSegmentationModel

        model = OnnxSegmentationModel(str(job.model.weights), device=device.device)
        if classes:
            model.classes = resolve_classes(model.config.num_classes, names=model.config.class_names,
                                            card_classes=list(model.classes), override=classes)  # fmt: skip
        return OnnxSegmenter(model, config_path)
    from ..segmentation.checkpoint import load_segmentation_model

    model = load_segmentation_model(job.model.weights, config_path, classes=classes, device=device.device)
    return TorchSegmenter(model, device, config_path)
