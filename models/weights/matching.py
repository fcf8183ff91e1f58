"""Checkpoint key → module key mapping (the reference's) and the strict match report.

Mappings, read from terratorch 1.2.11 (``terramind_register.py`` ``checkpoint_filter_fn*``,
``tokenizer_register.py`` ``build_vqvae``; terratorch 1.2.11
``models/backbones/terramind/tokenizer/tokenizer_register.py``; terratorch 1.2.11
``models/backbones/terramind/model/terramind_register.py`` checkpoint loading):

=============  ===========================================  ====================================
model          checkpoint key ``k`` goes to                 filled from other files
=============  ===========================================  ====================================
tokenizer      ``k``                                        —
generation     ``sampler.model.`` + ``k``                   ``tokenizer.<internal key>.*``
backbone       ``k`` (keys the backbone has)                ``tokenizer.<internal key>.*``
TiM            ``k`` and ``sampler.model.`` + ``k``         ``tokenizer.<internal key>.*``
=============  ===========================================  ====================================

Unlike the reference, which keeps a module's random initialisation for anything missing or
mis-shaped and only logs it, the match is strict: every model key must get a value and every
checkpoint key must be used or be *expected but unused*. Expected but unused (ignored silently):
the embeddings of modalities the user did not request (any modality key the reference knows) and,
for the backbone, the decoder half of the encoder–decoder. Allowed to be absent from a file,
because their values are deterministic: buffers of modules that can recompute them
(``init_deterministic_buffers``: TerraMind sincos ``pos_emb``, LayerNorm zero ``bias``; and the
backbone's ``missing_mod_token``, absent from official files, which the reference leaves
uninitialised and this package sets to zeros), and every
tensor the model shares under several names once one of its names is present (a tied
``to_logits.weight`` with ``token_emb.weight``, shared ``mod_emb``, TiM's shared embeddings).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

# terratorch 1.2.11 model/modality_info.py MODALITY_INFO keys: embeddings an official file may hold.
REFERENCE_MODALITY_KEYS = frozenset((
    "sen1grd@264", "sen1rtc@264", "sen2l2a@264", "sen2l1c@264", "sen2rgb@264", "lulc@264", "dem@264",
    "ndvi@264", "untok_sen2l2a@224", "untok_sen2l1c@224", "untok_sen2rgb@224", "untok_sen1grd@224",
    "untok_sen1rtc@224", "tok_sen1grd@224", "tok_sen1rtc@224", "tok_sen2l2a@224", "tok_lulc@224",
    "untok_dem@224", "tok_dem@224", "tok_ndvi@224", "rgb@224", "caption", "coords", "det", "tok_rgb@224",
    "tok_depth@224", "tok_normal@224", "tok_semseg@224", "tok_clip@224", "rgb@448", "tok_rgb@448",
    "tok_depth@448", "tok_normal@448", "tok_semseg@448", "tok_clip@448",
))  # fmt: skip
EMBEDDING_GROUPS = ("encoder_embeddings", "decoder_embeddings")
DECODER_PARTS = ("decoder.", "decoder_norm.", "decoder_proj_context.", "mask_token")
LIST_LIMIT = 20


@dataclass(frozen=True)
class KeyMapping:
    """How one checkpoint file's keys map onto a module's state-dict keys."""

    name: str
    targets: tuple[str, ...] = ("",)  # module-key prefixes each checkpoint key is copied to
    exclude: tuple[str, ...] = ()  # module-key prefixes filled from other files
    ignore_decoder: bool = False  # backbone: the file's decoder half is expected and unused
    ignore_other_modalities: bool = False  # TerraMind: embeddings of unrequested modalities
    optional: tuple[str, ...] = ()  # module keys official files lack; their module recomputes them

    def in_scope(self, module_key: str) -> bool:
        return not module_key.startswith(self.exclude) if self.exclude else True

    def checkpoint_key(self, module_key: str) -> str:
        """The checkpoint key that fills ``module_key`` (the longest matching target prefix removed)."""
        for prefix in sorted(self.targets, key=len, reverse=True):
            if prefix and module_key.startswith(prefix):
                return module_key[len(prefix) :]
        return module_key


TOKENIZER = KeyMapping("tokenizer")
GENERATION = KeyMapping("generation", ("sampler.model.",), ("tokenizer.",), ignore_other_modalities=True)
# ``missing_mod_token`` (concat merge) is in fine-tuned files only; the reference leaves it uninitialised.
BACKBONE = KeyMapping(
    "backbone", ("",), ("tokenizer.",), ignore_decoder=True, ignore_other_modalities=True,
    optional=("missing_mod_token",),
)  # fmt: skip
TIM = KeyMapping(
    "tim", ("", "sampler.model."), ("tokenizer.",), ignore_other_modalities=True, optional=("missing_mod_token",)
)


@dataclass(frozen=True)
class ExpectedTensor:
    """One state-dict entry the module needs."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    recomputable: bool  # a buffer its module can recompute (may be absent from the file)


