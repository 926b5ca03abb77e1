"""Picture helpers: grids read back pixel for pixel, plots are real images, writes are atomic."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from unigen.data import to_uint8
from unigen.errors import UserError
from unigen.io import atomic_write_text as save_text
from unigen.plot import plot_curves, save_image_grid, save_scatter


def leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("c,mode", [(3, "RGB"), (1, "L")])
def test_grid_reads_back_tile_by_tile(tmp_path, c, mode):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, c, 4, 6, generator=g) * 2 - 1                            # (B, C, H, W)
    path = save_image_grid(x, tmp_path / "sub" / "grid.png", nrow=3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == mode
        arr = np.array(im)
    arr = arr[..., None] if c == 1 else arr                                     # (H', W', C)
    pad, rows = 2, 2
    assert arr.shape == (rows * (4 + pad) + pad, 3 * (6 + pad) + pad, c)
    expect = to_uint8(x).permute(0, 2, 3, 1).numpy()                           # (B, H, W, C)
    seen = np.zeros(arr.shape[:2], bool)
    for i in range(5):
        top, left = pad + (i // 3) * (4 + pad), pad + (i % 3) * (6 + pad)
        assert np.array_equal(arr[top: top + 4, left: left + 6], expect[i])
        seen[top: top + 4, left: left + 6] = True
    assert (arr[~seen] == 0).all()                                              # padding and the empty sixth slot
    assert leftovers(tmp_path / "sub", {"grid.png"}) == []


def test_grid_default_layout_is_square_ish(tmp_path):
    x = torch.zeros(10, 1, 3, 3)
    with Image.open(save_image_grid(x, tmp_path / "g.png")) as im:
        assert im.size == (4 * 5 + 2, 3 * 5 + 2)                                # ceil(sqrt(10)) = 4 per row, 3 rows


@pytest.mark.parametrize("x,problem", [(torch.zeros(2, 2, 4, 4), "C = 1 or 3"), (torch.zeros(4, 4, 3), "C = 1 or 3"),
                                       (torch.zeros(0, 3, 4, 4), "no images"),
                                       (torch.full((1, 1, 2, 2), float("nan")), "non-finite")])
def test_grid_bad_input_is_user_error(tmp_path, x, problem):
    with pytest.raises(UserError, match=problem):
        save_image_grid(x, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_grid_write_is_atomic(tmp_path, monkeypatch):
    path = save_image_grid(torch.zeros(1, 1, 2, 2), tmp_path / "g.png")
    before = path.read_bytes()

    def broken_save(self, fp, *a, **k):
        with open(fp, "wb") as f:
            f.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image_grid(torch.ones(1, 1, 2, 2), path)
    assert path.read_bytes() == before                                          # the old file is intact
    assert leftovers(tmp_path, {"g.png"}) == []                                 # and no temporary file is left


def test_plot_curves_writes_images(tmp_path):
    steps = list(range(0, 100, 10))
    series = {"train": (steps, [1.0 / (s + 1) for s in steps]), "eval": (torch.tensor([0, 50]), torch.tensor([1.0, 0.1]))}
    png = plot_curves(series, tmp_path / "loss.png", title="loss", logy=True)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (600, 400)
        assert len(set(np.array(im.convert("L")).flatten().tolist())) > 2       # something was drawn
    svg = plot_curves(series, tmp_path / "loss.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
    assert leftovers(tmp_path, {"loss.png", "loss.svg"}) == []


def test_plot_curves_bad_input_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no series"):
        plot_curves({}, tmp_path / "p.png")
    with pytest.raises(UserError, match="'loss' has 3 steps but 2 values"):
        plot_curves({"loss": ([1, 2, 3], [1.0, 2.0])}, tmp_path / "p.png")
    with pytest.raises(UserError, match=r"\.xyz"):
        plot_curves({"loss": ([1], [1.0])}, tmp_path / "p.xyz")
    assert leftovers(tmp_path, set()) == []


def test_save_text_round_trip_and_overwrite(tmp_path):
    path = tmp_path / "deep" / "notes.txt"
    save_text(path, "first\n")
    save_text(path, "caf\u00e9 \u2603\nsecond\n")
    assert path.read_bytes() == "caf\u00e9 \u2603\nsecond\n".encode("utf-8")
    assert leftovers(path.parent, {"notes.txt"}) == []


def test_scatter_is_a_png_and_atomic(tmp_path):
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    path = save_scatter(x, tmp_path / "s.png", "points")
    with Image.open(path) as im:
        assert im.size == (500, 500)
        assert len(set(np.asarray(im.convert("L")).ravel().tolist())) > 2   # something was drawn
    assert leftovers(tmp_path, {"s.png"}) == []
