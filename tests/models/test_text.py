"""TextTransformer: causality, KV-cache decoding, time conditioning, Llama parity and a training smoke test."""
import pytest
import torch

from unigen.errors import UserError
from unigen.models.text import TEXT_SIZES, TextTransformer, TextTransformerConfig, text_config
from unigen.nn.attention import peeking


def tiny(**kw):
    fields = dict(vocab_size=37, dim=32, depth=2, n_heads=4, n_kv_heads=2, max_len=64)
    fields.update(kw)
    torch.manual_seed(0)
    return TextTransformer(TextTransformerConfig(**fields)).eval()


def test_causal_logits_ignore_the_future_bidirectional_do_not():
    ids = torch.randint(0, 37, (2, 10))
    later = ids.clone()
    later[:, 6:] = (later[:, 6:] + 1) % 37
    causal, bidir = tiny(causal=True), tiny(causal=False)
    with torch.no_grad():
        torch.testing.assert_close(causal(ids)[:, :6], causal(later)[:, :6])
        assert not torch.allclose(causal(ids)[:, 6:], causal(later)[:, 6:])
        assert not torch.allclose(bidir(ids)[:, :6], bidir(later)[:, :6])


@torch.no_grad()
@pytest.mark.parametrize("chunks", [[4] + [1] * 6, [3, 5, 2]])
def test_kv_cache_generation_equals_full_recompute(chunks):
    model = tiny(causal=True, qk_norm=True)
    ids = torch.randint(0, 37, (3, sum(chunks)))
    full = model(ids)
    cache, s, outs = model.new_cache(3), 0, []
    for n in chunks:
        outs.append(model(ids[:, s:s + n], cache=cache))
        s += n
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_greedy_decoding_with_cache_equals_recompute():
    model = tiny(causal=True)
    seq = torch.randint(0, 37, (2, 3))
    cache = model.new_cache(2, 16)
    logits = model(seq, cache=cache)[:, -1]
    slow = seq
    for _ in range(6):
        nxt = logits.argmax(-1, keepdim=True)  # (B, 1)
        slow = torch.cat([slow, model(slow)[:, -1].argmax(-1, keepdim=True)], 1)
        seq = torch.cat([seq, nxt], 1)
        logits = model(nxt, cache=cache)[:, -1]
    assert torch.equal(seq, slow)


@torch.no_grad()
def test_block_diffusion_layout_matches_cached_peek_and_commit():
    """BD3-LM: [x_t ; x_0] with positions [0..L-1, 0..L-1]; x_t block b sees x_t block b and x_0 blocks < b."""
    model = tiny(time_cond=True)
    L, bs, B = 6, 2, 2
    x0, xt = torch.randint(0, 37, (B, L)), torch.randint(0, 37, (B, L))
    t = torch.rand(B, L).repeat_interleave(bs, 1)[:, :L]  # one level per block
    blk = torch.arange(L) // bs
    m_bd = blk[None, :] == blk[:, None]
    m_obc = blk[None, :] < blk[:, None]
    m_bc = blk[None, :] <= blk[:, None]
    mask = torch.cat([torch.cat([m_bd, m_obc], 1), torch.cat([torch.zeros(L, L, dtype=torch.bool), m_bc], 1)], 0)
    pos = torch.cat([torch.arange(L), torch.arange(L)])
    full = model(torch.cat([xt, x0], 1), torch.cat([t, torch.zeros_like(t)], 1), mask=mask, positions=pos)[:, :L]
    cache = model.new_cache(B, L)
    for s in range(0, L, bs):
        with peeking(cache):
            peek = model(xt[:, s:s + bs], t[:, s:s + bs], cache=cache)
        torch.testing.assert_close(peek, full[:, s:s + bs], atol=1e-5, rtol=1e-5)
        model(x0[:, s:s + bs], torch.zeros(B, bs), cache=cache)
        assert cache[0].length == s + bs


def test_time_conditioning_shapes_and_zero_init():
    model = tiny(time_cond=True)
    ids = torch.randint(0, 37, (2, 5))
    plain = tiny()  # same seed, same non-adaLN parameters
    with torch.no_grad():
        a, b = model(ids, torch.rand(2)), model(ids, torch.rand(2, 5))
        assert a.shape == b.shape == (2, 5, 37)
        # adaLN-Zero: at init every block is the identity on the residual stream, whatever t is
        torch.testing.assert_close(a, model(ids, torch.rand(2)))
        torch.testing.assert_close(model.head(model.norm(model.tok_emb(ids))), a)
    assert plain(ids).shape == (2, 5, 37)
    with pytest.raises(UserError):
        model(ids)
    with pytest.raises(UserError):
        model(ids, torch.rand(3))
    with pytest.raises(UserError):
        plain(ids, torch.rand(2))


