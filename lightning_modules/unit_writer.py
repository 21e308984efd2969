"""``predict`` can dump discrete units: each caption's code sequence at one VQ layer, with frame-centre times.

    python cli.py predict --config configs/resdavenet_vq.yaml --ckpt_path BEST \
        --data.predict_manifest data/spokenscenes/test.json --units.output units.json --units.layer 3

writes ``{uttid: {"codes": [c_0, c_1, ...], "times": [t_0, t_1, ...]}}``: the code of every valid frame at VQ
position ``layer`` (``audio_net.encode_units``: eval semantics, no jitter) and that frame's centre in seconds,
``(j + 0.5) * frame_shift * 2**(layer - 1)`` (rounded to 1 us) as the official unit analysis places codes
(wnhsu/ResDAVEnet-VQ `steps/unit_analysis.py::get_feats_codes`, `steps/alignment.py::DenseAlignment.get_center`):
at position 3 (40 ms per code) 0.02, 0.06, 0.10, ... This is the time convention of the analyses
(`lightning_modules.core.units.features`), so ``python -m lightning_modules.analysis words --units FILE`` reads back
the grid that ``words --ckpt C --layer K`` uses. Captions appear in manifest order; under DDP every rank's captions
are gathered and rank 0 writes the file.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch.distributed as dist
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from .core.units.features import frame_times, position_spf
from .search import item_info


def unit_times(n: int, layer: int, frame_shift: float = 0.01) -> list[float]:
    """Centres in seconds of the first ``n`` frames at VQ position ``layer`` (``2**(layer - 1)`` input frames each),
    ``(j + 0.5) * spf`` rounded to 1 us."""
    return [round(t, 6) for t in frame_times(n, position_spf(layer, frame_shift)).tolist()]


class UnitWriter(Callback):
    """Write the codes of VQ position ``layer`` for every caption of ``predict`` as JSON (nothing when ``output``
    is None).

    Args:
        output: JSON file to write.
        layer: VQ position (2: 20 ms, 3: 40 ms, 4: 80 ms per code); the model must quantise there.
        frame_shift: seconds per input frame (the log-mel hop: 10 ms).
    """

    def __init__(self, output: str | None = None, layer: int = 3, frame_shift: float = 0.01):
        self.output, self.layer, self.frame_shift = output, layer, frame_shift
        self._units: dict[int, list[int]] = {}

    def on_predict_start(self, trainer, pl_module) -> None:
        if self.output is None:
            return
        vq_layers = getattr(getattr(pl_module, "audio_net", None), "vq_layers", None)
        if vq_layers is None or self.layer not in vq_layers:
            have = "no VQ layers" if vq_layers is None else f"VQ layers {list(vq_layers)}"
            raise ValueError(f"units.layer={self.layer}: the model ({type(pl_module).__name__}) has {have}; "
                             "pick one of its VQ positions or leave units.output unset")
        self._units = {}

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.output is None:
            return
        codes, valid = pl_module.audio_net.encode_units(batch["audio"], batch["nframes"], layer=self.layer)
        for b, index in enumerate(batch["index"].tolist()):
            self._units[index] = codes[b, : int(valid[b])].tolist()

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.output is None:
            return
        units: Any = self._units
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, units)
            units = {k: v for part in gathered for k, v in part.items()}  # DistributedSampler repeats are equal
        if not trainer.is_global_zero:
            return
        dataset = getattr(trainer.datamodule, "predict_dataset", None)
        result = {}
        for index in sorted(units):
            uttid = str(item_info(dataset, index).get("uttid", index))
            if uttid in result:
                raise ValueError(f"units: the uttid {uttid!r} occurs twice in the predict manifest")
            result[uttid] = {"codes": units[index], "times": unit_times(len(units[index]), self.layer,
                                                                        self.frame_shift)}
        os.makedirs(os.path.dirname(os.path.abspath(self.output)), exist_ok=True)
        with open(self.output, "w") as f:
            json.dump(result, f)
        rank_zero_info(f"units: layer {self.layer} codes of {len(result)} captions -> {self.output}")


__all__ = ["UnitWriter", "unit_times"]
