"""The vectorised core against the loop algorithms of the official code: similarity matrices, the two
training losses (forward + backward) and the retrieval metrics.

| row             | ours                                   | baseline (``benchmarks.baselines``)           | target |
|-----------------|----------------------------------------|-----------------------------------------------|--------|
| sim_MISA/SIMA   | ``similarity_matrix`` (chunked GEMMs)  | double loop, one matchmap per pair            | >= 1x  |
| sim_SISA        | ``similarity_matrix`` (pooled dot)     | double loop, one matchmap per pair            | >= 100x|
| loss_davenet    | ``sampled_margin_rank_loss``, MISA     | loop over anchors, 3 matchmaps each           | >= 30x |
| loss_resdavenet | ``ResDAVEnetTripletLoss``, SISA        | per-caption pooling loop + official triplets  | >= 30x |
| recall          | ``retrieval_metrics``                  | top-10 + loop over items and ranks            | >= 30x |

Inputs are random: image and audio maps drawn N(0, 1/D), so matchmap entries are about N(0, 1); nframes
uniform in [1, T]. Both sides get the same tensors (and the same impostor draws) and must give the same
numbers within the stated tolerance.
"""

from __future__ import annotations

import torch

from lightning_modules.core.losses import ResDAVEnetTripletLoss, sampled_margin_rank_loss
from lightning_modules.core.retrieval_metrics import retrieval_metrics
from lightning_modules.core.similarity import similarity_matrix

from . import baselines
from .harness import Config, check, compare

D = 1024  # embedding channels of every paper model


