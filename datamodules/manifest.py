"""Places-format manifests: parsing, validation, image ids and place labels.

A manifest is the JSON file the official loaders read (reference: dharwath/DAVEnet-pytorch
`dataloaders/image_caption_dataset.py`; format in the Places Audio Caption distribution, `metadata/train.json`):

    {"image_base_path": ".../images",          # relative paths are relative to the manifest's folder
     "audio_base_path": ".../PlacesAudio_400k_distro",
     "data": [{"uttid": "A2WQ...-GSUN_4213...", "speaker": "A2WQ...", "asr_text": "photos of ...",
               "wav": "wavs/296/utterance_377328.wav", "image": "r/runway/gsun_4213....jpg", ...}, ...]}

Required: the three top-level keys and, per item, `wav` and `image` (what the loaders use). `uttid`, `speaker`
and `asr_text` are kept when present (empty strings otherwise); other item keys are allowed and ignored, except two
optional ones that corpora preparers write (`python -m datamodules.prepare`):

- `image_id`: the corpus' own image id (a string, e.g. SpokenCOCO `"325114"`). Captions are grouped into images by
  it when present, else by the image path; one id must always name the same image path.
- `text_alignment`: word timings `"start__WORD__end ..."` (seconds), kept as the string (`Manifest.text_alignment`).

Place labels come from the image path, Places-205 convention `<letter>/<class>[/<subclass>]/<file>`:
`r/runway/gsun_x.jpg` -> `runway`, `a/apartment_building/outdoor/x.jpg` -> `apartment_building/outdoor`.
Subclasses are kept as part of the label (Places-205 counts `apartment_building/outdoor` as its own class);
any folders before the letter folder are ignored (`images256/r/runway/x.jpg`, `/mnt/d/places/r/runway/x.jpg`):
the letter folder is the last one-letter folder followed by a class that starts with that letter.

Checks beyond the format, as warnings (`ManifestWarning`): duplicate uttids (search results and tables name
captions by uttid). `asr_text: null` (or a missing key) is an empty caption text, never the string "None".
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import ManifestError, ManifestWarning

REQUIRED_TOP_KEYS = ("image_base_path", "audio_base_path", "data")
REQUIRED_ITEM_KEYS = ("wav", "image")
OPTIONAL_ITEM_KEYS = ("uttid", "speaker", "asr_text")


def _bytes_array(strings: list[str]) -> np.ndarray:
    # One numpy byte-string array instead of a list of Python str: DataLoader workers forked from the main
    # process would otherwise copy every page the list touches (refcount writes), 400k items per worker.
    return np.array([s.encode("utf-8") for s in strings], dtype=np.bytes_)


def place_label(image_path: str) -> str:
    """Scene class of a Places image path: `r/runway/x.jpg` -> `runway`; `a/apartment_building/outdoor/x.jpg` ->
    `apartment_building/outdoor`. Raises ValueError when the path does not follow `<letter>/<class>[/...]/<file>`."""
    parts = [p for p in image_path.replace("\\", "/").split("/") if p not in ("", ".")]
    # The last one-letter folder whose next folder (the class) starts with that letter: a one-letter folder
    # of the mount (`/mnt/d/...`) is not the Places letter folder.
    letters = [k for k in range(len(parts) - 2) if len(parts[k]) == 1]
    for k in reversed(letters):
        if parts[k + 1][:1].lower() == parts[k].lower():
            return "/".join(parts[k + 1 : -1])
    if letters:  # a layout whose class names do not start with their letter
        return "/".join(parts[letters[-1] + 1 : -1])
    raise ValueError(
        f"cannot read a place label from image path {image_path!r}: expected the Places layout "
        "<letter>/<class>[/<subclass>]/<file>, e.g. r/runway/x.jpg"
    )


@dataclass
class Manifest:
    """A parsed, validated Places-format manifest.

    Paths are stored relative to the two base folders (resolved to absolute folders here); use `wav_path(i)` and
    `image_path(i)`. `image_id[i]` numbers the distinct images of this manifest, so captions that share an image
    share an id: an image is the item's `image_id` string when it has one (`image_keys`), else its image path.
    """

    path: str
    audio_base: str
    image_base: str
    wavs: np.ndarray  # [N] bytes, relative to audio_base
    images: np.ndarray  # [N] bytes, relative to image_base
    uttids: np.ndarray
    speakers: np.ndarray
    texts: np.ndarray  # [N] bytes: asr_text (or text), "" when absent
    image_keys: np.ndarray | None = None  # [N] bytes: the item's image_id string, "" when absent; None: no item has one
    text_alignments: np.ndarray | None = None  # [N] bytes: text_alignment, "" when absent; None: no item has one
    image_id: np.ndarray = field(init=False)  # [N] int64

    def __post_init__(self) -> None:
        groups = self.images
        if self.image_keys is not None:
            # "k:" and "p:" keep an id from ever meeting a path of the same spelling.
            keyed = np.char.add(b"k:", self.image_keys)
            groups = np.where(self.image_keys != b"", keyed, np.char.add(b"p:", self.images))
        _, inverse = np.unique(groups, return_inverse=True)
        self.image_id = inverse.astype(np.int64).reshape(-1)
        if self.image_keys is not None:
            self._check_one_path_per_image_id()

    def _check_one_path_per_image_id(self) -> None:
        """Image features are computed once per image id, so an id naming two image files would be silently wrong."""
        order = np.lexsort((self.images, self.image_id))
        ids, paths = self.image_id[order], self.images[order]
        clash = np.flatnonzero((ids[1:] == ids[:-1]) & (paths[1:] != paths[:-1]))
        if clash.size:
            a, b = int(order[clash[0]]), int(order[clash[0] + 1])
            raise ManifestError(
                f"manifest {self.path}: items {min(a, b)} and {max(a, b)} have the same image_id "
                f"{self.image_keys[a].decode('utf-8')!r} but different images "
                f"({self.images[a].decode('utf-8')!r}, {self.images[b].decode('utf-8')!r})"
            )

    def __len__(self) -> int:
        return len(self.wavs)

    def wav_path(self, i: int) -> str:
        return os.path.join(self.audio_base, self.wavs[i].decode("utf-8"))

    def image_path(self, i: int) -> str:
        return os.path.join(self.image_base, self.images[i].decode("utf-8"))

    def describe(self, i: int) -> dict:
        """Item i for people: index, uttid, speaker, caption text, wav and image paths (as in the manifest)."""
        return {
            "index": int(i),
            "uttid": self.uttids[i].decode("utf-8"),
            "speaker": self.speakers[i].decode("utf-8"),
            "text": self.texts[i].decode("utf-8"),
            "wav": self.wavs[i].decode("utf-8"),
            "image": self.images[i].decode("utf-8"),
        }

    def text_alignment(self, i: int) -> str | None:
        """The `text_alignment` string of item i (`"start__WORD__end ..."`, seconds), None when it has none."""
        if self.text_alignments is None or not self.text_alignments[i]:
            return None
        return self.text_alignments[i].decode("utf-8")

    def wav_paths(self) -> list[str]:
        return [self.wav_path(i) for i in range(len(self))]

    def place_names(self) -> np.ndarray:
        """Place label of every item ([N] str array); ManifestError naming the item if a path does not parse."""
        unique, inverse = np.unique(self.images, return_inverse=True)
        names = []
        for u in unique:  # one parse per distinct image, not per caption
            try:
                names.append(place_label(u.decode("utf-8")))
            except ValueError as err:
                item = int(np.flatnonzero(self.images == u)[0])
                raise ManifestError(f"{self.path}: item {item}: {err}") from None
        return np.array(names, dtype=object)[inverse.reshape(-1)]

    def missing_files(self, limit: int | None = None) -> list[tuple[int, str, str]]:
        """(item, kind, path) of wavs and images that do not exist (a cheap os.path.exists per file)."""
        missing = []
        seen_images: dict[bytes, bool] = {}
        for i in range(len(self)):
            if not os.path.exists(self.wav_path(i)):
                missing.append((i, "wav", self.wav_path(i)))
            rel = self.images[i]
            if rel not in seen_images:
                seen_images[rel] = os.path.exists(self.image_path(i))
            if not seen_images[rel]:
                missing.append((i, "image", self.image_path(i)))
            if limit is not None and len(missing) >= limit:
                break
        return missing


def manifest_text(top: dict, items: list[dict], ensure_ascii: bool = True) -> str:
    """A Places-format manifest as written by this project's generators: the top-level keys ``top``, then
    ``"data"`` with one item per line (valid JSON, readable diffs)."""
    head = json.dumps(top)
    lines = [head[:-1] + ', "data": [']
    lines += [json.dumps(it, ensure_ascii=ensure_ascii) + ("," if i < len(items) - 1 else "")
              for i, it in enumerate(items)]
    lines.append("]}\n")
    return "\n".join(lines)


def read_manifest_json(path: str | os.PathLike) -> tuple[list[dict], dict]:
    """The validated JSON of a Places-format manifest: its items and its other top-level keys.

    Items are the objects of ``data`` as written (each with non-empty ``wav`` and ``image`` strings; other keys,
    such as SpokenScenes' ``words`` and ``objects``, are kept). The top-level dict holds every key but ``data``:
    ``image_base_path``, ``audio_base_path`` and any others (``mask_base_path``), as written; ``resolve_path``
    turns them into paths. Raises ManifestError naming the manifest, the key and the item.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"manifest {path} is not valid JSON: {err}") from None
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as err:
        raise ManifestError(f"cannot read manifest {path}: {err}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"manifest {path}: expected a JSON object with keys {list(REQUIRED_TOP_KEYS)}, "
                            f"got {type(raw).__name__}")
    for key in REQUIRED_TOP_KEYS:
        if key not in raw:
            raise ManifestError(f"manifest {path}: missing required key {key!r}")
    for key in ("image_base_path", "audio_base_path"):
        if not isinstance(raw[key], str):
            raise ManifestError(f"manifest {path}: {key!r} must be a string, got {type(raw[key]).__name__}")
    data = raw.pop("data")
    if not isinstance(data, list):
        raise ManifestError(f"manifest {path}: 'data' must be a list of items, got {type(data).__name__}")
    if not data:
        raise ManifestError(f"manifest {path}: 'data' is empty (no items)")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ManifestError(f"manifest {path}: item {i} must be an object, got {type(item).__name__}")
        for key in REQUIRED_ITEM_KEYS:
            value = item.get(key)
            if value is None:
                raise ManifestError(f"manifest {path}: item {i} is missing required key {key!r}")
            if not isinstance(value, str) or not value:
                raise ManifestError(f"manifest {path}: item {i}: {key!r} must be a non-empty string, got {value!r}")
    return data, raw


