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


def first_of_each(ids: Tensor) -> tuple[Tensor, Tensor]:
    """``(first, rows)`` for ids [B]: ``first`` [U] the position of the first item of each distinct id, in order of
    first appearance, and ``rows`` [B] the position in ``first`` of each item's id (so ``x[first][rows]`` stands
    for ``x`` whenever items of one id share their value). Evaluation runs the image net on ``first`` only."""
    ids = torch.as_tensor(ids).reshape(-1)
    _, inverse = torch.unique(ids, return_inverse=True)
    n = ids.numel()
    first = torch.full((int(inverse.max()) + 1 if n else 0,), n, dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=ids.device), reduce="amin")
    order = torch.argsort(first)
    return first[order], torch.argsort(order)[inverse]


def _unpack_frames(packed: Tensor, nframes: Tensor, select: Tensor) -> Tensor:
    """Items ``select`` of packed frames [sum(nframes), D] (item after item) as a zero-padded [len(select), D, T].

    Written straight into the padded tensor: besides it, only the selected frames are copied once (a
    SpokenCOCO test split holds 25,000 x 1024 x 64 padded floats, 6.6 GB)."""
    start = torch.cumsum(nframes, 0) - nframes
    lengths = nframes[select]
    T = int(lengths.max())
    t = torch.arange(T, device=packed.device)
    valid = t[None, :] < lengths[:, None]  # [M, T]
    frames = packed.new_zeros(select.numel(), packed.size(1), T)
    frames.transpose(1, 2)[valid] = packed[(start[select][:, None] + t[None, :])[valid]]
    return frames


