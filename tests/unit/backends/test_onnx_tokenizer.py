"""ONNX export and ONNX Runtime inference of tokenizers: encoder graph, DiVAE denoiser + numpy DDIM, LULC decoder.

The reduced test tokenizers (tests/data/catalogue, untrained fill) are exported and compared with
our torch tokenizers on the real example patches. Floats: ``RTOL`` = 1e-4 relative; measured here
~1.3e-6 (encoder latents), ~7e-6 (10-step DDIM decode from the same start noise), ~1e-6 (LULC
logits). Token ids equal except where a latent lies within 1e-3 of an FSQ rounding edge (none
differ here). The numpy DDIM step agrees with torch's to ``STEP_RTOL`` (torch's ``x ** 0.5`` is
not always the correctly rounded square root; measured 1.3e-7).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from onnx_fixtures import CATALOGUE, EXAMPLES, REPO, RTOL, SCENES, relative_error, s2l2a_standardized

from terramind_qgis.models.backends.onnx_card import read_card
from terramind_qgis.models.backends.onnx_ddim import NumpyDDIM
from terramind_qgis.models.backends.onnx_export import main
from terramind_qgis.models.backends.onnx_runtime import OnnxTokenizer
from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.catalogue import ModelSpec
from terramind_qgis.models.core.errors import CancelledError, CheckpointError, ConfigError, InputRasterError
from terramind_qgis.models.core.modalities import get_modality
from terramind_qgis.models.tokenizers import DDIMScheduler

BOUNDARY = 1e-3
STEP_RTOL = 1e-6


def near_boundary(latents: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """``(B, h, w)``: where some channel's ``sigmoid(z) * (L - 1)`` is within BOUNDARY of a rounding edge."""
    scaled = 1.0 / (1.0 + np.exp(-latents.astype(np.float64))) * (np.asarray(levels)[None, :, None, None] - 1)
    return (np.abs(scaled - np.floor(scaled) - 0.5) < BOUNDARY).any(axis=1)


def lulc_ids() -> np.ndarray:
    ids = []
    for scene in SCENES[:2]:
        with rasterio.open(EXAMPLES / "LULC" / f"{scene}.tif") as src:
            ids.append(src.read(1).astype(np.int64))
    return np.stack(ids)  # (2, 224, 224)


def test_encoder_matches_torch_on_real_patches(s2_tokenizer, s2_tokenizer_onnx) -> None:
    tok = OnnxTokenizer(s2_tokenizer_onnx[0], device="cpu")
    x = s2l2a_standardized(SCENES)  # (4, 12, 224, 224): a larger batch than the traced 2
    latents = tok.encode_latents(x)
    quant, tokens = tok.encode(x)
    with torch.no_grad():
        ref_latents = s2_tokenizer.encode_latents(torch.from_numpy(x)).numpy()
        ref_quant, ref_tokens = (t.numpy() for t in s2_tokenizer.encode(torch.from_numpy(x)))
    assert relative_error(latents, ref_latents) <= RTOL
    assert tokens.dtype == np.int32 and tokens.shape == (4, 14, 14)
    differ = tokens != ref_tokens
    assert not (differ & ~near_boundary(ref_latents, tok.levels)).any()
    same = np.broadcast_to(~differ[:, None], quant.shape)
    np.testing.assert_array_equal(quant[same], ref_quant[same])


def test_divae_decode_matches_torch_from_the_same_noise(s2_tokenizer, s2_tokenizer_onnx) -> None:
    tok = OnnxTokenizer(s2_tokenizer_onnx[1], device="cpu")  # the decoder file finds its encoder
    x = s2l2a_standardized(SCENES[2:])
    noise = torch.randn((2, 12, 224, 224), generator=torch.Generator().manual_seed(7))
    ours = tok.reconstruct(x, timesteps=10, noise=noise.numpy())
    with torch.no_grad():
        ref = s2_tokenizer.reconstruct(torch.from_numpy(x), timesteps=10, noise=noise).numpy()
    assert ours.shape == (2, 12, 224, 224) and np.abs(ours).max() <= 1.0 + 1e-6
    assert relative_error(ours, ref) <= RTOL


