"""Spoken captions paired with images: `PlacesAudioDataset`, its collate, and `PlacesAudioDataModule`.

One manifest item -> one (caption, image) pair:

    wav   --load_audio + log_mel (or the feature cache)--> audio [40, n]  --pad_or_truncate--> [40, T]
    image --load_image + named transform-------------->   image [3, S, S]

Batches (docs/architecture.md): `audio` [B, 40, T] float32, `nframes` [B] int64, `image` [B, 3, S, S] float32,
`index` [B] int64 (position in the split's manifest), `image_id` [B] int64 (distinct image path of the split),
`place` [B] int64 (only with place labels). T = target_length, or the longest caption of the batch when
target_length is None.

Bad samples (missing, empty, corrupt or undecodable wav or image) follow `on_bad_sample` ("error" or "skip"; see
`datamodules/bad_samples.py`); training batches of similar length come from `datamodules/sampler.py`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, DistributedSampler

from .bad_samples import ON_BAD_SAMPLE, PlacesAudioDataLoader, SkipLog, SkippedSample
from .cache import FeatureStore, build_cache, cache_status, other_manifest_store, store_dir
from .errors import BadSampleError, ManifestError, ManifestWarning, SkippedSamplesWarning
from .features import N_MELS, pad_or_truncate, single_thread_worker_init, wav_log_mel, wav_num_frames
from .images import IMAGE_TRANSFORMS, build_image_transform, denormalize, image_tensor
from .manifest import Manifest, build_label_map, load_manifest, place_ids
from .sampler import LengthBucketSampler

# Captions longer than this (60 s; Places captions are up to about 20 s) are warned about once per split: with
# padding to the longest caption, every batch that holds one is padded to its length.
LONG_CAPTION_FRAMES = 6000


class PlacesAudioDataset(Dataset):
    """The (caption, image) pairs of one Places-format manifest.

    Args:
        manifest: path of the manifest JSON, or a parsed `Manifest`.
        target_length: pad/truncate every caption to this many frames; None keeps each caption's own length
            (the collate pads to the longest of the batch).
        image_transform: a name from `IMAGE_TRANSFORMS` or any callable PIL image -> tensor.
        train: use the training variant of a named transform (random crops).
        image_size: output side of a named transform.
        on_bad_sample: "error" or "skip" (see the module docstring).
        feature_cache: folder written by `python -m datamodules.cache`; captions are read from it.
        pad_value: value of padded frames (official: 0.0; see `pad_or_truncate`).
        place_labels: return the scene class id under `place`; needs a label map (`label_map` or `set_label_map`).
        label_map: class name -> id.
        load_images: False leaves out `image` (audio-only tasks such as the place warm-up skip the decoding).
    """

    def __init__(
        self,
        manifest: str | os.PathLike | Manifest,
        target_length: int | None = 2048,
        image_transform: str | Callable = "davenet_code",
        train: bool = False,
        image_size: int = 224,
        on_bad_sample: str = "error",
        feature_cache: str | os.PathLike | None = None,
        pad_value: float = 0.0,
        place_labels: bool = False,
        label_map: dict[str, int] | None = None,
        load_images: bool = True,
    ):
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ValueError(f"on_bad_sample must be one of {ON_BAD_SAMPLE}, got {on_bad_sample!r}")
        if target_length is not None and target_length < 1:
            raise ValueError(f"target_length must be None or >= 1, got {target_length}")
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        self.target_length = target_length
        self.transform = (
            build_image_transform(image_transform, train, image_size) if isinstance(image_transform, str)
            else image_transform
        )
        self.on_bad_sample = on_bad_sample
        self.pad_value = float(pad_value)
        self.store = FeatureStore.open(feature_cache, self.manifest) if feature_cache is not None else None
        self.place_labels = place_labels
        self.load_images = load_images
        self.place_names = self.manifest.place_names() if place_labels else None
        self.place: np.ndarray | None = None
        if place_labels and label_map is not None:
            self.set_label_map(label_map)
        self._lengths: np.ndarray | None = None
        self._warned_long = False
        if self.store is not None:  # lengths for free: warn about outliers now
            self._check_long(self.store.lengths)

    def _check_long(self, lengths: np.ndarray | dict[int, int]) -> None:
        """One ManifestWarning per dataset for captions over LONG_CAPTION_FRAMES (e.g. a 10-minute recording).

        `lengths`: every caption's frames, or {item: frames} of the captions seen so far."""
        if isinstance(lengths, dict):
            long, frames = np.array(list(lengths)), np.array(list(lengths.values()))
        else:
            long = np.flatnonzero(lengths > LONG_CAPTION_FRAMES)
            frames = lengths[long]
        if self._warned_long or not len(long) or int(frames.max()) <= LONG_CAPTION_FRAMES:
            return
        self._warned_long = True
        i, n = int(long[np.argmax(frames)]), int(frames.max())
        uttid = self.manifest.uttids[i].decode("utf-8")
        effect = (f"it is truncated to target_length={self.target_length} frames" if self.target_length else
                  "with target_length null every batch that holds it is padded to its length (memory, time): set "
                  "data.target_length (e.g. 2048) or drop it from the manifest")
        warnings.warn(
            f"manifest {self.manifest.path}: {len(long)} caption(s) longer than {LONG_CAPTION_FRAMES / 100:.0f} s, "
            f"the longest item {i}{f' (uttid {uttid})' if uttid else ''} {n / 100:.1f} s; {effect}",
            ManifestWarning, stacklevel=3)

    def set_label_map(self, label_map: dict[str, int]) -> None:
        """Turn the place names into ids; ValueError naming the class if one is not in `label_map`."""
        if self.place_names is None:
            self.place_names = self.manifest.place_names()
        self.place = place_ids(self.place_names, label_map, self.manifest.path)

    def __len__(self) -> int:
        return len(self.manifest)

    def describe(self, i: int) -> dict:
        """Item i for people (uttid, speaker, caption text, wav and image paths): for search results and tables."""
        return self.manifest.describe(i)

    def features(self, i: int) -> torch.Tensor:
        """Log-mel [40, n] of caption i (truncated to target_length), from the cache or the wav."""
        if self.store is not None:
            return self.store.features(i, self.target_length)
        feats = wav_log_mel(self.manifest.wav_path(i))
        return feats if self.target_length is None else feats[:, : self.target_length]

    def lengths(self) -> np.ndarray:
        """Frames of every caption ([N] int64, capped at target_length) without decoding: from the cache offsets
        or the wav headers. An unreadable wav counts 0 in skip mode and raises BadSampleError in error mode."""
        if self._lengths is None:
            if self.store is not None:
                lengths = self.store.lengths.astype(np.int64)
            else:
                lengths = np.zeros(len(self), dtype=np.int64)
                for i in range(len(self)):  # one header read per file
                    try:
                        lengths[i] = wav_num_frames(self.manifest.wav_path(i))
                    except BadSampleError as err:
                        if self.on_bad_sample == "error":
                            raise self._with_item(err, i) from None
            self._check_long(lengths)
            if self.target_length is not None:
                lengths = np.minimum(lengths, self.target_length)
            self._lengths = lengths
        return self._lengths

    def _with_item(self, err: BadSampleError, i: int) -> BadSampleError:
        uttid = self.manifest.uttids[i].decode("utf-8")
        where = f"item {i}" + (f" (uttid {uttid})" if uttid else "") + f" of manifest {self.manifest.path}"
        return BadSampleError(f"{err} [{where}]", path=err.path, reason=err.reason)

    def __getitem__(self, i: int) -> dict | SkippedSample:
        try:
            audio = self.features(i)
            image = image_tensor(self.manifest.image_path(i), self.transform) if self.load_images else None
        except BadSampleError as err:
            if self.on_bad_sample == "error":
                raise self._with_item(err, i) from None
            return SkippedSample(index=i, path=err.path or "?", reason=err.reason or str(err))
        if self.target_length is not None:
            audio, nframes = pad_or_truncate(audio, self.target_length, self.pad_value)
        else:
            nframes = audio.shape[-1]
            if nframes > LONG_CAPTION_FRAMES and not self._warned_long:
                self._check_long({i: nframes})
        item = {"audio": audio, "nframes": nframes, "index": i, "image_id": int(self.manifest.image_id[i])}
        if image is not None:
            item["image"] = image
        if self.place_labels:
            if self.place is None:
                raise RuntimeError("place_labels=True but no label map was set (PlacesAudioDataset.set_label_map)")
            item["place"] = int(self.place[i])
        return item


