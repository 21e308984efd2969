"""End to end: each prepared corpus fixture fits and tests through the CLI with a paper config composed with its
configs/data/*.yaml, and SpokenScenes with two captions per image trains and validates over unique images."""

from __future__ import annotations

from pathlib import Path

import corpus_layouts as layouts
import pytest
from test_cli import TINY_MODEL

import cli
from datamodules.prepare import prepare

REPO = Path(__file__).parent.parent


def _tiny_run(paper: str, data_config: str | None, manifests: dict[str, Path], run_dir: Path, model: str,
              extra: tuple[str, ...] = ()) -> list[str]:
    args = ["--config", str(REPO / "configs" / paper)]
    if data_config:
        args += ["--config", str(REPO / "configs" / "data" / data_config)]
    args += [*TINY_MODEL[model], "--model.pretrained_image=false",
             *[f"--data.{split}_manifest={path}" for split, path in manifests.items()],
             "--data.batch_size=4", "--data.num_workers=0", "--data.image_size=32", "--data.target_length=64",
             "--data.feature_cache=null",
             "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.max_epochs=1",
             "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
             "--trainer.callbacks=[]", f"--trainer.default_root_dir={run_dir}", *extra]
    return args


def _fit_then_test(paper: str, data_config: str, manifests: dict[str, Path], run_dir: Path, model: str):
    """fit -> test of the last checkpoint; returns the tested module (its test_recall keeps the last S)."""
    fit = cli.main(["fit", *_tiny_run(paper, data_config, manifests, run_dir, model)])
    last = fit.trainer.checkpoint_callback.best_model_path or next(
        cb.best_model_path for cb in fit.trainer.checkpoint_callbacks if isinstance(cb, cli.LatestCheckpoint))
    assert last and Path(last).exists()
    tested = cli.main(["test", *_tiny_run(paper, data_config, manifests, run_dir, model, (f"--ckpt_path={last}",))])
    metrics = {k: float(v) for k, v in tested.trainer.callback_metrics.items()}
    for key in ("test/a2i_R@1", "test/i2a_R@1", "test/mean_R@10"):
        assert 0.0 <= metrics[key] <= 1.0, key
    return tested.model


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """The three corpus fixtures, prepared once: corpus -> folder of its manifests."""
    root = tmp_path_factory.mktemp("corpora")
    flickr = layouts.flickr8k(root / "flickr8k")
    coco = layouts.spokencoco(root / "coco", official=False)
    places = layouts.places(root / "places")
    prepare(["flickr8k", "--root", str(flickr["root"]), "--out", str(root / "out_flickr8k"), "--no-progress"])
    prepare(["spokencoco", "--root", str(coco["root"]), "--coco-root", str(coco["coco_root"]),
             "--out", str(root / "out_spokencoco"), "--no-progress"])
    prepare(["places", "--root", str(places["root"]), "--images", str(places["images"]),
             "--out", str(root / "out_places"), "--no-progress"])
    return {name: root / f"out_{name}" for name in ("flickr8k", "spokencoco", "places")}


CASES = [  # corpus, paper config, model, test split, (unique test images, test captions)
    ("flickr8k", "resdavenet.yaml", "ResDAVEnet", "test", (2, 10)),
    ("spokencoco", "davenet.yaml", "DAVEnet", "test", (2, 9)),
    ("places", "davenet.yaml", "DAVEnet", "val", (4, 4)),
]


@pytest.mark.slow
@pytest.mark.parametrize("corpus, paper, model, test_split, shape", CASES, ids=[c[0] for c in CASES])
def test_prepared_corpus_fits_and_tests_through_the_cli(corpora, tmp_path, corpus, paper, model, test_split, shape):
    out = corpora[corpus]
    manifests = {"train": out / "train.json", "val": out / "val.json", "test": out / f"{test_split}.json"}
    tested = _fit_then_test(paper, f"{corpus}.yaml", manifests, tmp_path, model)
    assert tuple(tested.test_recall.last_similarity.shape) == shape  # [unique images x captions]


@pytest.mark.slow
def test_spokenscenes_with_two_captions_per_image_trains_and_validates(tmp_path):
    from datamodules.spokenscenes import generate

    generate(tmp_path / "ss", train=6, val=3, test=0, seed=0, image_size=32, workers=1, progress=False,
             captions_per_image=2)
    manifests = {"train": tmp_path / "ss" / "train.json", "val": tmp_path / "ss" / "val.json"}
    args = _tiny_run("demo.yaml", None, manifests, tmp_path / "run", "DAVEnet",
                     ("--data.test_manifest=null", "--trainer.max_time=00:00:05:00"))
    args = [a for a in args if not a.startswith("--model.pretrained_image")]
    fit = cli.main(["fit", *args])
    model = fit.model
    assert fit.trainer.global_step == 2 and "val/mean_R@10" in fit.trainer.callback_metrics
    # the validation ranked the 3 unique images against their 6 captions, captions of one image side by side
    assert tuple(model.val_recall.last_similarity.shape) == (3, 6)
    assert model.val_recall.last_caption_image.tolist() == [0, 0, 1, 1, 2, 2]
