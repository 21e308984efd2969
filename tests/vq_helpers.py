"""Tiny ResDAVEnet-VQ nets and the 2-process DDP worker of tests/test_vq.py, in a module of their own so that the
spawned DDP processes import torch and the nets only (not Lightning, the CLI or the test modules)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from lightning_modules.nets import ResDAVEnetAudioNet

WIDTHS = [4, 8, 8, 12, 16]  # tiny ResDAVEnet: stem, then four stages


def tiny_net(**kwargs) -> ResDAVEnetAudioNet:
    torch.manual_seed(0)
    return ResDAVEnetAudioNet(layer_widths=WIDTHS, **kwargs)


def randomise_batchnorm(net: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial running statistics and affine weights, so that BatchNorm in eval does not map 0 to 0."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(1 + 0.2 * torch.randn(n, generator=g))
            m.bias.data.copy_(0.3 * torch.randn(n, generator=g))
    return net


STEPS = 3


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    # ranks get [64, 40] and [40, 64]: equal counted frames, so the mean commitment losses average exactly
    return torch.randn(4, 40, 64, generator=g), torch.tensor([64, 40, 40, 64])


def train_steps(model: nn.Module, net: ResDAVEnetAudioNet, shard: slice) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for step in range(STEPS):
        audio, nframes = global_batch(step)
        out = model(audio[shard], nframes[shard])
        loss = out.pow(2).mean() + sum(net.aux_losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()


def vq_net() -> ResDAVEnetAudioNet:
    net = randomise_batchnorm(tiny_net(vq_layers=[2, 3], codebook_size=32, jitter=0.0)).train()
    for m in net.modules():  # BatchNorm's batch statistics would differ between a shard and the union
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return net


def ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        net = vq_net()
        # no buffer sync at each forward: the codebooks must agree by their own all-reduce, not by rank 0's copy
        model = nn.parallel.DistributedDataParallel(net, forward_sync_buffers=False)
        train_steps(model, net, slice(2 * rank, 2 * rank + 2))
        torch.save({k: v for k, v in net.state_dict().items() if k.startswith("quant")}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


