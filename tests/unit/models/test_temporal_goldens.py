"""Multi-temporal fine-tuned models against terratorch 1.2.11 goldens (tools/goldens/temporal.py).

The ImpactMesh flood/fire configs (S2L2A + S1RTC + DEM over four dates, ``TemporalWrapper`` with
``concat`` pooling, UNet) and a tiny variant of the multi-temporal crop config (one modality, a
band subset, three dates). Each case's checkpoint is re-made as ``ModelCheckpoint(
save_weights_only=True)`` writes it: the non-weight contents of a real ``terratorch fit``
(``weights_only_extras.pt``), the golden layout filled by the untrained rule, the case's
``model_args``; it is loaded by ``load_segmentation_model`` with the case's YAML (strict) and run
on raw 4-date inputs cut from ``temporal_fixtures.tiled_inputs()`` (NaN nodata included; the DEM
given once and repeated by the model). Logits must match within 1e-4 relative (max |ours - ref|
/ max |ref|), the argmax exactly except at ties.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import yaml
from temporal_fixtures import TILED_SIZE, array_sha256, tiled_inputs

from terramind_qgis.models.core.errors import InputRasterError
from terramind_qgis.models.segmentation.checkpoint import load_segmentation_model
from terramind_qgis.models.segmentation.config import config_from_yaml_dict
from terramind_qgis.models.segmentation.model import SegmentationModel, build_pixel_wise_model
from terramind_qgis.models.weights.untrained import deterministic_state_dict
from testlib.tolerances import assert_logits_match as assert_matches

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOLD = Path(__file__).resolve().parents[3] / "tests" / "goldens" / "temporal"
META = json.loads((GOLD / "goldens.json").read_text())
CASES = META["cases"]
HLS_BANDS = [1, 2, 3, 8, 10, 11]  # 0-based S2L2A bands BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2
BIG = {"base_impactmesh_flood", "base_impactmesh_fire"}


def case_yaml(case: str) -> dict:
    return yaml.safe_load((GOLD / CASES[case]["config"]).read_text())


def filled_state_dict(case: str) -> dict[str, torch.Tensor]:
    layout = json.loads((GOLD / CASES[case]["layout"]).read_text())["tensors"]
    return deterministic_state_dict({k: (tuple(s), getattr(torch, d)) for k, (s, d) in layout.items()})


def write_checkpoint(path: Path, case: str, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """A weights-only Lightning checkpoint: a real fit's extra contents + the case's weights and task args."""
    ckpt = torch.load(GOLD / "weights_only_extras.pt", weights_only=True)
    init_args = case_yaml(case)["model"]["init_args"]
    ckpt["hyper_parameters"]["model_args"] = init_args["model_args"]
    ckpt["hyper_parameters"]["tiled_inference_parameters"] = init_args.get("tiled_inference_parameters")
    ckpt["state_dict"] = state_dict if state_dict is not None else filled_state_dict(case)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def raw_dates() -> dict[str, np.ndarray]:
    return tiled_inputs()


def case_inputs(raw: dict[str, np.ndarray], case: str, window: tuple[int, int, int, int] | None = None) -> dict:
    """Raw ``(1, C, T, h, w)`` inputs of a case (the one-date DEM stays one date)."""
    r, c, h, w = window or CASES[case]["window"]
    dates = CASES[case]["dates"]
    out = {}
    for name in case_yaml(case)["model"]["init_args"]["model_args"]["backbone_modalities"]:
        a = raw[name][:dates, :, r : r + h, c : c + w]  # (T, C, h, w)
        if "crop" in case:
            a = a[:, HLS_BANDS]
        out[name] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, 0, 1)))[None]  # (1, C, T, h, w)
    return out




@pytest.fixture(scope="module")
def tiny_flood(tmp_path_factory) -> tuple[Path, SegmentationModel]:
    path = write_checkpoint(tmp_path_factory.mktemp("flood") / "best_val_loss.ckpt", "tiny_impactmesh_flood")
    return path, load_segmentation_model(path, GOLD / CASES["tiny_impactmesh_flood"]["config"])


def test_the_tiled_input_is_rebuilt_exactly(raw_dates) -> None:
    assert {k: array_sha256(v) for k, v in raw_dates.items()} == META["tiled_input_sha256"]
    assert raw_dates["S2L2A"].shape == (4, 12, TILED_SIZE, TILED_SIZE) and raw_dates["DEM"].shape == (1, 1, 480, 480)
    r, c, h, w = CASES["tiny_impactmesh_flood"]["window"]
    assert np.isnan(raw_dates["S2L2A"][3, :, r : r + h, c : c + w]).any()  # the flood case sees nodata


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in BIG else c for c in CASES])
def test_logits_match_reference(case: str, tmp_path: Path, raw_dates, tiny_flood) -> None:
    if case == "tiny_impactmesh_flood":
        model = tiny_flood[1]
    else:
        model = load_segmentation_model(write_checkpoint(tmp_path / f"{case}.ckpt", case), GOLD / CASES[case]["config"])
    assert model.config.temporal is not None and model.net.training is False
    with torch.no_grad():
        ours = model(case_inputs(raw_dates, case)).numpy()
    assert_matches(ours, np.load(GOLD / f"{case}.npz")["logits"])


@pytest.mark.parametrize("case", list(CASES))
def test_model_layout_equals_the_lightning_checkpoint(case: str) -> None:
    """Every key and shape of terratorch's ``state_dict`` (``model.`` stripped) is in our model, and nothing else."""
    cfg = config_from_yaml_dict(case_yaml(case))
    with torch.device("meta"):
        net = build_pixel_wise_model(cfg)
    ours = {k: list(v.shape) for k, v in net.state_dict(keep_vars=True).items()}
    layout = json.loads((GOLD / CASES[case]["layout"]).read_text())["tensors"]
    assert ours == {k.removeprefix("model."): s for k, (s, _) in layout.items() if k.startswith("model.")}
    assert any(k.startswith("model.encoder.encoder.encoder_embeddings.") for k in layout)  # the wrapper's level


