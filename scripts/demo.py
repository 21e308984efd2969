"""`make demo`: generate SpokenScenes, train the demo DAVEnet on the CPU, test the best checkpoint, print recall.

    python scripts/demo.py            # what `make demo` runs
    DEMO_MINUTES=5 make demo          # a shorter training budget

Steps:
1. generate SpokenScenes into data/spokenscenes (skipped when it is already there with the same sizes);
2. precompute the log-mel feature cache (`python -m datamodules.cache`);
3. train configs/demo.yaml for DEMO_MINUTES minutes of wall time (W&B logs offline, plus a CSV log);
4. test the best checkpoint (by validation mean R@10) on the test split;
5. write runs/demo/metrics.json and print the recall table.

Environment: DEMO_MINUTES (default 10), DEMO_TRAIN / DEMO_VAL / DEMO_TEST (default 8000 / 500 / 500 pairs),
DEMO_DATA (default data/spokenscenes), DEMO_RUNS (default runs/demo).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402
from pytorch_lightning.loggers import CSVLogger  # noqa: E402

import cli  # noqa: E402
from datamodules import load_manifest  # noqa: E402
from datamodules.cache import FeatureStore, build_cache  # noqa: E402
from datamodules.errors import FeatureCacheError  # noqa: E402
from datamodules.manifest import place_label  # noqa: E402
from datamodules.spokenscenes import generate  # noqa: E402
from scripts.csvlog import validation_curve  # noqa: E402


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def ensure_data(root: Path, sizes: dict[str, int]) -> None:
    info = root / "info.json"
    if info.exists():
        have = json.loads(info.read_text()).get("args", {})
        if all(have.get(k) == v for k, v in sizes.items()):
            print(f"[demo] SpokenScenes already in {root} ({sizes})")
            return
    print(f"[demo] generating SpokenScenes into {root}: {sizes}")
    report = generate(root, seed=0, image_size=128, overwrite=root.exists(), **sizes)
    print(f"[demo] {sum(report['counts'].values())} pairs in {report['seconds']:.0f} s "
          f"({report['pairs_per_second']:.0f} pairs/s, {report['megabytes']:.0f} MB)")


def ensure_cache(root: Path) -> Path:
    """The log-mel feature cache of every split, (re)built where it is missing or stale."""
    cache = root / "cache"
    for split in ("train", "val", "test"):
        manifest = root / f"{split}.json"
        try:
            FeatureStore.open(cache, load_manifest(manifest))
        except FeatureCacheError:
            print(f"[demo] caching log-mel features of {manifest.name}")
            build_cache(manifest, cache, num_workers=min(2, os.cpu_count() or 1))
    return cache


def loggers_in(runs: Path) -> list[dict]:
    """demo.yaml's loggers with their save_dir moved to `runs`.

    A dotted override (--trainer.logger.init_args.save_dir) reaches only the last logger of a list: the W&B run
    and the checkpoints beside it would stay in the config's directory.
    """
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    loggers = config["trainer"]["logger"]
    for logger in loggers:
        logger.setdefault("init_args", {})["save_dir"] = str(runs)
    return loggers


def scene_share_of_top1_errors(S: torch.Tensor, indices: torch.Tensor, manifest_path: Path) -> float | None:
    """Of the captions whose top-1 image is wrong, the share whose top-1 image has the right scene."""
    manifest = load_manifest(manifest_path)
    scenes = [place_label(manifest.images[i].decode()) for i in indices.tolist()]
    top1 = S.argmax(dim=0).tolist()  # best image row per caption column
    errors = [(q, r) for q, r in enumerate(top1) if r != q]
    if not errors:
        return None
    return sum(scenes[q] == scenes[r] for q, r in errors) / len(errors)


def main() -> int:
    minutes = float(os.environ.get("DEMO_MINUTES", "10") or 10)
    sizes = {"train": _env_int("DEMO_TRAIN", 8000), "val": _env_int("DEMO_VAL", 500),
             "test": _env_int("DEMO_TEST", 500)}
    root = Path(os.environ.get("DEMO_DATA", REPO / "data" / "spokenscenes"))
    runs = Path(os.environ.get("DEMO_RUNS", REPO / "runs" / "demo"))
    torch.set_num_threads(os.cpu_count() or 1)

    ensure_data(root, sizes)
    cache = ensure_cache(root)

    hh, mm, ss = int(minutes // 60), int(minutes % 60), int(round((minutes % 1) * 60))
    common = [
        "--config", str(REPO / "configs" / "demo.yaml"),
        f"--data.train_manifest={root / 'train.json'}",
        f"--data.val_manifest={root / 'val.json'}",
        f"--data.test_manifest={root / 'test.json'}",
        f"--data.feature_cache={cache}",
        f"--trainer.default_root_dir={runs}",
        f"--trainer.logger={json.dumps(loggers_in(runs))}",
    ]
    print(f"[demo] training configs/demo.yaml for {minutes:g} minutes of wall time")
    start = time.time()
    fit = cli.main(["fit", *common, f"--trainer.max_time=00:{hh:02d}:{mm:02d}:{ss:02d}"])
    train_minutes = (time.time() - start) / 60
    # The test run below logs into a new CSV version: take the curve from the fit's own log.
    fit_csv = next((Path(lg.log_dir) / "metrics.csv" for lg in fit.trainer.loggers if isinstance(lg, CSVLogger)), None)
    ckpt_cb = fit.trainer.checkpoint_callback
    best = ckpt_cb.best_model_path or ckpt_cb.last_model_path
    print(f"[demo] best checkpoint {best} (val mean R@10 {float(ckpt_cb.best_model_score or 0):.3f})")

    tested = cli.main(["test", *common, f"--ckpt_path={best}"])
    model = tested.model
    metrics = dict(model.last_test_metrics)
    result = {k.split("/", 1)[1]: v for k, v in metrics.items()}
    result["best_checkpoint"] = str(Path(best).resolve())
    result["train_minutes"] = round(train_minutes, 2)
    result["test_pairs"] = int(model.test_recall.last_indices.numel())
    result["top1_errors_with_right_scene"] = scene_share_of_top1_errors(
        model.test_recall.last_similarity.cpu(), model.test_recall.last_indices.cpu(), root / "test.json"
    )
    result["learning_curve"] = validation_curve(fit_csv, ("val/mean_R@10", "val/mean_R@1")) if fit_csv else []
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "metrics.json").write_text(json.dumps(result, indent=1))

    print("\n[demo] test recall on SpokenScenes ({} pairs, chance R@10 = {:.3f})".format(
        result["test_pairs"], 10 / max(result["test_pairs"], 1)))
    print(f"{'direction':<22}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'median rank':>13}")
    for prefix, label in (("a2i", "caption -> image"), ("i2a", "image -> caption")):
        print(f"{label:<22}{result[f'{prefix}_R@1']:>8.3f}{result[f'{prefix}_R@5']:>8.3f}"
              f"{result[f'{prefix}_R@10']:>8.3f}{result[f'{prefix}_median_rank']:>13.0f}")
    print(f"{'mean':<22}{result['mean_R@1']:>8.3f}{result['mean_R@5']:>8.3f}{result['mean_R@10']:>8.3f}")
    share = result["top1_errors_with_right_scene"]
    if share is not None:
        print(f"top-1 errors whose image has the right scene: {share:.0%}")
    print(f"\n[demo] metrics: {runs / 'metrics.json'}; W&B offline run under {runs / 'wandb'} (upload: wandb sync)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
