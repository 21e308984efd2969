"""Spoken captions paired with images: `PlacesAudioDataset`, its collate, and `PlacesAudioDataModule`.

One manifest item -> one (caption, image) pair:

    wav   --load_audio + log_mel (or the feature cache)--> audio [40, n]  --pad_or_truncate--> [40, T]
    image --load_image + named transform-------------->   image [3, S, S]

Batches (docs/architecture.md): `audio` [B, 40, T] float32, `nframes` [B] int64, `image` [B, 3, S, S] float32,
`index` [B] int64 (position in the split's manifest), `image_id` [B] int64 (distinct image path of the split),
`place` [B] int64 (only with place labels). T = target_length, or the longest caption of the batch when
target_length is None.

Bad samples (missing, empty, corrupt or undecodable wav or image):
- `on_bad_sample="error"`: BadSampleError naming the file, the reason and the manifest item; from a DataLoader
  worker, PyTorch re-raises it in the main process with that message.
- `on_bad_sample="skip"`: the dataset returns a `SkippedSample` marker, the collate drops it and lists it under the
  batch key `skipped`; `PlacesAudioDataLoader` (main process, so it sees every worker's records) removes that key
  and warns once per epoch with the count and the first few files (`SkippedSamplesWarning`).
  A batch whose samples were all bad is not dropped but replaced by stand-ins: the next good pairs of the
  manifest after it (as many as the batch had). The number of batches per epoch thus stays `len(loader)`, which
  Lightning's validation schedule, per-step LR schedules and DDP (every rank must step together) rely on; the
  price is that a few pairs appear twice in that epoch (the retrieval metric de-duplicates by `index`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .cache import FeatureStore
from .features import N_MELS, pad_or_truncate, single_thread_worker_init, wav_log_mel, wav_num_frames
from .images import IMAGE_TRANSFORMS, build_image_transform, denormalize, image_tensor
from .manifest import BadSampleError, Manifest, build_label_map, load_manifest, place_ids

ON_BAD_SAMPLE = ("error", "skip")


class SkippedSamplesWarning(UserWarning):
    """Bad samples were skipped (`on_bad_sample="skip"`); the message counts them and names the first few."""


@dataclass(frozen=True)
class SkippedSample:
    """What the dataset returns instead of an item whose wav or image is bad, in skip mode."""

    index: int
    path: str
    reason: str


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


class SkipLog:
    """Main-process tally of one split's skipped samples, reported once per epoch.

    Records are labelled when they arrive with `when()` ("epoch 3"; "epoch 3, rank 1" under DDP, where each rank
    reports its own) or, outside a Trainer, the pass number over the loader. A label's report is issued when a
    pass over the loader ends, when records or a pass of another label arrive (Lightning may stop iterating
    once it has `len(loader)` batches, before the pass "ends"), and at `flush()` (DataModule teardown).
    """

    def __init__(self, split: str, max_names: int = 5, when: Callable[[], str | None] | None = None):
        self.split = split
        self.max_names = max_names
        self.when = when
        self.count = 0
        self.first: list[tuple[int, str, str]] = []
        self.label: str | None = None
        self.total = 0  # over the whole run
        self.passes = 0
        self.reports: list[str] = []

    def _now(self) -> str:
        label = self.when() if self.when is not None else None
        return label if label is not None else f"pass {self.passes}"

    def start_pass(self) -> None:
        self.passes += 1
        if self.count and self.label != self._now():
            self.flush()

    def add(self, records: list[tuple[int, str, str]]) -> None:
        now = self._now()
        if self.count and self.label != now:
            self.flush()
        if not self.count:
            self.label = now
        self.count += len(records)
        self.total += len(records)
        self.first.extend(records[: self.max_names - len(self.first)])

    def flush(self) -> str | None:
        """Warn about the pending skipped samples (if any) and reset; returns the message."""
        if not self.count:
            return None
        shown = "; ".join(f"{path} ({reason})" for _, path, reason in self.first)
        more = f"; ... and {self.count - len(self.first)} more" if self.count > len(self.first) else ""
        message = f"{self.split} {self.label}: skipped {self.count} bad sample(s): {shown}{more}"
        self.count, self.first = 0, []
        self.reports.append(message)
        warnings.warn(message, SkippedSamplesWarning, stacklevel=2)
        return message


class PlacesAudioDataLoader(DataLoader):
    """A DataLoader that takes the skip records off each batch, reports them, and replaces all-bad batches.

    Same arguments as DataLoader plus `skip_log`; Lightning can re-create it with another sampler (DDP, predict).
    `__iter__` runs in the main process, so it sees the records of every worker.
    """

    def __init__(self, *args, skip_log: SkipLog | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_log = skip_log

    def _stand_in(self, skipped: list[tuple[int, str, str]]) -> dict:
        """A batch of the next good pairs after the first index of an all-bad batch (as many as it had)."""
        n, want = len(self.dataset), len(skipped)
        items = []
        for step in range(1, n):  # in the main process; only when a whole batch was bad
            item = self.dataset[(skipped[0][0] + step) % n]
            if not isinstance(item, SkippedSample):
                items.append(item)
                if len(items) == want:
                    break
        if not items:
            raise BadSampleError(f"every pair of the data set is bad (e.g. {skipped[0][1]}: {skipped[0][2]})",
                                 path=skipped[0][1], reason=skipped[0][2])
        batch = self.collate_fn(items)
        batch.pop("skipped", None)
        return batch

    def __iter__(self):
        log = self.skip_log
        if log is not None:
            log.start_pass()
        iterator = super().__iter__()
        try:
            for batch in iterator:
                skipped = batch.pop("skipped", None)
                if skipped and log is not None:
                    log.add(skipped)
                if batch["audio"].shape[0] == 0:
                    batch = self._stand_in(skipped)
                yield batch
        except GeneratorExit:  # the consumer stopped early (Lightning knows the length): report later
            raise
        except Exception:
            # Stop the workers now: left to the garbage collector (the exception's traceback makes a reference
            # cycle), their shutdown can stall for PyTorch's 5 s join timeout. Same call Lightning uses.
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
                self._iterator = None
            if log is not None:
                log.flush()
            raise
        else:
            if log is not None:
                log.flush()


class LengthBucketSampler(DistributedSampler):
    """Training order whose consecutive `batch_size` indices have similar caption lengths, sharded over ranks.

    Per epoch (random stream seeded with `seed + epoch`, the same on every rank):
      1. shuffle all indices; pad to a multiple of num_replicas by repeating some (as DistributedSampler does);
      2. sort by length inside mega-chunks of `chunk_batches` global batches (global batch = batch_size x ranks);
      3. cut into global batches and shuffle their order (a short last one stays last, so batches stay aligned);
      4. rank r takes every num_replicas-th index of each global batch.
    So each local batch holds captions of similar length, and with one rank every index comes exactly once.

    It is a DistributedSampler on purpose: Lightning leaves those in place under DDP and calls their `set_epoch`.
    Any other sampler gets wrapped in `DistributedSamplerWrapper` (pytorch_lightning/trainer/connectors/
    data_connector.py `_get_distributed_sampler`) with `shuffle=True` for training, which permutes the wrapped
    order again and would undo the bucketing.
    """

    def __init__(
        self,
        lengths,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        chunk_batches: int = 50,
    ):
        self.lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64)
        super().__init__(self.lengths, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.chunk_batches = chunk_batches

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.lengths)
        perm = torch.randperm(n, generator=g)
        if self.total_size > n:
            perm = perm.repeat(math.ceil(self.total_size / n))[: self.total_size]
        group = self.batch_size * self.num_replicas
        chunk = torch.arange(self.total_size) // (group * self.chunk_batches)
        lengths = self.lengths[perm]
        perm = perm[torch.sort(chunk * (int(lengths.max()) + 1) + lengths, stable=True).indices]
        n_full = self.total_size // group
        full = perm[: n_full * group].view(n_full, group)[torch.randperm(n_full, generator=g)]
        rest = perm[n_full * group :]
        local = torch.cat([full[:, self.rank :: self.num_replicas].reshape(-1), rest[self.rank :: self.num_replicas]])
        return iter(local.tolist())


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
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.target_length = target_length
        self.image_size = image_size
        self.image_transform = image_transform
        self.on_bad_sample = on_bad_sample
        self.place_labels = place_labels
        self.feature_cache = feature_cache
        self.pad_value = pad_value
        self.bucket_by_length = bucket_by_length
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.seed = seed
        self.check_files = check_files
        self.load_images = load_images
        self.datasets: dict[str, PlacesAudioDataset] = {}
        self.skip_logs = {split: SkipLog(split, when=self._epoch_label) for split in self.manifest_paths}
        self._manifests: dict[str, Manifest] = {}
        self._label_map: dict[str, int] | None = None

    # ---- manifests and labels -----------------------------------------------------------------------
    def manifest(self, split: str) -> Manifest:
        """The parsed manifest of a split (read once)."""
        if split not in self._manifests:
            path = self.manifest_paths[split]
            if path is None:
                raise ValueError(f"PlacesAudioDataModule: no {split}_manifest was given")
            self._manifests[split] = load_manifest(path)
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
            label_map = self.label_map
        return {"label_map": label_map}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("label_map")
        if saved is None:
            return
        saved = {str(k): int(v) for k, v in saved.items()}
        if self.manifest_paths["train"] is not None and self.label_map != saved:
            ours, theirs = set(self.label_map), set(saved)
            raise ValueError(
                f"the place label map of the checkpoint ({len(saved)} classes) differs from the one of "
                f"train_manifest {self.manifest_paths['train']} ({len(self.label_map)} classes; only in the "
                f"checkpoint: {sorted(theirs - ours)[:5]}, only in the manifest: {sorted(ours - theirs)[:5]}"
                f"{'; same classes, other ids' if ours == theirs else ''})"
            )
        self._label_map = saved

    # ---- setup --------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        if stage is None:
            wanted = tuple(s for s, p in self.manifest_paths.items() if p is not None)
        else:
            wanted = splits[stage]
            required = "train" if stage == "fit" else wanted[0]
            if self.manifest_paths[required] is None:
                raise ValueError(f"trainer stage {stage!r} needs PlacesAudioDataModule({required}_manifest=...)")
        for split in wanted:
            if self.manifest_paths[split] is not None and split not in self.datasets:
                self.datasets[split] = self._build_dataset(split)

    def _build_dataset(self, split: str) -> PlacesAudioDataset:
        manifest = self.manifest(split)
        if self.check_files:
            self._check_files(manifest, wavs=self.feature_cache is None, images=self.load_images)
        return PlacesAudioDataset(
            manifest,
            target_length=self.target_length,
            image_transform=self.image_transform,
            train=split == "train",
            image_size=self.image_size,
            on_bad_sample=self.on_bad_sample,
            feature_cache=self.feature_cache,
            pad_value=self.pad_value,
            place_labels=self.place_labels,
            load_images=self.load_images,
        )

    def _check_files(self, manifest: Manifest, wavs: bool = True, images: bool = True) -> None:
        kinds = {kind for kind, on in (("wav", wavs), ("image", images)) if on}
        missing = [m for m in manifest.missing_files() if m[1] in kinds]
        if not missing:
            return
        shown = "; ".join(f"item {i}: {kind} {path}" for i, kind, path in missing[:5])
        more = f"; ... ({len(missing)} in all)" if len(missing) > 5 else ""
        if self.on_bad_sample == "error":
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
            if self.manifest_paths[split] is None:
                raise ValueError(f"PlacesAudioDataModule: no {split}_manifest was given")
            self.datasets[split] = self._build_dataset(split)
        dataset = self.datasets[split]
        if self.place_labels:  # here, not in setup: a checkpoint's label map is restored after setup
            dataset.set_label_map(self.label_map)
        return dataset

    def _loader(self, split: str) -> PlacesAudioDataLoader:
        dataset = self._dataset(split)
        train = split == "train"
        sampler = None
        generator = None
        seed = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        if train and self.bucket_by_length:
            trainer = getattr(self, "trainer", None)
            world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            sampler = LengthBucketSampler(dataset.lengths(), self.batch_size, num_replicas=world, rank=rank, seed=seed)
        elif train and self.seed is not None:
            generator = torch.Generator().manual_seed(self.seed)
        pin = torch.cuda.is_available() if self.pin_memory is None else self.pin_memory
        return PlacesAudioDataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            generator=generator,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            collate_fn=PlacesAudioCollate(self.target_length, self.pad_value),
            pin_memory=pin,
            worker_init_fn=single_thread_worker_init if self.num_workers > 0 else None,
            # Not persistent: each pass's workers stop when it ends. Persistent workers outlive the pass in the
            # loader and, once the loader is only reachable through a reference cycle (Lightning's
            # save_hyperparameters keeps its caller's frame in one), stall 5 s on shutdown by the garbage collector.
            # Forking 1 thread workers once per epoch costs well under a second.
            persistent_workers=False,
            skip_log=self.skip_logs[split],
        )

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
        return denormalize(image, self.image_transform if isinstance(self.image_transform, str) else "")

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

