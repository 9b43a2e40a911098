"""Cluster pix2pixHD's instance-wise features of the training set (after ``--instance_feat`` /
``--label_feat`` training), so that test.py can sample them without real images:

    python scripts/encode_features.py --name NAME --load_from_opt_file [--n_clusters 10]
    python test.py --name NAME --load_from_opt_file --load_features

The trained encoder E (``<which_epoch>_net_E.pth``) encodes every image of the ``--phase``
split (default train) in order, without flips; each region (instance, or label with
``--label_feat``) gives one record: its average feature and its area in units of 1/32 of the
image. Per class, the records of regions larger than 1/64 of the image are clustered into at
most ``--n_clusters`` centres with k-means (scikit-learn's ``KMeans(random_state=0)`` as
pix2pixHD, when installed; else this script's seeded numpy k-means++). Written next to the
checkpoint in pix2pixHD's layout (``np.save`` of a dict class id -> array), so its files load
here and ours there: ``features.npy`` (class -> (n, feat_num + 1) records) and
``features_clustered_<n_clusters, 3 digits>.npy`` (class -> (k, feat_num) centres).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch
from tqdm import tqdm

from data import create_dataset
from data.loader import create_dataloader
from models.networks import define_E
from models.networks.base_network import add_option_once
from models.networks.feature_encoder import AREA_THRESHOLD, encode_rows, uses_features
from options.test_options import TestOptions
from util import checkpoint, distributed
from util.cli import run_reporting_errors
from util.errors import OptionError

KMEANS_CHOICES = ("auto", "sklearn", "numpy")


class EncodeOptions(TestOptions):
    """test.py's options (dataset, checkpoint, --how_many) on the training split, plus --kmeans."""

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = super().initialize(parser)
        add_option_once(parser, "--kmeans", type=str, default="auto", choices=KMEANS_CHOICES,
                        help="k-means implementation: scikit-learn when installed (auto), or "
                             "this script's numpy k-means++ (seeded by --seed)")
        parser.set_defaults(phase="train")
        return parser


