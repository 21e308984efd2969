"""Places Audio Captions (Harwath et al., NeurIPS 2016 / ECCV 2018): 400k spoken captions of Places-205 images.

    python -m datamodules.prepare places --root PlacesAudio_400k_distro --images DIR --out OUT

Layout:

    <root>/metadata/train.json, metadata/val.json           400k train / the 1,000 val pairs (the classic test)
    <root>/metadata/{train,dev_seen,dev_unseen,test_seen,test_unseen}_2020.json   the 2020 splits, if downloaded
    <root>/metadata/<split>_original_with_alignments.json    aligned variant: the same items + text_alignment
    <root>/wavs/<n>/utterance_<m>.wav
    <images>/<letter>/<class>[/<subclass>]/<file>.jpg          Places-205

Writes `train.json`, `val.json` and `<split>_2020.json` for each 2020 file that exists. The shipped
`image_base_path` / `audio_base_path` are paths on the authors' machines: they are replaced by `--images` and
`--root`. Every item is kept with all its keys (`uttid`, `speaker`, `asr_text`, ...), and gets `image_id` (its
image path). Where `metadata/<split>_original_with_alignments.json` exists it is read instead of
`<split>.json`, so each item keeps its `text_alignment`.
"""

from __future__ import annotations

import argparse
import os

from .common import PrepareError, Split, read_json

SPLITS_2020 = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="the PlacesAudio_400k_distro folder (metadata/, wavs/)")
    parser.add_argument("--images", required=True, help="the Places-205 image folder (<letter>/<class>/...)")


def read_file(path: str) -> list[dict]:
    raw = read_json(path)
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, list):
        raise PrepareError(f"{path}: expected a Places manifest {{'image_base_path', 'audio_base_path', 'data'}}")
    items = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) and entry[k] for k in ("wav", "image")):
            raise PrepareError(f"{path}: data[{i}] needs 'wav' and 'image' paths, got {entry!r}"[:300])
        item = {"uttid": "", "speaker": "", "asr_text": "", **entry}
        item["image_id"] = entry["image"]
        item["_k"] = i  # stable within an image: the shipped order
        items.append(item)
    return items


def read(args: argparse.Namespace) -> list[Split]:
    root = os.path.abspath(os.path.expanduser(args.root))
    images = os.path.abspath(os.path.expanduser(args.images))
    metadata = os.path.join(root, "metadata")
    if not os.path.isdir(metadata):
        raise PrepareError(f"{metadata}: not found (--root must be the PlacesAudio_400k_distro folder)")
    files = {}
    for split in ("train", "val"):
        aligned = os.path.join(metadata, f"{split}_original_with_alignments.json")
        files[split] = aligned if os.path.exists(aligned) else os.path.join(metadata, f"{split}.json")
    for split in SPLITS_2020:
        path = os.path.join(metadata, f"{split}_2020.json")
        if os.path.exists(path):
            files[f"{split}_2020"] = path
    splits = []
    for name, path in files.items():
        items = sorted(read_file(path), key=lambda it: (it["image_id"], it["_k"]))
        for it in items:
            del it["_k"]
        splits.append(Split(name, items, root, images, path))
    return splits
