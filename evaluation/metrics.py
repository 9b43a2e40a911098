"""The metric registry: every metric the evaluation pipeline can report, by name.

A metric is a class registered in ``METRICS`` (``--metrics`` names, e.g. ``fid``, ``paired``) that
declares the metrics.json ``keys`` it reports, the inputs it ``needs`` (see ``INPUTS``) and the
pretrained networks it ``uses`` (see ``NETWORKS``), and accumulates over uint8 batches with
``update(**needs)`` before ``compute() -> {key: value}``. ``evaluation.evaluator``
(scripts/evaluate.py) plans from these declarations alone: a metric whose inputs the results do not
have is skipped (or refused when named), the networks named in ``uses`` are loaded once, and each
batch gives every metric the inputs it declared. ``trainers/periodic_eval.py`` (``--eval_freq``)
and the experiment scripts use the same classes, so one image gets one PSNR and one FID whichever
entry point measured it. Adding a metric: one class here plus its ``@METRICS.register`` line.

Images are ``(N, 3, H, W)`` uint8 (as saved PNGs); label maps ``(N, H, W)`` int64.
"""
from __future__ import annotations

import re
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
    "names": "each synthesized image's name (file stem; denoising results end in _sigmaN)",
    "timing": "test.py's synthesis time (results.json)",
}
# Inputs that come once per evaluation rather than with every batch.
SET_INPUTS = frozenset({"timing"})

# The pretrained networks a metric may use (the evaluator loads each once, before the data pass;
# a metric named in --metrics whose network is missing is an error saying how to get it).
NETWORKS = {
    "inception": "the TF-FID Inception-v3 (--fid_weights)",
    "segmenter": "the semantic segmenter with the dataset's label space (--segmenter)",
    "lpips": "LPIPS v0.1 with its AlexNet (--lpips_backbone); optional for diversity",
}


