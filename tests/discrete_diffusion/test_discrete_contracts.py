"""The small print of the discrete math, found by mutation testing (benchmarks/mutation.md): documented defaults,
boundaries of the input checks and their messages, the generator as the only randomness, keyword forwarding of
the sampler table, and the summary statistics against hand computation."""
import inspect
import math
import re

import pytest
import torch

from unigen.errors import UserError
from unigen.families.discrete_diffusion import ar as AR
from unigen.families.discrete_diffusion import bd3 as BD
from unigen.families.discrete_diffusion import categorical as C
from unigen.families.discrete_diffusion import likelihood as LK
from unigen.families.discrete_diffusion import llada as LL
from unigen.families.discrete_diffusion import masked as M
from unigen.families.discrete_diffusion import noise as N
from unigen.families.discrete_diffusion import samplers as S
from unigen.families.discrete_diffusion import sedd as SE

V, MASK = 5, 5


def stratified(t, lo, hi):
    """One value in each of len(t) equal cells of [lo, hi] (antithetic / low-discrepancy draws)."""
    cells = torch.floor((t.flatten().double() - lo) / (hi - lo) * t.numel()).long().clamp(max=t.numel() - 1)
    return torch.equal(cells.sort().values, torch.arange(t.numel()))


# ------------------------------------------------------------------------------------------------------ noise
def test_geometric_defaults_and_bounds():
    sigma, dsigma = N.geometric(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(sigma, torch.tensor([1e-4, 20.0], dtype=torch.float64))  # SEDD's sigma_min, max
    torch.testing.assert_close(dsigma, sigma * math.log(20.0 / 1e-4))
    for lo, hi in ((0.0, 1.0), (1.0, 1.0), (2.0, 1.0)):
        with pytest.raises(UserError, match=rf"^geometric schedule needs 0 < sigma_min < sigma_max, got {lo}, {hi}$"):
            N.geometric(torch.tensor([0.5]), sigma_min=lo, sigma_max=hi)


def test_sample_t_defaults_sizes_and_generator():
    t = N.sample_t(1)
    assert t.shape == (1,) and 1e-3 <= t.item() <= 1
    t = N.sample_t(256)  # defaults: eps = 1e-3, antithetic
    assert t.min() >= 1e-3 and t.max() <= 1 and stratified(t, 1e-3, 1.0)
    assert not stratified(N.sample_t(256, antithetic=False, generator=torch.Generator().manual_seed(0)), 1e-3, 1)
    for kw in ({}, {"antithetic": False}):
        a = N.sample_t(8, eps=0.2, generator=torch.Generator().manual_seed(1), **kw)
        torch.manual_seed(5)
        b = N.sample_t(8, eps=0.2, generator=torch.Generator().manual_seed(1), **kw)
        assert torch.equal(a, b) and a.min() >= 0.2
    with pytest.raises(UserError, match=r"^need a positive number of times, got 0$"):
        N.sample_t(0)


def test_sample_clipped_t_bounds_and_generator():
    a = N.sample_clipped_t((4, 3), 0.2, 0.4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    b = N.sample_clipped_t((4, 3), 0.2, 0.4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (4, 3)
    assert N.sample_clipped_t((2,), 1.0, 1.0).eq(1.0).all()  # beta = omega = 1 is allowed
    for beta, omega in ((0.0, 0.5), (0.6, 0.5), (0.5, 1.5)):
        with pytest.raises(UserError, match=rf"^clipped schedule needs 0 < beta <= omega <= 1, got beta={beta}, "
                                            rf"omega={omega}$"):
            N.sample_clipped_t((2,), beta, omega)


# ----------------------------------------------------------------------------------------------------- masked
def test_token_and_canvas_checks():
    for bad in (torch.zeros(4, dtype=torch.long), torch.zeros(2, 3), torch.zeros(1, 2, 3, dtype=torch.long)):
        msg = f"tokens must be a (B, L) long tensor, got {tuple(bad.shape)} {bad.dtype}"
        with pytest.raises(UserError, match="^" + re.escape(msg) + "$"):
            M.check_tokens(bad, MASK)
        with pytest.raises(UserError, match=r"^the canvas must be a \(B, L\) long tensor, got "):
            M.check_canvas(bad, MASK)
    with pytest.raises(UserError, match=rf"^clean tokens contain the mask id {MASK}; the mask must not be a "
                                        r"tokenizer id$"):
        M.check_tokens(torch.tensor([[0, MASK]]), MASK)
    M.check_tokens(torch.tensor([[0, MASK]]), None)  # no mask id: nothing to check
    with pytest.raises(UserError, match=r"^cond must be 't' or 'sigma', got 'tau'$"):
        M.noise_level(torch.tensor([0.5]), cond="tau")
    t = torch.tensor([0.25])
    assert torch.equal(M.noise_level(t), t)  # default: condition on t


def recorder(L):
    seen = []

    def fn(x_t, level):
        seen.append((x_t.clone(), None if level is None else level.clone()))
        return torch.zeros(*x_t.shape, V + 1)
    return fn, seen


def test_mdlm_and_sft_losses_draw_times_as_asked():
    B, L = 64, 4
    x0 = torch.zeros(B, L, dtype=torch.long)
    for loss in (lambda fn, **kw: M.mdlm_loss(fn, x0, MASK, **kw),
                 lambda fn, **kw: M.sft_loss(fn, x0, torch.zeros(B, L, dtype=torch.bool), MASK, **kw)):
        fn, seen = recorder(L)
        loss(fn)
        assert stratified(seen[0][1], 1e-3, 1.0)  # defaults: t ~ U[1e-3, 1], antithetic
        loss(fn, eps=0.5)
        assert seen[1][1].min() >= 0.5 and stratified(seen[1][1], 0.5, 1.0)
        loss(fn, antithetic=False)
        assert not stratified(seen[2][1], 1e-3, 1.0)
    fn, seen = recorder(L)
    M.mdlm_token_nll(fn, x0, torch.full((B,), 0.5), MASK)
    assert torch.equal(seen[0][1], torch.full((B,), 0.5))  # default cond = "t"


def test_sft_input_checks():
    x0 = torch.zeros(2, 3, dtype=torch.long)
    fn, _ = recorder(3)
    with pytest.raises(UserError, match=r"^prompt_mask \(2, 4\) does not match tokens \(2, 3\)$"):
        M.sft_loss(fn, x0, torch.zeros(2, 4, dtype=torch.bool), MASK)
    with pytest.raises(UserError, match=r"^every SFT sequence needs at least one answer token \(prompt_mask is all "
                                        r"True in a row\)$"):
        M.sft_loss(fn, x0, torch.tensor([[True, True, True], [True, False, False]]), MASK)


def test_subs_checks_name_the_shapes():
    with pytest.raises(UserError, match=r"^logits \(2, 3, 6\) do not match tokens \(2, 4\)$"):
        M.subs_log_probs(torch.zeros(2, 3, V + 1), torch.zeros(2, 4, dtype=torch.long), MASK)
    with pytest.raises(UserError, match=r"^mask_id 6 is outside the model's 6 outputs$"):
        M.subs_log_probs(torch.zeros(2, 3, V + 1), torch.zeros(2, 3, dtype=torch.long), 6)


def test_forward_process_uses_only_the_generator():
    x0 = torch.zeros(3, 50, dtype=torch.long)
    a = M.q_xt(x0, torch.tensor(0.5), MASK, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(9)
    b = M.q_xt(x0, torch.tensor(0.5), MASK, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and 0 < (a == MASK).sum() < a.numel()


# ------------------------------------------------------------------------------------------------ categorical
def test_sample_logits_defaults_top_k_and_shapes():
    row = torch.tensor([0.0, 1.0, 2.0, -1.0]).log_softmax(0)
    logits = row.expand(3, 7, 4).contiguous()  # (B, L, V), L != V
    g = torch.Generator().manual_seed(0)
    n = 40000
    draws = C.sample_logits(row.expand(n, 4), generator=g)  # default temperature 1: softmax itself
    freq = torch.bincount(draws, minlength=4).double() / n
    p = torch.softmax(torch.tensor([0.0, 1.0, 2.0, -1.0], dtype=torch.float64), 0)
    assert ((freq - p).abs() < 5 * (p * (1 - p) / n).sqrt()).all()
    out = C.sample_logits(logits, top_k=1, generator=g)  # (3, 7): top_k = 1 is the argmax, on the last axis
    assert out.shape == (3, 7) and (out == 2).all()
    two = C.sample_logits(row.expand(2000, 7, 4), top_k=2, generator=g)
    assert set(two.unique().tolist()) == {1, 2}
    assert set(C.sample_logits(row.expand(2000, 7, 4), top_k=9, generator=g).unique().tolist()) == {0, 1, 2, 3}
    with pytest.raises(UserError, match=r"^top_k must be positive, got 0$"):
        C.sample_logits(logits, top_k=0)
    with pytest.raises(UserError, match=r"^temperature must be >= 0, got -1$"):
        C.sample_logits(logits, temperature=-1)


def test_gumbel_scores_are_float64_for_float32_logits():
    out = C.add_gumbel_noise(torch.zeros(2, 3), 1.0, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float64


# ------------------------------------------------------------------------------------------------- likelihood
def test_summarize_against_hand_computation():
    nll = torch.tensor([3.0, 5.0, 10.0], dtype=torch.float64)
    n_tok = torch.tensor([2, 2, 4])
    mc = torch.tensor([0.3, 0.4, 1.2], dtype=torch.float64)
    out = LK.summarize(nll, n_tok, mc_se=mc, n_bytes=12)
    per = [1.5, 2.5, 2.5]
    mean = sum(per) / 3
    sd = math.sqrt(sum((p - mean) ** 2 for p in per) / 2)  # sample standard deviation
    assert math.isclose(out["nats_per_token"], 18 / 8) and math.isclose(out["ppl"], math.exp(18 / 8))
    assert math.isclose(out["se"], sd / math.sqrt(3))
    assert math.isclose(out["mc_se"], math.sqrt(0.09 + 0.16 + 1.44) / 8)
    assert math.isclose(out["bits_per_byte"], 18 / math.log(2) / 12)
    two = LK.summarize(nll[:2], n_tok[:2], mc_se=mc[:2])
    assert math.isclose(two["se"], math.sqrt(0.5) / math.sqrt(2))  # per-token 1.5 and 2.5: sample sd sqrt(1/2)
    one = LK.summarize(nll[:1], n_tok[:1], mc_se=mc[:1])
    assert math.isnan(one["se"]) and "bits_per_byte" not in one


# ---------------------------------------------------------------------------------------------------------- AR
def test_ar_checks_and_eos_lengths():
    nll = AR.ar_token_nll(lambda x: torch.zeros(*x.shape, V), torch.tensor([[1, 2]]))  # T = 2 is the minimum
    torch.testing.assert_close(nll, torch.full((1, 1), math.log(V)))
    for bad in (torch.tensor([[1]]), torch.tensor([1, 2, 3])):
        with pytest.raises(UserError, match="^" + re.escape(f"AR likelihood needs (B, T) tokens with T >= 2, got "
                                                            f"{tuple(bad.shape)}") + "$"):
            AR.ar_token_nll(lambda x: torch.zeros(*x.shape, V), bad)
    x = torch.tensor([[9, 1, 9, 9], [1, 1, 1, 1], [9, 1, 1, 1]])
    assert AR.eos_lengths(x, 2, eos_id=9).tolist() == [3, 4, 4]  # an EOS before `start` does not count
    assert AR.eos_lengths(x, 0, eos_id=9).tolist() == [1, 4, 1]
    assert AR.eos_lengths(x, 1, eos_id=None).tolist() == [4, 4, 4]
    assert AR.eos_lengths(torch.tensor([[1, 9, 1], [1, 1, 9]]), 0, eos_id=9).tolist() == [2, 3]  # per row


# ------------------------------------------------------------------------------------------------------- BD3
def test_bd3_checks_and_defaults():
    with pytest.raises(UserError, match=r"^block_size must be positive, got 0$"):
        BD.block_causal(4, 0)
    for n, bs in ((8, 0), (8, 3)):
        with pytest.raises(UserError, match=rf"^block_size {bs} must be positive and divide the sequence length {n}$"):
            BD.bd3_attention_mask(n, bs)
    with pytest.raises(UserError, match="clean tokens contain the mask id"):
        BD.bd3_loss(lambda *a, **k: None, torch.tensor([[0, MASK]]), block_size=1, mask_id=MASK)
    seen = []

    def model(ids, level, *, mask, positions):
        seen.append(level)
        return torch.zeros(*ids.shape, V + 1)
    BD.bd3_loss(model, torch.zeros(32, 32, dtype=torch.long), block_size=4, mask_id=MASK, time_cond=True)
    rates = seen[0][:, :32:4]
    assert rates.min() >= 1e-3 and rates.max() <= 1 and stratified(rates, 1e-3, 1.0)  # defaults: U[1e-3, 1], antithetic


# ----------------------------------------------------------------------------------------------------- LLaDA
def test_llada_selection_edges():
    conf = torch.tensor([[0.5, 0.9, float("-inf"), 0.9]], dtype=torch.float64)
    # a tie goes to the earlier position (a stable sort), an ineligible token is never chosen, a confidence equal
    # to the threshold is kept (Fast-dLLM's get_transfer_index drops only those below it)
    assert LL.transfer_index(conf, torch.tensor([1]), None).tolist() == [[False, True, False, False]]
    assert LL.transfer_index(conf, torch.tensor([4]), None).tolist() == [[True, True, False, True]]
    assert LL.transfer_index(conf, None, 0.5).tolist() == [[True, True, False, True]]
    assert LL.transfer_index(conf, None, 0.6).tolist() == [[False, True, False, True]]
    none = torch.full((1, 3), float("-inf"), dtype=torch.float64)
    assert not LL.transfer_index(none, None, 0.5).any() and not LL.transfer_index(none, torch.tensor([2]), None).any()
    x0, conf = LL.predict_x0(torch.zeros(2, 3, V + 1), MASK, 0.0, "random", torch.Generator().manual_seed(0))
    assert conf.dtype == torch.float64 and (x0 < MASK).all()


def test_guidance_passes_the_time_to_both_halves():
    seen = []

    def fn(x, t):
        seen.append(t)
        return torch.zeros(*x.shape, V + 1)
    t = torch.tensor([0.3, 0.7])
    LL.guided_logits(fn, torch.zeros(2, 3, dtype=torch.long), t, torch.zeros(2, 3, dtype=torch.bool), MASK, 1.0)
    assert torch.equal(seen[0], torch.cat([t, t]))
    LL.guided_logits(fn, torch.zeros(2, 3, dtype=torch.long), None, torch.zeros(2, 3, dtype=torch.bool), MASK, 1.0)
    assert seen[1] is None


# ------------------------------------------------------------------------------------------------ sampler table
def spy(monkeypatch, name):
    calls = []
    monkeypatch.setattr(S, name, lambda *a, **kw: calls.append(kw) or (a[1], {"nfe": 0}))
    return calls


def test_sampler_table_forwards_every_option_with_its_documented_default(monkeypatch):
    x = torch.zeros(1, 4, dtype=torch.long)
    md = S.MaskedDenoiser(lambda x, t: x, MASK, time_cond=False)
    calls = spy(monkeypatch, "sample_mdlm")
    S.SAMPLERS["mdlm"](md, x, steps=3)
    S.SAMPLERS["mdlm"](S.MaskedDenoiser(md.logits, MASK, time_cond=True), x, steps=3)
    assert [c["reuse_logits"] for c in calls] == [True, False]  # reuse only for a time-agnostic network
    calls = spy(monkeypatch, "sample_llada")
    S.SAMPLERS["llada"](md, x, steps=3)
    S.SAMPLERS["llada-random"](md, x, steps=3, temperature=0.5, guidance=3.0, block_length=2)
    S.SAMPLERS["fast-dllm"](md, x, steps=3)
    pick = ("temperature", "cfg_scale", "remasking", "threshold", "block_length")
    assert [tuple(c[k] for k in pick) for c in calls] == [
        (1.0, 0.0, "low_confidence", None, None),   # guidance 1 = off = LLaDA's cfg_scale 0
        (0.5, 2.0, "random", None, 2),
        (1.0, 0.0, "low_confidence", 0.9, None)]
    bd = S.BlockDenoiser(lambda *a, **k: None, MASK, 2, time_cond=False)
    calls = spy(monkeypatch, "sample_bd3")
    S.SAMPLERS["bd3"](bd, x, steps=3)
    S.SAMPLERS["bd3"](S.BlockDenoiser(bd.net, MASK, 2, time_cond=True), x, steps=3, use_cache=False)
    assert [(c["use_cache"], c["reuse_logits"], c["time_cond"]) for c in calls] == [(True, True, False),
                                                                                  (False, False, True)]
    calls = spy(monkeypatch, "sample_ar")
    S.SAMPLERS["ar"](S.CausalDenoiser(lambda *a, **k: None, MASK), x, steps=3)
    S.SAMPLERS["ar"](S.CausalDenoiser(lambda *a, **k: None, MASK), x, steps=3, temperature=0.0, use_cache=False)
    assert [(c["temperature"], c["use_cache"]) for c in calls] == [(1.0, True), (0.0, False)]


def test_options_lists_exactly_the_extra_keywords():
    assert S.options("mdlm") == {} and S.options("sedd-euler") == {}
    assert S.options("ar") == {"temperature": 1.0, "use_cache": True}
    assert S.options("bd3") == {"use_cache": True, "first_hitting": False, "nucleus_p": 1.0}
    assert set(S.options("llada")) == {"temperature", "guidance", "remasking", "threshold", "block_length",
                                       "attention_mask", "eos_ids", "logits_eos_inf", "confidence_eos_eot_inf"}
    assert all(p.kind is p.KEYWORD_ONLY for name in S.SAMPLERS for p in inspect.signature(S.SAMPLERS[name])
               .parameters.values() if p.name in S.options(name))


def test_losses_forward_schedule_conditioning_and_token_checks():
    """sft_loss and sedd_loss pass their schedule and conditioning on; every loss refuses the mask id in data."""
    geo = lambda t: N.geometric(t, sigma_min=1e-3, sigma_max=5.0)  # noqa: E731
    fn, seen = recorder(4)
    t = torch.tensor([0.3, 0.8])
    M.sft_loss(fn, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool), MASK, noise=geo,
               cond="sigma", t=t)
    torch.testing.assert_close(seen[0][1], geo(t)[0])
    with pytest.raises(UserError, match="clean tokens contain the mask id"):
        M.sft_loss(fn, torch.tensor([[0, MASK]]), torch.zeros(1, 2, dtype=torch.bool), MASK)
    got = []
    SE.sedd_loss(lambda x, s: got.append(s) or torch.zeros(*x.shape, V + 1), torch.zeros(2, 3, dtype=torch.long),
                 mask_id=MASK, noise=geo, t=t)
    torch.testing.assert_close(got[0], geo(t)[0])
    SE.sedd_token_loss(lambda x, s: torch.zeros(*x.shape, V + 1), torch.zeros(2, 3, dtype=torch.long), t, mask_id=MASK)
    with pytest.raises(UserError, match="clean tokens contain the mask id"):
        SE.sedd_token_loss(lambda x, s: x, torch.tensor([[0, MASK]]), t[:1], mask_id=MASK)
    M.subs_log_probs(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), 0)  # mask id 0 is a valid output


def test_llada_selection_breaks_ties_by_position():
    """Equal confidences (common in low precision) go to the leftmost positions, as a stable sort gives; an unstable
    sort scatters them over a long row (torch's CPU sort does at this length)."""
    conf = torch.zeros(2, 5000)
    conf[:, ::7] = 1.0                                                # 715 tied leaders per row
    picked = LL.transfer_index(conf, torch.tensor([3, 720]), None)
    assert picked[0].nonzero().flatten().tolist() == [0, 7, 14]
    assert picked[1].nonzero().flatten().tolist() == sorted(list(range(0, 5000, 7)) + [1, 2, 3, 4, 5])


def test_categorical_draws_are_gumbel_max_on_float64_uniforms():
    """sample_categorical and add_gumbel_noise draw float64 uniforms u from the generator (a float32 u cannot
    represent the tail below 2^-24) and take Gumbel-max: argmax log p - log(-log u) (Gumbel 1954; Maddison et al.
    2014), written out here."""
    from unigen.families.discrete_diffusion.categorical import add_gumbel_noise, sample_categorical
    probs = torch.tensor([[0.2, 0.5, 0.3, 0.0], [1e-3, 0.25, 0.7, 0.049]], dtype=torch.float32).repeat(40, 1)
    u = torch.rand(probs.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = (probs.double().log() - (-u.log()).log()).argmax(-1)
    assert torch.equal(sample_categorical(probs, torch.Generator().manual_seed(3)), expected)
    logits = torch.randn(80, 4, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    scores = add_gumbel_noise(logits, 0.7, torch.Generator().manual_seed(3))
    assert scores.dtype == torch.float64
    torch.testing.assert_close(scores, logits.double() - 0.7 * (-u.log()).log(), rtol=1e-15, atol=0)


# ------------------------------------------------------------------- precision and SEDD's clean rows (mutants)
def test_subs_log_probs_upcasts_bf16_logits_before_the_softmax():
    """A bf16 log-softmax keeps ~3 significant digits; SUBS promises at least float32 (mutant: no upcast)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, V + 1, generator=g).bfloat16()
    x_t = torch.tensor([[MASK, 1, MASK], [0, MASK, 4]])
    got = M.subs_log_probs(logits, x_t, MASK)
    assert got.dtype == torch.float32
    want = logits.float().clone()
    want[..., MASK] = float("-inf")
    want = torch.log_softmax(want, -1)
    torch.testing.assert_close(got[x_t == MASK], want[x_t == MASK], rtol=0, atol=0)   # same float32 ops: exact


def test_subs_to_log_score_clean_rows_are_one_on_the_token_and_e_sigma_minus_one_on_the_mask():
    """At an unmasked position the absorbing graph's concrete score is p(y)/p(x): 1 for y = x, (e^sigma - 1) for the
    mask (MDLM's get_score), 0 elsewhere; log of that, exactly (mutant: own entry 1 instead of log 1 = 0)."""
    sigma = torch.tensor([0.7], dtype=torch.float64)
    x_t = torch.tensor([[2, MASK]])
    logp = torch.log_softmax(torch.randn(1, 2, V + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), -1)
    score = SE.subs_to_log_score(logp, x_t, sigma, MASK).exp()
    want = torch.zeros(V + 1, dtype=torch.float64)
    want[2], want[MASK] = 1.0, math.expm1(0.7)
    torch.testing.assert_close(score[0, 0], want, rtol=1e-15, atol=0)


@pytest.mark.parametrize("predictor", ["euler", "analytic"])
def test_sedd_step_probabilities_are_float64_on_a_float64_time_grid(predictor, monkeypatch):
    """Every step's transition probabilities equal their closed form in float64 to 1e-13: for a masked token under
    a constant score s, Euler moves to y with dt sigma'(t) s_y and Tweedie with (e^{sigma(t)-sigma(t-dt)} - 1) s_y
    (mutant: the time grid in float32 shifts them by ~1e-8)."""
    seen = []
    monkeypatch.setattr(SE, "sample_categorical", lambda p, g: (seen.append(p), torch.full(p.shape[:-1], MASK))[1])
    s = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25, 1.0], dtype=torch.float64)   # the mask's own entry 1
    score_fn = lambda x, sigma: s.log().float().expand(*x.shape, V + 1)  # noqa: E731
    steps, eps = 3, 1e-3
    fn = SE.sample_sedd_euler if predictor == "euler" else SE.sample_sedd_analytic
    fn(score_fn, torch.full((1, 1), MASK), steps=steps, mask_id=MASK, noise=N.geometric, eps=eps, denoise=True)
    s32 = s.log().float().double().exp()                           # the scores the float32 score_fn gives
    *seen, last = seen
    # the denoising step from sigma(eps) to 0: Tweedie's (e^sigma s_y) (1 - e^-sigma) = (e^sigma - 1) s_y for y != mask
    # (unnormalised), never the mask (mutants: the graph argument dropped, ts[-2] for ts[-1])
    assert last[0, 0, MASK] == 0
    sig_eps = N.geometric(torch.tensor(eps, dtype=torch.float64))[0]
    # rtol: the sampler forms 1 - e^-sigma at sigma(eps) ~ 1.1e-4, a cancellation worth 2.2e-16 / sigma ~ 2e-12
    # (measured 3.7e-13); the mutants change sigma by orders of magnitude
    torch.testing.assert_close(last[0, 0, :MASK], torch.expm1(sig_eps) * s32[:MASK], rtol=1e-11, atol=0)
    assert len(seen) == steps
    for i, p in enumerate(seen):
        t, t_next = 1 - i * (1 - eps) / steps, 1 - (i + 1) * (1 - eps) / steps
        (sig, dsig), (sig_next, _) = N.geometric(torch.tensor(t, dtype=torch.float64)), \
            N.geometric(torch.tensor(t_next, dtype=torch.float64))
        move = (t - t_next) * dsig if predictor == "euler" else torch.expm1(sig - sig_next)
        want = move * s32
        assert p.dtype == torch.float64
        torch.testing.assert_close(p[0, 0, :MASK] / p[0, 0, :MASK].sum() if predictor == "analytic" else p[0, 0, :MASK],
                                   want[:MASK] / want[:MASK].sum() if predictor == "analytic" else want[:MASK],
                                   rtol=1e-13, atol=0)
