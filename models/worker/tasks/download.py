"""Task ``download``: get models' weights files for offline use (no inputs, no tiles).

Job: ``params.models`` = catalogue ids (default ``[model.id]``); ``model.catalogue_paths``
registers custom model cards first. A TerraMind id brings the tokenizers its card lists (the
official ones: all six) unless ``params.tokenizers`` lists the modalities to take (a list; empty:
the TerraMind file alone); tokenizer ids may also be listed themselves. Each file is taken once.

``params.folder`` (optional): a folder that receives each file under its official file name, the
layout the ``weights`` argument accepts as a folder (models/weights/hub.py ``find_in_folder``; one
folder holds a TerraMind file and its tokenizers' files), as a hard link to the Hugging Face cache
copy where the file system allows one, else as a copy. Without a folder the files stay in the
Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``), where later runs find them, also with
``HF_HUB_OFFLINE=1``.

Each file comes from the cache, else from the Hub (hub.py ``download``: progress relayed, the
checksum verified when the card pins one). A card whose file name is not known offline (the
official fine-tuned models) has it resolved first, from the cache or the repo listing (hub.py
``resolve_filename``; the entry's ``resolved`` is then true). An offline cache miss, a network or
Hub failure is one ``DownloadError`` naming the repo, file and revision and how to provide the file. A file whose
sha256 differs from the one the card pins is refused. Cancellation is checked between files and
while downloading, hashing and copying; a cancelled or failed run leaves no partial file (files
already complete stay).

Result: ``outputs`` = ``{"folder": <folder>}`` when one is given, else ``{}``; ``metrics``:
``files`` (one entry per file: ``model`` = the id whose file it is, ``repo``, ``revision``,
``commit`` = the cache snapshot it came from (null if unknown), ``filename``, ``path`` = in the
folder, else in the cache, ``cache_path``, ``bytes``, ``sha256``, ``placed`` = ``"hard link"``,
``"copy"``, ``"present"`` (the folder already held this very file) or null without a folder),
``total_bytes`` and ``folder``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core import catalogue
from ...core.catalogue import ModelSpec, WeightsSource
from ...core.errors import ConfigError, DownloadError
from ...core.job import Job
from ...core.modalities import get_modality
from ...core.progress import Progress, ScaledProgress, check_cancelled
from ...weights import hub
from .context import RunContext

BLOCK_BYTES = 16 * 1024 * 1024
DOWNLOAD_SHARE = 0.8  # of each file's progress span; the rest is hashing and placing it


@dataclass(frozen=True)
class FileToGet:
    """One weights file and the catalogue entry it belongs to."""

    model_id: str
    source: WeightsSource


@dataclass(frozen=True)
class DownloadRequest:
    files: tuple[FileToGet, ...]
    folder: Path | None

    def close(self) -> None:
        pass


def validate(job: Job, backend: str) -> DownloadRequest:
    """Resolve the ids to their files (no network access); errors mean a bad job."""
    catalogue.register_request_cards(job.model)
    params = job.params
    ids = params.get("models") or ([job.model.id] if job.model.id else [])
    ids = [ids] if isinstance(ids, str) else ids
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ConfigError(f"parameter 'models' must be a non-empty list of catalogue ids, got {ids!r}")
    tokenizers = _tokenizer_choice(params.get("tokenizers"))
    specs = [catalogue.get(i) for i in dict.fromkeys(ids)]
    if tokenizers is not None and not any(s.kind == "terramind" for s in specs):
        raise ConfigError(
            "parameter 'tokenizers' picks the tokenizers of TerraMind models, but 'models' lists none; "
            "list tokenizer ids in 'models' to download tokenizers alone"
        )
    files: dict[tuple[str, str, str], FileToGet] = {}
    for spec in specs:
        for entry in [spec, *_tokenizers_of(spec, tokenizers)]:
            source = _source(entry, spec)
            name = source.filename or f"*{source.filename_match}*"
            files.setdefault((source.repo_id, name, source.revision), FileToGet(entry.id, source))
    folder = params.get("folder") or None
    if folder is not None:
        if not isinstance(folder, str):
            raise ConfigError(f"parameter 'folder' must be a folder path, got {folder!r}")
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ConfigError(f"parameter 'folder': '{folder}' is a file; give a folder")
        _check_unique_names(list(files.values()), folder)
    return DownloadRequest(tuple(files.values()), Path(folder).absolute() if folder else None)


def _tokenizer_choice(value: Any) -> list[str] | None:
    """``params.tokenizers`` as canonical modality names (None: every tokenizer of the model)."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"parameter 'tokenizers' must be a list of modality names, got {value!r}")
    return [get_modality(v).name for v in dict.fromkeys(values)]  # UnsupportedModalityError names it


