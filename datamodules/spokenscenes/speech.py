"""Speech for SpokenScenes: espeak-ng (the `espeakng-loader` build) driven through ctypes, with word timings.

    speak(tokens, text, speaker, rate, pitch, pitch_range) -> Utterance(audio int16 [n] at 16 kHz, words, phones)

How espeak is driven (speak_lib.h, API revision 12):

- `espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)` returns the native rate (22050 Hz);
  `espeak_SetSynthCallback(cb)` receives `(short *wav, int numsamples, espeak_EVENT *events)` blocks; the
  event list ends with type 0 (LIST_TERMINATED). Word events (type 1) are always delivered in this mode.
- `espeak_EVENT` = {int type; unsigned unique_identifier; int text_position (1-based character offset of the
  word); int length; int audio_position (ms from the start of the message); int sample; void *user_data;
  union {int number; const char *name; char string[8]} id}.
- Initialised with `espeakINITIALIZE_PHONEME_EVENTS` (options bit 0), espeak also delivers a phoneme event
  (type 7) at the start of every phoneme: `id.string` is its espeak name (`'E`, `tS`, `a#`; `_`, `_:` are
  pauses) and `text_position` the word event it belongs to (function words joined to the word before carry that
  word's position). Phoneme events change nothing in the audio (tested).
- `espeak_TextToPhonemes(&text, espeakCHARS_AUTO, ' ' << 8)` gives a word's phoneme names under the current
  voice, separated by spaces: the lexicon that splits a joined segment's phonemes between its words.
- `espeak_SetVoiceByName("en-us+f2")` picks a language voice and a variant; `espeak_SetParameter` sets rate
  (words/min), pitch (0-100) and pitch range (0-100); `espeak_Synth(text, size, 0, POS_CHARACTER, 0,
  espeakCHARS_AUTO, NULL, NULL)` then `espeak_Synchronize()` runs the synthesis.

Determinism. espeak keeps process-global state that `espeak_Initialize` does not reset: the pitch-flutter
phase (a function-static counter in wavegen.c) advances with every sample ever synthesised, so the same text
comes out a few ms different on every call; and its noise source (the breath of the female variants) is
seeded from the clock when espeak starts. So every utterance loads the library afresh (dlopen), initialises
it, seeds the noise source (`espeak_ng_SetRandSeed`, and `srand` for the C library's `rand()` that espeak
also calls), synthesises, terminates and unloads it again (dlclose). That costs about 1 ms (plus reloading
the voice), and the audio depends only on (text, speaker, rate, pitch, range, noise seed), whichever process
makes it and whatever it made before. espeak is not thread-safe: parallelism is by processes.

The 22050 Hz output is resampled to 16 kHz with a windowed-sinc (Hann) resampler written in numpy, the same
kernel as `torchaudio.functional.resample` (lowpass_filter_width=6, rolloff=0.99), so that generation workers
need not import torch.
"""

from __future__ import annotations

import _ctypes
import contextlib
import ctypes
import functools
import math
import os
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16000
# language voices of the espeakng-loader data (lang/gmw/*) and the variants (voices/!v/*) we use
VOICES: tuple[str, ...] = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc",
                           "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
SPEAKERS: tuple[str, ...] = tuple(f"{v}+{var}" for v in VOICES for var in VARIANTS)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_espeakCHARS_AUTO = 0
_espeakRATE, _espeakPITCH, _espeakRANGE = 1, 3, 4
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_INITIALIZE_PHONEME_EVENTS = 0x0001
_STRESS_MARKS = "',%="  # espeak's stress and syllable marks before a phoneme name: not part of the phone


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    return lib


# what the callback of the library being used collects: int16 blocks, (text_position, length, ms) per word and
# (text_position, ms, name) per phoneme
_chunks: list[np.ndarray] = []
_words: list[tuple[int, int, int]] = []
_phonemes: list[tuple[int, int, str]] = []


def _on_audio(wav, numsamples, events) -> int:
    if wav and numsamples > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
        if events[i].type == _EVENT_WORD:
            _words.append((events[i].text_position, events[i].length, events[i].audio_position))
        elif events[i].type == _EVENT_PHONEME:
            _phonemes.append((events[i].text_position, events[i].audio_position,
                              events[i].id.string.decode("ascii", "replace")))
        i += 1
    return 0  # continue


_callback = _SynthCallback(_on_audio)  # module-level: espeak keeps the raw pointer
_libc = ctypes.CDLL(None)  # espeak also draws from the C library's rand()
_checked_unload = False