def test_numpy_ddim_is_the_reference_schedule_and_torch_step(s2_tokenizer_onnx) -> None:
    card = read_card(s2_tokenizer_onnx[1])
    ddim = NumpyDDIM.from_table(card["alphas_cumprod"])
    golden = np.load(REPO / "tests" / "goldens" / "tokenizers" / "scheduler.npz")
    np.testing.assert_array_equal(ddim.alphas_cumprod, golden["alphas_cumprod"])  # terratorch's table, exactly
    torch_ddim = DDIMScheduler()
    rng = np.random.default_rng(0)
    for n in (10, 3, 1):
        steps = ddim.timesteps(n)
        assert steps == torch_ddim.timesteps(n) == golden[f"timesteps_{n}"].tolist()
        for t in steps:
            out, sample = (rng.standard_normal((2, 3, 32, 32), dtype=np.float32) * 1.5 for _ in range(2))
            x0, prev = ddim.step(out, t, sample, n)
            ref = torch_ddim.step(torch.from_numpy(out), t, torch.from_numpy(sample), n)
            np.testing.assert_array_equal(x0, ref.pred_original_sample.numpy())
            assert relative_error(prev, ref.prev_sample.numpy()) <= STEP_RTOL
    with pytest.raises(ConfigError, match="between 1 and 1000"):
        ddim.timesteps(0)


def test_token_lookup_equals_torch(s2_tokenizer, s2_tokenizer_onnx) -> None:
    tok = OnnxTokenizer(s2_tokenizer_onnx[0], device="cpu")
    ids = np.random.default_rng(1).integers(0, tok.vocab_size, (3, 14, 14)).astype(np.int32)
    ids[0, 0, :2] = (0, tok.vocab_size - 1)
    ref = s2_tokenizer.tokens_to_embedding(torch.from_numpy(ids)).numpy()
    np.testing.assert_array_equal(tok.tokens_to_embedding(ids), ref)
    np.testing.assert_array_equal(tok.tokens_to_embedding(ids.reshape(3, -1)), tok.tokens_to_embedding(ids))
    with pytest.raises(ConfigError, match=r"token ids must lie in 0\.\.15359"):
        tok.tokens_to_embedding(ids + tok.vocab_size)
    with pytest.raises(ConfigError, match="integer array"):
        tok.tokens_to_embedding(ids.astype(np.float32))


def test_numpy_noise_contract(s2_tokenizer_onnx) -> None:
    tok = OnnxTokenizer(s2_tokenizer_onnx[0], device="cpu")
    ids = np.random.default_rng(2).integers(0, tok.vocab_size, (1, 14, 14))
    a = tok.decode_tokens(ids, timesteps=2, seed=3)
    np.testing.assert_array_equal(a, tok.decode_tokens(ids, timesteps=2, seed=3))
    explicit = np.random.default_rng(3).standard_normal((1, 12, 224, 224), dtype=np.float32)
    np.testing.assert_array_equal(a, tok.decode_tokens(ids, (224, 224), 2, noise=explicit))
    assert np.abs(a - tok.decode_tokens(ids, timesteps=2, seed=4)).max() > 1e-2
    with pytest.raises(ConfigError, match=r"noise must have shape \(1, 12, 224, 224\)"):
        tok.decode_tokens(ids, timesteps=2, noise=explicit[:, :3])


def test_decoding_reports_progress_and_can_be_cancelled(s2_tokenizer_onnx) -> None:
    class Recorder:
        def __init__(self, cancel_after: int) -> None:
            self.percent: list[float] = []
            self.cancel_after = cancel_after

        def set_progress(self, percent: float) -> None:
            self.percent.append(percent)

        def info(self, message: str) -> None: ...

        def warn(self, message: str) -> None: ...

        def is_canceled(self) -> bool:
            return len(self.percent) >= self.cancel_after

    tok = OnnxTokenizer(s2_tokenizer_onnx[0], device="cpu")
    ids = np.zeros((1, 14, 14), np.int32)
    done = Recorder(cancel_after=99)
    tok.decode_tokens(ids, timesteps=4, seed=0, progress=done)
    assert done.percent == [25.0, 50.0, 75.0, 100.0]
    stopped = Recorder(cancel_after=2)
    with pytest.raises(CancelledError):
        tok.decode_tokens(ids, timesteps=4, seed=0, progress=stopped)
    assert stopped.percent == [25.0, 50.0]


