"""Where a model's weights file is: the Hugging Face Hub cache, a local file, or a local folder.

``resolve_weights(spec, weights)`` turns a catalogue entry plus the user's optional ``weights``
argument into one local file path:

- ``weights=None``: the entry's Hugging Face source (``spec.weights``: repo, file, revision). The
  local Hub cache is checked first (no network access when the file is there); on a miss the file
  is downloaded with ``huggingface_hub.hf_hub_download`` into that cache. The cache folder and the
  offline switch are read from the environment *at call time* (``HF_HUB_CACHE``, ``HF_HOME``,
  ``HF_HUB_OFFLINE``), so a long-running worker honours them like a fresh process would.
- ``weights=<file>``: that file.
- ``weights=<folder>``: the catalogue's file name inside it (or the same name with a
  ``.safetensors`` suffix), else a Hugging Face cache laid out under it (a cache root
  ``models--org--name/...``, an ``HF_HOME`` with ``hub/``, or a ``models--org--name`` folder), else,
  for entries without a catalogue file name, the only checkpoint file in it.

A source whose file name is not known offline (``WeightsSource.filename`` "", ``filename_match``
set: the official fine-tuned models) is resolved by ``resolve_filename``: in the cache (the
revision's snapshot) or a folder, the one checkpoint file whose name contains ``filename_match``;
else, online, from the repo listing (``HfApi.list_repo_files``) by the same rule; a ``.safetensors``
file wins over a pickle file of the same name. The Hub endpoint is ``HF_ENDPOINT`` (read at call
time too; tests point it at a local fake Hub).

Errors: a Hub failure (offline cache miss, no network, unknown repo/revision/file, gated repo,
checksum mismatch) is one ``DownloadError`` naming the repo, file and revision and saying how to
provide the file locally; a local path that does not exist or holds no usable file is a
``ConfigError`` naming it.

Cache-first means a branch revision such as ``main`` is not re-checked for updates once cached;
pin commit hashes (``tools/pin_revisions.py``) for reproducible runs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..core.catalogue import ModelSpec, WeightsSource
from ..core.errors import CancelledError, ConfigError, DownloadError
from ..core.progress import NullProgress, Progress, check_cancelled

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file on disk and where it came from (for output metadata)."""

    path: Path
    origin: str  # "hub" (Hugging Face cache or download) or "local"
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None

    @property
    def description(self) -> str:
        """A short provenance string, e.g. ``hf://org/repo@main/file.pt`` or the local path."""
        if self.origin == "hub":
            return f"hf://{self.repo_id}@{self.revision}/{self.filename}"
        return str(self.path)


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache folder, from the environment as it is now."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids network access (read now, not at import time)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().lower() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_weights(
    spec: ModelSpec,
    weights: str | os.PathLike[str] | None = None,
    *,
    progress: Progress | None = None,
) -> ResolvedWeights:
    """The local weights file of catalogue entry ``spec`` (see the module docstring)."""
    if weights is not None and str(weights) != "":
        return ResolvedWeights(path=_resolve_local(spec, Path(weights).expanduser().absolute()), origin="local")
    if spec.weights is None:
        raise ConfigError(
            f"model '{spec.id}' has no weights source in its catalogue card; give a weights file or "
            f"folder, or use the deterministic untrained weights (untrained=True) for testing"
        )
    src = resolve_filename(spec.weights, progress=progress)
    path = download(src, progress=progress)
    return ResolvedWeights(path, "hub", src.repo_id, src.filename, src.revision)


def hub_endpoint() -> str | None:
    """The Hub's address from ``HF_ENDPOINT`` as it is now (None: huggingface_hub's default)."""
    return os.environ.get("HF_ENDPOINT") or None


def pick_checkpoint(names: list[str], source: WeightsSource) -> str | None:
    """The file of ``names`` that ``source.filename_match`` names (module docstring); None when none does.

    Several different checkpoints matching is a ``DownloadError`` listing them."""
    match = (source.filename_match or "").lower()
    found = [n for n in names if Path(n).suffix.lower() in CHECKPOINT_SUFFIXES and match in Path(n).name.lower()]
    stems = sorted({str(Path(n).with_suffix("")) for n in found})
    if not stems:
        return None
    if len(stems) > 1:
        raise DownloadError(
            f"repo '{source.repo_id}' (revision '{source.revision}') has several checkpoint files named "
            f"*{source.filename_match}*: {', '.join(sorted(found))}; give the one to use as the model's weights file"
        )
    same = sorted(found, key=lambda n: (Path(n).suffix.lower() != ".safetensors", n))
    return same[0]


