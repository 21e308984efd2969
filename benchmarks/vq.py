"""The cost of ResDAVEnet-VQ's VQ layers: a full-size training step with VQ off and on, and one VQ layer against the
official code's structure.

    python -m benchmarks.vq --threads 1                 # batch 8, 2048 frames, 224 px, released widths
    python -m benchmarks.vq --batch 4 --repeats 2 --vq none,3

Rows:
- ``step``: one optimiser step (forward, triplet loss + commitment losses, backward, Adam) of the full-size
  ResDAVEnet of ``configs/resdavenet_vq.yaml`` (ResNet-50 at 224 px, widths 128,256,256,512,1024, 1024 codes per
  layer) for each VQ setting, VQ settings interleaved; the ratio is to VQ off.
- ``audio``: the audio net alone (forward + backward of its output's mean + commitment losses), same settings.
- ``layer``: one training-mode VQ forward at position 2 and 3 shapes (codes, straight-through output, commitment
  loss, EMA update) against the official ``VectorQuantizerEMA`` structure (dense one-hot [N, K] matrices: the code
  vectors as ``onehots @ E``, the EMA sums as ``onehots.T @ x``), written here from its published formulas; both
  must give the same codes and codebook.

Random inputs; not part of ``python -m benchmarks`` (minutes on a CPU). Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from .harness import interleaved, machine_info, timed
from .training import training_batch


def official_vq_step(x, codebook, ema_count, ema_sum, decay=0.99, eps=1e-8, cost=1.0):
    """VectorQuantizerEMA.forward + ema_update in the official structure (dense one-hots); returns (output, loss,
    codes, new codebook)."""
    distances = x.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * x @ codebook.t()
    index = distances.argmin(1, keepdim=True)
    onehots = torch.zeros(x.shape[0], codebook.shape[0]).scatter_(1, index, 1)
    quantized = onehots @ codebook
    loss = (cost * (quantized.detach() - x) ** 2).mean()
    out = x + (quantized - x).detach()
    size = ema_count * decay + (1 - decay) * onehots.sum(0)
    n = size.sum()
    size = (size + eps) / (n + codebook.shape[0] * eps) * n
    new_sum = ema_sum * decay + (1 - decay) * (onehots.t() @ x.detach())
    return out, loss, index[:, 0], new_sum / size[:, None]


def layer_row(batch: int, frames: int, position: int, width: int, codes: int, repeats: int) -> dict:
    from lightning_modules.nets import VectorQuantizerEMA

    torch.manual_seed(0)
    x = torch.randn(batch * frames // 2 ** (position - 1), width).abs()
    vq = VectorQuantizerEMA(codes, width).train()
    start = {k: v.clone() for k, v in vq.state_dict().items()}

    def ours():
        vq.load_state_dict(start)
        return vq(x)

    def baseline():
        return official_vq_step(x, start["codebook"], start["ema_count"], start["ema_sum"])

    mine, ref = ours(), baseline()
    same_codes = torch.equal(mine.codes, ref[2])
    codebook_diff = float((vq.codebook - ref[3]).abs().max())
    t_ours, t_base = interleaved(ours, baseline, repeats, repeats, torch.device("cpu"))
    return {"row": f"layer_vq{position}", "shapes": f"{x.shape[0]} frames x {width}, {codes} codes",
            "ours_s": min(t_ours), "official_structure_s": min(t_base), "ratio": min(t_base) / min(t_ours),
            "same_codes": same_codes, "codebook_max_diff": codebook_diff}


def _positions(spec: str) -> list[int]:
    return [] if spec == "none" else [int(k) for k in spec.split("+")]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.vq", description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=2048)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--vq", default="none,3,2+3,2+3+4", help="VQ settings: none, or positions joined by +")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", help="also write the result to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(torch.device("cpu"))
    settings = args.vq.split(",")

    steps, audio_steps = {}, {}
    for spec in settings:
        torch.manual_seed(0)
        module = build_model_with_vq(_positions(spec))
        image, audio, nframes = training_batch(args.batch, args.frames, args.image_size, torch.device("cpu"))
        optimizer = torch.optim.Adam(module.parameters(), lr=2e-4, weight_decay=5e-7)

        def step(module=module, optimizer=optimizer, image=image, audio=audio, nframes=nframes):
            optimizer.zero_grad(set_to_none=True)
            image_out, audio_out, out_nframes = module(image, audio, nframes)
            loss = module.loss(image_out, audio_out, out_nframes, module.similarity_kind)
            loss = loss + sum(module.audio_net.aux_losses.values())
            loss.backward()
            optimizer.step()

        def audio_step(net=module.audio_net, audio=audio, nframes=nframes):
            net.zero_grad(set_to_none=True)
            (net(audio, nframes).mean() + sum(net.aux_losses.values())).backward()

        step()
        audio_step()
        steps[spec], audio_steps[spec] = step, audio_step
    times = {spec: [] for spec in settings}
    audio_times = {spec: [] for spec in settings}
    for _ in range(args.repeats):  # interleaved, so that load from other processes hits every setting
        for spec in settings:
            times[spec].append(timed(steps[spec], torch.device("cpu")))
            audio_times[spec].append(timed(audio_steps[spec], torch.device("cpu")))

    base, audio_base = min(times[settings[0]]), min(audio_times[settings[0]])
    rows = []
    for spec in settings:
        rows.append({"vq": spec, "step_min_s": min(times[spec]), "step_median_s": statistics.median(times[spec]),
                     "step_ratio": min(times[spec]) / base, "audio_min_s": min(audio_times[spec]),
                     "audio_ratio": min(audio_times[spec]) / audio_base})
    widths = (128, 256, 256, 512, 1024)
    layers = [layer_row(args.batch, args.frames, k, widths[k - 1], 1024, args.repeats) for k in (2, 3)]

    print(f"machine: {info['cpu']}, {info['torch_threads']} torch threads, load average {info.get('load_average')}")
    print(f"full-size training step: batch {args.batch}, audio 40x{args.frames}, image {args.image_size} px, "
          "ResNet-50 + ResDAVEnet (released widths), 1024 codes per VQ layer")
    print("| VQ layers | step min (median) | ratio to VQ off | audio net fwd+bwd min | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {'{' + r['vq'].replace('none', '').replace('+', ',') + '}'} | {r['step_min_s']:.2f} s "
              f"({r['step_median_s']:.2f}) | {r['step_ratio']:.3f}x | {r['audio_min_s']:.2f} s | "
              f"{r['audio_ratio']:.3f}x |")
    print("| VQ layer (training forward + EMA) | shapes | ours | official structure | speed-up | same codes |")
    print("|---|---|---|---|---|---|")
    for r in layers:
        print(f"| {r['row']} | {r['shapes']} | {r['ours_s'] * 1e3:.1f} ms | {r['official_structure_s'] * 1e3:.1f} ms"
              f" | {r['ratio']:.2f}x | {r['same_codes']} (codebook max diff {r['codebook_max_diff']:.1e}) |")
    result = {"machine": info, "args": vars(args), "steps": rows, "layers": layers}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if not all(r["same_codes"] for r in layers):
        sys.exit(1)
    return result


def build_model_with_vq(positions: list[int]):
    """configs/resdavenet_vq.yaml's module (ImageNet weights off) with these VQ positions."""
    module = build_model_from("configs/resdavenet_vq.yaml", vq_layers=positions)
    return module.train()


def build_model_from(config: str, **init_args):
    import yaml

    from .training import REPO, _instantiate

    with open(f"{REPO}/{config}", encoding="utf-8") as f:
        spec = dict(yaml.safe_load(f)["model"])
    spec["init_args"] = {**(spec.get("init_args") or {}), "pretrained_image": False, **init_args}
    return _instantiate(spec)



if __name__ == "__main__":
    main()
