"""similarity.py against a brute-force double loop that builds every matchmap explicitly."""

import pytest
import torch

from lightning_modules.core import similarity
from lightning_modules.core.similarity import matchmap, paired_similarity, similarity_matrix

KINDS = ("SISA", "MISA", "SIMA")


def loop_similarity(image, audio, nframes, kind):
    """Reference: one explicit matchmap per (image, caption) pair, cropped to the caption's frames."""
    rows = []
    for i in range(image.shape[0]):
        row = []
        for j in range(audio.shape[0]):
            M = image[i].flatten(1).t() @ audio[j][:, : int(nframes[j])]  # [R, n]
            if kind == "SISA":
                row.append(M.mean())
            elif kind == "MISA":
                row.append(M.max(dim=0).values.mean())
            else:
                row.append(M.max(dim=1).values.mean())
        rows.append(torch.stack(row))
    return torch.stack(rows)


def make_inputs(N=4, M=6, D=5, H=3, W=2, T=9, seed=0, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(N, D, H, W, generator=g, dtype=dtype)
    audio = torch.randn(M, D, T, generator=g, dtype=dtype)
    nframes = torch.randint(1, T + 1, (M,), generator=g)
    nframes[0] = T  # one full-length caption
    nframes[-1] = 1  # and a one-frame caption
    image.requires_grad_(requires_grad)
    audio.requires_grad_(requires_grad)
    return image, audio, nframes


def with_garbage(audio, nframes, value):
    """A copy of audio whose padding frames hold `value`."""
    padded = audio.detach().clone()
    pad = torch.arange(audio.shape[-1])[None, :] >= nframes[:, None]
    padded.masked_fill_(pad[:, None, :], value)
    return padded


@pytest.mark.parametrize("kind", KINDS)
def test_matches_double_loop(kind):
    image, audio, nframes = make_inputs()
    expected = loop_similarity(image, audio, nframes, kind)
    got = similarity_matrix(image, audio, nframes, kind)
    assert got.shape == (4, 6)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # [N, D, R] input is the same as [N, D, H, W]
    torch.testing.assert_close(similarity_matrix(image.flatten(2), audio, nframes, kind), got, rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_matches_loop(kind):
    image, audio, nframes = make_inputs(N=7, M=5, D=16, T=13, seed=3, dtype=torch.float32)
    expected = loop_similarity(image.double(), audio.double(), nframes, kind)
    got = similarity_matrix(image, audio, nframes, kind)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_nframes_none_means_all_frames(kind):
    image, audio, _ = make_inputs()
    full = torch.full((audio.shape[0],), audio.shape[-1])
    torch.testing.assert_close(similarity_matrix(image, audio, None, kind), loop_similarity(image, audio, full, kind))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("garbage", [1e6, -1e6, 3.7, float("nan"), float("inf"), float("-inf")])
def test_padding_never_changes_a_score_or_gradient(kind, garbage):
    image, audio, nframes = make_inputs(requires_grad=True)
    clean = with_garbage(audio, nframes, 0.0).requires_grad_(True)
    dirty = with_garbage(audio, nframes, garbage).requires_grad_(True)
    s_clean = similarity_matrix(image, clean, nframes, kind)
    (g_clean,) = torch.autograd.grad(s_clean.sum(), image)
    s_dirty = similarity_matrix(image, dirty, nframes, kind)
    (g_dirty,) = torch.autograd.grad(s_dirty.sum(), image)
    assert torch.equal(s_clean, s_dirty)
    assert torch.equal(g_clean, g_dirty)
    (g_audio,) = torch.autograd.grad(similarity_matrix(image, dirty, nframes, kind).sum(), dirty)
    assert torch.isfinite(g_audio).all()
    pad = torch.arange(audio.shape[-1])[None, :] >= nframes[:, None]
    assert (g_audio.transpose(1, 2)[pad] == 0).all()  # no gradient flows into padding
    # paired scores too
    n = image.shape[0]
    assert torch.equal(paired_similarity(image, dirty[:n], nframes[:n], kind),
                       paired_similarity(image, clean[:n], nframes[:n], kind))


@pytest.mark.parametrize("kind", ("MISA", "SIMA"))
@pytest.mark.parametrize("chunk_size", [1, 5, 6 * 9, 6 * 9 * 5 + 1, 10**9])
def test_chunked_equals_unchunked(kind, chunk_size):
    image, audio, nframes = make_inputs(N=5, M=7, seed=1)
    full = similarity_matrix(image, audio, nframes, kind, chunk_size=10**12)
    torch.testing.assert_close(similarity_matrix(image, audio, nframes, kind, chunk_size=chunk_size), full,
                               rtol=1e-12, atol=1e-12)


def test_many_caption_blocks_keep_column_order(monkeypatch):
    # More captions than one block holds: columns must come back in the caller's order.
    monkeypatch.setattr(similarity, "FRAMES_PER_BLOCK", 3 * 9)  # 3 captions of up to 9 frames
    image, audio, nframes = make_inputs(N=3, M=11, seed=4)
    for kind in ("MISA", "SIMA"):
        torch.testing.assert_close(similarity_matrix(image, audio, nframes, kind),
                                   loop_similarity(image, audio, nframes, kind))


def test_sisa_is_pooled_dot_product():
    image, audio, nframes = make_inputs(seed=2)
    pooled_image = image.flatten(2).mean(-1)
    pooled_audio = torch.stack([audio[j][:, : int(n)].mean(-1) for j, n in enumerate(nframes)])
    torch.testing.assert_close(similarity_matrix(image, audio, nframes, "SISA"), pooled_image @ pooled_audio.t())
    torch.testing.assert_close(similarity_matrix(pooled_image, pooled_audio, kind="dot"),
                               pooled_image @ pooled_audio.t())


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_loop_reference(kind):
    image, audio, nframes = make_inputs(requires_grad=True, seed=5)
    weights = torch.randn(4, 6, dtype=torch.float64)
    grads = torch.autograd.grad((similarity_matrix(image, audio, nframes, kind, chunk_size=7) * weights).sum(),
                                (image, audio))
    expected = torch.autograd.grad((loop_similarity(image, audio, nframes, kind) * weights).sum(), (image, audio))
    for got, ref in zip(grads, expected):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS + ("dot",))
def test_paired_similarity_is_the_diagonal(kind):
    image, audio, nframes = make_inputs(N=6, M=6, seed=6, requires_grad=True)
    if kind == "dot":
        image, audio, nframes = image.flatten(2).mean(-1), audio.mean(-1), None
    paired = paired_similarity(image, audio, nframes, kind)
    assert paired.shape == (6,)
    torch.testing.assert_close(paired, similarity_matrix(image, audio, nframes, kind).diagonal(),
                               rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(paired.sum(), image)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("kind", ("MISA", "SIMA"))
def test_matchmap_memory_is_bounded_by_chunk_size(monkeypatch, kind):
    """Every GEMM builds at most chunk_size matchmap elements, and every valid element is built."""
    sizes = []
    gemm = similarity._matchmap_gemm

    def recording_gemm(audio_rows, images):
        out = gemm(audio_rows, images)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(similarity, "_matchmap_gemm", recording_gemm)
    image, audio, nframes = make_inputs(N=9, M=8, H=2, W=2, T=10, seed=7)
    R, chunk = 4, 4 * 10 * 3  # room for three full-length pairs
    got = similarity_matrix(image, audio, nframes, kind, chunk_size=chunk)
    torch.testing.assert_close(got, loop_similarity(image, audio, nframes, kind))
    assert max(sizes) <= chunk
    assert len(sizes) > 9  # really chunked
    assert sum(sizes) >= 9 * R * int(nframes.sum())  # and nothing skipped
    # Length-sorted blocks trimmed to their own longest caption build fewer elements than one padded block.
    assert sum(sizes) < 9 * R * 8 * 10
    # A chunk_size below one pair still processes one pair at a time.
    sizes.clear()
    similarity_matrix(image, audio, nframes, kind, chunk_size=1)
    assert max(sizes) <= R * 10


@pytest.mark.parametrize("kind", KINDS)
def test_low_precision_inputs_and_autocast(kind):
    image, audio, nframes = make_inputs(N=5, M=6, D=32, T=12, seed=8, dtype=torch.float32)
    ref = similarity_matrix(image, audio, nframes, kind)
    out = similarity_matrix(image.bfloat16(), audio.bfloat16(), nframes, kind)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = similarity_matrix(image, audio, nframes, kind)
    assert auto.dtype == torch.bfloat16
    torch.testing.assert_close(auto.float(), ref, rtol=0.05, atol=0.1)


def test_dot_kind():
    g = torch.Generator().manual_seed(9)
    image, audio = torch.randn(3, 8, generator=g), torch.randn(5, 8, generator=g)
    torch.testing.assert_close(similarity_matrix(image, audio, None, "dot"), image @ audio.t())


def test_matchmap_of_one_pair():
    image, audio, nframes = make_inputs(D=4, H=3, W=2, T=9, seed=10)
    mm = matchmap(image[1], audio[2], nframes=5)
    assert mm.shape == (3, 2, 5)
    for h in range(3):
        for w in range(2):
            for t in range(5):
                torch.testing.assert_close(mm[h, w, t], (image[1][:, h, w] * audio[2][:, t]).sum())
    assert matchmap(image[1], audio[2]).shape == (3, 2, 9)


def test_bad_inputs_get_clear_errors():
    image, audio, nframes = make_inputs()
    with pytest.raises(ValueError, match="kind must be one of"):
        similarity_matrix(image, audio, nframes, "MAXSIM")
    with pytest.raises(ValueError, match="pooled vectors need kind 'dot'"):
        similarity_matrix(image.mean((2, 3)), audio.mean(-1), None, "MISA")
    with pytest.raises(ValueError, match="frame maps need kind"):
        similarity_matrix(image, audio, nframes, "dot")
    with pytest.raises(ValueError, match=r"nframes must lie in \[1, T=9\]"):
        similarity_matrix(image, audio, nframes * 16, "MISA")
    with pytest.raises(ValueError, match="nframes must be 6 integer"):
        similarity_matrix(image, audio, nframes[:3], "MISA")
    with pytest.raises(ValueError, match="embedding sizes differ"):
        similarity_matrix(image, audio[:, :3], nframes, "MISA")
    with pytest.raises(ValueError, match="as many images as captions"):
        paired_similarity(image, audio, nframes, "MISA")
