"""Generate a SpokenScenes data set: images + masks, captions, espeak-ng speech with word timings, manifests.

    generate(root, train=..., val=..., test=..., seed=0, image_size=128, workers=None, overwrite=False,
             progress=True, captions_per_image=1) -> dict

Layout of `root` (paths in the manifests are relative to the base paths, which are relative to `root`):

    info.json                                   generator version, arguments, vocabularies, espeak-ng version;
                                                written last: its presence means the output is complete
    {train,val,test}.json                       Places-format manifests (splits with 0 pairs are not written)
    images/<letter>/<class>/ss_<split>_<i>.jpg  image_base_path = "images"
    masks/<letter>/<class>/ss_<split>_<i>_<k>.png   mask_base_path = "masks", one mask per object (0/255)
    wavs/<split>/<i // 1000>/ss_<split>_<i>.wav audio_base_path = "wavs", 16 kHz 16-bit PCM mono
                                                (ss_<split>_<i>_c<k>.wav with captions_per_image > 1)

A manifest entry:

    {"uttid": "<speaker>-ss_test_000007", "speaker": "en-gb-x-rp+f3", "asr_text": "a kitchen with a red star",
     "wav": "test/000/ss_test_000007.wav", "image": "k/kitchen/ss_test_000007.jpg",
     "words": [{"word": "a", "start": 0.05, "end": 0.11}, ...],
     "text_alignment": "0.050__A__0.110 0.118__KITCHEN__0.540 ...",
     "phone_alignment": "0.050__a#__0.110 0.118__k__0.196 0.196__I__0.262 ...",
     "objects": [{"name": "small red star", "colour": "red", "shape": "star", "size": "small",
                  "rgb": [224, 31, 25], "mask": "k/kitchen/ss_test_000007_0.png", "box": [x0, y0, x1, y1],
                  "word_index": [4, 5]}],
     "scene": "kitchen", "scene_word_index": [1]}

`box` is in pixels with x1, y1 exclusive; `word_index` lists the positions in `words` of the words that name
the object (colour, shape and, when spoken, size; empty when the caption does not mention it);
`scene_word_index` the same for the scene. `text_alignment` holds the same word timings in the format of the
aligned Places and SpokenCOCO manifests (upper case, as theirs; `datamodules.alignment.parse_alignment` reads
both), `phone_alignment` the phones of espeak's phoneme events (espeak names without stress marks), each phone
inside its word and the word's phones without gaps or overlaps (`speech.speak`).

Every pair draws from its own random generator, seeded by (seed, split, index): the output is the same whatever
the number of workers, and the test split of a seed is the same whatever the train and val counts.

Restartable: while it runs, `root` holds `.spokenscenes-incomplete.json` (the arguments); each split's manifest is
written (atomically) once all its pairs are on disk, `info.json` last. `check_dataset` says what is missing or
different; `generate(..., resume=True)` keeps the complete splits of an interrupted run with the same arguments
and regenerates the rest (byte-identical, since every pair is a function of its seed).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image
from tqdm import tqdm

from ..alignment import format_alignment
from ..manifest import manifest_text
from .captions import make_caption
from .scenes import COLOURS, SCENE_NAMES, SHAPES, SIZES, draw_scene, place_path
from .speech import SAMPLE_RATE, SPEAKERS, espeak_version, speak

VERSION = "1.1"  # 1.1: text_alignment and phone_alignment (images and wavs unchanged)
SPLITS = ("train", "val", "test")
_SPLIT_ID = {s: i for i, s in enumerate(SPLITS)}
MARKER = ".spokenscenes-incomplete.json"  # present while a generation runs (or was interrupted)
_OUTPUTS = ("images", "masks", "wavs", "info.json", MARKER, *(f"{s}.json" for s in SPLITS))
RATE_RANGE = (150, 230)  # espeak words per minute
PITCH_RANGE = (25, 75)  # espeak base pitch, 0-100
INTONATION_RANGE = (20, 80)  # espeak pitch range, 0-100
PEAK_RANGE = (0.3, 0.9)  # peak amplitude of the written wav
SNR_RANGE = (40.0, 60.0)  # white-noise floor, dB below the peak


def scene_of_image(image: str) -> str:
    """Place class of a Places-style relative image path `<letter>/<class>/...`."""
    return image.split("/")[1]


def _make_pair(job: tuple[str, str, int, int, int, int, int]) -> tuple[dict, int]:
    """Generate and write caption `c` of image `index` of `split` (the image with caption 0); returns its
    manifest entry and the bytes written."""
    root, split, index, seed, image_size, c, captions_per_image = job
    root = Path(root)
    stem = f"ss_{split}_{index:06d}"
    name = stem if captions_per_image == 1 else f"{stem}_c{c}"  # of the wav and the uttid
    image_rng, caption_rng, voice_rng = map(np.random.default_rng,
                                            np.random.SeedSequence([seed, _SPLIT_ID[split], index]).spawn(3))
    if c > 0:  # caption 0 keeps the generators of the one-caption data set: its pairs are the same
        caption_rng, voice_rng = map(np.random.default_rng,
                                     np.random.SeedSequence([seed, _SPLIT_ID[split], index, c]).spawn(2))
    # Scene classes cycle with the index, so every split is balanced and any 20 consecutive pairs hold every
    # class (a small training split still covers the classes of val/test for the place warm-up).
    scene = draw_scene(image_rng, image_size, scene=SCENE_NAMES[index % len(SCENE_NAMES)])
    caption = make_caption(scene.name, scene.objects, caption_rng)
    speaker = SPEAKERS[voice_rng.integers(len(SPEAKERS))]
    rate = int(voice_rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
    pitch = int(voice_rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
    intonation = int(voice_rng.integers(INTONATION_RANGE[0], INTONATION_RANGE[1] + 1))
    utterance = speak(caption.tokens, caption.text, speaker, rate, pitch, intonation,
                      peak=float(voice_rng.uniform(*PEAK_RANGE)), noise_seed=int(voice_rng.integers(2**31)),
                      snr_db=float(voice_rng.uniform(*SNR_RANGE)))

    files = []
    image = place_path(scene.name, f"{stem}.jpg")
    if c == 0:
        files.append(root / "images" / image)
        files[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene.image).save(files[-1], quality=90)
    objects = []
    for k, (obj, word_index) in enumerate(zip(scene.objects, caption.object_index)):
        mask = place_path(scene.name, f"{stem}_{k}.png")
        if c == 0:
            files.append(root / "masks" / mask)
            files[-1].parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(obj.mask.astype(np.uint8) * 255).save(files[-1], optimize=True)
        objects.append({"name": f"{obj.size} {obj.colour} {obj.shape}", "colour": obj.colour, "shape": obj.shape,
                        "size": obj.size, "rgb": list(obj.rgb), "mask": mask, "box": list(obj.box),
                        "word_index": word_index})
    wav = f"{split}/{index // 1000:03d}/{name}.wav"
    files.append(root / "wavs" / wav)
    files[-1].parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(files[-1], utterance.audio, SAMPLE_RATE, subtype="PCM_16")

    entry = {
        "uttid": f"{speaker}-{name}",
        "speaker": speaker,
        "asr_text": caption.text,
        "wav": wav,
        "image": image,
        "words": [{"word": w, "start": float(a), "end": float(b)} for w, a, b in utterance.words],
        "text_alignment": format_alignment([(a, b, w.upper()) for w, a, b in utterance.words]),
        "phone_alignment": format_alignment([(a, b, p) for p, a, b, _ in utterance.phones]),
        "objects": objects,
        "scene": scene.name,
        "scene_word_index": caption.scene_index,
    }
    return entry, sum(f.stat().st_size for f in files)


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through `<path>.tmp` and a rename: a reader sees all of it or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_manifest(path: Path, entries: list[dict]) -> int:
    """Places-format JSON with one entry per line (valid JSON, readable diffs); returns the bytes written."""
    text = manifest_text({"image_base_path": "images", "audio_base_path": "wavs", "mask_base_path": "masks"},
                         entries)
    _write_atomic(path, text)
    return len(text.encode())


def _split_problem(root: Path, split: str, n: int) -> str | None:
    """Why split `split` of `root` is not complete with `n` pairs (its manifest, and every file it names)."""
    if n == 0:
        return None
    path = root / f"{split}.json"
    try:
        entries = json.loads(path.read_text())["data"]
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path.name} is unreadable"
    if len(entries) != n:
        return f"{path.name} has {len(entries)} pairs, not {n}"
    for e in entries:
        files = [root / "wavs" / e["wav"], root / "images" / e["image"]]
        files += [root / "masks" / o["mask"] for o in e.get("objects", ())]
        for f in files:
            if not f.is_file() or f.stat().st_size == 0:
                return f"{split}: {f.relative_to(root)} is missing or empty"
    return None


def check_dataset(root, train: int = 0, val: int = 0, test: int = 0, seed: int = 0,
                  image_size: int = 128, captions_per_image: int = 1) -> list[str]:
    """What keeps `root` from being a complete SpokenScenes output of these arguments (empty list: complete).

    Checks `info.json` (written last, so an interrupted generation has none), its arguments, each manifest's
    pair count and that every wav, image and mask it names exists and is not empty."""
    root = Path(root)
    try:
        info = json.loads((root / "info.json").read_text())
    except FileNotFoundError:
        interrupted = " (an earlier generation was interrupted)" if (root / MARKER).exists() else ""
        return [f"{root / 'info.json'} is missing{interrupted}"]
    except (OSError, ValueError) as err:
        return [f"{root / 'info.json'} is unreadable ({err})"]
    if isinstance(info, dict) and info.get("version") != VERSION:
        return [f"{root} holds SpokenScenes {info.get('version')}, not {VERSION} (1.1 added the word and phone "
                "alignments): generate it again"]
    want = {"train": train, "val": val, "test": test, "seed": seed, "image_size": image_size,
            "captions_per_image": captions_per_image}
    have = info.get("args", {}) if isinstance(info, dict) else {}
    have = {"captions_per_image": 1, **have}  # absent for 1 (see _info)
    differ = [f"{k} {have.get(k)} (wanted {v})" for k, v in want.items() if have.get(k) != v]
    if differ:
        return [f"{root} holds SpokenScenes generated with other arguments: {', '.join(differ)}"]
    return [p for p in (_split_problem(root, s, want[s] * captions_per_image) for s in SPLITS) if p]


def _check_args(train, val, test, seed, image_size, workers, captions_per_image=1) -> None:
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    for name, value in (("train", train), ("val", val), ("test", test)):
        if not is_int(value) or value < 0:
            raise ValueError(f"--{name} must be a count >= 0, got {value!r}")
    if train + val + test == 0:
        raise ValueError("nothing to generate: --train, --val and --test are all 0")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {seed!r}")
    if not is_int(image_size) or not 32 <= image_size <= 1024:
        raise ValueError(f"--image-size must be an integer in [32, 1024], got {image_size!r}")
    if workers is not None and (not is_int(workers) or workers < 1):
        raise ValueError(f"--workers must be >= 1, got {workers!r}")
    if not is_int(captions_per_image) or captions_per_image < 1:
        raise ValueError(f"--captions-per-image must be an integer >= 1, got {captions_per_image!r}")


def _prepare_root(root: Path, overwrite: bool) -> None:
    """Make `root` an empty, writable folder; with `overwrite`, clear a previous SpokenScenes output."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"--root {root}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise ValueError(f"--root {root}: exists and is not empty "
                             "(pass --overwrite to replace a SpokenScenes folder)")
        ours = False
        for marker in ("info.json", MARKER):  # a finished or an interrupted generation
            try:
                ours = ours or json.loads((root / marker).read_text()).get("generator") == "spokenscenes"
            except (OSError, ValueError, AttributeError):
                pass
        if not ours:  # never delete a folder that we did not make
            raise ValueError(f"--root {root}: refusing to overwrite, it holds no SpokenScenes info.json")
        for name in _OUTPUTS:
            path = root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".spokenscenes-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--root {root}: cannot write there ({err.strerror or err})") from None


