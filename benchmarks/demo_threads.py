"""How the demo's training speed depends on torch's thread settings when another process competes for the CPU.

    python -m benchmarks.demo_threads [--steps 60] [--data data/spokenscenes]

Each setting runs ``configs/demo.yaml`` (the real data, its feature cache, batch 32) for ``--steps`` optimiser
steps in a fresh process (OpenMP reads its environment once, at start-up), with no validation, and reports the
seconds per step after ``--warmup`` steps; then again while a competing process (one Python busy loop, the
way another user's job takes a core) runs beside it. Settings: torch threads 1 or all cores, and for 2+ threads
libgomp's ``OMP_WAIT_POLICY`` (ACTIVE spins at every barrier, PASSIVE sleeps). The demo takes the setting whose
slowest case is fastest; ``scripts/demo.py`` documents the choice and the figures.

Results go to stdout and ``benchmarks/results/<date>-demo-threads.json`` with the machine's load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time
import torch
from pytorch_lightning.callbacks import Callback
sys.path.insert(0, {repo!r})
import cli

class StepTimes(Callback):
    def __init__(self):
        self.t = []
    def on_train_batch_end(self, trainer, *args):
        self.t.append(time.perf_counter())

timer = StepTimes()
args = ["fit", "--config", {config!r}, "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
        "--trainer.max_epochs=-1", "--trainer.max_steps={steps}", "--trainer.callbacks=[]",
        "--data.train_manifest={data}/train.json", "--data.val_manifest=null",
        "--data.test_manifest=null", "--data.feature_cache={data}/cache",
        "--trainer.default_root_dir={out}"]
torch.set_num_threads({threads})

class Timed(cli.VGSLightningCLI):
    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(timer)
        return trainer
Timed(cli.VGSModule, cli.PlacesAudioDataModule, subclass_mode_model=True, save_config_callback=None,
      auto_configure_optimizers=False, args=args)
t = timer.t[{warmup}:]
print("RESULT", json.dumps({{"s_per_step": (t[-1] - t[0]) / (len(t) - 1), "threads": torch.get_num_threads()}}))
"""


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_setting(threads: int, wait_policy: str | None, competitor: bool, steps: int, warmup: int, data: Path,
                out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    env.pop("OMP_WAIT_POLICY", None)
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    code = _CHILD.format(repo=str(REPO), config=str(REPO / "configs" / "demo.yaml"), steps=steps, data=data,
                         out=out, threads=threads, warmup=warmup)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"setting threads={threads} {wait_policy} failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo_threads", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--data", default=str(REPO / "data" / "spokenscenes"))
    parser.add_argument("--out", default="/tmp/vgs-demo-threads")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    settings = [(1, None)] + ([(cores, None), (cores, "PASSIVE"), (cores, "ACTIVE")] if cores > 1 else [])
    rows = []
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, torch threads settings {settings}")
    for competitor in (False, True):
        for threads, policy in settings:
            before = _load()
            result = run_setting(threads, policy, competitor, args.steps, args.warmup, Path(args.data), Path(args.out))
            row = {"threads": threads, "OMP_WAIT_POLICY": policy or "default", "competitor": competitor,
                   "s_per_step": round(result["s_per_step"], 4), "load_before": before, "load_after": _load()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\nthreads  wait policy  idle s/step  busy s/step  busy/idle")
    for threads, policy in settings:
        idle, busy = (next(r for r in rows if r["threads"] == threads and r["OMP_WAIT_POLICY"] == (policy or "default")
                           and r["competitor"] is c)["s_per_step"] for c in (False, True))
        print(f"{threads:>7}  {policy or 'default':>11}  {idle:>11.3f}  {busy:>11.3f}  {busy / idle:>9.2f}")
    folder = REPO / "benchmarks" / "results"
    folder.mkdir(exist_ok=True)
    path = folder / f"{time.strftime('%Y-%m-%d')}-demo-threads.json"
    path.write_text(json.dumps({"rows": rows, "steps": args.steps, "warmup": args.warmup, "cores": cores}, indent=1))
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
