"""One real Dask LocalCluster for the fleet tests: 2 worker processes x 1 thread, each with one GPU resource
(scenes of a cuda template are placed by it; on this CPU machine their worker then refuses cuda)."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="session")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      resources={"GPU": 1}, preload=["terramind_qgis.models.fleet.worker_preload"],
                      silence_logs=logging.ERROR) as c:  # fmt: skip
        yield c


@pytest.fixture(scope="session")
def scheduler(cluster) -> str:
    return cluster.scheduler_address