@dataclass
class MatchReport:
    """The outcome of matching a checkpoint's keys against a module's (see ``match_keys``)."""

    assignments: dict[str, str] = field(default_factory=dict)  # module key -> checkpoint key
    missing: list[str] = field(default_factory=list)  # checkpoint keys the file lacks
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys matching nothing
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, file, model
    ignored: list[str] = field(default_factory=list)  # checkpoint keys expected but unused
    recomputed: list[str] = field(default_factory=list)  # module keys left to init_deterministic_buffers

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        """Every problem, grouped and counted, the first ``LIST_LIMIT`` of each kind by name."""
        parts = []
        if self.missing:
            parts.append(_listing(_count(self.missing, "missing"), "in the model, not in the file", self.missing))
        if self.unexpected:
            title = _count(self.unexpected, "unexpected")
            parts.append(_listing(title, "in the file, not in the model", self.unexpected))
        if self.mismatched:
            names = [f"{k}: file {list(fs)} vs model {list(ms)}" for k, fs, ms in self.mismatched]
            title = _count(self.mismatched, "with the wrong shape")
            parts.append(_listing(title, "same name, other shape", names, [k for k, _, _ in self.mismatched]))
        return "\n".join(parts)


def _count(items: list, what: str) -> str:
    n = len(items)
    noun = "key" if n == 1 else "keys"
    return f"{n} {what} {noun}" if what in ("missing", "unexpected") else f"{n} {noun} {what}"


def expected_layout(module: torch.nn.Module, mapping: KeyMapping) -> dict[str, ExpectedTensor]:
    """Module state-dict keys in the mapping's scope, with shape, dtype and recomputability."""
    recomputable = set()
    for prefix, sub in module.named_modules(remove_duplicate=False):
        if callable(getattr(sub, "init_deterministic_buffers", None)):
            for name in sub._buffers:
                if name not in sub._non_persistent_buffers_set:
                    recomputable.add(f"{prefix}.{name}" if prefix else name)
    return {
        key: ExpectedTensor(tuple(t.shape), t.dtype, key in recomputable)
        for key, t in module.state_dict(keep_vars=True).items()
        if mapping.in_scope(key)
    }


def alias_groups(module: torch.nn.Module) -> list[list[str]]:
    """State-dict keys that name the same tensor (tied or shared), in state-dict order."""
    by_id: dict[int, list[str]] = {}
    keys = set(module.state_dict(keep_vars=True))
    named = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        if name in keys and tensor is not None:
            by_id.setdefault(id(tensor), []).append(name)
    order = {k: i for i, k in enumerate(module.state_dict(keep_vars=True))}
    return [sorted(names, key=order.__getitem__) for names in by_id.values() if len(names) > 1]


