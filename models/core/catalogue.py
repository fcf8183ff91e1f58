"""The model catalogue: official TerraMind v1 ids → weights, architecture, modalities (torch-free).

A ``ModelSpec`` is one model card (timm ``PretrainedCfg`` / torchgeo ``WeightsEnum`` idea): the id,
the architecture config, where the weights live (Hugging Face repo, file, pinned revision,
licence), and what goes in and out. The QGIS side lists it without importing torch.

Kinds: ``tokenizer``, ``terramind`` (the foundation models) and ``finetuned``: IBM and ESA's own
fine-tuned segmentation models (``FINETUNED``: ImpactMesh flood and wildfire mapping), whose card
names the TerraTorch config they were trained with (``FinetunedConfig``, the YAML ships with the
plugin), the modalities and dates they read and their classes with names and colours. Their Hub
repos' checkpoint file names are not known offline (the repos were not reachable when this was
written): such a source has ``filename`` "" and ``filename_match``, and the file is resolved at
download time from the repo listing (models/weights/hub.py ``resolve_filename``: the one checkpoint
file whose name contains ``filename_match``), or found in the Hugging Face cache by the same rule.

Custom models (a user's own reduced or re-trained variant, the plugin's own test variants) are
model cards in JSON with the same fields (``ModelSpec.to_dict`` / ``from_dict``), registered with
``register`` or found in the folders named by the ``TERRAMIND_CATALOGUE_PATH`` environment
variable (``os.pathsep``-separated). Entries there may not reuse an official id.

Revisions: the Hub is unreachable where this catalogue was written, so the official entries pin
``OFFICIAL_REVISION`` (the branch the reference, terratorch 1.2.11, downloads). ``tools/pin_revisions.py``
replaces it by the commit hashes (and adds the files' sha256) in ``PINNED_REVISIONS`` when run with
network access.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from .configs import FinetunedConfig, TerraMindConfig, TokenizerConfig
from .errors import ConfigError, ModelNotFoundError
from .job import ModelRequest
from .modalities import IMAGE_OUTPUTS, INPUTS, MODALITIES, TOKENIZED, ClassInfo

OFFICIAL_REVISION = "main"
HF_ORG = "ibm-esa-geospatial"
LICENSE = "Apache-2.0"


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's official weights live."""

    repo_id: str
    filename: str  # "" when not known offline: resolved from the repo listing with ``filename_match``
    revision: str = OFFICIAL_REVISION
    sha256: str | None = None
    license: str = LICENSE
    filename_match: str | None = None  # the checkpoint whose file name contains this (case-insensitive)

    @property
    def display_name(self) -> str:
        """The file name, or how it will be found."""
        return self.filename or f"the checkpoint named *{self.filename_match}* (resolved from the repo listing)"


