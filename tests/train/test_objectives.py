"""fit() with several objectives (a 2-D GAN): against a hand-written torch loop, parameter ownership, start/every,
metric lines, EMA of a submodule, hooks, the non-finite guard and bad input."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from unigen.errors import NonFiniteError, UserError
from unigen.train import Objective, fit
from unigen.train import checkpoint as ckpt
from unigen.train.loop import BatchIndices

sys.path.insert(0, str(Path(__file__).parent))
from gan_toy import (Blobs, config, disc_loss, disc_params, gen_loss, gen_params, make_model,  # noqa: E402
                     objectives)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(model, before) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


# --- the reference: the same training written with plain torch ---------------------------------------------

def lr_by_hand(t: int, lr: float, warmup: int, total: int, min_lr: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from `lr` to `min_lr` at `total`; t counts from `start`."""
    if t < warmup:
        return lr * (t + 1) / warmup
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min((t - warmup) / max(total - warmup, 1), 1)))


def reference_fit(model, objs: list[Objective], data, cfg, ema_decay: float = 0.0):
    """Plain torch: per objective an AdamW (decay on matrices only), its schedule on its own clock, zeroed
    gradients, accumulation over the same micro-batches, clipping of its parameters. Returns the generator's EMA."""
    opts = []
    for o in objs:
        params = list(dict.fromkeys(o.params(model)))
        lr, wd = o.lr or cfg.lr, cfg.weight_decay if o.weight_decay is None else o.weight_decay
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": wd},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        opts.append((o, params, lr, torch.optim.AdamW(groups, lr=lr, betas=o.betas or (cfg.beta1, cfg.beta2),
                                                        fused=True)))  # the kernel fit() uses
    order = BatchIndices(len(data), cfg.batch_size, 1, 0, cfg.seed)  # the documented data order
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    ema, n_ema = None, 0
    for step in range(cfg.steps):
        for o, params, lr, opt in opts:
            if step < o.start or (step - o.start) % o.every:
                continue
            warmup = cfg.warmup_steps if o.warmup_steps is None else o.warmup_steps
            for g in opt.param_groups:
                g["lr"] = lr_by_hand(step - o.start, lr, warmup, cfg.steps - o.start, cfg.min_lr)
            model.zero_grad(set_to_none=True)
            for micro in range(cfg.grad_accum):
                batch = data.batch(order(step * cfg.grad_accum + micro))
                with autocast:
                    out = o.loss(model, batch)
                loss = out[0] if isinstance(out, tuple) else out
                (loss.float() / cfg.grad_accum).backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
        g_now = state(model.generator)
        d = min(ema_decay, (1 + n_ema) / (10 + n_ema))
        ema = g_now if ema is None else {k: ema[k].lerp(v, 1 - d) for k, v in g_now.items()}
        n_ema += 1
    return ema


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_optimizers_equal_a_hand_written_loop(tmp_path, precision):
    """Bit for bit: the reference uses the same AdamW kernel (fused; torch's default for-loop kernel rounds
    differently, by up to 1.5e-8 here) and the same micro-batch order, so any difference is a difference in what
    the loop does: order, zeroed gradients, accumulation, clipping, schedules, parameter ownership, EMA."""
    data, cfg = Blobs(), config(precision=precision, ema_decay=0.9)
    ours, ref = make_model(), make_model()
    fit(ours, objectives(), data, cfg, tmp_path, ema_of=lambda m: m.generator)
    ema = reference_fit(ref, objectives(), data, cfg, ema_decay=0.9)
    init = make_model()
    assert changed(ref, state(init)) == {k for k in state(init) if not k.startswith("spare.")}  # both trained
    for k, v in state(ref).items():
        assert torch.equal(ours.state_dict()[k], v), k
    saved = ckpt.load_safetensors(tmp_path / "ema.safetensors")
    assert set(saved) == {f"generator.{k}" for k in ema}
    for k, v in ema.items():
        assert torch.equal(saved[f"generator.{k}"], v), k