def _tokenizers_of(spec: ModelSpec, chosen: Sequence[str] | None) -> list[ModelSpec]:
    if spec.kind != "terramind":
        return []
    names = list(spec.tokenizers) if chosen is None else list(chosen)
    missing = [m for m in names if m not in spec.tokenizers]
    if missing:
        raise ConfigError(
            f"model '{spec.id}' has no tokenizer for {', '.join(missing)} (parameter 'tokenizers'); "
            f"its tokenizers are for {', '.join(spec.tokenizers) or 'no modality'}"
        )
    return [catalogue.tokenizer_for(spec, m) for m in names]


def _source(entry: ModelSpec, listed: ModelSpec) -> WeightsSource:
    if entry.weights is not None:
        return entry.weights
    via = "" if entry.id == listed.id else f" (a tokenizer of '{listed.id}'; leave it out with parameter 'tokenizers')"
    raise ConfigError(f"model '{entry.id}'{via} has no published weights: its card names no weights source to download")


def _check_unique_names(files: list[FileToGet], folder: str) -> None:
    """Two different sources cannot share a file name in one folder."""
    by_name: dict[str, FileToGet] = {}
    for item in files:
        if not item.source.filename:
            continue  # resolved at download time (checked again then)
        other = by_name.setdefault(item.source.filename, item)
        if other is not item:
            raise ConfigError(
                f"'{other.model_id}' ({other.source.repo_id}@{other.source.revision}) and '{item.model_id}' "
                f"({item.source.repo_id}@{item.source.revision}) both have a file named '{item.source.filename}'; "
                f"they cannot share the folder '{folder}': download them into different folders"
            )


def run(req: DownloadRequest, ctx: RunContext) -> dict[str, Any]:
    """Get every file (see the module docstring); returns the result event's ``outputs`` and ``metrics``."""
    progress, n = ctx.progress, len(req.files)
    if req.folder is not None:
        try:
            req.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"parameter 'folder': cannot create '{req.folder}': {e.strerror or e}") from None
    entries: list[dict[str, Any]] = []
    for i, item in enumerate(req.files):
        check_cancelled(progress)  # between files
        start, end = 100.0 * i / n, 100.0 * (i + 1) / n
        middle = start + DOWNLOAD_SHARE * (end - start)
        src = hub.resolve_filename(item.source, progress=progress)
        if not item.source.filename:
            progress.info(f"'{item.model_id}': its checkpoint is '{src.filename}' (resolved from the repo listing)")
            same = next((e for e in entries if e["filename"] == src.filename), None)
            if req.folder is not None and same is not None:
                raise ConfigError(f"'{same['model']}' ({same['repo']}) and '{item.model_id}' ({src.repo_id}) both have a "
                                  f"file named '{src.filename}'; they cannot share the folder '{req.folder}': download "
                                  "them into different folders")  # fmt: skip
        progress.info(f"file {i + 1}/{n}: {src.filename} of '{item.model_id}' ({src.repo_id}, revision {src.revision})")
        cached = hub.download(src, progress=ScaledProgress(progress, start, middle))
        finishing = ScaledProgress(progress, middle, end)
        if req.folder is None:
            path, placed = cached, None
            digest = file_sha256(cached, finishing)
            _check_pinned(src, digest, cached)
        else:
            path = req.folder / src.filename
            digest, placed = place_file(cached, path, finishing, expected=src)
        entries.append({
            "model": item.model_id, "repo": src.repo_id, "revision": src.revision, "commit": snapshot_commit(cached),
            "filename": src.filename, "path": str(path), "cache_path": str(cached), "bytes": path.stat().st_size,
            "sha256": digest, "placed": placed, "resolved": not item.source.filename,
        })  # fmt: skip
        progress.set_progress(end)
    total = sum(e["bytes"] for e in entries)
    where = f"in {req.folder}" if req.folder is not None else f"in the Hugging Face cache {hub.hub_cache_dir()}"
    progress.info(f"{n} file{'s' if n != 1 else ''} ({total / 2**30:.2f} GiB) ready for offline use {where}")
    outputs = {"folder": str(req.folder)} if req.folder is not None else {}
    folder = str(req.folder) if req.folder is not None else None
    return {"outputs": outputs, "metrics": {"files": entries, "total_bytes": total, "folder": folder}}


