"""``predict`` is spoken search: rank a gallery for every query and write the top-k as JSON.

With ``direction="a2i"`` every caption of the predict manifest is a spoken query and the manifest's unique
images are the gallery; ``"i2a"`` is the reverse (each unique image as query, captions as the gallery);
``"both"`` writes both lists. For the place classifier, each caption gets its top-k scene classes.

Ranks follow the evaluation protocol (``RetrievalRecallMetric``): ``own_image_rank`` is the rank of a caption's
own image among the unique images, ``own_caption_rank`` the rank of an image's best-ranked own caption with only
other images' captions counted ahead (R@k = any own caption in the top k); ties break by gallery order.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info

from .core.similarity import similarity_matrix


def _gather_predictions(predictions: list[dict]) -> list[dict]:
    """Every rank's prediction dicts, on CPU, on every rank (DDP predict shards the data)."""
    local = [{k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in p.items()} for p in predictions]
    if not (dist.is_available() and dist.is_initialized()):
        return local
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return [p for rank_preds in gathered for p in rank_preds]


def _pad_frames(maps: list[torch.Tensor]) -> torch.Tensor:
    """Stack [D, T_b] frame maps of different lengths into [N, D, T_max] (zeros beyond each length)."""
    t_max = max(m.shape[-1] for m in maps)
    return torch.stack([torch.nn.functional.pad(m, (0, t_max - m.shape[-1])) for m in maps])


def item_info(dataset: Any, index: int) -> dict:
    """The manifest fields of item ``index`` that identify it in the output (uttid, wav, image, text)."""
    describe = getattr(dataset, "describe", None)
    if callable(describe):
        return describe(index)
    return {"index": index}


class SpokenSearchWriter(BasePredictionWriter):
    """Write the top-k retrieval results of ``predict`` as JSON.

    Args:
        output: JSON file to write; default ``<default_root_dir>/spoken_search.json``.
        top_k: results per query.
        direction: ``"a2i"`` (spoken query -> images), ``"i2a"`` (image -> captions) or ``"both"``.
        chunk_size: matchmap elements built at once when scoring.
    """

    def __init__(
        self,
        output: str | None = None,
        top_k: int = 5,
        direction: Literal["a2i", "i2a", "both"] = "a2i",
        chunk_size: int = 2**26,
    ):
        super().__init__(write_interval="epoch")
        self.output, self.top_k, self.direction, self.chunk_size = output, top_k, direction, chunk_size

    def write_on_batch_end(self, *args, **kwargs) -> None:  # epoch writer only
        pass

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        preds = _gather_predictions(predictions)
        if not trainer.is_global_zero or not preds:
            return
        dataset = getattr(trainer.datamodule, "predict_dataset", None)
        if "logits" in preds[0]:
            result = self._places(preds, dataset, trainer)
        else:
            result = self._retrieval(preds, dataset, pl_module.similarity_kind)
        path = self.output or os.path.join(trainer.default_root_dir, "spoken_search.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        n_queries = sum(len(v) for v in result.values() if isinstance(v, list))
        rank_zero_info(f"spoken search: {n_queries} queries -> {path}")

    def _items(self, preds: list[dict]) -> list[dict]:
        """One dict per dataset item, de-duplicated and sorted by dataset index."""
        items: dict[int, dict] = {}
        for p in preds:
            for b, idx in enumerate(p["index"].tolist()):
                if idx in items:
                    continue
                item = {"index": idx, "image_id": int(p["image_id"][b]) if p.get("image_id") is not None else idx}
                for key in ("image_out", "audio_out", "logits"):
                    if p.get(key) is not None:
                        # with image_rows, image_out holds the batch's distinct images only
                        row = int(p["image_rows"][b]) if key == "image_out" and p.get("image_rows") is not None else b
                        item[key] = p[key][row]
                if p.get("nframes") is not None:
                    item["nframes"] = int(p["nframes"][b])
                    item["audio_out"] = item["audio_out"][..., : item["nframes"]]
                items[idx] = item
        return [items[k] for k in sorted(items)]

    def _retrieval(self, preds: list[dict], dataset: Any, kind: str) -> dict:
        items = self._items(preds)
        gallery_rows: dict[int, int] = {}  # image_id -> first item position
        for pos, it in enumerate(items):
            gallery_rows.setdefault(it["image_id"], pos)
        image_pos = list(gallery_rows.values())
        images = torch.stack([items[p]["image_out"] for p in image_pos]).float()
        if "nframes" in items[0]:
            audio = _pad_frames([it["audio_out"] for it in items]).float()
            nframes = torch.tensor([it["nframes"] for it in items])
        else:
            audio, nframes = torch.stack([it["audio_out"] for it in items]).float(), None
        S = similarity_matrix(images, audio, nframes, kind=kind, chunk_size=self.chunk_size)  # [images, captions]
        row_of_image = {image_id: row for row, image_id in enumerate(gallery_rows)}
        k = min(self.top_k, S.shape[0])
        result: dict[str, Any] = {"similarity_kind": kind, "top_k": self.top_k}
        if self.direction in ("a2i", "both"):
            scores, rows = S.t().topk(k, dim=1)
            queries = []
            for q, it in enumerate(items):
                own = row_of_image[it["image_id"]]
                column = S[:, q]
                # rank of the caption's own image, ties broken by gallery order as in retrieval_metrics
                rank = 1 + int((column > column[own]).sum()) + int((column[:own] == column[own]).sum())
                queries.append({
                    "query": item_info(dataset, it["index"]),
                    "results": [
                        {"rank": r + 1, "score": float(scores[q, r]),
                         **item_info(dataset, items[image_pos[rows[q, r]]]["index"])}
                        for r in range(k)
                    ],
                    "own_image_rank": rank,
                })
            result["a2i"] = queries
        if self.direction in ("i2a", "both"):
            kc = min(self.top_k, S.shape[1])
            scores, cols = S.topk(kc, dim=1)
            caption_row = torch.tensor([row_of_image[it["image_id"]] for it in items])
            queries = []
            for q, p in enumerate(image_pos):
                row, own = S[q], caption_row == q
                # any-hit rank (as retrieval_metrics): the best own caption, only other images' captions ahead
                best = int(torch.nonzero(own & (row == row[own].max()))[0])
                rank = 1 + int((row[~own] > row[best]).sum()) + int((row[:best][~own[:best]] == row[best]).sum())
                queries.append({
                    "query": item_info(dataset, items[p]["index"]),
                    "results": [
                        {"rank": r + 1, "score": float(scores[q, r]), **item_info(dataset, items[cols[q, r]]["index"])}
                        for r in range(kc)
                    ],
                    "own_caption_rank": rank,
                })
            result["i2a"] = queries
        return result

    def _places(self, preds: list[dict], dataset: Any, trainer) -> dict:
        items = self._items(preds)
        logits = torch.stack([it["logits"] for it in items]).float()
        label_map = getattr(trainer.datamodule, "label_map", None) or {}
        names = {v: k for k, v in label_map.items()}
        k = min(self.top_k, logits.shape[1])
        probs, classes = logits.softmax(dim=1).topk(k, dim=1)
        return {
            "places": [
                {
                    "query": item_info(dataset, it["index"]),
                    "results": [
                        {"rank": r + 1, "place": names.get(int(classes[q, r]), int(classes[q, r])),
                         "prob": float(probs[q, r])}
                        for r in range(k)
                    ],
                }
                for q, it in enumerate(items)
            ]
        }