def match_keys(
    shapes: Mapping[str, tuple[int, ...]],
    layout: Mapping[str, ExpectedTensor],
    mapping: KeyMapping,
    aliases: list[list[str]] = (),  # type: ignore[assignment]
) -> MatchReport:
    """Match checkpoint ``shapes`` (key → shape) against a module ``layout`` strictly."""
    report = MatchReport()
    instantiated = _instantiated_embeddings(layout)
    for ckpt_key, shape in shapes.items():
        targets = [p + ckpt_key for p in mapping.targets if p + ckpt_key in layout]
        if not targets:
            unused = _expected_unused(ckpt_key, mapping, instantiated)
            (report.ignored if unused else report.unexpected).append(ckpt_key)
            continue
        mismatched = False
        for module_key in targets:
            want = layout[module_key].shape
            if tuple(shape) != want:
                if not mismatched:  # report it once, by its checkpoint key
                    report.mismatched.append((ckpt_key, tuple(shape), want))
                mismatched = True
            else:
                report.assignments[module_key] = ckpt_key
    alias_of = {k: group for group in aliases for k in group}
    mismatched_keys = {k for k, _, _ in report.mismatched}
    for module_key, expected in layout.items():
        ckpt_key = mapping.checkpoint_key(module_key)
        if module_key in report.assignments or ckpt_key in mismatched_keys:
            continue
        if any(k in report.assignments for k in alias_of.get(module_key, ())):
            continue  # a tied/shared name that is filled through another of its names
        if expected.recomputable or module_key in mapping.optional:
            report.recomputed.append(module_key)
        elif ckpt_key not in report.missing:  # named as the file should name it
            report.missing.append(ckpt_key)
    return report


def _instantiated_embeddings(layout: Mapping[str, ExpectedTensor]) -> set[str]:
    """``encoder_embeddings.<modality>`` / ``decoder_embeddings.<modality>`` the module has."""
    found = set()
    for key in layout:
        parts = key.split(".")
        for i, part in enumerate(parts[:-2]):
            if part in EMBEDDING_GROUPS:
                found.add(f"{part}.{parts[i + 1]}")
    return found


def _expected_unused(ckpt_key: str, mapping: KeyMapping, instantiated: set[str]) -> bool:
    group, _, rest = ckpt_key.partition(".")
    modality = rest.split(".", 1)[0]
    is_known_embedding = group in EMBEDDING_GROUPS and modality in REFERENCE_MODALITY_KEYS
    is_decoder = ckpt_key.startswith(DECODER_PARTS) or (is_known_embedding and group == "decoder_embeddings")
    if mapping.ignore_decoder and is_decoder:
        return True
    if mapping.ignore_other_modalities and is_known_embedding:
        return f"{group}.{modality}" not in instantiated
    return False


def _listing(title: str, meaning: str, names: list[str], group_by: list[str] | None = None) -> str:
    groups = Counter(_group_name(k) for k in (group_by or names))
    summary = ", ".join(f"{g} ({n})" for g, n in groups.most_common(8))
    more = f"\n    ... and {len(names) - LIST_LIMIT} more" if len(names) > LIST_LIMIT else ""
    return f"  {title} ({meaning}); by group: {summary}\n    " + "\n    ".join(names[:LIST_LIMIT]) + more


def _group_name(key: str) -> str:
    """A key's group for counting: its first two components, numbers collapsed (``encoder.*``)."""
    parts = key.split(".")
    head = [("*" if p.isdigit() else p) for p in parts[:-1][:2]]
    return ".".join(head) or key


def describe_checkpoint(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """A guess of what a checkpoint is, for error messages ("a DiVAE tokenizer for 1-band images")."""
    keys = set(shapes)
    if "encoder.proj.weight" in keys and any(k.startswith("decoder.input_blocks.") for k in keys):
        return f"a DiVAE (diffusion) image tokenizer for {shapes['encoder.proj.weight'][1]}-band images"
    if "encoder.proj.weight" in keys and "post_quant_proj.weight" in keys:
        return f"a VQ-VAE tokenizer for {shapes['encoder.proj.weight'][1]} classes (LULC-like)"
    if "encoder.proj.weight" in keys:
        return "an image tokenizer encoder"
    if any(k.startswith(("encoder_embeddings.", "sampler.model.")) for k in keys):
        width = next((s[-1] for k, s in shapes.items() if k.endswith("mod_emb")), None)
        depth = len({k.split(".")[1] for k in keys if k.startswith("encoder.") and k.split(".")[1].isdigit()})
        return f"a TerraMind model (width {width}, {depth} encoder blocks)"
    if any(k.startswith("model.") for k in keys):
        return "a fine-tuned TerraTorch task checkpoint (keys prefixed 'model.')"
    return f"an unknown model ({len(keys)} tensors)"
