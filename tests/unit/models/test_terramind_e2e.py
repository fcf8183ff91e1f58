"""End to end against terratorch 1.2.11: S2L2A → S1GRD, DEM, LULC pixels with real tokenizers.

TerraMind tiny and the three tokenizers (``models/tokenizers``, DiVAE for S1GRD and DEM, VQ-VAE for
LULC) are loaded the way users load them (``models/build.load_generation``) with the deterministic
untrained fill, exactly like the reference models in ``tools/goldens/terramind.py --e2e``. This checks the whole
chain: standardization, chained token
generation, the DiVAE start noise continuing the last step's CPU generator (S1GRD first, then DEM,
the LULC VQ-VAE drawing nothing), DDIM decoding (2 steps, 128 x 128) and de-standardization.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from terramind_qgis.models.build import load_generation
from terramind_qgis.models.core.job import ModelRequest
from testlib.tolerances import relative_error

REPO = Path(__file__).resolve().parents[3]
GOLDENS = REPO / "tests" / "goldens" / "terramind"
CASE = json.loads((GOLDENS / "cases.json").read_text()).get("tiny", {}).get("e2e")
TOKENIZER_IDS = {"S1GRD": "terramind_v1_tokenizer_s1grd", "DEM": "terramind_v1_tokenizer_dem",
                 "LULC": "terramind_v1_tokenizer_lulc"}  # fmt: skip


@pytest.mark.slow  # full-size tokenizers and ten DDIM steps
def test_generation_pixels_match_reference() -> None:
    assert CASE is not None, "the e2e golden is missing: make goldens (tools/goldens/terramind.py --e2e)"
    arrays = np.load(GOLDENS / "tiny.npz")
    (name, spec), = CASE["inputs"]
    with rasterio.open(REPO / "tests" / "data" / "examples" / name / f"{spec['scenes'][0]}.tif") as src:
        x = torch.from_numpy(src.read().astype(np.float32))[None, :, : spec["crop"][0], : spec["crop"][1]]
    outputs = CASE["outputs"]
    model = load_generation(ModelRequest("terramind_v1_tiny", untrained=True), [name], outputs)
    assert {m: model.tokenizer[model.output_mapping[m]].model_id for m in outputs} == TOKENIZER_IDS

    generated = model.generate_tokens({name: x}, seed=CASE["call_seed"])
    for modality in outputs:
        np.testing.assert_array_equal(
            generated.tokens[modality].reshape(1, -1).numpy(), arrays[f"e2e/tokens/{modality}"]
        )
    out = model.decode(generated, timesteps=CASE["timesteps"])
    assert out["S1GRD"].shape == (1, 2, 128, 128) and out["DEM"].shape == (1, 1, 128, 128)
    assert relative_error(out["S1GRD"], arrays["e2e/S1GRD"]) <= 1e-4
    assert relative_error(out["DEM"], arrays["e2e/DEM"]) <= 1e-4
    assert relative_error(out["LULC"][:, :, 40:72, 40:72], arrays["e2e/LULC_window"]) <= 1e-4
    np.testing.assert_array_equal(out["LULC"].argmax(1).numpy(), arrays["e2e/LULC_argmax"])
    # DiVAE outputs are clamped to ±1 std around the pre-training mean (terratorch 1.2.11
    # ``models/backbones/terramind/tokenizer/scheduling/scheduling_ddim.py``, ``diffusion_pipeline.py``).
    assert out["DEM"].min() >= 670.665 - 951.272 - 1e-3 and out["DEM"].max() <= 670.665 + 951.272 + 1e-3
    del model
    gc.collect()
