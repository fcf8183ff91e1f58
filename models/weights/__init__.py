"""Weights: resolving, reading, key mapping, strict matching, loading onto meta-built modules,
and the deterministic untrained fill used by goldens, tests and the offline demo.

- ``hub``: where a file is (Hugging Face cache/download, local file or folder) → ``resolve_weights``.
- ``reading``: safe, lazy reading (safetensors; ``torch.load(weights_only=True, mmap=True)``).
- ``matching``: the reference's checkpoint → module key mappings and the strict match report.
- ``loading``: assignment onto meta-built modules, re-tying, recomputed buffers, untrained fills.
- ``bands``: band-subset view of pretrained patch embeddings.
- ``untrained``: THE deterministic fill rule (shared; do not change).

``models/build.py`` is the facade that combines them.
"""
