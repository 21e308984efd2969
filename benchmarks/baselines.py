"""Loop baselines, structured as the official code is, written for this project from the definitions.

Each function computes what a library function computes, with the loop structure of the official
implementation (reference: docs of dharwath/DAVEnet-pytorch and wnhsu/ResDAVEnet-VQ ``steps/util.py``, and
the official audio loader; see /work/shared/spec/reference.md §1, §4, §6, §7). They exist so that
``python -m benchmarks`` can time our vectorised code against what a researcher would otherwise run, and
check that both give the same numbers.

| baseline                        | official structure                                  | ours                         |
|---------------------------------|-----------------------------------------------------|------------------------------|
| ``matchmap_similarity_matrix``  | Python double loop over (image, caption): crop the  | ``similarity_matrix``        |
|                                 | caption to nframes, one matchmap GEMM, reduce       |                              |
| ``davenet_sampled_margin_loss`` | loop over anchors: 3 matchmaps, 2 hinges, added up  | ``sampled_margin_rank_loss`` |
|                                 | only when positive                                  |                              |
| ``pooldot_similarity_matrix``   | image mean-pooled at once; audio pooled caption by  | ``similarity_matrix`` SISA   |
|                                 | caption (crop + pool in a loop); one B x B GEMM     |                              |
| ``sampled_triplet_loss``        | impostor indices fixed up row by row (skip j)       | ``triplet_sampled``          |
| ``semihard_triplet_loss``       | mask multiply, row max (vectorised upstream)        | ``triplet_semihard``         |
| ``calc_recalls``                | one top-10 per direction, then a loop over items    | ``retrieval_metrics``        |
|                                 | and their 10 ranks, running averages                |                              |
| ``librosa_log_mel``             | librosa.load -> DC, pre-emphasis -> librosa.stft    | ``wav_log_mel`` / the cache  |
|                                 | (scipy Hamming) -> power -> mel -> power_to_db(max) |                              |

Randomness: the official code draws impostors with numpy/random inside the loss. Here the draws are
arguments, so a benchmark can hand both implementations the same impostors and compare the numbers
(``davenet_impostors`` / ``resdavenet_impostors`` reproduce the library's draws from a seed).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


# ---- DAVEnet matchmaps (ECCV 2018) -------------------------------------------------------------------------
def matchmap(image: Tensor, audio: Tensor) -> Tensor:
    """One matchmap: image [D, H, W], audio [D, T] (already cropped) -> [H, W, T]."""
    D, H, W = image.shape
    return torch.mm(image.reshape(D, H * W).t(), audio).view(H, W, audio.size(1))


def matchmap_score(M: Tensor, kind: str) -> Tensor:
    """Reduce one matchmap [H, W, T] to a scalar, as the definitions say (max over H, then W, for MISA)."""
    if kind == "SISA":
        return M.mean()
    if kind == "MISA":
        return M.max(0).values.max(0).values.mean()
    if kind == "SIMA":
        return M.max(2).values.mean()
    raise ValueError(f"unknown similarity kind {kind!r}")


def matchmap_similarity_matrix(image: Tensor, audio: Tensor, nframes, kind: str = "MISA") -> Tensor:
    """S [N, N], rows = images, columns = captions, one matchmap per pair in a Python double loop.

    image [N, D, H, W], audio [N, D, T], nframes: valid output frames of each caption.
    """
    n = image.size(0)
    lengths = [max(1, int(f)) for f in nframes]
    S = torch.zeros(n, audio.size(0), dtype=image.dtype, device=image.device)
    for i in range(n):
        for j in range(audio.size(0)):
            S[i, j] = matchmap_score(matchmap(image[i], audio[j][:, : lengths[j]]), kind)
    return S


def davenet_sampled_margin_loss(
    image: Tensor, audio: Tensor, nframes, image_impostors, audio_impostors, kind: str = "MISA", margin: float = 1.0
) -> Tensor:
    """DAVEnet's sampled margin rank loss with a loop over anchors; impostor indices are given.

    For anchor i: S(I_i, A_i), S(I_imp, A_i) and S(I_i, A_imp) from three matchmaps; each hinge is added to
    the running loss only when it is positive; the sum is divided by the batch size.
    """
    n = image.size(0)
    lengths = [max(1, int(f)) for f in nframes]
    loss = torch.zeros(1, dtype=image.dtype, device=image.device)
    for i in range(n):
        ii, ai = int(image_impostors[i]), int(audio_impostors[i])
        anchor = matchmap_score(matchmap(image[i], audio[i][:, : lengths[i]]), kind)
        image_imp = matchmap_score(matchmap(image[ii], audio[i][:, : lengths[i]]), kind)
        audio_imp = matchmap_score(matchmap(image[i], audio[ai][:, : lengths[ai]]), kind)
        a2i = margin + image_imp - anchor
        if a2i.item() > 0:
            loss = loss + a2i
        i2a = margin + audio_imp - anchor
        if i2a.item() > 0:
            loss = loss + i2a
    return (loss / n).squeeze(0)


def davenet_impostors(B: int, seed: int) -> tuple[list[int], list[int]]:
    """The impostors ``sampled_margin_rank_loss(..., generator=torch.Generator().manual_seed(seed))`` draws:
    image impostors first, then caption impostors, each (j + U{1..B-1}) mod B."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(B)
    image_imp = (rows + torch.randint(1, B, (B,), generator=g)) % B
    audio_imp = (rows + torch.randint(1, B, (B,), generator=g)) % B
    return image_imp.tolist(), audio_imp.tolist()


