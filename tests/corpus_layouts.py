"""Tiny copies of the real corpora's on-disk layouts (../shared/spec/corpora.md), written into a test folder.

    flickr8k(root, ...)    flickr_audio/, Flickr8k_text/, dataset_flickr8k.json, Flicker8k_Dataset/
    spokencoco(root, ...)  SpokenCOCO/ (JSONs, wavs/) and coco/ (train2014/, val2014/)
    places(root, ...)      PlacesAudio_400k_distro/ (metadata/, wavs/) and places205/ images

Each returns a dict of what the tests check against (folders, the captions per split, ...). Wavs are 0.25-0.4 s
of 16 kHz audio, images 40 x 32.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import _write_image, _write_wav

# ---- Flickr8k ------------------------------------------------------------------------------------------------
FLICKR_SPLITS = {  # image -> (official split, Karpathy split)
    "1000268201_693b08cb0e": ("train", "train"),
    "1001773457_577c3a7d70": ("train", "restval"),
    "1002674143_1b742ab4b8": ("train", "train"),  # 4 captions instead of 5
    "2513260012_03d33305cf": ("dev", "val"),
    "3338291921_fe7ae0c8f8": ("dev", "test"),
    "1007129816_e794419615": ("test", "test"),
    "1007320043_627395c3d8": ("test", "val"),
}
FOUR_CAPTIONS = "1002674143_1b742ab4b8"


def flickr_text(image: str, k: int) -> str:
    return f"caption {k} of image {image[:6]}"


def flickr8k(root: Path, wav2spk_at_root: bool = False, missing_wav: str | None = None) -> dict:
    """The Flickr8k Audio Captions layout; `missing_wav` names a listed wav that is not written."""
    root = Path(root)
    audio, text = root / "flickr_audio", root / "Flickr8k_text"
    text.mkdir(parents=True, exist_ok=True)
    capt, spk, tokens = [], [], []
    for j, (image, _) in enumerate(FLICKR_SPLITS.items()):
        _write_image(root / "Flicker8k_Dataset" / f"{image}.jpg", seed=j)
        for k in range(4 if image == FOUR_CAPTIONS else 5):
            wav = f"{image}_{k}.wav"
            if wav != missing_wav:
                _write_wav(audio / "wavs" / wav, seconds=0.25 + 0.03 * ((j + k) % 5), seed=10 * j + k)
            capt.append(f"{wav} {image}.jpg #{k}")
            spk.append(f"{wav} {1 + (j * 5 + k) % 7}")
        tokens += [f"{image}.jpg#{k}\t{flickr_text(image, k)}" for k in range(5)]
    random.Random(0).shuffle(capt)  # the real file is not sorted
    tokens.reverse()  # and the token file is in another order: texts must be found by image and #k
    (audio / "wav2capt.txt").write_text("\n".join(capt) + "\n")
    (root / "wav2spk.txt" if wav2spk_at_root else audio / "wav2spk.txt").write_text("\n".join(spk) + "\n")
    (text / "Flickr8k.token.txt").write_text("\n".join(tokens) + "\n")
    for split, name in (("train", "trainImages"), ("dev", "devImages"), ("test", "testImages")):
        lines = [f"{im}.jpg" for im, (s, _) in FLICKR_SPLITS.items() if s == split]
        (text / f"Flickr_8k.{name}.txt").write_text("\n".join(lines) + "\n")
    karpathy = {"images": [{"filename": f"{im}.jpg", "split": ks, "sentences": [{"raw": "unused"}]}
                           for im, (_, ks) in FLICKR_SPLITS.items()], "dataset": "flickr8k"}
    (root / "dataset_flickr8k.json").write_text(json.dumps(karpathy))
    return {"root": root, "images": root / "Flicker8k_Dataset"}


# ---- SpokenCOCO ----------------------------------------------------------------------------------------------
# Karpathy split -> [(image path, number of captions)]; the train split holds a val2014 image.
COCO_KARPATHY = {
    "train": [("train2014/COCO_train2014_000000000009.jpg", 3), ("val2014/COCO_val2014_000000000042.jpg", 2),
              ("train2014/COCO_train2014_000000000025.jpg", 2)],
    "val": [("val2014/COCO_val2014_000000000133.jpg", 2), ("val2014/COCO_val2014_000000000074.jpg", 3)],
    "test": [("val2014/COCO_val2014_000000325114.jpg", 5), ("val2014/COCO_val2014_000000000073.jpg", 4)],
}


def spokencoco(root: Path, unrolled: bool = False, official: bool = True) -> dict:
    """SpokenCOCO/ (Karpathy files, rolled or `unrolled` with text_alignment; the official pair with `official`)
    and coco/ with the images."""
    root = Path(root)
    sc, coco = root / "SpokenCOCO", root / "coco"
    sc.mkdir(parents=True, exist_ok=True)
    alignments = {}
    splits = {}
    for n_split, (split, images) in enumerate(COCO_KARPATHY.items()):
        data = []
        for j, (image, n) in enumerate(images):
            _write_image(coco / image, seed=100 * n_split + j)
            coco_id = int(image.rsplit("_", 1)[-1][:-4])
            captions = []
            for k in range(n):
                speaker = f"m{n_split}{j}{k % 2}spk"
                uttid = f"{speaker}-3LUY{n_split}{j}{k}_{coco_id}_{629297 + k}"
                folder = "train" if image.startswith("train") else "val"
                wav = f"wavs/{folder}/{k % 2}/{uttid}.wav"
                _write_wav(sc / wav, seconds=0.25 + 0.04 * k, seed=1000 * n_split + 10 * j + k)
                captions.append({"text": f"A PICTURE {k} OF {coco_id}", "speaker": speaker, "uttid": uttid,
                                 "wav": wav})
                alignments[uttid] = f"0.05__A__0.1{k} 0.1{k}__PICTURE__0.24"
            data.append({"image": image, "captions": captions, "parse_tree": "(S (NP a picture))"})
        splits[split] = data
        if unrolled:
            flat = [{"image": d["image"], "caption": {**c, "text_alignment": alignments[c["uttid"]]}}
                    for d in data for c in d["captions"]]
            (sc / f"SpokenCOCO_{split}_unrolled_karpathy.json").write_text(json.dumps({"data": flat}))
        else:
            (sc / f"SpokenCOCO_{split}_karpathy.json").write_text(json.dumps({"data": data}))
    if official:  # the official split: train2014 images in train, val2014 in val
        every = [d for split in splits.values() for d in split]
        (sc / "SpokenCOCO_train.json").write_text(json.dumps(
            {"data": [d for d in every if d["image"].startswith("train2014")]}))
        (sc / "SpokenCOCO_val.json").write_text(json.dumps(
            {"data": [d for d in every if d["image"].startswith("val2014")]}))
    return {"root": sc, "coco_root": coco, "splits": splits, "alignments": alignments}


# ---- Places --------------------------------------------------------------------------------------------------
PLACES_IMAGES = ["r/runway/gsun_42132d45b3df.jpg", "a/apartment_building/outdoor/gsun_77aa.jpg",
                 "b/bedroom/gsun_0b1f.jpg", "k/kitchen/gsun_c3d2.jpg", "a/abbey/gsun_9e9e.jpg",
                 "b/beach/gsun_5a5a.jpg"]


def places(root: Path, aligned: bool = False) -> dict:
    """PlacesAudio_400k_distro/ with train, val and one 2020 split (dev_seen), and places205/ images; the shipped
    base paths point to the authors' machines. `aligned` adds the *_original_with_alignments.json variants."""
    root = Path(root)
    distro, images = root / "PlacesAudio_400k_distro", root / "places205"
    for j, image in enumerate(PLACES_IMAGES):
        _write_image(images / image, seed=200 + j)
    counter = 0

    def items(picks: list[int]) -> list[dict]:
        nonlocal counter
        out = []
        for j in picks:
            counter += 1
            speaker = f"A2WQT33K6LD9Z{j}"
            wav = f"wavs/{counter % 3}/utterance_{377000 + counter}.wav"
            _write_wav(distro / wav, seconds=0.25 + 0.02 * (counter % 6), seed=300 + counter)
            out.append({"uttid": f"{speaker}-GSUN_{counter:04d}", "speaker": speaker,
                        "asr_text": f"photos of a {PLACES_IMAGES[j].split('/')[1]}", "wav": wav,
                        "image": PLACES_IMAGES[j]})
        return out

    shipped = {"image_base_path": "/data/sls/scratch/images/places205", "audio_base_path": "/data/sls/Places"}
    splits = {"train": items([0, 1, 2, 3, 4, 5, 1, 3]), "val": items([5, 4, 2, 0]), "dev_seen_2020": items([1, 3])}
    meta = distro / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    for name, data in splits.items():
        file = f"{name.removesuffix('_2020')}_2020.json" if name.endswith("_2020") else f"{name}.json"
        (meta / file).write_text(json.dumps({**shipped, "data": data}))
        if aligned and not name.endswith("_2020"):
            with_ali = [{**it, "text_alignment": f"0.40__PHOTOS__0.81 0.81__OF__0.9{i % 10}"}
                        for i, it in enumerate(data)]
            (meta / f"{name}_original_with_alignments.json").write_text(json.dumps({**shipped, "data": with_ali}))
    return {"root": distro, "images": images, "splits": splits}
