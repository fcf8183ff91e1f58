"""Fixtures of the fine-tuning tests: the example datasets (written once per session) and one torch thread."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # example_data, tensor_summary

from example_data import three_class_dataset, water_dataset  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One OpenMP thread, as the golden script uses: reductions then sum in the same order (and on the
    shared 2-core machine two threads competing with other processes are slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def water_ds(tmp_path_factory):
    return water_dataset(tmp_path_factory.mktemp("water") / "dataset")


@pytest.fixture(scope="session")
def three_class_ds(tmp_path_factory):
    return three_class_dataset(tmp_path_factory.mktemp("three") / "dataset")
