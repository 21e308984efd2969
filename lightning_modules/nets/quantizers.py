"""Vector quantisation with an EMA codebook, and temporal jitter: the two pieces ResDAVEnet-VQ adds to ResDAVEnet.

References: Harwath, Hsu, Glass, "Learning Hierarchical Discrete Linguistic Units from Visually-Grounded Speech",
ICLR 2020 (arXiv 1911.09602); van den Oord et al., "Neural Discrete Representation Learning", NeurIPS 2017 (the EMA
codebook of its appendix). Official code: wnhsu/ResDAVEnet-VQ `models/quantizers.py` (`VectorQuantizerEMA`,
`TemporalJitter`) and `steps/traintest.py::train` (when the EMA update runs).

    VectorQuantizerEMA(K codes of width D), on frames x [N, D] with a mask of the frames that count:
      code        argmin_k |x - e_k|^2 (first index on ties)           no gradient
      output      training: x + (e_code - x).detach()  (straight-through: identity gradient to x, none to e)
                  eval:     e_code
      loss        commitment_cost * mean over counted frames and channels of (e_code.detach() - x)^2
      EMA update  (training-mode forward, before the backward; counted frames only)
                  counts_k = #frames with code k,  sums_k = sum of those frames  (all-reduced over DDP ranks)
                  N <- decay N + (1 - decay) counts;  N <- (N + eps) / (sum N + K eps) * sum N   (Laplace)
                  m <- decay m + (1 - decay) sums;    e <- m / N
      init        e ~ N(0, init_std^2) (clamped at 0 with nonneg_init), N = init_ema_mass, m = init_ema_mass * e

    TemporalJitter(p), training only: frame t of the output is frame clamp(t + c_t) of the input, with one offset
    c_t per frame, shared by the batch and the channels:
      official (default)   c in {0, +1, +2} with probabilities {p, 1 - 2p, p}: not centred, most frames move one
                           frame later (the official sampler draws a class 0/1/2 and adds it)
      centred=True         c in {-1, 0, +1} with the same probabilities
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

# Distances are built in row chunks of at most this many [rows x codes] elements (64 MiB of float32).
DISTANCE_CHUNK = 2**24


@dataclass
class VQOutput:
    """What one `VectorQuantizerEMA` forward gives.

    quantized:  [N, D] the output (straight-through in training, the plain code vectors in eval).
    codes:      [N] int64 code index of every frame (counted or not).
    loss:       scalar commitment loss (mean over the counted frames and channels, times the commitment cost).
    counts:     [K] float32 frames per code among the counted frames; after a training forward under DDP, over
                every rank (the statistics the EMA used).
    """

    quantized: Tensor
    codes: Tensor
    loss: Tensor
    counts: Tensor

    @property
    def perplexity(self) -> Tensor:
        """exp(entropy) of the code distribution of the counted frames (as the official `compute_perplexity`)."""
        probs = self.counts / self.counts.sum().clamp_min(1.0)
        return torch.exp(-(probs * torch.log(probs + 1e-10)).sum())

    @property
    def codes_used(self) -> Tensor:
        """Share of the codebook that the counted frames use."""
        return (self.counts > 0).float().mean()


def nearest_codes(x: Tensor, codebook: Tensor, chunk: int = DISTANCE_CHUNK) -> Tensor:
    """Index of the nearest code of every row of x [N, D] by squared Euclidean distance; first index on ties.

    The distance is expanded as |x|^2 + |e|^2 - 2 x.e, as the official code computes it, so that near-ties round
    the same way; rows are processed in chunks to bound memory.
    """
    with torch.no_grad():
        e2 = codebook.pow(2).sum(1)
        rows = max(1, chunk // max(codebook.shape[0], 1))
        out = [
            (part.pow(2).sum(1, keepdim=True) + e2 - 2 * part @ codebook.t()).argmin(1)
            for part in x.split(rows)
        ]
        return torch.cat(out) if out else x.new_zeros(0, dtype=torch.long)


class VectorQuantizerEMA(nn.Module):
    """Nearest-code quantiser whose codebook follows an exponential moving average of its frames (see the module
    docstring for the formulas).

    Args:
        num_codes: codebook size K.
        dim: code width D (the channels of the layer it quantises).
        commitment_cost: weight of the commitment loss (official run default 1).
        decay: EMA decay (0.99).
        epsilon: Laplace smoothing of the cluster sizes (1e-8).
        init_std: standard deviation of the initial codebook (1).
        init_ema_mass: initial EMA cluster size of every code (1).
        nonneg_init: clamp the initial codebook at 0.
        sync_ema: under torch.distributed, all-reduce the per-code counts and sums before every update, so that the
            codebook stays identical on every rank and equals a 1-process update on the union of the ranks' frames.

    The codebook and EMA state are buffers (`codebook` [K, D], `ema_count` [K], `ema_sum` [K, D]): saved in the
    state dict, never seen by an optimiser. Computation is in float32 whatever the autocast context.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        commitment_cost: float = 1.0,
        decay: float = 0.99,
        epsilon: float = 1e-8,
        init_std: float = 1.0,
        init_ema_mass: float = 1.0,
        nonneg_init: bool = False,
        sync_ema: bool = True,
    ):
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"need at least one code of width >= 1, got {num_codes} codes of width {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.num_codes, self.dim = num_codes, dim
        self.commitment_cost, self.decay, self.epsilon = commitment_cost, decay, epsilon
        self.sync_ema = sync_ema
        codebook = torch.empty(num_codes, dim).normal_(0.0, init_std)
        if nonneg_init:
            codebook.clamp_(min=0)
        self.register_buffer("codebook", codebook)
        self.register_buffer("ema_count", torch.full((num_codes,), float(init_ema_mass)))
        self.register_buffer("ema_sum", init_ema_mass * codebook.clone())

    def extra_repr(self) -> str:
        return f"{self.num_codes} codes x {self.dim}, commitment_cost={self.commitment_cost}, decay={self.decay}"

    def forward(self, x: Tensor, counted: Tensor | None = None) -> VQOutput:
        """Quantise frames x [N, D]; `counted` [N] bool marks the frames of the loss and the EMA (None: all).

        A training-mode forward also updates the codebook (after its codes were chosen with the old one).
        """
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected frames of shape [N, {self.dim}], got {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = x.float()
            codes = nearest_codes(z, self.codebook)
            code_vectors = self.codebook[codes]
            weight = torch.ones_like(z[:, 0]) if counted is None else counted.to(z.device, z.dtype).reshape(-1)
            keep = weight[:, None] > 0  # where(), not multiply: uncounted frames may hold anything, inf included
            sq = (code_vectors.detach() - z).pow(2)
            loss = torch.where(keep, sq, sq.new_zeros(())).sum()
            loss = self.commitment_cost * loss / (weight.sum() * self.dim).clamp_min(1.0)
            counts = torch.bincount(codes, weights=weight, minlength=self.num_codes).float()
            if self.training:
                frames = torch.where(keep, z.detach(), z.new_zeros(()))
                counts = self._ema_update(counts, torch.zeros_like(self.codebook).index_add_(0, codes, frames))
            out = z + (code_vectors - z).detach() if self.training else code_vectors
        return VQOutput(quantized=out.to(x.dtype), codes=codes, loss=loss, counts=counts)

    @torch.no_grad()
    def _ema_update(self, counts: Tensor, sums: Tensor) -> Tensor:
        """One EMA step from this step's per-code frame counts [K] and frame sums [K, D]; returns the counts used
        (all-reduced over ranks under torch.distributed)."""
        if self.sync_ema and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            stats = torch.cat([counts[:, None], sums], dim=1)  # one all-reduce for both
            dist.all_reduce(stats)
            counts, sums = stats[:, 0].contiguous(), stats[:, 1:]
        size = self.ema_count * self.decay + (1 - self.decay) * counts
        total = size.sum()
        size = (size + self.epsilon) / (total + self.num_codes * self.epsilon) * total
        self.ema_count.copy_(size)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.codebook.copy_(self.ema_sum / self.ema_count[:, None])
        return counts


class TemporalJitter(nn.Module):
    """Random per-frame shifts along time in training (identity in eval); see the module docstring.

    Args:
        p: probability of each of the two outer offsets (official run default 0.12; at most 0.5).
        centered: offsets {-1, 0, +1} instead of the official {0, +1, +2}.

    `forward(x [..., T], lengths=None)`: with `lengths` [B] (x of shape [B, ..., T]) the gathered index is clamped
    to each item's own last valid frame, so that an item never reads its padding; without, to T - 1 as officially.
    """

    def __init__(self, p: float = 0.12, centered: bool = False):
        super().__init__()
        if not 0.0 <= p <= 0.5:
            raise ValueError(f"jitter probability must be in [0, 0.5], got {p}")
        self.p, self.centered = p, centered

    def extra_repr(self) -> str:
        return f"p={self.p}, offsets={'{-1, 0, +1}' if self.centered else '{0, +1, +2} (official)'}"

    def sample_offsets(self, length: int, device: torch.device | None = None) -> Tensor:
        """[length] int64 offsets: the outer two with probability p each, the middle one with 1 - 2p."""
        u = torch.rand(length)  # the global CPU generator, as the official sampler
        offsets = (u >= self.p).long() + (u >= 1.0 - self.p).long()  # 0, 1, 2
        return (offsets - int(self.centered)).to(device)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if not self.training or self.p == 0:
            return x
        T = x.shape[-1]
        index = torch.arange(T, device=x.device) + self.sample_offsets(T, x.device)
        if lengths is None:
            return x.index_select(-1, index.clamp(0, T - 1))
        last = lengths.to(x.device).clamp(1, T) - 1
        index = torch.minimum(index.clamp(min=0)[None, :], last[:, None])  # [B, T]
        index = index.view(x.shape[0], *([1] * (x.dim() - 2)), T).expand(x.shape)
        return x.gather(-1, index)
