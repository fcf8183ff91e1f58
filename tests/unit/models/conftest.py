"""Fixtures shared by the model tests (helpers live in terramind_fixtures.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module's torch ops on one thread (``pytestmark = pytest.mark.usefixtures(...)``): on the
    shared 2-core machine, two OpenMP threads competing with other processes were 2-4x slower than
    one (results agree within the tolerance)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
