"""SIMS training canvases simulated as published (``simulate_canvas_paper``): stencils retrieved
from other photos, colour transfer, elided boundary bands, small segments as holes, and the
jittered input label map (void)."""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np
import pytest
import torch
from scipy import ndimage

from models.sims.simulate import (PaperSimulationConfig, Stencil, component_map, monge_kantorovich_matrix,
                                  simulate_canvas_paper, simulate_canvases_paper, stencils_from_label_maps,
                                  transfer_colours)

SIZE = 64
NO_JITTER = dict(jitter_degrees=0.0, jitter_shift_frac=0.0)


def _square(top: int, left: int, side: int, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def _square_label(top: int = 20, left: int = 20, side: int = 24) -> np.ndarray:
    """(64, 64): one class-1 square, dontcare (255) everywhere else: a single segment."""
    label = np.full((SIZE, SIZE), 255, dtype=np.int64)
    label[_square(top, left, side)] = 1
    return label


def _band(mask: np.ndarray, side: int) -> np.ndarray:
    """The boundary band as specified: pixels with a non-zero Sobel gradient of the mask
    (replicated border), dilated by a ``side`` x ``side`` square."""
    m = mask.astype(np.float64)
    edges = (ndimage.sobel(m, axis=0, mode="nearest") != 0) | (ndimage.sobel(m, axis=1, mode="nearest") != 0)
    return ndimage.binary_dilation(edges, structure=np.ones((side, side), dtype=bool)) if side > 1 else edges


def _fixed(mask: np.ndarray, mean: Optional[np.ndarray] = None, cov: Optional[np.ndarray] = None):
    """A stencil source that answers every query with ``mask`` (and the given colour stats)."""
    calls: List[int] = []

    def source(class_id: int, query: np.ndarray) -> Stencil:
        assert query.shape == mask.shape and query.dtype == bool
        calls.append(class_id)
        return Stencil(mask=mask, colour_mean=mean, colour_cov=cov)

    source.calls = calls  # type: ignore[attr-defined]
    return source


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_boundary_band_loses_about_elide_frac_of_its_pixels():
    label = _square_label()
    own = label == 1
    side = math.floor(0.05 * SIZE)  # 3 px square at 64 px
    band = _band(own, side) & own  # outside the square is dontcare: never filled
    cfg = PaperSimulationConfig(elide_frac=0.5, colour_transfer_prob=0.0, **NO_JITTER)
    fractions = []
    for seed in range(4):
        canvas, filled, void = simulate_canvas_paper(_image(), label, _gen(seed), cfg)
        assert canvas.shape == (3, SIZE, SIZE) and filled.shape == (1, SIZE, SIZE) and void.shape == (1, SIZE, SIZE)
        f = filled[0].numpy().astype(bool)
        holes = own & ~f
        assert not (f & ~own).any()
        assert holes.any() and not (holes & ~band).any()  # every hole lies in the band
        assert f[own & ~band].all()  # the interior stays whole
        fractions.append(holes[band].mean())
        assert not void.any()  # no jitter, no retrieved mask: the label map is untouched
    # the band (both sides of the boundary, dilated) loses floor(n/2) pixels at random; the part
    # inside the square loses about half of its pixels
    assert 0.35 < float(np.mean(fractions)) < 0.65, fractions
    assert len({round(x, 6) for x in fractions}) > 1  # a fresh choice per seed

    none = PaperSimulationConfig(elide_frac=0.0, colour_transfer_prob=0.0, **NO_JITTER)
    _, filled, _ = simulate_canvas_paper(_image(), label, _gen(0), none)
    assert np.array_equal(filled[0].numpy().astype(bool), own)


def test_band_holes_with_several_segments_stay_near_boundaries():
    label = np.zeros((SIZE, SIZE), dtype=np.int64)
    label[:, 32:] = 1
    label[10:30, 6:26] = 2
    label[40:58, 40:60] = 3
    cfg = PaperSimulationConfig(colour_transfer_prob=0.0, **NO_JITTER)
    _, filled, _ = simulate_canvas_paper(_image(), label, _gen(1), cfg)
    ids, _ = component_map(label)
    bands = np.zeros((SIZE, SIZE), dtype=bool)
    for k in range(ids.max() + 1):
        bands |= _band(ids == k, 3)
    f = filled[0].numpy().astype(bool)
    assert not (~f & ~bands).any() and f[~bands].all()
    assert 0.3 < (~f[bands]).mean() < 0.9  # about half per segment, later segments draw over


def test_pixels_are_stencilled_by_the_retrieved_mask():
    label = _square_label()
    own = label == 1
    other = _square(26, 14, 24)  # a same-class segment from another photo, shifted
    image = _image(3)
    exact = PaperSimulationConfig(elide_frac=0.0, **NO_JITTER)
    source = _fixed(other)
    canvas, filled, void = simulate_canvas_paper(image, label, _gen(0), exact, source)
    assert source.calls == [1]
    f = filled[0].numpy().astype(bool)
    assert np.array_equal(f, own & other)
    keep = torch.from_numpy(f)
    assert torch.equal(canvas[:, keep], image[:, keep])  # no colour stats: the photo's own pixels
    assert (canvas[:, ~keep] == 0).all()
    # the input label map: the retrieved mask blanks the pixels outside the segment
    assert np.array_equal(void[0].numpy(), other & ~own)

    elided = PaperSimulationConfig(**NO_JITTER)  # elide_frac 0.5, colour_transfer_prob 0.2
    canvas, filled, _ = simulate_canvas_paper(image, label, _gen(0), elided, source)
    f = filled[0].numpy().astype(bool)
    removed = own & other & ~f
    assert not (f & ~(own & other)).any() and removed.any()
    assert not (removed & ~_band(own & other, 3)).any()  # minus elided band pixels only
    keep = torch.from_numpy(f)
    assert torch.equal(canvas[:, keep], image[:, keep])


def test_mkl_colour_transfer_matches_target_mean_and_covariance():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(3, 3))
    pixels = rng.normal(size=(500, 3)) @ mix * 0.2 + rng.normal(size=3) * 0.1
    b = rng.normal(size=(3, 3))
    target_cov = b @ b.T * 0.05 + np.eye(3) * 0.01
    target_mean = np.array([0.3, -0.2, 0.1])
    out = transfer_colours(pixels, target_mean, target_cov)
    assert out.shape == (500, 3)
    np.testing.assert_allclose(out.mean(axis=0), target_mean, atol=1e-4)
    np.testing.assert_allclose(np.cov(out.T, bias=True), target_cov, atol=1e-4)
    # T is symmetric positive definite and maps S_a onto S_b
    source_cov = np.cov(pixels.T, bias=True)
    t = monge_kantorovich_matrix(source_cov, target_cov)
    np.testing.assert_allclose(t, t.T, atol=1e-10)
    assert np.linalg.eigvalsh(t).min() > 0
    np.testing.assert_allclose(t @ source_cov @ t, target_cov, atol=1e-6)
    # equal distributions: the identity; a flat source stays finite
    np.testing.assert_allclose(monge_kantorovich_matrix(source_cov, source_cov), np.eye(3), atol=1e-5)
    flat = transfer_colours(np.full((10, 3), 0.5), target_mean, target_cov)
    assert np.isfinite(flat).all()
    np.testing.assert_allclose(flat, np.tile(target_mean, (10, 1)), atol=1e-6)


