"""Analyses of trained models, as commands: ``python -m lightning_modules.analysis COMMAND ...``.

The metrics themselves are plain functions in ``lightning_modules.core``; the commands here read checkpoints and
manifests (they are entry points, like ``cli.py``, where ``datamodules`` and ``lightning_modules`` meet).

    words          which discrete units detect which words (ResDAVEnet-VQ's word detection F1)
    abx            ZeroSpeech ABX phone discriminability of every layer (within / across speaker)
    boundaries     word boundaries from code changes, self-similarity peaks or a user's list (VG-HuBERT's scores)
    localization   speech-prompted localisation: pointing game, DenseAV's AP and IoU (SpokenScenes)
    keywords       keyword spotting from image-side concepts: precision at 10 and at N, EER (SpokenScenes)

Each prints a short table with its chance baseline and writes its report with ``--out report.json``.
"""