class RetrievalRecallMetric(Metric):
    """Recall@k and ranks over a whole evaluation split, exact under DDP, over the split's unique images.

    ``update`` stores each batch's captions (audio outputs with their dataset indices and image ids) and each of
    its distinct images once (image outputs with their image id). ``compute`` gathers every rank's outputs,
    drops the copies that ``DistributedSampler`` pads with (one caption per dataset index, one feature map per
    image id), orders captions by dataset index and images by their first caption, builds
    S = [unique images x captions] with ``similarity_matrix`` (in chunks, in float32, autocast off) and returns
    ``retrieval_metrics(S, caption_image=...)``.

    The protocol (SpeechCLIP / FaST-VGS, see ``lightning_modules.core.retrieval_metrics``): a caption query ranks
    the unique images and hits when its own image is in the top k, averaged over captions; an image query ranks
    all captions and hits when ANY of its captions is in the top k, averaged over unique images. With one
    caption per image (Places, SpokenScenes) S is the [N, N] matrix of the official ``calc_recalls`` and the
    numbers are exactly the ungrouped ones. ``group_by_image=False`` gives the official one-positive numbers on
    a split with several captions per image instead (each caption with its own copy of its image).

    The values are the same on every rank and the same as a 1-process run, whatever the world size: ``compute``
    is collective, call it on every rank.

    Audio frame maps are stored packed, only their valid frames ([sum T_valid, D] plus nframes), because
    batches pad to their own longest caption and so differ in T'. Half-precision outputs are stored as
    float32 so that ranking does not suffer from bfloat16 ties. Memory: 1000 full-size DAVEnet images
    (1024 x 14 x 14, float32) take 0.8 GB (SpokenCOCO's 5,000 test images 4 GB, its 25,000 captions of on
    average 38 valid output frames 3.9 GB); ``compute`` concatenates the states once more and unpacks
    ``caption_block`` captions at a time. Pass ``compute_on_cpu=True`` to keep the states in host memory.

    Args:
        similarity_kind: "dot", "SISA", "MISA" or "SIMA" (see ``similarity_matrix``).
        ks: the k of recall@k.
        chunk_size: bound on the matchmap elements one GEMM builds while scoring.
        group_by_image: rank unique images when ``update`` gets ``image_id`` (the default); False ranks one
            image row per caption (the official one-positive protocol). Without ``image_id`` every caption is
            its own image either way.
        caption_block: captions unpacked and scored at once in ``compute`` (their zero-padded frames,
            caption_block x D x T', are the one copy of the audio it makes); a split of up to this many captions
            is scored in one ``similarity_matrix`` call.
        **kwargs: torchmetrics ``Metric`` options (``compute_on_cpu``, ``process_group``, ...).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    # Kept by compute() for dashboards and analysis (not metric states: never synced, never checkpointed):
    last_similarity: Tensor | None = None  # S [images, captions]
    last_indices: Tensor | None = None  # [captions] dataset index of each column
    last_image_indices: Tensor | None = None  # [images] dataset index of the first caption of each row's image
    last_caption_image: Tensor | None = None  # [captions] row of each column's image

    def __init__(
        self,
        similarity_kind: str = "MISA",
        ks: Sequence[int] = (1, 5, 10),
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        group_by_image: bool = True,
        caption_block: int = 8192,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if caption_block < 1:
            raise ValueError(f"caption_block must be >= 1, got {caption_block}")
        self.caption_block = caption_block
        if similarity_kind not in SIMILARITY_KINDS:
            raise ValueError(f"similarity_kind must be one of {SIMILARITY_KINDS}, got {similarity_kind!r}")
        self.similarity_kind = similarity_kind
        self.ks = tuple(int(k) for k in ks)
        self.chunk_size = chunk_size
        self.group_by_image = group_by_image
        # Every state gets a tensor in every update, so all ranks take part in the same gathers.
        for name in ("audio", "nframes", "index", "caption_key", "image", "image_key", "image_first"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    @staticmethod
    def _store(x: Tensor) -> Tensor:
        x = x.detach()
        return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x

    def update(self, image_out: Tensor, audio_out: Tensor, nframes=None, index=None, image_id=None,
               image_rows=None) -> None:
        """Add a batch of B captions.

        Args:
            image_out: [B, D, H, W] / [B, D, R] / [B, D] image outputs, one per caption; or, with ``image_rows``,
                one per distinct image of the batch [U, ...].
            audio_out: [B, D, T'] frame maps or [B, D] pooled outputs.
            nframes: [B] valid output frames (None: all T' valid; ignored for pooled outputs).
            index: [B] dataset positions of the captions.
            image_id: [B] image ids of the captions (several captions may share one).
            image_rows: [B] row of ``image_out`` of each caption's image (``first_of_each(image_id)[1]``).
        """
        if index is None:
            raise ValueError("RetrievalRecallMetric.update needs the dataset `index` of each item")
        B = audio_out.size(0)
        device = audio_out.device
        index = torch.as_tensor(index, device=device).reshape(-1).long()
        if index.numel() != B:
            raise ValueError(f"update got {B} captions and {index.numel()} indices")
        if image_rows is not None:
            image_rows = torch.as_tensor(image_rows, device=device).reshape(-1).long()
            if image_rows.numel() != B or int(image_rows.min()) < 0 or int(image_rows.max()) >= image_out.size(0):
                raise ValueError(f"image_rows must be {B} rows of the {image_out.size(0)} images, "
                                 f"got {image_rows.tolist()}")
        elif image_out.size(0) != B:
            raise ValueError(f"update got {image_out.size(0)} images and {B} captions (pass image_rows when the "
                             "images are the batch's distinct ones)")
        packed, lengths = self._pack_audio(image_out, audio_out, nframes)

        grouped = self.group_by_image and image_id is not None
        if getattr(self, "_grouped", grouped) != grouped:
            raise ValueError("every update of one evaluation must give image_id, or none")
        self._grouped = grouped
        if grouped:
            image_id = torch.as_tensor(image_id, device=device).reshape(-1).long()
            if image_id.numel() != B:
                raise ValueError(f"update got {B} captions and {image_id.numel()} image ids")
            # Each image of the batch once, taken from its first caption in dataset order, which also orders
            # the images in S.
            by_index = torch.argsort(index)
            first = by_index[first_of_each(image_id[by_index])[0]]
            images = image_out[image_rows[first]] if image_rows is not None else image_out[first]
            key, image_first, caption_key = image_id[first], index[first], image_id
        else:  # every caption has its own image, keyed by its dataset index
            images = image_out[image_rows] if image_rows is not None else image_out
            key = image_first = caption_key = index
        self.audio.append(self._store(packed))
        self.nframes.append(lengths)
        self.index.append(index)
        self.caption_key.append(caption_key)
        self.image.append(self._store(images))
        self.image_key.append(key)
        self.image_first.append(image_first)

    def _pack_audio(self, image_out: Tensor, audio_out: Tensor, nframes) -> tuple[Tensor, Tensor]:
        B = audio_out.size(0)
        if self.similarity_kind == "dot":
            if image_out.dim() != 2 or audio_out.dim() != 2:
                raise ValueError(f"kind 'dot' stores pooled [B, D] outputs, got {tuple(image_out.shape)} and "
                                 f"{tuple(audio_out.shape)}")
            return audio_out, torch.ones(B, dtype=torch.long, device=audio_out.device)
        if image_out.dim() not in (3, 4) or audio_out.dim() != 3:
            raise ValueError(f"kind {self.similarity_kind!r} stores image maps [B, D, H, W] and audio maps "
                             f"[B, D, T'], got {tuple(image_out.shape)} and {tuple(audio_out.shape)}")
        T = audio_out.size(-1)
        if nframes is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=audio_out.device)
        else:
            lengths = torch.as_tensor(nframes, device=audio_out.device).reshape(-1).long()
            if lengths.numel() != B or int(lengths.min()) < 1 or int(lengths.max()) > T:
                raise ValueError(f"nframes must be {B} counts in [1, T'={T}], got {lengths.tolist()}")
        valid = torch.arange(T, device=audio_out.device)[None, :] < lengths[:, None]
        return audio_out.transpose(1, 2)[valid], lengths  # [sum(lengths), D], item after item

    def compute(self) -> dict[str, Tensor]:
        if (self.index.numel() == 0) if isinstance(self.index, Tensor) else not self.index:
            raise RuntimeError("RetrievalRecallMetric.compute() called before any update()")
        audio, nframes, index, caption_key = (dim_zero_cat(x) for x in (self.audio, self.nframes, self.index,
                                                                         self.caption_key))
        image, image_key, image_first = (dim_zero_cat(x) for x in (self.image, self.image_key, self.image_first))
        select = one_per_index(index)  # one copy per caption, in dataset order

        # One feature map per image id: the copy registered with the image's first caption (DDP pads the ranks
        # with repeated items, and an image can occur in several batches). Rows in order of first caption.
        by_first = torch.argsort(image_first, stable=True)
        chosen = by_first[one_per_index(image_key[by_first])]  # ascending key, each key's earliest copy
        row_order = torch.argsort(image_first[chosen])
        rows = chosen[row_order]
        row_of_sorted_key = torch.argsort(row_order)
        caption_image = row_of_sorted_key[torch.searchsorted(image_key[chosen], caption_key[select])]

        if rows.numel() != image.size(0) or not torch.equal(rows, torch.arange(rows.numel(), device=rows.device)):
            image = image[rows]  # a copy; not needed when every image was stored once, in order
        # Captions are unpacked (zero-padded) and scored a block at a time, so the padded copy stays bounded.
        columns = []
        for c0 in range(0, select.numel(), self.caption_block):
            block = select[c0 : c0 + self.caption_block]
            frames = _unpack_frames(audio, nframes, block)  # [m, D, T]
            if self.similarity_kind == "dot":
                audio_block, nframes_block = frames[..., 0], None
            else:
                audio_block, nframes_block = frames, nframes[block]
            with torch.autocast(device_type=image.device.type, enabled=False):
                columns.append(similarity_matrix(image, audio_block, nframes_block, self.similarity_kind,
                                                 self.chunk_size))
            del frames, audio_block
        S = columns[0] if len(columns) == 1 else torch.cat(columns, dim=1)
        values = retrieval_metrics(S, self.ks, caption_image=caption_image)
        self.last_similarity, self.last_indices = S.detach(), index[select].detach()
        self.last_image_indices, self.last_caption_image = image_first[rows].detach(), caption_image.detach()
        return {k: torch.tensor(v, dtype=torch.float64, device=self.device) for k, v in values.items()}

    def reset(self) -> None:
        super().reset()
        self.__dict__.pop("_grouped", None)


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
