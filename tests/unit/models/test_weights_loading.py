"""Loading tokenizer checkpoints through the facade: Hub cache, formats, strictness, clear errors.

The official-size case uses the LULC tokenizer (184 M parameters, a 736 MB file written once per
module); every other case uses the reduced test variants of tests/data/catalogue/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import save_file

from terramind_qgis.models.build import UNTRAINED_SOURCE, load_tokenizer
from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.errors import CheckpointError, ConfigError
from terramind_qgis.models.core.job import ModelRequest
from terramind_qgis.models.tokenizers import build_tokenizer
from terramind_qgis.models.weights.untrained import fill_module_
from testlib.hub import make_hub_cache

REPO = Path(__file__).resolve().parents[3]
CARDS = REPO / "tests" / "data" / "catalogue"
EXAMPLES = REPO / "tests" / "data" / "examples"
SCENE = "38D_378R_2_3"
LULC_ID = "terramind_v1_tokenizer_lulc"


@pytest.fixture(scope="module", autouse=True)
def test_cards() -> None:
    catalogue.load_cards(CARDS)


def lulc_patch() -> torch.Tensor:
    """A 64 x 64 corner of a real LULC patch (16 tokens keep the full-size tokenizer fast)."""
    with rasterio.open(EXAMPLES / "LULC" / f"{SCENE}.tif") as src:
        return torch.from_numpy(src.read(window=((0, 64), (0, 64))).astype(np.int64))  # (1, 64, 64) class ids


def dem_patch() -> torch.Tensor:
    with rasterio.open(EXAMPLES / "DEM" / f"{SCENE}.tif") as src:
        x = torch.from_numpy(src.read().astype(np.float32))[None]  # (1, 1, H, W)
    return (x - 670.665) / 951.272


def filled(model_id: str) -> torch.nn.Module:
    """The module built directly on the CPU and filled by the untrained rule (the comparison point)."""
    return fill_module_(build_tokenizer(catalogue.get(model_id).config)).eval()


@pytest.fixture(scope="module")
def official_lulc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A full-size LULC tokenizer checkpoint (deterministic fill) and the module it came from."""
    module = filled(LULC_ID)
    path = tmp_path_factory.mktemp("official") / "TerraMind_Tokenizer_LULC.pt"
    torch.save(module.state_dict(), path)
    return path, module


