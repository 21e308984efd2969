"""``python -m lightning_modules.analysis boundaries``: predicted word boundaries against the word alignments.

    python -m lightning_modules.analysis boundaries --predictions bounds.json --manifest data/spokenscenes/test.json
    python -m lightning_modules.analysis boundaries --ckpt vq.ckpt --manifest ... --layer 3          # code changes
    python -m lightning_modules.analysis boundaries --ckpt demo.ckpt --manifest ... --method peaks --layer conv3

Predictions come from the user (``--predictions``: ``{uttid: [boundary times in seconds, ...]}``), from the code
changes of a VQ position (``--method codes``, ResDAVEnet-VQ) or of k-means units (``--kmeans K``, nets without VQ),
or from the peaks of a layer's frame-to-frame dissimilarity (``--method peaks``). The scores are
``lightning_modules.core.units.boundaries`` (VG-HuBERT's greedy matching within ``--tolerance``, default 20 ms;
precision, recall, F1, over-segmentation, R-value; token F1); chance is the mean of 5 draws of as many boundaries
per caption as predicted, uniformly over the caption's speech.
"""

from __future__ import annotations

import argparse

import numpy as np

from ..core.units.boundaries import (
    boundary_scores,
    code_boundaries,
    peak_boundaries,
    random_boundaries,
    reference_boundaries,
    token_scores,
)
from .common import (
    Timer,
    add_common_arguments,
    alignments,
    all_layers,
    audio_loader,
    caption_frames,
    code_position,
    kmeans_codes,
    load_model,
    pick_layer,
    read_boundaries,
    read_manifest_entries,
    table,
    uttid,
    vq_positions,
    write_report,
)

KEYS = ("precision", "recall", "f1", "over_segmentation", "r_value")


def model_boundaries(args, model) -> tuple[list[np.ndarray], str]:
    loader = audio_loader(args.manifest, args.batch_size, args.num_workers, args.limit)
    progress = not args.no_progress
    k = None
    if args.method == "codes" and args.kmeans is None:
        k = code_position(args.layer, vq_positions(model.audio_net))
    if k is not None:
        out = caption_frames(model, loader, vq=[k], progress=progress)
        return [code_boundaries(c.numpy(), out["spf"][k]) for c in out["codes"][k]], f"VQ code changes, position {k}"
    layer = pick_layer(model, args.layer, "conv3" if "conv3" in all_layers(model) else "layer2")
    out = caption_frames(model, loader, layers=[layer], progress=progress)
    spf = out["spf"][layer]
    if args.method == "peaks":
        return ([peak_boundaries(f.numpy(), spf) for f in out["frames"][layer]],
                f"self-similarity peaks of layer {layer}")
    codes, k = kmeans_codes(out["frames"][layer], args.kmeans or 256, seed=args.seed)
    return [code_boundaries(c.numpy(), spf) for c in codes], f"code changes of k-means ({k}) units of layer {layer}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, ckpt_required=False)
    parser.add_argument("--predictions", default=None, help="JSON {uttid: [boundary seconds, ...]} instead of --ckpt")
    parser.add_argument("--method", choices=("codes", "peaks"), default="codes",
                        help="from --ckpt: code changes (VQ or k-means units) or self-similarity peaks")
    parser.add_argument("--layer", default=None, help="VQ position k or vq<k>, or a layer name/number (default: "
                                                      "the last VQ position; conv3 / layer2)")
    parser.add_argument("--kmeans", type=int, default=None, help="k-means units with K clusters (nets without VQ)")
    parser.add_argument("--tolerance", type=float, default=0.02, help="seconds (VG-HuBERT: 0.02)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> dict:
    timer = Timer()
    if (args.predictions is None) == (args.ckpt is None):
        raise SystemExit("boundaries: give exactly one of --predictions FILE and --ckpt CKPT")
    entries, _ = read_manifest_entries(args.manifest)
    entries = entries[: args.limit]
    words = alignments(entries, "text_alignment", args.manifest)
    if args.predictions is not None:
        given = read_boundaries(args.predictions)
        kept = [i for i, e in enumerate(entries) if uttid(e, i) in given]
        if not kept:
            raise SystemExit(f"boundaries: no uttid of {args.manifest} is in {args.predictions}")
        preds = [given[uttid(entries[i], i)] for i in kept]
        words = [words[i] for i in kept]
        source = f"boundaries of {args.predictions} ({len(kept)} of {len(entries)} captions)"
    else:
        preds, source = model_boundaries(args, load_model(args.ckpt))
    keep = [k for k, w in enumerate(words) if w]  # captions without words have no boundaries to find
    words, preds = [words[k] for k in keep], [preds[k] for k in keep]
    refs = [reference_boundaries(w) for w in words]
    report = {**boundary_scores(refs, preds, args.tolerance), **token_scores(words, preds, args.tolerance)}
    rng = np.random.default_rng(args.seed)
    draws = []
    for _ in range(5):
        guess = random_boundaries(words, [len(np.unique(p)) for p in preds], rng)
        draws.append({**boundary_scores(refs, guess, args.tolerance), **token_scores(words, guess, args.tolerance)})
    for key in (*KEYS, "token_f1"):
        report[f"{key}_chance"] = float(np.mean([d[key] for d in draws]))
    report.update({"source": source, "manifest": args.manifest, "n_captions": len(words), "seconds": timer()})
    print(f"word boundaries: {source} on {args.manifest}, tolerance {args.tolerance * 1000:.0f} ms")
    rows = [(key, report[key], report[f"{key}_chance"]) for key in (*KEYS, "token_f1")]
    print(table(rows, ["score", "value", "chance (random, same count)"]))
    print(f"  {report['n_predicted']} predicted, {report['n_reference']} reference boundaries in "
          f"{len(words)} captions")
    write_report(args.out, report)
    return report
