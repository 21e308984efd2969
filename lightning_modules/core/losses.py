"""Ranking losses for image-caption retrieval, as pure functions and as interchangeable ``nn.Module``s.

Every module has ``forward(image_out, audio_out, nframes, kind) -> scalar``, so a config picks the loss by
``class_path`` and the training step never branches on the paper:

| module                   | paper               | what it compares                                        |
|--------------------------|---------------------|---------------------------------------------------------|
| SampledMarginRankLoss    | DAVEnet (ECCV 2018) | each pair against one random impostor image and caption |
| ResDAVEnetTripletLoss    | ResDAVEnet (2019/20)| sampled + semi-hard triplets on S and on S^T             |
| InfoNCELoss              | (CLIP-style)        | symmetric in-batch cross-entropy over scaled S          |
| AllNegativesTripletLoss  | (modern option)     | hinge against every in-batch negative, both directions  |

S is always [B, B] with rows = images and columns = captions; the partner of row i is column i. Masks are
built on the fly, so no state depends on the batch size (checkpoints load whatever the batch size).

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


# ---- DAVEnet ---------------------------------------------------------------------------------------------
def sampled_margin_rank_loss(
    image: Tensor,
    audio: Tensor,
    nframes=None,
    kind: str = "MISA",
    margin: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DAVEnet's loss: each anchor pair against one impostor image and, independently, one impostor caption.

        L = 1/B sum_j [ relu(margin + S(I_imp(j), A_j) - S(I_j, A_j)) + relu(margin + S(I_j, A_imp(j)) - S(I_j, A_j)) ]

    Impostors are uniform over the other B - 1 items (image impostors are drawn first, then caption
    impostors). Only the 3B needed similarities are computed (``paired_similarity``), never the B x B matrix.
    Inputs as in ``similarity_matrix``; B must be at least 2.
    """
    B = image.size(0)
    _check_batch(B, "sampled_margin_rank_loss")
    imp_image = _other_index(B, image.device, generator)
    imp_audio = _other_index(B, image.device, generator)
    if nframes is not None:
        nframes = torch.as_tensor(nframes, device=audio.device)
    anchor = paired_similarity(image, audio, nframes, kind)
    image_impostor = paired_similarity(image[imp_image], audio, nframes, kind)
    audio_impostor = paired_similarity(
        image, audio[imp_audio], None if nframes is None else nframes[imp_audio.to(nframes.device)], kind
    )
    return (F.relu(margin + image_impostor - anchor) + F.relu(margin + audio_impostor - anchor)).mean()


# ---- ResDAVEnet ------------------------------------------------------------------------------------------
def triplet_sampled(S: Tensor, margin: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Each row's positive S_ii against one impostor column drawn uniformly from the other B - 1:
    mean_i relu(S_i,imp(i) - S_ii + margin)."""
    _check_square(S, "triplet_sampled")
    B = S.size(0)
    _check_batch(B, "triplet_sampled")
    rows = torch.arange(B, device=S.device)
    impostor = S[rows, _other_index(B, S.device, generator)]
    return F.relu(impostor - S.diagonal() + margin).mean()


def triplet_semihard(S: Tensor, margin: float = 1.0, mask: str = "official") -> Tensor:
    """Each row's positive against its semi-hard negative, the most similar column still below the positive:
    mean_i relu(imp_i - S_ii + margin).

    mask="official" reproduces the released code, which *multiplies* S by the mask
    ``S_ij - S_ii < 0``: masked entries (the positive itself included) count as 0, so
    imp_i = max(0, best valid negative). On an all-negative S this is imp_i = 0 for every row.

    mask="strict" masks with -inf instead, so imp_i is the best valid negative; a row without one (its
    positive is its lowest entry) has imp_i = -inf and contributes 0 to the mean (it still counts in the
    denominator B).
    """
    _check_square(S, "triplet_semihard")
    positive = S.diagonal()
    below = (S - positive[:, None]) < 0  # excludes the positive itself (0 is not < 0)
    if mask == "official":
        impostor = (S * below).max(dim=1).values
    elif mask == "strict":
        impostor = S.masked_fill(~below, float("-inf")).max(dim=1).values
    else:
        raise ValueError(f"triplet_semihard mask must be 'official' or 'strict', got {mask!r}")
    return F.relu(impostor - positive + margin).mean()


# ---- modern options --------------------------------------------------------------------------------------
def info_nce(S: Tensor, scale: float | Tensor = 30.0) -> Tensor:
    """Symmetric in-batch InfoNCE: the mean of the cross-entropies of S * scale over rows (image -> caption)
    and over columns (caption -> image), with the diagonal as targets."""
    _check_square(S, "info_nce")
    logits = S * scale
    targets = torch.arange(S.size(0), device=S.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def all_negatives_triplet(S: Tensor, margin: float = 1.0) -> Tensor:
    """Hinge against every in-batch negative: mean over i != j of relu(S_ij - S_ii + margin) (images as
    anchors) plus the same with captions as anchors, relu(S_ij - S_jj + margin)."""
    _check_square(S, "all_negatives_triplet")
    B = S.size(0)
    _check_batch(B, "all_negatives_triplet")
    positive = S.diagonal()
    negative = ~torch.eye(B, dtype=torch.bool, device=S.device)
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

    def forward(self, image_out: Tensor, audio_out: Tensor, nframes=None, kind: str = "MISA") -> Tensor:
        return sampled_margin_rank_loss(image_out, audio_out, nframes, kind, margin=self.margin)

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

    def forward(self, image_out: Tensor, audio_out: Tensor, nframes=None, kind: str = "SISA") -> Tensor:
        S = similarity_matrix(image_out, audio_out, nframes, kind)
        _check_batch(S.size(0), "ResDAVEnetTripletLoss")
        m, mask = self.margin, self.semihard_mask
        return (
            triplet_sampled(S, m) + triplet_sampled(S.t(), m)
            + triplet_semihard(S, m, mask) + triplet_semihard(S.t(), m, mask)
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

    def forward(self, image_out: Tensor, audio_out: Tensor, nframes=None, kind: str = "MISA") -> Tensor:
        return info_nce(similarity_matrix(image_out, audio_out, nframes, kind), self.current_scale())


class AllNegativesTripletLoss(RetrievalLoss):
    """Hinge against all in-batch negatives in both directions (see ``all_negatives_triplet``)."""

    def __init__(self, margin: float = 1.0):
        super().__init__()
        self.margin = margin

    def forward(self, image_out: Tensor, audio_out: Tensor, nframes=None, kind: str = "MISA") -> Tensor:
        return all_negatives_triplet(similarity_matrix(image_out, audio_out, nframes, kind), self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
