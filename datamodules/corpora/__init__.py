"""Corpus preparers: the corpora's own files -> Places-format manifests (`python -m datamodules.prepare CORPUS`).

    common.py      Split, the file check (missing files, hours from wav headers), the summary, the writer
    flickr8k.py    Flickr8k Audio Captions (official or Karpathy split)
    spokencoco.py  SpokenCOCO (official or Karpathy split, rolled or unrolled JSON)
    places.py      Places Audio Captions 400k (+ the 2020 splits, the aligned variant)

Each corpus module has `add_arguments(parser)` and `read(args) -> list[Split]`.
"""

CORPORA = ("flickr8k", "spokencoco", "places")