@contextlib.contextmanager
def _fresh_espeak(options: int = 0):
    """A freshly loaded libespeak-ng initialised with `options`, unloaded again on exit (see the module doc)."""
    global _checked_unload
    import espeakng_loader

    path = espeakng_loader.get_library_path()
    lib = _declare(ctypes.CDLL(path))
    try:
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
                                     options)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data {espeakng_loader.get_data_path()}")
        lib.espeak_SetSynthCallback(_callback)
        yield lib, rate
    finally:
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)
    if not _checked_unload and os.path.exists("/proc/self/maps"):
        # if something else in this process holds the library, dlclose leaves its state in place
        if os.path.realpath(path) in open("/proc/self/maps").read():
            raise RuntimeError(f"{path} stays loaded after dlclose (another user in this process?): "
                               "SpokenScenes needs a fresh espeak state per utterance for deterministic audio")
        _checked_unload = True


def espeak_version() -> str:
    with _fresh_espeak() as (lib, _rate):
        return lib.espeak_Info(None).decode()


@dataclass
class Synthesis:
    audio: np.ndarray  # int16 [n] at `rate`
    words: list[tuple[int, int, int]]  # word events: (text_position (1-based), length, ms)
    phonemes: list[tuple[int, int, str]]  # phoneme events: (text_position, ms, espeak name); empty unless asked
    rate: int  # Hz
    lexicon: dict[str, list[str]]  # phoneme names (stress marks removed) of each word asked for, in this voice


def synthesize_with_phonemes(text: str, speaker: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
                             noise_seed: int = 0, lexicon_words: tuple[str, ...] = ()) -> Synthesis:
    """espeak-ng speech of `text` with word and phoneme events, plus the phonemes of `lexicon_words` in the
    same voice (see the module doc). The audio is exactly that of `synthesize` with the same arguments."""
    return _synthesize(text, speaker, rate, pitch, pitch_range, noise_seed, _INITIALIZE_PHONEME_EVENTS,
                       lexicon_words)


def synthesize(text: str, speaker: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
               noise_seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int]], int]:
    """espeak-ng speech of `text`: (int16 audio, word events [(text_position (1-based), length, ms)], rate Hz).

    Deterministic: the same arguments give the same audio in any process, after any other call."""
    out = _synthesize(text, speaker, rate, pitch, pitch_range, noise_seed, 0, ())
    return out.audio, out.words, out.rate


def _synthesize(text: str, speaker: str, rate: int, pitch: int, pitch_range: int, noise_seed: int, options: int,
                lexicon_words: tuple[str, ...]) -> Synthesis:
    with _fresh_espeak(options) as (lib, native_rate):
        lib.espeak_ng_SetRandSeed(noise_seed)
        _libc.srand(noise_seed)
        if lib.espeak_SetVoiceByName(speaker.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {speaker!r}")
        for param, value in ((_espeakRATE, rate), (_espeakPITCH, pitch), (_espeakRANGE, pitch_range)):
            if lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise ValueError(f"espeak_SetParameter({param}, {value}) failed")
        _chunks.clear()
        _words.clear()
        _phonemes.clear()
        data = text.encode()
        err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _espeakCHARS_AUTO, None, None)
        if err != 0 or lib.espeak_Synchronize() != 0:
            raise RuntimeError(f"espeak_Synth failed ({err}) on {text!r}")
        audio = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        lexicon = {}
        for word in dict.fromkeys(lexicon_words):  # after the audio is made: it cannot change it
            buffer = ctypes.c_char_p(word.encode())
            names = lib.espeak_TextToPhonemes(ctypes.byref(buffer), _espeakCHARS_AUTO, ord(" ") << 8)
            lexicon[word] = [n.lstrip(_STRESS_MARKS) for n in (names or b"").decode("ascii", "replace").split()]
        return Synthesis(audio, list(_words), list(_phonemes), native_rate, lexicon)


# ----------------------------------------------------------------------------------------------------------
# resampling


@functools.lru_cache(maxsize=8)
def _sinc_kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> tuple[np.ndarray, int]:
    """Hann-windowed sinc kernels [new, 2 * width + orig] for the reduced ratio orig:new, and width."""
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    t = (-np.arange(new, dtype=np.float64)[:, None] / new + idx) * base_freq
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    sinc = np.where(t == 0, 1.0, np.sin(t) / np.where(t == 0, 1.0, t))
    return sinc * window * (base_freq / orig), width


