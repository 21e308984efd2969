"""Optimisers and learning-rate schedules of the papers, built from plain init args.

The papers' schedules are all expressible with a handful of numbers, so the LightningModules take those
numbers as init args (easy to read in a config, flat in W&B) and build the optimiser here:

| paper | optimiser | schedule |
|---|---|---|
| NIPS2016 | SGD, momentum 0.9 | lr 1e-5, geometric decay ("by 2-5 every 5-10 epochs") |
| DAVEnet (code) | SGD, momentum 0.9, wd 5e-7 | lr 1e-3 x 0.1 every 40 epochs (the paper says 70) |
| ResDAVEnet | Adam, wd 5e-7 | lr 2e-4 x 0.95 every 3 epochs |
| demo (CPU) | AdamW | cosine decay over the trainer's ``max_time`` budget |

Step schedules count epochs from 0, as ``torch.optim.lr_scheduler.StepLR`` does. The official DAVEnet and
ResDAVEnet code counts from 1, so each decay comes one epoch earlier there (DAVEnet: after epoch 39 instead of 40;
ResDAVEnet: after 2 instead of 3). DAVEnet's Adam option uses betas (0.95, 0.999); ResDAVEnet's Adam torch's
default (0.9, 0.999), which is the ``betas`` default here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Literal

import torch

OptimizerName = Literal["sgd", "adam", "adamw"]
ScheduleName = Literal["constant", "step", "cosine", "cosine_time"]


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: OptimizerName,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """The optimiser named ``name`` over ``params`` (those with ``requires_grad``)."""
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of 'sgd', 'adam', 'adamw'")


class _StepFactor:
    """lr factor ``decay ** (epoch // every)``; a callable object so that LambdaLR can checkpoint it."""

    def __init__(self, every: int, decay: float):
        if every < 1:
            raise ValueError(f"lr_step_epochs must be >= 1, got {every}")
        self.every, self.decay = every, decay

    def __call__(self, epoch: int) -> float:
        return self.decay ** (epoch // self.every)


class CosineSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up for ``warmup_steps`` steps, then a cosine from the base rate to ``floor`` x base.

    Progress is either the optimiser step over ``total_steps``, or, when a ``clock`` (a function returning
    the training seconds so far) is given, the training seconds over ``budget_s``. The clock is Lightning's
    ``Timer`` callback, which is checkpointed by the Trainer, so it is left out of this scheduler's state.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 0,
        floor: float = 0.0,
        total_steps: int | None = None,
        budget_s: float | None = None,
        clock: Callable[[], float] | None = None,
    ):
        self.warmup_steps, self.floor = warmup_steps, floor
        self.total_steps, self.budget_s, self.clock = total_steps, budget_s, clock
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.clock is not None:
            progress = self.clock() / self.budget_s
        elif self.total_steps is not None:
            progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        else:  # warm-up only, then constant
            progress = 0.0
        progress = min(max(progress, 0.0), 1.0)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "clock")}


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: ScheduleName,
    *,
    step_epochs: int = 1,
    decay: float = 1.0,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    time_budget_s: float | None = None,
    clock: Callable[[], float] | None = None,
    floor: float = 0.0,
) -> dict | None:
    """A Lightning ``lr_scheduler`` config dict for ``schedule``, or None for a constant rate.

    - ``step``: x ``decay`` every ``step_epochs`` epochs (stepped per epoch).
    - ``cosine``: cosine to ``floor`` over ``total_steps`` optimiser steps (stepped per step).
    - ``cosine_time``: cosine to ``floor`` over ``time_budget_s`` seconds of training, read from ``clock``.
      With the Trainer's ``Timer`` as the clock, the rate reaches the floor exactly when ``max_time`` stops
      the run, and the schedule continues correctly after a resume.
    """
    if schedule == "constant":
        if warmup_steps == 0:
            return None
        return {"scheduler": CosineSchedule(optimizer, warmup_steps, floor=1.0), "interval": "step"}
    if schedule == "step":
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _StepFactor(step_epochs, decay))
        return {"scheduler": sched, "interval": "epoch"}
    if schedule == "cosine":
        if not total_steps or not math.isfinite(total_steps):
            raise ValueError(
                "lr_schedule='cosine' needs a finite number of training steps (set trainer.max_epochs or "
                "trainer.max_steps); with only a time budget use lr_schedule='cosine_time'"
            )
        sched = CosineSchedule(optimizer, warmup_steps, floor, total_steps=int(total_steps))
        return {"scheduler": sched, "interval": "step"}
    if schedule == "cosine_time":
        if not time_budget_s or clock is None:
            raise ValueError("lr_schedule='cosine_time' needs trainer.max_time (the wall-time budget)")
        sched = CosineSchedule(optimizer, warmup_steps, floor, budget_s=time_budget_s, clock=clock)
        return {"scheduler": sched, "interval": "step"}
    raise ValueError(f"unknown lr_schedule {schedule!r}")