def resolve_path(manifest: str | os.PathLike, value: str) -> str:
    """A path written in a manifest (a base path): ``~`` expanded, relative paths taken from the manifest's folder."""
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(manifest))), os.path.expanduser(value))


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate a Places-format manifest. Raises ManifestError naming the manifest, the key and the item."""
    path = os.path.abspath(os.fspath(path))
    data, top = read_manifest_json(path)
    columns: dict[str, list[str]] = {k: [] for k in REQUIRED_ITEM_KEYS + OPTIONAL_ITEM_KEYS}
    grouping: dict[str, list[str]] = {"image_id": [], "text_alignment": []}
    for i, item in enumerate(data):
        for key in REQUIRED_ITEM_KEYS:
            columns[key].append(item[key])
        for key in OPTIONAL_ITEM_KEYS:
            value = item.get(key)
            columns[key].append("" if value is None else str(value))
        # Places manifests carry Google ASR output as asr_text; some others have a plain text key. null is "".
        text = item.get("asr_text") if item.get("asr_text") is not None else item.get("text")
        columns["asr_text"][-1] = "" if text is None else str(text)
        for key, values in grouping.items():
            value = item.get(key)
            if value is not None and not isinstance(value, str):
                raise ManifestError(f"manifest {path}: item {i}: {key!r} must be a string, got {value!r}")
            values.append(value or "")
    _warn_duplicate_uttids(path, columns["uttid"])

    return Manifest(
        path=path,
        audio_base=resolve_path(path, top["audio_base_path"]),
        image_base=resolve_path(path, top["image_base_path"]),
        wavs=_bytes_array(columns["wav"]),
        images=_bytes_array(columns["image"]),
        uttids=_bytes_array(columns["uttid"]),
        speakers=_bytes_array(columns["speaker"]),
        texts=_bytes_array(columns["asr_text"]),
        image_keys=_bytes_array(grouping["image_id"]) if any(grouping["image_id"]) else None,
        text_alignments=_bytes_array(grouping["text_alignment"]) if any(grouping["text_alignment"]) else None,
    )


def _warn_duplicate_uttids(path: str, uttids: list[str]) -> None:
    seen: dict[str, int] = {}
    duplicates = []
    for i, uttid in enumerate(uttids):
        if uttid and uttid in seen:
            duplicates.append((uttid, seen[uttid], i))
        seen.setdefault(uttid, i)
    if duplicates:
        uttid, first, again = duplicates[0]
        warnings.warn(f"manifest {path}: {len(duplicates)} duplicate uttid(s), e.g. {uttid!r} (items {first} and "
                      f"{again}); search results and W&B tables name captions by uttid", ManifestWarning,
                      stacklevel=3)


def build_label_map(names) -> dict[str, int]:
    """Sorted distinct class names -> ids 0..C-1."""
    return {name: i for i, name in enumerate(sorted(set(names)))}


def place_ids(names: np.ndarray, label_map: dict[str, int], manifest: str = "") -> np.ndarray:
    """Map place names to ids; ValueError naming the class and the manifest for a class not in `label_map`."""
    unique, inverse = np.unique(names.astype(str), return_inverse=True)
    unknown = [u for u in unique if u not in label_map]
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 5 else "")
        raise ValueError(
            f"place class(es) {shown} of manifest {manifest or '?'} are not in the label map built from the "
            f"training manifest ({len(label_map)} classes); every val/test/predict class must occur in training"
        )
    ids = np.array([label_map[u] for u in unique], dtype=np.int64)
    return ids[inverse.reshape(-1)]
