"""SIMS' transformation network as published (models/sims/frame_stn.py) and its training script."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from models.sims.frame_stn import (FRAME_STN_FILE, MAX_SCALE, MAX_SHEAR, MAX_TRANSLATE, FrameSTN, bound_theta,
                                   evaluate_pairs, photometric_loss, train_frame_stn, training_pairs_from_frames, warp)
from util.errors import CheckpointError, DatasetError

SIZE = 32
CLASSES = 3


def disc_frames(n: int, seed: int, size: int = SIZE, band: bool = True):
    """[(image (3, S, S) in [-1, 1], label (S, S))]: a class-1 disc at a random place on a class-0
    background, with ``band`` a class-2 band along the top; smooth colour ramps, so a misplaced
    segment is visibly wrong in colour and its mask visibly off the label map."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    frames = []
    for _ in range(n):
        label = np.zeros((size, size), np.int64)
        cy, cx = rng.uniform(0.35, 0.65, 2)
        r = rng.uniform(0.15, 0.22)
        label[((yy - cy) ** 2 + (xx - cx) ** 2) < r * r] = 1
        if band:
            label[:4, :] = 2
        image = np.stack([np.sin(7 * xx + 3 * yy), np.cos(5 * yy - 2 * xx), xx - yy]).astype(np.float32) * 0.8
        image[:, label == 0] *= 0.25
        frames.append((image, label))
    return frames


def shift_pairs(n: int, seed: int):
    """Warp pairs whose known transform is a pure shift (up to 0.2 half-frames = 3 px); no band:
    a full-width band slid along itself looks the same, its shift is not recoverable."""
    return training_pairs_from_frames(disc_frames(n, seed, band=False), CLASSES, mode="warp", min_pixels=8, seed=seed,
                                      max_shift=0.2, max_scale=0.0, max_rotate=0.0)


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine spinning threads cost 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_inputs(n: int = 2, h: int = 24, w: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(n, 3, h, w, generator=g) * 2 - 1
    mask = (torch.rand(n, 1, h, w, generator=g) > 0.5).float()
    labels = torch.nn.functional.one_hot(torch.randint(0, CLASSES, (n, h, w), generator=g), CLASSES)
    return rgb, mask, labels.permute(0, 3, 1, 2).float()


def test_identity_at_init_and_shapes():
    torch.manual_seed(0)
    net = FrameSTN(CLASSES, size=SIZE, width=4)
    rgb, mask, labels = random_inputs()  # 24 x 40: not the network's size, not square
    theta = net(rgb, mask, labels)
    assert theta.shape == (2, 2, 3)
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3), atol=1e-6)
    assert torch.allclose(warp(rgb, theta), rgb, atol=1e-5)
    assert torch.allclose(warp(mask, theta), mask, atol=1e-5)
    np_theta = net.predict(rgb.numpy(), mask[:, 0].numpy(), labels.argmax(1).numpy())
    assert np_theta.shape == (2, 2, 3) and np_theta.dtype == np.float32
    with pytest.raises(ValueError, match="labels must be"):
        net(rgb, mask, labels[:, :2])
    with pytest.raises(ValueError, match="mask must be"):
        net(rgb, mask[:, :, :5], labels)


def test_theta_stays_bounded_whatever_the_last_layer_says():
    torch.manual_seed(0)
    net = FrameSTN(CLASSES, size=SIZE, width=4)
    with torch.no_grad():
        net.theta.weight.normal_(0, 50.0)  # wild outputs
    rgb, mask, labels = random_inputs(8, seed=3)
    theta = net(rgb, mask, labels)
    diag = torch.stack([theta[:, 0, 0], theta[:, 1, 1]])
    assert diag.min() >= 1 / MAX_SCALE - 1e-6 and diag.max() <= MAX_SCALE + 1e-6
    assert theta[:, 0, 1].abs().max() <= MAX_SHEAR + 1e-6 and theta[:, 1, 0].abs().max() <= MAX_SHEAR + 1e-6
    assert theta[:, :, 2].abs().max() <= MAX_TRANSLATE + 1e-6
    raw = torch.tensor([[-1e3] * 6, [1e3] * 6, [1.0, 0, 0, 0, 1.0, 0], [1.1, 0.01, 0.05, -0.01, 0.9, -0.05]])
    squashed = bound_theta(raw)
    assert torch.allclose(squashed[0], torch.tensor([[1 / MAX_SCALE, -MAX_SHEAR, -MAX_TRANSLATE],
                                                     [-MAX_SHEAR, 1 / MAX_SCALE, -MAX_TRANSLATE]]))
    assert torch.allclose(squashed[1], torch.tensor([[MAX_SCALE, MAX_SHEAR, MAX_TRANSLATE],
                                                     [MAX_SHEAR, MAX_SCALE, MAX_TRANSLATE]]))
    assert torch.equal(squashed[2], raw[2].view(2, 3))  # the identity is a fixed point
    assert torch.allclose(squashed[3], raw[3].view(2, 3), atol=0.01)  # near it, barely changed


