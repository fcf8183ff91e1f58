"""Fine-tuned segmentation models against terratorch 1.2.11 goldens (tools/goldens/segmentation.py).

Each case's Lightning checkpoint is re-made here: the golden layout (key → shape, dtype) filled by
the rule of models/weights/untrained.py (shared tensors take their first name's value, as in the
golden script), wrapped with the non-weight contents of a checkpoint from a real ``terratorch fit``
run (``lightning_extras.pt``), written to disk and loaded through ``load_segmentation_model`` with
the case's YAML. Logits must match within 1e-4 relative (max |ours - ref| / max |ref|), the argmax
exactly except at ties (top-two logits within 1e-4 of the logit scale).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from terramind_qgis.models.core.errors import CheckpointError, ConfigError
from terramind_qgis.models.segmentation.checkpoint import load_segmentation_model
from terramind_qgis.models.segmentation.export import export_model
from terramind_qgis.models.terramind import reference_call_seed
from terramind_qgis.models.weights.untrained import deterministic_state_dict
from testlib.tolerances import assert_logits_match as assert_matches

REPO = Path(__file__).resolve().parents[3]
GOLD = REPO / "tests" / "goldens" / "segmentation"
EXAMPLES = REPO / "tests" / "data" / "examples"
CASES = json.loads((GOLD / "goldens.json").read_text())["cases"]
HLS_BANDS = (2, 3, 4, 9, 11, 12)  # BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2 of the S2L2A files
BIG = {"base_sen1floods11", "base_burnscars", "base_tim_lulc_sen1floods11"}


def filled_state_dict(layout_file: str) -> dict[str, torch.Tensor]:
    layout = json.loads((GOLD / layout_file).read_text())
    shapes = {k: (tuple(s), getattr(torch, d)) for k, (s, d) in layout["tensors"].items()}
    tensors = deterministic_state_dict(shapes)
    return {k: tensors[layout["aliases"].get(k, k)] for k in tensors}


def write_checkpoint(path: Path, case: str, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """A Lightning checkpoint: a real fit's extra contents + the case's filled weights and model_args."""
    import yaml

    ckpt = torch.load(GOLD / "lightning_extras.pt", weights_only=True)
    cfg = yaml.safe_load((GOLD / CASES[case]["config"]).read_text())
    ckpt["hyper_parameters"]["model_args"] = cfg["model"]["init_args"]["model_args"]
    ckpt["state_dict"] = state_dict if state_dict is not None else filled_state_dict(CASES[case]["layout"])
    torch.save(ckpt, path)
    return path


def raw_inputs(model, case: str, scene: str) -> dict[str, torch.Tensor]:
    out = {}
    for spec in model.config.inputs:
        folder, bands, scale = spec.modality, None, np.float32(1)
        if spec.modality == "S1GRD":
            folder = "S1RTC"  # stand-in, as in the golden script
        if spec.band_subset:
            bands, scale = HLS_BANDS, np.float32(10000)
        with rasterio.open(EXAMPLES / folder / f"{scene}.tif") as src:
            x = src.read(list(bands) if bands else None).astype(np.float32) / scale  # (C, H, W)
        if CASES[case]["window"]:
            r, c, h, w = CASES[case]["window"]
            x = x[:, r : r + h, c : c + w]
        out[spec.name] = torch.from_numpy(np.ascontiguousarray(x))[None]  # (1, C, H, W)
    return out




def case_logits(model, case: str) -> np.ndarray:
    seeds = CASES[case]["python_random_seeds"]
    out = []
    for i, scene in enumerate(CASES[case]["scenes"]):
        seed = reference_call_seed(seeds[i]) if seeds else None
        with torch.no_grad():
            out.append(model(raw_inputs(model, case, scene), seed=seed).numpy())
    return np.concatenate(out)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, object]:
    path = write_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.ckpt", "tiny_sen1floods11")
    return path, load_segmentation_model(path, GOLD / CASES["tiny_sen1floods11"]["config"])


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.slow) if c in BIG else c
     for c in CASES if not c.startswith("tiny_sen") and not CASES[c].get("layout_only")],
)  # fmt: skip
def test_logits_match_reference(case: str, tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / f"{case}.ckpt", case)
    model = load_segmentation_model(path, GOLD / CASES[case]["config"])
    assert model.net.training is False
    ref = np.load(GOLD / f"{case}.npz")["logits"]
    assert_matches(case_logits(model, case), ref)
    if model.is_stochastic:  # TiM: the seed is used (another seed samples other tokens) and required
        raw = raw_inputs(model, case, CASES[case]["scenes"][0])
        with torch.no_grad():
            other = model(raw, seed=reference_call_seed(CASES[case]["python_random_seeds"][0] + 1)).numpy()
        assert np.abs(other - ref[:1]).max() > 1e-3 * np.abs(ref).max()
        with pytest.raises(ConfigError, match="give a seed"):
            model(raw)


@pytest.mark.parametrize("case", sorted({c["layout"].removesuffix(".layout.json") for c in CASES.values()}))
def test_model_layout_equals_the_lightning_checkpoint(case: str) -> None:
    """Every key and shape of terratorch's ``state_dict`` (``model.`` stripped) is in our model, and nothing else.

    TiM checkpoints also hold the TiM modality's tokenizer (``encoder.tokenizer.*``), which is never run
    and is dropped on loading (models/segmentation/checkpoint.py).
    """
    import yaml

    from terramind_qgis.models.segmentation.config import config_from_yaml_dict
    from terramind_qgis.models.segmentation.model import build_pixel_wise_model

    cfg = config_from_yaml_dict(yaml.safe_load((GOLD / "configs" / f"{case}.yaml").read_text()))
    with torch.device("meta"):
        net = build_pixel_wise_model(cfg)
    ours = {k: list(v.shape) for k, v in net.state_dict(keep_vars=True).items()}
    layout = json.loads((GOLD / f"{case}.layout.json").read_text())["tensors"]
    theirs = {k.removeprefix("model."): s for k, (s, _) in layout.items() if not k.startswith("model.encoder.tokenizer.")}
    assert ours == theirs


@pytest.mark.parametrize("case", ["tiny_sen1floods11", "tiny_sen1floods11_crop200x216", "tiny_sen1floods11_crop160x224"])
def test_tiny_logits_match_reference_incl_padding_and_non_square(case: str, tiny) -> None:
    ref = np.load(GOLD / f"{case}.npz")["logits"]
    ours = case_logits(tiny[1], case)
    assert ours.shape == ref.shape  # the reflect padding to 32 is cropped away again
    assert_matches(ours, ref)


def test_checkpoint_alone_uses_its_hyper_parameters(tiny) -> None:
    model = load_segmentation_model(tiny[0])  # no YAML: hyper_parameters + TerraMind v1 statistics
    assert any("hyper_parameters" in n for n in model.config.notes)
    assert [c.name for c in model.classes] == ["Others", "Flood"]
    raw = raw_inputs(model, "tiny_sen1floods11", CASES["tiny_sen1floods11"]["scenes"][3])
    with torch.no_grad():
        assert_matches(model(raw).numpy(), np.load(GOLD / "tiny_sen1floods11.npz")["logits"][3:])


def test_batchnorm_running_statistics_matter(tiny) -> None:
    model = tiny[1]
    scene = CASES["tiny_sen1floods11"]["scenes"][0]
    raw = {k: v[..., :64, :96] for k, v in raw_inputs(model, "tiny_sen1floods11", scene).items()}
    with torch.no_grad():
        before = model(raw)
        saved = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in model.named_modules()
                 if isinstance(m, torch.nn.BatchNorm2d)}  # fmt: skip
        assert len(saved) == 9  # neck fpn1.1 + 2 per UNet block
        for name in saved:
            model.get_submodule(name).running_mean.zero_()
            model.get_submodule(name).running_var.fill_(1.0)
        after = model(raw)
        for name, (mean, var) in saved.items():
            model.get_submodule(name).running_mean.copy_(mean)
            model.get_submodule(name).running_var.copy_(var)
    assert (after - before).abs().max() > 0.05 * before.abs().max()


def test_plain_state_dict_with_yaml(tmp_path: Path) -> None:
    sd = filled_state_dict(CASES["tiny_sen1floods11"]["layout"])
    path = tmp_path / "weights.pt"
    torch.save({k.removeprefix("model."): v for k, v in sd.items()}, path)
    with pytest.raises(ConfigError, match="weights only; give the TerraTorch YAML"):
        load_segmentation_model(path)
    model = load_segmentation_model(path, GOLD / CASES["tiny_sen1floods11"]["config"])
    ref = np.load(GOLD / "tiny_sen1floods11.npz")["logits"][:1]
    raw = raw_inputs(model, "tiny_sen1floods11", CASES["tiny_sen1floods11"]["scenes"][0])
    with torch.no_grad():
        assert_matches(model(raw).numpy(), ref)


def test_strict_loading_names_every_bad_key(tmp_path: Path) -> None:
    sd = filled_state_dict(CASES["tiny_sen1floods11"]["layout"])
    sd.pop("model.neck.2.fpn1.1.running_var")
    sd["model.head.head.3.weight"] = torch.zeros(2)
    sd["model.decoder.decoder.blocks.1.conv1.0.weight"] = torch.zeros(128, 448, 3, 3)
    path = write_checkpoint(tmp_path / "bad.ckpt", "tiny_sen1floods11", sd)
    with pytest.raises(CheckpointError) as err:
        load_segmentation_model(path, GOLD / CASES["tiny_sen1floods11"]["config"])
    msg = str(err.value)
    assert "neck.2.fpn1.1.running_var" in msg and "missing" in msg
    assert "head.head.3.weight" in msg and "unexpected" in msg
    assert "decoder.decoder.blocks.1.conv1.0.weight: file [128, 448, 3, 3] vs model [128, 352, 3, 3]" in msg


def test_recomputable_buffers_may_be_absent(tmp_path: Path) -> None:
    """A checkpoint without the sin-cos ``pos_emb`` buffers loads: they are recomputed."""
    from terramind_qgis.models.terramind.posemb import cpu_2d_sincos_posemb

    sd = {k: v for k, v in filled_state_dict(CASES["tiny_sen1floods11"]["layout"]).items() if not k.endswith("pos_emb")}
    model = load_segmentation_model(write_checkpoint(tmp_path / "nopos.ckpt", "tiny_sen1floods11", sd),
                                    GOLD / CASES["tiny_sen1floods11"]["config"])  # fmt: skip
    tables = [b for n, b in model.named_buffers() if n.endswith("pos_emb")]
    assert len(tables) == 2
    for table in tables:
        assert not table.is_meta and torch.equal(table, cpu_2d_sincos_posemb(14, 14, 192))


def test_config_that_does_not_describe_the_checkpoint(tiny) -> None:
    with pytest.raises(ConfigError, match=r"does not describe the checkpoint .*backbone: config 'terramind_v1_base'"):
        load_segmentation_model(tiny[0], GOLD / CASES["base_sen1floods11"]["config"])


def test_export_card_round_trip(tmp_path: Path, tiny) -> None:
    card_path = export_model(tiny[1], tmp_path / "cards", "flood_tiny", title="Flood (tiny)")
    card = json.loads(card_path.read_text())
    assert card["format"] == "terramind_qgis.segmentation" and card["weights"] == "flood_tiny.safetensors"
    assert [c["name"] for c in card["classes"]] == ["Others", "Flood"]
    assert card["config"]["inputs"][0]["mean"][0] == pytest.approx(2357.089)
    loaded = load_segmentation_model(card_path, classes="1: Water #0000FF")
    assert [(c.name, c.color) for c in loaded.classes] == [("Others", "#D9D9D9"), ("Water", "#0000FF")]
    raw = raw_inputs(loaded, "tiny_sen1floods11", CASES["tiny_sen1floods11"]["scenes"][2])
    with torch.no_grad():
        assert torch.equal(loaded(raw), tiny[1](raw))
    weights = card_path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_segmentation_model(card_path)


def test_export_command_line_and_describe(tmp_path: Path, tiny) -> None:
    from terramind_qgis.models.segmentation.checkpoint import describe_model_file
    from terramind_qgis.models.segmentation.export import main

    assert main([str(tiny[0]), "--out", str(tmp_path), "--id", "flood"]) == 0  # config from the checkpoint
    card = tmp_path / "flood.json"
    assert describe_model_file(card) == describe_model_file(tiny[0]) == tiny[1].config.__class__.from_dict(
        json.loads(card.read_text())["config"]
    )
    assert describe_model_file(tiny[0]).inputs[1].name == "S1GRD"
    assert main([str(tmp_path / "nothing.ckpt"), "--out", str(tmp_path), "--id", "x"]) == 1
