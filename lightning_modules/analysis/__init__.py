"""Analyses of trained models, as commands: ``python -m lightning_modules.analysis COMMAND ...``.

The metrics themselves are plain functions in ``lightning_modules.core``; the commands here read checkpoints and
manifests (they are entry points, like ``cli.py``, where ``datamodules`` and ``lightning_modules`` meet).

    localization   speech-prompted localisation (pointing game) on a SpokenScenes manifest
"""
