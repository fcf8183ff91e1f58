"""Every official catalogue model: the keys and shapes our loader expects equal the reference's.

The reference listings in tests/goldens/layouts/ come from tools/goldens/checkpoint_layouts.py
(terratorch 1.2.11, built without weights). Our models are built on the meta device; then a
full official-layout file is loaded through the facade. That file holds stride-0 tensors (right
shapes, one stored value each), so loading even the large model costs no memory or time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from terramind_qgis.models.build import load_backbone, load_generation, load_tim, load_tokenizer
from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.errors import DownloadError
from terramind_qgis.models.core.job import ModelRequest
from terramind_qgis.models.terramind import TerraMindGeneration, TerraMindTiM, TerraMindViT
from terramind_qgis.models.terramind.embeddings import embedding_spec
from terramind_qgis.models.tokenizers import build_tokenizer
from terramind_qgis.models.weights.loading import checkpoint_layout, meta_tensor_names
from terramind_qgis.models.weights.matching import BACKBONE, GENERATION, TIM, TOKENIZER, alias_groups, expected_layout

LAYOUTS = Path(__file__).resolve().parents[2] / "goldens" / "layouts"
TOKENIZER_IDS = [s.id for s in catalogue.OFFICIAL if s.kind == "tokenizer"]
TERRAMIND_IDS = [s.id for s in catalogue.OFFICIAL if s.kind == "terramind"]


def reference(model_id: str) -> dict:
    return json.loads((LAYOUTS / f"{model_id}.json").read_text(encoding="utf-8"))


def shapes_of(layout: dict) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in layout.items()}


def stride0_file(shapes: dict[str, list[int]], path: Path) -> Path:
    """A checkpoint with the given keys and shapes but (almost) no data."""
    torch.save({k: torch.full((), 0.01).expand(s) for k, s in shapes.items()}, path)
    return path


def test_every_official_id_has_a_reference_layout() -> None:
    assert sorted(p.stem for p in LAYOUTS.glob("*.json")) == sorted(TOKENIZER_IDS + TERRAMIND_IDS)


@pytest.mark.parametrize("model_id", TOKENIZER_IDS)
def test_tokenizer_layout_matches_reference(model_id: str, tmp_path: Path) -> None:
    ref = reference(model_id)
    with torch.device("meta"):
        tok = build_tokenizer(catalogue.get(model_id).config)
    layout = expected_layout(tok, TOKENIZER)
    assert {k: list(v.shape) for k, v in layout.items()} == ref["state_dict"]
    assert list(layout) == list(ref["state_dict"])  # same order, as the reference saves it
    assert type(tok).__name__ == ref["class"] and not ref["buffers"] and not ref["shared"]
    loaded = load_tokenizer(ModelRequest(model_id, weights=stride0_file(ref["state_dict"], tmp_path / "official.pt")))
    assert not meta_tensor_names(loaded) and loaded.state_dict().keys() == layout.keys()


def _ours(model_id: str, wrapper: str, ref: dict) -> torch.nn.Module:
    cfg = catalogue.get(model_id).config
    with torch.device("meta"):
        if wrapper == "backbone":
            return TerraMindViT(cfg, ref["modalities"], ref["merge_method"])
        if wrapper == "generation":
            return TerraMindGeneration(cfg, ref["inputs"], ref["outputs"])
        return TerraMindTiM(cfg, ref["modalities"], ref["tim_modalities"])


MAPPINGS = {"backbone": BACKBONE, "generation": GENERATION, "tim": TIM}


@pytest.mark.parametrize("wrapper", ["backbone", "generation", "tim"])
@pytest.mark.parametrize("model_id", TERRAMIND_IDS)
def test_terramind_layout_matches_reference(model_id: str, wrapper: str) -> None:
    ref = reference(model_id)[wrapper]
    official = reference(model_id)["official"]["state_dict"]
    model = _ours(model_id, wrapper, ref)
    layout = expected_layout(model, MAPPINGS[wrapper])
    assert shapes_of(layout) == ref["state_dict"]
    # the deterministic buffers we may recompute are exactly the reference's persistent buffers
    assert sorted(k for k, v in layout.items() if v.recomputable) == ref["buffers"]
    # tensors shared under several names are shared the same way
    assert sorted(sorted(g) for g in alias_groups(model)) == ref["shared"]
    # each key maps (reference mapping) onto a key of the official file, with its shape
    for key, (shape, _) in checkpoint_layout(model, MAPPINGS[wrapper]).items():
        assert official.get(key) == list(shape), key


def test_tokenizers_held_by_the_generation_model_match_the_reference() -> None:
    ref = reference("terramind_v1_tiny")["generation"]
    model = _ours("terramind_v1_tiny", "generation", ref)
    needed = {k for k in model.input_mapping.values() if embedding_spec(k).tokenized} | set(model.output_mapping.values())
    assert sorted(needed) == ref["tokenizers"]


@pytest.mark.parametrize("model_id", TERRAMIND_IDS)
def test_full_official_file_loads_into_every_wrapper(model_id: str, tmp_path: Path) -> None:
    """Unused embeddings (other modalities, coords) and, for the backbone, the decoder are ignored."""
    ref = reference(model_id)
    path = stride0_file(ref["official"]["state_dict"], tmp_path / "official.pt")
    stride0_tokenizers = {}
    for name in ("LULC", "NDVI"):
        tok_id = f"terramind_v1_tokenizer_{name.lower()}"
        stride0_tokenizers[name] = stride0_file(reference(tok_id)["state_dict"], tmp_path / f"{name}.pt")
    ndvi_request = ModelRequest(model_id, weights=path, tokenizer_weights={"NDVI": stride0_tokenizers["NDVI"]})
    backbone = load_backbone(ndvi_request, ref["backbone"]["modalities"] + ["NDVI"])
    tim = load_tim(ModelRequest(model_id, weights=path), ref["tim"]["modalities"], ref["tim"]["tim_modalities"])
    generation = load_generation(ModelRequest(model_id, weights=path, tokenizer_weights=stride0_tokenizers),
                                 ["S2L2A", "NDVI"], ["LULC"])
    for model in (backbone, tim, generation):
        assert not meta_tensor_names(model)
        assert not model.untrained and model.weights_source["model"] == str(path)
    assert set(generation.weights_source) == {"model", "tokenizer NDVI", "tokenizer LULC"}
    assert list(backbone.tokenizer) == ["tok_ndvi@224"] and list(generation.tokenizer) == ["tok_ndvi@224", "tok_lulc@224"]
    # recomputed buffers are real values, loaded ones come from the file
    emb = backbone.encoder_embeddings["untok_sen2l2a@224"]
    assert float(emb.pos_emb.flatten()[0]) == pytest.approx(0.01) and float(emb.proj.weight[0, 0]) == pytest.approx(0.01)


def test_one_folder_holds_the_model_and_its_tokenizers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, with an empty Hub cache: tokenizer files are found next to the TerraMind file."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    folder = tmp_path / "weights"
    folder.mkdir()
    stride0_file(reference("terramind_v1_tiny")["official"]["state_dict"], folder / "TerraMind_v1_tiny.pt")
    for name in ("LULC", "NDVI"):
        tok_id = f"terramind_v1_tokenizer_{name.lower()}"
        stride0_file(reference(tok_id)["state_dict"], folder / f"TerraMind_Tokenizer_{name}.pt")
    model = load_generation(ModelRequest("terramind_v1_tiny", weights=folder), ["S2L2A", "NDVI"], ["LULC"])
    assert model.weights_source == {
        "model": str(folder / "TerraMind_v1_tiny.pt"),
        "tokenizer NDVI": str(folder / "TerraMind_Tokenizer_NDVI.pt"),
        "tokenizer LULC": str(folder / "TerraMind_Tokenizer_LULC.pt"),
    }
    with pytest.raises(DownloadError, match="TerraMind_Tokenizer_DEM.pt.*HF_HUB_OFFLINE=1"):  # not in the folder
        load_generation(ModelRequest("terramind_v1_tiny", weights=folder), ["S2L2A"], ["DEM"])