def test_each_optimizer_moves_only_its_parameters():
    model = make_model()
    gen_loss(model, Blobs().batch(torch.arange(8))).backward()  # the generator loss does reach the discriminator
    assert all(p.grad.abs().sum() > 0 for p in model.discriminator.parameters())
    model.zero_grad(set_to_none=True)
    before = state(model)
    fit(model, objectives(disc_start=2), Blobs(), config(steps=2))  # steps 0 and 1: only the generator updates
    assert changed(model, before) == {k for k in before if k.startswith("generator.")}
    before = state(model)
    fit(model, [Objective("disc", disc_loss, params=disc_params)], Blobs(), config(steps=2))
    assert changed(model, before) == {k for k in before if k.startswith("discriminator.")}


def test_start_and_every_and_the_same_micro_batches(tmp_path):
    seen = {"gen": [], "disc": []}

    def recording(name, loss):
        def f(model, batch):
            seen[name].append(batch["x"].sum().item())
            return loss(model, batch)
        return f

    cfg = config(steps=11, log_every=1, ckpt_every=11)
    fit(make_model(), objectives(3, 3, gen=recording("gen", gen_loss), disc=recording("disc", disc_loss)),
        Blobs(), cfg, tmp_path)
    assert len(seen["gen"]) == 2 * 11 and len(seen["disc"]) == 2 * 3  # grad_accum=2; disc at steps 3, 6, 9
    for k, step in enumerate((3, 6, 9)):
        assert seen["disc"][2 * k:2 * k + 2] == seen["gen"][2 * step:2 * step + 2]
    state_, files = ckpt.read_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert {"optimizer_gen", "optimizer_disc"} <= set(files) and "optimizer" not in files
    assert {"optimizer_gen", "optimizer_disc"} <= set(state_)
    steps = {n: {v.item() for k, v in files[f"optimizer_{n}"].items() if k.endswith(".step")} for n in seen}
    assert steps == {"gen": {11.0}, "disc": {3.0}}
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [("loss/disc" in line) for line in lines] == [False] * 3 + [True] * 8
    assert all(line["loss"] == line["loss/gen"] for line in lines)
    assert {"lr/gen", "grad_norm/gen", "lr/disc", "grad_norm/disc", "d_real/disc", "it_s", "skipped"} <= set(lines[3])
    # the discriminator's schedule runs on its own clock: warm-up of 2 from step 3, cosine over steps 3..11
    assert lines[3]["lr/disc"] == pytest.approx(2e-2 / 2)
    assert lines[6]["lr/disc"] == pytest.approx(lr_by_hand(3, 2e-2, 2, 8, 1e-3))
    assert lines[9]["lr/disc"] == lines[10]["lr/disc"]  # step 10 did not update it: its latest value


def test_with_step_passes_the_optimisation_step(tmp_path):
    """VQGAN switches its generator's adversarial term on at disc_start: a loss with `with_step` sees the step of
    each micro-batch (the same step for both micro-batches of a step), a plain loss is called without it."""
    steps = []

    def gen_with_step(model, batch, step):
        steps.append(step)
        return gen_loss(model, batch) * (1.0 if step >= 3 else 0.0)

    objs = objectives(3, 1)
    objs[0] = Objective("gen", gen_with_step, params=gen_params, with_step=True)
    fit(make_model(), objs, Blobs(), config(steps=5, ckpt_every=5), tmp_path)
    assert steps == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]                      # grad_accum = 2
    model = make_model()
    before = state(model)
    fit(model, [Objective("gen", gen_with_step, params=gen_params, with_step=True)], Blobs(),
        config(steps=3, weight_decay=0.0))
    assert changed(model, before) == set()       # weight 0 before step 3, no decay: AdamW moves nothing


