"""Data that survives interruptions and odd inputs: restartable generation and cache, stage-specific manifests,
caches built on demand, and the small manifest defects (null text, duplicate uttids, outliers, place labels)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from datamodules import load_manifest
from datamodules import places_audio as places_audio_mod
from datamodules.cache import FeatureStore, build_cache, store_dir
from datamodules.errors import FeatureCacheError, ManifestWarning
from datamodules.manifest import place_label
from datamodules.places_audio import PlacesAudioDataModule, PlacesAudioDataset
from datamodules.spokenscenes import check_dataset, generate

generate_mod = importlib.import_module("datamodules.spokenscenes.generate")  # the module, not the function

REPO = Path(__file__).parent.parent
SIZES = {"train": 3, "val": 1, "test": 1}


def _demo_module():
    spec = importlib.util.spec_from_file_location("vgs_demo_script", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- point 9: generation and the feature cache restart cleanly ------------------------------------------------
def test_interrupted_generation_is_detected_and_completed_to_the_same_bytes(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    generate(reference, **SIZES, seed=0, image_size=32, workers=1, progress=False)
    assert check_dataset(reference, **SIZES, seed=0, image_size=32) == []

    root = tmp_path / "interrupted"
    make_pair, calls = generate_mod._make_pair, []

    def stop_during_val(job):
        calls.append(job)
        if job[1] == "val":
            raise KeyboardInterrupt  # Ctrl-C (or a kill) after the train split is done
        return make_pair(job)

    monkeypatch.setattr(generate_mod, "_make_pair", stop_during_val)
    with pytest.raises(KeyboardInterrupt):
        generate(root, **SIZES, seed=0, image_size=32, workers=1, progress=False)
    monkeypatch.setattr(generate_mod, "_make_pair", make_pair)
    assert not (root / "info.json").exists() and (root / "train.json").exists()
    assert check_dataset(root, **SIZES, seed=0, image_size=32) == [f"{root / 'info.json'} is missing (an earlier "
                                                                   "generation was interrupted)"]
    # make demo's step 1 finishes it: the complete train split is kept, val and test are made.
    demo = _demo_module()
    monkeypatch.setattr(demo, "generate", lambda root, **kw: generate(root, **{**kw, "image_size": 32}, workers=1,
                                                                      progress=False))
    monkeypatch.setattr(demo, "check_dataset", lambda root, **kw: check_dataset(root, **{**kw, "image_size": 32}))
    demo.ensure_data(root, SIZES)
    assert check_dataset(root, **SIZES, seed=0, image_size=32) == []
    for name in ("train.json", "val.json", "test.json"):
        assert (root / name).read_bytes() == (reference / name).read_bytes(), name
    assert not (root / generate_mod.MARKER).exists()
    # A file lost later is noticed, and the split is made again.
    wav = root / "wavs" / json.loads((root / "test.json").read_text())["data"][0]["wav"]
    wav.unlink()
    assert "is missing or empty" in check_dataset(root, **SIZES, seed=0, image_size=32)[0]
    result = generate(root, **SIZES, seed=0, image_size=32, workers=1, progress=False, resume=True)
    assert result["kept"] == ["train", "val"] and wav.read_bytes()
    # A data set of an older version (1.0 had no word or phone alignments) is made again, not resumed.
    info = json.loads((root / "info.json").read_text())
    (root / "info.json").write_text(json.dumps({**info, "version": "1.0"}))
    assert "holds SpokenScenes 1.0, not 1.1" in check_dataset(root, **SIZES, seed=0, image_size=32)[0]
    result = generate(root, **SIZES, seed=0, image_size=32, workers=1, progress=False, resume=True)
    assert result["kept"] == [] and check_dataset(root, **SIZES, seed=0, image_size=32) == []
    assert "phone_alignment" in json.loads((root / "test.json").read_text())["data"][0]


def test_feature_cache_killed_mid_build_is_rebuilt_complete(make_manifest, tmp_path):
    manifest = make_manifest(n=8)
    cache = tmp_path / "cache"
    code = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import datamodules.cache as c\n"
        "real, n = c.wav_log_mel, [0]\n"
        "def decode(path):\n"
        "    n[0] += 1\n"
        "    if n[0] == 5:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(path)\n"
        "c.wav_log_mel = decode\n"
        f"c.build_cache({str(manifest)!r}, {str(cache)!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL
    folder = store_dir(cache, manifest)
    assert not os.path.exists(folder) and len(os.listdir(cache)) == 1  # only the abandoned build folder
    with pytest.raises(FeatureCacheError, match="no feature cache"):
        FeatureStore.open(cache, load_manifest(manifest))
    build_cache(manifest, cache)
    assert len(FeatureStore.open(cache, load_manifest(manifest))) == 8
    assert os.listdir(cache) == [os.path.basename(folder)]  # the killed build's folder is gone


# ---- point 11: caches built on demand, or decoding with one warning --------------------------------------------
def test_datamodule_builds_missing_caches_and_decodes_another_manifests_store(make_manifest, tmp_path, capsys):
    train = make_manifest(n=4, name="train", root=tmp_path / "a")
    val = make_manifest(n=3, name="val", root=tmp_path / "a", seed=1)
    cache = tmp_path / "cache"
    dm = PlacesAudioDataModule(train_manifest=str(train), val_manifest=str(val), feature_cache=str(cache),
                               num_workers=0, batch_size=2, target_length=None)
    dm.prepare_data()  # no trainer: every split it has
    assert "building" in capsys.readouterr().out
    dm.setup("fit")
    assert dm.train_dataset.store is not None and dm.val_dataset.store is not None
    # Another data set whose val manifest has the same file name: its store would replace ours, so it is decoded.
    other_val = make_manifest(n=2, name="val", root=tmp_path / "b", seed=5)
    other = PlacesAudioDataModule(val_manifest=str(other_val), feature_cache=str(cache), num_workers=0)
    with pytest.warns(ManifestWarning, match=r"holds the features of another manifest .*--data.feature_cache null"):
        other.setup("validate")
    assert other.val_dataset.store is None and len(next(iter(other.val_dataloader()))["nframes"]) == 2
    assert len(FeatureStore.open(cache, load_manifest(val))) == 3  # ours is intact
    # Without prepare_data (plain use), the error says how to fix it.
    with pytest.raises(FeatureCacheError, match=r"--data.feature_cache null"):
        PlacesAudioDataset(str(make_manifest(n=2, name="test", root=tmp_path / "a")), feature_cache=str(cache))


# ---- the smaller defects ----------------------------------------------------------------------------------------
def test_null_text_duplicate_uttids_and_long_captions(make_manifest, tmp_path, monkeypatch):
    path = make_manifest(n=4)
    raw = json.loads(path.read_text())
    raw["data"][0]["asr_text"] = None
    raw["data"][1].pop("asr_text")
    raw["data"][1]["text"] = "plain text key"
    raw["data"][3]["uttid"] = raw["data"][2]["uttid"]
    path.write_text(json.dumps(raw))
    with pytest.warns(ManifestWarning, match=r"1 duplicate uttid\(s\), e.g. 'SPK2-train2' \(items 2 and 3\)"):
        m = load_manifest(path)
    assert m.describe(0)["text"] == "" and m.describe(1)["text"] == "plain text key"

    long = make_manifest(n=3, name="long", seconds=[0.3, 0.4, 0.5])
    monkeypatch.setattr(places_audio_mod, "LONG_CAPTION_FRAMES", 45)  # a 0.5 s caption stands in for 10 minutes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ManifestWarning)
        dataset = PlacesAudioDataset(str(long), target_length=None)
    with pytest.warns(ManifestWarning, match=r"longer than 0 s, the longest item 2 \(uttid SPK2-long2\) 0\.5 s; "
                                             r"with target_length null every batch"):
        dataset[2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset[2]  # once per data set
    with pytest.warns(ManifestWarning, match="1 caption"):
        PlacesAudioDataset(str(long), target_length=None).lengths()


def test_place_label_skips_one_letter_mount_folders():
    assert place_label("/mnt/d/places/r/runway/x.jpg") == "runway"
    assert place_label("/mnt/d/d/dining_room/x.jpg") == "dining_room"
    assert place_label("/data/x/images/a/apartment_building/outdoor/x.jpg") == "apartment_building/outdoor"
    assert place_label("r/runway/x.jpg") == "runway" and place_label("images256/b/bar/y.jpg") == "bar"
    with pytest.raises(ValueError, match="expected the Places layout"):
        place_label("runway/x.jpg")
