"""`make demo` end to end at a tiny size: data, cache, a timed fit, the test of the best checkpoint, metrics.json."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from scripts.csvlog import validation_curve

REPO = Path(__file__).parent.parent


def _demo_module():
    spec = importlib.util.spec_from_file_location("vgs_demo_script", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validation_curve_takes_minutes_from_the_validation_row_or_the_next(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,train/elapsed_min,train/loss_epoch,val/mean_R@1,val/mean_R@10\n"
        "0,9,,2.5,,\n"
        "0,9,1.5,,0.1,0.4\n"      # elapsed time on the validation row
        "1,19,,,0.2,0.6\n"
        "1,19,3.0,,,\n"           # ... or on the row after it
        "2,29,,,0.3,0.7\n"        # no time logged: no minutes key
        "3,39,4.0,,,\n"           # a time without a validation is not attached to the previous one
    )
    curve = validation_curve(csv, ("val/mean_R@10", "val/mean_R@1"))
    assert [p["val/mean_R@10"] for p in curve] == [0.4, 0.6, 0.7]
    assert [p["val/mean_R@1"] for p in curve] == [0.1, 0.2, 0.3]
    assert [p.get("minutes") for p in curve] == [1.5, 3.0, None]
    assert [(p["epoch"], p["step"]) for p in curve] == [(0, 9), (1, 19), (2, 29)]
    assert validation_curve(tmp_path / "missing.csv") == []


def test_plot_curves_refuses_a_log_without_times_and_draws_offset_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("vgs_plot_curves", REPO / "scripts" / "plot_curves.py")
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("epoch,step,train/elapsed_min,val/mean_R@10\n0,9,1.0,0.3\n1,19,2.0,0.5\n")
    bad.write_text("epoch,step,train/elapsed_min,val/mean_R@10\n0,9,,0.3\n")
    with pytest.raises(ValueError, match="bad.csv.*steps \\[9\\]"):
        plot.read_curve(bad, "val/mean_R@10")
    out = tmp_path / "fig.png"
    plot.main(["--run", f"scratch={good}", "--run", f"warm={good}@3", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.read_curve(good, "val/mean_R@10", x="step") == [(9.0, 0.3), (19.0, 0.5)]
    assert plot.read_curve(bad, "val/mean_R@10", x="step") == [(9.0, 0.3)]  # steps need no times


@pytest.mark.slow
def test_demo_writes_metrics_and_learning_curve_and_repeats_them_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    for name, value in {"DEMO_EPOCHS": "2", "DEMO_TRAIN": "64", "DEMO_VAL": "16", "DEMO_TEST": "16",
                        "DEMO_DATA": str(tmp_path / "data"), "DEMO_RUNS": str(tmp_path / "runs")}.items():
        monkeypatch.setenv(name, value)
    demo = _demo_module()
    assert demo.main() == 0
    metrics = json.loads((tmp_path / "runs" / "metrics.json").read_text())
    assert metrics["test_pairs"] == 16 and metrics["train_steps"] == 4  # 2 epochs of 64 // 32 steps
    assert 0.0 <= metrics["mean_R@10"] <= 1.0
    assert metrics["mean_R@10"] == pytest.approx((metrics["a2i_R@10"] + metrics["i2a_R@10"]) / 2)
    best = Path(metrics["best_checkpoint"])  # every logger and checkpoint lands in DEMO_RUNS
    assert best.is_file() and (tmp_path / "runs") in best.parents
    # the curve comes from the fit's log (not from the test run's), one point per validation, with its time
    assert len(metrics["learning_curve"]) == 2 and all("minutes" in p for p in metrics["learning_curve"])
    # The budget is in steps: a second run (the data kept) gives the same numbers to the last digit.
    monkeypatch.setenv("DEMO_RUNS", str(tmp_path / "again"))
    assert demo.main() == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    differ = {"best_checkpoint", "train_minutes", "learning_curve"}
    assert {k: v for k, v in again.items() if k not in differ} == {k: v for k, v in metrics.items() if k not in differ}
    strip = [{k: v for k, v in p.items() if k != "minutes"} for p in metrics["learning_curve"]]
    assert [{k: v for k, v in p.items() if k != "minutes"} for p in again["learning_curve"]] == strip