class PlacesAudioCollate:
    """Stack dataset items into the batch dict; pads audio to `target_length` or the longest caption.

    `SkippedSample` markers are dropped and listed as (index, path, reason) under `skipped` (only when there are
    any). If every item was skipped, the batch has B = 0 (`image` then has shape [0, 3, 0, 0]).
    """

    def __init__(self, target_length: int | None = None, pad_value: float = 0.0):
        self.target_length = target_length
        self.pad_value = float(pad_value)

    def __call__(self, items: list) -> dict:
        good = [x for x in items if not isinstance(x, SkippedSample)]
        skipped = [(s.index, s.path, s.reason) for s in items if isinstance(s, SkippedSample)]
        if good:
            # [B, T, 40] -> [B, 40, T]; pad_sequence pads the time axis to the longest caption.
            audio = pad_sequence([x["audio"].T for x in good], batch_first=True, padding_value=self.pad_value)
            audio = audio.transpose(1, 2)
            if self.target_length is not None and audio.shape[-1] < self.target_length:
                audio = torch.nn.functional.pad(audio, (0, self.target_length - audio.shape[-1]), value=self.pad_value)
            batch = {
                "audio": audio.contiguous().float(),
                "nframes": torch.tensor([x["nframes"] for x in good], dtype=torch.int64),
                "index": torch.tensor([x["index"] for x in good], dtype=torch.int64),
                "image_id": torch.tensor([x["image_id"] for x in good], dtype=torch.int64),
            }
            if "image" in good[0]:
                batch["image"] = torch.stack([x["image"] for x in good])
            if "place" in good[0]:
                batch["place"] = torch.tensor([x["place"] for x in good], dtype=torch.int64)
        else:
            empty = torch.zeros(0, dtype=torch.int64)
            batch = {"audio": torch.zeros(0, N_MELS, self.target_length or 0), "nframes": empty,
                     "image": torch.zeros(0, 3, 0, 0), "index": empty, "image_id": empty}
        if skipped:
            batch["skipped"] = skipped
        return batch


