"""Text-oracle retrieval on a SpokenScenes split: how much of the task the spoken words can solve.

The oracle reads each caption's transcript (`asr_text`), maps its content words to attributes through
`captions.LEXICON` (scene, colour, shape, size; fillers and function words are ignored) and scores every image
by the cosine between the caption's and the image's binary attribute vectors (bag of words: which colour goes
with which shape is not used). Two oracles:

- `bow`: scene + colour + shape + size words;
- `scene_only`: the scene word alone (what a model that only learned place names could reach).

Ties are broken at random, in expectation: with `g` items scoring strictly higher than the true one and `t`
others tied with it, recall@k = clip((k - g) / (t + 1), 0, 1).

    python -m datamodules.spokenscenes.oracle --root DIR [--split test]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from .captions import LEXICON

KS = (1, 5, 10)


def expected_recall(scores: np.ndarray, ks=KS) -> dict[str, float]:
    """Recall@k of query i retrieving item i from `scores` [N, N] (rows = queries), ties broken at random."""
    true = np.diag(scores)[:, None]
    greater = (scores > true).sum(1)
    tied = (scores == true).sum(1) - 1
    return {f"R@{k}": float(np.clip((k - greater) / (tied + 1), 0, 1).mean()) for k in ks}


def _attributes(entry: dict) -> set[str]:
    attrs = {f"scene:{entry['scene']}"}
    for o in entry["objects"]:
        attrs |= {f"colour:{o['colour']}", f"shape:{o['shape']}", f"size:{o['size']}"}
    return attrs


def _spoken(text: str) -> set[str]:
    return {LEXICON[w] for w in re.findall(r"[a-z]+", text.lower()) if w in LEXICON}


def oracle_scores(entries: list[dict], kinds=("scene", "colour", "shape", "size")) -> np.ndarray:
    """Cosine scores [N captions, N images] over the attribute kinds in `kinds`."""
    vocab = sorted({a for e in entries for a in _attributes(e)} | {a for e in entries for a in _spoken(e["asr_text"])})
    vocab = [a for a in vocab if a.split(":")[0] in kinds]
    col = {a: j for j, a in enumerate(vocab)}
    caps = np.zeros((len(entries), len(vocab)))
    imgs = np.zeros((len(entries), len(vocab)))
    for i, e in enumerate(entries):  # building the matrices; the scoring below is one product
        caps[i, [col[a] for a in _spoken(e["asr_text"]) if a in col]] = 1
        imgs[i, [col[a] for a in _attributes(e) if a in col]] = 1
    caps /= np.maximum(np.linalg.norm(caps, axis=1, keepdims=True), 1e-9)
    imgs /= np.maximum(np.linalg.norm(imgs, axis=1, keepdims=True), 1e-9)
    return caps @ imgs.T


def text_oracle(entries: list[dict]) -> dict:
    """Recall of the bag-of-words and the scene-only oracles, both directions, on manifest entries."""
    bow = oracle_scores(entries)
    scene = oracle_scores(entries, kinds=("scene",))
    return {
        "pairs": len(entries),
        "bow": {"caption_to_image": expected_recall(bow), "image_to_caption": expected_recall(bow.T)},
        "scene_only": {"caption_to_image": expected_recall(scene), "image_to_caption": expected_recall(scene.T)},
    }


def oracle_on_split(root: str | Path, split: str = "test") -> dict:
    path = Path(root) / f"{split}.json"
    try:
        entries = json.loads(path.read_text())["data"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: cannot read a SpokenScenes manifest ({err})") from None
    return text_oracle(entries)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m datamodules.spokenscenes.oracle",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="SpokenScenes folder holding {train,val,test}.json")
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    try:
        result = oracle_on_split(args.root, args.split)
    except ValueError as err:
        parser.error(str(err))
    print(f"text oracle on {args.root}/{args.split}.json ({result['pairs']} pairs)")
    for name in ("bow", "scene_only"):
        for direction, r in result[name].items():
            print(f"  {name:10s} {direction:16s} " + "  ".join(f"{k} {v:.3f}" for k, v in r.items()))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
