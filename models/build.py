"""The model-loading facade: a model request (plus modalities) → a ready, weight-loaded module.

Everything that needs a model calls these functions (the worker's runtimes, tools, tests)::

    load_tokenizer(model, *, device="cpu")
    load_generation(model, inputs, outputs, *, device="cpu")
    load_backbone(model, modalities, *, merge_method="mean", bands=None, device="cpu")
    load_tim(model, modalities, tim_modalities=("LULC",), *, merge_method="mean", tim_chained_generations=True,
             device="cpu")

``model`` is the job's ``ModelRequest`` (models/core/job.py: catalogue id, weights, tokenizer
weights, untrained, extra model-card folders) or just a catalogue id (its published weights).
Every function also takes ``progress=`` (models/core/progress.py) for download progress, messages
and cancellation.

Weights: ``weights=None`` takes the catalogue entry's Hugging Face source (local cache first, then a
download; models/weights/hub.py); a path takes that file or folder. ``tokenizer_weights`` maps a
modality name (``"LULC"``) to a file or folder for the tokenizer of that modality; unlisted ones
are looked for in the folder given as ``weights`` (when it is one: so one folder can hold a
TerraMind file and its tokenizers' files) and otherwise come from their own catalogue entries.
``untrained=True`` fills every tensor with the deterministic rule of models/weights/untrained.py
instead (offline demo, tests); it is never chosen silently, it cannot be combined with weight
paths, and the result carries ``model.untrained = True``. A custom catalogue entry without a
weights source needs either a path or ``untrained=True``.

How: the module is built on the meta device (no memory, no random init) and filled by the one
loading path, ``models/weights/loading.load_checkpoint_``: the checkpoint is matched strictly with
the reference's key mapping (models/weights/matching.py) and assigned, deterministic buffers the
file lacks are recomputed, and no meta tensor may remain. Returned modules are in eval mode with
``requires_grad=False`` and carry ``model_id``, ``untrained`` and ``weights_source``: a dict of
provenance strings (``hf://org/repo@revision/file``, a local path, or the untrained marker), key
``"model"`` for the model's own file and ``"tokenizer <MODALITY>"`` for the tokenizers inside a
TerraMind model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from .core import catalogue
from .core.catalogue import ModelSpec
from .core.errors import ConfigError
from .core.job import ModelRequest
from .core.modalities import modality_for_key
from .core.progress import NullProgress, PercentAsMessages, Progress
from .terramind import TerraMindGeneration, TerraMindTiM, TerraMindViT
from .terramind.embeddings import embedding_spec
from .tokenizers import build_tokenizer
from .weights.hub import find_in_folder, resolve_weights
from .weights.loading import load_checkpoint_, untrained_checkpoint
from .weights.matching import BACKBONE, GENERATION, TIM, TOKENIZER, KeyMapping
from .weights.reading import Checkpoint, read_checkpoint

PathLike = str | os.PathLike[str]
UNTRAINED_SOURCE = "untrained (deterministic fill, models/weights/untrained.py)"


def load_tokenizer(
    model: ModelRequest | str, *, device: str | torch.device = "cpu", progress: Progress | None = None
) -> nn.Module:
    """The tokenizer ``model`` (a ``DiVAE`` or ``VQVAE``) with its weights, on ``device``."""
    request = as_request(model)
    if request.tokenizer_weights:
        raise ConfigError(f"model '{request.id}' is a tokenizer: give its file as weights, not as tokenizer weights")
    spec = _spec(request, "tokenizer")
    with torch.device("meta"):
        tok = build_tokenizer(spec.config)  # type: ignore[arg-type]
    source = _fill(tok, spec, TOKENIZER, request.weights, request.untrained, progress)
    return _finish(tok, spec, request.untrained, {"model": source}, device)


def load_generation(
    model: ModelRequest | str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> nn.Module:
    """Any-to-any generation (``TerraMindGeneration``) from ``inputs`` to ``outputs`` (in order).

    Holds one tokenizer per tokenized input (LULC, NDVI) and per output, loaded from their own
    catalogue entries (or ``tokenizer_weights[<MODALITY>]``).
    """
    request = as_request(model)
    spec = _spec(request, "terramind")
    with torch.device("meta"):
        module = TerraMindGeneration(spec.config, list(inputs), list(outputs))  # type: ignore[arg-type]
    _check_modalities(spec, module.input_mapping, spec.inputs, "input")
    _check_modalities(spec, module.output_mapping, spec.outputs, "output")
    tokenized = [k for k in module.input_mapping.values() if _is_tokenized(k)] + list(module.output_mapping.values())
    return _load_terramind(module, spec, GENERATION, tokenized, request, device, progress)


def load_backbone(
    model: ModelRequest | str,
    modalities: Sequence[str],
    *,
    merge_method: str | None = "mean",
    bands: Mapping[str, Sequence[str]] | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> nn.Module:
    """The encoder as a feature backbone (``TerraMindViT``) over ``modalities``.

    ``bands={modality: [band names]}`` selects pretrained patch-embedding columns (terratorch's
    ``bands``); tokenized inputs (LULC, NDVI) get their tokenizers.
    """
    request = as_request(model)
    spec = _spec(request, "terramind")
    with torch.device("meta"):
        module = TerraMindViT(spec.config, list(modalities), merge_method, bands)  # type: ignore[arg-type]
    _check_modalities(spec, module.mod_name_mapping, spec.inputs, "input")
    tokenized = [k for k in module.mod_name_mapping.values() if _is_tokenized(k)]
    return _load_terramind(module, spec, BACKBONE, tokenized, request, device, progress)


def load_tim(
    model: ModelRequest | str,
    modalities: Sequence[str],
    tim_modalities: Sequence[str] = ("LULC",),
    *,
    merge_method: str | None = "mean",
    tim_chained_generations: bool = True,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> nn.Module:
    """Thinking-in-Modalities backbone (``TerraMindTiM``): features over ``modalities`` plus
    internally generated ``tim_modalities`` tokens. Band subsets are not supported (as in terratorch)."""
    request = as_request(model)
    spec = _spec(request, "terramind")
    with torch.device("meta"):
        module = TerraMindTiM(
            spec.config, list(modalities), list(tim_modalities), merge_method,  # type: ignore[arg-type]
            tim_chained_generations=tim_chained_generations,
        )  # fmt: skip
    inputs = {n: k for n, k in module.mod_name_mapping.items() if n in module.modalities}
    _check_modalities(spec, inputs, spec.inputs, "input")
    _check_modalities(spec, dict(zip(module.tim_modalities, module.tim_keys)), spec.outputs, "TiM")
    tokenized = [k for k in inputs.values() if _is_tokenized(k)]
    return _load_terramind(module, spec, TIM, tokenized, request, device, progress)


def as_request(model: ModelRequest | str) -> ModelRequest:
    """A catalogue id means its published weights."""
    return model if isinstance(model, ModelRequest) else ModelRequest(id=model)


def _is_tokenized(key: str) -> bool:
    return embedding_spec(key).tokenized


def _check_modalities(spec: ModelSpec, mapping: Mapping[str, str], allowed: Sequence[str], role: str) -> None:
    """Every resolved modality must be one the catalogue card lists for that role."""
    for name, key in mapping.items():
        modality = modality_for_key(key).name
        if modality not in allowed:
            raise ConfigError(
                f"model '{spec.id}' does not take {role} modality '{name}' ({modality}); "
                f"its {role}s are {', '.join(allowed)}"
            )


def _attach_tokenizers(
    model: nn.Module,
    spec: ModelSpec,
    keys: Sequence[str],
    weights: PathLike | None,
    tokenizer_weights: Mapping[str, PathLike] | None,
    untrained: bool,
    progress: Progress | None,
) -> dict[str, str]:
    """Load the tokenizer of each internal key into ``model.tokenizer``; returns their provenance.

    Order of sources: ``tokenizer_weights[<MODALITY>]``, then the tokenizer's catalogue file in the
    folder given as the model's ``weights`` (if a folder), then its own catalogue source (Hub).
    """
    folder = Path(weights) if weights is not None and str(weights) != "" and Path(weights).is_dir() else None
    sources = {}
    for key in dict.fromkeys(keys):
        modality = modality_for_key(key).name
        tok_spec = catalogue.tokenizer_for(spec, modality)
        if progress is not None:
            progress.info(f"loading the {modality} tokenizer ({tok_spec.id})")
        tok_weights = _tokenizer_weights_for(tokenizer_weights, modality)
        if tok_weights is None and folder is not None and tok_spec.weights is not None:
            tok_weights = find_in_folder(folder, tok_spec.weights)  # next to the model's own file
        tok = load_tokenizer(ModelRequest(tok_spec.id, weights=tok_weights, untrained=untrained), progress=progress)
        model.tokenizer[key] = tok
        sources[f"tokenizer {modality}"] = tok.weights_source["model"]
    return sources


# ----------------------------------------------------------------------------- shared steps


def _load_terramind(
    module: nn.Module,
    spec: ModelSpec,
    mapping: KeyMapping,
    tokenized: Sequence[str],
    request: ModelRequest,
    device: str | torch.device,
    progress: Progress | None,
) -> nn.Module:
    """What every TerraMind loader does once its module is built on ``meta``: load its weights, then
    the tokenizers of the internal keys ``tokenized``, then finish it on ``device``."""
    weights, untrained, tokenizer_weights = request.weights, request.untrained, request.tokenizer_weights or None
    _check_tokenizer_weights(spec, tokenized, tokenizer_weights, untrained)
    sources = {"model": _fill(module, spec, mapping, weights, untrained, progress)}
    sources.update(_attach_tokenizers(module, spec, tokenized, weights, tokenizer_weights, untrained, progress))
    return _finish(module, spec, untrained, sources, device)


def _spec(request: ModelRequest, kind: str) -> ModelSpec:
    spec = catalogue.for_request(request)
    if spec.kind != kind:
        raise ConfigError(f"model '{request.id}' is a {spec.kind}, not a {kind}; choose a {kind} model")
    return spec


def _fill(
    module: nn.Module,
    spec: ModelSpec,
    mapping: KeyMapping,
    weights: PathLike | None,
    untrained: bool,
    progress: Progress | None,
) -> str:
    """Load ``spec``'s weights (or the untrained fill) into ``module``; returns their provenance."""
    if untrained:
        if weights is not None and str(weights) != "":
            raise ConfigError(
                f"model '{spec.id}': give either a weights path ({weights}) or untrained=True, not both"
            )
        checkpoint: Checkpoint = untrained_checkpoint(module, mapping)
        source = UNTRAINED_SOURCE
    else:
        # the run's progress bar is for the tiles: a download reports its percentages as messages
        fetching = PercentAsMessages(progress, f"downloading the weights of '{spec.id}'") if progress else NullProgress()
        resolved = resolve_weights(spec, weights, progress=fetching)
        if progress is not None:
            progress.info(f"loading {resolved.path.name} for '{spec.id}'")
        checkpoint = read_checkpoint(resolved.path)
        source = resolved.description
    load_checkpoint_(module, checkpoint, mapping, what=_describe(spec))
    return source


