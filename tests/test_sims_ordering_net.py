"""SIMS' ordering network (models/sims/ordering_net.py): depth-labelled pairs of adjacent
segments, the antisymmetric pair classifier, its file, training against the class-count order,
its use in ``paint_order`` and scripts/train_sims_ordering.py end to end."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data import create_dataset
from datasets.synthetic_scenes import NUM_CLASSES
from models.sims.bank import SegmentBank
from models.sims.ordering import paint_order
from models.sims.ordering_net import (ORDER_FILE, OrderingNet, PairSample, adjacent_pairs, class_count_accuracy,
                                      class_order_counts, compact, front_scores, known, pair_accuracy,
                                      pair_inputs, train_ordering, undecided_by_classes)
from models.sims.retrieval import retrieve
from scripts.train_sims_ordering import main as train_script
from util.errors import CheckpointError

SYNTH = dict(name="t", gpu_ids=[], checkpoints_dir="/tmp", model="pix2pix", phase="train", isTrain=True,
             batchSize=1, preprocess_mode="fixed", load_size=48, crop_size=48, aspect_ratio=1.0,
             label_nc=NUM_CLASSES, contain_dontcare_label=False, output_nc=3, dataroot=None,
             dataset_mode="synthetic", serial_batches=True, no_flip=True, nThreads=0,
             max_dataset_size=sys.maxsize, no_instance=False, seed=0, synthetic_num=300, synthetic_seed=0)


# ---------------------------------------------------------------------- pairs
def _scene():
    """64 x 64: background 0 around A (class 1), B (class 2) side by side with a gap, and C
    (class 3) below both, touching each; a 255 (dontcare) block and a tiny class-4 blob (under
    the size threshold) that must not pair. Inverse depth: bg 0.1, A 0.5, B 0.2; C is 0.3 along
    its top boundary but 0.9 further down, so its whole-segment median (0.9) would put it in
    front of A; the boundary-band rule must not."""
    label = np.zeros((64, 64), dtype=np.int64)
    label[8:24, 8:28] = 1      # A
    label[8:24, 36:56] = 2     # B: 8 px right of A, not adjacent to it
    label[24:40, 20:44] = 3    # C: under A (cols 20-27) and under B (cols 36-43)
    label[50:60, 40:60] = 255  # dontcare
    label[56:58, 4:6] = 4      # 4 px < 32 px (1000 / (256 * 512) of 64 x 64)
    depth = np.full((64, 64), 0.1, dtype=np.float32)
    depth[label == 1] = 0.5
    depth[label == 2] = 0.2
    depth[label == 3] = 0.3
    depth[30:40, 20:44] = 0.9  # C's far-from-boundary rows (10 of its 16): its median is 0.9
    return label, depth


def _by_classes(pairs):
    """{frozenset(class_a, class_b): front class or None}."""
    out = {}
    for p in pairs:
        front = None if p.a_in_front is None else (p.class_a if p.a_in_front else p.class_b)
        out[frozenset((p.class_a, p.class_b))] = front
    return out


def test_adjacent_pairs_finds_neighbours_and_orders_by_boundary_depth():
    label, depth = _scene()
    pairs = adjacent_pairs(label, depth)
    got = _by_classes(pairs)
    assert len(pairs) == len(got) == 5
    assert got == {frozenset((0, 1)): 1, frozenset((0, 2)): 2, frozenset((0, 3)): 3,
                   frozenset((1, 3)): 1,  # boundary: A 0.5 > C 0.3 (C's median 0.9 would say C)
                   frozenset((2, 3)): 3}
    for p in pairs:
        assert p.mask_a.shape == p.mask_b.shape == (64, 64) and not (p.mask_a & p.mask_b).any()
        assert (label[p.mask_a] == p.class_a).all() and (label[p.mask_b] == p.class_b).all()
    small = compact(pairs, 16)  # what the script keeps: masks at the network's input size
    assert [(p.class_a, p.class_b, p.a_in_front) for p in small] == [(p.class_a, p.class_b, p.a_in_front)
                                                                      for p in pairs]
    assert all(p.mask_a.shape == (16, 16) and p.mask_a.any() and p.mask_b.any() for p in small)
    # no depth: the same pairs, unlabelled; unknown depth on B (NaN or 0): B's pairs unlabelled
    assert _by_classes(adjacent_pairs(label, None)) == {k: None for k in got}
    for unknown in (np.nan, 0.0):
        d = depth.copy()
        d[label == 2] = unknown
        expected = {k: (None if 2 in k else v) for k, v in got.items()}
        assert _by_classes(adjacent_pairs(label, d)) == expected
    # torch (1, H, W) inputs; a larger size threshold drops the small segments
    assert _by_classes(adjacent_pairs(torch.from_numpy(label)[None], torch.from_numpy(depth)[None])) == got
    assert _by_classes(adjacent_pairs(label, depth, min_area_frac=0.2)) == {}  # only bg is that large
    with pytest.raises(ValueError, match="depth must be"):
        adjacent_pairs(label, depth[:32])


def test_pairs_are_found_at_other_sizes_and_boundary_bands_scale():
    from models.sims.ordering_net import band_side
    assert [band_side(h) for h in (16, 64, 128, 256, 512, 1024)] == [1, 3, 7, 11, 23, 45]
    label, depth = _scene()
    big = adjacent_pairs(label.repeat(4, 0).repeat(4, 1), depth.repeat(4, 0).repeat(4, 1))
    assert _by_classes(big) == _by_classes(adjacent_pairs(label, depth))


# ---------------------------------------------------------------------- network
def _random_pairs(n: int, size: int, num_classes: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.rand((n, 2, size, size), generator=gen) < 0.3
    masks[:, 1] &= ~masks[:, 0]
    classes = torch.randint(0, num_classes, (n, 2), generator=gen)
    return masks, classes


def test_network_is_antisymmetric_by_construction():
    torch.manual_seed(0)
    net = OrderingNet(num_classes=5, size=16, width=4).eval()
    masks, classes = _random_pairs(6, 16, 5)
    x = pair_inputs(masks, classes, 5)
    assert x.shape == (6, 7, 16, 16)
    assert torch.equal(x[:, 2:].sum(1), (masks[:, 0] | masks[:, 1]).float())  # one-hot on the union only
    swapped = pair_inputs(masks.flip(1), classes.flip(1), 5)
    with torch.no_grad():
        logit, logit_swapped = net(x), net(swapped)
    assert logit.shape == (6,) and logit.abs().max() > 0
    assert torch.allclose(logit_swapped, -logit, atol=1e-6)
    p, q = net.probabilities(masks, classes), net.probabilities(masks.flip(1), classes.flip(1))
    np.testing.assert_allclose(p + q, 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="OrderingNet expects"):
        net(x[:, :5])


def test_save_load_round_trip_and_clear_errors(tmp_path):
    torch.manual_seed(1)
    net = OrderingNet(num_classes=4, size=16, width=4).eval()
    path = tmp_path / ORDER_FILE
    net.save(str(path), {"steps": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == [ORDER_FILE]  # no temporary left behind
    loaded = OrderingNet.load(str(path), num_classes=4)
    assert loaded.config() == {"num_classes": 4, "size": 16, "width": 4} and not loaded.training
    masks, classes = _random_pairs(5, 16, 4)
    np.testing.assert_array_equal(net.probabilities(masks, classes), loaded.probabilities(masks, classes))
    with pytest.raises(CheckpointError, match=r"order\.pth.*5 classes|trained for 4 classes.*5"):
        OrderingNet.load(str(path), num_classes=5)
    other = tmp_path / "stn.pth"
    torch.save({"format": "udgan-sims-stn-1", "state_dict": {}}, other)
    with pytest.raises(CheckpointError, match=r"stn\.pth is not a SIMS ordering network"):
        OrderingNet.load(str(other))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        OrderingNet.load(str(garbage))
    with pytest.raises(CheckpointError, match="missing.pth"):
        OrderingNet.load(str(tmp_path / "missing.pth"))


def test_class_count_baseline_and_accuracy_rules():
    m = np.zeros((4, 4), dtype=bool)
    pair = lambda a, b, front: PairSample(m, m, a, b, front)  # noqa: E731
    train = [pair(1, 2, True)] * 3 + [pair(2, 1, True)] + [pair(3, 3, False)]
    counts = class_order_counts(train, 4)
    assert counts[1, 2] == 3 and counts[2, 1] == 1 and counts[3, 3] == 1
    # 1 over 2 is called right, the reverse wrong, an unseen pair / same class counts half; unknown skipped
    test = [pair(1, 2, True), pair(2, 1, True), pair(0, 3, True), pair(3, 3, True), pair(1, 2, None)]
    assert class_count_accuracy(train, test, 4) == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert np.isnan(class_count_accuracy(train, [pair(1, 2, None)], 4))
    # undecided by classes: one class twice, or both orders seen (the rarer at least a quarter)
    ids = lambda found: [next(k for k, t in enumerate(test) if t is p) for p in found]  # noqa: E731
    assert ids(undecided_by_classes(train, test, 4)) == [0, 1, 3]  # 1 of 4 is a quarter
    assert ids(undecided_by_classes(train, test, 4, minority=0.3)) == [3]
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 4\)"):
        class_count_accuracy(train, [pair(1, 7, True)], 4)


# ---------------------------------------------------------------------- training on synthetic scenes
@pytest.fixture(scope="module")
def synthetic_pairs():
    """Pairs of 300 synthetic training scenes at 48 px (dataset depth), split by image 240 / 60."""
    dataset = create_dataset(argparse.Namespace(**SYNTH))
    per_image = []
    for i in range(len(dataset)):
        s = dataset[i]
        per_image.append(adjacent_pairs(s["label"][0], s["depth"][0], ignore_ids=(NUM_CLASSES, 255)))
    train = [p for ps in per_image[:240] for p in ps]
    test = [p for ps in per_image[240:] for p in ps]
    return train, test


@pytest.fixture(scope="module")
def trained_net(synthetic_pairs):
    """400 steps at 24 px, width 8. One thread: the trajectory (and so the accuracy) depends on
    how reductions are split, and one thread is also fastest for these tiny convolutions."""
    train, _ = synthetic_pairs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_ordering(train, NUM_CLASSES, steps=400, batch_size=32, lr=1e-3, seed=0, size=24, width=8,
                              log=None)
    finally:
        torch.set_num_threads(threads)


def test_trained_network_beats_class_counts_where_classes_cannot_decide(synthetic_pairs, trained_net):
    """Class counts already order most synthetic pairs right (sky / building / road are behind
    cars, poles and people nearly always), so the network is compared with them where classes
    alone cannot decide: held-out pairs whose two classes were seen in both orders in the
    training pairs (the less frequent order at least a quarter of the time, e.g. road / car,
    sidewalk / tree, grass / tree) or that have one class twice (building / building, car / car,
    where the counts can only guess). There the geometry of the two masks (which is lower,
    which surrounds the other) decides, and only the network sees it. Overall it must have
    learnt the class prior as well: above 0.8 of all held-out pairs (the counts get about 0.88,
    the network 0.84 to 0.92 over seeds and thread counts, so only that floor is asserted)."""
    train, test = synthetic_pairs
    net, stats = trained_net
    hard = undecided_by_classes(train, test, NUM_CLASSES)
    assert len(known(train)) > 1000 and len(hard) >= 100
    assert stats["loss_last"] < stats["loss_first"]
    net_hard, counts_hard = pair_accuracy(net, hard), class_count_accuracy(train, hard, NUM_CLASSES)
    assert counts_hard < 0.7  # these pairs really are undecided by classes
    # measured 0.76 vs 0.54 here (0.67 with 2 threads); other seeds 0.60-0.76: a small margin,
    # so that another CPU's rounding (a slightly different trajectory) cannot flip it
    assert net_hard > counts_hard + 0.02, (net_hard, counts_hard)
    assert pair_accuracy(net, test) > 0.8


# ---------------------------------------------------------------------- paint_order
class ClassRankNet(OrderingNet):
    """A stand-in with a known answer: f(a, b) = class of a, so a higher class is in front."""

    def score(self, x: torch.Tensor) -> torch.Tensor:
        mask_a, labels = x[:, 0:1], x[:, 2:]
        ids = torch.arange(labels.shape[1], dtype=x.dtype).view(1, -1, 1, 1)
        per_pixel = (labels * ids * mask_a).flatten(1).sum(1)
        return per_pixel / mask_a.flatten(1).sum(1).clamp_min(1)


def test_paint_order_follows_the_network_scores():
    label, depth = _scene()
    label[label == 255] = 0
    image = np.zeros(label.shape + (3,), dtype=np.uint8)
    bank = SegmentBank(5, shape_size=8, min_segment_pixels=1)
    bank.add_image(label, image, depth)
    matches = retrieve(bank, label)
    assert sorted(m.class_id for m in matches) == [0, 1, 2, 3, 4]
    net = ClassRankNet(num_classes=5, size=16, width=2).eval()
    order = paint_order(matches, None, bank, order_net=net, label=label)
    # mean P(in front of the neighbours), P = sigmoid(class_a - class_b): bg 0.11 (behind all
    # four), A 0.43 (bg, C), B 0.58 (bg, C), C 0.86 (bg, A, B), the blob 0.98 (bg only)
    assert [matches[k].class_id for k in order] == [0, 1, 2, 3, 4]
    scores = front_scores(net, label, [m.mask for m in matches], [m.class_id for m in matches])
    assert order == sorted(range(len(matches)), key=lambda k: (scores[k], -matches[k].area))
    # without order_net: unchanged, by segment depth (bg and blob 0.1, B 0.2, A 0.5, C 0.9)
    by_depth = paint_order(matches, depth, bank)
    assert [matches[k].class_id for k in by_depth][-3:] == [2, 1, 3]
    with pytest.raises(ValueError, match="label"):
        paint_order(matches, None, bank, order_net=net)


def test_front_scores_of_lonely_and_adjacent_components(trained_net):
    net, _ = trained_net
    label = np.zeros((32, 32), dtype=np.int64)
    label[4:12, 4:12] = 6
    label[20:28, 20:28] = 7
    s = front_scores(net, label, [label == 0, label == 6], [0, 6])
    assert s.shape == (2,) and s[0] + s[1] == pytest.approx(1.0)  # one pair: p and 1 - p
    assert front_scores(net, label, [label == 6], [6]).tolist() == [0.5]  # alone: undecided
    far = front_scores(net, label, [label == 6, label == 7], [6, 7])  # not adjacent
    assert far.tolist() == [0.5, 0.5]
    assert front_scores(net, label, [], []).shape == (0,)


# ---------------------------------------------------------------------- the script
def test_script_writes_the_network_and_a_json_line(tmp_path, capsys):
    args = ["--dataset_mode", "synthetic", "--synthetic_num", "10", "--crop_size", "32", "--load_size", "32",
            "--steps", "4", "--batch_size", "4", "--order_size", "16", "--order_width", "2",
            "--checkpoints_dir", str(tmp_path), "--name", "run", "--gpu_ids", "-1"]
    result = train_script(args)
    out = tmp_path / "run" / "segment_bank" / ORDER_FILE
    assert out.is_file() and result["out"] == str(out)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train_images"] == 8 and summary["val_images"] == 2
    assert summary["train_pairs"] > 0 and summary["val_pairs"] > 0
    assert 0 <= summary["val_accuracy_network"] <= 1 and 0 <= summary["val_accuracy_class_counts"] <= 1
    assert summary["depth_from"] == {"dataset": 10, "generator": 0, "none": 0}
    assert OrderingNet.load(str(out), num_classes=NUM_CLASSES).config() == {
        "num_classes": NUM_CLASSES, "size": 16, "width": 2}


def _custom_without_depth(root: Path) -> list:
    from data import DATASETS
    flags = DATASETS.get("custom").write_example(str(root), num=4, size=32)
    shutil.rmtree(root / "depth")
    return ["--dataset_mode", "custom", *flags, "--label_nc", "13", "--crop_size", "32", "--load_size", "32",
            "--preprocess_mode", "fixed"]


def test_script_without_depth_asks_for_a_depth_generator(tmp_path, capsys):
    args = _custom_without_depth(tmp_path / "data") + [
        "--steps", "2", "--checkpoints_dir", str(tmp_path), "--gpu_ids", "-1"]
    with pytest.raises(SystemExit) as e:
        train_script(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--depth_checkpoint" in err and "none of the 4 training samples has a depth map" in err
    with pytest.raises(SystemExit):
        train_script(args + ["--depth_checkpoint", str(tmp_path / "nothing.pth")])
    assert "--depth_checkpoint" in capsys.readouterr().err and not (tmp_path / "sims").exists()


def _save_depth_generator(folder: Path) -> Path:
    """A tiny untrained UDGAN depth generator file for the custom example's label space
    (13 classes, instance edges, no dontcare): it labels the pairs when the data has no depth."""
    from helpers import network_opt
    from models.networks.generators.depthspade import UNetDepthGenerator
    from util import checkpoint
    opts = network_opt(label_nc=13, contain_dontcare_label=False, no_instance=False, cond_inputs=[],
                       semantic_nc=14, ngf_depth=4, depth_num_down=2, netG_depth="unet",
                       model="udgan", netG="depthspade")
    torch.manual_seed(0)
    checkpoint.save_checkpoint(str(folder), "latest", {"G_depth": UNetDepthGenerator(opts)}, opts, step=1)
    return folder / "latest_net_G_depth.pth"


def test_script_labels_pairs_with_a_depth_generator(tmp_path, capsys):
    gdepth = _save_depth_generator(tmp_path / "udgan")
    out = tmp_path / "order" / "net.pth"
    args = _custom_without_depth(tmp_path / "data") + [
        "--steps", "2", "--batch_size", "2", "--order_size", "16", "--order_width", "2", "--val_fraction", "0.25",
        "--depth_checkpoint", str(gdepth), "--out", str(out), "--gpu_ids", "-1"]
    summary = train_script(args)
    assert summary["depth_from"] == {"dataset": 0, "generator": 4, "none": 0}
    assert summary["train_images"] == 3 and summary["val_images"] == 1 and summary["train_pairs"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(out)
    assert OrderingNet.load(str(out), num_classes=13).num_classes == 13