def resolve_filename(source: WeightsSource, *, progress: Progress | None = None) -> WeightsSource:
    """``source`` with its file name: as it is when known, else from the cache or the repo listing."""
    if source.filename:
        return source
    cache_dir = hub_cache_dir()
    cached = pick_checkpoint(_snapshot_files(cache_dir / _repo_folder(source), source), source)
    if cached is not None:
        return replace(source, filename=cached)
    if hub_offline():
        raise _download_error(source, cache_dir, "its file name is not known offline, it is not in the local cache "
                                                 "and HF_HUB_OFFLINE=1 forbids asking the Hub for the repo's files")  # fmt: skip
    from huggingface_hub import HfApi

    (progress or NullProgress()).info(f"listing the files of {source.repo_id} (revision {source.revision}) on Hugging Face")
    try:
        names = HfApi(endpoint=hub_endpoint()).list_repo_files(source.repo_id, revision=source.revision)
    except Exception as e:  # every Hub/network failure becomes one DownloadError
        raise _download_error(source, cache_dir, _reason(e)) from None
    name = pick_checkpoint(list(names), source)
    if name is None:
        raise _download_error(source, cache_dir, f"the repo has no checkpoint file named *{source.filename_match}* "
                                                 f"(its files: {', '.join(sorted(names)) or 'none'})")  # fmt: skip
    return replace(source, filename=name)


def _repo_folder(source: WeightsSource) -> str:
    return "models--" + source.repo_id.replace("/", "--")


def _snapshot_files(repo_cache: Path, source: WeightsSource) -> list[str]:
    """Files (relative paths) of the revision's snapshot in a ``models--org--name`` cache folder
    (every snapshot's when the revision has no ref there)."""
    snapshots = repo_cache / "snapshots"
    if not snapshots.is_dir():
        return []
    ref = repo_cache / "refs" / source.revision
    commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else source.revision
    roots = [snapshots / commit] if (snapshots / commit).is_dir() else sorted(p for p in snapshots.iterdir() if p.is_dir())
    return sorted({str(f.relative_to(root)) for root in roots for f in root.rglob("*") if f.is_file()})


def download(source: WeightsSource, *, progress: Progress | None = None) -> Path:
    """The cached copy of ``source``, downloading it when it is not cached (and not offline)."""
    progress = progress or NullProgress()
    source = resolve_filename(source, progress=progress)
    cache_dir = hub_cache_dir()
    cached = _cached_file(cache_dir, source)
    if cached is not None:
        return cached
    if hub_offline():
        reason = "it is not in the local cache and HF_HUB_OFFLINE=1 forbids downloading"
        raise _download_error(source, cache_dir, reason)
    from huggingface_hub import hf_hub_download

    progress.info(f"downloading {source.filename} from Hugging Face ({source.repo_id}, revision {source.revision})")
    try:
        path = Path(
            hf_hub_download(
                source.repo_id,
                source.filename,
                revision=source.revision,
                cache_dir=str(cache_dir),
                tqdm_class=_progress_bar_class(progress),
                endpoint=hub_endpoint(),
            )
        )
    except CancelledError:
        raise
    except Exception as e:  # every Hub/network/disk failure becomes one DownloadError
        raise _download_error(source, cache_dir, _reason(e)) from None
    if source.sha256:
        _verify_sha256(path, source, cache_dir, progress)
    return path


def _cached_file(cache_dir: Path, source: WeightsSource) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            source.repo_id, source.filename, cache_dir=str(cache_dir), revision=source.revision
        )
    except Exception:  # an unreadable cache is a miss, not a failure
        return None
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _download_error(source: WeightsSource, cache_dir: Path, reason: str) -> DownloadError:
    url = f"https://huggingface.co/{source.repo_id}/resolve/{source.revision}/{source.filename}"
    if not source.filename:
        url = f"the checkpoint named *{source.filename_match}* from https://huggingface.co/{source.repo_id}/tree/{source.revision}"
    what = f"weights file '{source.filename}'" if source.filename else f"the checkpoint named *{source.filename_match}*"
    return DownloadError(
        f"cannot get {what} from Hugging Face repo '{source.repo_id}' "
        f"(revision '{source.revision}'): {reason}. To provide it locally, download {url} on a "
        f"connected machine and give the file (or its folder) as the model weights, or copy the "
        f"Hugging Face cache folder 'models--{source.repo_id.replace('/', '--')}' into {cache_dir}"
    )


