"""Chained one-pass ROAR token generation, exactly as terratorch 1.2.11 computes it (terratorch 1.2.11
``models/backbones/terramind/model/terramind_generation.py``, ``generate.py``).

Random-number contract (what makes a run reproducible, and equal to a terratorch run):

- A call takes one integer ``seed``. terratorch draws it itself, once per forward call, with
  ``random.randint(-2**31, 2**31 - 1)`` from Python's global ``random``; ``reference_call_seed``
  returns the value it draws after ``random.seed(python_seed)``.
- Output ``i`` (``i = 0 … S-1``, in output order; one step per output, ``decoding_steps=1``) uses a
  fresh ``torch.Generator`` on the model's device seeded ``seed + i``. This equals terratorch's
  global ``torch.manual_seed(seed + i)``, but torch's global RNG state is never touched here.
  With that generator, in this order: ``torch.rand(N)`` → the query permutation
  ``π = argsort(1e-6 · rand)``; then one ``torch.multinomial(probs, 1)`` draw per row of the
  ``(B·N, V)`` logits, batch-major, rows in π order (row ``(b, j)`` is token position ``π[j]``).
  Temperature ≈ 0 (``|T| ≤ 1e-10``) takes the argmax and draws nothing.
- Sampling filters: top-k (logits below the k-th largest → -inf), then top-p on the *untempered*
  logits (the first token crossing ``top_p`` is kept), then ``softmax(logits / T)``.
- DiVAE pixel decoding draws its start noise ``randn(B, C, H, W)`` on the CPU after all steps,
  outputs in order, from ``noise_generator``: on CPU that is the last step's generator, continued
  (as terratorch's global CPU generator continues); on CUDA it is a fresh CPU generator seeded
  ``seed + S - 1`` (the state terratorch's ``manual_seed`` leaves on the CPU). The LULC VQ-VAE
  draws nothing. Results are therefore not bit-portable between CPU and CUDA.

Chaining: every output whose key has an encoder embedding in ``model.encoder_embeddings`` is fed
back to the encoder once generated; outputs without one are not. Dimensions: ``B`` batch, ``M``
encoder tokens, ``N`` target tokens, ``D`` width, ``V`` vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.params import Sampling
from ..core.progress import NullProgress, Progress, check_cancelled
from .encoder_decoder import TerraMindEncoderDecoder


def reference_call_seed(python_seed: int) -> int:
    """The per-call seed terratorch draws after ``random.seed(python_seed)``."""
    return random.Random(python_seed).randint(-(2**31), 2**31 - 1)


def top_k_top_p_filtering(logits: torch.Tensor, top_k: int | float = 0, top_p: float = 0.0) -> torch.Tensor:
    """Set filtered logits ``(R, V)`` to -inf **in place** (same ops as terratorch) and return them."""
    if top_k > 0:
        k = min(top_k, logits.shape[-1]) if isinstance(top_k, int) else min(int(top_k * logits.shape[-1]), logits.shape[-1])
        indices_to_remove = logits < torch.topk(logits, k)[0][..., -1, None]  # (R, V)
        logits[indices_to_remove] = float("-inf")
    if top_p > 0.0:
        sorted_logits, sorted_indices = torch.sort(logits, dim=1, descending=True)  # (R, V) each
        cum_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)  # (R, V)
        sorted_indices_to_remove = cum_probs > top_p
        sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()  # keep the first crossing
        sorted_indices_to_remove[..., 0] = 0
        # terratorch gathers with argsort(sorted_indices); scattering is the same inverse permutation, cheaper.
        indices_to_remove = torch.zeros_like(sorted_indices_to_remove).scatter_(
            -1, sorted_indices, sorted_indices_to_remove
        )  # (R, V)
        logits[indices_to_remove] = float("-inf")
    return logits


def sample_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of ``logits`` ``(R, V)`` → ``(R,)`` int64 (modifies ``logits`` in place)."""
    if sampling.greedy:
        return torch.argmax(logits, dim=-1)  # (R,)
    filtered = top_k_top_p_filtering(logits, sampling.top_k, sampling.top_p)  # (R, V)
    probs = F.softmax(filtered / sampling.temperature, dim=-1)  # (R, V)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (R,)


LogitsHook = Callable[[str, torch.Tensor, torch.Tensor], None]


@dataclass
class TokenGeneration:
    """Result of a chained generation: ids per target key and the RNG for pixel decoding."""

    tokens: dict[str, torch.Tensor]  # internal key -> (B, N) int64, in generation order
    permutations: dict[str, torch.Tensor]  # internal key -> (N,) query order π used for the step
    noise_generator: torch.Generator  # CPU generator positioned where DiVAE noise must be drawn


