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
  and scikit-image do. The statistics come from torchmetrics; images must be >= 11 px a side.
  (Wang's script first converts to grey and downsamples large images; that is *not* done here.)

Diversity is the mean pairwise distance between K samples synthesized for the same label map
(LPIPS when its weights are available, else L1), averaged over label maps.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from tqdm import tqdm

from evaluation.lpips import check_unit_images, load_lpips
from util.errors import WeightsError

SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)  # 5: an 11-tap window, as torchmetrics builds it
SSIM_WINDOW = 2 * SSIM_RADIUS + 1

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


def ssim(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (see the module docstring for the exact protocol): ``(N,)`` float64."""
    fake, real = _pair(fake, real)
    if min(fake.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
                         f"{tuple(fake.shape[-2:])}")
    # imported here: torchmetrics takes ~2 s to import and only SSIM needs it
    from torchmetrics.functional.image import structural_similarity_index_measure
    _, full = structural_similarity_index_measure(
        fake, real, gaussian_kernel=True, sigma=SSIM_SIGMA, data_range=1.0, k1=SSIM_K1,
        k2=SSIM_K2, reduction="none", return_full_image=True)
    # torchmetrics reflect-pads and averages the whole map; the reference keeps only windows
    # inside the image, i.e. the map without its SSIM_RADIUS-pixel border
    r = SSIM_RADIUS
    valid = full[..., r:full.shape[-2] - r, r:full.shape[-1] - r]
    return valid.flatten(1).mean(1)


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
        fake, real = _pair(fake, real)
        m = (fake - real).pow(2).flatten(1).mean(1)
        self._mse.append(m.cpu())
        self._psnr.append((10.0 * torch.log10(1.0 / m)).cpu())
        self._ssim.append(ssim(fake, real).cpu())

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
