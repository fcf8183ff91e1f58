"""Download models for offline use: weights files into the Hugging Face cache or a folder (worker task ``download``)."""

from __future__ import annotations

import json
import os
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterFolderDestination,
)

from ..models.core import catalogue
from ..models.core.errors import ConfigError
from ..models.core.job import ModelRequest, TilingSpec
from ..models.core.modalities import TOKENIZED
from . import parameters as p
from .base import RunPlan, TerraMindAlgorithm


class DownloadModelsAlgorithm(TerraMindAlgorithm):
    """Fetch the weights of catalogue models (and a TerraMind model's tokenizers) ahead of offline runs."""

    NAME, DISPLAY_NAME, GROUP = "downloadmodels", "Download models for offline use", "environment"

    MODELS = "MODELS"
    TOKENIZERS = "TOKENIZERS"
    FOLDER = "FOLDER"
    FILES = "FILES"

    def initAlgorithm(self, config: dict | None = None) -> None:
        models = p.catalogue_ids(with_weights=True)
        default = "terramind_v1_base" if "terramind_v1_base" in models else None
        self.addParameter(p.enum_param(self.MODELS, self.tr("Models"), models, default, multiple=True))
        self.addParameter(p.enum_param(self.TOKENIZERS, self.tr("Tokenizers of the TerraMind models (empty: all)"),
                                       list(TOKENIZED), None, multiple=True, optional=True))  # fmt: skip
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.FOLDER, self.tr("Folder (empty: keep them in the Hugging Face cache)"), optional=True,
            createByDefault=False))  # fmt: skip
        self.addOutput(QgsProcessingOutputString(self.FILES, self.tr("Files (JSON: model, repo, revision, path, bytes, sha256)")))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        models = [m for m in self.parameterAsEnumStrings(parameters, self.MODELS, context) if m]
        if not models:
            raise ConfigError(f"{self.MODELS}: choose at least one model")
        specs = [catalogue.get(m) for m in models]
        for spec in specs:
            if spec.weights is None:
                raise ConfigError(f"{self.MODELS}: '{spec.id}' has no published weights to download")
        tokenizers = [t for t in self.parameterAsEnumStrings(parameters, self.TOKENIZERS, context) if t]  # [''] if unset
        if tokenizers and not any(s.kind == "terramind" for s in specs):
            raise ConfigError(f"{self.TOKENIZERS} picks the tokenizers of TerraMind models, but {self.MODELS} has none; "
                              f"choose tokenizer models in {self.MODELS} to download tokenizers alone")  # fmt: skip
        folder = self.parameterAsFileOutput(parameters, self.FOLDER, context) or None
        if folder is not None and os.path.isfile(folder):
            raise ConfigError(f"{self.FOLDER}: '{folder}' is a file; choose a folder")
        return RunPlan(
            task="download", inputs=[], outputs={},
            model=ModelRequest(id=models[0], catalogue_paths=p.catalogue_paths()),
            params={"models": models, "tokenizers": tokenizers or None, "folder": folder},
            tiling=TilingSpec(), extent=None, device="cpu", precision="fp32",
        )  # fmt: skip

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        files = (result.get("metrics") or {}).get("files") or []
        for f in files:
            feedback.pushInfo(f"{f['model']}: {f['path']} ({f['bytes'] / 2**20:.1f} MiB, sha256 {f['sha256']})")
        return {self.FOLDER: plan.params["folder"], self.FILES: json.dumps(files)}
