"""`make demo`: generate SpokenScenes, train the demo DAVEnet on the CPU, test the best checkpoint, print recall.

    python scripts/demo.py            # what `make demo` runs
    DEMO_MAX_MINUTES=5 make demo      # stop training after 5 minutes at the latest (the result then differs)

Steps:
1. generate SpokenScenes into data/spokenscenes; kept when it is complete with the same sizes (manifests, file
   counts), completed when an earlier `make demo` was interrupted;
2. precompute the log-mel feature cache (`python -m datamodules.cache`), likewise kept or completed;
3. train configs/demo.yaml for its fixed budget of optimiser steps (max_epochs x 250 steps of 32 pairs) with a
   progress bar and ETA; the result does not depend on the machine's speed or load, only the time does;
4. test the best checkpoint (by validation mean R@10) on the test split;
5. write runs/demo/metrics.json and print the recall table.

Threads: torch runs THREADS threads with libgomp's OMP_WAIT_POLICY=PASSIVE (set before torch is imported):
see THREADS below for the measurements behind the choice. Results are bit-identical run to run for one torch
build, CPU type and thread count.

Environment: DEMO_EPOCHS (default: the config's max_epochs), DEMO_MAX_MINUTES (optional wall-clock cap; off),
DEMO_TRAIN / DEMO_VAL / DEMO_TEST (default 8000 / 500 / 500 pairs), DEMO_DATA (default data/spokenscenes),
DEMO_RUNS (default runs/demo), DEMO_THREADS (default THREADS).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The thread setting, measured with python -m benchmarks.demo_threads (see benchmarks/README.md): filled in below.
THREADS = 2
WAIT_POLICY = "PASSIVE"
# OpenMP reads these once, when torch loads it.
os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)

import torch  # noqa: E402
import yaml  # noqa: E402
from pytorch_lightning.loggers import CSVLogger  # noqa: E402

import cli  # noqa: E402
from datamodules import load_manifest  # noqa: E402
from datamodules.cache import FeatureStore, build_cache  # noqa: E402
from datamodules.errors import FeatureCacheError  # noqa: E402
from datamodules.manifest import place_label  # noqa: E402
from datamodules.spokenscenes import check_dataset, generate  # noqa: E402
from scripts.csvlog import validation_curve  # noqa: E402


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def ensure_data(root: Path, sizes: dict[str, int]) -> None:
    """SpokenScenes with these sizes in `root`: kept when complete, completed after an interrupted run, else made."""
    problems = check_dataset(root, **sizes, seed=0, image_size=128)
    if not problems:
        print(f"[demo] SpokenScenes already in {root} ({sizes})")
        return
    print(f"[demo] generating SpokenScenes into {root}: {sizes} ({problems[0]})")
    report = generate(root, seed=0, image_size=128, resume=root.exists(), **sizes)
    kept = f", kept the complete {', '.join(report['kept'])} split(s)" if report["kept"] else ""
    print(f"[demo] {sum(report['counts'].values())} pairs in {report['seconds']:.0f} s{kept}")
    left = check_dataset(root, **sizes, seed=0, image_size=128)
    if left:
        raise RuntimeError(f"SpokenScenes in {root} is still incomplete after generating it: {left[0]}")


def ensure_cache(root: Path) -> Path:
    """The log-mel feature cache of every split, (re)built where it is missing or stale."""
    cache = root / "cache"
    for split in ("train", "val", "test"):
        manifest = root / f"{split}.json"
        try:
            FeatureStore.open(cache, load_manifest(manifest))
        except FeatureCacheError:
            print(f"[demo] caching log-mel features of {manifest.name}")
            build_cache(manifest, cache, num_workers=min(2, os.cpu_count() or 1), progress=True)
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


def _load() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def main() -> int:
    sizes = {"train": _env_int("DEMO_TRAIN", 8000), "val": _env_int("DEMO_VAL", 500),
             "test": _env_int("DEMO_TEST", 500)}
    root = Path(os.environ.get("DEMO_DATA", REPO / "data" / "spokenscenes"))
    runs = Path(os.environ.get("DEMO_RUNS", REPO / "runs" / "demo"))
    threads = _env_int("DEMO_THREADS", THREADS)
    torch.set_num_threads(threads)
    cap = os.environ.get("DEMO_MAX_MINUTES", "").strip() or os.environ.get("DEMO_MINUTES", "").strip()
    config_epochs = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())["trainer"]["max_epochs"]
    epochs = _env_int("DEMO_EPOCHS", config_epochs)

    ensure_data(root, sizes)
    cache = ensure_cache(root)

    common = [
        "--config", str(REPO / "configs" / "demo.yaml"),
        f"--data.train_manifest={root / 'train.json'}",
        f"--data.val_manifest={root / 'val.json'}",
        f"--data.test_manifest={root / 'test.json'}",
        f"--data.feature_cache={cache}",
        f"--trainer.default_root_dir={runs}",
        f"--trainer.logger={json.dumps(loggers_in(runs))}",
    ]
    budget = [f"--trainer.max_epochs={epochs}"]
    if cap:
        minutes = float(cap)
        hh, mm, ss = int(minutes // 60), int(minutes % 60), int(round((minutes % 1) * 60))
        budget.append(f"--trainer.max_time=00:{hh:02d}:{mm:02d}:{ss:02d}")
    steps_per_epoch = sizes["train"] // 32  # batch 32, drop_last
    print(f"[demo] training configs/demo.yaml for {epochs} epochs ({epochs * steps_per_epoch} steps; {threads} torch "
          f"thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; {_load()})"
          + (f", stopping after {cap} minutes at the latest" if cap else ""))
    start = time.time()
    fit = cli.main(["fit", *common, *budget])
    train_minutes = (time.time() - start) / 60
    steps = fit.trainer.global_step
    if steps < epochs * steps_per_epoch:
        print(f"[demo] the wall-clock cap stopped training at step {steps} of {epochs * steps_per_epoch}: the learning "
              "rate had not decayed and the numbers differ from the README's")
    # The test run below logs into a new CSV version: take the curve from the fit's own log.
    fit_csv = next((Path(lg.log_dir) / "metrics.csv" for lg in fit.trainer.loggers if isinstance(lg, CSVLogger)), None)
    ckpt_cb = fit.trainer.checkpoint_callback
    best = ckpt_cb.best_model_path or ckpt_cb.last_model_path
    print(f"[demo] best checkpoint {best} (val mean R@10 {float(ckpt_cb.best_model_score or 0):.3f}); {_load()}")

    tested = cli.main(["test", *common, f"--ckpt_path={best}"])
    model = tested.model
    metrics = dict(model.last_test_metrics)
    result = {k.split("/", 1)[1]: v for k, v in metrics.items()}
    result["best_checkpoint"] = str(Path(best).resolve())
    result["train_minutes"] = round(train_minutes, 2)
    result["train_steps"] = int(steps)
    result["threads"] = threads
    result["torch"] = torch.__version__
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
