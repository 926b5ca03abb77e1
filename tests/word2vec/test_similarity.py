"""Analogy and neighbour evaluation against brute-force loops; the metric glue against hand-made cases."""
import math

import pytest
import torch

from unigen.errors import UserError
from unigen.families.word2vec.evaluate import analogy_metrics, parse_query, similarity_metrics
from unigen.families.word2vec.similarity import EPS, analogy, cosine_pairs, nearest


def _cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def brute_force_analogy(E, a, b, c, method):
    """Levy & Goldberg (2014) eqs. 3-4, one candidate at a time in plain Python floats."""
    rows = E.tolist()
    best, arg = -math.inf, None
    for d, v in enumerate(rows):
        if d in (a, b, c):
            continue
        ca, cb, cc = _cos(v, rows[a]), _cos(v, rows[b]), _cos(v, rows[c])
        if method == "add":
            s = cb - ca + cc
        else:
            s = ((cb + 1) / 2) * ((cc + 1) / 2) / ((ca + 1) / 2 + EPS)
        if s > best:
            best, arg = s, d
    return arg


@pytest.mark.parametrize("method", ["add", "mul"])
def test_analogy_matches_brute_force(method):
    g = torch.Generator().manual_seed(0)
    E = torch.randn(40, 6, generator=g, dtype=torch.float64)
    abc = torch.stack([torch.randperm(40, generator=g)[:3] for _ in range(50)])   # (50, 3) distinct a, b, c
    got = analogy(E, abc, chunk=7)[method]
    want = [brute_force_analogy(E, *q.tolist(), method) for q in abc]
    assert got.tolist() == want


def test_analogy_solves_a_planted_parallelogram():
    E = torch.eye(6)
    E[3] = E[1] - E[0] + E[2]                                                 # king - man + woman = queen
    assert analogy(E, torch.tensor([[0, 1, 2]]))["add"].item() == 3


def test_nearest_and_cosine_pairs_match_a_loop():
    g = torch.Generator().manual_seed(1)
    E = torch.randn(30, 5, generator=g, dtype=torch.float64)
    q = torch.randn(2, 5, generator=g, dtype=torch.float64)
    ids, cos = nearest(E, q, 4, exclude=torch.tensor([[0, 1], [2, 3]]))
    for i in range(2):
        scores = sorted(((_cos(q[i].tolist(), E[j].tolist()), j) for j in range(30) if j not in (2 * i, 2 * i + 1)),
                        reverse=True)[:4]
        assert ids[i].tolist() == [j for _, j in scores]
        assert cos[i].tolist() == pytest.approx([s for s, _ in scores])
    pairs = torch.tensor([[0, 5], [7, 7]])
    assert cosine_pairs(E, pairs).tolist() == pytest.approx([_cos(E[0].tolist(), E[5].tolist()), 1.0])


def test_analogy_metrics_count_only_covered_questions_and_split_sections():
    E = torch.eye(6)
    E[3] = E[1] - E[0] + E[2]
    index = {w: i for i, w in enumerate(["man", "king", "woman", "queen", "a", "b"])}
    sections = [("family", [("man", "king", "woman", "queen"), ("man", "king", "woman", "unknown")]),
                ("gram1", [("a", "b", "man", "woman")])]
    m = analogy_metrics(E, index, sections)
    assert m["analogy_coverage"] == pytest.approx(2 / 3)
    assert m["analogy_add_semantic"] == 1.0 and m["analogy_add_syntactic"] == 0.0 and m["analogy_add"] == 0.5


def test_similarity_metric_is_spearman_on_covered_pairs():
    E = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 1.0], [0.0, 1.0]])
    index = {"a": 0, "b": 1, "c": 2, "d": 3}
    rows = [("a", "b", 9.0), ("a", "c", 5.0), ("a", "d", 1.0), ("a", "zzz", 3.0)]
    m = similarity_metrics(E, index, rows)
    assert m["ws353_spearman"] == pytest.approx(1.0) and m["ws353_coverage"] == 0.75


def test_parse_query():
    assert parse_query("King - man + woman") == [(1.0, "king"), (-1.0, "man"), (1.0, "woman")]
    assert parse_query("paris") == [(1.0, "paris")]
    with pytest.raises(UserError):
        parse_query(" + - ")
