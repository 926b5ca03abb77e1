"""COCO mAP through pycocotools against a brute-force COCO AP written from the COCO definition (greedy matching
by score at each IoU threshold in 0.50:0.05:0.95, 101-point interpolated precision, mean over classes with ground
truth), and the post-processing of DETR's outputs."""
import numpy as np
import pytest
import torch

from unigen.families.detection.boxes import box_iou, cxcywh_to_xyxy
from unigen.families.detection.evaluate import coco_dicts, coco_map, postprocess

pytest.importorskip("pycocotools")


def brute_ap(gt, dets, iou_t):
    """AP of one class: gt {img: (G, 4) xyxy}, dets [(score, img, box)]; greedy by score, best unmatched IoU >= t."""
    n_gt = sum(len(g) for g in gt.values())
    used = {i: [False] * len(g) for i, g in gt.items()}
    tp = []
    for score, img, box in sorted(dets, key=lambda d: -d[0]):
        g = gt.get(img, torch.zeros(0, 4))
        best, j = iou_t - 1e-10, -1
        if len(g):
            ious = box_iou(box[None].double(), g.double())[0][0]
            for k in range(len(g)):
                if not used[img][k] and ious[k] >= best:
                    best, j = ious[k].item(), k
        if j >= 0:
            used[img][j] = True
        tp.append(j >= 0)
    tp = np.array(tp, dtype=float)
    rec = np.cumsum(tp) / n_gt
    prec = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    prec = np.maximum.accumulate(prec[::-1])[::-1]                            # precision envelope
    points = [prec[np.searchsorted(rec, r, side="left")] if np.searchsorted(rec, r, side="left") < len(rec) else 0
              for r in np.linspace(0, 1, 101)]
    return float(np.mean(points))


def brute_map(gt_xyxy, gt_labels, scores, labels, xyxy, K):
    aps = {}
    for t in np.linspace(0.5, 0.95, 10):
        for k in range(K):
            gt = {i: gt_xyxy[i][gt_labels[i] == k] for i in range(len(gt_labels))}
            if sum(len(g) for g in gt.values()) == 0:
                continue
            dets = [(scores[i, q].item(), i, xyxy[i, q]) for i in range(len(scores)) for q in range(scores.shape[1])
                    if labels[i, q] == k]
            aps[(round(t, 2), k)] = brute_ap(gt, dets, t)
    mean = lambda f: float(np.mean([v for (t, k), v in aps.items() if f(t)]))
    return {"mAP": mean(lambda t: True), "AP50": mean(lambda t: t == 0.5), "AP75": mean(lambda t: t == 0.75)}


def scene(seed, N=6, M=4, Q=8, K=3):
    """Ground truth and noisy detections (some near a true box, some random) with untied scores."""
    g = torch.Generator().manual_seed(seed)
    gt_boxes = torch.cat([torch.rand(N, M, 2, generator=g) * 0.5 + 0.25, torch.rand(N, M, 2, generator=g) * 0.2 + 0.1], 2)
    gt_labels = torch.randint(0, K, (N, M), generator=g)
    gt_labels[torch.rand(N, M, generator=g) < 0.3] = -1
    boxes = torch.rand(N, Q, 4, generator=g) * 0.3 + 0.2
    boxes[:, :M] = gt_boxes + 0.01 * torch.randn(N, M, 4, generator=g)
    labels = torch.randint(0, K, (N, Q), generator=g)
    labels[:, :M] = torch.where(torch.rand(N, M, generator=g) < 0.8, gt_labels.clamp(min=0), labels[:, :M])
    scores = torch.randperm(N * Q, generator=g).reshape(N, Q).float() / (N * Q) + 0.01
    return gt_boxes, gt_labels, scores, labels, boxes, K


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pycocotools_map_equals_brute_force(seed):
    gt_boxes, gt_labels, scores, labels, boxes, K = scene(seed)
    size = (40, 50)
    scale = torch.tensor([50.0, 40, 50, 40])
    xyxy = cxcywh_to_xyxy(boxes) * scale
    gt, results = coco_dicts(gt_boxes, gt_labels, scores, labels, xyxy, size, K)
    ours = coco_map(gt, results)
    gt_xyxy = cxcywh_to_xyxy(gt_boxes) * scale
    want = brute_map([gt_xyxy[i] for i in range(len(gt_labels))], gt_labels, scores, labels, xyxy, K)
    assert 0.05 < ours["mAP"] < 0.95                                           # a case that is neither trivial
    for k in want:
        assert ours[k] == pytest.approx(want[k], abs=1e-9)


def test_perfect_detections_score_one_and_postprocess_drops_no_object():
    gt_boxes, gt_labels, *_ = scene(4)
    N, M = gt_labels.shape
    logits = torch.full((N, M, 4), -10.0)
    logits[..., 3] = 10.0                                                      # no-object wins the softmax ...
    real = gt_labels >= 0
    i, j = real.nonzero().unbind(1)
    logits[i, j, gt_labels[i, j]] = 5.0                                        # ... but is not a label
    scores, labels, xyxy = postprocess(logits, gt_boxes, (40, 50))
    assert (labels[real] == gt_labels[real]).all() and (scores < 0.01).all()
    assert scores[~real].max() < scores[real].min()                            # padding queries rank last
    gt, results = coco_dicts(gt_boxes, gt_labels, scores, labels, xyxy, (40, 50), 3)
    assert coco_map(gt, results) == {"mAP": 1.0, "AP50": 1.0, "AP75": 1.0}
