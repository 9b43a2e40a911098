"""evaluation.image_metrics (PSNR / SSIM / MSE, diversity) and evaluation.lpips.

SSIM and PSNR are checked against scikit-image's independent implementation with the Wang et
al. settings, and against closed-form values; LPIPS is checked for its loading path (weights
must come from the file, never random, never downloaded) and the distance's basic properties,
with a backbone file made here from a randomly initialised torchvision AlexNet.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from evaluation.image_metrics import PairedMetrics, diversity, l1_distance, mse, psnr, ssim
from evaluation.lpips import backbone_cache_path, load_lpips
from util.errors import WeightsError

ALEX_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's file name for the ImageNet AlexNet


def _pairs(seed: int = 0, n: int = 3, h: int = 48, w: int = 40):
    """Real images and noisy, clipped copies: float64 (n, 3, h, w) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 3, h, w, generator=g, dtype=torch.float64)
    real = torch.nn.functional.avg_pool2d(real, 3, 1, 1)  # some structure, not pure noise
    fake = (real + 0.1 * torch.randn(real.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return fake, real


def _skimage_ssim(fake: torch.Tensor, real: torch.Tensor, sigma: float = 1.5) -> np.ndarray:
    return np.array([sk_ssim(f.numpy(), r.numpy(), gaussian_weights=True, sigma=sigma,
                             use_sample_covariance=False, data_range=1.0, channel_axis=0,
                             K1=0.01, K2=0.03) for f, r in zip(fake, real)])


# ---------------------------------------------------------------------- PSNR / MSE / SSIM
def test_ssim_matches_scikit_image_with_wang_settings():
    fake, real = _pairs()
    ours = ssim(fake, real).numpy()
    reference = _skimage_ssim(fake, real)
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    # the tolerance is tight enough to catch a wrong setting: another sigma, or torchmetrics'
    # own average over the reflect-padded border, each differ by far more
    assert np.abs(_skimage_ssim(fake, real, sigma=1.0) - ours).max() > 1e-3
    from torchmetrics.functional.image import structural_similarity_index_measure as tm
    padded = tm(fake, real, gaussian_kernel=True, sigma=1.5, data_range=1.0, reduction="none")
    assert np.abs(padded.numpy() - ours).max() > 1e-3
    # float32 input gives the same numbers (computed in float64 inside)
    np.testing.assert_allclose(ssim(fake.float(), real.float()).numpy(), reference, atol=1e-5)


def test_ssim_closed_form_for_flat_images():
    # flat images: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1)^2
    a, b = 0.5, 0.25
    value = ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b))
    c1 = 0.01 ** 2
    assert float(value) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-6)
    x = _pairs()[1]
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))


def test_psnr_and_mse_known_values_and_scikit_image():
    real = torch.full((2, 3, 32, 32), 0.5)
    fake = real.clone()
    fake[0] += 0.1  # MSE 0.01 -> 20 dB
    fake[1, :, :16] -= 0.2  # half the pixels off by 0.2: MSE 0.02
    assert mse(fake, real).tolist() == pytest.approx([0.01, 0.02])
    assert psnr(fake, real).tolist() == pytest.approx([20.0, 10 * math.log10(50)])
    fake, real = _pairs(seed=1)
    reference = [sk_psnr(r.numpy(), f.numpy(), data_range=1.0) for f, r in zip(fake, real)]
    np.testing.assert_allclose(psnr(fake, real).numpy(), reference, rtol=1e-10)


def test_paired_metrics_accumulates_per_image_means():
    fake, real = _pairs(seed=2, n=5)
    m = PairedMetrics()
    m.update(fake[:2], real[:2])
    m.update(fake[2:], real[2:])
    got = m.compute()
    assert got["num_images"] == 5 == len(m) and got["psnr_identical"] == 0
    assert got["psnr"] == pytest.approx(float(psnr(fake, real).mean()))
    assert got["ssim"] == pytest.approx(float(_skimage_ssim(fake, real).mean()), abs=1e-6)
    assert got["mse"] == pytest.approx(float(((fake - real) ** 2).mean()))
    assert got["mse_255"] == pytest.approx(got["mse"] * 255 ** 2)
    assert m.per_image()["psnr"] == pytest.approx(psnr(fake, real).tolist())

    # uint8 input is read as value / 255
    u_fake, u_real = (fake * 255).round().to(torch.uint8), (real * 255).round().to(torch.uint8)
    m8 = PairedMetrics()
    m8.update(u_fake, u_real)
    assert m8.compute()["psnr"] == pytest.approx(float(psnr(u_fake / 255.0, u_real / 255.0).mean()))