@dataclass(frozen=True)
class ModelSpec:
    """One catalogue entry (a model card)."""

    id: str
    kind: Literal["tokenizer", "terramind", "finetuned"]
    title: str
    config: TokenizerConfig | TerraMindConfig | FinetunedConfig
    weights: WeightsSource | None
    modality: str | None = None  # tokenizers: the modality they encode
    inputs: tuple[str, ...] = ()  # terramind: modalities it accepts; finetuned: the ones it reads, in order
    outputs: tuple[str, ...] = ()  # terramind: modalities it can generate
    tokenizers: dict[str, str] = field(default_factory=dict)  # modality -> tokenizer id
    official: bool = True
    description: str = ""
    classes: tuple[ClassInfo, ...] = ()  # finetuned: the output classes (value, name, colour)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"]["type"] = type(self.config).__name__
        if not self.classes:
            del d["classes"]  # the fields added later stay out of cards that do not use them
        if d["weights"] is not None and d["weights"]["filename_match"] is None:
            del d["weights"]["filename_match"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        try:
            d = dict(data)
            cfg = dict(d.pop("config"))
            default_type = {"tokenizer": "TokenizerConfig", "finetuned": "FinetunedConfig"}.get(d.get("kind"), "TerraMindConfig")
            cfg_type = {"TokenizerConfig": TokenizerConfig, "TerraMindConfig": TerraMindConfig,
                        "FinetunedConfig": FinetunedConfig}[cfg.pop("type", default_type)]  # fmt: skip
            names = {f.name for f in fields(cfg_type)}
            unknown = set(cfg) - names
            if unknown:
                raise ConfigError(f"unknown config field(s) {sorted(unknown)} in model card '{d.get('id')}'")
            cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
            weights = d.pop("weights", None)
            for key in ("inputs", "outputs"):
                d[key] = tuple(d.get(key, ()))
            d["classes"] = tuple(ClassInfo(int(c["value"]), str(c["name"]), str(c["color"])) for c in d.get("classes", ()))
            return cls(
                config=cfg_type(**cfg),
                weights=WeightsSource(**weights) if weights else None,
                official=bool(d.pop("official", False)),
                **d,
            )
        except (KeyError, TypeError) as e:
            raise ConfigError(f"invalid model card {data.get('id', '?')!r}: {e}") from None


# Pinned Hub revisions, written by tools/pin_revisions.py (run with network access):
# repo id -> (commit hash, sha256 of the weights file). Repos not listed use OFFICIAL_REVISION.
# BEGIN PINNED_REVISIONS
PINNED_REVISIONS: dict[str, tuple[str, str | None]] = {}
# END PINNED_REVISIONS


def _source(repo_id: str, filename: str, filename_match: str | None = None) -> WeightsSource:
    revision, sha256 = PINNED_REVISIONS.get(repo_id, (OFFICIAL_REVISION, None))
    return WeightsSource(repo_id, filename, revision, sha256, filename_match=filename_match)


def _tokenizer(modality: str, kind: str, in_channels: int, levels: tuple[int, ...], repo: str) -> ModelSpec:
    mid = f"terramind_v1_tokenizer_{modality.lower()}"
    return ModelSpec(
        id=mid,
        kind="tokenizer",
        title=f"TerraMind 1.0 tokenizer {modality}",
        config=TokenizerConfig(kind=kind, in_channels=in_channels, levels=levels),  # type: ignore[arg-type]
        weights=_source(f"{HF_ORG}/TerraMind-1.0-Tokenizer-{repo}", f"TerraMind_Tokenizer_{repo}.pt"),
        modality=modality,
    )


_TOKENIZERS = {m: MODALITIES[m].tokenizer_id for m in TOKENIZED}


def _terramind(size: str, cfg: TerraMindConfig) -> ModelSpec:
    return ModelSpec(
        id=f"terramind_v1_{size}",
        kind="terramind",
        title=f"TerraMind 1.0 {size}",
        config=cfg,
        weights=_source(f"{HF_ORG}/TerraMind-1.0-{size}", f"TerraMind_v1_{size}.pt"),
        inputs=INPUTS,
        outputs=IMAGE_OUTPUTS,
        tokenizers=dict(_TOKENIZERS),
    )


def _impactmesh(hazard: str, title: str, classes: tuple[ClassInfo, ...], what: str) -> ModelSpec:
    """IBM and ESA's ImpactMesh fine-tune of TerraMind base (IBM/ImpactMesh ``configs/``)."""
    return ModelSpec(
        id=f"terramind_v1_base_{hazard}",
        kind="finetuned",
        title=f"TerraMind base {title} (ImpactMesh, IBM/ESA)",
        config=FinetunedConfig(f"terramind_v1_base_impactmesh_{hazard}.yaml", "terramind_v1_base", num_classes=2,
                               dates=4, multi_temporal=True),  # fmt: skip
        weights=_source(f"{HF_ORG}/TerraMind-base-{title}", "", filename_match=hazard),
        inputs=("S2L2A", "S1RTC", "DEM"),
        classes=classes,
        description=(
            f"{what} from Sentinel-2 L2A (12 bands), Sentinel-1 RTC (VV, VH, dB) and a DEM over four dates "
            "(one layer per date, in date order; one DEM layer is used for every date), TerraTorch's temporal "
            "wrapper with concat pooling and a UNet decoder, trained on ImpactMesh. Tiled like TerraTorch: chips "
            "of 256 px every 208 px, 8 px dropped at chip borders. The checkpoint's file name is not known "
            f"offline: it is resolved from the repo listing (the checkpoint whose name contains '{hazard}')."
        ),
    )


FINETUNED: tuple[ModelSpec, ...] = (
    _impactmesh("flood", "Flood", (ClassInfo(0, "No flood", "#D9D9D9"), ClassInfo(1, "Flood", "#1F77B4")),
                "Flood mapping"),
    _impactmesh("fire", "Fire", (ClassInfo(0, "Not burned", "#D9D9D9"), ClassInfo(1, "Burn scar", "#D62728")),
                "Burn-scar (wildfire) mapping"),
)  # fmt: skip

OFFICIAL: tuple[ModelSpec, ...] = (
    _tokenizer("S2L2A", "divae", 12, (8, 8, 8, 6, 5), "S2L2A"),
    _tokenizer("S1GRD", "divae", 2, (8, 8, 8, 6, 5), "S1GRD"),
    _tokenizer("S1RTC", "divae", 2, (8, 8, 8, 6, 5), "S1RTC"),
    _tokenizer("DEM", "divae", 1, (8, 8, 8, 6, 5), "DEM"),
    _tokenizer("NDVI", "divae", 1, (8, 8, 8, 6, 5), "NDVI"),
    _tokenizer("LULC", "vqvae", 10, (7, 5, 5, 5, 5), "LULC"),
    _terramind("tiny", TerraMindConfig(192, 3, 12, 4, "gelu", 768, True)),
    _terramind("small", TerraMindConfig(384, 6, 12, 6, "gelu", 1536, True)),
    _terramind("base", TerraMindConfig(768, 12, 12, 12, "swiglu", 2048, False)),
    _terramind("large", TerraMindConfig(1024, 16, 24, 24, "swiglu", 2730, False)),
    *FINETUNED,
)

_REGISTRY: dict[str, ModelSpec] = {s.id: s for s in OFFICIAL}
_LOADED_PATHS: set[str] = set()


def registry_state() -> tuple[dict[str, ModelSpec], set[str]]:
    """A copy of what is registered (entries, card folders read): ``restore_registry`` puts it back."""
    return dict(_REGISTRY), set(_LOADED_PATHS)


def restore_registry(state: tuple[dict[str, ModelSpec], set[str]]) -> None:
    entries, paths = state
    _REGISTRY.clear()
    _REGISTRY.update(entries)
    _LOADED_PATHS.clear()
    _LOADED_PATHS.update(paths)


def register(spec: ModelSpec, *, replace_existing: bool = False) -> ModelSpec:
    """Add a custom model card. Official ids cannot be overwritten."""
    if spec.id in _REGISTRY and (_REGISTRY[spec.id].official or not replace_existing):
        if _REGISTRY[spec.id] == spec:
            return spec
        raise ConfigError(f"model id '{spec.id}' is already in the catalogue; choose another id")
    for m in (*spec.inputs, *spec.outputs, *spec.tokenizers, *([spec.modality] if spec.modality else [])):
        if m not in MODALITIES:
            raise ConfigError(f"model card '{spec.id}' names unknown modality '{m}'")
    _REGISTRY[spec.id] = replace(spec, official=False)
    return _REGISTRY[spec.id]


def load_cards(folder: str | os.PathLike[str]) -> list[ModelSpec]:
    """Register every ``*.json`` model card in ``folder`` (each file: one card or a list)."""
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read model card file {path}: {e}") from None
        for card in data if isinstance(data, list) else [data]:
            if card.get("kind") in ("tokenizer", "terramind", "finetuned"):
                out.append(register(_card_paths(ModelSpec.from_dict(card), path.parent), replace_existing=True))
    return out


def _card_paths(spec: ModelSpec, folder: Path) -> ModelSpec:
    """A custom fine-tuned card's config file, relative to the card's folder, made absolute."""
    cfg = spec.config
    if isinstance(cfg, FinetunedConfig) and not os.path.isabs(cfg.config_file) and (folder / cfg.config_file).is_file():
        return replace(spec, config=replace(cfg, config_file=str((folder / cfg.config_file).absolute())))
    return spec


def _load_env_paths() -> None:
    for folder in filter(None, os.environ.get("TERRAMIND_CATALOGUE_PATH", "").split(os.pathsep)):
        if folder not in _LOADED_PATHS and Path(folder).is_dir():
            _LOADED_PATHS.add(folder)
            load_cards(folder)


def get(model_id: str) -> ModelSpec:
    """The catalogue entry for ``model_id``."""
    _load_env_paths()
    try:
        return _REGISTRY[model_id]
    except KeyError:
        raise ModelNotFoundError(
            f"model '{model_id}' is not in the catalogue; known: {', '.join(sorted(_REGISTRY))}"
        ) from None


def all_specs(kind: str | None = None) -> list[ModelSpec]:
    """Every registered entry, optionally of one kind."""
    _load_env_paths()
    return [s for s in _REGISTRY.values() if kind is None or s.kind == kind]


def register_request_cards(request: ModelRequest) -> None:
    """Register the model-card folders a job's model request names."""
    for folder in request.catalogue_paths:
        if not os.path.isdir(folder):
            raise ConfigError(f"model card folder '{folder}' does not exist", field="model.catalogue_paths")
        load_cards(folder)


def for_request(request: ModelRequest) -> ModelSpec:
    """The entry a job's model request names, after registering the request's model-card folders."""
    register_request_cards(request)
    return get(request.id)


def tokenizer_for(model: ModelSpec, modality: str) -> ModelSpec:
    """The tokenizer entry a TerraMind entry uses for ``modality``."""
    try:
        return get(model.tokenizers[modality])
    except KeyError:
        raise ModelNotFoundError(f"model '{model.id}' has no tokenizer for modality '{modality}'") from None
