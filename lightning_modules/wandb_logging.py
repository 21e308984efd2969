"""What a researcher looks at on the W&B dashboard, in one callback.

- Matchmap overlays: for a few fixed validation pairs, the image with the caption's heat map blended in.
- A retrieval table: each query caption's text with its top-5 images.
- The place classifier's confusion matrix.

Recall curves, the learning rate, gradient norms and losses are logged by the modules themselves and reach
any logger; this callback does nothing unless the trainer has a ``WandbLogger``, so CSV and TensorBoard runs
are unaffected.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from .core.grounding import blend_heatmap, caption_heatmap, hot_colors


def _wandb_logger(trainer: Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def display_image(trainer: Trainer, image: torch.Tensor) -> torch.Tensor:
    """An input image [3, H, W] back in [0, 1] for display (the datamodule's ``denormalize`` if it has one)."""
    denorm = getattr(trainer.datamodule, "denormalize", None)
    if callable(denorm):
        return denorm(image).clamp(0, 1)
    lo, hi = image.min(), image.max()
    return (image - lo) / (hi - lo).clamp_min(1e-8)


class WandbDashboard(Callback):
    """Matchmap overlays, a retrieval table and a confusion matrix on W&B after each validation epoch.

    Args:
        n_pairs: fixed validation pairs (the first ones of the split) shown with their heat maps.
        top_k: images per query in the retrieval table.
        n_queries: query captions in the retrieval table.
        every_n_epochs: log every this many validation epochs.
    """

    def __init__(self, n_pairs: int = 4, top_k: int = 5, n_queries: int = 8, every_n_epochs: int = 1):
        self.n_pairs, self.top_k, self.n_queries, self.every_n_epochs = n_pairs, top_k, n_queries, every_n_epochs

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before the module's,
        # which is where the recall (and its similarity matrix) of this epoch is computed.
        logger = _wandb_logger(trainer)
        if logger is None or trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        dataset = getattr(trainer.datamodule, "val_dataset", None)
        if hasattr(pl_module, "similarity_kind") and dataset is not None:
            with torch.no_grad():
                self._log_overlays(trainer, pl_module, logger, dataset)
                self._log_retrieval_table(trainer, pl_module, logger, dataset)
        confusion = getattr(pl_module, "last_confusion", None)
        if confusion is not None:
            self._log_confusion(trainer, logger, confusion)

    def _samples(self, dataset: Any, n: int) -> list[dict]:
        out = []
        for i in range(min(n, len(dataset))):
            sample = dataset[i]
            if isinstance(sample, dict):  # not a skipped bad sample
                out.append(sample)
        return out

    @staticmethod
    def _text(dataset: Any, index: int) -> str:
        describe = getattr(dataset, "describe", None)
        return describe(index).get("text") or str(index) if callable(describe) else str(index)

    def _log_overlays(self, trainer, pl_module, logger, dataset) -> None:
        if pl_module.audio_net.pooled:  # pooled models have no frame-level map to show
            return
        images, captions = [], []
        for sample in self._samples(dataset, self.n_pairs):
            image = sample["image"][None].to(pl_module.device)
            audio = sample["audio"][None].to(pl_module.device)
            nframes = torch.as_tensor([int(sample["nframes"])], device=pl_module.device)
            image_out, audio_out, out_nframes = pl_module(image, audio, nframes)
            heat = caption_heatmap(image_out[0], audio_out[0], int(out_nframes[0]))
            images.append(blend_heatmap(display_image(trainer, sample["image"]), heat).numpy())
            captions.append(self._text(dataset, int(sample["index"])))
        if images:
            logger.log_image("val/matchmap_overlay", images=images, caption=captions, step=trainer.global_step)

    def _log_retrieval_table(self, trainer, pl_module, logger, dataset) -> None:
        S = getattr(pl_module.val_recall, "last_similarity", None)
        if S is None:
            return
        import wandb

        metric = pl_module.val_recall
        caption_index = metric.last_indices.tolist()  # column q is dataset item caption_index[q]
        image_index = metric.last_image_indices.tolist()  # row r shows the image of item image_index[r]
        own_row = metric.last_caption_image.tolist()
        k = min(self.top_k, S.shape[0])
        top = S.t().topk(k, dim=1).indices  # [captions, k] image rows
        rows = []
        for q in range(min(self.n_queries, S.shape[1])):
            thumbs = [wandb.Image(display_image(trainer, dataset[image_index[r]]["image"]).permute(1, 2, 0).cpu()
                                  .numpy()) for r in top[q].tolist()]
            hit = own_row[q] in top[q].tolist()
            rows.append([self._text(dataset, caption_index[q]), hit, *thumbs])
        columns = ["caption", f"hit@{k}", *[f"top{r + 1}" for r in range(k)]]
        logger.log_table("val/retrieval_examples", columns=columns, data=rows, step=trainer.global_step)

    def _log_confusion(self, trainer, logger, confusion: torch.Tensor) -> None:
        label_map = getattr(trainer.datamodule, "label_map", None) or {}
        names = [name for name, _ in sorted(label_map.items(), key=lambda kv: kv[1])]
        if len(names) != confusion.shape[0]:
            names = [str(i) for i in range(confusion.shape[0])]
        # Row-normalised (recall per true class), 8 pixels per cell.
        rates = confusion.float() / confusion.sum(dim=1, keepdim=True).clamp_min(1)
        picture = hot_colors(rates).repeat_interleave(8, dim=0).repeat_interleave(8, dim=1)
        logger.log_image("val/confusion_matrix", images=[picture.numpy()],
                         caption=["rows: true class, columns: predicted (row-normalised)"], step=trainer.global_step)
        data = [[names[t], names[p], int(confusion[t, p])] for t, p in confusion.nonzero().tolist()]
        logger.log_table("val/confusion", columns=["true", "predicted", "count"], data=data, step=trainer.global_step)
