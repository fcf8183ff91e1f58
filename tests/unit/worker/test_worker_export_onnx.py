"""Task ``export_onnx``: the golden tiny segmentation model and a test tokenizer to ``.onnx``, then run.

The segmentation model is the tiny Sen1Floods11 golden case (tests/goldens/segmentation: its
checkpoint layout filled by the deterministic rule, saved as a state dict, with the case's YAML);
the tokenizer is the reduced DEM test tokenizer with ``untrained=True``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from worker_fixtures import CATALOGUE, EXAMPLES, REPO, run_worker, write_job

from terramind_qgis.models.backends.onnx_card import read_card
from terramind_qgis.models.backends.onnx_runtime import OnnxSegmentationModel, OnnxTokenizer
from terramind_qgis.models.build import load_tokenizer
from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.core.job import Job, ModelRequest, onnx_decoder_path
from terramind_qgis.models.runtime.device import select_device
from terramind_qgis.models.segmentation.checkpoint import load_segmentation_model
from terramind_qgis.models.weights.untrained import deterministic_state_dict
from terramind_qgis.models.worker.tasks import TASKS
from terramind_qgis.models.worker.tasks.context import RunContext
from testlib.errors import refused
from testlib.progress import RecordingProgress
from testlib.tasks import run_task, validate

GOLD = REPO / "tests" / "goldens" / "segmentation"
CONFIG = GOLD / "configs" / "tiny_sen1floods11.yaml"
RTOL = 1e-4


@pytest.fixture(scope="module")
def flood_state_dict(tmp_path_factory) -> Path:
    """The tiny Sen1Floods11 golden model as a plain state dict (needs CONFIG)."""
    layout = json.loads((GOLD / "tiny_sen1floods11.layout.json").read_text())
    shapes = {k: (tuple(s), getattr(torch, d)) for k, (s, d) in layout["tensors"].items()}
    tensors = deterministic_state_dict(shapes)
    path = tmp_path_factory.mktemp("flood") / "flood_tiny.pt"
    torch.save({k: tensors[layout["aliases"].get(k, k)] for k in tensors}, path)
    return path




def export(job: dict, progress=None) -> dict:
    return run_task({"task": "export_onnx", "device": "cpu", **job}, progress)


def raw_inputs(scene: str = "282D_485L_3_3", size: int = 160) -> dict[str, np.ndarray]:
    """The model's raw inputs ``{name: (1, C, size, size)}`` (S1RTC stands in for S1GRD)."""
    out = {}
    for name, folder in (("S2L1C", "S2L1C"), ("S1GRD", "S1RTC")):
        with rasterio.open(EXAMPLES / folder / f"{scene}.tif") as src:
            out[name] = src.read().astype(np.float32)[None, :, :size, :size]  # (1, C, size, size)
    return out


def test_segmentation_model_exports_for_the_tile_size_and_matches_torch(flood_state_dict, tmp_path):
    out = tmp_path / "exports" / "flood.onnx"
    progress = RecordingProgress()
    result = export({"model": {"id": "my_flood_model", "weights": str(flood_state_dict)},
                     "outputs": {"model": str(out)}, "tiling": {"tile_size": 160},
                     "params": {"config": str(CONFIG), "classes": "0: Dry #FFFFFF; 1: Wet #0000FF"}}, progress)  # fmt: skip
    card = read_card(out)
    assert result["outputs"] == {"model": str(out)}
    assert (card["graph"], card["model_id"], card["tile_size"]) == ("segmentation", "my_flood_model", [160, 160])
    assert [(c["name"], c["color"]) for c in card["classes"]] == [("Dry", "#FFFFFF"), ("Wet", "#0000FF")]
    assert card["source"]["checkpoint"] == str(flood_state_dict)
    assert card["source"]["sha256"] == hashlib.sha256(flood_state_dict.read_bytes()).hexdigest()
    metrics = result["metrics"]
    assert (metrics["kind"], metrics["model_id"], metrics["tile_size"]) == ("segmentation", "my_flood_model", 160)
    assert metrics["export_check"] == {"model": card["export_check"]}
    assert metrics["max_relative_deviation"] == card["export_check"]["logits"] <= RTOL
    assert metrics["bytes"] == {"model": out.stat().st_size}
    assert any("flood.onnx (segmentation): ONNX Runtime vs torch: logits" in m for m in progress.infos)
    assert not progress.warnings
    # the exported file computes what the checkpoint computes, on real patches
    x = raw_inputs()
    ours = OnnxSegmentationModel(out, device="cpu")(x)  # (1, 2, 160, 160)
    with torch.no_grad():
        ref = load_segmentation_model(flood_state_dict, CONFIG)({k: torch.from_numpy(v) for k, v in x.items()}).numpy()
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= RTOL


