"""The parameters that say how to embed rasters, shared by *Extract embeddings* and *Map similarity*
(which can embed its inputs directly): declared once, read once; and the embedding raster as the
input of similarity, clustering and classification (``embeddings_layer``, ``derived_plan``).

Per input modality: ``INPUT_<M>`` (a raster layer), advanced ``BANDS_<M>`` (the layer's bands in the
order the model reads them) and, for raw multi-band modalities, advanced ``BAND_SUBSET_<M>`` (a
subset of the modality's bands: terratorch's ``bands``; the layer then holds just those, in that
order). Then ``MODEL``, ``MERGE`` (mean, max, concat), ``LAYERS`` (text: ``12``, ``9-12``; empty:
the last), advanced ``TIM`` (modalities generated first, Thinking-in-Modalities) and ``SEED``.
The values become ``EmbedParams`` (models/core/embedding_params.py), checked with the worker's rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..models.core import catalogue
from ..models.core.catalogue import ModelSpec
from ..models.core.embedding_params import MERGE_METHODS, EmbedParams, parse_layers
from ..models.core.embeddings import INPUT_KEY, embedding_modality
from ..models.core.errors import ConfigError
from ..models.core.job import ModelRequest, TilingSpec
from ..models.core.modalities import IMAGE_OUTPUTS, INPUTS, MODALITIES
from . import parameters as p
from .base import RunPlan
from .layers import LayerInput, check_input

MERGE = "MERGE"
LAYERS = "LAYERS"
TIM = "TIM"
INPUT_PARAMS = {m: f"INPUT_{m}" for m in INPUTS}
BANDS_PARAMS = {m: f"BANDS_{m}" for m in INPUTS if MODALITIES[m].num_bands > 1}
SUBSET_PARAMS = {m: f"BAND_SUBSET_{m}" for m in INPUTS
                 if MODALITIES[m].num_bands > 1 and not MODALITIES[m].is_tokenized_input}  # fmt: skip
DEFAULT_MODEL = "terramind_v1_base"
FIELDS = {"params.merge": MERGE, "params.layers": LAYERS, "params.tim": TIM,
          "params.bands": ", ".join(SUBSET_PARAMS.values()), "inputs": ", ".join(INPUT_PARAMS.values()),
          **{f"inputs.{m}": key for m, key in INPUT_PARAMS.items()}}  # fmt: skip


def add_parameters(alg: QgsProcessingAlgorithm, *, inputs_optional_note: str = "") -> None:
    """Declare the embedding parameters on ``alg`` (inputs are always optional parameters: at least one is needed)."""
    tr = alg.tr
    for modality, key in INPUT_PARAMS.items():
        alg.addParameter(QgsProcessingParameterRasterLayer(
            key, tr("Input {}{}").format(MODALITIES[modality].title, inputs_optional_note), optional=True))
    for modality, key in BANDS_PARAMS.items():
        alg.addParameter(p.advanced(p.band_mapping_param(
            key, tr("Band mapping of {} (the layer's bands in the model's order)").format(modality), INPUT_PARAMS[modality])))
    for modality, key in SUBSET_PARAMS.items():
        alg.addParameter(p.advanced(p.enum_param(
            key, tr("Band subset of {} (empty: all its bands)").format(modality), list(MODALITIES[modality].band_labels),
            None, multiple=True, optional=True)))
    alg.addParameter(p.model_param("terramind", tr("Model"), default=DEFAULT_MODEL))
    alg.addParameter(p.enum_param(MERGE, tr("Merge the modalities' tokens"), list(MERGE_METHODS), "mean"))
    alg.addParameter(QgsProcessingParameterString(
        LAYERS, tr("Encoder layer(s), averaged (e.g. 12, 9-12 or 4,8,12; empty: the last)"), optional=True))
    alg.addParameter(p.advanced(p.enum_param(
        TIM, tr("Thinking-in-Modalities: generate these first (TiM)"), list(IMAGE_OUTPUTS), None, multiple=True,
        optional=True)))
    alg.addParameter(p.seed_param())


def _strings(alg: QgsProcessingAlgorithm, parameters: dict, key: str, context: QgsProcessingContext) -> tuple[str, ...]:
    """The chosen options of an optional multiple enumeration (nothing chosen reads as [''])."""
    return tuple(v for v in alg.parameterAsEnumStrings(parameters, key, context) if v)


@dataclass(frozen=True)
class EmbeddingChoice:
    """What the embedding parameters say: the checked input layers, the model and the parameters."""

    inputs: list[LayerInput]
    spec: ModelSpec
    params: EmbedParams


def read(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext, *, dtype: str = "float32",
         pca: bool = False) -> EmbeddingChoice | None:  # fmt: skip
    """The embedding choice (None when no input layer is given), checked as the worker checks it."""
    bands = {m: _strings(alg, parameters, key, context) for m, key in SUBSET_PARAMS.items()}
    layers_text = alg.parameterAsString(parameters, LAYERS, context)
    params = EmbedParams(alg.parameterAsEnumString(parameters, MERGE, context) or "mean", parse_layers(layers_text),
                         {m: b for m, b in bands.items() if b}, _strings(alg, parameters, TIM, context),
                         alg.parameterAsInt(parameters, p.SEED, context), dtype, pca)  # fmt: skip
    inputs = []
    for modality, key in INPUT_PARAMS.items():
        layer = alg.parameterAsRasterLayer(parameters, key, context)
        if layer is None:
            continue
        mapping = p.read_band_mapping(alg, parameters, BANDS_PARAMS[modality], context) if modality in BANDS_PARAMS else None
        inputs.append(check_input(key, layer, params.modality(modality), mapping, mapping_param=BANDS_PARAMS.get(modality)))
    if not inputs:
        return None
    spec = catalogue.get(alg.parameterAsEnumString(parameters, p.MODEL, context) or DEFAULT_MODEL)
    params.check(spec, [item.modality.name for item in inputs])
    return EmbeddingChoice(inputs, spec, params)


# ----------------------------------------------------------------------------- an embedding raster as input
EMBEDDINGS = "EMBEDDINGS"
DERIVED_MODEL = "embeddings"  # the job's model id when the task reads an embedding raster (no model is loaded)


def embeddings_layer(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext, *,
                     required: bool = True) -> LayerInput | None:  # fmt: skip
    """The EMBEDDINGS raster layer, checked as an input (its tag is the worker's to check)."""
    layer = alg.parameterAsRasterLayer(parameters, EMBEDDINGS, context)
    if layer is None:
        if required:
            raise ConfigError("give the embedding raster made by 'Extract embeddings'", field=f"inputs.{INPUT_KEY}")
        return None
    return check_input(EMBEDDINGS, layer, embedding_modality(layer.bandCount()))


def derived_plan(task: str, item: LayerInput, outputs: dict, params: dict) -> RunPlan:
    """The run of a task that reads an embedding raster and loads no model (CPU, one window at a time)."""
    return RunPlan(task=task, inputs=[item], outputs=outputs, model=ModelRequest(id=DERIVED_MODEL), params=params,
                   tiling=TilingSpec(), extent=None, device="cpu", precision="fp32")  # fmt: skip
