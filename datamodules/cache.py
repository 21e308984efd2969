"""Feature cache: the log-mels of a manifest computed once, stored as one memory-mapped float16 array.

    python -m datamodules.cache --manifest data/train.json --manifest data/val.json --out data/features

writes one store per manifest, `<out>/<manifest file stem>/`:

    features.f16   float16 [total_frames, 40], row-major: caption i is rows offsets[i] .. offsets[i+1]
    offsets.npy    int64 [N + 1]
    index.json     fingerprint: recipe (datamodules.features.RECIPE), manifest path + sha256, every wav's
                   path, size and mtime, and the items that could not be decoded (with --on-bad-sample skip)

`PlacesAudioDataModule(feature_cache=<out>)` then reads captions from the store instead of decoding wavs. Opening a
store checks the fingerprint; a different recipe, a different manifest or a wav changed since the build raises
FeatureCacheError saying which, and the command that rebuilds it.

Precision: float16 rounds each value to 11 significant bits, so a cached value differs from the on-the-fly one by
at most 2^-11 of its magnitude (<= 0.04 dB over [-80, 0]).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import socket
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import BadSampleError, FeatureCacheError
from .features import N_MELS, RECIPE, single_thread_worker_init, wav_log_mel
from .manifest import Manifest, load_manifest

FEATURES_FILE = "features.f16"
OFFSETS_FILE = "offsets.npy"
INDEX_FILE = "index.json"


def store_dir(cache_dir: str | os.PathLike, manifest_path: str | os.PathLike) -> str:
    """Folder of a manifest's store inside `cache_dir`: `<cache_dir>/<manifest file stem>`."""
    stem = os.path.splitext(os.path.basename(os.fspath(manifest_path)))[0]
    return os.path.join(os.fspath(cache_dir), stem)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wav_stats(paths: list[str]) -> np.ndarray:
    """[N, 2] int64 (size, mtime_ns) per file; (-1, -1) for a file that cannot be stat'ed."""
    stats = np.full((len(paths), 2), -1, dtype=np.int64)
    for i, p in enumerate(paths):  # one system call per file; nothing to vectorise
        try:
            st = os.stat(p)
        except OSError:
            continue
        stats[i] = (st.st_size, st.st_mtime_ns)
    return stats


def _rebuild_hint(manifest_path: str, cache_dir: str) -> str:
    return (f"rebuild it with: python -m datamodules.cache --manifest {manifest_path} --out {cache_dir}, or decode the "
            "wavs instead with data.feature_cache: null (--data.feature_cache null)")


def cache_status(cache_dir: str | os.PathLike, manifest: Manifest) -> tuple[str, str]:
    """("ok" | "missing" | "stale" | "other", why) for the store of `manifest` in `cache_dir`.

    "stale": built from this manifest but unusable now (another recipe, the manifest or a wav changed, an
    interrupted build); "other": the store of another manifest with the same file name (`<stem>`), which a build
    for this one would replace.
    """
    folder = store_dir(cache_dir, manifest.path)
    if not os.path.exists(os.path.join(folder, INDEX_FILE)):
        return "missing", f"no feature cache for manifest {manifest.path} in {os.fspath(cache_dir)}"
    other = other_manifest_store(cache_dir, manifest)
    if other:
        return "other", other
    try:
        FeatureStore.open(cache_dir, manifest)
    except FeatureCacheError as err:
        return "stale", str(err).split("; rebuild it with")[0]
    return "ok", ""