def _info(counts: dict, seed: int, image_size: int, captions_per_image: int = 1) -> dict:
    args = {**counts, "seed": seed, "image_size": image_size}
    if captions_per_image != 1:  # absent for 1: a one-caption data set stays byte-identical to earlier versions
        args["captions_per_image"] = captions_per_image
    return {
        "generator": "spokenscenes",
        "version": VERSION,
        "args": args,
        "sample_rate": SAMPLE_RATE,
        "espeak_ng": espeak_version(),
        "scenes": list(SCENE_NAMES),
        "shapes": list(SHAPES),
        "colours": {name: list(rgb) for name, rgb in COLOURS.items()},
        "sizes": {name: list(r) for name, r in SIZES.items()},
        "speakers": list(SPEAKERS),
        "speech": {"rate_wpm": RATE_RANGE, "pitch": PITCH_RANGE, "pitch_range": INTONATION_RANGE,
                   "peak": PEAK_RANGE, "noise_db_below_peak": SNR_RANGE},
    }


def _interrupted_with(root: Path, info: dict) -> bool:
    """Whether `root` holds an interrupted generation (or a finished one) of exactly these arguments and version."""
    for marker in (MARKER, "info.json"):
        try:
            found = json.loads((root / marker).read_text())
            if found.get("args") == info["args"] and found.get("version") == info["version"]:
                return True
        except (OSError, ValueError, AttributeError):
            pass
    return False


