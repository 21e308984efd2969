"""Prepare a corpus for training and evaluation: one Places-format manifest per split, and a summary.

    python -m datamodules.prepare flickr8k   --root DIR [--images DIR] [--split official|karpathy] --out OUT
    python -m datamodules.prepare spokencoco --root DIR --coco-root DIR [--split official|karpathy] --out OUT
    python -m datamodules.prepare places     --root PlacesAudio_400k_distro --images DIR --out OUT

Common options: `--on-missing error|skip` (default error: files that the corpus lists but the disk lacks stop the
run with their list, and nothing is written; skip leaves those captions out), `--no-progress`.

Writes `<OUT>/<split>.json` (items in the order image id, caption number; base paths relative to the manifest;
every item has wav, image, uttid, speaker, asr_text, image_id and, where the corpus has them, text_alignment) and
`<OUT>/summary.json`, and prints the summary table: captions, unique images, speakers, hours of audio (from the
wav headers, nothing decoded) and missing files per split. The corpus layouts are in each module's docstring
(`datamodules/corpora/`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from .corpora import CORPORA
from .corpora.common import (
    PrepareError,
    check_files,
    drop_missing,
    format_table,
    missing_report,
    summary_row,
    write_manifest,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m datamodules.prepare",
                                     description="Write Places-format manifests of a corpus, one per split.")
    sub = parser.add_subparsers(dest="corpus", required=True, metavar="CORPUS")
    for name in CORPORA:
        module = importlib.import_module(f".corpora.{name}", __package__)
        p = sub.add_parser(name, help=module.__doc__.splitlines()[0], description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.add_argument("--out", required=True, help="output folder for <split>.json and summary.json")
        p.add_argument("--on-missing", choices=("error", "skip"), default="error",
                       help="listed files missing on disk: stop with their list (error) or leave them out (skip)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def prepare(argv: list[str] | None = None) -> dict:
    """Run the command; returns {"manifests": {split: path}, "summary": [row per split]}. PrepareError on a bad
    corpus (or missing files with --on-missing error)."""
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f".corpora.{args.corpus}", __package__)
    splits = [check_files(s, progress=not args.no_progress) for s in module.read(args)]
    rows = [summary_row(s) for s in splits]
    report = missing_report(splits)
    if report and args.on_missing == "error":
        raise PrepareError(f"files listed by the corpus are missing on disk (nothing written; --on-missing skip "
                           f"leaves them out):\n{format_table(rows)}\n{report}")
    if args.on_missing == "skip":
        splits = [drop_missing(s) for s in splits]
    out = os.path.abspath(os.path.expanduser(args.out))
    manifests = {s.name: write_manifest(s, out) for s in splits}
    for split, row in zip(splits, rows):
        row.update({k: v for k, v in summary_row(split).items() if k != "missing"})  # counts after skipping
        row["manifest"] = manifests[split.name]
        row["missing_files"] = [f"{kind} {path}" for _, kind, path in split.missing[:20]]
        row["bad_wav_headers"] = [f"{path}: {reason}" for path, reason in split.bad_headers[:20]]
    summary = {"corpus": args.corpus, "args": {k: v for k, v in vars(args).items() if k != "corpus"},
               "splits": rows}
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(f"{args.corpus}: wrote {len(manifests)} manifest(s) to {out}")
    print(format_table(rows))
    if report:
        print(f"left out (--on-missing skip):\n{report}")
    for split in splits:
        if split.bad_headers:
            print(f"{split.name}: {len(split.bad_headers)} wav(s) with an unreadable header (kept; training with "
                  f"on_bad_sample=skip leaves them out), e.g. {split.bad_headers[0][0]}")
    return {"manifests": manifests, "summary": rows}


def main(argv: list[str] | None = None) -> int:
    try:
        prepare(argv)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
