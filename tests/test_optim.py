import math

import pytest
import torch

from train.errors import ConfigError
from train.optim import OPTIMIZERS, OptimConfig, build_optimizer, build_scheduler, lr_factor


def test_warmup_then_cosine_to_floor():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, decay="cosine", min_lr_ratio=0.1)
    factors = [lr_factor(cfg, s, 20) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:]))  # non-increasing after warmup
    assert math.isclose(factors[-1], 0.1)
    assert lr_factor(OptimConfig(decay="constant"), 10, 20) == 1.0


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_steps_and_schedules(name):
    w = torch.nn.Parameter(torch.ones(3))
    cfg = OptimConfig(name=name, lr=0.1, warmup_steps=2)
    opt = build_optimizer(cfg, [w])
    sched = build_scheduler(cfg, opt, 10)
    assert math.isclose(opt.param_groups[0]["lr"], 0.05)  # first warmup step: lr/2
    (w ** 2).sum().backward()
    opt.step()
    sched.step()
    assert (w < 1).all()
    assert math.isclose(opt.param_groups[0]["lr"], 0.1)


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match="optim.lr"):
        OptimConfig(lr=0)
    with pytest.raises(ConfigError, match="optim.decay"):
        OptimConfig(decay="linear")
