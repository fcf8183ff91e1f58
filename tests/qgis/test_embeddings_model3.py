"""A graphical model (data/embeddings_chain.model3): Extract embeddings once, then Map similarity, Cluster
embeddings and Few-shot classify all read that one embedding raster — no re-encoding."""

from __future__ import annotations

import processing
from qgis.core import QgsProcessingModelAlgorithm
from test_embeddings import POINTS, points_layer
from tm_helpers import QGIS_DATA, raster_facts


def test_model_chains_extract_into_similarity_clusters_and_classes(terramind_provider, example, tmp_path):
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(QGIS_DATA / "embeddings_chain.model3"))
    ids = {c: model.childAlgorithm(c).algorithmId() for c in ("extract", "similarity", "cluster", "classify")}
    assert ids == {"extract": "terramind:extractembeddings", "similarity": "terramind:mapsimilarity",
                   "cluster": "terramind:clusterembeddings", "classify": "terramind:classifyfewshot"}  # fmt: skip
    destinations = [p.name() for p in model.destinationParameterDefinitions()]
    assert sorted(destinations) == ["classes", "clusters", "similarity"]  # the extract output stays temporary
    source = example("S2L2A")
    result = processing.run(model, {
        "s2": source, "references": points_layer(source, [(40, 40)]),
        "labels": points_layer(source, POINTS, ["water", "land"] * 5),
        **{name: str(tmp_path / f"{name}.tif") for name in destinations}})  # fmt: skip
    sources = set()
    for key in destinations:
        assert result[key] == str(tmp_path / f"{key}.tif")
        facts = raster_facts(result[key])
        assert facts["size"] == (14, 14) and facts["tags"]["TERRAMIND_UNTRAINED"] == "YES"
        sources.add(facts["tags"]["TERRAMIND_EMBEDDING_FILE"])
    assert len(sources) == 1  # all three read the same embedding raster, made once
