"""The provider and its algorithms as Processing sees them: ids, parameter keys (public API), choices."""

from __future__ import annotations

import pytest
from qgis.core import QgsApplication, QgsProcessingParameterDefinition
from tm_helpers import add_model_cards, reduced_terramind_card

RECONSTRUCT = "terramind:reconstructwithtokenizer"
GENERATE = "terramind:generatemodalities"
SHARED = ["EXTENT", "WEIGHTS", "DEVICE", "PRECISION", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "UNTRAINED"]
EXPECTED_KEYS = {
    RECONSTRUCT: ["INPUT", "MODALITY", "BANDS", "MODEL", "TIMESTEPS", "SEED", *SHARED, "OUTPUT", "DIFFERENCE"],
    GENERATE: ["INPUT_S2L2A", "INPUT_S2L1C", "INPUT_S2RGB", "INPUT_S1GRD", "INPUT_S1RTC", "INPUT_DEM", "INPUT_NDVI",
               "INPUT_LULC", "OUTPUTS", "MODEL", "TIMESTEPS", "TEMPERATURE", "TOP_P", "TOP_K", "SEED", *SHARED,
               "OUTPUT_S2L2A", "OUTPUT_S1GRD", "OUTPUT_S1RTC", "OUTPUT_DEM", "OUTPUT_NDVI", "OUTPUT_LULC"],
}  # fmt: skip
ADVANCED = {"PRECISION", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "UNTRAINED"}


def _alg(algorithm_id):
    alg = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    assert alg is not None, f"{algorithm_id} is not registered"
    return alg


def test_provider_lists_exactly_our_algorithms(terramind_provider):
    provider = QgsApplication.processingRegistry().providerById("terramind")
    assert provider is terramind_provider
    assert provider.name() == "TerraMind" and not provider.icon().isNull()
    from terramind_qgis.processing_algorithms.provider import ALGORITHMS

    ids = sorted(a.id() for a in provider.algorithms())
    assert ids == sorted(f"terramind:{cls().name()}" for cls in ALGORITHMS)  # the explicit list, nothing else
    assert set(EXPECTED_KEYS) <= set(ids)
    assert provider.supportedOutputRasterLayerExtensions() == ["tif"]


@pytest.mark.parametrize("algorithm_id", sorted(EXPECTED_KEYS))
def test_parameter_keys_are_stable(terramind_provider, algorithm_id):
    alg = _alg(algorithm_id)
    assert [p.name() for p in alg.parameterDefinitions()] == EXPECTED_KEYS[algorithm_id]
    advanced = {p.name() for p in alg.parameterDefinitions() if p.flags() & QgsProcessingParameterDefinition.Flag.FlagAdvanced}
    assert advanced == ADVANCED
    assert alg.shortHelpString() and not alg.icon().isNull()
    copy = alg.create()  # createInstance + initAlgorithm
    assert copy.id() == algorithm_id and [p.name() for p in copy.parameterDefinitions()] == EXPECTED_KEYS[algorithm_id]


def test_enumerations_use_their_strings(terramind_provider):
    rec, gen = _alg(RECONSTRUCT), _alg(GENERATE)
    modality = rec.parameterDefinition("MODALITY")
    assert modality.usesStaticStrings() and modality.options() == ["S2L2A", "S1GRD", "S1RTC", "DEM", "NDVI", "LULC"]
    outputs = gen.parameterDefinition("OUTPUTS")
    assert outputs.allowMultiple() and outputs.options() == ["S2L2A", "S1GRD", "S1RTC", "DEM", "NDVI", "LULC"]
    assert gen.parameterDefinition("DEVICE").options() == ["auto", "cpu", "cuda"]
    assert gen.parameterDefinition("PRECISION").options() == ["fp32", "bf16", "fp16"]
    assert gen.parameterDefinition("TILE_SIZE").defaultValue() == 224
    assert gen.parameterDefinition("OVERLAP").defaultValue() == 32
    assert gen.parameterDefinition("UNTRAINED").defaultValue() is False


def test_model_choices_list_official_and_catalogue_models(terramind_provider):
    gen, rec = _alg(GENERATE), _alg(RECONSTRUCT)  # keep the algorithms alive while using their parameters
    models = gen.parameterDefinition("MODEL")
    assert models.options()[:4] == ["terramind_v1_tiny", "terramind_v1_small", "terramind_v1_base", "terramind_v1_large"]
    assert models.defaultValue() == "terramind_v1_base"
    tokenizers = rec.parameterDefinition("MODEL")
    assert "terramind_v1_tokenizer_s2l2a" in tokenizers.options()
    assert tokenizers.flags() & QgsProcessingParameterDefinition.FlagOptional


def test_custom_model_cards_appear_in_new_instances(terramind_provider, tmp_path, monkeypatch):
    add_model_cards(monkeypatch, tmp_path, {"mine.json": reduced_terramind_card("my_reduced_terramind")})
    gen = _alg(GENERATE)
    assert "my_reduced_terramind" in gen.parameterDefinition("MODEL").options()


def test_a_broken_model_card_does_not_break_the_provider(terramind_provider, tmp_path, monkeypatch):
    logged = []
    QgsApplication.messageLog().messageReceived.connect(lambda msg, tag, level: logged.append((tag, msg)))
    add_model_cards(monkeypatch, tmp_path, {"broken.json": "{not json"})
    gen = _alg(GENERATE)
    assert "terramind_v1_base" in gen.parameterDefinition("MODEL").options()
    assert any(tag == "TerraMind" and "broken.json" in msg for tag, msg in logged)