# ----------------------------------------------------------------------------- files


def snapshot_commit(cached: Path) -> str | None:
    """The commit of a Hugging Face cache path ``.../snapshots/<commit>/<file>`` (None otherwise)."""
    parts = cached.parts
    for i in range(len(parts) - 3, -1, -1):
        if parts[i] == "snapshots":
            return parts[i + 1]
    return None


def file_sha256(path: Path, progress: Progress) -> str:
    """SHA-256 of ``path`` (hex), reporting progress by bytes and checking for cancellation."""
    size, done, digest = max(1, path.stat().st_size), 0, hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK_BYTES), b""):
            digest.update(block)
            done += len(block)
            progress.set_progress(100.0 * done / size)
            check_cancelled(progress)
    return digest.hexdigest()


def _copy_with_sha256(src: Path, dst: Path, progress: Progress) -> str:
    """Copy ``src`` to ``dst`` block by block; returns the SHA-256 of what was copied."""
    size, done, digest = max(1, src.stat().st_size), 0, hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for block in iter(lambda: fin.read(BLOCK_BYTES), b""):
            digest.update(block)
            fout.write(block)
            done += len(block)
            progress.set_progress(100.0 * done / size)
            check_cancelled(progress)
    return digest.hexdigest()


def place_file(cached: Path, dest: Path, progress: Progress, *, expected: WeightsSource) -> tuple[str, str]:
    """Put the cached file at ``dest`` (hard link, else copy; atomically); returns (sha256, how).

    The checksum is checked against ``expected.sha256`` (when pinned) before ``dest`` is touched.
    """
    blob = cached.resolve()  # the cache's snapshot entry is a symlink to its blob
    if dest.is_file() and os.path.samefile(blob, dest):
        digest = file_sha256(dest, progress)
        _check_pinned(expected, digest, cached)
        return digest, "present"
    partial = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    try:
        try:
            os.link(blob, partial)
            how, digest = "hard link", file_sha256(partial, progress)
        except OSError:  # another file system, or one without hard links
            _check_free_space(dest.parent, blob.stat().st_size)
            how, digest = "copy", _copy_with_sha256(blob, partial, progress)
        _check_pinned(expected, digest, cached)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return digest, how


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConfigError(
            f"parameter 'folder': '{folder}' has {free / 2**30:.2f} GiB free, the next file needs "
            f"{needed / 2**30:.2f} GiB; free some space or choose another folder"
        )


def _check_pinned(source: WeightsSource, digest: str, cached: Path) -> None:
    if source.sha256 and digest != source.sha256:
        raise DownloadError(
            f"'{cached}' ({source.filename} of {source.repo_id}, revision {source.revision}) has sha256 "
            f"{digest}, but the catalogue pins {source.sha256}; delete it from the cache and download it again"
        )
