"""word2vec evaluation glue: the question sets, the metrics of `unigen eval`, queries, and the PCA picture.

Metrics (Mikolov et al. 2013a's analogy test; WordSim-353 as in Levy, Goldberg & Dagan 2015):
    analogy_add, analogy_mul          accuracy of 3CosAdd / 3CosMul on the questions whose four words are among the
                                      30,000 most frequent (word2vec.c's compute-accuracy threshold)
    analogy_add_semantic / _syntactic 3CosAdd on the semantic sections and on the `gram*` sections
    analogy_coverage                  fraction of the 19,544 questions answered (the rest have an unknown word)
    ws353_spearman, ws353_coverage    Spearman's rho of cosine against the human scores, on the pairs in vocabulary
    random_analogy_add, random_ws353_spearman   the same on random vectors U(-0.5, 0.5) / dim (a floor; not in
                                      quick mode, the evaluation at the end of training)
Files: RUN/neighbours.json (nearest neighbours of probe words), RUN/embedding_pca.png (countries and capitals).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from unigen.data.words import analogy_questions, similarity_pairs
from unigen.errors import UserError
from unigen.families.word2vec.network import Word2Vec
from unigen.families.word2vec.similarity import analogy, cosine_pairs, nearest, unit
from unigen.io import atomic_write_json
from unigen.plot import figure

RESTRICT = 30_000
PROBES = ("king", "france", "paris", "war", "music", "computer", "water", "three", "philosophy", "good")
QUICK_QUESTIONS = 1000


def analogy_metrics(E: torch.Tensor, index: dict[str, int], sections, quick: bool = False) -> dict[str, float]:
    """3CosAdd / 3CosMul accuracy over the questions whose words are all in `index` (restricted to the most
    frequent RESTRICT); quick: the first QUICK_QUESTIONS answerable ones."""
    total = sum(len(qs) for _, qs in sections)
    rows, syntactic = [], []
    for name, qs in sections:
        for q in qs:
            if all(w in index and index[w] < RESTRICT for w in q):
                rows.append([index[w] for w in q])
                syntactic.append(name.startswith("gram"))
    if quick:
        rows, syntactic = rows[:QUICK_QUESTIONS], syntactic[:QUICK_QUESTIONS]
    if not rows:
        return {"analogy_add": 0.0, "analogy_mul": 0.0, "analogy_coverage": 0.0}
    q = torch.tensor(rows)                                                    # (Q, 4)
    syn = torch.tensor(syntactic)
    answers = analogy(E, q[:, :3])
    hit_add, hit_mul = answers["add"] == q[:, 3], answers["mul"] == q[:, 3]
    out = {"analogy_add": hit_add.float().mean().item(), "analogy_mul": hit_mul.float().mean().item(),
           "analogy_coverage": len(rows) / total if not quick else float("nan")}
    for part, sel in (("semantic", ~syn), ("syntactic", syn)):
        out[f"analogy_add_{part}"] = hit_add[sel].float().mean().item() if sel.any() else float("nan")
    return {k: v for k, v in out.items() if v == v}                           # drop NaN (quick mode)


def similarity_metrics(E: torch.Tensor, index: dict[str, int], rows) -> dict[str, float]:
    """Spearman's rho between cosine and the human scores on the pairs with both words in `index`."""
    from scipy.stats import spearmanr
    kept = [(index[a], index[b], s) for a, b, s in rows if a in index and b in index]
    if len(kept) < 3:
        return {"ws353_spearman": 0.0, "ws353_coverage": len(kept) / max(len(rows), 1)}
    cos = cosine_pairs(E, torch.tensor([[a, b] for a, b, _ in kept]))
    rho = spearmanr(cos.numpy(), [s for *_, s in kept]).statistic
    return {"ws353_spearman": float(rho), "ws353_coverage": len(kept) / len(rows)}


