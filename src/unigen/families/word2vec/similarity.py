"""Word-vector evaluation: nearest neighbours and analogies by 3CosAdd and 3CosMul (Levy & Goldberg 2014,
"Linguistic Regularities in Sparse and Explicit Word Representations", eqs. 3 and 4).

Vectors are compared by cosine: every function first normalises rows to unit length. An analogy a : b :: c : ?
is answered over the whole vocabulary except a, b and c (as word2vec.c's compute-accuracy and gensim do):

    3CosAdd   argmax_d cos(d, b) - cos(d, a) + cos(d, c)
    3CosMul   argmax_d cos'(d, b) cos'(d, c) / (cos'(d, a) + eps),  cos' = (cos + 1) / 2,  eps = 0.001
"""
from __future__ import annotations

import torch

EPS = 1e-3


def unit(E: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (a zero row stays zero)."""
    return E / E.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest(E: torch.Tensor, query: torch.Tensor, n: int, exclude: torch.Tensor | None = None):
    """The n rows of E with the largest cosine to each query vector (Q, d), excluding word ids exclude (Q, m).
    -> (ids (Q, n), cosines (Q, n))."""
    cos = unit(query) @ unit(E).T                                             # (Q, V)
    if exclude is not None:
        cos = cos.scatter(1, exclude, float("-inf"))
    top = cos.topk(min(n, E.shape[0]), dim=1)
    return top.indices, top.values


def analogy(E: torch.Tensor, abc: torch.Tensor, chunk: int = 512) -> dict[str, torch.Tensor]:
    """The answer id d of each question a : b :: c : d, abc (Q, 3) word ids -> {"add": (Q,), "mul": (Q,)} by
    3CosAdd and 3CosMul, never one of a, b, c."""
    U = unit(E.float())
    add, mul = [], []
    for q in abc.split(chunk):
        cos = (U[q].reshape(-1, U.shape[1]) @ U.T).view(q.shape[0], 3, -1)    # (Q, 3, V): cos with a, b, c
        score = cos[:, 1] - cos[:, 0] + cos[:, 2]
        add.append(score.scatter_(1, q, float("-inf")).argmax(1))
        c01 = cos.add_(1).mul_(0.5)
        score = c01[:, 1] * c01[:, 2] / (c01[:, 0] + EPS)
        mul.append(score.scatter_(1, q, float("-inf")).argmax(1))
    empty = torch.zeros(0, dtype=torch.long)
    return {"add": torch.cat(add) if add else empty, "mul": torch.cat(mul) if mul else empty}


def cosine_pairs(E: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """cos(E[i], E[j]) for each row (i, j) of pairs (P, 2) -> (P,)."""
    U = unit(E.float())
    return (U[pairs[:, 0]] * U[pairs[:, 1]]).sum(1)