def _describe(spec: ModelSpec) -> str:
    if spec.kind == "tokenizer":
        cfg = spec.config
        kind = {"divae": "DiVAE", "vqvae": "VQ-VAE"}.get(cfg.kind, cfg.kind)  # type: ignore[union-attr]
        channels = cfg.in_channels  # type: ignore[union-attr]
        return f"model '{spec.id}' ({kind} tokenizer for {spec.modality}, {channels} input channels)"
    return f"model '{spec.id}' (TerraMind, width {spec.config.dim})"  # type: ignore[union-attr]


def _finish(
    module: nn.Module, spec: ModelSpec, untrained: bool, sources: Mapping[str, str], device: str | torch.device
) -> nn.Module:
    module.eval().requires_grad_(False)
    try:
        module = module.to(device)
    except (RuntimeError, AssertionError, ValueError) as e:  # no CUDA build/driver, bad index, ...
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"cannot put model '{spec.id}' on device '{device}': {detail}") from None
    module.model_id = spec.id  # type: ignore[assignment]
    module.untrained = bool(untrained)  # type: ignore[assignment]
    module.weights_source = dict(sources)  # type: ignore[assignment]
    return module


def _tokenizer_weights_for(tokenizer_weights: Mapping[str, PathLike] | None, modality: str) -> PathLike | None:
    """The user's tokenizer weights for ``modality`` (keys are modality names, any case)."""
    for key, value in (tokenizer_weights or {}).items():
        if key.upper() == modality.upper():
            return value
    return None


def _check_tokenizer_weights(
    spec: ModelSpec, keys: Sequence[str], tokenizer_weights: Mapping[str, PathLike] | None, untrained: bool
) -> None:
    """Refuse tokenizer weights for modalities without a tokenizer here, or together with untrained."""
    if untrained and tokenizer_weights:
        raise ConfigError(f"model '{spec.id}': give either tokenizer weights or untrained=True, not both")
    used = [modality_for_key(k).name for k in dict.fromkeys(keys)]
    extra = [k for k in (tokenizer_weights or {}) if k.upper() not in {m.upper() for m in used}]
    if extra:
        raise ConfigError(
            f"tokenizer weights were given for {', '.join(extra)}, which this model does not use; "
            f"it uses tokenizers for {', '.join(used) or 'no modality'}"
        )
