"""Weights: resolving (Hub cache, local file or folder), reading, key mapping, strict matching,
and the deterministic untrained fill used by goldens, tests and the offline demo."""
