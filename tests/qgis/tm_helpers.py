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


def generation_available() -> bool:
    """Whether models/build.py offers ``load_generation`` yet (another helper writes it)."""
    build = REPO / "models" / "build.py"
    return build.exists() and "def load_generation" in build.read_text(encoding="utf-8")
