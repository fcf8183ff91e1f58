"""Parameters shared by the TerraMind algorithms: keys (public API) and small factories.

Parameter keys are used by saved graphical models, batch files and scripts: never rename one.
Enumerations use static strings (``processing.run(..., {"DEVICE": "cpu"})``), so saved values stay
valid when a list grows. ``read_shared`` is the one place that turns the shared parameters into
values; it raises ``ConfigError`` naming the parameter at fault.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from qgis.core import (
    Qgis,
    QgsMessageLog,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
)

from ..models.core import catalogue
from ..models.core.errors import ConfigError
from ..models.core.job import PRECISIONS, TilingSpec
from ..models.core.params import DEFAULT_TIMESTEPS, MAX_SEED, MAX_TIMESTEPS, Sampling
from . import LOG_TAG

MODEL = "MODEL"
TIMESTEPS = "TIMESTEPS"
SEED = "SEED"
TILE_SIZE = "TILE_SIZE"
OVERLAP = "OVERLAP"
BATCH_SIZE = "BATCH_SIZE"
EXTENT = "EXTENT"
DEVICE = "DEVICE"
PRECISION = "PRECISION"
WEIGHTS = "WEIGHTS"
UNTRAINED = "UNTRAINED"
TEMPERATURE = "TEMPERATURE"
TOP_P = "TOP_P"
TOP_K = "TOP_K"

DEVICES = ("auto", "cpu", "cuda")
# The job fields of the shared parameters (models/core/errors.py ``where``: a rule's message is led
# by the parameter key the user knows).
SHARED_FIELDS = {
    "model.id": MODEL, "model.weights": WEIGHTS, "model.untrained": UNTRAINED, "device": DEVICE,
    "precision": PRECISION, "tiling.tile_size": TILE_SIZE, "tiling.overlap": OVERLAP, "tiling.batch_size": BATCH_SIZE,
    "params.timesteps": TIMESTEPS, "params.seed": SEED, "params.temperature": TEMPERATURE, "params.top_p": TOP_P,
    "params.top_k": TOP_K,
}  # fmt: skip
# "All files (*)", not "(*.*)": Processing then also accepts a folder (or a file without an extension) as WEIGHTS.
CHECKPOINT_FILTER = "Checkpoints (*.safetensors *.pt *.pth *.ckpt *.onnx);;All files (*)"


def advanced(param: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    """``param`` shown under the dialog's advanced parameters."""
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    return param


def enum_param(name: str, description: str, options: list[str], default, *, multiple: bool = False,
               optional: bool = False) -> QgsProcessingParameterEnum:
    """An enumeration whose values are the option strings themselves (stable in saved models)."""
    param = QgsProcessingParameterEnum(name, description, options=options, allowMultiple=multiple,
                                       defaultValue=default, optional=optional)
    param.setUsesStaticStrings(True)
    return param


def catalogue_ids(kind: str | None = None, *, modality: str | None = None, with_weights: bool = False) -> list[str]:
    """Catalogue ids (official first, then custom cards from TERRAMIND_CATALOGUE_PATH, sorted); optionally
    only one kind, one modality's tokenizers, or entries with a published weights source."""
    try:
        specs = catalogue.all_specs(kind)
    except ConfigError as e:  # a broken custom card must not break the provider: list what loaded
        QgsMessageLog.logMessage(f"TERRAMIND_CATALOGUE_PATH: {e}", LOG_TAG, Qgis.MessageLevel.Warning)
        specs = catalogue.all_specs(kind)  # the folder is marked as read: this returns what is registered
    specs = [s for s in specs if (modality is None or s.modality in (None, modality))
             and (not with_weights or s.weights is not None)]  # fmt: skip
    return [s.id for s in specs if s.official] + sorted(s.id for s in specs if not s.official)


def model_param(kind: str, description: str, *, default: str | None, optional: bool = False,
                modality: str | None = None) -> QgsProcessingParameterEnum:
    """The catalogue entries of one kind (official ids first, then custom cards from TERRAMIND_CATALOGUE_PATH)."""
    return enum_param(MODEL, description, catalogue_ids(kind, modality=modality), default, optional=optional)


def timesteps_param(default: int = DEFAULT_TIMESTEPS) -> QgsProcessingParameterNumber:
    return QgsProcessingParameterNumber(TIMESTEPS, "Diffusion steps (DDIM) for decoding",
                                        QgsProcessingParameterNumber.Type.Integer, default, minValue=1,
                                        maxValue=MAX_TIMESTEPS)  # fmt: skip


def sampling_params(*, as_advanced: bool = False) -> list[QgsProcessingParameterNumber]:
    """Temperature, top-p and top-k of TerraMind's token sampling (defaults: models/core/params.py ``Sampling``)."""
    d = Sampling()
    params = [
        QgsProcessingParameterNumber(TEMPERATURE, "Sampling temperature", QgsProcessingParameterNumber.Type.Double,
                                     d.temperature, minValue=0.0, maxValue=10.0),
        QgsProcessingParameterNumber(TOP_P, "Top-p (nucleus) threshold, 0 disables",
                                     QgsProcessingParameterNumber.Type.Double, d.top_p, minValue=0.0, maxValue=1.0),
        QgsProcessingParameterNumber(TOP_K, "Top-k, 0 disables", QgsProcessingParameterNumber.Type.Integer, d.top_k,
                                     minValue=0),
    ]  # fmt: skip
    return [advanced(param) for param in params] if as_advanced else params


