"""Generate modalities: TerraMind any-to-any generation from one or more input rasters."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..models.core import catalogue
from ..models.core.errors import ConfigError
from ..models.core.job import ModelRequest
from ..models.core.modalities import IMAGE_OUTPUTS, INPUTS, MODALITIES
from . import parameters as p
from .base import OutputTarget, RunPlan, TerraMindAlgorithm
from .layers import check_input
from .planning import destination, layer_name, read_extent, require_weights


class GenerateModalitiesAlgorithm(TerraMindAlgorithm):
    """Generate the chosen output modalities from whichever input modalities are given."""

    OUTPUTS = "OUTPUTS"
    TEMPERATURE, TOP_P, TOP_K = p.TEMPERATURE, p.TOP_P, p.TOP_K
    INPUT_PARAMS = {m: f"INPUT_{m}" for m in INPUTS}  # S2L2A, S2L1C, S2RGB, S1GRD, S1RTC, DEM, LULC, NDVI
    OUTPUT_PARAMS = {m: f"OUTPUT_{m}" for m in IMAGE_OUTPUTS}  # S2L2A, S1GRD, S1RTC, DEM, NDVI, LULC
    DEFAULT_MODEL = "terramind_v1_base"

    def name(self) -> str:
        return "generatemodalities"

    def displayName(self) -> str:
        return self.tr("Generate modalities")

    def group(self) -> str:
        return self.tr("Generation")

    def groupId(self) -> str:
        return "generation"

    def shortHelpString(self) -> str:
        return self.tr(
            "Generates new modalities (e.g. Sentinel-1, DEM, land cover) from one or more co-located inputs with "
            "TerraMind's any-to-any generation. Give at least one input layer; inputs in other CRSs or resolutions are "
            "aligned on the 10 m grid of the first given input (in the order of the input parameters), and every "
            "output is written on that grid.\n\n"
            "<b>Outputs to generate</b>: the ORDER of the list is the generation order — each output is conditioned on "
            "the inputs and on the outputs generated before it (in the dialog, drag entries to reorder; in scripts, "
            "the order of the list). A modality that is an input cannot also be generated. Only the requested "
            "outputs are written; their destinations are the OUTPUT_<modality> parameters.\n"
            "<b>Sampling</b>: temperature, top-p and top-k filter the token distribution (temperature 0: most likely "
            "token); the seed makes a run reproducible. <b>Diffusion steps</b>: DDIM steps of the DiVAE decoders.\n"
            "<b>Model</b>: TerraMind v1 tiny/small/base/large, or a custom model card (TERRAMIND_CATALOGUE_PATH). "
            "Weights come from Hugging Face (or its cache) unless WEIGHTS names a checkpoint or a folder holding the "
            "model's and the tokenizers' files."
        )

    def initAlgorithm(self, config: dict | None = None) -> None:
        for modality, key in self.INPUT_PARAMS.items():
            self.addParameter(QgsProcessingParameterRasterLayer(
                key, self.tr("Input {}").format(MODALITIES[modality].title), optional=True))
        self.addParameter(p.enum_param(self.OUTPUTS, self.tr("Outputs to generate (in generation order)"),
                                       list(IMAGE_OUTPUTS), None, multiple=True))
        self.addParameter(p.model_param("terramind", self.tr("Model"), default=self.DEFAULT_MODEL))
        self.addParameter(p.timesteps_param())
        for param in p.sampling_params():
            self.addParameter(param)
        self.addParameter(p.seed_param())
        for param in p.shared_params():
            self.addParameter(param)
        for modality, key in self.OUTPUT_PARAMS.items():
            self.addParameter(QgsProcessingParameterRasterDestination(
                key, self.tr("Generated {}").format(modality), optional=True, createByDefault=True))

    def plan(self, parameters: dict, context: QgsProcessingContext) -> RunPlan:
        inputs = []
        for modality, key in self.INPUT_PARAMS.items():
            layer = self.parameterAsRasterLayer(parameters, key, context)
            if layer is not None:
                inputs.append(check_input(key, layer, MODALITIES[modality]))
        if not inputs:
            raise ConfigError(f"give at least one input layer ({', '.join(self.INPUT_PARAMS.values())})")
        requested = list(self.parameterAsEnumStrings(parameters, self.OUTPUTS, context))
        if not requested:
            raise ConfigError(f"OUTPUTS: choose at least one modality to generate ({', '.join(IMAGE_OUTPUTS)})")
        spec = catalogue.get(self.parameterAsEnumString(parameters, p.MODEL, context) or self.DEFAULT_MODEL)
        if spec.kind != "terramind":
            raise ConfigError(f"MODEL: '{spec.id}' is a tokenizer; choose a TerraMind model")
        for item in inputs:
            if item.modality.name not in spec.inputs:
                raise ConfigError(f"{item.param}: model '{spec.id}' does not accept {item.modality.name} "
                                  f"(it accepts {', '.join(spec.inputs)})")
        given = {item.modality.name: item.param for item in inputs}
        for modality in requested:
            if modality not in spec.outputs:
                raise ConfigError(f"OUTPUTS: model '{spec.id}' cannot generate {modality} "
                                  f"(it generates {', '.join(spec.outputs)})")
            if modality in given:
                raise ConfigError(f"OUTPUTS: {modality} is also an input ({given[modality]}); TerraMind cannot generate "
                                  "a modality it is given — remove it from OUTPUTS or leave that input empty")
        divae = any(catalogue.tokenizer_for(spec, m).config.kind == "divae" for m in requested)
        shared = p.read_shared(self, parameters, context, tile_multiple=32 if divae else 16)
        require_weights(spec, shared)
        extent = read_extent(self, parameters, context, inputs)
        source = inputs[0].layer.name()
        outputs = {}
        for modality in requested:
            key = self.OUTPUT_PARAMS[modality]
            path = destination(self, parameters, key, context, fallback_name=f"{modality}.tif")
            outputs[modality] = OutputTarget(key, path, modality,
                                             layer_name(f"Generated {modality}", source, shared.untrained))
        skipped = [destination(self, parameters, key, context) for m, key in self.OUTPUT_PARAMS.items() if m not in requested]
        tokenizer_weights = {}
        if shared.weights and os.path.isdir(shared.weights):
            tokenizer_weights = {m: shared.weights for m in {*requested, *(i.modality.name for i in inputs)}
                                 if m in spec.tokenizers}  # a folder holding the tokenizers' files too
        return RunPlan(
            task="generate",
            inputs=inputs,
            outputs=outputs,
            model=ModelRequest(id=spec.id, weights=shared.weights, tokenizer_weights=tokenizer_weights,
                               untrained=shared.untrained, catalogue_paths=p.catalogue_paths()),
            params={
                "outputs": requested,
                "timesteps": self.parameterAsInt(parameters, p.TIMESTEPS, context),
                **p.read_sampling(self, parameters, context),
                "seed": self.parameterAsInt(parameters, p.SEED, context),
            },
            tiling=shared.tiling, extent=extent, device=shared.device, precision=shared.precision,
            skipped_outputs=[s for s in skipped if s],
        )

    def results(self, plan: RunPlan, result: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
        out = {key: None for key in self.OUTPUT_PARAMS.values()}  # outputs not requested: None
        out.update(super().results(plan, result, feedback))
        return out
