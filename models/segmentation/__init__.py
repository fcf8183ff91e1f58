"""Fine-tuned TerraMind segmentation models from TerraTorch (issue 4).

Torch-free: ``config`` (TerraTorch YAML / hyper-parameters → ``SegmentationConfig``) and
``classes`` (class names and colours). Everything else imports torch: ``necks``, ``decoders``,
``head``, ``pixel_wise_model`` (the model, mirroring TerraTorch's module tree), ``model`` (builder
and the raw-input wrapper ``SegmentationModel``), ``checkpoint`` (loading a Lightning checkpoint,
a state dict or a model card) and ``export`` (the plugin's own card format). Import the
submodules directly; this package ``__init__`` imports nothing so the torch-free parts stay cheap.
"""
