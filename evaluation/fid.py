"""FID and KID on TF-FID Inception features (see ``evaluation.inception.PROTOCOL``; the resize
in front of the network is ``--fid_protocol``, ``evaluation.inception.FID_PROTOCOLS``).

The math is torch-fidelity 0.4.0's (``metric_fid`` / ``metric_kid``), called on plain arrays,
so numbers agree with that reference implementation (``fid_from_features`` takes an exact
low-rank shortcut for sets of at most 2048 images); this module adds feature extraction with
progress, input checks with clear errors, cached real-image statistics and folder reading.
Features are float64 ``(M, 2048)`` numpy arrays.
"""
from __future__ import annotations

import io
import json
import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from util.banner import progress_bars_enabled
from util.errors import DatasetError
from util.image_io import atomic_write_bytes

STATISTICS_VERSION = 1
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")  # what torch-fidelity reads from a folder


# ---------------------------------------------------------------------- features
def compute_features(images: Iterable[torch.Tensor], extractor: torch.nn.Module,
                     device: Union[torch.device, str] = "cpu", desc: str = "",
                     total: Optional[int] = None) -> np.ndarray:
    """Run ``extractor`` over batches of images and stack the features.

    ``images``: iterable of uint8 ``(N, 3, H, W)`` RGB batches (sizes may differ between
    batches; quantize generator output with ``evaluation.inception.to_uint8``). ``extractor``:
    e.g. ``load_inception(...)``, mapping such a batch to ``(N, D)``. Batches are moved to
    ``device`` first. ``total``: number of images, for the progress bar. Returns float64
    ``(M, D)``; ``DatasetError`` if there were no images.
    """
    device = torch.device(device)
    chunks: List[np.ndarray] = []
    with tqdm(total=total, desc=desc or "inception features", unit="img", leave=False,
              disable=not progress_bars_enabled()) as bar:
        for batch in images:
            if not isinstance(batch, torch.Tensor) or batch.dtype != torch.uint8:
                got = batch.dtype if isinstance(batch, torch.Tensor) else type(batch).__name__
                raise ValueError(f"compute_features expects uint8 (N, 3, H, W) batches, got {got}; "
                                 "use evaluation.inception.to_uint8 for [-1, 1] float images")
            if batch.numel() == 0:
                continue
            feats = extractor(batch.to(device, non_blocking=True))
            chunks.append(feats.detach().to("cpu", torch.float64).numpy())
            bar.update(batch.shape[0])
    if not chunks:
        raise DatasetError(f"{desc or 'compute_features'}: no images to compute features of")
    return np.concatenate(chunks, axis=0)


def _check_features(features: Any, name: str, minimum: int = 2) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"{name}: features must be (num_images, dim), got shape {f.shape}")
    if f.shape[0] < minimum:
        raise DatasetError(f"{name}: FID/KID need at least {minimum} images, got {f.shape[0]}; "
                           "evaluate more images (e.g. raise --how_many)")
    if not np.isfinite(f).all():
        raise ValueError(f"{name}: features contain NaN or infinity")
    return f


# ---------------------------------------------------------------------- statistics
def feature_statistics(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(mu (D,), sigma (D, D))`` float64: mean and unbiased covariance (``np.cov``) of
    ``features`` ``(M, D)``, M >= 2."""
    from torch_fidelity.metric_fid import fid_features_to_statistics
    f = _check_features(features, "feature_statistics")
    stats = fid_features_to_statistics(torch.from_numpy(f))
    return np.asarray(stats["mu"], np.float64), np.asarray(stats["sigma"], np.float64)


def save_statistics(path: str, mu: np.ndarray, sigma: np.ndarray,
                    meta: Optional[Dict[str, Any]] = None) -> None:
    """Write ``mu``, ``sigma`` and JSON-serializable ``meta`` (e.g. protocol, weights, image
    count, source folder) to an ``.npz`` file atomically, so real-image statistics are computed
    once per dataset."""
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"save_statistics: mu (D,) and sigma (D, D) expected, got {mu.shape}, {sigma.shape}")
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, version=np.int64(STATISTICS_VERSION),
             meta=np.array(json.dumps(meta or {}, sort_keys=True)))
    atomic_write_bytes(path, buf.getvalue())


def load_statistics(path: str) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """Read a file written by :func:`save_statistics`: ``(mu, sigma, meta)``. ``DatasetError``
    naming the file if it is missing or not such a file (delete it to recompute)."""
    if not os.path.isfile(path):
        raise DatasetError(f"statistics file {path} does not exist; compute it from the real "
                           "images first (save_statistics)")
    try:
        with np.load(path, allow_pickle=False) as z:
            mu, sigma = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
            meta = json.loads(str(z["meta"]))
    except Exception as e:  # noqa: BLE001 - corrupt zip, missing key, bad JSON: same fix
        raise DatasetError(f"{path} is not a valid FID statistics file ({type(e).__name__}); "
                           "delete it so it is recomputed") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise DatasetError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together; "
                           "delete it so it is recomputed")
    return mu, sigma, meta


# ---------------------------------------------------------------------- metrics
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``.

    The trace of the square root is the sum of the square roots of the eigenvalues of
    ``sigma1 @ sigma2`` (torch-fidelity's formula); the real part is kept, which drops the tiny
    imaginary parts and negative round-off eigenvalues of singular covariances (fewer images
    than dimensions) that make ``scipy.linalg.sqrtm`` unstable.
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if d < 1 or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes do not match: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                         f"mu2 {mu2.shape}, sigma2 {sigma2.shape} (statistics from another network?)")
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"frechet_distance: {name} contains NaN or infinity")
    out = fid_statistics_to_metric({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2},
                                   verbose=False)
    return float(out[KEY_METRIC_FID])


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets ``(M1, D)`` and ``(M2, D)`` (at least 2 images each).

    With at most D images per set (e.g. 500 Cityscapes val images vs 2048 dimensions) the
    covariances are low-rank and ``tr((sigma1 sigma2)^(1/2))`` equals the sum of the singular
    values of ``A1 A2^T / sqrt((M1 - 1)(M2 - 1))`` (A: mean-centred features), an exact identity
    that costs an M1 x M2 SVD instead of a D x D eigen-decomposition (seconds at D = 2048) and
    has no round-off eigenvalues to discard. Larger sets go through :func:`frechet_distance`.
    """
    f1 = _check_features(features1, "first set")
    f2 = _check_features(features2, "second set")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"fid_from_features: feature sizes differ ({f1.shape[1]} vs {f2.shape[1]})")
    if max(f1.shape[0], f2.shape[0]) > f1.shape[1]:
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    n1, n2 = f1.shape[0], f2.shape[0]
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a1, a2 = f1 - mu1, f2 - mu2
    tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + (a1 * a1).sum() / (n1 - 1) + (a2 * a2).sum() / (n2 - 1) - 2 * tr_covmean)