def test_photometric_loss_is_zero_when_aligned_and_penalises_shrinking():
    frames = disc_frames(2, seed=4)
    pairs = training_pairs_from_frames(frames, CLASSES, mode="warp", min_pixels=8, max_shift=0.0, max_scale=0.0,
                                       max_rotate=0.0)
    rgb, mask, _, target_rgb, target_mask = pairs.batch(range(len(pairs)))
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(len(pairs), 2, 3)
    assert float(photometric_loss(eye, rgb, mask, target_rgb, target_mask, coverage_weight=0.0)) < 1e-5
    tiny = eye * torch.tensor([[4.0, 1, 1], [1, 4.0, 1]])  # samples a 4x zoom-out: a quarter-size segment
    with_cover = float(photometric_loss(tiny, rgb, mask, target_rgb, target_mask, coverage_weight=0.1))
    assert with_cover > 0.05  # most of the target uncovered: the coverage term charges for it
    # the stored ground truth undoes each pair's warp (the conventions of warp / invert_theta agree)
    # (on the discs: a background shifted against the frame's edge loses pixels no warp brings back)
    shifted = shift_pairs(4, seed=3)
    discs = (shifted.classes == 1).nonzero()[:, 0]
    rgb, mask, _, target_rgb, target_mask = shifted.batch(discs)
    eye = eye[:1].expand(len(discs), 2, 3)
    truth = shifted.ground_truth()[discs]
    assert float(photometric_loss(truth, rgb, mask, target_rgb, target_mask)) < \
        0.3 * float(photometric_loss(eye, rgb, mask, target_rgb, target_mask))