def test_tokenizer_export_through_the_worker_writes_the_pair(tmp_path):
    out = tmp_path / "dem.onnx"
    path = write_job(tmp_path, {"protocol": 1, "task": "export_onnx", "inputs": {}, "outputs": {"model": str(out)},
                                "model": {"id": "test_tokenizer_dem", "untrained": True, "catalogue_paths": [str(CATALOGUE)]},
                                "tiling": {"tile_size": 64, "overlap": 0}, "device": "cpu"})  # fmt: skip
    code, events, stderr = run_worker(path, timeout=300)
    assert code == 0, stderr
    result = events[-1]
    decoder = tmp_path / "dem.decoder.onnx"
    assert result["event"] == "result" and result["outputs"] == {"model": str(out), "decoder": str(decoder)}
    enc, dec = read_card(out), read_card(decoder)
    assert (enc["graph"], dec["graph"]) == ("tokenizer_encoder", "divae_denoiser")
    assert (enc["companion"], dec["companion"]) == ("dem.decoder.onnx", "dem.onnx")
    assert enc["image_size"] == [64, 64] and enc["model_id"] == "test_tokenizer_dem"
    assert result["metrics"]["export_check"] == {"model": enc["export_check"], "decoder": dec["export_check"]}
    assert result["metrics"]["max_relative_deviation"] == max(enc["export_check"]["latents"],
                                                              enc["export_check"]["quant"], dec["export_check"]["x0"])
    assert result["metrics"]["max_relative_deviation"] <= RTOL
    messages = [e["message"] for e in events if e["event"] == "info"]
    assert any("exporting the decoder graph" in m for m in messages)
    # the pair runs from either file and tokenizes like the torch tokenizer
    catalogue.load_cards(CATALOGUE)
    x = np.random.default_rng(0).standard_normal((2, 1, 64, 64), dtype=np.float32)
    with torch.no_grad():
        ref = load_tokenizer(ModelRequest("test_tokenizer_dem", untrained=True)).tokenize(torch.from_numpy(x)).numpy()
    for given in (out, decoder):
        assert (OnnxTokenizer(given, device="cpu").tokenize(x) == ref).all()


def test_decoder_path_rule():
    assert onnx_decoder_path("/a/dem.onnx") == "/a/dem.decoder.onnx"
    assert onnx_decoder_path("/a/dem.encoder.onnx") == "/a/dem.decoder.onnx"
    assert onnx_decoder_path("/a/DEM.ONNX") == "/a/DEM.decoder.onnx"


def test_bad_export_jobs_are_refused_before_loading(flood_state_dict, tmp_path):
    def check(**job):
        base = {"task": "export_onnx", "model": {"id": "x", "weights": str(flood_state_dict)},
                "outputs": {"model": str(tmp_path / "m.onnx")}, "params": {"config": str(CONFIG)}, "device": "cpu"}  # fmt: skip
        return validate({**base, **job})

    assert check().kind == "segmentation"
    with pytest.raises(ConfigError, match="TiM model: it samples tokens at random"):
        check(params={"config": str(GOLD / "configs" / "base_tim_lulc_sen1floods11.yaml")})
    with pytest.raises(ConfigError, match="precision must be 'fp32', got 'bf16'"):
        check(precision="bf16")
    with refused(r"outputs.model: '.*m\.tif' must be a file name ending in \.onnx"):
        check(outputs={"model": str(tmp_path / "m.tif")})
    with pytest.raises(ConfigError, match="'untrained' is for tokenizers"):
        check(model={"id": "x", "weights": str(flood_state_dict), "untrained": True})
    with pytest.raises(ConfigError, match="parameter 'kind' must be one of segmentation, tokenizer"):
        check(params={"config": str(CONFIG), "kind": "backbone"})
    tokenizer = {"id": "test_tokenizer_dem", "catalogue_paths": [str(CATALOGUE)]}
    with pytest.raises(ConfigError, match="'test_tokenizer_dem' has no published weights"):
        check(model=tokenizer)
    with pytest.raises(ConfigError, match="weights path '.*missing.pt' for model 'test_tokenizer_dem' does not exist"):
        check(model={**tokenizer, "weights": str(tmp_path / "missing.pt")})
    with pytest.raises(ConfigError, match="must be another file in the folder of output 'model'"):
        check(model={**tokenizer, "untrained": True},
                 outputs={"model": str(tmp_path / "m.onnx"), "decoder": str(tmp_path / "sub" / "d.onnx")})
    with refused("tiling.tile_size: must be a multiple of 32"):
        check(model={**tokenizer, "untrained": True}, tiling={"tile_size": 48, "overlap": 0})
    with pytest.raises(ConfigError, match="'test_terramind_tiny' is a terramind model"):
        check(model={"id": "test_terramind_tiny", "untrained": True, "catalogue_paths": [str(CATALOGUE)]},
                 params={"kind": "tokenizer"})


def test_a_failed_tokenizer_export_keeps_the_earlier_pair(tmp_path, monkeypatch):
    """The decoder graph fails after the encoder graph was written: the files of an earlier export stay
    as they were, and no staging folder is left."""
    from terramind_qgis.models.backends import onnx_export
    from terramind_qgis.models.worker.events import EventStream, WorkerProgress

    out, decoder = tmp_path / "dem.onnx", tmp_path / "dem.decoder.onnx"
    out.write_bytes(b"earlier encoder")
    decoder.write_bytes(b"earlier decoder")

    class Broken(torch.nn.Module):
        def __init__(self, tokenizer):
            raise RuntimeError("decoder export failed")

    monkeypatch.setattr(onnx_export, "DenoiserGraph", Broken)
    job = Job.from_dict({"task": "export_onnx", "outputs": {"model": str(out)}, "device": "cpu",
                         "model": {"id": "test_tokenizer_dem", "untrained": True, "catalogue_paths": [str(CATALOGUE)]},
                         "tiling": {"tile_size": 64, "overlap": 0}})  # fmt: skip
    entry = TASKS["export_onnx"]
    req = entry.validate(job, "torch")
    ctx = RunContext(WorkerProgress(EventStream(open(tmp_path / "events.jsonl", "w"))), select_device("cpu", "fp32"))
    with pytest.raises(RuntimeError, match="decoder export failed"):
        entry.run(req, ctx)
    assert out.read_bytes() == b"earlier encoder" and decoder.read_bytes() == b"earlier decoder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dem.decoder.onnx", "dem.onnx", "events.jsonl"]