def test_colour_transfer_in_the_canvas_happens_with_probability_about_0_2():
    blocks = 8  # 64 segments of 8x8 px, one class each
    label = np.arange(blocks * blocks).reshape(blocks, blocks).repeat(SIZE // blocks, 0).repeat(SIZE // blocks, 1)
    image = (torch.randn(3, SIZE, SIZE, generator=_gen(5)) * 0.05).clamp(-1, 1)
    target_mean, target_cov = np.array([0.6, -0.5, 0.4]), np.eye(3) * 0.0025
    cfg = PaperSimulationConfig(min_area_frac=0.0, elide_frac=0.0, **NO_JITTER)
    transferred = total = 0
    for seed in range(5):
        # each segment's stencil is its own mask: no pixel is lost, only colours may change
        canvas, filled, _ = simulate_canvas_paper(
            image, label, _gen(seed), cfg, lambda c, m: Stencil(m.copy(), target_mean, target_cov))
        assert filled.bool().all()
        for k in range(blocks * blocks):
            m = torch.from_numpy(label == k)
            x, y = image[:, m].double(), canvas[:, m].double()
            if torch.equal(x.float(), y.float()):
                continue
            # a transferred segment takes the target's mean and covariance
            np.testing.assert_allclose(y.mean(dim=1).numpy(), target_mean, atol=1e-5)
            np.testing.assert_allclose(np.cov(y.numpy(), bias=True), target_cov, atol=1e-5)
            transferred += 1
        total += blocks * blocks
    assert 0.12 < transferred / total < 0.28, transferred / total
    never = PaperSimulationConfig(min_area_frac=0.0, elide_frac=0.0, colour_transfer_prob=0.0, **NO_JITTER)
    canvas, _, _ = simulate_canvas_paper(image, label, _gen(0), never,
                                         lambda c, m: Stencil(m.copy(), target_mean, target_cov))
    assert torch.equal(canvas, image)


def test_small_segments_are_holes():
    label = np.zeros((SIZE, SIZE), dtype=np.int64)
    label[:, 32:] = 1
    label[8:13, 8:13] = 2  # 25 px <= 1000 / (256 * 512) * 64 * 64 = 31.25 px
    label[40:50, 8:20] = 3  # 120 px: large enough
    small, large = label == 2, label == 3
    cfg = PaperSimulationConfig(elide_frac=0.0, **NO_JITTER)
    source = _fixed(np.ones((SIZE, SIZE), dtype=bool))
    _, filled, _ = simulate_canvas_paper(_image(), label, _gen(0), cfg, source)
    f = filled[0].numpy().astype(bool)
    assert not f[small].any() and f[large].all() and f[~small].all()
    assert sorted(source.calls) == [0, 1, 3]  # no retrieval for the small one
    _, filled, _ = simulate_canvas_paper(_image(), label, _gen(0), PaperSimulationConfig(
        min_area_frac=0.0, elide_frac=0.0, **NO_JITTER))
    assert filled.bool().all()


def test_void_marks_jittered_pixels_only_outside_the_segment():
    label = _square_label()
    own = label == 1
    near = ndimage.binary_dilation(own, iterations=6)  # 10 deg about the centre, 2 px shift
    cfg = PaperSimulationConfig(jitter_degrees=10.0, jitter_shift_frac=0.03, colour_transfer_prob=0.0)
    seen = 0
    for seed in range(6):
        _, _, void = simulate_canvas_paper(_image(), label, _gen(seed), cfg)
        v = void[0].numpy()
        assert void.dtype == torch.bool
        assert not (v & own).any() and not (v & ~near).any()
        seen += int(v.any())
    assert seen >= 5
    # a later segment's own pixels are restored; an earlier one's are blanked
    two = np.zeros((SIZE, SIZE), dtype=np.int64)
    two[:, 32:] = 1
    everywhere = np.ones((SIZE, SIZE), dtype=bool)
    _, _, void = simulate_canvas_paper(_image(), two, _gen(0), PaperSimulationConfig(**NO_JITTER),
                                       _fixed(everywhere))
    assert np.array_equal(void[0].numpy(), two == 0)


def test_seed_decides_everything():
    label = np.zeros((SIZE, SIZE), dtype=np.int64)
    label[:, 32:] = 1
    label[10:30, 6:26] = 2
    image = _image(7)
    source = _fixed(_square(12, 8, 30), np.zeros(3), np.eye(3) * 0.01)
    cfg = PaperSimulationConfig(colour_transfer_prob=0.5)
    first = simulate_canvas_paper(image, label, _gen(11), cfg, source)
    again = simulate_canvas_paper(image, label, _gen(11), cfg, source)
    other = simulate_canvas_paper(image, label, _gen(12), cfg, source)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    # the batch helper draws the samples one after another from one generator
    batch = simulate_canvases_paper(torch.stack([image, image]), np.stack([label, label]), _gen(11), cfg,
                                    [source, source])
    g = _gen(11)
    one = [simulate_canvas_paper(image, label, g, cfg, source) for _ in range(2)]
    for j in range(3):
        assert batch[j].shape[0] == 2 and torch.equal(batch[j], torch.stack([o[j] for o in one]))


@pytest.mark.parametrize("field,value", [
    ("min_area_frac", 1.0), ("min_area_frac", -0.1), ("colour_transfer_prob", 1.2),
    ("band_frac", -0.01), ("elide_frac", float("nan")), ("jitter_degrees", 90.0),
    ("jitter_shift_frac", 0.6), ("elide_frac", "0.5"), ("ignore_ids", [255]),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"PaperSimulationConfig.{field}"):
        PaperSimulationConfig(**{field: value})


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"image must be \(3, H, W\)"):
        simulate_canvas_paper(torch.zeros(1, 8, 8), np.zeros((8, 8), dtype=np.int64))
    with pytest.raises(ValueError, match="differ in size"):
        simulate_canvas_paper(torch.zeros(3, 8, 8), np.zeros((4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="stencil source returned a mask"):
        simulate_canvas_paper(torch.zeros(3, 8, 8), np.zeros((8, 8), dtype=np.int64), None,
                              PaperSimulationConfig(), lambda c, m: Stencil(np.ones((4, 4), dtype=bool)))
    with pytest.raises(ValueError, match="one per image"):
        simulate_canvases_paper(torch.zeros(2, 3, 8, 8), np.zeros((2, 8, 8), dtype=np.int64), stencils=[None])
    with pytest.raises(ValueError, match="different sizes"):
        stencils_from_label_maps([np.zeros((8, 8)), np.zeros((4, 4))])
    with pytest.raises(ValueError, match="one image per label map"):
        stencils_from_label_maps([np.zeros((8, 8))], [torch.zeros(3, 8, 8)] * 2)


def test_stencils_from_label_maps_picks_the_same_class_segment_in_the_same_place():
    query = _square_label(20, 20, 24)
    own = query == 1
    # map A: class 1 far away, class 2 exactly in place; map B: class 1 nearly in place;
    # map C: two class-1 components, one overlapping a little
    a = np.zeros((SIZE, SIZE), dtype=np.int64)
    a[_square(0, 0, 16)] = 1
    a[own] = 2
    b = np.zeros((SIZE, SIZE), dtype=np.int64)
    b[_square(22, 21, 24)] = 1
    c = np.zeros((SIZE, SIZE), dtype=np.int64)
    c[_square(40, 40, 20)] = 1
    c[_square(2, 40, 10)] = 1
    images = [_image(20), _image(21), _image(22)]
    source = stencils_from_label_maps([a, b, c], images, ignore_ids=(255,))
    found = source(1, own)
    assert found is not None and np.array_equal(found.mask, _square(22, 21, 24))
    pixels = images[1][:, torch.from_numpy(found.mask)].double().numpy()
    np.testing.assert_allclose(found.colour_mean, pixels.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(found.colour_cov, np.cov(pixels, bias=True), atol=1e-6)
    assert np.array_equal(source(2, own).mask, own)  # the class decides, not the place alone
    assert source(7, own) is None  # no segment of that class anywhere
    no_colour = stencils_from_label_maps([a, b, c])(1, own)
    assert no_colour.colour_mean is None and no_colour.colour_cov is None
    # used as the source of a simulation: the canvas is the own square cut by map B's square
    cfg = PaperSimulationConfig(elide_frac=0.0, colour_transfer_prob=0.0, **NO_JITTER)
    _, filled, _ = simulate_canvas_paper(_image(), query, _gen(0), cfg, source)
    assert np.array_equal(filled[0].numpy().astype(bool), own & _square(22, 21, 24))