@functools.lru_cache(maxsize=8)
def _polyphase(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The kernels' non-zero part: phase i only touches padded inputs k0[i] .. k0[i] + 2 * width of its frame.

    Returns (k0 [new], taps [new, 2 * width + 1], width)."""
    kernel, width = _sinc_kernel(orig, new, lowpass_filter_width, rolloff)
    k0 = (orig * np.arange(new)) // new
    cols = k0[:, None] + np.arange(2 * width + 1)
    taps = kernel[np.arange(new)[:, None], cols]
    # the window is zero outside that band (|t| >= lowpass_filter_width), so nothing is dropped
    assert np.isclose(np.abs(taps).sum(), np.abs(kernel).sum(), rtol=1e-12, atol=1e-12)
    return k0, taps, width


def resample(x: np.ndarray, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
             rolloff: float = 0.99) -> np.ndarray:
    """Band-limited resampling of a 1-D float signal (torchaudio's `sinc_interp_hann` method).

    torchaudio convolves the padded signal with `new` kernels of 2 * width + orig taps at stride `orig`; only
    2 * width + 1 of each kernel's taps are non-zero, so this gathers just those (no BLAS, ~20x fewer MACs)."""
    g = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // g, new_freq // g
    x = np.asarray(x, dtype=np.float64)
    if orig == new:
        return x.copy()
    k0, taps, width = _polyphase(orig, new, lowpass_filter_width, rolloff)
    padded = np.pad(x, (width, width + orig))
    n_out = math.ceil(new * len(x) / orig)
    frames = math.ceil(n_out / new)  # output j = frame * new + phase reads padded[frame * orig + k0[phase] + t]
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps.shape[1])
    start = (np.arange(frames) * orig)[:, None] + k0[None, :]  # [frames, new]
    return np.einsum("fnk,nk->fn", windows[start], taps).reshape(-1)[:n_out]


# ----------------------------------------------------------------------------------------------------------
# utterances with word timings


@dataclass
class Utterance:
    audio: np.ndarray  # int16 [n] at SAMPLE_RATE
    words: list[tuple[str, float, float]]  # (word, start s, end s), in spoken order
    speaker: str
    # (espeak phone name without stress marks, start s, end s, index of its word): every phone inside its word,
    # the word's phones tiling its span without gaps or overlaps
    phones: list[tuple[str, float, float, int]] = field(default_factory=list)
    # the same phones at espeak's own times (each ends where the next phoneme or pause starts), before they are
    # fitted to the word spans; for measuring how far the two timings disagree
    raw_phones: list[tuple[str, float, float, int]] = field(default_factory=list)


def _active_frames(audio: np.ndarray, frame: int, threshold_db: float = -35.0) -> np.ndarray:
    """bool [ceil(n / frame)]: frames whose RMS is within `threshold_db` of the loudest frame."""
    n = math.ceil(len(audio) / frame)
    padded = np.pad(audio.astype(np.float64), (0, n * frame - len(audio))).reshape(n, frame)
    rms = np.sqrt((padded**2).mean(1))
    return rms > rms.max() * 10 ** (threshold_db / 20) if rms.max() > 0 else np.zeros(n, bool)


def _token_onsets(tokens: list[str], starts: list[int], events, text: str, end_ms: float) -> np.ndarray:
    """Onset (ms) of every token from espeak's word events.

    espeak gives no event to some unstressed function words that it joins to the word before ("are" in
    "there are", "the" in "in the"); such a token gets a share of the joined segment proportional to its
    length in characters (a first token without an event starts at 0). An event that starts at no token is
    an error."""
    by_position = {starts[0]: 0, **{p: ms for p, _length, ms in events}}
    unknown = sorted(set(by_position) - set(starts))
    if unknown:
        raise RuntimeError(f"espeak word events at characters {sorted(by_position)} do not match the tokens at "
                           f"{starts} of {text!r}")
    evented = [i for i, s in enumerate(starts) if s in by_position]
    onsets = np.zeros(len(tokens))
    for j, i in enumerate(evented):  # spread each event's segment over the tokens joined to it
        k = evented[j + 1] if j + 1 < len(evented) else len(tokens)
        t0 = by_position[starts[i]]
        if k - i == 1:
            onsets[i] = t0
            continue
        t1 = by_position[starts[k]] if k < len(tokens) else end_ms
        chars = np.array([len(t) for t in tokens[i:k]], dtype=np.float64)
        onsets[i:k] = t0 + (t1 - t0) * np.concatenate([[0], np.cumsum(chars)[:-1]]) / chars.sum()
    return onsets


def _align_to_lexicon(spoken: list[str], lexicon: list[list[str]]) -> list[int]:
    """Which word each of a joined segment's phonemes belongs to.

    `spoken` are the segment's phoneme names as espeak said them; `lexicon[w]` the names of word w said alone.
    A Levenshtein alignment of `spoken` to the concatenated lexicon gives each matched or substituted phoneme
    its word; a phoneme espeak inserted (a linking r: "there [r] are") belongs to the word before it (the word
    after it at the start). Returns the word index of every spoken phoneme, non-decreasing."""
    owner = [w for w, names in enumerate(lexicon) for _ in names]
    ref = [n for names in lexicon for n in names]
    n, m = len(spoken), len(ref)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):  # a few phonemes: the plain dynamic programme
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j - 1] + (spoken[i - 1] != ref[j - 1]), cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    word: list[int | None] = [None] * n
    i, j = n, m
    while i > 0 and j > 0:
        if cost[i, j] == cost[i - 1, j - 1] + (spoken[i - 1] != ref[j - 1]):
            word[i - 1] = owner[j - 1]
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1  # inserted by espeak: filled in below
        else:
            j -= 1
    known = [w for w in word if w is not None]
    last = known[0] if known else 0
    for k, w in enumerate(word):
        last = w if w is not None else last
        word[k] = last
    return word  # type: ignore[return-value]


