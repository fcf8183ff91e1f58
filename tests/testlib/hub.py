"""A Hugging Face cache laid out on disk as huggingface_hub lays it out, for offline loading tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_hub_cache(cache: Path, repo_id: str, filename: str, content: bytes | Path, revision: str = "main") -> Path:
    """Put ``content`` in ``cache`` as ``repo_id``'s ``filename``: blob + snapshot symlink + refs/<revision>.

    ``content`` is the file's bytes, or an existing file, hard-linked as the blob (large checkpoints
    are not copied). Returns the snapshot path (what ``hf_hub_download`` returns for it)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    key = str(content).encode() if isinstance(content, Path) else content  # a blob's name: any unique hash
    blob = repo / "blobs" / hashlib.sha256(key).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, Path):
        os.link(content, blob)
    else:
        blob.write_bytes(content)
    snapshot = repo / "snapshots" / COMMIT / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    if snapshot.is_symlink() or snapshot.exists():
        snapshot.unlink()
    os.symlink(os.path.relpath(blob, snapshot.parent), snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(COMMIT)
    return snapshot
