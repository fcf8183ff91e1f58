"""A fleet of scenes on Dask distributed: one worker job per scene (``python -m <plugin>.models.fleet``).

``template`` (the job template and its placeholders), ``scenes`` and ``stac`` (which rasters make
a scene), ``plan`` (jobs, and what a rerun skips), ``manifest`` (``manifest.jsonl``), ``runner``
(the core: ``Fleet``, with injected progress and cancel), ``scene_task`` and ``worker_process``
(what runs on a Dask worker: the worker CLI as a subprocess), ``cluster`` (LocalCluster, a
scheduler, or a module's cluster), ``reporting`` (progress bar and events), ``cli``.
Nothing here imports torch; the scenes' worker processes do.
"""
