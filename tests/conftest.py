"""Shared test set-up: the plugin under its package name, the skip guard, a clean catalogue per test.

The repository root is the plugin folder, and the plugin uses relative imports, so tests import it
as ``terramind_qgis`` through ``.pluginpath/terramind_qgis -> ..`` (made by ``make setup``, or here).
Helpers shared by tests are in ``testlib`` (this folder is on ``sys.path``).
"""

from __future__ import annotations

import os
import sys

import pytest

from testlib.paths import GOLDENS, PLUGIN_PATH, REPO

pytest_plugins = ["testlib.skip_guard", "pytester"]

_link = PLUGIN_PATH / "terramind_qgis"
if not _link.exists():
    PLUGIN_PATH.mkdir(exist_ok=True)
    os.symlink("..", _link)
if str(PLUGIN_PATH) not in sys.path:
    sys.path.insert(0, str(PLUGIN_PATH))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _catalogue_restored():
    """Model cards a test registers are gone after it: test order cannot change what a test sees."""
    from terramind_qgis.models.core import catalogue

    state = catalogue.registry_state()
    yield
    catalogue.restore_registry(state)


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def goldens_dir():
    return GOLDENS
