"""``python -m lightning_modules.analysis localization``: speech-prompted localisation of a checkpoint.

    python -m lightning_modules.analysis localization --ckpt best.ckpt --manifest data/spokenscenes/test.json

One pass of the model gives every spoken object's heat map (``lightning_modules.core.localization.object_heatmaps``);
from it the pointing game (``pointing_game``: the peak inside the object's mask, beside the mask's area and a
centre guess) and DenseAV's pixel-level average precision and best IoU per object class (``heatmap_ap_iou``, beside
a uniform map and a centre prior). The command reads the checkpoint and the SpokenScenes manifest (word timings,
object masks) and prints each beside its baselines.
"""

from __future__ import annotations

import argparse
from typing import Any

from torch.utils.data import DataLoader, Subset

from datamodules import PlacesAudioDataset
from datamodules.places_audio import PlacesAudioCollate

from ..checkpoints import load_retrieval_checkpoint, read_checkpoint
from ..core.localization import REDUCTIONS, WORDS, heatmap_ap_iou, object_heatmaps, pointing_game
from .common import checkpoint_image_size, read_manifest_entries, write_report

__all__ = ["read_manifest_entries", "format_result", "add_arguments", "run"]


# ---- command line ---------------------------------------------------------------------------------------------
def format_result(result: dict[str, Any]) -> str:
    """A few readable lines: the accuracy with its baselines, AP and IoU with theirs, then the breakdowns."""
    lines = [f"word={result['word']} reduce={result['reduce']}: {result['n_words']} spoken objects in "
             f"{result['n_pairs']} pairs" + (f" ({result['n_skipped']} skipped)" if result["n_skipped"] else ""),
             f"  pointing game  accuracy {result['accuracy']:.3f}   chance {result['chance']:.3f}   "
             f"centre {result['centre']:.3f}"]
    if "ap" in result:
        lines.append(f"  AP  {result['ap']:.3f}   chance (uniform map) {result['ap_chance']:.3f}   centre prior "
                     f"{result['ap_centre']:.3f}   (mean over {result['n_classes']} {result['by']} classes)")
        lines.append(f"  IoU {result['iou']:.3f}   chance (uniform map) {result['iou_chance']:.3f}   centre prior "
                     f"{result['iou_centre']:.3f}")
    for title in ("by_shape", "by_size"):
        lines.append(f"  {title.replace('_', ' ')}:")
        for label, r in result[title].items():
            extra = ""
            per_class = result.get(f"ap_iou_{title}", {}).get(label)
            if per_class:
                extra = f", AP {per_class['ap']:.3f}, IoU {per_class['iou']:.3f}"
            lines.append(f"    {label:<10} {r['accuracy']:.3f}  (chance {r['chance']:.3f}, centre {r['centre']:.3f}, "
                         f"n={r['n']}{extra})")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint of a frame-level retrieval model")
    parser.add_argument("--manifest", required=True, help="SpokenScenes manifest (e.g. data/spokenscenes/test.json)")
    parser.add_argument("--word", nargs="+", choices=WORDS, default=["shape"], help="words localised per object")
    parser.add_argument("--reduce", choices=REDUCTIONS, default="mean", help="matchmap reduction over a word's frames")
    parser.add_argument("--image-size", type=int, default=None,
                        help="image side fed to the model (default: the checkpoint's data.image_size, else 224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs of the manifest")
    parser.add_argument("--out", "--json", dest="out", default=None,
                        help="also write the results (without records) to this JSON file")


def run(args: argparse.Namespace) -> dict[str, dict]:
    """Print (and optionally save) the localisation scores of ``args.ckpt`` on ``args.manifest``."""
    ckpt = read_checkpoint(args.ckpt)
    model = load_retrieval_checkpoint(ckpt)
    image_size = checkpoint_image_size(ckpt, args.image_size)
    entries, mask_root = read_manifest_entries(args.manifest)
    dataset = PlacesAudioDataset(args.manifest, target_length=None, image_transform="resize", image_size=image_size)
    if args.limit is not None:
        dataset = Subset(dataset, range(min(args.limit, len(dataset))))
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers,
                        collate_fn=PlacesAudioCollate())
    print(f"speech-prompted localisation: {type(model).__name__} from {args.ckpt} on {args.manifest} "
          f"({len(dataset)} pairs, images resized to {image_size} px)")
    results = {}
    for word in args.word:
        maps = object_heatmaps(model, loader, entries, word=word, reduce=args.reduce)
        result = {**pointing_game(maps, mask_root), "word": word, "reduce": args.reduce}
        shapes = heatmap_ap_iou(maps, mask_root, by="shape")
        result.update({k: v for k, v in shapes.items() if k not in ("classes", "n_words")})
        result["ap_iou_by_shape"] = shapes["classes"]
        result["ap_iou_by_size"] = heatmap_ap_iou(maps, mask_root, by="size")["classes"]
        results[word] = result
        print(format_result(result))
    write_report(args.out, results)
    return results