def other_manifest_store(cache_dir: str | os.PathLike, manifest: Manifest) -> str | None:
    """Why the store under `manifest`'s file name belongs to another manifest (another path and content), or None.
    Cheap: one small JSON file, and a checksum only when the paths differ."""
    folder = store_dir(cache_dir, manifest.path)
    try:
        with open(os.path.join(folder, INDEX_FILE), encoding="utf-8") as f:
            index = json.load(f)
        built_for, sha = index.get("manifest"), index.get("manifest_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    if not built_for or os.path.abspath(built_for) == os.path.abspath(manifest.path):
        return None
    if sha == file_sha256(manifest.path):
        return None  # the same manifest, moved: the store is still its store
    return f"feature cache {folder} holds the features of another manifest ({built_for})"


class FeatureStore:
    """Read side of one store: `features(i)` -> float32 [40, n]; `lengths` [N] int64 frames.

    The memory map is opened lazily in each process (DataLoader workers included) and never pickled.
    """

    def __init__(self, folder: str, index: dict, offsets: np.ndarray):
        self.folder = folder
        self.index = index
        self.offsets = offsets
        self.lengths = np.diff(offsets)
        self.bad = {int(k): v for k, v in index.get("bad", {}).items()}
        self._features: np.memmap | None = None

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, manifest: Manifest, check_wavs: bool = True) -> FeatureStore:
        """Open the store of `manifest` in `cache_dir`, checking its fingerprint (FeatureCacheError if stale)."""
        cache_dir = os.fspath(cache_dir)
        folder = store_dir(cache_dir, manifest.path)
        hint = _rebuild_hint(manifest.path, cache_dir)
        index_path = os.path.join(folder, INDEX_FILE)
        if not os.path.exists(index_path):
            raise FeatureCacheError(
                f"no feature cache for manifest {manifest.path} in {cache_dir} (expected {index_path}); build "
                f"it with: python -m datamodules.cache --manifest {manifest.path} --out {cache_dir} (the DataModule "
                "builds it on demand in prepare_data), or decode the wavs instead with data.feature_cache: null "
                "(--data.feature_cache null)"
            )
        try:
            with open(index_path, encoding="utf-8") as f:
                index = json.load(f)
            offsets = np.load(os.path.join(folder, OFFSETS_FILE))
        except (OSError, ValueError) as err:
            raise FeatureCacheError(f"feature cache {folder} is unreadable ({err}); {hint}") from None

        if index.get("recipe") != RECIPE:
            changed = sorted(k for k in set(RECIPE) | set(index.get("recipe", {}))
                             if index.get("recipe", {}).get(k) != RECIPE.get(k))
            raise FeatureCacheError(
                f"feature cache {folder} was built with another feature recipe (differs in {changed}: "
                f"cache {[index.get('recipe', {}).get(k) for k in changed]}, code {[RECIPE.get(k) for k in changed]}); "
                f"{hint}"
            )
        sha = file_sha256(manifest.path)
        if index.get("manifest_sha256") != sha:
            raise FeatureCacheError(
                f"feature cache {folder} was built from a different manifest ({index.get('manifest')}, sha256 "
                f"{str(index.get('manifest_sha256'))[:12]}...) than {manifest.path} (sha256 {sha[:12]}...); {hint}"
            )
        n = len(manifest)
        expected_bytes = int(offsets[-1]) * N_MELS * 2 if len(offsets) else -1
        features_path = os.path.join(folder, FEATURES_FILE)
        complete = len(offsets) == n + 1 and os.path.exists(features_path)
        if not complete or os.path.getsize(features_path) != expected_bytes:
            raise FeatureCacheError(f"feature cache {folder} is incomplete or corrupt (size/offsets mismatch); {hint}")
        if check_wavs:
            wavs = manifest.wav_paths()
            now = _wav_stats(wavs)
            then = np.asarray(index["wav_stats"], dtype=np.int64).reshape(n, 2)
            changed = np.flatnonzero((now != then).any(axis=1))
            if len(changed):
                i = int(changed[0])
                what = ("missing now" if now[i, 0] < 0 else
                        f"size {then[i, 0]} -> {now[i, 0]} bytes" if now[i, 0] != then[i, 0] else "modified (mtime)")
                raise FeatureCacheError(
                    f"feature cache {folder} is stale: {len(changed)} wav file(s) changed since it was built "
                    f"(first: {wavs[i]}: {what}); {hint}"
                )
        return cls(folder, index, offsets)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_features"] = None  # reopen the map in the receiving process instead of pickling its data
        return state

    def __len__(self) -> int:
        return len(self.lengths)

    def features(self, i: int, max_frames: int | None = None) -> torch.Tensor:
        """Caption i as float32 [40, n] (the first `max_frames` frames only, when given)."""
        if i in self.bad:
            path = self.index["wavs"][i]
            reason = f"{self.bad[i]} (recorded when the feature cache {self.folder} was built)"
            raise BadSampleError.for_file("wav", path, reason)
        if self._features is None:
            total = int(self.offsets[-1])
            self._features = np.memmap(os.path.join(self.folder, FEATURES_FILE), dtype=np.float16, mode="r",
                                       shape=(total, N_MELS))
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        if max_frames is not None:
            stop = min(stop, start + max_frames)
        # Copy the float16 rows out of the map, widen in torch, then transpose: 2x faster than numpy's
        # transposing cast.
        return torch.from_numpy(np.array(self._features[start:stop])).float().t().contiguous()