def read_sampling(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext) -> Sampling:
    """The sampling parameters, checked."""
    return Sampling(alg.parameterAsDouble(parameters, TEMPERATURE, context),
                    alg.parameterAsDouble(parameters, TOP_P, context), alg.parameterAsInt(parameters, TOP_K, context))


def band_mapping_param(name: str, description: str, parent: str) -> QgsProcessingParameterBand:
    """An optional list of the layer ``parent``'s bands, in the order the model reads them."""
    return QgsProcessingParameterBand(name, description, parentLayerParameterName=parent, optional=True,
                                      allowMultiple=True)  # fmt: skip


def read_band_mapping(alg: QgsProcessingAlgorithm, parameters: dict, name: str,
                      context: QgsProcessingContext) -> tuple[int, ...] | None:
    """The chosen band numbers (1-based), or None for the layer's bands as they are.

    Also takes one comma- or space-separated string (``BANDS=4,3,2`` from qgis_process or a script),
    which ``parameterAsInts`` would read as band 0."""
    value = parameters.get(name)
    if isinstance(value, str) and value.strip():
        parts = [v for v in value.replace(",", " ").split() if v]
        if not all(v.isdigit() for v in parts):
            raise ConfigError(f"{name}: '{value}' is not a list of band numbers; give e.g. 4,3,2")
        return tuple(int(v) for v in parts) or None
    return tuple(alg.parameterAsInts(parameters, name, context) or ()) or None


def seed_param() -> QgsProcessingParameterNumber:
    return QgsProcessingParameterNumber(SEED, "Random seed (same seed and inputs give the same result)",
                                        QgsProcessingParameterNumber.Type.Integer, 0, minValue=0, maxValue=MAX_SEED)


def shared_params() -> list[QgsProcessingParameterDefinition]:
    """Area, weights, device and tiling parameters every model algorithm has (in dialog order)."""
    return [
        QgsProcessingParameterExtent(EXTENT, "Limit processing to this extent", optional=True),
        QgsProcessingParameterFile(WEIGHTS, "Local weights (file or folder; empty: Hugging Face Hub or its cache)",
                                   QgsProcessingParameterFile.Behavior.File, optional=True, fileFilter=CHECKPOINT_FILTER),
        enum_param(DEVICE, "Device", list(DEVICES), "auto"),
        advanced(enum_param(PRECISION, "Precision", list(PRECISIONS), "fp32")),
        advanced(QgsProcessingParameterNumber(TILE_SIZE, "Tile size (pixels, multiple of 32)",
                                              QgsProcessingParameterNumber.Type.Integer, 224, minValue=32, maxValue=4096)),
        advanced(QgsProcessingParameterNumber(OVERLAP, "Tile overlap (pixels)",
                                              QgsProcessingParameterNumber.Type.Integer, 32, minValue=0, maxValue=2048)),
        advanced(QgsProcessingParameterNumber(BATCH_SIZE, "Tiles per batch",
                                              QgsProcessingParameterNumber.Type.Integer, 4, minValue=1, maxValue=256)),
        advanced(QgsProcessingParameterBoolean(
            UNTRAINED, "Use deterministic untrained weights — testing only, outputs tagged UNTRAINED", False)),
    ]


@dataclass(frozen=True)
class SharedOptions:
    """The shared parameters' values."""

    tiling: TilingSpec
    weights: str | None
    device: str
    precision: str
    untrained: bool


def read_tiling(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext) -> TilingSpec:
    """TILE_SIZE, OVERLAP and BATCH_SIZE, checked by ``TilingSpec`` (a model's own tile-size rule comes after)."""
    return TilingSpec(tile_size=alg.parameterAsInt(parameters, TILE_SIZE, context),
                      overlap=alg.parameterAsInt(parameters, OVERLAP, context),
                      batch_size=alg.parameterAsInt(parameters, BATCH_SIZE, context))  # fmt: skip


def read_weights(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext) -> str | None:
    """The WEIGHTS file or folder (``None``: the Hugging Face Hub), which must exist when given."""
    weights = alg.parameterAsFile(parameters, WEIGHTS, context) or None
    if weights and not os.path.exists(weights):
        raise ConfigError(f"'{weights}' does not exist; give a checkpoint file or a folder of them, "
                          "or leave it empty to use the Hugging Face Hub", field="model.weights")  # fmt: skip
    return weights


def read_shared(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext) -> SharedOptions:
    """Read and check the shared parameters."""
    return SharedOptions(
        tiling=read_tiling(alg, parameters, context),
        weights=read_weights(alg, parameters, context),
        device=alg.parameterAsEnumString(parameters, DEVICE, context) or "auto",
        precision=alg.parameterAsEnumString(parameters, PRECISION, context) or "fp32",
        untrained=alg.parameterAsBoolean(parameters, UNTRAINED, context),
    )


def catalogue_paths() -> tuple[str, ...]:
    """Folders of custom model cards named by TERRAMIND_CATALOGUE_PATH (passed on to the worker)."""
    return tuple(p for p in os.environ.get("TERRAMIND_CATALOGUE_PATH", "").split(os.pathsep) if p)
