"""PlacesAudioDataset / PlacesAudioDataModule: the batch contract, images, odd and bad input in both modes (also
through DataLoader workers and a Lightning Trainer), place labels in checkpoints, the length-bucket sampler."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datamodules import PlacesAudioDataModule
from datamodules.errors import BadSampleError, ManifestError, SkippedSamplesWarning
from datamodules.features import single_thread_worker_init, wav_log_mel
from datamodules.images import (
    IMAGE_TRANSFORMS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG_MEAN_PIXEL,
    build_image_transform,
    load_image,
)
from datamodules.manifest import load_manifest
from datamodules.places_audio import PlacesAudioCollate
from datamodules.sampler import LengthBucketSampler

SMALL = dict(num_workers=0, image_size=16, image_transform="resize")
BATCH_KEYS = {"audio", "nframes", "image", "index", "image_id"}


def all_batches(loader):
    return list(iter(loader))


# ---- the batch contract ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("target_length", [None, 50, 20])
def test_batch_contract(make_manifest, target_length):
    path = make_manifest(n=7, n_images=5)
    dm = PlacesAudioDataModule(str(path), batch_size=3, target_length=target_length, pad_value=-3.5, **SMALL)
    dm.setup("fit")
    batches = all_batches(dm.train_dataloader())
    assert [len(b["index"]) for b in batches] == [3, 3, 1]
    m = load_manifest(path)
    seen = []
    for b in batches:
        assert set(b) == BATCH_KEYS
        B = len(b["index"])
        T = target_length if target_length is not None else int(b["nframes"].max())
        assert b["audio"].shape == (B, 40, T) and b["audio"].dtype == torch.float32
        assert b["nframes"].dtype == b["index"].dtype == b["image_id"].dtype == torch.int64
        assert b["image"].shape == (B, 3, 16, 16) and b["image"].dtype == torch.float32
        assert ((1 <= b["nframes"]) & (b["nframes"] <= T)).all()
        for k in range(B):
            i, n = int(b["index"][k]), int(b["nframes"][k])
            full = wav_log_mel(m.wav_path(i))
            assert n == min(full.shape[1], T)
            torch.testing.assert_close(b["audio"][k, :, :n], full[:, :n])
            assert (b["audio"][k, :, n:] == -3.5).all()
            assert b["image_id"][k] == m.image_id[i]
        seen += b["index"].tolist()
    assert sorted(seen) == list(range(7))
    if target_length == 20:  # every generated caption (26 .. 62 frames) is longer: all truncated
        assert all((b["nframes"] == 20).all() for b in batches)


def test_eval_loaders_keep_order_and_image_ids(make_manifest):
    train = make_manifest(n=4, name="train")
    val = make_manifest(n=5, name="val", n_images=2, seed=3)
    dm = PlacesAudioDataModule(str(train), str(val), test_manifest=str(val), batch_size=2, **SMALL)
    dm.setup("fit")
    dm.setup("test")
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        batches = all_batches(loader)
        assert torch.cat([b["index"] for b in batches]).tolist() == [0, 1, 2, 3, 4]
        # captions i use image i % 2; ids number the distinct image paths sorted (a/abbey/img_1 < r/runway/img_0)
        assert torch.cat([b["image_id"] for b in batches]).tolist() == [1, 0, 1, 0, 1]


def test_val_loader_is_empty_without_manifest(make_manifest):
    dm = PlacesAudioDataModule(str(make_manifest(n=2)), **SMALL)
    dm.setup("fit")
    assert dm.val_dataloader() == []
    with pytest.raises(ValueError, match="test_manifest"):
        dm.setup("test")


def test_loader_settings(make_manifest):
    dm = PlacesAudioDataModule(str(make_manifest(n=2)), num_workers=2, image_size=16, pin_memory=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.worker_init_fn is single_thread_worker_init and loader.num_workers == 2
    assert loader.pin_memory is False and not loader.persistent_workers


class _ThreadCount(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return torch.get_num_threads()


def test_one_torch_thread_per_worker():
    torch_threads = torch.get_num_threads()
    loader = DataLoader(_ThreadCount(), batch_size=None, num_workers=1, worker_init_fn=single_thread_worker_init)
    assert [int(t) for t in loader] == [1, 1]
    assert torch.get_num_threads() == torch_threads  # the main process is left alone


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(num_workers=-1), "num_workers"),
        (dict(target_length=0), "target_length"),
        (dict(image_transform="bogus"), "image_transform"),
        (dict(on_bad_sample="ignore"), "on_bad_sample"),
    ],
)
def test_constructor_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PlacesAudioDataModule(**kwargs)


# ---- place labels -------------------------------------------------------------------------------------------
def test_place_labels_and_n_places(make_manifest):
    train = make_manifest(n=6, name="train")
    val = make_manifest(n=4, name="val", classes=("runway", "abbey"), seed=2)
    dm = PlacesAudioDataModule(str(train), str(val), batch_size=6, place_labels=True, **SMALL)
    # right after construction, before setup (the CLI links data.n_places to the model)
    assert dm.n_places == 3
    assert dm.label_map == {"abbey": 0, "apartment_building/outdoor": 1, "runway": 2}
    dm.setup("fit")
    (b,) = all_batches(dm.val_dataloader())
    assert set(b) == BATCH_KEYS | {"place"} and b["place"].dtype == torch.int64
    assert b["place"].tolist() == [2, 0, 2, 0]


def test_unseen_val_class_is_a_clear_error(make_manifest):
    train = make_manifest(n=4, name="train", classes=("runway", "abbey"))
    val = make_manifest(n=2, name="val", classes=("skyscraper",))
    dm = PlacesAudioDataModule(str(train), str(val), place_labels=True, **SMALL)
    dm.setup("fit")
    with pytest.raises(ValueError, match="'skyscraper'") as info:
        dm.val_dataloader()
    assert str(val) in str(info.value)


def test_label_map_state_dict_round_trip(make_manifest):
    train = make_manifest(n=6, name="train")
    test = make_manifest(n=3, name="test", classes=("runway",), seed=4)
    state = PlacesAudioDataModule(str(train), **SMALL).state_dict()
    assert state == {"label_map": {"abbey": 0, "apartment_building/outdoor": 1, "runway": 2}}
    dm = PlacesAudioDataModule(test_manifest=str(test), place_labels=True, batch_size=3, **SMALL)
    assert dm.n_places == 0  # not known yet: the CLI may still read it
    with pytest.raises(ValueError, match="no place label map"):
        _ = dm.label_map
    dm.setup("test")
    with pytest.raises(ValueError, match="no place label map"):  # the ids need the map
        dm.test_dataloader()
    dm.load_state_dict(state)
    assert dm.n_places == 3 and dm.state_dict() == state
    (b,) = all_batches(dm.test_dataloader())
    assert b["place"].tolist() == [2, 2, 2]
    # a place-label fit resuming a checkpoint whose map disagrees with the train manifest is refused
    other = PlacesAudioDataModule(str(train), place_labels=True, **SMALL)
    other._stage = lambda: "fit"
    with pytest.raises(ValueError, match="differs"):
        other.load_state_dict({"label_map": {"abbey": 0, "runway": 1}})
    other.load_state_dict({"label_map": None})  # nothing saved: nothing to check
    # outside a place-label fit the checkpoint's map is used as it is (retrieval models, test, predict)
    retrieval = PlacesAudioDataModule(str(train), **SMALL)
    retrieval._stage = lambda: "fit"
    retrieval.load_state_dict({"label_map": {"abbey": 0, "runway": 1}})
    assert retrieval.n_places == 2


# ---- images ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", IMAGE_TRANSFORMS)
@pytest.mark.parametrize("train", [True, False])
def test_named_transforms(tmp_path, write_image, name, train):
    img = load_image(write_image(tmp_path / "x.jpg", size=(60, 40)))
    out = build_image_transform(name, train, image_size=24)(img)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32 and torch.isfinite(out).all()
    again = build_image_transform(name, train, image_size=24)(img)
    random_crop = train and name in ("davenet_code", "davenet_paper", "resize_flip")
    torch.manual_seed(0)
    a = build_image_transform(name, train, 24)(img)
    torch.manual_seed(1)
    b = build_image_transform(name, train, 24)(img)
    assert torch.equal(a, b) != random_crop
    if not random_crop:
        assert torch.equal(out, again)


def test_resize_flip_is_resize_or_its_mirror(tmp_path, write_image):
    img = load_image(write_image(tmp_path / "x.jpg", size=(60, 40)))
    plain = build_image_transform("resize", False, 24)(img)
    assert torch.equal(build_image_transform("resize_flip", False, 24)(img), plain)  # eval: no flip
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out = build_image_transform("resize_flip", True, 24)(img)
        flipped = torch.equal(out, plain.flip(-1))
        assert flipped or torch.equal(out, plain)
        seen.add(flipped)
    assert seen == {True, False}


def test_vgg_mean_subtracts_mean_pixel_without_std():
    img = Image.new("RGB", (300, 280), (200, 100, 50))
    out = build_image_transform("vgg_mean", True, 224)(img)
    expected = (torch.tensor([200, 100, 50]) - torch.tensor(VGG_MEAN_PIXEL)) / 255
    torch.testing.assert_close(out.mean((1, 2)), expected.float(), atol=1e-5, rtol=0)


def test_imagenet_normalisation_and_resize_keeps_whole_image():
    # left half red, right half blue, 2:1 aspect: "resize" keeps both halves where they were (masks stay aligned)
    arr = np.zeros((50, 100, 3), np.uint8)
    arr[:, :50, 0] = 255
    arr[:, 50:, 2] = 255
    out = build_image_transform("resize", False, 32)(Image.fromarray(arr))
    red = (torch.tensor([1.0, 0, 0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    blue = (torch.tensor([0, 0, 1.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[:, :, :15].mean((1, 2)), red, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, :, 17:].mean((1, 2)), blue, atol=1e-4, rtol=0)
    # the centre-crop transforms cut the sides off a 2:1 image
    centre = build_image_transform("davenet_code", False, 32)(Image.fromarray(arr))
    assert centre.shape == (3, 32, 32)


@pytest.mark.parametrize("mode,ext", [("L", "png"), ("CMYK", "jpg"), ("RGBA", "png"), ("P", "png"),
                                      ("I;16", "png"), ("LA", "png"), ("RGB", "bmp")])
def test_odd_images_become_rgb(tmp_path, write_image, mode, ext):
    path = write_image(tmp_path / f"x.{ext}", size=(20, 12), mode=mode)
    with Image.open(path) as raw:
        assert raw.mode == mode or (mode, raw.mode) == ("LA", "LA")
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (20, 12)
    arr = np.asarray(img)
    if mode == "RGBA":  # alpha runs from 0 (left column) to 255: transparent pixels become white
        assert (arr[:, 0] == 255).all()
    if mode == "I;16":  # 16-bit grey rescaled, not clipped to white
        assert 40 < arr.mean() < 215
    if mode in ("L", "I;16"):
        assert (arr[..., 0] == arr[..., 1]).all()


# ---- odd but valid audio ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [dict(channels=2), dict(sample_rate=22050), dict(sample_rate=8000), dict(subtype="PCM_U8"),
     dict(subtype="PCM_24"), dict(subtype="FLOAT"), dict(seconds=[0.2, 3.0])],
)
def test_odd_audio_is_converted(make_manifest, kwargs):
    dm = PlacesAudioDataModule(str(make_manifest(n=2, **kwargs)), batch_size=2, target_length=None, **SMALL)
    dm.setup("fit")
    (b,) = all_batches(dm.train_dataloader())
    assert torch.isfinite(b["audio"]).all() and b["audio"].max() == 0 and b["audio"].min() >= -80
    if "seconds" in kwargs:
        assert sorted(b["nframes"].tolist()) == [21, 301]


def test_silent_and_long_captions(tmp_path, make_manifest, write_wav):
    path = make_manifest(n=2, seconds=[0.3, 4.0])
    m = load_manifest(path)
    write_wav(m.wav_path(0), seconds=0.3, silent=True)
    dm = PlacesAudioDataModule(str(path), batch_size=2, target_length=100, pad_value=-80.0, **SMALL)
    dm.setup("fit")
    (b,) = all_batches(dm.train_dataloader())
    by_index = {int(i): k for k, i in enumerate(b["index"])}
    silent, long = by_index[0], by_index[1]
    assert b["nframes"][silent] == 31 and (b["audio"][silent, :, :31] == 0).all()  # documented: silence -> 0 dB
    assert (b["audio"][silent, :, 31:] == -80).all()
    assert b["nframes"][long] == 100 and b["audio"].shape == (2, 40, 100)  # 401 frames truncated


# ---- bad input ---------------------------------------------------------------------------------------------
def _break(path, how):
    if how == "missing":
        os.remove(path)
    elif how == "empty":
        open(path, "wb").close()
    elif how == "corrupt":
        with open(path, "r+b") as f:  # keep the size, scramble the header
            f.write(b"\x00garbage header\xff" * 4)
    elif how == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 3])


BAD_CASES = [
    ("wav", "missing", "file not found"),
    ("wav", "empty", "empty file"),
    ("wav", "corrupt", "cannot decode audio"),
    ("image", "missing", "file not found"),
    ("image", "empty", "empty file"),
    ("image", "corrupt", "cannot decode image"),
    ("image", "truncated", "cannot decode image"),
]


def _broken_manifest(make_manifest, kind, how, bad_items=(2,), n=6):
    path = make_manifest(n=n)
    m = load_manifest(path)
    files = []
    for i in bad_items:
        f = m.wav_path(i) if kind == "wav" else m.image_path(i)
        _break(f, how)
        files.append(f)
    return path, files


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("kind,how,reason", BAD_CASES)
def test_bad_sample_error_mode(make_manifest, kind, how, reason, num_workers):
    path, (bad_file,) = _broken_manifest(make_manifest, kind, how)
    dm = PlacesAudioDataModule(str(path), batch_size=3, check_files=False,
                               **{**SMALL, "num_workers": num_workers})
    dm.setup("fit")
    with pytest.raises(BadSampleError) as info:  # PyTorch re-raises a worker's error with its type and message
        all_batches(dm.train_dataloader())
    msg = str(info.value)
    assert bad_file in msg and reason in msg and "item 2" in msg and str(path) in msg


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("kind,how,reason", BAD_CASES)
def test_bad_sample_skip_mode(make_manifest, kind, how, reason, num_workers):
    path, (bad_file,) = _broken_manifest(make_manifest, kind, how)
    dm = PlacesAudioDataModule(str(path), batch_size=3, on_bad_sample="skip", check_files=False,
                               **{**SMALL, "num_workers": num_workers})
    dm.setup("fit")
    with pytest.warns(SkippedSamplesWarning) as record:
        batches = all_batches(dm.train_dataloader())
    seen = torch.cat([b["index"] for b in batches]).tolist()
    assert sorted(seen) == [0, 1, 3, 4, 5]
    assert all(set(b) == BATCH_KEYS for b in batches)  # the skip records are taken off the batch
    (w,) = [r for r in record if r.category is SkippedSamplesWarning]
    assert "skipped 1 bad sample" in str(w.message) and bad_file in str(w.message) and reason in str(w.message)
    assert dm.skip_logs["train"].total == 1


@pytest.mark.parametrize("num_workers", [0, 1])
def test_all_bad_batch_does_not_crash(make_manifest, num_workers):
    path, files = _broken_manifest(make_manifest, "wav", "corrupt", bad_items=(0, 1, 2, 4))
    dm = PlacesAudioDataModule(val_manifest=str(path), batch_size=3, on_bad_sample="skip",
                               **{**SMALL, "num_workers": num_workers})
    dm.setup("validate")
    loader = dm.val_dataloader()
    with pytest.warns(SkippedSamplesWarning, match=r"skipped 4 bad sample\(s\)"):
        batches = all_batches(loader)
    # the all-bad first batch (0, 1, 2) is replaced by the next good pairs (3, 5); the batch count is kept
    assert len(batches) == len(loader) == 2
    assert [b["index"].tolist() for b in batches] == [[3, 5], [3, 5]]
    assert all(set(b) == BATCH_KEYS and b["audio"].shape[0] == 2 for b in batches)


def test_all_bad_data_set_is_an_error(make_manifest):
    path, files = _broken_manifest(make_manifest, "wav", "empty", bad_items=(0, 1, 2), n=3)
    dm = PlacesAudioDataModule(val_manifest=str(path), batch_size=2, on_bad_sample="skip", **SMALL)
    dm.setup("validate")
    with pytest.raises(BadSampleError, match="every pair of the data set is bad"), \
            pytest.warns(SkippedSamplesWarning, match="skipped 2 bad"):
        all_batches(dm.val_dataloader())


def test_collate_of_only_bad_samples():
    from datamodules.bad_samples import SkippedSample

    batch = PlacesAudioCollate(target_length=8)([SkippedSample(0, "a.wav", "empty file")])
    assert batch["audio"].shape == (0, 40, 8) and batch["nframes"].shape == (0,)
    assert batch["skipped"] == [(0, "a.wav", "empty file")]


def test_setup_reports_missing_files_early(make_manifest):
    path, files = _broken_manifest(make_manifest, "image", "missing", bad_items=(1, 3))
    with pytest.raises(BadSampleError, match="missing file") as info:
        PlacesAudioDataModule(str(path), **SMALL).setup("fit")
    assert files[0] in str(info.value) and files[1] in str(info.value)
    with pytest.warns(SkippedSamplesWarning, match="2 missing file"):
        PlacesAudioDataModule(str(path), on_bad_sample="skip", **SMALL).setup("fit")


@pytest.mark.parametrize("on_bad_sample", ["error", "skip"])
def test_bad_manifest_is_an_error_in_both_modes(tmp_path, make_manifest, on_bad_sample):
    broken = tmp_path / "notjson.json"
    broken.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        PlacesAudioDataModule(str(broken), on_bad_sample=on_bad_sample, **SMALL).setup("fit")
    path = make_manifest(n=3)
    obj = json.loads(path.read_text())
    del obj["data"][1]["wav"]
    path.write_text(json.dumps(obj))
    with pytest.raises(ManifestError, match=r"item 1 is missing required key 'wav'"):
        PlacesAudioDataModule(str(path), on_bad_sample=on_bad_sample, **SMALL).setup("fit")


# ---- through a Lightning Trainer ---------------------------------------------------------------------------
class TinyModule(pl.LightningModule):
    """Reads every batch key; records the batches it saw."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(43, 1)
        self.seen: dict[str, list] = {"train": [], "val": [], "test": []}

    def _loss(self, batch):
        x = torch.cat([batch["audio"].mean(-1), batch["image"].mean((2, 3))], dim=1)
        return self.lin(x).mean() + 0 * batch["nframes"].sum()

    def training_step(self, batch, batch_idx):
        self.seen["train"].append({k: v.clone() for k, v in batch.items()})
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append({k: v.clone() for k, v in batch.items()})

    def test_step(self, batch, batch_idx):
        self.seen["test"].append({k: v.clone() for k, v in batch.items()})

    def predict_step(self, batch, batch_idx):
        return batch["index"]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(tmp_path, **kw):
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(tmp_path), **kw)


