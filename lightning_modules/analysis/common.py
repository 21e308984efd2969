"""What the analysis commands share: manifests and their alignments, the checkpoint, one pass of the audio net over
a manifest (every layer's frames, VQ codes), k-means units, user-supplied units and boundaries, tables, reports.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from datamodules import PlacesAudioDataset
from datamodules.alignment import item_alignment, item_id
from datamodules.manifest import read_manifest_json, resolve_path
from datamodules.places_audio import PlacesAudioCollate

from ..checkpoints import load_retrieval_checkpoint
from ..core.units.features import (
    assign,
    frame_times,
    kmeans,
    layer_names,
    layer_outputs,
    position_spf,
    resolve_layer,
)
from ..core.units.word_detection import frame_grid

Segment = tuple[float, float, str]


# ---- manifests -------------------------------------------------------------------------------------------------
def checkpoint_image_size(ckpt: dict, given: int | None) -> int:
    """The image side to evaluate at: ``given``, else the one the checkpoint's datamodule trained with, else 224."""
    if given is not None:
        return given
    return int((ckpt.get("datamodule_hyper_parameters") or {}).get("image_size") or 224)


def read_manifest_entries(path: str | os.PathLike) -> tuple[list[dict], str | None]:
    """The items of a manifest (read and validated by ``datamodules``) and its mask folder (``mask_base_path``
    resolved against the manifest's folder; None without one)."""
    entries, top = read_manifest_json(path)
    base = top.get("mask_base_path")
    return entries, None if base is None else resolve_path(path, base)


def uttid(entry: dict, index: int) -> str:
    """The item's uttid (its caption's, for SpokenCOCO unrolled items), else its position as a string."""
    caption = entry.get("caption") if isinstance(entry.get("caption"), dict) else {}
    return str(entry.get("uttid") or caption.get("uttid") or index)


def alignments(entries: Sequence[dict], key: str, manifest: str, limit: int | None = None) -> list[list[Segment]]:
    """The parsed ``key`` alignment of every entry (one parser for every corpus). An entry without one is an error
    naming it: a SpokenScenes manifest from before version 1.1 has none (regenerate it)."""
    out = []
    for i, entry in enumerate(entries[:limit]):
        parsed = item_alignment(entry, key, i)
        if parsed is None:
            raise ValueError(f"{manifest}: {item_id(entry, i)} has no {key!r}; this analysis needs "
                             f"{key} strings (aligned Places / SpokenCOCO manifests, or SpokenScenes >= 1.1: "
                             "regenerate older SpokenScenes data)")
        out.append(parsed)
    return out


# ---- the model and one pass over the captions ----------------------------------------------------------------------
def load_model(checkpoint) -> torch.nn.Module:
    """The retrieval module of a checkpoint (a path, or the dict `read_checkpoint` gave), in eval mode."""
    model = load_retrieval_checkpoint(checkpoint)
    if getattr(model, "audio_net", None) is None:
        name = checkpoint if isinstance(checkpoint, (str, os.PathLike)) else "the checkpoint"
        raise ValueError(f"{name}: the model {type(model).__name__} has no audio_net")
    return model


def audio_loader(manifest: str, batch_size: int = 1, num_workers: int = 0, limit: int | None = None) -> DataLoader:
    """Captions of the manifest in order, each at its own length (batches pad to their longest caption)."""
    dataset = PlacesAudioDataset(manifest, target_length=None, load_images=False)
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=PlacesAudioCollate())


def vq_positions(audio_net: torch.nn.Module) -> tuple[int, ...]:
    """The VQ positions of a ResDAVEnet-VQ audio net (empty for nets without VQ layers)."""
    return tuple(getattr(audio_net, "vq_layers", ()) or ()) if hasattr(audio_net, "encode_units") else ()


@torch.no_grad()
def caption_frames(model: torch.nn.Module, loader: DataLoader, layers: Sequence[str] = (),
                   vq: Sequence[int] = (), progress: bool = True) -> dict[str, Any]:
    """One pass of the audio net: every caption's frames at ``layers`` and codes at VQ positions ``vq``.

    Returns ``{"index": [N] positions in the manifest, "frames": {layer: [N] x [T_k, C] float32}, "codes": {k: [N]
    x [T_k] int64}, "spf": {layer or k: seconds per frame}}``; frames beyond a caption's valid length are dropped.
    Frame f of a layer or code sequence sits at ``(f + 0.5) * spf`` (`core.units.features`' time convention, the
    one of ``predict``'s units dump)."""
    audio_net = model.audio_net
    device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    model.eval()
    out: dict[str, Any] = {"index": [], "frames": {name: [] for name in layers}, "codes": {k: [] for k in vq},
                           "spf": {}}
    try:
        for batch in tqdm(loader, desc="audio net", unit="batch", disable=not progress):
            audio, nframes = batch["audio"].to(device), batch["nframes"]
            out["index"] += batch["index"].tolist()
            if layers:
                for name, lf in layer_outputs(audio_net, audio, nframes, list(layers)).items():
                    out["spf"][name] = lf.spf
                    frames = lf.frames.float().cpu().transpose(1, 2)
                    out["frames"][name] += [frames[b, : int(n)] for b, n in enumerate(lf.valid.tolist())]
            for k in vq:
                codes, valid = audio_net.encode_units(audio, nframes.to(device), layer=k)
                out["spf"][k] = position_spf(k)
                out["codes"][k] += [codes[b, : int(n)].cpu() for b, n in enumerate(valid.tolist())]
    finally:
        model.train(was_training)
    return out


