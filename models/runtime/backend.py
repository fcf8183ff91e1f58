"""Which runtime runs a job, torch or ONNX Runtime: chosen once per job, before anything is loaded.

A job chooses with ``params["backend"]``: ``"torch"`` or ``"onnx"``; left out, a ``model.weights``
file ending in ``.onnx`` (an export of models/backends/onnx_export.py) means ``"onnx"``. ONNX runs
the tasks ``segment`` and ``reconstruct`` without torch: ``model.weights`` is the exported file
(the segmentation graph, or either graph of a tokenizer export), the graph's card describes the
model (``model.id`` is a display name), ``precision`` must be ``fp32``, ``untrained`` is refused
(an export holds its weights). Reconstruct's start noise ``params["noise"]`` (``numpy``, the ONNX
default, or ``torch``, the torch default) is models/runtime/tokenizer.py ``start_noise``.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ConfigError
from ..core.job import Job
from .device import DeviceChoice, select_device, select_onnx_device

BACKENDS = ("torch", "onnx")
ONNX_TASKS = ("segment", "reconstruct")
NOISE_SOURCES = ("numpy", "torch")


def choose_backend(job: Job) -> str:
    """``'torch'`` or ``'onnx'`` for ``job`` (module docstring), with the ONNX-only rules checked."""
    weights = str(job.model.weights or "")
    is_onnx_file = weights.lower().endswith(".onnx")
    backend = job.params.get("backend") or ("onnx" if is_onnx_file else "torch")
    if backend not in BACKENDS:
        raise ConfigError(f"must be one of {', '.join(BACKENDS)}, got {backend!r}", field="params.backend")
    noise = job.params.get("noise", "numpy" if backend == "onnx" else "torch")
    if noise not in NOISE_SOURCES:
        raise ConfigError(f"must be one of {', '.join(NOISE_SOURCES)}, got {noise!r}", field="params.noise")
    if backend == "torch":
        if is_onnx_file:
            raise ConfigError(f"model file '{Path(weights).name}' is an ONNX graph: use backend 'onnx' (or leave it out)",
                              field="params.backend")  # fmt: skip
        return backend
    if job.task not in ONNX_TASKS:
        raise ConfigError(f"'onnx' is available for the tasks {', '.join(ONNX_TASKS)}, not for '{job.task}'",
                          field="params.backend")  # fmt: skip
    if not is_onnx_file:
        raise ConfigError("'onnx' needs model.weights = an exported .onnx file (models/backends/onnx_export.py)",
                          field="params.backend")  # fmt: skip
    if job.model.untrained:
        raise ConfigError("the ONNX backend runs the weights inside the .onnx file; 'untrained' is for the torch backend",
                          field="model.untrained")  # fmt: skip
    if job.precision != "fp32":
        raise ConfigError(f"the ONNX backend runs the exported float32 graphs; it must be 'fp32', got '{job.precision}'",
                          field="precision")  # fmt: skip
    return backend


def noise_source(job: Job, backend: str) -> str:
    """Where reconstruct draws DiVAE start noise (``choose_backend`` checked the value)."""
    return job.params.get("noise", "numpy" if backend == "onnx" else "torch")


def device_for(backend: str, requested: str, precision: str) -> DeviceChoice:
    """The device of the chosen backend (the torch one imports torch; the ONNX one never does)."""
    return select_onnx_device(requested, precision) if backend == "onnx" else select_device(requested, precision)


def check_tile_size(size: tuple[int, int] | list[int], job: Job, path: str) -> None:
    """An exported graph serves one tile size: the job's must be it."""
    if list(size) != [job.tiling.tile_size, job.tiling.tile_size]:
        raise ConfigError(
            f"'{Path(path).name}' was exported for {size[0]}x{size[1]} tiles but the job's tile size is "
            f"{job.tiling.tile_size}; set the tile size to {size[0]} or export the model again for this size",
            field="tiling.tile_size",
        )
