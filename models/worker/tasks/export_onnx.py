"""Task ``export_onnx``: write a model as a self-describing ``.onnx`` file for the ONNX Runtime backend.

Job: ``params.kind`` = ``"segmentation"`` or ``"tokenizer"`` (default: ``"tokenizer"`` when
``model.id`` is a tokenizer of the catalogue, else ``"segmentation"``); ``outputs.model`` = the
``.onnx`` file to write; ``tiling.tile_size`` = the tile size the graph serves (an exported graph
has one fixed size, models/backends/onnx_export.py); ``precision`` must be ``fp32``; ``device``:
where the model is loaded and traced (the export check runs ONNX Runtime on the CPU).

- ``segmentation``: ``model.weights`` = the fine-tuned model file, as for task ``segment``
  (Lightning ``.ckpt``, state dict or ``.json`` card); ``params.config`` = the TerraTorch YAML;
  ``params.classes`` = class names/colours for the card; ``model.id`` = the model id in the card
  (default: the file name stem). TiM models sample tokens at random and are refused.
- ``tokenizer``: ``model.id`` = the catalogue tokenizer; its weights come from ``model.weights``
  (file or folder; default: the catalogue's Hugging Face source) or ``model.untrained`` (testing).
  The encoder graph goes to ``outputs.model``, the decoder graph to ``outputs.decoder`` (default
  ``job.onnx_decoder_path``: ``<name>.decoder.onnx`` next to it). Both must lie in one folder:
  each card names the other file, and either file can be given to the ONNX backend.

The graphs are written atomically; a failed or cancelled run removes the files it wrote.
Result: ``outputs`` = ``{"model": ..., "decoder": ...}`` (decoder for tokenizers); ``metrics``:
``kind``, ``model_id``, ``tile_size``, ``export_check`` = per written file (``model``, ``decoder``)
the deviation the exporter measured on seeded inputs, ``max|ort - torch| / max|torch|`` per float
output (``<output>_mismatch_fraction`` for integer outputs), ``max_relative_deviation`` (the
largest float deviation), ``bytes`` per file. A deviation above ``RTOL`` is reported as a warning.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...core import catalogue
from ...core.catalogue import ModelSpec
from ...core.errors import ConfigError, ModelNotFoundError
from ...core.job import Job, onnx_decoder_path
from ...core.outputs import check_output_path
from ...core.params import decoder_tile_multiple
from ...core.progress import ScaledProgress
from .context import RunContext

KINDS = ("segmentation", "tokenizer")
MODEL_FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors", ".bin", ".json")
RTOL = 1e-4  # the project's tolerance on float outputs (the ONNX backend's promise)


@dataclass(frozen=True)
class ExportRequest:
    job: Job
    kind: str
    tile_size: int
    paths: dict[str, str]  # "model" (and "decoder") -> .onnx path
    config_path: str | None = None  # segmentation
    classes: str | None = None  # segmentation
    spec: ModelSpec | None = None  # tokenizer
    source: Any = None  # segmentation: models/runtime/segmenter.py ModelSource
    config: Any = None  # segmentation: its SegmentationConfig

    def close(self) -> None:
        pass


def _kind(job: Job) -> str:
    kind = job.params.get("kind")
    if kind is None:
        try:
            return "tokenizer" if catalogue.get(job.model.id).kind == "tokenizer" else "segmentation"
        except ModelNotFoundError:
            return "segmentation"
    if kind not in KINDS:
        raise ConfigError(f"parameter 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def _onnx_path(job: Job, key: str, default: str | None = None) -> str:
    path = job.outputs.get(key) or default
    if not path:
        raise ConfigError("the job has no path for this output (the .onnx file to write)", field=f"outputs.{key}")
    return os.path.abspath(check_output_path(f"outputs.{key}", path, (".onnx",)))


def validate(job: Job, backend: str) -> ExportRequest:
    """Check the job and describe the model without loading weights (errors mean a bad job)."""
    catalogue.register_request_cards(job.model)
    if job.precision != "fp32":
        raise ConfigError(f"ONNX export writes float32 graphs; precision must be 'fp32', got '{job.precision}'")
    kind, tile = _kind(job), job.tiling.tile_size
    model_path = _onnx_path(job, "model")
    if kind == "segmentation":
        return _validate_segmentation(job, tile, model_path)
    spec = catalogue.for_request(job.model)
    if spec.kind != "tokenizer":
        raise ConfigError(f"model '{spec.id}' is a {spec.kind} model; export tokenizers or fine-tuned segmentation models")
    job.tiling.require_multiple(decoder_tile_multiple(spec, [spec.modality]), "the diffusion decoder works on 32-pixel multiples")
    if job.model.weights and not job.model.untrained:
        from ...weights.hub import resolve_weights

        resolve_weights(spec, job.model.weights)  # a local file or folder: checked now (ConfigError names it)
    elif spec.weights is None and not job.model.untrained:
        raise ConfigError(f"model '{spec.id}' has no published weights; give a weights file (model.weights)")
    decoder = _onnx_path(job, "decoder", onnx_decoder_path(model_path))
    if os.path.dirname(decoder) != os.path.dirname(model_path) or decoder == model_path:
        raise ConfigError(
            f"output 'decoder' ('{decoder}') must be another file in the folder of output 'model' "
            f"('{model_path}'): the two graphs name each other by file name"
        )
    return ExportRequest(job, kind, tile, {"model": model_path, "decoder": decoder}, spec=spec)


def _validate_segmentation(job: Job, tile: int, model_path: str) -> ExportRequest:
    from ...runtime.segmenter import describe_segmenter, model_source

    if job.model.untrained:
        raise ConfigError("a fine-tuned model file holds its weights; 'untrained' is for tokenizers")
    weights = str(job.model.weights or "")
    config_path = job.params.get("config") or None
    source = model_source(job, config_path)  # a catalogue fine-tuned id, or the model file
    if source.spec is None and not weights.lower().endswith(MODEL_FILE_SUFFIXES):
        raise ConfigError(f"model file '{Path(weights).name}' should be one of {', '.join(MODEL_FILE_SUFFIXES)}")
    config, _ = describe_segmenter("torch", job, source)  # reads no weights
    if config.is_tim:
        raise ConfigError(
            f"'{config.backbone}' is a TiM model: it samples tokens at random on every run, which a deterministic "
            "ONNX graph cannot reproduce; run it with the torch backend"
        )
    classes = job.params.get("classes") or None
    if classes is not None and not isinstance(classes, str):
        raise ConfigError(f"parameter 'classes' must be text like '0: Others #D9D9D9; 1: Flood', got {classes!r}")
    return ExportRequest(job, "segmentation", tile, {"model": model_path}, config_path=config_path, classes=classes,
                         source=source, config=config)  # fmt: skip


def run(req: ExportRequest, ctx: RunContext) -> dict[str, Any]:
    """Export; returns the result event's ``outputs`` and ``metrics`` (see the module docstring)."""
    before = {p: _mtime(p) for p in req.paths.values()}
    try:
        if req.kind == "segmentation":
            _export_segmentation(req, ctx)
        else:
            _export_tokenizer(req, ctx)
    except BaseException:
        for path, mtime in before.items():  # remove what this run wrote, keep what was there
            if _mtime(path) != mtime:
                Path(path).unlink(missing_ok=True)
        raise
    return {"outputs": dict(req.paths), "metrics": _metrics(req, ctx)}


