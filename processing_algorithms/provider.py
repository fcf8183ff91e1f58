"""The Processing provider ``terramind`` (an explicit list of algorithms)."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .apply_few_shot_classifier import ApplyFewShotClassifierAlgorithm
from .base import ICON
from .classify_few_shot import ClassifyFewShotAlgorithm
from .cluster_embeddings import ClusterEmbeddingsAlgorithm
from .download_models import DownloadModelsAlgorithm
from .export_model_to_onnx import ExportModelToOnnxAlgorithm
from .extract_embeddings import ExtractEmbeddingsAlgorithm
from .finetune_segmentation_model import FinetuneSegmentationModelAlgorithm
from .generate_modalities import GenerateModalitiesAlgorithm
from .map_similarity import MapSimilarityAlgorithm
from .map_water_zero_shot import MapWaterZeroShotAlgorithm
from .prepare_training_data import PrepareTrainingDataAlgorithm
from .reconstruct_with_tokenizer import ReconstructWithTokenizerAlgorithm
from .run_on_many_scenes import RunOnManyScenesAlgorithm
from .segment_with_finetuned_model import SegmentWithFinetunedModelAlgorithm
from .set_up_environment import SetUpEnvironmentAlgorithm

ALGORITHMS = (ReconstructWithTokenizerAlgorithm, GenerateModalitiesAlgorithm, SegmentWithFinetunedModelAlgorithm,
              MapWaterZeroShotAlgorithm, SetUpEnvironmentAlgorithm, DownloadModelsAlgorithm, ExportModelToOnnxAlgorithm,
              RunOnManyScenesAlgorithm, ExtractEmbeddingsAlgorithm, MapSimilarityAlgorithm, ClusterEmbeddingsAlgorithm,
              ClassifyFewShotAlgorithm, ApplyFewShotClassifierAlgorithm, PrepareTrainingDataAlgorithm,
              FinetuneSegmentationModelAlgorithm)


class TerraMindProvider(QgsProcessingProvider):
    """TerraMind foundation-model algorithms; the models run in a worker process."""

    def id(self) -> str:
        return "terramind"

    def name(self) -> str:
        return "TerraMind"

    def longName(self) -> str:
        return "TerraMind (IBM / ESA geospatial foundation model)"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def svgIconPath(self) -> str:
        return ICON

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        return ["tif"]  # the worker writes GeoTIFF only

    def defaultRasterFileExtension(self) -> str:
        return "tif"
