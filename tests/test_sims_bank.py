"""SIMS segment bank: connected components, descriptors, save/load round trip, learned order,
and the build script end to end on the synthetic dataset."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from models.sims.bank import SegmentBank, connected_components, find_components
from util.errors import DatasetError


def two_class_map() -> np.ndarray:
    """(16, 20): class 1 = two blobs (one touching the other only diagonally -> one component
    under 8-connectivity) plus a separate blob; class 2 a bar; 0 background; 5 = dontcare."""
    label = np.zeros((16, 20), dtype=np.int64)
    label[1:4, 1:4] = 1          # blob A ...
    label[4:6, 4:7] = 1          # ... diagonal neighbour of A: same component
    label[10:14, 2:6] = 1        # blob B
    label[2:12, 12:15] = 2       # bar
    label[14:16, 16:20] = 5      # dontcare (label_nc = 5)
    return label


def test_connected_components_eight_connectivity_and_ignore():
    label = two_class_map()
    comps = connected_components(label, ignore=(5,))
    by_class = {}
    for cls, mask in comps:
        by_class.setdefault(cls, []).append(mask)
    assert sorted(by_class) == [0, 1, 2]  # 5 ignored
    assert len(by_class[1]) == 2 and len(by_class[2]) == 1
    first = by_class[1][0]
    assert first[1:4, 1:4].all() and first[4:6, 4:7].all() and first.sum() == 9 + 6
    assert np.array_equal(by_class[1][1], (np.arange(16)[:, None] >= 10) & (np.arange(16)[:, None] < 14)
                          & (np.arange(20)[None, :] >= 2) & (np.arange(20)[None, :] < 6))
    # the masks partition the non-ignored pixels
    total = sum(m.astype(int) for _, m in comps)
    assert np.array_equal(total, (label != 5).astype(int))
    kept = connected_components(label, ignore=(5,), min_pixels=16)  # A (15 px) dropped, B (16) kept
    assert [(c, int(m.sum())) for c, m in kept] == [(0, int((label == 0).sum())), (1, 16), (2, 30)]


def test_bank_round_trip_exact(tmp_path):
    label = two_class_map()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    depth = np.linspace(0.1, 0.9, 16 * 20, dtype=np.float32).reshape(16, 20)
    bank = SegmentBank(label_nc=5, shape_size=8, min_segment_pixels=10)
    added = bank.add_image(label, image, depth)
    comps = find_components(label, ignore=(5,), min_pixels=10)
    assert added == len(comps) == 4  # background, A (15 px), B (16 px), bar (30 px)
    index = bank.save(str(tmp_path / "bank"))
    assert index["count"] == 4 and index["label_nc"] == 5 and index["shape_size"] == 8
    assert sorted(os.listdir(tmp_path / "bank")) == ["index.json", "pixels.npy", "segments.npz"]  # no tmp files
    loaded = SegmentBank.load(str(tmp_path / "bank"))
    assert isinstance(loaded.pixels, np.memmap)
    assert len(loaded) == 4
    assert np.array_equal(loaded.class_ids, comps.class_ids)
    assert np.array_equal(loaded.bboxes, comps.bboxes)
    assert [tuple(b) for b in loaded.bboxes[1:]] == [(1, 1, 6, 7), (10, 2, 14, 6), (2, 12, 12, 15)]
    for i in range(4):
        rgb, mask = loaded.crop(i)
        y0, x0, y1, x1 = loaded.bboxes[i]
        assert np.array_equal(rgb, image[y0:y1, x0:x1])
        assert np.array_equal(mask, comps.masks[i])
        expected_depth = np.median(depth[y0:y1, x0:x1][mask])
        assert loaded.depths[i] == pytest.approx(expected_depth, abs=1e-6)
    # the bar is a full rectangle: its shape descriptor is all ones; contexts are distributions
    assert loaded.shapes[3].all() and loaded.shapes.shape == (4, 64)
    assert np.allclose(loaded.contexts.sum(axis=1), 1.0, atol=1e-5)
    assert loaded.contexts[3, 0] == pytest.approx(1.0)  # the bar is surrounded by background only
    assert json.loads((tmp_path / "bank" / "index.json").read_text())["class_counts"] == {"0": 1, "1": 2, "2": 1}


def test_bank_errors(tmp_path):
    bank = SegmentBank(label_nc=3, min_segment_pixels=1000)
    assert bank.add_image(np.zeros((8, 8), np.int64), np.zeros((8, 8, 3), np.uint8)) == 0
    with pytest.raises(DatasetError, match="min_segment_pixels"):
        bank.save(str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match="build_segment_bank"):
        SegmentBank.load(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="label_nc"):
        SegmentBank(label_nc=3).add_image(np.full((8, 8), 7), np.zeros((8, 8, 3), np.uint8))
    # a set torn by an interrupted save is detected, not half-loaded
    good = SegmentBank(label_nc=3, min_segment_pixels=1)
    good.add_image(np.eye(8, dtype=np.int64), np.zeros((8, 8, 3), np.uint8))
    good.save(str(tmp_path / "b"))
    index = json.loads((tmp_path / "b" / "index.json").read_text())
    index["build_id"] = "other"
    (tmp_path / "b" / "index.json").write_text(json.dumps(index))
    with pytest.raises(DatasetError, match="incomplete"):
        SegmentBank.load(str(tmp_path / "b"))


def test_learned_order_counts_small_inside_big():
    """Without depth, a segment whose box lies inside its neighbour's is counted as in front."""
    label = np.zeros((32, 32), dtype=np.int64)
    label[4:28, 4:28] = 1
    label[12:20, 12:20] = 2  # class 2 inside class 1
    bank = SegmentBank(label_nc=3, min_segment_pixels=4)
    bank.add_image(label, np.zeros((32, 32, 3), np.uint8))
    prob = bank.above_probability()
    assert bank.order_counts[2, 1] == 1 and bank.order_counts[1, 2] == 0
    assert prob[2, 1] > 0.5 > prob[1, 2]
    # with depth saying class 1 is nearer (e.g. a window seen through), depth wins
    depth = np.where(label == 1, 0.9, 0.2).astype(np.float32)
    bank_d = SegmentBank(label_nc=3, min_segment_pixels=4)
    bank_d.add_image(label, np.zeros((32, 32, 3), np.uint8), depth)
    assert bank_d.order_counts[1, 2] == 1 and bank_d.order_counts[2, 1] == 0


