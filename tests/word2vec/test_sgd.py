"""word2vec's hand-written updates against autograd and brute force, and the SGNS optimum (Levy & Goldberg 2014)."""
import math

import pytest
import torch
import torch.nn.functional as F

from unigen.families.word2vec.sgd import (alpha_at, cbow_step, contexts, huffman_targets, negative_targets,
                                          output_step, sgd_chunks, skipgram_step, subsample)
from unigen.families.word2vec.tables import huffman, unigram_table

@pytest.fixture(autouse=True)
def _float64():
    """The identities below are exact; float64 keeps rounding out of them."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_output_step_is_alpha_times_the_autograd_gradient():
    g = torch.Generator().manual_seed(0)
    M, K, V, d, alpha = 6, 4, 5, 3, 0.1
    h = torch.randn(M, d, generator=g)
    out0 = torch.randn(V, d, generator=g)
    targets = torch.randint(0, V, (M, K), generator=g)                        # repeats across and within rows
    labels = (torch.rand(M, K, generator=g) < 0.3).double()
    mask = torch.rand(M, K, generator=g) < 0.8
    out = out0.clone()
    neu1e, loss = output_step(h, out, targets, labels, mask, alpha)
    h_, o_ = h.clone().requires_grad_(), out0.clone().requires_grad_()
    f = (o_[targets] * h_[:, None, :]).sum(-1)
    L = -(mask * (labels * F.logsigmoid(f) + (1 - labels) * F.logsigmoid(-f))).sum()
    L.backward()
    assert loss.item() == pytest.approx(L.item(), rel=1e-12)
    torch.testing.assert_close(neu1e, -alpha * h_.grad)
    torch.testing.assert_close(out - out0, -alpha * o_.grad)


def _pairs(seq, window, b):
    """Brute force: (centre, context) of every valid window slot, in (row, position, offset) order."""
    out = []
    for r, row in enumerate(seq.tolist()):
        for i, w in enumerate(row):
            for o in [*range(-window, 0), *range(1, window + 1)]:
                j = i + o
                if w >= 0 and abs(o) <= window - int(b[r, i]) and 0 <= j < len(row) and row[j] >= 0:
                    out.append((w, row[j]))
    return out


def test_contexts_against_a_loop():
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(0, 9, (3, 11), generator=g)
    seq[1, 8:] = -1
    b = torch.randint(0, 3, seq.shape, generator=g)
    ctx, valid = contexts(seq, 3, b)
    got = list(zip(seq[..., None].expand_as(ctx)[valid].tolist(), ctx[valid].tolist()))
    assert got == _pairs(seq, 3, b)


def test_negative_targets_skip_draws_equal_to_the_word():
    word = torch.tensor([0, 1, 2, 2])
    table = torch.tensor([0, 0, 1, 2, 2, 2])
    r = torch.tensor([[0, 2, 3], [2, 2, 5], [3, 4, 0], [1, 5, 2]])
    targets, labels, mask = negative_targets(word, table, 3, r)
    assert targets.tolist() == [[0, 0, 1, 2], [1, 1, 1, 2], [2, 2, 2, 0], [2, 0, 2, 1]]
    assert labels[:, 0].tolist() == [1] * 4 and labels[:, 1:].sum() == 0
    assert mask.tolist() == [[True, False, True, True], [True, False, False, True],
                             [True, False, False, True], [True, True, False, True]]


def _setup(V=7, d=4, hs=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    cn = torch.tensor([30, 20, 12, 9, 5, 3, 1])[:V]
    syn0, syn1neg, syn1 = (torch.randn(V, d, generator=g), torch.randn(V, d, generator=g),
                           torch.randn(V - 1, d, generator=g))
    seq = torch.tensor([[0, 1, 0, 2, 3, 0, 4, -1], [5, 6, 0, 0, 1, 2, 2, 3]])
    b = torch.randint(0, 2, seq.shape, generator=g)
    code, point, codelen = huffman(cn)
    table = unigram_table(cn, 1000)
    draws = []

    def r_fn(shape):
        draws.append(torch.randint(0, 1000, shape, generator=g))
        return draws[-1]

    layers = [("hs", syn1, code, point, codelen)] if hs else []
    layers.append(("ns", syn1neg, table, 3))
    return syn0, syn1neg, syn1, seq, b, layers, r_fn, draws


def _loss(h, word, layers, draws, syn1neg, syn1):
    """The summed loss of predicting `word` (M,) from h (M, d), written from the paper's formulas."""
    L = 0
    for layer in layers:
        if layer[0] == "hs":
            _, _, code, point, codelen = layer
            for i, w in enumerate(word.tolist()):
                for dpt in range(int(codelen[w])):                             # P(branch) = sigma(+-h . v'_n)
                    L = L - F.logsigmoid((1 - 2 * code[w, dpt]) * (h[i] @ syn1[point[w, dpt]]))
        else:
            table = layer[2]
            neg = table[draws[-1]]
            for i, w in enumerate(word.tolist()):
                L = L - F.logsigmoid(h[i] @ syn1neg[w])
                for n in neg[i].tolist():
                    if n != w:
                        L = L - F.logsigmoid(-(h[i] @ syn1neg[n]))
    return L