def test_identical_pairs_are_left_out_of_the_psnr_mean():
    fake, real = _pairs(seed=3, n=2)
    m = PairedMetrics()
    m.update(fake, real)
    m.update(real[:1], real[:1])  # identical: infinite PSNR
    got = m.compute()
    assert got["psnr_identical"] == 1 and got["num_images"] == 3
    assert got["psnr"] == pytest.approx(float(psnr(fake, real).mean()))
    assert got["ssim"] == pytest.approx(float((ssim(fake, real).sum() + 1.0) / 3))
    same = PairedMetrics()
    same.update(real, real)
    assert same.compute()["psnr"] == math.inf


def _structured(seed: int, n: int, h: int, w: int) -> tuple:
    """(fake, real) with edges, flat regions, gradients and texture: float64 in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64),
                            torch.linspace(0, 1, w, dtype=torch.float64), indexing="ij")
    real = torch.empty(n, 3, h, w, dtype=torch.float64)
    for i in range(n):
        real[i, 0] = xx  # horizontal ramp
        real[i, 1] = ((xx * (4 + i)).floor() + (yy * 3).floor()) % 2  # checkerboard: hard edges
        real[i, 2] = 0.5 + 0.5 * torch.sin(12 * xx + 7 * yy + i)
    real[:, :, : h // 3, : w // 3] = 0.25  # a flat block in every channel
    fake = real.clone()
    fake[:, :, h // 2:] = (fake[:, :, h // 2:] + 0.2 * torch.randn(
        fake[:, :, h // 2:].shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    fake[:, 1] = torch.roll(fake[:, 1], shifts=2, dims=-1)  # a misaligned channel
    return fake, real


@pytest.mark.parametrize("h, w", [(11, 11), (11, 37), (23, 12), (64, 48), (180, 240)])
def test_ssim_and_psnr_match_scikit_image_on_random_and_structured_images(h, w):
    g = torch.Generator().manual_seed(h * w)
    noise = (torch.rand(2, 3, h, w, generator=g, dtype=torch.float64),
             torch.rand(2, 3, h, w, generator=g, dtype=torch.float64))
    for fake, real in (noise, _structured(h + w, 2, h, w), _pairs(seed=w, n=2, h=h, w=w)):
        np.testing.assert_allclose(ssim(fake, real).numpy(), _skimage_ssim(fake, real),
                                   rtol=0, atol=1e-9)
        reference = [sk_psnr(r.numpy(), f.numpy(), data_range=1.0) for f, r in zip(fake, real)]
        np.testing.assert_allclose(psnr(fake, real).numpy(), reference, rtol=1e-12)


def test_ssim_equals_the_previous_torchmetrics_implementation():
    # the values before the batched rewrite: torchmetrics' full map without its 5-px border
    from torchmetrics.functional.image import structural_similarity_index_measure as tm
    fake, real = _structured(5, 3, 40, 52)
    _, full = tm(fake, real, gaussian_kernel=True, sigma=1.5, data_range=1.0, k1=0.01, k2=0.03,
                 reduction="none", return_full_image=True)
    before = full[..., 5:-5, 5:-5].flatten(1).mean(1)
    assert torch.allclose(ssim(fake, real), before, rtol=0, atol=1e-12)


def test_batched_equals_per_image_for_any_chunk_size(monkeypatch):
    import evaluation.image_metrics as im
    fake, real = _structured(7, 5, 30, 26)
    per_image = torch.cat([ssim(fake[i:i + 1], real[i:i + 1]) for i in range(5)])
    for chunk in (1, 30 * 26 * 2, 30 * 26 * 4, 1 << 30):  # one plane, 2 and 4 planes, all at once
        monkeypatch.setattr(im, "SSIM_CPU_CHUNK", chunk)
        assert torch.allclose(ssim(fake, real), per_image, rtol=0, atol=1e-14)
    m_batched, m_single = PairedMetrics(), PairedMetrics()
    m_batched.update(fake, real)
    for i in range(5):
        m_single.update(fake[i:i + 1], real[i:i + 1])
    a, b = m_batched.per_image(), m_single.per_image()
    for key in ("psnr", "ssim", "mse"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-13, atol=1e-15)


def test_ssim_layouts_dtypes_and_thread_count():
    fake, real = _structured(9, 2, 33, 35)
    expected = _skimage_ssim(fake, real)
    # non-contiguous input (channels-last memory, a cropped view) gives the same values
    np.testing.assert_allclose(ssim(fake.contiguous(memory_format=torch.channels_last),
                                    real.contiguous(memory_format=torch.channels_last)).numpy(),
                               expected, atol=1e-12)
    wide_f, wide_r = _structured(9, 2, 33, 45)
    np.testing.assert_allclose(ssim(wide_f[..., 5:40], wide_r[..., 5:40]).numpy(),
                               _skimage_ssim(wide_f[..., 5:40].contiguous(),
                                             wide_r[..., 5:40].contiguous()), atol=1e-12)
    # uint8 is value / 255
    u_f, u_r = (fake * 255).round().to(torch.uint8), (real * 255).round().to(torch.uint8)
    np.testing.assert_allclose(ssim(u_f, u_r).numpy(), _skimage_ssim(u_f.double() / 255, u_r.double() / 255),
                               atol=1e-12)
    assert ssim(fake[:0], real[:0]).shape == (0,)
    # the metrics run on one CPU thread and give the caller's setting back, also after an error
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ssim(fake, real)
        with pytest.raises(ValueError):
            ssim(fake[..., :8], real[..., :8])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_constant_images():
    flat = torch.full((2, 3, 20, 17), 0.3, dtype=torch.float64)
    black, white = torch.zeros_like(flat), torch.ones_like(flat)
    assert torch.equal(ssim(flat, flat), torch.ones(2, dtype=torch.float64))
    assert torch.equal(ssim(black, black), torch.ones(2, dtype=torch.float64))
    # black vs white: SSIM = C1 / (1 + C1) (means 0 and 1, no variance)
    c1 = 0.01 ** 2
    assert ssim(black, white).tolist() == pytest.approx([c1 / (1 + c1)] * 2, abs=1e-15)
    _, textured = _structured(3, 2, 20, 17)
    for fake, real in ((flat, textured), (textured, flat), (black, white)):
        np.testing.assert_allclose(ssim(fake, real).numpy(), _skimage_ssim(fake, real),
                                   atol=1e-12)
    assert psnr(black, white).tolist() == [0.0, 0.0]  # MSE 1
    assert math.isinf(float(psnr(flat, flat)[0]))


def test_too_small_images_are_refused_and_leave_the_metrics_unchanged():
    fake, real = _pairs(n=2, h=11, w=11)
    m = PairedMetrics()
    m.update(fake, real)  # 11x11: exactly one window position
    for h, w in ((10, 11), (11, 10), (4, 4), (1, 11)):
        with pytest.raises(ValueError, match=rf"at least 11x11 pixels, got \({h}, {w}\)"):
            ssim(fake[..., :h, :w], real[..., :h, :w])
        with pytest.raises(ValueError, match="at least 11x11"):
            m.update(fake[..., :h, :w], real[..., :h, :w])
    assert len(m) == 2 and len(m.per_image()["ssim"]) == len(m.per_image()["mse"]) == 2
    # PSNR and MSE need no window
    assert psnr(fake[..., :4, :4], real[..., :4, :4]).shape == (2,)


def test_bad_inputs_say_what_is_wrong():
    fake, real = _pairs(n=1)
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        PairedMetrics().update(fake * 2 - 1, real)  # generator range [-1, 1]
    with pytest.raises(ValueError, match="same shape"):
        PairedMetrics().update(fake, real[..., :32])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        mse(fake[0], real[0])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(fake[..., :8, :8], real[..., :8, :8])
    with pytest.raises(ValueError, match="before any update"):
        PairedMetrics().compute()


# ---------------------------------------------------------------------- LPIPS
@pytest.fixture(scope="module")
def alex_state() -> dict:
    """A torchvision-layout AlexNet state_dict, randomly initialised: its features, plus a
    token classifier entry (the real file's classifier is 230 MB and must be ignored anyway)."""
    torch.manual_seed(0)
    features = torchvision.models.alexnet().features.state_dict()
    sd = {f"features.{k}": v for k, v in features.items()}
    sd["classifier.1.weight"] = torch.zeros(2, 2)
    return sd


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache; downloading anything fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_download(*args, **kwargs):
        raise AssertionError("LPIPS tried to download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    return tmp_path / "torch_home"


@pytest.fixture
def cached_alex(torch_home, alex_state) -> Path:
    path = torch_home / "hub" / "checkpoints" / ALEX_FILE
    path.parent.mkdir(parents=True)
    torch.save(alex_state, path)
    return path


def test_missing_backbone_is_a_weights_error_with_the_fix(torch_home):
    expected = torch_home / "hub" / "checkpoints" / ALEX_FILE
    assert Path(backbone_cache_path("alex")) == expected
    with pytest.raises(WeightsError) as e:
        load_lpips("alex")
    message = str(e.value)
    assert f"{expected} does not exist" in message
    assert "download.pytorch.org/models/" + ALEX_FILE in message
    assert "alexnet(weights='IMAGENET1K_V1')" in message
    with pytest.raises(WeightsError, match="nowhere.pth does not exist"):
        load_lpips("alex", backbone_weights=str(torch_home / "nowhere.pth"))


def test_wrong_or_corrupt_backbone_file_is_a_weights_error(tmp_path, torch_home, alex_state):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read"):
        load_lpips("alex", backbone_weights=str(garbage))
    other = tmp_path / "other.pth"  # a different network: conv1 with the wrong shape
    torch.save({**alex_state, "features.0.weight": torch.zeros(64, 3, 3, 3)}, other)
    with pytest.raises(WeightsError, match=r"features\.0\.weight has shape \(64, 3, 3, 3\)"):
        load_lpips("alex", backbone_weights=str(other))
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in alex_state.items() if not k.startswith("features.10.")}, partial)
    with pytest.raises(WeightsError, match=r"no 'features\.10\.weight'"):
        load_lpips("alex", backbone_weights=str(partial))