def test_ema_of_a_submodule_and_hooks(tmp_path):
    """ema.safetensors holds the generator under the full model's keys; hooks see the EMA generator (in eval
    mode), and afterwards the training weights and modes are back."""
    seen = {}

    def on_sample(m, step):
        seen[step] = (state(m), [mod.training for mod in m.modules()])

    model = make_model(dropout=0.1)
    fit(model, objectives(), Blobs(), config(ema_decay=0.9, sample_every=6), tmp_path, on_sample=on_sample,
        ema_of=lambda m: m.generator)
    assert sorted(seen) == [6, 12]
    ema, weights = (ckpt.load_safetensors(tmp_path / f) for f in ("ema.safetensors", "model.safetensors"))
    assert set(ema) == {f"generator.{k}" for k in model.generator.state_dict()}
    hooked, modes = seen[12]
    assert all(torch.equal(hooked[k], ema.get(k, weights[k])) for k in hooked)
    assert not any(torch.equal(ema[k], weights[k]) for k in ema)  # the EMA is not the weights
    assert not any(modes) and all(m.training for m in model.modules())
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    fresh = make_model(seed=1)
    ckpt.load_run_weights(fresh, tmp_path)  # what unigen.load should do: the weights, then the EMA laid over them
    assert all(torch.equal(v, hooked[k]) for k, v in fresh.state_dict().items())


def test_ema_counts_steps_that_updated(tmp_path):
    """The EMA moves after a step in which some objective updated, not after idle or wholly skipped steps."""
    fit(make_model(), [Objective("gen", gen_loss, params=gen_params, every=3)], Blobs(),
        config(steps=7, ema_decay=0.9, ckpt_every=7), tmp_path / "a", ema_of=lambda m: m.generator)
    assert ckpt.read_checkpoint(ckpt.latest_checkpoint(tmp_path / "a"))[0]["ema_updates"] == 3  # steps 0, 3, 6
    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        return gen_loss(model, batch) * (float("inf") if calls["n"] == 5 else 1.0)

    fit(make_model(), poisoned, Blobs(), config(steps=7, ema_decay=0.9, ckpt_every=7, nonfinite="skip"),
        tmp_path / "b")
    assert ckpt.read_checkpoint(ckpt.latest_checkpoint(tmp_path / "b"))[0]["ema_updates"] == 6


def test_nonfinite_names_the_objective(tmp_path):
    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        loss, logs = disc_loss(model, batch)
        return (loss * float("nan") if calls["n"] == 3 else loss), logs

    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 5 in objective 'disc'"):
        fit(make_model(), objectives(disc=poisoned), Blobs(), config(ckpt_every=2), tmp_path)
    assert ckpt.read_checkpoint(ckpt.latest_checkpoint(tmp_path))[0]["step"] == 4
    calls["n"] = 0
    model = make_model()
    res = fit(model, objectives(disc=poisoned), Blobs(), config(nonfinite="skip"))
    assert res.skipped == 1 and all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_objectives_are_user_errors(tmp_path):
    model = make_model()
    bad = [([], "non-empty list"), ([Objective("a b", gen_loss)], "letters, digits"),
           ([Objective("g", gen_loss), Objective("g", disc_loss)], "two objectives are named 'g'"),
           ([Objective("g", gen_loss, every=0)], "every >= 1"),
           ([Objective("g", gen_loss, schedule="linear")], "schedule must be"),
           ([Objective("g", gen_loss, params=lambda m: [torch.nn.Parameter(torch.zeros(2))])], "not a parameter"),
           ([Objective("g", gen_loss, params=lambda m: [])], "no trainable parameters")]
    for objs, match in bad:
        with pytest.raises(UserError, match=match):
            fit(model, objs, Blobs(), config(steps=1))
    with pytest.raises(UserError, match="not the model or one of its submodules"):
        fit(model, objectives(), Blobs(), config(steps=1, ema_decay=0.9), ema_of=lambda m: make_model().generator)
    # a run trained with two objectives cannot be resumed with one (or with other names)
    fit(make_model(), objectives(), Blobs(), config(steps=4), tmp_path)
    with pytest.raises(UserError, match="holds optimizer_disc, optimizer_gen but this run has optimizer:"):
        fit(make_model(), gen_loss, Blobs(), config(steps=6), tmp_path, resume=True)
    one = [Objective("gen", gen_loss, params=gen_params)]
    with pytest.raises(UserError, match="trained with other objectives"):
        fit(make_model(), one, Blobs(), config(steps=6), tmp_path, resume=True)
