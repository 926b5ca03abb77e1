"""BD3-LM's data-driven clipped schedule (clipsearch.py, `evaluate.search_clipping`, `unigen eval RUN --clip-search`):
the grid against bd3lms' `init_valid_vars`, the variance against a brute-force recomputation from the same noise,
an analytic model whose block-loss variance is known in closed form (and the search finding its argmin), and bad
input refused with one line and exit 2."""
import json
import math
import statistics

import pytest
import torch

from unigen.cli import main
from unigen.config import apply_overrides
from unigen.families.discrete_diffusion import bd3 as BD
from unigen.families.discrete_diffusion import clipsearch as CS
from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion.evaluate import search_clipping
from unigen.models.text import TextTransformer, TextTransformerConfig
from unigen.registry import get_preset
from unigen.run import train

V, MASK = 10, 10


class Windows:
    """A test split of fixed token windows (the `data.batch(idx)["ids"]` protocol of unigen.data)."""

    def __init__(self, ids):
        self.ids = ids  # (S, T)

    def __len__(self):
        return self.ids.shape[0]

    def batch(self, idx):
        return {"ids": self.ids[idx]}


class LM(torch.nn.Module):
    """A DiscreteLM stand-in: `net` plus the fields the search reads (block size, resample, ignore_bos)."""

    def __init__(self, net, block_size=4, resample=True, ignore_bos=False):
        super().__init__()
        self.net, self.mask_id, self.time_cond = net, MASK, False
        self.config = type("C", (), dict(block_size=block_size, resample=resample, ignore_bos=ignore_bos))
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, t, **kw):
        return self.net(ids, t, **kw)


class Uniform(torch.nn.Module):
    """Zero logits: p_theta(x^i | ...) = 1/V for every masked token, so -log p = log V whatever the context."""

    def forward(self, ids, t, **kw):
        return torch.zeros(*ids.shape, V + 1)


def bd3lms_grid(widths, delta=0.05, eps=1e-3):
    """bd3lms' `Metrics.init_valid_vars` (block size > 1), transcribed: float32 torch.arange, clamp at eps."""
    out = {(eps, 1): []}
    for width in widths:
        for i in torch.arange(0, 1 - width + delta, delta):
            lo = torch.clamp(i, min=eps).item()
            hi = torch.clamp(i + width, min=eps).item()
            out[(lo, hi)] = []
    return list(out)


def test_grid_is_bd3lms_grid():
    ours, theirs = CS.clip_grid(), bd3lms_grid([0.5, 0.6, 0.7, 0.8, 0.9])
    assert len(ours) == len(theirs) == 36
    for (b, o), (tb, to) in zip(ours, theirs):
        assert b == pytest.approx(tb, abs=1e-6) and o == pytest.approx(to, abs=1e-6)
    assert (0.45, 0.95) in ours and (0.5, 1.0) in ours and ours[0] == (1e-3, 1.0)


