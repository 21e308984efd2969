"""The command line: every config fits and tests on a tiny SpokenScenes, prints its config, resumes, predicts."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

import cli

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
# resdavenet_vq.yaml's fit -> test runs in tests/test_vq.py, seeded from a {} checkpoint as its recipe is meant to
ROUND_TRIP = [c for c in CONFIGS if c.stem != "resdavenet_vq"]
REPO = Path(__file__).parent.parent

# Tiny sizes for every model; the rest of each config (loss, optimiser, schedule, transforms) is kept.
TINY_MODEL = {
    "NIPS2016": ["--model.embedding_dim=16", "--model.audio_width_mult=0.05", "--model.image_width_mult=0.02"],
    "ACL2017": ["--model.embedding_dim=16", "--model.audio_width_mult=0.05", "--model.image_width_mult=0.02"],
    "DAVEnet": ["--model.embedding_dim=16", "--model.audio_width_mult=0.06", "--model.image_width_mult=0.06"],
    "ResDAVEnet": ["--model.layer_widths=[8,8,16,16,16]", "--model.image_arch=resnet18",
                   "--model.image_width_mult=0.125"],
    "ResDAVEnetVQ": ["--model.layer_widths=[8,8,16,16,16]", "--model.image_arch=resnet18",
                     "--model.image_width_mult=0.125"],
    "PlaceClassifier": ["--model.audio_net.init_args.embedding_dim=16", "--model.audio_net.init_args.width_mult=0.06"],
}


def _model_name(config: Path) -> str:
    return yaml.safe_load(config.read_text())["model"]["class_path"].rsplit(".", 1)[-1]


def _tiny_args(config: Path, scenes: Path, run_dir: Path, extra: list[str] = ()) -> list[str]:
    name = _model_name(config)
    args = [
        "--config", str(config),
        *TINY_MODEL[name],
        "--model.pretrained_image=false" if name != "PlaceClassifier" else "--model.pooling=mean",
        f"--data.train_manifest={scenes / 'train.json'}",
        f"--data.val_manifest={scenes / 'val.json'}",
        f"--data.test_manifest={scenes / 'test.json'}",
        "--data.feature_cache=null",
        "--data.batch_size=4", "--data.num_workers=0", "--data.image_size=32",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.max_epochs=1", "--trainer.max_time=00:00:05:00",
        "--trainer.limit_train_batches=3", "--trainer.enable_progress_bar=false",
        "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={run_dir}", "--trainer.callbacks=[]",
        f"--trainer.default_root_dir={run_dir}",
        *extra,
    ]
    return args


def _run(subcommand: str, args: list[str]):
    return cli.main([subcommand, *args])


def _latest(trainer) -> str:
    return next(cb for cb in trainer.checkpoint_callbacks if isinstance(cb, cli.LatestCheckpoint)).best_model_path


@pytest.mark.slow
@pytest.mark.parametrize("config", ROUND_TRIP, ids=[c.stem for c in ROUND_TRIP])
def test_fit_then_test_round_trip(config, spokenscenes, tmp_path):
    fit = _run("fit", _tiny_args(config, spokenscenes, tmp_path))
    best = fit.trainer.checkpoint_callback.best_model_path or fit.trainer.checkpoint_callback.last_model_path
    assert best and os.path.exists(best)
    # The full config sits beside the checkpoints, and a second run does not clash with it.
    run_dir = Path(best).parent.parent
    assert (run_dir / "config.yaml").exists()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["class_path"].endswith(_model_name(config))

    tested = _run("test", _tiny_args(config, spokenscenes, tmp_path, ["--ckpt_path", best]))
    # the test run keeps its own config, named by its stage, and leaves the fit's config.yaml alone
    assert [p.name for p in tmp_path.rglob("config-*.yaml")] == ["config-test.yaml"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == saved
    metrics = {k: float(v) for k, v in tested.trainer.callback_metrics.items()}
    if _model_name(config) == "PlaceClassifier":
        assert 0.0 <= metrics["test/acc_top1"] <= metrics["test/acc_top5"] <= 1.0
    else:
        for key in ("test/a2i_R@1", "test/i2a_R@10", "test/mean_R@10"):
            assert 0.0 <= metrics[key] <= 1.0, key
        assert metrics["test/a2i_R@1"] <= metrics["test/a2i_R@5"] <= metrics["test/a2i_R@10"]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_print_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].endswith(_model_name(config))
    assert printed["checkpoint"]["monitor"] in ("val/mean_R@10", "val/acc_top1")
    original = yaml.safe_load(config.read_text())
    for key, value in original["model"]["init_args"].items():
        if not isinstance(value, dict):
            assert printed["model"]["init_args"][key] == value, key


def test_short_model_names_resolve():
    parsed = cli.main(["--model=ResDAVEnet", "--model.layer_widths=[8,8,16,16,16]",
                       "--model.image_arch=resnet18", "--trainer.logger=false"], run=False)
    assert type(parsed.model).__name__ == "ResDAVEnet"
    assert parsed.model.audio_net.embedding_dim == 16


@pytest.mark.slow
def test_resume_continues_optimizer_schedule_epoch_and_best_score(spokenscenes, tmp_path):
    from cli_helpers import Crash

    config = REPO / "configs" / "davenet.yaml"
    first = _run("fit", _tiny_args(config, spokenscenes, tmp_path, ["--trainer.max_epochs=2"]))
    ckpt_cb = first.trainer.checkpoint_callback
    best_score, last = float(ckpt_cb.best_model_score), _latest(first.trainer)
    assert os.path.basename(last) == "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["epoch"] == 1

    # Resume from "last" and crash in the middle of the third epoch, as a killed job would.
    record = tmp_path / "resumed.json"
    crash = json.dumps([{"class_path": "cli_helpers.CrashAtBatch",
                         "init_args": {"record": str(record), "epoch": 2, "batch_idx": 1}}])
    args = _tiny_args(config, spokenscenes, tmp_path, ["--trainer.max_epochs=4", "--ckpt_path=last",
                                                       f"--trainer.callbacks={crash}"])
    with pytest.raises(Crash):
        _run("fit", args)
    resumed = json.loads(record.read_text())
    assert resumed["epoch"] == 2 and resumed["global_step"] == state["global_step"]
    assert resumed["optimizer_state_entries"] > 0  # SGD momentum buffers came back
    assert resumed["best_model_score"] == pytest.approx(best_score)
    assert resumed["lr"] == pytest.approx(1e-3)  # DAVEnet's step schedule: epoch 2 of 40 keeps the base rate
    # It continued in the original run's checkpoint folder, so a second resume finds the same files.
    assert os.path.normpath(resumed["checkpoint_dir"]) == os.path.dirname(last)

    # A second resume picks up the newest last.ckpt (still epoch 1: the crash came before epoch 2 ended).
    record.unlink()
    args = _tiny_args(config, spokenscenes, tmp_path, ["--trainer.max_epochs=3", "--ckpt_path=last"])
    done = _run("fit", args)
    assert done.trainer.current_epoch == 3 and done.trainer.global_step == state["global_step"] + 3


@pytest.mark.slow
def test_predict_writes_spoken_search_results(spokenscenes, tmp_path):
    config = REPO / "configs" / "demo.yaml"
    fit = _run("fit", _tiny_args(config, spokenscenes, tmp_path))
    ckpt = _latest(fit.trainer)
    out = tmp_path / "search.json"
    _run("predict", _tiny_args(config, spokenscenes, tmp_path, [
        "--ckpt_path", ckpt, f"--data.predict_manifest={spokenscenes / 'test.json'}",
        f"--search.output={out}", "--search.top_k=3", "--search.direction=both"]))
    result = json.loads(out.read_text())
    n_test = len(json.loads((spokenscenes / "test.json").read_text())["data"])
    assert len(result["a2i"]) == n_test and len(result["i2a"]) == n_test
    first = result["a2i"][0]
    assert first["query"]["uttid"] and first["query"]["wav"].endswith(".wav")
    assert [r["rank"] for r in first["results"]] == [1, 2, 3]
    scores = [r["score"] for r in first["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(r["image"].endswith(".jpg") for r in first["results"])
    for query in result["a2i"]:  # the reported rank of the caption's own image agrees with its top results
        own_first = query["results"][0]["image"] == query["query"]["image"]
        assert (query["own_image_rank"] == 1) == own_first
    assert result["i2a"][0]["query"]["image"] and len(result["i2a"][0]["results"]) == 3


@pytest.mark.slow
def test_place_warmup_then_retrieval_warm_start(spokenscenes, tmp_path):
    """The README's flow: fit the place classifier, then DAVEnet with its audio net as the starting point."""
    warm = _run("fit", _tiny_args(REPO / "configs" / "place_warmup.yaml", spokenscenes, tmp_path / "warm"))
    best = warm.trainer.checkpoint_callback.best_model_path
    assert best and warm.model.hparams.n_places == 16  # the 16 scene classes of the tiny training split
    warm_audio = {k: v.clone() for k, v in warm.model.audio_net.state_dict().items()}

    retrieval = cli.main(["fit", *_tiny_args(REPO / "configs" / "davenet.yaml", spokenscenes, tmp_path / "ret",
                                             [f"--model.audio_encoder_ckpt={best}", "--trainer.max_epochs=0"])])
    loaded = retrieval.model.audio_net.state_dict()
    assert set(loaded) == set(warm_audio)
    for key, value in warm_audio.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.slow