def test_lpips_loads_the_given_weights_and_is_a_distance(cached_alex, alex_state):
    import lpips as lpips_package

    model = load_lpips("alex")
    inner = model.model
    # the backbone holds the file's weights (a random init would fail this) ...
    assert torch.equal(inner.net.slice1[0].weight, alex_state["features.0.weight"])
    assert torch.equal(getattr(inner.net.slice5, "10").bias, alex_state["features.10.bias"])
    # ... and the linear layers are the package's calibrated ones
    lin = torch.load(Path(lpips_package.__file__).parent / "weights" / "v0.1" / "alex.pth",
                     map_location="cpu", weights_only=True)
    assert torch.equal(inner.lin2.model[1].weight, lin["lin2.model.1.weight"])
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and not inner.training

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 64, 64, generator=g)
    y = torch.rand(3, 3, 64, 64, generator=g)
    d_xy, d_yx, d_xx = model(x, y), model(y, x), model(x, x)
    assert d_xy.shape == (3,)
    assert torch.allclose(d_xx, torch.zeros(3), atol=1e-6)
    assert torch.allclose(d_xy, d_yx, atol=1e-6)
    assert (d_xy > 1e-4).all()
    # the same file given by path instead of the cache gives the same distances
    explicit = load_lpips("alex", backbone_weights=str(cached_alex))
    assert torch.allclose(explicit(x, y), d_xy)
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        model(x * 2 - 1, y)


