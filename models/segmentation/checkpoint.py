"""Load a fine-tuned segmentation model: Lightning ``.ckpt`` + YAML, plain state dict + YAML, or card.

Three ways a user may hold a fine-tuned model:

1. the Lightning checkpoint TerraTorch wrote (``state_dict`` with ``model.encoder.*``,
   ``model.neck.<i>.*``, ``model.decoder.*``, ``model.head.*``, and ``hyper_parameters``; a
   multi-temporal model has ``model.encoder.encoder.*``, its backbone inside the ``TemporalWrapper``;
   ``ModelCheckpoint(save_weights_only=True)`` files lack only the optimiser and callback states) together
   with the YAML it was trained with. The YAML may be left out: the checkpoint's
   ``hyper_parameters`` then describe the model, and the standardisation falls back to the
   TerraMind v1 statistics (reported as a note). When both are given they must agree;
2. a plain state dict (``torch.save(model.state_dict())`` of the task or of its ``model``; keys with
   or without the ``model.`` prefix) with the YAML;
3. the plugin's own export: a JSON model card plus a ``.safetensors`` state dict (``export.py``).

Files are read with ``torch.load(weights_only=True)`` (checkpoints written by ``terratorch fit``
hold only tensors, numbers, strings and containers, so this works for them as they are) or with
safetensors. Loading is strict: the model is built on the meta device and every tensor must come
from the file; the error lists every missing, unexpected and mis-shaped key (models/weights). The
file may lack only recomputable buffers (sin-cos ``pos_emb``, LayerNorm zero ``bias``) and the
second name of a shared tensor. Ignored on purpose: Lightning task state outside ``model.``
(loss weights, metrics) and, for TiM, the tokenizer of the TiM modality that TerraTorch stores but
never runs (TiM generates token ids, not pixels).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.classes import resolve_classes
from ..core.errors import CheckpointError, ConfigError
from ..core.modalities import ClassInfo
from ..terramind.names import output_key
from ..weights.loading import load_checkpoint_
from ..weights.matching import KeyMapping
from ..weights.reading import Checkpoint, TensorDictCheckpoint, is_safetensors, load_torch_file, read_checkpoint
from .config import SegmentationConfig, config_from_task_args, config_from_yaml_dict, load_yaml_config
from .model import Provenance, SegmentationModel, build_pixel_wise_model

CARD_FORMAT = "terramind_qgis.segmentation"
CARD_VERSION = 1
SEGMENTATION = KeyMapping("segmentation")
# Lightning task attributes that may hold state but play no part in inference.
TASK_STATE_PREFIXES = ("criterion.", "train_metrics.", "val_metrics.", "test_metrics.", "aux_loss.")
# model_args entries that do not change the model (weights come from the checkpoint).
_NON_ARCHITECTURE_ARGS = ("backbone_pretrained", "backbone_ckpt_path")
HPARAMS_NOTE = "no YAML config given: the model is described by the checkpoint's hyper_parameters"

PathLike = str | os.PathLike[str]


def load_segmentation_model(
    checkpoint: PathLike,
    config: PathLike | None = None,
    *,
    classes: str | None = None,
    card_classes: tuple[ClassInfo, ...] = (),
    device: str | torch.device = "cpu",
) -> SegmentationModel:
    """The fine-tuned model in ``checkpoint`` (``.ckpt``/``.pt``/``.safetensors`` or a ``.json`` card).

    ``config``: the TerraTorch YAML (optional for Lightning checkpoints, ignored for cards).
    ``classes``: class names/colours overriding the card's or config's (see ``classes.py``);
    ``card_classes``: those of the model's catalogue card (between the two).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"model file '{path}' does not exist or is not a file")
    if path.suffix.lower() == ".json":
        return _load_card(path, classes, device)
    tensors, hparams, fmt = _read_torch_or_safetensors(path)
    if config is not None and str(config):
        yaml_cfg = load_yaml_config(str(config))
        cfg = config_from_yaml_dict(yaml_cfg)
        if hparams and isinstance(hparams.get("model_args"), Mapping):
            _check_same_model(((yaml_cfg.get("model") or {}).get("init_args") or {}).get("model_args") or {},
                              hparams["model_args"], str(config), path)  # fmt: skip
    elif hparams and hparams.get("model_args"):
        cfg = _with_note(config_from_task_args(hparams), HPARAMS_NOTE)
    else:
        raise ConfigError(
            f"'{path.name}' holds weights only; give the TerraTorch YAML config it was trained with "
            "(or export it to a model card first)"
        )
    tensors = model_tensors(tensors, cfg, path)
    net = _build_and_load(cfg, TensorDictCheckpoint(tensors, path))
    model_classes = resolve_classes(cfg.num_classes, names=cfg.class_names, card_classes=card_classes, override=classes)
    provenance = Provenance(str(path), str(config) if config else None, fmt, path.stem)
    return SegmentationModel(net, cfg, model_classes, provenance).eval().to(device)


