"""Cost of a SpokenCOCO-size MISA test evaluation (5,000 images x 25,000 captions), measured scaled down and
extrapolated.

    python -m benchmarks.grouped_eval                       # 3 scales on the CPU, extrapolated to 5,000 x 25,000
    python -m benchmarks.grouped_eval --images 40 80 --device cuda
    python -m benchmarks.grouped_eval --one 40 --protocol grouped     # one measurement (a child process)

What is timed is the evaluation's own work on full-size DAVEnet outputs (random tensors: the time does not
depend on the values): ``RetrievalRecallMetric.update`` with each batch's distinct images (image maps
[1024, 14, 14], one per image; audio maps [1024, T'] with T' up to 64, i.e. 1024 input frames) and
``compute``: the chunked [images x captions] MISA matrix and the grouped recall. Each measurement runs in its own
process, so its peak RSS is its own. Time is fitted as a + b * (matchmap pairs) and peak memory as c + d * images
(5 captions per image), then extrapolated to 5,000 x 25,000. The ungrouped protocol (one image row per caption,
[25,000 x 25,000]) is measured at the smallest scale for the ratio of their costs.

The forward passes are separate: the full-size VGG16 image net per image and DAVEnet audio net per caption are
timed on one small batch each and multiplied by 5,000 and 25,000 (the grouped evaluation runs the image net once
per unique image; a per-caption evaluation would run it 25,000 times). Not part of ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from .harness import machine_info, machine_slug

CAPTIONS_PER_IMAGE = 5
FULL_IMAGES, FULL_CAPTIONS = 5000, 25000
D, H, W, T_OUT = 1024, 14, 14, 64
BATCH = 100  # captions per evaluation batch (20 images)


def measure(n_images: int, protocol: str, device: torch.device, chunk_size: int) -> dict:
    """One evaluation of n_images x 5 captions through RetrievalRecallMetric; wall times and peak memory."""
    from lightning_modules.metrics import RetrievalRecallMetric, first_of_each

    M = n_images * CAPTIONS_PER_IMAGE
    g = torch.Generator().manual_seed(0)
    image_id = torch.arange(M) // CAPTIONS_PER_IMAGE  # manifest order: the captions of an image side by side
    # The caption block scaled like the split: 25,000 captions in blocks of 8,192 (4 blocks) <-> M / 3.05.
    block = max(1, round(M * 8192 / FULL_CAPTIONS))
    metric = RetrievalRecallMetric("MISA", chunk_size=chunk_size, group_by_image=protocol == "grouped",
                                   caption_block=block).to(device)
    start = time.perf_counter()
    for b0 in range(0, M, BATCH):
        idx = torch.arange(b0, min(b0 + BATCH, M))
        first, rows = first_of_each(image_id[idx])
        images = torch.randn(len(first), D, H, W, generator=g).to(device)
        audio = torch.randn(len(idx), D, T_OUT, generator=g).to(device)
        nframes = torch.randint(T_OUT // 5, T_OUT + 1, (len(idx),), generator=g).to(device)
        metric.update(images, audio, nframes, idx.to(device), image_id[idx].to(device), image_rows=rows.to(device))
    update_s = time.perf_counter() - start
    start = time.perf_counter()
    values = metric.compute()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    compute_s = time.perf_counter() - start
    S = metric.last_similarity
    result = {"images": n_images, "captions": M, "protocol": protocol, "rows": S.shape[0], "columns": S.shape[1],
              "pairs": S.shape[0] * S.shape[1], "update_s": round(update_s, 3), "compute_s": round(compute_s, 3),
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3),
              "mean_R@10": round(float(values["mean_R@10"]), 4)}
    if device.type == "cuda":
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return result


def forward_costs(device: torch.device, n: int = 4) -> dict:
    """Seconds per image of the full-size VGG16 image net and per caption of the DAVEnet audio net (eval)."""
    from lightning_modules import DAVEnet

    model = DAVEnet(pretrained_image=False).to(device).eval()
    image, audio = torch.randn(n, 3, 224, 224, device=device), torch.randn(n, 40, 1024, device=device)
    out = {}
    with torch.no_grad():
        for name, fn in (("image_s", lambda: model.image_net(image)), ("audio_s", lambda: model.audio_net(audio))):
            fn()  # warm-up
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best = min(best, time.perf_counter() - start)
            out[name] = best / n
    return out


def _child(n_images: int, protocol: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.grouped_eval", "--one", str(n_images), "--protocol", protocol,
           "--device", args.device, "--chunk-size", str(args.chunk_size)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ))
    return json.loads(done.stdout.strip().splitlines()[-1])


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares a + b x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.grouped_eval", description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, nargs="+", default=[40, 80, 120], help="scaled-down image counts")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--chunk-size", type=int, default=2**26, help="the metric's matchmap chunk (RetrievalModule's)")
    p.add_argument("--one", type=int, help="measure this many images in this process and print one JSON line")
    p.add_argument("--protocol", choices=("grouped", "pairs"), default="grouped")
    p.add_argument("--json", help="write the result here (default: benchmarks/results/<date>-grouped-eval-...)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.one:
        result = measure(args.one, args.protocol, device, args.chunk_size)
        print(json.dumps(result))
        return result

    runs = [_child(n, "grouped", args) for n in args.images]
    ungrouped = _child(min(args.images), "pairs", args)
    a, b = _line([r["pairs"] for r in runs], [r["update_s"] + r["compute_s"] for r in runs])
    mem_key = "peak_gpu_gb" if device.type == "cuda" else "peak_rss_gb"
    c, d = _line([r["images"] for r in runs], [r[mem_key] for r in runs])
    costs = forward_costs(device)
    full_pairs = FULL_IMAGES * FULL_CAPTIONS
    extrapolated = {
        "metric_s": round(a + b * full_pairs, 0),
        "metric_hours": round((a + b * full_pairs) / 3600, 2),
        f"{mem_key}": round(c + d * FULL_IMAGES, 1),
        "image_forward_s": round(costs["image_s"] * FULL_IMAGES, 0),
        "image_forward_s_per_caption_protocol": round(costs["image_s"] * FULL_CAPTIONS, 0),
        "audio_forward_s": round(costs["audio_s"] * FULL_CAPTIONS, 0),
        "ungrouped_metric_s": round(a + b * FULL_CAPTIONS**2, 0),
    }
    smallest = next(r for r in runs if r["images"] == min(args.images))
    result = {
        "what": "SpokenCOCO-size MISA test evaluation, DAVEnet full-size outputs, random inputs",
        "runs": runs, "ungrouped_run": ungrouped,
        "ungrouped_over_grouped_time": round((ungrouped["update_s"] + ungrouped["compute_s"])
                                             / (smallest["update_s"] + smallest["compute_s"]), 2),
        "fit": {"seconds_per_pair": b, "seconds_fixed": a, "gb_per_image": d, "gb_fixed": c},
        "forward_seconds_per_item": costs,
        "extrapolated_5000x25000": extrapolated,
        "machine": machine_info(device),
    }
    print(f"{'images':>7}{'captions':>9}{'S':>14}{'update s':>10}{'compute s':>11}{mem_key:>13}")
    for r in [*runs, ungrouped]:
        print(f"{r['images']:>7}{r['captions']:>9}{r['rows']:>7}x{r['columns']:<6}{r['update_s']:>10.2f}"
              f"{r['compute_s']:>11.2f}{r[mem_key]:>13.2f}  {r['protocol']}")
    print(json.dumps({"ungrouped_over_grouped_time": result["ungrouped_over_grouped_time"],
                      "extrapolated_5000x25000": extrapolated}, indent=1))
    path = Path(args.json) if args.json else (Path(__file__).parent / "results" / (
        f"{result['machine']['date'][:10]}-grouped-eval-{machine_slug(result['machine'])}.json"))
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
