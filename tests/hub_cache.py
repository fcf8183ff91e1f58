"""A Hugging Face cache laid out on disk as huggingface_hub lays it out, for offline loading tests.

Importable from every test folder (``tests/`` is on ``sys.path`` through its conftest.py).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_hub_cache(cache: Path, repo_id: str, filename: str, content: bytes, revision: str = "main") -> Path:
    """Put ``content`` in ``cache`` as ``repo_id``'s ``filename``: blob + snapshot symlink + refs/<revision>.

    Returns the snapshot path (what ``hf_hub_download`` returns for it).
    """
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    snapshot = repo / "snapshots" / COMMIT / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(blob, snapshot.parent), snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(COMMIT)
    return snapshot
