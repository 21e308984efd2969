"""Audio input of every model: wav -> 40-band log-mel spectrogram [40, T], the official DAVEnet/ResDAVEnet recipe.

References: dharwath/DAVEnet-pytorch `dataloaders/image_caption_dataset.py::_LoadAudio`, wnhsu/ResDAVEnet-VQ
`dataloaders/utils.py::compute_spectrogram` (same defaults). Written with torch/torchaudio ops only.

    step                     value
    1. mono                  average the channels
    2. resample              to 16 kHz (torchaudio sinc resampler) when the file has another rate
    3. DC                    subtract the mean
    4. pre-emphasis          y[t] - 0.97 y[t-1]  (y[0] kept)
    5. STFT                  n_fft = win = 400 (25 ms), hop 160 (10 ms), symmetric Hamming window (scipy's
                             `hamming(400)`), centred frames with zero padding (librosa >= 0.10)
    6. power                 |X|^2
    7. mel                   40 filters, Slaney mel scale and Slaney area norm, 20 Hz .. 8 kHz
    8. dB                    10 log10(max(mel, 1e-10)) minus the utterance maximum, floored at -80: values in [-80, 0]

Frames: `1 + n16 // 160` for n16 samples at 16 kHz. Matches librosa's implementation of the same recipe to within
1e-3 dB in float32 (tests/test_features.py asserts <= 0.01 dB; a periodic window, HTK mel or reflect padding
would be off by 0.5 to 50 dB).

Silence: an all-zero (or constant) waveform has mel power 0 everywhere, which the 1e-10 floor turns into -100 dB
everywhere; relative to its own maximum that is 0 dB in every bin. So an all-silent caption gives all zeros (as the
official librosa code does), never NaN or inf.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import Tensor

from .errors import BadSampleError, require_nonempty_file

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 40
F_MIN = 20.0
F_MAX = 8000.0
PREEMPHASIS = 0.97
TOP_DB = 80.0
AMIN = 1e-10

# Everything that changes the numbers; the feature cache refuses a store built with another recipe.
RECIPE_VERSION = 1
RECIPE = {
    "version": RECIPE_VERSION,
    "sample_rate": SAMPLE_RATE,
    "n_fft": N_FFT,
    "hop_length": HOP_LENGTH,
    "window": "hamming-symmetric",
    "center": "constant",
    "n_mels": N_MELS,
    "f_min": F_MIN,
    "f_max": F_MAX,
    "mel": "slaney-scale-slaney-norm",
    "preemphasis": PREEMPHASIS,
    "top_db": TOP_DB,
    "amin": AMIN,
    "ref": "max",
}


@functools.lru_cache(maxsize=8)
def _filters(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(window [400], mel filterbank [40, 201]), built once per device and dtype."""
    window = torch.hamming_window(N_FFT, periodic=False, dtype=dtype, device=device)
    fbank = torchaudio.functional.melscale_fbanks(
        N_FFT // 2 + 1, F_MIN, F_MAX, N_MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
    )
    return window, fbank.T.contiguous().to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def _resampler(orig_sr: int, device: torch.device, dtype: torch.dtype) -> torchaudio.transforms.Resample:
    # Same kernel as torchaudio.functional.resample, computed once per source rate instead of per call.
    return torchaudio.transforms.Resample(orig_sr, SAMPLE_RATE, dtype=dtype).to(device)