def test_plain_state_dicts_with_yaml(tmp_path: Path, raw_dates, tiny_flood) -> None:
    """``torch.save(task.state_dict())`` (``model.`` prefixes, task state) and of ``task.model``: same logits."""
    sd = {**filled_state_dict("tiny_impactmesh_flood"), "criterion.weight": torch.tensor([0.342, 1.316])}  # CE loss state
    x = case_inputs(raw_dates, "tiny_impactmesh_flood", (0, 256, 64, 96))
    with torch.no_grad():
        expected = tiny_flood[1](x)
    for name, tensors in (("task.pt", sd), ("model.pt", {k.removeprefix("model."): v for k, v in sd.items()
                                                          if k.startswith("model.")})):  # fmt: skip
        torch.save(tensors, tmp_path / name)
        model = load_segmentation_model(tmp_path / name, GOLD / CASES["tiny_impactmesh_flood"]["config"])
        assert model.provenance.format == "state_dict"
        with torch.no_grad():
            assert torch.equal(model(x), expected)


def test_checkpoint_alone_describes_the_temporal_model(tiny_flood) -> None:
    """Without the YAML the hyper_parameters give the architecture, dates and tiling, not the data statistics."""
    alone = load_segmentation_model(tiny_flood[0])
    with_yaml = tiny_flood[1].config
    assert alone.config.tiled_inference == with_yaml.tiled_inference
    # the data module (which repeats a one-date DEM) is only named in the YAML
    assert alone.config.temporal == dataclasses.replace(with_yaml.temporal, repeat_single_date=False)
    assert alone.config.inputs[0].mean != with_yaml.inputs[0].mean
    assert any("pre-training statistics" in n for n in alone.config.notes)
    assert any("ImpactMesh data module's flood" in n for n in with_yaml.notes)


def test_model_card_round_trip(tmp_path: Path, raw_dates, tiny_flood) -> None:
    """The plugin's own export (card + safetensors) keeps the temporal settings and the tiling."""
    from terramind_qgis.models.segmentation.export import export_model

    card = export_model(tiny_flood[1], tmp_path, "impactmesh_flood_tiny")
    stored = json.loads(card.read_text())["config"]
    assert stored["temporal"]["pooling"] == "concat" and stored["tiled_inference"]["stride"] == 208
    loaded = load_segmentation_model(card)
    assert loaded.config == tiny_flood[1].config
    x = case_inputs(raw_dates, "tiny_impactmesh_flood", (300, 300, 64, 64))
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny_flood[1](x))


def test_single_date_dem_is_repeated_over_the_dates(raw_dates, tiny_flood) -> None:
    model = tiny_flood[1]
    x = case_inputs(raw_dates, "tiny_impactmesh_flood", (100, 100, 64, 64))
    assert x["DEM"].shape[2] == 1
    repeated = {**x, "DEM": x["DEM"].expand(-1, -1, 4, -1, -1)}
    changed = {**x, "DEM": torch.cat([x["DEM"]] * 3 + [x["DEM"] + 50.0], dim=2)}
    with torch.no_grad():
        once, four, other = model(x), model(repeated), model(changed)
    assert torch.equal(once, four)
    assert (other - once).abs().max() > 1e-3 * once.abs().max()  # every date of the DEM is read