def generate(root, train: int = 0, val: int = 0, test: int = 0, seed: int = 0, image_size: int = 128,
             workers: int | None = None, overwrite: bool = False, progress: bool = True,
             captions_per_image: int = 1, resume: bool = False) -> dict:
    """Write a SpokenScenes data set under `root` (see the module doc) and return what was made and how fast.

    `train`, `val`, `test` count images; each gets `captions_per_image` spoken captions (other words, voice and
    timing; caption 0 is the one a one-caption data set has), which follow each other in the manifest.

    `resume=True`: when `root` holds a generation of the same arguments (interrupted or not), keep its complete
    splits and regenerate the others; otherwise start over as `overwrite` does.

    Returns {"root", "counts", "manifests" (split -> path), "kept" (splits kept from before), "seconds",
    "pairs_per_second", "megabytes" (written now), "mb_per_1000_pairs"}. Bad arguments raise ValueError with a
    message naming the argument."""
    _check_args(train, val, test, seed, image_size, workers, captions_per_image)
    root = Path(root)
    counts = {"train": int(train), "val": int(val), "test": int(test)}
    K = int(captions_per_image)
    pairs = {split: n * K for split, n in counts.items()}
    info = _info(counts, seed, image_size, K)
    kept = []
    if resume and root.is_dir() and _interrupted_with(root, info):
        kept = [s for s in SPLITS if pairs[s] and _split_problem(root, s, pairs[s]) is None]
    else:
        _prepare_root(root, overwrite or resume)
    (root / "info.json").unlink(missing_ok=True)  # written again last, once everything is there
    _write_atomic(root / MARKER, json.dumps(info, indent=1) + "\n")

    jobs = [(str(root), split, i, int(seed), int(image_size), c, K) for split in SPLITS if split not in kept
            for i in range(counts[split]) for c in range(K)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="SpokenScenes", unit="pair", disable=not progress, smoothing=0.1)
    pending = [s for s in SPLITS if s not in kept and counts[s]]
    results, total_bytes = [], 0

    def collect(result: tuple[dict, int]) -> None:
        # Each split's manifest as soon as its last pair is on disk (jobs come in split order).
        nonlocal total_bytes
        results.append(result)
        total_bytes += result[1]
        bar.update()
        end = 0
        for split in pending:
            end += pairs[split]
            if len(results) == end:
                entries = [entry for entry, _ in results[end - pairs[split]: end]]
                total_bytes += _write_manifest(root / f"{split}.json", entries)

    if workers == 1:
        for job in jobs:
            collect(_make_pair(job))
    elif jobs:
        # fork where there is one: workers start at once, without importing the (heavy) datamodules package
        # again; each utterance loads its own espeak anyway (speech.py)
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            for result in pool.imap(_make_pair, jobs, chunksize=max(1, min(8, len(jobs) // (4 * workers)))):
                collect(result)
    bar.close()

    manifests = {split: str(root / f"{split}.json") for split in SPLITS if counts[split]}
    _write_atomic(root / "info.json", json.dumps(info, indent=1) + "\n")  # last: the output is complete
    (root / MARKER).unlink()
    seconds = time.perf_counter() - start
    return {
        "root": str(root),
        "counts": counts,
        "manifests": manifests,
        "kept": kept,
        "seconds": round(seconds, 3),
        "pairs_per_second": round(len(jobs) / seconds, 2) if jobs else 0.0,
        "megabytes": round(total_bytes / 1e6, 3),
        "mb_per_1000_pairs": round(total_bytes / 1e6 / len(jobs) * 1000, 2) if jobs else 0.0,
    }