def frame_maps(n: int, image_hw: tuple[int, int], T: int, device: torch.device, seed: int = 0):
    """Random image maps [n, D, H, W], audio maps [n, D, T] (entries N(0, 1/D)) and nframes [n] in [1, T]."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, D, *image_hw, generator=g) / D**0.5
    audio = torch.randn(n, D, T, generator=g) / D**0.5
    nframes = torch.randint(1, T + 1, (n,), generator=g)
    return image.to(device), audio.to(device), nframes.to(device)


# ---- similarity matrix --------------------------------------------------------------------------------------
SIM_TARGETS = {"MISA": 1.0, "SIMA": 1.0, "SISA": 100.0}


def similarity_row(cfg: Config, kind: str, N: int = 100, T: int = 128) -> dict:
    image, audio, nframes = frame_maps(N, (14, 14), T, cfg.device)

    @torch.no_grad()
    def ours():
        return similarity_matrix(image, audio, nframes, kind)

    @torch.no_grad()
    def baseline():
        return baselines.matchmap_similarity_matrix(image, audio, nframes, kind)

    return compare(
        f"sim_{kind}", cfg, ours, baseline,
        equality=lambda: check(ours(), baseline(), rtol=1e-4, what="S [N, N]"),
        target=SIM_TARGETS[kind],
        shapes=f"N={N}, image {D}x14x14, audio {D}x{T}, random nframes; no grad",
        baseline_repeats=1 if cfg.quick else 2,
        memory=True,
        notes=("ours: peak memory bounded by chunk_size (default 2**26 matchmap elements); the loop holds one "
               "matchmap (R x nframes) at a time" if kind != "SISA"
               else "ours: SISA = pooled image . pooled audio, no matchmap at all"),
    )


def _forward_backward(image, audio, loss_fn):
    """(loss, d image, d audio) of a loss on fresh leaf copies of the inputs: what both sides of a loss row give."""
    img, aud = image.detach().requires_grad_(), audio.detach().requires_grad_()
    loss = loss_fn(img, aud)
    loss.backward()
    return loss.detach(), img.grad, aud.grad


# ---- DAVEnet sampled margin rank loss -----------------------------------------------------------------------
def davenet_loss_row(cfg: Config, B: int = 128, T: int = 128, seed: int = 3) -> dict:
    image, audio, nframes = frame_maps(B, (14, 14), T, cfg.device, seed=1)
    image_imp, audio_imp = baselines.davenet_impostors(B, seed)

    def ours():
        return _forward_backward(image, audio, lambda img, aud: sampled_margin_rank_loss(
            img, aud, nframes, "MISA", generator=torch.Generator().manual_seed(seed)))

    def baseline():
        return _forward_backward(image, audio, lambda img, aud: baselines.davenet_sampled_margin_loss(
            img, aud, nframes, image_imp, audio_imp, "MISA"))

    return compare(
        "loss_davenet", cfg, ours, baseline,
        equality=lambda: check(ours(), baseline(), rtol=1e-4, what="loss, d image, d audio"),
        target=30.0,
        shapes=f"B={B}, image {D}x14x14, audio {D}x{T}, MISA, forward + backward",
        baseline_repeats=1 if cfg.quick else 2,
        notes="same impostors on both sides; the loop's backward pays one full-size zero gradient per "
              "image_outputs[i] / audio_outputs[i] it indexed",
    )


# ---- ResDAVEnet pooldot + triplets --------------------------------------------------------------------------
def resdavenet_loss_row(cfg: Config, B: int = 64, T: int = 128, seed: int = 5) -> dict:
    image, audio, nframes = frame_maps(B, (7, 7), T, cfg.device, seed=2)
    draws_rows, draws_cols = baselines.resdavenet_impostors(B, seed, cfg.device)
    loss_module = ResDAVEnetTripletLoss(margin=1.0, semihard_mask="official")

    def ours():
        torch.manual_seed(seed)  # the module draws its impostors from the global generator
        return _forward_backward(image, audio, lambda img, aud: loss_module(img, aud, nframes, "SISA"))

    def baseline():
        return _forward_backward(image, audio, lambda img, aud: baselines.resdavenet_loss(
            img, aud, nframes, draws_rows, draws_cols))

    return compare(
        "loss_resdavenet", cfg, ours, baseline,
        equality=lambda: check(ours(), baseline(), rtol=1e-4, what="loss, d image, d audio"),
        target=30.0,
        shapes=f"B={B}, image {D}x7x7, audio {D}x{T}, pooldot (SISA) + 4 triplet losses, forward + backward",
        baseline_repeats=cfg.fast_repeats,
        notes="official structure: audio pooled caption by caption, sampled impostors fixed up row by row, "
              "semi-hard term vectorised (as upstream)",
    )


# ---- retrieval metrics --------------------------------------------------------------------------------------
def recall_row(cfg: Config, N: int = 1000) -> dict:
    g = torch.Generator().manual_seed(4)
    S = (torch.randn(N, N, generator=g) + 3 * torch.eye(N)).to(cfg.device)  # recall@10 around 0.7

    def ours():
        return retrieval_metrics(S, (1, 5, 10))

    def baseline():
        return baselines.calc_recalls(S)

    def equality():
        mine, theirs = ours(), baseline()
        pairs = [(mine[f"a2i_R@{k}"], theirs[f"I_r{k}"]) for k in (1, 5, 10)]
        pairs += [(mine[f"i2a_R@{k}"], theirs[f"A_r{k}"]) for k in (1, 5, 10)]
        as_tensors = [torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs])]
        return check(*as_tensors, rtol=0.0, what="R@1/5/10 both ways (exact)")

    return compare(
        "recall", cfg, ours, baseline, equality=equality, target=30.0,
        shapes=f"N={N} (S [N, N], random scores, strong diagonal)",
        baseline_repeats=cfg.fast_repeats,
        notes="ours also returns mean and median ranks; official names: I_r@k = a2i_R@k, A_r@k = i2a_R@k",
    )


ROWS = {
    "sim_MISA": lambda cfg: similarity_row(cfg, "MISA"),
    "sim_SIMA": lambda cfg: similarity_row(cfg, "SIMA"),
    "sim_SISA": lambda cfg: similarity_row(cfg, "SISA"),
    "loss_davenet": davenet_loss_row,
    "loss_resdavenet": resdavenet_loss_row,
    "recall": recall_row,
}