# ---------------------------------------------------------------------- diversity
def _flat(values, n: int = 1, size: int = 32) -> list:
    """One (n, 3, size, size) batch per value, every image flat at that value."""
    return [torch.full((n, 3, size, size), float(v)) for v in values]


def test_diversity_l1_known_value_averaged_over_maps():
    # map 0: samples 0, 0.5, 1 -> pairwise L1 0.5, 1, 0.5 -> 2/3; map 1: all 0.25 -> 0
    samples = [torch.cat([a, b]) for a, b in zip(_flat([0, 0.5, 1]), _flat([0.25] * 3))]
    d = diversity(samples, "l1", batch_size=1, progress=False)
    assert float(d) == pytest.approx((2 / 3 + 0) / 2)
    assert (d.distance, d.num_maps, d.num_samples, d.note) == ("l1", 2, 3, "")
    custom = diversity(samples, lambda x, y: l1_distance(x, y) * 2, progress=False)
    assert float(custom) == pytest.approx(2 * float(d))
    with pytest.raises(ValueError, match="at least 2 samples"):
        diversity(samples[:1], "l1")


def test_diversity_auto_uses_lpips_when_its_weights_exist(cached_alex):
    g = torch.Generator().manual_seed(1)
    samples = [torch.rand(2, 3, 32, 32, generator=g) for _ in range(3)]
    d = diversity(samples, "auto", progress=False)
    assert d.distance == "lpips-alex" and d.note == ""
    model = load_lpips("alex")
    pairs = [model(samples[a], samples[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert float(d) == pytest.approx(float(torch.stack(pairs).mean()), rel=1e-5)


def test_diversity_auto_falls_back_to_l1_and_records_it(torch_home):
    samples = _flat([0.2, 0.6])
    d = diversity(samples, progress=False)
    assert d.distance == "l1" and float(d) == pytest.approx(0.4)
    assert "LPIPS unavailable" in d.note and ALEX_FILE in d.note
    with pytest.raises(WeightsError):  # asked for LPIPS explicitly: no silent fallback
        diversity(samples, "lpips", progress=False)
