"""Runs that survive kills and full disks: atomic checkpoints, exact resumes, a resumable loader."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from test_cli import _tiny_args

import cli
from datamodules.bad_samples import PlacesAudioDataLoader
from lightning_modules import checkpoint_io
from lightning_modules.checkpoint_io import CheckpointWriteError, atomic_torch_save, read_run_checkpoint

REPO = Path(__file__).parent.parent
DEMO = REPO / "configs" / "demo.yaml"


# ---- a writer that runs out of disk -------------------------------------------------------------------------
class _FullDisk:
    """A file that accepts `budget` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, path: str, budget: int):
        self.f, self.budget = open(path, "wb"), budget

    def write(self, data) -> int:
        if self.f.tell() + len(data) > self.budget:
            self.f.write(bytes(data)[: max(self.budget - self.f.tell(), 0)])
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_atomic_save_on_a_full_disk_keeps_the_previous_file_and_names_the_folder(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.zeros(1000)}}, path)
    monkeypatch.setattr(checkpoint_io, "_open_for_write", lambda p: _FullDisk(p, budget=2000))
    with pytest.raises(CheckpointWriteError, match=rf"no space left in {tmp_path} \(.* MB free.*previous last\.ckpt "
                                                   "is unchanged") as info:
        atomic_torch_save({"state_dict": {"w": torch.ones(1000)}}, path)
    assert info.value.errno == errno.ENOSPC
    assert torch.equal(read_run_checkpoint(path)["state_dict"]["w"], torch.zeros(1000))
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]  # no temporary file left behind


@pytest.mark.slow
def test_full_disk_during_training_stops_with_the_folder_and_keeps_the_last_good_checkpoint(
        spokenscenes, tmp_path, monkeypatch):
    writes = []

    def open_until_full(path):
        writes.append(path)
        return _FullDisk(path, budget=10**12 if len(writes) <= 2 else 4096)  # epoch 0 fits, epoch 1 does not

    monkeypatch.setattr(checkpoint_io, "_open_for_write", open_until_full)
    # Nothing is staged in $TMPDIR (Lightning's own writer makes its temporary file there): a temp folder that
    # does not exist breaks any such staging.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-tmp-here"))
    args = _tiny_args(DEMO, spokenscenes, tmp_path, ["--trainer.logger=false", "--trainer.max_epochs=2",
                                                     "--trainer.limit_train_batches=2"])
    with pytest.raises(CheckpointWriteError, match=r"no space left in .*version_0/checkpoints \(.* MB free"):
        cli.main(["fit", *args])
    folder = tmp_path / "version_0" / "checkpoints"
    assert sorted(os.listdir(folder)) == ["best-epoch000.ckpt", "last.ckpt"]  # nothing half-written
    assert read_run_checkpoint(folder / "last.ckpt")["epoch"] == 0


def test_loader_resumes_inside_an_epoch_with_the_batches_it_had_not_yielded():
    class Epochs(torch.utils.data.Sampler):
        """A shuffle that depends on the epoch only (as DistributedSampler's and the length buckets')."""

        def __init__(self):
            self.epoch = 0

        def __iter__(self):
            return iter(torch.randperm(10, generator=torch.Generator().manual_seed(self.epoch)).tolist())

        def __len__(self):
            return 10

    def loader():
        sampler = Epochs()
        items = [{"audio": torch.zeros(1), "index": i} for i in range(10)]
        dl = PlacesAudioDataLoader(items, batch_size=3, sampler=sampler, epoch=lambda: sampler.epoch)
        return dl, sampler

    def indices(batches):
        return [b["index"].tolist() for b in batches]

    first, sampler = loader()
    full = indices(first)
    it = iter(first)
    seen = indices([next(it), next(it)])
    state = first.state_dict()
    assert state == {"epoch": 0, "batches": 2}
    resumed, _ = loader()
    resumed.load_state_dict(state)
    assert len(resumed) == 4  # Lightning counts the whole epoch; the pass yields what is left
    assert seen + indices(resumed) == full
    assert indices(resumed) == full  # the next pass is a whole epoch again
    # a checkpoint from the end of an epoch (or of another epoch) does not shorten the next one
    ended, s = loader()
    ended.load_state_dict({"epoch": 0, "batches": 2})
    s.epoch = 1
    assert len(list(ended)) == 4


