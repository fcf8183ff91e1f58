"""FSQ quantizer and DDIM scheduler properties, independent of the goldens.

terratorch 1.2.11 ``models/backbones/terramind/tokenizer/quantizers/quantize_finite_scalar.py``;
``models/backbones/terramind/tokenizer/scheduling/scheduling_ddim.py``, ``diffusion_pipeline.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terramind_qgis.models.tokenizers import DDIMScheduler, FiniteScalarQuantizer

LEVELS = {"image": (8, 8, 8, 6, 5), "lulc": (7, 5, 5, 5, 5)}


@pytest.mark.parametrize("levels", LEVELS.values(), ids=LEVELS.keys())
def test_fsq_ids_are_mixed_radix_and_decode_back(levels: tuple[int, ...]) -> None:
    fsq = FiniteScalarQuantizer(levels)
    vocab = int(np.prod(levels))
    assert fsq.codebook_size == vocab
    ids = torch.arange(vocab, dtype=torch.int32)
    codes = fsq.indice_to_code(ids)  # (V, L) in [0, 1]
    digits = np.stack(np.unravel_index(np.arange(vocab), levels[::-1])[::-1], axis=1)  # first level fastest
    assert np.allclose(codes.numpy(), digits / (np.asarray(levels) - 1))
    # latents whose sigmoid(z)*(L-1) lies 0.3 away from each code's digit re-encode to the same id
    scaled = torch.from_numpy(digits.astype(np.float64)) + torch.where(torch.from_numpy(digits) == 0, 0.3, -0.3)
    latent = torch.logit(scaled / (torch.tensor(levels) - 1)).float()  # (V, L)
    code, indice = fsq.latent_to_code_and_indice(latent)
    assert indice.dtype == torch.int32 and torch.equal(indice, ids)
    assert torch.equal(code, codes)


def test_fsq_rounds_half_to_even_like_torch_round() -> None:
    fsq = FiniteScalarQuantizer((8, 8, 8, 6, 5))
    z = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(0)) * 3
    quant, ids = fsq(z)  # (B, L, h, w), (B, h, w)
    d = np.array([7, 7, 7, 5, 4], dtype=np.float32)[None, :, None, None]
    digits = np.round((1 / (1 + np.exp(-z.double().numpy()))) * d)  # numpy rounds half to even too
    expected = (digits * np.array([1, 8, 64, 512, 3072])[None, :, None, None]).sum(1)
    assert np.array_equal(ids.numpy(), expected.astype(np.int32))
    assert torch.equal(quant, fsq.indices_to_embedding(ids))


def test_zero_terminal_snr_schedule() -> None:
    s = DDIMScheduler()
    a = s.alphas_cumprod
    assert a.dtype == torch.float32 and a.shape == (1000,)
    assert float(a[-1]) == 0.0 and 0.9998 < float(a[0]) < 1.0
    assert bool((a[1:] <= a[:-1]).all())
    # terratorch 1.2.11 ``models/backbones/terramind/tokenizer/scheduling/scheduling_ddim.py``,
    # ``diffusion_pipeline.py``
    spec_values = [0.0, 1.061e-4, 1.089e-3, 6.022e-3, 0.02418, 0.07603, 0.1920, 0.3934, 0.6571, 0.8964]
    assert np.allclose(a[s.timesteps(10)].numpy(), spec_values, rtol=2e-3, atol=1e-7)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, [999]), (3, [999, 666, 333, 0]), (10, list(range(999, 0, -100))), (50, list(range(999, 0, -20)))],
)
def test_trailing_timesteps(n: int, expected: list[int]) -> None:
    assert DDIMScheduler().timesteps(n) == expected


def test_ddim_step_identities() -> None:
    s = DDIMScheduler()
    g = torch.Generator().manual_seed(0)
    x_t, x0 = torch.randn(1, 2, 8, 8, generator=g), 3 * torch.randn(1, 2, 8, 8, generator=g)
    # t = 999 has alpha_bar = 0, so the implied noise is x_t itself; with one step a_prev = 1 -> clamped x0
    first = s.step(x0, 999, x_t, num_inference_steps=1)
    assert torch.equal(first.prev_sample, x0.clamp(-1, 1))
    assert torch.equal(first.model_output, x0) and torch.equal(first.pred_original_sample, x0.clamp(-1, 1))
    # a middle step: x_prev = sqrt(a_prev) clamp(x0) + sqrt(1 - a_prev) * eps(unclamped x0)
    a, a_prev = s.alphas_cumprod[499].double(), s.alphas_cumprod[399].double()
    eps = (x_t.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
    expected = a_prev.sqrt() * x0.double().clamp(-1, 1) + (1 - a_prev).sqrt() * eps
    out = s.step(x0, 499, x_t, num_inference_steps=10).prev_sample
    assert torch.allclose(out.double(), expected, rtol=1e-5, atol=1e-5)
    # clip_sample=False keeps the raw prediction (experiments only)
    assert torch.equal(DDIMScheduler(clip_sample=False).step(x0, 999, x_t, 1).prev_sample, x0)