def test_trainer_skip_report_once_per_epoch_with_workers(tmp_path, make_manifest):
    # 6 pairs in batches of 3, 2 bad: no batch can be all bad, so exactly the good pairs are trained on
    path, files = _broken_manifest(make_manifest, "wav", "empty", bad_items=(1, 4), n=6)
    dm = PlacesAudioDataModule(str(path), str(path), batch_size=3, on_bad_sample="skip", place_labels=True,
                               check_files=False, **{**SMALL, "num_workers": 1})
    model = TinyModule()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _trainer(tmp_path, max_epochs=2, enable_checkpointing=False).fit(model, dm)
    reports = [str(r.message) for r in record if r.category is SkippedSamplesWarning]
    assert sorted(reports) == sorted(dm.skip_logs["train"].reports + dm.skip_logs["val"].reports)
    assert len(reports) == 4, reports  # train and val, epochs 0 and 1
    for split in ("train", "val"):
        for epoch in (0, 1):
            (msg,) = [r for r in reports if r.startswith(f"{split} epoch {epoch}:")]
            assert "skipped 2 bad sample(s)" in msg and files[0] in msg and files[1] in msg
    train_indices = sorted(i for b in model.seen["train"] for i in b["index"].tolist())
    assert train_indices == sorted([0, 2, 3, 5] * 2)
    assert len(model.seen["val"]) == 4  # validation ran in both epochs (2 batches each)
    assert all(set(b) == BATCH_KEYS | {"place"} for b in model.seen["train"])


