"""The worker's ONNX backend functions (models/backends/tasks.py): backend choice, device, predictors.

The predictors get the engine's batch layout (raw ``(B, C, T, T)`` tiles keyed by modality) and
must give what the torch predictors of models/worker/tasks/segment.py and reconstruct.py give
(same standardisation, same per-tile noise with ``noise='torch'``), to ``RTOL`` relative.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from onnx_fixtures import EXAMPLES, RTOL, SCENES, batch_inputs, relative_error
from terramind_qgis.models.core import catalogue
from terramind_qgis.models.backends import tasks
from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.core.job import InputSpec, Job, ModelRequest, TilingSpec
from terramind_qgis.models.core.modalities import get_modality
from terramind_qgis.models.core.progress import NullProgress
from terramind_qgis.models.worker.tasks.common import tile_seed


def job(weights: str, task: str = "segment", tile: int = 224, **params) -> Job:
    inputs = {"S2L2A": InputSpec(str(EXAMPLES / "S2L2A" / f"{SCENES[0]}.tif"))}
    return Job(task, inputs, {"reconstruction": "/tmp/r.tif"}, ModelRequest("m", weights=weights),
               params=params, tiling=TilingSpec(tile, 0, 2))  # fmt: skip


def test_backend_choice() -> None:
    assert tasks.job_backend(job("model.onnx")) == "onnx"
    assert tasks.job_backend(job("model.ckpt")) == "torch"
    assert tasks.job_backend(job("model.ckpt", backend="torch")) == "torch"
    with pytest.raises(ConfigError, match="is an ONNX graph: use backend 'onnx'"):
        tasks.job_backend(job("model.onnx", backend="torch"))
    with pytest.raises(ConfigError, match="needs model.weights = an exported .onnx file"):
        tasks.job_backend(job("model.ckpt", backend="onnx"))
    with pytest.raises(ConfigError, match="'backend' must be one of torch, onnx"):
        tasks.job_backend(job("model.onnx", backend="tensorrt"))
    with pytest.raises(ConfigError, match="precision must be 'fp32'"):
        tasks.job_backend(Job("segment", {}, {}, ModelRequest("m", weights="m.onnx"), precision="bf16"))
    with pytest.raises(ConfigError, match="'untrained' is for the torch backend"):
        tasks.job_backend(Job("segment", {}, {}, ModelRequest("m", weights="m.onnx", untrained=True)))
    with pytest.raises(ConfigError, match="available for the tasks segment, reconstruct, not for 'generate'"):
        tasks.job_backend(job("model.onnx", "generate"))
    with pytest.raises(ConfigError, match="'noise' must be one of numpy, torch"):
        tasks.job_backend(job("model.onnx", noise="cuda"))


def test_onnx_device_choice() -> None:
    import onnxruntime

    choice = tasks.select_onnx_device("cpu")
    assert choice.device == "cpu" and choice.precision == "fp32" and choice.facts["backend"] == "onnx"
    assert "CPUExecutionProvider" in choice.description
    with pytest.raises(ConfigError, match="precision must be 'fp32'"):
        tasks.select_onnx_device("cpu", "bf16")
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        tasks.select_onnx_device("gpu")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert tasks.select_onnx_device("auto").device == "cpu"
        with pytest.raises(ConfigError, match="no CUDA execution provider"):
            tasks.select_onnx_device("cuda:0")


def test_segment_functions(tiny, tiny_onnx: Path) -> None:
    j = job(str(tiny_onnx))
    assert tasks.describe_onnx_segmentation(j) == tiny.config
    with pytest.raises(ConfigError, match="exported for 224x224 tiles but the job's tile size is 256"):
        tasks.describe_onnx_segmentation(job(str(tiny_onnx), tile=256))
    model = tasks.load_onnx_segmentation(j, "cpu", classes="1: Water #0000FF")
    assert [(c.name, c.color) for c in model.classes] == [("Others", "#D9D9D9"), ("Water", "#0000FF")]
    raw = batch_inputs(tiny, "tiny_sen1floods11")  # {config name: (4, C, 224, 224)}
    by_modality = {s.modality: raw[s.name] for s in tiny.config.inputs}  # the engine keys inputs by modality
    predict = tasks.onnx_segment_predictor(SimpleNamespace(config=model.config), model, None)
    logits = predict([], by_modality, NullProgress())["logits"]
    with torch.no_grad():
        ref = tiny({k: torch.from_numpy(v) for k, v in raw.items()}).numpy()
    assert relative_error(logits, ref) <= RTOL


def torch_reconstruct(tok, modality, x: np.ndarray, tiles: list, seed: int, timesteps: int) -> np.ndarray:
    """The torch predictor's recipe (models/worker/tasks/reconstruct.py) for one batch."""
    mean = torch.tensor(modality.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(modality.std, dtype=torch.float32).view(1, -1, 1, 1)
    xb = torch.from_numpy(x)
    if modality.categorical:
        with torch.no_grad():
            return tok.decode_tokens(tok.tokenize(xb)).numpy()
    noise = torch.stack([torch.randn((modality.num_bands, x.shape[-2], x.shape[-1]),
                                     generator=torch.Generator().manual_seed(tile_seed(seed, t.row, t.col)))
                         for t in tiles])  # fmt: skip
    with torch.no_grad():
        y = tok.decode_tokens(tok.tokenize((xb - mean) / std), timesteps=timesteps, noise=noise)
    return (y * std + mean).numpy()


def test_reconstruct_functions(s2_tokenizer, s2_tokenizer_onnx) -> None:
    j = job(str(s2_tokenizer_onnx[1]), "reconstruct", noise="torch")
    assert tasks.onnx_tokenizer_spec(j) == catalogue.get("test_tokenizer_s2l2a")
    with pytest.raises(ConfigError, match="exported for 224x224 tiles but the job's tile size is 192"):
        tasks.onnx_tokenizer_spec(job(str(s2_tokenizer_onnx[1]), "reconstruct", tile=192))
    tok = tasks.load_onnx_tokenizer(j, "cpu")
    m = get_modality("S2L2A")
    tiles = [SimpleNamespace(row=0, col=0), SimpleNamespace(row=3, col=1)]
    import rasterio

    raw = []
    for scene in SCENES[:2]:
        with rasterio.open(EXAMPLES / "S2L2A" / f"{scene}.tif") as src:
            raw.append(src.read().astype(np.float32))
    x = np.stack(raw)  # (2, 12, 224, 224) raw
    req = SimpleNamespace(job=j, modality=m, seed=5, timesteps=3)
    ours = tasks.onnx_reconstruct_predictor(req, tok, None, 224)(tiles, {"S2L2A": x}, NullProgress())["reconstruction"]
    assert relative_error(ours, torch_reconstruct(s2_tokenizer, m, x, tiles, 5, 3)) <= RTOL
    second_tile = torch.randn((12, 224, 224), generator=torch.Generator().manual_seed(tile_seed(5, 3, 1)))
    np.testing.assert_array_equal(tasks.tile_noise(5, tiles, (12, 224, 224), "torch")[1], second_tile.numpy())
    numpy_req = SimpleNamespace(job=job(str(s2_tokenizer_onnx[1]), "reconstruct"), modality=m, seed=5, timesteps=3)
    predict = tasks.onnx_reconstruct_predictor(numpy_req, tok, None, 224)
    first = predict(tiles, {"S2L2A": x}, NullProgress())["reconstruction"]
    again = predict(tiles, {"S2L2A": x}, NullProgress())["reconstruction"]
    np.testing.assert_array_equal(first, again)  # numpy noise: reproducible per seed and tile
    assert np.abs(first - ours).max() > 1e-3 * np.abs(ours).max()  # ... but another stream than torch's


def test_reconstruct_lulc(lulc_tokenizer, lulc_tokenizer_onnx) -> None:
    import rasterio

    j = job(str(lulc_tokenizer_onnx[0]), "reconstruct")
    with rasterio.open(EXAMPLES / "LULC" / f"{SCENES[3]}.tif") as src:
        x = src.read().astype(np.float32)[None]  # (1, 1, 224, 224) class ids as the engine reads them
    m = get_modality("LULC")
    req = SimpleNamespace(job=j, modality=m, seed=0, timesteps=10)
    tok = tasks.load_onnx_tokenizer(j, "cpu")
    ours = tasks.onnx_reconstruct_predictor(req, tok, None, 224)([SimpleNamespace(row=0, col=0)], {"LULC": x}, NullProgress())
    assert relative_error(ours["reconstruction"], torch_reconstruct(lulc_tokenizer, m, x, [], 0, 10)) <= RTOL
