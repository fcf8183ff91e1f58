"""The worker's ONNX Runtime backend for the tasks ``segment`` and ``reconstruct`` (no torch needed).

A job chooses its backend with ``params["backend"]``: ``"torch"`` or ``"onnx"``; left out, a
``model.weights`` file ending in ``.onnx`` means ``"onnx"``. With ``"onnx"``, ``model.weights`` is
the exported file (onnx_export.py): the segmentation graph, or either graph of a tokenizer export
(the other one must lie next to it). The graph's card then describes the model (``model.id`` is a
display name); the job's tile size must be the size the graph was exported for; ``precision``
must be ``fp32``; ``untrained`` is refused (an export holds its weights).

Reconstruct's start noise (``params["noise"]``): ``"numpy"`` (default for this backend) draws
each tile's noise with ``numpy.random.default_rng(tile_seed(seed, row, col))``; ``"torch"`` draws
it like the torch backend (``torch.Generator().manual_seed(tile_seed(...))``, needs torch), so the
two backends then differ only by the graphs' float tolerance.

The functions here are what models/worker/tasks/segment.py, reconstruct.py and cli.py call on
the ONNX branch (see each docstring); the predict functions have the engine's signature
(models/engine/runner.py ``Predict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.catalogue import ModelSpec
from ..core.errors import ConfigError
from ..core.job import Job
from ..core.progress import Progress
from .onnx_card import DIVAE_DENOISER, SEGMENTATION, TOKENIZER_ENCODER, VQVAE_DECODER, read_card

BACKENDS = ("torch", "onnx")
ONNX_TASKS = ("segment", "reconstruct")
NOISE_SOURCES = ("numpy", "torch")


def job_backend(job: Job) -> str:
    """``'torch'`` or ``'onnx'`` for ``job`` (see the module docstring); checks the ONNX-only parameters."""
    weights = str(job.model.weights or "")
    is_onnx_file = weights.lower().endswith(".onnx")
    backend = job.params.get("backend") or ("onnx" if is_onnx_file else "torch")
    if backend not in BACKENDS:
        raise ConfigError(f"parameter 'backend' must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        if is_onnx_file:
            raise ConfigError(f"model file '{Path(weights).name}' is an ONNX graph: use backend 'onnx' (or leave it out)")
        return backend
    if job.task not in ONNX_TASKS:
        raise ConfigError(f"backend 'onnx' is available for the tasks {', '.join(ONNX_TASKS)}, not for '{job.task}'")
    if not is_onnx_file:
        raise ConfigError("backend 'onnx' needs model.weights = an exported .onnx file (models/backends/onnx_export.py)")
    if job.model.untrained:
        raise ConfigError("backend 'onnx' runs the weights inside the .onnx file; 'untrained' is for the torch backend")
    if job.precision != "fp32":
        raise ConfigError(f"backend 'onnx' runs the exported float32 graphs; precision must be 'fp32', got '{job.precision}'")
    noise = job.params.get("noise", "numpy")
    if noise not in NOISE_SOURCES:
        raise ConfigError(f"parameter 'noise' must be one of {', '.join(NOISE_SOURCES)}, got {noise!r}")
    return backend


def select_onnx_device(requested: str = "auto", precision: str = "fp32") -> Any:
    """The worker's ``DeviceChoice`` for ONNX Runtime (``device`` is 'cpu' or 'cuda:N'), instead of
    models/worker/device.py ``select_device`` (which imports torch)."""
    from ..worker.device import DeviceChoice
    from .onnx_session import CUDA, default_threads, import_onnxruntime, resolve_providers

    if precision != "fp32":
        raise ConfigError(f"backend 'onnx' runs float32 graphs; precision must be 'fp32', got '{precision}'")
    providers = resolve_providers(requested)
    version = import_onnxruntime().__version__
    if providers[0][0] == CUDA:
        device = f"cuda:{providers[0][1]['device_id']}"
        text = f"onnxruntime {version} {CUDA} ({device})"
        facts: dict[str, Any] = {"device": device, "provider": CUDA}
    else:
        threads = default_threads()
        device = "cpu"
        text = f"onnxruntime {version} CPUExecutionProvider ({threads} thread{'s' if threads != 1 else ''})"
        facts = {"device": "cpu", "provider": "CPUExecutionProvider", "threads": threads}
    facts.update(precision="fp32", backend="onnx", onnxruntime=version)
    return DeviceChoice(device, "fp32", f"backend {text}, precision fp32", facts)


def _check_tile(job: Job, size: list[int], path: str) -> None:
    if list(size) != [job.tiling.tile_size, job.tiling.tile_size]:
        raise ConfigError(
            f"'{Path(path).name}' was exported for {size[0]}x{size[1]} tiles but the job's tile size is "
            f"{job.tiling.tile_size}; set the tile size to {size[0]} or export the model again for this size"
        )


# ----------------------------------------------------------------------------- segment


def describe_onnx_segmentation(job: Job) -> Any:
    """segment.validate's ``describe_model_file`` for an ``.onnx``: the card's ``SegmentationConfig``
    (read without onnxruntime), with the job's tile size checked against the graph's."""
    from ..segmentation.config import SegmentationConfig

    card = read_card(str(job.model.weights), (SEGMENTATION,))
    _check_tile(job, card["tile_size"], str(job.model.weights))
    return SegmentationConfig.from_dict(card["config"])


def load_onnx_segmentation(job: Job, device: str, classes: str | None = None) -> Any:
    """segment.run's ``load_segmentation_model`` for an ``.onnx`` (``classes`` overrides names/colours)."""
    from ..core.classes import resolve_classes
    from .onnx_runtime import OnnxSegmentationModel

    model = OnnxSegmentationModel(str(job.model.weights), device=device)
    if classes:
        model.classes = resolve_classes(model.config.num_classes, names=model.config.class_names,
                                        card_classes=list(model.classes), override=classes)  # fmt: skip
    return model


