"""Key -> shape layouts of the official checkpoints (../shared/spec/official-keys.md), shared by the tests of the
nets (our keys equal the official ones) and of the converter (random state dicts in the official layout)."""

from __future__ import annotations


def bn_shapes(name: str, ch: int) -> dict:
    """A BatchNorm's four listed entries (the official key table leaves out num_batches_tracked)."""
    return {f"{name}.weight": (ch,), f"{name}.bias": (ch,), f"{name}.running_mean": (ch,), f"{name}.running_var": (ch,)}


def resdavenet_audio_shapes(widths, depths=(2, 2, 2, 2), convsize: int = 9, batchnorm1: bool = True) -> dict:
    """ResDAVEnet-VQ `ResDavenetVQ` with VQ off; `batchnorm1` is the BatchNorm it defines but never calls."""
    shapes = {**bn_shapes("batchnorm1", 1)} if batchnorm1 else {}
    shapes.update({"conv1.weight": (widths[0], 1, 40, 1), **bn_shapes("bn1", widths[0])})
    for k, depth in enumerate(depths, start=1):
        cin, cout = widths[k - 1], widths[k]
        for j in range(depth):
            b = f"layer{k}.{j}"
            shapes[f"{b}.conv1.weight"] = (cout, cin if j == 0 else cout, 1, convsize)
            shapes.update(bn_shapes(f"{b}.bn1", cout))
            shapes[f"{b}.conv2.weight"] = (cout, cout, 1, convsize)
            shapes.update(bn_shapes(f"{b}.bn2", cout))
            if j == 0:
                shapes[f"{b}.downsample.0.weight"] = (cout, cin, 1, 1)
                shapes.update(bn_shapes(f"{b}.downsample.1", cout))
    return shapes
