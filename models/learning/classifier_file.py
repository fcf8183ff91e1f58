"""The saved few-shot classifier: one JSON file (no pickle), readable anywhere.

Layout::

    {"format": "terramind-fewshot-classifier", "version": 1, "classifier": "softmax-regression",
     "embedding": {<signature of the embeddings it was trained on: models/core/embeddings.py>},
     "classes": [[value, name, "#RRGGBB"], ...],
     "mean": [...], "std": [...], "weights": [[...], ...], "bias": [...],
     "regularization": 0.01, "training": {"features": n, "pixels": n, "cv_accuracy": ..., ...},
     "created": "...", "plugin_version": "..."}

``save`` writes it atomically; ``load`` checks it and raises ``ConfigError`` (field
``params.classifier``) naming what is wrong with the file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.modalities import ClassInfo
from .softmax import SoftmaxModel

FORMAT = "terramind-fewshot-classifier"
VERSION = 1
FIELD = "params.classifier"


@dataclass(frozen=True)
class SavedClassifier:
    model: SoftmaxModel
    classes: tuple[ClassInfo, ...]
    embedding: dict[str, Any]  # signature of the training embeddings
    training: dict[str, Any]


def save(path: str, saved: SavedClassifier, regularization: float, plugin_version: str) -> str:
    m = saved.model
    doc = {
        "format": FORMAT, "version": VERSION, "classifier": "softmax-regression", "embedding": saved.embedding,
        "classes": [[c.value, c.name, c.color] for c in saved.classes],
        "mean": m.mean.tolist(), "std": m.std.tolist(), "weights": m.weights.tolist(), "bias": m.bias.tolist(),
        "regularization": regularization, "training": saved.training,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "plugin_version": plugin_version,
    }  # fmt: skip
    tmp = f"{path}.partial-{os.getpid()}.json"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load(path: str) -> SavedClassifier:
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read '{path}': {e.strerror or e}", field=FIELD) from None
    except ValueError as e:
        raise ConfigError(f"'{name}' is not a JSON file ({e})", field=FIELD) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f"'{name}' is not a few-shot classifier saved by this plugin (no \"format\": \"{FORMAT}\")",
                          field=FIELD)  # fmt: skip
    if int(doc.get("version", 0)) > VERSION:
        raise ConfigError(f"'{name}' was saved by a newer plugin (version {doc['version']}); update the plugin", field=FIELD)
    try:
        weights = np.asarray(doc["weights"], np.float64)
        classes = tuple(ClassInfo(int(v), str(n), str(c)) for v, n, c in doc["classes"])
        model = SoftmaxModel(np.asarray(doc["mean"], np.float64), np.asarray(doc["std"], np.float64), weights,
                             np.asarray(doc["bias"], np.float64))  # fmt: skip
        embedding = dict(doc["embedding"])
        dim = int(embedding["dim"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"'{name}' is damaged ({type(e).__name__}: {e})", field=FIELD) from None
    if weights.shape != (len(classes), dim) or model.mean.shape != (dim,) or model.bias.shape != (len(classes),):
        raise ConfigError(f"'{name}' is damaged (weights {weights.shape} for {len(classes)} classes of {dim} dimensions)",
                          field=FIELD)  # fmt: skip
    return SavedClassifier(model, classes, embedding, dict(doc.get("training") or {}))
