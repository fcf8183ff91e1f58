"""Fine-tuned TerraMind segmentation models from TerraTorch (issue 4).

Torch-free: ``config`` (TerraTorch YAML / hyper-parameters → ``SegmentationConfig``),
``temporal_config`` (multi-temporal wrapper and tiled-inference settings) and ``datamodules`` (the
statistics known data modules default to); class names and colours are in models/core/classes.py.
Everything else imports torch: ``necks``, ``decoders``, ``head``, ``temporal`` (TerraTorch's
``TemporalWrapper``), ``pixel_wise_model`` (the model, mirroring TerraTorch's module tree), ``model`` (builder
and the raw-input wrapper ``SegmentationModel``), ``checkpoint`` (loading a Lightning checkpoint,
a state dict or a model card) and ``export`` (the plugin's own card format). Import the
submodules directly; this package ``__init__`` imports nothing so the torch-free parts stay cheap.
"""
