"""The fleet's manifest: ``manifest.jsonl`` beside the outputs, one JSON object per finished scene.

Record (one line, appended, flushed and fsynced when the scene ends; a later line of the same scene
supersedes an earlier one)::

    {"scene": "S2A_...", "task": "segment", "status": "succeeded" | "failed",
     "outputs": {"classes": {"path": "S2A_.../classes.tif", "sha256": "…", "bytes": 123456}},
     "seconds": 41.2, "worker": "tcp://10.0.0.5:40123", "attempts": 1, "error": null | "one line",
     "errors": ["attempt 1: …"], "exit_code": 0, "peak_rss_mb": 812.4, "warnings": 0,
     "job_sha256": "…", "run": "20250101T120000Z-1a2b", "finished": "2025-01-01T12:03:00Z"}

Output paths are relative to the manifest's folder. A torn last line (the fleet killed while
writing) is ignored when read, and the next run starts on a fresh line. A scene is complete (and
skipped by a rerun) when its latest record succeeded for the same job (``job_sha256``) and every
output exists with the recorded size and sha256. One fleet at a time writes a folder (an exclusive
``flock`` on the manifest).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import IO, Any

from ..core.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock (the fleet itself is for POSIX machines)
    fcntl = None  # type: ignore[assignment]

MANIFEST_NAME = "manifest.jsonl"
_CHUNK = 1 << 20


def file_digest(path: str) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def read_records(path: str) -> list[dict[str, Any]]:
    """Every well-formed record of a manifest file (none if it does not exist); torn lines are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("scene"), str):
            records.append(obj)
    return records


def latest_records(path: str) -> dict[str, dict[str, Any]]:
    """The last record of each scene."""
    return {r["scene"]: r for r in read_records(path)}


def outputs_match(record: dict[str, Any], folder: str, outputs: dict[str, str]) -> bool:
    """Whether ``record`` succeeded and each of ``outputs`` (key -> path) exists with its size and sha256."""
    recorded = record.get("outputs") or {}
    if record.get("status") != "succeeded" or set(recorded) != set(outputs):
        return False
    for key, path in outputs.items():
        entry = recorded[key]
        if not isinstance(entry, dict) or os.path.normpath(os.path.join(folder, entry.get("path", ""))) != os.path.normpath(path):
            return False
        try:
            if os.path.getsize(path) != entry.get("bytes") or file_digest(path)[0] != entry.get("sha256"):
                return False
        except OSError:
            return False
    return True


class Manifest:
    """The manifest of one output folder, open for appending (a context manager)."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)
        self.path = os.path.join(self.folder, MANIFEST_NAME)
        self._file: IO[str] | None = None

    def __enter__(self) -> Manifest:
        os.makedirs(self.folder, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        try:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise ConfigError(f"another fleet is writing to '{self.folder}' (its manifest is locked)") from None
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":  # a torn last line: start a fresh one
                f.write("\n")
                f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def latest(self) -> dict[str, dict[str, Any]]:
        return latest_records(self.path)

    def append(self, record: dict[str, Any]) -> None:
        """Append one record durably (written, flushed and fsynced before this returns)."""
        assert self._file is not None, "the manifest is not open"
        self._file.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def relative(self, path: str) -> str:
        return os.path.relpath(path, self.folder)