def _unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1] (the paired metrics' range)."""
    if x.dtype != torch.uint8:
        raise ValueError(f"metrics take uint8 images (as saved PNGs), got dtype {x.dtype}; "
                         "quantize generator output with evaluation.inception.to_uint8")
    return x.float() / 255.0


_SIGMA = re.compile(r"_sigma([0-9p]+)$")  # noisy mode's result names: <stem>_sigma25


def noise_level(name: str) -> Optional[str]:
    """The noise sigma (0-255 scale) a denoising result name carries, e.g. '25', or None."""
    m = _SIGMA.search(name)
    return m.group(1).replace("p", ".") if m else None


class Metric:
    """Base class: ``keys`` reported, ``needs`` (subset of ``INPUTS``), ``uses`` (subset of
    ``NETWORKS``), update/compute; ``create`` builds one from the evaluator's loaded networks."""

    keys: Tuple[str, ...] = ()
    needs: FrozenSet[str] = frozenset()
    uses: FrozenSet[str] = frozenset()

    @classmethod
    def create(cls, networks: Dict[str, Any], device: torch.device) -> "Metric":
        """The evaluator's constructor: ``networks`` maps each name of ``uses`` to the loaded
        network (None for an optional one that is missing); ``device`` is where batches live."""
        return cls()

    def details(self) -> Dict[str, Any]:
        """What metrics.json's ``details`` records besides the values (default nothing)."""
        return {}

    def notes(self) -> List[str]:
        """Remarks for the report (e.g. a substitute distance), default none."""
        return []

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
    uses = frozenset({"inception"})

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
    uses = frozenset({"inception"})

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
    uses = frozenset({"segmenter"})

    def __init__(self, segmenter: Any, label_space: Any) -> None:
        self.segmenter, self.label_space = segmenter, label_space
        self.confusion = label_space.confusion_matrix()

    @classmethod
    def create(cls, networks: Dict[str, Any], device: torch.device) -> "Segmentation":
        metric = cls(networks["segmenter"], networks["label_space"])
        metric.source = dict(networks.get("segmenter_source") or {})
        return metric

    def details(self) -> Dict[str, Any]:
        return {"segmentation": {**getattr(self, "source", {}),
                                 "label_space": self.label_space.describe(),
                                 **self.confusion.as_dict(list(self.label_space.class_names))}}

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
    needs = frozenset({"synthesized", "paired_real", "names"})

    def __init__(self) -> None:
        from evaluation.image_metrics import PairedMetrics
        self.acc = PairedMetrics()
        # denoising results (<stem>_sigmaN): PSNR/SSIM per noise level too, as papers report them
        self.per_level: Dict[str, Any] = {}
        self.unlevelled = 0

    def update(self, synthesized: torch.Tensor, paired_real: torch.Tensor,
               names: Optional[List[str]] = None) -> None:
        fake, real = _unit(synthesized), _unit(paired_real)
        self.acc.update(fake, real)
        for j, name in enumerate(names or []):
            level = noise_level(name)
            if level is None:
                self.unlevelled += 1
                continue
            if level not in self.per_level:
                from evaluation.image_metrics import PairedMetrics
                self.per_level[level] = PairedMetrics()
            self.per_level[level].update(fake[j:j + 1], real[j:j + 1])

    def _levels(self) -> Dict[str, Dict[str, Any]]:
        """Per noise level, only when every image carried one."""
        if not self.per_level or self.unlevelled:
            return {}
        return {lv: self.per_level[lv].compute() for lv in sorted(self.per_level, key=float)}

    def compute(self) -> Dict[str, Any]:
        """psnr, ssim, mse (and psnr_sigmaN / ssim_sigmaN for denoising results)."""
        values = self.acc.compute()
        out = {k: values[k] for k in self.keys}
        for level, v in self._levels().items():
            out[f"psnr_sigma{level}"], out[f"ssim_sigma{level}"] = v["psnr"], v["ssim"]
        return out

    def details(self) -> Dict[str, Any]:
        """PairedMetrics' details (mse_255, psnr_identical, num_images), per level too."""
        out: Dict[str, Any] = {"paired": self.acc.compute()}
        if self._levels():
            out["paired_per_sigma"] = self._levels()
        return out


@METRICS.register("lpips")
class LPIPS(Metric):
    """Mean LPIPS (v0.1, AlexNet) against the paired real images."""

    keys = ("lpips",)
    needs = frozenset({"synthesized", "paired_real"})
    uses = frozenset({"lpips"})

    def __init__(self, network: Any) -> None:
        self.network, self.total, self.count = network, 0.0, 0

    @classmethod
    def create(cls, networks: Dict[str, Any], device: torch.device) -> "LPIPS":
        return cls(networks["lpips"])

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
    uses = frozenset({"lpips"})
    optional_networks = frozenset({"lpips"})  # without it: diversity_l1, with a note

    def __init__(self, network: Any, device: torch.device, missing: Optional[str] = None) -> None:
        self.network, self.device = network, device
        self.total, self.maps, self.distance = 0.0, 0, None
        self.samples_per_map: Optional[int] = None
        self.missing = missing  # why LPIPS is not used

    @classmethod
    def create(cls, networks: Dict[str, Any], device: torch.device) -> "Diversity":
        return cls(networks.get("lpips"), device, networks.get("lpips_missing"))

    def update(self, synthesized: torch.Tensor, samples: torch.Tensor) -> None:
        """``samples``: the other K-1 samples, uint8 ``(N, K-1, 3, H, W)``."""
        from evaluation.image_metrics import diversity
        self.samples_per_map = samples.size(1) + 1
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

    def details(self) -> Dict[str, Any]:
        if not self.maps:
            return {}
        return {"diversity": {"distance": self.distance, "key": self.key, "label_maps": self.maps,
                              "samples_per_map": self.samples_per_map}}

    def notes(self) -> List[str]:
        if self.maps and self.network is None:  # L1 is another quantity: never under LPIPS's key
            return [f"diversity reported as diversity_l1 (mean pairwise L1, [0, 1] units), not "
                    f"LPIPS: {self.missing}"]
        return []


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

    def details(self) -> Dict[str, Any]:
        return {"time": self.timing}


def metric_groups() -> Dict[str, Tuple[str, ...]]:
    """``{--metrics name: metrics.json keys}`` in registration order (the evaluator's groups)."""
    order = [n for n in _ORDER if n in METRICS] + [n for n in METRICS.names() if n not in _ORDER]
    return {name: METRICS.get(name).keys for name in order}


def describe() -> Dict[str, Dict[str, List[str]]]:
    """``{name: {"keys": [...], "needs": [...], "uses": [...]}}`` for every registered metric."""
    return {name: {"keys": list(METRICS.get(name).keys), "needs": sorted(METRICS.get(name).needs),
                   "uses": sorted(METRICS.get(name).uses)} for name in METRICS.names()}


# "all" runs the built-in groups in this order (metrics.json's order), then any added later
_ORDER = ("fid", "kid", "seg", "paired", "lpips", "diversity", "time")