def test_checkpoint_carries_label_map_to_test(tmp_path, make_manifest):
    train = make_manifest(n=6, name="train")
    test = make_manifest(n=3, name="test", classes=("runway", "apartment_building/outdoor"), seed=5)
    trainer = _trainer(tmp_path, max_epochs=1, enable_checkpointing=False)
    model = TinyModule()
    trainer.fit(model, PlacesAudioDataModule(str(train), batch_size=3, place_labels=True, **SMALL))
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)["PlacesAudioDataModule"]
    assert saved == {"label_map": {"abbey": 0, "apartment_building/outdoor": 1, "runway": 2}}
    dm = PlacesAudioDataModule(test_manifest=str(test), batch_size=3, place_labels=True, **SMALL)
    model = TinyModule()
    _trainer(tmp_path).test(model, dm, ckpt_path=str(ckpt))
    assert torch.cat([b["place"] for b in model.seen["test"]]).tolist() == [2, 1, 2]


def test_trainer_predict_reinstantiates_loader(tmp_path, make_manifest):
    # Lightning re-creates the predict loader (index-tracking batch sampler); the skip log must survive that
    path, (bad,) = _broken_manifest(make_manifest, "image", "corrupt", bad_items=(3,), n=5)
    dm = PlacesAudioDataModule(predict_manifest=str(path), batch_size=2, on_bad_sample="skip", **SMALL)
    with pytest.warns(SkippedSamplesWarning, match="predict epoch 0: skipped 1 bad sample") as record:
        out = _trainer(tmp_path).predict(TinyModule(), dm)
    assert bad in str([r.message for r in record if r.category is SkippedSamplesWarning][0])
    assert torch.cat(out).tolist() == [0, 1, 2, 4]