def test_variance_equals_brute_force_from_the_same_noise():
    """search_clipping's variance and mean against per-row model calls, Python loops and statistics.variance, with
    the noise (t, x_t) redrawn from the same seed in bd3lms' order (batches outer, intervals inner)."""
    torch.manual_seed(0)
    net = TextTransformer(TextTransformerConfig(vocab_size=V + 1, dim=32, depth=2, n_heads=2, max_len=64)).eval()
    lm, bs, grid = LM(net), 4, [(0.45, 0.95), (1e-3, 1.0)]
    data = Windows(torch.randint(0, V, (9, 16)))  # 2 full batches of 3 windows, and 3 more that are left out
    got = search_clipping(lm, data, grid, batches=5, batch_size=3, seed=7)
    assert got["batches"] == 3
    torch.manual_seed(7)
    var, mean = [[], []], [[], []]
    for k in range(3):
        x0 = data.ids[3 * k:3 * k + 3]
        for j, (beta, omega) in enumerate(grid):
            t = N.sample_clipped_t((3, 16 // bs), beta, omega)  # (B, n_blocks)
            x_t = BD.q_xt_resampled(x0, t, block_size=bs, mask_id=MASK, beta=beta, omega=omega)
            blocks = []
            for r in range(3):  # one sequence per model call
                terms = BD.bd3_token_nll(lm, x0[r:r + 1], t[r:r + 1], block_size=bs, mask_id=MASK,
                                         x_t=x_t[r:r + 1])[0].tolist()
                blocks += [sum(terms[b * bs:(b + 1) * bs]) / bs for b in range(16 // bs)]
            var[j].append(statistics.variance(blocks))
            mean[j].append(statistics.fmean(blocks))
    for j, row in enumerate(got["table"]):
        assert (row["beta"], row["omega"]) == grid[j]
        assert row["var"] == pytest.approx(statistics.fmean(var[j]), rel=1e-5)
        assert row["nelbo"] == pytest.approx(statistics.fmean(mean[j]), rel=1e-5)
    assert got["best"] == min(got["table"], key=lambda r: r["var"])


def analytic_var(beta, omega, block_size):
    """Var of l_b for the uniform model without resampling: l_b = (log V / B') k / t with k ~ Bin(B', t), t ~
    U[beta, omega], so Var = (log V)^2 / B' * (E[1/t] - 1), E[1/t] = ln(omega / beta) / (omega - beta)."""
    return math.log(V) ** 2 / block_size * (math.log(omega / beta) / (omega - beta) - 1)


@pytest.mark.parametrize("beta,omega", [(0.5, 1.0), (0.2, 0.7), (0.45, 0.95)])
def test_variance_of_the_uniform_model_is_the_closed_form(beta, omega):
    """Independent t per block (antithetic off), so each batch's unbiased variance estimates Var exactly; the
    allowance is 4 standard errors of the mean over 16 batches, measured from the batches' spread."""
    torch.manual_seed(1)
    x0 = torch.randint(0, V, (64, 64))
    per_batch, means = [], []
    for _ in range(16):
        losses = CS.block_losses(Uniform(), x0, beta=beta, omega=omega, block_size=4, mask_id=MASK,
                                 resample=False, antithetic=False)  # (64, 16)
        per_batch.append(CS.batch_variance(losses))
        means.append(float(losses.mean()))
    want = analytic_var(beta, omega, 4)
    assert abs(statistics.fmean(per_batch) - want) <= 4 * statistics.stdev(per_batch) / 4
    assert abs(statistics.fmean(means) - math.log(V)) <= 4 * statistics.stdev(means) / 4  # E[k / t] = B'


def test_search_finds_the_analytic_argmin():
    """For the uniform model the closed form is smallest at [0.5, 1] on bd3lms' grid (next: [0.45, 0.95], 28%
    higher); the search, with bd3lms' antithetic t, picks it."""
    grid = CS.clip_grid()
    want = min(grid, key=lambda iv: analytic_var(*iv, 4))
    assert want == (0.5, 1.0)
    data = Windows(torch.randint(0, V, (128, 64), generator=torch.Generator().manual_seed(2)))
    got = search_clipping(LM(Uniform(), resample=False), data, grid, batches=2, batch_size=64, seed=0)
    assert (got["best"]["beta"], got["best"]["omega"]) == want
    assert got["best"] == CS.choose(got["table"])


def test_choose_is_the_first_argmin():
    rows = [{"var": 3.0, "i": 0}, {"var": 1.0, "i": 1}, {"var": 2.0, "i": 2}, {"var": 1.0, "i": 3}]
    assert CS.choose(rows)["i"] == 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    tiny = ["model.size=tiny", "data.seq_len=32", "train.steps=1", "train.batch_size=4", "train.progress=false"]
    for name in ("text-bd3-4", "text-mdlm"):
        train(apply_overrides(get_preset(name), tiny), root / name)
    return root


def test_cli_clip_search_writes_the_table(runs, capsys):
    run = runs / "text-bd3-4"
    with pytest.raises(SystemExit) as e:
        main(["eval", str(run), "--clip-search", "--intervals", "0.45:0.95,0.2:0.7", "--n", "1", "--seeds", "3",
              "--json"])
    assert e.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["beta"], r["omega"]) for r in out["table"]] == [(0.45, 0.95), (0.2, 0.7)]
    assert out["batches"] == 1 and out["seed"] == 3 and out["best"] == CS.choose(out["table"])
    assert json.loads((run / "clip_search.json").read_text()) == out
    assert not (run / "eval_quick.json").exists()


def test_bad_clip_search_input_exits_2(runs, exit_line):
    run = str(runs / "text-bd3-4")
    for bad in ("0.9:0.5", "0.5:0.5", "0.5:1.5", "-0.1:0.5", "0:0.5", "half:1"):
        err = exit_line(["eval", run, "--clip-search", f"--intervals={bad}"])
        assert ("BETA:OMEGA" if bad == "half:1" else "0 < beta < omega <= 1") in err
    assert "mdlm run" in exit_line(["eval", str(runs / "text-mdlm"), "--clip-search"])
    assert "one --seeds" in exit_line(["eval", run, "--clip-search", "--seeds", "0,1"])
    assert "not query" in exit_line(["eval", run, "--clip-search", "--query", "x"])
