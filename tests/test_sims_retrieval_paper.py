"""SIMS retrieval as published ("paper" mode: mask IoU in the image frame, small components left
as holes, the segment pasted at its own place), the training-time frame stencil, and the bank's
full-size crops, frame masks, colour statistics and source paths."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import models.sims.canvas as canvas_module
from models.sims.bank import SegmentBank, find_components, frame_descriptor
from models.sims.canvas import compose_canvas, source_box_in_frame
from models.sims.retrieval import PAPER_MIN_AREA_FRAC, frame_stencil, retrieve
from util.errors import DatasetError

DONTCARE = 4  # label_nc 4: id 4 is the dontcare id, not a segment class
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def square_scene(box, cls: int = 1, colour=RED, size: int = 64):
    """(label (size, size) int64, image (size, size, 3) uint8): one square of ``cls`` on dontcare."""
    label = np.full((size, size), DONTCARE, dtype=np.int64)
    image = np.zeros((size, size, 3), dtype=np.uint8)
    y0, x0, y1, x1 = box
    label[y0:y1, x0:x1] = cls
    image[y0:y1, x0:x1] = colour
    return label, image


def two_place_bank() -> SegmentBank:
    """Source 0: a blue class-1 square top left; source 1: the same square, red, bottom right."""
    bank = SegmentBank(label_nc=4, shape_size=8, min_segment_pixels=4, frame_size=16)
    bank.add_image(*square_scene((8, 8, 24, 24), colour=BLUE), source_path="train/a.png")
    bank.add_image(*square_scene((40, 40, 56, 56), colour=RED), source_path="train/b.png")
    return bank


def test_paper_mode_prefers_the_same_place_shape_mode_does_not():
    bank = two_place_bank()
    for box, source in (((40, 40, 56, 56), 1), ((8, 8, 24, 24), 0), ((38, 36, 54, 52), 1)):
        query, _ = square_scene(box)
        (m,) = retrieve(bank, query, mode="paper")
        assert bank.sources[m.bank_index] == source, box
        # the other candidate does not overlap at all: frame IoU 0, only the context term (1)
        (other,) = retrieve(bank, query, mode="paper", exclude_sources=[source])
        assert other.score == pytest.approx(1.0, abs=1e-6) and m.score >= 1.5
        # shape mode: identical shapes, identical (all-dontcare) rings -> the same score for both
        idx = np.flatnonzero(bank.class_ids == 1)
        scores = [retrieve(bank, query, mode="shape", exclude_sources=[int(s)])[0].score
                  for s in bank.sources[idx]]
        assert scores[0] == pytest.approx(scores[1], abs=1e-6) == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ValueError, match="mode"):
        retrieve(bank, query, mode="frame")


def test_paper_scores_match_brute_force_frame_iou():
    rng = np.random.default_rng(3)
    bank = SegmentBank(label_nc=4, shape_size=8, min_segment_pixels=4, frame_size=8)
    for s in range(4):
        label = rng.integers(0, 3, size=(4, 4)).repeat(8, 0).repeat(8, 1)  # blocky 32 x 32 maps
        bank.add_image(label, rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8), source_id=s)
    query = rng.integers(0, 3, size=(4, 4)).repeat(8, 0).repeat(8, 1)
    comps = find_components(query, bank.ignore_ids, 1)
    _, _, contexts, _ = bank.describe(query, comps)
    matches = retrieve(bank, query, mode="paper", min_area_frac=0.0)
    for k, m in enumerate(matches):
        q = frame_descriptor(comps.masks[k], comps.bboxes[k], comps.hw, 8)
        brute = []
        for j in np.flatnonzero(bank.class_ids == m.class_id):
            f = bank.frame_mask(int(j), (8, 8)).ravel()  # 32 -> 8 nearest = the frame grid here
            iou = (q & f).sum() / max((q | f).sum(), 1)
            ctx = float(contexts[k] @ bank.contexts[j] / np.linalg.norm(contexts[k]) / np.linalg.norm(bank.contexts[j]))
            brute.append(iou + ctx)
        assert m.score == pytest.approx(max(brute), abs=1e-5)


def test_small_components_are_holes_in_paper_mode():
    bank = two_place_bank()
    query, _ = square_scene((40, 40, 56, 56))
    query[2:6, 2:6] = 1  # 16 px: under 1000 / (256 * 512) of a 64 x 64 image (31 px)
    assert 16 < PAPER_MIN_AREA_FRAC * 64 * 64 < 256
    paper = retrieve(bank, query, mode="paper")
    assert [(m.area, m.bank_index >= 0) for m in paper] == [(16, False), (256, True)]
    assert np.isnan(paper[0].score)
    assert all(m.bank_index >= 0 for m in retrieve(bank, query, mode="shape"))
    assert all(m.bank_index >= 0 for m in retrieve(bank, query, mode="paper", min_area_frac=0.0))
    assert all(m.bank_index < 0 for m in retrieve(bank, query, mode="shape", min_area_frac=0.5))
    with pytest.raises(ValueError, match="min_area_frac"):
        retrieve(bank, query, mode="paper", min_area_frac=2.0)


def test_exclude_sources():
    bank = two_place_bank()
    query, _ = square_scene((40, 40, 56, 56))
    for mode in ("paper", "shape"):
        (m,) = retrieve(bank, query, mode=mode, exclude_sources=[1])
        assert bank.sources[m.bank_index] == 0
        (m,) = retrieve(bank, query, mode=mode, exclude_sources={0, 1})
        assert m.bank_index == -1  # only excluded photos have the class: a hole
        picks = {bank.sources[m.bank_index] for s in range(8)
                 for m in retrieve(bank, query, mode=mode, top_k=2, seed=s, exclude_sources=[0])}
        assert picks == {1}  # top_k never falls back on an excluded segment


def test_frame_stencil_returns_another_sources_mask_in_the_frame():
    bank = SegmentBank(label_nc=4, shape_size=8, min_segment_pixels=4)
    own_label, own_image = square_scene((8, 8, 24, 24))
    bank.add_image(own_label, own_image)                                     # source 0: the photo itself
    near_label, near_image = square_scene((10, 8, 26, 24), colour=(200, 100, 0))
    bank.add_image(near_label, near_image)                                   # source 1: nearly the same place
    bank.add_image(*square_scene((40, 40, 56, 56), colour=BLUE))             # source 2: elsewhere
    bank.add_image(*square_scene((8, 40, 24, 56), cls=2))                    # another class
    rng = np.random.default_rng(0)
    mask = own_label == 1
    stencil, mean, cov = frame_stencil(bank, 1, mask, exclude_source=0, rng=rng)
    assert stencil.dtype == bool and np.array_equal(stencil, near_label == 1)
    assert np.allclose(mean, np.array([200, 100, 0]) / 127.5 - 1, atol=1e-6) and np.allclose(cov, 0, atol=1e-6)
    # without exclusion the photo's own segment wins; a half-size frame gets the mask scaled
    own, _, _ = frame_stencil(bank, 1, mask, exclude_source=None, rng=rng)
    assert np.array_equal(own, mask)
    half, _, _ = frame_stencil(bank, 1, mask[::2, ::2], exclude_source=0, rng=rng)
    assert np.array_equal(half, (near_label == 1)[::2, ::2])
    # no segment of the class from another photo -> None
    assert frame_stencil(bank, 2, near_label == 1, exclude_source=3, rng=rng) is None
    assert frame_stencil(bank, 3, mask, exclude_source=None, rng=rng) is None
    with pytest.raises(ValueError, match="non-empty"):
        frame_stencil(bank, 1, np.zeros((64, 64), bool), exclude_source=0, rng=rng)
    # ties (two segments at the same place) are broken by the generator, both get picked
    tie = SegmentBank(label_nc=4, shape_size=8, min_segment_pixels=4)
    tie.add_image(*square_scene((8, 8, 24, 24)))
    tie.add_image(*square_scene((8, 8, 24, 24), colour=BLUE))
    tie.add_image(*square_scene((8, 8, 24, 24), colour=GREEN))
    means = {tuple(np.round(frame_stencil(tie, 1, mask, 0, np.random.default_rng(s))[1], 3)) for s in range(12)}
    assert len(means) == 2


def test_bank_keeps_large_crops_at_full_size_and_records_sources(tmp_path):
    rng = np.random.default_rng(1)
    label = np.zeros((128, 128), dtype=np.int64)
    label[10:110, 20:120] = 1  # a 100 x 100 segment
    image = rng.integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
    bank = SegmentBank(label_nc=4, shape_size=8)
    assert bank.max_crop_side == 0 and bank.frame_size == 32
    bank.add_image(label, image, source_id=2, source_path="data/x/img_2.png")
    bank.save(str(tmp_path / "bank"))
    loaded = SegmentBank.load(str(tmp_path / "bank"))
    i = int(np.flatnonzero(loaded.class_ids == 1)[0])
    rgb, mask = loaded.crop(i)
    assert rgb.shape == (100, 100, 3) and mask.all()
    assert np.array_equal(rgb, image[10:110, 20:120])  # no blur: the pixels round-trip exactly
    assert np.array_equal(loaded.frame_mask(i, (128, 128)), label == 1)
    assert np.array_equal(loaded.frame_mask(i, (64, 32)), (label == 1)[::2, ::4])
    pixels = image[10:110, 20:120].reshape(-1, 3) / 127.5 - 1
    mean, cov = loaded.colour_stats(i)
    assert np.allclose(mean, pixels.mean(0), atol=1e-5)
    assert np.allclose(cov, np.cov(pixels.T, bias=True), atol=1e-5)
    idx, frames = loaded.frame_masks(1)
    assert idx.tolist() == [i] and frames.shape == (1, 32 * 32) and frames.dtype == np.float32
    # a cell is set when at least half covered: rows 10..109 set cells 2 (8..11) to 27 (108..111)
    grid = np.zeros((32, 32), dtype=np.float32)
    grid[2:28, 5:30] = 1
    assert np.array_equal(frames[0].reshape(32, 32), grid)
    assert loaded.frame_masks(1)[1] is frames  # cached
    assert loaded.source_paths == ["", "", "data/x/img_2.png"]
    assert loaded.source_index("data/x/./img_2.png") == 2 and loaded.source_index("data/x/img_3.png") is None
    # the old cap still exists as an option: a capped crop is shrunk, its frame mask still exact
    capped = SegmentBank(label_nc=4, shape_size=8, max_crop_side=50)
    capped.add_image(label, image)
    j = int(np.flatnonzero(capped.class_ids == 1)[0])
    assert capped.crop(j)[1].shape == (50, 50) and np.array_equal(capped.frame_mask(j, (128, 128)), label == 1)


def test_old_format_bank_is_a_clear_error(tmp_path):
    bank = two_place_bank()
    bank.save(str(tmp_path / "b"))
    path = tmp_path / "b" / "index.json"
    index = json.loads(path.read_text())
    index["format"] = "udgan-sims-bank-1"
    path.write_text(json.dumps(index))
    with pytest.raises(DatasetError, match=r"udgan-sims-bank-1.*rebuild with scripts/build_segment_bank.py"):
        SegmentBank.load(str(tmp_path / "b"))


def test_compose_canvas_paper_mode_pastes_the_segment_where_it_was():
    bank = two_place_bank()
    red = torch.tensor(RED, dtype=torch.float32) / 127.5 - 1
    query, _ = square_scene((38, 38, 54, 54))  # 2 px up-left of source 1's square
    stats = {}
    canvas, filled = compose_canvas(bank, query, retrieval="paper", stats=stats)
    assert stats == {"components": 1, "retrieved": 1, "pasted": 1}
    expected = torch.zeros(64, 64)
    expected[40:56, 40:56] = 1  # its own place, inside the query square dilated by 2 px
    assert torch.equal(filled[0], expected)
    assert torch.allclose(canvas[:, 40:56, 40:56], red[:, None, None].expand(3, 16, 16), atol=1e-5)
    assert canvas[:, filled[0] == 0].abs().sum() == 0
    # shape mode fits the same segment into the query's box instead
    _, filled_shape = compose_canvas(bank, query, retrieval="shape")
    expected_shape = torch.zeros(64, 64)
    expected_shape[38:54, 38:54] = 1
    assert torch.equal(filled_shape[0], expected_shape)
    # a source of another size: the box is scaled to the query frame
    assert source_box_in_frame(bank, 1, (32, 32)) == (20, 20, 28, 28)
    _, filled_half = compose_canvas(bank, query[::2, ::2], retrieval="paper", min_area_frac=0.0)
    assert torch.equal(filled_half[0], expected[::2, ::2])
    with pytest.raises(ValueError, match="retrieval"):
        compose_canvas(bank, query, retrieval="box")


class ShiftSTN:
    """A stand-in frame transformation network: a fixed theta moving the segment right by
    ``px`` pixels (out(x) = in(x - px)), recording what it was given."""

    num_classes = 5

    def __init__(self, px: int, width: int = 64) -> None:
        self.tx = -2.0 * px / width
        self.calls = []

    def predict(self, rgb, mask, labels):
        self.calls.append((np.shape(rgb), np.shape(mask), np.shape(labels), np.asarray(labels).sum(axis=1).max()))
        theta = np.zeros((len(rgb), 2, 3), dtype=np.float32)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = self.tx
        return theta


def test_compose_canvas_paper_mode_applies_the_frame_stn_and_order_net(monkeypatch):
    bank = two_place_bank()
    query, _ = square_scene((40, 40, 56, 56))
    stn = ShiftSTN(4)
    canvas, filled = compose_canvas(bank, query, retrieval="paper", frame_stn=stn)
    assert stn.calls == [((1, 3, 64, 64), (1, 1, 64, 64), (1, 5, 64, 64), 1.0)]
    expected = torch.zeros(64, 64)
    expected[40:56, 44:58] = 1  # moved right by 4 px, clipped to the query dilated by 2 px
    assert torch.equal(filled[0], expected)
    red = torch.tensor(RED, dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(canvas[:, 40:56, 44:58], red[:, None, None].expand(3, 16, 14), atol=1e-5)
    with pytest.raises(ValueError, match="frame_stn"):
        compose_canvas(bank, query, retrieval="shape", frame_stn=stn)
    # order_net (and the label) reach paint_order only when given
    seen = []
    original = canvas_module.paint_order

    def recording(matches, depth, b, **kwargs):
        seen.append(sorted(kwargs))
        return original(matches, depth, b)

    monkeypatch.setattr(canvas_module, "paint_order", recording)
    compose_canvas(bank, query, retrieval="paper")
    compose_canvas(bank, query, retrieval="paper", order_net=object())
    assert seen == [[], ["label", "order_net"]]
