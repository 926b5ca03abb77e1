"""`unigen.task.unwrap`: the network inside DDP-style wrappers, found by type."""
import pytest
from torch import nn

from unigen.errors import UserError
from unigen.task import unwrap


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
