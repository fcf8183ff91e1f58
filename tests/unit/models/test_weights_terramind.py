"""Loading TerraMind checkpoints through the facade (reduced test variant ``test_terramind_tiny``):
deterministic buffers may be absent, real parameters may not, wrong files are named, the untrained
fill equals filling the modules directly, band subsets slice the pretrained columns."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from terramind_qgis.models.build import load_backbone, load_generation, load_tim, load_tokenizer
from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.errors import CheckpointError, ConfigError
from terramind_qgis.models.core.job import ModelRequest
from terramind_qgis.models.core.modalities import MODALITIES
from terramind_qgis.models.terramind import TerraMindGeneration, TerraMindViT, select_band_columns
from terramind_qgis.models.weights.untrained import deterministic_tensor, fill_module_

REPO = Path(__file__).resolve().parents[3]
CARDS = REPO / "tests" / "data" / "catalogue"
EXAMPLES = REPO / "tests" / "data" / "examples"
SCENE = "282D_485L_3_3"
TINY = "test_terramind_tiny"
INPUTS = ["S2L2A", "S1RTC", "DEM"]


@pytest.fixture(scope="module", autouse=True)
def test_cards() -> None:
    catalogue.load_cards(CARDS)


def patch(modality: str) -> torch.Tensor:
    """A real 224 x 224 example patch, standardized with the v1 statistics: (1, C, H, W)."""
    m = MODALITIES[modality]
    with rasterio.open(EXAMPLES / modality / f"{SCENE}.tif") as src:
        x = torch.from_numpy(src.read().astype(np.float32))[None]
    return (x - torch.tensor(m.mean)[:, None, None]) / torch.tensor(m.std)[:, None, None]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Official-layout backbone checkpoints: with the sincos/zero buffers, and parameters only."""
    tmp = tmp_path_factory.mktemp("tm")
    model = TerraMindViT(catalogue.get(TINY).config, INPUTS)  # CPU: pos_emb sincos, LayerNorm bias zeros
    full = {}
    for key, tensor in model.state_dict().items():
        is_buffer = key.endswith((".pos_emb", "norm1.bias", "norm2.bias", "encoder_norm.bias"))
        full[key] = tensor.clone() if is_buffer else deterministic_tensor(key, tensor.shape)
    params = {k: v for k, v in full.items() if k in dict(model.named_parameters())}
    assert 0 < len(params) < len(full)
    torch.save(full, tmp / "full.pt")
    torch.save(params, tmp / "params.pt")
    return {"full": tmp / "full.pt", "params": tmp / "params.pt", "dir": tmp}


def test_checkpoint_without_deterministic_buffers_loads(files: dict[str, Path]) -> None:
    full = load_backbone(ModelRequest(TINY, weights=files["full"]), INPUTS)
    params = load_backbone(ModelRequest(TINY, weights=files["params"]), INPUTS)
    a, b = full.state_dict(), params.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = {m: patch(m) for m in INPUTS}
    with torch.inference_mode():
        assert all(torch.equal(fa, fb) for fa, fb in zip(full(x), params(x)))


def test_missing_parameter_is_named(files: dict[str, Path]) -> None:
    sd = torch.load(files["params"], weights_only=True)
    del sd["encoder.1.attn.qkv.weight"], sd["encoder_embeddings.untok_dem@224.mod_emb"]
    torch.save(sd, files["dir"] / "broken.pt")
    with pytest.raises(CheckpointError) as err:
        load_backbone(ModelRequest(TINY, weights=files["dir"] / "broken.pt"), INPUTS)
    message = str(err.value)
    assert "2 missing keys (in the model, not in the file)" in message
    assert "encoder.1.attn.qkv.weight" in message and "encoder_embeddings.untok_dem@224.mod_emb" in message
    # a backbone-only file lacks the decoder half that generation needs; keys are named as in the file
    with pytest.raises(CheckpointError, match=r"missing keys .*; by group: decoder\.\* \(\d+\)") as err:
        load_generation(ModelRequest(TINY, weights=files["params"], tokenizer_weights=None), ["S2L2A"], ["DEM"])
    assert "decoder_proj_context.weight" in str(err.value) and "sampler.model." not in str(err.value)


def test_tokenizer_file_given_to_terramind_is_refused(tmp_path: Path) -> None:
    torch.save(load_tokenizer(ModelRequest("test_tokenizer_s2l2a", untrained=True)).state_dict(), tmp_path / "tok.pt")
    with pytest.raises(CheckpointError) as err:
        load_generation(ModelRequest(TINY, weights=tmp_path / "tok.pt", untrained=False), ["S2L2A"], ["DEM"])
    message = str(err.value)
    assert f"'{tmp_path / 'tok.pt'}' does not fit model '{TINY}' (TerraMind, width 64)" in message
    assert "the file looks like a DiVAE (diffusion) image tokenizer for 12-band images" in message
    assert "missing keys" in message and "unexpected keys" in message and "encoder.proj.weight" in message


