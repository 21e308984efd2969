"""Learning curves from a CSVLogger's ``metrics.csv``: one point per validation, with its training wall time.

The base module logs ``train/elapsed_min`` at the end of each validation. Lightning may write it on the
validation's own row or on the next row with the same step, so both are matched.
"""

from __future__ import annotations

import csv
from pathlib import Path


def validation_curve(metrics_csv: str | Path, metrics: tuple[str, ...] = ("val/mean_R@10",)) -> list[dict]:
    """``[{"epoch", "step", "minutes"?, metric: value, ...}]``, one dict per row that has ``metrics[0]``.

    ``minutes`` is missing where no elapsed time was logged for that step. An absent file gives ``[]``.
    """
    path = Path(metrics_csv)
    if not path.exists():
        return []
    curve: list[dict] = []
    with open(path) as f:
        for row in csv.DictReader(f):
            if row.get(metrics[0]):
                point = {"epoch": int(row["epoch"]), "step": int(row["step"])}
                point.update({m: round(float(row[m]), 4) for m in metrics if row.get(m)})
                curve.append(point)
            if row.get("train/elapsed_min") and curve and curve[-1]["step"] == int(row["step"]):
                curve[-1]["minutes"] = round(float(row["train/elapsed_min"]), 2)
    return curve
