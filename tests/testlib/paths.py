"""Where the test data lives."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGIN_PATH = REPO / ".pluginpath"  # holds terramind_qgis -> .. (the package name tests import)
TESTS = REPO / "tests"
EXAMPLES = TESTS / "data" / "examples"  # real co-registered 224x224 patches, one folder per modality
CATALOGUE = TESTS / "data" / "catalogue"  # reduced model cards of the official architectures
CONFIGS = TESTS / "data" / "terramind_configs"
GOLDENS = TESTS / "goldens"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
SCENES = ("282D_485L_3_3", "38D_378R_2_3", "433D_629L_3_1", "609U_541L_3_0")
SCENE = SCENES[0]


def example(modality: str, scene: str = SCENE) -> Path:
    """The example patch of ``modality`` for ``scene``."""
    return EXAMPLES / modality / f"{scene}.tif"
