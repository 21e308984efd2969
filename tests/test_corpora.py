"""python -m datamodules.prepare on tiny copies of each corpus' real layout (tests/corpus_layouts.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import corpus_layouts as layouts
import pytest
import soundfile as sf

from datamodules.corpora.common import PrepareError
from datamodules.errors import ManifestError
from datamodules.manifest import load_manifest, place_label
from datamodules.prepare import main, prepare


def _run(*args: str) -> dict:
    return prepare([*args, "--no-progress"])


def _items(path: str | Path) -> list[dict]:
    return json.loads(Path(path).read_text())["data"]


def _hours(manifest_path: str) -> float:
    m = load_manifest(manifest_path)
    return sum(sf.info(m.wav_path(i)).duration for i in range(len(m))) / 3600


def _row(result: dict, split: str) -> dict:
    return next(r for r in result["summary"] if r["split"] == split)


# ---- Flickr8k ------------------------------------------------------------------------------------------------
def test_flickr8k_official_split(tmp_path, capsys):
    corpus = layouts.flickr8k(tmp_path / "flickr8k")
    out = tmp_path / "out"
    result = _run("flickr8k", "--root", str(corpus["root"]), "--out", str(out))
    assert sorted(result["manifests"]) == ["test", "train", "val"]
    expected = {"train": (3, 14), "val": (2, 10), "test": (2, 10)}  # (images, captions); one image has 4
    for split, (n_images, n_captions) in expected.items():
        row = _row(result, split)
        assert (row["images"], row["captions"], row["missing"]) == (n_images, n_captions, 0)
        assert row["hours"] == pytest.approx(_hours(result["manifests"][split]), abs=1e-4)
        items = _items(out / f"{split}.json")
        official = {"train": "train", "val": "dev", "test": "test"}[split]
        assert {it["image_id"] for it in items} == {im for im, (s, _) in layouts.FLICKR_SPLITS.items() if s == official}
        # order: image id, then caption number; text looked up by image and #k (the token file is reversed)
        keys = [(it["image_id"], int(it["wav"][-5])) for it in items]
        assert keys == sorted(keys)
        for it, (image, k) in zip(items, keys):
            assert it["asr_text"] == layouts.flickr_text(image, k)
            assert it["image"] == f"{image}.jpg" and it["uttid"] == it["wav"][:-4]
            assert it["speaker"].startswith("flickr8k_") and it["speaker"][9:].isdigit()
        assert row["speakers"] == len({it["speaker"] for it in items})
        # base paths are relative to the manifest and resolve to the corpus
        raw = json.loads((out / f"{split}.json").read_text())
        assert not os.path.isabs(raw["audio_base_path"]) and not os.path.isabs(raw["image_base_path"])
        manifest = load_manifest(out / f"{split}.json")
        assert not manifest.missing_files()
        assert len(set(manifest.image_id.tolist())) == n_images
    printed = capsys.readouterr().out
    assert "captions" in printed and "speakers" in printed and "hours" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["corpus"] == "flickr8k" and [r["split"] for r in summary["splits"]] == ["train", "val", "test"]


def test_flickr8k_karpathy_split_with_wav2spk_at_the_root(tmp_path):
    corpus = layouts.flickr8k(tmp_path / "flickr8k", wav2spk_at_root=True)
    result = _run("flickr8k", "--root", str(corpus["root"]), "--split", "karpathy", "--out", str(tmp_path / "out"))
    for split in ("train", "val", "test"):
        wanted = {"train": ("train", "restval")}.get(split, (split,))  # restval joins train
        items = _items(result["manifests"][split])
        assert {it["image_id"] for it in items} == {im for im, (_, ks) in layouts.FLICKR_SPLITS.items()
                                                    if ks in wanted}
        assert all(it["speaker"].startswith("flickr8k_") for it in items)


@pytest.mark.parametrize("images_flag", [False, True])
def test_flickr8k_missing_wav_stops_or_is_skipped(tmp_path, capsys, images_flag):
    gone = f"{layouts.FOUR_CAPTIONS}_2.wav"
    corpus = layouts.flickr8k(tmp_path / "flickr8k", missing_wav=gone)
    args = ["flickr8k", "--root", str(corpus["root"]), "--out", str(tmp_path / "out")]
    if images_flag:
        args += ["--images", str(corpus["images"])]
    with pytest.raises(PrepareError, match=gone) as err:
        _run(*args)
    assert "train" in str(err.value) and not (tmp_path / "out").exists()  # the table, and nothing written
    assert main([*args, "--no-progress"]) == 2 and gone in capsys.readouterr().err

    result = _run(*args, "--on-missing", "skip")
    row = _row(result, "train")
    assert row["missing"] == 1 and row["captions"] == 13 and row["missing_files"] == [
        f"wav {corpus['root'] / 'flickr_audio' / 'wavs' / gone}"]
    assert gone not in {it["wav"] for it in _items(result["manifests"]["train"])}


def test_flickr8k_bad_files_are_named(tmp_path):
    corpus = layouts.flickr8k(tmp_path / "flickr8k")
    capt = corpus["root"] / "flickr_audio" / "wav2capt.txt"
    capt.write_text(capt.read_text() + "broken_line.wav\n")
    with pytest.raises(PrepareError, match=r"wav2capt.txt:\d+: expected"):
        _run("flickr8k", "--root", str(corpus["root"]), "--out", str(tmp_path / "out"))
    with pytest.raises(PrepareError, match="no Flickr8k image folder"):
        _run("flickr8k", "--root", str(tmp_path), "--out", str(tmp_path / "out"))


# ---- SpokenCOCO ----------------------------------------------------------------------------------------------
def test_spokencoco_karpathy_split(tmp_path):
    corpus = layouts.spokencoco(tmp_path)
    out = tmp_path / "out"
    result = _run("spokencoco", "--root", str(corpus["root"]), "--coco-root", str(corpus["coco_root"]),
                  "--out", str(out))  # karpathy by default: its files exist
    assert sorted(result["manifests"]) == ["test", "train", "val"]
    for split, images in layouts.COCO_KARPATHY.items():
        row = _row(result, split)
        assert (row["images"], row["captions"]) == (len(images), sum(n for _, n in images))
        assert row["hours"] == pytest.approx(_hours(result["manifests"][split]), abs=1e-4)
        items = _items(out / f"{split}.json")
        for it in items:
            assert set(it) == {"uttid", "speaker", "asr_text", "wav", "image", "image_id"}  # parse_tree dropped
            assert it["uttid"].startswith(it["speaker"] + "-") and it["asr_text"].startswith("A PICTURE")
        ids = [int(it["image_id"]) for it in items]
        assert ids == sorted(ids)
    train = _items(out / "train.json")
    assert "val2014/COCO_val2014_000000000042.jpg" in {it["image"] for it in train}  # split from the file
    test = _items(out / "test.json")
    assert [it["image_id"] for it in test[:4]] == ["73"] * 4 and test[4]["image_id"] == "325114"
    manifest = load_manifest(out / "test.json")
    ids = manifest.image_id.tolist()
    assert not manifest.missing_files() and len(set(ids[:4])) == len(set(ids[4:])) == 1 and ids[0] != ids[4]


def test_spokencoco_unrolled_keeps_text_alignment(tmp_path):
    corpus = layouts.spokencoco(tmp_path, unrolled=True, official=False)
    out = tmp_path / "out"
    _run("spokencoco", "--root", str(corpus["root"]), "--coco-root", str(corpus["coco_root"]), "--out", str(out))
    manifest = load_manifest(out / "test.json")
    assert len(manifest) == 9
    for i in range(len(manifest)):
        assert manifest.text_alignment(i) == corpus["alignments"][manifest.uttids[i].decode()]
    items = _items(out / "test.json")
    ks = [int(it["uttid"].rsplit("_", 1)[-1]) - 629297 for it in items]
    assert ks == [0, 1, 2, 3, 0, 1, 2, 3, 4]  # caption number = position among the items of its image


def test_spokencoco_official_split(tmp_path):
    corpus = layouts.spokencoco(tmp_path)
    result = _run("spokencoco", "--root", str(corpus["root"]), "--coco-root", str(corpus["coco_root"]),
                  "--split", "official", "--out", str(tmp_path / "out"))
    assert sorted(result["manifests"]) == ["train", "val"]
    assert all(it["image"].startswith("train2014") for it in _items(result["manifests"]["train"]))
    assert all(it["image"].startswith("val2014") for it in _items(result["manifests"]["val"]))
    (corpus["root"] / "SpokenCOCO_test_karpathy.json").unlink()
    with pytest.raises(PrepareError, match=r"no Karpathy file for split\(s\) \['test'\]"):
        _run("spokencoco", "--root", str(corpus["root"]), "--coco-root", str(corpus["coco_root"]),
             "--split", "karpathy", "--out", str(tmp_path / "out2"))


# ---- Places --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("aligned", [False, True])
def test_places_rewrites_base_paths_and_keeps_every_item(tmp_path, aligned):
    corpus = layouts.places(tmp_path, aligned=aligned)
    out = tmp_path / "out"
    result = _run("places", "--root", str(corpus["root"]), "--images", str(corpus["images"]), "--out", str(out))
    assert sorted(result["manifests"]) == ["dev_seen_2020", "train", "val"]
    for split, shipped in corpus["splits"].items():
        manifest = load_manifest(out / f"{split}.json")
        assert os.path.normpath(manifest.audio_base) == str(corpus["root"])
        assert os.path.normpath(manifest.image_base) == str(corpus["images"])
        assert not manifest.missing_files()  # the shipped /data/sls/... paths would not resolve
        items = _items(out / f"{split}.json")
        assert sorted(it["uttid"] for it in items) == sorted(it["uttid"] for it in shipped)  # every item kept
        for it in items:
            assert it["image_id"] == it["image"]
            assert ("text_alignment" in it) == (aligned and not split.endswith("_2020"))
        assert _row(result, split)["images"] == len({it["image"] for it in shipped})
    train = load_manifest(out / "train.json")
    assert "apartment_building/outdoor" in set(train.place_names())  # the three-level class path
    assert place_label("a/apartment_building/outdoor/gsun_77aa.jpg") == "apartment_building/outdoor"
    assert len(train) == 8 and len(set(train.image_id.tolist())) == 6  # two images with two captions each


# ---- the manifest's image_id and text_alignment ------------------------------------------------------------
def _manifest(tmp_path: Path, items: list[dict]) -> Path:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"image_base_path": ".", "audio_base_path": ".", "data": items}))
    return path


def test_manifest_groups_by_image_id_when_present(tmp_path):
    items = [{"wav": "a.wav", "image": "x/1.jpg", "image_id": "7"}, {"wav": "b.wav", "image": "x/2.jpg"},
             {"wav": "c.wav", "image": "x/1.jpg", "image_id": "7", "text_alignment": "0.1__A__0.2"},
             {"wav": "d.wav", "image": "x/2.jpg"}]
    m = load_manifest(_manifest(tmp_path, items))
    assert m.image_id[0] == m.image_id[2] != m.image_id[1] == m.image_id[3]
    assert m.image_keys.tolist() == [b"7", b"", b"7", b""]
    assert m.text_alignment(2) == "0.1__A__0.2" and m.text_alignment(0) is None
    plain = load_manifest(_manifest(tmp_path, [{"wav": "a.wav", "image": "y.jpg"}]))
    assert plain.image_keys is None and plain.text_alignment(0) is None
    with pytest.raises(ManifestError, match=r"items 0 and 1 have the same image_id '7' but different images"):
        load_manifest(_manifest(tmp_path, [{"wav": "a.wav", "image": "1.jpg", "image_id": "7"},
                                           {"wav": "b.wav", "image": "2.jpg", "image_id": "7"}]))
    with pytest.raises(ManifestError, match=r"item 0: 'image_id' must be a string"):
        load_manifest(_manifest(tmp_path, [{"wav": "a.wav", "image": "1.jpg", "image_id": 7}]))
