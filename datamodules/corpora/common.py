"""What every corpus preparer shares: the split it hands over, the file check, the summary and the writer.

A preparer (`flickr8k.py`, `spokencoco.py`, `places.py`) reads a corpus' own files and returns `Split`s: items
with `wav` (relative to `audio_base`), `image` (relative to `image_base`), `uttid`, `speaker`, `asr_text`,
`image_id` and, where the corpus has word alignments, `text_alignment`. `check_files` finds what the corpus lists
but the disk lacks and reads the wav headers (for the hours, without decoding); `write_manifest` writes a
Places-format manifest (the format `datamodules.manifest` reads) with base paths relative to the manifest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import soundfile as sf
from tqdm import tqdm

from ..manifest import manifest_text


class PrepareError(ValueError):
    """A corpus that cannot be prepared: a missing or malformed file, or listed files missing on disk. The
    message names the file (and line or item) and the reason."""


@dataclass
class Split:
    """One output manifest: `name` (file stem, e.g. "train" or "dev_seen_2020"), its items and base folders."""

    name: str
    items: list[dict]
    audio_base: str
    image_base: str
    source: str = ""  # the corpus file(s) it was read from, for the summary
    missing: list[tuple[int, str, str]] = field(default_factory=list)  # (item, kind, path)
    bad_headers: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0


def _id_order(image_id: str) -> tuple:
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)  # numeric ids in numeric order


def sort_items(items: list[dict], caption_number: str = "_k") -> list[dict]:
    """Items in a deterministic order: by image id, then caption number (the `caption_number` key, dropped).
    The captions of one image follow each other, so an evaluation batch runs the image net once for them."""
    items = sorted(items, key=lambda it: (_id_order(it["image_id"]), it[caption_number]))
    for it in items:
        del it[caption_number]
    return items


def check_files(split: Split, progress: bool = True) -> Split:
    """Record the split's wavs and images missing on disk and the seconds of audio (from the wav headers)."""
    split.missing, split.bad_headers, split.seconds = [], [], 0.0
    seen_images: dict[str, bool] = {}
    bar = tqdm(split.items, desc=f"{split.name}: checking files", unit="caption", disable=not progress,
               leave=False, mininterval=0.5)
    for i, item in enumerate(bar):
        wav = os.path.join(split.audio_base, item["wav"])
        try:
            info = sf.info(wav)
            split.seconds += info.frames / info.samplerate
        except Exception as err:  # any unreadable header is reported, not fatal here
            if os.path.exists(wav):
                split.bad_headers.append((wav, str(err).strip().splitlines()[-1] if str(err).strip() else "?"))
            else:
                split.missing.append((i, "wav", wav))
        image = item["image"]
        if image not in seen_images:
            seen_images[image] = os.path.exists(os.path.join(split.image_base, image))
        if not seen_images[image]:
            split.missing.append((i, "image", os.path.join(split.image_base, image)))
    return split


def drop_missing(split: Split) -> Split:
    """Leave out the items whose wav or image is missing (`--on-missing skip`)."""
    bad = {i for i, _, _ in split.missing}
    split.items = [it for i, it in enumerate(split.items) if i not in bad]
    return split


def summary_row(split: Split) -> dict:
    items = split.items
    return {
        "split": split.name,
        "captions": len(items),
        "images": len({it["image_id"] for it in items}),
        "speakers": len({it["speaker"] for it in items}),
        "hours": round(split.seconds / 3600, 4),
        "missing": len(split.missing),
        "source": split.source,
    }


def format_table(rows: list[dict]) -> str:
    """The summary as an aligned text table (one row per split)."""
    head = ("split", "captions", "images", "speakers", "hours", "missing")
    cells = [head] + [(r["split"], f"{r['captions']:,}", f"{r['images']:,}", f"{r['speakers']:,}",
                       f"{r['hours']:.2f}" if r["hours"] >= 1 else f"{r['hours']:.4f}", f"{r['missing']:,}")
                      for r in rows]
    widths = [max(len(c[j]) for c in cells) for j in range(len(head))]
    lines = ["  ".join(c[j].ljust(widths[j]) if j == 0 else c[j].rjust(widths[j]) for j in range(len(head)))
             for c in cells]
    return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:])


def missing_report(splits: list[Split], limit: int = 5) -> str:
    """The first missing files of each split, for the summary and the --on-missing error."""
    lines = []
    for split in splits:
        if split.missing:
            lines.append(f"{split.name}: {len(split.missing)} missing file(s), e.g.")
            lines += [f"  {kind} {path}" for _, kind, path in split.missing[:limit]]
    return "\n".join(lines)


def write_manifest(split: Split, out_dir: str) -> str:
    """Write `<out_dir>/<name>.json` (Places format, one item per line) with base paths relative to it."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{split.name}.json")
    top = {
        "image_base_path": os.path.relpath(os.path.abspath(split.image_base), os.path.abspath(out_dir)),
        "audio_base_path": os.path.relpath(os.path.abspath(split.audio_base), os.path.abspath(out_dir)),
    }
    with open(path, "w", encoding="utf-8") as f:
        f.write(manifest_text(top, split.items, ensure_ascii=False))
    return path


def read_json(path: str) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise PrepareError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PrepareError(f"{path}: not valid JSON ({err})") from None


def read_lines(path: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-empty lines of a text file."""
    try:
        with open(path, encoding="utf-8") as f:
            return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
    except FileNotFoundError:
        raise PrepareError(f"{path}: not found") from None
    except UnicodeDecodeError as err:
        raise PrepareError(f"{path}: not UTF-8 text ({err})") from None


def first_existing(folder: str, names: tuple[str, ...], what: str) -> str:
    """The first of `names` under `folder` that exists; PrepareError listing every candidate otherwise."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    tried = ", ".join(os.path.join(folder, n) for n in names)
    raise PrepareError(f"no {what} found: tried {tried}")
