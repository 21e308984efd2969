"""What a model learns below the sentence: analyses of frame-level features and discrete units (plain torch/numpy).

    word_detection.py   codes as word detectors: code->word precision, word->code recall, F1 (ResDAVEnet-VQ)
    abx.py              ZeroSpeech ABX phone discriminability: triphone items, batched DTW, within/across speaker
    boundaries.py       word boundaries within a tolerance: precision, recall, F1, OS, R-value, token F1
    keywords.py         keyword spotting: precision at 10 and at N, equal error rate, concept scores
    features.py         every layer's frames at its own frame rate (forward hooks), k-means units

Localisation AP and IoU (DenseAV) sit beside the pointing game in ``core/localization.py``. The functions take
parsed alignments (``[(start, end, label)]`` lists, from ``datamodules.alignment.parse_alignment``), codes, frame
times and features; the commands in ``lightning_modules.analysis`` read checkpoints and manifests.
"""
