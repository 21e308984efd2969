"""Run management: --ckpt_path last/best/last:<run>/none, one folder per run, unreadable checkpoints, clear errors."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from test_cli import _tiny_args

import cli
from lightning_modules.checkpoint_io import CheckpointReadError, read_run_checkpoint
from lightning_modules.runs import RunResolutionError

REPO = Path(__file__).parent.parent
DAVENET, ACL2017, DEMO, WARMUP = (REPO / "configs" / f"{c}.yaml" for c in ("davenet", "acl2017", "demo",
                                                                            "place_warmup"))


def _args(config: Path, scenes: Path, root: Path, extra: list[str] = ()) -> list[str]:
    """A tiny run without a logger: every run of every config lands in `root` (one shared folder)."""
    return _tiny_args(config, scenes, root, ["--trainer.logger=false", "--trainer.limit_train_batches=2", *extra])


def _resolved(result) -> str | None:
    return result.config[result.subcommand].ckpt_path


@pytest.fixture(scope="module")
def shared_folder(spokenscenes, tmp_path_factory):
    """A DAVEnet run, then an ACL2017 run, both into one default_root_dir and no logger."""
    root = tmp_path_factory.mktemp("runs")
    davenet = cli.main(["fit", *_args(DAVENET, spokenscenes, root)])
    first_last = Path(cli_latest(davenet))
    first_bytes = first_last.read_bytes()
    acl = cli.main(["fit", *_args(ACL2017, spokenscenes, root)])
    return {"root": root, "davenet": Path(cli_latest(davenet)), "acl": Path(cli_latest(acl)),
            "davenet_bytes": first_bytes}


def cli_latest(result) -> str:
    callbacks = result.trainer.checkpoint_callbacks
    return next(cb for cb in callbacks if isinstance(cb, cli.LatestCheckpoint)).best_model_path


@pytest.mark.slow
def test_each_fresh_run_gets_its_own_folder_without_a_logger(shared_folder):
    root, davenet, acl = shared_folder["root"], shared_folder["davenet"], shared_folder["acl"]
    assert davenet.parent.parent == root / "version_0" and acl.parent.parent == root / "version_1"
    assert davenet.read_bytes() == shared_folder["davenet_bytes"]  # the second run did not overwrite the first
    assert (root / "version_0" / "config.yaml").exists() and (root / "version_1" / "config.yaml").exists()
    assert not (root / "checkpoints").exists()


@pytest.mark.slow
def test_two_experiments_in_one_folder_each_resume_their_own_run(shared_folder, spokenscenes, capsys):
    root = shared_folder["root"]
    # max_epochs=1: the runs ended at epoch 1, so a resume restores everything and stops at once.
    resumed = cli.main(["fit", *_args(DAVENET, spokenscenes, root, ["--ckpt_path=last"])])
    assert _resolved(resumed) == str(shared_folder["davenet"])  # not the newer ACL2017 run
    assert Path(resumed.trainer.checkpoint_callback.dirpath) == shared_folder["davenet"].parent
    assert resumed.trainer.current_epoch == 1 and resumed.trainer.global_step == 2
    resumed = cli.main(["fit", *_args(ACL2017, spokenscenes, root, ["--ckpt_path=last"])])
    assert _resolved(resumed) == str(shared_folder["acl"])

    # Naming a run of another experiment is refused, and says why.
    with pytest.raises(RunResolutionError, match=r"version_1 is another experiment.*model\.class_path"):
        cli.main(["fit", *_args(DAVENET, spokenscenes, root, ["--ckpt_path=last:version_1"])])
    with pytest.raises(RunResolutionError, match=r"no run folder or W&B run id 'nope'.*version_0"):
        cli.main(["fit", *_args(DAVENET, spokenscenes, root, ["--ckpt_path=last:nope"])])
    named = cli.main(["fit", *_args(DAVENET, spokenscenes, root, [f"--ckpt_path=last:{root / 'version_0'}"])])
    assert _resolved(named) == str(shared_folder["davenet"])

    # Other hyperparameters are another experiment: `last` starts it from scratch in its own folder.
    with pytest.warns(UserWarning, match=r"no earlier run of this model and config.*model\.init_args\.lr"):
        other = cli.main(["fit", *_args(DAVENET, spokenscenes, root, ["--ckpt_path=last", "--model.lr=0.5",
                                                                       "--trainer.max_epochs=0"])])
    assert _resolved(other) is None and Path(other.trainer.checkpoint_callback.dirpath).parent.name == "version_2"


@pytest.mark.slow
def test_resume_falls_back_from_an_unreadable_last_checkpoint(shared_folder, spokenscenes, tmp_path):
    run = tmp_path / "version_0"
    shutil.copytree(shared_folder["davenet"].parent.parent, run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # a write cut short
    with pytest.warns(UserWarning, match=r"last\.ckpt: truncated.*using .*best-epoch000\.ckpt instead"):
        resumed = cli.main(["fit", *_args(DAVENET, spokenscenes, tmp_path, ["--ckpt_path=last"])])
    assert os.path.basename(_resolved(resumed)) == "best-epoch000.ckpt"
    # An explicit path is not switched silently: the error names the file, the reason and the readable one.
    with pytest.raises(CheckpointReadError, match=r"last\.ckpt: truncated .*best-epoch000\.ckpt"):
        cli.main(["fit", *_args(DAVENET, spokenscenes, tmp_path, [f"--ckpt_path={last}"])])


@pytest.mark.slow
def test_evaluation_resolves_last_and_refuses_random_weights(shared_folder, spokenscenes):
    root = shared_folder["root"]
    for subcommand in ("test", "validate", "predict"):
        with pytest.raises(RunResolutionError, match=f"{subcommand} needs weights.*'none'"):
            cli.main([subcommand, *_args(DAVENET, spokenscenes, root)])
    tested = cli.main(["test", *_args(DAVENET, spokenscenes, root, ["--ckpt_path=last"])])
    assert _resolved(tested) == str(shared_folder["davenet"])
    assert (root / "version_0" / "config-test.yaml").exists()  # beside the run it evaluated
    assert tested.trainer.ckpt_path == str(shared_folder["davenet"])  # the weights it restored
    with pytest.warns(UserWarning, match="untrained"):
        untrained = cli.main(["test", *_args(DAVENET, spokenscenes, root, ["--ckpt_path=none"])])
    assert untrained.model.last_test_metrics != tested.model.last_test_metrics
    best = cli.main(["validate", *_args(ACL2017, spokenscenes, root, ["--ckpt_path=best"])])
    assert Path(_resolved(best)) == shared_folder["acl"].parent / "best-epoch000.ckpt"
    with pytest.raises(RunResolutionError, match="no earlier run of this model and config"):
        cli.main(["test", *_args(DAVENET, spokenscenes, root, ["--ckpt_path=last", "--model.embedding_dim=8"])])


@pytest.mark.slow
def test_test_and_predict_need_no_train_manifest_and_ignore_other_classes(shared_folder, spokenscenes, tmp_path,
                                                                          make_manifest):
    root, ckpt = shared_folder["root"], shared_folder["davenet"]
    missing = f"--data.train_manifest={tmp_path / 'gone.json'}"
    tested = cli.main(["test", *_args(DAVENET, spokenscenes, root, [missing, f"--ckpt_path={ckpt}"])])
    assert "test/mean_R@10" in tested.model.last_test_metrics
    out = tmp_path / "search.json"
    cli.main(["predict", *_args(DAVENET, spokenscenes, root, [
        missing, f"--ckpt_path={ckpt}", f"--data.predict_manifest={spokenscenes / 'test.json'}",
        f"--search.output={out}"])])
    assert out.exists()
    # A place classifier is tested with its checkpoint's label map, whatever classes the train manifest has.
    fit = cli.main(["fit", *_args(WARMUP, spokenscenes, tmp_path)])
    others = make_manifest(n=3, name="others", classes=("kitchen/indoor", "zoo", "yard"))
    tested = cli.main(["test", *_args(WARMUP, spokenscenes, tmp_path, [
        f"--data.train_manifest={others}", f"--ckpt_path={fit.trainer.checkpoint_callback.best_model_path}"])])
    assert 0.0 <= tested.model.last_test_metrics["test/acc_top1"] <= 1.0


@pytest.mark.slow
def test_wandb_run_id_is_carried_across_a_resume_and_a_missing_cache_is_built(spokenscenes, tmp_path):
    # The demo config pointed at other manifests and an empty cache folder: the cache is built on demand.
    cache = tmp_path / "cache"
    args = [a for a in _tiny_args(DEMO, spokenscenes, tmp_path) if not a.startswith("--trainer.logger")]
    args += ["--trainer.logger=WandbLogger", f"--trainer.logger.save_dir={tmp_path}", "--trainer.logger.project=p",
             "--trainer.limit_train_batches=2", f"--data.feature_cache={cache}"]
    first = cli.main(["fit", *args])
    assert first.datamodule.train_dataset.store is not None and {p.name for p in cache.iterdir()} == {"train", "val"}
    run_id = first.trainer.logger.version
    assert json.loads((tmp_path / "p" / run_id / "run.json").read_text())["wandb_run_id"] == run_id
    resumed = cli.main(["fit", *args, f"--ckpt_path=last:{run_id}"])
    assert resumed.trainer.logger.version == run_id
    assert Path(resumed.trainer.checkpoint_callback.dirpath) == tmp_path / "p" / run_id / "checkpoints"


# ---- unreadable checkpoints and one-line errors (no training) -------------------------------------------------
def _checkpoint(path: Path, class_path: str = "lightning_modules.davenet.DAVEnet") -> Path:
    torch.save({"state_dict": {"w": torch.ones(3)}, "epoch": 0, "global_step": 0,
                "hyper_parameters": {"_class_path": class_path}}, path)
    return path


def test_read_checkpoint_says_truncated_not_a_checkpoint_or_from_another_model(tmp_path):
    good = _checkpoint(tmp_path / "good.ckpt")
    assert read_run_checkpoint(good)["epoch"] == 0
    assert read_run_checkpoint(good, model_class_path="lightning_modules.DAVEnet")  # the same class, another path
    cases = {
        "truncated": ("cut.ckpt", good.read_bytes()[: good.stat().st_size // 2]),
        "truncated (0 bytes": ("empty.ckpt", b""),
        "not a checkpoint (not a torch file": ("text.ckpt", b"hello, I am not a checkpoint\n"),
    }
    for reason, (name, content) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointReadError, match=re.escape(f"{name}: {reason}")):
            read_run_checkpoint(tmp_path / name)
    torch.save({"conv1.weight": torch.ones(2)}, tmp_path / "official.pth")
    with pytest.raises(CheckpointReadError, match=r"official\.pth: not a checkpoint .*lightning_modules\.convert"):
        read_run_checkpoint(tmp_path / "official.pth")
    with pytest.raises(CheckpointReadError, match=r"good\.ckpt: from another model: it holds a DAVEnet"):
        read_run_checkpoint(good, model_class_path="lightning_modules.ACL2017")
    with pytest.raises(CheckpointReadError, match="missing.ckpt: no such file"):
        read_run_checkpoint(tmp_path / "missing.ckpt")


def test_console_errors_are_one_line_naming_the_file(tmp_path, capsys):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(_checkpoint(tmp_path / "good.ckpt").read_bytes()[:100])
    acl = _checkpoint(tmp_path / "acl.ckpt", "lightning_modules.acl2017.ACL2017")
    for ckpt, reason in ((cut, "truncated"), (acl, "from another model")):
        with pytest.raises(SystemExit) as exit_info:
            cli.cli_main(["test", "--config", str(DAVENET), f"--ckpt_path={ckpt}", "--trainer.logger=false"])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: checkpoint {ckpt}: {reason}"), err
    # A manifest error, raised while the data is set up, is one line too.
    with pytest.raises(SystemExit):
        cli.cli_main(["validate", "--config", str(DAVENET), "--ckpt_path=none", "--trainer.logger=false",
                      "--model.pretrained_image=false", "--model.embedding_dim=8", "--model.audio_width_mult=0.05",
                      "--model.image_width_mult=0.02", f"--data.val_manifest={tmp_path / 'nope.json'}",
                      f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: manifest not found: {tmp_path / 'nope.json'}"
    assert not any("Traceback" in line for line in err)


def test_bad_model_name_lists_the_models_and_loss_help_is_short(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fit", "--model=DAVEnett", "--trainer.logger=false"])
    err = capsys.readouterr().err
    assert "--model=DAVEnett is not a model; choose one of ACL2017, DAVEnet, NIPS2016, PlaceClassifier, " \
        "ResDAVEnet" in err
    with pytest.raises(SystemExit):
        cli.main(["fit", "--model.help", "DAVEnet"])
    out = capsys.readouterr().out
    assert "lightning_modules.core.losses.InfoNCELoss" in out and "torch.nn.modules" not in out
    assert len(out.splitlines()) < 200  # was 880 lines: --model.loss listed every nn.Module of torch
