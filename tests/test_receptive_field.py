"""Receptive fields: Araujo et al.'s closed form against hand-worked values and against the gradient support of
all-ones linear stacks (strided, dilated, pooled, branched), and Luo et al.'s effective receptive field."""
import pytest
import torch
from torch import nn

from unigen.errors import UserError
from unigen.metrics.receptive_field import (Branches, effective_rf, format_table, gradient_support, k_eff, layer,
                                            layers_of, rf_table)


def ones_(net: nn.Module) -> nn.Module:
    """All weights 1, biases 0: nothing can cancel, so the gradient support is the whole field."""
    for name, p in net.named_parameters():
        nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
    return net.double()


class Sum(nn.Module):
    """Two conv paths from the same input, summed (an Inception / residual merge)."""

    def __init__(self, a: nn.Sequential, b: nn.Sequential):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return self.a(x) + self.b(x)

    def receptive_field(self):
        return Branches("sum", (layers_of(self.a), layers_of(self.b)))


def expected_extent(rows, index):
    last = rows[-1]
    out = []
    for a, i in enumerate(index):
        c = last.start[a] + i * last.j[a]
        out.append((round(c - (last.r[a] - 1) / 2), round(c + (last.r[a] - 1) / 2)))
    return out


def test_hand_worked_table():
    # conv3 -> conv3/2 -> conv3 (d=2): r = 3, 5, 5 + 4*2 = 13; jumps 1, 2, 2; k_eff(3, 2) = 5
    spec = [layer("c1", 3, p=1, ndim=1), layer("c2", 3, s=2, p=1, ndim=1), layer("c3", 3, p=2, d=2, ndim=1)]
    rows = rf_table(spec)
    assert k_eff(3, 2) == 5
    assert [r.r[0] for r in rows] == [1, 3, 5, 13] and [r.j[0] for r in rows] == [1, 1, 2, 2]
    assert [r.start[0] for r in rows] == [0, 0, 0, 0]            # 'same' padding keeps output 0 centred on pixel 0
    # no padding shifts the centre right by (k_eff - 1) / 2 jumps
    assert rf_table([layer("c", 5, ndim=1), layer("c", 3, s=2, ndim=1)])[-1].start == (3.0,)
    assert "jump" in format_table(rows).splitlines()[0]


STACKS = {
    "strided": lambda: nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, 3, stride=2),
                                     nn.Conv2d(2, 1, (3, 5), stride=(1, 2), padding=(0, 2))),
    "dilated": lambda: nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2, padding=2), nn.Conv2d(2, 2, 3, dilation=4),
                                     nn.Conv2d(2, 1, 2, stride=2, dilation=3)),
    "pooled": lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2), nn.Conv2d(2, 2, 3, padding=1),
                                    nn.Identity(), nn.AvgPool2d(3, stride=2, padding=1), nn.Conv2d(2, 1, 3)),
    "branched": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2),
        Sum(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1)),
            nn.Sequential(nn.Conv2d(2, 2, 3, padding=2, dilation=2), nn.Conv2d(2, 2, 5, padding=2))),
        nn.Conv2d(2, 1, 3, stride=2)),
    "branched-asymmetric": lambda: Sum(nn.Sequential(nn.Conv2d(1, 1, 3, padding=0), nn.Conv2d(1, 1, 1)),
                                       nn.Sequential(nn.Conv2d(1, 1, 5, padding=1))),
}


@pytest.mark.parametrize("name", list(STACKS))
def test_formula_equals_gradient_support_of_all_ones_stack(name):
    torch.manual_seed(0)
    net = ones_(STACKS[name]())
    x = torch.rand(1, 1, 96, 96, dtype=torch.float64) + 0.5
    rows = rf_table(layers_of(net))
    h, w = net(x).shape[-2:]
    index = (h // 2, w // 2)
    got = gradient_support(net, x, index)
    want = expected_extent(rows, index)
    assert all(0 < a and b < 95 for a, b in want), "the field must lie inside the input for the check to be exact"
    assert got == want


def test_branches_take_the_max():
    a = [layer("a", 3, p=1)]
    b = [layer("b", 7, p=3)]
    assert rf_table([Branches("m", (a, b))])[-1].r == (7, 7)
    with pytest.raises(UserError, match="different jumps"):
        rf_table([Branches("m", ([layer("a", 3, s=2)], b))])


def test_unsupported_modules_are_refused():
    with pytest.raises(UserError, match="Flatten"):
        layers_of(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(UserError, match="kernel"):
        layer("bad", 0)


def test_effective_rf_is_centred_and_inside_the_field():
    """Luo et al.: the ERF of a random-init stack peaks at the centre and is zero outside the theoretical field."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), *[m for _ in range(3) for m in (nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))])
    erf = effective_rf(net, torch.randn(16, 1, 33, 33))
    r = rf_table(layers_of(net))[-1].r[0]                                        # 9
    inside = erf[16 - r // 2: 16 + r // 2 + 1, 16 - r // 2: 16 + r // 2 + 1]
    assert erf.sum() == pytest.approx(inside.sum()) and erf.max() == 1
    assert erf[16, 16] > erf[16, 16 + r // 2] and erf[16, 16] > erf[16 - r // 2, 16]


def test_rf_command_prints_the_frame_cnn_table_and_draws_the_erf(tmp_path, capsys):
    from unigen.cli import main
    run = str(tmp_path / "run")
    for argv in (["train", "stream-single", "--out", run, "--train.steps=1", "--train.progress=false",
                  "--train.batch_size=2", "--data.train_streams=2", "--data.test_streams=1", "--data.stream_len=60"],
                 ["rf", run, "--erf"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    out = capsys.readouterr().out
    table = out[out.index("frames:"):].splitlines()
    assert table[1].split()[:2] == ["layer", "k"] and table[-3].split()[5:7] == ["9x9", "4x4"]   # r = 9, jump 4
    assert (tmp_path / "run" / "figures" / "erf.png").stat().st_size > 0
