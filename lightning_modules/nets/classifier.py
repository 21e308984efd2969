"""Scene (place) classifier on top of any audio net: a warm-up task for the audio branch.

Not from the papers, and no official code has one (docs/provenance.md): the notebook this project started from
flattened a fixed 64-frame map into a Linear, which works for one input length only. Here the frame map is pooled
over each caption's valid frames instead, so any length and any audio net works.

    audio [B, 40, T] -> audio_net.frames -> [B, D, T'] -> masked mean/max over output_frames(nframes) -> [B, D]
    -> Dropout -> Linear(D, n_places) -> logits [B, n_places]
"""

from __future__ import annotations

from torch import Tensor, nn

from .common import as_lengths, check_pooling, masked_pool


class AudioPlaceClassifier(nn.Module):
    """Logits over `n_places` scene classes from a caption.

    Args:
        audio_net: any audio net of this package (its `frames`, `output_frames` and `embedding_dim` are used; a
            pooled net's L2-normalised vector is bypassed, the classifier pools its frame map itself).
        n_places: number of classes.
        pooling: "mean" or "max" over the valid output frames.
        dropout: dropout on the pooled vector.
    """

    def __init__(self, audio_net: nn.Module, n_places: int, pooling: str = "mean", dropout: float = 0.0):
        super().__init__()
        if n_places < 1:
            raise ValueError(f"n_places must be >= 1, got {n_places}")
        self.audio_net = audio_net
        self.pooling = check_pooling(pooling)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(audio_net.embedding_dim, n_places)

    def forward(self, audio: Tensor, nframes: Tensor | None = None) -> Tensor:
        x = self.audio_net.frames(audio, nframes)
        valid = None if nframes is None else self.audio_net.output_frames(as_lengths(nframes, x.device))
        return self.classifier(self.dropout(masked_pool(x, valid, self.pooling)))
