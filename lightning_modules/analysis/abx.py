"""``python -m lightning_modules.analysis abx``: ZeroSpeech ABX phone discriminability of every layer.

    python -m lightning_modules.analysis abx --ckpt demo.ckpt --manifest data/spokenscenes/test.json
    python -m lightning_modules.analysis abx --ckpt vq.ckpt --manifest ... --layer input --layer 3 --layer vq3

Triphone items come from the manifest's ``phone_alignment`` (file = uttid, speaker = the item's speaker). Only items
whose context has two or more centre phones can be in a triplet; of those, at most ``--max-per-group`` (10) per
(context, centre phone) group are drawn at random (500 SpokenScenes test captions: 18,425 triphones, 12,296 in such
contexts, 5,572 after the cap). They can be saved as a ZeroSpeech ``.item`` file (``--item-file``).

Every ``--layer`` (default: the input log-mel and every stage of the net, plus ``vq<k>``, the one-hot codes of each
VQ position, over the codes in use) is scored at its own frame rate by
``lightning_modules.core.units.abx.abx_error_rates`` (DTW over angular distances, within- and across-speaker error
rates averaged as ZeroSpeech does); chance is 50%.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ..core.units.abx import abx_error_rates, discriminable_items, item_features, triphone_items, write_item_file
from ..core.units.features import frame_times, resolve_layer
from .common import (
    Timer,
    add_common_arguments,
    alignments,
    all_layers,
    audio_loader,
    caption_frames,
    load_model,
    read_manifest_entries,
    table,
    uttid,
    vq_positions,
    write_report,
)


def one_hot_codes(codes: list[torch.Tensor]) -> list[torch.Tensor]:
    """One-hot frames [T, U] of code sequences, over the U codes used: the angular distance of two one-hot frames
    is 0 or 1/2 whatever the width, so this scores as one-hot over the whole codebook at a fraction of the cost."""
    used, index = torch.unique(torch.cat(codes).long(), return_inverse=True)
    onehot = torch.nn.functional.one_hot(index, max(len(used), 1)).float()
    return list(onehot.split([len(c) for c in codes]))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--layer", action="append", default=None,
                        help="a layer name or number, or vq<k> (one-hot codes of VQ position k); repeat for several "
                             "(default: all)")
    parser.add_argument("--item-file", default=None, help="also write the items as a ZeroSpeech .item file")
    parser.add_argument("--max-per-group", type=int, default=10,
                        help="items per (context, centre phone) group, drawn at random (0: all; the DTW pairs of a "
                             "context grow with the square of its items)")
    parser.add_argument("--max-items", type=int, default=None, help="then at most this many items, at random")
    parser.add_argument("--max-gap", type=float, default=0.02, help="skip triphones with a longer pause inside")
    parser.add_argument("--distance", choices=("angular", "cosine", "euclidean"), default="angular")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> dict:
    timer = Timer()
    entries, _ = read_manifest_entries(args.manifest)
    entries = entries[: args.limit]
    phones = alignments(entries, "phone_alignment", args.manifest)
    files = [uttid(e, i) for i, e in enumerate(entries)]
    speakers = [str(e.get("speaker") or (e.get("caption") or {}).get("speaker") or "?") for e in entries]
    items = triphone_items(list(zip(files, speakers, phones)), max_gap=args.max_gap)
    n_all = len(items)
    items = discriminable_items(items, args.max_per_group or None, seed=args.seed)
    if args.max_items and len(items) > args.max_items:
        pick = np.sort(np.random.default_rng(args.seed).choice(len(items), args.max_items, replace=False))
        items = items.subset(pick)
    if args.item_file:
        write_item_file(args.item_file, items)
    model = load_model(args.ckpt)
    positions = vq_positions(model.audio_net)
    names = all_layers(model)
    wanted = args.layer or names + [f"vq{k}" for k in positions]
    layers, vq = [], []
    for w in wanted:
        if w.startswith("vq") and w[2:].isdigit():
            if int(w[2:]) not in positions:
                raise SystemExit(f"abx: --layer {w}: the model quantises at VQ positions {list(positions)}")
            vq.append(int(w[2:]))
        else:
            layers.append(resolve_layer(model.audio_net, w))
    loader = audio_loader(args.manifest, args.batch_size, args.num_workers, args.limit)
    out = caption_frames(model, loader, layers=layers, vq=vq, progress=not args.no_progress)
    by_file = {files[i]: k for k, i in enumerate(out["index"])}
    report: dict = {"layers": {}, "abx_within_chance": 0.5, "abx_across_chance": 0.5, "n_items": len(items),
                    "n_items_all": n_all,
                    "manifest": args.manifest, "item_file": args.item_file}
    print(f"ABX: {len(items)} triphone items of {len(entries)} captions ({args.manifest}; {n_all} triphones, at most "
          f"{args.max_per_group or 'all'} per context and centre phone), {args.distance} DTW")
    rows = []
    for name in layers + [f"vq{k}" for k in vq]:
        if name.startswith("vq") and name[2:].isdigit():
            k = int(name[2:])
            seqs = one_hot_codes(out["codes"][k])
            spf = out["spf"][k]
        else:
            seqs, spf = out["frames"][name], out["spf"][name]
        feats = {f: (seqs[k], frame_times(len(seqs[k]), spf)) for f, k in by_file.items()}
        result = abx_error_rates(item_features(feats, items), items, distance=args.distance,
                                 progress=not args.no_progress)
        result["seconds_per_frame"] = spf
        report["layers"][name] = result
        rows.append((name, f"{spf * 1000:.0f} ms", 100 * result["abx_within"], 100 * result["abx_across"],
                     result["n_within_triplets"], result["n_across_triplets"], result["seconds"]))
    print(table(rows, ["layer", "frame", "within %", "across %", "within triplets", "across triplets", "seconds"]))
    print("  chance: 50% (random features); lower is better")
    report["seconds"] = timer()
    write_report(args.out, report)
    return report
