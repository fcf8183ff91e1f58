"""Parity of the six full-size tokenizers with terratorch 1.2.11 (goldens from tools/goldens/tokenizers.py).

Our modules are loaded as users load them (``models/build.load_tokenizer``: built on the meta device,
filled through the one loading path) with the deterministic weights of models/weights/untrained.py
— the same rule the golden script applied to the reference's checkpoint
layout — then run on the real example patches. Tolerance on floats: ``max|ours - ref| / max|ref|
<= 1e-4`` per array (``REL_TOL``). Token ids must be equal except where a reference latent lies
within 1e-3 of an FSQ rounding boundary (``BOUNDARY``).

Measured: with 2 threads (as the goldens were made) the outputs are bit-identical to the reference
(LULC decoder ≤ 1e-6); on the one thread these tests use, ≤ 4e-6 — no token differs.

One tokenizer is alive at a time (a module-scoped, parametrized fixture; pytest orders the tests
by tokenizer), so memory peaks at one ~1.2 GB model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from terramind_qgis.models.build import load_tokenizer
from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.core.job import ModelRequest
from terramind_qgis.models.core.modalities import get_modality
from terramind_qgis.models.tokenizers import VQVAE, DDIMScheduler, DiVAE, build_tokenizer
from testlib.tolerances import relative_error

REPO = Path(__file__).resolve().parents[3]
GOLDENS = REPO / "tests" / "goldens" / "tokenizers"
EXAMPLES = REPO / "tests" / "data" / "examples"
META = json.loads((GOLDENS / "goldens.json").read_text())
LAYOUTS = json.loads((GOLDENS / "layouts.json").read_text())
REL_TOL = 1e-4
BOUNDARY = 1e-3
ALL_IDS = list(META["tokenizers"])
DIVAE_IDS = [i for i in ALL_IDS if META["tokenizers"][i]["class"] == "DiVAE"]
LULC_ID = "terramind_v1_tokenizer_lulc"
DEM_ID = META["ddim_steps"]["tokenizer"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDENS / f"{name}.npz") as data:
        return dict(data)


def short(model_id: str) -> str:
    return model_id.rsplit("_", 1)[-1]




def near_boundary(latents: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """``(B, h, w)`` mask of positions where some channel's ``sigmoid(z)*(L-1)`` is near a rounding edge."""
    scaled = 1.0 / (1.0 + np.exp(-latents.astype(np.float64))) * (np.asarray(levels)[None, :, None, None] - 1)
    return (np.abs(scaled - np.floor(scaled) - 0.5) < BOUNDARY).any(axis=1)


def example_input(model_id: str) -> torch.Tensor:
    """The golden script's input, made with this package's modality statistics."""
    entry = META["tokenizers"][model_id]
    raw = []
    for scene in META["scenes"]:
        with rasterio.open(EXAMPLES / entry["input_folder"] / f"{scene}.tif") as src:
            raw.append(src.read())
    arr = np.stack(raw)  # (B, C, H, W)
    if entry["stats_key"] is None:
        return torch.from_numpy(arr[:, 0].astype(np.int64))  # (B, H, W) class ids
    modality = get_modality(catalogue.get(model_id).modality)
    mean = np.asarray(modality.mean, dtype=np.float64)[None, :, None, None]
    std = np.asarray(modality.std, dtype=np.float64)[None, :, None, None]
    return torch.from_numpy(((arr.astype(np.float64) - mean) / std).astype(np.float32))


def filled_tokenizer(model_id: str) -> DiVAE | VQVAE:
    """The tokenizer as users load it (``models/build.py``), with the deterministic untrained fill."""
    return load_tokenizer(ModelRequest(model_id, untrained=True))


@pytest.fixture(scope="module")
def loaded(request: pytest.FixtureRequest) -> tuple[str, DiVAE | VQVAE]:
    """``(model_id, filled tokenizer)``; parametrized indirectly with the model id."""
    return request.param, filled_tokenizer(request.param)


# -- cheap checks (no weights) -------------------------------------------------------------------


