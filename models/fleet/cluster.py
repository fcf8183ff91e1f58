"""The Dask cluster a fleet runs on: a ``LocalCluster`` (default), a scheduler, or one a module makes.

- default: ``LocalCluster(processes=True)`` with ``workers`` × ``threads_per_worker``,
  ``memory_limit`` per worker and, with ``gpus_per_worker``, the worker resource ``GPU``. Its
  workers ignore SIGINT (``worker_preload.py``): a Ctrl-C in the terminal reaches the whole
  process group, and the fleet, not the workers, decides what it means.
- ``scheduler``: ``tcp://host:8786`` of a running ``dask scheduler`` with ``dask worker``\\ s.
- ``cluster_module``: ``module:function`` or ``path/to/file.py:function`` (default function
  ``make_cluster``) returning a Dask cluster (``SLURMCluster``, ``KubeCluster``, ...) or a
  scheduler address; the fleet closes a cluster it got this way when it ends.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError, WorkerError


@dataclass(frozen=True)
class ClusterSettings:
    scheduler: str | None = None
    cluster_module: str | None = None
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    gpus_per_worker: int = 0
    dashboard_address: str = ":8787"

    @property
    def local(self) -> bool:
        return not self.scheduler and not self.cluster_module


def load_cluster_factory(spec: str) -> Any:
    """The callable named by ``module:function`` or ``file.py:function``."""
    target, _, name = spec.partition(":")
    name = name or "make_cluster"
    try:
        if target.endswith(".py"):
            if not os.path.isfile(target):
                raise ConfigError(f"--cluster-module: no file '{target}'")
            module_spec = importlib.util.spec_from_file_location("terramind_fleet_cluster", target)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as e:
        raise ConfigError(f"--cluster-module {spec}: cannot import {target}: {e}") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ConfigError(f"--cluster-module {spec}: {target} has no function '{name}'")
    return factory


def visible_gpus() -> int | None:
    """How many GPUs this machine shows (``CUDA_VISIBLE_DEVICES``, else the NVIDIA driver's list); None: unknown."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() and not v.strip().startswith("-")])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return None


def scene_threads(settings: ClusterSettings) -> int:
    """CPU threads each scene's worker process may use on a LocalCluster (cores / concurrent scenes)."""
    return max(1, (os.cpu_count() or 1) // max(1, settings.workers * settings.threads_per_worker))


@contextlib.contextmanager
def open_client(settings: ClusterSettings) -> Iterator[Any]:
    """A connected ``distributed.Client`` for ``settings``; the cluster it started is closed on exit."""
    from distributed import Client, LocalCluster

    cluster: Any = None
    try:
        if settings.scheduler:
            address: Any = settings.scheduler
        elif settings.cluster_module:
            address = cluster = load_cluster_factory(settings.cluster_module)()
            if isinstance(cluster, str):
                address, cluster = cluster, None
        else:
            package = __name__.rsplit(".", 1)[0]
            cluster = address = LocalCluster(
                n_workers=settings.workers, threads_per_worker=settings.threads_per_worker, processes=True,
                memory_limit=settings.memory_limit, dashboard_address=settings.dashboard_address,
                resources={"GPU": settings.gpus_per_worker} if settings.gpus_per_worker else None,
                preload=[f"{package}.worker_preload"], silence_logs=logging.ERROR,
            )  # fmt: skip
        client = Client(address)  # connect timeout: Dask config distributed.comm.timeouts.connect (30 s)
    except (OSError, TimeoutError) as e:
        if cluster is not None:
            cluster.close()
        raise WorkerError(f"cannot reach the Dask scheduler {settings.scheduler or ''}: {e}".replace("  ", " ")) from None
    except ValueError as e:  # LocalCluster's own checks (memory_limit, ...)
        raise ConfigError(f"cannot start the local Dask cluster: {e}") from None
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
