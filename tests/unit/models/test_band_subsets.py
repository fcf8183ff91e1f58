"""One band-subset rule for every task (models/core/modalities.py ``Modality.band_subset`` and
``with_bands``): embeddings, training data and fine-tuning read the same names and labels and refuse
the same mistakes."""

from __future__ import annotations

import pytest

from terramind_qgis.models.core.embedding_params import EmbedParams
from terramind_qgis.models.core.errors import ConfigError
from terramind_qgis.models.core.modalities import get_modality
from terramind_qgis.models.core.training_params import parse_bands

S2 = get_modality("S2L2A")


def test_names_and_labels_give_band_names_in_the_given_order() -> None:
    assert S2.band_subset(["RED", "B02", "NIR_NARROW"]) == ("RED", "BLUE", "NIR_NARROW")


@pytest.mark.parametrize(("names", "message"), [
    (["BLUE", "B99"], r"S2L2A has no band 'B99'; its bands are B01, B02"),
    ([], "the band subset of S2L2A is empty"),
    (["BLUE", "B02"], "names a band twice: BLUE, B02"),
])  # fmt: skip
def test_mistakes_name_the_field(names, message) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        S2.band_subset(names, "params.band_names")
    assert e.value.field == "params.band_names"


def test_with_bands_subsets_labels_and_statistics_together() -> None:
    sub = S2.with_bands(("SWIR_1", "BLUE"))
    i, j = S2.bands.index("SWIR_1"), S2.bands.index("BLUE")
    assert sub.bands == ("SWIR_1", "BLUE")
    assert sub.band_labels == (S2.band_labels[i], S2.band_labels[j])
    assert sub.mean == (S2.mean[i], S2.mean[j]) and sub.std == (S2.std[i], S2.std[j])
    assert S2.with_bands(S2.bands) is S2


def test_every_task_reads_the_same_rule() -> None:
    assert parse_bands("S2L2A: B04, B03; S1RTC: VH") == {"S2L2A": ("RED", "GREEN"), "S1RTC": ("VH",)}
    assert EmbedParams.from_params({"bands": {"S2L2A": ["B04", "B03"]}}).bands == {"S2L2A": ("RED", "GREEN")}
    for bad in (lambda: parse_bands("S2L2A: RED, B04", "params.band_names"),
                lambda: EmbedParams.from_params({"bands": {"S2L2A": ["RED", "B04"]}})):  # fmt: skip
        with pytest.raises(ConfigError, match="names a band twice"):
            bad()