def test_skipgram_update_is_one_sgd_step_of_the_summed_loss():
    syn0, syn1neg, syn1, seq, b, layers, r_fn, draws = _setup()
    alpha, start = 0.05, [t.clone() for t in (syn0, syn1neg, syn1)]
    ctx, valid = contexts(seq, 2, b)
    loss, n = skipgram_step(syn0, ctx, valid, seq, layers, alpha, r_fn)
    pairs = _pairs(seq, 2, b)
    assert n == len(pairs)
    p0, p1neg, p1 = (t.clone().requires_grad_() for t in start)
    word, inp = torch.tensor([w for w, _ in pairs]), torch.tensor([c for _, c in pairs])
    L = _loss(p0[inp], word, layers, draws, p1neg, p1)                         # h = syn0[context] predicts centre
    L.backward()
    assert loss.item() == pytest.approx(L.item(), rel=1e-10)
    for new, old, p in zip((syn0, syn1neg, syn1), start, (p0, p1neg, p1)):
        torch.testing.assert_close(new - old, -alpha * p.grad)


def test_cbow_update_is_the_h_gradient_for_every_context_word():
    """syn1 and syn1neg take -alpha dL/dv'; each context word takes -alpha dL/dh in full (word2vec.c), which is
    cw times the gradient through the average."""
    syn0, syn1neg, syn1, seq, b, layers, r_fn, draws = _setup(seed=3)
    alpha, start = 0.05, [t.clone() for t in (syn0, syn1neg, syn1)]
    ctx, valid = contexts(seq, 2, b)
    loss, n = cbow_step(syn0, ctx, valid, seq, layers, alpha, r_fn)
    groups = {}                                                               # centre slot -> context words
    for r in range(seq.shape[0]):
        for i in range(seq.shape[1]):
            cs = ctx[r, i][valid[r, i]].tolist()
            if cs:
                groups[(r, i)] = cs
    assert n == len(groups)
    p1neg, p1 = (t.clone().requires_grad_() for t in start[1:])
    h = torch.stack([start[0][cs].mean(0) for cs in groups.values()]).requires_grad_()
    word = torch.tensor([int(seq[r, i]) for r, i in groups])
    L = _loss(h, word, layers, draws, p1neg, p1)
    L.backward()
    assert loss.item() == pytest.approx(L.item(), rel=1e-10)
    want = torch.zeros_like(syn0)
    for k, cs in enumerate(groups.values()):
        for c in cs:
            want[c] += -alpha * h.grad[k]
    torch.testing.assert_close(syn0 - start[0], want)
    torch.testing.assert_close(syn1neg - start[1], -alpha * p1neg.grad)
    torch.testing.assert_close(syn1 - start[2], -alpha * p1.grad)


def test_huffman_targets_follow_the_code():
    code, point, codelen = huffman(torch.tensor([8, 4, 2, 1, 1]))
    word = torch.tensor([0, 3])
    targets, labels, mask = huffman_targets(word, code, point, codelen)
    assert mask.sum(1).tolist() == codelen[word].tolist()
    assert torch.equal(labels[mask], 1.0 - code[word][mask].double())
    assert torch.equal(targets[mask], point[word][mask])


def test_alpha_decays_linearly_to_its_floor():
    assert alpha_at(0.025, 0.0) == 0.025 and alpha_at(0.025, 0.5) == pytest.approx(0.0125)
    assert alpha_at(0.025, 1.0) == pytest.approx(0.025 * 1e-4) == alpha_at(0.025, 1.3)


@pytest.mark.slow
def test_sgns_optimum_is_shifted_pmi():
    """Levy & Goldberg (2014): SGNS's stationary point has syn0[u] . syn1neg[v] = log(#(u,v) / (#(u) P_n(v))) - log k.
    With word2vec.c's skip of a negative equal to the word, the expected gradient of x_uv vanishes at
    x_uv = log(#(u,v) / (k P_n(v) (#(u) - #(u,v)))), which tends to theirs when #(u,v) << #(u). Trained here as
    word2vec.c would (alpha 0.025 decaying, 5 sentences in lockstep, one word each per update) for 30 epochs."""
    torch.set_default_dtype(torch.float32)
    g = torch.Generator().manual_seed(0)
    V, d, k, N = 5, 8, 3, 2000
    P = torch.softmax(2 * torch.randn(V, V, generator=g), 1)                  # a Markov chain of words
    words = [0]
    for _ in range(N - 1):
        words.append(int(torch.multinomial(P[words[-1]], 1, generator=g)))
    seq = torch.tensor(words).view(5, 400)
    cn = torch.bincount(seq.flatten(), minlength=V)
    order = cn.argsort(descending=True)                                       # word2vec.c sorts by count
    seq = torch.argsort(order)[seq]
    cn = cn[order]
    table = unigram_table(cn, 1_000_000)
    syn0, syn1neg = (torch.rand(V, d, generator=g) - 0.5) / d, torch.zeros(V, d)
    ctx, valid = contexts(seq, 1, torch.zeros_like(seq))                      # window 1: no shrink possible
    counts = torch.zeros(V, V)
    counts.index_put_((ctx[valid], seq[..., None].expand_as(ctx)[valid]), torch.tensor(1.0), accumulate=True)
    epochs = 30
    for e in range(epochs):
        sgd_chunks(skipgram_step, syn0, seq, ctx, valid, [("ns", syn1neg, table, k)],
                   alpha_at(0.025, e / epochs), lambda s: torch.randint(0, table.numel(), s, generator=g), 1)
    Pn = torch.bincount(table, minlength=V).double() / table.numel()
    nu = counts.sum(1, keepdim=True).double()                                 # #(u): pairs with input u
    x_skip = (counts / (k * Pn * (nu - counts))).log()
    x_lg = (counts / (nu * Pn)).log() - math.log(k)
    x = (syn0 @ syn1neg.T).double()
    seen = counts >= 20                                                       # 20 of the 25 pairs
    err, gap = (x - x_skip)[seen].abs(), (x_lg - x_skip)[seen].abs()
    assert err.mean() < gap.mean() / 4, (err, gap)                            # the skip's effect is resolved
    assert err.max() < 0.25, err                                              # every pair within 0.25 nats
