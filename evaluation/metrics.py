"""The metric registry: every metric the evaluation pipeline can report, by name.

A metric is a class registered in ``METRICS`` (``--metrics`` names, e.g. ``fid``, ``paired``) that
declares the metrics.json ``keys`` it reports and the inputs it ``needs`` (see ``INPUTS``), and
accumulates over uint8 batches with ``update(...)`` before ``compute() -> {key: value}``.
``evaluation.evaluator`` (scripts/evaluate.py), ``trainers/periodic_eval.py`` (``--eval_freq``)
and the experiment scripts go through these classes, so one image gets one PSNR and one FID
whichever entry point measured it. Adding a metric: one class here plus its ``@METRICS.register``
line.

Images are ``(N, 3, H, W)`` uint8 (as saved PNGs); label maps ``(N, H, W)`` int64.
"""
from __future__ import annotations

from typing import Any, Dict, FrozenSet, List, Optional, Tuple

import numpy as np
import torch

from util.registry import Registry

METRICS = Registry("metric", "--metrics")

# What a metric may need from the data (the evaluator decides from these what to load).
INPUTS = {
    "synthesized": "the synthesized images",
    "paired_real": "the real image paired with each synthesized one (same label map)",
    "reference": "a set of real images or their cached statistics (--real_stats / --real_dir / paired)",
    "labels": "the input label maps",
    "samples": "several samples per label map (test.py --num_samples K)",
    "timing": "test.py's synthesis time (results.json)",
}


