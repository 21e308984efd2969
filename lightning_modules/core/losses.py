"""Ranking losses for image-caption retrieval, as pure functions and as interchangeable ``nn.Module``s.

Every module has ``forward(image_out, audio_out, nframes, kind, image_ids=None) -> scalar``, so a config picks
the loss by ``class_path`` and the training step never branches on the paper:

| module                   | paper               | what it compares                                        |
|--------------------------|---------------------|---------------------------------------------------------|
| SampledMarginRankLoss    | DAVEnet (ECCV 2018) | each pair against one random impostor image and caption |
| ResDAVEnetTripletLoss    | ResDAVEnet (2019/20)| sampled + semi-hard triplets on S and on S^T             |
| InfoNCELoss              | (CLIP-style)        | symmetric in-batch cross-entropy over scaled S          |
| AllNegativesTripletLoss  | (modern option)     | hinge against every in-batch negative, both directions  |

S is always [B, B] with rows = images and columns = captions; the partner of row i is column i. Masks are
built on the fly, so no state depends on the batch size (checkpoints load whatever the batch size).

Several captions per image (Flickr8k, SpokenCOCO: an epoch iterates captions, so a batch can hold two captions
of one image): with ``image_ids`` [B], no item of the anchor's own image is ever a negative. Sampled impostors
are drawn only among other-image items, the semi-hard and all-negatives masks leave same-image pairs out, and
the InfoNCE denominators leave out the other copies of the anchor's image. An anchor whose batch holds no item
of another image has no negative, which happens only when every item of the batch shows that one image: the
loss of such a batch is 0 (with zero gradients; use ``drop_last`` or shuffling so that it stays rare).
``image_ids=None`` (or a batch of distinct images) is the papers' loss, with the same random draws.

References: Harwath et al., ECCV 2018, arXiv:1804.01452 (sampled margin rank loss; official code
dharwath/DAVEnet-pytorch ``steps/util.py``); Harwath, Hsu, Glass, ICLR 2020, arXiv:1911.09602 and Hsu,
Harwath, Glass, Interspeech 2019, arXiv:1907.04355 (triplets; official code wnhsu/ResDAVEnet-VQ
``steps/traintest.py``); Oord et al. 2018, arXiv:1807.03748 and Radford et al. 2021 (InfoNCE / CLIP).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .similarity import paired_similarity, similarity_matrix


# ---- helpers ---------------------------------------------------------------------------------------------
def _check_batch(B: int, what: str) -> None:
    if B < 2:
        raise ValueError(f"{what} needs a batch of at least 2 pairs to draw impostors from, got {B}")


def _check_square(S: Tensor, what: str) -> None:
    if S.dim() != 2 or S.size(0) != S.size(1):
        raise ValueError(f"{what} takes a square [B, B] similarity matrix, got {tuple(S.shape)}")


def _other_index(B: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """For each j, an index drawn uniformly from the other B - 1 items: (j + U{1, ..., B-1}) mod B."""
    draw_device = generator.device if generator is not None else device
    offset = torch.randint(1, B, (B,), generator=generator, device=draw_device).to(device)
    return (torch.arange(B, device=device) + offset) % B


def same_image_mask(image_ids, B: int, device: torch.device) -> Tensor | None:
    """[B, B] bool, True where items i and j show the same image (the diagonal included); None without ids."""
    if image_ids is None:
        return None
    ids = torch.as_tensor(image_ids, device=device).reshape(-1)
    if ids.numel() != B:
        raise ValueError(f"image_ids must have one id per item of the batch (B={B}), got {ids.numel()}")
    return ids[:, None] == ids[None, :]


def _impostor_index(
    B: int, device: torch.device, generator: torch.Generator | None, same: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """An impostor for each item j: uniform over the other B - 1 items, or with ``same`` over the items of other
    images. Returns (index [B], has_impostor [B] bool, None without ``same``).

    The first draw is always ``_other_index``'s; a row whose draw hit its own image is drawn again uniformly among
    its n other-image items. That keeps every such item at probability 1/(B-1) + (B-1-n)/(B-1) * 1/n = 1/n and
    leaves the random draws of a batch of distinct images exactly as they are without ids.
    """
    index = _other_index(B, device, generator)
    if same is None:
        return index, None
    others = ~same
    has = others.any(1)
    redraw = same[torch.arange(B, device=device), index] & has
    if bool(redraw.any()):
        valid = others[redraw]
        count = valid.sum(1)
        draw_device = generator.device if generator is not None else device
        u = torch.rand(valid.size(0), generator=generator, device=draw_device, dtype=torch.float64).to(device)
        r = torch.minimum((u * count).long(), count - 1)
        index[redraw] = (valid.long().cumsum(1) > r[:, None]).long().argmax(1)  # the (r+1)-th other-image item
    return index, has


def _mean_over(x: Tensor, keep: Tensor | None) -> Tensor:
    """Mean of x over the anchors that have a negative (all of them when ``keep`` is None); 0 when none has."""
    if keep is None or bool(keep.all()):
        return x.mean()
    return x[keep].mean() if bool(keep.any()) else x.sum() * 0.0


# ---- DAVEnet ---------------------------------------------------------------------------------------------
def sampled_margin_rank_loss(
    image: Tensor,
    audio: Tensor,
    nframes=None,
    kind: str = "MISA",
    margin: float = 1.0,
    generator: torch.Generator | None = None,
    image_ids=None,
) -> Tensor:
    """DAVEnet's loss: each anchor pair against one impostor image and, independently, one impostor caption.

        L = 1/B sum_j [ relu(margin + S(I_imp(j), A_j) - S(I_j, A_j)) + relu(margin + S(I_j, A_imp(j)) - S(I_j, A_j)) ]

    Impostors are uniform over the other B - 1 items (image impostors are drawn first, then caption
    impostors), or with ``image_ids`` [B] over the items of other images. Only the 3B needed similarities are
    computed (``paired_similarity``), never the B x B matrix. Inputs as in ``similarity_matrix``; B must be at
    least 2.
    """
    B = image.size(0)
    _check_batch(B, "sampled_margin_rank_loss")
    same = same_image_mask(image_ids, B, image.device)
    imp_image, has = _impostor_index(B, image.device, generator, same)
    imp_audio, _ = _impostor_index(B, image.device, generator, same)
    if nframes is not None:
        nframes = torch.as_tensor(nframes, device=audio.device)
    anchor = paired_similarity(image, audio, nframes, kind)
    image_impostor = paired_similarity(image[imp_image], audio, nframes, kind)
    audio_impostor = paired_similarity(
        image, audio[imp_audio], None if nframes is None else nframes[imp_audio.to(nframes.device)], kind
    )
    return _mean_over(F.relu(margin + image_impostor - anchor) + F.relu(margin + audio_impostor - anchor), has)


# ---- ResDAVEnet ------------------------------------------------------------------------------------------
def triplet_sampled(
    S: Tensor, margin: float = 1.0, generator: torch.Generator | None = None, image_ids=None
) -> Tensor:
    """Each row's positive S_ii against one impostor column drawn uniformly from the other B - 1 (with
    ``image_ids``: from the columns of other images): mean_i relu(S_i,imp(i) - S_ii + margin)."""
    _check_square(S, "triplet_sampled")
    B = S.size(0)
    _check_batch(B, "triplet_sampled")
    rows = torch.arange(B, device=S.device)
    index, has = _impostor_index(B, S.device, generator, same_image_mask(image_ids, B, S.device))
    return _mean_over(F.relu(S[rows, index] - S.diagonal() + margin), has)


def triplet_semihard(S: Tensor, margin: float = 1.0, mask: str = "official", image_ids=None) -> Tensor:
    """Each row's positive against its semi-hard negative, the most similar column still below the positive:
    mean_i relu(imp_i - S_ii + margin).

    mask="official" reproduces the released code, which *multiplies* S by the mask
    ``S_ij - S_ii < 0``: masked entries (the positive itself included) count as 0, so
    imp_i = max(0, best valid negative). On an all-negative S this is imp_i = 0 for every row.

    mask="strict" masks with -inf instead, so imp_i is the best valid negative; a row without one (its
    positive is its lowest entry) has imp_i = -inf and contributes 0 to the mean (it still counts in the
    denominator B).

    With ``image_ids`` the columns of the row's own image are masked like the ones above the positive.
    """
    _check_square(S, "triplet_semihard")
    positive = S.diagonal()
    below = (S - positive[:, None]) < 0  # excludes the positive itself (0 is not < 0)
    same = same_image_mask(image_ids, S.size(0), S.device)
    has = None
    if same is not None:
        below = below & ~same
        has = (~same).any(1)
    if mask == "official":
        impostor = (S * below).max(dim=1).values
    elif mask == "strict":
        impostor = S.masked_fill(~below, float("-inf")).max(dim=1).values
    else:
        raise ValueError(f"triplet_semihard mask must be 'official' or 'strict', got {mask!r}")
    return _mean_over(F.relu(impostor - positive + margin), has)


# ---- modern options --------------------------------------------------------------------------------------
def info_nce(S: Tensor, scale: float | Tensor = 30.0, image_ids=None) -> Tensor:
    """Symmetric in-batch InfoNCE: the mean of the cross-entropies of S * scale over rows (image -> caption)
    and over columns (caption -> image), with the diagonal as targets. With ``image_ids`` the other items of
    the anchor's own image are left out of its denominator (and anchors without another image out of the mean).
    """
    _check_square(S, "info_nce")
    B = S.size(0)
    logits = S * scale
    targets = torch.arange(B, device=S.device)
    same = same_image_mask(image_ids, B, S.device)
    copies = None if same is None else same & ~torch.eye(B, dtype=torch.bool, device=S.device)
    if copies is None or not bool(copies.any()):
        return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))
    logits = logits.masked_fill(copies, float("-inf"))
    has = (~same).any(1)
    per_image = F.cross_entropy(logits, targets, reduction="none")
    per_caption = F.cross_entropy(logits.t(), targets, reduction="none")
    return 0.5 * (_mean_over(per_image, has) + _mean_over(per_caption, has))


def all_negatives_triplet(S: Tensor, margin: float = 1.0, image_ids=None) -> Tensor:
    """Hinge against every in-batch negative: mean over i != j of relu(S_ij - S_ii + margin) (images as
    anchors) plus the same with captions as anchors, relu(S_ij - S_jj + margin). With ``image_ids`` the pairs
    of one image are no negatives (a batch of one image gives 0)."""
    _check_square(S, "all_negatives_triplet")
    B = S.size(0)
    _check_batch(B, "all_negatives_triplet")
    positive = S.diagonal()
    same = same_image_mask(image_ids, B, S.device)
    negative = ~torch.eye(B, dtype=torch.bool, device=S.device) if same is None else ~same
    if not bool(negative.any()):
        return S.sum() * 0.0
    per_image = F.relu(S - positive[:, None] + margin)[negative].mean()
    per_caption = F.relu(S - positive[None, :] + margin)[negative].mean()
    return per_image + per_caption


# ---- modules ---------------------------------------------------------------------------------------------
class RetrievalLoss(nn.Module):
    """Base class of the retrieval losses: ``forward(image_out, audio_out, nframes, kind) -> scalar``.

    The modules' ``loss`` argument takes a ``RetrievalLoss``, so that ``--model.loss`` offers these classes (and a
    user's own subclass) instead of every ``nn.Module`` that torch defines."""

    def forward(self, image_out: Tensor, audio_out: Tensor, nframes=None, kind: str = "MISA") -> Tensor:
        raise NotImplementedError


