"""Manifest parsing and validation, place labels, label maps."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from datamodules.manifest import (
    ManifestError,
    build_label_map,
    load_manifest,
    place_ids,
    place_label,
)


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def item(i=0, **over):
    base = {"uttid": f"S-{i}", "speaker": "S", "asr_text": "a caption", "wav": f"wavs/{i}.wav",
            "image": f"r/runway/{i}.jpg"}
    base.update(over)
    return base


def test_relative_and_absolute_base_paths(tmp_path):
    (tmp_path / "meta").mkdir()
    path = write_json(tmp_path / "meta" / "m.json",
                      {"image_base_path": "../images", "audio_base_path": str(tmp_path / "audio"), "data": [item()]})
    m = load_manifest(path)
    assert os.path.normpath(m.image_path(0)) == str(tmp_path / "images" / "r" / "runway" / "0.jpg")
    assert m.wav_path(0) == str(tmp_path / "audio" / "wavs" / "0.wav")
    assert m.uttids[0] == b"S-0" and len(m) == 1


def test_generated_manifest_and_image_ids(make_manifest):
    m = load_manifest(make_manifest(n=7, n_images=3))
    assert len(m) == 7
    assert all(os.path.exists(m.wav_path(i)) and os.path.exists(m.image_path(i)) for i in range(7))
    # captions i and i+3 share image i % 3, so they share an image id; distinct images get distinct ids
    assert m.image_id.dtype == np.int64
    assert m.image_id[0] == m.image_id[3] == m.image_id[6]
    assert len(set(m.image_id[:3].tolist())) == 3
    assert m.missing_files() == []


def test_optional_item_keys_and_extra_keys(tmp_path):
    path = write_json(tmp_path / "m.json", {"image_base_path": ".", "audio_base_path": ".",
                                            "data": [{"wav": "a.wav", "image": "r/runway/a.jpg", "text": "x"}]})
    m = load_manifest(path)
    assert m.uttids[0] == b"" and m.speakers[0] == b""


def test_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"image_base_path": ".", "data": [')
    with pytest.raises(ManifestError, match="not valid JSON") as info:
        load_manifest(path)
    assert str(path) in str(info.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "nope.json")


@pytest.mark.parametrize("key", ["image_base_path", "audio_base_path", "data"])
def test_missing_top_level_key(tmp_path, key):
    obj = {"image_base_path": ".", "audio_base_path": ".", "data": [item()]}
    del obj[key]
    path = write_json(tmp_path / "m.json", obj)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert f"'{key}'" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("key", ["wav", "image"])
def test_item_missing_key_names_item_and_key(tmp_path, key):
    bad = item(2)
    del bad[key]
    path = write_json(tmp_path / "m.json", {"image_base_path": ".", "audio_base_path": ".",
                                            "data": [item(0), item(1), bad]})
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert "item 2" in str(info.value) and f"'{key}'" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    "obj,match",
    [
        ([1, 2], "JSON object"),
        ({"image_base_path": ".", "audio_base_path": ".", "data": {"a": 1}}, "must be a list"),
        ({"image_base_path": ".", "audio_base_path": ".", "data": []}, "empty"),
        ({"image_base_path": ".", "audio_base_path": ".", "data": ["x"]}, "item 0 must be an object"),
        ({"image_base_path": ".", "audio_base_path": ".", "data": [item(wav=3)]}, "item 0: 'wav' must be"),
        ({"image_base_path": 5, "audio_base_path": ".", "data": [item()]}, "'image_base_path' must be a string"),
    ],
)
def test_malformed_manifests(tmp_path, obj, match):
    path = write_json(tmp_path / "m.json", obj)
    with pytest.raises(ManifestError, match=match):
        load_manifest(path)


@pytest.mark.parametrize(
    "path,label",
    [
        ("r/runway/gsun_42132d45.jpg", "runway"),
        ("a/apartment_building/outdoor/gsun_x.jpg", "apartment_building/outdoor"),
        ("images256/r/runway/x.jpg", "runway"),
        ("./b/bus_interior/x.jpg", "bus_interior"),
        ("s\\skyscraper\\x.jpg", "skyscraper"),
    ],
)
def test_place_label(path, label):
    assert place_label(path) == label


@pytest.mark.parametrize("path", ["x.jpg", "runway/x.jpg", "images/runway/x.jpg", "r/x.jpg"])
def test_place_label_rejects_other_layouts(path):
    with pytest.raises(ValueError, match="Places layout"):
        place_label(path)


def test_place_names_error_names_item(tmp_path):
    path = write_json(tmp_path / "m.json", {"image_base_path": ".", "audio_base_path": ".",
                                            "data": [item(0), item(1, image="flat.jpg")]})
    with pytest.raises(ManifestError, match="item 1"):
        load_manifest(path).place_names()


def test_label_map_and_ids(make_manifest):
    m = load_manifest(make_manifest(n=6))
    names = m.place_names()
    assert list(names[:3]) == ["runway", "abbey", "apartment_building/outdoor"]
    label_map = build_label_map(names)
    assert label_map == {"abbey": 0, "apartment_building/outdoor": 1, "runway": 2}
    ids = place_ids(names, label_map, m.path)
    assert ids.dtype == np.int64 and ids.tolist() == [2, 0, 1, 2, 0, 1]
    with pytest.raises(ValueError, match="'runway'") as info:
        place_ids(names, {"abbey": 0, "apartment_building/outdoor": 1}, m.path)
    assert m.path in str(info.value)


def test_missing_files(make_manifest, tmp_path):
    path = make_manifest(n=4)
    m = load_manifest(path)
    os.remove(m.wav_path(1))
    os.remove(m.image_path(2))
    assert [(i, kind) for i, kind, _ in m.missing_files()] == [(1, "wav"), (2, "image")]
