"""SpokenCOCO (Hsu et al., ACL 2021): about 600k spoken captions of the MSCOCO images.

    python -m datamodules.prepare spokencoco --root DIR --coco-root DIR [--split official|karpathy] --out OUT

Layout:

    <root>/SpokenCOCO_{train,val}.json                   official split
    <root>/SpokenCOCO_{train,val,test}_karpathy.json     Karpathy split (5,000 test images, ~25,000 captions)
    <root>/SpokenCOCO_{split}_unrolled_karpathy.json     the same, one caption per item (may carry text_alignment)
    <root>/wavs/{train,val}/<n>/<uttid>.wav
    <coco-root>/train2014/COCO_train2014_<12-digit id>.jpg, <coco-root>/val2014/COCO_val2014_<12-digit id>.jpg

Schema: `{"data": [{"image": "val2014/COCO_val2014_000000325114.jpg", "captions": [{"text", "speaker", "uttid",
"wav"}, ...]}]}` (unrolled: `{"image", "caption": {...}}` per item). `wav` is relative to `--root`, `image` to
`--coco-root`; other keys (e.g. `parse_tree`) are ignored. The Karpathy train split (train + restval) holds
val2014 images too: the split comes from the file, never from the image folder. `image_id` is the COCO id of the
file name (`COCO_val2014_000000325114.jpg` -> `"325114"`). `--split` defaults to karpathy when its three files
(either variant) exist; where both variants exist the unrolled one is read, so its `text_alignment` survives.
"""

from __future__ import annotations

import argparse
import os

from .common import PrepareError, Split, read_json, sort_items

OFFICIAL = {"train": "SpokenCOCO_train.json", "val": "SpokenCOCO_val.json"}
KARPATHY = ("train", "val", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="the SpokenCOCO folder (the JSON files and wavs/)")
    parser.add_argument("--coco-root", required=True, help="the MSCOCO folder holding train2014/ and val2014/")
    parser.add_argument("--split", choices=("official", "karpathy"), default=None,
                        help="default: karpathy when SpokenCOCO_{train,val,test}_karpathy.json exist, else official")


def coco_id(image: str) -> str:
    """`val2014/COCO_val2014_000000325114.jpg` -> `"325114"` (the number after the last underscore)."""
    stem = os.path.splitext(os.path.basename(image))[0]
    number = stem.rsplit("_", 1)[-1]
    if not number.isdigit():
        raise ValueError(f"cannot read a COCO id from image {image!r} (expected COCO_<set>_<id>.jpg)")
    return str(int(number))


def karpathy_file(root: str, split: str) -> str | None:
    """The unrolled Karpathy file of a split if it exists, else the rolled one, else None."""
    for name in (f"SpokenCOCO_{split}_unrolled_karpathy.json", f"SpokenCOCO_{split}_karpathy.json"):
        if os.path.exists(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def _caption_item(path: str, where: str, image: str, caption: object, k: int) -> dict:
    if not isinstance(caption, dict) or not isinstance(caption.get("wav"), str):
        raise PrepareError(f"{path}: {where}: a caption needs a 'wav' (and 'text', 'speaker', 'uttid'), "
                           f"got {caption!r}"[:300])
    try:
        image_id = coco_id(image)
    except ValueError as err:
        raise PrepareError(f"{path}: {where}: {err}") from None
    wav = caption["wav"]
    item = {
        "uttid": str(caption.get("uttid") or os.path.splitext(os.path.basename(wav))[0]),
        "speaker": str(caption.get("speaker") or ""),
        "asr_text": str(caption.get("text") or ""),
        "wav": wav,
        "image": image,
        "image_id": image_id,
        "_k": k,
    }
    if caption.get("text_alignment"):
        item["text_alignment"] = str(caption["text_alignment"])
    return item


def read_file(path: str) -> list[dict]:
    """The caption items of one SpokenCOCO JSON, rolled (`captions` lists) or unrolled (`caption` per item)."""
    raw = read_json(path)
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, list):
        raise PrepareError(f"{path}: expected {{'data': [{{'image', 'captions': [...]}}, ...]}}")
    items = []
    seen: dict[str, int] = {}  # unrolled files: caption number = position among the items of its image
    for i, entry in enumerate(data):
        image = entry.get("image") if isinstance(entry, dict) else None
        if not isinstance(image, str) or not image:
            raise PrepareError(f"{path}: data[{i}] needs an 'image' path, got {entry!r}"[:300])
        if "captions" in entry:
            if not isinstance(entry["captions"], list):
                raise PrepareError(f"{path}: data[{i}]: 'captions' must be a list")
            items += [_caption_item(path, f"data[{i}].captions[{k}]", image, c, k)
                      for k, c in enumerate(entry["captions"])]
        elif "caption" in entry:
            k = seen.get(image, 0)
            seen[image] = k + 1
            items.append(_caption_item(path, f"data[{i}].caption", image, entry["caption"], k))
        else:
            raise PrepareError(f"{path}: data[{i}] has neither 'captions' nor 'caption'")
    return items


def read(args: argparse.Namespace) -> list[Split]:
    root = os.path.abspath(os.path.expanduser(args.root))
    coco_root = os.path.abspath(os.path.expanduser(args.coco_root))
    kind = args.split
    if kind is None:
        kind = "karpathy" if all(karpathy_file(root, s) for s in KARPATHY) else "official"
    if kind == "karpathy":
        files = {s: karpathy_file(root, s) for s in KARPATHY}
        absent = [s for s, f in files.items() if f is None]
        if absent:
            raise PrepareError(f"{root}: no Karpathy file for split(s) {absent} (expected "
                               f"SpokenCOCO_<split>_karpathy.json or SpokenCOCO_<split>_unrolled_karpathy.json)")
    else:
        files = {s: os.path.join(root, name) for s, name in OFFICIAL.items()}
    return [Split(name, sort_items(read_file(path)), root, coco_root, path) for name, path in files.items()]