# ---- ResDAVEnet pooldot + triplets (Interspeech 2019 / ICLR 2020) -------------------------------------------
def pooldot_similarity_matrix(image: Tensor, audio: Tensor, nframes) -> Tensor:
    """S [B, B] = mean-pooled image . mean-pooled valid audio frames; the audio is pooled caption by caption."""
    pooled_image = torch.nn.functional.adaptive_avg_pool2d(image, 1).flatten(1)  # [B, D]
    pooled_audio = []
    for j in range(audio.size(0)):
        length = max(1, int(nframes[j]))
        pooled_audio.append(torch.nn.functional.adaptive_avg_pool1d(audio[j][:, :length], 1).view(1, -1))
    return torch.mm(pooled_image, torch.cat(pooled_audio).t())


def sampled_triplet_loss(S: Tensor, raw_draws, margin: float = 1.0) -> Tensor:
    """One impostor column per row. ``raw_draws[j]`` is uniform in [0, B-2] and is shifted past the row's own
    column in a per-row loop, as the official code does; then mean relu(S_imp - S_ii + margin)."""
    B = S.size(0)
    impostors = list(raw_draws)
    for j in range(B):
        if impostors[j] >= j:
            impostors[j] += 1
    return (S[torch.arange(B), torch.tensor(impostors)] - S.diag() + margin).clamp(min=0).mean()


def semihard_triplet_loss(S: Tensor, margin: float = 1.0) -> Tensor:
    """The official semi-hard term: S multiplied by the mask S_ij < S_ii (masked entries count as 0)."""
    positive = S.diag()
    mask = ((S - positive.view(-1, 1)) < 0).to(S.dtype).detach()
    return ((S * mask).max(dim=1).values - positive + margin).clamp(min=0).mean()


def resdavenet_loss(image: Tensor, audio: Tensor, nframes, raw_draws_rows, raw_draws_cols, margin: float = 1.0):
    """pooldot S, then sampled + semi-hard triplets on S and on S^T."""
    S = pooldot_similarity_matrix(image, audio, nframes)
    return (
        sampled_triplet_loss(S, raw_draws_rows, margin) + sampled_triplet_loss(S.t(), raw_draws_cols, margin)
        + semihard_triplet_loss(S, margin) + semihard_triplet_loss(S.t(), margin)
    )


def resdavenet_impostors(B: int, seed: int, device: torch.device | str = "cpu") -> tuple[list[int], list[int]]:
    """The impostor draws of ``ResDAVEnetTripletLoss`` on ``device`` after ``torch.manual_seed(seed)`` (rows of
    S first, then rows of S^T), as the raw draws in [0, B-2] that the official per-row fix-up turns into them.
    The caller's random state is left as it was."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(seed)
        draws = []
        for _ in range(2):
            j = torch.arange(B, device=device)
            impostor = (j + torch.randint(1, B, (B,), device=device)) % B
            draws.append(torch.where(impostor < j, impostor, impostor - 1).tolist())
    return draws[0], draws[1]


# ---- retrieval metrics --------------------------------------------------------------------------------------
class _Average:
    """Running mean, updated one value at a time."""

    def __init__(self):
        self.sum, self.count = 0.0, 0

    def update(self, value: float) -> None:
        self.sum += value
        self.count += 1

    @property
    def avg(self) -> float:
        return self.sum / self.count


def calc_recalls(S: Tensor) -> dict[str, float]:
    """Recall@1/5/10 both ways from S [N, N] (rows = images), the official way: one top-10 per direction,
    then a loop over the N items and their 10 ranks.

    ``A_r@k`` (image -> caption) = our ``i2a_R@k``; ``I_r@k`` (caption -> image) = our ``a2i_R@k``.
    """
    n = S.size(0)
    _, a2i_top = S.topk(10, 0)  # [10, N]: for each caption (column), the 10 best images
    _, i2a_top = S.topk(10, 1)  # [N, 10]: for each image (row), the 10 best captions
    meters = {f"{d}_r{k}": _Average() for d in "AI" for k in (1, 5, 10)}
    for i in range(n):
        a_found, i_found = -1, -1
        for rank in range(10):
            if a2i_top[rank, i] == i:
                i_found = rank
            if i2a_top[i, rank] == i:
                a_found = rank
        for k in (1, 5, 10):
            meters[f"A_r{k}"].update(1.0 if 0 <= a_found < k else 0.0)
            meters[f"I_r{k}"].update(1.0 if 0 <= i_found < k else 0.0)
    return {name: m.avg for name, m in meters.items()}


# ---- the official audio loading path ------------------------------------------------------------------------
def librosa_log_mel(path: str, target_length: int = 2048, pad_value: float = 0.0) -> tuple[np.ndarray, int]:
    """The official loader's recipe with librosa >= 0.10: (log-mel [40, target_length] float32, nframes)."""
    import librosa
    import scipy.signal

    y, sr = librosa.load(path, sr=16000)
    y = y - y.mean()
    y = np.append(y[0], y[1:] - 0.97 * y[:-1])
    spec = librosa.stft(y, n_fft=400, hop_length=160, win_length=400, window=scipy.signal.windows.hamming)
    power = np.abs(spec) ** 2
    mel = librosa.filters.mel(sr=sr, n_fft=400, n_mels=40, fmin=20)
    logspec = librosa.power_to_db(np.dot(mel, power), ref=np.max)
    n = logspec.shape[1]
    if n < target_length:
        logspec = np.pad(logspec, ((0, 0), (0, target_length - n)), constant_values=pad_value)
    return logspec[:, :target_length].astype(np.float32), min(n, target_length)
