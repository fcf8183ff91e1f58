"""Export a loaded fine-tuned model as the plugin's own format: ``.safetensors`` + a JSON model card.

The card (``<id>.json``, next to ``<id>.safetensors``)::

    {"format": "terramind_qgis.segmentation", "format_version": 1,
     "id": "flood_base", "title": "...", "description": "...",
     "config": {SegmentationConfig.to_dict(): backbone, inputs (name, modality, bands, mean, std),
                merge_method, necks, decoder, decoder_kwargs, num_classes, head_*, tim_*,
                class_names, no_data_replace, rescale, notes},
     "classes": [{"value": 0, "name": "Others", "color": "#D9D9D9"}, ...],
     "weights": "flood_base.safetensors", "sha256": "<hex of the weights file>",
     "source": {"checkpoint": "...", "config": "...", "format": "lightning"}}

The state dict is the pixel-wise model's (``encoder.*``, ``neck.*``, ``decoder.*``, ``head.*``;
no ``model.`` prefix); a tensor the model shares under several names is stored once, under its
first name. Command line (worker environment)::

    python -m <plugin>.models.segmentation.export CHECKPOINT [--config YAML] --out FOLDER --id NAME
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from ..core.errors import ConfigError, TerraMindError
from .checkpoint import CARD_FORMAT, CARD_VERSION, file_sha256, load_segmentation_model
from .model import SegmentationModel


def unique_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict with every shared tensor once (first name), contiguous."""
    seen: set[int] = set()
    out = {}
    for key, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        out[key] = tensor.detach().contiguous()
    return out


def export_model(
    model: SegmentationModel, folder: str | os.PathLike[str], model_id: str, *, title: str = "", description: str = ""
) -> Path:
    """Write ``<model_id>.safetensors`` and ``<model_id>.json`` into ``folder``; returns the card path."""
    from safetensors.torch import save_file

    if not model_id or any(c in model_id for c in "/\\:") or model_id.startswith("."):
        raise ConfigError(f"model id '{model_id}' must be a plain file name (no path separators)")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{model_id}.safetensors"
    partial = weights.with_name(weights.name + f".partial-{os.getpid()}")
    save_file(unique_state_dict(model.net), str(partial), metadata={"format": CARD_FORMAT})
    os.replace(partial, weights)
    card = {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "id": model_id,
        "title": title or model_id,
        "description": description,
        "config": model.config.to_dict(),
        "classes": [asdict(c) for c in model.classes],
        "weights": weights.name,
        "sha256": file_sha256(weights),
        "source": {
            "checkpoint": model.provenance.checkpoint,
            "config": model.provenance.config,
            "format": model.provenance.format,
        },
    }
    card_path = out / f"{model_id}.json"
    card_path.write_text(json.dumps(card, indent=1), encoding="utf-8")
    return card_path


def main(argv: list[str] | None = None) -> int:
    """Command line: convert a TerraTorch checkpoint (+ YAML) into a model card folder."""
    parser = argparse.ArgumentParser(description="Export a TerraTorch fine-tuned TerraMind model as a model card.")
    parser.add_argument("checkpoint", help="Lightning .ckpt, state dict (.pt/.safetensors) or model card (.json)")
    parser.add_argument("--config", help="the TerraTorch YAML the model was trained with")
    parser.add_argument("--out", required=True, help="folder for <id>.json and <id>.safetensors")
    parser.add_argument("--id", required=True, help="model id (file name stem)")
    parser.add_argument("--title", default="")
    parser.add_argument("--classes", default=None, help="'0: Others #D9D9D9; 1: Flood #1F77B4'")
    args = parser.parse_args(argv)
    try:
        model = load_segmentation_model(args.checkpoint, args.config, classes=args.classes)
        card = export_model(model, args.out, args.id, title=args.title)
    except TerraMindError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    sys.stdout.write(f"{card}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
