"""Tokenizer API on reduced variants: shapes, noise contract, progress/cancel, sizes, errors, meta, bf16.

The reduced configs are the official architectures with small widths (what the QGIS tests use);
weights come from models/weights/untrained.py. Parity with the reference is in
test_tokenizer_goldens.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from terramind_qgis.models.core.catalogue import get
from terramind_qgis.models.core.configs import TokenizerConfig
from terramind_qgis.models.core.errors import CancelledError, ConfigError, InputRasterError
from terramind_qgis.models.tokenizers import VQVAE, DiVAE, build_tokenizer
from terramind_qgis.models.tokenizers.unet import GroupNorm32
from terramind_qgis.models.weights.untrained import deterministic_state_dict, fill_module_
from testlib.progress import RecordingProgress

SMALL = dict(enc_dim=64, enc_depth=2, enc_heads=2, dec_dim=64, dec_depth=2, dec_heads=2, unet_channels=32,
             unet_res_blocks=1)  # fmt: skip
DIVAE_CFG = TokenizerConfig(kind="divae", in_channels=2, **SMALL)
LULC_CFG = TokenizerConfig(kind="vqvae", in_channels=10, levels=(7, 5, 5, 5, 5), **SMALL)
pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.fixture(scope="module")
def divae() -> DiVAE:
    return fill_module_(build_tokenizer(DIVAE_CFG)).eval()


@pytest.fixture(scope="module")
def lulc() -> VQVAE:
    return fill_module_(build_tokenizer(LULC_CFG)).eval()


def image(b: int = 2, c: int = 2, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def with_nan(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[0, 0, 5, 7] = float("nan")
    return x


def class_map(b: int = 2, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 10, (b, h, w), generator=torch.Generator().manual_seed(seed))


def test_build_dispatches_on_kind() -> None:
    assert isinstance(build_tokenizer(DIVAE_CFG), DiVAE)
    assert isinstance(build_tokenizer(LULC_CFG), VQVAE)


def test_encode_gives_fsq_codes_and_int32_ids(divae: DiVAE) -> None:
    quant, tokens = divae.encode(image(h=64, w=96))
    assert quant.shape == (2, 5, 4, 6) and quant.dtype == torch.float32
    assert tokens.shape == (2, 4, 6) and tokens.dtype == torch.int32
    assert 0 <= int(tokens.min()) and int(tokens.max()) < divae.vocab_size == 15360
    assert float(quant.min()) >= 0.0 and float(quant.max()) <= 1.0
    assert torch.equal(quant, divae.tokens_to_embedding(tokens))
    assert torch.equal(tokens, divae.tokenize(image(h=64, w=96)))


def test_divae_decode_shape_range_and_flat_tokens(divae: DiVAE) -> None:
    tokens = divae.tokenize(image())  # (2, 4, 4)
    out = divae.decode_tokens(tokens, timesteps=2, generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, 2, 64, 64) and out.dtype == torch.float32
    assert float(out.abs().max()) <= 1.0  # the last DDIM step returns the clamped x0
    flat = divae.decode_tokens(tokens.reshape(2, 16), timesteps=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, flat)


def test_divae_noise_contract(divae: DiVAE) -> None:
    tokens = divae.tokenize(image())
    seeded = divae.decode_tokens(tokens, timesteps=1, generator=torch.Generator().manual_seed(7))
    noise = torch.randn((2, 2, 64, 64), generator=torch.Generator().manual_seed(7))
    assert torch.equal(seeded, divae.decode_tokens(tokens, timesteps=1, noise=noise))
    with torch.random.fork_rng():
        torch.manual_seed(7)
        assert torch.equal(seeded, divae.decode_tokens(tokens, timesteps=1))  # global CPU generator
    other = divae.decode_tokens(tokens, timesteps=1, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(seeded, other)


def test_reconstruct_equals_decoding_the_tokens(divae: DiVAE, lulc: VQVAE) -> None:
    x = image(h=64, w=96)
    rec = divae.reconstruct(x, timesteps=2, generator=torch.Generator().manual_seed(3))
    dec = divae.decode_tokens(divae.tokenize(x), timesteps=2, generator=torch.Generator().manual_seed(3))
    assert rec.shape == (2, 2, 64, 96) and torch.equal(rec, dec)
    ids = class_map()
    assert torch.equal(lulc.reconstruct(ids), lulc.decode_tokens(lulc.tokenize(ids)))


def test_divae_decodes_other_sizes_like_the_reference(divae: DiVAE) -> None:
    tokens = divae.tokenize(image())  # 4x4 tokens
    out = divae.decode_tokens(tokens, image_size=(96, 32), timesteps=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 2, 96, 32)  # conditioning nearest-resampled, as in the reference


def test_lulc_accepts_ids_in_three_layouts(lulc: VQVAE) -> None:
    ids = class_map()
    one_hot = torch.nn.functional.one_hot(ids, 10).permute(0, 3, 1, 2).float()
    expected = lulc.tokenize(ids)
    assert expected.dtype == torch.int32 and int(expected.max()) < 4375
    assert torch.equal(lulc.tokenize(ids[:, None]), expected)
    assert torch.equal(lulc.tokenize(ids.to(torch.uint8)), expected)
    assert torch.equal(lulc.tokenize(one_hot), expected)
    logits = lulc.decode_tokens(expected, timesteps=3)  # diffusion arguments ignored
    assert logits.shape == (2, 10, 64, 64) and logits.dtype == torch.float32


def test_progress_per_step_and_trailing_step_count(divae: DiVAE) -> None:
    progress = RecordingProgress()
    divae.decode_tokens(divae.tokenize(image(b=1)), timesteps=3, progress=progress)
    assert progress.percents == [25.0, 50.0, 75.0, 100.0]  # 1000 // 3 spacing gives 4 steps: 999, 666, 333, 0


def test_cancel_stops_between_ddim_steps(divae: DiVAE) -> None:
    calls = []
    handle = divae.decoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(CancelledError):
            divae.decode_tokens(divae.tokenize(image(b=1)), timesteps=10, progress=RecordingProgress.cancelling_after(percents=2))
    finally:
        handle.remove()
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda t: t.tokenize(image(h=72, w=64)), ConfigError, "multiples of 16.*72x64"),
        (lambda t: t.tokenize(image(c=3)), InputRasterError, r"\(B, 2, H, W\)"),
        (lambda t: t.tokenize(with_nan(image())), InputRasterError, "NaN"),
        (lambda t: t.reconstruct(image(h=80, w=64), timesteps=1), ConfigError, "multiples of 32.*80x64"),
        (lambda t: t.decode_tokens(torch.zeros(1, 5, 5, dtype=torch.long)), ConfigError, "multiples of 32.*80x80"),
        (lambda t: t.decode_tokens(torch.full((1, 2, 2), 15360)), ConfigError, "0..15359"),
        (lambda t: t.decode_tokens(torch.zeros(1, 12, dtype=torch.long)), ConfigError, "square"),
        (lambda t: t.decode_tokens(torch.zeros(1, 2, 2)), ConfigError, "integer"),
        (lambda t: t.decode_tokens(torch.zeros(1, 2, 2, dtype=torch.long), timesteps=0), ConfigError, "between 1"),
        (lambda t: t.decode_tokens(torch.zeros(1, 2, 2, dtype=torch.long), timesteps=1001), ConfigError, "1000"),
        (lambda t: t.decode_tokens(torch.zeros(1, 2, 2, dtype=torch.long), noise=torch.zeros(1, 2, 32, 64)),
         ConfigError, "noise must have shape"),  # fmt: skip
    ],
)
def test_divae_errors(divae: DiVAE, call, error: type[Exception], match: str) -> None:  # noqa: ANN001
    with pytest.raises(error, match=match):
        call(divae)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.tokenize(torch.full((1, 32, 32), 10)), "0..9"),
        (lambda t: t.tokenize(torch.full((1, 1, 32, 32), -1)), "0..9"),
        (lambda t: t.tokenize(torch.zeros(1, 3, 32, 32)), r"\(B, 10, H, W\)"),
    ],
)
def test_lulc_input_errors(lulc: VQVAE, call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(InputRasterError, match=match):
        call(lulc)


def test_lulc_image_size_must_match_the_token_grid(lulc: VQVAE) -> None:
    tokens = torch.zeros(1, 2, 3, dtype=torch.long)
    assert lulc.decode_tokens(tokens, image_size=(32, 48)).shape == (1, 10, 32, 48)
    with pytest.raises(ConfigError, match="cannot be produced"):
        lulc.decode_tokens(tokens, image_size=(48, 32))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(unet_channels=48), "multiple of 32"),
        (dict(enc_heads=3), "enc_dim"),
        (dict(kind="gan"), "kind"),
        (dict(levels=(8, 1)), "levels"),
        (dict(image_size=250), "image_size"),
    ],
)
def test_invalid_configs_are_rejected(change: dict, match: str) -> None:
    cfg = dataclasses.replace(DIVAE_CFG, **change)
    with pytest.raises(ConfigError, match=match):
        build_tokenizer(cfg)


@pytest.mark.parametrize("model_id", ["terramind_v1_tokenizer_s2l2a", "terramind_v1_tokenizer_lulc"])
def test_official_sizes_build_on_meta_without_allocating(model_id: str) -> None:
    with torch.device("meta"):
        tok = build_tokenizer(get(model_id).config)
    assert all(t.is_meta for t in tok.state_dict().values())
    assert not [name for name, _ in tok.named_buffers()]  # nothing outside the checkpoint to re-create
    if isinstance(tok, DiVAE):
        assert tok.noise_scheduler.alphas_cumprod.device.type == "cpu"


@pytest.mark.parametrize("cfg", [DIVAE_CFG, LULC_CFG], ids=["divae", "vqvae"])
def test_meta_build_then_assign_load_runs_like_a_normal_build(cfg: TokenizerConfig) -> None:
    with torch.device("meta"):
        tok = build_tokenizer(cfg)
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in tok.state_dict().items()}
    tok.load_state_dict(deterministic_state_dict(shapes), strict=True, assign=True)
    assert not any(t.is_meta for t in [*tok.parameters(), *tok.buffers()])
    reference = fill_module_(build_tokenizer(cfg)).eval()
    x = class_map() if cfg.kind == "vqvae" else image()
    tokens = tok.eval().tokenize(x)
    assert torch.equal(tokens, reference.tokenize(x))
    kwargs = dict(timesteps=1, generator=torch.Generator().manual_seed(0))
    out = tok.decode_tokens(tokens, **kwargs)
    kwargs["generator"] = torch.Generator().manual_seed(0)
    assert torch.equal(out, reference.decode_tokens(tokens, **kwargs))


def test_bf16_compute_keeps_the_reference_fp32_parts(divae: DiVAE) -> None:
    fast = fill_module_(build_tokenizer(DIVAE_CFG)).eval().set_compute_dtype(torch.bfloat16)
    assert fast.encoder.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert fast.decoder.input_blocks[0][0].weight.dtype == torch.bfloat16
    kept = [fast.quant_proj.weight, fast.encoder.post_mlp.fc1.weight, fast.encoder.norm_mlp.weight]
    kept += [m.weight for m in fast.modules() if isinstance(m, GroupNorm32)]
    assert all(p.dtype == torch.float32 for p in kept)
    x = image()
    ref_latents = divae.encode_latents(x)
    latents = fast.encode_latents(x)
    assert latents.dtype == torch.float32
    assert float((latents - ref_latents).abs().max() / ref_latents.abs().max()) < 0.05
    tokens = divae.tokenize(x)
    out = fast.decode_tokens(tokens, timesteps=2, generator=torch.Generator().manual_seed(0))
    ref = divae.decode_tokens(tokens, timesteps=2, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert float((out - ref).abs().mean()) < 0.1  # bf16 drift is small on average (values in [-1, 1])


def test_a_plain_dtype_cast_still_computes_the_fp32_parts_in_fp32(divae: DiVAE) -> None:
    cast = fill_module_(build_tokenizer(DIVAE_CFG)).eval().to(torch.bfloat16)  # not set_compute_dtype
    x = image()
    latents = cast.encode_latents(x)
    ref_latents = divae.encode_latents(x)
    assert latents.dtype == torch.float32
    assert float((latents - ref_latents).abs().max() / ref_latents.abs().max()) < 0.05
    out = cast.decode_tokens(cast.tokenize(x), timesteps=1, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_runs_under_autocast_with_float32_latents_and_outputs(divae: DiVAE) -> None:
    x = image()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        latents = divae.encode_latents(x)
        out = divae.decode_tokens(divae.tokenize(x), timesteps=1, generator=torch.Generator().manual_seed(0))
    assert latents.dtype == torch.float32 and out.dtype == torch.float32
    ref = divae.encode_latents(x)
    assert float((latents - ref).abs().max() / ref.abs().max()) < 0.05


def test_works_under_inference_mode(divae: DiVAE, lulc: VQVAE) -> None:
    with torch.inference_mode():
        out = divae.reconstruct(image(b=1), timesteps=1, generator=torch.Generator().manual_seed(0))
        logits = lulc.reconstruct(class_map(b=1))
    assert out.shape == (1, 2, 64, 64) and logits.shape == (1, 10, 64, 64)
