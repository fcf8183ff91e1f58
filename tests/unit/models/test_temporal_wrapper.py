"""``TemporalWrapper`` alone against terratorch 1.2.11 (goldens by tools/goldens/temporal.py).

Both sides wrap the same toy encoders (temporal_fixtures.py: token, dict-token and conv features;
tensor and dict inputs) filled by the untrained rule, so any difference is the wrapper's: folding
the dates into the batch, unfolding the features, date groups, every pooling, permutations, the
ViT token round trip and the ``out_channels`` the necks are built for. Outputs must be identical
up to float rounding (1e-6 relative; the operations are the same).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from temporal_fixtures import WRAPPER_CASES, flatten_outputs, wrapper_encoder, wrapper_input, wrapper_kwargs

from terramind_qgis.models.core.errors import ConfigError, InputRasterError
from terramind_qgis.models.segmentation.temporal import TemporalWrapper

GOLD = Path(__file__).resolve().parents[3] / "tests" / "goldens" / "temporal"
META = json.loads((GOLD / "goldens.json").read_text())


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLD / "wrapper.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", list(WRAPPER_CASES))
def test_wrapper_matches_reference(name: str, golden: dict[str, np.ndarray]) -> None:
    case = WRAPPER_CASES[name]
    wrapper = TemporalWrapper(wrapper_encoder(case), **wrapper_kwargs(case))
    with torch.no_grad():
        ours = flatten_outputs(wrapper(wrapper_input(name, case)))
    ref = {k.split("/", 1)[1]: v for k, v in golden.items() if k.startswith(f"{name}/")}
    assert sorted(ours) == sorted(ref) and ref
    for key, r in ref.items():
        assert ours[key].shape == r.shape, key
        np.testing.assert_allclose(ours[key], r, rtol=0, atol=1e-6 * max(np.abs(r).max(), 1e-6), err_msg=key)
    assert wrapper.out_channels == META["wrapper"]["out_channels"][name]


def test_pooled_shapes_and_date_major_concat(golden: dict[str, np.ndarray]) -> None:
    """The shapes the necks see; ``concat`` lays dates out date-major (channel ``t*D + d``)."""
    assert golden["token_tensor_mean/0"].shape == (2, 16, 8)  # (B, N, D)
    assert golden["token_tensor_concat/0"].shape == (2, 16, 24)  # (B, N, T*D)
    assert golden["token_tensor_keep/0"].shape == (2, 3, 16, 8)  # (B, T, N, D)
    assert golden["conv_concat/1"].shape == (2, 15, 4, 4)  # (B, T*C, h, w)
    assert golden["token_subsets_concat/0"].shape == (2, 16, 16)  # two groups
    case = WRAPPER_CASES["token_tensor_concat"]
    x = wrapper_input("token_tensor_concat", case)
    encoder = wrapper_encoder(case)
    with torch.no_grad():
        per_date = [encoder(x[:, :, t])[0] for t in range(3)]  # (B, N, D) each
    np.testing.assert_allclose(golden["token_tensor_concat/0"], torch.cat(per_date, dim=-1).numpy(), atol=1e-6)


def test_out_channels_arithmetic() -> None:
    encoder = wrapper_encoder(WRAPPER_CASES["token_tensor_mean"])
    assert TemporalWrapper(encoder, "concat", n_timestamps=4).out_channels == [32, 32, 32]
    assert TemporalWrapper(encoder, "concat").out_channels is None  # as the reference: cannot be known
    assert TemporalWrapper(encoder, "diff", n_timestamps=4, subset_lengths=[1, 3]).out_channels == [8, 8, 8]
    assert "out_channels" not in vars(TemporalWrapper(torch.nn.Identity()))  # no out_channels without the encoder's
    assert list(TemporalWrapper(encoder).state_dict()) == [f"encoder.{k}" for k in encoder.state_dict()]


def test_settings_the_reference_refuses() -> None:
    encoder = wrapper_encoder(WRAPPER_CASES["token_tensor_mean"])
    with pytest.raises(ConfigError, match="backbone_temporal_pooling 'median'"):
        TemporalWrapper(encoder, "median")
    with pytest.raises(ConfigError, match="'diff' needs exactly two groups .* got 3"):
        TemporalWrapper(encoder, "diff", subset_lengths=[1, 1, 1])
    with pytest.raises(ConfigError, match=r"add up to 3, but backbone_temporal_n_timestamps is 4"):
        TemporalWrapper(encoder, "mean", n_timestamps=4, subset_lengths=[1, 2])


def test_inputs_that_do_not_fit() -> None:
    case = WRAPPER_CASES["token_tensor_mean"]
    encoder = wrapper_encoder(case)
    x = wrapper_input("token_tensor_mean", case)  # (2, 3, 3, 16, 16)
    with pytest.raises(InputRasterError, match=r"inputs \(B, C, T, H, W\), got \(2, 3, 16, 16\)"):
        TemporalWrapper(encoder)(x[:, :, 0])
    with pytest.raises(InputRasterError, match="compares exactly two dates .* the input has 3"):
        TemporalWrapper(encoder, "diff")(x)
    with pytest.raises(InputRasterError, match=r"groups its dates as \[2, 2\] .* needs 4 dates; the input has 3"):
        TemporalWrapper(encoder, "mean", subset_lengths=[2, 2])(x)
    dict_case = WRAPPER_CASES["token_dict_mean"]
    d = wrapper_input("token_dict_mean", dict_case)
    d["b"] = d["b"][:, :, :2]
    with pytest.raises(InputRasterError, match=r"same batch size 2 and number of dates 3; got \{'b': \(2, 1, 2, 16, 16\)\}"):
        TemporalWrapper(wrapper_encoder(dict_case))(d)
