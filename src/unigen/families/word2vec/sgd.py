"""word2vec's training step, batched: word2vec.c's TrainModelThread applied to a batch of sentences at once.

Notation (word2vec.c's): syn0 (V, d) input vectors, syn1neg (V, d) output vectors of negative sampling, syn1
(V - 1, d) inner-node vectors of hierarchical softmax; h the hidden vector (skip-gram: syn0 of one context word;
CBOW: the average of the context's syn0 rows); f = h . v' for an output row v'; label 1 for the word to predict
(or a Huffman code bit of 0), 0 for a negative (or a code bit of 1); g = (label - sigma(f)) alpha; neu1e = sum g v'.

word2vec.c updates after each word; here one batch of pairs is updated at once, every g computed from the
batch-start vectors and the updates summed (index_add_), which equals one SGD step of the summed loss
    L = - sum_pairs sum_outputs mask * log sigma((2 label - 1) f)          (Mikolov et al. 2013b, eq. 4 / eq. 3)
with step size alpha. Two exact departures from word2vec.c, both numerical: sigma is exact (word2vec.c reads a
1000-entry table over [-6, 6] and, for hierarchical softmax, skips an output with |f| >= 6).

Skip-gram follows word2vec.c in predicting the centre word from each context word: h = syn0[context] and the
outputs are the centre's (the paper writes it the other way round; the set of pairs is the same). CBOW applies
neu1e to every context word in full, not neu1e / cw (word2vec.c and gensim with cbow_mean=1 both do so).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rows_of(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """table[idx] for an index tensor of any shape, by index_select (on CPU many times faster than advanced
    indexing with a 2-D index)."""
    return table.index_select(0, idx.reshape(-1)).view(*idx.shape, *table.shape[1:])


def subsample(ids: torch.Tensor, keep: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Drop each word w with probability 1 - keep[w] and close the gaps (word2vec.c discards a sub-sampled word
    before it forms windows). ids (B, T) with -1 padding, u (B, T) uniform in [0, 1) -> (B, T), -1 padded."""
    real = ids >= 0
    kept = real & (u < rows_of(keep, ids.clamp(min=0)))                      # (B, T)
    pos = kept.long().cumsum(1) - 1                                           # new position of each kept word
    out = torch.full_like(ids, -1)
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(ids)
    out[rows[kept], pos[kept]] = ids[kept]
    return out