class PlacesAudioDataModule(pl.LightningDataModule):
    """Places-format spoken caption / image pairs for training, validation, test and predict.

    Batches follow docs/architecture.md. The place-label map (sorted class names of the train manifest -> ids) is
    saved in the checkpoint (`state_dict`) and restored from it, so evaluation and resumed runs use the same ids.

    Args:
        train_manifest: Places-format JSON of the training split.
        val_manifest: validation split (validation is skipped without one).
        test_manifest: test split.
        predict_manifest: split for `trainer.predict`.
        batch_size: pairs per batch (every split).
        num_workers: DataLoader worker processes (each runs 1 torch thread); 0 loads in the main process.
        target_length: frames every caption is padded or truncated to (NIPS 2016: 2048, ACL 2017: 1024); None pads
            each batch to its longest caption (DAVEnet).
        image_size: side of the image crop; resizes scale with it (256/224).
        image_transform: "davenet_code", "davenet_paper", "vgg_mean", "resize" or "resize_flip" (see
            datamodules/images.py).
        on_bad_sample: "error" stops with the bad file's name and reason; "skip" drops the pair and warns once per
            epoch with the count and the first files.
        place_labels: add the scene class id (`place`) parsed from the image path to each batch.
        feature_cache: folder of `python -m datamodules.cache` stores; captions are read from it, not decoded.
        pad_value: value of padded frames (official 0.0, which equals the loudest bin; -80.0 is the floor).
        bucket_by_length: training batches of similar caption length (less padding with target_length=None).
        drop_last: drop the last, smaller training batch (e.g. when the loss needs impostors from the batch).
        pin_memory: pin batches in page-locked memory; None: when CUDA is available.
        seed: seed of the training order (bucketing, shuffling); None: Lightning's global seed (PL_GLOBAL_SEED) or 0.
        check_files: in setup, check that every wav and image exists (missing ones: an error, or a warning in
            skip mode) so that problems show up before training starts.
        load_images: False leaves `image` out of the batches: audio-only training (the place warm-up) then
            skips the JPEG decoding.
    """

    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        predict_manifest: str | None = None,
        batch_size: int = 100,
        num_workers: int = 4,
        target_length: int | None = 2048,
        image_size: int = 224,
        image_transform: Literal["davenet_code", "davenet_paper", "vgg_mean", "resize", "resize_flip"] = "davenet_code",
        on_bad_sample: Literal["error", "skip"] = "error",
        place_labels: bool = False,
        feature_cache: str | None = None,
        pad_value: float = 0.0,
        bucket_by_length: bool = False,
        drop_last: bool = False,
        pin_memory: bool | None = None,
        seed: int | None = None,
        check_files: bool = True,
        load_images: bool = True,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if target_length is not None and target_length < 1:
            raise ValueError(f"target_length must be None or >= 1, got {target_length}")
        if image_transform not in IMAGE_TRANSFORMS:
            raise ValueError(f"image_transform must be one of {list(IMAGE_TRANSFORMS)}, got {image_transform!r}")
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ValueError(f"on_bad_sample must be one of {list(ON_BAD_SAMPLE)}, got {on_bad_sample!r}")
        self.save_hyperparameters()
        self.manifest_paths = {"train": train_manifest, "val": val_manifest, "test": test_manifest,
                               "predict": predict_manifest}
        self.datasets: dict[str, PlacesAudioDataset] = {}
        self.skip_logs = {split: SkipLog(split, when=self._epoch_label) for split in self.manifest_paths}
        self._manifests: dict[str, Manifest] = {}
        self._label_map: dict[str, int] | None = None

    # ---- manifests and labels -----------------------------------------------------------------------
    def _require(self, split: str, stage: str | None = None) -> str:
        """The manifest path of a split, or the one error for a split without a manifest."""
        path = self.manifest_paths[split]
        if path is None:
            needed = f" for trainer stage {stage!r}" if stage else ""
            raise ValueError(f"PlacesAudioDataModule: no {split}_manifest was given{needed} "
                             f"(set data.{split}_manifest)")
        return path

    def manifest(self, split: str) -> Manifest:
        """The parsed manifest of a split (read once)."""
        if split not in self._manifests:
            self._manifests[split] = load_manifest(self._require(split))
        return self._manifests[split]

    @property
    def label_map(self) -> dict[str, int]:
        """Place class name -> id, from the train manifest, or restored from a checkpoint (`load_state_dict`)."""
        if self._label_map is None:
            if self.manifest_paths["train"] is None:
                raise ValueError(
                    "PlacesAudioDataModule has no place label map: give train_manifest (the map is built from it) "
                    "or restore a checkpoint of a run that had one (load_state_dict)"
                )
            self._label_map = build_label_map(self.manifest("train").place_names())
        return self._label_map

    @property
    def n_places(self) -> int:
        """Number of place classes (reads the train manifest on first use).

        0 when no map is known yet: no train manifest, and a checkpoint's map is only restored later, by
        `load_state_dict`. The CLI links this value into the model at construction for every run; in a
        `test`/`predict` run from a checkpoint the checkpoint's own hyperparameters (its `n_places`) take over.
        """
        if self._label_map is None and self.manifest_paths["train"] is None:
            return 0
        return len(self.label_map)

    def state_dict(self) -> dict:
        label_map = self._label_map
        if label_map is None and self.manifest_paths["train"] is not None:
            try:
                label_map = self.label_map
            except ManifestError:
                if self.hparams.place_labels:
                    raise
                label_map = None  # not the Places image layout (Flickr8k, SpokenCOCO): no scene classes to keep
        return {"label_map": label_map}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the place-label map of a checkpoint. Only a resumed fit with place labels compares it with the
        train manifest's; outside fit the checkpoint's map is used and the train manifest is not read."""
        saved = state_dict.get("label_map")
        if saved is None:
            return
        saved = {str(k): int(v) for k, v in saved.items()}
        if self.hparams.place_labels and self._stage() == "fit" and self.manifest_paths["train"] is not None \
                and self.label_map != saved:
            ours, theirs = set(self.label_map), set(saved)
            raise ValueError(
                f"the place label map of the checkpoint ({len(saved)} classes) differs from the one of "
                f"train_manifest {self.manifest_paths['train']} ({len(self.label_map)} classes; only in the "
                f"checkpoint: {sorted(theirs - ours)[:5]}, only in the manifest: {sorted(ours - theirs)[:5]}"
                f"{'; same classes, other ids' if ours == theirs else ''})"
            )
        self._label_map = saved

    # ---- setup --------------------------------------------------------------------------------------
    STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}

    def _stage(self) -> str | None:
        trainer = getattr(self, "trainer", None)
        fn = getattr(getattr(trainer, "state", None), "fn", None) if trainer is not None else None
        return None if fn is None else str(getattr(fn, "value", fn))

    def _wanted(self, stage: str | None) -> tuple[str, ...]:
        """The splits a stage reads: fit the train and val manifests, test only the test manifest, and so on."""
        if stage is None:
            return tuple(s for s, p in self.manifest_paths.items() if p is not None)
        return tuple(s for s in self.STAGE_SPLITS[stage] if self.manifest_paths[s] is not None)

    def prepare_data(self) -> None:
        """Build the missing or stale feature-cache stores of the manifests this stage reads (once per node, before
        `setup` on every rank), with a progress bar. A store of another manifest with the same file name is left
        alone (that split is decoded on the fly instead, see `_build_dataset`)."""
        cache = self.hparams.feature_cache
        if cache is None:
            return
        for split in self._wanted(self._stage()):
            manifest = self.manifest(split)
            status, why = cache_status(cache, manifest)
            if status in ("missing", "stale"):
                print(f"{why}: building {store_dir(cache, manifest.path)} (once; later runs read it)", flush=True)
                build_cache(manifest.path, cache, num_workers=min(self.hparams.num_workers, os.cpu_count() or 1),
                            on_bad_sample=self.hparams.on_bad_sample, progress=True)

    def setup(self, stage: str | None = None) -> None:
        if stage is not None:
            self._require("train" if stage == "fit" else self.STAGE_SPLITS[stage][0], stage)
        for split in self._wanted(stage):
            if split not in self.datasets:
                self.datasets[split] = self._build_dataset(split)

    def _feature_cache_for(self, manifest: Manifest) -> str | None:
        """The feature cache to read `manifest` from: None when there is none, or when the cache folder holds
        another manifest's store under this manifest's file name (one warning; decoding on the fly)."""
        cache = self.hparams.feature_cache
        if cache is None:
            return None
        why = other_manifest_store(cache, manifest)
        if why:
            warnings.warn(f"{why}, not of {manifest.path}: decoding its wavs on the fly instead. Give it a cache "
                          f"folder of its own (python -m datamodules.cache --manifest {manifest.path} --out DIR; "
                          "--data.feature_cache DIR), or --data.feature_cache null to silence this",
                          ManifestWarning, stacklevel=3)
            return None
        return cache

    def _build_dataset(self, split: str) -> PlacesAudioDataset:
        manifest = self.manifest(split)
        cache = self._feature_cache_for(manifest)
        if self.hparams.check_files:
            self._check_files(manifest, wavs=cache is None, images=self.hparams.load_images)
        return PlacesAudioDataset(
            manifest,
            target_length=self.hparams.target_length,
            image_transform=self.hparams.image_transform,
            train=split == "train",
            image_size=self.hparams.image_size,
            on_bad_sample=self.hparams.on_bad_sample,
            feature_cache=cache,
            pad_value=self.hparams.pad_value,
            place_labels=self.hparams.place_labels,
            load_images=self.hparams.load_images,
        )

    def _check_files(self, manifest: Manifest, wavs: bool = True, images: bool = True) -> None:
        kinds = {kind for kind, on in (("wav", wavs), ("image", images)) if on}
        missing = [m for m in manifest.missing_files() if m[1] in kinds]
        if not missing:
            return
        shown = "; ".join(f"item {i}: {kind} {path}" for i, kind, path in missing[:5])
        more = f"; ... ({len(missing)} in all)" if len(missing) > 5 else ""
        if self.hparams.on_bad_sample == "error":
            raise BadSampleError(f"manifest {manifest.path}: missing file(s): {shown}{more}",
                                 path=missing[0][2], reason="file not found")
        warnings.warn(f"manifest {manifest.path}: {len(missing)} missing file(s), those pairs will be skipped: "
                      f"{shown}{more}", SkippedSamplesWarning, stacklevel=2)

    # ---- loaders ------------------------------------------------------------------------------------
    def _epoch_label(self) -> str | None:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None
        rank = f", rank {trainer.global_rank}" if trainer.world_size > 1 else ""
        return f"epoch {trainer.current_epoch}{rank}"

    def _dataset(self, split: str) -> PlacesAudioDataset:
        if split not in self.datasets:
            self.datasets[split] = self._build_dataset(split)
        dataset = self.datasets[split]
        if self.hparams.place_labels:  # here, not in setup: a checkpoint's label map is restored after setup
            dataset.set_label_map(self.label_map)
        return dataset

    def _loader(self, split: str) -> PlacesAudioDataLoader:
        hp = self.hparams
        dataset = self._dataset(split)
        train = split == "train"
        sampler = None
        seed = hp.seed if hp.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        if train:
            trainer = getattr(self, "trainer", None)
            world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            if hp.bucket_by_length:
                sampler = LengthBucketSampler(dataset.lengths(), hp.batch_size, num_replicas=world, rank=rank,
                                              seed=seed)
            else:
                # An order that depends on (seed, epoch) only, as under DDP, so that a resumed epoch is the same
                # epoch; Lightning calls set_epoch() and leaves a DistributedSampler in place under DDP.
                sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        pin = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        return PlacesAudioDataLoader(
            dataset,
            batch_size=hp.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            # Workers' base seeds come from this generator, not from torch's global one: starting a pass then
            # draws nothing from the global stream (a resumed epoch's random crops stay those of the original).
            generator=torch.Generator().manual_seed(seed),
            drop_last=train and hp.drop_last,
            num_workers=hp.num_workers,
            collate_fn=PlacesAudioCollate(hp.target_length, hp.pad_value),
            pin_memory=pin,
            worker_init_fn=single_thread_worker_init if hp.num_workers > 0 else None,
            # Not persistent: each pass's workers stop when it ends. Persistent workers outlive the pass in the
            # loader and, once the loader is only reachable through a reference cycle (Lightning's
            # save_hyperparameters keeps its caller's frame in one), stall 5 s on shutdown by the garbage collector.
            # Forking 1 thread workers once per epoch costs well under a second.
            persistent_workers=False,
            skip_log=self.skip_logs[split],
            epoch=self._current_epoch if train else None,
        )

    def _current_epoch(self) -> int | None:
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else trainer.current_epoch

    # ---- the built datasets, for callbacks that show examples (W&B tables, spoken search) --------------
    @property
    def train_dataset(self) -> PlacesAudioDataset | None:
        return self.datasets.get("train")

    @property
    def val_dataset(self) -> PlacesAudioDataset | None:
        return self.datasets.get("val")

    @property
    def test_dataset(self) -> PlacesAudioDataset | None:
        return self.datasets.get("test")

    @property
    def predict_dataset(self) -> PlacesAudioDataset | None:
        return self.datasets.get("predict")

    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """Undo the image transform's normalisation: [3, H, W] or [B, 3, H, W] back to 0..1 RGB for display."""
        transform = self.hparams.image_transform
        return denormalize(image, transform if isinstance(transform, str) else "")

    def train_dataloader(self) -> PlacesAudioDataLoader:
        return self._loader("train")

    def val_dataloader(self) -> PlacesAudioDataLoader | list:
        return self._loader("val") if self.manifest_paths["val"] is not None else []

    def test_dataloader(self) -> PlacesAudioDataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> PlacesAudioDataLoader:
        return self._loader("predict")

    def teardown(self, stage: str | None = None) -> None:
        for log in self.skip_logs.values():
            if log.count:
                log.flush()