# ---- length buckets -----------------------------------------------------------------------------------------
def test_bucket_sampler_covers_every_index_once_per_epoch():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 2000, size=1003)
    sampler = LengthBucketSampler(lengths, batch_size=8, chunk_batches=10, seed=3)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(1003)) and len(sampler) == 1003
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]
    sampler.set_epoch(1)
    assert list(sampler) == orders[1]  # reproducible from seed + epoch
    # batches of similar length: far less spread than a random order
    batches = [lengths[orders[0][k:k + 8]] for k in range(0, 1003, 8)]
    spread = np.mean([b.max() - b.min() for b in batches])
    random_batches = [lengths[k:k + 8] for k in range(0, 1003, 8)]
    assert spread < 0.2 * np.mean([b.max() - b.min() for b in random_batches])


def test_bucket_sampler_shards_ranks_consistently():
    lengths = np.random.default_rng(1).integers(10, 500, size=101)
    per_rank = []
    for rank in range(3):
        s = LengthBucketSampler(lengths, batch_size=4, num_replicas=3, rank=rank, chunk_batches=5, seed=7)
        s.set_epoch(2)
        per_rank.append(list(s))
    assert {len(o) for o in per_rank} == {34}  # equal steps on every rank (101 padded to 102)
    union = [i for o in per_rank for i in o]
    assert set(union) == set(range(101)) and len(union) == 102
    # local batch k of every rank comes from the same global batch: similar lengths across ranks too
    for k in range(0, 32, 4):
        group = np.concatenate([lengths[o[k:k + 4]] for o in per_rank])
        assert group.max() - group.min() < 200