def _reason(e: Exception) -> str:
    """A one-line reason for a Hub failure, without a traceback."""
    name = type(e).__name__
    known = {
        "RepositoryNotFoundError": "the repository does not exist or needs a login",
        "GatedRepoError": "the repository is gated; accept its terms and log in (HF_TOKEN)",
        "RevisionNotFoundError": "the revision does not exist",
        "EntryNotFoundError": "the file does not exist in that revision",
        "RemoteEntryNotFoundError": "the file does not exist in that revision",
        "LocalEntryNotFoundError": "the Hub could not be reached (no network connection?) and the file is not cached",
    }
    if name in known:
        return known[name]
    first_line = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{name}: {first_line}" if first_line else name


def _verify_sha256(path: Path, source: WeightsSource, cache_dir: Path, progress: Progress) -> None:
    progress.info(f"verifying the checksum of {path.name}")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 * 1024 * 1024), b""):
            digest.update(block)
            check_cancelled(progress)
    if digest.hexdigest() != source.sha256:
        raise _download_error(
            source,
            cache_dir,
            f"the downloaded file {path} has sha256 {digest.hexdigest()}, expected {source.sha256} "
            f"(delete it and download again)",
        )


def _progress_bar_class(progress: Progress) -> type:
    """A silent ``tqdm`` class that forwards download progress and cancellation to ``progress``."""
    from tqdm import tqdm

    class _ProgressBar(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._bytes_done = float(kwargs.get("initial") or 0)
            self._bytes_total = kwargs.get("total")

        def update(self, n: float | None = 1) -> bool | None:
            self._bytes_done += float(n or 0)
            if self._bytes_total:
                progress.set_progress(min(100.0, 100.0 * self._bytes_done / float(self._bytes_total)))
            check_cancelled(progress)
            return None

    return _ProgressBar


# ----------------------------------------------------------------------------- local files


def _resolve_local(spec: ModelSpec, path: Path) -> Path:
    if not path.exists():
        raise ConfigError(f"weights path '{path}' for model '{spec.id}' does not exist")
    if path.is_file():
        return path
    if not path.is_dir():
        raise ConfigError(f"weights path '{path}' for model '{spec.id}' is neither a file nor a folder")
    source = spec.weights
    if source is not None:
        found = find_in_folder(path, source)
        if found is not None:
            return found
        raise ConfigError(
            f"folder '{path}' given as weights of model '{spec.id}' contains neither '{source.display_name}' "
            f"nor a Hugging Face cache of '{source.repo_id}' holding it; give the file itself or its folder"
        )
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    listing = ", ".join(p.name for p in candidates) or "none"
    raise ConfigError(
        f"folder '{path}' given as weights of model '{spec.id}' must contain exactly one checkpoint file "
        f"({', '.join(CHECKPOINT_SUFFIXES)}), found: {listing}; give the file itself"
    )


def find_in_folder(folder: Path, source: WeightsSource) -> Path | None:
    """``source``'s file in ``folder``: by name (or its ``.safetensors`` twin), or in a Hub cache there.

    A source without a file name takes the folder's (or the cache's) one checkpoint file its
    ``filename_match`` names."""
    if not source.filename:
        found = pick_checkpoint([p.name for p in folder.iterdir() if p.is_file()], source)
        if found is not None:
            return folder / found
        for repo_cache in (folder, folder / _repo_folder(source), folder / "hub" / _repo_folder(source)):
            name = pick_checkpoint(_snapshot_files(repo_cache, source), source)
            if name is not None:
                return _find_in_repo_cache(repo_cache, replace(source, filename=name))
        return None
    stem = Path(source.filename).stem
    for name in (source.filename, stem + ".safetensors"):
        if (folder / name).is_file():
            return folder / name
    repo_folder = "models--" + source.repo_id.replace("/", "--")
    for repo_cache in (folder, folder / repo_folder, folder / "hub" / repo_folder):
        if (repo_cache / "snapshots").is_dir():
            found = _find_in_repo_cache(repo_cache, source)
            if found is not None:
                return found
    return None


def _find_in_repo_cache(repo_cache: Path, source: WeightsSource) -> Path | None:
    """``source.filename`` in a ``models--org--name`` cache folder: its revision, else the only copy."""
    snapshots = repo_cache / "snapshots"
    ref = repo_cache / "refs" / source.revision
    commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else source.revision
    if (snapshots / commit / source.filename).is_file():
        return snapshots / commit / source.filename
    copies = [p for p in sorted(snapshots.glob(f"*/{source.filename}")) if p.is_file()]
    return copies[0] if len(copies) == 1 else None
