"""Flickr8k Audio Captions (Harwath & Glass, ASRU 2015): 40,000 spoken captions of the 8,000 Flickr8k images.

    python -m datamodules.prepare flickr8k --root DIR [--images DIR] [--split official|karpathy] --out OUT

Layout under `--root` (the corpus' own files):

    flickr_audio/wavs/<image>_<k>.wav          k = 0..4, 16 kHz
    flickr_audio/wav2capt.txt                  "<wav> <image>.jpg #<k>", lines not sorted
    flickr_audio/wav2spk.txt                   "<wav> <speaker 1..183>" (some copies keep it at the root)
    Flickr8k_text/Flickr8k.token.txt           "<image>.jpg#<k><TAB><caption>"
    Flickr8k_text/Flickr_8k.{trainImages,devImages,testImages}.txt    one "<image>.jpg" per line
    dataset_flickr8k.json                      Karpathy split (or under Flickr8k_text/)
    Flickr8k_Dataset/<image>.jpg               or Flicker8k_Dataset/, Images/, or --images

Writes `train.json`, `val.json` (the dev list), `test.json`. Each caption's text is looked up in the token
file by image and `#k`, never by line order. `image_id` is the image file name without `.jpg`, `speaker`
`flickr8k_<n>`, `uttid` the wav name without `.wav`. Karpathy's `restval`, if present, joins train.
Evaluation: the 1,000 test images with their 5,000 captions.
"""

from __future__ import annotations

import argparse
import os
import re

from .common import PrepareError, Split, first_existing, read_json, read_lines, sort_items

IMAGE_FOLDERS = ("Flickr8k_Dataset", "Flicker8k_Dataset", "Images")
OFFICIAL_LISTS = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                  "test": "Flickr_8k.testImages.txt"}
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
_CAPTION = re.compile(r"^#(\d+)$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="folder holding flickr_audio/ and Flickr8k_text/")
    parser.add_argument("--images", default=None,
                        help=f"folder of the Flickr8k images (default: the first of {', '.join(IMAGE_FOLDERS)} "
                             "under --root)")
    parser.add_argument("--split", choices=("official", "karpathy"), default="official",
                        help="official: Flickr8k_text/Flickr_8k.*Images.txt; karpathy: dataset_flickr8k.json")


def read_wav2capt(path: str) -> dict[str, tuple[str, int]]:
    """wav name -> (image file name, caption number k)."""
    captions: dict[str, tuple[str, int]] = {}
    for n, line in read_lines(path):
        parts = line.split()
        k = _CAPTION.match(parts[2]) if len(parts) == 3 else None
        if k is None:
            raise PrepareError(f"{path}:{n}: expected '<wav> <image>.jpg #<k>', got {line!r}")
        if parts[0] in captions:
            raise PrepareError(f"{path}:{n}: wav {parts[0]} is listed twice")
        captions[parts[0]] = (parts[1], int(k.group(1)))
    return captions


def read_wav2spk(root: str) -> tuple[dict[str, str], str]:
    """wav name -> speaker number, from flickr_audio/wav2spk.txt or, in some copies, <root>/wav2spk.txt."""
    path = first_existing(root, (os.path.join("flickr_audio", "wav2spk.txt"), "wav2spk.txt"), "wav2spk.txt")
    speakers = {}
    for n, line in read_lines(path):
        parts = line.split()
        if len(parts) != 2:
            raise PrepareError(f"{path}:{n}: expected '<wav> <speaker>', got {line!r}")
        speakers[parts[0]] = parts[1]
    return speakers, path


def read_tokens(path: str) -> dict[tuple[str, int], str]:
    """(image file name, k) -> caption text."""
    texts = {}
    for n, line in read_lines(path):
        key, sep, text = line.partition("\t")
        image, hash_, k = key.partition("#")
        if not sep or not hash_ or not k.isdigit():
            raise PrepareError(f"{path}:{n}: expected '<image>.jpg#<k>\\t<caption>', got {line!r}")
        texts[(image, int(k))] = text.strip()
    return texts


def split_images(root: str, kind: str) -> tuple[dict[str, str], str]:
    """image file name -> output split ("train", "val", "test"), and the file(s) read."""
    where: dict[str, str] = {}
    if kind == "official":
        text = os.path.join(root, "Flickr8k_text")
        for split, name in OFFICIAL_LISTS.items():
            path = os.path.join(text, name)
            for n, line in read_lines(path):
                if where.get(line, split) != split:
                    raise PrepareError(f"{path}:{n}: image {line} is also in the {where[line]} list")
                where[line] = split
        return where, os.path.join(text, "Flickr_8k.*Images.txt")
    path = first_existing(root, ("dataset_flickr8k.json", os.path.join("Flickr8k_text", "dataset_flickr8k.json")),
                          "Karpathy split dataset_flickr8k.json")
    raw = read_json(path)
    images = raw.get("images") if isinstance(raw, dict) else None
    if not isinstance(images, list):
        raise PrepareError(f"{path}: expected {{'images': [{{'filename', 'split', ...}}, ...]}}")
    for i, image in enumerate(images):
        split = KARPATHY_SPLITS.get(image.get("split")) if isinstance(image, dict) else None
        if split is None or not isinstance(image.get("filename"), str):
            raise PrepareError(f"{path}: images[{i}] needs a 'filename' and a 'split' in "
                               f"{sorted(KARPATHY_SPLITS)}, got {image!r}"[:300])
        where[image["filename"]] = split
    return where, path


def read(args: argparse.Namespace) -> list[Split]:
    root = os.path.abspath(os.path.expanduser(args.root))
    audio_base = os.path.join(root, "flickr_audio", "wavs")
    wav2capt_path = os.path.join(root, "flickr_audio", "wav2capt.txt")
    images = (os.path.abspath(os.path.expanduser(args.images)) if args.images
              else first_existing(root, IMAGE_FOLDERS, "Flickr8k image folder (pass --images)"))
    captions = read_wav2capt(wav2capt_path)
    speakers, wav2spk_path = read_wav2spk(root)
    texts = read_tokens(os.path.join(root, "Flickr8k_text", "Flickr8k.token.txt"))
    where, split_source = split_images(root, args.split)

    items: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    no_text, no_speaker = [], []
    for wav, (image, k) in captions.items():
        split = where.get(image)
        if split is None:
            continue  # the image is in no split of this kind
        text = texts.get((image, k))
        if text is None:
            no_text.append(wav)
        speaker = speakers.get(wav)
        if speaker is None:
            no_speaker.append(wav)
        items[split].append({
            "uttid": wav[:-4] if wav.endswith(".wav") else wav,
            "speaker": f"flickr8k_{speaker}" if speaker is not None else "",
            "asr_text": text or "",
            "wav": wav,
            "image": image,
            "image_id": image[:-4] if image.lower().endswith(".jpg") else image,
            "_k": k,
        })
    if no_speaker:
        raise PrepareError(f"{wav2spk_path}: no speaker for {len(no_speaker)} wav(s) of {wav2capt_path}, "
                           f"e.g. {no_speaker[:3]}")
    if no_text:
        raise PrepareError(f"{os.path.join(root, 'Flickr8k_text', 'Flickr8k.token.txt')}: no caption text for "
                           f"{len(no_text)} wav(s) of {wav2capt_path} (looked up by image and #k), e.g. {no_text[:3]}")
    source = f"{wav2capt_path}, {split_source}"
    return [Split(name, sort_items(its), audio_base, images, source) for name, its in items.items()]