def test_save_load_round_trip_and_clear_errors(tmp_path):
    torch.manual_seed(0)
    net = FrameSTN(CLASSES, size=SIZE, width=4)
    with torch.no_grad():
        net.theta.weight.normal_(0, 0.1)
    path = tmp_path / FRAME_STN_FILE
    net.save(str(path), {"steps": 3})
    assert sorted(os.listdir(tmp_path)) == [FRAME_STN_FILE]  # no temp or journal left behind
    loaded = FrameSTN.load(str(path), num_classes=CLASSES)
    assert loaded.config() == net.config() and loaded.info == {"steps": 3}
    inputs = random_inputs()
    assert torch.equal(loaded(*inputs), net.eval()(*inputs))
    with pytest.raises(CheckpointError, match="--label_nc"):
        FrameSTN.load(str(path), num_classes=CLASSES + 1)
    other = tmp_path / "other.pth"
    torch.save({"format": "udgan-sims-stn-1", "config": {}, "state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a SIMS transformation network"):
        FrameSTN.load(str(other))
    with pytest.raises(CheckpointError, match="does not exist"):
        FrameSTN.load(str(tmp_path / "missing.pth"))


def test_retrieval_pairs_take_the_best_overlapping_segment_of_another_frame():
    frames = disc_frames(6, seed=7)
    pairs = training_pairs_from_frames(frames, CLASSES, mode="retrieval", min_pixels=8)
    assert len(pairs) > 0 and bool((pairs.query != pairs.source).all())
    labels = torch.stack([torch.as_tensor(lab) for _, lab in frames])
    for p in range(len(pairs)):
        cls = int(pairs.classes[p])
        assert bool((labels[pairs.source[p]][pairs.source_mask[p]] == cls).all())
        assert bool((labels[pairs.query[p]][pairs.target_mask[p]] == cls).all())
    # the disc (class 1) of frame 0 gets the disc with the highest IoU among the other frames
    discs = [torch.as_tensor(lab == 1) for _, lab in frames]
    ious = [float((discs[0] & d).sum()) / float((discs[0] | d).sum()) for d in discs[1:]]
    k = int(((pairs.query == 0) & (pairs.classes == 1)).nonzero()[0])
    assert int(pairs.source[k]) == 1 + int(np.argmax(ious))
    rgb, mask, onehot, target_rgb, target_mask = pairs.batch([k])
    assert torch.equal(onehot.argmax(1)[0], labels[0]) and torch.equal(target_rgb[0], torch.as_tensor(frames[0][0]))
    assert float(rgb[0].abs().sum(0)[mask[0, 0] == 0].max()) == 0.0  # nothing outside the segment
    held = training_pairs_from_frames(frames, CLASSES, mode="both", min_pixels=8, query_frames=[2])
    assert bool((held.query == 2).all()) and held.pre_theta is not None
    with pytest.raises(DatasetError, match="min_segment_pixels"):
        training_pairs_from_frames(frames, CLASSES, mode="warp", min_pixels=10_000)
    with pytest.raises(ValueError, match="same size"):
        training_pairs_from_frames(frames[:1] + disc_frames(1, 0, size=16), CLASSES)


def test_training_recovers_a_known_shift(one_thread):
    torch.manual_seed(0)
    train, held_out = shift_pairs(48, seed=1), shift_pairs(16, seed=2)
    net, stats = train_frame_stn(train.sampler(16, seed=0), steps=250, lr=3e-3, seed=0, size=SIZE, width=8)
    assert stats["loss_last"] < 0.5 * stats["identity_loss"]
    scores = evaluate_pairs(net, held_out)  # measured: about 0.2x the identity's L1, IoU +0.16
    assert scores["l1_stn"] < 0.5 * scores["l1_identity"], scores
    assert scores["iou_stn"] > scores["iou_identity"] + 0.08, scores
    rgb, mask, labels, _, _ = held_out.batch(range(len(held_out)))
    disc = held_out.classes == 1
    truth = held_out.ground_truth()[disc, :, 2]
    with torch.no_grad():
        shift_error = (net(rgb, mask, labels)[disc, :, 2] - truth).abs().mean()
    assert shift_error < 0.5 * truth.abs().mean()  # measured: about 0.2x, well below doing nothing


def test_script_paper_mode_end_to_end(tmp_path, capsys, one_thread):
    from scripts.train_sims_stn import main

    bank_dir = tmp_path / "bank"
    result = main(["--dataset_mode", "synthetic", "--synthetic_num", "8", "--crop_size", "32", "--load_size", "32",
                   "--gpu_ids", "-1", "--bank_dir", str(bank_dir), "--steps", "4", "--batch_size", "4",
                   "--stn_size", "32", "--width", "4", "--holdout", "0.25"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == json.loads(json.dumps(result)) and line["stn"] == "paper"
    assert line["out"] == str(bank_dir / FRAME_STN_FILE) and line["held_out_frames"] == 2
    for key in ("loss_first", "loss_last", "identity_loss", "eval_l1_identity", "eval_l1_stn",
                "eval_iou_identity", "eval_iou_stn"):
        assert np.isfinite(line[key]), key
    assert sorted(os.listdir(bank_dir)) == [FRAME_STN_FILE]
    net = FrameSTN.load(line["out"])
    assert net.config() == {"num_classes": net.num_classes, "size": 32, "width": 4}
    with pytest.raises(SystemExit):
        main(["--stn", "nope", "--bank_dir", str(bank_dir)])
    assert "--stn must be one of" in capsys.readouterr().err


def test_script_paper_mode_takes_the_dataset_from_the_bank(tmp_path, capsys, one_thread):
    from scripts.build_segment_bank import main as build_bank
    from scripts.train_sims_stn import main

    bank_dir = tmp_path / "bank"
    build_bank(["--dataset_mode", "synthetic", "--crop_size", "32", "--load_size", "32", "--synthetic_num", "5",
                "--bank_dir", str(bank_dir), "--gpu_ids", "-1", "--timing_maps", "0"])
    capsys.readouterr()
    result = main(["--bank_dir", str(bank_dir), "--gpu_ids", "-1", "--steps", "2", "--batch_size", "2",
                   "--stn_size", "16", "--width", "2", "--eval_pairs", "0"])
    assert result["frames"] == 5 and result["held_out_frames"] == 0 and "eval_l1_stn" not in result
    index = json.loads((bank_dir / "index.json").read_text())
    net = FrameSTN.load(str(bank_dir / FRAME_STN_FILE), num_classes=index["label_nc"])
    assert net.num_classes == index["label_nc"] and net.info["bank_build_id"] == index["build_id"]
    assert net.info["crop_size"] == 32 and net.info["synthetic_num"] == 5
    # the shape STN is still there, unchanged, beside it
    main(["--stn", "shape", "--bank_dir", str(bank_dir), "--steps", "2", "--batch_size", "4", "--eval_pairs", "4"])
    assert (bank_dir / "stn.pth").is_file()
