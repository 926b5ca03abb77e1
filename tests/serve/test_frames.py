"""What the page is sent for a step: each token tagged with the step that (last) unmasked it, checked against a
brute-force replay; characters split over tokens decoded whole; images that decode back to the grid they show."""
from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
import torch

from unigen.plot import image_grid
from unigen.serve.frames import ImageView, TextView, png_data_url, shown_x_t

M = 99                                                   # mask id


def decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def replay_commit(canvases: list[list[int]], prompt: int) -> list[int | None]:
    """Brute force: the last step s at which position j went from masked to a token (0 for the prompt)."""
    out = []
    for j in range(len(canvases[0])):
        if j < prompt:
            out.append(0)
            continue
        tag = None
        for s, c in enumerate(canvases, start=1):
            prev = canvases[s - 2][j] if s > 1 else M
            tag = None if c[j] == M else (s if prev == M else tag)
        out.append(tag)
    return out


def test_text_frames_tag_tokens_with_the_step_that_committed_them():
    g = torch.Generator().manual_seed(0)
    prompt, length, steps = 2, 12, 9
    row = [104, 105] + [M] * length
    canvases = []
    for _ in range(steps):                               # random unmasking with occasional remasking (ReMDM-style)
        for j in range(prompt, len(row)):
            u = float(torch.rand((), generator=g))
            row[j] = M if (row[j] != M and u < 0.1) else (97 + j if row[j] == M and u < 0.3 else row[j])
        canvases.append(list(row))
    view = TextView(decode)
    for i, c in enumerate(canvases):
        frame = view({"i": i, "canvas": torch.tensor([c]), "mask_id": M, "prompt_tokens": prompt})
    assert view.commit[0] == replay_commit(canvases, prompt)
    assert frame["masked"] == sum(t == M for t in canvases[-1]) and frame["total"] == length
    shown = [(t, s) for t, s in frame["rows"][0]]
    assert sum(1 for t, _ in shown if t is None) == frame["masked"]                 # one blank per masked token
    assert "".join(t for t, _ in shown if t) == decode([t for t in canvases[-1] if t != M])


def test_a_character_split_over_tokens_committed_together_decodes_whole():
    ids = list("é!".encode())                            # 0xC3 0xA9 0x21
    view = TextView(decode)
    view({"i": 0, "canvas": torch.tensor([[ids[0], ids[1], M]]), "mask_id": M, "prompt_tokens": 0})
    frame = view({"i": 1, "canvas": torch.tensor([ids]), "mask_id": M, "prompt_tokens": 0})
    assert frame["rows"][0] == [["é", 1], ["!", 2]]
    assert view.final([ids], M) == [[["é", 1], ["!", 2]]]


def test_image_frames_decode_to_the_grid_and_scale_x_t_by_the_noise():
    from PIL import Image
    x = torch.rand(3, 1, 5, 5) * 2 - 1
    png = png_data_url(x)
    img = np.array(Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1]))))
    assert np.array_equal(img, image_grid(x).numpy()[..., 0])
    sigma = 3.0
    assert torch.allclose(shown_x_t(x, sigma), x / math.sqrt(10.0))
    assert shown_x_t(x, math.inf) is x                   # a flow's start: x is already z
    frame = ImageView()({"i": 0, "x": x * 4, "sigma": sigma, "denoised": x})
    assert frame["kind"] == "image" and frame["i"] == 1 and frame["sigma"] == sigma and frame["x0"] == png


def test_points_frames_for_2d_data():
    x = torch.tensor([[1.23456, -2.0], [0.5, 0.25]])
    frame = ImageView()({"i": 4, "x": x, "sigma": 0.0, "denoised": x / 2})
    assert frame["kind"] == "points" and frame["x_t"] == [[1.235, -2.0], [0.5, 0.25]]
    assert frame["x0"] == [[0.617, -1.0], [0.25, 0.125]]


@pytest.mark.parametrize("sigma", [float("inf")])
def test_an_infinite_sigma_is_sent_as_null(sigma):
    frame = ImageView()({"i": 0, "x": torch.zeros(2, 2), "sigma": sigma, "denoised": torch.zeros(2, 2)})
    assert frame["sigma"] is None
