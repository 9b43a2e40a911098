"""Paired image metrics (PSNR, SSIM, MSE) between synthesized and real photos, and diversity.

Every function takes float tensors ``(N, 3, H, W)`` with values in [0, 1] (uint8 tensors are
accepted and divided by 255), e.g. the saved PNGs read back and divided by 255. Each metric is
computed per image and averaged over images, as papers report them:

* **MSE**: mean squared error over pixels and channels in [0, 1] units (``mse``), and the same
  in 8-bit units, x 255^2 (``mse_255``), the scale image-restoration papers quote.
* **PSNR**: ``10 log10(1 / MSE)`` dB per image (data range 1), then averaged. A pair of
  identical images has infinite PSNR: such pairs are *excluded* from the mean and counted in
  ``psnr_identical`` (if every pair is identical the mean is ``inf``).
* **SSIM**: Wang et al. (2004) with a Gaussian window of 11 taps, sigma 1.5, K1 0.01, K2 0.03,
  data range 1, population (not sample) statistics, computed per RGB channel and averaged over
  channels and over the *valid* window positions only (the 5-pixel border whose window would
  leave the image is not counted), as the authors' reference code (``filter2(..., 'valid')``)
  and scikit-image do. Images must be >= 11 px a side. (Wang's script first converts to grey
  and downsamples large images; that is *not* done here.)

All three are batched tensor code on the images' device, in float64: SSIM's Gaussian window is
separable, so the local statistics are two 1-D 11-tap passes over the valid region only (equal
to scikit-image to ~1e-15; ``tests/test_evaluation_image_metrics.py``). On the CPU the batch is
cut into chunks of one or a few image planes so the statistics stay in cache
(``SSIM_CPU_CHUNK``), on one thread (see ``_one_cpu_thread``).

Diversity is the mean pairwise distance between K samples synthesized for the same label map
(LPIPS when its weights are available, else L1), averaged over label maps.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Union

import torch
from tqdm import tqdm

from evaluation.lpips import check_unit_images, load_lpips
from util.errors import WeightsError

SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)  # 5: an 11-tap window (scipy's truncate=3.5)
SSIM_WINDOW = 2 * SSIM_RADIUS + 1
# elements (planes x H x W) per SSIM chunk: on the CPU ~0.5 MB of float64 per statistic (at
# least one plane) keeps the passes in cache (~7x faster than one pass over a 16-image batch);
# elsewhere it only bounds memory
SSIM_CPU_CHUNK = 1 << 16
SSIM_DEVICE_CHUNK = 1 << 23  # ~1 GB peak in float64: 42 images of 256x256 at once

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _as_unit(x: torch.Tensor, what: str) -> torch.Tensor:
    """uint8 -> float in [0, 1]; float input is checked, then used in float64."""
    if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
        x = x.double() / 255.0
    check_unit_images(x, what)
    return x.double()


def _pair(fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    fake, real = _as_unit(fake, "fake"), _as_unit(real, "real")
    if fake.shape != real.shape:
        raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} images must have "
                         f"the same shape; resize the real images to the synthesized size first")
    return fake, real.to(fake.device)


def mse(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error in [0, 1] units: ``(N,)`` float64."""
    fake, real = _pair(fake, real)
    return (fake - real).pow(2).flatten(1).mean(1)


