"""Speech-prompted object localisation: does the heat map of a spoken object word peak on that object?

For every object a caption names (SpokenScenes manifests give each object's naming words, the words' times and
the object's mask), the word's heat map over the image is the matchmap averaged over the word's output frames,
as ``grounding.word_heatmap`` computes it. The heat map is upsampled bilinearly to the mask's size, and the
word counts as localised when its peak pixel lies inside the object's mask (a "pointing game" accuracy).

    word   the words localised for an object
    shape  its shape noun: "big red [star]", "a [ball] that is blue"
    name   every word from its first to its last naming word: "[big red star]", "[ball that is blue]"

Two baselines come with the accuracy:
- chance: the mask's area fraction, i.e. the hit rate of a peak drawn uniformly over the image;
- centre: the hit rate of always pointing at the image centre (objects are not placed uniformly).

DenseAV's pixel-level scores from the same heat maps (`heatmap_ap_iou`): the average precision of each object
class's heat maps against its masks (all pixels of the class's objects pooled) and the best IoU over 20
thresholds, averaged over the classes, beside a uniform map and a centre prior.

    localization_accuracy(model, batches, entries, mask_root, word="shape") -> {"accuracy", "chance", ...}
    maps = object_heatmaps(model, batches, entries, word="shape")    one pass, then any of
    pointing_game(maps, mask_root) -> {"accuracy", ...};  heatmap_ap_iou(maps, mask_root) -> {"ap", "iou", ...}
    python -m lightning_modules.analysis localization --ckpt best.ckpt --manifest data/spokenscenes/test.json

The model is any retrieval module with a frame-level audio net: ``model(image, audio, nframes)`` returns
``(image_out [B, D, H, W], audio_out [B, D, T], out_nframes [B])`` and ``model.audio_net.output_frames`` maps
input frames to output frames. Images must show the whole picture (image transform "resize"), so that region
maps and masks share coordinates; a centre crop would shift one against the other.

Plain torch: the metric takes batches and manifest entries; the command (``lightning_modules.analysis``) reads
the data and the checkpoint.

References: Harwath et al., "Jointly Discovering Visual Objects and Spoken Words from Raw Sensory Input",
ECCV 2018 (matchmaps, speech-prompted localisation); Zhang et al., "Top-down Neural Attention by Excitation
Backprop", ECCV 2016 (the pointing game); Hamilton, Zisserman, Hershey, Freeman, "Separating the 'Chirp' from
the 'Chat': Self-supervised Visual Grounding of Sound and Language", CVPR 2024, and mhamilton723/DenseAV
`denseav/eval_utils.py` (average precision and IoU of speech-prompted heat maps).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .grounding import word_frame_spans

WORDS = ("shape", "name")
REDUCTIONS = ("mean", "max")


# ---- which words name which object -------------------------------------------------------------------------
def naming_span(word_index: Sequence[int], word: str = "shape") -> tuple[int, int] | None:
    """First and last position (inclusive) in the caption of the words localised for one object.

    ``word_index`` lists the positions of the words naming the object (size, colour, shape, in spoken order);
    None when the caption does not name it. The shape noun ends the first run of consecutive naming words:
    "big red [star]" and "a big [star] that is red" (the colour comes after a gap).
    """
    if word not in WORDS:
        raise ValueError(f"word must be one of {WORDS}, got {word!r}")
    if not word_index:
        return None
    idx = sorted(int(i) for i in word_index)
    if word == "name":
        return idx[0], idx[-1]
    # consecutive positions have i - rank constant; the first run is where it still equals its first value
    run = np.asarray(idx) - np.arange(len(idx))
    last = idx[int(np.flatnonzero(run == run[0])[-1])]
    return last, last


def spoken_objects(entries: Sequence[dict], word: str = "shape") -> dict[str, Any]:
    """One row per spoken object of SpokenScenes manifest entries (the JSON items of ``data``).

    Returns columns (K rows): ``pair`` [K] int64 (position in ``entries``), ``object`` [K] int64 (position in
    the entry's ``objects``), ``start`` / ``end`` [K] float64 seconds of the localised words, and lists
    ``shape``, ``size``, ``text`` (the localised words) and ``mask`` (the entry's mask: a path relative to the
    manifest's ``mask_base_path``, or an array / tensor).
    """
    cols: dict[str, list] = {k: [] for k in ("pair", "object", "start", "end", "shape", "size", "text", "mask")}
    for i, entry in enumerate(entries):  # parsing JSON items; the heat maps themselves are batched
        if not isinstance(entry, dict) or "words" not in entry or "objects" not in entry:
            have = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"entry {i} has no 'words'/'objects' (got {have}); speech-prompted "
                             "localisation needs a SpokenScenes manifest (word timings and object masks)")
        words = entry["words"]
        for k, obj in enumerate(entry["objects"]):
            span = naming_span(obj.get("word_index") or [], word)
            if span is None:
                continue
            if span[1] >= len(words) or span[0] < 0:
                raise ValueError(f"entry {i} ({entry.get('uttid', '')}), object {k}: word_index "
                                 f"{obj['word_index']} points past the caption's {len(words)} words")
            cols["pair"].append(i)
            cols["object"].append(k)
            cols["start"].append(float(words[span[0]]["start"]))
            cols["end"].append(float(words[span[1]]["end"]))
            cols["shape"].append(obj.get("shape", "?"))
            cols["size"].append(obj.get("size", "?"))
            cols["text"].append(" ".join(w["word"] for w in words[span[0]: span[1] + 1]))
            cols["mask"].append(obj["mask"])
    for key, dtype in (("pair", torch.long), ("object", torch.long), ("start", torch.float64), ("end", torch.float64)):
        cols[key] = torch.tensor(cols[key], dtype=dtype)
    return cols


# ---- heat maps and peaks -----------------------------------------------------------------------------------
def word_heatmaps(image_out: Tensor, audio_out: Tensor, pair: Tensor, start: Tensor, end: Tensor,
                  reduce: str = "mean") -> Tensor:
    """Heat maps [K, H, W] of K words at once.

    Word k's map is the matchmap of image ``pair[k]`` and caption ``pair[k]`` reduced (``"mean"`` or ``"max"``)
    over its output frames ``start[k] <= t < end[k]``: for each word, exactly
    ``grounding.word_heatmap(matchmap(image_out[p], audio_out[p]), start, end, reduce)``, with the same clamping
    (at least one frame, inside the map).

    Args:
        image_out: [B, D, H, W] region maps.
        audio_out: [B, D, T] frame maps.
        pair: [K] rows of the batch; start, end: [K] output frames.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if image_out.dim() != 4 or audio_out.dim() != 3 or image_out.shape[:2] != audio_out.shape[:2]:
        raise ValueError(f"need image maps [B, D, H, W] and frame maps [B, D, T] of the same B and "
                         f"D, got {tuple(image_out.shape)} and {tuple(audio_out.shape)}")
    K, (H, W), T = pair.numel(), image_out.shape[-2:], audio_out.size(-1)
    pair = pair.to(image_out.device)
    start = start.to(image_out.device).clamp(0, T - 1)
    end = torch.maximum(end.to(image_out.device), start + 1).clamp(max=T)
    mm = torch.einsum("kdr,kdt->krt", image_out[pair].flatten(2), audio_out[pair])  # [K, R, T]
    t = torch.arange(T, device=mm.device)
    inside = ((t >= start[:, None]) & (t < end[:, None]))[:, None, :]  # [K, 1, T]
    if reduce == "mean":
        heat = torch.where(inside, mm, torch.zeros((), dtype=mm.dtype, device=mm.device)).sum(-1)
        heat = heat / (end - start)[:, None].to(mm.dtype)
    else:
        heat = mm.masked_fill(~inside, float("-inf")).amax(-1)
    return heat.view(K, H, W)


def peak_in_mask(heat: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Where do heat maps [K, h, w] peak in image pixels, and do the peaks lie in the masks [K, H, W]?

    The peak of a heat map upsampled bilinearly to H x W is the centre of its best cell: bilinear interpolation
    is a convex combination of neighbouring cells, so it never exceeds the best one and equals it at its centre.
    (An upsampled border cell is a flat plateau, on which a plain argmax would pick the plateau's corner.) So the
    peak is the pixel holding the centre of the best cell, ``floor((i + 0.5) * H / h)``, without building the
    upsampled maps. Ties between cells go to the first in row-major order.

    Returns ``hits`` [K] bool (the peak pixel lies in the mask) and ``peaks`` [K, 2] (row, column) in pixels.
    """
    if heat.dim() != 3 or masks.dim() != 3 or heat.size(0) != masks.size(0):
        raise ValueError(f"need heat maps [K, h, w] and masks [K, H, W], got {tuple(heat.shape)} "
                         f"and {tuple(masks.shape)}")
    if not torch.isfinite(heat).all():
        raise ValueError("heat maps are not finite; the model's outputs hold NaN or inf")
    (K, h, w), (H, W) = heat.shape, masks.shape[1:]
    best = heat.flatten(1).argmax(1).cpu()
    cell = torch.stack([best // w, best % w], dim=1).double()
    scale = torch.tensor([H / h, W / w], dtype=torch.float64)
    peaks = torch.floor((cell + 0.5) * scale).long()
    hits = masks.bool().cpu()[torch.arange(K), peaks[:, 0], peaks[:, 1]]
    return hits, peaks


def load_mask(mask: Any, mask_root: str | os.PathLike | None) -> Tensor:
    """A bool [H, W] mask from a path under ``mask_root`` (PNG, nonzero = object) or an array / tensor."""
    if isinstance(mask, (str, os.PathLike)):
        if mask_root is None:
            raise ValueError(f"mask {mask!r} is a path but no mask_root was given (the manifest's "
                             "mask_base_path, relative to the manifest's folder)")
        from PIL import Image  # only needed for masks stored as files

        path = os.path.join(mask_root, os.fspath(mask))
        try:
            with Image.open(path) as img:
                return torch.from_numpy(np.asarray(img.convert("L")) > 127)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read mask {path}: {err}") from err
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
    if mask.dim() != 2:
        raise ValueError(f"a mask must be [H, W], got shape {tuple(mask.shape)}")
    return mask.bool()


def _group_rates(values: dict[str, Tensor], labels: list[str]) -> dict[str, dict[str, float]]:
    """Mean of each value per label (one pass with index_add), plus the count."""
    names, inverse = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    inverse = torch.as_tensor(inverse.reshape(-1), dtype=torch.long)
    counts = torch.bincount(inverse, minlength=len(names)).double()
    out = {str(n): {"n": int(c)} for n, c in zip(names, counts)}
    for key, v in values.items():
        sums = torch.zeros(len(names), dtype=torch.float64).index_add_(0, inverse, v.double())
        for n, s, c in zip(names, sums, counts):
            out[str(n)][key] = float(s / c)
    return out


# ---- the heat maps of every spoken object --------------------------------------------------------------------
@torch.no_grad()
def object_heatmaps(
    model: nn.Module,
    batches: Iterable[dict],
    entries: Sequence[dict],
    word: str = "shape",
    reduce: str = "mean",
    frames_per_second: float = 100.0,
) -> dict[str, Any]:
    """One pass of the model over ``batches``: the heat map of every spoken object of ``entries``.

    Arguments as `localization_accuracy`. Returns ``objects`` (the `spoken_objects` columns), ``row`` [K] (which of
    them got a heat map, in batch order; a pair seen twice counts once), ``heat`` [K, h, w] float32 on the CPU
    (region-map resolution) and ``n_skipped`` (words starting after a truncated caption's end). The pointing
    game and the AP / IoU scores below read these maps, so a command scores both from one pass.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    audio_net = getattr(model, "audio_net", None)
    if audio_net is None or not hasattr(audio_net, "output_frames"):
        raise ValueError("the model needs an audio_net with output_frames (a retrieval module)")
    objects = spoken_objects(entries, word)
    lookup = torch.full((len(entries),), -1, dtype=torch.long)  # pair -> row in the current batch
    done = torch.zeros(len(entries), dtype=torch.bool)  # a pair seen twice is counted once
    rows: list[Tensor] = []
    heats: list[Tensor] = []
    n_skipped = 0
    device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            index = torch.as_tensor(batch["index"]).long().cpu()
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(entries)):
                raise ValueError(f"batch index {int(index.max())} is outside the {len(entries)} "
                                 "entries; batches and entries must come from the same manifest")
            fresh = ~done[index]
            lookup[index[fresh]] = torch.arange(index.numel())[fresh]
            sel = torch.nonzero(lookup[objects["pair"]] >= 0).view(-1)  # this batch's spoken objects
            if sel.numel():
                image_out, audio_out, out_nframes = model(
                    batch["image"].to(device), batch["audio"].to(device), batch["nframes"].to(device))
                if out_nframes is None or image_out.dim() != 4 or audio_out.dim() != 3:
                    raise ValueError(
                        "needs a frame-level model whose forward returns image maps [B, D, H, W], "
                        f"frame maps [B, D, T] and their valid frames; got {tuple(image_out.shape)}, "
                        f"{tuple(audio_out.shape)}, out_nframes={out_nframes} (pooled models cannot localise)")
                b = lookup[objects["pair"][sel]]
                start, end = word_frame_spans(objects["start"][sel], objects["end"][sel], audio_net.output_frames,
                                              frames_per_second)
                valid = torch.as_tensor(out_nframes).long().cpu()[b]
                ok = start < valid  # a word after the end of a truncated caption has no frames
                n_skipped += int((~ok).sum())
                sel, b, start, end = sel[ok], b[ok], start[ok], torch.minimum(end[ok], valid[ok])
                rows.append(sel)
                heats.append(word_heatmaps(image_out, audio_out, b, start, end, reduce).float().cpu())
            done[index] = True
            lookup[index] = -1
    finally:
        model.train(was_training)
    if not rows or not sum(r.numel() for r in rows):
        raise ValueError("no spoken object of the entries was found in the batches")
    return {"objects": objects, "row": torch.cat(rows), "heat": torch.cat(heats), "n_skipped": n_skipped}


def _masks_by_size(maps: dict[str, Any], mask_root) -> dict[tuple[int, int], tuple[Tensor, Tensor]]:
    """The masks of the mapped objects, stacked per mask size: {(H, W): (positions in ``row``, masks [k, H, W])}.
    Read once per ``maps`` (kept in it under ``_masks``)."""
    if maps.get("_masks") is not None and maps["_masks"][0] == mask_root:
        return maps["_masks"][1]
    masks = [load_mask(maps["objects"]["mask"][i], mask_root) for i in maps["row"].tolist()]
    sizes = [tuple(m.shape) for m in masks]
    out = {}
    for size in dict.fromkeys(sizes):  # masks of different sizes (rare) are scored group by group
        g = [j for j, s in enumerate(sizes) if s == size]
        out[size] = (torch.tensor(g, dtype=torch.long), torch.stack([masks[j] for j in g]))
    maps["_masks"] = (mask_root, out)
    return out


def pointing_game(maps: dict[str, Any], mask_root: str | os.PathLike | None = None,
                  return_records: bool = False) -> dict[str, Any]:
    """The pointing-game accuracy of `object_heatmaps` output (see `localization_accuracy` for the keys)."""
    objects = maps["objects"]
    parts: dict[str, list] = {k: [] for k in ("at", "hit", "peak", "area", "centre")}
    for (H, W), (at, stack) in _masks_by_size(maps, mask_root).items():
        hits, peaks = peak_in_mask(maps["heat"][at], stack)
        parts["at"].append(at)
        parts["hit"].append(hits)
        parts["peak"].append(peaks)
        parts["area"].append(stack.flatten(1).double().mean(1))
        parts["centre"].append(stack[:, H // 2, W // 2])
    order = torch.cat(parts["at"]).argsort()  # back to the order of the heat maps
    hit, peak = torch.cat(parts["hit"])[order], torch.cat(parts["peak"])[order]
    area, centre = torch.cat(parts["area"])[order], torch.cat(parts["centre"])[order]
    row = maps["row"]
    shapes = [objects["shape"][i] for i in row.tolist()]
    sizes = [objects["size"][i] for i in row.tolist()]
    values = {"accuracy": hit.double(), "chance": area, "centre": centre.double()}
    result: dict[str, Any] = {
        "accuracy": float(hit.double().mean()),
        "chance": float(area.mean()),
        "centre": float(centre.double().mean()),
        "n_words": int(row.numel()),
        "n_pairs": int(objects["pair"][row].unique().numel()),
        "n_skipped": maps["n_skipped"],
        "by_shape": _group_rates(values, shapes),
        "by_size": _group_rates(values, sizes),
    }
    if return_records:
        result["records"] = {
            "pair": objects["pair"][row], "object": objects["object"][row], "hit": hit, "peak": peak, "area": area,
            "shape": shapes, "size": sizes, "text": [objects["text"][i] for i in row.tolist()],
        }
    return result


# ---- the metric ---------------------------------------------------------------------------------------------
def localization_accuracy(
    model: nn.Module,
    batches: Iterable[dict],
    entries: Sequence[dict],
    mask_root: str | os.PathLike | None = None,
    word: str = "shape",
    reduce: str = "mean",
    frames_per_second: float = 100.0,
    return_records: bool = False,
) -> dict[str, Any]:
    """Speech-prompted localisation accuracy of a retrieval model over the pairs in ``batches``.

    Args:
        model: ``model(image, audio, nframes) -> (image_out [B, D, H, W], audio_out [B, D, T], out_nframes)``
            with ``model.audio_net.output_frames`` (any retrieval module with a frame-level audio net). It is
            run in eval mode and put back in its previous mode afterwards.
        batches: batch dicts with ``image``, ``audio``, ``nframes`` and ``index`` (the position of each pair in
            ``entries``), e.g. a DataLoader over the split (images resized whole, see the module docstring).
        entries: the manifest's items (``words``, ``objects`` with ``word_index`` and ``mask``).
        mask_root: folder the masks' paths are relative to (``mask_base_path`` joined to the manifest's
            folder); not needed when the entries hold the masks as arrays.
        word: ``"shape"`` or ``"name"`` (see the module docstring).
        reduce: ``"mean"`` or ``"max"`` of the matchmap over the word's frames.
        frames_per_second: input frames per second (100: 10 ms hop).
        return_records: also return the per-word rows under ``records``.

    Returns:
        ``accuracy`` (peak inside the mask), ``chance`` (mean mask area fraction), ``centre`` (hit rate of the
        image centre), ``n_words``, ``n_pairs``, ``n_skipped`` (words starting after a truncated caption's end),
        ``by_shape`` and ``by_size`` ({label: {"accuracy", "chance", "centre", "n"}}), ``word``, ``reduce``;
        with ``return_records``, ``records`` = {"pair", "object", "hit", "peak" [K, 2], "area", "shape",
        "size", "text"}.
    """
    maps = object_heatmaps(model, batches, entries, word, reduce, frames_per_second)
    return {**pointing_game(maps, mask_root, return_records), "word": word, "reduce": reduce}


# ---- pixel-level average precision and IoU (DenseAV) ------------------------------------------------------------
def average_precision(scores: Tensor, labels: Tensor) -> float:
    """Average precision of ``scores`` [N] for binary ``labels`` [N]: ``sum_n (R_n - R_{n-1}) P_n`` over the
    distinct score values from the highest down (equal scores form one threshold), as scikit-learn's
    `average_precision_score` and torchmetrics' `binary_average_precision` (DenseAV's metric) compute it.
    NaN without positives."""
    scores, labels = scores.reshape(-1).double(), labels.reshape(-1).bool()
    if scores.numel() != labels.numel():
        raise ValueError(f"average_precision: {scores.numel()} scores but {labels.numel()} labels")
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    s, order = scores.sort(descending=True)
    y = labels[order].double()
    tp, fp = y.cumsum(0), (1 - y).cumsum(0)
    last = torch.ones_like(s, dtype=torch.bool)  # the last position of each run of equal scores
    last[:-1] = s[1:] != s[:-1]
    tp, fp = tp[last], fp[last]
    recall = tp / n_pos
    precision = tp / (tp + fp)
    return float(((recall - torch.cat([recall.new_zeros(1), recall[:-1]])) * precision).sum())


def best_iou(scores: Tensor, labels: Tensor, thresholds: int = 20) -> float:
    """The best IoU of ``scores > t`` with ``labels`` over ``thresholds`` evenly spaced t from the lowest to the
    highest score (DenseAV `eval_utils.multi_iou`; an empty union counts as IoU 0). Exact counts from one sort."""
    scores, labels = scores.reshape(-1).double(), labels.reshape(-1).bool()
    if scores.numel() == 0:
        return float("nan")
    s, order = scores.sort()
    pos_below = torch.cat([torch.zeros(1, dtype=torch.float64), labels[order].double().cumsum(0)])
    t = torch.linspace(float(s[0]), float(s[-1]), thresholds, dtype=torch.float64)
    k = torch.searchsorted(s, t, right=True)  # scores <= t: not predicted
    n_pred = s.numel() - k
    n_pos = pos_below[-1]
    inter = n_pos - pos_below[k]
    union = (n_pred + n_pos - inter).clamp(min=1)
    return float((inter / union).max())


def _upsampled(heat: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(heat[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def heatmap_ap_iou(maps: dict[str, Any], mask_root: str | os.PathLike | None = None, by: str = "shape",
                   thresholds: int = 20) -> dict[str, Any]:
    """DenseAV's localisation scores of `object_heatmaps` output: average precision and best IoU per object class.

    Each heat map is upsampled bilinearly to its mask's size; a class's score pools the pixels of all its objects
    (DenseAV `get_paired_heatmaps`: `binary_average_precision` and `multi_iou` over the class's flattened maps and
    masks; DenseAV's min-max scaling of the maps changes neither), and ``ap`` / ``iou`` are the means over the
    classes (``by`` = "shape", "size" or "text"). Baselines through the same functions: ``*_chance`` for a uniform
    map (AP = the masks' pixel share; IoU of marking every pixel, the same share) and ``*_centre`` for a centre
    prior (minus the squared distance from the image centre). ``classes`` holds every class's scores and ``n``.
    """
    if by not in ("shape", "size", "text"):
        raise ValueError(f"by must be 'shape', 'size' or 'text', got {by!r}")
    objects = maps["objects"]
    labels = [objects[by][i] for i in maps["row"].tolist()]
    groups: dict[str, dict[str, list]] = {}
    for (H, W), (at, stack) in _masks_by_size(maps, mask_root).items():
        up = _upsampled(maps["heat"][at], (H, W))
        yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
        centre = -((yy - H / 2) ** 2 + (xx - W / 2) ** 2)
        for j, k in enumerate(at.tolist()):
            g = groups.setdefault(str(labels[k]), {"heat": [], "mask": [], "centre": []})
            g["heat"].append(up[j].reshape(-1))
            g["mask"].append(stack[j].reshape(-1))
            g["centre"].append(centre.reshape(-1))
    per_class = {}
    for name in sorted(groups):
        g = {k: torch.cat(v) for k, v in groups[name].items()}
        share = float(g["mask"].double().mean())
        per_class[name] = {"ap": average_precision(g["heat"], g["mask"]), "iou": best_iou(g["heat"], g["mask"],
                                                                                           thresholds),
                           "ap_chance": share, "iou_chance": share,
                           "ap_centre": average_precision(g["centre"], g["mask"]),
                           "iou_centre": best_iou(g["centre"], g["mask"], thresholds),
                           "n": len(groups[name]["heat"])}
    keys = ("ap", "iou", "ap_chance", "iou_chance", "ap_centre", "iou_centre")
    return {**{k: float(np.mean([c[k] for c in per_class.values()])) for k in keys},
            "n_classes": len(per_class), "n_words": int(maps["row"].numel()), "by": by, "classes": per_class}