class _WavFeatures(Dataset):
    """Builder input: item i -> (i, float16 [n, 40] or None, reason of a bad sample or None)."""

    def __init__(self, wavs: list[str]):
        self.wavs = wavs

    def __len__(self) -> int:
        return len(self.wavs)

    def __getitem__(self, i: int):
        try:
            feats = wav_log_mel(self.wavs[i])
        except BadSampleError as err:
            return i, None, err.reason or str(err)
        return i, feats.T.numpy().astype(np.float16), None


def _as_is(item):
    return item  # keep numpy arrays (the default would turn them into tensors)


def _remove_abandoned_builds(folder: str) -> None:
    """Delete `<folder>.tmp-<this host>-<pid>` folders whose process is gone (a killed build)."""
    prefix = f"{folder}.tmp-{socket.gethostname()}-"
    for tmp in glob.glob(glob.escape(prefix) + "*"):
        pid = tmp[len(prefix):]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except OSError:  # alive, owned by someone else
            pass


def build_cache(
    manifest_path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    num_workers: int = 0,
    on_bad_sample: str = "error",
    progress: bool = False,
) -> str:
    """Compute the store of one manifest into `<cache_dir>/<manifest stem>/` (replacing an old one); returns its folder.

    `on_bad_sample="error"` stops at the first undecodable wav (BadSampleError naming it); `"skip"` records it in
    the store, and a dataset reading the store treats it as a bad sample.
    """
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
    manifest = load_manifest(manifest_path)
    cache_dir = os.path.abspath(os.fspath(cache_dir))
    folder = store_dir(cache_dir, manifest.path)
    os.makedirs(cache_dir, exist_ok=True)
    # Built aside and renamed into place when complete: a build killed half-way leaves no store that looks usable,
    # only this folder, which the next build on the same host removes.
    _remove_abandoned_builds(folder)
    tmp = f"{folder}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)

    wavs = manifest.wav_paths()
    # Fingerprint first: a wav rewritten while we read it then shows up as stale, not as silently cached.
    sha = file_sha256(manifest.path)
    stats = _wav_stats(wavs)
    offsets = np.zeros(len(wavs) + 1, dtype=np.int64)
    bad: dict[str, str] = {}
    loader = DataLoader(_WavFeatures(wavs), batch_size=None, num_workers=num_workers, collate_fn=_as_is,
                        worker_init_fn=single_thread_worker_init if num_workers > 0 else None)
    items = loader
    if progress:
        from tqdm import tqdm

        items = tqdm(loader, total=len(wavs), desc=f"caching {os.path.basename(manifest.path)}", unit="wav")
    try:
        with open(os.path.join(tmp, FEATURES_FILE), "wb") as out:
            for i, feats, reason in items:  # DataLoader keeps the order
                if feats is None:
                    if on_bad_sample == "error":
                        raise BadSampleError.for_file("wav", wavs[i], f"{reason} (item {i} of {manifest.path})")
                    bad[str(i)] = reason
                    n = 0
                else:
                    out.write(feats.tobytes())
                    n = feats.shape[0]
                offsets[i + 1] = offsets[i] + n
        np.save(os.path.join(tmp, OFFSETS_FILE), offsets)
        index = {
            "recipe": RECIPE,
            "manifest": manifest.path,
            "manifest_sha256": sha,
            "n_items": len(wavs),
            "total_frames": int(offsets[-1]),
            "layout": f"float16 [total_frames, {N_MELS}] row-major",
            "wavs": wavs,
            "wav_stats": stats.tolist(),
            "bad": bad,
        }
        with open(os.path.join(tmp, INDEX_FILE), "w", encoding="utf-8") as f:
            json.dump(index, f)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.cache",
        description="Precompute the log-mel features of Places-format manifests into a memory-mapped float16 store.",
    )
    parser.add_argument("--manifest", action="append", required=True, help="manifest JSON (repeat for several)")
    parser.add_argument("--out", required=True, help="cache folder; each manifest gets <out>/<manifest stem>/")
    parser.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="decoding worker processes (0: in this process)")
    parser.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                        help="stop at an undecodable wav (error) or record it as bad in the store (skip)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for manifest in args.manifest:
        folder = build_cache(manifest, args.out, num_workers=args.num_workers, on_bad_sample=args.on_bad_sample,
                             progress=not args.quiet)
        with open(os.path.join(folder, INDEX_FILE), encoding="utf-8") as f:
            index = json.load(f)
        print(f"{manifest}: {index['n_items']} captions, {index['total_frames']} frames, "
              f"{len(index['bad'])} bad -> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
