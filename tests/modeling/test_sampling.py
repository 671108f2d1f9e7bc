import torch

from framework.modeling.sampling import subsample_labels

# 3 positives (indices 0, 3, 7 with fg classes 1, 1, 2), 5 negatives (label 0), 2 ignored (-1)
LABELS = torch.tensor([1, 0, -1, 1, 0, 0, -1, 2, 0, 0])
POS, NEG = {0, 3, 7}, {1, 4, 5, 8, 9}


def _check(pos, neg, n_pos, n_neg):
    assert pos.dtype == neg.dtype == torch.int64
    assert len(pos) == n_pos and len(neg) == n_neg
    assert set(pos.tolist()) <= POS and len(set(pos.tolist())) == n_pos
    assert set(neg.tolist()) <= NEG and len(set(neg.tolist())) == n_neg


def test_fraction_caps_positives():
    torch.manual_seed(0)
    pos, neg = subsample_labels(LABELS, num_samples=4, positive_fraction=0.5, bg_label=0)
    _check(pos, neg, 2, 2)


def test_fraction_rounds_down():
    torch.manual_seed(0)
    pos, neg = subsample_labels(LABELS, num_samples=10, positive_fraction=0.25, bg_label=0)
    _check(pos, neg, 2, 5)  # int(2.5) = 2 positives; 8 slots left but only 5 negatives


def test_few_positives_filled_with_negatives():
    torch.manual_seed(0)
    pos, neg = subsample_labels(LABELS, num_samples=6, positive_fraction=0.75, bg_label=0)
    _check(pos, neg, 3, 3)  # int(4.5) = 4 wanted, 3 available; 6 - 3 = 3 negatives


def test_everything_when_samples_exceed_availability():
    pos, neg = subsample_labels(LABELS, num_samples=100, positive_fraction=0.5, bg_label=0)
    _check(pos, neg, 3, 5)


def test_bg_label_other_than_zero():
    # RoI heads: background is num_classes (here 80); class 0 is a foreground class
    labels = torch.tensor([80, 3, 80, -1, 0])
    pos, neg = subsample_labels(labels, num_samples=10, positive_fraction=0.5, bg_label=80)
    assert sorted(pos.tolist()) == [1, 4] and sorted(neg.tolist()) == [0, 2]


def test_seeded_draws_follow_randperm_positives_first():
    torch.manual_seed(123)
    pos, neg = subsample_labels(LABELS, num_samples=4, positive_fraction=0.5, bg_label=0)
    torch.manual_seed(123)
    p = torch.randperm(3)[:2]
    n = torch.randperm(5)[:2]
    assert pos.tolist() == torch.tensor([0, 3, 7])[p].tolist()
    assert neg.tolist() == torch.tensor([1, 4, 5, 8, 9])[n].tolist()