@pytest.mark.parametrize("model_id", ALL_IDS)
def test_state_dict_layout_equals_reference(model_id: str) -> None:
    with torch.device("meta"):
        tok = build_tokenizer(catalogue.get(model_id).config)
    ours = [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in tok.state_dict().items()]
    ref = [(k, v["shape"], v["dtype"]) for k, v in LAYOUTS[model_id].items()]
    assert ours == ref
    assert len(ours) == (310 if model_id == LULC_ID else 601)


@pytest.mark.parametrize("model_id", ALL_IDS)
def test_catalogue_weights_and_statistics_match_reference(model_id: str) -> None:
    spec, entry = catalogue.get(model_id), META["tokenizers"][model_id]
    assert {"repo_id": spec.weights.repo_id, "filename": spec.weights.filename} == entry["checkpoint_request"]
    assert spec.config.in_channels == entry["n_channels"]
    if entry["stats_key"] is not None:
        modality = get_modality(spec.modality)
        assert list(modality.mean) == entry["mean"] and list(modality.std) == entry["std"]


def test_scheduler_tables_equal_reference() -> None:
    ref = golden("scheduler")
    scheduler = DDIMScheduler()
    assert np.array_equal(scheduler.alphas_cumprod.numpy(), ref["alphas_cumprod"])
    assert np.array_equal(scheduler.betas.numpy(), ref["betas"])
    for n in META["scheduler"]["steps"]:
        assert scheduler.timesteps(n) == ref[f"timesteps_{n}"].tolist(), n


# -- full-size parity ----------------------------------------------------------------------------


@pytest.mark.parametrize("loaded", ALL_IDS, indirect=True)
def test_tokens_and_latents_at_224(loaded: tuple[str, DiVAE | VQVAE]) -> None:
    model_id, tok = loaded
    ref = golden(short(model_id))
    x = example_input(model_id)
    latents = tok.encode_latents(x)  # (4, 5, 14, 14)
    assert relative_error(latents, ref["latents"]) <= REL_TOL
    quant, tokens = tok.quantize(latents)
    assert tokens.dtype == torch.int32 and tokens.shape == ref["tokens"].shape
    exact = ~near_boundary(ref["latents"], tok.config.levels)
    assert np.array_equal(tokens.numpy()[exact], ref["tokens"][exact])
    assert torch.equal(quant, tok.tokens_to_embedding(tokens))
    quant0, tokens0 = tok.encode(x[:1])  # the public path gives the same result
    assert torch.equal(quant0, quant[:1]) and torch.equal(tokens0, tokens[:1])


@pytest.mark.parametrize("loaded", DIVAE_IDS, indirect=True)
def test_divae_decode_at_224(loaded: tuple[str, DiVAE]) -> None:
    model_id, tok = loaded
    ref, entry = golden(short(model_id)), META["tokenizers"][model_id]
    generator = torch.Generator().manual_seed(entry["decode_seed"])
    tokens = torch.from_numpy(ref["tokens"][:1])
    out = tok.decode_tokens(tokens, timesteps=META["decode_timesteps"], generator=generator)
    assert out.dtype == torch.float32
    assert relative_error(out, ref["decode"]) <= REL_TOL


@pytest.mark.parametrize("loaded", [LULC_ID], indirect=True)
def test_lulc_logits_at_224(loaded: tuple[str, VQVAE]) -> None:
    _, tok = loaded
    ref = golden("lulc")
    tokens = torch.from_numpy(ref["tokens"][:1])
    logits = tok.decode_tokens(tokens)
    assert logits.shape == (1, 10, 224, 224) and logits.dtype == torch.float32
    assert relative_error(logits, ref["logits_scene0"]) <= REL_TOL
    ids = example_input(LULC_ID)[:1]  # (1, 224, 224)
    one_hot = torch.nn.functional.one_hot(ids, 10).permute(0, 3, 1, 2).float()
    tokens_one_hot = tok.tokenize(one_hot)
    exact = ~near_boundary(ref["latents"][:1], tok.config.levels)
    assert np.array_equal(tokens_one_hot.numpy()[exact], ref["tokens"][:1][exact])
    assert torch.equal(tok.reconstruct(ids[:, None]), tok.decode_tokens(tokens_one_hot))


