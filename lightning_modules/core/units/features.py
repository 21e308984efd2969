"""Frame features of every layer of an audio net, at each layer's own frame rate, and k-means codes of them.

    layer_names(audio_net) -> ["input", "conv1", ..., "conv5"]        (DAVEnet; ResDAVEnet: conv1, layer1..layer4)
    layer_strides(audio_net) -> {name: input frames per frame}         1, 1, 2, 4, 8, 16
    layer_outputs(audio_net, audio, nframes, layers) -> {name: LayerFrames(frames [B, C, T_k], valid [B], spf)}
    position_spf(k) -> seconds per frame of ResDAVEnet-VQ position k   0.01 * 2**(k - 1)
    frame_times(n, spf) -> centres [n]                                 (f + 0.5) * spf, as ResDAVEnet-VQ's analysis
    kmeans(x, k) -> centroids;  assign(x, centroids) -> codes          discrete units for nets without VQ layers

Layers are read with forward hooks, so the nets stay as the papers wrote them: DAVEnet's conv1 is the ReLU of its
first convolution (norm1 output), conv2..conv5 the outputs of the four max-pools (after each conv, ReLU, pool);
ResDAVEnet's conv1 is the ReLU of the stem (bn1 output), layer1..layerN the residual stages (their last blocks),
before any VQ layer that follows them (a VQ position's codes are `encode_units`'). ``input`` is the log-mel itself.

Frame rates. Every max-pool of DAVEnet and every stage of ResDAVEnet halves the frame rate with ceil, so a layer
of stride s (input frames per frame) has ``spf = 0.01 * s`` seconds per frame and ``ceil(nframes / s)`` valid
frames. The official `get_feats_codes` computes ``0.01 * round(T / T_k)`` instead, which is the stride on its
fixed 2048-frame inputs but not on captions at their own length (T = 200 at stride 16: 13 frames, 0.15 s).

Time convention (one for every layer, the codes, ``predict``'s units dump and the analyses): frame f of a layer
covers ``[f, f + 1) * spf`` seconds and sits at its centre ``(f + 0.5) * spf`` (ResDAVEnet-VQ
`steps/alignment.py::DenseAlignment.get_center`, offset 0). The log-mel's STFT is centred (frame j at j * 10 ms),
so this places every frame half a hop (5 ms) later than the centre of the input frames it pools; it is kept to
give the official numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nets import DAVEnetAudioNet, ResDAVEnetAudioNet

INPUT_SPF = 0.01  # seconds per log-mel frame (10 ms hop)


@dataclass
class LayerFrames:
    frames: Tensor  # [B, C, T_k]
    valid: Tensor  # [B] int64 valid frames per caption
    spf: float  # seconds per frame


def layer_strides(audio_net: nn.Module) -> dict[str, int]:
    """Input frames per frame of every layer `layer_outputs` can read from this net, from the input up."""
    if isinstance(audio_net, DAVEnetAudioNet):  # conv2..conv5: after each max-pool of stride 2
        return {"input": 1, "conv1": 1, "conv2": 2, "conv3": 4, "conv4": 8, "conv5": 16}
    if isinstance(audio_net, ResDAVEnetAudioNet):  # every stage starts with a stride-2 block
        return {"input": 1, "conv1": 1, **{f"layer{k}": 2**k for k in range(1, audio_net.num_stages + 1)}}
    raise ValueError(f"layer features: {type(audio_net).__name__} is not a frame-level net with known layers "
                     "(DAVEnetAudioNet, ResDAVEnetAudioNet)")


def layer_names(audio_net: nn.Module) -> list[str]:
    """The layers `layer_outputs` can read from this net, from the input up."""
    return list(layer_strides(audio_net))


def position_spf(position: int, frame_shift: float = INPUT_SPF) -> float:
    """Seconds per code at ResDAVEnet-VQ position ``position`` (1: the input rate, k + 1: after stage k)."""
    return frame_shift * 2 ** (position - 1)


def resolve_layer(audio_net: nn.Module, layer: str | int) -> str:
    """A layer by name or number: 0 is the input; k is DAVEnet's conv{k}, and ResDAVEnet's VQ position k (the
    numbering of ``vq_layers`` and the official ``quant<k>``: 1 = the stem conv1, k = the output of stage k - 1,
    so 3 = layer2, 40 ms per frame)."""
    names = layer_names(audio_net)
    if isinstance(layer, int) or str(layer).isdigit():
        k = int(layer)
        if k == 0:
            name = "input"
        elif isinstance(audio_net, DAVEnetAudioNet):
            name = f"conv{k}"
        else:
            name = "conv1" if k == 1 else f"layer{k - 1}"
    else:
        name = str(layer)
    if name not in names:
        raise ValueError(f"layer {layer!r}: {type(audio_net).__name__} has the layers {names} (or their numbers)")
    return name


@torch.no_grad()
def layer_outputs(audio_net: nn.Module, audio: Tensor, nframes: Tensor | None = None,
                  layers: Sequence[str] | None = None) -> dict[str, LayerFrames]:
    """The frames of ``layers`` (default: all of `layer_names`) for a batch ``audio`` [B, 40, T]."""
    strides = layer_strides(audio_net)
    names = list(strides)
    wanted = list(names if layers is None else layers)
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ValueError(f"layer features: unknown layers {unknown}; {type(audio_net).__name__} has {names}")
    B, _, T = audio.shape
    nframes = torch.full((B,), T, dtype=torch.long) if nframes is None else torch.as_tensor(nframes).long().cpu()
    caught: dict[str, Tensor] = {}
    hooks = []

    def keep(name: str, relu: bool = False):
        def hook(_module, _inputs, output):
            caught[name] = F.relu(output) if relu else output
        return hook

    if isinstance(audio_net, DAVEnetAudioNet):
        hooks.append(audio_net.norm1.register_forward_hook(keep("conv1", relu=True)))
        pooled: list[Tensor] = []
        hooks.append(audio_net.pool.register_forward_hook(lambda _m, _i, out: pooled.append(out)))
    else:  # a stage's output is its last block's (the stage itself may be iterated rather than called)
        hooks.append(audio_net.bn1.register_forward_hook(keep("conv1", relu=True)))
        for k in range(1, audio_net.num_stages + 1):
            hooks.append(getattr(audio_net, f"layer{k}")[-1].register_forward_hook(keep(f"layer{k}")))
    try:
        audio_net(audio, nframes.to(audio.device))
    finally:
        for h in hooks:
            h.remove()
    if isinstance(audio_net, DAVEnetAudioNet):
        caught.update({f"conv{k + 2}": out for k, out in enumerate(pooled)})
    caught["input"] = audio
    out = {}
    for name in wanted:
        x = caught[name]
        x = x.squeeze(2) if x.dim() == 4 else x  # [B, C, 1, T_k] -> [B, C, T_k]
        t_k, stride = x.size(-1), strides[name]
        if t_k != -(-T // stride):
            raise ValueError(f"layer features: {name} of {type(audio_net).__name__} has {t_k} frames for {T} input "
                             f"frames, not ceil({T} / {stride})")
        valid = torch.clamp(-(-nframes // stride), 1, t_k)
        out[name] = LayerFrames(x, valid, INPUT_SPF * stride)
    return out


def frame_times(n: int, spf: float, offset: float = 0.0) -> Tensor:
    """Centres [n] of frames 0..n-1 on a grid of ``spf`` seconds: ``offset + (f + 0.5) * spf`` (the module's time
    convention)."""
    return offset + (torch.arange(n, dtype=torch.float64) + 0.5) * spf


# ---- k-means codes -------------------------------------------------------------------------------------------
def assign(x: Tensor, centroids: Tensor, chunk_size: int = 65536) -> Tensor:
    """Index [N] of the nearest centroid (squared euclidean distance) of every row of ``x`` [N, D]."""
    c2 = (centroids.double() ** 2).sum(1)
    out = []
    for part in x.double().split(chunk_size):
        out.append(((part**2).sum(1, keepdim=True) - 2 * part @ centroids.double().T + c2).argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def kmeans(x: Tensor, k: int, iters: int = 25, seed: int = 0) -> Tensor:
    """Centroids [k, D] of Lloyd's k-means on the rows of ``x`` [N, D], seeded with k-means++ (deterministic for a
    seed). A cluster left empty takes the point farthest from its centroid. As word-discovery turns a layer's
    features into discrete units (there with FAISS)."""
    x = x.double()
    n = x.size(0)
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: k must be in [1, {n}] (the number of frames), got {k}")
    g = torch.Generator().manual_seed(seed)
    centroids = [x[torch.randint(n, (1,), generator=g)].view(-1)]
    nearest = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):  # k-means++: the next centre drawn in proportion to the squared distance
        if float(nearest.sum()) <= 0:
            pick = torch.randint(n, (1,), generator=g)
        else:
            pick = torch.multinomial(nearest / nearest.sum(), 1, generator=g)
        centroids.append(x[pick].view(-1))
        nearest = torch.minimum(nearest, ((x - centroids[-1]) ** 2).sum(1))
    c = torch.stack(centroids)
    for _ in range(iters):
        codes = assign(x, c)
        counts = torch.bincount(codes, minlength=k).double()
        sums = torch.zeros_like(c).index_add_(0, codes, x)
        new = sums / counts.clamp(min=1)[:, None]
        empty = torch.nonzero(counts == 0).view(-1)
        if len(empty):
            far = ((x - new[codes]) ** 2).sum(1).argsort(descending=True)[: len(empty)]
            new[empty] = x[far]
        if torch.allclose(new, c):
            c = new
            break
        c = new
    return c.float()
