"""``python -m lightning_modules.analysis keywords``: spoken keyword spotting from the image side, on SpokenScenes.

    python -m lightning_modules.analysis keywords --ckpt demo.ckpt --manifest data/spokenscenes/test.json

Every scene, colour and shape word that at least ``--min-count`` captions of the manifest say is a keyword (sizes
are left out: "small" names no image region). Its image-side concept is the mean region embedding of what it names
in the manifest's images: the pixels of every object of that colour / shape, the background of every image of that
scene (each region weighted by the share of its cell the mask covers). Each caption is scored by the best matchmap
evidence for the concept, ``max_t <concept, audio_t>``, with its own image left out of the concept (so no caption
is found through its own picture). Relevant captions are those whose ``text_alignment`` holds the word. Scores from
``lightning_modules.core.units.keywords.keyword_spotting``: precision at 10, at N (N = relevant captions) and EER,
beside the chance of a random ranking.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from datamodules import PlacesAudioDataset
from datamodules.places_audio import PlacesAudioCollate

from ..checkpoints import read_checkpoint
from ..core.localization import load_mask
from ..core.units.keywords import concept_scores, keyword_spotting
from .common import (
    Timer,
    alignments,
    checkpoint_image_size,
    load_model,
    read_manifest_entries,
    table,
    write_report,
)


def keyword_attributes(entries, words, min_count: int) -> dict[str, tuple[str, str]]:
    """keyword -> (kind, value) for the scene / colour / shape words said in at least ``min_count`` captions."""
    from datamodules.spokenscenes import LEXICON

    counts: dict[str, int] = {}
    for w in words:
        for label in {x[2].lower() for x in w}:
            counts[label] = counts.get(label, 0) + 1
    out = {}
    for word, attr in sorted(LEXICON.items()):
        kind, value = attr.split(":")
        if kind != "size" and counts.get(word, 0) >= min_count:
            out[word] = (kind, value)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint of a frame-level retrieval model")
    parser.add_argument("--manifest", required=True, help="SpokenScenes manifest (words, objects, masks)")
    parser.add_argument("--out", default=None, help="write the report (JSON) here")
    parser.add_argument("--min-count", type=int, default=5, help="least captions saying a keyword")
    parser.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's data.image_size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs of the manifest")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--show", type=int, default=12, help="keywords shown in the table")


@torch.no_grad()
def run(args: argparse.Namespace) -> dict:
    timer = Timer()
    ckpt = read_checkpoint(args.ckpt)
    model = load_model(ckpt)
    image_size = checkpoint_image_size(ckpt, args.image_size)
    entries, mask_root = read_manifest_entries(args.manifest)
    entries = entries[: args.limit]
    words = alignments(entries, "text_alignment", args.manifest)
    attrs = keyword_attributes(entries, words, args.min_count)
    if not attrs:
        raise SystemExit(f"keywords: no scene, colour or shape word is said in {args.min_count}+ captions")
    keywords = list(attrs)
    K, N = len(keywords), len(entries)
    dataset = PlacesAudioDataset(args.manifest, target_length=None, image_transform="resize", image_size=image_size)
    dataset = Subset(dataset, range(N))
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                        collate_fn=PlacesAudioCollate())
    device = next(iter(model.parameters())).device
    own: torch.Tensor | None = None  # [K, N, D] each image's weighted region sum per keyword
    own_w = torch.zeros(K, N, dtype=torch.float64)
    audio_maps: list[torch.Tensor] = [torch.empty(0)] * N
    valid = torch.zeros(N, dtype=torch.long)
    model.eval()
    for batch in tqdm(loader, desc="model", unit="batch", disable=args.no_progress):
        image_out, audio_out, out_nframes = model(batch["image"].to(device), batch["audio"].to(device),
                                                  batch["nframes"].to(device))
        if out_nframes is None or image_out.dim() != 4:
            raise SystemExit("keywords: needs a frame-level model (image maps [B, D, H, W] and audio frames)")
        image_out, audio_out = image_out.double().cpu(), audio_out.float().cpu()
        B, D, h, w = image_out.shape
        if own is None:
            own = torch.zeros(K, N, D, dtype=torch.float64)
        for b, n in enumerate(batch["index"].tolist()):
            entry = entries[n]
            audio_maps[n], valid[n] = audio_out[b], int(out_nframes[b])
            masks = [load_mask(o["mask"], mask_root).double() for o in entry["objects"]]
            cells = [F.adaptive_avg_pool2d(m[None, None], (h, w))[0, 0] for m in masks]  # mask share per cell
            background = (1 - torch.stack(cells).sum(0)).clamp(min=0) if cells else torch.ones(h, w)
            for k, word in enumerate(keywords):
                kind, value = attrs[word]
                if kind == "scene":
                    weight = background if entry.get("scene") == value else None
                else:
                    hits = [c for c, o in zip(cells, entry["objects"]) if o.get(kind) == value]
                    weight = torch.stack(hits).sum(0) if hits else None
                if weight is not None:
                    own[k, n] = torch.einsum("dhw,hw->d", image_out[b], weight)
                    own_w[k, n] = weight.sum()
    assert own is not None
    total, total_w = own.sum(1, keepdim=True), own_w.sum(1, keepdim=True)
    concepts = (total - own) / (total_w - own_w).clamp(min=1e-9)[..., None]  # each caption's image left out
    T = int(max(a.shape[-1] for a in audio_maps))
    audio = torch.stack([F.pad(a, (0, T - a.shape[-1])) for a in audio_maps])
    scores = concept_scores(concepts.float(), audio, valid)
    relevant = torch.tensor([[word.upper() in {x[2].upper() for x in w} for w in words] for word in keywords])
    report = keyword_spotting(scores, relevant, keywords)
    for row in report["keywords"]:
        row["kind"] = attrs[row["keyword"]][0]
    report.update({"manifest": args.manifest, "seconds": timer()})
    print(f"keyword spotting: {report['n_keywords']} scene / colour / shape keywords over {N} captions of "
          f"{args.manifest} (image-side concepts, each caption's own image left out)")
    print(table([("precision at 10", report["precision_at_10"], report["precision_at_10_chance"]),
                 ("precision at N", report["precision_at_n"], report["precision_at_n_chance"]),
                 ("EER", report["eer"], report["eer_chance"])], ["score", "value", "chance (random ranking)"]))
    rows = sorted(report["keywords"], key=lambda r: r["eer"])[: args.show]
    print(table([(r["keyword"], r["kind"], r["relevant"], r["precision_at_10"], r["precision_at_n"], r["eer"])
                 for r in rows], ["keyword", "kind", "captions", "P@10", "P@N", "EER"]))
    write_report(args.out, report)
    return report