@pytest.mark.slow  # ten full-size DiVAE UNet passes
@pytest.mark.parametrize("loaded", [DEM_ID], indirect=True)
def test_each_ddim_step_of_a_10_step_decode(loaded: tuple[str, DiVAE]) -> None:
    _, tok = loaded
    ref = golden("ddim_steps")
    steps = list(
        tok.sample_iter(
            tok.tokens_to_embedding(torch.from_numpy(ref["tokens"])),
            timesteps=META["ddim_steps"]["timesteps"],
            noise=torch.from_numpy(ref["noise"]),
        )
    )
    assert [s.timestep for s in steps] == ref["timesteps"].tolist()
    for i, step in enumerate(steps):
        assert relative_error(step.model_output, ref["model_output"][i : i + 1]) <= REL_TOL, i
        assert relative_error(step.prev_sample, ref["prev_sample"][i : i + 1]) <= REL_TOL, i
        assert torch.equal(step.pred_original_sample, step.model_output.clamp(-1, 1))
    # the seeded-generator path draws the very noise the reference drew
    generator = torch.Generator().manual_seed(META["ddim_steps"]["noise_seed"])
    assert torch.equal(tok.initial_noise(1, (224, 224), generator), torch.from_numpy(ref["noise"]))


@pytest.mark.parametrize("loaded", [DEM_ID], indirect=True)
def test_dem_other_sizes_and_the_240_error(loaded: tuple[str, DiVAE]) -> None:
    _, tok = loaded
    ref, info = golden("sizes_dem"), META["sizes"]["dem"]
    x = example_input(DEM_ID)[:1]  # (1, 1, 224, 224)
    inputs = {
        "160x224": x[..., :160, :],
        "256x256": torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (16, 16), (16, 16)), mode="reflect")),
    }
    for size, xs in inputs.items():
        latents = tok.encode_latents(xs)
        assert relative_error(latents, ref[f"{size}_latents"]) <= REL_TOL, size
        tokens = tok.quantize(latents)[1]
        exact = ~near_boundary(ref[f"{size}_latents"], tok.config.levels)
        assert np.array_equal(tokens.numpy()[exact], ref[f"{size}_tokens"][exact]), size
        height, width = (int(v) for v in size.split("x"))
        out = tok.decode_tokens(
            torch.from_numpy(ref[f"{size}_tokens"]),
            image_size=(height, width),
            timesteps=info[size]["timesteps"],
            generator=torch.Generator().manual_seed(info[size]["seed"]),
        )
        assert out.shape == (1, 1, height, width)
        assert relative_error(out, ref[f"{size}_decode"]) <= REL_TOL, size
    x240 = torch.nn.functional.pad(x, (8, 8, 8, 8), mode="reflect")
    latents = tok.encode_latents(x240)
    tokens = tok.quantize(latents)[1]
    exact = ~near_boundary(latents.numpy(), tok.config.levels)
    assert np.array_equal(tokens.numpy()[exact], ref["240x240_tokens"][exact])
    assert info["240x240"]["decode_error"] is not None  # the reference cannot decode 240 either
    with pytest.raises(ConfigError, match="multiples of 32.*240x240"):
        tok.decode_tokens(tokens, timesteps=1)


@pytest.mark.parametrize("loaded", [LULC_ID], indirect=True)
def test_lulc_non_square(loaded: tuple[str, VQVAE]) -> None:
    _, tok = loaded
    ref = golden("sizes_lulc")
    ids = example_input(LULC_ID)[:1, :160, :]
    latents = tok.encode_latents(ids)
    assert relative_error(latents, ref["160x224_latents"]) <= REL_TOL
    tokens = tok.quantize(latents)[1]
    exact = ~near_boundary(ref["160x224_latents"], tok.config.levels)
    assert tokens.shape == (1, 10, 14) and np.array_equal(tokens.numpy()[exact], ref["160x224_tokens"][exact])
    logits = tok.decode_tokens(torch.from_numpy(ref["160x224_tokens"]), image_size=(160, 224))
    assert relative_error(logits, ref["160x224_logits"]) <= REL_TOL