def evaluate(m: Word2Vec, *, run_dir: Path, quick: bool = False) -> dict[str, float]:
    E, index = m.syn0.detach().float(), m.index()
    sections, pairs = analogy_questions(), similarity_pairs()
    metrics = {**analogy_metrics(E, index, sections, quick), **similarity_metrics(E, index, pairs)}
    if not quick:                                                             # the floor, and the files
        g = torch.Generator().manual_seed(0)
        R = (torch.rand(E.shape, generator=g) - 0.5) / E.shape[1]            # word2vec.c's initial vectors
        metrics["random_analogy_add"] = analogy_metrics(R, index, sections)["analogy_add"]
        metrics["random_ws353_spearman"] = similarity_metrics(R, index, pairs)["ws353_spearman"]
        probes = [w for w in PROBES if w in index] or m.vocab[:10]
        atomic_write_json(run_dir / "neighbours.json", {w: neighbours(m, [(1.0, w)], 10) for w in probes})
        save_pca(E, index, sections, run_dir / "embedding_pca.png")
    return metrics


def neighbours(m: Word2Vec, terms: list[tuple[float, str]], n: int) -> list[list]:
    """The n nearest words (by cosine) to sum(sign * unit(v_word)), the query words excluded: for 'b - a + c'
    this is 3CosAdd's ranking."""
    index = m.index()
    for _, w in terms:
        if w not in index:
            raise UserError(f"word {w!r} is not in the vocabulary ({len(index)} words seen >= min_count times)")
    U = unit(m.syn0.detach().float())
    ids = torch.tensor([index[w] for _, w in terms])
    query = (torch.tensor([s for s, _ in terms])[:, None] * U[ids]).sum(0, keepdim=True)   # (1, d)
    top, cos = nearest(U, query, n, exclude=ids[None])
    return [[m.vocab[i], round(float(c), 4)] for i, c in zip(top[0].tolist(), cos[0].tolist())]


def parse_query(query: str) -> list[tuple[float, str]]:
    """'king - man + woman' -> [(1, king), (-1, man), (1, woman)]; a single word is its own neighbours query."""
    tokens = re.findall(r"[+-]|[^\s+-]+", query.lower())
    terms, sign = [], 1.0
    for t in tokens:
        if t in "+-":
            sign = -1.0 if t == "-" else 1.0
        else:
            terms.append((sign, t))
            sign = 1.0
    if not terms:
        raise UserError(f"--query {query!r} holds no word; try 'paris' or 'king - man + woman'")
    return terms


def answer_query(m: Word2Vec, query: str, n: int = 10) -> dict:
    return {"query": query, "neighbours": neighbours(m, parse_query(query), n)}


def save_pca(E: torch.Tensor, index: dict[str, int], sections, path: Path, pairs: int = 14) -> None:
    """2-D PCA of countries and their capitals, an arrow from each country to its capital (as Mikolov et al.
    2013b, Figure 2); the 60 most frequent words when fewer than 4 pairs are in the vocabulary."""
    links = []                                                                # (country, capital)
    for name, qs in sections:
        if name == "capital-common-countries":
            for capital, country in (p for q in qs for p in (q[:2], q[2:])):
                if capital in index and country in index and (country, capital) not in links:
                    links.append((country, capital))
    links = links[:pairs]
    seen = [w for link in links for w in link] if len(links) >= 4 else list(index)[:60]
    X = unit(E[torch.tensor([index[w] for w in seen])])
    X = X - X.mean(0)
    _, _, Vh = torch.linalg.svd(X, full_matrices=False)
    P = X @ Vh[:2].T                                                          # (n, 2)
    xy = dict(zip(seen, P.tolist()))
    with figure(path, size=(7, 6)) as ax:
        ax.scatter(P[:, 0], P[:, 1], s=8)
        for w, (x, y) in xy.items():
            ax.annotate(w, (x, y), fontsize=7)
        for country, capital in (links if len(links) >= 4 else []):
            (x0, y0), (x1, y1) = xy[country], xy[capital]
            ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "alpha": 0.4})
        ax.set_title("word2vec: PCA of country and capital vectors" if len(links) >= 4 else "word2vec: PCA")
