"""The torchvision-semantics options, each checked against torchvision's own function."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from framework.layers import ShapeSpec
from framework.layers.mask_ops import paste_masks_in_image, paste_masks_in_image_torchvision
from framework.layers.resize import resize_shortest_edge_torchvision
from framework.modeling.anchor_generator import DefaultAnchorGenerator
from framework.modeling.roi_heads.fast_rcnn import fast_rcnn_inference


def test_rounded_anchors_equal_torchvision_cell_anchors():
    sizes = ((32,), (64,), (128,), (256,), (512,))
    ours = DefaultAnchorGenerator([ShapeSpec(stride=2 ** (i + 2)) for i in range(5)], sizes=sizes, round_anchors=True)
    tv = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    for mine, theirs in zip(ours.cell_anchors, tv.cell_anchors):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    unrounded = DefaultAnchorGenerator([ShapeSpec(stride=4)], sizes=((32,),))
    assert not torch.equal(unrounded.cell_anchors[0], unrounded.cell_anchors[0].round())  # 0.5/2.0 ratios


@pytest.mark.parametrize("size", [(480, 640), (427, 640), (640, 359), (333, 500)])
def test_resize_equals_torchvision_transform(size):
    image = torch.rand(3, *size) * 255
    tv = GeneralizedRCNNTransform(800, 1333, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    tv.eval()
    expected = tv.resize(image, None)[0]
    out = resize_shortest_edge_torchvision(image, 800, 1333)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert resize_shortest_edge_torchvision(image.to(torch.uint8), 0, 1333).dtype == torch.float32


def test_torchvision_mask_paste_equals_torchvision():
    g = torch.Generator().manual_seed(0)
    n, h, w = 12, 90, 120
    masks = torch.rand(n, 28, 28, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) - 10  # some boxes cross the border
    wh = torch.rand(n, 2, generator=g) * 60 + 0.3
    boxes = torch.cat([xy, xy + wh], dim=1)
    expected = tv_paste_masks(masks[:, None], boxes, (h, w))[:, 0]  # soft masks (N, H, W)
    assert torch.equal(paste_masks_in_image_torchvision(masks, boxes, (h, w)), expected >= 0.5)
    soft = paste_masks_in_image_torchvision(masks, boxes, (h, w), threshold=-1)
    assert torch.equal(soft, (expected * 255).to(torch.uint8))
    # the two pasting rules really differ (else the knob would be pointless)
    assert not torch.equal(paste_masks_in_image(masks, boxes, (h, w)), expected >= 0.5)
    assert paste_masks_in_image_torchvision(masks[:0], boxes[:0], (h, w)).shape == (0, h, w)


def test_min_box_size_drops_small_detections_before_nms():
    # roi 0: a 0.005 px wide box (class 0); roi 1: a normal box. Scores: (R, K+1), background last.
    boxes = torch.tensor([[10.0, 10.0, 10.005, 30.0], [5.0, 5.0, 25.0, 25.0]])
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    kept, _ = fast_rcnn_inference([boxes], [scores], [(50, 50)], score_thresh=0.05, nms_thresh=0.5, topk_per_image=10)
    assert len(kept[0]) == 2
    kept, rois = fast_rcnn_inference(
        [boxes], [scores], [(50, 50)], score_thresh=0.05, nms_thresh=0.5, topk_per_image=10, min_box_size=0.01
    )
    assert len(kept[0]) == 1 and rois[0].tolist() == [1]
    torch.testing.assert_close(kept[0].pred_boxes.tensor, boxes[1:])
