import pytest
import torch

from framework.modeling.matcher import Matcher


def test_thresholds_split_into_bg_ignore_fg():
    m = Matcher([0.3, 0.7], [0, -1, 1])
    iou = torch.tensor(
        [
            [0.8, 0.5, 0.1, 0.0, 0.25],
            [0.1, 0.6, 0.3, 0.7, 0.2],
        ]
    )
    matches, labels = m(iou)
    assert matches.dtype == torch.int64 and labels.dtype == torch.int8
    assert matches.tolist() == [0, 1, 1, 1, 0]
    # 0.8 -> fg; 0.6 -> ignore; 0.3 (boundary, inclusive low) -> ignore; 0.7 (boundary) -> fg; 0.25 -> bg
    assert labels.tolist() == [1, -1, -1, 1, 0]


def test_low_quality_matches_promote_every_tied_best_prediction():
    iou = torch.tensor(
        [
            [0.5, 0.1, 0.5, 0.0, 0.35],
            [0.2, 0.4, 0.0, 0.4, 0.1],
        ]
    )
    matches, labels = Matcher([0.3, 0.7], [0, -1, 1])(iou)
    assert labels.tolist() == [-1, -1, -1, -1, -1]
    matches_lq, labels_lq = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)(iou)
    # gt0's best (0.5) is tied by preds 0 and 2; gt1's best (0.4) by preds 1 and 3; pred 4 is nobody's best
    assert labels_lq.tolist() == [1, 1, 1, 1, -1]
    assert matches_lq.tolist() == matches.tolist() == [0, 1, 0, 1, 0]


def test_low_quality_match_keeps_argmax_gt_index():
    # pred 0 is gt0's best (0.3) but its own best gt is gt1 (0.6): label 1, match stays gt1
    iou = torch.tensor([[0.3, 0.0], [0.6, 0.9]])
    matches, labels = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)(iou)
    assert matches.tolist() == [1, 1]
    assert labels.tolist() == [1, 1]


def test_no_ground_truth_gives_first_label():
    matches, labels = Matcher([0.3, 0.7], [0, -1, 1])(torch.zeros(0, 4))
    assert matches.tolist() == [0, 0, 0, 0] and matches.dtype == torch.int64
    assert labels.tolist() == [0, 0, 0, 0] and labels.dtype == torch.int8
    _, labels = Matcher([0.5], [-1, 1])(torch.zeros(0, 3))
    assert labels.tolist() == [-1, -1, -1]


def test_no_predictions():
    matches, labels = Matcher([0.5], [0, 1])(torch.zeros(2, 0))
    assert matches.shape == (0,) and labels.shape == (0,)


def test_single_threshold_roi_heads_style():
    matches, labels = Matcher([0.5], [0, 1])(torch.tensor([[0.49, 0.5, 0.9]]))
    assert labels.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    "thresholds, labels, msg",
    [
        ([0.7, 0.3], [0, -1, 1], r"Matcher\(thresholds=\[0.7, 0.3\]\): must be non-decreasing, but "
                                 r"thresholds\[1\] = 0.3 is below thresholds\[0\] = 0.7"),
        ([0.3, 0.7], [0, 1], r"Matcher\(thresholds=\[0.3, 0.7\], labels=\[0, 1\]\): needs one more label than "
                             r"thresholds .* got 2 thresholds and 2 labels"),
        ([0.0, 0.7], [0, -1, 1], r"Matcher\(thresholds=\[0.0, 0.7\]\): thresholds\[0\] = 0.0 must be above 0"),
        ([], [0], r"Matcher\(thresholds=\[\]\): needs at least one threshold"),
        ([0.5], [0, 2], r"Matcher\(labels=\[0, 2\]\): labels\[1\] = 2; each label must be -1 \(ignore\), "
                        r"0 \(background\) or 1 \(foreground\)"),
    ],
)
def test_bad_construction(thresholds, labels, msg):
    with pytest.raises(ValueError, match=msg):
        Matcher(thresholds, labels)


def test_negative_or_nan_quality_rejected_naming_where():
    with pytest.raises(ValueError, match=r"match_quality_matrix \(\(1, 2\): ground truths x predictions\) must be "
                                         r">= 0 everywhere .* 1 values are negative or NaN, e.g. -0.5 at ground "
                                         r"truth 0, prediction 0"):
        Matcher([0.5], [0, 1])(torch.tensor([[-0.5, 0.5]]))
    with pytest.raises(ValueError, match=r"2 values are negative or NaN, e.g. nan at ground truth 1, prediction 0"):
        Matcher([0.5], [0, 1])(torch.tensor([[0.1, 0.5], [float("nan"), -1.0]]))


def test_quality_matrix_must_be_2d():
    with pytest.raises(ValueError, match=r"match_quality_matrix must be 2-d, \(M ground truths, N predictions\), "
                                         r"got shape \(3,\)"):
        Matcher([0.5], [0, 1])(torch.tensor([0.1, 0.5, 0.9]))
