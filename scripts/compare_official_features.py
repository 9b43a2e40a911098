"""Check pix2pixHD's instance-wise features against the official code (NVIDIA/pix2pixHD) on CPU.

    python scripts/compare_official_features.py --official /path/to/pix2pixHD \
        --official_pythonpath DIR_WITH_SKLEARN [--dataroot ../shared/samples/cityscapes] [--work DIR]

1. The official checkout is copied to ``WORK/official`` and patched to run on CPU (the
   replacements in ``CPU_PATCHES``: ``.cuda()`` dropped, ``model.module`` on an unwrapped model,
   ``np.load(allow_pickle=True)``, ``.item()`` for 0-d tensors, 16-bit instance PNGs read as
   32-bit). Nothing of it enters this repository.
2. The Cityscapes train images are linked into the official layout (``train_label``,
   ``train_inst``, ``train_img``); the official code builds a seeded random-init model (ngf/ndf 8,
   E with ``--nef 16 --feat_num 3 --n_downsample_E 4``), saves it, and its ``encode_features.py``
   writes ``features.npy`` and ``features_clustered_003.npy`` (scale_width to 256 px; 3 clusters,
   fewer than most classes' records in the 8-image sample, so that k-means has work to do).
3. Our ``scripts/encode_features.py`` loads the official ``latest_net_E.pth`` and encodes the
   same images from the official Cityscapes layout, once with scikit-learn's KMeans (needs it
   on ``--official_pythonpath``) and once with our numpy k-means.
4. Network level: the official ``Encoder`` and ours (the same file, loaded strictly) pool the
   features of the same input tensors.

Prints one JSON object: max abs differences of the pooled maps, of the records and of the
centres, and the k-means objective of our numpy k-means relative to scikit-learn's.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
from typing import Dict, List, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from scripts import official_code as oc  # noqa: E402

OFFICIAL_FILES = ("encode_features.py", "models/pix2pixHD_model.py", "models/networks.py",
                  "data/aligned_dataset.py", "options/train_options.py")

# (file, text, replacement): the least that makes the official code run on a CPU with today's
# torch / numpy / Pillow.
CPU_PATCHES = [
    ("models/pix2pixHD_model.py", ".cuda()", ""),
    ("models/pix2pixHD_model.py", "torch.cuda.FloatTensor", "torch.FloatTensor"),
    ("models/pix2pixHD_model.py", "torch.cuda.ByteTensor", "torch.ByteTensor"),
    ("models/pix2pixHD_model.py", "idx[3]].data[0]", "idx[3]].item()"),
    ("encode_features.py", "model.module.", "model."),
    ("encode_features.py", "np.load(load_name).item()", "np.load(load_name, allow_pickle=True).item()"),
    ("data/aligned_dataset.py", "inst = Image.open(inst_path)", "inst = Image.open(inst_path).convert('I')"),
]

OFFICIAL_INIT = """
import random, numpy as np, torch
torch.manual_seed(0); random.seed(0); np.random.seed(0)
from options.train_options import TrainOptions
from models.models import create_model
create_model(TrainOptions().parse()).save('latest')
"""

OFFICIAL_POOL = """
import sys, torch
from models.networks import Encoder, get_norm_layer
net = Encoder(3, 3, 16, 4, get_norm_layer('instance'))
net.load_state_dict(torch.load(sys.argv[1]))
inputs = torch.load(sys.argv[2])
with torch.no_grad():
    out = [net(image, instance) for image, instance in zip(inputs['image'], inputs['instance'])]
torch.save(out, sys.argv[3])
"""


def check_official(path: Optional[str]) -> str:
    """The absolute path of an official pix2pixHD checkout, or an OptionError saying what is wrong."""
    return oc.check_official(path, "pix2pixHD", "github.com/NVIDIA/pix2pixHD", OFFICIAL_FILES)


def patched_copy(official: str, work: str) -> str:
    """Copy the checkout to ``WORK/official`` and apply ``CPU_PATCHES`` to the copy."""
    target = os.path.join(work, "official")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(official, target, ignore=shutil.ignore_patterns(".git", "imgs", "checkpoints"))
    oc.replace_in_copy(official, target, CPU_PATCHES, "docs/pix2pixhd_features.md")
    return target


def official_layout(dataroot: str, work: str) -> str:
    """Links the Cityscapes train split into pix2pixHD's train_label / train_inst / train_img."""
    data = os.path.join(work, "data")
    patterns = {"train_label": "gtFine/train/*/*_labelIds.png", "train_inst": "gtFine/train/*/*_instanceIds.png",
                "train_img": "leftImg8bit/train/*/*_leftImg8bit.png"}
    for sub, pattern in patterns.items():
        os.makedirs(os.path.join(data, sub), exist_ok=True)
        for path in sorted(glob.glob(os.path.join(dataroot, pattern))):
            link = os.path.join(data, sub, os.path.basename(path))
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(path), link)
    return data


def load_dict(path: str) -> Dict[int, np.ndarray]:
    return {int(k): v for k, v in np.load(path, allow_pickle=True).item().items() if len(v)}


