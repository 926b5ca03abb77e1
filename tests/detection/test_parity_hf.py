"""Parity with Hugging Face's DETR (transformers 4.57.6, test-only): the set loss against
`ForObjectDetectionLoss` (their port of facebookresearch/detr's SetCriterion) on the same predictions, and a
weight port of the transformer + heads of a random-init `DetrForObjectDetection` with its own small ResNet
backbone (no timm, no download). The backbones differ by design (ours is a small CNN trained from scratch), so the
port feeds both the feature map of theirs."""
import pytest
import torch

from unigen.families.detection.losses import box_normaliser, detr_loss
from unigen.families.detection.network import DETR, DetectorConfig

transformers = pytest.importorskip("transformers")
from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig  # noqa: E402
from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss  # noqa: E402

K, Q, L, D = 3, 7, 2, 32


def hf_config(auxiliary_loss: bool = True) -> DetrConfig:
    backbone = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                            layer_type="basic", out_features=["stage2"])
    return DetrConfig(use_timm_backbone=False, backbone=None, backbone_config=backbone, use_pretrained_backbone=False,
                      d_model=D, encoder_layers=2, decoder_layers=L, encoder_attention_heads=4,
                      decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=Q, num_labels=K,
                      auxiliary_loss=auxiliary_loss, dropout=0.0)


def predictions(seed: int, B: int = 3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(L, B, Q, K + 1, generator=g)
    boxes = torch.rand(L, B, Q, 4, generator=g) * 0.4 + 0.3
    counts = [0, 1, 5][:B]
    targets = [(torch.randint(0, K, (n,), generator=g), torch.rand(n, 4, generator=g) * 0.4 + 0.3) for n in counts]
    return logits, boxes, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_set_loss_matches_transformers(seed):
    logits, boxes, targets = predictions(seed)
    ours, logs = detr_loss(logits, boxes, targets, (1.0, 5.0, 2.0), 0.1)
    labels = [{"class_labels": c, "boxes": b} for c, b in targets]
    theirs, terms, _ = ForObjectDetectionLoss(logits[-1], labels, "cpu", boxes[-1], hf_config(),
                                              outputs_class=logits, outputs_coord=boxes)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    for k in ("loss_ce", "loss_bbox", "loss_giou"):
        assert logs[k] == pytest.approx(terms[k].item(), rel=1e-5)


def test_set_loss_normalises_by_at_least_one_box():
    """No targets at all: the box terms vanish and the cross-entropy (all no-object) is the plain weighted mean."""
    logits, boxes, _ = predictions(3)
    empty = [(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4))] * 3
    total, logs = detr_loss(logits, boxes, empty)
    ce = sum(torch.nn.functional.cross_entropy(logits[l].reshape(-1, K + 1), torch.full((3 * Q,), K)) for l in range(L))
    assert logs["loss_bbox"] == 0 and logs["loss_giou"] == 0 and total.item() == pytest.approx(ce.item(), rel=1e-6)


def test_box_normaliser_is_the_per_process_share_clamped_at_one():
    """Summed over processes, divided by their number (DDP then averages gradients), never below 1."""
    assert box_normaliser(3, 2) == 1.5 and box_normaliser(1, 2) == 1.0 and box_normaliser(0, 1) == 1.0
    assert box_normaliser(8, 1) == 8.0


def port(hf: DetrForObjectDetection, ours: DETR) -> None:
    """Copy the transformer and heads of `hf` into `ours` (names differ, shapes agree)."""
    m, sd = hf.model, {}
    sd["input_proj.weight"], sd["input_proj.bias"] = m.input_projection.weight, m.input_projection.bias
    sd["query_embed.weight"] = m.query_position_embeddings.weight
    for kind, layers, names in (("encoder", m.encoder.layers, {"self_attn": "self_attn", "self_attn_layer_norm": "norm1",
                                                             "final_layer_norm": "norm2"}),
                                ("decoder", m.decoder.layers, {"self_attn": "self_attn", "encoder_attn": "cross_attn",
                                                             "self_attn_layer_norm": "norm1",
                                                             "encoder_attn_layer_norm": "norm2",
                                                             "final_layer_norm": "norm3"})):
        for i, layer in enumerate(layers):
            for name, p in layer.named_parameters():
                head, rest = name.split(".", 1)
                key = f"ff.{name}" if head in ("fc1", "fc2") else f"{names[head]}.{rest}"
                sd[f"{kind}.{i}.{key}"] = p
    sd.update({f"decoder_norm.{k}": v for k, v in m.decoder.layernorm.state_dict().items()})
    sd.update({f"class_embed.{k}": v for k, v in hf.class_labels_classifier.state_dict().items()})
    for j, lin in enumerate(hf.bbox_predictor.layers):
        sd.update({f"bbox_embed.{2 * j}.{k}": v for k, v in lin.state_dict().items()})
    missing, unexpected = ours.load_state_dict({k: v.detach() for k, v in sd.items()}, strict=False)
    assert not unexpected and all(k.startswith("backbone.") for k in missing)


def test_weight_port_matches_detr_for_object_detection():
    """Final and per-layer outputs. HF's `auxiliary_loss=True` feeds each layer-normed decoder output into the next
    layer, unlike facebookresearch/detr (`intermediate.append(self.norm(output))`, `output` itself un-normed), which
    we follow; so their forward is taken with `auxiliary_loss=False` and the per-layer outputs are rebuilt from the
    raw decoder hidden states."""
    torch.manual_seed(0)
    hf = DetrForObjectDetection(hf_config(auxiliary_loss=False)).eval()
    with torch.no_grad():      # their init (std 0.02) makes attention nearly uniform and positions invisible
        for name, p in hf.named_parameters():
            if not name.startswith("model.backbone."):
                p.normal_(0, 0.5 if p.ndim > 1 else 0.2)
    ours = DETR(DetectorConfig(d_model=D, heads=4, enc_layers=2, dec_layers=L, ffn=64, queries=Q, dropout=0.0,
                               backbone_width=16, backbone_stages=1), 3, K).eval()
    port(hf, ours)
    x = torch.randn(3, 3, 40, 56)                                               # not square: rows vs columns
    with torch.no_grad():
        out = hf(pixel_values=x, output_hidden_states=True)
        features = hf.model.backbone.conv_encoder(x, torch.ones(3, 40, 56, dtype=torch.long))[-1][0]
        mine = ours.head(features)
    assert torch.allclose(mine["logits"][-1], out.logits, atol=1e-5)
    assert torch.allclose(mine["boxes"][-1], out.pred_boxes, atol=1e-5)
    raw = out.decoder_hidden_states                                            # input, layer outputs, final normed
    assert len(raw) == L + 1
    hs = torch.stack([hf.model.decoder.layernorm(h) for h in raw[1:L]] + [raw[L]])   # (L, B, N, d)
    with torch.no_grad():
        assert torch.allclose(mine["logits"], hf.class_labels_classifier(hs), atol=1e-5)
        assert torch.allclose(mine["boxes"], hf.bbox_predictor(hs).sigmoid(), atol=1e-5)
