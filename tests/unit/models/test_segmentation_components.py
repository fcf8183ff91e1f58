"""Necks, decoders, head and the pixel-wise wrapper, without a backbone.

The golden ``components_<case>.npz`` holds terratorch's necks → decoder → head output on synthetic
backbone features (the fill rule, key ``features.<layer>``) for a square 14×14 and a non-square
10×14 token grid; the weights are the case's checkpoint layout filled by the rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.segmentation.config import config_from_yaml_dict
from terramind_qgis.models.segmentation.decoders import UNetDecoder, UperNetDecoder, build_decoder
from terramind_qgis.models.segmentation.export import unique_state_dict
from terramind_qgis.models.segmentation.head import SegmentationHead
from terramind_qgis.models.segmentation.necks import ReshapeTokensToImage, build_necks
from terramind_qgis.models.segmentation.pixel_wise_model import center_crop, pad_inputs, symmetric_padding
from terramind_qgis.models.weights.untrained import deterministic_state_dict, deterministic_tensor

GOLD = Path(__file__).resolve().parents[3] / "tests" / "goldens" / "segmentation"
GRIDS = {"square": (14, 14), "nonsquare": (10, 14)}


def head_stack(case: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """The case's necks, decoder and head with the golden weights (rule-filled layout)."""
    cfg = config_from_yaml_dict(yaml.safe_load((GOLD / "configs" / f"{case}.yaml").read_text()))
    neck, channels = build_necks(cfg.necks, [192] * 12)
    decoder = build_decoder(cfg.decoder, channels, dict(cfg.decoder_kwargs))
    head = SegmentationHead(decoder.out_channels, cfg.num_classes, dropout=cfg.head_dropout)
    layout = json.loads((GOLD / f"{case}.layout.json").read_text())["tensors"]
    for prefix, module in (("model.neck.", neck), ("model.decoder.", decoder), ("model.head.", head)):
        shapes = {k: (tuple(s), getattr(torch, d)) for k, (s, d) in layout.items() if k.startswith(prefix)}
        filled = deterministic_state_dict(shapes)
        module.load_state_dict({k[len(prefix) :]: v for k, v in filled.items()}, strict=True)
        module.eval()
    return neck, decoder, head


@pytest.mark.parametrize("case", ["tiny_sen1floods11", "tiny_upernet"])
@pytest.mark.parametrize("grid", list(GRIDS))
def test_necks_decoder_head_match_reference(case: str, grid: str) -> None:
    neck, decoder, head = head_stack(case)
    h, w = GRIDS[grid]
    feats = [deterministic_tensor(f"features.{i}", (2, h * w, 192)) for i in range(12)]  # (B, N, D)
    with torch.no_grad():
        out = head(decoder(neck(feats, image_size=(16 * h, 16 * w)))).numpy()
    ref = np.load(GOLD / f"components_{case}.npz")[grid]
    assert out.shape == ref.shape == (2, 2, 4 * h, 4 * w)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()


def test_unet_decoder_shapes_for_base() -> None:
    """Spec §6.4: block inputs 1536, 896, 448, 128; output (B, 64, 56, 56) at 224 px."""
    dec = UNetDecoder([192, 384, 768, 768], [512, 256, 128, 64])
    ins = [b.conv1[0].in_channels for b in dec.decoder.blocks]
    assert ins == [1536, 896, 448, 128]
    feats = [torch.zeros(1, c, s, s) for c, s in ((192, 56), (384, 28), (768, 14), (768, 7))]
    assert dec(feats).shape == (1, 64, 56, 56)
    assert not any(b.conv1[0].bias is not None for b in dec.decoder.blocks)  # batch norm follows the convs


def test_upernet_output_is_at_the_finest_level() -> None:
    dec = UperNetDecoder([48, 96, 192, 192], channels=32).eval()
    feats = [torch.randn(1, c, s, s) for c, s in ((48, 56), (96, 28), (192, 14), (192, 7))]
    assert dec(feats).shape == (1, 32, 56, 56)
    with pytest.raises(ConfigError, match="scale_modules"):
        UperNetDecoder([48, 96, 192, 192], scale_modules=True)


