"""``python -m lightning_modules.analysis words``: which discrete units detect which words (ResDAVEnet-VQ).

    python -m lightning_modules.analysis words --ckpt vq.ckpt --manifest data/spokenscenes/test.json --layer 3
    python -m lightning_modules.analysis words --ckpt demo.ckpt --manifest ... --layer conv4 --kmeans 256
    python -m lightning_modules.analysis words --units units.json --manifest ...     # any model's units

Units come from the user's dump (``--units``: ``{uttid: {"codes": [...], "times": [frame centre s, ...]}}``, what
``predict --units.output`` writes), from the VQ layer ``--layer`` of a ResDAVEnet-VQ checkpoint, or, for nets
without VQ layers, from k-means (``--kmeans K``) over the frames of ``--layer``. Words come from the manifest's
``text_alignment``. The metric is ``lightning_modules.core.units.word_detection.word_detection`` (the official
definitions, 0.04 s code half-width, stop words excluded); the chance line is the same analysis after shuffling
the codes over all frames of the corpus (same code counts, no relation to the words).
"""

from __future__ import annotations

import argparse

import numpy as np

from ..core.units.word_detection import CODE_HALFWIDTH, word_detection
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
    read_manifest_entries,
    read_units,
    table,
    uttid,
    vq_positions,
    write_report,
)


def model_units(args, model) -> tuple[list, float, str]:
    """(codes per caption, spf, description) from a checkpoint: its VQ codes at --layer, else k-means codes."""
    loader = audio_loader(args.manifest, args.batch_size, args.num_workers, args.limit)
    k = None if args.kmeans is not None else code_position(args.layer, vq_positions(model.audio_net))
    if k is not None:
        out = caption_frames(model, loader, vq=[k], progress=not args.no_progress)
        return out["codes"][k], out["spf"][k], f"VQ codes of position {k}"
    layer = pick_layer(model, args.layer, "conv4" if "conv4" in all_layers(model) else "layer2")
    out = caption_frames(model, loader, layers=[layer], progress=not args.no_progress)
    codes, k = kmeans_codes(out["frames"][layer], args.kmeans or 256, seed=args.seed)
    return codes, out["spf"][layer], f"k-means ({k} clusters) of layer {layer}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, ckpt_required=False)
    parser.add_argument("--units", default=None, help="units dump JSON {uttid: {codes, times}} instead of --ckpt")
    parser.add_argument("--layer", default=None,
                        help="VQ position k or vq<k> (ResDAVEnet-VQ) or layer name/number for k-means (default: the "
                             "last VQ position; conv4 / layer2 for nets without VQ)")
    parser.add_argument("--kmeans", type=int, default=None, help="k-means units with K clusters (default 256 when "
                                                                 "the net has no VQ layers)")
    parser.add_argument("--halfwidth", type=float, default=CODE_HALFWIDTH, help="code half-width in seconds")
    parser.add_argument("--min-occ", type=int, default=1, help="least co-occurrences of a (word, code) pair")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=15, help="words shown in the table")


def run(args: argparse.Namespace) -> dict:
    timer = Timer()
    if (args.units is None) == (args.ckpt is None):
        raise SystemExit("words: give exactly one of --units FILE and --ckpt CKPT")
    entries, _ = read_manifest_entries(args.manifest)
    entries = entries[: args.limit]
    words = alignments(entries, "text_alignment", args.manifest)
    if args.units is not None:
        units = read_units(args.units)
        codes, spf, offsets, kept = [], [], [], []
        for i, e in enumerate(entries):
            u = units.get(uttid(e, i))
            if u is not None:
                codes.append(u[0])
                spf.append(u[1])
                offsets.append(u[2])
                kept.append(i)
        if not kept:
            raise SystemExit(f"words: no uttid of {args.manifest} is in {args.units}")
        words = [words[i] for i in kept]
        source = f"units of {args.units} ({len(kept)} of {len(entries)} captions)"
    else:
        model = load_model(args.ckpt)
        codes, s, source = model_units(args, model)
        spf, offsets = [s] * len(codes), None
    report = word_detection(codes, spf, words, halfwidth=args.halfwidth, min_occ=args.min_occ, offsets=offsets)
    # chance: the same codes shuffled over every frame of the corpus
    flat = np.concatenate([np.asarray(c) for c in codes])
    shuffled = np.random.default_rng(args.seed).permutation(flat)
    chance = word_detection(np.split(shuffled, np.cumsum([len(c) for c in codes])[:-1]), spf, words,
                            halfwidth=args.halfwidth, min_occ=args.min_occ, offsets=offsets)
    report.update({"words_detected_chance": chance["words_detected"], "mean_f1_chance": chance["mean_f1"],
                   "source": source, "manifest": args.manifest, "seconds": timer()})
    print(f"word detection: {source} on {args.manifest}")
    print(f"  words detected (best code F1 >= {report['f1_threshold']}): {report['words_detected']} of "
          f"{report['n_words']} word types ({report['n_content_words']} not stop words)   chance (codes shuffled): "
          f"{report['words_detected_chance']}")
    print(f"  mean best F1 {report['mean_f1']:.3f} (chance {report['mean_f1_chance']:.3f}); {report['n_codes']} codes, "
          f"{report['n_frames']} frames, {report['n_utterances']} captions")
    rows = [(r["word"], r["code"], r["f1"], r["precision"], r["recall"], r["tokens"])
            for r in report["words"][: args.show]]
    print(table(rows, ["word", "code", "F1", "precision", "recall", "tokens"]))
    write_report(args.out, report)
    return report
