"""The DDP-exact torchmetrics ``Metric``s: ``RetrievalRecallMetric`` (recall@k over a whole split) and
``PlaceAccuracyMetric`` (scene accuracy of the place warm-up).

Both keep every prediction with its dataset index in ``cat`` states, so ``compute`` sees the whole split on
every rank; ``one_per_index`` then drops the copies that ``DistributedSampler`` pads the ranks with, which a
plain metric would count twice. ``compute`` is collective: call it on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from .core.retrieval_metrics import retrieval_metrics
from .core.similarity import DEFAULT_CHUNK_SIZE, SIMILARITY_KINDS, similarity_matrix


def one_per_index(index: Tensor) -> Tensor:
    """Positions of the first copy of every dataset index, in dataset order.

    ``DistributedSampler`` evens out the ranks by repeating the first items, so a gathered split holds a few
    items twice; metrics, spoken search and dashboards keep one copy each, sorted by index.
    """
    index = torch.as_tensor(index).reshape(-1)
    order = torch.argsort(index, stable=True)
    first = torch.ones_like(order, dtype=torch.bool)
    first[1:] = index[order][1:] != index[order][:-1]
    return order[first]


def _unpack_frames(packed: Tensor, nframes: Tensor, select: Tensor) -> Tensor:
    """Items ``select`` of packed frames [sum(nframes), D] (item after item) as a zero-padded [len(select), D, T]."""
    start = torch.cumsum(nframes, 0) - nframes
    lengths = nframes[select]
    T = int(lengths.max())
    t = torch.arange(T, device=packed.device)
    valid = t[None, :] < lengths[:, None]
    source = (start[select][:, None] + t[None, :]).clamp(max=packed.size(0) - 1)
    frames = packed[source] * valid[..., None].to(packed.dtype)  # [M, T, D]
    return frames.transpose(1, 2).contiguous()


class RetrievalRecallMetric(Metric):
    """Recall@k and ranks over a whole evaluation split, exact under DDP.

    ``update`` stores the model outputs of each batch with their dataset indices; ``compute`` gathers every
    rank's outputs, drops the copies that ``DistributedSampler`` pads with (keeping one per dataset index),
    sorts by dataset index, builds S with ``similarity_matrix`` (in chunks, in float32, autocast off) and
    returns ``retrieval_metrics(S)``. The values are the same on every rank and the same as a 1-process run,
    whatever the world size. ``compute`` is collective: call it on every rank.

    Audio frame maps are stored packed, only their valid frames ([sum T_valid, D] plus nframes), because
    batches pad to their own longest caption and so differ in T'. Half-precision outputs are stored as
    float32 so that ranking does not suffer from bfloat16 ties. Memory: 1000 full-size DAVEnet images
    (1024 x 14 x 14, float32) take 0.8 GB; pass ``compute_on_cpu=True`` to keep the states in host memory.

    Args:
        similarity_kind: "dot", "SISA", "MISA" or "SIMA" (see ``similarity_matrix``).
        ks: the k of recall@k.
        chunk_size: bound on the matchmap elements one GEMM builds while scoring.
        group_by_image: rank with ``image_ids`` (several captions per image); needs ``image_id`` in update.
        **kwargs: torchmetrics ``Metric`` options (``compute_on_cpu``, ``process_group``, ...).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    last_similarity: Tensor | None = None
    last_indices: Tensor | None = None

    def __init__(
        self,
        similarity_kind: str = "MISA",
        ks: Sequence[int] = (1, 5, 10),
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        group_by_image: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if similarity_kind not in SIMILARITY_KINDS:
            raise ValueError(
                f"similarity_kind must be one of {SIMILARITY_KINDS}, got {similarity_kind!r}"
            )
        self.similarity_kind = similarity_kind
        self.ks = tuple(int(k) for k in ks)
        self.chunk_size = chunk_size
        self.group_by_image = group_by_image
        # Every state gets a tensor in every update, so all ranks take part in the same gathers.
        for name in ("image", "audio", "nframes", "index", "image_id"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    @staticmethod
    def _store(x: Tensor) -> Tensor:
        x = x.detach()
        return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x

    def update(self, image_out: Tensor, audio_out: Tensor, nframes=None, index=None, image_id=None) -> None:
        """Add a batch: image_out [B, D, H, W] / [B, D, R] / [B, D], audio_out [B, D, T'] / [B, D], nframes [B]
        valid output frames (None: all T' valid; ignored for pooled outputs), index [B] dataset positions,
        image_id [B] image group ids (needed when ``group_by_image``)."""
        if index is None:
            raise ValueError("RetrievalRecallMetric.update needs the dataset `index` of each item")
        B = image_out.size(0)
        index = torch.as_tensor(index, device=image_out.device).reshape(-1).long()
        if audio_out.size(0) != B or index.numel() != B:
            raise ValueError(f"update got {B} images, {audio_out.size(0)} captions and "
                             f"{index.numel()} indices")
        pooled = self.similarity_kind == "dot"
        if pooled:
            if image_out.dim() != 2 or audio_out.dim() != 2:
                raise ValueError(f"kind 'dot' stores pooled [B, D] outputs, got "
                                 f"{tuple(image_out.shape)} and {tuple(audio_out.shape)}")
            lengths = torch.ones(B, dtype=torch.long, device=audio_out.device)
            packed = audio_out
        else:
            if image_out.dim() not in (3, 4) or audio_out.dim() != 3:
                raise ValueError(f"kind {self.similarity_kind!r} stores image maps [B, D, H, W] "
                                 f"and audio maps [B, D, T'], got {tuple(image_out.shape)} and "
                                 f"{tuple(audio_out.shape)}")
            T = audio_out.size(-1)
            if nframes is None:
                lengths = torch.full((B,), T, dtype=torch.long, device=audio_out.device)
            else:
                lengths = torch.as_tensor(nframes, device=audio_out.device).reshape(-1).long()
                if lengths.numel() != B or int(lengths.min()) < 1 or int(lengths.max()) > T:
                    raise ValueError(f"nframes must be {B} counts in [1, T'={T}], got {lengths.tolist()}")
            valid = torch.arange(T, device=audio_out.device)[None, :] < lengths[:, None]
            packed = audio_out.transpose(1, 2)[valid]  # [sum(lengths), D], item after item
        if image_id is None:
            if self.group_by_image:
                raise ValueError("group_by_image=True needs image_id in update")
            image_id = torch.full((B,), -1, dtype=torch.long, device=image_out.device)
        image_id = torch.as_tensor(image_id, device=image_out.device).reshape(-1).long()
        self.image.append(self._store(image_out))
        self.audio.append(self._store(packed))
        self.nframes.append(lengths)
        self.index.append(index)
        self.image_id.append(image_id)

    def compute(self) -> dict[str, Tensor]:
        if (self.index.numel() == 0) if isinstance(self.index, Tensor) else not self.index:
            raise RuntimeError("RetrievalRecallMetric.compute() called before any update()")
        image, audio = dim_zero_cat(self.image), dim_zero_cat(self.audio)
        nframes, index, image_id = dim_zero_cat(self.nframes), dim_zero_cat(self.index), dim_zero_cat(self.image_id)
        select = one_per_index(index)
        frames = _unpack_frames(audio, nframes, select)  # [M, D, T]
        if self.similarity_kind == "dot":
            audio_sel, nframes_sel = frames[..., 0], None
        else:
            audio_sel, nframes_sel = frames, nframes[select]
        with torch.autocast(device_type=image.device.type, enabled=False):
            S = similarity_matrix(image[select], audio_sel, nframes_sel, self.similarity_kind, self.chunk_size)
        ids = image_id[select] if self.group_by_image else None
        values = retrieval_metrics(S, self.ks, image_ids=ids)
        # Kept for dashboards and analysis (retrieval tables, error analysis): row/column i is dataset item
        # last_indices[i]. Not a metric state: never synced, never checkpointed.
        self.last_similarity, self.last_indices = S.detach(), index[select].detach()
        return {k: torch.tensor(v, dtype=torch.float64, device=self.device) for k, v in values.items()}


class PlaceAccuracyMetric(Metric):
    """Top-k accuracy and the confusion matrix, exact under DDP.

    Keeps each prediction with its dataset index (``cat`` states) and drops the duplicates that
    DistributedSampler adds to even out the ranks, which a plain accuracy metric would count twice.
    """

    full_state_update = False

    def __init__(self, n_places: int, ks: Sequence[int] = (1, 5)):
        super().__init__()
        self.n_places, self.ks = n_places, tuple(ks)
        self.add_state("topk", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> None:
        k = min(max(self.ks), logits.shape[1])
        self.topk.append(logits.detach().topk(k, dim=1).indices)
        self.target.append(target.detach())
        self.index.append(index.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        topk, target, index = (dim_zero_cat(x) for x in (self.topk, self.target, self.index))
        select = one_per_index(index)
        topk, target = topk[select], target[select]
        out = {f"acc_top{k}": (topk[:, :k] == target[:, None]).any(dim=1).float().mean() for k in self.ks}
        confusion = torch.zeros(self.n_places, self.n_places, dtype=torch.long, device=target.device)
        confusion.index_put_((target, topk[:, 0]), torch.ones_like(target), accumulate=True)
        out["confusion"] = confusion
        out["count"] = torch.tensor(int(target.numel()))
        return out
