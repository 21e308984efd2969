"""Feature cache: round trip equal to on-the-fly features within float16 precision, stale or mismatched stores,
bad wavs."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from datamodules import cache as cache_mod
from datamodules.cache import FeatureStore, build_cache, main, store_dir
from datamodules.errors import BadSampleError, FeatureCacheError
from datamodules.features import wav_log_mel
from datamodules.manifest import load_manifest
from datamodules.places_audio import PlacesAudioDataModule, PlacesAudioDataset

# float16 keeps 11 significant bits: round-to-nearest is off by at most 2^-11 of the value (<= 0.04 dB on [-80, 0]).
F16_RTOL = 2.0**-11


def assert_f16_close(cached: torch.Tensor, exact: torch.Tensor) -> None:
    assert cached.shape == exact.shape and cached.dtype == torch.float32
    assert ((cached - exact).abs() <= F16_RTOL * exact.abs() + 1e-7).all()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_round_trip_equals_on_the_fly(make_manifest, tmp_path, num_workers):
    manifest = make_manifest(n=5, seconds=[0.3, 0.9, 0.25, 0.5, 0.41])
    folder = build_cache(manifest, tmp_path / "cache", num_workers=num_workers)
    assert folder == store_dir(tmp_path / "cache", manifest)
    m = load_manifest(manifest)
    store = FeatureStore.open(tmp_path / "cache", m)
    assert len(store) == 5
    for i in range(5):
        exact = wav_log_mel(m.wav_path(i))
        cached = store.features(i)
        assert_f16_close(cached, exact)
        assert not torch.equal(cached, exact)  # it really is the float16 copy
        assert store.lengths[i] == exact.shape[1]
        assert_f16_close(store.features(i, max_frames=20), exact[:, :20])


def test_cli_builds_every_manifest(make_manifest, tmp_path, capsys):
    train, val = make_manifest(n=3, name="train"), make_manifest(n=2, name="val", seed=1)
    assert main(["--manifest", str(train), "--manifest", str(val), "--out", str(tmp_path / "c"),
                 "--num-workers", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3 captions" in out and "2 captions" in out
    for m in (train, val):
        index = json.loads((tmp_path / "c" / m.stem / "index.json").read_text())
        assert index["manifest"] == str(m) and index["n_items"] == len(json.loads(m.read_text())["data"])


def test_dataset_reads_from_cache(make_manifest, tmp_path):
    manifest = make_manifest(n=4)
    build_cache(manifest, tmp_path / "cache")
    fly = PlacesAudioDataset(manifest, target_length=30, image_transform="resize", image_size=16)
    cached = PlacesAudioDataset(manifest, target_length=30, image_transform="resize", image_size=16,
                                feature_cache=str(tmp_path / "cache"))
    for i in range(4):
        a, b = fly[i], cached[i]
        assert a["nframes"] == b["nframes"]
        assert_f16_close(b["audio"], a["audio"])
        assert torch.equal(a["image"], b["image"])
    np.testing.assert_array_equal(cached.lengths(), fly.lengths())


def test_datamodule_with_cache(make_manifest, tmp_path):
    train = make_manifest(n=4)
    build_cache(train, tmp_path / "cache")
    kwargs = dict(batch_size=4, num_workers=0, target_length=None, image_transform="resize", image_size=16)
    dm = PlacesAudioDataModule(str(train), feature_cache=str(tmp_path / "cache"), **kwargs)
    dm.setup("fit")
    assert dm.datasets["train"].store is not None
    b_cached = next(iter(dm.train_dataloader()))
    order = b_cached["index"].argsort()
    b_fly = PlacesAudioDataset(train, target_length=None, image_transform="resize", image_size=16)
    for k, i in enumerate(b_cached["index"][order].tolist()):
        n = b_cached["nframes"][order][k]
        assert_f16_close(b_cached["audio"][order][k, :, :n], b_fly[i]["audio"])


def test_missing_store(make_manifest, tmp_path):
    manifest = make_manifest(n=2)
    with pytest.raises(FeatureCacheError, match="no feature cache") as info:
        FeatureStore.open(tmp_path / "nothing", load_manifest(manifest))
    assert "python -m datamodules.cache --manifest" in str(info.value)


def test_stale_wav(make_manifest, tmp_path, write_wav):
    manifest = make_manifest(n=3)
    build_cache(manifest, tmp_path / "cache")
    m = load_manifest(manifest)
    write_wav(m.wav_path(1), seconds=0.77, seed=9)  # re-recorded caption
    with pytest.raises(FeatureCacheError, match="stale") as info:
        FeatureStore.open(tmp_path / "cache", m)
    assert m.wav_path(1) in str(info.value) and "python -m datamodules.cache" in str(info.value)
    # same size, new content: caught by the mtime
    build_cache(manifest, tmp_path / "cache")
    st = os.stat(m.wav_path(2))
    n = sf.info(m.wav_path(2)).frames
    write_wav(m.wav_path(2), seconds=n / 16000, seed=17)
    os.utime(m.wav_path(2), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert os.stat(m.wav_path(2)).st_size == st.st_size
    with pytest.raises(FeatureCacheError, match="modified"):
        FeatureStore.open(tmp_path / "cache", m)


def test_different_manifest(make_manifest, tmp_path):
    manifest = make_manifest(n=3)
    build_cache(manifest, tmp_path / "cache")
    obj = json.loads(manifest.read_text())
    obj["data"] = obj["data"][::-1]
    manifest.write_text(json.dumps(obj))
    with pytest.raises(FeatureCacheError, match="different manifest"):
        FeatureStore.open(tmp_path / "cache", load_manifest(manifest))


def test_other_recipe_version(make_manifest, tmp_path, monkeypatch):
    manifest = make_manifest(n=2)
    build_cache(manifest, tmp_path / "cache")
    monkeypatch.setattr(cache_mod, "RECIPE", {**cache_mod.RECIPE, "version": cache_mod.RECIPE["version"] + 1})
    with pytest.raises(FeatureCacheError, match=r"another feature recipe \(differs in \['version'\]"):
        FeatureStore.open(tmp_path / "cache", load_manifest(manifest))


def test_truncated_store(make_manifest, tmp_path):
    manifest = make_manifest(n=2)
    folder = build_cache(manifest, tmp_path / "cache")
    with open(os.path.join(folder, "features.f16"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(FeatureCacheError, match="incomplete or corrupt"):
        FeatureStore.open(tmp_path / "cache", load_manifest(manifest))


def test_bad_wav_while_building(make_manifest, tmp_path):
    manifest = make_manifest(n=3)
    m = load_manifest(manifest)
    with open(m.wav_path(1), "wb") as f:
        f.write(b"garbage" * 50)
    with pytest.raises(BadSampleError, match="utt_1.wav"):
        build_cache(manifest, tmp_path / "cache")
    assert not os.path.exists(store_dir(tmp_path / "cache", manifest))  # no half-written store left
    build_cache(manifest, tmp_path / "cache", on_bad_sample="skip")
    store = FeatureStore.open(tmp_path / "cache", m)
    assert store.lengths.tolist()[1] == 0 and store.bad == {1: store.bad[1]} and "cannot decode" in store.bad[1]
    with pytest.raises(BadSampleError, match="recorded when the feature cache"):
        store.features(1)
    ds = PlacesAudioDataset(manifest, image_transform="resize", image_size=16, feature_cache=str(tmp_path / "cache"),
                            on_bad_sample="skip")
    assert ds[1].path == m.wav_path(1) and isinstance(ds[0], dict)


def test_store_pickles_without_its_memory_map(make_manifest, tmp_path):
    manifest = make_manifest(n=2)
    build_cache(manifest, tmp_path / "cache")
    store = FeatureStore.open(tmp_path / "cache", load_manifest(manifest))
    first = store.features(0)
    assert store._features is not None
    clone = pickle.loads(pickle.dumps(store))
    assert clone._features is None and torch.equal(clone.features(0), first)
    assert len(pickle.dumps(store)) < 10_000