class GenerationSampler(nn.Module):
    """Wraps the encoder-decoder as ``sampler.model`` (terratorch ``GenerationSampler``)."""

    def __init__(self, model: TerraMindEncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def encode_context(self, visible: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the visible modalities (dict order) and run the encoder.

        Returns ``context`` ``(B, M, D)`` = ``decoder_proj_context(encoder(x)) + emb`` and the
        all-False encoder mask ``(B, 1, M)`` (passed on like terratorch does: it selects the
        masked attention kernel, which matters for bitwise parity).
        """
        tokens, embs = [], []
        for key, value in visible.items():
            x, emb = self.model.encoder_embeddings[key](value)  # (B, M_k, D) each
            tokens.append(x)
            embs.append(emb)
        encoder_tokens = torch.cat(tokens, dim=1)  # (B, M, D)
        encoder_emb = torch.cat(embs, dim=1)  # (B, M, D)
        B, M = encoder_tokens.shape[:2]
        encoder_mask = torch.zeros(B, 1, M, dtype=torch.bool, device=encoder_tokens.device)  # (B, 1, M)
        x = self.model.forward_encoder(encoder_tokens + encoder_emb, encoder_mask)  # (B, M, D)
        return self.model.decoder_proj_context(x) + encoder_emb, encoder_mask  # (B, M, D)

    def decoder_logits(
        self,
        context: torch.Tensor,
        encoder_mask: torch.Tensor,
        target_key: str,
        grid: tuple[int, int],
        ids_keep: torch.Tensor,
    ) -> torch.Tensor:
        """Logits ``(B, N, V)`` of ``target_key`` for the queries in order ``ids_keep`` ``(B, N)``."""
        embedding = self.model.decoder_embeddings[target_key]
        B, N = ids_keep.shape
        emb_all = embedding.position_embedding(grid, B)  # (B, N, D)
        tokens_all = torch.zeros_like(emb_all) + self.model.mask_token  # (B, N, D)
        index = ids_keep.unsqueeze(-1).expand(-1, -1, emb_all.shape[2])  # (B, N, D)
        y = torch.gather(tokens_all, 1, index) + torch.gather(emb_all, 1, index)  # (B, N, D)
        y = self.model.forward_decoder(y, context, encoder_mask, None)  # (B, N, D)
        return embedding.forward_logits(y.reshape(B * N, -1)).reshape(B, N, -1)  # (B, N, V)

    def generate(
        self,
        visible: Mapping[str, torch.Tensor],
        targets: Sequence[str],
        grid: tuple[int, int],
        seed: int,
        sampling: Sampling,
        progress: Progress | None = None,
        names: Mapping[str, str] | None = None,
        logits_hook: LogitsHook | None = None,
    ) -> TokenGeneration:
        """Generate each target key in order, one ROAR pass each, under the contract above.

        ``visible`` maps internal keys to encoder inputs (raw images or token ids) in encoder
        order; it is not modified. ``names`` gives display names for progress messages.
        ``logits_hook(key, logits, ids_keep)`` sees each step's raw logits ``(B, N, V)`` (rows in
        π order, before filtering; do not modify them) for diagnostics.
        """
        progress = progress or NullProgress()
        visible = dict(visible)
        batch = next(iter(visible.values())).shape[0]
        device = self.model.mask_token.device
        num_tokens = grid[0] * grid[1]
        tokens: dict[str, torch.Tensor] = {}
        permutations: dict[str, torch.Tensor] = {}
        generator = torch.Generator(device=device)
        for step, key in enumerate(targets):
            check_cancelled(progress)
            context, encoder_mask = self.encode_context(visible)  # (B, M, D), (B, 1, M)
            generator = torch.Generator(device=device).manual_seed(seed + step)
            mask_rand = torch.rand(num_tokens, device=device, generator=generator).unsqueeze(0) * 1e-6  # (1, N)
            target_mask = torch.zeros(batch, num_tokens, dtype=torch.bool, device=device)  # (B, N) nothing known
            ids_keep = torch.argsort(target_mask + mask_rand, dim=1)  # (B, N) = π per row
            logits = self.decoder_logits(context, encoder_mask, key, grid, ids_keep)  # (B, N, V)
            if logits_hook is not None:
                logits_hook(key, logits, ids_keep)
            samples = sample_tokens(logits.reshape(batch * num_tokens, -1), sampling, generator)  # (B*N,)
            ids = torch.zeros(batch, num_tokens, dtype=torch.int64, device=device)
            ids = torch.scatter(ids, -1, ids_keep, samples.reshape(batch, num_tokens))  # (B, N)
            tokens[key], permutations[key] = ids, ids_keep[0]
            if key in self.model.encoder_embeddings:
                visible[key] = ids  # chained: conditions the following outputs
            progress.set_progress(100.0 * (step + 1) / len(targets))
            progress.info(f"generated {(names or {}).get(key, key)} tokens ({step + 1}/{len(targets)})")
        if device.type != "cpu":
            generator = torch.Generator().manual_seed(seed + len(targets) - 1)
        return TokenGeneration(tokens, permutations, generator)

    def teacher_forced_logits(
        self,
        visible: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        grid: tuple[int, int],
        permutations: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Decoder logits ``(B, N, V)`` (rows in token-position order) for given target ids.

        Targets are taken in the mapping's order; each one is predicted from ``visible`` plus the
        given ids of the earlier targets that have encoder embeddings (as in generation). With a
        permutation ``π`` for a target the decoder runs on the queries in that order (as the
        sampler does; this only changes float rounding); otherwise in position order.
        """
        visible = dict(visible)
        out: dict[str, torch.Tensor] = {}
        num_tokens = grid[0] * grid[1]
        for key, ids in targets.items():
            batch = ids.shape[0]
            context, encoder_mask = self.encode_context(visible)
            device = context.device
            if permutations and key in permutations:
                order = permutations[key].to(device=device, dtype=torch.int64)  # (N,)
            else:
                order = torch.arange(num_tokens, device=device)  # (N,)
            ids_keep = order.unsqueeze(0).expand(batch, -1)  # (B, N)
            logits = self.decoder_logits(context, encoder_mask, key, grid, ids_keep)  # (B, N, V) in π order
            out[key] = torch.empty_like(logits).index_copy_(1, order, logits)  # (B, N, V) position order
            if key in self.model.encoder_embeddings:
                visible[key] = ids.reshape(batch, -1).to(device=device, dtype=torch.int64)
        return out
