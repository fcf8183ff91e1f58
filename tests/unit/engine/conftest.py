"""Fixtures of the engine tests (helpers live in engine_fixtures.py)."""

from __future__ import annotations

import pytest
from engine_fixtures import EXAMPLES


@pytest.fixture
def s2_path() -> str:
    return str(EXAMPLES / "S2L2A" / "282D_485L_3_3.tif")
