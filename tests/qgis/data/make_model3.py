"""Writes the graphical models the tests load (kept in the repository):

- reconstruct_chain.model3: native fill-nodata -> TerraMind reconstruction -> native statistics
  (tests/qgis/test_model3.py);
- embeddings_chain.model3: Extract embeddings -> Map similarity, Cluster embeddings and Few-shot
  classify, all three reading the one embedding raster (tests/qgis/test_embeddings_model3.py);
- finetune_chain.model3: Prepare training data -> Fine-tune segmentation model -> Segment with fine-tuned
  model (tests/qgis/test_finetune.py).

Run once with the project venv (QT_QPA_PLATFORM=offscreen .venv/bin/python tests/qgis/data/make_model3.py).
"""

import os
import sys

from qgis.core import (
    QgsApplication,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QPointF

HERE = os.path.dirname(os.path.abspath(__file__))


def child(alg_id: str, cid: str, x: float, params: dict, outputs: dict | None = None) -> QgsProcessingModelChildAlgorithm:
    c = QgsProcessingModelChildAlgorithm(alg_id)
    c.setChildId(cid)
    c.setDescription(cid)
    c.setPosition(QPointF(x, 200))
    for key, source in params.items():
        c.addParameterSources(key, [source])
    for name, (child_output, description) in (outputs or {}).items():
        out = QgsProcessingModelOutput(name, description)
        out.setChildId(cid)
        out.setChildOutputName(child_output)
        out.setMandatory(False)
        c.setModelOutputs({**c.modelOutputs(), name: out})
    return c


def embeddings_chain() -> str:
    """Extract once, then similarity, clusters and a few-shot classification from the same embeddings."""
    model = QgsProcessingModelAlgorithm("embeddings_chain", "terramind_tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("s2", "Sentinel-2 L2A"), QgsProcessingModelParameter("s2"))
    for name, description in (("references", "Reference points"), ("labels", "Labelled points (field class)")):
        model.addModelParameter(QgsProcessingParameterFeatureSource(name, description), QgsProcessingModelParameter(name))
    v = QgsProcessingModelChildParameterSource.fromStaticValue
    embeddings = QgsProcessingModelChildParameterSource.fromChildOutput("extract", "OUTPUT")
    extract = child("terramind:extractembeddings", "extract", 100, {
        "INPUT_S2L2A": QgsProcessingModelChildParameterSource.fromModelParameter("s2"),
        "MODEL": v("test_terramind_tiny"), "UNTRAINED": v(True), "MERGE": v("mean"), "SEED": v(0),
        "DATA_TYPE": v("float32"), "TILE_SIZE": v(128), "OVERLAP": v(32), "BATCH_SIZE": v(4), "DEVICE": v("cpu"),
        "PRECISION": v("fp32"), "OUTPUT": v("TEMPORARY_OUTPUT")})
    similarity = child("terramind:mapsimilarity", "similarity", 300, {
        "EMBEDDINGS": embeddings, "REFERENCES": QgsProcessingModelChildParameterSource.fromModelParameter("references"),
        "AGGREGATE": v("max")}, {"similarity": ("OUTPUT", "Similarity")})
    cluster = child("terramind:clusterembeddings", "cluster", 300, {
        "EMBEDDINGS": embeddings, "K": v(3), "SEED": v(1), "SAMPLE_SIZE": v(1000)}, {"clusters": ("OUTPUT", "Clusters")})
    classify = child("terramind:classifyfewshot", "classify", 300, {
        "EMBEDDINGS": embeddings, "LABELS": QgsProcessingModelChildParameterSource.fromModelParameter("labels"),
        "CLASS_FIELD": v("class"), "FOLDS": v(2), "SEED": v(0), "UPSAMPLE": v(False)},
        {"classes": ("OUTPUT", "Classes")})
    for c in (extract, similarity, cluster, classify):
        model.addChildAlgorithm(c)
    path = os.path.join(HERE, "embeddings_chain.model3")
    assert model.toFile(path), path
    return path


def finetune_chain() -> str:
    """Labels (a class raster) in, a fine-tuned model out, that model mapped over the input."""
    model = QgsProcessingModelAlgorithm("finetune_chain", "terramind_tests")
    for name, description in (("s2", "Sentinel-2 L2A"), ("labels", "Class raster")):
        model.addModelParameter(QgsProcessingParameterRasterLayer(name, description), QgsProcessingModelParameter(name))
    v = QgsProcessingModelChildParameterSource.fromStaticValue
    s2 = QgsProcessingModelChildParameterSource.fromModelParameter("s2")
    prepare = child("terramind:preparetrainingdata", "prepare", 100, {
        "INPUT_S2L2A": s2, "LABEL_RASTER": QgsProcessingModelChildParameterSource.fromModelParameter("labels"),
        "CLASSES": v("*: Others #D9D9D9\n1: Water #1F77B4"), "CHIP_SIZE": v(64), "STRIDE": v(32), "BLOCK_SIZE": v(64),
        "TRAIN_FRACTION": v(0.6), "VAL_FRACTION": v(0.2), "TEST_FRACTION": v(0.2), "SEED": v(1),
        "OUTPUT": v("TEMPORARY_OUTPUT")})
    finetune = child("terramind:finetunesegmentationmodel", "finetune", 300, {
        "DATASET": QgsProcessingModelChildParameterSource.fromChildOutput("prepare", "OUTPUT"),
        "MODEL": v("terramind_v1_tiny"), "UNTRAINED": v(True), "MODEL_NAME": v("water"), "LOSS": v("dice"),
        "CLASS_WEIGHTS": v("none"), "LEARNING_RATE": v(0.001), "EPOCHS": v(1), "BATCH_SIZE": v(4), "PATIENCE": v(0),
        "BACKBONE": v("auto"), "AUGMENT": v(False), "SEED": v(42), "DEVICE": v("cpu"), "PRECISION": v("fp32"),
        "OUTPUT": v("TEMPORARY_OUTPUT")})
    segment = child("terramind:segmentwithfinetunedmodel", "segment", 500, {
        "MODEL_FILE": QgsProcessingModelChildParameterSource.fromChildOutput("finetune", "OUTPUT_CHECKPOINT"),
        "CONFIG": QgsProcessingModelChildParameterSource.fromChildOutput("finetune", "OUTPUT_CONFIG"),
        "INPUT_S2L2A": s2, "SEED": v(0), "TILE_SIZE": v(64), "OVERLAP": v(16), "BATCH_SIZE": v(4), "DEVICE": v("cpu"),
        "PRECISION": v("fp32")}, {"classes": ("OUTPUT", "Classes")})
    for c in (prepare, finetune, segment):
        model.addChildAlgorithm(c)
    path = os.path.join(HERE, "finetune_chain.model3")
    assert model.toFile(path), path
    return path


def main() -> None:
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))
    from processing.core.Processing import Processing

    Processing.initialize()
    print("wrote", embeddings_chain())
    print("wrote", finetune_chain())
    model = QgsProcessingModelAlgorithm("reconstruct_chain", "terramind_tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("dem", "DEM raster"), QgsProcessingModelParameter("dem"))
    v = QgsProcessingModelChildParameterSource.fromStaticValue
    fill = child("native:fillnodata", "fill", 100, {
        "INPUT": QgsProcessingModelChildParameterSource.fromModelParameter("dem"),
        "BAND": v(1), "FILL_VALUE": v(0), "OUTPUT": v("TEMPORARY_OUTPUT")})
    rec = child("terramind:reconstructwithtokenizer", "reconstruct", 300, {
        "INPUT": QgsProcessingModelChildParameterSource.fromChildOutput("fill", "OUTPUT"),
        "MODALITY": v("DEM"), "MODEL": v("test_tokenizer_dem"), "UNTRAINED": v(True), "TIMESTEPS": v(2),
        "SEED": v(0), "TILE_SIZE": v(224), "OVERLAP": v(32), "BATCH_SIZE": v(4), "DEVICE": v("cpu"),
        "PRECISION": v("fp32")}, {"reconstruction": ("OUTPUT", "Reconstructed DEM")})
    stats = child("native:rasterlayerstatistics", "statistics", 500, {
        "INPUT": QgsProcessingModelChildParameterSource.fromChildOutput("reconstruct", "OUTPUT"), "BAND": v(1)},
        {"statistics": ("OUTPUT_HTML_FILE", "Statistics of the reconstruction")})
    for c in (fill, rec, stats):
        model.addChildAlgorithm(c)
    path = os.path.join(HERE, "reconstruct_chain.model3")
    assert model.toFile(path), path
    print("wrote", path)
    app.exitQgis()


if __name__ == "__main__":
    main()