def resampled_length(num_samples: int, sample_rate: int) -> int:
    """Samples after resampling to 16 kHz, rounded as torchaudio rounds: ceil(n * 16000 / sr)."""
    g = math.gcd(int(sample_rate), SAMPLE_RATE)
    orig, new = int(sample_rate) // g, SAMPLE_RATE // g
    return -(-int(num_samples) * new // orig)


def num_frames(num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Log-mel frames that `log_mel` returns for `num_samples` samples at `sample_rate`, without decoding."""
    return 1 + resampled_length(num_samples, sample_rate) // HOP_LENGTH


def log_mel(waveform: Tensor | np.ndarray, sample_rate: int) -> Tensor:
    """Log-mel spectrogram [40, frames] float32 of a waveform [n] or [channels, n] (see the module docstring)."""
    x = torch.as_tensor(waveform)
    if not x.is_floating_point():
        raise TypeError(f"log_mel needs a floating-point waveform, got {x.dtype}")
    if x.dim() == 2:
        x = x[0] if x.shape[0] == 1 else x.mean(dim=0)  # mono: no copy
    elif x.dim() != 1:
        raise ValueError(f"log_mel needs a waveform [n] or [channels, n], got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError("log_mel got an empty waveform")
    x = x.float()
    if sample_rate != SAMPLE_RATE:
        x = _resampler(int(sample_rate), x.device, x.dtype)(x)
    x = x - x.mean()
    x = torch.cat([x[:1], x[1:] - PREEMPHASIS * x[:-1]])
    window, fbank = _filters(x.device, x.dtype)
    spec = torch.stft(
        x, N_FFT, HOP_LENGTH, N_FFT, window, center=True, pad_mode="constant", return_complex=True
    )
    power = spec.real.square() + spec.imag.square()  # [201, frames]
    db = 10.0 * torch.log10((fbank @ power).clamp_(min=AMIN))
    # Relative to this utterance's maximum (never a batch maximum), then the 80 dB floor.
    return (db - db.max()).clamp_(min=-TOP_DB)


def load_audio(path: str | os.PathLike) -> tuple[Tensor, int]:
    """Read a sound file with soundfile: (waveform [channels, n] float32, sample_rate).

    Any format libsndfile reads (8-bit unsigned, 16/24/32-bit PCM, float wav, FLAC, ...). A missing, empty,
    corrupt or undecodable file, one without samples and one with NaN/inf samples raise BadSampleError naming the
    file and the reason.
    """
    path = os.fspath(path)
    require_nonempty_file("wav", path)
    try:
        with sf.SoundFile(path) as f:
            sample_rate, pcm16 = f.samplerate, f.subtype == "PCM_16"
            # 16-bit PCM (Places, SpokenScenes) read as int16 and scaled here: 5x faster than libsndfile's
            # float conversion, and the same numbers (it also divides by 2**15).
            data = f.read(dtype="int16" if pcm16 else "float32", always_2d=True)  # [n, channels]
    except Exception as err:  # libsndfile's errors are RuntimeErrors with a short text; keep it
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise BadSampleError.for_file("wav", path, f"cannot decode audio ({reason})") from None
    if data.shape[0] == 0:
        raise BadSampleError.for_file("wav", path, "no audio samples")
    if pcm16:
        wave = torch.from_numpy(np.ascontiguousarray(data.T)).float().mul_(1.0 / 32768)
    else:
        if not np.isfinite(data).all():
            raise BadSampleError.for_file("wav", path, "non-finite samples (NaN or inf)")
        wave = torch.from_numpy(np.ascontiguousarray(data.T))
    return wave, int(sample_rate)


def wav_num_frames(path: str | os.PathLike) -> int:
    """Log-mel frames of a sound file from its header (soundfile.info), without decoding.

    BadSampleError if the file is missing, empty or its header is unreadable."""
    path = os.fspath(path)
    require_nonempty_file("wav", path)
    try:
        info = sf.info(path)
    except Exception as err:
        raise BadSampleError.for_file("wav", path, f"cannot decode audio header ({err})") from None
    if info.frames <= 0:
        raise BadSampleError.for_file("wav", path, "no audio samples")
    return num_frames(info.frames, info.samplerate)


def wav_log_mel(path: str | os.PathLike) -> Tensor:
    """`log_mel(*load_audio(path))`: the features of one file, [40, frames] float32."""
    return log_mel(*load_audio(path))


def pad_or_truncate(features: Tensor, target_length: int, pad_value: float = 0.0) -> tuple[Tensor, int]:
    """Right-pad with `pad_value` or truncate features [40, n] to [40, target_length]; returns (features, nframes).

    `nframes = min(n, target_length)` is the number of real frames. The official pad value is 0, which is odd:
    after `ref=max` every real bin is <= 0 dB, so a 0-dB pad equals the loudest possible bin, not silence. Models
    must therefore mask with `nframes` (the official code computes similarities on the first nframes // 16 output
    frames only; receptive fields near the end still see the padding). `pad_value=-80.0` pads with the floor.
    """
    n = features.shape[-1]
    if target_length < 1:
        raise ValueError(f"target_length must be >= 1, got {target_length}")
    if n >= target_length:
        return features[..., :target_length], target_length
    return torch.nn.functional.pad(features, (0, target_length - n), value=pad_value), n


def single_thread_worker_init(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: one torch thread per worker process.

    Feature extraction is small per-caption work; several intra-op threads per worker only fight over the cores
    (benchmarks/loading_throughput.py measures it). PyTorch's worker loop already sets 1 thread before calling
    `worker_init_fn`; this makes it explicit and keeps it if that default changes. Also applies Lightning's
    worker seeding when `seed_everything(..., workers=True)` asked for it (Lightning only adds its own init
    function when none is set).
    """
    torch.set_num_threads(1)
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning_fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)
