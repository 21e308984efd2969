"""Caption loading: the official librosa recipe against our on-the-fly torchaudio path and our feature cache.

Each path turns a 10 s, 16 kHz wav into the model input: log-mel [40, 2048] (0-padded) and nframes.

| path        | what runs per caption                                                                  |
|-------------|----------------------------------------------------------------------------------------|
| librosa     | ``baselines.librosa_log_mel``: librosa.load -> DC, pre-emphasis -> librosa.stft (scipy |
|             | Hamming) -> power -> mel filterbank (built per call, as upstream) -> power_to_db(max)  |
|             | -> pad / truncate                                                                      |
| on the fly  | ``datamodules.features.wav_log_mel`` (soundfile + torch.stft) -> ``pad_or_truncate``   |
| cached      | ``datamodules.cache.FeatureStore.features`` (memory-mapped float16) -> pad_or_truncate |

All three run in this process with one thread (torch and the BLAS under numpy), so captions/s is per core,
the number that matters for sizing DataLoader workers. The cache is built first by ``build_cache`` (not
timed). Numbers must agree: on the fly vs librosa within 0.01 dB, cached within 0.06 dB (float16 storage:
2^-11 of up to 80 dB). This module supersedes the data engineer's ``benchmarks/loading_throughput.py``
idea for ``python -m benchmarks``; it calls only the public data functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

import numpy as np
import soundfile as sf
import torch

from datamodules.cache import FeatureStore, build_cache
from datamodules.features import pad_or_truncate, wav_log_mel
from datamodules.manifest import load_manifest

from . import baselines
from .harness import Config, check, compare

SAMPLE_RATE = 16000
TARGET_LENGTH = 2048


def write_captions(folder: str, n: int, seconds: float = 10.0, seed: int = 0) -> str:
    """n synthetic 16-bit wav captions (gliding tones, amplitude modulation, noise) and a Places-format
    manifest naming them; returns the manifest path. Images are named but not needed here."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    items = []
    for i in range(n):
        f0 = 150.0 + 400.0 * rng.random()
        wave = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.05 * t)) + 0.1 * np.sin(2 * np.pi * 3.1 * f0 * t)
        wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * (2 + rng.random()) * t)) + 0.02 * rng.standard_normal(t.size)
        name = f"wavs/caption_{i:04d}.wav"
        os.makedirs(os.path.join(folder, "wavs"), exist_ok=True)
        sf.write(os.path.join(folder, name), wave.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        items.append({"wav": name, "image": f"a/abbey/image_{i:04d}.jpg", "uttid": f"utt{i}"})
    manifest = os.path.join(folder, "captions.json")
    with open(manifest, "w", encoding="utf-8") as f:
        json.dump({"image_base_path": folder, "audio_base_path": folder, "data": items}, f)
    return manifest


@contextlib.contextmanager
def one_thread():
    """torch and numpy's BLAS on one thread for the duration (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # librosa depends on scikit-learn, which brings threadpoolctl; be safe anyway
        threadpool_limits = None
    limits = threadpool_limits(limits=1) if threadpool_limits else contextlib.nullcontext()
    try:
        with limits:
            yield
    finally:
        torch.set_num_threads(previous)


def loading_rows(cfg: Config, n: int | None = None) -> list[dict]:
    """Two rows: on the fly vs librosa, cached vs librosa (captions/s per core, 10 s captions)."""
    n = n or (20 if cfg.quick else 60)
    with tempfile.TemporaryDirectory(prefix="vgs-bench-") as folder, one_thread():
        manifest_path = write_captions(folder, n)
        manifest = load_manifest(manifest_path)
        build_cache(manifest_path, os.path.join(folder, "cache"))
        store = FeatureStore.open(os.path.join(folder, "cache"), manifest)
        wavs = manifest.wav_paths()

        def librosa_path():
            return [tuple(map(torch.as_tensor, baselines.librosa_log_mel(w, TARGET_LENGTH))) for w in wavs]

        def on_the_fly():
            return [pad_or_truncate(wav_log_mel(w)[:, :TARGET_LENGTH], TARGET_LENGTH) for w in wavs]

        def cached():
            return [pad_or_truncate(store.features(i, TARGET_LENGTH), TARGET_LENGTH) for i in range(n)]

        def equality(ours, dB):
            mine, theirs = ours(), librosa_path()
            frames = [torch.tensor([m[1] for m in mine]), torch.tensor([t[1] for t in theirs])]
            same_frames = check(*frames, rtol=0.0, what="nframes")
            result = check([m[0] for m in mine], [t[0] for t in theirs], rtol=0.0, atol=dB,
                           what=f"log-mel [40, {TARGET_LENGTH}] in dB, and nframes")
            result["passed"] = result["passed"] and same_frames["passed"]
            return result

        rows = []
        for name, ours, target, dB in (("load_onthefly", on_the_fly, 3.0, 0.01),
                                       ("load_cached", cached, 30.0, 0.06)):
            row = compare(
                name, cfg, ours, librosa_path, equality=lambda ours=ours, dB=dB: equality(ours, dB), target=target,
                shapes=f"{n} captions of 10 s, 16 kHz PCM_16 -> [40, {TARGET_LENGTH}], 1 thread",
                baseline_repeats=cfg.slow_repeats,
                notes="baseline: librosa path of the official loader",
            )
            row["captions_per_s_per_core"] = {"ours": n / row["ours"]["min_s"],
                                              "baseline": n / row["baseline"]["min_s"]}
            row["notes"] += (f"; captions/s per core: ours {row['captions_per_s_per_core']['ours']:.0f}, "
                             f"librosa {row['captions_per_s_per_core']['baseline']:.0f}")
            rows.append(row)
    return rows