def _token_phones(tokens: list[str], starts: list[int], phonemes: list[tuple[int, int, str]],
                  lexicon: dict[str, list[str]], text: str, end_ms: float) -> list[tuple[str, float, float, int]]:
    """(name, start ms, end ms, token index) of every phone, at espeak's times.

    A phoneme ends where the next phoneme event (a pause included) starts, the last at `end_ms`; pauses
    (names starting with `_`) are dropped and stress marks removed. Phonemes carry the character position of
    their word event (1-based; a position in the gap before a token counts for that token); the phonemes of a word
    joined to the one before ("in the") are split between the two by `_align_to_lexicon`."""
    # a position inside a token is that token's; one in the spaces or punctuation before a token (espeak sometimes
    # points there after a comma) is the next token's
    token_ends = np.array([p + len(t) for p, t in zip(starts, tokens)])
    ends = [ms for _, ms, _ in phonemes[1:]] + [end_ms]
    phones: list[tuple[str, float, float, int]] = []
    for (pos, ms, name), end in zip(phonemes, ends):
        if name.startswith("_") or not name.strip(_STRESS_MARKS):
            continue
        token = min(int(np.searchsorted(token_ends, pos, side="right")), len(tokens) - 1)
        phones.append((name.lstrip(_STRESS_MARKS), float(ms), float(end), token))
    # a token with no phoneme of its own was joined to the last one before it that has some
    has = sorted({t for *_, t in phones})
    for j, t in enumerate(has):
        k = has[j + 1] if j + 1 < len(has) else len(tokens)
        if k - t > 1:
            idx = [q for q, p in enumerate(phones) if p[3] == t]
            words = _align_to_lexicon([phones[q][0] for q in idx], [lexicon.get(w, []) for w in tokens[t:k]])
            for q, w in zip(idx, words):
                phones[q] = (*phones[q][:3], t + w)
    return phones


def _fit_phones(phones: list[tuple[str, float, float, int]], spans: list[tuple[int, int]]):
    """Phone boundaries in whole ms fitted to the word spans: a word's first phone starts at the word's start,
    its last ends at the word's end, the boundaries between them stay at espeak's times (rounded) as far as the
    span allows (each phone keeps at least 1 ms when the word has room)."""
    out = []
    for w, (ws, we) in enumerate(spans):
        own = [p for p in phones if p[3] == w]
        n = len(own)
        if not n:
            continue
        inner = np.array([round(p[1]) for p in own[1:]], dtype=np.int64)
        if we - ws >= n:
            j = np.arange(1, n)
            inner = np.clip(inner, ws + j, we - (n - j))
            inner = np.maximum.accumulate(inner - j) + j  # strictly increasing, still inside the bounds
        else:  # more phones than ms: some get no duration
            inner = np.maximum.accumulate(np.clip(inner, ws, we))
        bounds = [ws, *inner.tolist(), we]
        out += [(p[0], bounds[k], bounds[k + 1], w) for k, p in enumerate(own)]
    return out