def max_diff(a: Dict[int, np.ndarray], b: Dict[int, np.ndarray]) -> float:
    if sorted(a) != sorted(b) or any(a[k].shape != b[k].shape for k in a):
        return float("nan")
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def inertia(points: np.ndarray, centres: np.ndarray) -> float:
    return float(((points[:, None] - centres[None]) ** 2).sum(2).min(1).sum())


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="checkout of NVIDIA/pix2pixHD")
    parser.add_argument("--official_pythonpath", default="", help="folder with scikit-learn (for both sides)")
    parser.add_argument("--dataroot", default=os.path.join(ROOT, "..", "shared", "samples", "cityscapes"))
    parser.add_argument("--work", default="/tmp/udgan_features_compare")
    parser.add_argument("--load_size", type=int, default=256)
    parser.add_argument("--n_clusters", type=int, default=3,
                        help="3: below the classes' record counts of the 8-image sample, so k-means has work")
    args = parser.parse_args(argv)
    source = check_official(args.official)
    work = oc.work_folder(args.work, "compare_official_features_")
    extra = [args.official_pythonpath] if args.official_pythonpath else []
    official = patched_copy(source, work)

    def run(cmd: List[str], cwd: str, pythonpath: List[str], log: str) -> None:
        # scikit-learn (on --official_pythonpath) serves both sides here
        oc.run(cmd, cwd, oc.child_env(pythonpath), os.path.join(work, log))

    data = official_layout(args.dataroot, work)
    ck = os.path.join(work, "official_checkpoints")
    shutil.rmtree(ck, ignore_errors=True)
    flags = ["--name", "fid", "--checkpoints_dir", ck, "--dataroot", data, "--label_nc", "35",
             "--loadSize", str(args.load_size), "--resize_or_crop", "scale_width", "--gpu_ids", "-1",
             "--instance_feat", "--nef", "16", "--feat_num", "3", "--n_downsample_E", "4",
             "--n_clusters", str(args.n_clusters), "--no_vgg_loss", "--ngf", "8", "--ndf", "8"]
    run([sys.executable, "-c", OFFICIAL_INIT] + flags, official, [official] + extra, "official_init.log")
    run([sys.executable, "encode_features.py"] + flags, official, [official] + extra, "official_encode.log")
    official_e = os.path.join(ck, "fid", "latest_net_E.pth")

    # ours, from the same E file, on the official Cityscapes layout
    ours = {}
    for kmeans in ("sklearn", "numpy"):
        folder = os.path.join(work, f"ours_{kmeans}")
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(os.path.join(folder, "fid"))
        shutil.copy(official_e, os.path.join(folder, "fid", "latest_net_E.pth"))
        run([sys.executable, os.path.join(ROOT, "scripts", "encode_features.py"), "--gpu_ids", "-1",
             "--checkpoints_dir", folder, "--name", "fid", "--dataset_mode", "cityscapes",
             "--dataroot", args.dataroot, "--preprocess_mode", "scale_width", "--load_size",
             str(args.load_size), "--crop_size", str(args.load_size), "--instance_feat", "--netG",
             "pix2pixhd", "--nef", "16", "--feat_num", "3", "--n_downsample_E", "4",
             "--n_clusters", str(args.n_clusters), "--kmeans", kmeans], ROOT, [ROOT] + extra,
            f"ours_{kmeans}.log")
        ours[kmeans] = os.path.join(folder, "fid")

    # network level: the same input tensors through both encoders
    import torch

    from data import create_dataset
    from models.networks.feature_encoder import FeatureEncoder
    from options.test_options import TestOptions
    opt = TestOptions().parse(["--gpu_ids", "-1", "--dataset_mode", "cityscapes", "--dataroot", args.dataroot,
                               "--phase", "train", "--preprocess_mode", "scale_width", "--load_size",
                               str(args.load_size), "--crop_size", str(args.load_size), "--netG", "pix2pixhd",
                               "--instance_feat"])
    dataset = create_dataset(opt)
    samples = [dataset[i] for i in range(len(dataset))]
    inputs = {"image": [s["image"][None] for s in samples], "instance": [s["instance"][None] for s in samples]}
    torch.save(inputs, os.path.join(work, "inputs.pt"))
    run([sys.executable, "-c", OFFICIAL_POOL, official_e, os.path.join(work, "inputs.pt"),
         os.path.join(work, "official_pooled.pt")], official, [official] + extra, "official_pool.log")
    reference = torch.load(os.path.join(work, "official_pooled.pt"))
    net = FeatureEncoder(opt)
    net.load_state_dict(torch.load(official_e, weights_only=True), strict=True)
    with torch.no_grad():
        mine = [net(image, instance) for image, instance in zip(inputs["image"], inputs["instance"])]
    pooled = max(float((a - b).abs().max()) for a, b in zip(mine, reference))

    off_dir = os.path.join(ck, "fid")
    cluster_file = f"features_clustered_{args.n_clusters:03d}.npy"
    records = load_dict(os.path.join(off_dir, "features.npy"))
    result = {
        "images": len(samples), "size": list(samples[0]["image"].shape[1:]),
        "pooled_max_abs_diff": pooled,
        "feature_range": [float(min(t.min() for t in reference)), float(max(t.max() for t in reference))],
        "records": sum(len(v) for v in records.values()),
        "records_max_abs_diff": max_diff(records, load_dict(os.path.join(ours["sklearn"], "features.npy"))),
    }
    off_centres = load_dict(os.path.join(off_dir, cluster_file))
    result["clustered_classes"] = len(off_centres)
    result["centres_max_abs_diff_sklearn"] = max_diff(
        off_centres, load_dict(os.path.join(ours["sklearn"], cluster_file)))
    # our numpy k-means against scikit-learn's (official run), where k < points
    numpy_centres = load_dict(os.path.join(ours["numpy"], cluster_file))
    ratios = []
    for label, centres in off_centres.items():
        points = records[label][records[label][:, -1] > 0.5, :-1]
        if len(points) > args.n_clusters:
            ratios.append(inertia(points, numpy_centres[label]) / inertia(points, centres))
    result["numpy_kmeans_objective_over_sklearn"] = {
        "classes": len(ratios), "mean": float(np.mean(ratios)) if ratios else None,
        "max": float(np.max(ratios)) if ratios else None}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from util.cli import run_reporting_errors
    run_reporting_errors(lambda: main(sys.argv[1:]))
