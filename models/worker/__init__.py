"""The worker process: runs one job (``models/core/job.py``) and streams JSON-line events.

``__main__``/``cli``: entry point, exit codes, error events; ``events``: the protected event
stream, progress and SIGTERM cancellation; ``device``: device, precision, threads, OOM back-off;
``tasks``: the explicit task table (reconstruct, generate, describe).
"""