def psnr(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB with data range 1: ``(N,)`` float64; ``inf`` for identical images."""
    return 10.0 * torch.log10(1.0 / mse(fake, real))  # 1 / 0 -> inf, log10(inf) -> inf


def _gaussian_taps() -> List[float]:
    """The 11 normalised 1-D Gaussian weights (sigma 1.5), as scipy's ``gaussian_filter``."""
    x = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return (g / g.sum()).tolist()


_TAPS = _gaussian_taps()


def _filter_valid(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Gaussian-weighted sums along ``dim`` at the positions whose window fits ('valid')."""
    r, size = SSIM_RADIUS, x.shape[dim] - 2 * SSIM_RADIUS
    out = x.narrow(dim, r, size) * _TAPS[r]
    for i in range(r):  # the window is symmetric: add the pair of taps i, 2r - i at once
        out.add_(x.narrow(dim, i, size) + x.narrow(dim, 2 * r - i, size), alpha=_TAPS[i])
    return out


def _ssim_planes(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over the valid positions of each plane: ``(P, H, W)`` float64 -> ``(P,)``."""
    # only var_x + var_y enters the formula: filter x^2 + y^2 once instead of each
    stats = torch.stack([x, y, x * x + y * y, x * y])
    stats = _filter_valid(_filter_valid(stats, -1), -2)
    mu_x, mu_y, sq, xy = stats.unbind(0)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # data range 1
    mu_xy = mu_x * mu_y
    mu_sq = mu_x * mu_x + mu_y * mu_y
    value = (2 * mu_xy + c1) * (2 * (xy - mu_xy) + c2) / ((mu_sq + c1) * (sq - mu_sq + c2))
    return value.flatten(1).mean(1)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """On the CPU, run the block with one torch thread (restored after).

    The metrics are a few dozen memory-bound element-wise passes over cache-sized chunks:
    OpenMP's fork/join per pass costs more than a second core gains, and on a busy machine far
    more (2-core CPU under load: 4-8x slower with 2 threads than with 1). One thread does
    SSIM + PSNR + MSE in ~5 ms per 240x180 image, small beside the Inception features."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _ssim_unit(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """SSIM of checked float64 pairs (see ``_pair``) on their device: ``(N,)`` float64."""
    n, c, h, w = fake.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
                         f"{(h, w)}")
    if n == 0:
        return fake.new_zeros(0)
    x, y = fake.reshape(n * c, h, w), real.reshape(n * c, h, w)
    budget = SSIM_CPU_CHUNK if fake.device.type == "cpu" else SSIM_DEVICE_CHUNK
    step = max(1, budget // (h * w))
    with _one_cpu_thread(fake.device):
        per_plane = torch.cat([_ssim_planes(x[i:i + step], y[i:i + step])
                               for i in range(0, n * c, step)])
    # every channel has the same number of valid positions: the image mean is the channel mean
    return per_plane.view(n, c).mean(1)


def ssim(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (see the module docstring for the exact protocol): ``(N,)`` float64."""
    device = fake.device if isinstance(fake, torch.Tensor) else torch.device("cpu")
    with _one_cpu_thread(device):
        return _ssim_unit(*_pair(fake, real))


class PairedMetrics:
    """Accumulates per-image PSNR, SSIM and MSE over batches of (fake, real) pairs.

    ``update(fake, real)`` with both ``(N, 3, H, W)`` in [0, 1] (see the module docstring);
    ``compute()`` returns means over every image seen so far.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._psnr: List[torch.Tensor] = []
        self._ssim: List[torch.Tensor] = []
        self._mse: List[torch.Tensor] = []

    def update(self, fake: torch.Tensor, real: torch.Tensor) -> None:
        device = fake.device if isinstance(fake, torch.Tensor) else torch.device("cpu")
        with _one_cpu_thread(device):  # the range checks too: ~7x less overhead per call
            fake, real = _pair(fake, real)
            s = _ssim_unit(fake, real)  # first: a batch SSIM refuses (too small) adds nothing
            m = (fake - real).pow(2).flatten(1).mean(1)
        self._mse.append(m.cpu())
        self._psnr.append((10.0 * torch.log10(1.0 / m)).cpu())
        self._ssim.append(s.cpu())

    def __len__(self) -> int:
        return sum(len(m) for m in self._mse)

    def per_image(self) -> Dict[str, List[float]]:
        """Every image's value, in update order: ``{"psnr": [...], "ssim": [...], "mse": [...]}``."""
        return {key: torch.cat(values).tolist() if values else []
                for key, values in (("psnr", self._psnr), ("ssim", self._ssim), ("mse", self._mse))}

    def compute(self) -> Dict[str, float]:
        """``{"psnr": dB, "ssim": .., "mse": [0, 1] units, "mse_255": 8-bit units,
        "psnr_identical": pairs left out of the PSNR mean, "num_images": N}``."""
        if not self._mse:
            raise ValueError("PairedMetrics.compute() before any update(): no image pairs")
        p, s, m = torch.cat(self._psnr), torch.cat(self._ssim), torch.cat(self._mse)
        finite = torch.isfinite(p)
        mean_psnr = float(p[finite].mean()) if bool(finite.any()) else math.inf
        mean_mse = float(m.mean())
        return {"psnr": mean_psnr, "ssim": float(s.mean()), "mse": mean_mse,
                "mse_255": mean_mse * 255.0 ** 2, "psnr_identical": int((~finite).sum()),
                "num_images": int(m.numel())}


# ---------------------------------------------------------------------- diversity
class DiversityScore(float):
    """A float (the diversity) that also says how it was measured: ``.distance`` is the
    distance's name (``"lpips-alex"`` or ``"l1"``), ``.note`` why LPIPS was not used ('' if
    it was or was not asked for), ``.num_maps`` and ``.num_samples`` the sizes averaged over."""

    distance: str
    note: str
    num_maps: int
    num_samples: int

    def __new__(cls, value: float, distance: str, note: str, num_maps: int,
                num_samples: int) -> DiversityScore:
        obj = super().__new__(cls, value)
        obj.distance, obj.note = distance, note
        obj.num_maps, obj.num_samples = num_maps, num_samples
        return obj

    def __reduce__(self):  # pickle / deepcopy keep the record
        return (DiversityScore, (float(self), self.distance, self.note, self.num_maps,
                                 self.num_samples))


def l1_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per image, in [0, 1] units: ``(N,)``."""
    return (x.double() - y.double()).abs().flatten(1).mean(1)


def _resolve_distance(distance: Union[str, Distance, None], device: Union[torch.device, str],
                      lpips_net: str, lpips_backbone: Optional[str]) -> tuple[Distance, str, str]:
    """-> (callable, its name, why LPIPS was not used)."""
    if callable(distance):
        return distance, str(getattr(distance, "name", getattr(distance, "__name__", "custom"))), ""
    choice = (distance or "auto").lower()
    if choice == "l1":
        return l1_distance, "l1", ""
    if choice not in ("auto", "lpips"):
        raise ValueError(f"diversity distance must be 'auto', 'lpips', 'l1' or a callable, "
                         f"got {distance!r}")
    try:
        model = load_lpips(lpips_net, lpips_backbone, device)
    except WeightsError as e:
        if choice == "lpips":
            raise
        return l1_distance, "l1", f"LPIPS unavailable, used L1 instead: {e}"
    return model, model.name, ""


def diversity(samples: Sequence[torch.Tensor], distance: Union[str, Distance, None] = "auto", *,
              device: Union[torch.device, str] = "cpu", batch_size: int = 16,
              lpips_net: str = "alex", lpips_backbone: Optional[str] = None,
              progress: bool = True) -> DiversityScore:
    """Mean pairwise distance between K >= 2 samples synthesized for the same label maps.

    ``samples[k]``: float ``(N, 3, H, W)`` in [0, 1], the k-th sample for each of N label
    maps (same N, H, W for every k). For each map, the distance is averaged over its K(K-1)/2
    sample pairs, then over maps. ``distance``: ``"auto"`` (LPIPS if its weights load, else
    L1, see ``evaluation.lpips``), ``"lpips"`` (WeightsError if unavailable), ``"l1"`` (mean
    absolute difference in [0, 1] units) or a callable ``(x, y) -> (N,)``. Returns a float
    whose ``.distance`` names the distance used (``.note`` says why LPIPS was not).
    """
    if len(samples) < 2:
        raise ValueError(f"diversity needs at least 2 samples per label map, got {len(samples)}; "
                         f"synthesize with --num_samples 2 or more")
    checked = [_as_unit(s, f"samples[{k}]").float() for k, s in enumerate(samples)]
    if any(s.shape != checked[0].shape for s in checked):
        raise ValueError(f"every sample batch must have the same shape, got "
                         f"{[tuple(s.shape) for s in checked]}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    fn, name, note = _resolve_distance(distance, device, lpips_net, lpips_backbone)
    n = checked[0].shape[0]
    if n == 0:
        raise ValueError("diversity got 0 label maps")
    pairs = list(itertools.combinations(range(len(checked)), 2))
    per_map = torch.zeros(n, dtype=torch.float64)
    steps = [(a, b, i) for a, b in pairs for i in range(0, n, batch_size)]
    with torch.no_grad():
        for a, b, i in tqdm(steps, desc=f"diversity ({name})", unit="batch", disable=not progress,
                            dynamic_ncols=True, leave=False):
            x = checked[a][i:i + batch_size].to(device)
            y = checked[b][i:i + batch_size].to(device)
            d = fn(x, y).detach().double().cpu().reshape(-1)
            if d.numel() != x.shape[0]:
                raise ValueError(f"distance {name} returned {d.numel()} values for "
                                 f"{x.shape[0]} image pairs; it must return one per pair")
            per_map[i:i + batch_size] += d
    per_map /= len(pairs)
    return DiversityScore(float(per_map.mean()), name, note, n, len(checked))


__all__ = ["DiversityScore", "PairedMetrics", "diversity", "l1_distance", "mse", "psnr", "ssim",
           "SSIM_SIGMA", "SSIM_WINDOW", "SSIM_K1", "SSIM_K2"]