# ---- kill -9 at random moments ------------------------------------------------------------------------------
def _fit_command(scenes: Path, root: Path, extra: list[str] = ()) -> list[str]:
    args = _tiny_args(DEMO, scenes, root, [
        "--trainer.logger=false", "--trainer.max_epochs=2", "--trainer.limit_train_batches=null",
        "--trainer.num_sanity_val_steps=0",
        # random flips (StepSeed makes them a function of the batch) and a last.ckpt after every step
        "--data.image_transform=resize_flip", "--last_checkpoint.every_n_train_steps=1", *extra])
    return [sys.executable, str(REPO / "cli.py"), "fit", *args]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]), WANDB_MODE="disabled",
                OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def _weights(ckpt: Path) -> dict:
    return read_run_checkpoint(ckpt)["state_dict"]


@pytest.mark.slow
def test_kill_at_random_moments_then_resume_gives_the_uninterrupted_weights(spokenscenes, tmp_path):
    rng = random.Random(0)
    roots = {name: tmp_path / name for name in ("reference", "mid_write", "random")}
    procs = {name: subprocess.Popen(_fit_command(spokenscenes, root), env=_env(), cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for name, root in roots.items()}
    ckpt_dirs = {name: root / "version_0" / "checkpoints" for name, root in roots.items()}
    killed, deadline = {}, time.time() + 300
    kill_after = {"random": None}
    while time.time() < deadline and any(p.poll() is None for n, p in procs.items() if n != "reference"):
        for name in ("mid_write", "random"):
            proc, folder = procs[name], ckpt_dirs[name]
            if name in killed or proc.poll() is not None or not folder.exists():
                continue
            names = os.listdir(folder)
            # (after a first last.ckpt exists: the kill must leave the previous one intact)
            if name == "mid_write" and "last.ckpt" in names and "last.ckpt.tmp" in names:
                proc.send_signal(signal.SIGKILL)  # while a checkpoint is being written
                killed[name] = sorted(names)
            elif name == "random" and "last.ckpt" in names:
                kill_after["random"] = kill_after["random"] or time.time() + rng.uniform(0.0, 2.0)
                if time.time() >= kill_after["random"]:
                    proc.send_signal(signal.SIGKILL)
                    killed[name] = sorted(names)
        time.sleep(0.0005)
    assert procs["reference"].wait(timeout=300) == 0, procs["reference"].stderr.read().decode()[-3000:]
    for name in ("mid_write", "random"):
        procs[name].wait(timeout=60)
        last = ckpt_dirs[name] / "last.ckpt"
        if name in killed:
            assert procs[name].returncode == -signal.SIGKILL
            read_run_checkpoint(last)  # never truncated: the old file or the new one
    # Resume every interrupted run until it is done (in parallel), then compare with the uninterrupted run.
    resumes = {name: subprocess.Popen(_fit_command(spokenscenes, roots[name], ["--ckpt_path=last"]), env=_env(),
                                      cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for name in ("mid_write", "random")}
    reference = _weights(ckpt_dirs["reference"] / "last.ckpt")
    assert read_run_checkpoint(ckpt_dirs["reference"] / "last.ckpt")["global_step"] == 8
    for name, proc in resumes.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
        resolved = [line for line in err.decode().splitlines() if "--ckpt_path" in line]
        final = read_run_checkpoint(ckpt_dirs[name] / "last.ckpt")
        assert final["global_step"] == 8, (name, killed.get(name), resolved)
        for key, value in reference.items():
            assert torch.equal(final["state_dict"][key], value), (name, key, killed.get(name))
        assert not [n for n in os.listdir(ckpt_dirs[name]) if n.endswith(".tmp")], name  # no stray files
    assert killed, "no run was interrupted: the kill came too late for every trial"
