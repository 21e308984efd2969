"""python -m datamodules.spokenscenes --root DIR --train N --val N --test N --seed S [--image-size 128] ..."""

import argparse
import json

from .generate import generate


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.spokenscenes",
        description="Generate SpokenScenes: place images with objects, espeak-ng spoken captions, Places-format "
                    "manifests with masks and word timings.")
    parser.add_argument("--root", required=True, help="output folder (created; must be empty unless --overwrite)")
    parser.add_argument("--train", type=int, default=0, help="training pairs")
    parser.add_argument("--val", type=int, default=0, help="validation pairs")
    parser.add_argument("--test", type=int, default=0, help="test pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier SpokenScenes output in --root")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted generation with the same arguments (complete splits are kept)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--captions-per-image", type=int, default=1,
                        help="spoken captions of each image (--train/--val/--test count images); 1: one pair each")
    args = parser.parse_args(argv)
    try:
        result = generate(args.root, train=args.train, val=args.val, test=args.test, seed=args.seed,
                          image_size=args.image_size, workers=args.workers, overwrite=args.overwrite,
                          progress=not args.no_progress, captions_per_image=args.captions_per_image,
                          resume=args.resume)
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {sum(result['counts'].values())} pairs to {result['root']} in {result['seconds']:.1f} s: "
          f"{result['pairs_per_second']:.1f} pairs/s, {result['mb_per_1000_pairs']:.1f} MB per 1000 pairs")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
