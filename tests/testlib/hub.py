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


class FakeHub:
    """A local HTTP server speaking the parts of the Hugging Face Hub API that huggingface_hub's
    ``list_repo_files`` and ``hf_hub_download`` use (tree listing, file metadata, file download), for
    tests of the file-name resolution that the real Hub (unreachable here) would serve.

    ``repos``: repo id -> {file name: bytes}. Use as a context manager; ``url`` is the endpoint to put in
    ``HF_ENDPOINT``; ``requests`` records the paths asked for.
    """

    def __init__(self, repos: dict[str, dict[str, bytes]], commit: str = COMMIT) -> None:
        self.repos, self.commit, self.requests = repos, commit, []
        self._server = None

    def __enter__(self) -> FakeHub:
        import http.server
        import json
        import threading
        import urllib.parse

        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _route(self) -> tuple[int, dict[str, str], bytes]:
                path = urllib.parse.urlparse(self.path).path
                hub.requests.append(f"{self.command} {path}")
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and "tree" in parts:
                    i = parts.index("tree")
                    repo = "/".join(parts[2:i])
                    if repo not in hub.repos:
                        return 404, {"X-Error-Code": "RepoNotFound"}, b'{"error": "Repository not found"}'
                    listing = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                               for name, data in sorted(hub.repos[repo].items())]  # fmt: skip
                    return 200, {"Content-Type": "application/json"}, json.dumps(listing).encode()
                if "resolve" in parts:
                    i = parts.index("resolve")
                    repo, name = "/".join(parts[:i]), urllib.parse.unquote("/".join(parts[i + 2 :]))
                    data = hub.repos.get(repo, {}).get(name)
                    if data is None:
                        return 404, {"X-Error-Code": "EntryNotFound"}, b'{"error": "Entry not found"}'
                    etag = '"' + hashlib.sha256(data).hexdigest() + '"'
                    return 200, {"X-Repo-Commit": hub.commit, "ETag": etag, "Content-Type": "application/octet-stream"}, data
                return 404, {}, b"{}"

            def _send(self, body: bool) -> None:
                status, headers, data = self._route()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._send(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._send(False)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