def contexts(seq: torch.Tensor, window: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The context of every position: word2vec.c's window with random shrink, offsets 0 < |o| <= window - b.

    seq (B, T) -1 padded, b (B, T) integers in [0, window) -> ctx (B, T, 2 window) word ids (-1 where none) and
    valid (B, T, 2 window), the offsets in order -window .. -1, 1 .. window."""
    B, T = seq.shape
    padded = F.pad(seq, (window, window), value=-1)                           # (B, T + 2 window)
    offsets = torch.cat([torch.arange(-window, 0), torch.arange(1, window + 1)]).to(seq.device)   # (2 window,)
    idx = torch.arange(T, device=seq.device)[:, None] + window + offsets      # (T, 2 window)
    ctx = padded[:, idx]                                                      # (B, T, 2 window)
    valid = (ctx >= 0) & (seq[..., None] >= 0) & (offsets.abs() <= (window - b)[..., None])
    return ctx, valid


def negative_targets(word: torch.Tensor, table: torch.Tensor, k: int, r: torch.Tensor):
    """Negative sampling's outputs for predicting `word` (M,): the word (label 1) and k draws table[r] (label 0),
    a draw equal to the word skipped (word2vec.c: `if (target == word) continue`). r (M, k) indices into table.
    -> targets (M, 1 + k), labels (M, 1 + k), mask (M, 1 + k)."""
    neg = rows_of(table, r)                                                   # (M, k)
    targets = torch.cat([word[:, None], neg], 1)
    labels = torch.zeros(targets.shape, dtype=torch.float32, device=word.device)
    labels[:, 0] = 1
    mask = torch.cat([torch.ones_like(word[:, None], dtype=torch.bool), neg != word[:, None]], 1)
    return targets, labels, mask


def huffman_targets(word: torch.Tensor, code: torch.Tensor, point: torch.Tensor, codelen: torch.Tensor):
    """Hierarchical softmax's outputs for predicting `word` (M,): the inner nodes on its Huffman path, label
    1 - code (word2vec.c: `g = (1 - code - f) * alpha`). -> targets, labels, mask, each (M, longest codelen
    among these words)."""
    n = codelen[word]                                                         # (M,)
    L = int(n.max()) if n.numel() else 1                                      # the longest path here, not overall
    mask = torch.arange(L, device=word.device) < n[:, None]
    return rows_of(point, word)[:, :L], 1.0 - rows_of(code, word)[:, :L].float(), mask


def output_step(h: torch.Tensor, out: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                mask: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer of outputs: g = (label - sigma(h . v')) alpha on each unmasked output, out[targets] += g h in
    place (summed over repeats), and return (neu1e = sum g v' (M, d), the batch's summed loss L)."""
    V_t = rows_of(out, targets)                                               # (M, K, d)
    f = torch.bmm(V_t, h[:, :, None]).squeeze(-1)                             # (M, K)
    m = mask.to(f.dtype)
    g = (labels - torch.sigmoid(f)) * m * alpha                               # (M, K)
    loss = -(F.logsigmoid((2 * labels - 1) * f) * m).sum()
    neu1e = torch.bmm(g[:, None, :], V_t).squeeze(1)                          # (M, d)
    out.index_add_(0, targets.reshape(-1), (g[..., None] * h[:, None, :]).reshape(-1, h.shape[1]))
    return neu1e, loss


def outputs_step(h: torch.Tensor, word: torch.Tensor, layers: list, alpha: float, r_fn):
    """Every output layer for predicting `word` from h: `layers` holds ("ns", syn1neg, table, k) and/or
    ("hs", syn1, code, point, codelen), as word2vec.c with -negative k and/or -hs 1. r_fn(shape) draws table
    indices. -> (neu1e summed over layers, loss summed)."""
    neu1e, loss = torch.zeros_like(h), h.new_zeros(())
    for layer in layers:
        if layer[0] == "hs":
            _, syn1, code, point, codelen = layer
            targets, labels, mask = huffman_targets(word, code, point, codelen)
            out = syn1
        else:
            _, syn1neg, table, k = layer
            targets, labels, mask = negative_targets(word, table, k, r_fn((word.numel(), k)))
            out = syn1neg
        e, l = output_step(h, out, targets, labels, mask, alpha)
        neu1e, loss = neu1e + e, loss + l
    return neu1e, loss


def skipgram_step(syn0: torch.Tensor, ctx: torch.Tensor, valid: torch.Tensor, seq: torch.Tensor, layers: list,
                  alpha: float, r_fn) -> tuple[torch.Tensor, int]:
    """Skip-gram: every (centre, context) pair in the windows; h = syn0[context] predicts the centre; then
    syn0[context] += neu1e. Returns (summed loss, number of pairs)."""
    word = seq[..., None].expand_as(ctx)[valid]                               # (M,) centres
    inp = ctx[valid]                                                          # (M,) context words
    h = rows_of(syn0, inp)                                                    # (M, d)
    neu1e, loss = outputs_step(h, word, layers, alpha, r_fn)
    syn0.index_add_(0, inp, neu1e)
    return loss, int(inp.numel())


def cbow_step(syn0: torch.Tensor, ctx: torch.Tensor, valid: torch.Tensor, seq: torch.Tensor, layers: list,
              alpha: float, r_fn) -> tuple[torch.Tensor, int]:
    """CBOW: h = mean of syn0 over the centre's context (cw words; none: skipped) predicts the centre; then
    syn0[c] += neu1e for each context word c. Returns (summed loss, number of centres)."""
    cw = valid.sum(-1)                                                        # (B, T)
    has = cw > 0
    c, v = ctx[has], valid[has]                                               # (N, 2 window)
    rows = rows_of(syn0, c.clamp(min=0)) * v[..., None]                       # (N, 2 window, d)
    h = rows.sum(1) / cw[has][:, None]                                        # (N, d)
    neu1e, loss = outputs_step(h, seq[has], layers, alpha, r_fn)
    syn0.index_add_(0, c[v], neu1e[:, None, :].expand(-1, c.shape[1], -1)[v])
    return loss, int(h.shape[0])


def sgd_chunks(step_fn, syn0: torch.Tensor, seq: torch.Tensor, ctx: torch.Tensor, valid: torch.Tensor,
               layers: list, alpha: float, r_fn, positions: int) -> tuple[torch.Tensor, int]:
    """Run `step_fn` (skipgram_step | cbow_step) over the chunks seq (B, T) in slabs of `positions` consecutive
    positions of all B chunks at once, each slab seeing the vectors the previous one left: B chunks advance in
    lockstep like B word2vec.c threads, with B * positions words per update. -> (summed loss, predictions)."""
    T = int((seq >= 0).sum(1).max()) if seq.numel() else 0
    loss, n = syn0.new_zeros(()), 0
    for t in range(0, T, positions):
        part = slice(t, t + positions)
        l, k = step_fn(syn0, ctx[:, part], valid[:, part], seq[:, part], layers, alpha, r_fn)
        loss, n = loss + l, n + k
    return loss, n


def alpha_at(alpha0: float, done: float) -> float:
    """word2vec.c's linear decay: alpha0 (1 - done), floored at alpha0 1e-4; `done` = fraction of training words."""
    return alpha0 * max(1.0 - done, 1e-4)


ARCHITECTURES = {"skipgram": skipgram_step, "cbow": cbow_step}
