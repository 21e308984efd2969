"""Wall time and peak memory of one full-size DAVEnet MISA validation: 1,000 pairs, as on Places.

    python -m benchmarks.full_validation                  # 1000 pairs, VGG16 at 224 px, 1024 frames
    python -m benchmarks.full_validation --pairs 100 --device cuda

Random inputs (the time does not depend on the data): ``Trainer.validate`` of the full-size ``DAVEnet`` (VGG16
conv + 3x3 conv, the 5-conv audio net), so the forward passes, the gathering of the outputs, the chunked
[N, N] MISA matrix and the recall are all in the figure. Not part of ``python -m benchmarks``: it has no loop
baseline (the official loop would take about 1000 x 1000 matchmaps) and takes minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset

from .harness import machine_info


class RandomPairs(Dataset):
    """Batches shaped like the datamodule's: image, audio [40, T], nframes, index; seeded per item."""

    def __init__(self, n: int, frames: int, image_size: int):
        self.n, self.frames, self.image_size = n, frames, image_size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {
            "image": torch.randn(3, self.image_size, self.image_size, generator=g),
            "audio": torch.randn(40, self.frames, generator=g),
            "nframes": torch.randint(self.frames // 5, self.frames + 1, (), generator=g),
            "index": torch.tensor(i),
        }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.full_validation", description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--frames", type=int, default=1024, help="input frames (DAVEnet's Places setting)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", help="also write the result to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import pytorch_lightning as pl

    from lightning_modules import DAVEnet

    device = torch.device(args.device)
    model = DAVEnet(pretrained_image=False)
    trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    loader = DataLoader(RandomPairs(args.pairs, args.frames, args.image_size), batch_size=args.batch_size)
    start = time.perf_counter()
    metrics = trainer.validate(model, loader, verbose=False)[0]
    wall = time.perf_counter() - start
    result = {
        "pairs": args.pairs, "frames": args.frames, "image_size": args.image_size, "batch_size": args.batch_size,
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),  # Linux: KiB
        "val_mean_R@10": round(float(metrics["val/mean_R@10"]), 4),  # about chance: 10 / pairs
        "machine": machine_info(device),
    }
    if device.type == "cuda":
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
