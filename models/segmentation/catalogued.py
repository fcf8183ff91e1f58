"""The catalogue's fine-tuned models (``kind='finetuned'``): their shipped config and their weights file.

A card (models/core/catalogue.py, ``FinetunedConfig``) names the TerraTorch YAML the model was
trained with; the official ones ship in ``configs/`` next to this module (IBM/ImpactMesh, Apache-2.0,
see ``configs/NOTICE.md``). Weights: a local file, a folder (the card's file name, or the checkpoint
its ``filename_match`` names, also inside a Hugging Face cache there), else the card's Hub source,
from the cache or downloaded (models/weights/hub.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.catalogue import ModelSpec
from ..core.configs import FinetunedConfig
from ..core.errors import ConfigError
from ..core.progress import Progress
from ..weights.hub import ResolvedWeights, resolve_weights

CONFIGS = Path(__file__).resolve().parent / "configs"


def config_path(spec: ModelSpec) -> Path:
    """The TerraTorch YAML of a catalogue fine-tuned model."""
    cfg = spec.config
    if not isinstance(cfg, FinetunedConfig):
        raise ConfigError(f"'{spec.id}' is a {spec.kind} model, not a fine-tuned one", field="model.id")
    path = Path(cfg.config_file) if os.path.isabs(cfg.config_file) else CONFIGS / cfg.config_file
    if not path.is_file():
        raise ConfigError(f"the config '{cfg.config_file}' of model '{spec.id}' is missing ({path}); reinstall the "
                          "plugin, or give the model's YAML as its config", field="model.id")  # fmt: skip
    return path


def weights_file(spec: ModelSpec, weights: str | None, progress: Progress | None = None) -> ResolvedWeights:
    """The checkpoint of ``spec``: ``weights`` (a file or a folder), else its Hub source (cache first)."""
    return resolve_weights(spec, weights, progress=progress)
