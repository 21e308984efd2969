"""``python -m lightning_modules.analysis localization``: speech-prompted localisation of a checkpoint.

    python -m lightning_modules.analysis localization --ckpt best.ckpt --manifest data/spokenscenes/test.json

The metric is ``lightning_modules.core.localization.localization_accuracy``; this command reads the checkpoint
and the SpokenScenes manifest (word timings, object masks) and prints the accuracy beside its baselines.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from torch.utils.data import DataLoader, Subset

from datamodules import PlacesAudioDataset
from datamodules.manifest import read_manifest_json, resolve_path
from datamodules.places_audio import PlacesAudioCollate

from ..checkpoints import load_retrieval_checkpoint, read_checkpoint
from ..core.localization import REDUCTIONS, WORDS, localization_accuracy


def read_manifest_entries(path: str | os.PathLike) -> tuple[list[dict], str | None]:
    """The items of a SpokenScenes manifest (read and validated by ``datamodules``) and its mask folder
    (``mask_base_path`` resolved against the manifest's folder; None without one)."""
    entries, top = read_manifest_json(path)
    base = top.get("mask_base_path")
    return entries, None if base is None else resolve_path(path, base)


# ---- command line ---------------------------------------------------------------------------------------------
def format_result(result: dict[str, Any]) -> str:
    """A few readable lines: the accuracy with its baselines, then the breakdowns."""
    lines = [f"word={result['word']} reduce={result['reduce']}: {result['n_words']} spoken objects in "
             f"{result['n_pairs']} pairs" + (f" ({result['n_skipped']} skipped)" if result["n_skipped"] else ""),
             f"  accuracy {result['accuracy']:.3f}   chance {result['chance']:.3f}   centre {result['centre']:.3f}"]
    for title in ("by_shape", "by_size"):
        lines.append(f"  {title.replace('_', ' ')}:")
        for label, r in result[title].items():
            lines.append(f"    {label:<10} {r['accuracy']:.3f}  (chance {r['chance']:.3f}, centre {r['centre']:.3f}, "
                         f"n={r['n']})")
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
    parser.add_argument("--json", default=None, help="also write the results (without records) to this file")


def run(args: argparse.Namespace) -> dict[str, dict]:
    """Print (and optionally save) the localisation accuracy of ``args.ckpt`` on ``args.manifest``."""
    ckpt = read_checkpoint(args.ckpt)
    model = load_retrieval_checkpoint(ckpt)
    image_size = args.image_size
    if image_size is None:
        image_size = int((ckpt.get("datamodule_hyper_parameters") or {}).get("image_size") or 224)
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
        results[word] = localization_accuracy(model, loader, entries, mask_root, word=word, reduce=args.reduce)
        print(format_result(results[word]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results
