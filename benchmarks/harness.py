"""Timing, memory, equality checks, machine description and the results table shared by every benchmark row.

Protocol of a comparison row (``compare``): one warm-up call of each side (the equality check), then the two
sides alternate, so that a burst of load from other processes hits
both; min and median of each side are reported, and the ratio baseline / ours of both. The min ratio is the
headline on a shared machine: the least disturbed run of each side is the best estimate of its own cost.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import torch


@dataclass
class Config:
    """What every row needs to know: the device, how many repeats, whether this is a quick smoke run."""

    device: torch.device
    quick: bool = False
    repeats: int | None = None  # repeats of the cheap side; None: 7 (3 with --quick)

    @property
    def fast_repeats(self) -> int:
        return self.repeats or (3 if self.quick else 7)

    @property
    def slow_repeats(self) -> int:
        """Repeats of a side that takes seconds (loop baselines, training steps)."""
        return max(1, min(self.fast_repeats, 1 if self.quick else 3))


# ---- time ---------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of fn takes, device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def summary(times: list[float]) -> dict:
    return {"min_s": min(times), "median_s": statistics.median(times), "n": len(times), "times_s": times}


def interleaved(ours: Callable, baseline: Callable, n_ours: int, n_baseline: int, device: torch.device):
    """Alternate the two sides (baseline first) until each has its count of timed calls."""
    t_ours, t_base = [], []
    while len(t_ours) < n_ours or len(t_base) < n_baseline:
        if len(t_base) < n_baseline:
            t_base.append(timed(baseline, device))
        if len(t_ours) < n_ours:
            t_ours.append(timed(ours, device))
    return t_ours, t_base


# ---- memory -------------------------------------------------------------------------------------------------
def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes of tensors that one call of fn allocates above what was alive before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the running total of the profiler's memory events (every
    tensor allocation and free), so it counts tensors, not what the allocator keeps from the OS. The profiler
    slows the call down; use it on the fast side only.
    """
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as f:
            events = json.load(f)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events
              if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == 0]
    return max(totals, default=0) - min(0, min(totals, default=0))


# ---- equality -----------------------------------------------------------------------------------------------
def _pairs(ours, baseline):
    if isinstance(ours, torch.Tensor):
        return [(ours, baseline)]
    return [p for o, b in zip(ours, baseline) for p in _pairs(o, b)]


def check(ours, baseline, rtol: float, atol: float = 0.0, what: str = "") -> dict:
    """Both sides give the same numbers: for every tensor pair (a tensor or nested sequences of them),
    max |ours - baseline| <= atol + rtol * max |baseline|. Reports the worst pair (largest diff / bound)."""
    worst = None
    for o, b in _pairs(ours, baseline):
        o, b = o.detach().double().cpu(), b.detach().double().cpu()
        diff = float((o - b).abs().max()) if o.numel() else 0.0
        bound = atol + rtol * (float(b.abs().max()) if b.numel() else 0.0)
        score = diff / bound if bound > 0 else (0.0 if diff == 0 else float("inf"))
        if worst is None or score > worst[0]:
            worst = (score, diff, bound)
    score, diff, bound = worst if worst is not None else (0.0, 0.0, 0.0)
    return {"what": what, "rtol": rtol, "atol": atol, "max_abs_diff": diff, "bound": bound,
            "passed": bool(diff <= bound)}


# ---- rows ---------------------------------------------------------------------------------------------------
def compare(
    name: str,
    cfg: Config,
    ours: Callable[[], object],
    baseline: Callable[[], object],
    equality: Callable[[], dict],
    target: float | None,
    shapes: str,
    baseline_repeats: int | None = None,
    memory: bool = False,
    notes: str = "",
) -> dict:
    """Time ours against the baseline, check their numbers agree, and return one result row.

    ``equality`` runs both sides once on the full input (their warm-up) and returns a ``check`` dict;
    ``baseline_repeats`` defaults to ``cfg.slow_repeats`` (loop baselines take seconds).
    """
    equal = equality()
    ours()
    n_base = baseline_repeats or cfg.slow_repeats
    t_ours, t_base = interleaved(ours, baseline, cfg.fast_repeats, n_base, cfg.device)
    row = {
        "row": name, "kind": "ratio", "shapes": shapes, "device": str(cfg.device),
        "ours": summary(t_ours), "baseline": summary(t_base),
        "ratio_min": min(t_base) / min(t_ours),
        "ratio_median": statistics.median(t_base) / statistics.median(t_ours),
        "target": target, "check": equal, "notes": notes,
    }
    row["meets_target"] = None if target is None else bool(row["ratio_min"] >= target)
    if memory:  # the baseline only where it is cheap to watch (CUDA); on CPU the profiler would take minutes
        row["peak_memory_bytes"] = {
            "ours": peak_memory_bytes(ours, cfg.device),
            "baseline": peak_memory_bytes(baseline, cfg.device) if cfg.device.type == "cuda" else None,
        }
    return row


# ---- the machine --------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    info = {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def machine_slug(info: dict) -> str:
    """A file-name-safe id: hostname, CPU (or GPU) model, cores, torch version, threads."""
    hardware = info.get("gpu") or info["cpu"]
    text = f"{info['hostname']}-{hardware}-{info['cores']}c-torch{info['torch']}-{info['torch_threads']}t"
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in text).strip("-").replace("--", "-")


# ---- printing -----------------------------------------------------------------------------------------------
def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def _mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:.0f} MiB"


def format_table(rows: list[dict]) -> str:
    """Markdown tables of the comparison rows and of the throughput rows."""
    lines = []
    ratio_rows = [r for r in rows if r.get("kind") == "ratio"]
    if ratio_rows:
        lines += [
            "| row | shapes | ours min / median | baseline min / median | ratio min (median) | target | "
            "same numbers | peak memory ours / baseline |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for r in ratio_rows:
        target = "-" if r["target"] is None else f">= {r['target']:g}x" + (" ok" if r["meets_target"] else " MISSED")
        c = r["check"]
        same = ("yes" if c["passed"] else "NO") + f" (max diff {c['max_abs_diff']:.1e} <= {c['bound']:.1e})"
        mem = r.get("peak_memory_bytes")
        mem = "-" if not mem else f"{_mib(mem['ours'])} / {_mib(mem['baseline'])}"
        lines.append(
            f"| {r['row']} | {r['shapes']} | {_seconds(r['ours']['min_s'])} / {_seconds(r['ours']['median_s'])} | "
            f"{_seconds(r['baseline']['min_s'])} / {_seconds(r['baseline']['median_s'])} | "
            f"{r['ratio_min']:.1f}x ({r['ratio_median']:.1f}x) | {target} | {same} | {mem} |"
        )
    throughput = [r for r in rows if r.get("kind") == "throughput"]
    if throughput:
        lines += [""] if lines else []
        lines += ["| throughput | setup | best / median | unit | notes |", "|---|---|---|---|---|"]
        for r in throughput:
            lines.append(f"| {r['row']} | {r['shapes']} | {r['best']:.3g} / {r['median']:.3g} | {r['unit']} | "
                         f"{r.get('notes', '')} |")
    return "\n".join(lines)