def _unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1] (the paired metrics' range)."""
    if x.dtype != torch.uint8:
        raise ValueError(f"metrics take uint8 images (as saved PNGs), got dtype {x.dtype}; "
                         "quantize generator output with evaluation.inception.to_uint8")
    return x.float() / 255.0


class Metric:
    """Base class: ``keys`` reported, ``needs`` (subset of ``INPUTS``), update/compute."""

    keys: Tuple[str, ...] = ()
    needs: FrozenSet[str] = frozenset()

    def update(self, **inputs: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def compute(self) -> Dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError


def fid_against(fake_features: np.ndarray, mu_real: np.ndarray, sigma_real: np.ndarray) -> float:
    """FID of ``fake_features`` ``(M, 2048)`` against real statistics: the one FID formula of the
    evaluator, ``--eval_freq`` and the experiment scripts."""
    from evaluation.fid import feature_statistics, frechet_distance
    return frechet_distance(*feature_statistics(fake_features), mu_real, sigma_real)


class _InceptionFeatures(Metric):
    """Inception features of the synthesized and (optionally) the reference images."""

    def __init__(self, extractor: torch.nn.Module) -> None:
        self.extractor = extractor
        self._fake: List[np.ndarray] = []
        self._real: List[np.ndarray] = []

    def update(self, synthesized: torch.Tensor, reference: Optional[torch.Tensor] = None) -> None:
        """``synthesized`` / ``reference``: uint8 batches on the extractor's device."""
        self._fake.append(self.extractor(synthesized).double().cpu().numpy())
        if reference is not None:
            self._real.append(self.extractor(reference).double().cpu().numpy())

    def synthesized_features(self) -> np.ndarray:
        return np.concatenate(self._fake) if self._fake else np.zeros((0, 2048))

    def reference_features(self) -> np.ndarray:
        return np.concatenate(self._real) if self._real else np.zeros((0, 2048))


@METRICS.register("fid")
class FID(_InceptionFeatures):
    """Fréchet Inception distance (TF-FID features, ``evaluation.inception.PROTOCOL``)."""

    keys = ("fid",)
    needs = frozenset({"synthesized", "reference"})

    def compute(self, real_statistics: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Dict[str, float]:
        """Against ``real_statistics`` (mu, sigma) if given, else the reference images seen."""
        from evaluation.fid import feature_statistics
        mu, sigma = real_statistics or feature_statistics(self.reference_features())
        return {"fid": fid_against(self.synthesized_features(), mu, sigma)}


@METRICS.register("kid")
class KID(_InceptionFeatures):
    """Kernel Inception distance over random subsets (torch-fidelity's estimator)."""

    keys = ("kid_mean", "kid_std")
    needs = frozenset({"synthesized", "reference"})

    def __init__(self, extractor: torch.nn.Module, subsets: int = 100, subset_size: int = 1000,
                 seed: int = 0) -> None:
        super().__init__(extractor)
        self.subsets, self.subset_size, self.seed = subsets, subset_size, seed

    def compute(self) -> Dict[str, float]:
        return self.from_features(self.reference_features(), self.synthesized_features(),
                                  self.subsets, self.subset_size, self.seed)

    @staticmethod
    def from_features(real: np.ndarray, fake: np.ndarray, subsets: int, subset_size: int,
                      seed: int = 0) -> Dict[str, float]:
        """KID of features computed elsewhere (the evaluator shares FID's features)."""
        from evaluation.fid import kid_from_features
        # (real, fake): torch-fidelity's argument order, so the subset draws match it
        mean, std = kid_from_features(real, fake, subsets, subset_size, seed=seed)
        return {"kid_mean": mean, "kid_std": std}


@METRICS.register("seg")
class Segmentation(Metric):
    """A segmenter on the synthesized images scored against the input label maps."""

    keys = ("miou", "pixel_accuracy", "mean_class_accuracy")
    needs = frozenset({"synthesized", "labels"})

    def __init__(self, segmenter: Any, label_space: Any) -> None:
        self.segmenter, self.label_space = segmenter, label_space
        self.confusion = label_space.confusion_matrix()

    def update(self, synthesized: torch.Tensor, labels: torch.Tensor) -> None:
        pred = self.segmenter.predict(synthesized.float() / 127.5 - 1.0)
        self.confusion.update(pred, self.label_space.to_eval(labels))

    def compute(self) -> Dict[str, float]:
        c = self.confusion
        return {"miou": c.miou(), "pixel_accuracy": c.pixel_accuracy(),
                "mean_class_accuracy": c.mean_class_accuracy()}


@METRICS.register("paired")
class Paired(Metric):
    """PSNR (mean of per-image values), SSIM and MSE against the paired real images."""

    keys = ("psnr", "ssim", "mse")
    needs = frozenset({"synthesized", "paired_real"})

    def __init__(self) -> None:
        from evaluation.image_metrics import PairedMetrics
        self.acc = PairedMetrics()

    def update(self, synthesized: torch.Tensor, paired_real: torch.Tensor) -> None:
        self.acc.update(_unit(synthesized), _unit(paired_real))

    def compute(self) -> Dict[str, Any]:
        """The three keys plus PairedMetrics' details (mse_255, psnr_identical, num_images)."""
        return self.acc.compute()


@METRICS.register("lpips")
class LPIPS(Metric):
    """Mean LPIPS (v0.1, AlexNet) against the paired real images."""

    keys = ("lpips",)
    needs = frozenset({"synthesized", "paired_real"})

    def __init__(self, network: Any) -> None:
        self.network, self.total, self.count = network, 0.0, 0

    def update(self, synthesized: torch.Tensor, paired_real: torch.Tensor) -> None:
        d = self.network(_unit(synthesized), _unit(paired_real))
        self.total += float(d.sum())
        self.count += d.numel()

    def compute(self) -> Dict[str, float]:
        return {"lpips": self.total / self.count} if self.count else {}


@METRICS.register("diversity")
class Diversity(Metric):
    """Mean pairwise distance between the samples of one label map: LPIPS, else L1 reported
    as ``diversity_l1`` (another quantity, never under the LPIPS key)."""

    keys = ("diversity", "diversity_l1")
    needs = frozenset({"synthesized", "samples"})

    def __init__(self, network: Any, device: torch.device) -> None:
        self.network, self.device = network, device
        self.total, self.maps, self.distance = 0.0, 0, None

    def update(self, synthesized: torch.Tensor, samples: torch.Tensor) -> None:
        """``samples``: the other K-1 samples, uint8 ``(N, K-1, 3, H, W)``."""
        from evaluation.image_metrics import diversity
        stack = [_unit(synthesized)] + [_unit(samples[:, k]) for k in range(samples.size(1))]
        score = diversity(stack, self.network if self.network is not None else "l1",
                          device=self.device, progress=False)
        self.total += float(score) * score.num_maps
        self.maps += score.num_maps
        self.distance = "lpips-alex" if self.network is not None else score.distance

    @property
    def key(self) -> str:
        return "diversity" if self.network is not None else "diversity_l1"

    def compute(self) -> Dict[str, float]:
        return {self.key: self.total / self.maps} if self.maps else {}


@METRICS.register("time")
class Time(Metric):
    """test.py's synchronized seconds per image (read from results.json, not measured here)."""

    keys = ("sec_per_image",)
    needs = frozenset({"timing"})

    def __init__(self) -> None:
        self.timing: Dict[str, Any] = {}

    def update(self, timing: Dict[str, Any]) -> None:
        self.timing = dict(timing)

    def compute(self) -> Dict[str, float]:
        return {"sec_per_image": self.timing["sec_per_image"]}


def metric_groups() -> Dict[str, Tuple[str, ...]]:
    """``{--metrics name: metrics.json keys}`` in registration order (the evaluator's groups)."""
    return {name: METRICS.get(name).keys for name in _ORDER}


def describe() -> Dict[str, Dict[str, List[str]]]:
    """``{name: {"keys": [...], "needs": [...]}}`` for every registered metric (for --help, tests)."""
    return {name: {"keys": list(METRICS.get(name).keys), "needs": sorted(METRICS.get(name).needs)}
            for name in METRICS.names()}


# "all" runs the groups in this order (the order metrics.json has always had)
_ORDER = tuple(name for name in ("fid", "kid", "seg", "paired", "lpips", "diversity", "time")
               if name in METRICS) + tuple(n for n in METRICS.names() if n not in
                                           ("fid", "kid", "seg", "paired", "lpips", "diversity", "time"))
