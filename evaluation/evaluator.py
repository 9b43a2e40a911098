"""One pass over an ``EvalSet`` computing every requested metric (scripts/evaluate.py's engine).

The metrics are the registered objects of ``evaluation.metrics`` (their names, keys and needed
inputs); this module decides which can run, loads what they need and feeds them one data pass.

Metrics (names as they appear in metrics.json):

* ``fid``, ``kid_mean``, ``kid_std``: synthesized vs real images (TF-FID Inception, see
  ``evaluation.inception.PROTOCOL``); the real side is ``real_stats`` (a cached .npz, FID
  only), else ``real_dir``, else the paired real images of the results folder;
* ``miou``, ``pixel_accuracy``, ``mean_class_accuracy``: a segmenter on the synthesized images
  against the input label maps, in the dataset's evaluation label space;
* ``psnr``, ``ssim``, ``mse``, ``lpips``: against the paired real images;
* ``diversity``: mean pairwise LPIPS between the samples of one label map; without LPIPS
  weights (or below LPIPS's minimum size) ``diversity_l1`` instead, with a note saying why;
* ``sec_per_image``: test.py's synchronized synthesis time (from results.json).

``metrics="all"`` computes what the inputs allow and records why the rest was skipped; a metric
asked for by name that cannot be computed is an error saying what is missing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.loader import WorkerSafeLoader, ignore_stop_signals
from evaluation.metrics import FID, KID, METRICS, SET_INPUTS, Metric, fid_against, metric_groups
from evaluation.results_folder import EvalImages, EvalSet
from util.errors import OptionError, UserError


# --metrics names -> metrics.json keys, from the metric registry (evaluation/metrics.py)
METRIC_GROUPS = metric_groups()

KID_SUBSET_SIZE = 1000  # torch-fidelity's default; KID depends on it, so smaller sets are refused
LPIPS_MIN_SIDE = 31  # AlexNet's stride-4 conv and two 3x3/2 max-pools leave no pixel below this
MIN_FID_IMAGES = 2  # a covariance (FID) and distinct pairs (KID) need two images per set

# The protocol choices this module makes (the feature protocol is evaluation.inception.PROTOCOL).
PROTOCOL = {
    "resolution": "the synthesized images' own size unless --eval_size; real photos (paired, "
                  "--real_dir reference, cached --real_stats) resized to it bicubic (PIL, "
                  "antialiased), label maps nearest; differing aspect ratios are an error",
    "images": "every synthesized image in the folder (test.py's --how_many decides how many), "
              "8-bit PNG as saved; the first sample per label map for FID/KID/mIoU/PSNR",
    "segmentation": "segmenter on the synthesized image at evaluation resolution, scored against "
                    "the input label map mapped to the dataset's evaluation label space "
                    "(Cityscapes: 19 train ids); ignore label skipped; mIoU = mean IoU over classes "
                    "present in prediction or label (confusion matrix over the whole set)",
    "paired": "PSNR (data range 1, mean of per-image values), SSIM (Gaussian 11x11, sigma 1.5, "
              "K1 0.01, K2 0.03, per RGB channel), MSE in [0,1] units; LPIPS v0.1 (AlexNet)",
    "diversity": "mean pairwise LPIPS between the K samples of each label map (diversity_l1: "
                 "mean pairwise L1 in [0, 1] units, when LPIPS is unavailable)",
}


def parse_metrics(text: str) -> Tuple[List[str], bool]:
    """``"all"`` or a comma list of METRIC_GROUPS keys -> (groups, explicit)."""
    known = metric_groups()  # read now: a metric registered after import counts too
    if text.strip() == "all":
        return list(known), False
    groups = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in groups if g not in known]
    if unknown or not groups:
        raise OptionError(f"--metrics {text!r}: unknown {unknown}; choose 'all' or a comma list of "
                          f"{', '.join(known)}")
    return groups, True


@dataclass
class EvalConfig:
    metrics: str = "all"
    device: torch.device = torch.device("cpu")
    batch_size: int = 16
    num_workers: int = 2
    eval_size: Optional[Tuple[int, int]] = None
    fid_weights: Optional[str] = None
    fid_protocol: str = "tf"                # resize before Inception: tf | clean (inception.FID_PROTOCOLS)
    real_stats: Optional[str] = None
    real_dir: Optional[str] = None
    kid_subsets: int = 100
    kid_subset_size: Optional[int] = None   # None: KID_SUBSET_SIZE, and smaller sets are refused
    segmenter: Optional[str] = None
    segmenter_path: Optional[str] = None
    segmenter_mapping: Optional[str] = None
    dataset_mode: Optional[str] = None      # label space, when results.json does not say
    label_nc: Optional[int] = None
    contain_dontcare_label: Optional[bool] = None
    eval_ignore_id: Optional[int] = None    # a void class id not scored (else results.json's)
    lpips_backbone: Optional[str] = None
    recursive: bool = False                 # --real_dir: sub-folders too
    seed: int = 0
    progress: bool = True


@dataclass
class EvalResult:
    metrics: Dict[str, Any] = field(default_factory=dict)
    details: Dict[str, Any] = field(default_factory=dict)   # per-class IoU, sources, ...
    notes: List[str] = field(default_factory=list)          # what was skipped and why
    protocol: Dict[str, Any] = field(default_factory=dict)
    real_statistics: Optional[Dict[str, Any]] = None        # mu, sigma, source: for --save_real_stats


class _Plan:
    """Which metrics run, with their loaded networks; decided before the data pass."""

    def __init__(self, eval_set: EvalSet, cfg: EvalConfig, result: EvalResult) -> None:
        self.groups, self.explicit = parse_metrics(cfg.metrics)
        self.cfg, self.set, self.result = cfg, eval_set, result
        self.inception = self.segmenter = self.lpips = None
        self.label_space = None
        self.real_source: Optional[str] = None
        self.lpips_missing: Optional[str] = None  # why LPIPS could not be loaded
        # the one size every unpaired reference image (--real_dir, --real_stats) is brought to
        self.reference_size: Optional[Tuple[int, int]] = None
        self.real_stats: Optional[Tuple[np.ndarray, np.ndarray, Dict[str, Any]]] = None

    def skip(self, group: str, why: str) -> None:
        if self.explicit:
            raise UserError(f"cannot compute {group}: {why}")
        self.groups.remove(group)
        self.result.notes.append(f"{group} skipped: {why}")

    def _missing_input(self, needs: frozenset) -> Optional[str]:
        """Why the results lack an input of ``needs`` (``evaluation.metrics.INPUTS``), or None."""
        s = self.set
        if "paired_real" in needs and not s.has_real:
            return self._no_pairs()
        if "labels" in needs and not s.has_labels:
            return "no label-id maps (labels/ from test.py, or --label_dir)"
        if "samples" in needs and s.num_samples < 2:
            return "one sample per label map; run test.py with --num_samples K (K >= 2, a --use_vae model)"
        if "timing" in needs and not ((s.manifest or {}).get("timing") or {}).get("sec_per_image"):
            return "no timing in results.json (folders not written by test.py)"
        return None

    def decide(self) -> None:
        """From the chosen metrics' declared ``needs`` and ``uses``: skip what the inputs do not
        allow, then load each network once (before the data pass, so errors come first)."""
        cfg = self.cfg
        for group in list(self.groups):
            why = self._missing_input(METRICS.get(group).needs)
            if why:
                self.skip(group, why)
        if any("reference" in METRICS.get(g).needs for g in self.groups):
            self._plan_reference()
        uses = set().union(*(METRICS.get(g).uses for g in self.groups))
        if "inception" in uses:
            from evaluation.inception import load_inception
            # missing weights (or clean-fid for --fid_protocol clean): an error before the data pass
            self.inception = load_inception(cfg.fid_weights, cfg.device, protocol=cfg.fid_protocol)
        if "segmenter" in uses:
            self._plan_segmenter()
        if "lpips" in uses:
            self._plan_lpips()
        if "paired" in self.groups or self.lpips is not None:
            self._check_sizes()

    def _plan_reference(self) -> None:
        """FID / KID: where the real side comes from, its counts and its evaluation size."""
        cfg, s = self.cfg, self.set
        self.real_source = ("stats" if cfg.real_stats else "dir" if cfg.real_dir
                            else "paired" if s.has_real else None)
        if self.real_source is None:
            for g in ("fid", "kid"):
                if g in self.groups:
                    self.skip(g, "no real images: the results have no real_image/ and neither "
                                 "--real_dir nor --real_stats was given")
            return
        if self.real_source == "stats" and "kid" in self.groups:
            self.skip("kid", "--real_stats holds FID statistics only; KID needs real images "
                             "(--real_dir or paired real images)")
        if "fid" in self.groups or "kid" in self.groups:
            self._check_fid_kid_counts()
        if self.real_source in ("dir", "stats") and ("fid" in self.groups or "kid" in self.groups):
            self.reference_size = self._reference_size()
        if "fid" in self.groups and self.real_source == "stats":
            self._load_real_stats()  # its protocol first, then the size it was computed at
            self._check_stats_size()

    def _check_fid_kid_counts(self) -> None:
        """Both need at least 2 images per set (a covariance, pairs of images); known before the
        data pass, so a run of 1 image skips them instead of failing after it."""
        counts = {"synthesized": len(self.set.items)}
        if self.real_source == "dir":
            from evaluation.results_folder import from_folders
            reference = from_folders(self.cfg.real_dir, recursive=self.cfg.recursive)
            counts[f"--real_dir {self.cfg.real_dir}"] = len(reference.items)
        few = [f"{n} {what} image{'' if n == 1 else 's'}" for what, n in counts.items()
               if n < MIN_FID_IMAGES]
        if few:
            for g in ("fid", "kid"):
                if g in self.groups:
                    self.skip(g, f"FID and KID need at least {MIN_FID_IMAGES} images per set, got "
                                 f"{' and '.join(few)}; synthesize more (test.py --how_many)")
        elif "kid" in self.groups:
            self._check_kid_subset_size(counts)

    def _check_kid_subset_size(self, counts: Dict[str, int]) -> None:
        """KID's value depends on the subset size, so a set smaller than it is refused rather than
        silently shrunk: the default (torch-fidelity's 1000) only with a hint, an explicit
        --kid_subset_size when it does not fit either."""
        size, smaller = self.cfg.kid_subset_size, min(counts.values())
        if size is not None and size > smaller:
            self.skip("kid", f"--kid_subset_size {size} is larger than the smaller set ({smaller} "
                             f"images); give at most {smaller}")
        elif size is None and KID_SUBSET_SIZE > smaller:
            have = " and ".join(f"{n} {what}" for what, n in counts.items())
            self.skip("kid", f"KID uses subsets of {KID_SUBSET_SIZE} images (torch-fidelity's default) "
                             f"and got {have} images; pass --kid_subset_size N (N <= {smaller}) to "
                             "compare KIDs at that subset size only")

    def _load_real_stats(self) -> None:
        """--real_stats before the data pass: the file must exist and hold statistics of the same
        FID protocol (files from before --fid_protocol existed are 'tf')."""
        from evaluation.fid import load_statistics
        mu, sigma, meta = load_statistics(self.cfg.real_stats)
        saved = meta.get("fid_protocol", "tf")
        if saved != self.cfg.fid_protocol:
            raise UserError(f"--real_stats {self.cfg.real_stats} was computed with --fid_protocol "
                            f"{saved}, this run uses {self.cfg.fid_protocol}; recompute it "
                            "(--save_real_stats) or use the same protocol")
        self.real_stats = (mu, sigma, meta)

    def _check_sizes(self) -> None:
        """SSIM's window and LPIPS's AlexNet need a minimum image size: known from the file
        headers (or --eval_size), so tiny images skip those metrics instead of failing mid-run."""
        from evaluation.image_metrics import SSIM_WINDOW
        from evaluation.results_folder import image_size
        if self.cfg.eval_size:
            side, where = min(self.cfg.eval_size), "--eval_size {}x{}".format(*self.cfg.eval_size)
        else:
            side, path = min((min(image_size(i.fake)), i.fake) for i in self.set.items)
            where = f"{path} is {'x'.join(map(str, image_size(path)))}"
        if "paired" in self.groups and side < SSIM_WINDOW:
            self.skip("paired", f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels; "
                                f"{where} (give a larger --eval_size)")
        if self.lpips is not None and side < LPIPS_MIN_SIDE:
            why = (f"LPIPS (AlexNet) needs images of at least {LPIPS_MIN_SIDE}x{LPIPS_MIN_SIDE} "
                   f"pixels; {where} (give a larger --eval_size)")
            if "lpips" in self.groups:
                self.skip("lpips", why)
            self.lpips, self.lpips_missing = None, why  # diversity then reports diversity_l1

    def _no_pairs(self) -> str:
        """Why paired metrics cannot run: the pairing counts of --fake_dir/--real_dir."""
        p = self.set.pairing
        if p is None:
            return "the results have no paired real images (images/real_image/)"
        if not p["real"]:
            return "no real images to pair with"
        return (f"{p['synthesized'] - p['pairs']} of {p['synthesized']} synthesized images have "
                f"no real image of the same name in --real_dir (matched by relative path without "
                f"extension), e.g. {p['unpaired_examples']}; paired metrics need every one paired")

    def _reference_size(self) -> Tuple[int, int]:
        """The evaluation size the unpaired reference is resized to: --eval_size, else the
        synthesized images' size, which must then be one size (file headers, no decoding)."""
        if self.cfg.eval_size:
            return tuple(self.cfg.eval_size)
        from evaluation.results_folder import image_size
        sizes: Dict[Tuple[int, int], str] = {}
        for item in self.set.items:
            sizes.setdefault(image_size(item.fake), item.fake)
        if len(sizes) > 1:
            shown = ", ".join(f"{p} is {w}x{h}" for (w, h), p in list(sizes.items())[:2])
            raise OptionError(f"the synthesized images differ in size ({shown}); an unpaired "
                              f"reference (--real_dir, --real_stats) needs one evaluation size: "
                              f"give --eval_size WIDTHxHEIGHT")
        return next(iter(sizes))

    def _check_stats_size(self) -> None:
        """Cached statistics are only comparable at the size they were computed at (after
        ``_load_real_stats``, which read the file)."""
        meta = self.real_stats[2]
        size = tuple(meta.get("eval_size") or ())
        want = "x".join(map(str, self.reference_size))
        if not size:
            self.result.notes.append(f"--real_stats {self.cfg.real_stats} does not record the "
                                     f"size it was computed at; this evaluation is at {want}")
        elif size != self.reference_size:
            raise OptionError(f"--real_stats {self.cfg.real_stats} was computed at "
                              f"{'x'.join(map(str, size))} but this evaluation is at {want}; "
                              f"give --eval_size {'x'.join(map(str, size))} or recompute the "
                              f"statistics at {want} (--real_dir DIR --save_real_stats FILE)")

    def _plan_segmenter(self) -> None:
        cfg, s = self.cfg, self.set
        if not cfg.segmenter:
            return self.skip("seg", "no --segmenter given (e.g. --segmenter unet --segmenter_path "
                                    "checkpoints/seg/segmenter.pth from scripts/train_segmenter.py)")
        from evaluation.label_spaces import label_space_for
        from evaluation.segmenters import build_segmenter
        mode = cfg.dataset_mode or s.options.get("dataset_mode")
        label_nc = cfg.label_nc if cfg.label_nc is not None else s.options.get("label_nc")
        dontcare = (cfg.contain_dontcare_label if cfg.contain_dontcare_label is not None
                    else s.options.get("contain_dontcare_label", False))
        if mode is None or label_nc is None:
            raise OptionError("the label space is unknown (no results.json): give --dataset_mode "
                              "and --label_nc (and --contain_dontcare_label if it applies)")
        ignore_id = (cfg.eval_ignore_id if cfg.eval_ignore_id is not None
                     else s.options.get("eval_ignore_id"))
        self.label_space = label_space_for(mode, int(label_nc), bool(dontcare), ignore_id)
        self.segmenter = build_segmenter(cfg.segmenter, cfg.segmenter_path, self.label_space,
                                         cfg.device, cfg.segmenter_mapping)

    def _plan_lpips(self) -> None:
        from evaluation.lpips import load_lpips
        from util.errors import WeightsError
        try:
            self.lpips = load_lpips("alex", self.cfg.lpips_backbone, self.cfg.device)
        except WeightsError as e:
            self.lpips_missing = str(e)
            for group in list(self.groups):  # metrics for which LPIPS is not optional
                cls = METRICS.get(group)
                if "lpips" in cls.uses and "lpips" not in getattr(cls, "optional_networks", ()):
                    self.skip(group, str(e))

    def networks(self) -> Dict[str, Any]:
        """What ``Metric.create`` receives: the loaded networks by ``NETWORKS`` name."""
        return {"inception": self.inception, "segmenter": self.segmenter,
                "label_space": self.label_space, "lpips": self.lpips,
                "lpips_missing": self.lpips_missing,
                "segmenter_source": {"segmenter": self.cfg.segmenter,
                                     "segmenter_path": self.cfg.segmenter_path}}


def _set_input(eval_set: EvalSet, name: str) -> Any:
    """An input that comes once per evaluation (``evaluation.metrics.SET_INPUTS``)."""
    if name == "timing":
        return eval_set.manifest["timing"]
    raise KeyError(f"no set-level input {name!r}")


def _collate(items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return items  # sizes may differ between items; grouped by shape below


def _stacks(items: List[Dict[str, Any]], key: str) -> Iterable[Tuple[List[int], torch.Tensor]]:
    """(positions, stacked tensor) per group of equal-shaped ``key`` tensors."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(tuple(item[key].shape), []).append(i)
    for idx in groups.values():
        yield idx, torch.stack([items[i][key] for i in idx])


def _real_features(plan: _Plan, loader_for: Callable[[EvalSet], DataLoader]) -> Optional[np.ndarray]:
    """Inception features of --real_dir's images (all of them)."""
    from evaluation.fid import compute_features
    from evaluation.results_folder import from_folders
    real_set = from_folders(plan.cfg.real_dir, recursive=plan.cfg.recursive)
    # every reference image goes through the same resize as the paired reals: to the one
    # evaluation size (its own size would compare 240x180 photos with 120x90 synthesized ones)
    size = plan.reference_size
    loader = loader_for(real_set, size=size, size_source="the evaluation size")

    def batches():
        for items in loader:
            for _, x in _stacks(items, "fake"):
                yield x
    return compute_features(batches(), plan.inception, plan.cfg.device, desc="real features",
                            total=len(real_set.items))


def evaluate(eval_set: EvalSet, cfg: EvalConfig) -> EvalResult:
    """Compute the metrics of ``eval_set`` under ``cfg``; see the module docstring."""
    result = EvalResult(notes=list(eval_set.notes))
    if eval_set.pairing is not None:
        result.details["pairing"] = dict(eval_set.pairing)
    if eval_set.found:
        result.details["images_found"] = list(eval_set.found)
    plan = _Plan(eval_set, cfg, result)
    plan.decide()
    groups = plan.groups
    # FID / KID (needs "reference") share one Inception pass, with the reference handled below;
    # every other chosen metric is built from the registry and fed the inputs it declared
    features = FID(plan.inception) if plan.inception is not None else None
    batch_metrics: List[Tuple[str, Metric]] = [
        (g, METRICS.get(g).create(plan.networks(), cfg.device)) for g in groups
        if "reference" not in METRICS.get(g).needs]
    needs = set().union(set(), *(m.needs for _, m in batch_metrics)) - SET_INPUTS
    need_real = "paired_real" in needs or (plan.real_source == "paired" and features is not None)

    def loader_for(s: EvalSet, size: Optional[Tuple[int, int]] = None, **use) -> DataLoader:
        # workers ignore SIGTERM / Ctrl-C (the main process stops the run) and are shut down
        # before exit, as the training loader's are
        return WorkerSafeLoader(EvalImages(s, size or cfg.eval_size, **use), batch_size=cfg.batch_size,
                                shuffle=False, num_workers=cfg.num_workers, collate_fn=_collate,
                                worker_init_fn=ignore_stop_signals)

    for _, metric in batch_metrics:  # the set-level inputs, once
        if metric.needs & SET_INPUTS:
            metric.update(**{k: _set_input(eval_set, k) for k in metric.needs & SET_INPUTS})
    per_batch = [(g, m) for g, m in batch_metrics if m.needs - SET_INPUTS]
    loader = loader_for(eval_set, use_real=need_real, use_labels="labels" in needs,
                        use_samples="samples" in needs)
    start = time.perf_counter()
    dev = cfg.device
    with torch.inference_mode():
        for items in tqdm(loader, desc="evaluating", unit="batch", disable=not cfg.progress,
                          dynamic_ncols=True):
            for idx, fake in _stacks(items, "fake"):
                fake = fake.to(dev)
                real = torch.stack([items[i]["real"] for i in idx]).to(dev) if need_real else None
                if features is not None:
                    features.update(fake, real if plan.real_source == "paired" else None)
                inputs = {"synthesized": lambda: fake, "paired_real": lambda: real,
                          "names": lambda: [eval_set.items[items[i]["index"]].name for i in idx],
                          "labels": lambda: torch.stack([items[i]["label"] for i in idx]).to(dev),
                          "samples": lambda: torch.stack([items[i]["samples"] for i in idx]).to(dev)}
                for _, metric in per_batch:
                    metric.update(**{k: inputs[k]() for k in metric.needs})
    m = result.metrics
    m["num_images"] = len(eval_set.items)
    if features is not None:
        _fid_kid(plan, result, features, loader_for)
    for _, metric in batch_metrics:
        m.update(metric.compute())
        result.details.update(metric.details())
        result.notes.extend(metric.notes())
    result.details["evaluation_seconds"] = time.perf_counter() - start
    result.protocol = dict(PROTOCOL)
    if plan.inception is not None:
        from evaluation.inception import feature_protocol
        result.protocol["features"] = dict(feature_protocol(cfg.fid_protocol),
                                           weights=getattr(plan.inception, "source", None))
        if "kid" in groups:
            result.protocol["features"].update(kid_subsets=cfg.kid_subsets,
                                               kid_subset_size=cfg.kid_subset_size or KID_SUBSET_SIZE)
    result.protocol["eval_size"] = list(cfg.eval_size) if cfg.eval_size else "synthesized size"
    if plan.label_space is not None:
        space = plan.label_space
        result.protocol["label_space"] = {
            "name": space.name, "classes": space.num_classes,
            "dontcare": "not scored (255, and label_nc with --contain_dontcare_label)",
            "void_classes_not_scored": [space.class_names[i] for i in space.void_ids]}
    return result


def _fid_kid(plan: _Plan, result: EvalResult, features: FID,
             loader_for: Callable[..., DataLoader]) -> None:
    from evaluation.fid import feature_statistics
    cfg, m = plan.cfg, result.metrics
    fake = features.synthesized_features()
    if plan.real_source == "stats":
        mu_r, sigma_r, meta = plan.real_stats
        real = None
        result.details["fid_real"] = {"stats": cfg.real_stats, **{k: v for k, v in meta.items()
                                                                 if isinstance(v, (str, int, float))}}
    else:
        real = (features.reference_features() if plan.real_source == "paired"
                else _real_features(plan, loader_for))
        mu_r, sigma_r = feature_statistics(real)
        source = cfg.real_dir or "paired real images"
        result.details["fid_real"] = {"source": source, "images": len(real)}
        result.real_statistics = {"mu": mu_r, "sigma": sigma_r, "source": source, "images": len(real),
                                  "eval_size": _statistics_size(plan), "fid_protocol": cfg.fid_protocol}
    if "fid" in plan.groups:
        m["fid"] = fid_against(fake, mu_r, sigma_r)
    if "kid" in plan.groups and real is not None:
        size = cfg.kid_subset_size or KID_SUBSET_SIZE  # fits both sets: checked before the pass
        m.update(KID.from_features(real, fake, cfg.kid_subsets, size, seed=cfg.seed))
        result.details["kid"] = {"subsets": cfg.kid_subsets, "subset_size": size}
    if min(len(fake), len(real) if real is not None else len(fake)) < 2048:
        result.notes.append(f"FID from {len(fake)} synthesized images: below 2048 the covariance is "
                            f"rank-deficient and FID is biased upward; compare only at equal counts")


def _statistics_size(plan: _Plan) -> Optional[List[int]]:
    """The one size the real statistics were computed at (recorded with --save_real_stats),
    or None when paired reals were resized to synthesized images of several sizes."""
    if plan.reference_size is not None:
        return list(plan.reference_size)
    try:
        return list(plan._reference_size())
    except OptionError:
        return None