def code_position(layer: str | None, positions: Sequence[int]) -> int | None:
    """The VQ position that ``--layer`` names for units (None: the last one; ``k`` or ``vq<k>``), or None when the
    net has no VQ layers or ``layer`` names a layer. A position the net does not quantise at is an error."""
    if not positions:
        return None
    name = None if layer is None else str(layer)
    if name is not None and name.startswith("vq") and name[2:].isdigit():
        name = name[2:]
    if name is not None and not name.isdigit():
        return None
    k = int(name) if name is not None else positions[-1]
    if k not in positions:
        raise ValueError(f"--layer {layer}: the model quantises at VQ positions {list(positions)}")
    return k


def kmeans_codes(frames: Sequence[torch.Tensor], k: int, seed: int = 0) -> tuple[list[torch.Tensor], int]:
    """Discrete units for a net without VQ layers: k-means (k-means++ seeded) over every frame, then the nearest
    centroid of each frame. ``k`` is capped at the number of frames; returns (codes per caption, k used)."""
    flat = torch.cat(list(frames))
    k = min(k, len(flat))
    codes = assign(flat, kmeans(flat, k, seed=seed))
    return list(codes.split([len(f) for f in frames])), k


def pick_layer(model: torch.nn.Module, layer: str | None, default: str) -> str:
    return resolve_layer(model.audio_net, default if layer is None else layer)


def all_layers(model: torch.nn.Module) -> list[str]:
    return layer_names(model.audio_net)


# ---- user inputs -------------------------------------------------------------------------------------------------
def read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{what} {path}: cannot read it: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path}: expected a JSON object keyed by uttid")
    return data


def read_units(path: str) -> dict[str, tuple[np.ndarray, float, float]]:
    """A units dump ``{uttid: {"codes": [...], "times": [frame centre s, ...]}}`` -> {uttid: (codes, spf, offset)}."""
    out = {}
    for key, value in read_json(path, "units").items():
        if not isinstance(value, dict) or "codes" not in value or "times" not in value:
            raise ValueError(f"units {path}: {key!r} needs 'codes' and 'times' lists")
        codes, times = value["codes"], value["times"]
        if len(codes) != len(times):
            raise ValueError(f"units {path}: {key!r} has {len(codes)} codes but {len(times)} times")
        if not codes:
            out[str(key)] = (np.zeros(0, np.int64), 1.0, 0.0)
            continue
        spf, offset = frame_grid(times, spf=None if len(times) > 1 else 2 * float(times[0]))
        out[str(key)] = (np.asarray(codes, dtype=np.int64), spf, offset)
    return out


def read_boundaries(path: str) -> dict[str, np.ndarray]:
    """User boundaries ``{uttid: [seconds, ...]}``."""
    out = {}
    for key, value in read_json(path, "predictions").items():
        if not isinstance(value, list) or not all(isinstance(t, (int, float)) and math.isfinite(t) for t in value):
            raise ValueError(f"predictions {path}: {key!r} must map to a list of boundary times in seconds")
        out[str(key)] = np.asarray(value, dtype=np.float64)
    return out


# ---- output ------------------------------------------------------------------------------------------------------
def add_common_arguments(parser: argparse.ArgumentParser, ckpt_required: bool = True) -> None:
    parser.add_argument("--ckpt", required=ckpt_required, help="Lightning checkpoint of a frame-level model")
    parser.add_argument("--manifest", required=True, help="manifest with alignments (e.g. data/spokenscenes/test.json)")
    parser.add_argument("--out", default=None, help="write the report (JSON) here")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="captions per forward pass (1: each caption alone, no padding seen by any frame)")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N items of the manifest")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain text table: right-aligned numbers (3 decimals), left-aligned text."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    numeric = [all(isinstance(r[i], (int, float)) for r in rows) if rows else False for i in range(len(header))]

    def line(values):
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric))

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in cells])


def write_report(path: str | None, report: dict) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(report, f, indent=1, default=float)


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.start, 3)


__all__ = ["checkpoint_image_size", "read_manifest_entries", "uttid", "alignments", "load_model", "audio_loader",
           "vq_positions",
           "caption_frames", "code_position", "kmeans_codes", "pick_layer", "all_layers", "read_units",
           "read_boundaries", "add_common_arguments", "table", "write_report", "Timer", "frame_times"]
