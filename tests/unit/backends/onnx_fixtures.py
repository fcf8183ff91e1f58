"""Helpers of the ONNX backend tests (conftest.py holds the fixtures that use them).

Segmentation: the terratorch golden cases of tests/goldens/segmentation (full-size tiny backbone,
checkpoint layout filled by models/weights/untrained.py, loaded as a plain state dict + the case's
YAML); exporting one takes ~2 s. Tokenizers: the reduced test tokenizers of tests/data/catalogue
with ``untrained=True``. Every export is made once per session.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
import torch

from terramind_qgis.models.weights.untrained import deterministic_state_dict
from testlib.tolerances import RTOL, relative_error  # noqa: F401 - re-exported to the ONNX tests

REPO = Path(__file__).resolve().parents[3]
GOLD = REPO / "tests" / "goldens" / "segmentation"
EXAMPLES = REPO / "tests" / "data" / "examples"
CATALOGUE = REPO / "tests" / "data" / "catalogue"
CASES = json.loads((GOLD / "goldens.json").read_text())["cases"]
SCENES = CASES["tiny_sen1floods11"]["scenes"]


def load_case_model(case: str, folder: Path):
    """The golden case's model, loaded through ``load_segmentation_model`` from a filled state dict."""
    from terramind_qgis.models.segmentation.checkpoint import load_segmentation_model

    layout = json.loads((GOLD / CASES[case]["layout"]).read_text())
    shapes = {k: (tuple(s), getattr(torch, d)) for k, (s, d) in layout["tensors"].items()}
    tensors = deterministic_state_dict(shapes)
    state = {k: tensors[layout["aliases"].get(k, k)] for k in tensors}
    path = folder / f"{case}.pt"
    torch.save(state, path)
    return load_segmentation_model(path, GOLD / CASES[case]["config"])


def case_inputs(model, case: str, scene: str) -> dict[str, np.ndarray]:
    """Raw inputs ``{config name: (1, C, H, W)}`` of a golden case (S1RTC stands in for S1GRD)."""
    out = {}
    for spec in model.config.inputs:
        folder = "S1RTC" if spec.modality == "S1GRD" else spec.modality
        with rasterio.open(EXAMPLES / folder / f"{scene}.tif") as src:
            x = src.read().astype(np.float32)  # (C, H, W)
        if CASES[case]["window"]:
            r, c, h, w = CASES[case]["window"]
            x = x[:, r : r + h, c : c + w]
        out[spec.name] = np.ascontiguousarray(x)[None]  # (1, C, H, W)
    return out


def batch_inputs(model, case: str) -> dict[str, np.ndarray]:
    """All scenes of a case as one batch ``{name: (B, C, H, W)}``."""
    per_scene = [case_inputs(model, case, s) for s in CASES[case]["scenes"]]
    return {k: np.concatenate([p[k] for p in per_scene]) for k in per_scene[0]}


def s2l2a_standardized(scenes: list[str]) -> np.ndarray:
    """Real S2L2A patches ``(B, 12, 224, 224)`` standardized with the v1 statistics (float32)."""
    from terramind_qgis.models.core.modalities import get_modality

    m = get_modality("S2L2A")
    mean = np.asarray(m.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(m.std, np.float32).reshape(1, -1, 1, 1)
    raw = []
    for scene in scenes:
        with rasterio.open(EXAMPLES / "S2L2A" / f"{scene}.tif") as src:
            raw.append(src.read().astype(np.float32))
    return (np.stack(raw) - mean) / std