class SampledMarginRankLoss(RetrievalLoss):
    """DAVEnet's sampled margin ranking loss (see ``sampled_margin_rank_loss``); impostors come from torch's
    global RNG, so ``seed_everything`` makes them reproducible."""

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = margin

    def forward(self, image_out: Tensor, audio_out: Tensor, nframes=None, kind: str = "MISA",
                image_ids=None) -> Tensor:
        return sampled_margin_rank_loss(image_out, audio_out, nframes, kind, margin=self.margin, image_ids=image_ids)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class ResDAVEnetTripletLoss(RetrievalLoss):
    """ResDAVEnet's loss on S = similarity_matrix(image_out, audio_out, nframes, kind):

        triplet_sampled(S) + triplet_sampled(S^T) + triplet_semihard(S) + triplet_semihard(S^T)

    (the VQ commitment losses of ResDAVEnet-VQ are not part of it). ``semihard_mask="official"`` is the
    default because it is what the released checkpoints were trained with: it clips the semi-hard impostor
    at 0 (see ``triplet_semihard``), which changes the loss whenever similarities can be negative.
    ``"strict"`` is the textbook semi-hard negative.
    """

    def __init__(self, margin: float = 1.0, semihard_mask: str = "official"):
        super().__init__()
        if semihard_mask not in ("official", "strict"):
            raise ValueError(f"semihard_mask must be 'official' or 'strict', got {semihard_mask!r}")
        self.margin = margin
        self.semihard_mask = semihard_mask

    def forward(self, image_out: Tensor, audio_out: Tensor, nframes=None, kind: str = "SISA",
                image_ids=None) -> Tensor:
        S = similarity_matrix(image_out, audio_out, nframes, kind)
        _check_batch(S.size(0), "ResDAVEnetTripletLoss")
        m, mask, ids = self.margin, self.semihard_mask, image_ids
        return (
            triplet_sampled(S, m, image_ids=ids) + triplet_sampled(S.t(), m, image_ids=ids)
            + triplet_semihard(S, m, mask, ids) + triplet_semihard(S.t(), m, mask, ids)
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, semihard_mask={self.semihard_mask!r}"


class InfoNCELoss(RetrievalLoss):
    """Symmetric InfoNCE over the in-batch similarity matrix (see ``info_nce``).

    Args:
        scale: the logit scale (inverse temperature); with L2-normalised outputs S lies in [-1, 1].
        learnable_scale: learn log(scale) as a parameter (CLIP); the scale used is clamped to ``max_scale``.
        max_scale: upper clamp of a learnable scale (CLIP uses 100).
    """

    def __init__(self, scale: float = 30.0, learnable_scale: bool = False, max_scale: float = 100.0):
        super().__init__()
        if scale <= 0 or max_scale <= 0:
            raise ValueError(f"InfoNCELoss scale and max_scale must be > 0, got {scale}, {max_scale}")
        self.learnable_scale = learnable_scale
        self.max_scale = max_scale
        if learnable_scale:
            self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        else:
            self.scale = scale

    def current_scale(self) -> Tensor | float:
        if self.learnable_scale:
            return self.log_scale.clamp(max=math.log(self.max_scale)).exp()
        return self.scale

    def forward(self, image_out: Tensor, audio_out: Tensor, nframes=None, kind: str = "MISA",
                image_ids=None) -> Tensor:
        return info_nce(similarity_matrix(image_out, audio_out, nframes, kind), self.current_scale(), image_ids)


class AllNegativesTripletLoss(RetrievalLoss):
    """Hinge against all in-batch negatives in both directions (see ``all_negatives_triplet``)."""

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = margin

    def forward(self, image_out: Tensor, audio_out: Tensor, nframes=None, kind: str = "MISA",
                image_ids=None) -> Tensor:
        return all_negatives_triplet(similarity_matrix(image_out, audio_out, nframes, kind), self.margin, image_ids)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