@pytest.fixture(scope="module")
def lulc_hub_cache(official_lulc: tuple[Path, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("hf-cache")
    spec = catalogue.get(LULC_ID)
    make_hub_cache(cache, spec.weights.repo_id, spec.weights.filename, official_lulc[0])
    return cache


def test_official_tokenizer_from_offline_hub_cache(
    official_lulc: tuple[Path, torch.nn.Module], lulc_hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(lulc_hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = load_tokenizer(LULC_ID)
    direct = official_lulc[1]
    assert tok.untrained is False and tok.model_id == LULC_ID
    assert tok.weights_source == {"model": "hf://ibm-esa-geospatial/TerraMind-1.0-Tokenizer-LULC@main/TerraMind_Tokenizer_LULC.pt"}
    assert not any(p.requires_grad or p.is_meta or p.dtype != torch.float32 for p in tok.parameters())
    x = lulc_patch()
    with torch.inference_mode():
        tokens, expected_tokens = tok.tokenize(x), direct.tokenize(x)
        assert torch.equal(tokens, expected_tokens)
        assert torch.equal(tok.decode_tokens(tokens), direct.decode_tokens(expected_tokens))


MEMORY_PROBE = """
import json, os, sys
sys.path.insert(0, {pluginpath!r})
import numpy as np, rasterio, torch
from terramind_qgis.models.build import load_tokenizer
def status_mb(field):
    return int(next(l for l in open('/proc/self/status') if l.startswith(field)).split()[1]) / 1024
def rss_mb():
    return status_mb('VmRSS')
with rasterio.open({lulc!r}) as src:
    x = torch.from_numpy(src.read(window=((0, 64), (0, 64))).astype(np.int64))
base = rss_mb()
tok = load_tokenizer('terramind_v1_tokenizer_lulc')
loaded = rss_mb()
with torch.inference_mode():
    tok.decode_tokens(tok.tokenize(x))
print(json.dumps({{"base": base, "loaded": loaded, "peak": status_mb('VmHWM')}}))  # (ru_maxrss counts the forking parent)
"""


def test_loading_does_not_double_memory(official_lulc: tuple[Path, torch.nn.Module], lulc_hub_cache: Path) -> None:
    code = MEMORY_PROBE.format(pluginpath=str(REPO / ".pluginpath"), lulc=str(EXAMPLES / "LULC" / f"{SCENE}.tif"))
    env = {**os.environ, "HF_HUB_CACHE": str(lulc_hub_cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    file_mb = official_lulc[0].stat().st_size / 2**20
    # weights memory-mapped from the file and used in place: loading + a forward pass stay well
    # below base + 2x the file (what a load-then-copy would need)
    assert mem["peak"] - mem["base"] < 1.35 * file_mb, (mem, file_mb)


def test_safetensors_pt_legacy_and_containers_load_the_same(tmp_path: Path) -> None:
    state = filled("test_tokenizer_dem").state_dict()
    torch.save(state, tmp_path / "plain.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "lightning.ckpt")
    torch.save({"model": state, "args": {"lr": 1e-4}}, tmp_path / "wrapped.pt")
    x = dem_patch()
    expected = filled("test_tokenizer_dem").tokenize(x)
    for name in ("plain.pt", "w.safetensors", "legacy.pth", "lightning.ckpt", "wrapped.pt"):
        tok = load_tokenizer(ModelRequest("test_tokenizer_dem", weights=tmp_path / name))
        assert tok.weights_source == {"model": str(tmp_path / name)}
        got = tok.state_dict()
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state), name
        assert torch.equal(tok.tokenize(x), expected), name


def test_half_precision_checkpoint_loads_as_float32(tmp_path: Path) -> None:
    state = filled("test_tokenizer_ndvi").state_dict()
    torch.save({k: v.half() for k, v in state.items()}, tmp_path / "fp16.pt")
    tok = load_tokenizer(ModelRequest("test_tokenizer_ndvi", weights=tmp_path / "fp16.pt"))
    got = tok.state_dict()
    assert all(got[k].dtype == torch.float32 and torch.equal(got[k], state[k].half().float()) for k in state)


def test_untrained_fill_equals_filling_the_module_directly() -> None:
    tok = load_tokenizer(ModelRequest("test_tokenizer_s1rtc", untrained=True))
    direct = filled("test_tokenizer_s1rtc").state_dict()
    assert tok.untrained is True and tok.weights_source == {"model": UNTRAINED_SOURCE}
    assert all(torch.equal(v, direct[k]) for k, v in tok.state_dict().items())


@pytest.mark.parametrize("name", ["w.pt", "w.safetensors"])
def test_truncated_file_is_one_checkpoint_error(tmp_path: Path, name: str) -> None:
    state = {k: v.contiguous() for k, v in filled("test_tokenizer_dem").state_dict().items()}
    whole = tmp_path / ("whole_" + name)
    (torch.save if name.endswith(".pt") else save_file)(state, whole)
    data = whole.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"'{tmp_path / name}' is truncated or corrupt") as err:
        load_tokenizer(ModelRequest("test_tokenizer_dem", weights=tmp_path / name))
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_wrong_modality_tokenizer_file_names_the_keys(tmp_path: Path) -> None:
    torch.save(filled("test_tokenizer_dem").state_dict(), tmp_path / "dem.pt")
    with pytest.raises(CheckpointError) as err:
        load_tokenizer(ModelRequest("test_tokenizer_s2l2a", weights=tmp_path / "dem.pt"))
    message = str(err.value)
    assert (f"'{tmp_path / 'dem.pt'}' does not fit model 'test_tokenizer_s2l2a' "
            "(DiVAE tokenizer for S2L2A, 12 input channels)") in message
    assert "looks like a DiVAE (diffusion) image tokenizer for 1-band images" in message
    assert ("4 keys with the wrong shape (same name, other shape); "
            "by group: decoder.out (2), encoder.proj (1), decoder.input_blocks (1)") in message
    assert "encoder.proj.weight: file [64, 1, 16, 16] vs model [64, 12, 16, 16]" in message
    assert "decoder.input_blocks.0.0.weight" in message and "decoder.out.2.weight" in message


def test_wrong_official_tokenizer_file_is_caught_before_reading_data(tmp_path: Path) -> None:
    """A full-size DEM layout (stride-0 tensors: shapes without data) given to the S2L2A tokenizer."""
    layout = json.loads((REPO / "tests" / "goldens" / "layouts" / "terramind_v1_tokenizer_dem.json").read_text())
    torch.save({k: torch.zeros(()).expand(s) for k, s in layout["state_dict"].items()}, tmp_path / "dem.pt")
    assert (tmp_path / "dem.pt").stat().st_size < 1_000_000
    with pytest.raises(CheckpointError, match=r"encoder\.proj\.weight: file \[768, 1, 16, 16\] vs model \[768, 12, 16, 16\]"):
        load_tokenizer(ModelRequest("terramind_v1_tokenizer_s2l2a", weights=tmp_path / "dem.pt"))


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = filled("test_tokenizer_lulc").state_dict()
    del state["encoder.blocks.1.attn.qkv.weight"]
    state["encoder.blocks.2.attn.qkv.weight"] = torch.zeros(192, 64)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_tokenizer(ModelRequest("test_tokenizer_lulc", weights=tmp_path / "bad.pt"))
    message = str(err.value)
    assert ("1 missing key (in the model, not in the file); by group: encoder.blocks (1)\n"
            "    encoder.blocks.1.attn.qkv.weight") in message
    assert ("1 unexpected key (in the file, not in the model); by group: encoder.blocks (1)\n"
            "    encoder.blocks.2.attn.qkv.weight") in message


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": filled("test_tokenizer_dem").state_dict(), "hparams": Namespace(lr=1)}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match="contains Python objects other than tensors.*weights_only=True"):
        load_tokenizer(ModelRequest("test_tokenizer_dem", weights=tmp_path / "x.ckpt"))
    torch.save({"epoch": torch.tensor(1), "optimizer": {"lr": 0.1}}, tmp_path / "y.pt")
    with pytest.raises(CheckpointError, match=r"is not a state dict: its top-level keys are \[epoch, optimizer\]"):
        load_tokenizer(ModelRequest("test_tokenizer_dem", weights=tmp_path / "y.pt"))


def test_weights_and_untrained_are_exclusive_and_needed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="either a weights path .* or untrained=True, not both"):
        load_tokenizer(ModelRequest("test_tokenizer_dem", weights=tmp_path / "w.pt", untrained=True))
    with pytest.raises(ConfigError, match=r"'test_tokenizer_dem' has no weights source .*\(untrained=True\)"):
        load_tokenizer("test_tokenizer_dem")
    with pytest.raises(ConfigError, match="'terramind_v1_tiny' is a terramind, not a tokenizer"):
        load_tokenizer(ModelRequest("terramind_v1_tiny", untrained=True))
    with pytest.raises(ConfigError, match="cannot put model 'test_tokenizer_dem' on device 'cuda:99'"):
        load_tokenizer(ModelRequest("test_tokenizer_dem", untrained=True), device="cuda:99")
