"""The classification family: the shift augmentation against a brute-force construction, and its switch-off."""
import torch

from unigen.families.classify.task import TASK, random_shift
from unigen.config import apply_overrides
from unigen.registry import get_preset


def _shift_one(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Output pixel (i, j) is input pixel (i + dy, j + dx), coordinates clamped to the image (edge fill)."""
    C, H, W = img.shape
    out = torch.empty_like(img)
    for i in range(H):
        for j in range(W):
            out[:, i, j] = img[:, min(max(i + dy, 0), H - 1), min(max(j + dx, 0), W - 1)]
    return out


def test_random_shift_matches_brute_force():
    x = torch.randn(6, 2, 7, 5)
    k = 2
    torch.manual_seed(3)
    y = random_shift(x, k)
    torch.manual_seed(3)
    dy, dx = torch.randint(0, 2 * k + 1, (2, 6, 1))
    for b in range(6):
        torch.testing.assert_close(y[b], _shift_one(x[b], int(dy[b]) - k, int(dx[b]) - k), rtol=0, atol=0)


def test_random_shift_covers_all_offsets_and_zero_is_identity():
    x = torch.arange(25.0).reshape(1, 1, 5, 5).expand(400, 1, 5, 5)
    torch.manual_seed(0)
    centre = random_shift(x, 1)[:, 0, 2, 2]          # the value at the centre tells the offset
    assert set(centre.tolist()) == {6.0, 7.0, 8.0, 11.0, 12.0, 13.0, 16.0, 17.0, 18.0}
    assert torch.equal(random_shift(x, 0), x)


def test_vit_trains_on_shifted_images_when_asked():
    cfg = apply_overrides(get_preset("vit-mnist"), ["data.name=digits", "model.patch=2", "model.shift=2"])
    model = TASK.build(cfg, {"shape": (1, 8, 8), "num_classes": 10})
    x, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    torch.nn.init.normal_(model.head.weight)            # the head is zero-initialised: make the logits depend on x
    model.eval()
    torch.manual_seed(0)
    a = TASK.loss(model, {"x": x, "y": y})[0]
    torch.manual_seed(1)
    b = TASK.loss(model, {"x": x, "y": y})[0]
    assert not torch.equal(a, b)                         # the loss sees shifted images, different per draw
    model.train_shift = 0
    assert torch.equal(TASK.loss(model, {"x": x, "y": y})[0], TASK.loss(model, {"x": x, "y": y})[0])
