"""Export model to ONNX, in QGIS: the tiny golden segmentation model and a test tokenizer, each then run
through the plugin's own algorithms (ONNX Runtime in the worker) and compared with the torch run.

The segmentation checkpoint is written by the worker interpreter (this QGIS-side process never
imports torch), as in test_segment_finetuned.py. S1RTC patches stand in for S1GRD.
"""

from __future__ import annotations

import json

import numpy as np
import processing
import pytest
from qgis.core import QgsApplication, QgsProcessingException
from tm_helpers import REPO, raster_facts, read_array

ALG = "terramind:exportonnx"
SEGMENT = "terramind:segmentwithfinetunedmodel"
CONFIG = REPO / "tests" / "goldens" / "segmentation" / "configs" / "tiny_sen1floods11.yaml"
RTOL = 1e-4


def test_parameter_keys(terramind_provider):
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    assert [p.name() for p in alg.parameterDefinitions()] == [
        "MODEL_FILE", "CONFIG", "CLASSES", "MODEL", "WEIGHTS", "UNTRAINED", "TILE_SIZE", "OUTPUT"]
    assert [o.name() for o in alg.outputDefinitions()] == ["OUTPUT", "DECODER", "MAX_DEVIATION", "EXPORT_CHECK"]
    assert alg.group() == "Environment" and alg.shortHelpString()
    assert "test_tokenizer_dem" in alg.parameterDefinition("MODEL").options()


def test_exported_segmentation_model_segments_like_the_checkpoint(terramind_provider, flood_ckpt, example, tmp_path,
                                                                  recording_feedback):
    feedback = recording_feedback()
    onnx_path = tmp_path / "flood_tiny.onnx"
    result = processing.run(ALG, {"MODEL_FILE": flood_ckpt, "CONFIG": str(CONFIG), "TILE_SIZE": 224,
                                  "OUTPUT": str(onnx_path)}, feedback=feedback)  # fmt: skip
    assert result["OUTPUT"] == str(onnx_path) and onnx_path.is_file() and result["DECODER"] is None
    check = json.loads(result["EXPORT_CHECK"])
    assert set(check) == {"model"} and result["MAX_DEVIATION"] == check["model"]["logits"] <= RTOL
    assert any("Largest relative deviation of ONNX Runtime from PyTorch" in m for m in feedback.infos)

    def segment(model_file: str, name: str, **extra) -> dict:
        return processing.run(SEGMENT, {"MODEL_FILE": model_file, "INPUT_S2L1C": example("S2L1C"),
                                        "INPUT_S1GRD": example("S1RTC"), "OUTPUT": str(tmp_path / f"{name}.tif"),
                                        "OUTPUT_PROBABILITIES": str(tmp_path / f"{name}_prob.tif"), "DEVICE": "cpu",
                                        **extra})  # fmt: skip

    torch_run = segment(flood_ckpt, "torch", CONFIG=str(CONFIG))
    onnx_run = segment(str(onnx_path), "onnx")
    assert raster_facts(onnx_run["OUTPUT"])["categories"][:2] == ["Others", "Flood"]
    p_torch, p_onnx = read_array(torch_run["OUTPUT_PROBABILITIES"]), read_array(onnx_run["OUTPUT_PROBABILITIES"])
    assert np.abs(p_onnx - p_torch).max() <= RTOL
    decided = np.abs(p_torch[0] - p_torch[1]) >= RTOL
    assert np.array_equal(read_array(onnx_run["OUTPUT"])[decided], read_array(torch_run["OUTPUT"])[decided])


def test_exported_tokenizer_pair_reconstructs(terramind_provider, example, tmp_path):
    out = tmp_path / "exports" / "dem.onnx"
    result = processing.run(ALG, {"MODEL": "test_tokenizer_dem", "UNTRAINED": True, "TILE_SIZE": 64, "OUTPUT": str(out)})
    decoder = tmp_path / "exports" / "dem.decoder.onnx"
    assert (result["OUTPUT"], result["DECODER"]) == (str(out), str(decoder)) and decoder.is_file()
    assert set(json.loads(result["EXPORT_CHECK"])) == {"model", "decoder"} and result["MAX_DEVIATION"] <= RTOL
    rec = processing.run("terramind:reconstructwithtokenizer", {
        "INPUT": example("DEM"), "MODALITY": "DEM", "WEIGHTS": str(out), "TIMESTEPS": 2, "TILE_SIZE": 64,
        "OVERLAP": 16, "OUTPUT": str(tmp_path / "rec.tif"), "DEVICE": "cpu"})  # fmt: skip
    facts = raster_facts(rec["OUTPUT"])
    assert facts["size"] == raster_facts(example("DEM"))["size"]
    assert json.loads(facts["tags"]["TERRAMIND_WEIGHTS_SOURCE"])["model"] == str(out)
    assert np.isfinite(read_array(rec["OUTPUT"])).all() and rec["PSNR_MEAN"] is not None


def test_parameter_errors_name_the_parameter(terramind_provider, flood_ckpt, tmp_path):
    out = str(tmp_path / "m.onnx")
    cases = [
        ({"OUTPUT": out}, "give either MODEL_FILE .* or MODEL .*, one of them"),
        ({"MODEL_FILE": flood_ckpt, "MODEL": "test_tokenizer_dem", "OUTPUT": out}, "not both"),
        ({"MODEL_FILE": flood_ckpt, "OUTPUT": str(tmp_path / "m.tif")},
         r"OUTPUT: '.*m\.tif' must be a file name ending in \.onnx"),
        ({"MODEL_FILE": flood_ckpt, "UNTRAINED": True, "OUTPUT": out}, "WEIGHTS and UNTRAINED are for tokenizers"),
        ({"MODEL": "test_tokenizer_dem", "OUTPUT": out}, "'test_tokenizer_dem' has no published weights"),
        ({"MODEL": "test_tokenizer_dem", "UNTRAINED": True, "TILE_SIZE": 48, "OUTPUT": out},
         "TILE_SIZE: must be a multiple of 32"),
        ({"MODEL": "test_tokenizer_dem", "UNTRAINED": True, "CONFIG": str(CONFIG), "OUTPUT": out},
         "leave them empty for a tokenizer"),
    ]  # fmt: skip
    for parameters, message in cases:
        with pytest.raises(QgsProcessingException, match=message):
            processing.run(ALG, parameters)
    assert not list(tmp_path.glob("m.*"))
