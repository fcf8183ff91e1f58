"""The runtime seam (models/runtime): one backend choice per job, and one predictor per task that
gives the same result through the torch and the ONNX Runtime wrappers.

The predictors get the engine's batch layout (raw ``(B, C, T, T)`` tiles keyed by modality); with
the same start noise (``noise='torch'``) the two backends agree to ``RTOL`` relative.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from onnx_fixtures import EXAMPLES, RTOL, SCENES, batch_inputs, relative_error

from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.errors import ConfigError, where
from terramind_qgis.models.core.job import InputSpec, Job, ModelRequest, TilingSpec
from terramind_qgis.models.core.modalities import get_modality
from terramind_qgis.models.core.progress import NullProgress
from terramind_qgis.models.core.seeds import tile_seed
from terramind_qgis.models.runtime.backend import choose_backend
from terramind_qgis.models.runtime.device import OomBackoff, select_device, select_onnx_device
from terramind_qgis.models.runtime.segmenter import (
    ModelSource,
    TorchSegmenter,
    describe_segmenter,
    model_source,
    open_segmenter,
)
from terramind_qgis.models.runtime.tokenizer import TorchTokenizer, open_tokenizer, start_noise, tokenizer_spec
from terramind_qgis.models.worker.tasks.reconstruct import reconstruction_predictor


def job(weights: str, task: str = "segment", tile: int = 224, **params) -> Job:
    inputs = {"S2L2A": InputSpec(str(EXAMPLES / "S2L2A" / f"{SCENES[0]}.tif"))}
    return Job(task, inputs, {"reconstruction": "/tmp/r.tif"}, ModelRequest("m", weights=weights),
               params=params, tiling=TilingSpec(tile, 0, 2))  # fmt: skip


def refused(j: Job) -> str:
    with pytest.raises(ConfigError) as info:
        choose_backend(j)
    return where(info.value)


def test_backend_choice() -> None:
    assert choose_backend(job("model.onnx")) == "onnx"
    assert choose_backend(job("model.ckpt")) == "torch"
    assert choose_backend(job("model.ckpt", backend="torch")) == "torch"
    assert "is an ONNX graph: use backend 'onnx'" in refused(job("model.onnx", backend="torch"))
    assert "needs model.weights = an exported .onnx file" in refused(job("model.ckpt", backend="onnx"))
    assert refused(job("model.onnx", backend="tensorrt")) == "params.backend: must be one of torch, onnx, got 'tensorrt'"
    assert refused(Job("segment", {}, {}, ModelRequest("m", weights="m.onnx"), precision="bf16")).startswith(
        "precision: the ONNX backend runs the exported float32 graphs")
    onnx_untrained = Job("segment", {}, {}, ModelRequest("m", weights="m.onnx", untrained=True))
    assert "'untrained' is for the torch backend" in refused(onnx_untrained)
    assert "available for the tasks segment, reconstruct, not for 'generate'" in refused(job("model.onnx", "generate"))
    assert refused(job("model.onnx", noise="cuda")) == "params.noise: must be one of numpy, torch, got 'cuda'"


def test_device_choice() -> None:
    import onnxruntime

    choice = select_onnx_device("cpu")
    assert choice.device == "cpu" and choice.precision == "fp32" and choice.facts["backend"] == "onnx"
    assert "CPUExecutionProvider" in choice.description
    with pytest.raises(ConfigError, match="the ONNX backend runs float32 graphs"):
        select_onnx_device("cpu", "bf16")
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        select_onnx_device("gpu")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert select_onnx_device("auto").device == "cpu"
        with pytest.raises(ConfigError, match="no CUDA execution provider"):
            select_onnx_device("cuda:0")
    assert select_device("cpu").facts["backend"] == "torch"
    with pytest.raises(ConfigError) as info:
        select_device("cpu", "fp16")
    assert where(info.value) == "precision: 'fp16' needs a CUDA GPU; on the CPU choose 'bf16' or 'fp32'"


def test_segmenters_give_the_same_logits(tiny, tiny_onnx: Path, tmp_path: Path) -> None:
    j = job(str(tiny_onnx))
    source = model_source(j, None)
    assert source == ModelSource(None, str(tiny_onnx), None)
    assert describe_segmenter("onnx", j, source) == (tiny.config, (224, 224))  # the config and the tile it serves
    onnx = open_segmenter("onnx", j, source, "1: Water #0000FF", select_onnx_device("cpu"), NullProgress())
    assert [(c.name, c.color) for c in onnx.classes] == [("Others", "#D9D9D9"), ("Water", "#0000FF")]
    raw = batch_inputs(tiny, "tiny_sen1floods11")  # {config name: (4, C, 224, 224)}
    from_torch = TorchSegmenter(tiny, select_device("cpu"), None).logits(raw, None)
    with torch.no_grad():
        ref = tiny({k: torch.from_numpy(v) for k, v in raw.items()}).numpy()
    np.testing.assert_array_equal(from_torch, ref)  # the wrapper adds nothing to the model
    assert relative_error(onnx.logits(raw, None), ref) <= RTOL
    assert onnx.info.extra_tags["TERRAMIND_BACKBONE"] == tiny.config.backbone


def _s2_batch() -> np.ndarray:
    import rasterio

    raw = []
    for scene in SCENES[:2]:
        with rasterio.open(EXAMPLES / "S2L2A" / f"{scene}.tif") as src:
            raw.append(src.read().astype(np.float32))
    return np.stack(raw)  # (2, 12, 224, 224) raw


def test_one_reconstruction_predictor_for_both_backends(s2_tokenizer, s2_tokenizer_onnx) -> None:
    j = job(str(s2_tokenizer_onnx[1]), "reconstruct", noise="torch")
    assert tokenizer_spec("onnx", j) == catalogue.get("test_tokenizer_s2l2a")
    with pytest.raises(ConfigError, match="exported for 224x224 tiles but the job's tile size is 192"):
        tokenizer_spec("onnx", job(str(s2_tokenizer_onnx[1]), "reconstruct", tile=192))
    spec = catalogue.get("test_tokenizer_s2l2a")
    onnx = open_tokenizer("onnx", j, spec, select_onnx_device("cpu"), NullProgress())
    torch_tok = TorchTokenizer(s2_tokenizer, select_device("cpu"), spec)
    m, x = get_modality("S2L2A"), _s2_batch()
    tiles = [SimpleNamespace(row=0, col=0), SimpleNamespace(row=3, col=1)]

    def run(tok, source: str) -> np.ndarray:
        predict = reconstruction_predictor(tok, m, 5, 3, 224, source, OomBackoff(2, NullProgress()))
        return predict(tiles, {"S2L2A": x}, NullProgress())["reconstruction"]

    by_torch, by_onnx = run(torch_tok, "torch"), run(onnx, "torch")
    assert relative_error(by_onnx, by_torch) <= RTOL
    # the torch recipe as the reference runs it: noise drawn per tile on the CPU, float32 standardisation
    mean = torch.tensor(m.mean).view(1, -1, 1, 1)
    std = torch.tensor(m.std).view(1, -1, 1, 1)
    noise = torch.stack([torch.randn((12, 224, 224), generator=torch.Generator().manual_seed(tile_seed(5, t.row, t.col)))
                         for t in tiles])  # fmt: skip
    with torch.no_grad():
        ref = s2_tokenizer.decode_tokens(s2_tokenizer.tokenize((torch.from_numpy(x) - mean) / std), timesteps=3, noise=noise)
    np.testing.assert_array_equal(by_torch, (ref * std + mean).numpy())
    np.testing.assert_array_equal(start_noise(5, tiles, (12, 224, 224), "torch")[1], noise[1].numpy())
    first, again = run(onnx, "numpy"), run(onnx, "numpy")
    np.testing.assert_array_equal(first, again)  # numpy noise: reproducible per seed and tile
    assert np.abs(first - by_onnx).max() > 1e-3 * np.abs(by_onnx).max()  # ... but another stream than torch's


def test_lulc_reconstruction_through_both_backends(lulc_tokenizer, lulc_tokenizer_onnx) -> None:
    import rasterio

    j = job(str(lulc_tokenizer_onnx[0]), "reconstruct")
    with rasterio.open(EXAMPLES / "LULC" / f"{SCENES[3]}.tif") as src:
        x = src.read().astype(np.float32)[None]  # (1, 1, 224, 224) class ids as the engine reads them
    m, spec = get_modality("LULC"), catalogue.get("test_tokenizer_lulc")
    onnx = open_tokenizer("onnx", j, spec, select_onnx_device("cpu"), NullProgress())
    outs = [reconstruction_predictor(tok, m, 0, 10, 224, "numpy", OomBackoff(1, NullProgress()))(
                [SimpleNamespace(row=0, col=0)], {"LULC": x}, NullProgress())["reconstruction"]
            for tok in (onnx, TorchTokenizer(lulc_tokenizer, select_device("cpu"), spec))]  # fmt: skip
    assert relative_error(outs[0], outs[1]) <= RTOL
