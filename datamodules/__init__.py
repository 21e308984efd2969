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

from typing import TYPE_CHECKING

import lazy_loader

# scientific-python's lazy_loader (SPEC 1) builds the package's __getattr__ and __dir__; lightning_modules uses it
# the same way (a helper of our own would need a third top-level package, since neither may import the other).
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "alignment": ["item_alignment", "parse_alignment"],
        "bad_samples": ["PlacesAudioDataLoader"],
        "cache": ["FeatureStore", "build_cache"],
        "errors": ["BadSampleError", "FeatureCacheError", "ManifestError", "SkippedSamplesWarning"],
        "features": ["load_audio", "log_mel", "pad_or_truncate"],
        "images": ["IMAGE_TRANSFORMS", "build_image_transform", "load_image"],
        "manifest": ["Manifest", "load_manifest", "place_label", "read_manifest_json"],
        "places_audio": ["PlacesAudioCollate", "PlacesAudioDataModule", "PlacesAudioDataset"],
        "sampler": ["LengthBucketSampler"],
    },
)

if TYPE_CHECKING:
    from .alignment import item_alignment, parse_alignment
    from .bad_samples import PlacesAudioDataLoader
    from .cache import FeatureStore, build_cache
    from .errors import BadSampleError, FeatureCacheError, ManifestError, SkippedSamplesWarning
    from .features import load_audio, log_mel, pad_or_truncate
    from .images import IMAGE_TRANSFORMS, build_image_transform, load_image
    from .manifest import Manifest, load_manifest, place_label, read_manifest_json
    from .places_audio import PlacesAudioCollate, PlacesAudioDataModule, PlacesAudioDataset
    from .sampler import LengthBucketSampler
