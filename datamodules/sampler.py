"""`LengthBucketSampler`: training batches of similar caption length, sharded over DDP ranks."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class LengthBucketSampler(DistributedSampler):
    """Training order whose consecutive `batch_size` indices have similar caption lengths, sharded over ranks.

    Per epoch (random stream seeded with `seed + epoch`, the same on every rank):
      1. shuffle all indices; pad to a multiple of num_replicas by repeating some (as DistributedSampler does);
      2. sort by length inside mega-chunks of `chunk_batches` global batches (global batch = batch_size x ranks);
      3. cut into global batches and shuffle their order (a short last one stays last, so batches stay aligned);
      4. rank r takes every num_replicas-th index of each global batch.
    So each local batch holds captions of similar length, and with one rank every index comes exactly once.

    It is a DistributedSampler on purpose: Lightning leaves those in place under DDP and calls their `set_epoch`.
    Any other sampler gets wrapped in `DistributedSamplerWrapper` (pytorch_lightning/trainer/connectors/
    data_connector.py `_get_distributed_sampler`) with `shuffle=True` for training, which permutes the wrapped
    order again and would undo the bucketing.
    """

    def __init__(
        self,
        lengths,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        chunk_batches: int = 50,
    ):
        self.lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64)
        super().__init__(self.lengths, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.chunk_batches = chunk_batches

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.lengths)
        perm = torch.randperm(n, generator=g)
        if self.total_size > n:
            perm = perm.repeat(math.ceil(self.total_size / n))[: self.total_size]
        group = self.batch_size * self.num_replicas
        chunk = torch.arange(self.total_size) // (group * self.chunk_batches)
        lengths = self.lengths[perm]
        perm = perm[torch.sort(chunk * (int(lengths.max()) + 1) + lengths, stable=True).indices]
        n_full = self.total_size // group
        full = perm[: n_full * group].view(n_full, group)[torch.randperm(n_full, generator=g)]
        rest = perm[n_full * group :]
        local = torch.cat([full[:, self.rank :: self.num_replicas].reshape(-1), rest[self.rank :: self.num_replicas]])
        return iter(local.tolist())