def test_inputs_with_the_wrong_dates_or_layout(raw_dates, tiny_flood) -> None:
    model = tiny_flood[1]
    x = case_inputs(raw_dates, "tiny_impactmesh_flood", (0, 0, 32, 32))
    assert model.config.input_shape("S1RTC") == ("B", 2, 4, "H", "W") and model.config.input_layout == "BCTHW"
    with pytest.raises(InputRasterError, match=r"needs 4 dates in every input .*'S2L2A': 3, 'S1RTC': 4, 'DEM': 1"):
        model({**x, "S2L2A": x["S2L2A"][:, :, :3]})
    with pytest.raises(InputRasterError, match=r"input 'S1RTC' must be \(B, 2, 4, H, W\) \(VV, VH\), got \(1, 2, 32, 32\)"):
        model({**x, "S1RTC": x["S1RTC"][:, :, 0]})


# ---- tiled inference -------------------------------------------------------------------------------------------


def blend_mask(crop: int, stride: int, delta: int) -> torch.Tensor:
    """``get_blend_mask`` of terratorch/tasks/tiled_inference.py (square chips): cosine ramps + 1e-6."""
    overlap = min(crop // 2, crop - stride) - delta
    ramp = torch.cos(math.pi * (torch.arange(overlap) + 1) / (overlap + 1)) / 2 + 0.5
    axis = torch.ones(crop - 2 * delta)
    axis[:overlap], axis[-overlap:] = ramp.flip(0), ramp
    return axis[:, None] * axis[None, :] + 1e-6  # (crop - 2δ, crop - 2δ)


def reference_tiling(model: SegmentationModel, x: dict[str, torch.Tensor], crop: int, stride: int, delta: int) -> np.ndarray:
    """terratorch's ``tiled_inference`` (reflect padding, blending, averaging) around our model.

    The input is reflect-padded by ``delta``; chips of ``crop`` start every ``stride`` pixels plus
    one flush with the far edge; each chip's logits lose a ``delta`` border, are weighted by the
    blend mask, summed, divided by the summed weights and cropped back to the input.
    """
    padded = {k: F.pad(v, (delta, delta, delta, delta, 0, 0), mode="reflect") for k, v in x.items()}
    h, w = next(iter(padded.values())).shape[-2:]
    origins = lambda n: sorted(set(range(0, n - crop - 1, stride)) | {n - crop})  # noqa: E731
    mask = blend_mask(crop, stride, delta)
    total, weight = None, torch.zeros(h, w)
    chips = [(r, c) for r in origins(h) for c in origins(w)]
    with torch.no_grad():
        logits = model({k: torch.cat([v[..., r : r + crop, c : c + crop] for r, c in chips]) for k, v in padded.items()})
    inner = slice(delta, crop - delta)
    for (r, c), out in zip(chips, logits):
        if total is None:
            total = torch.zeros(out.shape[0], h, w)
        total[:, r + delta : r + crop - delta, c + delta : c + crop - delta] += out[:, inner, inner] * mask
        weight[r + delta : r + crop - delta, c + delta : c + crop - delta] += mask
    return (total / weight)[None, :, delta:-delta, delta:-delta].numpy()  # (1, K, H, W)


def test_tiled_inference_reference(raw_dates, tiny_flood) -> None:
    """The stored tiled golden (for the worker-level test) is what terratorch's tiling of this model gives."""
    params = META["tiled"]["parameters"]
    spec = tiny_flood[1].config.tiled_inference
    assert (spec.tile, spec.strides, spec.effective_delta, spec.batch_size) == ((256, 256), (208, 208), 8, 64)
    assert params == {"crop": 256, "stride": 208, "batch_size": 64, "delta": 8}
    x = case_inputs(raw_dates, "tiny_impactmesh_flood", (0, 0, TILED_SIZE, TILED_SIZE))
    ours = reference_tiling(tiny_flood[1], x, spec.tile[0], spec.strides[0], spec.effective_delta)
    assert_matches(ours, np.load(GOLD / "tiled_impactmesh_flood.npz")["output"])


@pytest.mark.slow
def test_onnx_export_of_a_multi_temporal_model(tiny_flood) -> None:
    """``torch.onnx.export`` (TorchScript) of the 4-date model runs in ONNX Runtime like torch, any batch size."""
    import io

    import onnxruntime as ort

    net, names = tiny_flood[1].net, tiny_flood[1].input_names
    specs = tiny_flood[1].config.inputs

    class Graph(torch.nn.Module):  # one positional (B, C, T, H, W) tensor per input
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, *xs: torch.Tensor) -> torch.Tensor:
            return self.net(dict(zip(names, xs)))

    example = lambda b: tuple(torch.randn(b, len(s.bands), 4, 64, 64) for s in specs)  # noqa: E731
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(Graph().eval(), example(2), buffer, input_names=names, output_names=["logits"],
                          dynamic_axes={n: {0: "batch"} for n in [*names, "logits"]}, opset_version=17, dynamo=False)  # fmt: skip
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for batch in (2, 1):
        xs = example(batch)
        with torch.no_grad():
            ref = Graph()(*xs).numpy()
        got = session.run(None, {n: x.numpy() for n, x in zip(names, xs)})[0]
        assert got.shape == (batch, 2, 64, 64)
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