def test_lightning_keeps_the_bucket_sampler_under_ddp(make_manifest):
    """Lightning wraps any sampler that is not a DistributedSampler in DistributedSamplerWrapper with shuffle=True
    for training, which permutes the order again; ours is a DistributedSampler, so it is left as is."""
    from pytorch_lightning.trainer.states import RunningStage

    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False)
    dm = PlacesAudioDataModule(str(make_manifest(n=9)), batch_size=2, bucket_by_length=True, target_length=None,
                               **SMALL)
    dm.trainer = trainer
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, LengthBucketSampler) and loader.sampler.num_replicas == 2
    prepared = trainer._data_connector._prepare_dataloader(loader, shuffle=True, mode=RunningStage.TRAINING)
    assert prepared is loader
    # without bucketing Lightning swaps in a DistributedSampler by re-creating our loader, skip log included
    dm.hparams.bucket_by_length = False
    plain = dm.train_dataloader()
    prepared = trainer._data_connector._prepare_dataloader(plain, shuffle=True, mode=RunningStage.TRAINING)
    assert type(prepared) is type(plain) and prepared.skip_log is dm.skip_logs["train"]
    assert type(prepared.sampler) is torch.utils.data.DistributedSampler and prepared.sampler.num_replicas == 2
    # for contrast: a plain sequential custom sampler does get re-shuffled by the wrapper
    sorted_loader = DataLoader(list(range(40)), batch_size=2, sampler=list(range(40)))
    wrapped = trainer._data_connector._prepare_dataloader(sorted_loader, shuffle=True, mode=RunningStage.TRAINING)
    assert list(wrapped.sampler) != list(range(0, 40, 2))


