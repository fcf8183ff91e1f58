"""ONNX export and ONNX Runtime inference of fine-tuned segmentation models (models/backends).

The exported graphs run in ONNX Runtime (CPU) on the real example patches and are compared with
the terratorch 1.2.11 golden logits of tests/goldens/segmentation and with our torch model, to
``RTOL`` = 1e-4 relative (``max|ort - ref| / max|ref|``); argmax equal except at ties. Measured
here: 9.4e-7 (tiny, batch of 4 from a graph traced at batch 2), about 1e-6 for the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx_fixtures import CASES, GOLD, REPO, RTOL, SCENES, batch_inputs, case_inputs, load_case_model, relative_error

from terramind_qgis.models.backends.onnx_card import CARD_KEY, read_card, read_onnx_metadata
from terramind_qgis.models.backends.onnx_export import export_segmentation, main
from terramind_qgis.models.backends.onnx_runtime import OnnxSegmentationModel
from terramind_qgis.models.core.errors import CheckpointError, ConfigError, InputRasterError
from terramind_qgis.models.segmentation.checkpoint import file_sha256
from testlib.tolerances import assert_logits_match as assert_matches_golden


def test_tiny_graph_matches_the_reference_with_a_larger_batch(tiny, tiny_onnx: Path) -> None:
    model = OnnxSegmentationModel(tiny_onnx, device="cpu")
    assert model.providers[0] == "CPUExecutionProvider"
    raw = batch_inputs(tiny, "tiny_sen1floods11")  # 4 scenes; the graph was traced with batch 2
    logits = model(raw)
    assert logits.shape == (4, 2, 224, 224) and logits.dtype == np.float32
    assert_matches_golden(logits, np.load(GOLD / "tiny_sen1floods11.npz")["logits"])
    with torch.no_grad():
        ref = tiny({k: torch.from_numpy(v) for k, v in raw.items()}).numpy()
    assert relative_error(logits, ref) <= RTOL


@pytest.mark.parametrize("case", ["tiny_concat", "tiny_upernet"])
def test_other_architectures(case: str, tmp_path: Path) -> None:
    """concat merging; the UperNet decoder (its pyramid pooling is exported as matrix products).
    A non-square graph that pads and crops (200x216) is tested with the command line."""
    model = load_case_model(case, tmp_path)
    h, w = CASES[case]["logits_shape"][-2:]
    path = export_segmentation(model, tmp_path / f"{case}.onnx", tile_size=(h, w))
    logits = OnnxSegmentationModel(path, device="cpu")(batch_inputs(model, case))
    assert_matches_golden(logits, np.load(GOLD / f"{case}.npz")["logits"])


def test_nodata_is_replaced_and_standardised_like_torch(tiny, tiny_onnx: Path) -> None:
    raw = case_inputs(tiny, "tiny_sen1floods11", SCENES[1])
    raw["S2L1C"][0, :, 50:90, 100:140] = np.nan
    model = OnnxSegmentationModel(tiny_onnx, device="cpu")
    with torch.no_grad():
        ref = tiny({k: torch.from_numpy(v) for k, v in raw.items()}).numpy()
    logits = model(raw)
    assert np.isfinite(logits).all()
    assert relative_error(logits, ref) <= RTOL
    raw["S1GRD"][0, 1, :10, :] = np.inf  # ±inf → the largest finite float32, as torch.nan_to_num does
    std = model.standardize(raw)
    torch_std = tiny.standardize({k: torch.from_numpy(v) for k, v in raw.items()})
    for name in std:
        np.testing.assert_array_equal(std[name], torch_std[name].numpy())  # bit-identical float32 recipe


def test_input_errors(tiny_onnx: Path) -> None:
    model = OnnxSegmentationModel(tiny_onnx, device="cpu")
    ok = {"S2L1C": np.zeros((1, 13, 224, 224), np.float32), "S1GRD": np.zeros((1, 2, 224, 224), np.float32)}
    with pytest.raises(InputRasterError, match=r"needs input 'S1GRD' \(S1GRD, 2 bands\)"):
        model({"S2L1C": ok["S2L1C"]})
    with pytest.raises(InputRasterError, match=r"'S2L1C' must be \(B, 13, H, W\)"):
        model({**ok, "S2L1C": ok["S2L1C"][:, :12]})
    with pytest.raises(ConfigError, match="exported for 224x224 tiles; input 'S2L1C' is 256x256: use tile size 224"):
        model({k: np.zeros((1, v.shape[1], 256, 256), np.float32) for k, v in ok.items()})


def test_card_round_trip(tiny, tiny_onnx: Path) -> None:
    import onnx

    proto = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(proto)  # the card appended to the exporter's bytes leaves a valid model
    assert proto.producer_name == "terramind_qgis" and len(proto.metadata_props) == 1
    props = {p.key: p.value for p in proto.metadata_props}
    assert read_onnx_metadata(tiny_onnx) == props  # our protobuf reader agrees with the onnx package
    card = read_card(tiny_onnx)
    assert json.loads(props[CARD_KEY]) == card
    assert card["graph"] == "segmentation" and card["opset"] == 17 and card["tile_size"] == [224, 224]
    assert [i["name"] for i in card["inputs"]] == ["S2L1C", "S1GRD"]
    assert card["inputs"][1]["bands"] == list(tiny.config.inputs[1].bands)
    assert card["inputs"][0]["mean"][0] == pytest.approx(2357.089)
    assert [c["name"] for c in card["classes"]] == ["Others", "Flood"]
    version = next(line.split("=", 1)[1].strip() for line in (REPO / "metadata.txt").read_text().splitlines()
                   if line.startswith("version="))  # fmt: skip
    assert card["plugin_version"] == version
    assert card["source"]["sha256"] == file_sha256(tiny.provenance.checkpoint)
    assert card["export_check"]["logits"] <= RTOL
    loaded = OnnxSegmentationModel(tiny_onnx, device="cpu")
    assert loaded.config == tiny.config and loaded.classes == tiny.classes
    assert loaded.provenance.model_id == tiny.provenance.model_id and loaded.provenance.format == "onnx"


def _with_metadata(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001
    import onnx

    model = onnx.load(str(src))
    card = json.loads(model.metadata_props[0].value)
    edit(card)
    model.metadata_props[0].value = json.dumps(card)
    onnx.save(model, str(dst))
    return dst


def test_foreign_and_wrong_files_are_checkpoint_errors(tiny_onnx: Path, s2_tokenizer_onnx, tmp_path: Path) -> None:
    plain = tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter says it is legacy
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(plain), dynamo=False)
    with pytest.raises(CheckpointError, match="ONNX file without a TerraMind model card"):
        OnnxSegmentationModel(plain)
    with pytest.raises(CheckpointError, match="is a 'tokenizer_encoder' graph; expected 'segmentation'"):
        OnnxSegmentationModel(s2_tokenizer_onnx[0])
    renamed = _with_metadata(tiny_onnx, tmp_path / "renamed.onnx", lambda c: c["inputs"][0].update(name="S2L2A"))
    with pytest.raises(CheckpointError, match="does not describe its graph"):
        OnnxSegmentationModel(renamed)
    future = _with_metadata(tiny_onnx, tmp_path / "future.onnx", lambda c: c.update(format_version=2))
    with pytest.raises(CheckpointError, match="format_version 2"):
        OnnxSegmentationModel(future)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(tiny_onnx.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="not an ONNX model file"):
        OnnxSegmentationModel(truncated)
    text = tmp_path / "notes.onnx"
    text.write_text("hello, this is not a model\n")
    with pytest.raises(CheckpointError):
        OnnxSegmentationModel(text)
    with pytest.raises(CheckpointError, match="does not exist"):
        OnnxSegmentationModel(tmp_path / "missing.onnx")


def test_tim_models_are_refused() -> None:
    import yaml

    from terramind_qgis.models.segmentation.config import config_from_yaml_dict
    from terramind_qgis.models.segmentation.model import Provenance, SegmentationModel, build_pixel_wise_model

    cfg = yaml.safe_load((GOLD / CASES["tiny_sen1floods11"]["config"]).read_text())
    cfg["model"]["init_args"]["model_args"]["backbone"] = "terramind_v1_tiny_tim"
    config = config_from_yaml_dict(cfg)
    with torch.device("meta"):
        model = SegmentationModel(build_pixel_wise_model(config), config, (), Provenance("x.ckpt", None, "lightning", "tim"))
    with pytest.raises(ConfigError, match="TiM model: it samples tokens at random"):
        export_segmentation(model, "/nonexistent/never_written.onnx")


def _run_blocked(blocked: list[str], code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python where importing each of ``blocked`` fails."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
    prelude += f"sys.path.insert(0, {str(REPO / '.pluginpath')!r})\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120)


def test_without_onnxruntime_a_backend_unavailable_error(tiny_onnx: Path) -> None:
    code = (
        "from terramind_qgis.models.backends.onnx_runtime import OnnxSegmentationModel\n"
        "from terramind_qgis.models.core.errors import BackendUnavailableError\n"
        "try:\n"
        f"    OnnxSegmentationModel({str(tiny_onnx)!r})\n"
        "except BackendUnavailableError as e:\n"
        "    print('BackendUnavailableError:', e)\n"
    )
    result = _run_blocked(["onnxruntime"], code)
    assert result.returncode == 0, result.stderr
    assert "BackendUnavailableError: onnxruntime is not installed in the worker's Python" in result.stdout
    assert "pip install onnxruntime" in result.stdout


def test_the_onnx_runtime_path_runs_without_torch(tiny, tiny_onnx: Path, tmp_path: Path) -> None:
    raw = case_inputs(tiny, "tiny_sen1floods11", SCENES[2])
    np.savez(tmp_path / "raw.npz", **raw)
    code = (
        "import numpy as np\n"
        "from terramind_qgis.models.backends.onnx_runtime import OnnxSegmentationModel\n"
        f"raw = dict(np.load({str(tmp_path / 'raw.npz')!r}))\n"
        f"np.save({str(tmp_path / 'logits.npy')!r}, OnnxSegmentationModel({str(tiny_onnx)!r}, device='cpu')(raw))\n"
        "assert not [m for m in sys.modules if m.startswith('torch') and sys.modules[m] is not None]\n"
    )
    result = _run_blocked(["torch"], code)
    assert result.returncode == 0, result.stderr
    ref = np.load(GOLD / "tiny_sen1floods11.npz")["logits"][2:3]
    assert relative_error(np.load(tmp_path / "logits.npy"), ref) <= RTOL


def test_command_line(tmp_path: Path) -> None:
    model = load_case_model("tiny_sen1floods11", tmp_path)
    out = tmp_path / "cli" / "flood.onnx"
    args = ["segmentation", model.provenance.checkpoint, "--config", str(GOLD / CASES["tiny_sen1floods11"]["config"])]
    assert main([*args, "--out", str(out), "--tile-size", "200", "216", "--id", "flood", "--classes", "1: Water #0000FF"]) == 0
    card = read_card(out)
    assert card["model_id"] == "flood" and card["tile_size"] == [200, 216]
    assert card["classes"][1] == {"value": 1, "name": "Water", "color": "#0000FF"}
    raw = case_inputs(model, "tiny_sen1floods11_crop200x216", CASES["tiny_sen1floods11_crop200x216"]["scenes"][0])
    logits = OnnxSegmentationModel(out, device="cpu")(raw)  # reflect-padded to 224x224 inside, then cropped
    assert_matches_golden(logits, np.load(GOLD / "tiny_sen1floods11_crop200x216.npz")["logits"])
    assert main(["segmentation", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x.onnx")]) == 1
    assert not (tmp_path / "x.onnx").exists()
