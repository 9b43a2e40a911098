"""evaluation/segmentation.py (ConfusionMatrix, evaluate_segmenter) and
evaluation/label_spaces.py (dataset ids -> evaluation ids per dataset mode)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.label_spaces import CITYSCAPES_TRAIN_NAMES, label_space_for
from evaluation.segmentation import ConfusionMatrix, evaluate_segmenter
from util.errors import OptionError

# ------------------------------------------------------------------ ConfusionMatrix
# 4 classes; class 3 appears nowhere; 255 is ignored; pred 7 is out of range (always wrong).
TARGET = [0, 0, 0, 0, 1, 1, 1, 2, 2, 255, 255]
PRED = [0, 0, 0, 1, 1, 1, 0, 2, 7, 1, 3]
# by hand: class 0: TP 3, FN 1 (->1), FP 1 (1->0): 3/5; class 1: TP 2, FN 1, FP 1: 2/4;
# class 2: TP 1, FN 1 (->7), FP 0: 1/2; class 3: no pixel in target or (scored) prediction
HAND_IOU = [3 / 5, 2 / 4, 1 / 2]


def test_crafted_example_matches_hand_computed_scores():
    cm = ConfusionMatrix(4, ignore_index=255).update(torch.tensor(PRED), torch.tensor(TARGET))
    iou = cm.per_class_iou()
    assert iou.dtype == torch.float64 and iou.shape == (4,)
    assert iou[:3].tolist() == pytest.approx(HAND_IOU)
    assert math.isnan(float(iou[3]))  # absent from both: not part of the mean
    assert cm.miou() == pytest.approx(sum(HAND_IOU) / 3)
    assert cm.pixel_accuracy() == pytest.approx(6 / 9)  # the two ignored pixels do not count
    assert cm.total() == 9
    assert cm.matrix.tolist() == [[3, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert int(cm.counts[2, 4]) == 1  # the out-of-range prediction
    assert cm.per_class_accuracy()[:3].tolist() == pytest.approx([3 / 4, 2 / 3, 1 / 2])


def test_class_only_in_prediction_has_iou_zero_and_lowers_the_mean():
    cm = ConfusionMatrix(3).update(np.array([0, 2]), np.array([0, 0]))
    assert cm.per_class_iou().tolist()[0] == pytest.approx(0.5)
    assert cm.per_class_iou().tolist()[2] == 0.0
    assert math.isnan(cm.per_class_iou().tolist()[1])
    assert cm.miou() == pytest.approx(0.25)


def test_matches_a_per_pixel_count_and_merge_equals_one_update():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 17, 19), generator=g)
    target[0, :4] = 255
    pred = torch.randint(-1, 7, (3, 17, 19), generator=g)
    ref = np.zeros((5, 6), np.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if t != 255:
            ref[t, p if 0 <= p < 5 else 5] += 1
    whole = ConfusionMatrix(5).update(pred, target)
    assert whole.counts.numpy().tolist() == ref.tolist()
    parts = ConfusionMatrix(5)
    for i in range(3):  # (H, W) pieces, numpy and torch mixed
        other = ConfusionMatrix(5).update(pred[i].numpy(), target[i])
        parts.merge(other)
    assert torch.equal(parts.counts, whole.counts)
    assert parts.miou() == pytest.approx(whole.miou())


def test_bad_inputs_are_refused():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="same shape"):
        cm.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="to_eval"):
        cm.update(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 3, 255]))
    with pytest.raises(TypeError, match="integer"):
        cm.update(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="merge"):
        cm.merge(ConfusionMatrix(4))
    assert cm.total() == 0 and math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())


def test_as_dict_is_strict_json_with_class_names():
    cm = ConfusionMatrix(4).update(torch.tensor(PRED), torch.tensor(TARGET))
    d = cm.as_dict(["a", "b", "c", "d"])
    json.dumps(d, allow_nan=False)
    assert d["per_class_iou"]["a"] == pytest.approx(0.6) and d["per_class_iou"]["d"] is None
    assert d["miou"] == pytest.approx(cm.miou()) and d["pixels"] == 9
    with pytest.raises(ValueError):
        cm.as_dict(["a"])


class _EchoSegmenter:
    """Predicts the evaluation ids it was told (by image value), at the requested size."""

    def predict(self, images, size=None):
        assert size is not None
        ids = ((images[:, 0] + 1) * 10).round().long()
        return torch.nn.functional.interpolate(ids[:, None].float(), size=size, mode="nearest")[:, 0].long()


def test_evaluate_segmenter_maps_labels_and_predicts_at_label_size():
    space = label_space_for("cityscapes", 35, False)
    labels = torch.full((2, 1, 8, 8), 7)      # road (labelId 7 -> trainId 0)
    labels[:, :, :, 4:] = 26                  # car (26 -> 13)
    labels[1, :, 0] = 0                       # unlabeled: ignored
    images = torch.full((2, 3, 4, 4), -1.0)   # predicts trainId 0 everywhere
    cm = evaluate_segmenter(_EchoSegmenter(), [(images, labels)], space)
    assert cm.total() == 2 * 64 - 8
    assert cm.pixel_accuracy() == pytest.approx((2 * 32 - 4) / (2 * 64 - 8))
    iou = cm.per_class_iou()
    assert float(iou[0]) == pytest.approx((2 * 32 - 4) / (2 * 64 - 8)) and float(iou[13]) == 0.0


# ------------------------------------------------------------------ label spaces
def test_cityscapes_label_ids_become_train_ids():
    space = label_space_for("cityscapes", 35, False)
    assert space.num_classes == 19 and space.ignore_index == 255
    assert space.class_names == CITYSCAPES_TRAIN_NAMES
    # spot checks from the official table (labelId -> trainId)
    pairs = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    ignored = [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, 35, 200, 255]
    ids = np.array(list(pairs) + ignored, dtype=np.uint8)
    out = space.to_eval(ids)
    assert out.dtype == np.int64
    assert out.tolist() == list(pairs.values()) + [255] * len(ignored)
    t = space.to_eval(torch.tensor([[7, 26], [-1, 33]]))
    assert isinstance(t, torch.Tensor) and t.tolist() == [[0, 13], [255, 18]]
    assert space.class_names[space.to_eval(np.array([26]))[0]] == "car"


def test_ade20k_coco_synthetic_custom_spaces():
    from data.ade20k_dataset import ADE20KDataset
    from data.base_dataset import label_tensor
    from datasets.synthetic_scenes import CLASS_NAMES

    ade = label_space_for("ade20k", 150, True)
    # file ids as stored (0 = other, 1..150) -> data/ (shift, dontcare = label_nc) -> eval
    stored = np.array([[0, 1, 150]], np.uint8)
    from_data = label_tensor(ADE20KDataset.map_label_ids(None, stored), 150)  # type: ignore[arg-type]
    assert from_data.tolist() == [[[150, 0, 149]]]
    assert ade.to_eval(from_data).tolist() == [[[255, 0, 149]]]
    assert (ade.num_classes, ade.class_names[0], ade.class_names[149]) == (150, "wall", "flag")

    coco = label_space_for("coco", 182, True)
    assert coco.num_classes == 182 and coco.class_names[0] == "person"
    assert coco.to_eval(np.array([0, 181, 182, 255])).tolist() == [0, 181, 255, 255]

    syn = label_space_for("synthetic", 12, False)
    assert syn.class_names == tuple(CLASS_NAMES) and syn.to_eval(np.array([11, 12])).tolist() == [11, 255]

    custom = label_space_for("custom", 5, True)
    assert custom.num_classes == 5 and custom.to_eval(torch.tensor([4, 5, 255])).tolist() == [4, 255, 255]
    assert custom.matches("custom", 5) and not custom.matches("custom", 6)
    with pytest.raises(OptionError, match="--dataset_mode"):
        label_space_for("kitti", 10, False)


def test_real_cityscapes_label_map(shared_samples):
    path = next((shared_samples / "cityscapes" / "gtFine").rglob("*_labelIds.png"))
    ids = np.asarray(Image.open(path))
    out = label_space_for("cityscapes", 35, False).to_eval(ids)
    assert out.shape == ids.shape
    assert set(np.unique(out).tolist()) <= set(range(19)) | {255}
    assert (out[ids == 7] == 0).all() and (out[ids == 0] == 255).all()
    assert (out != 255).mean() > 0.5  # most of a street scene is scored


def test_new_dataset_modes_score_their_own_classes():
    import numpy as np

    from evaluation.label_spaces import label_space_for
    for mode, n, first in (("voc", 21, "background"), ("facades", 12, "background"), ("camvid", 11, "Sky"),
                           ("nyu", 40, "wall")):
        space = label_space_for(mode, n, True)
        assert space.num_classes == n and space.class_names[0] == first
        ids = np.array([[0, n - 1, n]])  # first class, last class, the dontcare id data/ yields
        assert space.to_eval(ids).tolist() == [[0, n - 1, space.ignore_index]]


def test_dontcare_id_label_nc_is_never_scored():
    space = label_space_for("custom", 11, True)  # CamVid-like: void 11 with --label_nc 11
    label = torch.tensor([[0, 10, 11, 255]])
    assert space.to_eval(label).tolist() == [[0, 10, space.ignore_index, space.ignore_index]]


def test_eval_ignore_id_drops_a_void_class_from_the_scores():
    space = label_space_for("custom", 4, False, ignore_id=3)
    assert space.void_ids == (3,) and space.num_classes == 4
    target = space.to_eval(torch.tensor([0, 0, 1, 3, 3, 2]))
    assert target.tolist() == [0, 0, 1, space.ignore_index, space.ignore_index, 2]
    cm = space.confusion_matrix()
    cm.update(torch.tensor([0, 3, 1, 3, 0, 2]), target)  # one pixel of class 0 predicted as void
    # IoU: class 0 1/2, class 1 1, class 2 1; class 3 (void, only predicted) left out
    assert cm.miou() == pytest.approx((0.5 + 1 + 1) / 3)
    assert "class 3" not in cm.as_dict(space.class_names)["per_class_iou"]
    plain = label_space_for("custom", 4, False)
    cm_plain = plain.confusion_matrix()
    cm_plain.update(torch.tensor([0, 3, 1, 3, 0, 2]), plain.to_eval(torch.tensor([0, 0, 1, 3, 3, 2])))
    assert cm_plain.miou() != pytest.approx(cm.miou())
    with pytest.raises(OptionError, match="--eval_ignore_id 4"):
        label_space_for("custom", 4, False, ignore_id=4)
    with pytest.raises(ValueError, match="cannot merge"):
        cm.merge(plain.confusion_matrix())
