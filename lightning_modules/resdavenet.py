"""ResDAVEnet and ResDAVEnet-VQ: Hsu, Harwath & Glass, "Transfer Learning from Audio-Visual Grounding to Speech
Recognition"; Harwath, Hsu & Glass, "Learning Hierarchical Discrete Linguistic Units from Visually-Grounded Speech".

A residual audio net of 1x9 basic blocks (4 stages, 16x temporal downsampling) with optional vector-quantisation
layers and temporal jitter, a ResNet-50 image branch + 1x1 conv, mean-pooled dot product ("pooldot", which equals
SISA) and the sum of sampled and semi-hard triplet losses in both directions, plus each VQ layer's commitment loss.
With `vq_layers=[]` this is ResDAVEnet (Interspeech 2019) = the ICLR 2020 `{}` model.

Incremental schedules (`{}->{3}`, `{2}->{2,3}`, ...): `seed_ckpt` starts a run from an earlier run's weights (every
key of the same name and shape) and the VQ layers it lacks start fresh; the list of both is printed at the start:

    python cli.py fit --config configs/resdavenet.yaml                                   # {}
    python cli.py fit --config configs/resdavenet_vq.yaml --model.seed_ckpt runs/.../best-epochNNN.ckpt   # {}->{3}

`ResDAVEnetVQ` is the same module with the defaults of that recipe (the released widths, VQ3 with 1024 codes).

References: Hsu, Harwath, Glass. Interspeech 2019, arXiv:1907.04355; Harwath, Hsu, Glass. ICLR 2020,
arXiv:1911.09602. Official code: github.com/wnhsu/ResDAVEnet-VQ (`run_ResDavenetVQ.py`, `steps/traintest.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytorch_lightning.utilities import rank_zero_info

from .base import RetrievalModule
from .checkpoints import format_seed_report, load_matching_weights
from .core.losses import ResDAVEnetTripletLoss, RetrievalLoss
from .nets import RESDAVENET_DEFAULT_WIDTHS, RESDAVENET_RELEASED_WIDTHS, ResDAVEnetAudioNet, ResNet50Image
from .optim import OptimizerName, ScheduleName


class ResDAVEnet(RetrievalModule):
    """ResDAVEnet(-VQ) retrieval model with the official training defaults: Adam, lr 2e-4 x 0.95 every 3 epochs,
    weight decay 5e-7, SISA (pooldot), sampled + semi-hard triplets with the official mask, jitter 0.12.

    Args:
        layer_widths: stem and stage widths. The default [128, 128, 256, 512, 1024] is the official ``ResDavenet``
            class default (``RESDAVENET_DEFAULT_WIDTHS``); the released checkpoints use [128, 256, 256, 512, 1024]
            (``RESDAVENET_RELEASED_WIDTHS``).
        layer_depths: basic blocks per stage.
        convsize: temporal kernel of the blocks.
        embedding_dim: output channels of both branches; None keeps ``layer_widths[-1]``.
        audio_width_mult: scales the audio net's hidden widths (CPU presets).
        vq_layers: VQ positions on (1 = after the stem, k + 1 = after stage k; ``[3]`` is the paper's ``{3}``).
        codebook_size: codes per VQ layer, an int or one per position (official run default 1024).
        commitment_cost, ema_decay, init_std, init_ema_mass, nonneg_init: of the VQ layers (official defaults
            1, 0.99, 1, 1, False).
        jitter: temporal jitter probability in training (official run default 0.12, with or without VQ).
        jitter_centered: offsets {-1, 0, +1} instead of the official, uncentred {0, +1, +2}.
        mask_padding: zero each caption's padding at every resolution (padding-invariant outputs); False is the
            official function (converted official checkpoints store False).
        seed_ckpt: a checkpoint (of this class, or converted from the official code) whose weights start this run:
            every key of the same name and shape is loaded at the start of ``fit``, the rest (e.g. the codebooks
            of newly enabled VQ layers) starts fresh, and a shape mismatch is an error. As the official
            ``--seed-dir``, it replaces the ImageNet initialisation (no download then).
        image_arch: ``"resnet50"`` (paper) or a smaller torchvision ResNet for CPU presets. The image
            embedder's channels follow the audio net's output width.
        image_width_mult: scales the ResNet widths (CPU presets; no ImageNet weights then).
        pretrained_image: ImageNet weights (the official default): True or a local weights file.
        similarity_kind: ``"SISA"`` (= the official pooldot).
        loss: defaults to ``ResDAVEnetTripletLoss(margin=1, semihard_mask="official")``.
        **kwargs: see ``RetrievalModule`` and ``VGSModule``.

    Training adds each VQ layer's commitment loss to the retrieval loss and logs it with the layer's code
    perplexity and share of codes used (``train/vq<k>_commitment``, ``train/vq<k>_perplexity``,
    ``train/vq<k>_codes_used``).
    """

    def __init__(
        self,
        layer_widths: Sequence[int] = RESDAVENET_DEFAULT_WIDTHS,
        layer_depths: Sequence[int] = (2, 2, 2, 2),
        convsize: int = 9,
        embedding_dim: int | None = None,
        audio_width_mult: float = 1.0,
        vq_layers: Sequence[int] = (),
        codebook_size: int | Sequence[int] = 1024,
        commitment_cost: float = 1.0,
        ema_decay: float = 0.99,
        init_std: float = 1.0,
        init_ema_mass: float = 1.0,
        nonneg_init: bool = False,
        jitter: float = 0.12,
        jitter_centered: bool = False,
        mask_padding: bool = True,
        seed_ckpt: str | None = None,
        image_arch: str = "resnet50",
        image_width_mult: float = 1.0,
        pretrained_image: bool | str = False,
        similarity_kind: str = "SISA",
        loss: RetrievalLoss | None = None,
        optimizer: OptimizerName = "adam",
        lr: float = 2e-4,
        weight_decay: float = 5e-7,
        lr_schedule: ScheduleName = "step",
        lr_step_epochs: int = 3,
        lr_decay: float = 0.95,
        **kwargs: Any,
    ):
        super().__init__(
            similarity_kind=similarity_kind,
            loss=loss if loss is not None else ResDAVEnetTripletLoss(margin=1.0, semihard_mask="official"),
            optimizer=optimizer, lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule,
            lr_step_epochs=lr_step_epochs, lr_decay=lr_decay, **kwargs,
        )
        self.audio_net = ResDAVEnetAudioNet(
            layer_widths=list(layer_widths), layer_depths=list(layer_depths), convsize=convsize,
            width_mult=audio_width_mult, embedding_dim=embedding_dim, vq_layers=list(vq_layers),
            codebook_size=codebook_size if isinstance(codebook_size, int) else list(codebook_size),
            commitment_cost=commitment_cost, ema_decay=ema_decay, init_std=init_std, init_ema_mass=init_ema_mass,
            nonneg_init=nonneg_init, jitter=jitter, jitter_centered=jitter_centered, mask_padding=mask_padding,
        )
        self.image_net = ResNet50Image(
            self.audio_net.embedding_dim, pretrained=pretrained_image if not seed_ckpt else False, arch=image_arch,
            width_mult=image_width_mult,
        )
        self._seeded = False
        self.seed_report: dict | None = None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        seed = self.hparams.get("seed_ckpt")
        if stage == "fit" and seed and not self._seeded:
            # Before a resumed run's own checkpoint is restored (which then wins), as the official --seed-dir.
            self.seed_report = load_matching_weights(self, seed)
            self._seeded = True
            rank_zero_info(format_seed_report(self.seed_report))


class ResDAVEnetVQ(ResDAVEnet):
    """ResDAVEnet-VQ with the defaults of the released ``{}->{3}`` recipe (``configs/resdavenet_vq.yaml``): the
    released widths [128, 256, 256, 512, 1024] and VQ3 (after ``layer2``) with 1024 codes; seed it from a ``{}`` run
    with ``seed_ckpt``. Everything else, and every argument, is ``ResDAVEnet``'s.
    """

    def __init__(
        self,
        layer_widths: Sequence[int] = RESDAVENET_RELEASED_WIDTHS,
        vq_layers: Sequence[int] = (3,),
        **kwargs: Any,
    ):
        super().__init__(layer_widths=layer_widths, vq_layers=vq_layers, **kwargs)