def test_wandb_offline_dashboard_and_full_config(spokenscenes, tmp_path, monkeypatch):
    """Offline W&B: recall, matchmap overlays, a retrieval table and the full CLI config land in the run."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = REPO / "configs" / "demo.yaml"
    args = _tiny_args(config, spokenscenes, tmp_path)
    args = [a for a in args if not a.startswith(("--trainer.logger", "--trainer.callbacks"))]
    args += ["--trainer.logger=WandbLogger", "--trainer.logger.offline=true", f"--trainer.logger.save_dir={tmp_path}",
             "--trainer.logger.project=vgs-test",
             '--trainer.callbacks=[{"class_path": "lightning_modules.wandb_logging.WandbDashboard", '
             '"init_args": {"n_pairs": 2, "n_queries": 3}}]']
    fit = _run("fit", args)
    run_config = dict(fit.trainer.logger.experiment.config)
    fit.trainer.logger.experiment.finish()
    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    media = glob.glob(runs[0] + "/files/media/**/*", recursive=True)
    assert any("matchmap_overlay" in m and m.endswith(".png") for m in media), media
    assert any("retrieval_examples" in m and m.endswith(".table.json") for m in media), media
    assert run_config["cli"]["model"]["class_path"] == "lightning_modules.DAVEnet"
    assert run_config["cli"]["data"]["image_transform"] == "resize_flip"
    # the config also sits beside the checkpoints of this run
    ckpt_dir = Path(fit.trainer.checkpoint_callback.best_model_path).parent
    assert (ckpt_dir.parent / "config.yaml").exists()
