"""Log-mel features: parity with a librosa implementation of the official recipe, resampling, odd input, errors,
pad/truncate."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from datamodules import features
from datamodules.errors import BadSampleError
from datamodules.features import load_audio, log_mel, num_frames, pad_or_truncate, wav_log_mel, wav_num_frames

librosa = pytest.importorskip("librosa")


def librosa_log_mel(y: np.ndarray) -> np.ndarray:
    """The DAVEnet `_LoadAudio` recipe on 16 kHz float32 input, written with librosa >= 0.10 (test reference)."""
    y = y - y.mean()
    y = np.append(y[0], y[1:] - 0.97 * y[:-1]).astype(np.float32)
    spec = librosa.stft(y, n_fft=400, hop_length=160, win_length=400, window=scipy.signal.windows.hamming(400))
    mel = librosa.filters.mel(sr=16000, n_fft=400, n_mels=40, fmin=20) @ (np.abs(spec) ** 2)
    return librosa.power_to_db(mel, ref=np.max)


def signal(n: int, seed: int = 0, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    y = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1500 * t * (1 + t)) + 0.03 * rng.standard_normal(n)
    y[: n // 4] *= 1e-3  # a quiet start, so the -80 dB floor and low-level bins are exercised
    return y.astype(np.float32)


@pytest.mark.filterwarnings("ignore:n_fft=400 is too large")
@pytest.mark.parametrize("n", [1600, 16000 + 37, 38_001, 400, 161])
def test_parity_with_librosa(n):
    y = signal(n, seed=n)
    ours = log_mel(torch.from_numpy(y), 16000)
    ref = librosa_log_mel(y)
    assert ours.dtype == torch.float32
    assert ours.shape == ref.shape == (40, 1 + n // 160)
    assert np.abs(ours.numpy() - ref).max() <= 1e-3  # measured 4.1e-4 here (README)
    assert float(ours.max()) == 0.0 and float(ours.min()) >= -80.0
    assert (ref <= -79.99).any() == (ours <= -79.99).any()


def test_level_invariant_and_per_utterance():
    # dB relative to each utterance's own maximum: scaling the waveform changes nothing (above the 1e-10 power
    # floor, i.e. in every bin that is not near silent).
    y = torch.from_numpy(signal(8000))
    ref = log_mel(y, 16000)
    quiet = log_mel(0.1 * y, 16000)
    assert quiet.max() == 0
    loud = ref > -50
    assert loud.float().mean() > 0.3
    assert (quiet - ref)[loud].abs().max() < 2e-3


def test_filterbank_and_window_built_once(monkeypatch):
    log_mel(torch.from_numpy(signal(1600)), 16000)  # fills the cache

    def boom(*args, **kwargs):
        raise AssertionError("mel filterbank rebuilt on a call")

    monkeypatch.setattr(features.torchaudio.functional, "melscale_fbanks", boom)
    monkeypatch.setattr(features.torch, "hamming_window", boom)
    log_mel(torch.from_numpy(signal(3200)), 16000)
    window, fbank = features._filters(torch.device("cpu"), torch.float32)
    # symmetric Hamming: first and last taps equal (a periodic window would not be)
    assert window.shape == (400,) and torch.isclose(window[0], window[-1])
    assert fbank.shape == (40, 201)


@pytest.mark.parametrize("sr", [22050, 8000, 44100, 11025])
def test_other_sample_rates_are_resampled(sr):
    seconds = 0.7
    n = int(seconds * sr)
    t = np.arange(n) / sr
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    ours = log_mel(torch.from_numpy(tone), sr)
    assert ours.shape == (40, num_frames(n, sr))
    assert abs(ours.shape[1] - (1 + int(seconds * 16000) // 160)) <= 1
    assert torch.isfinite(ours).all() and ours.max() == 0 and ours.min() >= -80
    # the same 1 kHz tone generated at 16 kHz peaks in the same mel band
    t16 = np.arange(int(seconds * 16000)) / 16000
    ref = log_mel(torch.from_numpy((0.5 * np.sin(2 * np.pi * 1000 * t16)).astype(np.float32)), 16000)
    assert ours[:, 5:-5].mean(1).argmax() == ref[:, 5:-5].mean(1).argmax()


@pytest.mark.parametrize("wave", ["zeros", "constant", "one_sample"])
def test_silence_is_finite_and_all_zero_db(wave):
    x = {"zeros": torch.zeros(4000), "constant": torch.full((4000,), 0.25), "one_sample": torch.zeros(1)}[wave]
    out = log_mel(x, 16000)
    assert torch.isfinite(out).all()
    # documented choice (same as the official librosa code): all-silent input -> 0 dB everywhere
    assert (out == 0).all()
    assert out.shape == (40, 1 + x.numel() // 160)


def test_silent_stretch_inside_speech_hits_floor():
    y = signal(16000)
    y[4000:12000] = 0.0
    out = log_mel(torch.from_numpy(y), 16000)
    assert torch.isfinite(out).all()
    assert (out[:, 40:60] == -80).all()


def test_stereo_is_averaged(tmp_path, write_wav):
    path = write_wav(tmp_path / "stereo.wav", seconds=0.4, channels=2)
    wave, sr = load_audio(path)
    assert wave.shape[0] == 2 and sr == 16000 and not torch.equal(wave[0], wave[1])
    torch.testing.assert_close(log_mel(wave, sr), log_mel(wave.mean(0), sr))


@pytest.mark.parametrize("subtype,tol", [("PCM_24", 1e-3), ("PCM_16", 0.05), ("PCM_U8", 3.0), ("FLOAT", 1e-5)])
def test_wav_encodings_decode_to_the_same_features(tmp_path, write_wav, subtype, tol):
    reference = wav_log_mel(write_wav(tmp_path / "ref.wav", seconds=0.5, subtype="DOUBLE"))
    path = write_wav(tmp_path / f"{subtype}.wav", seconds=0.5, subtype=subtype)
    wave, sr = load_audio(path)
    assert wave.dtype == torch.float32 and wave.abs().max() <= 1.0
    out = log_mel(wave, sr)
    assert out.shape == reference.shape
    loud = reference > -40  # quantisation noise only moves the quiet bins
    assert (out - reference)[loud].abs().max() <= tol


@pytest.mark.parametrize("channels", [1, 2])
def test_pcm16_fast_path_equals_libsndfile_float_decoding(tmp_path, write_wav, channels):
    path = write_wav(tmp_path / "pcm16.wav", seconds=0.3, channels=channels, subtype="PCM_16")
    # full scale both ways: -32768 must map to exactly -1.0, 32767 to 32767 / 32768
    data = sf.read(str(path), dtype="int16", always_2d=True)[0]
    data[:2] = np.array([-32768, 32767], dtype=np.int16)[:, None]
    sf.write(str(path), data, 16000, subtype="PCM_16")
    wave, sr = load_audio(path)
    expected = sf.read(str(path), dtype="float32", always_2d=True)[0].T
    assert wave.dtype == torch.float32 and wave.shape == (channels, data.shape[0]) and sr == 16000
    assert torch.equal(wave, torch.from_numpy(np.ascontiguousarray(expected)))
    assert wave[:, 0].eq(-1.0).all()


def test_wav_num_frames_matches_decoding(tmp_path, write_wav):
    for sr, seconds in [(16000, 0.33), (22050, 0.41), (8000, 0.29), (44100, 0.1)]:
        path = write_wav(tmp_path / f"{sr}.wav", seconds=seconds, sample_rate=sr)
        assert wav_num_frames(path) == wav_log_mel(path).shape[1]


def _corrupt(path):
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(200)))


@pytest.mark.parametrize(
    "case,reason",
    [
        ("missing", "file not found"),
        ("empty", "empty file"),
        ("corrupt", "cannot decode"),
        ("text", "cannot decode"),
        ("nan", "non-finite"),
        ("no_samples", "no audio samples"),
    ],
)
def test_bad_audio_names_file_and_reason(tmp_path, case, reason):
    path = tmp_path / f"{case}.wav"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "corrupt":
        _corrupt(path)
    elif case == "text":
        path.write_text("this is not audio\n" * 20)
    elif case == "nan":
        sf.write(str(path), np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32), 16000, subtype="FLOAT")
    elif case == "no_samples":
        sf.write(str(path), np.zeros((0, 1), dtype=np.float32), 16000)
    with pytest.raises(BadSampleError) as info:
        load_audio(path)
    assert str(path) in str(info.value) and reason in str(info.value)
    assert info.value.path == str(path)
    if case in ("missing", "empty", "corrupt", "text"):
        with pytest.raises(BadSampleError, match="bad wav"):
            wav_num_frames(path)


def test_pad_or_truncate():
    feats = torch.randn(40, 7) - 10
    padded, n = pad_or_truncate(feats, 10)
    assert padded.shape == (40, 10) and n == 7
    assert torch.equal(padded[:, :7], feats) and (padded[:, 7:] == 0).all()
    padded, n = pad_or_truncate(feats, 9, pad_value=-80.0)
    assert n == 7 and (padded[:, 7:] == -80).all()
    cut, n = pad_or_truncate(feats, 5)
    assert cut.shape == (40, 5) and n == 5 and torch.equal(cut, feats[:, :5])
    same, n = pad_or_truncate(feats, 7)
    assert n == 7 and torch.equal(same, feats)
    with pytest.raises(ValueError):
        pad_or_truncate(feats, 0)


def test_log_mel_rejects_bad_shapes():
    with pytest.raises(ValueError):
        log_mel(torch.zeros(0), 16000)
    with pytest.raises(ValueError):
        log_mel(torch.zeros(2, 2, 100), 16000)
    with pytest.raises(TypeError):
        log_mel(torch.zeros(100, dtype=torch.int16), 16000)
