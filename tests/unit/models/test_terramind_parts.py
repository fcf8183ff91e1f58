"""Unit tests of ``models/terramind`` that need no golden files: building blocks, layouts, name
resolution, sampling filters, the random-number contract, progress/cancel, meta construction and
loading through the product's loading path (``models/weights/loading.py``). A small custom config keeps them fast;
parity with terratorch is in
``test_terramind_goldens.py``.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from terramind_fixtures import untrained_

from terramind_qgis.models.core.configs import TerraMindConfig
from terramind_qgis.models.core.errors import (
    CancelledError,
    CheckpointError,
    ConfigError,
    InputRasterError,
    UnsupportedModalityError,
)
from terramind_qgis.models.core.params import Sampling
from terramind_qgis.models.terramind import (
    TerraMindGeneration,
    TerraMindTiM,
    TerraMindViT,
    reference_call_seed,
    select_band_columns,
)
from terramind_qgis.models.terramind.blocks import Attention, CrossAttention, LayerNorm
from terramind_qgis.models.terramind.embeddings import ImageEncoderEmbedding, ImageTokenEncoderEmbedding
from terramind_qgis.models.terramind.names import input_key, output_key
from terramind_qgis.models.terramind.posemb import build_1d_sincos_posemb, build_2d_sincos_posemb, resize_pos_emb
from terramind_qgis.models.terramind.sampler import sample_tokens, top_k_top_p_filtering
from terramind_qgis.models.weights.loading import load_checkpoint_, untrained_checkpoint
from terramind_qgis.models.weights.matching import BACKBONE
from terramind_qgis.models.weights.reading import TensorDictCheckpoint
from testlib.progress import RecordingProgress

SMALL = TerraMindConfig(dim=32, num_heads=2, encoder_depth=2, decoder_depth=2, mlp="gelu", mlp_hidden=64, bias=True)
SMALL_SWIGLU = TerraMindConfig(dim=32, num_heads=4, encoder_depth=2, decoder_depth=1, mlp="swiglu", mlp_hidden=48, bias=False)


def small_generator(outputs=("S1GRD", "DEM", "LULC"), inputs=("S2L2A",), config=SMALL) -> TerraMindGeneration:
    return untrained_(TerraMindGeneration(config, list(inputs), list(outputs)))


def s2(batch: int = 1, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 1500 + 800 * torch.randn(batch, 12, size, size, generator=g)


# ----------------------------------------------------------------------------- tables and blocks
def test_2d_sincos_table_follows_the_reference_index_convention() -> None:
    h, w, dim = 3, 5, 8
    table = build_2d_sincos_posemb(h, w, dim)[0]  # (h*w, D)
    omega = [1.0 / 10000 ** (k / (dim // 4)) for k in range(dim // 4)]
    for n in range(h * w):
        a, b = n // h, n % h  # terratorch: meshgrid(w, h, 'ij') flattened
        expected = [math.sin(a * o) for o in omega] + [math.cos(a * o) for o in omega]
        expected += [math.sin(b * o) for o in omega] + [math.cos(b * o) for o in omega]
        assert table[n].tolist() == pytest.approx(expected, abs=1e-6)


def test_1d_sincos_table() -> None:
    table = build_1d_sincos_posemb(6, 4)[0]
    for p in range(6):
        expected = [math.sin(p), math.sin(p / 100), math.cos(p), math.cos(p / 100)]
        assert table[p].tolist() == pytest.approx(expected, abs=1e-6)


def test_pos_emb_resize_keeps_size_and_resamples_a_row_major_grid() -> None:
    table = build_2d_sincos_posemb(14, 14, 16)
    assert torch.equal(resize_pos_emb(table, (14, 14)), table)
    n = torch.arange(196, dtype=torch.float32)
    ramp = torch.stack([n // 14, n % 14], dim=-1).unsqueeze(0)  # (1, 196, 2): (row, column) of each entry
    resized = resize_pos_emb(ramp, (7, 14))  # rows resampled, columns unchanged
    assert resized.shape == (1, 98, 2)
    assert torch.equal(resized[0, :, 1], torch.arange(14, dtype=torch.float32).repeat(7))
    rows = resized[0, ::14, 0]
    assert torch.all(rows[1:] > rows[:-1]) and rows[0] < 1 and rows[-1] > 12


def test_layernorm_bias_is_a_persistent_zero_buffer() -> None:
    norm = LayerNorm(8)
    assert "bias" in norm.state_dict() and [n for n, _ in norm.named_parameters()] == ["weight"]
    with torch.device("meta"):
        meta = LayerNorm(8)
    meta.init_deterministic_buffers()
    assert meta.bias.device.type == "cpu" and torch.equal(meta.bias, torch.zeros(8))


def test_attention_masked_keys_have_no_influence() -> None:
    torch.manual_seed(0)
    attn = Attention(16, 2, qkv_bias=True, proj_bias=True)
    x = torch.randn(1, 6, 16)
    mask = torch.zeros(1, 1, 6, dtype=torch.bool)
    mask[..., 4:] = True  # True = do not attend
    y = attn(x, mask)
    x2 = x.clone()
    x2[:, 4:] += 10.0
    y2 = attn(x2, mask)
    assert torch.allclose(y[:, :4], y2[:, :4], atol=1e-6)
    assert not torch.allclose(attn(x), y, atol=1e-4)

    cross = CrossAttention(16, 2, qkv_bias=False, proj_bias=False)
    ctx = torch.randn(1, 5, 16)
    ctx2 = ctx.clone()
    ctx2[:, 3:] -= 5.0
    xa = torch.zeros(1, 1, 5, dtype=torch.bool)
    xa[..., 3:] = True
    assert torch.allclose(cross(x, ctx, xa), cross(x, ctx2, xa), atol=1e-6)
    assert torch.allclose(cross(x, ctx, xa[:, 0]), cross(x, ctx, xa), atol=0)  # (B, M) form


def test_raw_patch_embedding_flattens_ph_pw_c() -> None:
    emb = ImageEncoderEmbedding(num_channels=2, dim_tokens=4)
    with torch.no_grad():
        emb.proj.weight.zero_()
        emb.proj.weight[0, (1 * 16 + 2) * 2 + 1] = 1.0  # reads (ph=1, pw=2, c=1) of each patch
    x = torch.zeros(1, 2, 32, 48)
    x[0, 1, 1, 2] = 5.0  # channel 1, pixel (1, 2): first patch
    x[0, 1, 17, 34] = 7.0  # same offset in patch row 1, column 2 → token 1*3 + 2
    tokens, emb_out = emb(x)
    assert tokens.shape == (1, 6, 4) and emb_out.shape == (1, 6, 4)
    assert tokens[0, :, 0].tolist() == [5.0, 0.0, 0.0, 0.0, 0.0, 7.0]
    with pytest.raises(InputRasterError, match="divisible by the patch size"):
        emb(torch.zeros(1, 2, 30, 32))
    with pytest.raises(InputRasterError, match="expects 2 bands, got 3"):
        emb(torch.zeros(1, 3, 32, 32))


def test_token_embedding_needs_a_square_grid() -> None:
    emb = ImageTokenEncoderEmbedding(vocab_size=10, dim_tokens=8)
    tokens, pos = emb(torch.zeros(2, 4, 4, dtype=torch.int64))
    assert tokens.shape == pos.shape == (2, 16, 8)
    with pytest.raises(ConfigError, match="not square"):
        emb(torch.zeros(1, 2, 8, dtype=torch.int64))
    with pytest.raises(ConfigError, match="not square"):
        emb(torch.zeros(1, 12, dtype=torch.int64))


# ----------------------------------------------------------------------------- names
def test_modality_names_resolve_like_terratorch() -> None:
    assert input_key("S1") == "untok_sen1grd@224"
    assert input_key("s1rtc") == "untok_sen1rtc@224"
    assert input_key("RGB") == "untok_sen2rgb@224"
    assert input_key("S2L2A_RGB") == "untok_sen2l2a@224"
    assert input_key("LULC") == "tok_lulc@224"
    assert input_key("tok_sen1grd@224") == "tok_sen1grd@224"  # exact internal keys are kept
    assert output_key("S2L1C") == "tok_sen2l2a@224"  # any S2 output is L2A in terratorch
    assert output_key("S1") == "tok_sen1grd@224"
    with pytest.raises(UnsupportedModalityError, match="sequence modality"):
        input_key("coords")
    with pytest.raises(UnsupportedModalityError, match="sequence modality"):
        output_key("caption")
    with pytest.raises(UnsupportedModalityError):
        output_key("RGB")
    with pytest.raises(UnsupportedModalityError, match="cannot be generated"):
        output_key("untok_dem@224")
    with pytest.raises(ConfigError, match="both resolve"):
        TerraMindViT(SMALL, ["S2L2A", "s2l2a"])


# ----------------------------------------------------------------------------- sampling
def test_top_k_top_p_filtering_matches_the_reference_rules() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 5.0, 0.0, 0.0]])
    # probs row 0: .644 .237 .087 .032 → top-p 0.7 keeps the first token crossing 0.7
    out = top_k_top_p_filtering(logits.clone(), top_p=0.7)
    assert torch.isinf(out[0, 2:]).all() and torch.isfinite(out[0, :2]).all()
    assert torch.isfinite(out[1, 1]) and torch.isinf(out[1, [0, 2, 3]]).all()
    out = top_k_top_p_filtering(logits.clone(), top_k=2)
    assert torch.isfinite(out[0, :2]).all() and torch.isinf(out[0, 2:]).all()
    out = top_k_top_p_filtering(logits.clone(), top_k=0.25)  # float top-k: a fraction of the vocabulary
    assert torch.isfinite(out[0]).sum() == 1


def test_greedy_sampling_takes_the_argmax_without_drawing() -> None:
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    samples = sample_tokens(logits.clone(), Sampling(temperature=0.0), g)
    assert torch.equal(samples, logits.argmax(-1)) and torch.equal(g.get_state(), state)
    drawn = sample_tokens(logits.clone(), Sampling(temperature=1.0, top_p=0.0), g)
    assert drawn.shape == (5,) and not torch.equal(g.get_state(), state)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -1.0}, {"top_p": 1.5}, {"top_k": -1}, {"top_k": 1.5}], ids=str
)
def test_sampling_config_validates(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Sampling(**kwargs)


def test_reference_call_seed_is_what_terratorch_draws() -> None:
    state = random.getstate()
    try:
        random.seed(1234)
        expected = random.randint(-(2**31), 2**31 - 1)
    finally:
        random.setstate(state)
    assert reference_call_seed(1234) == expected


# ----------------------------------------------------------------------------- generation contract
def test_generation_is_seeded_and_leaves_global_rng_alone() -> None:
    model = small_generator()
    x = {"S2L2A": s2(batch=2)}  # batch 2: rows are sampled batch-major
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    first = model.generate_tokens(x, seed=7)
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state
    again = model.generate_tokens(x, seed=7)
    other = model.generate_tokens(x, seed=8)
    for name in ("S1GRD", "DEM", "LULC"):
        assert first.tokens[name].shape == (2, 4, 4) and first.tokens[name].dtype == torch.int64
        assert torch.equal(first.tokens[name], again.tokens[name])
    assert any(not torch.equal(first.tokens[n], other.tokens[n]) for n in first.tokens)
    assert int(first.tokens["LULC"].max()) < 4375 and int(first.tokens["S1GRD"].max()) < 15360
    assert torch.equal(torch.randn(4, generator=first.noise_generator), torch.randn(4, generator=again.noise_generator))


def test_each_step_uses_its_own_seed() -> None:
    """Step i draws its permutation from a generator seeded seed + i (torch.manual_seed(seed + i))."""
    model = small_generator()
    result = model.generate_tokens({"S2L2A": s2()}, seed=100)
    for step, name in enumerate(("S1GRD", "DEM", "LULC")):
        rand = torch.rand(16, generator=torch.Generator().manual_seed(100 + step))
        expected = torch.argsort(torch.zeros(1, 16, dtype=torch.bool) + rand.unsqueeze(0) * 1e-6, dim=1)[0]
        assert torch.equal(result.permutations[name], expected)


def test_outputs_are_chained_except_the_last() -> None:
    model = small_generator()
    encoder_keys = set(model.sampler.model.encoder_embeddings)
    assert encoder_keys == {"untok_sen2l2a@224", "tok_sen1grd@224", "tok_dem@224"}
    emb = model.sampler.model
    assert emb.decoder_embeddings["tok_dem@224"].mod_emb is emb.encoder_embeddings["tok_dem@224"].mod_emb
    x = {"S2L2A": s2()}
    ids = {n: torch.zeros(1, 16, dtype=torch.int64) for n in ("S1GRD", "DEM", "LULC")}
    changed = dict(ids, S1GRD=torch.full((1, 16), 123))
    a = model.teacher_forced_logits(x, ids)
    b = model.teacher_forced_logits(x, changed)
    assert torch.equal(a["S1GRD"], b["S1GRD"])  # its own ids do not condition it
    assert not torch.allclose(a["DEM"], b["DEM"]) and not torch.allclose(a["LULC"], b["LULC"])
    last = dict(ids, LULC=torch.full((1, 16), 9))
    assert torch.equal(model.teacher_forced_logits(x, last)["LULC"], a["LULC"])


def test_teacher_forced_logits_do_not_depend_on_the_query_order_beyond_rounding() -> None:
    model = small_generator(config=SMALL_SWIGLU)
    x = {"S2L2A": s2()}
    ids = {n: torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(2)) for n in ("S1GRD", "DEM", "LULC")}
    perm = {n: torch.randperm(16, generator=torch.Generator().manual_seed(5)) for n in ids}
    a = model.teacher_forced_logits(x, ids)
    b = model.teacher_forced_logits(x, ids, perm)
    for name in ids:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-5)




def test_progress_per_output_and_cancel_between_steps() -> None:
    model = small_generator()
    progress = RecordingProgress()
    model.generate_tokens({"S2L2A": s2()}, seed=1, progress=progress)
    assert progress.percents == pytest.approx([100 / 3, 200 / 3, 100])
    assert [m.split()[1] for m in progress.messages] == ["S1GRD", "DEM", "LULC"]
    cancelling = RecordingProgress.cancelling_after(messages=1)
    with pytest.raises(CancelledError):
        model.generate_tokens({"S2L2A": s2()}, seed=1, progress=cancelling)
    assert len(cancelling.messages) == 1


class NoiseTokenizer(torch.nn.Module):
    """A stand-in decoder that draws DiVAE-style start noise, to observe what ``decode`` passes on."""

    def __init__(self, channels: int, draws: bool = True) -> None:
        super().__init__()
        self.channels, self.draws, self.calls = channels, draws, []

    def decode_tokens(self, ids, image_size, timesteps, generator, progress):  # noqa: ANN001 - tokenizer API
        self.calls.append((tuple(ids.shape), tuple(image_size), timesteps))
        progress.set_progress(100.0)
        shape = (ids.shape[0], self.channels, *image_size)
        return torch.randn(shape, generator=generator) if self.draws else torch.zeros(shape)


def test_decode_continues_the_noise_generator_and_destandardizes() -> None:
    tokenizers = {
        "tok_sen1grd@224": NoiseTokenizer(2),
        "tok_lulc@224": NoiseTokenizer(10, draws=False),
        "tok_dem@224": NoiseTokenizer(1),
    }
    model = untrained_(TerraMindGeneration(SMALL, ["S2L2A"], ["S1GRD", "LULC", "DEM"], tokenizers))
    generated = model.generate_tokens({"S2L2A": s2()}, seed=5)
    replay = torch.Generator().set_state(generated.noise_generator.get_state())
    progress = RecordingProgress()
    out = model.decode(generated, timesteps=3, progress=progress)
    assert progress.percents == pytest.approx([100 / 3, 200 / 3, 100])
    assert tokenizers["tok_sen1grd@224"].calls == [((1, 4, 4), (64, 64), 3)]
    grd = torch.randn(1, 2, 64, 64, generator=replay)
    dem = torch.randn(1, 1, 64, 64, generator=replay)  # LULC (a VQ-VAE) drew nothing in between
    std = torch.tensor([5.195, 5.890]).view(1, 2, 1, 1)
    assert torch.allclose(out["S1GRD"], grd * std + torch.tensor([-12.599, -20.293]).view(1, 2, 1, 1))
    assert torch.allclose(out["DEM"], dem * 951.272 + 670.665)
    assert torch.equal(out["LULC"], torch.zeros(1, 10, 64, 64))
    assert list(out) == ["S1GRD", "LULC", "DEM"]


def test_generation_input_validation() -> None:
    with pytest.raises(ConfigError, match="both an input and an output"):
        TerraMindGeneration(SMALL, ["LULC"], ["LULC", "DEM"])
    with pytest.raises(ConfigError, match="does not use"):
        TerraMindGeneration(SMALL, ["S2L2A"], ["DEM"], {"tok_ndvi@224": torch.nn.Identity()})
    model = small_generator(outputs=("DEM",), inputs=("S2L2A", "LULC"))
    with pytest.raises(InputRasterError, match="square"):
        model.generate_tokens({"S2L2A": torch.zeros(1, 12, 64, 32)}, seed=0)
    with pytest.raises(InputRasterError, match="token ids"):
        model.generate_tokens({"S2L2A": s2(), "LULC": torch.zeros(1, 1, 64, 64)}, seed=0)
    with pytest.raises(InputRasterError, match="share one image size"):
        model.generate_tokens({"S2L2A": s2(), "LULC": torch.zeros(1, 3, 3, dtype=torch.int64)}, seed=0)
    with pytest.raises(ConfigError, match="unknown input 'S1GRD'"):
        model.generate_tokens({"S1GRD": torch.zeros(1, 2, 64, 64)}, seed=0)
    tokens = model.generate_tokens({"S2L2A": s2(), "LULC": torch.zeros(1, 4, 4, dtype=torch.int64)}, seed=0)
    assert tokens.tokens["DEM"].shape == (1, 4, 4)


# ----------------------------------------------------------------------------- backbone, bands, TiM
def test_band_subset_selects_pretrained_columns() -> None:
    weight = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 12)  # D=2, 4 pixels, 3 bands
    picked = select_band_columns(weight, [2, 0], patch_pixels=4)
    assert picked.tolist() == [[2, 0, 5, 3, 8, 6, 11, 9], [14, 12, 17, 15, 20, 18, 23, 21]]
    model = TerraMindViT(SMALL, ["S2L2A"], bands={"S2L2A": ["RED", "NIR_NARROW"]})
    assert model.encoder_embeddings["untok_sen2l2a@224"].proj.in_features == 2 * 256
    official = untrained_checkpoint(model, BACKBONE)
    load_checkpoint_(model, official, BACKBONE)
    full = official["encoder_embeddings.untok_sen2l2a@224.proj.weight"].reshape(32, 256, 12)
    assert torch.equal(model.encoder_embeddings["untok_sen2l2a@224"].proj.weight, full[:, :, [3, 8]].reshape(32, -1))
    with pytest.raises(ConfigError, match="unknown band name"):
        TerraMindViT(SMALL, ["S2L2A"], bands={"S2L2A": ["RED", "THERMAL_1"]})
    with pytest.raises(ConfigError, match="raw-pixel"):
        TerraMindViT(SMALL, ["S2L2A", "LULC"], bands={"LULC": ["LULC"]})
    with pytest.raises(ConfigError, match="not an input"):
        TerraMindViT(SMALL, ["S2L2A"], bands={"DEM": ["DEM"]})


@pytest.mark.parametrize("merge", ["mean", "max", "concat", "dict", None])
def test_backbone_merge_shapes_and_only_last_layer_normalised(merge) -> None:  # noqa: ANN001
    model = untrained_(TerraMindViT(SMALL, ["S2L2A", "DEM"], merge_method=merge))
    x = {"S2L2A": torch.randn(2, 12, 48, 64), "DEM": torch.randn(2, 1, 48, 64)}  # non-square: 3 x 4 patches
    out = model(x)
    assert len(out) == SMALL.encoder_depth
    expected = {"mean": (2, 12, 32), "max": (2, 12, 32), "concat": (2, 12, 64), None: (2, 24, 32)}
    if merge == "dict":
        assert list(out[0]) == ["S2L2A", "DEM"] and out[0]["DEM"].shape == (2, 12, 32)
    else:
        assert out[-1].shape == expected[merge]
    raw = TerraMindViT(SMALL, ["S2L2A", "DEM"], merge_method=None)
    raw.load_state_dict(model.state_dict(), strict=False)
    layers = raw(x)
    normed = raw.encoder_norm(layers[-2])  # the last but one layer is a raw residual state
    assert not torch.allclose(normed, layers[-2])
    assert model.out_channels == [64 if merge == "concat" else 32] * SMALL.encoder_depth


def test_backbone_input_validation() -> None:
    model = TerraMindViT(SMALL, ["S2L2A", "LULC"])
    with pytest.raises(ConfigError, match="unknown input"):
        model({"S1GRD": torch.zeros(1, 2, 32, 32)})
    with pytest.raises(InputRasterError, match="standardized floats"):
        model({"S2L2A": torch.zeros(1, 12, 32, 32, dtype=torch.int16)})
    with pytest.raises(InputRasterError, match="token ids"):
        model({"LULC": torch.zeros(1, 1, 32, 32)})
    assert len(model(torch.zeros(1, 12, 32, 32))) == SMALL.encoder_depth  # a tensor is the first modality


def test_tim_shares_embeddings_and_generates_missing_modalities() -> None:
    tim = untrained_(TerraMindTiM(SMALL, ["S2L1C", "S1GRD"], ["LULC"]))
    model = tim.sampler.model
    assert model.encoder_embeddings["tok_lulc@224"] is tim.encoder_embeddings["tok_lulc@224"]
    assert not any(p.requires_grad for p in model.parameters())
    x = {"S2L1C": torch.randn(1, 13, 64, 64), "S1GRD": torch.randn(1, 2, 64, 64)}
    feats, tokens = tim.forward_with_tim_tokens(x, seed=3)
    assert tokens["LULC"].shape == (1, 16) and feats[-1].shape == (1, 16, 32)
    again, _ = tim.forward_with_tim_tokens(x, seed=3)
    assert torch.equal(feats[-1], again[-1])
    given = dict(x, LULC=tokens["LULC"].reshape(1, 4, 4))
    _, none = tim.forward_with_tim_tokens(given, seed=99)  # a TiM modality given as input is not generated
    assert none == {}
    as_dict = TerraMindTiM(SMALL, ["S2L1C", "S1GRD"], ["LULC"], merge_method="dict")
    as_raw = TerraMindTiM(SMALL, ["S2L1C", "S1GRD"], ["LULC"], merge_method=None)
    as_dict.load_state_dict(tim.state_dict())
    as_raw.load_state_dict(tim.state_dict())
    last, raw = as_dict(x, seed=3)[-1], as_raw(x, seed=3)[-1]
    assert list(last) == ["S2L1C", "S1GRD"] and raw.shape == (1, 48, 32)  # TiM tokens encoded, not returned
    assert torch.equal(last["S1GRD"], raw[:, 16:32])
    unchained = TerraMindTiM(SMALL, ["S2L1C"], ["LULC", "NDVI"], tim_chained_generations=False)
    assert set(unchained.sampler.model.encoder_embeddings) == {"untok_sen2l1c@224"}
    with pytest.raises(InputRasterError, match="square"):
        tim({"S2L1C": torch.randn(1, 13, 64, 32), "S1GRD": torch.randn(1, 2, 64, 32)}, seed=0)
    with pytest.raises(ConfigError, match="also a raw input"):
        TerraMindTiM(SMALL, ["S2L2A"], ["S2L2A"])


# ----------------------------------------------------------------------------- meta and checkpoints
@pytest.mark.parametrize("include_buffers", [True, False], ids=["full-file", "params-only-file"])
def test_meta_construction_and_assign_loading(include_buffers: bool) -> None:
    cpu = TerraMindGeneration(SMALL_SWIGLU, ["S2L2A"], ["S1GRD", "DEM", "LULC"])
    untrained_(cpu, params_only=not include_buffers)
    with torch.device("meta"):
        meta = TerraMindGeneration(SMALL_SWIGLU, ["S2L2A"], ["S1GRD", "DEM", "LULC"])
    untrained_(meta, params_only=not include_buffers)
    tensors = list(meta.parameters()) + list(meta.buffers())
    assert not any(t.is_meta for t in tensors)
    decoder = meta.sampler.model.decoder_embeddings["tok_sen1grd@224"]
    assert decoder.to_logits.weight is decoder.token_emb.weight
    assert decoder.mod_emb is meta.sampler.model.encoder_embeddings["tok_sen1grd@224"].mod_emb
    x = {"S2L2A": s2()}
    assert all(torch.equal(a, b) for a, b in zip(meta.generate_tokens(x, seed=4).tokens.values(),
                                                cpu.generate_tokens(x, seed=4).tokens.values()))


def test_loading_rebuilds_sincos_tables_absent_from_the_file() -> None:
    with torch.device("meta"):
        model = TerraMindViT(SMALL, ["S2L2A"])
    params_only = untrained_checkpoint(model, BACKBONE, recomputable=False)
    report = load_checkpoint_(model, params_only, BACKBONE)
    assert {"encoder_embeddings.untok_sen2l2a@224.pos_emb", "encoder.0.norm1.bias"} <= set(report.recomputed)
    assert torch.equal(model.encoder_embeddings["untok_sen2l2a@224"].pos_emb, build_2d_sincos_posemb(14, 14, 32))
    assert torch.equal(model.encoder[0].norm1.bias, torch.zeros(32))


def test_official_checkpoint_mismatch_is_a_clear_error() -> None:
    model = TerraMindViT(SMALL, ["S2L2A"])
    official = dict(untrained_checkpoint(model, BACKBONE))
    bad = dict(official, **{"encoder.0.attn.qkv.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match="encoder.0.attn.qkv.weight"):
        load_checkpoint_(model, TensorDictCheckpoint(bad), BACKBONE)
    missing = {k: v for k, v in official.items() if k != "encoder_norm.weight"}
    with pytest.raises(CheckpointError, match="encoder_norm.weight"):
        load_checkpoint_(model, TensorDictCheckpoint(missing), BACKBONE)
