"""Catalogue model cards: JSON round trip, the test-variant cards, and what a card may not do."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.catalogue import ModelSpec
from terramind_qgis.models.core.errors import ConfigError, ModelNotFoundError

CARDS = Path(__file__).resolve().parents[2] / "data" / "catalogue"
TEST_TOKENIZERS = {f"test_tokenizer_{m.lower()}": m for m in ("S2L2A", "S1GRD", "S1RTC", "DEM", "NDVI", "LULC")}


@pytest.fixture(autouse=True)
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test registers into its own copy of the catalogue."""
    monkeypatch.setattr(catalogue, "_REGISTRY", dict(catalogue._REGISTRY))
    monkeypatch.setattr(catalogue, "_LOADED_PATHS", set())
    monkeypatch.delenv("TERRAMIND_CATALOGUE_PATH", raising=False)


@pytest.mark.parametrize("spec", catalogue.OFFICIAL, ids=lambda s: s.id)
def test_official_cards_round_trip_through_json(spec: ModelSpec) -> None:
    text = json.dumps(spec.to_dict())
    assert ModelSpec.from_dict(json.loads(text)) == spec


def test_test_cards_load_and_round_trip() -> None:
    loaded = {s.id: s for s in catalogue.load_cards(CARDS)}
    assert set(loaded) == {*TEST_TOKENIZERS, "test_terramind_tiny"}
    for spec in loaded.values():
        assert not spec.official and spec.weights is None
        on_disk = json.loads((CARDS / f"{spec.id}.json").read_text(encoding="utf-8"))
        assert ModelSpec.from_dict(on_disk) == spec  # the file is exactly the card
        assert json.loads(json.dumps(spec.to_dict())) == on_disk


def test_test_tokenizers_are_reduced_versions_of_the_official_architectures() -> None:
    catalogue.load_cards(CARDS)
    for test_id, modality in TEST_TOKENIZERS.items():
        test, official = catalogue.get(test_id), catalogue.get(f"terramind_v1_tokenizer_{modality.lower()}")
        assert test.modality == modality
        for field in ("kind", "in_channels", "levels", "patch_size", "image_size", "unet_channel_mult"):
            assert getattr(test.config, field) == getattr(official.config, field), (test_id, field)
        assert test.config.enc_dim < official.config.enc_dim and test.config.enc_depth < official.config.enc_depth


def test_test_terramind_card_uses_the_test_tokenizers() -> None:
    catalogue.load_cards(CARDS)
    tiny, official = catalogue.get("test_terramind_tiny"), catalogue.get("terramind_v1_tiny")
    assert tiny.inputs == official.inputs and tiny.outputs == official.outputs
    for modality in tiny.outputs:
        tokenizer = catalogue.tokenizer_for(tiny, modality)
        assert tokenizer.id == f"test_tokenizer_{modality.lower()}" and tokenizer.modality == modality
    assert tiny.config.dim % tiny.config.num_heads == 0 and tiny.config.dim % 4 == 0  # sincos needs D % 4


def test_catalogue_path_environment_variable() -> None:
    code = (
        "import sys; sys.path.insert(0, '.pluginpath');"
        "from terramind_qgis.models.core import catalogue;"
        "print(catalogue.get('test_terramind_tiny').title, len(catalogue.all_specs('tokenizer')))"
    )
    env = {"TERRAMIND_CATALOGUE_PATH": str(CARDS), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=CARDS.parents[2], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Test", "TerraMind", "(reduced,", "no", "weights)", "12"]


def test_official_ids_cannot_be_overridden(tmp_path: Path) -> None:
    official = catalogue.get("terramind_v1_base")
    with pytest.raises(ConfigError, match="'terramind_v1_base' is already in the catalogue"):
        catalogue.register(replace(official, title="my base"), replace_existing=True)
    card = replace(official, weights=None, official=False).to_dict()
    (tmp_path / "evil.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="terramind_v1_base"):
        catalogue.load_cards(tmp_path)
    assert catalogue.get("terramind_v1_base") == official and official.official


def test_custom_cards_can_be_replaced_but_not_silently_duplicated() -> None:
    spec = replace(catalogue.OFFICIAL[3], id="my_dem_tokenizer", weights=None, official=False)
    assert catalogue.register(spec).id == "my_dem_tokenizer"
    changed = replace(spec, title="v2")
    with pytest.raises(ConfigError, match="already in the catalogue"):
        catalogue.register(changed)
    assert catalogue.register(changed, replace_existing=True).title == "v2"


@pytest.mark.parametrize(
    "field, value, bad",
    [("inputs", ["S2L2A", "HYPERSPECTRAL"], "HYPERSPECTRAL"), ("outputs", ["LULC", "Height"], "Height"),
     ("tokenizers", {"SAR": "test_tokenizer_s1grd"}, "SAR")],
)  # fmt: skip
def test_unknown_modality_in_card_is_a_config_error(tmp_path: Path, field: str, value: object, bad: str) -> None:
    card = json.loads((CARDS / "test_terramind_tiny.json").read_text(encoding="utf-8"))
    card["id"], card[field] = "my_model", value
    (tmp_path / "card.json").write_text(json.dumps([card]))
    with pytest.raises(ConfigError, match=f"'my_model' names unknown modality '{bad}'"):
        catalogue.load_cards(tmp_path)
    with pytest.raises(ModelNotFoundError):
        catalogue.get("my_model")


def test_malformed_cards_are_config_errors(tmp_path: Path) -> None:
    card = json.loads((CARDS / "test_tokenizer_dem.json").read_text(encoding="utf-8"))
    card["config"]["enc_width"] = 64
    (tmp_path / "a.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['enc_width'\]"):
        catalogue.load_cards(tmp_path)
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read model card file"):
        catalogue.load_cards(tmp_path)