def test_reshape_tokens_non_square_grid_is_row_major() -> None:
    """128×512 gives 256 tokens, a perfect square: the grid must still be 8×32 (terratorch: 16×16)."""
    neck = ReshapeTokensToImage([3], remove_cls_token=False)
    tokens = torch.arange(256, dtype=torch.float32).view(1, 256, 1).expand(1, 256, 3)  # (B, N, D)
    (grid,) = neck([tokens], image_size=(128, 512))
    assert grid.shape == (1, 3, 8, 32)
    assert grid[0, 0, 1, 0] == 32 and grid[0, 2, 7, 31] == 255
    (square,) = neck([tokens], image_size=(256, 256))
    assert square.shape == (1, 3, 16, 16)


def test_reshape_tokens_drops_cls_only_when_there_is_one() -> None:
    neck = ReshapeTokensToImage([4])  # remove_cls_token=True by default, as in terratorch
    (with_cls,) = neck([torch.randn(2, 197, 4)], image_size=(224, 224))
    assert with_cls.shape == (2, 4, 14, 14)
    (no_cls,) = neck([torch.randn(2, 196, 4)], image_size=(224, 224))  # 195 form no grid: keep all
    assert no_cls.shape == (2, 4, 14, 14) and neck.remove_cls_token is False


def test_neck_errors_name_the_neck() -> None:
    with pytest.raises(ConfigError, match=r"neck 'FeaturePyramidNetworkNeck' \(necks\[1\]\) is not supported"):
        build_necks([{"name": "SelectIndices", "indices": [0]}, {"name": "FeaturePyramidNetworkNeck"}], [8] * 4)
    with pytest.raises(ConfigError, match="exactly 4 inputs, got 3"):
        build_necks([{"name": "SelectIndices", "indices": [0, 1, 2]}, {"name": "LearnedInterpolateToPyramidal"}], [8] * 4)
    with pytest.raises(ConfigError, match=r"indices \[12\] are out of range for a backbone with 12 layers"):
        build_necks([{"name": "SelectIndices", "indices": [2, 12]}], [8] * 12)
    with pytest.raises(ConfigError, match="decoder 'FCNDecoder' is not supported"):
        build_decoder("FCNDecoder", [8], {})


@pytest.mark.parametrize("size,expected", [(224, (0, 0)), (200, (12, 12)), (216, (4, 4)), (250, (3, 3)), (33, (15, 16))])
def test_symmetric_padding(size: int, expected: tuple[int, int]) -> None:
    assert symmetric_padding(size, 32) == expected


def test_padding_and_center_crop_round_trip() -> None:
    x = torch.arange(2 * 3 * 200 * 216, dtype=torch.float32).view(2, 3, 200, 216)
    padded = pad_inputs({"a": x, "coords": torch.zeros(2, 2)}, 32)
    assert padded["a"].shape == (2, 3, 224, 224) and padded["coords"].shape == (2, 2)
    assert torch.equal(padded["a"][:, :, 12, 4:220], x[:, :, 0])  # 12 rows on top, 4 columns left
    assert torch.equal(padded["a"][:, :, 11, 4:220], x[:, :, 1])  # reflect (edge not repeated)
    assert torch.equal(center_crop(padded["a"], (200, 216)), x)


def test_head_layout_and_unique_state_dict() -> None:
    head = SegmentationHead(32, 3, channel_list=[16], dropout=0.1)
    assert set(head.state_dict()) == {"head.0.0.0.weight", "head.0.0.0.bias", "head.2.weight", "head.2.bias"}
    shared = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 2), "b": torch.nn.Linear(2, 2)})
    shared["b"].weight = shared["a"].weight
    assert list(unique_state_dict(shared)) == ["a.weight", "a.bias", "b.bias"]
