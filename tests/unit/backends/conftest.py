"""Fixtures of the ONNX backend tests: golden segmentation models, test tokenizers, and their exports.

Each export is made once per session (see onnx_fixtures.py for what the models are).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx_fixtures import CATALOGUE, load_case_model

from terramind_qgis.models import build
from terramind_qgis.models.core import catalogue
from terramind_qgis.models.core.job import ModelRequest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny Sen1Floods11 golden model (``SegmentationModel``)."""
    return load_case_model("tiny_sen1floods11", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_onnx(tiny, tmp_path_factory) -> Path:
    from terramind_qgis.models.backends.onnx_export import export_segmentation

    return export_segmentation(tiny, tmp_path_factory.mktemp("onnx") / "flood_tiny.onnx", tile_size=224)


@pytest.fixture(scope="session")
def test_cards() -> None:
    catalogue.load_cards(CATALOGUE)


@pytest.fixture(scope="session")
def s2_tokenizer(test_cards):
    return build.load_tokenizer(ModelRequest("test_tokenizer_s2l2a", untrained=True))


@pytest.fixture(scope="session")
def s2_tokenizer_onnx(s2_tokenizer, tmp_path_factory) -> tuple[Path, Path]:
    from terramind_qgis.models.backends.onnx_export import export_tokenizer

    return export_tokenizer(s2_tokenizer, tmp_path_factory.mktemp("tok_s2"), image_size=224)


@pytest.fixture(scope="session")
def lulc_tokenizer(test_cards):
    return build.load_tokenizer(ModelRequest("test_tokenizer_lulc", untrained=True))


@pytest.fixture(scope="session")
def lulc_tokenizer_onnx(lulc_tokenizer, tmp_path_factory) -> tuple[Path, Path]:
    from terramind_qgis.models.backends.onnx_export import export_tokenizer

    return export_tokenizer(lulc_tokenizer, tmp_path_factory.mktemp("tok_lulc"), image_size=224)
