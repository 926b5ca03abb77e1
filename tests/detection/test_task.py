"""The detection family end to end: the scenes data, target checks (one-line UserErrors), two training steps,
evaluation, `unigen detect` on an image file, and the CLI's exit code 2 for bad input."""
import json

import pytest
import torch
from PIL import Image

from unigen.cli import main
from unigen.data import ScenesData, load, to_uint8
from unigen.errors import UserError
from unigen.families.detection.boxes import cxcywh_to_xyxy
from unigen.families.detection.targets import targets_from_batch
from unigen.registry import TASKS, get_preset

FAST = ["--train.steps=2", "--train.batch_size=4", "--train.progress=false", "--data.n_train=16",
        "--model.d_model=16", "--model.ffn=32", "--model.backbone_width=8", "--model.queries=6"]


def test_scenes_hold_one_to_six_objects_inside_the_image():
    ds = load(ScenesData(), "test")
    labels, boxes = ds.tensors["box_labels"], ds.tensors["boxes"]
    counts = (labels >= 0).sum(1)
    assert set(counts.tolist()) == {1, 2, 3, 4, 5, 6} and ds.info["num_classes"] == 3 == int(labels.max()) + 1
    assert ((labels >= 0) == (boxes.abs().sum(-1) > 0)).all()                    # padding is exactly -1 / zeros
    corners = cxcywh_to_xyxy(boxes[labels >= 0])
    assert (corners >= 0).all() and (corners <= 1).all() and (corners[:, 2:] > corners[:, :2]).all()
    real = ds.tensors["x"].amax(1) > -1                                          # (N, H, W) non-background pixels
    px = (corners * 48).round().long()                                           # every box holds drawn pixels
    for (i, _), (x0, y0, x1, y1) in zip((labels >= 0).nonzero().tolist()[:200], px.tolist()[:200]):
        assert real[i, y0:y1, x0:x1].any()
    assert torch.equal(load(ScenesData(), "test").tensors["x"], ds.tensors["x"])          # reproducible
    assert not torch.equal(load(ScenesData(seed=1), "test").tensors["x"], ds.tensors["x"])


@pytest.mark.parametrize("label,box,words", [
    (3, [0.5, 0.5, 0.2, 0.2], "box label 3 is out of range: class ids must be in [0, 3)"),
    (-2, [0.5, 0.5, 0.2, 0.2], "box label -2 is out of range"),
    (1, [0.95, 0.5, 0.2, 0.2], "lies outside the image: corners must be in [0, 1]"),
    (1, [0.5, 0.5, 0.0, 0.2], "degenerate box"),
])
def test_bad_targets_are_one_line_user_errors(label, box, words):
    boxes = torch.tensor([[[0.3, 0.3, 0.1, 0.1], box]])
    labels = torch.tensor([[0, label]])
    with pytest.raises(UserError) as e:
        targets_from_batch(boxes, labels, 3)
    assert words in str(e.value) and len(str(e.value).splitlines()) == 1


def test_num_classes_is_max_id_plus_one_plus_no_object():
    cfg = get_preset("shapes-detr")
    net = TASKS["detection"].build(cfg, load(cfg.data, "test").info)
    assert net.class_embed.out_features == 3 + 1


def test_loss_refuses_bad_boxes_in_a_batch():
    cfg = get_preset("shapes-detr")
    ds = load(cfg.data, "test")
    task = TASKS["detection"]
    net = task.build(cfg, ds.info)
    batch = ds.batch(torch.arange(2))
    loss, logs = task.loss(net, batch)
    assert loss.isfinite() and set(logs) >= {"loss_ce", "loss_bbox", "loss_giou", "class_error"}
    batch["boxes"][0, 0] = torch.tensor([0.05, 0.5, 0.2, 0.2])
    with pytest.raises(UserError, match="outside the image"):
        task.loss(net, batch)


def cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def test_train_eval_detect_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli("train", "shapes-detr", "--out", str(run), *FAST) == 0
    assert cli("eval", str(run), "--json") == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(metrics) == {"mAP", "AP50", "AP75", "images"} and 0 <= metrics["mAP"] <= metrics["AP50"] <= 1
    image = tmp_path / "scene.png"
    Image.fromarray(to_uint8(load(ScenesData(), "test").tensors["x"][0]).permute(1, 2, 0).numpy()).save(image)
    assert cli("detect", str(run), "--image", str(image), "--threshold", "0", "--out", str(tmp_path / "d.png")) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found["boxes"]) == 6 and found["scores"] == sorted(found["scores"], reverse=True)
    assert set(found["names"]) <= {"circle", "square", "triangle"}
    assert Image.open(tmp_path / "d.png").size == (48 * 8, 48 * 8)
    Image.new("RGB", (40, 40)).save(tmp_path / "small.png")
    assert cli("detect", str(run), "--image", str(tmp_path / "small.png")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is 40x40 pixels; this run's model takes 48x48" in err
    assert cli("detect", str(run), "--image", str(image), "--threshold", "2") == 2