def test_build_script_end_to_end(tmp_path, capsys):
    from scripts.build_segment_bank import main

    bank_dir = tmp_path / "bank"
    args = ["--dataset_mode", "synthetic", "--synthetic_num", "6", "--crop_size", "64", "--load_size", "64",
            "--gpu_ids", "-1", "--checkpoints_dir", str(tmp_path / "ck"), "--timing_maps", "2"]
    summary = main(args + ["--bank_dir", str(bank_dir)])
    out = capsys.readouterr().out
    assert "segments" in out and "ms per map" in out and "source size, no cap" in out
    assert summary["maps"] == 6 and summary["segments"] > 6 and summary["size_mb"] > 0
    assert summary["components_per_map"] > 0 and summary["retrieval_ms_per_map"] > 0
    assert summary["paper_retrieval_ms_per_map"] > 0 and summary["max_crop_side"] == 0
    bank = SegmentBank.load(str(bank_dir))
    assert len(bank) == summary["segments"]
    assert set(np.unique(bank.sources)) == set(range(6))
    # crops at the training resolution (64 px here): the background's crop spans the frame
    assert summary["crop_side_max"] == int(bank.crop_hw.max()) == 64
    assert np.array_equal(bank.crop_hw, bank.bboxes[:, 2:] - bank.bboxes[:, :2])
    # each photo's path is recorded and maps back to its source id
    assert len(bank.source_paths) == 6 and all(bank.source_paths) and summary["source_paths"] == 6
    assert [bank.source_index(p) for p in bank.source_paths] == list(range(6))
    assert np.isfinite(bank.depths).all()  # synthetic scenes carry depth
    assert bank.info["dataset_mode"] == "synthetic" and bank.info["crop_size"] == 64
    assert (bank.areas >= 16).all()
    # default place: <checkpoints_dir>/<name>/segment_bank, where --model sims looks
    main(args + ["--name", "mysims", "--timing_maps", "0"])
    assert (tmp_path / "ck" / "mysims" / "segment_bank" / "index.json").is_file()
    # nothing big enough -> a clear error, exit status 2
    with pytest.raises(SystemExit) as exc:
        main(args + ["--bank_dir", str(tmp_path / "none"), "--min_segment_pixels", "100000"])
    assert exc.value.code == 2
    assert "min_segment_pixels" in capsys.readouterr().err
