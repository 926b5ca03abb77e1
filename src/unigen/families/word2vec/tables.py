"""The tables word2vec.c builds from the word counts before training (Mikolov et al. 2013, word2vec.c).

    keep_probability(cn, s)     sub-sampling of frequent words: word2vec.c's rule, not the paper's
    unigram_table(cn, size)     the negative-sampling table of unigram^0.75 (InitUnigramTable)
    huffman(cn)                 the hierarchical-softmax tree (CreateBinaryTree): codes and inner-node points

`cn` is the (V,) count of each vocabulary word, sorted most frequent first as word2vec.c's SortVocab leaves it.
"""
from __future__ import annotations

import torch

POWER = 0.75


def keep_probability(cn: torch.Tensor, s: float) -> torch.Tensor:
    """P(keep w) = (sqrt(f / (s T)) + 1) s T / f, clamped to 1, with f = cn(w), T = total count (word2vec.c,
    TrainModelThread: `ran = (sqrt(cn / (sample * train_words)) + 1) * (sample * train_words) / cn`).

    This is not the paper's discard probability 1 - sqrt(t / f) (Mikolov et al. 2013b, eq. 5) with f a frequency:
    word2vec.c keeps more (a word with f/T = s is always kept; the paper keeps it with probability 1).
    `s <= 0` turns sub-sampling off (every word kept), as word2vec.c's `-sample 0`."""
    cn = cn.double()
    if s <= 0:
        return torch.ones_like(cn)
    sT = s * cn.sum()
    return (((cn / sT).sqrt() + 1) * sT / cn).clamp(max=1.0)


def unigram_table(cn: torch.Tensor, size: int, power: float = POWER) -> torch.Tensor:
    """(size,) int64 word ids; word w fills a fraction cn(w)^0.75 / sum cn^0.75 of it (word2vec.c
    InitUnigramTable, 1e8 entries there), so a uniform index draws w with the smoothed unigram probability.

    Entry a holds the word whose cumulative interval contains a / size, i.e. the first w with
    cum(w) > a / size; word2vec.c's loop assigns the same up to one entry at each word boundary."""
    p = cn.double() ** power
    cum = (p / p.sum()).cumsum(0)                                             # (V,)
    a = torch.arange(size, dtype=torch.float64) / size
    return torch.searchsorted(cum, a, right=True).clamp_(max=cn.numel() - 1)


def huffman(cn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Huffman tree of word2vec.c's CreateBinaryTree: (code, point, codelen).

    code (V, L) 0/1 branch labels from the root down, point (V, L) the inner node (0..V-2, root V-2) met before
    each branch, codelen (V,); rows are padded with 0 past codelen. word2vec.c merges the two smallest of the
    count-sorted leaves and the new inner nodes (taken in creation order), labels the second-smallest 1, and
    predicts P(branch) = sigma(v_h . v'_point) for code 0 (Mikolov et al. 2013b, eq. 3)."""
    V = cn.numel()
    count = [int(c) for c in cn] + [10**15] * V
    parent, binary = [0] * (2 * V), [0] * (2 * V)
    pos1, pos2 = V - 1, V
    for a in range(V - 1):
        picked = []
        for _ in range(2):
            if pos1 >= 0 and count[pos1] < count[pos2]:
                picked.append(pos1)
                pos1 -= 1
            else:
                picked.append(pos2)
                pos2 += 1
        count[V + a] = count[picked[0]] + count[picked[1]]
        parent[picked[0]] = parent[picked[1]] = V + a
        binary[picked[1]] = 1
    paths = []
    for w in range(V):
        code, point, b = [], [], w
        while b != 2 * V - 2:                                                 # climb to the root
            code.append(binary[b])
            b = parent[b]
            point.append(b - V)
        paths.append((code[::-1], point[::-1]))
    L = max((len(c) for c, _ in paths), default=0)
    codes = torch.zeros(V, max(L, 1), dtype=torch.long)
    points = torch.zeros(V, max(L, 1), dtype=torch.long)
    for w, (c, p) in enumerate(paths):
        codes[w, : len(c)] = torch.tensor(c, dtype=torch.long)
        points[w, : len(p)] = torch.tensor(p, dtype=torch.long)
    return codes, points, torch.tensor([len(c) for c, _ in paths], dtype=torch.long)
