"""Recall@k is exact under multi-process DDP: 2 CPU processes (gloo) give what 1 process gives.

The validation loop inside `fit` pads the odd-sized validation set silently (DistributedSampler repeats the
first item), so this runs a real `cli.py fit` under DDP and compares its logged recall, on both ranks, with a
1-process `validate` of the checkpoint it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cli

REPO = Path(__file__).parent.parent


def _args(data: Path, run_dir: Path, record: Path) -> list[str]:
    callbacks = json.dumps([{"class_path": "cli_helpers.RecordValidation", "init_args": {"folder": str(record)}}])
    return [
        "--config", str(REPO / "configs" / "davenet.yaml"),
        "--model.embedding_dim=16", "--model.audio_width_mult=0.06", "--model.image_width_mult=0.06",
        "--model.pretrained_image=false",
        f"--data.train_manifest={data / 'train.json'}", f"--data.val_manifest={data / 'val.json'}",
        "--data.test_manifest=null", "--data.batch_size=2", "--data.num_workers=0", "--data.image_size=32",
        # A fixed length: with padding to the longest caption of each batch, DAVEnet's last frames see how much
        # padding follows them, which differs with how items are grouped into batches (and so with world size).
        "--data.target_length=64",
        "--trainer.accelerator=cpu", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false", "--trainer.logger=false", f"--trainer.callbacks={callbacks}",
        f"--trainer.default_root_dir={run_dir}",
    ]


@pytest.mark.slow
def test_ddp_fit_validation_recall_equals_one_process(make_manifest, tmp_path):
    data = tmp_path / "data"
    make_manifest(n=8, name="train", root=data, seed=1)
    make_manifest(n=11, name="val", root=data, seed=2)  # odd: the sampler pads 11 -> 12 on 2 ranks
    record = tmp_path / "ddp"
    record.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]), WANDB_MODE="disabled",
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "cli.py"), "fit", *_args(data, tmp_path / "run", record),
           "--trainer.devices=2", "--trainer.strategy=ddp"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # the same values on every rank

    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    single = tmp_path / "single"
    single.mkdir()
    validated = cli.main(["validate", *_args(data, tmp_path / "run1", single), "--trainer.devices=1",
                          f"--ckpt_path={last}"])
    one = json.loads((single / "rank0.json").read_text())
    assert one["world_size"] == 1
    ddp = ranks[0]["metrics"]
    assert set(ddp) == set(one["metrics"]) and "val/mean_R@10" in ddp
    for key, value in one["metrics"].items():
        assert ddp[key] == value, (key, ddp[key], value)  # exact, not approximately
    # 11 items: recalls are multiples of 1/11 (a duplicate counted twice would make them multiples of 1/12)
    assert round(ddp["val/a2i_R@1"] * 11, 6) == round(ddp["val/a2i_R@1"] * 11)
    assert validated.trainer.world_size == 1
