"""Data pipeline of VGS-Lightning: Places-format manifests -> log-mel + image batches (docs/architecture.md).

    errors.py        ManifestError, BadSampleError, FeatureCacheError, SkippedSamplesWarning
    manifest.py      parse and validate manifests; place labels
    features.py      wav -> log-mel [40, T] (official DAVEnet recipe), pad_or_truncate
    images.py        image loading and the named per-paper transforms
    cache.py         memory-mapped float16 feature store (python -m datamodules.cache)
    bad_samples.py   the bad-sample policy: skip markers, the per-epoch SkipLog, PlacesAudioDataLoader
    sampler.py       LengthBucketSampler (similar-length batches, DDP-sharded)
    alignment.py     parse_alignment: the one reader of "start__LABEL__end" word / phone alignments
    places_audio.py  PlacesAudioDataset, its collate and PlacesAudioDataModule

The names below are imported on first use, so that `python -m datamodules.cache` and
`import datamodules.spokenscenes` do not load the whole pipeline first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "BadSampleError": "errors",
    "FeatureCacheError": "errors",
    "ManifestError": "errors",
    "SkippedSamplesWarning": "errors",
    "Manifest": "manifest",
    "load_manifest": "manifest",
    "place_label": "manifest",
    "load_audio": "features",
    "log_mel": "features",
    "pad_or_truncate": "features",
    "IMAGE_TRANSFORMS": "images",
    "build_image_transform": "images",
    "load_image": "images",
    "FeatureStore": "cache",
    "build_cache": "cache",
    "LengthBucketSampler": "sampler",
    "parse_alignment": "alignment",
    "item_alignment": "alignment",
    "PlacesAudioCollate": "places_audio",
    "PlacesAudioDataLoader": "bad_samples",
    "PlacesAudioDataModule": "places_audio",
    "PlacesAudioDataset": "places_audio",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .alignment import item_alignment, parse_alignment
    from .bad_samples import PlacesAudioDataLoader
    from .cache import FeatureStore, build_cache
    from .errors import BadSampleError, FeatureCacheError, ManifestError, SkippedSamplesWarning
    from .features import load_audio, log_mel, pad_or_truncate
    from .images import IMAGE_TRANSFORMS, build_image_transform, load_image
    from .manifest import Manifest, load_manifest, place_label
    from .places_audio import PlacesAudioCollate, PlacesAudioDataModule, PlacesAudioDataset
    from .sampler import LengthBucketSampler
