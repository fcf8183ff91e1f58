"""Asserting on the one-line message a user sees: the field at fault, then the rule's message."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from terramind_qgis.models.core.errors import TerraMindError, where


@contextmanager
def refused(match: str, error: type[TerraMindError] = TerraMindError) -> Iterator[pytest.ExceptionInfo]:
    """Like ``pytest.raises(error)``, matching ``match`` against ``where(error)`` (``field: message``)."""
    with pytest.raises(error) as info:
        yield info
    text = where(info.value)
    assert re.search(match, text), f"{match!r} not in {text!r}"