def onnx_segment_predictor(req: Any, model: Any, ctx: Any):  # noqa: ANN201
    """segment.py ``_predictor`` for an ``OnnxSegmentationModel``: raw tiles → ``{"logits": (B, K, T, T)}``."""
    specs = list(req.config.inputs)

    def predict(tiles: list, inputs: dict[str, np.ndarray], progress: Progress) -> dict[str, np.ndarray]:
        return {"logits": model({s.name: inputs[s.modality] for s in specs})}  # (B, K, T, T)

    return predict


# ----------------------------------------------------------------------------- reconstruct


def onnx_tokenizer_spec(job: Job) -> ModelSpec:
    """reconstruct.validate's catalogue entry for an ``.onnx``: the catalogue card stored in the graph's card."""
    path = str(job.model.weights)
    card = read_card(path, (TOKENIZER_ENCODER, DIVAE_DENOISER, VQVAE_DECODER))
    _check_tile(job, card["image_size"], path)
    return ModelSpec.from_dict(card["spec"])


def load_onnx_tokenizer(job: Job, device: str) -> Any:
    """reconstruct.run's ``build.load_tokenizer`` for an ``.onnx`` (either graph of the export)."""
    from .onnx_runtime import OnnxTokenizer

    return OnnxTokenizer(str(job.model.weights), device=device)


def tile_noise(seed: int, tiles: list, shape: tuple[int, int, int], source: str) -> np.ndarray:
    """Start noise ``(B, C, T, T)`` float32, one draw per tile from ``tile_seed(seed, row, col)``."""
    from ..worker.tasks.common import tile_seed

    seeds = [tile_seed(seed, t.row, t.col) for t in tiles]
    if source == "torch":
        try:
            import torch
        except ImportError:
            raise ConfigError("parameter noise='torch' needs torch in the worker's Python; use noise='numpy'") from None
        return np.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)).numpy() for s in seeds])
    return np.stack([np.random.default_rng(s).standard_normal(shape, dtype=np.float32) for s in seeds])


def onnx_reconstruct_predictor(req: Any, tok: Any, ctx: Any, tile: int):  # noqa: ANN201
    """reconstruct.py ``_predictor`` for an ``OnnxTokenizer``: raw tiles → ``{"reconstruction": ...}``
    (raw units; LULC: class logits), the same recipe as the torch predictor."""
    from ..worker.tasks.common import check_class_values

    m = req.modality
    mean = np.asarray(m.mean, np.float32).reshape(1, -1, 1, 1)  # (1, C, 1, 1)
    std = np.asarray(m.std, np.float32).reshape(1, -1, 1, 1)
    source = req.job.params.get("noise", "numpy")

    def predict(tiles: list, inputs: dict[str, np.ndarray], progress: Progress) -> dict[str, np.ndarray]:
        check_class_values(req.job, m, inputs[m.name])
        x = inputs[m.name]  # (B, C, T, T) raw
        xb = x if m.categorical else (x - mean) / std  # (B, C, T, T)
        noise = None if m.categorical else tile_noise(req.seed, tiles, (m.num_bands, tile, tile), source)
        ids = tok.tokenize(xb)  # (B, h, w)
        y = tok.decode_tokens(ids, (tile, tile), req.timesteps, noise=noise, progress=progress)
        return {"reconstruction": y if m.categorical else y * std + mean}  # (B, C, T, T)

    return predict
