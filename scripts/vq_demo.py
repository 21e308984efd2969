"""ResDAVEnet-VQ on SpokenScenes on the CPU: does turning VQ3 on in a trained `{}` model keep its recall?

    python scripts/vq_demo.py                                  # data/spokenscenes (python scripts/demo.py makes it)
    python scripts/vq_demo.py --plain-epochs 6 --stage-epochs 3 --threads 1

The ICLR 2020 paper's incremental schedule, at the demo's width (audio net 16,32,32,64,128: 0.73 M parameters;
ResNet-18 at 1/8 width, 128 px) with the demo's CPU recipe (MISA on L2-normalised maps, InfoNCE x30, AdamW, cosine
schedule per stage) over configs/resdavenet_vq.yaml:

1. `{}`: ResDAVEnet without VQ (jitter 0.12 as officially), `--plain-epochs` epochs;
2. `{}->{3}`: seeded from 1's best checkpoint (`--model.seed_ckpt`), VQ3 on (1024 fresh codes), `--stage-epochs`;
3. `{}->{}`: the control, seeded the same way and trained as long with VQ off, so that "more training" and "VQ on"
   are told apart. Stages 2 and 3 run side by side, one process each (the same machine load for both).

Each stage's best checkpoint (validation mean R@10) is tested on the test split; for the VQ model the code
perplexity and the share of the 1024 codes in use are measured on the test split's captions (`encode_units`) and
read from the training log (last logged step). Wall time and the load average go beside every figure (the machine
may be shared). Writes <runs>/metrics.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

# The demo-width ResDAVEnet(-VQ) with the demo's CPU training recipe, over configs/resdavenet_vq.yaml.
DEMO_VQ_ARGS = [
    "--model.layer_widths=[16,32,32,64,128]", "--model.image_arch=resnet18", "--model.image_width_mult=0.125",
    "--model.pretrained_image=false", "--model.similarity_kind=MISA", "--model.normalize_outputs=true",
    '--model.loss={"class_path": "lightning_modules.core.losses.InfoNCELoss", "init_args": {"scale": 30.0}}',
    "--model.optimizer=adamw", "--model.lr=0.002", "--model.weight_decay=0.01", "--model.lr_schedule=cosine",
    "--model.warmup_steps=50",
    "--data.target_length=null", "--data.bucket_by_length=true", "--data.drop_last=true", "--data.batch_size=32",
    "--data.num_workers=0", "--data.image_size=128", "--data.image_transform=resize_flip",
    "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.callbacks=[]", "--trainer.log_every_n_steps=10",
    "--trainer.enable_progress_bar=false", "--seed_everything=0",
]


def data_args(data: Path) -> list[str]:
    cache = data / "cache"
    return [f"--data.train_manifest={data / 'train.json'}", f"--data.val_manifest={data / 'val.json'}",
            f"--data.test_manifest={data / 'test.json'}",
            f"--data.feature_cache={cache if cache.is_dir() else 'null'}"]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def launch(name: str, runs: Path, args: list[str], threads: int) -> tuple[subprocess.Popen, dict]:
    """Start `cli.py fit` for one stage in a process of its own with `threads` torch threads."""
    run = runs / name
    run.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(REPO / "cli.py"), "fit", "--config", str(REPO / "configs" / "resdavenet_vq.yaml"),
           *args, "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={run}", f"--trainer.default_root_dir={run}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="disabled",
               PYTHONPATH=str(REPO))
    log = open(run / "fit.log", "w")
    info = {"stage": name, "load_before": load(), "start": time.perf_counter(), "run": str(run)}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), info


def finish(process: subprocess.Popen, info: dict) -> dict:
    """Wait for a stage; its best checkpoint (validation mean R@10), wall time, load, epochs and seed report."""
    if process.wait() != 0:
        raise SystemExit(f"stage {info['stage']} failed: see {info['run']}/fit.log")
    run = Path(info["run"])
    seconds = time.perf_counter() - info.pop("start")
    best = sorted(run.rglob("best-epoch*.ckpt"), key=os.path.getmtime)[-1]
    last = torch.load(next(run.rglob("last.ckpt")), map_location="cpu", weights_only=False)
    text = (run / "fit.log").read_text()
    seed = [line.strip() for line in text.splitlines() if line.startswith(("seed_ckpt", "  fresh", "  ignored"))]
    return {**info, "checkpoint": str(best), "fit_minutes": round(seconds / 60, 2), "load_after": load(),
            "epochs": last["epoch"] + 1, "steps": last["global_step"], "log": str(next(run.rglob("metrics.csv"))),
            "seed_report": seed}


def test(stage: dict, runs: Path, args: list[str]) -> None:
    import cli

    start = time.perf_counter()
    done = cli.main(["test", "--config", str(REPO / "configs" / "resdavenet_vq.yaml"), *args,
                     "--trainer.logger=false", f"--trainer.default_root_dir={runs / 'test'}",
                     f"--ckpt_path={stage['checkpoint']}"])
    stage["test"] = {k: round(float(v), 4) for k, v in done.trainer.callback_metrics.items() if k.startswith("test/")}
    stage["test_minutes"] = round((time.perf_counter() - start) / 60, 2)


def last_logged(log: str, key: str) -> float | None:
    values = [float(row[key]) for row in csv.DictReader(open(log)) if row.get(key)]
    return values[-1] if values else None


def best_validation(log: str) -> list[float]:
    return [round(float(row["val/mean_R@10"]), 4) for row in csv.DictReader(open(log)) if row.get("val/mean_R@10")]


def test_code_statistics(checkpoint: str, data: Path, layer: int = 3) -> dict:
    """Perplexity and share of codes in use at VQ position `layer` over every valid frame of the test split."""
    from torch.utils.data import DataLoader

    from datamodules import PlacesAudioDataset
    from datamodules.places_audio import PlacesAudioCollate
    from lightning_modules.checkpoints import load_retrieval_checkpoint

    model = load_retrieval_checkpoint(checkpoint)
    cache = data / "cache"
    dataset = PlacesAudioDataset(data / "test.json", target_length=None, image_transform="resize", image_size=128,
                                 feature_cache=cache if cache.is_dir() else None)
    num_codes = model.audio_net.codebook(layer).shape[0]
    counts = torch.zeros(num_codes)
    for batch in DataLoader(dataset, batch_size=50, collate_fn=PlacesAudioCollate()):
        codes, valid = model.audio_net.encode_units(batch["audio"], batch["nframes"], layer=layer)
        for b, n in enumerate(valid.tolist()):
            counts += torch.bincount(codes[b, :n], minlength=num_codes).float()
    probs = counts / counts.sum()
    perplexity = math.exp(-float((probs * torch.log(probs + 1e-10)).sum()))
    return {"frames": int(counts.sum()), "perplexity": round(perplexity, 1), "codes_used": int((counts > 0).sum()),
            "codes_used_share": round(float((counts > 0).float().mean()), 4), "num_codes": num_codes}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python scripts/vq_demo.py", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "spokenscenes")
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "vq_demo")
    p.add_argument("--plain-epochs", type=int, default=6)
    p.add_argument("--stage-epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per stage (the seeded stages run side by "
                   "side; 1 on a shared machine)")
    p.add_argument("cli_args", nargs="*", help="more cli.py arguments for every stage (after --)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (args.data / "train.json").is_file():
        raise SystemExit(f"no SpokenScenes in {args.data}: run `python scripts/demo.py` (or python -m "
                         "datamodules.spokenscenes) first")
    common = [*DEMO_VQ_ARGS, *data_args(args.data), *args.cli_args]
    stages = {}
    stages["{}"] = finish(*launch("plain", args.runs, [*common, "--model.vq_layers=[]",
                                                        f"--trainer.max_epochs={args.plain_epochs}"], args.threads))
    seed = stages["{}"]["checkpoint"]
    # The two seeded stages side by side, one process each: the same machine load for both.
    running = {name: launch(folder, args.runs, [*common, f"--model.vq_layers={vq}", f"--model.seed_ckpt={seed}",
                                                f"--trainer.max_epochs={args.stage_epochs}"], args.threads)
               for name, folder, vq in (("{}->{3}", "vq3", "[3]"), ("{}->{}", "plain_continued", "[]"))}
    while running:  # collect each stage when it ends, so that its wall time is its own
        for name in [n for n, (process, _) in running.items() if process.poll() is not None]:
            stages[name] = finish(*running.pop(name))
        time.sleep(1)
    stages = {name: stages[name] for name in ("{}", "{}->{3}", "{}->{}")}
    for stage in stages.values():
        test(stage, args.runs, common)
        stage["val_mean_R@10"] = best_validation(stage["log"])
    vq = stages["{}->{3}"]
    vq["codes_test"] = test_code_statistics(vq["checkpoint"], args.data)
    vq["train_last"] = {k: last_logged(vq["log"], f"train/vq3_{k}") for k in ("perplexity", "codes_used",
                                                                              "commitment")}
    result = {"threads": args.threads, "stages": stages, "cpu_count": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "metrics.json").write_text(json.dumps(result, indent=1, default=str))

    print(f"\n{args.threads} torch thread(s); minutes of training per stage, load average before / after")
    print("| model | epochs | training min (load) | test mean R@10 | test mean R@1 | a2i R@10 | i2a R@10 |")
    print("|---|---|---|---|---|---|---|")
    for name, s in stages.items():
        t = s["test"]
        print(f"| {name} | {s['epochs']} | {s['fit_minutes']} ({s['load_before']} / {s['load_after']}) | "
              f"{t.get('test/mean_R@10')} | {t.get('test/mean_R@1')} | {t.get('test/a2i_R@10')} | "
              f"{t.get('test/i2a_R@10')} |")
    c = vq["codes_test"]
    print(f"VQ3 on the test split: perplexity {c['perplexity']}, {c['codes_used']} of {c['num_codes']} codes in use "
          f"({100 * c['codes_used_share']:.1f}%) over {c['frames']} frames; last training step: {vq['train_last']}")
    return result


if __name__ == "__main__":
    main()
