"""A graphical model (data/reconstruct_chain.model3) chaining native algorithms with ours:
native:fillnodata -> terramind:reconstructwithtokenizer -> native:rasterlayerstatistics.
"""

from __future__ import annotations

import processing
from qgis.core import QgsProcessingModelAlgorithm
from tm_helpers import QGIS_DATA, raster_facts


def test_model_runs_through_processing(terramind_provider, example, tmp_path):
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(QGIS_DATA / "reconstruct_chain.model3"))
    assert [model.childAlgorithm(c).algorithmId() for c in ("fill", "reconstruct", "statistics")] == [
        "native:fillnodata", "terramind:reconstructwithtokenizer", "native:rasterlayerstatistics"]
    rec_path, html_path = tmp_path / "reconstructed_dem.tif", tmp_path / "stats.html"
    result = processing.run(model, {"dem": example("DEM"), "reconstruct:reconstruction": str(rec_path),
                                    "statistics:statistics": str(html_path)})
    assert result["reconstruct:reconstruction"] == str(rec_path)
    facts = raster_facts(rec_path)
    assert (facts["size"], facts["count"], facts["descriptions"]) == ((224, 224), 1, ["Elevation"])
    assert facts["tags"]["TERRAMIND_MODEL_ID"] == "test_tokenizer_dem"
    report = html_path.read_text(encoding="utf-8")
    assert "Mean value" in report and str(rec_path.name) in report  # statistics computed on our output