def describe_model_file(checkpoint: PathLike, config: PathLike | None = None) -> SegmentationConfig:
    """The model a file holds, without loading its weights (card, YAML, or the checkpoint's hyper_parameters).

    A ``.ckpt`` is opened with ``torch.load(mmap=True)``: tensors stay on disk, only the small pickled
    dictionary is read.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"model file '{path}' does not exist or is not a file")
    if path.suffix.lower() == ".json":
        return SegmentationConfig.from_dict(read_card(path)["config"])
    if config is not None and str(config):
        return config_from_yaml_dict(load_yaml_config(str(config)))
    _, hparams, _ = _read_torch_or_safetensors(path)
    if not hparams or not hparams.get("model_args"):
        raise ConfigError(
            f"'{path.name}' holds weights only; give the TerraTorch YAML config it was trained with "
            "(or export it to a model card first)"
        )
    return _with_note(config_from_task_args(hparams), HPARAMS_NOTE)


def _with_note(cfg: SegmentationConfig, note: str) -> SegmentationConfig:
    return SegmentationConfig.from_dict({**cfg.to_dict(), "notes": (note, *cfg.notes)})


def _read_torch_or_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, str]:
    """(tensors, Lightning hyper_parameters or None, format) of a checkpoint file."""
    if is_safetensors(path):
        ckpt = read_checkpoint(path)
        return {k: ckpt[k] for k in ckpt}, None, "state_dict"
    obj = load_torch_file(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        hparams = obj.get("hyper_parameters")
        return dict(obj["state_dict"]), dict(hparams) if isinstance(hparams, Mapping) else None, "lightning"
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), None, "state_dict"
    raise CheckpointError(
        f"checkpoint file '{path}' is neither a Lightning checkpoint (with 'state_dict') nor a state dict of tensors"
    )


def _check_same_model(yaml_args: Mapping[str, Any], ckpt_args: Mapping[str, Any], config: str, path: Path) -> None:
    keys = (set(yaml_args) | set(ckpt_args)) - set(_NON_ARCHITECTURE_ARGS)
    differ = sorted(k for k in keys if yaml_args.get(k) != ckpt_args.get(k))
    if differ:
        shown = "; ".join(f"{k}: config {yaml_args.get(k)!r}, checkpoint {ckpt_args.get(k)!r}" for k in differ[:6])
        raise ConfigError(
            f"the config '{config}' does not describe the checkpoint '{path.name}' (model_args differ: {shown}); "
            "give the YAML the model was trained with, or leave the config empty to use the checkpoint's own"
        )


def model_tensors(tensors: Mapping[str, torch.Tensor], cfg: SegmentationConfig, path: Path) -> dict[str, torch.Tensor]:
    """The pixel-wise model's tensors of a task checkpoint: ``model.`` stripped, task state dropped."""
    prefixed = any(k.startswith("model.") for k in tensors)
    tim_tokenizers = tuple(f"encoder.tokenizer.{output_key(m)}." for m in cfg.tim_modalities)
    out, foreign = {}, []
    for key, value in tensors.items():
        if prefixed and not key.startswith("model."):
            if not key.startswith(TASK_STATE_PREFIXES):
                foreign.append(key)
            continue
        key = key[len("model.") :] if prefixed else key
        if tim_tokenizers and key.startswith(tim_tokenizers):
            continue
        out[key] = value
    if foreign:
        raise CheckpointError(
            f"checkpoint '{path.name}' has {len(foreign)} tensor(s) outside the task's 'model.' that this plugin "
            f"does not know: {', '.join(foreign[:10])}"
        )
    return out


def _build_and_load(cfg: SegmentationConfig, checkpoint: Checkpoint) -> torch.nn.Module:
    with torch.device("meta"):
        net = build_pixel_wise_model(cfg)
    what = f"the fine-tuned model ({cfg.backbone}, {cfg.decoder}, {cfg.num_classes} classes)"
    load_checkpoint_(net, checkpoint, SEGMENTATION, what=what)
    return net


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(path: PathLike) -> dict[str, Any]:
    """A segmentation model card (JSON), checked for format and version."""
    try:
        card = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the model card {path}: {e}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ConfigError(f"'{path}' is not a segmentation model card (expected \"format\": \"{CARD_FORMAT}\")")
    if card.get("format_version") != CARD_VERSION:
        raise ConfigError(f"model card {path} has format_version {card.get('format_version')}; this plugin reads {CARD_VERSION}")
    return card


def _load_card(path: Path, classes: str | None, device: str | torch.device) -> SegmentationModel:
    card = read_card(path)
    cfg = SegmentationConfig.from_dict(card["config"])
    weights = path.parent / str(card.get("weights", ""))
    if not weights.is_file():
        raise CheckpointError(f"model card {path.name} names weights '{card.get('weights')}', which are not next to it")
    if card.get("sha256") and file_sha256(weights) != card["sha256"]:
        raise CheckpointError(f"weights file '{weights.name}' does not match the SHA-256 in its card {path.name}")
    net = _build_and_load(cfg, read_checkpoint(weights))
    card_classes = [ClassInfo(int(c["value"]), str(c["name"]), str(c["color"])) for c in card.get("classes", [])]
    model_classes = resolve_classes(cfg.num_classes, names=cfg.class_names, card_classes=card_classes, override=classes)
    provenance = Provenance(str(weights), str(path), "card", str(card.get("id") or path.stem))
    return SegmentationModel(net, cfg, model_classes, provenance).eval().to(device)