def test_lulc_tokenizer_matches_torch(lulc_tokenizer, lulc_tokenizer_onnx) -> None:
    tok = OnnxTokenizer(lulc_tokenizer_onnx[0], device="cpu")
    ids = lulc_ids()
    with torch.no_grad():
        ref_tokens = lulc_tokenizer.tokenize(torch.from_numpy(ids)).numpy()
        ref = lulc_tokenizer.reconstruct(torch.from_numpy(ids)).numpy()
    assert (tok.tokenize(ids) == ref_tokens).all()
    assert relative_error(tok.reconstruct(ids), ref) <= RTOL
    assert relative_error(tok.reconstruct(ids[:, None].astype(np.float32)), ref) <= RTOL  # (B, 1, H, W) float ids
    assert relative_error(tok.decode_tokens(ref_tokens), ref) <= RTOL
    with pytest.raises(InputRasterError, match=r"class ids must lie in 0\.\.9"):
        tok.tokenize(ids + 5)
    with pytest.raises(InputRasterError, match="NaN"):
        tok.tokenize(np.full((1, 224, 224), np.nan, np.float32))


def test_cards_describe_the_tokenizer(s2_tokenizer_onnx, lulc_tokenizer_onnx) -> None:
    enc, dec = (read_card(p) for p in s2_tokenizer_onnx)
    m = get_modality("S2L2A")
    assert (enc["graph"], dec["graph"]) == ("tokenizer_encoder", "divae_denoiser")
    assert enc["companion"] == s2_tokenizer_onnx[1].name and dec["companion"] == s2_tokenizer_onnx[0].name
    assert ModelSpec.from_dict(enc["spec"]) == catalogue.get("test_tokenizer_s2l2a")
    assert enc["bands"] == list(m.bands) and enc["mean"] == list(m.mean) and enc["std"] == list(m.std)
    assert enc["levels"] == [8, 8, 8, 6, 5] and enc["vocab_size"] == 15360 and enc["token_grid"] == [14, 14]
    assert enc["export_check"]["latents"] <= RTOL and enc["export_check"]["tokens_mismatch_fraction"] == 0.0
    assert dec["export_check"]["x0"] <= RTOL and len(dec["alphas_cumprod"]) == dec["num_train_timesteps"] == 1000
    assert enc["source"] == {"checkpoint": "untrained (deterministic fill, models/weights/untrained.py)", "sha256": None}
    lulc = read_card(lulc_tokenizer_onnx[1])
    assert lulc["graph"] == "vqvae_decoder" and lulc["mean"] is None
    assert [c["name"] for c in lulc["classes"]] == [c.name for c in get_modality("LULC").classes]


def test_file_pairing_and_size_errors(s2_tokenizer_onnx, lulc_tokenizer_onnx, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not the two graphs of one tokenizer export"):
        OnnxTokenizer(s2_tokenizer_onnx[0], decoder_path=lulc_tokenizer_onnx[1])
    alone = tmp_path / s2_tokenizer_onnx[0].name
    shutil.copy(s2_tokenizer_onnx[0], alone)
    with pytest.raises(CheckpointError, match="is not next to it"):
        OnnxTokenizer(alone)
    tok = OnnxTokenizer(s2_tokenizer_onnx[0], device="cpu")
    with pytest.raises(ConfigError, match="exported for 224x224 images; got 256x256"):
        tok.tokenize(np.zeros((1, 12, 256, 256), np.float32))
    with pytest.raises(ConfigError, match="decodes 14x14 token grids into 224x224 images"):
        tok.decode_tokens(np.zeros((1, 16, 16), np.int32), timesteps=1, seed=0)
    with pytest.raises(ConfigError, match="asked for 256x256 pixels"):
        tok.decode_tokens(np.zeros((1, 14, 14), np.int32), (256, 256), 1, seed=0)
    with pytest.raises(InputRasterError, match=r"standardized images \(B, 12, H, W\)"):
        tok.tokenize(np.zeros((1, 13, 224, 224), np.float32))


def test_command_line(test_cards, tmp_path: Path) -> None:
    argv = ["tokenizer", "test_tokenizer_dem", "--untrained", "--catalogue", str(CATALOGUE), "--out", str(tmp_path),
            "--image-size", "64", "96"]  # fmt: skip
    assert main(argv) == 0
    tok = OnnxTokenizer(tmp_path / "test_tokenizer_dem.decoder.onnx", device="cpu")
    assert tok.modality == "DEM" and tok.image_size == (64, 96)
    out = tok.reconstruct(np.zeros((1, 1, 64, 96), np.float32), timesteps=2, seed=0)
    assert out.shape == (1, 1, 64, 96) and np.isfinite(out).all()
    assert main(["tokenizer", "test_tokenizer_dem", "--untrained", "--out", str(tmp_path), "--image-size", "48"]) == 1