def kid_from_features(features1: np.ndarray, features2: np.ndarray, subsets: int = 100,
                      subset_size: int = 1000, degree: int = 3, gamma: Optional[float] = None,
                      coef0: float = 1, seed: int = 0) -> Tuple[float, float]:
    """Kernel Inception Distance: ``(mean, std)`` of the unbiased MMD^2 over ``subsets`` random
    subsets (drawn without replacement by ``np.random.RandomState(seed)``) with the polynomial
    kernel ``(gamma x.y + coef0) ** degree``, ``gamma`` = 1 / D by default.

    ``subset_size`` (torch-fidelity's default 1000) must not exceed either set: a larger one is
    a ``DatasetError`` rather than a silent shrink, because KID's value depends on the subset
    size (callers choose a smaller size explicitly). With subset_size equal to both set sizes
    every subset is the whole set and std is 0. Needs at least 2 images per set.
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
    f1 = _check_features(features1, "first set")
    f2 = _check_features(features2, "second set")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"kid_from_features: feature sizes differ ({f1.shape[1]} vs {f2.shape[1]})")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"kid_from_features: subsets >= 1 and subset_size >= 2 needed, got "
                         f"{subsets}, {subset_size}")
    smaller = min(f1.shape[0], f2.shape[0])
    if subset_size > smaller:
        raise DatasetError(f"KID subsets of {subset_size} images need at least {subset_size} images "
                           f"per set, got {f1.shape[0]} and {f2.shape[0]}; choose a subset size of at "
                           f"most {smaller} (--kid_subset_size)")
    out = kid_features_to_metric(torch.from_numpy(f1), torch.from_numpy(f2), kid_subsets=subsets,
                                 kid_subset_size=subset_size, kid_kernel="poly", kid_kernel_poly_degree=degree,
                                 kid_kernel_poly_gamma=gamma, kid_kernel_poly_coef0=coef0,
                                 rng_seed=seed, verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


# ---------------------------------------------------------------------- image folders
def list_image_files(folder: str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[str]:
    """Image files directly in ``folder`` (not sub-folders), as sorted real paths: the same
    files in the same order as torch-fidelity, so KID subsets match. ``DatasetError`` if the
    folder is missing or holds none."""
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder} does not exist or is not a folder")
    exts = {e.lower().lstrip(".") for e in extensions}
    paths = sorted(os.path.realpath(os.path.join(folder, n)) for n in os.listdir(folder)
                   if os.path.splitext(n)[1].lower().lstrip(".") in exts
                   and os.path.isfile(os.path.join(folder, n)))
    if not paths:
        raise DatasetError(f"{folder} holds no {'/'.join(sorted(exts))} images")
    return paths


def load_image_uint8(path: str) -> torch.Tensor:
    """One image file as RGB uint8 ``(3, H, W)`` (grey / RGBA / palette converted by PIL, as
    torch-fidelity does). ``DatasetError`` naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        raise DatasetError(f"cannot read image {path} ({type(e).__name__}: {e}); remove or "
                           "replace it") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def image_folder_batches(paths: Sequence[str], batch_size: int = 50) -> Iterator[torch.Tensor]:
    """uint8 ``(n, 3, H, W)`` batches of the images in ``paths``, in order; consecutive images
    of the same size share a batch of at most ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pending: List[torch.Tensor] = []
    for path in paths:
        img = load_image_uint8(path)
        if pending and (img.shape != pending[0].shape or len(pending) == batch_size):
            yield torch.stack(pending)
            pending = []
        pending.append(img)
    if pending:
        yield torch.stack(pending)
