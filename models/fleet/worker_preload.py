"""Dask worker preload of the fleet's LocalCluster: the worker process ignores SIGINT.

A Ctrl-C in a terminal goes to the whole foreground process group, LocalCluster's worker
processes included; without this they would die with it and take their running scenes along,
while the fleet's default on Ctrl-C is to let running scenes finish. (The scenes' worker
processes run in sessions of their own, ``worker_process.py``.)
"""

from __future__ import annotations

import signal
from typing import Any


def dask_setup(worker: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
