"""Every registered sampler under the one calling convention,

    tokens, stats = SAMPLERS[name](denoiser, canvas, steps=..., generator=..., callback=..., **options),

on a tiny random network of each method, made the way the family makes it (task.METHODS: the method's network,
the denoiser its samplers take, its canvas). The contract: no mask token is left, the prompt and every other given
token come back unchanged, stats["nfe"] is the number of network calls (counted by a hook on the network), the
callback's last canvas is the result, and the same seed gives the same tokens. A new sampler in SAMPLERS must be
offered by a method, and is then run here without writing a test for it.
"""
import pytest
import torch

from unigen.config import Config
from unigen.errors import UserError
from unigen.families.discrete_diffusion.network import DiscreteLMConfig
from unigen.families.discrete_diffusion.samplers import SAMPLERS, options
from unigen.families.discrete_diffusion.task import METHODS, NEUTRAL, TASKS, resolve_options

V, SEQ, BLOCK = 11, 16, 4
PROMPT, LENGTH = 3, 9
GIVEN = PROMPT + 4   # a constraint token inside the generated span, at this offset from the text's start


def build(method: str, **model):
    """The method's network (TextTransformer of size tiny over V + 1 outputs), random init, eval mode."""
    cfg = Config(task=method, model=DiscreteLMConfig(size="tiny", block_size=BLOCK, **model))
    cfg.data.name = "text"
    torch.manual_seed(0)
    return TASKS[method].build(cfg, {"vocab_size": V, "seq_len": SEQ, "bos_id": 0}).eval()


def cases():
    """(method, sampler, model settings, sampler options): every sampler of every method, with and without time
    conditioning, both SEDD graphs, both cache settings, and guidance."""
    out = []
    for method, spec in METHODS.items():
        for name in spec.samplers:
            for time_cond in (False,) if spec.causal else (False, True):
                for graph in ("absorb", "uniform") if name.startswith("sedd") else ("absorb",):
                    out.append((method, name, dict(time_cond=time_cond, graph=graph), {}))
            if "use_cache" in options(name):
                out.append((method, name, {}, dict(use_cache=False)))
            if "guidance" in options(name):
                out.append((method, name, {}, dict(guidance=2.0)))
    return out


def run(method: str, name: str, model: dict, opts: dict, global_seed: int = 0):
    """The sampler on a canvas of 3 rows (each its own prompt, one given token in the span), with a generator
    seeded 0 and torch's global RNG seeded `global_seed`; returns the canvas, the tokens, the stats, the network
    calls and the callback's canvases."""
    lm = build(method, **model)
    spec = METHODS[method]
    row, lo = spec.canvas(lm, [0] * PROMPT, LENGTH)
    x = torch.tensor(row).expand(3, len(row)).clone()  # (3, L)
    x[:, lo:lo + PROMPT] = torch.randint(0, V, (3, PROMPT), generator=torch.Generator().manual_seed(1))
    x[:, lo + GIVEN] = 5
    calls, seen = [], []
    lm.net.register_forward_pre_hook(lambda module, args: calls.append(1))
    torch.manual_seed(global_seed)
    out, stats = SAMPLERS[name](spec.denoiser(lm), x.clone(), steps=spec.default_steps(lm, LENGTH),
                                generator=torch.Generator().manual_seed(0), callback=seen.append, **opts)
    return x, out, stats, len(calls), seen


def case_id(method, name, model, opts) -> str:
    shown = {**{k: v for k, v in model.items() if v not in (False, "absorb")}, **opts}
    return "-".join([name, *(f"{k}={v}" for k, v in shown.items())])


@pytest.mark.parametrize("method,name,model,opts", cases(), ids=[case_id(*c) for c in cases()])
def test_sampler_contract(method, name, model, opts):
    x, out, stats, calls, seen = run(method, name, model, opts)
    given = x != V  # the prompt (AR: after BOS) and the constraint; V is the mask id
    assert out.shape == x.shape and out.dtype == torch.long
    assert not (out == V).any() and ((0 <= out) & (out < V)).all()  # no mask left, only real tokens
    assert torch.equal(out[given], x[given])                         # prompt and given tokens unchanged
    assert stats["nfe"] == calls > 0                                 # nfe counts the network calls
    assert stats.get("model_calls", calls) == calls
    assert seen and torch.equal(seen[-1], out)                       # the callback saw the final canvas
    again = run(method, name, model, opts, global_seed=1)[1]
    assert torch.equal(again, out)                                   # the generator is the only randomness


def test_every_sampler_belongs_to_a_method_and_every_method_sampler_exists():
    offered = [s for spec in METHODS.values() for s in spec.samplers]
    assert sorted(offered) == sorted(SAMPLERS)
    assert all(spec.samplers for spec in METHODS.values())


def test_shared_options_default_to_their_neutral_value():
    """Leaving an option out is the same as asking for it at NEUTRAL, for every sampler that has it."""
    for name in SAMPLERS:
        for k, default in options(name).items():
            if k in NEUTRAL:
                assert default == NEUTRAL[k], (name, k)


def test_an_option_a_sampler_lacks_is_an_error_unless_neutral():
    assert resolve_options("mdlm", dict(NEUTRAL)) == {}
    assert resolve_options("ar", dict(NEUTRAL, temperature=0.0)) == {"use_cache": True, "temperature": 0.0}
    assert resolve_options("llada", dict(NEUTRAL, guidance=2.0))["guidance"] == 2.0
    with pytest.raises(UserError, match="guidance=2.0 applies to the samplers llada, llada-random, fast-dllm"):
        resolve_options("mdlm", dict(NEUTRAL, guidance=2.0))
    with pytest.raises(UserError, match="use_cache=False applies to the samplers bd3, bd3-fh, ar, not 'llada'"):
        resolve_options("llada", dict(NEUTRAL, use_cache=False))
    with pytest.raises(UserError, match="temperature"):
        resolve_options("sedd-euler", dict(NEUTRAL, temperature=0.5))
