"""`unigen.task`: `unwrap` (the network inside DDP-style wrappers) and capabilities (what a family offers)."""
import pytest
from torch import nn

from unigen.errors import UserError
from unigen.registry import TASKS
from unigen.task import Task, capabilities, require, samplers, unwrap


class Wrapper(nn.Module):  # holds its network as `.module`, as DistributedDataParallel does
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def test_unwrap_peels_wrappers_and_checks_the_type():
    net = nn.Linear(2, 2)
    assert unwrap(net) is net and unwrap(Wrapper(Wrapper(net))) is net
    assert unwrap(Wrapper(net), nn.Linear) is net
    outer = Wrapper(Wrapper(net))
    assert unwrap(outer, Wrapper) is outer          # the first match on the way in
    with pytest.raises(UserError, match="expected a convolution, got Wrapper"):
        unwrap(Wrapper(net), nn.Conv2d, "a convolution")


# ---- capabilities -------------------------------------------------------------------------------------------------

class OnlyTrains(Task):
    def build(self, cfg, data_info):
        return nn.Linear(2, 2)

    def loss(self, model, batch):
        return model(batch["x"]).pow(2).mean()


class Samples(OnlyTrains):
    samplers = ("fast", "slow")

    def sample(self, model, cfg, **kw):
        return {"drawn": True}


def test_capabilities_are_the_methods_a_family_defines():
    assert capabilities(OnlyTrains()) == () and samplers(OnlyTrains()) == ()
    assert capabilities(Samples()) == ("sample",) and samplers(Samples()) == ("fast", "slow")
    assert require(Samples(), "sample")(None, None) == {"drawn": True}


def test_a_missing_capability_is_a_user_error_that_says_what_the_family_can_do():
    with pytest.raises(UserError, match=r"task 'tiny' cannot draw samples \(it has no samplers\); it can: only train"):
        require(OnlyTrains(), "sample", "tiny")
    with pytest.raises(UserError, match="cannot evaluate; it can: sample"):
        require(Samples(), "evaluate", "tiny")
    with pytest.raises(ValueError, match="unknown capability"):
        require(Samples(), "fly")


def test_every_registered_family_offers_what_its_cli_commands_need():
    """The shipped families: classifiers evaluate but cannot sample; diffusion models do both."""
    assert capabilities(TASKS["classify"]) == ("evaluate",)
    for name in ("diffusion", "mdlm", "sedd", "bd3", "ar"):
        assert {"sample", "evaluate"} <= set(capabilities(TASKS[name])) and samplers(TASKS[name])
