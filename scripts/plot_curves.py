"""Validation recall against training wall time, from CSV logs: one line per run.

    python scripts/plot_curves.py --out docs/figures/demo_curve.png \
        --run "demo=runs/demo/csv/version_0/metrics.csv"
    python scripts/plot_curves.py --out warmup.png --run "scratch=A.csv" --run "warm-up + retrieval=B.csv@3"
    python scripts/plot_curves.py --x step --out demo_steps.png --run "demo=runs/demo/csv/version_0/metrics.csv"

A run is LABEL=METRICS_CSV[@OFFSET_MINUTES]: the offset shifts a run that started after other work (a warm-up)
onto the same time axis. The x value of a point is the `train/elapsed_min` logged with its validation, or with
`--x step` its optimiser step (the axis a fixed step budget makes the same on every machine; offsets then count
steps).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.csvlog import validation_curve  # noqa: E402


def read_curve(metrics_csv: Path, metric: str, x: str = "minutes") -> list[tuple[float, float]]:
    curve = validation_curve(metrics_csv, (metric,))
    if not curve:
        raise ValueError(f"{metrics_csv}: no {metric} logged (or no such file)")
    if x == "step":
        return [(float(p["step"]), p[metric]) for p in curve]
    missing = [p["step"] for p in curve if "minutes" not in p]
    if missing:
        raise ValueError(f"{metrics_csv}: no train/elapsed_min logged with the validation at steps {missing}")
    return [(p["minutes"], p[metric]) for p in curve]


def parse_run(spec: str) -> tuple[str, Path, float]:
    if "=" not in spec:
        raise argparse.ArgumentTypeError(f"--run {spec!r}: expected LABEL=METRICS_CSV[@OFFSET_MINUTES]")
    label, rest = spec.split("=", 1)
    path, _, offset = rest.partition("@")
    return label, Path(path), float(offset or 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=parse_run, action="append", required=True, help="LABEL=CSV[@OFFSET_MIN]")
    parser.add_argument("--metric", default="val/mean_R@10")
    parser.add_argument("--x", choices=("minutes", "step"), default="minutes", help="the horizontal axis")
    parser.add_argument("--title", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=110)
    for label, path, offset in args.run:
        curve = read_curve(path, args.metric, args.x)
        ax.plot([offset + m for m, _ in curve], [v for _, v in curve], marker="o", label=label)
        if offset:
            ax.axvspan(0, offset, color="0.9", zorder=0)
    ax.set_xlabel("training wall time (minutes)" if args.x == "minutes" else "optimiser step")
    ax.set_ylabel(args.metric)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if args.title:
        ax.set_title(args.title, fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