def speak(tokens: list[str], text: str, speaker: str, rate: int, pitch: int, pitch_range: int,
          peak: float = 0.8, noise_seed: int = 0, snr_db: float | None = 50.0) -> Utterance:
    """Speak `text` (the tokens joined by spaces, with optional punctuation) and time every token.

    Word starts come from espeak's word events; a word ends where the next one starts (the end of the audio
    for the last one). Both ends are then pulled in to the word's first and last non-silent 10 ms frames,
    so the pause at a comma is not counted as part of the word before it. The utterance is cut to 50 ms
    around its speech, scaled to the given peak amplitude and, unless `snr_db` is None, given a floor of
    white noise `snr_db` below the peak (espeak's pauses are digital zeros, which no microphone records).

    Phones come from espeak's phoneme events (`_token_phones`) and are fitted to the word spans (`_fit_phones`):
    `phones` tile each word exactly, `raw_phones` keep espeak's own times (both in seconds of the cut audio)."""
    starts = []  # 1-based character position of every token, as espeak reports it
    pos = 0
    for tok in tokens:
        at = text.find(tok, pos)
        if at < 0 or text[pos:at].strip(" ,"):
            raise ValueError(f"token {tok!r} is not next in {text!r}")
        pos = at
        starts.append(pos + 1)
        pos += len(tok)
    spoken = synthesize_with_phonemes(text, speaker, rate, pitch, pitch_range, noise_seed, tuple(tokens))
    audio, native = spoken.audio, spoken.rate
    onset_ms = _token_onsets(tokens, starts, spoken.words, text, 1000 * len(audio) / native)
    raw_phones = _token_phones(tokens, starts, spoken.phonemes, spoken.lexicon, text, 1000 * len(audio) / native)

    wave = resample(audio.astype(np.float64) / 32768.0, native, SAMPLE_RATE)
    frame = SAMPLE_RATE // 100
    active = _active_frames(wave, frame)
    if not active.any():
        raise RuntimeError(f"espeak produced silence for {text!r} with {speaker!r}")
    first, last = np.flatnonzero(active)[[0, -1]]
    ms = SAMPLE_RATE // 1000
    lo = max(0, first * frame - SAMPLE_RATE // 20)
    hi = (last + 1) * frame + SAMPLE_RATE // 20
    hi = lo + math.ceil((hi - lo) / ms) * ms  # a whole number of ms, so that times rounded to ms stay inside
    wave = np.pad(wave, (0, max(0, hi - len(wave))))[lo:hi]
    active = _active_frames(wave, frame)

    # word boundaries in samples of the cut audio, then in whole ms
    onset = onset_ms * SAMPLE_RATE / 1000 - lo
    bounds = np.clip(np.append(onset, len(wave)), 0, len(wave)).round().astype(int)
    total_ms = len(wave) // ms
    words, spans = [], []
    for i, tok in enumerate(tokens):
        a = min(bounds[i], len(wave) - 1)
        b = max(bounds[i + 1], a + 1)
        fa, fb = a // frame, b // frame  # frames from the one holding a to the last one wholly before b
        on = np.flatnonzero(active[fa:fb])
        if len(on):  # pull both ends in to the word's speech, staying inside [a, b]
            a, b = max(a, (fa + on[0]) * frame), min(b, (fa + on[-1] + 1) * frame)
        start = min(round(a / ms), total_ms - 1)
        end = min(max(round(b / ms), start + 1), total_ms)
        words.append((tok, start / 1000, end / 1000))
        spans.append((start, end))
    shift_ms = lo / ms  # espeak's ms -> ms of the cut audio
    raw_phones = [(name, a - shift_ms, b - shift_ms, w) for name, a, b, w in raw_phones]
    phones = [(name, a / 1000, b / 1000, w) for name, a, b, w in _fit_phones(raw_phones, spans)]
    raw_phones = [(name, round(a) / 1000, round(b) / 1000, w) for name, a, b, w in raw_phones]

    scaled = wave * (peak / max(np.abs(wave).max(), 1e-9))
    if snr_db is not None:
        scaled = scaled + np.random.default_rng(noise_seed).normal(0, peak * 10 ** (-snr_db / 20), len(scaled))
    pcm = np.clip(np.round(scaled * 32767), -32768, 32767).astype(np.int16)
    return Utterance(pcm, words, speaker, phones, raw_phones)