def test_other_modalities_are_ignored_but_foreign_keys_are_not(files: dict[str, Path]) -> None:
    sd = torch.load(files["full"], weights_only=True)
    sd["encoder_embeddings.untok_sen2l1c@224.proj.weight"] = torch.zeros(64, 3328)  # unrequested modality
    sd["decoder.0.mlp.fc1.weight"] = torch.zeros(128, 64)  # the decoder half, unused by the backbone
    sd["decoder_embeddings.coords.token_emb.weight"] = torch.zeros(30000, 64)  # coords (unsupported here)
    torch.save(sd, files["dir"] / "extra.pt")
    load_backbone(ModelRequest(TINY, weights=files["dir"] / "extra.pt"), INPUTS)
    sd["encoder_embeddings.hyperspectral.proj.weight"] = torch.zeros(64, 100)
    sd["head.weight"] = torch.zeros(2, 64)
    torch.save(sd, files["dir"] / "foreign.pt")
    unexpected = r"2 unexpected keys .*\n.*encoder_embeddings.hyperspectral.proj.weight\n.*head.weight"
    with pytest.raises(CheckpointError, match=unexpected):
        load_backbone(ModelRequest(TINY, weights=files["dir"] / "foreign.pt"), INPUTS)


def test_band_subset_slices_the_pretrained_columns(files: dict[str, Path]) -> None:
    bands = ["RED", "NIR_NARROW", "SWIR_1"]
    model = load_backbone(ModelRequest(TINY, weights=files["full"]), INPUTS, bands={"S2L2A": bands})
    full = torch.load(files["full"], weights_only=True)["encoder_embeddings.untok_sen2l2a@224.proj.weight"]
    expected = select_band_columns(full, [3, 8, 10], 256)  # positions in the pretrained S2L2A order
    assert torch.equal(model.encoder_embeddings["untok_sen2l2a@224"].proj.weight, expected)
    assert torch.equal(expected.view(64, 256, 3)[:, :, 1], full.view(64, 256, 12)[:, :, 8])
    untrained = load_backbone(ModelRequest(TINY, untrained=True), INPUTS, bands={"S2L2A": bands})
    rule = deterministic_tensor("encoder_embeddings.untok_sen2l2a@224.proj.weight", (64, 3072))
    assert torch.equal(untrained.encoder_embeddings["untok_sen2l2a@224"].proj.weight, select_band_columns(rule, [3, 8, 10], 256))


def test_untrained_generation_equals_filling_the_modules_directly() -> None:
    model = load_generation(ModelRequest(TINY, untrained=True), ["S2L2A", "NDVI"], ["S1GRD", "LULC"])
    direct = TerraMindGeneration(catalogue.get(TINY).config, ["S2L2A", "NDVI"], ["S1GRD", "LULC"])
    fill_module_(direct.sampler.model)  # the official checkpoint keys are the sampler.model keys
    ours = model.state_dict()
    for key, value in direct.state_dict().items():
        assert torch.equal(ours[key], value), key
    for key, tok_id in (("tok_ndvi@224", "test_tokenizer_ndvi"), ("tok_sen1grd@224", "test_tokenizer_s1grd"),
                        ("tok_lulc@224", "test_tokenizer_lulc")):  # fmt: skip
        expected = load_tokenizer(ModelRequest(tok_id, untrained=True)).state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in model.tokenizer[key].state_dict().items())
    assert model.untrained and set(model.weights_source) == {"model", "tokenizer NDVI", "tokenizer S1GRD", "tokenizer LULC"}
    emb = model.sampler.model
    assert emb.decoder_embeddings["tok_lulc@224"].to_logits.weight is emb.decoder_embeddings["tok_lulc@224"].token_emb.weight
    assert emb.decoder_embeddings["tok_sen1grd@224"].mod_emb is emb.encoder_embeddings["tok_sen1grd@224"].mod_emb


def test_untrained_tim_shares_the_backbone_embeddings() -> None:
    model = load_tim(ModelRequest(TINY, untrained=True), ["S2L1C", "S1GRD"], ["LULC"], merge_method="concat")
    shared = model.encoder_embeddings["untok_sen2l1c@224"]
    assert model.sampler.model.encoder_embeddings["untok_sen2l1c@224"] is shared
    # both copies of the encoder come from the same checkpoint keys
    assert torch.equal(model.encoder[0].attn.qkv.weight, model.sampler.model.encoder[0].attn.qkv.weight)
    assert torch.equal(model.missing_mod_token, deterministic_tensor("missing_mod_token", (64,)))


def test_modalities_and_tokenizer_weights_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalogue, "_REGISTRY", dict(catalogue._REGISTRY))
    narrow = replace(catalogue.get(TINY), id="my_s2_only", inputs=("S2L2A",), outputs=("LULC",))
    catalogue.register(narrow)
    with pytest.raises(ConfigError, match="'my_s2_only' does not take input modality 'DEM' \\(DEM\\); its inputs are S2L2A"):
        load_backbone(ModelRequest("my_s2_only", untrained=True), ["S2L2A", "DEM"])
    with pytest.raises(ConfigError, match="does not take output modality 'S1GRD'"):
        load_generation(ModelRequest("my_s2_only", untrained=True), ["S2L2A"], ["S1GRD"])
    with pytest.raises(ConfigError, match="tokenizer weights were given for DEM, which this model does not use"):
        load_generation(ModelRequest(TINY, weights=tmp_path, tokenizer_weights={"DEM": tmp_path}), ["S2L2A"], ["LULC"])
    with pytest.raises(ConfigError, match="is a tokenizer, not a terramind"):
        load_backbone(ModelRequest("test_tokenizer_dem", untrained=True), ["DEM"])
