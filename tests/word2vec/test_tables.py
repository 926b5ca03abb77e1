"""word2vec.c's tables against their formulas and against brute force: keep probability, unigram^0.75 table,
Huffman tree."""
import heapq
import itertools
import math

import pytest
import torch

from unigen.families.word2vec.sgd import subsample
from unigen.families.word2vec.tables import huffman, keep_probability, unigram_table

CN = torch.tensor([5000, 1200, 700, 300, 90, 40, 12, 5, 5, 1])


def test_keep_probability_is_word2vec_c_formula_not_the_papers():
    s, T = 1e-3, int(CN.sum())
    got = keep_probability(CN, s)
    for f, p in zip(CN.tolist(), got.tolist()):
        ran = (math.sqrt(f / (s * T)) + 1) * (s * T) / f                     # word2vec.c TrainModelThread
        assert p == pytest.approx(min(ran, 1.0), rel=1e-12)
    paper = 1 - (1 - (s * T / CN.double()).sqrt()).clamp(min=0)               # 1 - discard prob of eq. 5
    assert (got[:3] > paper[:3]).all()                                        # word2vec.c keeps more of "the"
    assert torch.equal(keep_probability(CN, 0.0), torch.ones(len(CN), dtype=torch.float64))


def test_subsample_keeps_each_word_at_its_rate_and_closes_gaps():
    keep = keep_probability(CN, 1e-3).float()
    ids = torch.arange(len(CN)).repeat(20000, 1)                               # every word 20000 times
    out = subsample(ids, keep, torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)))
    rate = torch.stack([(out == w).sum() for w in range(len(CN))]).double() / 20000
    sd = (keep.double() * (1 - keep.double()) / 20000).sqrt()
    assert ((rate - keep.double()).abs() <= 5 * sd + 1e-12).all()
    n = (out >= 0).sum(1, keepdim=True)                                       # kept words first, then -1
    assert torch.equal(out >= 0, torch.arange(len(CN)) < n)


def test_subsample_order_against_a_loop():
    ids = torch.tensor([[3, 0, 1, 0, 2, -1], [0, 0, 4, 5, -1, -1]])
    keep = torch.tensor([0.5, 1.0, 0.2, 1.0, 0.7, 0.1])
    u = torch.rand(ids.shape, generator=torch.Generator().manual_seed(1))
    out = subsample(ids, keep, u)
    for row, urow, orow in zip(ids.tolist(), u.tolist(), out.tolist()):
        want = [w for w, x in zip(row, urow) if w >= 0 and x < keep[w]]
        assert orow == want + [-1] * (len(row) - len(want))


def word2vec_c_table(cn: list[int], size: int, power: float = 0.75) -> list[int]:
    """A literal port of word2vec.c's InitUnigramTable."""
    total = sum(c ** power for c in cn)
    i, d1, table = 0, cn[0] ** power / total, []
    for a in range(size):
        table.append(i)
        if a / size > d1:
            i += 1
            d1 += cn[i] ** power / total
        i = min(i, len(cn) - 1)
    return table


def test_unigram_table_fractions_are_count_to_the_three_quarters():
    size = 100_000
    table = unigram_table(CN, size)
    p = CN.double() ** 0.75 / (CN.double() ** 0.75).sum()
    entries = torch.bincount(table, minlength=len(CN)).double()
    assert ((entries - size * p).abs() <= 1).all()                             # exact up to the quantisation
    ref = torch.bincount(torch.tensor(word2vec_c_table(CN.tolist(), size)), minlength=len(CN)).double()
    assert ((entries - ref).abs() <= 1).all()                                  # word2vec.c: one entry per boundary
    assert torch.equal(table, table.sort().values)                            # words in vocabulary order


def brute_force_optimal_cost(cn: list[int]) -> int:
    """min sum cn * length over all length vectors with Kraft sum <= 1 (every prefix code), lengths < V."""
    V = len(cn)
    return min(sum(c * l for c, l in zip(cn, ls)) for ls in itertools.product(range(1, V), repeat=V)
               if sum(2.0 ** -l for l in ls) <= 1)


def heap_huffman_cost(cn: list[int]) -> int:
    heap, cost = list(cn), 0
    heapq.heapify(heap)
    while len(heap) > 1:
        s = heapq.heappop(heap) + heapq.heappop(heap)
        cost += s
        heapq.heappush(heap, s)
    return cost


@pytest.mark.parametrize("cn", [[9, 5, 3, 2, 1, 1], [7, 7, 7, 7, 7], [40, 3, 2, 1, 1], [2, 1]])
def test_huffman_lengths_are_optimal_by_brute_force(cn):
    code, point, codelen = huffman(torch.tensor(cn))
    cost = sum(c * l for c, l in zip(cn, codelen.tolist()))
    assert cost == brute_force_optimal_cost(cn) == heap_huffman_cost(cn)


def test_huffman_cost_is_optimal_on_random_counts():
    g = torch.Generator().manual_seed(3)
    for trial in range(40):
        V = 6 if trial < 8 else 40
        cn = sorted(torch.randint(1, 1000, (V,), generator=g).tolist(), reverse=True)
        _, _, codelen = huffman(torch.tensor(cn))
        cost = sum(c * l for c, l in zip(cn, codelen.tolist()))
        assert cost == heap_huffman_cost(cn)
        if V == 6:
            assert cost == brute_force_optimal_cost(cn)


def _paths(code, codelen):
    return ["".join(map(str, code[w, :n].tolist())) for w, n in enumerate(codelen.tolist())]


def test_huffman_codes_are_a_complete_prefix_code_and_points_form_the_tree():
    cn = torch.tensor(sorted(torch.randint(1, 500, (60,), generator=torch.Generator().manual_seed(2)).tolist(),
                             reverse=True))
    code, point, codelen = huffman(cn)
    words = _paths(code, codelen)
    assert len(set(words)) == len(words)
    assert not any(a != b and b.startswith(a) for a in words for b in words)  # prefix-free
    assert sum(2.0 ** -len(w) for w in words) == pytest.approx(1.0)           # complete (Kraft equality)
    assert (point[:, 0] == len(cn) - 2).all()                                 # every path starts at the root
    node_of = {}                                                              # code prefix -> inner node id
    for w, s in enumerate(words):
        for d in range(len(s)):
            assert node_of.setdefault(s[:d], int(point[w, d])) == int(point[w, d])
    assert sorted(node_of.values()) == list(range(len(cn) - 1))               # V - 1 distinct inner nodes
