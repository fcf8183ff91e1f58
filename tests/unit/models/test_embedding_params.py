"""The torch-free rules of the embedding tasks (models/core): layers, dimensions, band subsets, features,
class tables — the messages QGIS and the worker both show."""

from __future__ import annotations

import pytest

from terramind_qgis.models.core.catalogue import get
from terramind_qgis.models.core.embedding_params import ClassifyParams, EmbedParams, parse_layers
from terramind_qgis.models.core.embeddings import EmbeddingInfo, require_same
from terramind_qgis.models.core.features import FeatureSet, class_table
from testlib.errors import refused

BASE = get("terramind_v1_base")


def test_layers_text_and_dimensions():
    assert parse_layers("") == () and parse_layers("12") == (12,)
    assert parse_layers("9-12") == (9, 10, 11, 12) and parse_layers("4, 8,12 8") == (4, 8, 12)
    with refused(r"params.layers: '12-9' counts down; write the range as 9-12"):
        parse_layers("12-9")
    with refused(r"params.layers: 'last' is not a list of layer numbers"):
        parse_layers("last")
    p = EmbedParams("concat", (11, 12), tim=("LULC",))
    p.check(BASE, ["S2L2A", "S1GRD"])
    assert p.dim(BASE, ["S2L2A", "S1GRD"]) == 768 * 3 and EmbedParams().layer_numbers(BASE) == (12,)
    with refused(r"params.layers: model 'terramind_v1_base' has 12 encoder layers \(1-12\), got 13"):
        EmbedParams(layers=(13,)).check(BASE, ["S2L2A"])


def test_band_subsets_take_names_or_labels_and_narrow_the_modality():
    p = EmbedParams(bands={"s2l2a": ["B02", "GREEN", "B04"]})
    assert p.bands == {"S2L2A": ("BLUE", "GREEN", "RED")}
    m = p.modality("S2L2A")
    assert m.band_labels == ("B02", "B03", "B04") and m.mean[0] == 1503.317
    with refused(r"params.bands: a band subset is given for S2L2A, which is not an input"):
        p.check(BASE, ["S1GRD"])
    with refused(r"params.bands: the band subset of S2L2A names a band twice"):
        EmbedParams(bands={"S2L2A": ["B02", "BLUE"]})
    with refused(r"params.bands: LULC is read through its tokenizer"):
        EmbedParams(bands={"LULC": ["Class"]}).check(BASE, ["LULC"])


def feature(fid, geometry, label=None):
    return {"id": fid, "geometry": geometry, "class": label}


def test_features_are_checked_and_located():
    point = {"type": "Point", "coordinates": [5.0, 5.0]}
    far = {"type": "Polygon", "coordinates": [[[50, 50], [60, 50], [60, 60], [50, 50]]]}
    fs = FeatureSet.from_params({"crs": "EPSG:32632", "features": [feature(1, point), feature(7, far)]},
                                "params.references", labelled=False)  # fmt: skip
    assert fs.outside((0, 0, 10, 10)) == [7] and fs.features[1].bbox == (50, 50, 60, 60)
    with refused(r"params.references: 1 feature \(7\) of 2 lies outside the raster \(bounds"):
        fs.require_inside((0, 0, 10, 10), "params.references", "the raster")
    with refused(r"params.references: feature 3: geometry must be one of Point, .*got 'Circle'"):
        FeatureSet.from_params({"crs": "x", "features": [feature(3, {"type": "Circle"})]}, "params.references",
                               labelled=False)  # fmt: skip
    with refused(r"params.labels.class: feature 4 has no class"):
        FeatureSet.from_params({"crs": "x", "features": [feature(4, point)]}, "params.labels", labelled=True)
    with refused(r"params.references: feature id\(s\) 1 appear more than once"):
        FeatureSet.from_params({"crs": "x", "features": [feature(1, point), feature(1, point)]}, "params.references",
                               labelled=False)  # fmt: skip


def test_class_tables_keep_codes_or_number_names():
    assert [(c.value, c.name) for c in class_table([7, 3, 7])] == [(3, "3"), (7, "7")]
    assert [(c.value, c.name) for c in class_table(["water", "crop"])] == [(0, "crop"), (1, "water")]
    assert [(c.value, c.name) for c in class_table([300, 2])] == [(0, "2"), (1, "300")]  # 300 is no uint8 code
    with refused(r"params.labels.class: mixes numbers and text for the class\(es\) 1"):
        class_table([1, "1"])


def test_classify_needs_labels_or_a_classifier():
    with refused(r"give either labelled features .* or a saved classifier file"):
        ClassifyParams()
    with refused(r"params.folds: must be between 2 and 20, got 1"):
        ClassifyParams(classifier="c.json", folds=1)


def test_signatures_name_every_difference():
    a = EmbeddingInfo("m", False, ("S2L2A",), {}, "mean", (12,), (), 768, (4, 4), (64, 64))
    b = EmbeddingInfo("m", True, ("S2L2A",), {"S2L2A": ("RED",)}, "mean", (12,), (), 768, (9, 9), (144, 144))
    require_same(a.signature(), EmbeddingInfo.from_tags({"TERRAMIND_EMBEDDING": a.to_tag()}, "r", "f"), "f", "x", "y")
    with refused(r"^f: y comes from another model or configuration than x \(untrained: False vs True; bands: all vs "
                 r"S2L2A RED\)"):
        require_same(a.signature(), b, "f", "x", "y")
    with refused(r"^f: r is not a TerraMind embedding raster"):
        EmbeddingInfo.from_tags({}, "r", "f")


@pytest.mark.parametrize("text", ["{", "[1, 2]", '{"model_id": 3}'])
def test_damaged_tags(text):
    with refused(r"f: r has a damaged TERRAMIND_EMBEDDING tag"):
        EmbeddingInfo.from_tags({"TERRAMIND_EMBEDDING": text}, "r", "f")