def test_datamodule_bucketing_reduces_padding(make_manifest):
    seconds = [0.1 + 0.05 * ((i * 7) % 20) for i in range(20)]
    path = make_manifest(n=20, seconds=seconds)
    dm = PlacesAudioDataModule(str(path), batch_size=4, bucket_by_length=True, target_length=None, seed=0, **SMALL)
    dm.setup("fit")
    batches = all_batches(dm.train_dataloader())
    assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(20))
    padding = sum(int((b["nframes"].max() - b["nframes"]).sum()) for b in batches)
    lengths = dm.datasets["train"].lengths()
    # 20 lengths 5 frames apart, one mega-chunk: fully sorted, 5 * (15 + 10 + 5) frames of padding, the minimum
    assert padding == 150
    shuffled = torch.randperm(20, generator=torch.Generator().manual_seed(0)).view(5, 4)
    random_lengths = torch.as_tensor(dm.datasets["train"].lengths())[shuffled]
    assert int((random_lengths.max(1, keepdim=True).values - random_lengths).sum()) > 2 * padding
    np.testing.assert_array_equal(np.sort(lengths), np.sort(np.concatenate([b["nframes"].numpy() for b in batches])))


def test_describe_and_denormalize_for_display(make_manifest):
    manifest = make_manifest(n=3, name="train")
    dm = PlacesAudioDataModule(train_manifest=str(manifest), val_manifest=str(manifest), batch_size=2,
                               num_workers=0, image_size=16, image_transform="resize")
    dm.setup("fit")
    info = dm.val_dataset.describe(2)
    assert info == {"index": 2, "uttid": "SPK2-train2", "speaker": "SPK2",
                    "text": "caption 2 of a apartment_building/outdoor",
                    "wav": "wavs/utt_2.wav", "image": "a/apartment_building/outdoor/img_2.jpg"}
    assert dm.train_dataset is not None and dm.test_dataset is None and dm.predict_dataset is None
    # denormalize inverts the ImageNet normalisation of the transform back to 0..1 pixels
    raw = torch.rand(3, 16, 16)
    normalised = (raw - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(dm.denormalize(normalised), raw)


def test_audio_only_batches_skip_images(make_manifest):
    manifest = make_manifest(n=4, name="train")
    # a missing image does not matter when images are not loaded
    data = json.loads(manifest.read_text())
    data["data"][0]["image"] = "r/runway/missing.jpg"
    manifest.write_text(json.dumps(data))
    dm = PlacesAudioDataModule(train_manifest=str(manifest), batch_size=4, num_workers=0, load_images=False,
                               place_labels=True, target_length=None)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "image" not in batch and batch["audio"].shape[0] == 4 and batch["place"].shape == (4,)
    with pytest.raises(BadSampleError, match="missing.jpg"):
        PlacesAudioDataModule(train_manifest=str(manifest), num_workers=0).setup("fit")
