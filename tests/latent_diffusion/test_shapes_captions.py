"""Rich shapes captions: every word is read off the drawn pixels independently of the generator's parameters;
word ids round-trip; unknown words are a one-line error; held-out pairs never reach the training split."""
import pytest
import torch

from unigen.data import ShapesData, load, to_uint8
from unigen.data.shapes import (COLOURS, POSITIONS, SHAPES, SIZES, WORD_LEN, WORDS, decode_words, encode_words,
                                parse_holdout)
from unigen.errors import UserError


def _parse(text: str) -> list[tuple[str, str, str, str]]:
    """"a big red circle on the left and ..." -> [(size, colour, shape, position), ...]."""
    out = []
    for part in text.split(" and "):
        w = part.split()
        out.append((w[1], w[2], w[3], " ".join(w[4:])))
    return out


def test_rich_captions_describe_the_drawn_pixels():
    ds = load(ShapesData(n_train=150, seed=1), "train")
    img = to_uint8(ds.tensors["x"]).permute(0, 2, 3, 1)                          # (N, S, S, 3)
    S = img.shape[1]
    checked = 0
    for i in range(len(ds)):
        items = _parse(decode_words(ds.tensors["word_ids"][i].tolist()))
        assert len(items) == int((ds.tensors["box_labels"][i] >= 0).sum())
        for k, (size, colour, shape, pos) in enumerate(items):
            cx, cy, w, h = (ds.tensors["boxes"][i, k] * S).tolist()
            x0, y0 = round(cx - w / 2), round(cy - h / 2)
            region = img[i, y0:y0 + round(h), x0:x0 + round(w)]
            assert (region == torch.tensor(COLOURS[colour], dtype=torch.uint8)).all(-1).any()
            assert shape == SHAPES[int(ds.tensors["box_labels"][i, k])]
            side = max(w, h)                                                # the drawn bounding square, +- 1 px
            if abs(side / 2 - (S / 8 + S / 4.5) / 2) > 1:
                assert (size == "big") == (side / 2 > (S / 8 + S / 4.5) / 2)
            if min(abs(c - b) for c in (cx, cy) for b in (S / 3, 2 * S / 3)) > 1:
                col, row = int(cx * 3 // S), int(cy * 3 // S)
                assert pos == POSITIONS[3 * row + col]
                checked += 1
    assert checked > 100


def test_attributes_agree_with_the_words():
    ds = load(ShapesData(n_train=100), "train")
    for ids, attrs in zip(ds.tensors["word_ids"], ds.tensors["attributes"]):
        want = [(SIZES[z], list(COLOURS)[c], SHAPES[k], POSITIONS[p]) for c, k, z, p in attrs.tolist() if c >= 0]
        assert _parse(decode_words(ids.tolist())) == want


def test_word_ids_round_trip_and_errors():
    ids = encode_words("A Big red circle, on the left")
    assert len(ids) == WORD_LEN and WORDS[ids[0]] == "<s>" and decode_words(ids) == "a big red circle on the left"
    assert [WORDS[i] for i in encode_words("")[:3]] == ["<s>", "</s>", "<pad>"]
    with pytest.raises(UserError, match="'purple'") as e:
        encode_words("a purple circle")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="<pad>"):
        encode_words("a <pad> circle")
    with pytest.raises(UserError, match="at most"):
        encode_words(" ".join(["red"] * WORD_LEN))


def test_holdout_and_max_shapes():
    cfg = ShapesData(n_train=400, max_shapes=2, holdout="red circle, blue square")
    train, test = load(cfg, "train").tensors["attributes"], load(cfg, "test").tensors["attributes"]
    pairs = {(c, k) for c, k in train[..., :2].reshape(-1, 2).tolist() if c >= 0}
    held = parse_holdout(cfg.holdout)
    assert not pairs & held and len(pairs) == len(COLOURS) * len(SHAPES) - 2
    assert held <= {(c, k) for c, k in test[..., :2].reshape(-1, 2).tolist()}    # the test split keeps them
    assert (train[:, 2, 0] < 0).all() and (train[:, 1, 0] >= 0).any()               # at most two shapes
    for bad in ("purple circle", "red", "red circle square"):
        with pytest.raises(UserError, match="data.holdout"):
            ShapesData(holdout=bad).check()
    with pytest.raises(UserError, match="max_shapes"):
        ShapesData(max_shapes=4).check()
