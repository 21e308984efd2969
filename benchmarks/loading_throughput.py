"""Caption loading throughput per core: captions/s for 10 s captions with one torch thread.

    python -m benchmarks.loading_throughput [--captions 16] [--seconds 10] [--min-time 3] [--json out.json]

Measures, in one process with torch.set_num_threads(1):
    on_the_fly         soundfile decode + log_mel (datamodules.features.wav_log_mel)
    cached             one caption read from the float16 memory-mapped feature cache (page cache warm)
    librosa_official   the official DAVEnet path: librosa.load(sr=16000) + pre-emphasis + librosa.stft +
                       mel filterbank built per call + power_to_db(ref=max)
and, with --dataloader (default on), a DataLoader of on-the-fly features with 2 workers, each worker with 1
torch thread (our worker_init_fn) vs 2 threads, for the thread-oversubscription check.

The wavs are synthetic (chirps + noise, 16 kHz PCM_16), written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.cache import FeatureStore, build_cache
from datamodules.features import single_thread_worker_init, wav_log_mel
from datamodules.manifest import load_manifest


def write_captions(folder: str, n: int, seconds: float) -> str:
    """n synthetic captions and a Places-format manifest in `folder`; returns the manifest path."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    data = []
    for i in range(n):
        wave = 0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t * (1 + 0.1 * t)) + 0.05 * rng.standard_normal(len(t))
        sf.write(os.path.join(folder, f"utt_{i}.wav"), wave.astype(np.float32), 16000, subtype="PCM_16")
        data.append({"wav": f"utt_{i}.wav", "image": f"r/runway/{i}.jpg"})
    path = os.path.join(folder, "bench.json")
    with open(path, "w") as f:
        json.dump({"image_base_path": ".", "audio_base_path": ".", "data": data}, f)
    return path


def official_librosa_log_mel(path: str) -> np.ndarray:
    import librosa
    import scipy.signal

    y, sr = librosa.load(path, sr=16000)
    y = y - y.mean()
    y = np.append(y[0], y[1:] - 0.97 * y[:-1])
    spec = librosa.stft(y, n_fft=400, hop_length=160, win_length=400, window=scipy.signal.windows.hamming(400))
    mel = librosa.filters.mel(sr=sr, n_fft=400, n_mels=40, fmin=20)  # rebuilt per call, as the official loader does
    return librosa.power_to_db(mel @ (np.abs(spec) ** 2), ref=np.max)


def rate(fn, items: list, min_time: float) -> float:
    """Calls of fn per second over `items`, cycling until at least min_time seconds have passed."""
    fn(items[0])  # warm up (filterbank caches, imports)
    count, start = 0, time.perf_counter()
    while True:
        for item in items:
            fn(item)
            count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return count / elapsed


class _Decode(Dataset):
    def __init__(self, paths: list[str], repeat: int):
        self.paths = paths * repeat

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return wav_log_mel(self.paths[i])


def _two_threads(worker_id: int) -> None:
    torch.set_num_threads(2)


def loader_rate(paths: list[str], worker_init, repeat: int) -> float:
    loader = DataLoader(_Decode(paths, repeat), batch_size=None, num_workers=2, worker_init_fn=worker_init)
    start = time.perf_counter()
    n = sum(1 for _ in loader)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loading_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--captions", type=int, default=16, help="distinct synthetic captions")
    parser.add_argument("--seconds", type=float, default=10.0, help="caption duration")
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--no-dataloader", action="store_true", help="skip the 2-worker DataLoader check")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    results: dict = {"captions_seconds": args.seconds, "torch_threads": 1, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_captions(tmp, args.captions, args.seconds)
        paths = load_manifest(manifest).wav_paths()
        build_cache(manifest, os.path.join(tmp, "cache"))
        store = FeatureStore.open(os.path.join(tmp, "cache"), load_manifest(manifest))

        results["on_the_fly"] = rate(wav_log_mel, paths, args.min_time)
        results["cached"] = rate(store.features, list(range(len(paths))), args.min_time)
        try:
            results["librosa_official"] = rate(official_librosa_log_mel, paths, args.min_time)
        except ImportError:
            results["librosa_official"] = None
        if not args.no_dataloader:
            repeat = max(1, int(round(results["on_the_fly"] * args.min_time / len(paths))))
            results["dataloader_2_workers_1_thread"] = loader_rate(paths, single_thread_worker_init, repeat)
            results["dataloader_2_workers_2_threads"] = loader_rate(paths, _two_threads, repeat)

    print(f"captions/s, {args.seconds:g} s captions, 1 torch thread per process ({os.cpu_count()} CPUs):")
    for key, value in results.items():
        if key not in ("captions_seconds", "torch_threads", "cpu_count"):
            print(f"  {key:32s} {value:10.1f}" if value is not None else f"  {key:32s} {'n/a':>10s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
