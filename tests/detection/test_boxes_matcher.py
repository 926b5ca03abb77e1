"""Boxes and Hungarian matching of DETR: GIoU identities and a pixel-count oracle, degenerate boxes refused, the
matching cost written out element by element, and the assignment against brute force over all injections."""
import itertools

import pytest
import torch

from unigen.errors import UserError
from unigen.families.detection.boxes import (box_iou, cxcywh_to_xyxy, generalized_box_iou, xyxy_to_cxcywh)
from unigen.families.detection.matcher import hungarian_match, match_cost


def random_xyxy(n, g):
    lo = torch.rand(n, 2, generator=g, dtype=torch.float64)
    return torch.cat([lo, lo + 0.05 + torch.rand(n, 2, generator=g, dtype=torch.float64)], 1)


def test_format_round_trip():
    b = random_xyxy(20, torch.Generator().manual_seed(0))
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)


def test_iou_against_pixel_counts():
    """Integer boxes on a 40x40 grid: intersection and union counted pixel by pixel."""
    g = torch.Generator().manual_seed(1)
    lo = torch.randint(0, 20, (12, 2), generator=g)
    b = torch.cat([lo, lo + torch.randint(1, 20, (12, 2), generator=g)], 1)     # (12, 4) integer corners
    ys, xs = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    masks = [(xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1) for x0, y0, x1, y1 in b.tolist()]
    iou, union = box_iou(b.double(), b.double())
    for i, j in itertools.product(range(12), repeat=2):
        assert union[i, j] == (masks[i] | masks[j]).sum()
        assert iou[i, j] == pytest.approx(((masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()).item())


def test_giou_identities():
    g = torch.Generator().manual_seed(2)
    a, b = random_xyxy(30, g), random_xyxy(25, g)
    giou, (iou, _) = generalized_box_iou(a, b), box_iou(a, b)
    assert torch.allclose(torch.diag(generalized_box_iou(a, a)), torch.ones(30, dtype=torch.float64))
    assert (giou <= iou + 1e-12).all() and (giou > -1).all()
    assert torch.allclose(giou, generalized_box_iou(b, a).T)                       # symmetric
    # disjoint unit boxes 2 apart: IoU 0, enclosing box 4 x 1 of which 2 is covered -> GIoU = -1/2
    far = generalized_box_iou(torch.tensor([[0., 0, 1, 1]]), torch.tensor([[3., 0, 4, 1]]))
    assert far.item() == pytest.approx(-0.5)


@pytest.mark.parametrize("bad", [[0.5, 0.5, 0.5, 0.9], [0.5, 0.5, 0.9, 0.2], [0.0, 0.0, float("nan"), 1.0]])
def test_degenerate_boxes_are_refused(bad):
    ok = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(UserError, match="degenerate box|finite"):
        generalized_box_iou(ok, torch.tensor([bad]))
    with pytest.raises(UserError):
        generalized_box_iou(torch.tensor([bad]), ok)


def test_match_cost_written_out():
    """C[i, j] = -softmax(logits_i)[c_j] + 5 |b_i - b_j|_1 - 2 GIoU(b_i, b_j), one pair at a time."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 4, generator=g)
    boxes = torch.rand(5, 4, generator=g) * 0.4 + 0.3
    labels, target = torch.tensor([2, 0, 1]), torch.rand(3, 4, generator=g) * 0.4 + 0.3
    C = match_cost(logits, boxes, labels, target)
    for i, j in itertools.product(range(5), range(3)):
        p = torch.softmax(logits[i], 0)[labels[j]]
        l1 = (boxes[i] - target[j]).abs().sum()
        gi = generalized_box_iou(cxcywh_to_xyxy(boxes[i:i + 1]), cxcywh_to_xyxy(target[j:j + 1]))[0, 0]
        assert C[i, j].item() == pytest.approx((-p + 5 * l1 - 2 * gi).item(), abs=1e-5)


@pytest.mark.parametrize("T", range(0, 8))
def test_hungarian_equals_brute_force(T):
    """Q = 7 queries, T <= 7 targets: the total cost equals the minimum over all injections targets -> queries."""
    g = torch.Generator().manual_seed(10 + T)
    Q, K = 7, 3
    for _ in range(3):
        logits = torch.randn(1, Q, K + 1, generator=g)
        boxes = torch.rand(1, Q, 4, generator=g) * 0.4 + 0.3
        labels = torch.randint(0, K, (T,), generator=g)
        target = torch.rand(T, 4, generator=g) * 0.4 + 0.3
        (q, t), = hungarian_match(logits, boxes, [(labels, target)])
        assert len(q) == len(t) == T and len(set(q.tolist())) == T and sorted(t.tolist()) == list(range(T))
        if T == 0:
            continue
        C = match_cost(logits[0], boxes[0], labels, target)
        c = C.tolist()
        best = min(sum(c[p[j]][j] for j in range(T)) for p in itertools.permutations(range(Q), T))
        assert C[q, t].sum().item() == pytest.approx(best, abs=1e-5)
