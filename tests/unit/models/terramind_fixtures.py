"""Helpers of the TerraMind model tests: fill a wrapper through the product's one loading path.

``untrained_(model)`` loads the deterministic untrained fill (models/weights/untrained.py) in the
official checkpoint layout into a wrapper built with any config (also on the meta device), with
the key mapping ``models/build.py`` uses for that wrapper, through ``load_checkpoint_``: the same
strict matching, band slicing, re-tying and buffer recomputation as a user's checkpoint gets.
"""

from __future__ import annotations

import torch

from terramind_qgis.models.terramind import TerraMindGeneration, TerraMindTiM, TerraMindViT
from terramind_qgis.models.weights.loading import load_checkpoint_, untrained_checkpoint
from terramind_qgis.models.weights.matching import BACKBONE, GENERATION, TIM, KeyMapping

MAPPINGS: dict[type, KeyMapping] = {TerraMindGeneration: GENERATION, TerraMindViT: BACKBONE, TerraMindTiM: TIM}


def untrained_(model: torch.nn.Module, *, params_only: bool = False) -> torch.nn.Module:
    """``model`` filled by the untrained rule (``params_only``: without the recomputable buffers)."""
    mapping = MAPPINGS[type(model)]
    load_checkpoint_(model, untrained_checkpoint(model, mapping, recomputable=not params_only), mapping)
    return model.eval()