# ---------------------------------------------------------------------- k-means
def kmeans_numpy(points: np.ndarray, k: int, seed: int, max_iter: int = 300,
                 tol: float = 1e-4) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding: ``points: (n, d)`` -> centres ``(k, d)``.

    Deterministic for a ``seed``. Stops when the centres move less than ``tol`` times the mean
    per-dimension variance (scikit-learn's criterion); an emptied cluster keeps its centre.
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n))]
    dist2 = ((points - points[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        total = dist2.sum()
        # every point already sits on a centre (duplicates): any point will do
        pick = int(rng.integers(n)) if total <= 0 else int(rng.choice(n, p=dist2 / total))
        chosen.append(pick)
        dist2 = np.minimum(dist2, ((points - points[pick]) ** 2).sum(1))
    centres = points[chosen].copy()
    threshold = tol * float(points.var(axis=0).mean())
    for _ in range(max_iter):
        assign = ((points[:, None, :] - centres[None]) ** 2).sum(2).argmin(1)
        moved = centres.copy()
        for j in range(k):
            members = points[assign == j]
            if len(members):
                moved[j] = members.mean(0)
        shift = float(((moved - centres) ** 2).sum())
        centres = moved
        if shift <= threshold:
            break
    return centres


def kmeans_backend(choice: str) -> Tuple[str, Optional[type]]:
    """``(description, sklearn KMeans or None)`` for ``--kmeans``."""
    if choice in ("auto", "sklearn"):
        try:
            import sklearn
            from sklearn.cluster import KMeans
            return f"scikit-learn {sklearn.__version__} KMeans(random_state=0)", KMeans
        except ImportError:
            if choice == "sklearn":
                raise OptionError("--kmeans sklearn: scikit-learn is not installed (pip install "
                                  "scikit-learn), or use --kmeans numpy") from None
    return "numpy k-means++ of scripts/encode_features.py", None


def cluster_features(features: Dict[int, np.ndarray], n_clusters: int, seed: int,
                     kmeans_cls: Optional[type]) -> Dict[int, np.ndarray]:
    """pix2pixHD's clustering: per class, the records ``(n, feat_num + 1)`` whose area (last
    column) exceeds 0.5 are clustered into ``min(n, n_clusters)`` centres ``(k, feat_num)``;
    classes without such records get none."""
    centres: Dict[int, np.ndarray] = {}
    for label in sorted(features):
        rows = features[label]
        points = rows[rows[:, -1] > AREA_THRESHOLD, :-1]
        if not len(points):
            continue
        k = min(len(points), n_clusters)
        if kmeans_cls is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # n_init FutureWarning, duplicate-point warnings
                centres[label] = kmeans_cls(n_clusters=k, random_state=0).fit(points).cluster_centers_
        else:
            centres[label] = kmeans_numpy(points, k, seed)
    return centres


# ---------------------------------------------------------------------- encoding
def encode_dataset(opt: argparse.Namespace, device: torch.device) -> Dict[int, np.ndarray]:
    """Records ``{class: (n, feat_num + 1)}`` of every region of the split (all classes listed)."""
    encoder = define_E(opt, "pix2pixhd")
    folder = os.path.join(opt.checkpoints_dir, opt.name)
    checkpoint.load_networks({"E": encoder}, folder, opt.which_epoch, opt)
    encoder.to(device).eval()
    dataset = create_dataset(opt)
    loader = create_dataloader(dataset, opt.batchSize, shuffle=False, drop_last=False,
                               num_workers=opt.nThreads, pin_memory=device.type == "cuda")
    num_classes = opt.label_nc + (1 if opt.contain_dontcare_label else 0)
    collected: Dict[int, List[np.ndarray]] = {c: [] for c in range(num_classes)}
    limit = int(min(len(dataset), opt.how_many))
    bar = tqdm(total=limit, desc="encoding", unit="image", dynamic_ncols=True,
               disable=not sys.stderr.isatty())
    done = 0
    with torch.inference_mode():
        for batch in loader:
            if not bool(torch.as_tensor(batch["has_image"]).all()):
                raise OptionError(f"{opt.phase} split: encode_features needs the real images, "
                                  "and this dataset has label maps only; point --dataroot at the "
                                  "training images")
            regions = batch["label" if opt.label_feat else "instance"]
            pooled = encoder(batch["image"].to(device), regions.to(device)).float().cpu()
            for i in range(pooled.size(0)):
                if done >= limit:
                    break
                for label, rows in encode_rows(pooled[i], regions[i, 0], batch["label"][i, 0]).items():
                    collected.setdefault(label, []).append(rows)
                done += 1
                bar.update(1)
            if done >= limit:
                break
    bar.close()
    width = opt.feat_num + 1
    return {c: np.concatenate(v) if v else np.zeros((0, width)) for c, v in sorted(collected.items())}


def cluster_file_name(n_clusters: int) -> str:
    return f"features_clustered_{n_clusters:03d}.npy"


def save_dict(path: str, content: Dict[int, np.ndarray]) -> None:
    """``np.save`` of a dict (pix2pixHD's layout), atomically: test.py never reads half a file."""
    with open(path + ".tmp", "wb") as f:
        np.save(f, content, allow_pickle=True)
    os.replace(path + ".tmp", path)


def run(opt: argparse.Namespace) -> str:
    """Encode, cluster, write; returns the cluster file's path."""
    if not uses_features(opt):
        raise OptionError("encode_features needs a model trained with --instance_feat or --label_feat: "
                          "add --load_from_opt_file (or the flag it was trained with)")
    if opt.n_clusters < 1:
        raise OptionError(f"--n_clusters must be at least 1 (got {opt.n_clusters})")
    description, kmeans_cls = kmeans_backend(opt.kmeans)
    ctx = distributed.setup(opt.gpu_ids)
    try:
        features = encode_dataset(opt, ctx.device)
    finally:
        distributed.cleanup()
    folder = os.path.join(opt.checkpoints_dir, opt.name)
    save_dict(os.path.join(folder, "features.npy"), features)
    print(f"k-means: {description}", file=sys.stderr)
    centres = cluster_features(features, opt.n_clusters, opt.seed, kmeans_cls)
    path = os.path.join(folder, cluster_file_name(opt.n_clusters))
    save_dict(path, centres)
    counted = sum(len(v) for v in features.values())
    print(f"{counted} regions, {len(centres)} classes clustered: saved {path}", file=sys.stderr)
    return path


def main(argv: Optional[List[str]] = None) -> None:
    run_reporting_errors(lambda: run(EncodeOptions().parse(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