def _mtime(path: str) -> float | None:
    return os.path.getmtime(path) if os.path.exists(path) else None


def _export_segmentation(req: ExportRequest, ctx: RunContext) -> None:
    from ...backends.onnx_export import export_segmentation
    from ...runtime.segmenter import open_segmenter

    job, cfg = req.job, req.config
    ctx.progress.info(f"loading the fine-tuned model {req.source.name}")
    model = open_segmenter("torch", job, req.source, req.classes, ctx.device, ctx.progress).model
    ctx.progress.set_progress(20.0)
    dates = f", {cfg.temporal.trained_dates or 1} dates" if cfg.temporal is not None else ""
    ctx.progress.info(f"exporting {cfg.backbone} + {cfg.decoder} for {req.tile_size} px tiles{dates}")
    chips = cfg.tiled_inference
    if chips is not None and chips.tile != (req.tile_size, req.tile_size):
        ctx.progress.warn(f"the model's tiled inference uses {chips.tile[0]} px chips; this graph serves "
                          f"{req.tile_size} px: runs of it must set the chip size to {req.tile_size}")  # fmt: skip
    export_segmentation(model, req.paths["model"], tile_size=req.tile_size, model_id=job.model.id or None)


def _export_tokenizer(req: ExportRequest, ctx: RunContext) -> None:
    from ... import build
    from ...backends.onnx_export import export_tokenizer
    from ...weights.hub import resolve_weights

    job, spec = req.job, req.spec
    assert spec is not None
    loading = ScaledProgress(ctx.progress, 0.0, 20.0)
    tok = build.load_tokenizer(replace(job.model, id=spec.id), device=ctx.device.device, progress=loading)
    # the file it was loaded from (a cache hit now), for the SHA-256 in the cards
    source = None if job.model.untrained else resolve_weights(spec, job.model.weights).path
    names = (os.path.basename(req.paths["model"]), os.path.basename(req.paths["decoder"]))
    # both graphs go to a staging folder first (matched by job.partial_glob): earlier files of the same
    # names stay untouched unless both new ones are complete
    staging = tempfile.mkdtemp(prefix=f"{names[0]}.partial-export-{os.getpid()}-", dir=os.path.dirname(req.paths["model"]))
    try:
        export_tokenizer(tok, staging, image_size=req.tile_size, model_id=spec.id, source_file=source,
                         file_names=names, progress=ScaledProgress(ctx.progress, 20.0, 100.0))  # fmt: skip
        os.replace(os.path.join(staging, names[0]), req.paths["model"])
        os.replace(os.path.join(staging, names[1]), req.paths["decoder"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _metrics(req: ExportRequest, ctx: RunContext) -> dict[str, Any]:
    """What the exporter measured, read back from the written cards."""
    from ...backends.onnx_card import read_card

    cards = {key: read_card(path) for key, path in req.paths.items()}
    checks = {key: card.get("export_check", {}) for key, card in cards.items()}
    floats = [v for c in checks.values() for k, v in c.items() if not k.endswith("_mismatch_fraction")]
    worst = max(floats) if floats else None
    for key, check in checks.items():
        text = ", ".join(f"{k} {v:.2e}" for k, v in check.items())
        ctx.progress.info(f"{Path(req.paths[key]).name} ({cards[key]['graph']}): ONNX Runtime vs torch: {text}")
        if any(v > RTOL for k, v in check.items() if not k.endswith("_mismatch_fraction")):
            ctx.progress.warn(f"{Path(req.paths[key]).name} deviates from torch by more than {RTOL:g} (relative)")
    return {
        "kind": req.kind, "model_id": cards["model"]["model_id"], "tile_size": req.tile_size,
        "export_check": checks, "max_relative_deviation": worst,
        "bytes": {key: os.path.getsize(path) for key, path in req.paths.items()},
    }  # fmt: skip
