"""Constants and helpers shared by the QGIS-side tests (imported by conftest and test modules)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "tests" / "data" / "examples"
CATALOGUE = REPO / "tests" / "data" / "catalogue"
QGIS_DATA = Path(__file__).resolve().parent / "data"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
SCENE = "282D_485L_3_3"
TEST_TOKENIZERS = {m: f"test_tokenizer_{m.lower()}" for m in ("S2L2A", "S1GRD", "S1RTC", "DEM", "NDVI", "LULC")}
TEST_TERRAMIND = "test_terramind_tiny"


class RecordingFeedback:
    """Factory of a QgsProcessingFeedback that records what the algorithm reports."""

    @staticmethod
    def create(cancel_at_progress: float | None = None):
        from qgis.core import QgsProcessingFeedback

        class Recorder(QgsProcessingFeedback):
            def __init__(self) -> None:
                super().__init__()
                self.infos: list[str] = []
                self.warnings: list[str] = []
                self.debug: list[str] = []
                self.errors: list[str] = []
                self.progress: list[float] = []
                self.cancelled_at: float | None = None

            def pushInfo(self, info):  # noqa: N802
                self.infos.append(info)
                super().pushInfo(info)

            def pushWarning(self, warning):  # noqa: N802
                self.warnings.append(warning)
                super().pushWarning(warning)

            def pushDebugInfo(self, info):  # noqa: N802
                self.debug.append(info)
                super().pushDebugInfo(info)

            def reportError(self, error, fatalError=False):  # noqa: N802, N803
                self.errors.append(error)
                super().reportError(error, fatalError)

            def setProgress(self, progress):  # noqa: N802
                self.progress.append(progress)
                super().setProgress(progress)
                if cancel_at_progress is not None and progress >= cancel_at_progress and not self.isCanceled():
                    import time

                    self.cancelled_at = time.monotonic()
                    self.cancel()

        return Recorder()


def raster_facts(path: str) -> dict:
    """What a GIS sees in a raster file: grid, CRS, bands, data type, nodata, descriptions, tags."""
    from osgeo import gdal, osr

    ds = gdal.Open(str(path))
    assert ds is not None, f"cannot open {path}"
    bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    facts = {
        "size": (ds.RasterXSize, ds.RasterYSize),
        "geotransform": ds.GetGeoTransform(),
        "epsg": srs.GetAuthorityCode(None),
        "count": ds.RasterCount,
        "dtype": gdal.GetDataTypeName(bands[0].DataType),
        "nodata": bands[0].GetNoDataValue(),
        "descriptions": [b.GetDescription() for b in bands],
        "tags": ds.GetMetadata(),
        "categories": bands[0].GetCategoryNames(),
        "has_colour_table": bands[0].GetColorTable() is not None,
    }
    ds = None
    return facts


def read_array(path: str):
    from osgeo import gdal

    ds = gdal.Open(str(path))
    data = ds.ReadAsArray()
    ds = None
    return data


def reduced_terramind_card(model_id: str) -> dict:
    """A custom model card: a reduced TerraMind (no published weights) that generates DEM from S2L2A."""
    return {"id": model_id, "kind": "terramind", "title": "t", "weights": None,
            "config": {"type": "TerraMindConfig", "dim": 64, "num_heads": 2, "encoder_depth": 2, "decoder_depth": 2,
                       "mlp": "gelu", "mlp_hidden": 128, "bias": True},
            "inputs": ["S2L2A"], "outputs": ["DEM"], "tokenizers": {"DEM": "terramind_v1_tokenizer_dem"}}  # fmt: skip


def add_model_cards(monkeypatch, folder: Path, cards: dict[str, dict | str]) -> None:  # noqa: ANN001 - pytest fixture
    """Write ``cards`` (file name → card, or raw text) into ``folder`` and put it first on TERRAMIND_CATALOGUE_PATH."""
    import json
    import os

    for name, card in cards.items():
        (folder / name).write_text(card if isinstance(card, str) else json.dumps(card))
    monkeypatch.setenv("TERRAMIND_CATALOGUE_PATH", os.pathsep.join([str(folder), os.environ["TERRAMIND_CATALOGUE_PATH"]]))
