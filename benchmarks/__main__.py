"""``python -m benchmarks``: run the benchmark rows, print a table, write a JSON result file.

    python -m benchmarks                         # every row (about 10 minutes on 2 CPU cores)
    python -m benchmarks --quick                 # 1-3 repeats, a smoke run
    python -m benchmarks --rows sim,recall       # groups: sim, loss, recall, load, train; or row names
    python -m benchmarks --device cuda --train-variants fp32,bf16,bf16+cl,bf16+cl+compile --train-batch 64

The exit status is 1 when a row fails or when ours and the baseline disagree beyond the stated tolerance;
missed speed targets are flagged in the table, not in the exit status.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from datetime import datetime, timezone

import torch

from . import core
from .harness import Config, format_table, machine_info, machine_slug

# The loading and training rows import more (torchaudio, librosa, Lightning): only when selected.
TRAIN_MODELS = ("davenet", "resdavenet", "nips2016", "acl2017", "demo")

GROUPS = {
    "sim": ["sim_MISA", "sim_SIMA", "sim_SISA"],
    "loss": ["loss_davenet", "loss_resdavenet"],
    "recall": ["recall"],
    "load": ["load"],
    "train": ["train"],
}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few repeats and 20 captions: a smoke run")
    p.add_argument("--rows", default="sim,loss,recall,load,train",
                   help=f"comma-separated groups ({', '.join(GROUPS)}) or row names ({', '.join(core.ROWS)})")
    p.add_argument("--out", help="JSON result file (default benchmarks/results/<date>-<machine>[-quick].json)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, help="timed repeats of the fast side (default 7, 3 with --quick)")
    p.add_argument("--train-models", default=",".join(TRAIN_MODELS), help="models of the train rows")
    p.add_argument("--train-variants", default="fp32",
                   help="comma-separated: fp32, bf16, and +cl (channels-last) / +compile (audio net), "
                        "e.g. bf16+cl+compile")
    p.add_argument("--train-batch", type=int, default=8,
                   help="batch of the paper models (the demo keeps its config's 32)")
    return p.parse_args(argv)


def selected_rows(spec: str) -> list[str]:
    names = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        expansion = GROUPS.get(item, [item])
        for name in expansion:
            if name not in core.ROWS and name not in ("load", "train"):
                raise SystemExit(f"benchmarks: unknown row {item!r}; choose from {', '.join(GROUPS)} or "
                                 f"{', '.join(core.ROWS)}")
            if name not in names:
                names.append(name)
    return names


def _train(cfg: Config, model: str, variant: str, args: argparse.Namespace) -> list[dict]:
    from . import training

    return [training.training_row(cfg, model, variant, args.train_batch)]


def run(args: argparse.Namespace) -> tuple[list[dict], bool]:
    cfg = Config(device=torch.device(args.device), quick=args.quick, repeats=args.repeats)
    rows, ok = [], True
    jobs = []
    for name in selected_rows(args.rows):
        if name == "load":
            from . import data

            jobs.append(("load", lambda: data.loading_rows(cfg)))
        elif name == "train":
            for model in (m.strip() for m in args.train_models.split(",") if m.strip()):
                if model not in TRAIN_MODELS:
                    raise SystemExit(f"benchmarks: unknown model {model!r}; choose from {', '.join(TRAIN_MODELS)}")
                for variant in (v.strip() for v in args.train_variants.split(",") if v.strip()):
                    jobs.append((f"train_{model}_{variant}", lambda m=model, v=variant: _train(cfg, m, v, args)))
        else:
            jobs.append((name, lambda n=name: [core.ROWS[n](cfg)]))
    for name, job in jobs:
        start = time.perf_counter()
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        try:
            new = job()
        except Exception as err:  # keep going: one broken row should not hide the others
            traceback.print_exc()
            new, ok = [{"row": name, "kind": "error", "error": f"{type(err).__name__}: {err}"}], False
        for r in new:
            if r.get("kind") == "ratio" and not r["check"]["passed"]:
                ok = False
                print(f"[benchmarks] {r['row']}: ours and the baseline DISAGREE: {r['check']}", file=sys.stderr)
        rows += new
        print(f"[benchmarks] {name} done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        gc.collect()
    return rows, ok


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine_info(device)
    started = time.perf_counter()
    rows, ok = run(args)
    table = format_table(rows)
    errors = [r for r in rows if r.get("kind") == "error"]
    print(f"\nVGS-Lightning benchmarks on {info['cpu']}" + (f" + {info['gpu']}" if "gpu" in info else "")
          + f", {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), {info['date']}"
          + (" [quick]" if args.quick else ""))
    print(table)
    for e in errors:
        print(f"ERROR in {e['row']}: {e['error']}")
    out = args.out or os.path.join(
        RESULTS, f"{datetime.now(timezone.utc):%Y-%m-%d}-{machine_slug(info)}{'-quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"machine": info, "argv": sys.argv[1:] if argv is None else list(argv), "quick": args.quick,
                   "wall_s": time.perf_counter() - started, "rows": rows, "table": table}, f, indent=1)
    print(f"\nwrote {out} ({time.perf_counter() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
