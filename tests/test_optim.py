"""The papers' optimisers and schedules, built from init args."""

import math

import pytest
import torch

from lightning_modules.optim import CosineSchedule, build_optimizer, build_scheduler


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs_per_epoch(sched, opt, epochs):
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_step_schedule_matches_davenet_formula():
    # DAVEnet code: lr = 1e-3 * 0.1 ** (epoch // 40) (epochs from 0 here)
    opt = _opt(1e-3)
    cfg = build_scheduler(opt, "step", step_epochs=40, decay=0.1)
    assert cfg["interval"] == "epoch"
    lrs = _lrs_per_epoch(cfg["scheduler"], opt, 100)
    for epoch, lr in enumerate(lrs):
        assert lr == pytest.approx(1e-3 * 0.1 ** (epoch // 40))


def test_step_schedule_matches_resdavenet_formula():
    opt = _opt(2e-4)
    lrs = _lrs_per_epoch(build_scheduler(opt, "step", step_epochs=3, decay=0.95)["scheduler"], opt, 30)
    assert lrs[2] == pytest.approx(2e-4) and lrs[3] == pytest.approx(2e-4 * 0.95)
    assert lrs[29] == pytest.approx(2e-4 * 0.95 ** 9)


def test_cosine_reaches_floor_and_warms_up():
    opt = _opt(1.0)
    sched = build_scheduler(opt, "cosine", warmup_steps=10, total_steps=110, floor=0.1)["scheduler"]
    lrs = _lrs_per_epoch(sched, opt, 111)
    assert lrs[0] == pytest.approx(0.1)  # (0 + 1) / 10
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_cosine_time_follows_the_clock_and_its_state_excludes_the_clock():
    now = {"t": 0.0}
    opt = _opt(1.0)
    sched = build_scheduler(opt, "cosine_time", time_budget_s=100.0, clock=lambda: now["t"])["scheduler"]
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    now["t"] = 50.0
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    now["t"] = 250.0  # past the budget: stays at the floor
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)
    state = sched.state_dict()
    assert "clock" not in state and "optimizer" not in state
    torch.save(state, "/dev/null")  # picklable (a lambda clock would not be)


def test_cosine_needs_a_finite_length():
    with pytest.raises(ValueError, match="max_epochs"):
        build_scheduler(_opt(), "cosine", total_steps=float("inf"))
    with pytest.raises(ValueError, match="max_time"):
        build_scheduler(_opt(), "cosine_time")


def test_constant_without_warmup_is_no_scheduler():
    assert build_scheduler(_opt(), "constant") is None
    cfg = build_scheduler(_opt(), "constant", warmup_steps=4)
    assert isinstance(cfg["scheduler"], CosineSchedule)


def test_build_optimizer_skips_frozen_parameters():
    frozen, free = torch.nn.Parameter(torch.ones(2), requires_grad=False), torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer([frozen, free], "adamw", lr=0.1, weight_decay=0.01)
    assert isinstance(opt, torch.optim.AdamW)
    assert [p for g in opt.param_groups for p in g["params"]] == [free]
    assert isinstance(build_optimizer([free], "sgd", 0.1, momentum=0.9), torch.optim.SGD)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer([free], "lamb", 0.1)
