"""The embedding algorithms end to end in QGIS (reduced test TerraMind, untrained, deterministic):
extract → similarity / cluster / few-shot classify → apply, styles, errors, parameter keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import processing
import pytest
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProject,
    QgsVectorLayer,
)
from tm_helpers import EXAMPLES, SCENE, raster_facts, read_array

EXTRACT, SIMILARITY, CLUSTER = "terramind:extractembeddings", "terramind:mapsimilarity", "terramind:clusterembeddings"
CLASSIFY, APPLY = "terramind:classifyfewshot", "terramind:applyfewshotclassifier"
MODEL = {"MODEL": "test_terramind_tiny", "UNTRAINED": True, "DEVICE": "cpu", "TILE_SIZE": 128, "OVERLAP": 32}
POINTS = [(20, 20), (60, 30), (100, 180), (200, 200), (30, 150), (180, 40), (120, 120), (150, 60), (80, 200), (210, 90)]


def grid_point(source: str, px: float, py: float) -> QgsPointXY:
    facts = raster_facts(source)
    x0, dx, _, y0, _, dy = facts["geotransform"]
    return QgsPointXY(x0 + px * dx, y0 + py * dy)


def points_layer(source: str, pixels, classes=None, crs: str = "EPSG:32722") -> QgsVectorLayer:
    """A memory layer of points at working-grid pixels of ``source`` (optionally in another CRS)."""
    layer = QgsVectorLayer(f"Point?crs={crs}&field=class:string", "refs", "memory")
    transform = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32722"), QgsCoordinateReferenceSystem(crs),
                                       QgsProject.instance())  # fmt: skip
    features = []
    for i, (px, py) in enumerate(pixels):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromPointXY(transform.transform(grid_point(source, px, py))))
        f.setAttribute("class", classes[i] if classes else "ref")
        features.append(f)
    layer.dataProvider().addFeatures(features)
    return layer


_MADE: dict[str, tuple[str, dict]] = {}


@pytest.fixture
def embeddings(terramind_provider, tmp_path_factory):
    """(source patch, result of Extract embeddings on it): made once for this module, read by many tests."""
    if "emb" not in _MADE:
        folder = tmp_path_factory.mktemp("embeddings")
        source = folder / f"{SCENE}.tif"
        shutil.copy(EXAMPLES / "S2L2A" / f"{SCENE}.tif", source)
        result = processing.run(EXTRACT, {"INPUT_S2L2A": str(source), **MODEL, "OUTPUT": str(folder / "emb.tif"),
                                          "OUTPUT_PCA": str(folder / "pca.tif")})  # fmt: skip
        _MADE["emb"] = (str(source), result)
    return _MADE["emb"]


def test_extract_writes_the_token_grid_with_its_description(embeddings, tmp_path):
    source, result = embeddings
    facts, src = raster_facts(result["OUTPUT"]), raster_facts(source)
    x0, dx, _, y0, _, dy = src["geotransform"]
    assert facts["size"] == (14, 14) and facts["count"] == result["DIMENSIONS"] == 64
    assert facts["geotransform"] == (x0, 16 * dx, 0.0, y0, 0.0, 16 * dy) and facts["epsg"] == "32722"
    info = json.loads(facts["tags"]["TERRAMIND_EMBEDDING"])
    assert (info["model_id"], info["modalities"], info["merge"], info["dim"]) == ("test_terramind_tiny", ["S2L2A"], "mean", 64)
    assert facts["tags"]["TERRAMIND_UNTRAINED"] == "YES" and facts["descriptions"][:2] == ["E01", "E02"]
    pca = raster_facts(result["OUTPUT_PCA"])
    assert pca["count"] == 3 and pca["descriptions"] == ["PC1", "PC2", "PC3"]


def test_similarity_cluster_and_classification_chain_on_the_embeddings(embeddings, tmp_path):
    source, emb = embeddings
    refs = points_layer(source, [(40, 40)], crs="EPSG:4326")  # in another CRS: transformed by QGIS
    sim = processing.run(SIMILARITY, {"EMBEDDINGS": emb["OUTPUT"], "REFERENCES": refs, "AGGREGATE": "max",
                                      "OUTPUT": str(tmp_path / "sim.tif")})  # fmt: skip
    similarity = read_array(sim["OUTPUT"])
    assert similarity.shape == (14, 14) and similarity[2, 2] == pytest.approx(1.0, abs=1e-5)
    assert similarity.max() <= 1 + 1e-6 and similarity.min() >= -1 - 1e-6
    clusters = processing.run(CLUSTER, {"EMBEDDINGS": emb["OUTPUT"], "K": 3, "SEED": 2, "SAMPLE_SIZE": 100,
                                        "OUTPUT": str(tmp_path / "cl.tif"), "OUTPUT_CENTRES": str(tmp_path / "c.csv")})
    facts = raster_facts(clusters["OUTPUT"])
    assert facts["has_colour_table"] and facts["categories"][:3] == ["cluster 0", "cluster 1", "cluster 2"]
    summary = json.loads(clusters["CLUSTER_SUMMARY"])
    assert sum(c["pixels"] for c in summary) == 196
    assert (tmp_path / "c.csv").read_text().splitlines()[0].startswith("cluster,pixels,c1,c2")
    labels = points_layer(source, POINTS, ["water", "land"] * 5)
    trained = processing.run(CLASSIFY, {"EMBEDDINGS": emb["OUTPUT"], "LABELS": labels, "CLASS_FIELD": "class",
                                        "FOLDS": 5, "OUTPUT": str(tmp_path / "cls.tif"),
                                        "OUTPUT_PROBABILITIES": str(tmp_path / "p.tif"),
                                        "OUTPUT_CLASSIFIER": str(tmp_path / "clf.json")})  # fmt: skip
    assert 0 <= trained["CV_ACCURACY"] <= 1 and 0 <= trained["CV_BALANCED_ACCURACY"] <= 1
    confusion = json.loads(trained["CONFUSION_MATRIX"])
    assert confusion["classes"] == ["land", "water"] and np.asarray(confusion["matrix"]).sum() == 10
    classes = raster_facts(trained["OUTPUT"])
    assert classes["categories"][:2] == ["land", "water"] and classes["size"] == (14, 14)
    assert raster_facts(trained["OUTPUT_PROBABILITIES"])["descriptions"] == ["P(land)", "P(water)"]
    applied = processing.run(APPLY, {"EMBEDDINGS": emb["OUTPUT"], "CLASSIFIER": trained["OUTPUT_CLASSIFIER"],
                                     "UPSAMPLE": True, "OUTPUT": str(tmp_path / "up.tif")})  # fmt: skip
    up = read_array(applied["OUTPUT"])
    assert up.shape == (224, 224)
    np.testing.assert_array_equal(up, np.repeat(np.repeat(read_array(trained["OUTPUT"]), 16, 0), 16, 1))


def test_similarity_from_the_inputs_directly(terramind_provider, example, embeddings, tmp_path):
    source, emb = embeddings
    refs = points_layer(source, [(40, 40), (150, 100)])
    two = processing.run(SIMILARITY, {"EMBEDDINGS": emb["OUTPUT"], "REFERENCES": refs, "OUTPUT": str(tmp_path / "a.tif")})
    direct = processing.run(SIMILARITY, {"INPUT_S2L2A": source, **MODEL, "REFERENCES": refs,
                                         "OUTPUT": str(tmp_path / "b.tif")})  # fmt: skip
    np.testing.assert_array_equal(read_array(two["OUTPUT"]), read_array(direct["OUTPUT"]))
    assert raster_facts(direct["OUTPUT"])["tags"]["TERRAMIND_UNTRAINED"] == "YES"
    assert not list(tmp_path.glob("*.partial-*"))


def test_results_are_styled_when_loaded(embeddings, tmp_path, qgis_new_project):
    source, emb = embeddings
    processing.runAndLoadResults(SIMILARITY, {"EMBEDDINGS": emb["OUTPUT"], "REFERENCES": points_layer(source, [(5, 5)]),
                                              "OUTPUT": "TEMPORARY_OUTPUT"})  # fmt: skip
    processing.runAndLoadResults(CLUSTER, {"EMBEDDINGS": emb["OUTPUT"], "K": 4, "OUTPUT": "TEMPORARY_OUTPUT"})
    processing.runAndLoadResults(EXTRACT, {"INPUT_S2L2A": source, **MODEL, "OUTPUT": "TEMPORARY_OUTPUT",
                                           "OUTPUT_PCA": "TEMPORARY_OUTPUT"})  # fmt: skip
    layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    assert layers["Similarity (emb)"].renderer().type() == "singlebandpseudocolor"
    assert layers["Clusters (emb)"].renderer().type() == "paletted"
    assert layers["Embeddings (282D_485L_3_3) UNTRAINED"].renderer().type() == "multibandcolor"
    assert layers["Embeddings PCA (282D_485L_3_3) UNTRAINED"].renderer().type() == "multibandcolor"
    QgsProject.instance().clear()


# ----------------------------------------------------------------------------- one clear message each
def _refused(alg: str, params: dict, match: str, folder: Path) -> None:
    before = set(folder.iterdir())
    with pytest.raises(QgsProcessingException, match="(?m)" + match):
        processing.run(alg, params)
    assert set(folder.iterdir()) == before  # no file left behind


def test_references_outside_the_raster(embeddings, tmp_path):
    source, emb = embeddings
    refs = points_layer(source, [(40, 40), (-300, 10)])
    _refused(SIMILARITY, {"EMBEDDINGS": emb["OUTPUT"], "REFERENCES": refs, "OUTPUT": str(tmp_path / "s.tif")},
             r"^REFERENCES: 1 feature \(2\) of 2 lies outside the embedding raster layer 'emb'", tmp_path)


def test_a_class_field_with_one_class(embeddings, tmp_path):
    source, emb = embeddings
    labels = points_layer(source, POINTS, ["water"] * 10)
    _refused(CLASSIFY, {"EMBEDDINGS": emb["OUTPUT"], "LABELS": labels, "CLASS_FIELD": "class",
                        "OUTPUT": str(tmp_path / "c.tif"), "OUTPUT_CLASSIFIER": str(tmp_path / "c.json")},
             r"^CLASS_FIELD: has one class \('water'\) among the 10 labelled features", tmp_path)  # fmt: skip


def test_fewer_labelled_features_than_folds(embeddings, tmp_path):
    source, emb = embeddings
    labels = points_layer(source, POINTS[:3], ["water", "land", "land"])
    _refused(CLASSIFY, {"EMBEDDINGS": emb["OUTPUT"], "LABELS": labels, "CLASS_FIELD": "class", "FOLDS": 4,
                        "OUTPUT": str(tmp_path / "c.tif"), "OUTPUT_CLASSIFIER": str(tmp_path / "c.json")},
             r"^FOLDS: is 4, but there are only 3 labelled features", tmp_path)  # fmt: skip


def test_embeddings_from_another_model_or_configuration(embeddings, example, tmp_path):
    source, emb = embeddings
    trained = processing.run(CLASSIFY, {"EMBEDDINGS": emb["OUTPUT"], "LABELS": points_layer(source, POINTS, ["a", "b"] * 5),
                                        "CLASS_FIELD": "class", "FOLDS": 2, "OUTPUT": str(tmp_path / "c.tif"),
                                        "OUTPUT_CLASSIFIER": str(tmp_path / "c.json")})  # fmt: skip
    other = processing.run(EXTRACT, {"INPUT_S2L2A": source, "INPUT_S1RTC": example("S1RTC"), **MODEL, "MERGE": "concat",
                                     "OUTPUT": str(tmp_path / "other.tif")})  # fmt: skip
    _refused(APPLY, {"EMBEDDINGS": other["OUTPUT"], "CLASSIFIER": trained["OUTPUT_CLASSIFIER"],
                     "OUTPUT": str(tmp_path / "x.tif")},
             r"^EMBEDDINGS: the embedding raster layer 'other' comes from another model or configuration than the "
             r"classifier 'c.json' \(modalities: S2L2A vs S2L2A\+S1RTC; merge: 'mean' vs 'concat'; dim: 64 vs 128\)",
             tmp_path)  # fmt: skip


def test_overlap_of_partial_patches(terramind_provider, example, tmp_path):
    _refused(EXTRACT, {"INPUT_S2L2A": example("S2L2A"), **MODEL, "OVERLAP": 40, "OUTPUT": str(tmp_path / "e.tif")},
             r"^OVERLAP: must be a multiple of 16 for embeddings", tmp_path)


def test_parameter_keys_are_stable(terramind_provider):
    keys = {alg: [p.name() for p in QgsApplication.processingRegistry().algorithmById(alg).parameterDefinitions()]
            for alg in (SIMILARITY, CLUSTER, CLASSIFY, APPLY)}  # fmt: skip
    assert keys[CLUSTER] == ["EMBEDDINGS", "K", "SEED", "SAMPLE_SIZE", "MAX_ITERATIONS", "OUTPUT", "OUTPUT_CENTRES"]
    assert keys[CLASSIFY] == ["EMBEDDINGS", "LABELS", "CLASS_FIELD", "FOLDS", "SEED", "REGULARIZATION", "UPSAMPLE",
                              "OUTPUT", "OUTPUT_PROBABILITIES", "OUTPUT_CLASSIFIER"]  # fmt: skip
    assert keys[APPLY] == ["EMBEDDINGS", "CLASSIFIER", "UPSAMPLE", "OUTPUT", "OUTPUT_PROBABILITIES"]
    assert keys[SIMILARITY][:3] == ["EMBEDDINGS", "REFERENCES", "AGGREGATE"] and "INPUT_S2L2A" in keys[SIMILARITY]
    extract = [p.name() for p in QgsApplication.processingRegistry().algorithmById(EXTRACT).parameterDefinitions()]
    assert extract[:8] == [f"INPUT_{m}" for m in ("S2L2A", "S2L1C", "S2RGB", "S1GRD", "S1RTC", "DEM", "NDVI", "LULC")]
    assert {"BAND_SUBSET_S2L2A", "MERGE", "LAYERS", "TIM", "DATA_TYPE", "OUTPUT", "OUTPUT_PCA"} <= set(extract)