@pytest.mark.parametrize("tie,n_kv", [(False, 2), (True, 4)])
def test_parity_with_transformers_llama(tie, n_kv):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    cfg = TextTransformerConfig(vocab_size=53, dim=48, depth=2, n_heads=4, n_kv_heads=n_kv, causal=True,
                                rope_base=500.0, tie_embeddings=tie, norm_eps=1e-5, max_len=32)
    ours = TextTransformer(cfg).eval()
    hf_cfg = transformers.LlamaConfig(
        vocab_size=53, hidden_size=48, intermediate_size=cfg.hidden(), num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=n_kv, rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=tie,
        max_position_embeddings=32, attention_bias=False, mlp_bias=False, attn_implementation="eager")
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # random RMSNorm weights too, so a misplaced norm cannot hide
        for n in [ours.norm, *[m for b in ours.blocks for m in (b.norm1, b.norm2)]]:
            n.weight.uniform_(0.5, 1.5)
        sd = {"model.embed_tokens.weight": ours.tok_emb.weight, "model.norm.weight": ours.norm.weight,
              "lm_head.weight": ours.head.weight}
        for i, b in enumerate(ours.blocks):
            p = f"model.layers.{i}."
            q, k, v = b.attn.qkv.weight.split([48, 12 * n_kv, 12 * n_kv])
            gate, up = b.mlp.w_in.weight.chunk(2)
            sd.update({p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
                       p + "self_attn.v_proj.weight": v, p + "self_attn.o_proj.weight": b.attn.proj.weight,
                       p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                       p + "mlp.down_proj.weight": b.mlp.w_out.weight,
                       p + "input_layernorm.weight": b.norm1.weight,
                       p + "post_attention_layernorm.weight": b.norm2.weight})
        missing, unexpected = hf.load_state_dict(sd, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}
        ids = torch.randint(0, 53, (2, 11))
        want = hf(input_ids=ids).logits
        torch.testing.assert_close(ours(ids), want, atol=1e-5, rtol=1e-5)
        pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]])
        torch.testing.assert_close(ours(ids, positions=pos), hf(input_ids=ids, position_ids=pos).logits,
                                   atol=1e-5, rtol=1e-5)


def test_config_presets_and_hidden_size():
    assert TextTransformerConfig(vocab_size=10, dim=256).hidden() == 704  # 8/3 * 256 = 682.7 -> 704
    assert TextTransformerConfig(vocab_size=10, dim=96).hidden() == 256
    assert TextTransformerConfig(vocab_size=10, mlp_hidden=100).hidden() == 100
    for size, L in TEXT_SIZES.items():
        c = text_config(size, 100, causal=True)
        assert (c.depth, c.dim, c.dim // c.n_heads, c.causal) == (L, 64 * L, 64, True)
    with pytest.raises(UserError):
        text_config("huge", 100)


def test_tied_embeddings_and_init_scales():
    model = TextTransformer(text_config("small", 500))
    assert model.head.weight is model.tok_emb.weight
    def within_5_se(w, std):   # the sample std of N normal draws has standard error std / sqrt(2N)
        return abs(w.std().item() - std) < 5 * std / (2 * w.numel()) ** 0.5

    assert within_5_se(model.tok_emb.weight, 0.02)
    want = 0.02 / (2 * model.cfg.depth) ** 0.5                       # GPT-2's scaled init of residual projections
    assert within_5_se(model.blocks[0].attn.proj.weight, want)
    assert within_5_se(model.blocks[0].mlp.w_out.weight, want)
    untied = TextTransformer(text_config("tiny", 50, tie_embeddings=False))
    assert untied.head.weight is not untied.tok_emb.weight


@pytest.mark.parametrize("kw", [dict(causal=True), dict(time_cond=True, mlp="gelu", dropout=0.1)])
def test_trains_two_steps_and_evaluates(kw):
    torch.manual_seed(2)
    model = TextTransformer(text_config("tiny", 40, **kw))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids, target = torch.randint(0, 40, (4, 16)), torch.randint(0, 40, (4, 16))  # memorise a random batch
    t = torch.rand(4) if model.cfg.time_cond else None
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(ids, t).flatten(0, 1), target.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(ids, t)).all()


def test_bad_inputs_raise_user_error():
    model = tiny()
    with pytest.raises(UserError):
        model(torch.rand(2, 3))
    with pytest.raises(UserError):
        model(torch.zeros(2, 3, dtype=torch.long), positions=torch.arange(4))
    with pytest.raises(UserError):
        model(torch.zeros(2, 3, dtype=torch.long), cache=model.new_cache(2)[:1])
    with pytest.raises(UserError):
        TextTransformer(TextTransformerConfig(vocab_size=10, dim=30, n_heads=4))
